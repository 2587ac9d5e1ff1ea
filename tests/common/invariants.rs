//! The money-safety invariant checker: after a run, reconciles three records that were kept
//! apart — the token transfers to `payTo` found on the chains (the EVM chain's logs, and the test
//! SVM's own record of landed transactions), the gateway's ledger (and claims), and what the
//! origin and the clients saw — and lists every broken promise:
//!
//! - a payment on chain without its ledger row, or a ledger row without its transfer (on Solana
//!   also: a landed transaction paying `payTo` that is not one `TransferChecked` whose payer's
//!   balance fell by what `payTo` received, or a failed one that moved `payTo`'s balance);
//! - a payment settled twice, or one payment's content delivered twice;
//! - an unpaid or invalid request that reached the origin;
//! - a client that got a priced route's content without a settled (or, under `deferred`, a queued
//!   or knowingly risked) payment, or without its receipt;
//! - under `after`, a charge for a request whose origin failed;
//! - a settlement left unresolved, or a claim left open, after the gateway had time to finish.
//!
//! Requests whose client saw no answer at all (the gateway was killed under them, a connection
//! broke) have an outcome nobody can know: they may be charged or not, but never twice, and
//! their claims may stay open. The checker counts them instead of guessing.
//!
//! A payment is named as the gateway's `PaymentKey` names it, less the asset (one per network
//! here): (network, payer, nonce). On EVM the nonce is the EIP-3009 nonce; on Solana it is the
//! SHA-256 of the transaction's message (hex), the payer the transfer's authority (base58).
//! EVM hex is compared lower-cased; base58 is case-sensitive and compared as it is.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::rpc::types::Filter;
use sha2::{Digest, Sha256};
use solana_pubkey::Pubkey;
use solana_transaction::versioned::VersionedTransaction;
use sqlx::Row;

use super::svm::{ata, SvmChain, TOKEN_2022_PROGRAM, TOKEN_PROGRAM};

/// `AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce)`.
const AUTHORIZATION_USED: &str = "AuthorizationUsed(address,bytes32)";
/// `Transfer(address indexed from, address indexed to, uint256 value)`.
const TRANSFER: &str = "Transfer(address,address,uint256)";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    After,
    Before,
    Deferred,
}

impl Policy {
    pub fn path(self) -> &'static str {
        match self {
            Policy::After => "after",
            Policy::Before => "before",
            Policy::Deferred => "deferred",
        }
    }
}

/// What the origin did with one request it received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// Answered 200: the work was done.
    Ok,
    /// Answered 500.
    Error,
    /// Cut the connection without an answer.
    Reset,
    /// Answered too late for the gateway (after its upstream read timeout).
    Timeout,
}

/// One payment: (network, payer, nonce), each in its canonical form (`canon`).
pub type Key = (String, String, String);

/// A value as this checker compares it: EVM hex lower-cased, Solana base58 as it is.
pub fn canon(network: &str, value: &str) -> String {
    if network.starts_with("eip155:") {
        value.to_lowercase()
    } else {
        value.to_string()
    }
}

/// The payment key of a Solana payment transaction, as the gateway forms it: the authority of
/// its TransferChecked (the first one) and the SHA-256 of its message.
pub fn svm_key(network: &str, tx: &VersionedTransaction) -> Key {
    let transfer = svm_transfers(tx)
        .into_iter()
        .next()
        .expect("a TransferChecked");
    (
        network.to_string(),
        transfer.authority.to_string(),
        svm_message_id(tx),
    )
}

/// SHA-256 of the serialized message, lower-case hex (`CheckedTransfer::message_id`).
pub fn svm_message_id(tx: &VersionedTransaction) -> String {
    Sha256::digest(tx.message.serialize())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a request carried, as tagged by the client in a header the gateway passes on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Tag {
    Free,
    Unpaid,
    Invalid,
    /// A signed payment: its key (network, payer, nonce), canonical.
    Paid(String, String, String),
}

impl Tag {
    pub fn paid(key: Key) -> Tag {
        Tag::Paid(key.0, key.1, key.2)
    }

    pub fn key(&self) -> Option<Key> {
        match self {
            Tag::Paid(n, p, x) => Some((n.clone(), p.clone(), x.clone())),
            _ => None,
        }
    }

    /// `network|payer|nonce` for a payment (a CAIP-2 network has a colon in it).
    pub fn header(&self) -> String {
        match self {
            Tag::Free => "free".into(),
            Tag::Unpaid => "unpaid".into(),
            Tag::Invalid => "invalid".into(),
            Tag::Paid(n, p, x) => format!("{n}|{p}|{x}"),
        }
    }

    pub fn parse(s: &str) -> Tag {
        match s {
            "free" => Tag::Free,
            "unpaid" => Tag::Unpaid,
            "invalid" => Tag::Invalid,
            s => {
                let mut parts = s.splitn(3, '|').map(str::to_string);
                Tag::Paid(
                    parts.next().unwrap_or_default(),
                    parts.next().unwrap_or_default(),
                    parts.next().unwrap_or_default(),
                )
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct OriginHit {
    pub tag: Tag,
    /// The route's policy, for a priced route.
    pub policy: Option<Policy>,
    pub served: Served,
    pub at: std::time::Instant,
}

/// What a client saw for one request.
#[derive(Debug, Clone)]
pub struct ClientSaw {
    pub tag: Tag,
    pub policy: Option<Policy>,
    /// The status, or None when no answer came (connection refused, reset, timed out).
    pub status: Option<u16>,
    /// The `PAYMENT-RESPONSE` receipt: (success, transaction).
    pub receipt: Option<(bool, String)>,
    /// The payer cancelled this authorization while the origin worked (an attack on `after`
    /// and `deferred`).
    pub cancelled: bool,
    /// When the client had the whole answer (or gave up).
    pub ended: std::time::Instant,
}

#[derive(Debug, Default)]
pub struct Report {
    pub violations: Vec<String>,
    pub settled: usize,
    /// Of `settled`, those on the Solana network.
    pub settled_svm: usize,
    pub delivered: usize,
    /// Origin work done for a payment that then failed, and not delivered: the body was withheld.
    pub withheld: usize,
    /// Of `settled`, those settled by an EVM transaction that settled others too (a batch), and
    /// how many such transactions there were.
    pub batched: usize,
    pub batches: usize,
    /// Requests whose client saw no answer.
    pub unanswered: usize,
    /// Claims left open by requests nobody saw the end of.
    pub open_claims: usize,
}

impl Report {
    fn fail(&mut self, msg: String) {
        self.violations.push(msg);
    }
}

/// A settled payment as the ledger has it.
#[derive(Debug, Clone)]
struct LedgerRow {
    network: String,
    tx: String,
    amount: String,
    payer: String,
    pay_to: String,
}

/// A payment as a chain shows it: the transaction that moved it, how much, and to whom.
#[derive(Debug, Clone)]
struct Fact {
    tx: String,
    amount: String,
    pay_to: String,
}

pub struct Records<'a> {
    /// The EVM network's CAIP-2 id.
    pub network: &'a str,
    pub provider: &'a alloy::providers::DynProvider,
    pub token: Address,
    pub pay_to: Address,
    /// The Solana network, when the run offered one.
    pub svm: Option<SvmRecords<'a>>,
    pub price: u64,
    pub database_url: &'a str,
    pub origin: &'a [OriginHit],
    pub clients: &'a [ClientSaw],
}

pub struct SvmRecords<'a> {
    pub network: &'a str,
    pub chain: &'a SvmChain,
    pub mint: Pubkey,
    pub pay_to: Pubkey,
}

pub async fn check(r: Records<'_>) -> Report {
    let mut report = Report::default();
    let mut chain = chain_payments(r.network, r.provider, r.token, r.pay_to, &mut report).await;
    if let Some(svm) = &r.svm {
        for (key, fact) in svm_payments(svm, &mut report) {
            if chain.insert(key.clone(), fact).is_some() {
                report.fail(format!("payment {} found on two chains", show(&key)));
            }
        }
    }
    let (claims, ledger, queued) = ledger(r.database_url).await;

    // 1. Chain and ledger agree, both ways, and nothing settled twice.
    let mut seen = HashSet::new();
    for (key, fact) in &chain {
        let k = show(key);
        let tx = &fact.tx;
        match ledger.get(key) {
            None => report.fail(format!("payment {k} in tx {tx} has no ledger row")),
            Some(rows) if rows.len() > 1 => {
                report.fail(format!("payment {k} is in the ledger {} times", rows.len()))
            }
            Some(rows) if rows[0].tx != *tx => report.fail(format!(
                "payment {k}: ledger says tx {}, the chain {tx}",
                rows[0].tx
            )),
            Some(rows) => {
                let row = &rows[0];
                if row.network != key.0
                    || row.payer != key.1
                    || row.amount != fact.amount
                    || row.amount != r.price.to_string()
                    || row.pay_to != fact.pay_to
                {
                    report.fail(format!("payment {k}: ledger row {row:?}, chain {fact:?}"));
                }
            }
        }
        seen.insert(key.clone());
    }
    for (key, rows) in &ledger {
        if !seen.contains(key) {
            report.fail(format!(
                "ledger row {} (tx {}) has no transfer on chain",
                show(key),
                rows[0].tx
            ));
        }
    }
    report.settled = chain.len();
    let mut per_tx: HashMap<&str, usize> = HashMap::new();
    for (key, fact) in &chain {
        if key.0 == r.network {
            *per_tx.entry(fact.tx.as_str()).or_default() += 1;
        }
    }
    report.batches = per_tx.values().filter(|&&n| n > 1).count();
    report.batched = per_tx.values().filter(|&&n| n > 1).sum();
    report.settled_svm = r
        .svm
        .as_ref()
        .map_or(0, |s| chain.keys().filter(|k| k.0 == s.network).count());

    // 2. Nothing unpaid reached the origin; index the origin's work by payment.
    let mut work: HashMap<&Tag, Vec<(Served, std::time::Instant)>> = HashMap::new();
    for hit in r.origin {
        match (&hit.tag, hit.policy) {
            (Tag::Unpaid | Tag::Invalid, Some(_)) => report.fail(format!(
                "an {:?} request reached the origin of a priced route",
                hit.tag
            )),
            (Tag::Free, Some(p)) => report.fail(format!(
                "an untagged request reached the {p:?} route's origin"
            )),
            _ => {}
        }
        work.entry(&hit.tag).or_default().push((hit.served, hit.at));
    }

    // 3. Per payment: delivered at most once, delivered only when paid, with its receipt.
    let mut by_payment: HashMap<&Tag, Vec<&ClientSaw>> = HashMap::new();
    for c in r.clients {
        if c.status.is_none() {
            report.unanswered += 1;
        }
        if let Tag::Paid(..) = c.tag {
            by_payment.entry(&c.tag).or_default().push(c);
        } else if c.policy.is_some() && c.status.is_some_and(|s| (200..300).contains(&s)) {
            report.fail(format!(
                "a {:?} request to a priced route got a {:?}",
                c.tag, c.status
            ));
        }
    }
    for (tag, saw) in &by_payment {
        let key = tag.key().expect("a payment");
        let id = show(&key);
        let settled_tx = chain.get(&key).map(|f| &f.tx);
        let delivered: Vec<&&ClientSaw> = saw
            .iter()
            .filter(|c| c.status.is_some_and(|s| (200..300).contains(&s)))
            .collect();
        report.delivered += delivered.len();
        if delivered.len() > 1 {
            report.fail(format!(
                "payment {id} was delivered {} times",
                delivered.len()
            ));
        }
        let policy = saw[0].policy;
        for c in &delivered {
            match (policy, settled_tx) {
                (Some(Policy::Deferred), None) => {
                    // The seller's accepted risk under `deferred`: the payer cancelled first.
                    if !saw.iter().any(|c| c.cancelled) {
                        report.fail(format!(
                            "deferred payment {id} delivered, never settled (claim {:?})",
                            claims.get(&key)
                        ));
                    }
                }
                (Some(Policy::Deferred), Some(_)) => {
                    if c.receipt.as_ref().map(|r| r.0) != Some(true) {
                        report.fail(format!("deferred {id}: receipt {:?}", c.receipt));
                    }
                }
                (_, None) => report.fail(format!(
                    "payment {id} ({policy:?}) delivered without settling (claim {:?})",
                    claims.get(&key)
                )),
                (_, Some(tx)) => {
                    if c.receipt != Some((true, tx.clone())) {
                        report.fail(format!(
                            "payment {id} delivered with receipt {:?}, settled in {tx}",
                            c.receipt
                        ));
                    }
                }
            }
        }
        // A payer whose money moved gets its receipt, whatever the status, unless no answer
        // came at all or it was a replay of a proof already used.
        if let Some(tx) = settled_tx {
            let answered: Vec<&&ClientSaw> = saw.iter().filter(|c| c.status.is_some()).collect();
            let unanswered = saw.iter().any(|c| c.status.is_none());
            if !unanswered
                && !answered
                    .iter()
                    .any(|c| c.receipt == Some((true, tx.clone())))
                && policy != Some(Policy::Deferred)
            {
                report.fail(format!(
                    "payment {id} settled in {tx}, its payer never got the receipt: {:?}",
                    answered
                        .iter()
                        .map(|c| (c.status, &c.receipt))
                        .collect::<Vec<_>>()
                ));
            }
        }
        // Under `after` and `deferred`, a charge needs origin work that succeeded.
        let hits = work.get(tag).cloned().unwrap_or_default();
        let ok_hits = hits.iter().filter(|h| h.0 == Served::Ok).count();
        if settled_tx.is_some() && policy != Some(Policy::Before) && ok_hits == 0 {
            report.fail(format!(
                "payment {id} ({policy:?}) charged, but its origin never succeeded: {hits:?}"
            ));
        }
        if settled_tx.is_none() && ok_hits > 0 && delivered.is_empty() {
            report.withheld += 1;
        }
        // Once a payer had its receipt, the proof never reaches the origin again.
        if let Some(tx) = settled_tx {
            let receipted = saw
                .iter()
                .filter(|c| c.receipt == Some((true, tx.clone())))
                .map(|c| c.ended)
                .min();
            if let Some(t) = receipted {
                for (served, at) in &hits {
                    if *at > t {
                        report.fail(format!(
                            "payment {id} reached the origin again ({served:?}) after its receipt"
                        ));
                    }
                }
            }
        }
    }

    // 4. Nothing left hanging once the gateway had time to finish.
    for (key, status) in &claims {
        let tag = Tag::paid(key.clone());
        let unanswered = by_payment
            .get(&tag)
            .is_some_and(|saw| saw.iter().any(|c| c.status.is_none()));
        match status.as_str() {
            "settled" | "released" | "failed" => {}
            "settling" => report.fail(format!("claim {} still settling", show(key))),
            // Open with nobody to finish it: a request cut short by a kill, or a claim whose
            // commit landed but whose answer was lost (the client got a 503, nothing charged).
            // The reconciler releases it once its authorization expires.
            "claimed" if unanswered || !chain.contains_key(key) => report.open_claims += 1,
            s => report.fail(format!(
                "claim {} left {s} though its request ended",
                show(key)
            )),
        }
    }
    if queued > 0 {
        report.fail(format!("{queued} deferred settlements still queued"));
    }
    report
}

/// A payment key as violations name it.
fn show(key: &Key) -> String {
    format!("{}:{}:{}", key.0, key.1, key.2)
}

/// Payments on chain to `pay_to`: key -> fact, each with its `Transfer`.
async fn chain_payments(
    network: &str,
    provider: &alloy::providers::DynProvider,
    token: Address,
    pay_to: Address,
    report: &mut Report,
) -> HashMap<Key, Fact> {
    use alloy::primitives::keccak256;
    let used = provider
        .get_logs(
            &Filter::new()
                .address(token)
                .event_signature(keccak256(AUTHORIZATION_USED))
                .from_block(0),
        )
        .await
        .unwrap();
    let transfers = provider
        .get_logs(
            &Filter::new()
                .address(token)
                .event_signature(keccak256(TRANSFER))
                .topic2(pay_to.into_word())
                .from_block(0),
        )
        .await
        .unwrap();
    // (tx, from) -> how many transfers to pay_to it holds.
    let mut paid: HashMap<(B256, Address), Vec<U256>> = HashMap::new();
    for t in &transfers {
        let from = Address::from_word(t.topics()[1]);
        let value = U256::from_be_slice(&t.data().data);
        paid.entry((t.transaction_hash.unwrap(), from))
            .or_default()
            .push(value);
    }
    let mut out = HashMap::new();
    for u in &used {
        let payer = Address::from_word(u.topics()[1]);
        let nonce = u.topics()[2];
        let tx = u.transaction_hash.unwrap();
        let key = (
            network.to_string(),
            format!("{payer:#x}"),
            format!("{nonce:#x}"),
        );
        let value = paid.get_mut(&(tx, payer)).and_then(|v| v.pop());
        if value.is_none() {
            report.fail(format!(
                "authorization {} used in {tx} without a transfer to payTo",
                show(&key)
            ));
        }
        let fact = Fact {
            tx: format!("{tx:#x}"),
            amount: value.map_or_else(String::new, |v| v.to_string()),
            pay_to: format!("{pay_to:#x}"),
        };
        if out.insert(key.clone(), fact).is_some() {
            report.fail(format!("authorization {} used twice on chain", show(&key)));
        }
    }
    out
}

/// One `TransferChecked` of a Solana transaction.
struct SvmTransfer {
    program: Pubkey,
    destination: Pubkey,
    authority: Pubkey,
    mint: Pubkey,
    amount: u64,
}

/// The `TransferChecked` instructions (SPL Token or Token-2022) among a transaction's top-level
/// instructions: accounts [source, mint, destination, authority], data [12, amount u64 LE,
/// decimals].
fn svm_transfers(tx: &VersionedTransaction) -> Vec<SvmTransfer> {
    let keys = tx.message.static_account_keys();
    let key = |ix: &solana_message::compiled_instruction::CompiledInstruction, i: usize| {
        ix.accounts
            .get(i)
            .and_then(|a| keys.get(*a as usize))
            .copied()
    };
    let mut out = Vec::new();
    for ix in tx.message.instructions() {
        let program = keys[ix.program_id_index as usize];
        if program != TOKEN_PROGRAM && program != TOKEN_2022_PROGRAM {
            continue;
        }
        if ix.data.len() != 10 || ix.data[0] != 12 {
            continue;
        }
        let (Some(mint), Some(destination), Some(authority)) = (key(ix, 1), key(ix, 2), key(ix, 3))
        else {
            continue;
        };
        out.push(SvmTransfer {
            program,
            destination,
            authority,
            mint,
            amount: u64::from_le_bytes(ix.data[1..9].try_into().unwrap()),
        });
    }
    out
}

/// Payments on the test SVM to `pay_to`: every landed, successful transaction whose token
/// balances show `pay_to` receiving, each explained by exactly one `TransferChecked` into
/// `pay_to`'s associated account, signed for by the payer whose balance fell by as much.
fn svm_payments(svm: &SvmRecords<'_>, report: &mut Report) -> HashMap<Key, Fact> {
    let mut out = HashMap::new();
    for landed in svm.chain.landed_transactions() {
        let sig = landed.signature;
        let received: i128 = landed
            .token_changes
            .iter()
            .filter(|c| c.owner == svm.pay_to)
            .map(|c| c.post as i128 - c.pre as i128)
            .sum();
        let into_pay_to: Vec<SvmTransfer> = svm_transfers(&landed.tx)
            .into_iter()
            .filter(|t| t.destination == ata(&svm.pay_to, &t.mint, &t.program))
            .collect();
        if landed.err.is_some() {
            // Failed on chain: its fee was paid, nothing else moved.
            if received != 0 {
                report.fail(format!(
                    "failed tx {sig} changed payTo's balance by {received}"
                ));
            }
            continue;
        }
        if received == 0 && into_pay_to.is_empty() {
            continue;
        }
        let [t] = into_pay_to.as_slice() else {
            report.fail(format!(
                "tx {sig} pays payTo {received} in {} transfers, not as one payment",
                into_pay_to.len()
            ));
            continue;
        };
        let payer_change: i128 = landed
            .token_changes
            .iter()
            .filter(|c| c.owner == t.authority && c.mint == t.mint)
            .map(|c| c.post as i128 - c.pre as i128)
            .sum();
        if t.mint != svm.mint || received != t.amount as i128 || payer_change != -received {
            report.fail(format!(
                "tx {sig}: a transfer of {} {} from {} to payTo, but payTo's balance moved {received} \
                 and the payer's {payer_change}",
                t.amount, t.mint, t.authority
            ));
        }
        let key = (
            svm.network.to_string(),
            t.authority.to_string(),
            svm_message_id(&landed.tx),
        );
        let fact = Fact {
            tx: sig.to_string(),
            amount: t.amount.to_string(),
            pay_to: svm.pay_to.to_string(),
        };
        if out.insert(key.clone(), fact).is_some() {
            report.fail(format!("payment {} landed twice on chain", show(&key)));
        }
    }
    out
}

type Claims = HashMap<Key, String>;
type Ledger = HashMap<Key, Vec<LedgerRow>>;

/// Claims by payment, the ledger by payment, and how many deferred items are still queued.
async fn ledger(url: &str) -> (Claims, Ledger, usize) {
    sqlx::any::install_default_drivers();
    let url = if url.starts_with("sqlite:") && !url.contains("mode=") {
        format!("{url}?mode=ro")
    } else {
        url.to_string()
    };
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let mut claims = HashMap::new();
    let mut ledger: Ledger = HashMap::new();
    for row in sqlx::query(
        "SELECT c.network, c.payer, c.nonce, c.status,
                s.tx_hash, s.amount, s.pay_to, s.network, s.payer
         FROM payment_claims c LEFT JOIN settlements s ON s.claim_id = c.id",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    {
        let network: String = row.get(0);
        let key = (
            network.clone(),
            canon(&network, &row.get::<String, _>(1)),
            canon(&network, &row.get::<String, _>(2)),
        );
        claims.insert(key.clone(), row.get::<String, _>(3));
        if let Some(tx) = row.get::<Option<String>, _>(4) {
            let row_network: String = row.get(7);
            ledger.entry(key).or_default().push(LedgerRow {
                tx: canon(&network, &tx),
                amount: row.get(5),
                pay_to: canon(&network, &row.get::<String, _>(6)),
                payer: canon(&network, &row.get::<String, _>(8)),
                network: row_network,
            });
        }
    }
    let queued: i64 = sqlx::query("SELECT COUNT(*) FROM settlement_queue WHERE status = 'queued'")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    pool.close().await;
    (claims, ledger, queued as usize)
}
