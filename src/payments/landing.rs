//! Landing a recorded settlement: send it and wait; when the backend reports it stuck unmined
//! (`SettleError::Stalled`), have it replaced at higher fees, record the replacement on every
//! claim it settles, and only then send it; until one of them is mined, fails, or the wait is
//! over. One loop for a single payment, a batch and the deferred queue alike.
//!
//! The record comes first for the reason the first transaction's does (`settle.rs`): after a
//! crash the claim must name every transaction that may be mined. A replacement shares its
//! nonce with what it replaces, so at most one of them ever is; the claim names the newest
//! (`tx_hash`, `tx_raw`, sent again while none is mined) and the ones it replaced
//! (`tx_replaced`), and every wait and the reconciler watch them all.

use std::future::Future;
use std::sync::Arc;

use crate::payments::chain::{Attempt, ChainBackend, PreparedSettlement, SettleError};
use crate::store::Store;

/// Sends `prepared` as `attempt` through `send` (the backend's `submit` or `submit_batch`) and
/// replaces it while it stalls. `prepared` ends as the last transaction recorded on the claims
/// (`claim_ids`), the one to name when un-marking them after a `nothing_sent` error.
pub(super) async fn land<T, F, Fut>(
    verifier: &Arc<dyn ChainBackend>,
    store: &Store,
    claim_ids: &[i64],
    prepared: &mut PreparedSettlement,
    attempt: Attempt,
    mut send: F,
) -> Result<T, SettleError>
where
    F: FnMut(PreparedSettlement, Attempt) -> Fut,
    Fut: Future<Output = Result<T, SettleError>>,
{
    let (mut attempt, mut round) = (attempt, 0);
    // Set once the node refused a replacement for itself: it would refuse the next one too.
    let mut refused = None;
    // The transaction the last replacement replaced, to go back to if the node refuses it.
    let mut previous: Option<PreparedSettlement> = None;
    loop {
        let (transaction, message) = match send(prepared.clone(), attempt).await {
            Err(SettleError::Stalled {
                transaction,
                message,
            }) => (transaction, message),
            Err(SettleError::ReplacementRefused {
                transaction,
                message,
            }) => {
                // It never left: the claims go back to naming the one it replaced as the one to
                // send again (its bytes are the ones a node will take), the refused one kept
                // among those watched.
                tracing::warn!(tx = %transaction, "the node refused a replacement settlement, sending the one it replaced again: {message}");
                let Some(back) = previous.take() else {
                    return Err(SettleError::Pending {
                        transaction,
                        message: format!("{message}; nothing to go back to"),
                    });
                };
                *prepared = go_back(store, claim_ids, &transaction, back).await;
                refused = Some(message);
                attempt = Attempt::Again;
                continue;
            }
            other => return other,
        };
        if matches!(attempt, Attempt::Watch(_)) {
            // Not reported while watching; were it ever, the wait is over.
            return Err(SettleError::Pending {
                transaction,
                message,
            });
        }
        if let Some(why) = &refused {
            return Err(SettleError::Pending {
                transaction,
                message: format!(
                    "{message}; not replaced again: the node refused the last replacement ({why})"
                ),
            });
        }
        // Whatever stops the replacement here, what was sent may still land: the rest of the
        // wait watches it (and every transaction it replaced), so a client whose payment lands
        // within the wait gets its receipt; past it, `Pending`, for the reconciler (which sends
        // the recorded bytes again until one is mined or expires).
        round += 1;
        let replacement = match verifier.replace(prepared).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(tx = %transaction, "a stalled settlement was not replaced, watching what was sent: {message}; {e}");
                attempt = Attempt::Watch(round);
                continue;
            }
        };
        if let Err(e) = store
            .record_replacement(claim_ids, &prepared.transaction, &replacement)
            .await
        {
            // Not recorded, so never sent. (A write that landed with its answer lost names the
            // replacement as well, unsent: the reconciler watches both, and sending it can only
            // settle the same payments once.)
            tracing::warn!(tx = %transaction, "a stalled settlement's replacement could not be recorded, watching what was sent: {e}");
            attempt = Attempt::Watch(round);
            continue;
        }
        previous = Some(std::mem::replace(prepared, replacement));
        attempt = Attempt::Replacement(round);
    }
}

/// A replacement (`refused`) the node refused never left: the claims (`claim_ids`) go back to
/// naming `back`, the transaction it replaced, as the one to send again (its bytes are the ones a
/// node takes), the refused one kept among those watched. Returns what the claims name now.
/// Unrecorded, the claims still name both (the refused one as the one to send, `back` among
/// those watched), and `back` is still the one to send.
pub(crate) async fn go_back(
    store: &Store,
    claim_ids: &[i64],
    refused: &str,
    mut back: PreparedSettlement,
) -> PreparedSettlement {
    back.replaces.push(refused.to_string());
    if let Err(e) = store.record_replacement(claim_ids, refused, &back).await {
        tracing::warn!(tx = %back.transaction, "recording the replaced settlement as the one to send again: {e}");
    }
    back
}
