//! The chain seam: `ChainBackend`, one per chain family (and network), verifies a proof against
//! our own offer and settles it; its value types are chain-neutral.
//!
//! Everything here names no chain library: a payment's identity (`PaymentKey`), who pays whom how
//! much until when (`Verified`), and an opaque `SchemePayload` that only the backend that made it
//! parses. The store keeps these values (the deferred queue stores `Verified` as JSON), so their
//! serde form is an on-disk format: change it only with a new stored version.
//!
//! Backends live beside this module: `evm/` (the EVM `exact` scheme, EIP-3009, on alloy; alloy
//! stays inside it), `lanes.rs` (several settler keys of one network behind one backend), and
//! `fake.rs` for unit tests. `ChainBackends` is the registry keyed by CAIP-2 id.
//! May import: x402, config, pricing (for `Offer`). Never store, cache, proxy or admin.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::pricing::Offer;
use crate::x402::{Network, PaymentProof, Reason};

/// The identity of a payment for consume-once: the one tuple that names a payment on its chain,
/// whatever the chain. The store's UNIQUE key is these four columns, so a proof presented twice
/// is one payment. Each backend says what its parts are:
/// - EVM `exact` (EIP-3009): `(network, token address, authorization.from, authorization nonce)`,
///   lower-case 0x hex, so `0xAbC` and `0xabc` are one payment;
/// - a signature-identified chain (e.g. Solana): `(network, mint, payer, transaction signature)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PaymentKey {
    /// CAIP-2 id.
    pub network: String,
    /// The asset paid in (token contract, mint), as the backend normalizes it.
    pub asset: String,
    /// Who pays, as the backend normalizes it.
    pub payer: String,
    /// What makes this payment unique for this payer and asset.
    pub nonce: String,
}

/// Scheme-specific settlement data (for EVM: the signed EIP-3009 authorization), opaque to
/// everything but the backend of its `chain`, which makes it in `verify` and parses it to settle.
///
/// Stored in the deferred queue, so it is tagged and versioned: `{"chain":"evm","v":1,
/// "data":{...}}`. A backend reads every `v` it ever wrote and writes only its newest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemePayload {
    /// The chain family whose backend parses `data` (`"evm"`, ...).
    pub chain: String,
    /// The version of `data`'s layout within that chain family.
    pub v: u32,
    /// The backend's own data: JSON of strings and integers, never a library's serde form.
    pub data: serde_json::Value,
}

/// A proof that passed verification: everything settlement needs, serializable so a deferred
/// settlement survives a restart. The deferred queue stores it as JSON (stored format 2, see
/// `store`); its fields are chain-neutral, the scheme's own data is in `scheme_payload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    pub key: PaymentKey,
    /// The payer as shown to people (for EVM: EIP-55 checksummed).
    pub payer: String,
    /// Who is paid, as shown to people.
    pub pay_to: String,
    /// Atomic units, decimal.
    pub amount: String,
    /// Unix seconds after which the payment can no longer settle (EIP-3009 `validBefore`).
    pub expires_at: u64,
    /// What only the backend parses: for EVM, the authorization and its signature.
    pub scheme_payload: SchemePayload,
}

/// A settlement that landed on-chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    pub transaction: String,
    pub block_number: u64,
    pub network: String,
    pub payer: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The proof is not acceptable: the client's problem, answered with a 402.
    #[error("{reason}: {message}")]
    Invalid { reason: Reason, message: String },
    /// We could not find out (RPC down or failing): our problem, answered with a 503.
    #[error("verification unavailable: {0}")]
    Unavailable(String),
}

impl VerifyError {
    pub fn invalid(reason: Reason, message: impl Into<String>) -> Self {
        VerifyError::Invalid {
            reason,
            message: message.into(),
        }
    }
}

/// Why a settlement did not land, typed by what it means for the claim: whether money can still
/// move decides whether the claim may be given back, never the text of an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettleError {
    /// The transaction was mined and reverted, or moved nothing: nothing was charged, and the
    /// authorization is spent or unusable.
    #[error("{reason}: {message}")]
    Failed {
        reason: Reason,
        message: String,
        transaction: Option<String>,
    },
    /// Nothing was sent: an RPC call before the send failed or timed out, the database did not
    /// record the signed transaction, or the connection to the node was refused. Nothing can
    /// move, so the claim may be given back.
    #[error("settlement unavailable: {0}")]
    Unavailable(String),
    /// The node answered the send with a JSON-RPC error refusing the transaction (its nonce was
    /// taken, it was underpriced, ...): it was not broadcast and never will be. Signing anew may
    /// succeed; the claim may be given back.
    #[error("settlement refused by the node: {message}")]
    NotBroadcast { message: String },
    /// Sent, or maybe sent (the answer to the send was lost: a timeout, a 5xx, a cut connection),
    /// and not mined yet: it may still land, so the claim is kept and the transaction sent again
    /// until it lands or its authorization expires.
    #[error("settlement pending: {transaction}: {message}")]
    Pending {
        transaction: String,
        message: String,
    },
    /// Sent and not mined within the network's `replace_after_seconds`: stuck in the node's pool
    /// (a fee cap the base fee outran, a transaction the pool dropped or holds wrongly), where
    /// sending the same bytes again does not help. It may still land, as `Pending`. The caller
    /// records a replacement (`ChainBackend::replace`) on the claims and submits that; a caller
    /// that cannot treats this as `Pending`.
    #[error("settlement stalled: {transaction}: {message}")]
    Stalled {
        transaction: String,
        message: String,
    },
    /// A replacement (`Attempt::Replacement`) the node refused for itself (the settler cannot
    /// pay its fee cap, a node's fee limit): it never left. What it replaces was sent and may
    /// still land, as `Pending`; the caller records that one as the one to send again.
    #[error("settlement replacement refused: {transaction}: {message}")]
    ReplacementRefused {
        transaction: String,
        message: String,
    },
}

impl SettleError {
    /// Whether nothing was broadcast, so nothing can move and the claim may be given back.
    pub fn nothing_sent(&self) -> bool {
        matches!(
            self,
            SettleError::Unavailable(_) | SettleError::NotBroadcast { .. }
        )
    }
}

/// A transaction signed before it is sent, so its hash (and bytes) can be recorded first and the
/// very same bytes re-sent after a crash or a drop instead of a second transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedSettlement {
    pub transaction: String,
    pub raw: String,
    /// The address that signed it, so it is sent (and its nonce accounted) by that lane.
    /// Empty in rows written before lanes existed; any lane can broadcast signed bytes.
    #[serde(default)]
    pub settler: String,
    /// The settler nonce it uses, so it can be given back when the transaction is never sent.
    /// Absent in settlements queued by older versions.
    #[serde(default)]
    pub nonce: Option<u64>,
    /// The earlier transactions this one replaces (same settler nonce, same calls, lower fees),
    /// oldest first: any one of them may be the one mined, so each is watched until one is.
    /// Empty for a settlement never replaced (and in what older versions stored).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaces: Vec<String>,
}

impl PreparedSettlement {
    /// Every transaction that may settle this: this one, then the ones it replaces, newest first.
    pub fn candidates(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.transaction.as_str())
            .chain(self.replaces.iter().rev().map(String::as_str))
    }
}

/// Whether a prepared settlement is sent for the first time, or again (a queued settlement whose
/// earlier send's outcome is unknown): only a first send that never reached the node proves that
/// nothing is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    First,
    Again,
    /// A replacement of the transactions `PreparedSettlement::replaces` names, sent for the first
    /// time: they may still be pending or mined, so nothing it meets proves nothing was sent.
    /// The number is how many replacements this wait made so far, this one included (the wait's
    /// time and replacements are bounded per wait: a deferred settlement's later attempt, or a
    /// restart, may replace again).
    Replacement(u32),
    /// Nothing new to send: a stalled settlement could not be replaced (no fee estimate, the
    /// replacements used up, the key not held). What was sent, and every transaction it
    /// replaced, is watched for the rest of the wait without replacing it. The number is the
    /// rounds this wait has waited so far, as `Replacement`'s (the wait's remaining time).
    Watch(u32),
}

/// What became of sending a stored settlement transaction again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resent {
    /// The node has it now (again, or still).
    Sent,
    /// Its settler nonce was used by a mined transaction: if that was not this one, it can never
    /// land.
    NonceUsed,
    /// The node refused the bytes for another reason (a fee cap the base fee outran, say): they
    /// will not land as they are, but a replacement at the node's fees may.
    Refused(String),
}

/// A token transfer found in a mined transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferFacts {
    pub transaction: String,
    pub network: String,
    pub payer: String,
    pub recipient: String,
    pub asset: String,
    pub amount: String,
    pub block_number: u64,
}

/// What became of a settlement transaction, looked up after the fact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxOutcome {
    /// Mined with the expected transfer; `pay_to` is where it went.
    Landed {
        settlement: Settlement,
        pay_to: String,
    },
    /// Mined but reverted, or without the expected transfer: nothing moved.
    Failed(String),
    /// Not mined (yet, or ever).
    NotFound,
}

/// What a health probe of a network's RPC saw.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChainHealth {
    /// The latest block (slot) the node reported, when the backend reads one.
    pub height: Option<u64>,
    /// The gas balance of each settler key the backend signs with.
    pub settlers: Vec<SettlerFunds>,
}

/// One settler key's native balance (what pays its gas).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlerFunds {
    /// The settler's address, as shown to people (EVM: EIP-55 checksummed).
    pub settler: String,
    /// In the chain's smallest native unit (wei on EVM).
    pub balance: u128,
    /// Whether this instance may sign with it now (it holds the key's lease).
    pub held: bool,
}

/// How one RPC call ended, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcOutcome {
    /// The node answered with a result.
    Ok,
    /// The node answered with a JSON-RPC error (a revert, a refused transaction...).
    RpcError,
    /// No answer: a connection error, a timeout, an HTTP error status.
    TransportError,
}

impl RpcOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RpcOutcome::Ok => "ok",
            RpcOutcome::RpcError => "rpc_error",
            RpcOutcome::TransportError => "transport_error",
        }
    }
}

/// Told of every RPC call a backend makes, and of every stuck settlement it replaces (the
/// gateway's metrics implement it). It runs on every call, so it must be cheap and never block.
/// `method` is one of a fixed set (`other` for the rest), so label sets stay bounded.
pub trait RpcObserver: Send + Sync {
    fn rpc_call(&self, network: &str, method: &'static str, outcome: RpcOutcome, seconds: f64);

    /// A settlement sent and not mined in time was signed again at higher fees (a request's
    /// wait or the reconciler: `ChainBackend::replace`). Told at signing: the replacement is
    /// sent only once recorded, and the node may refuse it; either way a stall was acted on.
    fn settlement_replaced(&self, _network: &str) {}
}

#[async_trait]
pub trait ChainBackend: Send + Sync {
    /// One cheap round trip to the network's RPC, for readiness: the latest block and the
    /// settlers' gas balances. The default (a backend with nothing to ask) answers at once with
    /// nothing known, which counts as an answer.
    async fn probe(&self) -> Result<ChainHealth, VerifyError> {
        Ok(ChainHealth::default())
    }

    /// When a call on the payment path last got an answer from the RPC (a verification, a
    /// settlement, a balance or transaction lookup that succeeded), so readiness counts the
    /// traffic it already has as proof the node answers. `None`: not tracked.
    fn last_answer(&self) -> Option<std::time::Instant> {
        None
    }

    /// The next nonce each settler key (lane) will sign with, where this instance knows it (it
    /// has settled with that key since it started): `(settler, nonce)`. For metrics.
    fn settler_nonces(&self) -> Vec<(String, u64)> {
        Vec::new()
    }

    /// Looks up a settlement transaction we sent for the payment `from` -> `value` of `asset`
    /// whose payment nonce is `nonce` (the `PaymentKey`'s): one transaction may settle several
    /// payments (a batch), even two equal ones of one payer, so the nonce says which landed.
    async fn settlement_outcome(
        &self,
        tx_hash: &str,
        asset: &str,
        from: &str,
        nonce: &str,
        value: &str,
    ) -> Result<TxOutcome, VerifyError> {
        let _ = (tx_hash, asset, from, nonce, value);
        Err(VerifyError::Unavailable(
            "settlement lookup is not supported on this network".into(),
        ))
    }

    /// Checks a mined transaction for a transfer of at least `min_amount` of one of `assets` to
    /// `recipient`, with enough confirmations.
    async fn verify_transfer(
        &self,
        tx_hash: &str,
        recipient: &str,
        min_amount: u128,
        assets: &[crate::config::AssetConfig],
    ) -> Result<TransferFacts, VerifyError> {
        let _ = (tx_hash, recipient, min_amount, assets);
        Err(VerifyError::invalid(
            Reason::UnexpectedVerifyError,
            "transaction verification is not supported on this network",
        ))
    }

    /// Checks a matched proof against our offer. Local checks first; at most one RPC round trip
    /// for a valid proof.
    async fn verify(&self, offer: &Offer, proof: &PaymentProof) -> Result<Verified, VerifyError>;

    /// The balance `owner` holds of `asset`, in atomic units; `None` where the backend cannot
    /// tell (the overdraw guard is then skipped). One RPC call.
    async fn balance_of(&self, asset: &str, owner: &str) -> Result<Option<u128>, VerifyError> {
        let _ = (asset, owner);
        Ok(None)
    }

    /// Whether this instance can settle on this network now (it holds a settler key). Checked
    /// before a payment is admitted, so an origin never runs for a payment nobody can settle.
    async fn ready_to_settle(&self) -> Result<(), SettleError> {
        Ok(())
    }

    /// Signs the settlement transaction (taking the settler's next nonce) without sending it.
    async fn prepare(&self, verified: &Verified) -> Result<PreparedSettlement, SettleError>;

    /// How many payments one settlement transaction can carry now: 1 where this backend does not
    /// batch (the default; on Solana each payment is its payer's own transaction), else up to the
    /// network's `batch_max` once the batch contract is found on chain (asked once).
    async fn batch_capacity(&self) -> usize {
        1
    }

    /// How many settlement transactions of this network may be under way at once when payments
    /// are queued for batching (see `payments/batch.rs`).
    fn settlement_slots(&self) -> usize {
        crate::config::DEFAULT_SETTLEMENTS_IN_FLIGHT as usize
    }

    /// Signs one transaction that settles every one of `members` (taking one settler nonce),
    /// without sending it. Only called with `batch_capacity() > 1`.
    async fn prepare_batch(&self, members: &[Verified]) -> Result<PreparedSettlement, SettleError> {
        let _ = members;
        Err(SettleError::Unavailable(
            "batched settlement is not supported on this network".into(),
        ))
    }

    /// Broadcasts a prepared batch and waits for it as `submit` does. `Ok` is the mined
    /// transaction, with each member's own outcome in `members`' order: landed, or `Failed` (its
    /// authorization failed inside the batch and nothing of it moved), so one bad payment never
    /// fails the others. `Err` is the whole transaction's: not sent (`nothing_sent`), maybe sent
    /// (`Pending`), or reverted as a whole (`Failed`: nothing moved, every authorization is
    /// still unused).
    async fn submit_batch(
        &self,
        members: &[Verified],
        prepared: &PreparedSettlement,
        attempt: Attempt,
    ) -> Result<Vec<Result<Settlement, SettleError>>, SettleError> {
        let _ = (members, prepared, attempt);
        Err(SettleError::Unavailable(
            "batched settlement is not supported on this network".into(),
        ))
    }

    /// Signs a replacement for a sent settlement that is stuck (`SettleError::Stalled`): the same
    /// calls with the same settler nonce, at fees the node takes as a replacement. Only one of
    /// the two can ever be mined. Not sent: the caller records it first. The default: this
    /// network does not replace (the caller waits on what was sent).
    async fn replace(
        &self,
        prepared: &PreparedSettlement,
    ) -> Result<PreparedSettlement, SettleError> {
        let _ = prepared;
        Err(SettleError::Unavailable(
            "replacing a settlement is not supported on this network".into(),
        ))
    }

    /// The settler that signed a stored settlement transaction (`raw`, 0x hex), as the lanes name
    /// it; `None` where this network cannot tell. A settlement read back from its claim (the
    /// reconciler's) is replaced by the lane of the key that signed it.
    fn settler_of(&self, raw: &str) -> Option<String> {
        let _ = raw;
        None
    }

    /// Whether this network replaces stuck settlements at all (`replace`): not where it cannot,
    /// nor where the operator turned it off (EVM's `replace_after_seconds = 0`).
    fn replaces(&self) -> bool {
        false
    }

    /// A prepared settlement will never be sent (recording it failed): its settler nonce is given
    /// back, so no later transaction waits behind a gap.
    async fn abandon(&self, prepared: &PreparedSettlement) {
        let _ = prepared;
    }

    /// Broadcasts a prepared settlement and waits for its outcome, sending the same bytes again
    /// while it is not mined. A `nothing_sent` error has given the settler nonce back.
    async fn submit(
        &self,
        verified: &Verified,
        prepared: &PreparedSettlement,
        attempt: Attempt,
    ) -> Result<Settlement, SettleError>;

    /// Stored settlement transactions (`stuck`, 0x hex) were sent again and are still not
    /// mined: where the chain orders a signer's transactions (EVM nonces), one may wait behind a
    /// number nothing will ever use — its transaction was never stored, and the process that
    /// handed it out is gone, or failed to fill it and saw no later settlement take it. Fill such
    /// numbers (never one a stored transaction holds). Returns how many it filled.
    async fn repair_stuck(&self, stuck: &[String]) -> usize {
        let _ = stuck;
        0
    }

    /// Sends a stored settlement transaction (`raw`, 0x hex) again, for one a node dropped.
    async fn resend(&self, raw: &str) -> Result<Resent, VerifyError> {
        let _ = raw;
        Err(VerifyError::Unavailable(
            "re-sending is not supported on this network".into(),
        ))
    }
}

/// The backends by network.
#[derive(Clone, Default)]
pub struct ChainBackends {
    by_network: HashMap<Network, Arc<dyn ChainBackend>>,
}

impl ChainBackends {
    pub fn insert(&mut self, network: Network, verifier: Arc<dyn ChainBackend>) {
        self.by_network.insert(network, verifier);
    }

    pub fn get(&self, network: &Network) -> Option<&Arc<dyn ChainBackend>> {
        self.by_network.get(network)
    }

    pub fn get_str(&self, network: &str) -> Option<&Arc<dyn ChainBackend>> {
        self.by_network
            .iter()
            .find(|(n, _)| n.as_str() == network)
            .map(|(_, v)| v)
    }
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
