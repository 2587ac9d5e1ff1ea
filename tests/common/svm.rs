//! A real SVM for tests: litesvm 0.12 (the real runtime with the real SPL Token, Token-2022, ATA
//! and Memo programs, in process) behind a small Solana JSON-RPC 2.0 server of our own (axum on
//! 127.0.0.1:0, its own thread pool), answering in the validator's shapes (the agave 3.1 response
//! types themselves), with an SPL Token mint and a Token-2022 mint of 6 decimals, a funded fee
//! payer, and the faults a gateway must survive: an outage (`set_down`), stalled replies
//! (`set_stall`), a swallowed transaction (`set_swallow`) and an expired blockhash
//! (`expire_blockhash`).
//!
//! How it differs from a validator, on purpose or for want of need:
//! - one valid blockhash at a time (litesvm's): it stays valid until `expire_blockhash()`, which
//!   also moves the block height 151 past, so every `lastValidBlockHeight` handed out is passed;
//! - the slot (= block height) moves +1 per landed transaction and +1 per second;
//! - every landed transaction is at once `finalized` (no processed/confirmed stages);
//! - `jsonParsed` account data is answered as base64 (what a validator does for accounts it cannot
//!   parse), `base64+zstd` as plain base64 (what it does when compression fails), and v0 address-table lookups are not resolved for balances;
//! - commitment and minContextSlot are ignored.
//!
//! X402_TEST_SVM_LOG=1 prints every JSON-RPC request it gets to stderr.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine;
use litesvm::LiteSVM;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use solana_account::{Account, ReadableAccount};
use solana_hash::Hash;
use solana_keypair::Keypair;
use solana_message::{AccountMeta, Instruction, VersionedMessage};
use solana_pubkey::Pubkey;
use solana_rpc_client_api::config::{
    RpcAccountInfoConfig, RpcSendTransactionConfig, RpcSignatureStatusConfig,
    RpcSimulateTransactionConfig, RpcTransactionConfig,
};
use solana_rpc_client_api::custom_error::RpcCustomError;
use solana_rpc_client_api::response::{
    EncodedTransaction, EncodedTransactionWithStatusMeta, OptionSerializer, RpcBlockhash,
    RpcKeyedAccount, RpcSimulateTransactionResult, UiAccount, UiAccountData, UiAccountEncoding,
    UiCompiledInstruction, UiInnerInstructions, UiInstruction, UiLoadedAddresses, UiTokenAmount,
    UiTransactionStatusMeta, UiTransactionTokenBalance,
};
use solana_signature::Signature;
use solana_signer::Signer;
use solana_transaction::versioned::VersionedTransaction;
use solana_transaction::TransactionError;
use solana_transaction_status_client_types::{
    EncodedConfirmedTransactionWithStatusMeta, TransactionBinaryEncoding,
    TransactionConfirmationStatus, TransactionStatus, UiMessage, UiRawMessage, UiTransaction,
    UiTransactionEncoding,
};

pub use super::svm_pay::*;

/// The devnet genesis hash, as getGenesisHash answers it; its first 32 characters are the CAIP-2
/// reference of `solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1`.
pub const DEVNET_GENESIS_HASH: &str = "EtWTRABZaYq6iMfeYKouRu166VU2xqa1wcaWoxPkrZBG";
pub const DEVNET: &str = "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1";
pub const MAINNET: &str = "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp";
pub const DECIMALS: u8 = 6;
pub const TOKEN_PROGRAM: Pubkey = spl_token_interface::ID;
pub const TOKEN_2022_PROGRAM: Pubkey =
    Pubkey::from_str_const("TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb");
pub const ATA_PROGRAM: Pubkey = spl_associated_token_account_interface::program::ID;
pub const MEMO_PROGRAM: Pubkey =
    Pubkey::from_str_const("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr");
pub const COMPUTE_BUDGET_PROGRAM: Pubkey = solana_sdk_ids::compute_budget::ID;
/// What getVersion reports; also the `apiVersion` of every response context.
pub const CORE_VERSION: &str = "3.1.0";
const LAMPORTS_PER_SOL: u64 = 1_000_000_000;
/// A blockhash is valid for this many blocks after it was handed out (MAX_PROCESSING_AGE).
const BLOCKHASH_BLOCKS: u64 = 150;

/// One landed transaction (success or failure with its fee paid), as getTransaction tells it.
#[derive(Clone)]
struct Landed {
    tx: VersionedTransaction,
    slot: u64,
    block_time: i64,
    err: Option<TransactionError>,
    fee: u64,
    pre_balances: Vec<u64>,
    post_balances: Vec<u64>,
    pre_token: Vec<UiTransactionTokenBalance>,
    post_token: Vec<UiTransactionTokenBalance>,
    logs: Vec<String>,
    inner: Vec<UiInnerInstructions>,
    units: u64,
}

struct Ledger {
    svm: LiteSVM,
    slot: u64,
    landed: HashMap<Signature, Landed>,
    genesis_hash: String,
}

#[derive(Default)]
struct Faults {
    counts: HashMap<String, usize>,
    stalls: HashMap<String, Duration>,
}

struct Shared {
    ledger: Mutex<Ledger>,
    faults: Mutex<Faults>,
    down: AtomicBool,
    swallow: AtomicBool,
    /// Time spent answering (stalls excluded): the chain's share of a benchmark's latency.
    busy_nanos: std::sync::atomic::AtomicU64,
}

/// litesvm behind our JSON-RPC server, with two mints and a funded fee payer.
pub struct SvmChain {
    shared: Arc<Shared>,
    url: String,
    /// Pays the setup transactions and is the mint authority of both mints; never the gateway's.
    faucet: Keypair,
    fee_payer: Keypair,
    mint: Pubkey,
    mint_2022: Pubkey,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for SvmChain {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl SvmChain {
    /// A fresh chain whose getGenesisHash is devnet's.
    pub fn start() -> SvmChain {
        Self::start_with_genesis(DEVNET_GENESIS_HASH)
    }

    /// A fresh chain that answers getGenesisHash with `genesis_hash` (to play a wrong cluster).
    pub fn start_with_genesis(genesis_hash: &str) -> SvmChain {
        let mut svm = LiteSVM::new();
        let faucet = Keypair::new();
        let fee_payer = Keypair::new();
        svm.airdrop(&faucet.pubkey(), 1_000 * LAMPORTS_PER_SOL)
            .expect("airdrop to the faucet");
        svm.airdrop(&fee_payer.pubkey(), 100 * LAMPORTS_PER_SOL)
            .expect("airdrop to the fee payer");
        let shared = Arc::new(Shared {
            ledger: Mutex::new(Ledger {
                svm,
                slot: 1,
                landed: HashMap::new(),
                genesis_hash: genesis_hash.to_string(),
            }),
            faults: Mutex::new(Faults::default()),
            down: AtomicBool::new(false),
            swallow: AtomicBool::new(false),
            busy_nanos: std::sync::atomic::AtomicU64::new(0),
        });
        shared.ledger.lock().unwrap().set_slot(1);

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("svm-rpc")
            .enable_all()
            .build()
            .unwrap();
        let app = Router::new()
            .route("/", post(serve))
            .with_state(shared.clone());
        // Bound with std so this works from inside a test's own runtime too.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        runtime.spawn(async move {
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(l, app).await.unwrap()
        });
        // The clock: one slot a second, as a (slow) real cluster.
        let ticker = Arc::downgrade(&shared);
        runtime.spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            every.tick().await;
            loop {
                every.tick().await;
                let Some(shared) = ticker.upgrade() else {
                    return;
                };
                let mut ledger = shared.ledger.lock().unwrap();
                let next = ledger.slot + 1;
                ledger.set_slot(next);
            }
        });

        let mut chain = SvmChain {
            shared,
            url,
            faucet,
            fee_payer,
            mint: Pubkey::default(),
            mint_2022: Pubkey::default(),
            runtime: Some(runtime),
        };
        chain.mint = chain.create_mint(&TOKEN_PROGRAM);
        chain.mint_2022 = chain.create_mint(&TOKEN_2022_PROGRAM);
        chain
    }

    pub fn rpc_url(&self) -> String {
        self.url.clone()
    }

    /// The gateway's settlement keypair: funded with 100 SOL, used by nothing else here.
    pub fn fee_payer(&self) -> Keypair {
        self.fee_payer.insecure_clone()
    }

    pub fn fee_payer_pubkey(&self) -> Pubkey {
        self.fee_payer.pubkey()
    }

    /// The fee payer as the base58 of its 64-byte keypair (the config's `fee_payer_key`).
    pub fn fee_payer_key(&self) -> String {
        self.fee_payer.to_base58_string()
    }

    /// The SPL Token mint (6 decimals).
    pub fn mint(&self) -> Pubkey {
        self.mint
    }

    /// The Token-2022 mint (6 decimals).
    pub fn mint_2022(&self) -> Pubkey {
        self.mint_2022
    }

    /// The token program that owns `mint`.
    pub fn token_program(&self, mint: &Pubkey) -> Pubkey {
        self.account(mint)
            .unwrap_or_else(|| panic!("no mint {mint}"))
            .owner
    }

    /// A fresh keypair whose ATA of the SPL Token mint holds `amount`, and that has no SOL.
    pub fn new_payer(&self, amount: u64) -> Keypair {
        self.new_payer_of(&self.mint, amount)
    }

    /// A fresh keypair whose ATA of `mint` holds `amount`, and that has no SOL.
    pub fn new_payer_of(&self, mint: &Pubkey, amount: u64) -> Keypair {
        let payer = Keypair::new();
        self.mint_to(&payer.pubkey(), mint, amount);
        payer
    }

    /// A fresh wallet with an (empty) ATA of both mints, as a `payTo` must have.
    pub fn new_recipient(&self) -> Pubkey {
        let owner = Keypair::new().pubkey();
        self.create_ata(&owner, &self.mint, &TOKEN_PROGRAM);
        self.create_ata(&owner, &self.mint_2022, &TOKEN_2022_PROGRAM);
        owner
    }

    /// Creates (idempotently) the ATA of (`owner`, `mint`, `program`) and returns its address.
    pub fn create_ata(&self, owner: &Pubkey, mint: &Pubkey, program: &Pubkey) -> Pubkey {
        let ix = spl_associated_token_account_interface::instruction::create_associated_token_account_idempotent(
            &self.faucet.pubkey(),
            owner,
            mint,
            program,
        );
        self.setup_tx(&[ix], &[]);
        ata(owner, mint, program)
    }

    /// Mints `amount` of `mint` to `owner`'s ATA, creating it if needed.
    pub fn mint_to(&self, owner: &Pubkey, mint: &Pubkey, amount: u64) {
        let program = self.token_program(mint);
        let dest = self.create_ata(owner, mint, &program);
        let ix = token_ix(
            spl_token_interface::instruction::mint_to_checked(
                &TOKEN_PROGRAM,
                mint,
                &dest,
                &self.faucet.pubkey(),
                &[],
                amount,
                DECIMALS,
            ),
            &program,
        );
        self.setup_tx(&[ix], &[]);
    }

    /// The balance of `owner`'s ATA of `mint` (0 when it has none).
    pub fn token_balance(&self, owner: &Pubkey, mint: &Pubkey) -> u64 {
        let program = self.token_program(mint);
        self.token_account_balance(&ata(owner, mint, &program))
            .unwrap_or(0)
    }

    /// The balance of the token account at `address`, None if it is not one.
    pub fn token_account_balance(&self, address: &Pubkey) -> Option<u64> {
        let acc = self.account(address)?;
        token_account(&acc.owner, &acc.data).map(|t| t.amount)
    }

    pub fn sol_balance(&self, address: &Pubkey) -> u64 {
        self.account(address).map(|a| a.lamports).unwrap_or(0)
    }

    pub fn airdrop(&self, address: &Pubkey, lamports: u64) {
        let mut ledger = self.shared.ledger.lock().unwrap();
        ledger.svm.airdrop(address, lamports).expect("airdrop");
    }

    /// The account at `address` as litesvm holds it.
    pub fn account(&self, address: &Pubkey) -> Option<Account> {
        self.shared.ledger.lock().unwrap().svm.get_account(address)
    }

    /// The blockhash every new transaction must use.
    pub fn latest_blockhash(&self) -> Hash {
        self.shared.ledger.lock().unwrap().svm.latest_blockhash()
    }

    /// Expires the current blockhash (transactions built on it fail with BlockhashNotFound) and
    /// moves the block height 151 on, past every `lastValidBlockHeight` handed out so far.
    pub fn expire_blockhash(&self) {
        let mut ledger = self.shared.ledger.lock().unwrap();
        ledger.svm.expire_blockhash();
        let next = ledger.slot + BLOCKHASH_BLOCKS + 1;
        ledger.set_slot(next);
    }

    /// The current slot, which is also the block height.
    pub fn slot(&self) -> u64 {
        self.shared.ledger.lock().unwrap().slot
    }

    pub fn advance_slots(&self, n: u64) {
        let mut ledger = self.shared.ledger.lock().unwrap();
        let next = ledger.slot + n;
        ledger.set_slot(next);
    }

    /// How a transaction landed: None if it never did (unknown, dropped, or rejected before
    /// execution), Some(Ok) on success, Some(Err) if it failed on chain (its fee was paid).
    pub fn landed(&self, signature: &Signature) -> Option<Result<(), TransactionError>> {
        let ledger = self.shared.ledger.lock().unwrap();
        ledger.landed.get(signature).map(|l| match &l.err {
            None => Ok(()),
            Some(e) => Err(e.clone()),
        })
    }

    /// How many transactions have landed, setup ones included.
    pub fn landed_count(&self) -> usize {
        self.shared.ledger.lock().unwrap().landed.len()
    }

    /// Every landed transaction (setup ones included), with the token balances it changed: the
    /// chain's own record, which a checker reconciles against what the gateway says it settled.
    pub fn landed_transactions(&self) -> Vec<LandedTx> {
        let ledger = self.shared.ledger.lock().unwrap();
        ledger
            .landed
            .iter()
            .map(|(sig, l)| {
                let keys = static_keys(&l.tx);
                let amount = |b: &UiTransactionTokenBalance| -> u64 {
                    b.ui_token_amount.amount.parse().unwrap_or(0)
                };
                let mut changes: Vec<TokenChange> = Vec::new();
                // An account absent before the transaction (created by it) starts at zero, one
                // closed by it ends at zero.
                for (b, after) in l
                    .pre_token
                    .iter()
                    .map(|b| (b, false))
                    .chain(l.post_token.iter().map(|b| (b, true)))
                {
                    let account = keys[b.account_index as usize];
                    let i = match changes.iter().position(|c| c.account == account) {
                        Some(i) => i,
                        None => {
                            let owner = match &b.owner {
                                OptionSerializer::Some(o) => o.parse().unwrap(),
                                _ => Pubkey::default(),
                            };
                            changes.push(TokenChange {
                                account,
                                owner,
                                mint: b.mint.parse().unwrap(),
                                pre: 0,
                                post: 0,
                            });
                            changes.len() - 1
                        }
                    };
                    if after {
                        changes[i].post = amount(b);
                    } else {
                        changes[i].pre = amount(b);
                    }
                }
                LandedTx {
                    signature: *sig,
                    tx: l.tx.clone(),
                    slot: l.slot,
                    err: l.err.clone(),
                    token_changes: changes,
                }
            })
            .collect()
    }

    /// `owner` moves its whole balance of `mint` away (to the faucet), signing the transfer
    /// itself; the faucet pays the fee, as payers here hold no SOL. What a payer does to make a
    /// payment it already handed over fail on chain: Solana has no per-payment cancellation.
    pub fn move_all_away(&self, owner: &Keypair, mint: &Pubkey) -> Result<(), TransactionError> {
        let program = self.token_program(mint);
        let amount = self.token_balance(&owner.pubkey(), mint);
        if amount == 0 {
            return Ok(());
        }
        // The sink's ATA is created in the same transaction: a separate setup transaction
        // would be the same bytes every time (one blockhash), refused as already processed.
        let create = spl_associated_token_account_interface::instruction::create_associated_token_account_idempotent(
            &self.faucet.pubkey(),
            &self.faucet.pubkey(),
            mint,
            &program,
        );
        let ix = transfer_checked(
            &program,
            &ata(&owner.pubkey(), mint, &program),
            mint,
            &ata(&self.faucet.pubkey(), mint, &program),
            &owner.pubkey(),
            amount,
            DECIMALS,
        );
        let mut ledger = self.shared.ledger.lock().unwrap();
        let blockhash = ledger.svm.latest_blockhash();
        let msg = solana_message::Message::new_with_blockhash(
            &[create, ix],
            Some(&self.faucet.pubkey()),
            &blockhash,
        );
        let tx = solana_transaction::Transaction::new(&[&self.faucet, owner], msg, blockhash);
        ledger.process(tx.into()).1
    }

    /// Processes `tx` as a leader would (no preflight), as if sent with skipPreflight.
    pub fn process(&self, tx: VersionedTransaction) -> Result<Signature, TransactionError> {
        let mut ledger = self.shared.ledger.lock().unwrap();
        let (sig, result) = ledger.process(tx);
        result.map(|_| sig)
    }

    /// How many requests of `method` reached the server (each batch entry counts).
    pub fn count(&self, method: &str) -> usize {
        let faults = self.shared.faults.lock().unwrap();
        faults.counts.get(method).copied().unwrap_or(0)
    }

    /// Time the server spent answering so far (stalls excluded).
    pub fn busy(&self) -> Duration {
        Duration::from_nanos(self.shared.busy_nanos.load(Ordering::SeqCst))
    }

    /// All requests, of every method.
    pub fn calls(&self) -> usize {
        let faults = self.shared.faults.lock().unwrap();
        faults.counts.values().sum()
    }

    /// While down, every HTTP request is answered 503 and nothing is executed or counted.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// Replies to `method` are held `delay` after the request has been carried out (a
    /// sendTransaction stalled this way has landed: the reply is what is late or lost). A long
    /// delay is a reply that never comes before the caller's timeout; `Duration::ZERO` clears.
    pub fn set_stall(&self, method: &str, delay: Duration) {
        let mut faults = self.shared.faults.lock().unwrap();
        if delay.is_zero() {
            faults.stalls.remove(method);
        } else {
            faults.stalls.insert(method.to_string(), delay);
        }
    }

    pub fn clear_stalls(&self) {
        self.shared.faults.lock().unwrap().stalls.clear();
    }

    /// While set, sendTransaction answers the signature and drops the transaction, as an RPC
    /// whose leader never got it: it never lands.
    pub fn set_swallow(&self, swallow: bool) {
        self.shared.swallow.store(swallow, Ordering::SeqCst);
    }

    /// A v2 `accepts[]` entry for `amount` of `mint` to `pay_to` on devnet, fee payer ours.
    pub fn offer(&self, amount: u64, mint: &Pubkey, pay_to: &Pubkey) -> Value {
        json!({
            "scheme": "exact",
            "network": DEVNET,
            "amount": amount.to_string(),
            "asset": mint.to_string(),
            "payTo": pay_to.to_string(),
            "maxTimeoutSeconds": 60,
            "extra": {"feePayer": self.fee_payer.pubkey().to_string()},
        })
    }

    /// The payment an SDK client builds for `offer`, with this chain's blockhash, the mint's
    /// program and decimals; change its fields for invalid ones.
    pub fn payment(&self, offer: &Value, payer: &Pubkey) -> SvmPayment {
        let mint: Pubkey = offer["asset"].as_str().unwrap().parse().unwrap();
        let program = self.token_program(&mint);
        SvmPayment::for_offer(offer, payer, self.latest_blockhash(), program, DECIMALS)
    }

    fn create_mint(&self, program: &Pubkey) -> Pubkey {
        let mint = Keypair::new();
        let rent = {
            let ledger = self.shared.ledger.lock().unwrap();
            ledger.svm.minimum_balance_for_rent_exemption(82)
        };
        let create = solana_system_interface::instruction::create_account(
            &self.faucet.pubkey(),
            &mint.pubkey(),
            rent,
            82,
            program,
        );
        let init = token_ix(
            spl_token_interface::instruction::initialize_mint2(
                &TOKEN_PROGRAM,
                &mint.pubkey(),
                &self.faucet.pubkey(),
                None,
                DECIMALS,
            ),
            program,
        );
        self.setup_tx(&[create, init], &[&mint]);
        mint.pubkey()
    }

    /// A setup transaction paid and signed by the faucet (plus `signers`); must succeed.
    fn setup_tx(&self, ixs: &[Instruction], signers: &[&Keypair]) {
        let mut ledger = self.shared.ledger.lock().unwrap();
        let blockhash = ledger.svm.latest_blockhash();
        let msg = solana_message::Message::new_with_blockhash(
            ixs,
            Some(&self.faucet.pubkey()),
            &blockhash,
        );
        let mut all: Vec<&Keypair> = vec![&self.faucet];
        all.extend_from_slice(signers);
        let tx = solana_transaction::Transaction::new(&all, msg, blockhash);
        let (sig, result) = ledger.process(tx.into());
        if let Err(e) = result {
            panic!("setup transaction {sig} failed: {e}");
        }
    }
}

/// One landed transaction, as `SvmChain::landed_transactions` reports it.
#[derive(Debug, Clone)]
pub struct LandedTx {
    pub signature: Signature,
    pub tx: VersionedTransaction,
    pub slot: u64,
    /// Some when it failed on chain (its fee paid, nothing else moved).
    pub err: Option<TransactionError>,
    /// Every token account among its static keys, before and after.
    pub token_changes: Vec<TokenChange>,
}

#[derive(Debug, Clone)]
pub struct TokenChange {
    pub account: Pubkey,
    pub owner: Pubkey,
    pub mint: Pubkey,
    pub pre: u64,
    pub post: u64,
}

/// The ATA of (`owner`, `mint`, `program`).
pub fn ata(owner: &Pubkey, mint: &Pubkey, program: &Pubkey) -> Pubkey {
    spl_associated_token_account_interface::address::get_associated_token_address_with_program_id(
        owner, mint, program,
    )
}

/// An spl-token instruction re-targeted to `program`: Token-2022 shares Token's layout for the
/// base instructions, but spl-token-interface only builds them for Token.
pub fn token_ix(
    ix: Result<Instruction, solana_program_error::ProgramError>,
    program: &Pubkey,
) -> Instruction {
    let mut ix = ix.expect("token instruction");
    ix.program_id = *program;
    ix
}

pub struct TokenAccount {
    pub mint: Pubkey,
    pub owner: Pubkey,
    pub amount: u64,
}

/// Parses an SPL Token or Token-2022 token account (not a mint), extensions ignored.
pub fn token_account(program: &Pubkey, data: &[u8]) -> Option<TokenAccount> {
    if *program != TOKEN_PROGRAM && *program != TOKEN_2022_PROGRAM {
        return None;
    }
    let is_account =
        data.len() == 165 || (*program == TOKEN_2022_PROGRAM && data.len() > 165 && data[165] == 2);
    // An initialized account: state byte (108) is 1 (Initialized) or 2 (Frozen).
    if !is_account || data[108] == 0 {
        return None;
    }
    Some(TokenAccount {
        mint: Pubkey::try_from(&data[0..32]).ok()?,
        owner: Pubkey::try_from(&data[32..64]).ok()?,
        amount: u64::from_le_bytes(data[64..72].try_into().ok()?),
    })
}

/// The decimals of a mint account's data.
fn mint_decimals(data: &[u8]) -> Option<u8> {
    (data.len() >= 82).then(|| data[44])
}

/// "0.01" for 10000 at 6 decimals; "0" for 0; "12" for 12000000.
pub fn ui_amount_string(amount: u64, decimals: u8) -> String {
    let s = format!("{amount:0>width$}", width = decimals as usize + 1);
    let (int, frac) = s.split_at(s.len() - decimals as usize);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        int.to_string()
    } else {
        format!("{int}.{frac}")
    }
}

pub fn ui_token_amount(amount: u64, decimals: u8) -> UiTokenAmount {
    UiTokenAmount {
        ui_amount: Some(amount as f64 / 10f64.powi(decimals as i32)),
        decimals,
        amount: amount.to_string(),
        ui_amount_string: ui_amount_string(amount, decimals),
    }
}

fn static_keys(tx: &VersionedTransaction) -> &[Pubkey] {
    tx.message.static_account_keys()
}

impl Ledger {
    fn set_slot(&mut self, slot: u64) {
        self.slot = slot;
        self.svm.warp_to_slot(slot);
    }

    fn block_height(&self) -> u64 {
        self.slot
    }

    fn lamports(&self, keys: &[Pubkey]) -> Vec<u64> {
        keys.iter()
            .map(|k| self.svm.get_balance(k).unwrap_or(0))
            .collect()
    }

    fn token_balances(&self, keys: &[Pubkey]) -> Vec<UiTransactionTokenBalance> {
        let mut out = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let Some(acc) = self.svm.get_account(k) else {
                continue;
            };
            let Some(t) = token_account(&acc.owner, &acc.data) else {
                continue;
            };
            let decimals = self
                .svm
                .get_account(&t.mint)
                .and_then(|m| mint_decimals(&m.data))
                .unwrap_or(0);
            out.push(UiTransactionTokenBalance {
                account_index: i as u8,
                mint: t.mint.to_string(),
                ui_token_amount: ui_token_amount(t.amount, decimals),
                owner: OptionSerializer::Some(t.owner.to_string()),
                program_id: OptionSerializer::Some(acc.owner.to_string()),
            });
        }
        out
    }

    /// Executes `tx` as a leader: lands it (success, or failure with the fee paid), or drops it
    /// (rejected before execution: bad signature, unknown blockhash, already processed, no fee).
    fn process(&mut self, tx: VersionedTransaction) -> (Signature, Result<(), TransactionError>) {
        let sig = tx.signatures.first().copied().unwrap_or_default();
        if self.landed.contains_key(&sig) {
            return (sig, Err(TransactionError::AlreadyProcessed));
        }
        let keys = static_keys(&tx).to_vec();
        let pre_balances = self.lamports(&keys);
        let pre_token = self.token_balances(&keys);
        let result = self.svm.send_transaction(tx.clone());
        let (err, meta) = match result {
            Ok(meta) => (None, meta),
            Err(failed) => {
                // litesvm keeps a failed transaction only if it was included (fee charged).
                if self.svm.get_transaction(&sig).is_none() {
                    return (sig, Err(failed.err));
                }
                (Some(failed.err), failed.meta)
            }
        };
        let landed = Landed {
            tx,
            slot: self.slot,
            block_time: now_secs(),
            err: err.clone(),
            fee: meta.fee,
            pre_balances,
            post_balances: self.lamports(&keys),
            pre_token,
            post_token: self.token_balances(&keys),
            inner: inner_instructions(&meta),
            logs: meta.logs,
            units: meta.compute_units_consumed,
        };
        self.landed.insert(sig, landed);
        let next = self.slot + 1;
        self.set_slot(next);
        (sig, err.map_or(Ok(()), Err))
    }

    /// Simulates `tx` against the current state; `sig_verify` false skips the signatures (and,
    /// in litesvm, the status cache, which is checked here instead).
    fn simulate(
        &mut self,
        tx: VersionedTransaction,
        sig_verify: bool,
    ) -> (
        Result<(), TransactionError>,
        litesvm::types::TransactionMetadata,
    ) {
        let sig = tx.signatures.first().copied().unwrap_or_default();
        if sig != Signature::default() && self.landed.contains_key(&sig) {
            return (Err(TransactionError::AlreadyProcessed), Default::default());
        }
        let result = if sig_verify {
            self.svm.simulate_transaction(tx)
        } else {
            let svm = std::mem::take(&mut self.svm).with_sigverify(false);
            let result = svm.simulate_transaction(tx);
            self.svm = svm.with_sigverify(true);
            result
        };
        match result {
            Ok(info) => (Ok(()), info.meta),
            Err(failed) => (Err(failed.err), failed.meta),
        }
    }

    fn context(&self) -> Value {
        json!({"slot": self.slot, "apiVersion": CORE_VERSION})
    }

    fn with_context(&self, value: impl serde::Serialize) -> Value {
        json!({"context": self.context(), "value": value})
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

// ---------------------------------------------------------------------------------------------
// The JSON-RPC server.

type RpcError = jsonrpc_core::Error;

async fn serve(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    if shared.down.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "rpc down").into_response();
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            let e = RpcError::parse_error();
            return reply(json!({"jsonrpc": "2.0", "error": e, "id": null}));
        }
    };
    let started = std::time::Instant::now();
    let (answer, methods) = match request {
        Value::Array(items) => {
            let mut out = Vec::new();
            let mut methods = Vec::new();
            for item in items {
                let (a, m) = answer_one(&shared, item);
                out.push(a);
                methods.extend(m);
            }
            (Value::Array(out), methods)
        }
        item => {
            let (a, m) = answer_one(&shared, item);
            (a, m.into_iter().collect())
        }
    };
    shared
        .busy_nanos
        .fetch_add(started.elapsed().as_nanos() as u64, Ordering::SeqCst);
    let stall = {
        let faults = shared.faults.lock().unwrap();
        methods
            .iter()
            .filter_map(|m| faults.stalls.get(m).copied())
            .max()
    };
    if let Some(delay) = stall {
        tokio::time::sleep(delay).await;
    }
    reply(answer)
}

fn reply(v: Value) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn answer_one(shared: &Shared, request: Value) -> (Value, Option<String>) {
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let Some(method) = request.get("method").and_then(Value::as_str) else {
        let e = RpcError::invalid_request();
        return (json!({"jsonrpc": "2.0", "error": e, "id": id}), None);
    };
    let method = method.to_string();
    if std::env::var_os("X402_TEST_SVM_LOG").is_some() {
        eprintln!("svm rpc <- {request}");
    }
    *shared
        .faults
        .lock()
        .unwrap()
        .counts
        .entry(method.clone())
        .or_default() += 1;
    let params = match request.get("params") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => {
            let e = RpcError::invalid_params("Invalid params: invalid type: map, expected a tuple");
            return (
                json!({"jsonrpc": "2.0", "error": e, "id": id}),
                Some(method),
            );
        }
    };
    let result = if method == "sendTransaction" && shared.swallow.load(Ordering::SeqCst) {
        swallowed(&params)
    } else {
        let mut ledger = shared.ledger.lock().unwrap();
        dispatch(&mut ledger, &method, &params)
    };
    let answer = match result {
        Ok(v) => json!({"jsonrpc": "2.0", "result": v, "id": id}),
        Err(e) => json!({"jsonrpc": "2.0", "error": e, "id": id}),
    };
    (answer, Some(method))
}

/// The `i`th parameter, None when absent or null.
fn param<T: DeserializeOwned>(params: &[Value], i: usize) -> Result<Option<T>, RpcError> {
    match params.get(i) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| RpcError::invalid_params(format!("Invalid params: {e}."))),
    }
}

fn required<T: DeserializeOwned>(params: &[Value], i: usize) -> Result<T, RpcError> {
    param(params, i)?.ok_or_else(|| RpcError::invalid_params("Invalid params: missing field."))
}

fn pubkey_param(params: &[Value], i: usize) -> Result<Pubkey, RpcError> {
    let s: String = required(params, i)?;
    s.parse::<Pubkey>()
        .map_err(|e| RpcError::invalid_params(format!("Invalid param: {e:?}")))
}

fn signature(s: &str) -> Result<Signature, RpcError> {
    s.parse::<Signature>()
        .map_err(|e| RpcError::invalid_params(format!("Invalid param: {e:?}")))
}

fn to_value(v: impl serde::Serialize) -> Value {
    serde_json::to_value(v).unwrap()
}

fn custom(e: RpcCustomError) -> RpcError {
    e.into()
}

fn dispatch(ledger: &mut Ledger, method: &str, params: &[Value]) -> Result<Value, RpcError> {
    match method {
        "getHealth" => Ok(json!("ok")),
        "getVersion" => Ok(json!({"solana-core": CORE_VERSION, "feature-set": 3_640_012_085u32})),
        "getGenesisHash" => Ok(json!(ledger.genesis_hash)),
        "getSlot" => Ok(json!(ledger.slot)),
        "getBlockHeight" => Ok(json!(ledger.block_height())),
        "getEpochInfo" => Ok(json!({
            "absoluteSlot": ledger.slot,
            "blockHeight": ledger.block_height(),
            "epoch": ledger.slot / 432_000,
            "slotIndex": ledger.slot % 432_000,
            "slotsInEpoch": 432_000,
            "transactionCount": ledger.landed.len(),
        })),
        "getLatestBlockhash" => {
            let value = RpcBlockhash {
                blockhash: ledger.svm.latest_blockhash().to_string(),
                last_valid_block_height: ledger.block_height() + BLOCKHASH_BLOCKS,
            };
            Ok(ledger.with_context(value))
        }
        "isBlockhashValid" => {
            let s: String = required(params, 0)?;
            let hash: Hash = s
                .parse()
                .map_err(|e| RpcError::invalid_params(format!("Invalid param: {e:?}")))?;
            let valid = hash == ledger.svm.latest_blockhash();
            Ok(ledger.with_context(valid))
        }
        "getMinimumBalanceForRentExemption" => {
            let len: usize = param(params, 0)?.unwrap_or(0);
            Ok(json!(ledger.svm.minimum_balance_for_rent_exemption(len)))
        }
        "getBalance" => {
            let key = pubkey_param(params, 0)?;
            let lamports = ledger.svm.get_balance(&key).unwrap_or(0);
            Ok(ledger.with_context(lamports))
        }
        "getAccountInfo" => {
            let key = pubkey_param(params, 0)?;
            let config: RpcAccountInfoConfig = param(params, 1)?.unwrap_or_default();
            let account = ui_account(ledger, &key, &config)?;
            Ok(ledger.with_context(account))
        }
        "getMultipleAccounts" => {
            let keys: Vec<String> = required(params, 0)?;
            if keys.len() > 100 {
                return Err(RpcError::invalid_params(
                    "Too many inputs provided; max 100".to_string(),
                ));
            }
            let config: RpcAccountInfoConfig = param(params, 1)?.unwrap_or_default();
            let mut accounts = Vec::new();
            for k in keys {
                let key = k
                    .parse::<Pubkey>()
                    .map_err(|e| RpcError::invalid_params(format!("Invalid param: {e:?}")))?;
                accounts.push(ui_account(ledger, &key, &config)?);
            }
            Ok(ledger.with_context(accounts))
        }
        "getTokenAccountBalance" => {
            let key = pubkey_param(params, 0)?;
            let acc = ledger
                .svm
                .get_account(&key)
                .ok_or_else(|| RpcError::invalid_params("Invalid param: could not find account"))?;
            let t = token_account(&acc.owner, &acc.data)
                .ok_or_else(|| RpcError::invalid_params("Invalid param: not a Token account"))?;
            let decimals = ledger
                .svm
                .get_account(&t.mint)
                .and_then(|m| mint_decimals(&m.data))
                .ok_or_else(|| RpcError::invalid_params("Invalid param: could not find mint"))?;
            Ok(ledger.with_context(ui_token_amount(t.amount, decimals)))
        }
        "getTokenAccountsByOwner" => {
            let owner = pubkey_param(params, 0)?;
            let filter: Value = required(params, 1)?;
            let config: RpcAccountInfoConfig = param(params, 2)?.unwrap_or_default();
            let by_mint: Option<Pubkey> = filter["mint"].as_str().and_then(|s| s.parse().ok());
            let by_program: Option<Pubkey> =
                filter["programId"].as_str().and_then(|s| s.parse().ok());
            if by_mint.is_none() && by_program.is_none() {
                return Err(RpcError::invalid_params(
                    "Invalid params: expected a mint or programId filter.",
                ));
            }
            let mut found: Vec<Pubkey> = ledger
                .svm
                .accounts_db()
                .inner
                .iter()
                .filter_map(|(k, a)| {
                    let t = token_account(a.owner(), a.data())?;
                    let ok = t.owner == owner
                        && by_mint.is_none_or(|m| m == t.mint)
                        && by_program.is_none_or(|p| &p == a.owner());
                    ok.then_some(*k)
                })
                .collect();
            found.sort();
            let mut out = Vec::new();
            for k in found {
                let account = ui_account(ledger, &k, &config)?.unwrap();
                out.push(RpcKeyedAccount {
                    pubkey: k.to_string(),
                    account,
                });
            }
            Ok(ledger.with_context(out))
        }
        "getFeeForMessage" => {
            let b64: String = required(params, 0)?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&b64)
                .map_err(|e| RpcError::invalid_params(format!("invalid base64 encoding: {e:?}")))?;
            let msg: VersionedMessage = bincode::deserialize(&bytes).map_err(|e| {
                RpcError::invalid_params(format!("failed to deserialize VersionedMessage: {e}"))
            })?;
            let fee = (*msg.recent_blockhash() == ledger.svm.latest_blockhash())
                .then(|| message_fee(&msg));
            Ok(ledger.with_context(fee))
        }
        "simulateTransaction" => simulate_transaction(ledger, params),
        "sendTransaction" => send_transaction(ledger, params),
        "getSignatureStatuses" => {
            let sigs: Vec<String> = required(params, 0)?;
            let _config: Option<RpcSignatureStatusConfig> = param(params, 1)?;
            if sigs.len() > 256 {
                return Err(RpcError::invalid_params(format!(
                    "Too many inputs provided; max {}",
                    256
                )));
            }
            let mut out = Vec::new();
            for s in sigs {
                let sig = signature(&s)?;
                out.push(ledger.landed.get(&sig).map(|l| TransactionStatus {
                    slot: l.slot,
                    confirmations: None,
                    status: l.err.clone().map_or(Ok(()), Err),
                    err: l.err.clone(),
                    confirmation_status: Some(TransactionConfirmationStatus::Finalized),
                }));
            }
            Ok(ledger.with_context(out))
        }
        "getTransaction" => get_transaction(ledger, params),
        _ => Err(RpcError::method_not_found()),
    }
}

/// 5000 lamports a signature plus the priority fee of the compute budget instructions.
fn message_fee(msg: &VersionedMessage) -> u64 {
    let keys = msg.static_account_keys();
    let (mut limit, mut price, mut others) = (None, 0u64, 0u64);
    for ix in msg.instructions() {
        let program = keys.get(ix.program_id_index as usize);
        if program == Some(&COMPUTE_BUDGET_PROGRAM) {
            match ix.data.first() {
                Some(2) if ix.data.len() >= 5 => {
                    limit = Some(u32::from_le_bytes(ix.data[1..5].try_into().unwrap()) as u64)
                }
                Some(3) if ix.data.len() >= 9 => {
                    price = u64::from_le_bytes(ix.data[1..9].try_into().unwrap())
                }
                _ => {}
            }
        } else {
            others += 1;
        }
    }
    let limit = limit.unwrap_or((others * 200_000).min(1_400_000));
    let priority = (limit as u128 * price as u128).div_ceil(1_000_000) as u64;
    5000 * msg.header().num_required_signatures as u64 + priority
}

fn ui_account(
    ledger: &Ledger,
    key: &Pubkey,
    config: &RpcAccountInfoConfig,
) -> Result<Option<UiAccount>, RpcError> {
    let Some(acc) = ledger.svm.get_account(key) else {
        return Ok(None);
    };
    let mut data: &[u8] = &acc.data;
    if let Some(slice) = &config.data_slice {
        let start = slice.offset.min(data.len());
        let end = (slice.offset + slice.length).min(data.len());
        data = &data[start..end];
    }
    let encoding = config.encoding.unwrap_or(UiAccountEncoding::Binary);
    let ui_data = match encoding {
        UiAccountEncoding::Binary | UiAccountEncoding::Base58 => {
            if data.len() > 128 {
                return Err(RpcError::invalid_params(
                    "Encoded binary (base 58) data should be less than 128 bytes, please use Base64 encoding.",
                ));
            }
            let s = bs58::encode(data).into_string();
            if encoding == UiAccountEncoding::Binary {
                UiAccountData::LegacyBinary(s)
            } else {
                UiAccountData::Binary(s, UiAccountEncoding::Base58)
            }
        }
        // base64+zstd: plain base64, as the validator itself answers when compression fails;
        // jsonParsed: base64, as it answers for accounts it cannot parse.
        UiAccountEncoding::Base64
        | UiAccountEncoding::Base64Zstd
        | UiAccountEncoding::JsonParsed => UiAccountData::Binary(
            base64::engine::general_purpose::STANDARD.encode(data),
            UiAccountEncoding::Base64,
        ),
    };
    Ok(Some(UiAccount {
        lamports: acc.lamports,
        data: ui_data,
        owner: acc.owner.to_string(),
        executable: acc.executable,
        rent_epoch: acc.rent_epoch,
        space: Some(acc.data.len() as u64),
    }))
}

/// A transaction param as the validator decodes it (base58 unless told base64).
fn decode_wire_tx(
    data: &str,
    encoding: Option<UiTransactionEncoding>,
) -> Result<VersionedTransaction, RpcError> {
    let encoding = encoding.unwrap_or(UiTransactionEncoding::Base58);
    let bytes = match encoding.into_binary_encoding() {
        Some(TransactionBinaryEncoding::Base58) => bs58::decode(data)
            .into_vec()
            .map_err(|e| RpcError::invalid_params(format!("invalid base58 encoding: {e:?}")))?,
        Some(TransactionBinaryEncoding::Base64) => base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| RpcError::invalid_params(format!("invalid base64 encoding: {e:?}")))?,
        None => {
            return Err(RpcError::invalid_params(format!(
                "unsupported encoding: {encoding}. Supported encodings: base58, base64"
            )))
        }
    };
    let tx: VersionedTransaction = bincode::deserialize(&bytes).map_err(|e| {
        RpcError::invalid_params(format!(
            "failed to deserialize {}: {e}",
            std::any::type_name::<VersionedTransaction>()
        ))
    })?;
    if tx.sanitize().is_err() {
        return Err(RpcError::invalid_params(format!(
            "invalid transaction: {}",
            TransactionError::SanitizeFailure
        )));
    }
    Ok(tx)
}

fn inner_instructions(meta: &litesvm::types::TransactionMetadata) -> Vec<UiInnerInstructions> {
    meta.inner_instructions
        .iter()
        .enumerate()
        .filter(|(_, ixs)| !ixs.is_empty())
        .map(|(i, ixs)| UiInnerInstructions {
            index: i as u8,
            instructions: ixs
                .iter()
                .map(|ix| {
                    UiInstruction::Compiled(UiCompiledInstruction::from(
                        &ix.instruction,
                        Some(ix.stack_height as u32),
                    ))
                })
                .collect(),
        })
        .collect()
}

fn simulate_transaction(ledger: &mut Ledger, params: &[Value]) -> Result<Value, RpcError> {
    let data: String = required(params, 0)?;
    let config: RpcSimulateTransactionConfig = param(params, 1)?.unwrap_or_default();
    let mut tx = decode_wire_tx(&data, config.encoding)?;
    let mut replacement = None;
    if config.replace_recent_blockhash {
        if config.sig_verify {
            return Err(RpcError::invalid_params(
                "sigVerify may not be used with replaceRecentBlockhash",
            ));
        }
        let hash = ledger.svm.latest_blockhash();
        tx.message.set_recent_blockhash(hash);
        replacement = Some(RpcBlockhash {
            blockhash: hash.to_string(),
            last_valid_block_height: ledger.block_height() + BLOCKHASH_BLOCKS,
        });
    }
    if config.sig_verify && !tx.verify_with_results().iter().all(|ok| *ok) {
        return Err(custom(
            RpcCustomError::TransactionSignatureVerificationFailure,
        ));
    }
    let accounts_config = config.accounts.clone();
    let (result, meta) = ledger.simulate(tx.clone(), config.sig_verify);
    let accounts = match accounts_config {
        None => None,
        Some(c) => {
            let cfg = RpcAccountInfoConfig {
                encoding: Some(c.encoding.unwrap_or(UiAccountEncoding::Base64)),
                ..Default::default()
            };
            // Post-simulation state is not kept: the accounts are shown as they are now.
            let mut out = Vec::new();
            for a in c.addresses {
                let k = a
                    .parse::<Pubkey>()
                    .map_err(|e| RpcError::invalid_params(format!("Invalid param: {e:?}")))?;
                out.push(ui_account(ledger, &k, &cfg)?);
            }
            Some(out)
        }
    };
    let value = RpcSimulateTransactionResult {
        err: result.err().map(Into::into),
        logs: Some(meta.logs.clone()),
        accounts,
        units_consumed: Some(meta.compute_units_consumed),
        loaded_accounts_data_size: None,
        return_data: None,
        inner_instructions: config.inner_instructions.then(|| inner_instructions(&meta)),
        replacement_blockhash: replacement,
        fee: Some(meta.fee),
        pre_balances: None,
        post_balances: None,
        pre_token_balances: None,
        post_token_balances: None,
        loaded_addresses: None,
    };
    Ok(ledger.with_context(value))
}

fn send_transaction(ledger: &mut Ledger, params: &[Value]) -> Result<Value, RpcError> {
    let data: String = required(params, 0)?;
    let config: RpcSendTransactionConfig = param(params, 1)?.unwrap_or_default();
    let tx = decode_wire_tx(&data, config.encoding)?;
    let sig = tx.signatures.first().copied().unwrap_or_default();
    if !config.skip_preflight {
        if !tx.verify_with_results().iter().all(|ok| *ok) {
            return Err(custom(
                RpcCustomError::TransactionSignatureVerificationFailure,
            ));
        }
        let (result, meta) = ledger.simulate(tx.clone(), true);
        if let Err(err) = result {
            return Err(custom(RpcCustomError::SendTransactionPreflightFailure {
                message: format!("Transaction simulation failed: {err}"),
                result: RpcSimulateTransactionResult {
                    err: Some(err.into()),
                    logs: Some(meta.logs),
                    accounts: None,
                    units_consumed: Some(meta.compute_units_consumed),
                    loaded_accounts_data_size: None,
                    return_data: None,
                    inner_instructions: None,
                    replacement_blockhash: None,
                    fee: None,
                    pre_balances: None,
                    post_balances: None,
                    pre_token_balances: None,
                    post_token_balances: None,
                    loaded_addresses: None,
                },
            }));
        }
    }
    // Whatever happens next (landed, failed, dropped, or already processed), the RPC node
    // answers with the signature: it only forwards to the leader.
    let _ = ledger.process(tx);
    Ok(json!(sig.to_string()))
}

/// sendTransaction while swallowing: the signature, and nothing else happens.
fn swallowed(params: &[Value]) -> Result<Value, RpcError> {
    let data: String = required(params, 0)?;
    let config: RpcSendTransactionConfig = param(params, 1)?.unwrap_or_default();
    let tx = decode_wire_tx(&data, config.encoding)?;
    let sig = tx.signatures.first().copied().unwrap_or_default();
    Ok(json!(sig.to_string()))
}

fn get_transaction(ledger: &mut Ledger, params: &[Value]) -> Result<Value, RpcError> {
    let s: String = required(params, 0)?;
    let sig = signature(&s)?;
    // The second param is a config object, or (deprecated) an encoding string.
    let config: RpcTransactionConfig = match params.get(1) {
        Some(Value::String(e)) => RpcTransactionConfig {
            encoding: serde_json::from_value(json!(e))
                .map_err(|e| RpcError::invalid_params(format!("Invalid params: {e}.")))?,
            ..Default::default()
        },
        _ => param(params, 1)?.unwrap_or_default(),
    };
    let Some(l) = ledger.landed.get(&sig) else {
        return Ok(Value::Null);
    };
    let version = match (&l.tx.message, config.max_supported_transaction_version) {
        (VersionedMessage::Legacy(_), None) => None,
        (VersionedMessage::Legacy(_), Some(_)) => Some(json!("legacy")),
        (VersionedMessage::V0(_), Some(_)) => Some(json!(0)),
        (VersionedMessage::V0(_), _) => {
            return Err(custom(RpcCustomError::UnsupportedTransactionVersion(0)))
        }
    };
    let encoding = config.encoding.unwrap_or(UiTransactionEncoding::Json);
    let transaction = match encoding {
        UiTransactionEncoding::Json | UiTransactionEncoding::JsonParsed => {
            EncodedTransaction::Json(ui_transaction(&l.tx))
        }
        UiTransactionEncoding::Base64 => EncodedTransaction::Binary(
            base64::engine::general_purpose::STANDARD.encode(bincode::serialize(&l.tx).unwrap()),
            TransactionBinaryEncoding::Base64,
        ),
        UiTransactionEncoding::Base58 => EncodedTransaction::Binary(
            bs58::encode(bincode::serialize(&l.tx).unwrap()).into_string(),
            TransactionBinaryEncoding::Base58,
        ),
        UiTransactionEncoding::Binary => EncodedTransaction::LegacyBinary(
            bs58::encode(bincode::serialize(&l.tx).unwrap()).into_string(),
        ),
    };
    let meta = UiTransactionStatusMeta {
        err: l.err.clone().map(Into::into),
        status: l.err.clone().map_or(Ok(()), |e| Err(e.into())),
        fee: l.fee,
        pre_balances: l.pre_balances.clone(),
        post_balances: l.post_balances.clone(),
        inner_instructions: OptionSerializer::Some(l.inner.clone()),
        log_messages: OptionSerializer::Some(l.logs.clone()),
        pre_token_balances: OptionSerializer::Some(l.pre_token.clone()),
        post_token_balances: OptionSerializer::Some(l.post_token.clone()),
        rewards: OptionSerializer::Some(vec![]),
        loaded_addresses: OptionSerializer::Some(UiLoadedAddresses {
            writable: vec![],
            readonly: vec![],
        }),
        return_data: OptionSerializer::Skip,
        compute_units_consumed: OptionSerializer::Some(l.units),
        cost_units: OptionSerializer::Skip,
    };
    let mut value = to_value(EncodedConfirmedTransactionWithStatusMeta {
        slot: l.slot,
        transaction: EncodedTransactionWithStatusMeta {
            transaction,
            meta: Some(meta),
            version: None,
        },
        block_time: Some(l.block_time),
    });
    if let Some(v) = version {
        value["version"] = v;
    }
    Ok(value)
}

fn ui_transaction(tx: &VersionedTransaction) -> UiTransaction {
    let msg = &tx.message;
    let lookups = match msg {
        VersionedMessage::Legacy(_) => None,
        VersionedMessage::V0(m) => Some(m.address_table_lookups.iter().map(Into::into).collect()),
    };
    UiTransaction {
        signatures: tx.signatures.iter().map(|s| s.to_string()).collect(),
        message: UiMessage::Raw(UiRawMessage {
            header: *msg.header(),
            account_keys: msg
                .static_account_keys()
                .iter()
                .map(|k| k.to_string())
                .collect(),
            recent_blockhash: msg.recent_blockhash().to_string(),
            instructions: msg
                .instructions()
                .iter()
                .map(|ix| UiCompiledInstruction::from(ix, None))
                .collect(),
            address_table_lookups: lookups,
        }),
    }
}

/// An instruction with `program` and plain accounts (for memo and extra instructions).
pub fn instruction(program: Pubkey, accounts: Vec<AccountMeta>, data: Vec<u8>) -> Instruction {
    Instruction {
        program_id: program,
        accounts,
        data,
    }
}
