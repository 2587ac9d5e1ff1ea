//! The money-safety invariant checker: after a run, reconciles three records that were kept
//! apart — the token transfers to `payTo` found on the chain, the gateway's ledger (and claims),
//! and what the origin and the clients saw — and lists every broken promise:
//!
//! - a payment on chain without its ledger row, or a ledger row without its transfer;
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

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::rpc::types::Filter;
use sqlx::Row;

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

/// What a request carried, as tagged by the client in a header the gateway passes on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Tag {
    Free,
    Unpaid,
    Invalid,
    /// A signed payment: (payer, nonce), lower-case hex.
    Paid(String, String),
}

impl Tag {
    pub fn header(&self) -> String {
        match self {
            Tag::Free => "free".into(),
            Tag::Unpaid => "unpaid".into(),
            Tag::Invalid => "invalid".into(),
            Tag::Paid(p, n) => format!("{p}:{n}"),
        }
    }

    pub fn parse(s: &str) -> Tag {
        match s {
            "free" => Tag::Free,
            "unpaid" => Tag::Unpaid,
            "invalid" => Tag::Invalid,
            s => {
                let (p, n) = s.split_once(':').unwrap_or((s, ""));
                Tag::Paid(p.to_string(), n.to_string())
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
    pub delivered: usize,
    /// Origin work done for a payment that then failed, and not delivered: the body was withheld.
    pub withheld: usize,
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
    tx: String,
    amount: String,
    pay_to: String,
}

pub struct Records<'a> {
    pub provider: &'a alloy::providers::DynProvider,
    pub token: Address,
    pub pay_to: Address,
    pub price: u64,
    pub database_url: &'a str,
    pub origin: &'a [OriginHit],
    pub clients: &'a [ClientSaw],
}

pub async fn check(r: Records<'_>) -> Report {
    let mut report = Report::default();
    let chain = chain_payments(r.provider, r.token, r.pay_to, &mut report).await;
    let (claims, ledger, queued) = ledger(r.database_url).await;
    let pay_to = format!("{:#x}", r.pay_to);

    // 1. Chain and ledger agree, both ways, and nothing settled twice.
    let mut seen = HashSet::new();
    for ((payer, nonce), tx) in &chain {
        match ledger.get(&(payer.clone(), nonce.clone())) {
            None => report.fail(format!(
                "payment {payer}:{nonce} in tx {tx} has no ledger row"
            )),
            Some(rows) if rows.len() > 1 => report.fail(format!(
                "payment {payer}:{nonce} is in the ledger {} times",
                rows.len()
            )),
            Some(rows) if rows[0].tx != *tx => report.fail(format!(
                "payment {payer}:{nonce}: ledger says tx {}, the chain {tx}",
                rows[0].tx
            )),
            Some(rows) => {
                if rows[0].amount != r.price.to_string() || rows[0].pay_to != pay_to {
                    report.fail(format!("payment {payer}:{nonce}: ledger row {:?}", rows[0]));
                }
            }
        }
        seen.insert((payer.clone(), nonce.clone()));
    }
    for ((payer, nonce), rows) in &ledger {
        if !seen.contains(&(payer.clone(), nonce.clone())) {
            report.fail(format!(
                "ledger row {payer}:{nonce} (tx {}) has no transfer on chain",
                rows[0].tx
            ));
        }
    }
    report.settled = chain.len();

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
        let Tag::Paid(payer, nonce) = tag else {
            unreachable!()
        };
        let key = (payer.clone(), nonce.clone());
        let settled_tx = chain.get(&key);
        let delivered: Vec<&&ClientSaw> = saw
            .iter()
            .filter(|c| c.status.is_some_and(|s| (200..300).contains(&s)))
            .collect();
        report.delivered += delivered.len();
        if delivered.len() > 1 {
            report.fail(format!(
                "payment {payer}:{nonce} was delivered {} times",
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
                            "deferred payment {payer}:{nonce} delivered, never settled (claim {:?})",
                            claims.get(&key)
                        ));
                    }
                }
                (Some(Policy::Deferred), Some(_)) => {
                    if c.receipt.as_ref().map(|r| r.0) != Some(true) {
                        report.fail(format!("deferred {payer}:{nonce}: receipt {:?}", c.receipt));
                    }
                }
                (_, None) => report.fail(format!(
                    "payment {payer}:{nonce} ({policy:?}) delivered without settling (claim {:?})",
                    claims.get(&key)
                )),
                (_, Some(tx)) => {
                    if c.receipt != Some((true, tx.clone())) {
                        report.fail(format!(
                            "payment {payer}:{nonce} delivered with receipt {:?}, settled in {tx}",
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
                    "payment {payer}:{nonce} settled in {tx}, its payer never got the receipt: {:?}",
                    answered.iter().map(|c| (c.status, &c.receipt)).collect::<Vec<_>>()
                ));
            }
        }
        // Under `after` and `deferred`, a charge needs origin work that succeeded.
        let hits = work.get(tag).cloned().unwrap_or_default();
        let ok_hits = hits.iter().filter(|h| h.0 == Served::Ok).count();
        if settled_tx.is_some() && policy != Some(Policy::Before) && ok_hits == 0 {
            report.fail(format!(
                "payment {payer}:{nonce} ({policy:?}) charged, but its origin never succeeded: {hits:?}"
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
                            "payment {payer}:{nonce} reached the origin again ({served:?}) after its receipt"
                        ));
                    }
                }
            }
        }
    }

    // 4. Nothing left hanging once the gateway had time to finish.
    for (key, status) in &claims {
        let tag = Tag::Paid(key.0.clone(), key.1.clone());
        let unanswered = by_payment
            .get(&tag)
            .is_some_and(|saw| saw.iter().any(|c| c.status.is_none()));
        match status.as_str() {
            "settled" | "released" | "failed" => {}
            "settling" => report.fail(format!("claim {}:{} still settling", key.0, key.1)),
            // Open with nobody to finish it: a request cut short by a kill, or a claim whose
            // commit landed but whose answer was lost (the client got a 503, nothing charged).
            // The reconciler releases it once its authorization expires.
            "claimed" if unanswered || !chain.contains_key(key) => report.open_claims += 1,
            s => report.fail(format!(
                "claim {}:{} left {s} though its request ended",
                key.0, key.1
            )),
        }
    }
    if queued > 0 {
        report.fail(format!("{queued} deferred settlements still queued"));
    }
    report
}

/// Payments on chain to `pay_to`: (payer, nonce) -> tx, each with its `Transfer`.
async fn chain_payments(
    provider: &alloy::providers::DynProvider,
    token: Address,
    pay_to: Address,
    report: &mut Report,
) -> HashMap<(String, String), String> {
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
        let key = (format!("{payer:#x}"), format!("{nonce:#x}"));
        if paid.get_mut(&(tx, payer)).and_then(|v| v.pop()).is_none() {
            report.fail(format!(
                "authorization {}:{} used in {tx} without a transfer to payTo",
                key.0, key.1
            ));
        }
        if out.insert(key.clone(), format!("{tx:#x}")).is_some() {
            report.fail(format!(
                "authorization {}:{} used twice on chain",
                key.0, key.1
            ));
        }
    }
    out
}

type Claims = HashMap<(String, String), String>;
type Ledger = HashMap<(String, String), Vec<LedgerRow>>;

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
        "SELECT c.payer, c.nonce, c.status, s.tx_hash, s.amount, s.pay_to
         FROM payment_claims c LEFT JOIN settlements s ON s.claim_id = c.id",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    {
        let key = (
            row.get::<String, _>(0).to_lowercase(),
            row.get::<String, _>(1).to_lowercase(),
        );
        claims.insert(key.clone(), row.get::<String, _>(2));
        if let Some(tx) = row.get::<Option<String>, _>(3) {
            ledger.entry(key).or_default().push(LedgerRow {
                tx: tx.to_lowercase(),
                amount: row.get(4),
                pay_to: row.get::<String, _>(5).to_lowercase(),
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
