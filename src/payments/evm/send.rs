//! Sending signed settlements: what a node's answer means (`Sent`), and `land`, which sends a
//! settlement (first, again, or a replacement) and hands it to the receipt wait (`receipt.rs`).
//!
//! A first send goes out as `eth_sendRawTransactionSync` (EIP-7966) where the node has it: the
//! node answers with the receipt once the transaction is mined, so a settlement costs one round
//! trip instead of a send and a receipt poll or more (anvil, reth and several L2 sequencers serve
//! it). A node without it is found out on the first settlement and sent plain transactions from
//! then on; re-sends always go plain (they only need the node to hold the bytes).

use super::*;

use alloy::rpc::types::TransactionReceipt;

use super::receipt::{Known, Wait};

/// What a node did with a signed transaction we sent it.
pub(super) enum Sent {
    /// It has it: taken now, or it already had it.
    Accepted,
    /// It answered with a JSON-RPC error refusing it: not broadcast.
    Refused { nonce_used: bool, message: String },
    /// It refused it as an underpriced replacement: another transaction of the settler with
    /// this nonce is pending there (an earlier one of ours this replaces, or one signed
    /// elsewhere). Not broadcast, and the nonce is not used yet: that one may still be mined.
    Held(String),
    /// The request never reached it (connection refused): not broadcast.
    NotDelivered(String),
    /// The answer was lost (a timeout, an HTTP error status, a cut connection): it may have the
    /// transaction, or not.
    Unknown(String),
}

/// The one place where a node's words decide. `eth_sendRawTransaction` refusals carry no error
/// code that clients agree on (geth, reth, erigon and anvil mostly answer -32000 with their own
/// text), so the message is read here, once, into a typed refusal; everything else works on that.
pub(super) fn classify_refusal(message: &str) -> Sent {
    let m = message.to_ascii_lowercase();
    if m.contains("already known")
        || m.contains("known transaction")
        || m.contains("already imported")
    {
        return Sent::Accepted;
    }
    if m.contains("replacement transaction underpriced") || m.contains("replacement underpriced") {
        return Sent::Held(message.to_string());
    }
    let nonce_used = m.contains("nonce too low") || m.contains("nonce has already been used");
    Sent::Refused {
        nonce_used,
        message: message.to_string(),
    }
}

/// Whether a transport error proves the request never reached the node: the connection was
/// never made. Anything after that (a timeout, a reset, an HTTP error status) may have come after
/// the node took the request.
pub(super) fn never_delivered(e: &RpcError<TransportErrorKind>) -> bool {
    match e {
        RpcError::Transport(TransportErrorKind::Custom(inner)) => inner
            .downcast_ref::<reqwest::Error>()
            .is_some_and(|r| r.is_connect()),
        _ => false,
    }
}

/// What became of a first send by `eth_sendRawTransactionSync`.
pub(super) enum SyncSent {
    /// Mined: its receipt.
    Mined(Box<alloy::rpc::types::TransactionReceipt>),
    /// The node has it and answered before it was mined (EIP-7966's timeout error names the
    /// transaction), or its answer was lost after it was taken: wait for the receipt.
    Taken,
    /// Anything else: what the plain send of the same bytes says, the one that decides (and the
    /// node is sent plain transactions from now on if the plain send took what the sync one
    /// did not: it does not serve the method).
    Plain(Sent),
}

impl EvmBackend {
    /// Sends signed bytes and asks for the receipt in the same call, where the node serves that.
    pub(super) async fn send_raw_sync(&self, raw: &Bytes, hash: B256) -> SyncSent {
        use std::sync::atomic::Ordering;
        if !self.sync_send.load(Ordering::Relaxed) {
            return SyncSent::Plain(self.send_raw(raw).await);
        }
        match self.provider.send_raw_transaction_sync(raw).await {
            Ok(receipt) => SyncSent::Mined(Box::new(receipt)),
            // EIP-7966: taken into the pool, not mined within the node's wait; the error's data
            // is the transaction's hash (typed, not the message's words).
            Err(e) if e.tx_hash_data() == Some(hash) => SyncSent::Taken,
            Err(e) => match e.as_error_resp() {
                // Refused, or the method is unknown: the plain send's answer decides (and costs
                // a round trip only on this rare path).
                Some(_) => {
                    let plain = self.send_raw(raw).await;
                    if matches!(plain, Sent::Accepted) {
                        // What the sync call refused, the plain one took: the node does not
                        // serve the sync method (or failed it for its own reasons; polling
                        // costs a few calls more, never a payment).
                        tracing::info!(network = %self.network, "the node does not serve eth_sendRawTransactionSync: sending plain transactions and polling receipts");
                        self.sync_send.store(false, Ordering::Relaxed);
                    }
                    SyncSent::Plain(plain)
                }
                None if never_delivered(&e) => {
                    SyncSent::Plain(Sent::NotDelivered(scrub(&format!("{}: {e}", self.network))))
                }
                None => SyncSent::Plain(Sent::Unknown(scrub(&format!("{}: {e}", self.network)))),
            },
        }
    }

    /// Sends signed bytes and reads the answer into what it means.
    pub(super) async fn send_raw(&self, raw: &Bytes) -> Sent {
        match self.provider.send_raw_transaction(raw).await {
            Ok(_) => Sent::Accepted,
            Err(e) => match e.as_error_resp() {
                Some(resp) => classify_refusal(&resp.message),
                None if never_delivered(&e) => {
                    Sent::NotDelivered(scrub(&format!("{}: {e}", self.network)))
                }
                None => Sent::Unknown(scrub(&format!("{}: {e}", self.network))),
            },
        }
    }

    /// Sends a prepared settlement (first, again, or a replacement) and waits until it, or one
    /// it replaces, is mined: the receipt, and when the wait began (the confirmations' wait
    /// shares its bound). What the node's answer means for the claim is decided here, for one
    /// payment and for a batch alike.
    pub(super) async fn land(
        &self,
        prepared: &PreparedSettlement,
        attempt: Attempt,
    ) -> Result<(TransactionReceipt, Instant), SettleError> {
        let bad = |what: &str| SettleError::Unavailable(format!("bad prepared {what}"));
        let hashes = prepared
            .candidates()
            .map(|h| h.parse::<B256>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| bad("hash"))?;
        let hash = hashes[0];
        let raw: Bytes = prepared.raw.parse().map_err(|_| bad("transaction"))?;
        let started = Instant::now();
        let round = match attempt {
            Attempt::Replacement(n) | Attempt::Watch(n) => n as usize,
            Attempt::First | Attempt::Again => 0,
        };
        let wait = Wait {
            hashes: &hashes,
            raw: &raw,
            // Watching: no replacement can be made, so no stall is reported.
            stall: (!matches!(attempt, Attempt::Watch(_)))
                .then(|| self.stall_after(round))
                .flatten(),
            // The whole wait, its replacements included, stays within one receipt timeout.
            bound: RECEIPT_TIMEOUT.saturating_sub(self.waited_before(round)),
        };
        let sent = match attempt {
            Attempt::First => {
                self.wait_lower_stored(prepared.nonce).await;
                match self.send_raw_sync(&raw, hash).await {
                    SyncSent::Mined(receipt) => return Ok((*receipt, started)),
                    SyncSent::Taken => Sent::Accepted,
                    SyncSent::Plain(sent) => sent,
                }
            }
            Attempt::Again => self.send_raw(&raw).await,
            // Sent already: the wait looks every candidate up and sends the bytes again while
            // none is mined.
            Attempt::Watch(_) => return Ok((self.await_receipt(wait).await?, started)),
            Attempt::Replacement(_) => {
                // What it replaces is sent, pending or mined: whatever the node says to this
                // one, the wait watches them all, and nothing here proves nothing was sent.
                match self.send_raw(&raw).await {
                    Sent::Accepted => {}
                    // Refused for itself (the settler cannot pay its fee cap, a node's fee
                    // limit): it never left, and the node would refuse its bytes each time; the
                    // caller records the one it replaces as the one to send again.
                    Sent::Refused {
                        nonce_used: false,
                        message,
                    } => {
                        return Err(SettleError::ReplacementRefused {
                            transaction: hash.to_string(),
                            message,
                        })
                    }
                    Sent::Held(message)
                    | Sent::Refused { message, .. }
                    | Sent::NotDelivered(message)
                    | Sent::Unknown(message) => {
                        tracing::warn!(tx = %hash, "a replacement settlement was not taken, waiting on the ones it replaces: {message}");
                    }
                }
                return Ok((self.await_receipt(wait).await?, started));
            }
        };
        let (nonce_used, message) = match sent {
            Sent::Accepted => return Ok((self.await_receipt(wait).await?, started)),
            Sent::Refused {
                nonce_used,
                message,
            } => (nonce_used, message),
            // Another pending transaction holds the nonce: for this send, as good as used.
            Sent::Held(message) => (true, message),
            Sent::NotDelivered(message) if attempt == Attempt::First => {
                self.give_back(prepared.nonce).await;
                return Err(SettleError::Unavailable(message));
            }
            // An earlier send of these bytes may be in flight, or this one may have reached the
            // node before its answer was lost: treat it as sent. The wait looks it up by hash
            // and sends it again until it is mined or the wait ends as `Pending`: never released.
            Sent::NotDelivered(message) | Sent::Unknown(message) => {
                tracing::warn!(tx = %hash, "settlement send outcome unknown, looking it up: {message}");
                return Ok((self.await_receipt(wait).await?, started));
            }
        };
        // Refused. It may have landed before (a re-send after a crash, or after a lost answer):
        // the chain decides, not the refusal. With replacements, one the node cannot be asked
        // about may be the one mined: only a full answer proves none was.
        match self.any_known(&hashes).await {
            Known::Yes => return Ok((self.await_receipt(wait).await?, started)),
            Known::Unsure if hashes.len() > 1 => {
                return Ok((self.await_receipt(wait).await?, started))
            }
            Known::Unsure | Known::No => {}
        }
        if hashes.len() > 1 {
            // None of them is known and this one is refused: the nonce may be another
            // transaction's now. Never "not sent" on this alone: the claim stays, and the
            // reconciler (or the next attempt) decides on every one of them.
            self.resync_nonce().await;
            return Err(SettleError::Pending {
                transaction: hash.to_string(),
                message: format!("the node refused it and knows none it replaced: {message}"),
            });
        }
        if nonce_used {
            // Our counter is behind the node's: the nonce is gone (or held by another pending
            // transaction), catch up.
            self.resync_nonce().await;
        } else if attempt == Attempt::First {
            self.give_back(prepared.nonce).await;
        }
        Err(SettleError::NotBroadcast { message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_refusals_are_typed() {
        assert!(matches!(classify_refusal("already known"), Sent::Accepted));
        assert!(matches!(
            classify_refusal("transaction already imported"),
            Sent::Accepted
        ));
        assert!(matches!(
            classify_refusal("nonce too low: next nonce 4, tx nonce 3"),
            Sent::Refused {
                nonce_used: true,
                ..
            }
        ));
        // A pending transaction holds the nonce: not used yet, it may still be mined.
        assert!(matches!(
            classify_refusal("replacement transaction underpriced"),
            Sent::Held(_)
        ));
        assert!(matches!(
            classify_refusal("nonce has already been used"),
            Sent::Refused {
                nonce_used: true,
                ..
            }
        ));
        assert!(matches!(
            classify_refusal("insufficient funds for gas * price + value"),
            Sent::Refused {
                nonce_used: false,
                ..
            }
        ));
    }
}
