//! EVM `exact` scheme: EIP-3009 `transferWithAuthorization`, verified and settled with alloy.
//!
//! Verification is local first (payload shape, recipient, exact amount, time window, EIP-712
//! signature recovery), so a bad proof costs no RPC call; then exactly one round trip, an `eth_call`
//! simulation of the transfer from the settler's address (under load, several payments' in one
//! call: `simulate.rs`). Only when that reverts do further calls find out why (nonce used,
//! balance, token name/version), to give the client a precise reason.
//!
//! Settlement signs locally with the network's settler key. One nonce counter per settler keeps
//! concurrent settlements from colliding (the TS facilitator fails 33-75 % of concurrent payments
//! on exactly this); a nonce whose transaction is never sent is handed out again first, so no
//! later transaction queues behind a gap. Receipts are polled fast with backoff (alloy's default
//! for remote chains is 7 s, which is where x402-rs's tail comes from), and the same signed bytes
//! are sent again while no receipt comes, for a node that dropped them.
//!
//! Every RPC call is bounded by the network's `rpc_timeout_seconds` (the HTTP client's request
//! timeout), and no lock is held across one: a node that stops answering costs each call at most
//! that long, never wedges the others. (A simulation may first wait up to 500 ms to join a group,
//! and one that failed in its group is made again alone: `simulate.rs`.)
//!
//! 65-byte signatures are EOA signatures and must recover to `from`. Longer signatures are taken
//! as ERC-1271 smart-wallet signatures and checked by simulating the `bytes` overload. EIP-6492
//! (counterfactual, undeployed wallets) is refused with a clear reason.
//!
//! `payload.rs` carries the verified authorization to settlement as a chain-neutral
//! `SchemePayload`, the only form that leaves this backend; `verify.rs` holds the local checks
//! and a failed simulation's diagnosis; `simulate.rs` the simulations; `nonce.rs` the settler's
//! nonce counter; `send.rs` sending; `receipt.rs` lookups and the receipt wait; `replace.rs`
//! replacing a settlement stuck unmined by the same calls at higher fees; `batch.rs` several payments
//! in one Multicall3 transaction; `domain.rs` EIP-712 signing hashes with each token's domain
//! separator computed once. This file: the backend's state, fees, and `ChainBackend`.
//! May import: payments::chain, pricing, config, x402. alloy is used here and nowhere else.

mod batch;
mod domain;
mod nonce;
mod observe;
mod payload;
mod receipt;
mod replace;
mod send;
mod simulate;
mod verify;

use nonce::NonceState;
use send::Sent;
use simulate::{Simulated, Simulator};

pub use batch::{BatchContract, MULTICALL3, MULTICALL3_CODE_HASH};
pub use payload::{EvmAuthorization, PayloadError, CHAIN, PAYLOAD_VERSION};

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy::eips::eip2718::Encodable2718;
use alloy::network::TxSignerSync;
use alloy::primitives::{Address, Bytes, Signature, TxKind, B256, U256};
use alloy::providers::{Provider, RootProvider};
use alloy::rpc::client::{ClientBuilder, RpcClient};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::{PrivateKeySigner, Secp256k1Signer};
use alloy::sol;
use alloy::sol_types::{Eip712Domain, SolCall, SolEvent, SolStruct};
use alloy::transports::http::reqwest;
use alloy::transports::{RpcError, TransportErrorKind};
use async_trait::async_trait;
use serde::Deserialize;

use crate::payments::chain::{
    unix_now, Attempt, ChainBackend, ChainHealth, PaymentKey, PreparedSettlement, Resent,
    RpcObserver, SettleError, Settlement, SettlerFunds, TransferFacts, TxOutcome, Verified,
    VerifyError,
};
use crate::pricing::Offer;
use crate::x402::{PaymentProof, Reason};
// RPC client errors print the endpoint URL, API key included: every one is scrubbed into text.
use crate::x402::redact::scrub;

sol! {
    struct TransferWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }

    interface IEip3009 {
        function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, uint8 v, bytes32 r, bytes32 s) external;
        function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, bytes signature) external;
        function authorizationState(address authorizer, bytes32 nonce) external view returns (bool);
        function balanceOf(address account) external view returns (uint256);
        function name() external view returns (string);
        function version() external view returns (string);
        event Transfer(address indexed from, address indexed to, uint256 value);
    }
}

/// The suffix that marks an EIP-6492 signature.
const EIP6492_MAGIC: [u8; 32] = [
    0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92,
    0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92,
];
/// Seconds an authorization must still be valid for: a block-time buffer (TS reference: 6).
const VALID_BEFORE_MARGIN: u64 = 6;
/// Enough for `transferWithAuthorization` to a fresh recipient (about 80k); only gas used is paid.
/// A fixed limit saves an `eth_estimateGas` round trip per settlement; the simulation already ran.
const SETTLE_GAS_LIMIT: u64 = 200_000;
const FEE_CACHE: Duration = Duration::from_secs(5);
const RECEIPT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a sent transaction may go without a receipt before its bytes are sent again: a few
/// blocks on the chains we serve, so a healthy node just answers "already known".
const RESEND_EVERY: Duration = Duration::from_secs(3);

/// What an EIP-3009 payload looks like on the wire.
#[derive(Debug, Deserialize)]
struct ExactEvmPayload {
    signature: String,
    authorization: WireAuthorization,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireAuthorization {
    from: String,
    to: String,
    value: NumberOrString,
    valid_after: NumberOrString,
    valid_before: NumberOrString,
    nonce: String,
}

/// Numeric fields are decimal strings by the spec; some clients send JSON numbers.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum NumberOrString {
    Number(u64),
    Text(String),
}

impl NumberOrString {
    fn to_u256(&self, field: &str) -> Result<U256, VerifyError> {
        match self {
            NumberOrString::Number(n) => Ok(U256::from(*n)),
            NumberOrString::Text(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                U256::from_str_radix(s, 10)
                    .map_err(|_| bad_payload(format!("{field} is too large")))
            }
            NumberOrString::Text(s) => Err(bad_payload(format!(
                "{field} `{s}` is not a decimal integer"
            ))),
        }
    }
}

fn bad_payload(message: impl Into<String>) -> VerifyError {
    VerifyError::invalid(Reason::InvalidExactEvmPayload, message)
}

pub struct EvmBackend {
    chain_id: u64,
    network: String,
    provider: RootProvider,
    /// The health probe's and the admin API's calls, on connections of their own. A pooled
    /// connection is served by a task on the runtime that opened it: the probe runs first, so
    /// with one pool it opened the connection every payment's calls then went through, and each
    /// call was driven on the probe's threads (perf: 10% of a payment's gateway CPU there).
    /// Apart, that work runs on the proxy's threads instead; the total per payment did not
    /// measurably change (README, Benchmarks), but background calls no longer share the
    /// payment path's connections.
    background: RootProvider,
    /// libsecp256k1 (C), not k256: several times faster to sign with, and the crate feature that
    /// brings it also makes `Signature::recover_address_from_prehash` (every EIP-712 proof
    /// checked in `verify.rs`) use it. Both were a quarter of a paid request's proxy-thread CPU.
    settler: Secp256k1Signer,
    confirmations: u64,
    nonce: Mutex<NonceState>,
    /// The last fee estimate and when it was made.
    fees: Mutex<Option<(Instant, u128, u128)>>,
    receipt_poll_start: Duration,
    /// Whether first sends go as `eth_sendRawTransactionSync`: until the node shows it does not
    /// serve it (see `send.rs`).
    sync_send: std::sync::atomic::AtomicBool,
    /// Most payments one settlement transaction carries (`batch_max`; 1: no batching).
    batch_max: usize,
    /// Settlement transactions under way at once (`settlements_in_flight`).
    in_flight: usize,
    /// Told of every RPC call (its transport's layer) and every replacement (`replace.rs`).
    observer: Option<Arc<dyn RpcObserver>>,
    /// Whether Multicall3's own code (by its hash) is at its address on this network, once the
    /// node has said (see `batch.rs`).
    batch_contract: tokio::sync::OnceCell<bool>,
    /// The EIP-712 domain separators of the tokens paid in (`domain.rs`).
    separators: domain::Separators,
    /// Simulations, made together while others are under way (`simulate.rs`).
    simulations: Simulator,
    /// How long a sent settlement may go unmined before it is replaced (`replace_after_seconds`;
    /// `None`: never, it is only sent again).
    replace_after: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum EvmSetupError {
    #[error("rpc_url `{0}` is not a URL")]
    BadUrl(String),
    #[error("settler_key is not a valid private key")]
    BadKey,
    #[error("`{0}` is not an eip155 network")]
    NotEvm(String),
    #[error("building the RPC client: {0}")]
    Client(String),
}

impl EvmBackend {
    pub fn new(
        network: &crate::x402::Network,
        rpc_url: &str,
        settler_key: &str,
        confirmations: u64,
        rpc_timeout: Duration,
    ) -> Result<Self, EvmSetupError> {
        Self::observed(
            network,
            rpc_url,
            settler_key,
            confirmations,
            rpc_timeout,
            None,
        )
    }

    /// `new`, with every RPC call told to `observer` (metrics).
    pub fn observed(
        network: &crate::x402::Network,
        rpc_url: &str,
        settler_key: &str,
        confirmations: u64,
        rpc_timeout: Duration,
        observer: Option<Arc<dyn RpcObserver>>,
    ) -> Result<Self, EvmSetupError> {
        let chain_id = network
            .evm_chain_id()
            .ok_or_else(|| EvmSetupError::NotEvm(network.to_string()))?;
        let url: reqwest::Url = rpc_url
            .parse()
            .map_err(|_| EvmSetupError::BadUrl(rpc_url.to_string()))?;
        let settler: Secp256k1Signer = settler_key.parse().map_err(|_| EvmSetupError::BadKey)?;
        // The request timeout bounds every RPC call, the body read included: a node that accepts
        // a request and never answers is an outage (a 503), not a request that hangs for good.
        let rpc = || -> Result<RootProvider, EvmSetupError> {
            let http = reqwest::Client::builder()
                .timeout(rpc_timeout)
                .connect_timeout(rpc_timeout)
                .build()
                .map_err(|e| EvmSetupError::Client(e.to_string()))?;
            let client = match &observer {
                Some(observer) => ClientBuilder::default()
                    .layer(observe::ObserveLayer {
                        network: network.to_string().into(),
                        observer: observer.clone(),
                    })
                    .http_with_client(http, url.clone()),
                None => RpcClient::new_http_with_client(http, url.clone()),
            };
            Ok(RootProvider::new(client))
        };
        let provider = rpc()?;
        Ok(EvmBackend {
            chain_id,
            network: network.to_string(),
            simulations: Simulator::new(provider.clone(), settler.address()),
            provider,
            background: rpc()?,
            settler,
            confirmations: confirmations.max(1),
            nonce: Mutex::default(),
            fees: Mutex::default(),
            // A receipt is ready about 1 ms after broadcast on a fast chain: start polling there,
            // then back off (1, 2, 4 … 250 ms) so slow chains cost few calls.
            receipt_poll_start: Duration::from_millis(1),
            sync_send: std::sync::atomic::AtomicBool::new(true),
            batch_max: 1,
            in_flight: crate::config::DEFAULT_SETTLEMENTS_IN_FLIGHT as usize,
            batch_contract: tokio::sync::OnceCell::new(),
            separators: Default::default(),
            replace_after: Some(crate::config::DEFAULT_REPLACE_AFTER),
            observer,
        })
    }

    /// Replaces a sent settlement not mined within `after` by the same calls at higher fees
    /// (`None`: never; it is only sent again). See `replace.rs`.
    pub fn with_replacement(mut self, after: Option<Duration>) -> Self {
        self.replace_after = after;
        self
    }

    /// Settles up to `batch_max` waiting payments in one transaction where the network has
    /// Multicall3 (1, the default of `new`: each payment on its own), with at most `in_flight`
    /// settlement transactions under way at once.
    pub fn with_batching(mut self, batch_max: usize, in_flight: usize) -> Self {
        self.batch_max = batch_max.max(1);
        self.in_flight = in_flight.max(1);
        self
    }

    pub fn settler_address(&self) -> Address {
        self.settler.address()
    }

    /// The EIP-712 signing hash of `message` under the domain our offer advertises for `asset`.
    fn signing_hash(
        &self,
        offer: &Offer,
        asset: Address,
        message: &TransferWithAuthorization,
    ) -> B256 {
        let (name, version) = offer
            .asset
            .eip712
            .as_ref()
            .map_or(("", ""), |(n, v)| (n.as_str(), v.as_str()));
        let separator = self.separators.get(name, version, self.chain_id, asset);
        domain::signing_hash(separator, message)
    }

    async fn fees(&self) -> Result<(u128, u128), SettleError> {
        if let Some((at, max_fee, tip)) = *self.fees.lock().expect("not poisoned") {
            if at.elapsed() < FEE_CACHE {
                return Ok((max_fee, tip));
            }
        }
        self.estimate_fees().await
    }

    /// The node's fee estimate now, kept for `fees`. Estimated without the lock: a slow node
    /// must not hold every settlement behind one call. Concurrent refreshes may each ask; the
    /// last answer wins, and any of them is good.
    async fn estimate_fees(&self) -> Result<(u128, u128), SettleError> {
        let est = self
            .provider
            .estimate_eip1559_fees()
            .await
            .map_err(|e| SettleError::Unavailable(scrub(&format!("fee estimate: {e}"))))?;
        *self.fees.lock().expect("not poisoned") = Some((
            Instant::now(),
            est.max_fee_per_gas,
            est.max_priority_fee_per_gas,
        ));
        Ok((est.max_fee_per_gas, est.max_priority_fee_per_gas))
    }

    /// Signs a settlement transaction calling `to` with `input`, taking the settler's next nonce
    /// (given back if signing fails).
    async fn sign_settlement(
        &self,
        to: Address,
        input: Bytes,
        gas_limit: u64,
    ) -> Result<PreparedSettlement, SettleError> {
        let (max_fee, tip) = self.fees().await?;
        let nonce = self.take_nonce().await?;
        let mut tx = TxEip1559 {
            chain_id: self.chain_id,
            nonce,
            gas_limit,
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: tip,
            to: TxKind::Call(to),
            value: U256::ZERO,
            access_list: Default::default(),
            input,
        };
        let sig = match self.settler.sign_transaction_sync(&mut tx) {
            Ok(sig) => sig,
            Err(e) => {
                self.give_back(Some(nonce)).await;
                return Err(SettleError::Unavailable(format!("signing: {e}")));
            }
        };
        let signed = tx.into_signed(sig);
        let hash = *signed.hash();
        let raw = TxEnvelope::from(signed).encoded_2718();
        Ok(PreparedSettlement {
            transaction: hash.to_string(),
            raw: alloy::hex::encode_prefixed(raw),
            settler: self.settler.address().to_checksum(None),
            nonce: Some(nonce),
            replaces: Vec::new(),
        })
    }
}

/// Why an `eth_call` failed, when the node says the call ran and failed (a revert, out of gas):
/// the decoded revert reason, else the node's message. `None` for any other answer: a transport
/// error, or an error answer from a node that did not run the call (a rate limit, a capacity or
/// state error), which is an outage (a 503), never the payment's fault (a 402).
fn revert_text(e: &RpcError<TransportErrorKind>) -> Option<String> {
    let payload = e.as_error_resp()?;
    if !call_failed(payload.code, &payload.message) {
        return None;
    }
    let decoded = payload
        .as_revert_data()
        .and_then(|d| alloy::sol_types::decode_revert_reason(&d));
    Some(match decoded {
        Some(reason) => reason,
        None => payload.message.to_string(),
    })
}

/// The one place where an `eth_call` error's words decide: whether the node ran the call and it
/// failed. JSON-RPC code 3 is a revert with data (geth, reth, anvil); without data geth answers
/// -32000 "execution reverted"; a call that runs out of gas or hits an invalid opcode fails the
/// same way. Anything else (429s, "header not found", "request limit reached") is the node's.
fn call_failed(code: i64, message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    code == 3
        || m.contains("revert")
        || m.contains("out of gas")
        || m.contains("gas required exceeds")
        || m.contains("invalid opcode")
}

#[async_trait]
impl ChainBackend for EvmBackend {
    async fn settlement_outcome(
        &self,
        tx_hash: &str,
        asset: &str,
        from: &str,
        nonce: &str,
        value: &str,
    ) -> Result<TxOutcome, VerifyError> {
        let bad = |what: &str| VerifyError::Unavailable(format!("stored {what} does not parse"));
        let hash: B256 = tx_hash.parse().map_err(|_| bad("tx hash"))?;
        let asset: Address = asset.parse().map_err(|_| bad("asset"))?;
        let from: Address = from.parse().map_err(|_| bad("payer"))?;
        let nonce: B256 = nonce.parse().map_err(|_| bad("nonce"))?;
        let value = U256::from_str_radix(value, 10).map_err(|_| bad("amount"))?;
        let receipt = match self.provider.get_transaction_receipt(hash).await {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(TxOutcome::NotFound),
            Err(e) => {
                return Err(VerifyError::Unavailable(scrub(&format!(
                    "{}: {e}",
                    self.network
                ))))
            }
        };
        if !receipt.status() {
            return Ok(TxOutcome::Failed(
                "the settlement transaction reverted".into(),
            ));
        }
        // This payment's own authorization, used by this transaction (one of a batch's, or a
        // transaction of its own), with its transfer of exactly the amount.
        if !batch::landed(&receipt, asset, from, nonce, |t| t.value == value) {
            return Ok(TxOutcome::Failed(
                "the transaction did not use this payment's authorization".into(),
            ));
        }
        let pay_to = receipt
            .inner
            .logs()
            .iter()
            .find_map(|log| {
                (log.address() == asset)
                    .then(|| IEip3009::Transfer::decode_log_data(log.data()).ok())
                    .flatten()
                    .filter(|t| t.from == from && t.value == value)
            })
            .map(|t| t.to.to_checksum(None))
            .unwrap_or_default();
        Ok(TxOutcome::Landed {
            settlement: Settlement {
                transaction: hash.to_string(),
                block_number: receipt.block_number.unwrap_or_default(),
                network: self.network.clone(),
                payer: from.to_checksum(None),
            },
            pay_to,
        })
    }

    async fn verify_transfer(
        &self,
        tx_hash: &str,
        recipient: &str,
        min_amount: u128,
        assets: &[crate::config::AssetConfig],
    ) -> Result<TransferFacts, VerifyError> {
        let hash: B256 = tx_hash
            .parse()
            .map_err(|_| bad_payload(format!("`{tx_hash}` is not a transaction hash")))?;
        let recipient: Address = recipient
            .parse()
            .map_err(|_| bad_payload(format!("`{recipient}` is not an address")))?;
        let unavailable = |e: RpcError<TransportErrorKind>| {
            VerifyError::Unavailable(scrub(&format!("{}: {e}", self.network)))
        };
        let receipt = self
            .provider
            .get_transaction_receipt(hash)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| {
                VerifyError::invalid(Reason::TxNotFound, format!("no mined transaction {hash}"))
            })?;
        if !receipt.status() {
            return Err(VerifyError::invalid(
                Reason::TxFailed,
                "the transaction reverted",
            ));
        }
        let assets: Vec<(Address, &crate::config::AssetConfig)> = assets
            .iter()
            .filter_map(|a| a.address.parse::<Address>().ok().map(|addr| (addr, a)))
            .collect();
        let transfers: Vec<(Address, Address, U256)> = receipt
            .inner
            .logs()
            .iter()
            .filter(|log| assets.iter().any(|(a, _)| *a == log.address()))
            .filter_map(|log| {
                IEip3009::Transfer::decode_log_data(log.data())
                    .ok()
                    .filter(|t| t.to == recipient)
                    .map(|t| (log.address(), t.from, t.value))
            })
            .collect();
        let Some((asset, from, value)) = transfers.iter().max_by_key(|(_, _, v)| *v).cloned()
        else {
            return Err(VerifyError::invalid(
                Reason::NoMatchingTransfer,
                format!(
                    "the transaction moves none of this network's configured assets to {recipient}"
                ),
            ));
        };
        if value < U256::from(min_amount) {
            return Err(VerifyError::invalid(
                Reason::InsufficientAmount,
                format!("the transfer is {value}, less than the expected {min_amount}"),
            ));
        }
        let block = receipt.block_number.unwrap_or_default();
        let head = self
            .provider
            .get_block_number()
            .await
            .map_err(unavailable)?;
        let confirmations = head.saturating_sub(block) + 1;
        if confirmations < self.confirmations {
            return Err(VerifyError::invalid(
                Reason::InsufficientConfirmations,
                format!("{confirmations} of {} confirmations", self.confirmations),
            ));
        }
        Ok(TransferFacts {
            transaction: hash.to_string(),
            network: self.network.clone(),
            payer: from.to_checksum(None),
            recipient: recipient.to_checksum(None),
            asset: asset.to_checksum(None),
            amount: value.to_string(),
            block_number: block,
        })
    }

    async fn verify(&self, offer: &Offer, proof: &PaymentProof) -> Result<Verified, VerifyError> {
        let auth = self.check_locally(offer, proof, unix_now())?;
        match self
            .simulations
            .simulate(&auth, self.multicall3_known())
            .await
        {
            Simulated::Passed => {}
            Simulated::Reverted(revert) => return Err(self.diagnose(offer, &auth, revert).await),
            Simulated::Unreachable(e) => {
                return Err(VerifyError::Unavailable(scrub(&format!(
                    "{}: {e}",
                    self.network
                ))))
            }
        }
        Ok(Verified {
            key: PaymentKey {
                network: self.network.clone(),
                asset: format!("{:#x}", auth.asset),
                payer: format!("{:#x}", auth.from),
                nonce: format!("{:#x}", auth.nonce),
            },
            payer: auth.from.to_checksum(None),
            pay_to: auth.to.to_checksum(None),
            amount: auth.value.to_string(),
            expires_at: auth.valid_before.try_into().unwrap_or(u64::MAX),
            scheme_payload: auth.to_payload(),
        })
    }

    async fn prepare(&self, verified: &Verified) -> Result<PreparedSettlement, SettleError> {
        // Nothing is signed yet: a payload that cannot be read can never settle.
        let auth = &EvmAuthorization::from_payload(&verified.scheme_payload).map_err(|e| {
            SettleError::Failed {
                reason: Reason::InvalidExactEvmPayload,
                message: e.to_string(),
                transaction: None,
            }
        })?;
        self.sign_settlement(auth.asset, auth.calldata(), SETTLE_GAS_LIMIT)
            .await
    }

    async fn batch_capacity(&self) -> usize {
        self.batch_capacity_now().await
    }

    fn settlement_slots(&self) -> usize {
        self.in_flight
    }

    async fn prepare_batch(&self, members: &[Verified]) -> Result<PreparedSettlement, SettleError> {
        self.prepare_batch_tx(members).await
    }

    async fn submit_batch(
        &self,
        members: &[Verified],
        prepared: &PreparedSettlement,
        attempt: Attempt,
    ) -> Result<Vec<Result<Settlement, SettleError>>, SettleError> {
        self.submit_batch_tx(members, prepared, attempt).await
    }

    async fn abandon(&self, prepared: &PreparedSettlement) {
        self.give_back(prepared.nonce).await;
    }

    async fn replace(
        &self,
        prepared: &PreparedSettlement,
    ) -> Result<PreparedSettlement, SettleError> {
        self.sign_replacement(prepared).await
    }

    async fn submit(
        &self,
        verified: &Verified,
        prepared: &PreparedSettlement,
        attempt: Attempt,
    ) -> Result<Settlement, SettleError> {
        // `prepare` read this very payload; should it fail now, the signed transaction may be in
        // flight all the same (an `Again`), so the claim is kept, never given back.
        let auth = &EvmAuthorization::from_payload(&verified.scheme_payload).map_err(|e| {
            SettleError::Pending {
                transaction: prepared.transaction.clone(),
                message: e.to_string(),
            }
        })?;
        let (receipt, started) = self.land(prepared, attempt).await?;
        self.judge_receipt(auth, receipt.transaction_hash, &receipt, started)
            .await
    }

    async fn probe(&self) -> Result<ChainHealth, VerifyError> {
        let height = self
            .background
            .get_block_number()
            .await
            .map_err(|e| VerifyError::Unavailable(scrub(&format!("eth_blockNumber: {e}"))))?;
        let address = self.settler.address();
        let balance = self
            .background
            .get_balance(address)
            .await
            .map_err(|e| VerifyError::Unavailable(scrub(&format!("eth_getBalance: {e}"))))?;
        // Looked for once, here rather than on a payment's path: verifications group their
        // simulations once it is known (`simulate.rs`). An unanswered lookup is made again on
        // the next round.
        self.has_multicall3().await;
        Ok(ChainHealth {
            height: Some(height),
            settlers: vec![SettlerFunds {
                settler: address.to_checksum(None),
                // Past u128 is more gas than anyone holds.
                balance: u128::try_from(balance).unwrap_or(u128::MAX),
                held: true,
            }],
        })
    }

    fn settler_nonces(&self) -> Vec<(String, u64)> {
        self.next_nonce()
            .map(|n| (self.settler.address().to_checksum(None), n))
            .into_iter()
            .collect()
    }

    async fn balance_of(&self, asset: &str, owner: &str) -> Result<Option<u128>, VerifyError> {
        let (Ok(asset), Ok(owner)) = (asset.parse::<Address>(), owner.parse::<Address>()) else {
            return Err(VerifyError::Unavailable("not EVM addresses".into()));
        };
        let tx = TransactionRequest::default()
            .to(asset)
            .input(Bytes::from(IEip3009::balanceOfCall { account: owner }.abi_encode()).into());
        let raw = self
            .background
            .call(tx)
            .await
            .map_err(|e| VerifyError::Unavailable(scrub(&format!("balanceOf: {e}"))))?;
        let balance = IEip3009::balanceOfCall::abi_decode_returns(&raw)
            .map_err(|e| VerifyError::Unavailable(format!("balanceOf answer: {e}")))?;
        // A balance past u128 covers anything we could ever hold against it.
        Ok(Some(u128::try_from(balance).unwrap_or(u128::MAX)))
    }

    async fn repair_stuck(&self, stuck: &[String]) -> usize {
        self.fill_stuck_gaps(stuck).await
    }

    fn replaces(&self) -> bool {
        self.replace_after.is_some()
    }

    fn settler_of(&self, raw: &str) -> Option<String> {
        use alloy::consensus::transaction::SignerRecoverable;
        use alloy::eips::eip2718::Decodable2718;
        let raw: Bytes = raw.parse().ok()?;
        let tx = TxEnvelope::decode_2718(&mut raw.as_ref()).ok()?;
        let signer = tx.recover_signer().ok()?;
        Some(signer.to_checksum(None))
    }

    async fn resend(&self, raw: &str) -> Result<Resent, VerifyError> {
        let raw: Bytes = raw
            .parse()
            .map_err(|_| VerifyError::Unavailable("stored transaction does not parse".into()))?;
        match self.send_raw(&raw).await {
            Sent::Accepted => Ok(Resent::Sent),
            Sent::Refused {
                nonce_used: true, ..
            } => Ok(Resent::NonceUsed),
            // Another transaction of the settler with this nonce is pending: one this replaces
            // (which may still land), or one signed elsewhere (then the nonce soon reads used).
            Sent::Held(_) => Ok(Resent::Sent),
            Sent::Refused { message, .. } => Ok(Resent::Refused(format!(
                "{}: the node refused the stored settlement: {message}",
                self.network
            ))),
            Sent::NotDelivered(message) | Sent::Unknown(message) => {
                Err(VerifyError::Unavailable(message))
            }
        }
    }
}

/// Signs an EIP-3009 authorization as a paying client does. Used by tests and benchmarks; it also
/// documents exactly what the client signs.
pub fn sign_authorization(
    signer: &PrivateKeySigner,
    domain: &Eip712Domain,
    message: &TransferWithAuthorization,
) -> Signature {
    use alloy::signers::SignerSync;
    signer
        .sign_hash_sync(&message.eip712_signing_hash(domain))
        .expect("local signing cannot fail")
}

/// The EIP-712 domain of an EIP-3009 token.
pub fn token_domain(name: &str, version: &str, chain_id: u64, asset: Address) -> Eip712Domain {
    Eip712Domain::new(
        Some(name.to_string().into()),
        Some(version.to_string().into()),
        Some(U256::from(chain_id)),
        Some(asset),
        None,
    )
}
