//! SVM `exact` scheme: a client's partially signed `TransferChecked` transaction, checked here,
//! co-signed by our fee payer and sent, with the agave 3.1 client crates.
//!
//! Verification is local first (`verify.rs`: layout, fee-payer safety, mint, destination,
//! amount, signatures), so garbage costs no RPC call; then exactly one round trip, a
//! `simulateTransaction` of the co-signed transaction with signature checks. Only when that fails
//! do further calls find out why (a missing token account, our fee payer out of SOL), to answer
//! with a precise reason, or a 503 when the fault is ours.
//!
//! A payment is identified by the SHA-256 of its message (`PaymentKey.nonce`): the store claims it
//! once, across instances, which is the spec's "duplicate settlement" guard made durable (an RPC
//! answers success to every submitter of an already processed transaction, so without it one
//! payment could unlock many requests).
//!
//! Settlement adds our signature (deterministic, so a re-send is the very same transaction),
//! sends without preflight (the simulation ran), and polls the signature's status to the
//! configured commitment, re-sending the same bytes while it is unseen. Solana has no settler
//! nonce: several instances may co-sign with one fee payer at once, so no lease is needed. A
//! transaction not seen once its blockhash expired can never land: that settlement failed and
//! moved nothing.
//!
//! `verify.rs` holds the local checks; `payload.rs` the stored form; `send.rs` sending, the
//! confirmation wait and the lookups. This file: the backend's state and `ChainBackend`.
//! May import: payments::chain, pricing, config, x402. The solana crates are used here only.

pub mod client;
mod payload;
mod send;
pub mod verify;

pub use payload::{from_payload, PayloadError, CHAIN, PAYLOAD_VERSION};

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use serde::Deserialize;
use solana_commitment_config::CommitmentConfig;
use solana_keypair::Keypair;
use solana_pubkey::Pubkey;
use solana_rpc_client::nonblocking::rpc_client::RpcClient;
use solana_rpc_client_api::client_error::{Error as ClientError, TransactionError};
use solana_rpc_client_api::config::RpcSimulateTransactionConfig;
use solana_signer::Signer;
use solana_transaction::versioned::VersionedTransaction;

use crate::config::SolanaCommitment;
use crate::payments::chain::{
    unix_now, Attempt, ChainBackend, ChainHealth, PaymentKey, PreparedSettlement, Resent,
    SettleError, Settlement, SettlerFunds, TransferFacts, TxOutcome, Verified, VerifyError,
};
use crate::pricing::Offer;
use crate::x402::{PaymentProof, Reason};
// RPC client errors print the endpoint URL, API key included: every one is scrubbed into text.
use crate::x402::redact::scrub;
use verify::{CheckedTransfer, Expected};

/// How long a verified payment stays settleable: a blockhash lives 150 blocks (about 60 to 90 s);
/// past this, a transaction that never landed can never land. Used by the deferred queue and the
/// reconciler to stop retrying; the settlement itself asks the node whether the blockhash is valid.
const BLOCKHASH_LIFETIME_SECONDS: u64 = 150;

/// `{"transaction": "<base64>"}`, the SVM `exact` payload.
#[derive(Debug, Deserialize)]
struct ExactSvmPayload {
    transaction: String,
}

pub struct SvmBackend {
    network: String,
    rpc: RpcClient,
    fee_payer: Keypair,
    commitment: SolanaCommitment,
    /// The token program that owns each mint, learned once (for the overdraw guard's balance).
    token_programs: Mutex<HashMap<Pubkey, Pubkey>>,
    confirm_poll_start: Duration,
    /// The CAIP-2 reference: the first 32 characters of the cluster's genesis hash.
    cluster: String,
    /// Whether the RPC was seen to serve that cluster (asked until it has).
    cluster_checked: std::sync::atomic::AtomicBool,
}

#[derive(Debug, thiserror::Error)]
pub enum SvmSetupError {
    #[error("fee_payer_key is not a base58 64-byte keypair")]
    BadKey,
    #[error("`{0}` is not a solana network")]
    NotSolana(String),
}

impl SvmBackend {
    pub fn new(
        network: &crate::x402::Network,
        rpc_url: &str,
        fee_payer_key: &str,
        commitment: SolanaCommitment,
        rpc_timeout: Duration,
    ) -> Result<Self, SvmSetupError> {
        if network.namespace() != crate::x402::Namespace::Solana {
            return Err(SvmSetupError::NotSolana(network.to_string()));
        }
        let bytes = bs58::decode(fee_payer_key)
            .into_vec()
            .map_err(|_| SvmSetupError::BadKey)?;
        let fee_payer = Keypair::try_from(bytes.as_slice()).map_err(|_| SvmSetupError::BadKey)?;
        Ok(SvmBackend {
            network: network.to_string(),
            // The timeout bounds every call, body included: a node that never answers is an
            // outage (a 503), not a request that hangs.
            rpc: RpcClient::new_with_timeout_and_commitment(
                rpc_url.to_string(),
                rpc_timeout,
                commitment_config(commitment),
            ),
            fee_payer,
            commitment,
            token_programs: Mutex::default(),
            // A local validator confirms in about a millisecond, a real cluster in 0.5 to 1 s:
            // start polling fast, then back off (1, 2, 4 … 200 ms).
            confirm_poll_start: Duration::from_millis(1),
            cluster: network.reference().to_string(),
            cluster_checked: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn fee_payer(&self) -> Pubkey {
        self.fee_payer.pubkey()
    }

    /// The offer, parsed into what the local checks compare against.
    fn expected(&self, offer: &Offer) -> Result<Expected, VerifyError> {
        let fee_payer = self.fee_payer.pubkey();
        let offered = offer
            .requirement
            .extra
            .as_ref()
            .and_then(|e| e.get("feePayer"))
            .and_then(|f| f.as_str());
        if offered != Some(fee_payer.to_string().as_str()) {
            // Our own offer names another key: a configuration fault, never the client's.
            return Err(VerifyError::invalid(
                Reason::InvalidExactSvmFeePayerNotManaged,
                format!("the offer's extra.feePayer is not this gateway's fee payer {fee_payer}"),
            ));
        }
        Ok(Expected {
            fee_payer,
            mint: verify::pubkey("asset", &offer.asset.address)?,
            pay_to: verify::pubkey("payTo", &offer.pay_to)?,
            amount: u64::try_from(offer.amount.0).map_err(|_| {
                VerifyError::invalid(
                    Reason::UnexpectedVerifyError,
                    "the price does not fit a Solana token amount (configuration)",
                )
            })?,
            decimals: offer.asset.decimals,
        })
    }

    /// All checks that need no chain access.
    pub fn check_locally(
        &self,
        offer: &Offer,
        proof: &PaymentProof,
    ) -> Result<CheckedTransfer, VerifyError> {
        let want = self.expected(offer)?;
        let payload: ExactSvmPayload =
            serde_json::from_value(proof.payload().clone()).map_err(|e| {
                VerifyError::invalid(
                    Reason::InvalidExactSvmTransaction,
                    format!("not an SVM payload ({{\"transaction\": \"<base64>\"}}): {e}"),
                )
            })?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(payload.transaction.trim())
            .map_err(|e| {
                VerifyError::invalid(
                    Reason::InvalidExactSvmCouldNotBeDecoded,
                    format!("payload.transaction is not base64: {e}"),
                )
            })?;
        verify::check(&bytes, &want)
    }

    /// The client's transaction with our fee-payer signature added.
    fn cosign(&self, mut tx: VersionedTransaction) -> VersionedTransaction {
        let message = tx.message.serialize();
        tx.signatures[0] = self.fee_payer.sign_message(&message);
        tx
    }

    fn unavailable(&self, what: &str, e: &ClientError) -> VerifyError {
        VerifyError::Unavailable(scrub(&format!("{} {what}: {e}", self.network)))
    }

    /// Maps a failed simulation to the most precise reason we can find; a fault of ours (the fee
    /// payer cannot pay) is an outage, a 503, never the client's fault.
    async fn diagnose(&self, checked: &CheckedTransfer, err: TransactionError) -> VerifyError {
        use TransactionError as E;
        let text = err.to_string();
        match err {
            E::AccountNotFound | E::InsufficientFundsForFee | E::InsufficientFundsForRent { .. } => {
                return VerifyError::Unavailable(format!(
                    "{}: the fee payer {} cannot pay the fee: {text}",
                    self.network,
                    self.fee_payer.pubkey()
                ))
            }
            E::BlockhashNotFound => {
                return VerifyError::invalid(
                    Reason::InvalidExactSvmSimulationFailed,
                    "the transaction's blockhash is unknown or expired: build it again with a recent one",
                )
            }
            E::AlreadyProcessed => {
                return VerifyError::invalid(
                    Reason::DuplicateSettlement,
                    "this transaction was already processed",
                )
            }
            _ => {}
        }
        // A token error: find out whether an account is missing or short.
        if let Ok(accounts) = self
            .rpc
            .get_multiple_accounts(&[checked.source, checked.destination])
            .await
        {
            match (&accounts[0], &accounts[1]) {
                (_, None) => {
                    return VerifyError::invalid(
                        Reason::InvalidExactSvmRecipientMismatch,
                        format!(
                            "the payee's token account {} does not exist yet: the seller must create it",
                            checked.destination
                        ),
                    )
                }
                (None, _) => {
                    return VerifyError::invalid(
                        Reason::InsufficientFunds,
                        format!("the payer has no token account {}", checked.source),
                    )
                }
                (Some(source), _) => {
                    if send::token_amount(&source.data).is_some_and(|a| a < checked.amount) {
                        return VerifyError::invalid(
                            Reason::InsufficientFunds,
                            format!(
                                "the payer's token account holds {}, less than {}",
                                send::token_amount(&source.data).unwrap_or(0),
                                checked.amount
                            ),
                        );
                    }
                }
            }
        }
        VerifyError::invalid(Reason::InvalidExactSvmSimulationFailed, text)
    }

    /// The token program that owns `mint`, asked once.
    async fn token_program(&self, mint: &Pubkey) -> Result<Pubkey, VerifyError> {
        if let Some(p) = self.token_programs.lock().expect("not poisoned").get(mint) {
            return Ok(*p);
        }
        let account = self
            .rpc
            .get_account_with_commitment(mint, CommitmentConfig::confirmed())
            .await
            .map_err(|e| self.unavailable("getAccountInfo", &e))?
            .value
            .ok_or_else(|| VerifyError::Unavailable(format!("mint {mint} does not exist")))?;
        self.token_programs
            .lock()
            .expect("not poisoned")
            .insert(*mint, account.owner);
        Ok(account.owner)
    }
}

fn commitment_config(c: SolanaCommitment) -> CommitmentConfig {
    match c {
        SolanaCommitment::Confirmed => CommitmentConfig::confirmed(),
        SolanaCommitment::Finalized => CommitmentConfig::finalized(),
    }
}

#[async_trait]
impl ChainBackend for SvmBackend {
    async fn verify(&self, offer: &Offer, proof: &PaymentProof) -> Result<Verified, VerifyError> {
        let checked = self.check_locally(offer, proof)?;
        let cosigned = self.cosign(checked.transaction.clone());
        let config = RpcSimulateTransactionConfig {
            sig_verify: true,
            replace_recent_blockhash: false,
            commitment: Some(CommitmentConfig::confirmed()),
            ..RpcSimulateTransactionConfig::default()
        };
        let sim = self
            .rpc
            .simulate_transaction_with_config(&cosigned, config)
            .await
            .map_err(|e| self.unavailable("simulateTransaction", &e))?;
        if let Some(err) = sim.value.err {
            return Err(self.diagnose(&checked, err.into()).await);
        }
        Ok(Verified {
            key: PaymentKey {
                network: self.network.clone(),
                asset: offer.asset.address.clone(),
                payer: checked.authority.to_string(),
                nonce: checked.message_id(),
            },
            payer: checked.authority.to_string(),
            pay_to: offer.pay_to.clone(),
            amount: checked.amount.to_string(),
            expires_at: unix_now() + BLOCKHASH_LIFETIME_SECONDS,
            scheme_payload: payload::to_payload(&checked),
        })
    }

    async fn prepare(&self, verified: &Verified) -> Result<PreparedSettlement, SettleError> {
        // Nothing is signed yet: a payload that cannot be read can never settle.
        let tx = from_payload(&verified.scheme_payload).map_err(|e| SettleError::Failed {
            reason: Reason::InvalidExactSvmTransaction,
            message: e.to_string(),
            transaction: None,
        })?;
        let tx = self.cosign(tx);
        let raw = bincode::serialize(&tx).expect("a decoded transaction encodes");
        Ok(PreparedSettlement {
            transaction: tx.signatures[0].to_string(),
            raw: base64::engine::general_purpose::STANDARD.encode(raw),
            settler: self.fee_payer.pubkey().to_string(),
            nonce: None,
            replaces: Vec::new(),
        })
    }

    async fn submit(
        &self,
        verified: &Verified,
        prepared: &PreparedSettlement,
        attempt: Attempt,
    ) -> Result<Settlement, SettleError> {
        self.submit_prepared(verified, prepared, attempt).await
    }

    async fn resend(&self, raw: &str) -> Result<Resent, VerifyError> {
        let tx = send::decode_raw(raw).map_err(VerifyError::Unavailable)?;
        match self.send_raw(&tx).await {
            send::Sent::Accepted => Ok(Resent::Sent),
            send::Sent::Refused(message)
            | send::Sent::NotDelivered(message)
            | send::Sent::Unknown(message) => Err(VerifyError::Unavailable(message)),
        }
    }

    async fn settlement_outcome(
        &self,
        tx_hash: &str,
        asset: &str,
        from: &str,
        // A Solana settlement is the payer's own transaction: one payment, named by its hash.
        _nonce: &str,
        value: &str,
    ) -> Result<TxOutcome, VerifyError> {
        self.lookup_settlement(tx_hash, asset, from, value).await
    }

    async fn verify_transfer(
        &self,
        tx_hash: &str,
        recipient: &str,
        min_amount: u128,
        assets: &[crate::config::AssetConfig],
    ) -> Result<TransferFacts, VerifyError> {
        self.lookup_transfer(tx_hash, recipient, min_amount, assets)
            .await
    }

    async fn probe(&self) -> Result<ChainHealth, VerifyError> {
        // An rpc_url of another cluster (mainnet behind a devnet network, say) would have the
        // gateway offer one cluster and settle on another: not ready until it is the right one.
        if !self
            .cluster_checked
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            let genesis = self
                .rpc
                .get_genesis_hash()
                .await
                .map_err(|e| self.unavailable("getGenesisHash", &e))?
                .to_string();
            if !genesis.starts_with(&self.cluster) {
                return Err(VerifyError::Unavailable(format!(
                    "{}: rpc_url serves the cluster whose genesis hash is {genesis}, not this network",
                    self.network
                )));
            }
            self.cluster_checked
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let slot = self
            .rpc
            .get_slot()
            .await
            .map_err(|e| self.unavailable("getSlot", &e))?;
        let fee_payer = self.fee_payer.pubkey();
        let balance = self
            .rpc
            .get_balance(&fee_payer)
            .await
            .map_err(|e| self.unavailable("getBalance", &e))?;
        Ok(ChainHealth {
            height: Some(slot),
            settlers: vec![SettlerFunds {
                settler: fee_payer.to_string(),
                balance: u128::from(balance),
                held: true,
            }],
        })
    }

    async fn balance_of(&self, asset: &str, owner: &str) -> Result<Option<u128>, VerifyError> {
        let (Ok(mint), Ok(owner)) = (asset.parse::<Pubkey>(), owner.parse::<Pubkey>()) else {
            return Err(VerifyError::Unavailable("not Solana addresses".into()));
        };
        let program = self.token_program(&mint).await?;
        let ata =
            spl_associated_token_account_interface::address::get_associated_token_address_with_program_id(
                &owner, &mint, &program,
            );
        let account = self
            .rpc
            .get_account_with_commitment(&ata, CommitmentConfig::confirmed())
            .await
            .map_err(|e| self.unavailable("getAccountInfo", &e))?
            .value;
        // No associated account: the payer pays from another token account, whose balance this
        // cannot tell; the simulation saw enough in it. The guard is skipped, as documented.
        Ok(account
            .and_then(|a| send::token_amount(&a.data))
            .map(u128::from))
    }
}

#[cfg(test)]
mod tests;
