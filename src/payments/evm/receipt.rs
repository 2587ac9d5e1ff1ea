//! The receipt wait: looking a settlement's transactions up (it and those it replaces), sending
//! the newest's bytes again while none is mined, ending early as `Stalled` for the caller to
//! replace it; what a mined settlement did; and the confirmations' wait.

use super::send::Sent;
use super::*;

use alloy::rpc::types::TransactionReceipt;

/// A receipt wait: for `hashes` (a settlement, newest first, then the ones it replaces), sending
/// `raw` (the newest's bytes) again while none is mined, for at most `bound`; with `stall`,
/// ending as `Stalled` once that long has passed without a receipt.
pub(super) struct Wait<'a> {
    pub hashes: &'a [B256],
    pub raw: &'a Bytes,
    pub stall: Option<Duration>,
    pub bound: Duration,
}

/// What the node says of a settlement's transactions (`EvmBackend::lookup`).
pub(super) enum Lookup {
    Mined(Box<TransactionReceipt>),
    /// It answered for every one: none is mined.
    NoneMined,
    /// A lookup failed and none answered was mined.
    Unknown(String),
}

/// Whether the node knows one of a settlement's transactions (`EvmBackend::any_known`).
pub(super) enum Known {
    Yes,
    No,
    Unsure,
}

impl EvmBackend {
    /// The receipt of one of `hashes` (at most a few: a settlement and its replacements), in a
    /// round trip each. `NoneMined` only when the node answered for every one.
    pub(super) async fn lookup(&self, hashes: &[B256]) -> Lookup {
        let mut failed = None;
        for h in hashes {
            match self.provider.get_transaction_receipt(*h).await {
                Ok(Some(r)) => return Lookup::Mined(Box::new(r)),
                Ok(None) => {}
                Err(e) => failed = Some(scrub(&format!("receipt: {e}"))),
            }
        }
        failed.map_or(Lookup::NoneMined, Lookup::Unknown)
    }

    /// Whether the node knows one of `hashes`, pending or mined: `No` only when it answered for
    /// every one.
    pub(super) async fn any_known(&self, hashes: &[B256]) -> Known {
        let mut unsure = false;
        for h in hashes {
            match self.provider.get_transaction_by_hash(*h).await {
                Ok(Some(_)) => return Known::Yes,
                Ok(None) => {}
                Err(_) => unsure = true,
            }
            match self.provider.get_transaction_receipt(*h).await {
                Ok(Some(_)) => return Known::Yes,
                Ok(None) => {}
                Err(_) => unsure = true,
            }
        }
        if unsure {
            Known::Unsure
        } else {
            Known::No
        }
    }

    /// Waits for the receipt of a sent transaction or of one it replaces (`wait.hashes`, newest
    /// first), sending the newest's bytes again every few seconds without one (a node may drop a
    /// transaction from its pool; the same bytes are harmless if it still has them), until one
    /// is mined, the wait ends with `Pending`, or (with `wait.stall`) it ends early as `Stalled`
    /// for the caller to replace it.
    pub(super) async fn await_receipt(
        &self,
        wait: Wait<'_>,
    ) -> Result<TransactionReceipt, SettleError> {
        let Wait {
            hashes,
            raw,
            stall,
            bound,
        } = wait;
        let hash = hashes[0];
        let started = Instant::now();
        let mut last_send = Instant::now();
        let mut poll = self.receipt_poll_start;
        let pending = |message: String| SettleError::Pending {
            transaction: hash.to_string(),
            message,
        };
        loop {
            match self.lookup(hashes).await {
                Lookup::Mined(r) => return Ok(*r),
                Lookup::NoneMined => {}
                Lookup::Unknown(e) if started.elapsed() >= bound => return Err(pending(e)),
                Lookup::Unknown(_) => {}
            }
            if started.elapsed() >= bound {
                let standing = self.unmined_standing(raw).await;
                tracing::warn!(tx = %hash, "no receipt after {bound:?}: {standing}");
                return Err(pending(format!("no receipt yet ({standing})")));
            }
            if let Some(after) = stall.filter(|after| started.elapsed() >= *after) {
                let standing = self.unmined_standing(raw).await;
                tracing::warn!(tx = %hash, "no receipt after {after:?}, replacing it: {standing}");
                return Err(SettleError::Stalled {
                    transaction: hash.to_string(),
                    message: format!("no receipt after {after:?} ({standing})"),
                });
            }
            if last_send.elapsed() >= RESEND_EVERY {
                last_send = Instant::now();
                if let Sent::Refused {
                    nonce_used: true, ..
                } = self.send_raw(raw).await
                {
                    // A mined transaction used our nonce: ours (or one it replaces), mined since
                    // the last poll, or another, and then none of ours can ever land. (`Held`:
                    // one it replaces is still pending there; the wait goes on.) Only the node's
                    // answer for every one of ours proves none was mined.
                    match self.lookup(hashes).await {
                        Lookup::Mined(r) => return Ok(*r),
                        Lookup::NoneMined => {
                            self.resync_nonce().await;
                            let message = "another transaction took the settlement's nonce";
                            // With replacements, never "not sent" from the wait: the claim stays,
                            // and the reconciler decides on every one of them.
                            return Err(if hashes.len() > 1 {
                                pending(message.into())
                            } else {
                                SettleError::NotBroadcast {
                                    message: message.into(),
                                }
                            });
                        }
                        Lookup::Unknown(_) => {}
                    }
                }
            }
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(Duration::from_millis(250));
        }
    }

    /// What a mined settlement did: reverted, moved something else, or paid this payment (once
    /// it has the network's confirmations; `started` bounds that wait with the receipt's).
    pub(super) async fn judge_receipt(
        &self,
        auth: &EvmAuthorization,
        hash: B256,
        receipt: &TransactionReceipt,
        started: Instant,
    ) -> Result<Settlement, SettleError> {
        let tx = hash.to_string();
        if !receipt.status() {
            return Err(SettleError::Failed {
                reason: Reason::InvalidExactEvmTransactionFailed,
                message: "the settlement transaction reverted".into(),
                transaction: Some(tx),
            });
        }
        // Its own authorization used, with its transfer: what the transaction did for this
        // payment, not for another of the same payer and amount (a batch may carry both).
        let transferred = super::batch::landed(receipt, auth.asset, auth.from, auth.nonce, |t| {
            t.to == auth.to && t.value == auth.value
        });
        if !transferred {
            return Err(SettleError::Failed {
                reason: Reason::InvalidExactEvmTransferEventMismatch,
                message: "the transaction has no matching Transfer event".into(),
                transaction: Some(tx),
            });
        }
        let block = receipt.block_number.unwrap_or_default();
        self.confirmed(hash, block, started).await?;
        Ok(Settlement {
            transaction: tx,
            block_number: block,
            network: self.network.clone(),
            payer: auth.from.to_checksum(None),
        })
    }

    /// Waits until the transaction mined in `block` has the network's confirmations, within the
    /// receipt wait's bound (`started`); past it, the settlement is `Pending`.
    pub(super) async fn confirmed(
        &self,
        hash: B256,
        block: u64,
        started: Instant,
    ) -> Result<(), SettleError> {
        if self.confirmations <= 1 {
            return Ok(());
        }
        let target = block + self.confirmations - 1;
        loop {
            match self.provider.get_block_number().await {
                Ok(n) if n >= target => return Ok(()),
                _ if started.elapsed() >= RECEIPT_TIMEOUT => {
                    return Err(SettleError::Pending {
                        transaction: hash.to_string(),
                        message: format!("waiting for {} confirmations", self.confirmations),
                    })
                }
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
}
