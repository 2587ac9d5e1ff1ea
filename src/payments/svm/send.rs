//! Sending a co-signed settlement, waiting for it to reach the configured commitment, and the
//! after-the-fact lookups (the reconciler's `settlement_outcome`, the verify API's transfers).
//!
//! A send's outcome is typed by what it proves: refused by the node (nothing broadcast), never
//! delivered (connection refused), or unknown (a timeout, a 5xx, a cut connection: it may be in
//! flight). Only the first two, on a first attempt, let the claim be given back.

use std::time::{Duration, Instant};

use base64::Engine;
use serde::Deserialize;
use serde_json::json;
use solana_commitment_config::CommitmentConfig;
use solana_rpc_client_api::client_error::ErrorKind;
use solana_rpc_client_api::config::RpcSendTransactionConfig;
use solana_rpc_client_api::request::{RpcError, RpcRequest};
use solana_signature::Signature;
use solana_transaction::versioned::VersionedTransaction;
use solana_transaction_status_client_types::{TransactionConfirmationStatus, TransactionStatus};

use super::*;

/// How long a settlement is awaited before it is reported `Pending` (the claim is kept and the
/// reconciler finishes it): longer than a blockhash lives, so it usually ends decided.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a sent transaction may go unseen before its bytes are sent again (the same
/// transaction: a node that already has it ignores the copy).
const RESEND_EVERY: Duration = Duration::from_secs(2);
const POLL_MAX: Duration = Duration::from_millis(200);

pub(super) enum Sent {
    Accepted,
    /// The node answered with a JSON-RPC error: it did not take the transaction.
    Refused(String),
    /// The request never reached the node.
    NotDelivered(String),
    /// The request may have reached the node.
    Unknown(String),
}

/// The amount of an SPL Token or Token-2022 account: bytes 64..72 of its data (mint, owner, then
/// the amount; extensions come after the base layout, so both programs agree).
pub(super) fn token_amount(data: &[u8]) -> Option<u64> {
    data.get(64..72)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

pub(super) fn decode_raw(raw: &str) -> Result<VersionedTransaction, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .map_err(|e| format!("stored transaction is not base64: {e}"))?;
    bincode::deserialize(&bytes).map_err(|e| format!("stored transaction does not decode: {e}"))
}

/// Whether a status is as final as `commitment` asks.
fn reached(status: &TransactionStatus, commitment: SolanaCommitment) -> bool {
    match (&status.confirmation_status, commitment) {
        (Some(TransactionConfirmationStatus::Finalized), _) => true,
        (Some(TransactionConfirmationStatus::Confirmed), SolanaCommitment::Confirmed) => true,
        (Some(_), _) => false,
        (None, c) => status.satisfies_commitment(commitment_config(c)),
    }
}

/// The parts of `getTransaction`'s answer we read, in our own types: a lookup never fails on a
/// field we do not use.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TxLookup {
    slot: u64,
    meta: Option<TxMeta>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TxMeta {
    err: Option<serde_json::Value>,
    #[serde(default)]
    pre_token_balances: Option<Vec<TokenBalance>>,
    #[serde(default)]
    post_token_balances: Option<Vec<TokenBalance>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenBalance {
    mint: String,
    owner: Option<String>,
    ui_token_amount: UiAmount,
}

#[derive(Debug, Deserialize)]
struct UiAmount {
    amount: String,
}

/// One owner's change in one mint's balance over a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Delta {
    mint: String,
    owner: String,
    change: i128,
}

/// Every (mint, owner) balance change of a transaction, from its pre and post token balances.
fn deltas(meta: &TxMeta) -> Vec<Delta> {
    let amount = |b: &TokenBalance| b.ui_token_amount.amount.parse::<i128>().unwrap_or(0);
    let pre = meta.pre_token_balances.as_deref().unwrap_or_default();
    let post = meta.post_token_balances.as_deref().unwrap_or_default();
    let mut out: Vec<Delta> = Vec::new();
    let mut add = |b: &TokenBalance, sign: i128| {
        let Some(owner) = b.owner.clone() else { return };
        match out
            .iter_mut()
            .find(|d| d.mint == b.mint && d.owner == owner)
        {
            Some(d) => d.change += sign * amount(b),
            None => out.push(Delta {
                mint: b.mint.clone(),
                owner,
                change: sign * amount(b),
            }),
        }
    };
    // An account absent before the transaction (created by it) starts at zero.
    for b in pre {
        add(b, -1);
    }
    for b in post {
        add(b, 1);
    }
    out
}

impl SvmBackend {
    pub(super) async fn send_raw(&self, tx: &VersionedTransaction) -> Sent {
        let config = RpcSendTransactionConfig {
            // The simulation ran at verification; a second one at the node only adds latency.
            skip_preflight: true,
            // We re-send ourselves while waiting; the node's own retries would outlive our wait.
            max_retries: Some(0),
            ..RpcSendTransactionConfig::default()
        };
        match self.rpc.send_transaction_with_config(tx, config).await {
            Ok(_) => Sent::Accepted,
            Err(e) => {
                let text = scrub(&format!("{} sendTransaction: {e}", self.network));
                match e.kind() {
                    ErrorKind::RpcError(RpcError::RpcResponseError { .. }) => Sent::Refused(text),
                    ErrorKind::Reqwest(r) if r.is_connect() => Sent::NotDelivered(text),
                    _ => Sent::Unknown(text),
                }
            }
        }
    }

    async fn status(&self, signature: &Signature) -> Result<Option<TransactionStatus>, String> {
        self.rpc
            .get_signature_statuses_with_history(&[*signature])
            .await
            .map(|r| r.value.into_iter().next().flatten())
            .map_err(|e| scrub(&format!("{} getSignatureStatuses: {e}", self.network)))
    }

    pub(super) async fn submit_prepared(
        &self,
        verified: &Verified,
        prepared: &PreparedSettlement,
        attempt: Attempt,
    ) -> Result<Settlement, SettleError> {
        let tx = decode_raw(&prepared.raw).map_err(SettleError::Unavailable)?;
        let signature = tx.signatures[0];
        match self.send_raw(&tx).await {
            Sent::Accepted => {}
            // Refused, and never sent before: it is not on chain, unless the node took it and
            // still said no, so the chain decides.
            Sent::Refused(message)
                if attempt == Attempt::First
                    && !matches!(self.status(&signature).await, Ok(Some(_))) =>
            {
                return Err(SettleError::NotBroadcast { message });
            }
            // Never delivered, and never sent before: nothing is in flight.
            Sent::NotDelivered(message) if attempt == Attempt::First => {
                return Err(SettleError::Unavailable(message));
            }
            // An earlier send of these bytes may be in flight, or this one reached the node
            // before its answer was lost: wait for it, never give the claim back.
            Sent::Refused(message) | Sent::NotDelivered(message) | Sent::Unknown(message) => {
                tracing::warn!(tx = %signature, "settlement send outcome unknown, looking it up: {message}");
            }
        }
        self.confirm(verified, &tx, signature).await
    }

    /// Polls the signature to the configured commitment, re-sending the same bytes while it is
    /// unseen, until it lands, fails, its blockhash expires unseen, or the wait ends.
    async fn confirm(
        &self,
        verified: &Verified,
        tx: &VersionedTransaction,
        signature: Signature,
    ) -> Result<Settlement, SettleError> {
        let started = Instant::now();
        let mut last_send = Instant::now();
        let mut poll = self.confirm_poll_start;
        let mut last_error = String::from("not seen yet");
        loop {
            match self.status(&signature).await {
                Ok(Some(status)) => {
                    if let Some(err) = &status.err {
                        return Err(SettleError::Failed {
                            reason: Reason::InvalidExactSvmTransactionFailed,
                            message: format!("the settlement transaction failed: {err}"),
                            transaction: Some(signature.to_string()),
                        });
                    }
                    if reached(&status, self.commitment) {
                        return Ok(Settlement {
                            transaction: signature.to_string(),
                            block_number: status.slot,
                            network: self.network.clone(),
                            payer: verified.payer.clone(),
                        });
                    }
                    last_error = format!(
                        "seen in slot {}, not yet {}",
                        status.slot,
                        self.commitment.as_str()
                    );
                }
                Ok(None) if last_send.elapsed() >= RESEND_EVERY => {
                    last_send = Instant::now();
                    // Unseen for a while: is it still able to land at all?
                    match self
                        .rpc
                        .is_blockhash_valid(
                            tx.message.recent_blockhash(),
                            CommitmentConfig::processed(),
                        )
                        .await
                    {
                        Ok(false) => {
                            // The blockhash expired; one last look, for a landing in between.
                            if let Ok(None) = self.status(&signature).await {
                                return Err(SettleError::Failed {
                                    reason: Reason::InvalidExactSvmTransactionFailed,
                                    message: "the transaction's blockhash expired before it landed: nothing moved".into(),
                                    transaction: Some(signature.to_string()),
                                });
                            }
                            continue;
                        }
                        Ok(true) => {
                            if let Sent::Refused(m) | Sent::NotDelivered(m) | Sent::Unknown(m) =
                                self.send_raw(tx).await
                            {
                                last_error = m;
                            }
                        }
                        Err(e) => last_error = scrub(&e.to_string()),
                    }
                }
                Ok(None) => {}
                Err(e) => last_error = e,
            }
            if started.elapsed() >= CONFIRM_TIMEOUT {
                return Err(SettleError::Pending {
                    transaction: signature.to_string(),
                    message: format!(
                        "not {} after {}s: {last_error}",
                        self.commitment.as_str(),
                        CONFIRM_TIMEOUT.as_secs()
                    ),
                });
            }
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(POLL_MAX);
        }
    }

    async fn get_transaction(
        &self,
        signature: &Signature,
    ) -> Result<Option<TxLookup>, VerifyError> {
        let config = json!({
            "encoding": "json",
            "commitment": self.commitment.as_str(),
            "maxSupportedTransactionVersion": 0,
        });
        self.rpc
            .send::<Option<TxLookup>>(
                RpcRequest::GetTransaction,
                json!([signature.to_string(), config]),
            )
            .await
            .map_err(|e| self.unavailable("getTransaction", &e))
    }

    pub(super) async fn lookup_settlement(
        &self,
        tx_hash: &str,
        asset: &str,
        from: &str,
        value: &str,
    ) -> Result<TxOutcome, VerifyError> {
        let signature: Signature = tx_hash
            .parse()
            .map_err(|_| VerifyError::Unavailable("stored signature does not parse".into()))?;
        let status = self
            .status(&signature)
            .await
            .map_err(VerifyError::Unavailable)?;
        let Some(status) = status else {
            return Ok(TxOutcome::NotFound);
        };
        if let Some(err) = status.err {
            return Ok(TxOutcome::Failed(format!(
                "the settlement transaction failed: {err}"
            )));
        }
        if !reached(&status, self.commitment) {
            return Ok(TxOutcome::NotFound);
        }
        let Some(found) = self.get_transaction(&signature).await? else {
            return Ok(TxOutcome::NotFound);
        };
        let value: i128 = value
            .parse()
            .map_err(|_| VerifyError::Unavailable("stored amount does not parse".into()))?;
        let changes = found.meta.as_ref().map(deltas).unwrap_or_default();
        let paid = changes
            .iter()
            .any(|d| d.mint == asset && d.owner == from && d.change == -value);
        let pay_to = changes
            .iter()
            .find(|d| d.mint == asset && d.change == value)
            .map(|d| d.owner.clone());
        Ok(match (paid, pay_to) {
            (true, Some(pay_to)) => TxOutcome::Landed {
                settlement: Settlement {
                    transaction: signature.to_string(),
                    block_number: found.slot,
                    network: self.network.clone(),
                    payer: from.to_string(),
                },
                pay_to,
            },
            _ => TxOutcome::Failed("the transaction has no matching token transfer".into()),
        })
    }

    pub(super) async fn lookup_transfer(
        &self,
        tx_hash: &str,
        recipient: &str,
        min_amount: u128,
        assets: &[crate::config::AssetConfig],
    ) -> Result<TransferFacts, VerifyError> {
        let bad = |m: String| VerifyError::invalid(Reason::InvalidPayload, m);
        let signature: Signature = tx_hash
            .parse()
            .map_err(|_| bad(format!("`{tx_hash}` is not a Solana transaction signature")))?;
        let recipient: Pubkey = recipient
            .parse()
            .map_err(|_| bad(format!("`{recipient}` is not a Solana address")))?;
        let recipient = recipient.to_string();
        let found = self.get_transaction(&signature).await?.ok_or_else(|| {
            VerifyError::invalid(
                Reason::TxNotFound,
                format!(
                    "no transaction {signature} at commitment {}",
                    self.commitment.as_str()
                ),
            )
        })?;
        let Some(meta) = found.meta else {
            return Err(VerifyError::invalid(
                Reason::TxNotFound,
                "the node returned the transaction without its status",
            ));
        };
        if meta.err.is_some() {
            return Err(VerifyError::invalid(
                Reason::TxFailed,
                "the transaction failed",
            ));
        }
        let changes = deltas(&meta);
        let received = changes
            .iter()
            .filter(|d| d.owner == recipient && d.change > 0)
            .filter(|d| assets.iter().any(|a| a.address == d.mint))
            .max_by_key(|d| d.change)
            .cloned();
        let Some(received) = received else {
            return Err(VerifyError::invalid(
                Reason::NoMatchingTransfer,
                format!(
                    "the transaction moves none of this network's configured assets to {recipient}"
                ),
            ));
        };
        if (received.change as u128) < min_amount {
            return Err(VerifyError::invalid(
                Reason::InsufficientAmount,
                format!(
                    "the transfer is {}, less than the expected {min_amount}",
                    received.change
                ),
            ));
        }
        // The payer: whoever's balance of that mint fell the most.
        let payer = changes
            .iter()
            .filter(|d| d.mint == received.mint && d.change < 0)
            .min_by_key(|d| d.change)
            .map(|d| d.owner.clone())
            .unwrap_or_default();
        Ok(TransferFacts {
            transaction: signature.to_string(),
            network: self.network.clone(),
            payer,
            recipient,
            asset: received.mint,
            amount: received.change.to_string(),
            block_number: found.slot,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn balance(mint: &str, owner: &str, amount: u64) -> TokenBalance {
        TokenBalance {
            mint: mint.into(),
            owner: Some(owner.into()),
            ui_token_amount: UiAmount {
                amount: amount.to_string(),
            },
        }
    }

    #[test]
    fn deltas_pair_pre_and_post_balances_by_mint_and_owner() {
        let meta = TxMeta {
            err: None,
            pre_token_balances: Some(vec![balance("M", "payer", 100)]),
            // The payee's account was created by the transaction: no pre balance.
            post_token_balances: Some(vec![balance("M", "payer", 75), balance("M", "payee", 25)]),
        };
        let d = deltas(&meta);
        assert!(d.contains(&Delta {
            mint: "M".into(),
            owner: "payer".into(),
            change: -25
        }));
        assert!(d.contains(&Delta {
            mint: "M".into(),
            owner: "payee".into(),
            change: 25
        }));
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn token_amount_reads_the_base_layout() {
        let mut data = vec![0u8; 165];
        data[64..72].copy_from_slice(&1234u64.to_le_bytes());
        assert_eq!(token_amount(&data), Some(1234));
        assert_eq!(token_amount(&data[..70]), None);
    }
}
