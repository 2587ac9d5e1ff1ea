//! Settlement of claimed payments: immediately (policies `before` and `after`), or from the
//! durable queue in the background (`deferred`, see `worker.rs`).
//!
//! A settlement transaction is signed first, its hash and bytes written to the claim, then sent:
//! after a crash or a drop the claim says which transaction to look for and holds the very bytes
//! to send again, so a payment is never settled by two transactions. A claim goes back to
//! `claimed` (and may be released) only when its transaction provably never left: the database
//! did not record it, or the node refused it. Once it may have left, the claim stays `settling`
//! until the transaction lands or its authorization expires.
//! May import: verify, store.

pub mod leases;
pub mod reconcile;
pub mod worker;

use crate::store::{ClaimContext, Store};
use crate::verify::{Attempt, PaymentVerifier, SettleError, Settlement, Verified};

/// Settles one claimed payment now and records it in the ledger.
pub async fn settle_claim(
    verifier: &dyn PaymentVerifier,
    store: &Store,
    claim_id: i64,
    verified: &Verified,
    ctx: &ClaimContext<'_>,
) -> Result<Settlement, SettleError> {
    let mut signed_again = false;
    loop {
        let prepared = verifier.prepare(verified).await?;
        if let Err(e) = store.mark_settling(claim_id, &prepared).await {
            // Never sent: its settler nonce goes back, or every later settlement queues behind
            // the gap it leaves.
            verifier.abandon(&prepared).await;
            return Err(SettleError::Unavailable(format!(
                "recording the settlement: {e}"
            )));
        }
        match verifier.submit(verified, &prepared, Attempt::First).await {
            Ok(settlement) => {
                if let Err(e) = store
                    .record_settlement(claim_id, verified, &settlement, ctx)
                    .await
                {
                    // The money moved; the claim row already names the transaction, so the
                    // ledger can be repaired from it. Serving the client is still right.
                    tracing::error!(claim_id, tx = %settlement.transaction, "settlement landed but was not recorded: {e}");
                }
                return Ok(settlement);
            }
            Err(e) if e.nothing_sent() => {
                // The transaction never left: the claim is only `claimed` again, so it can be
                // settled anew or released. If that write fails the claim stays `settling`, is
                // never released, and the reconciler fails it once the authorization expires.
                match store.unmark_settling(claim_id, &prepared.transaction).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(claim_id, "an unsent settlement's claim moved on meanwhile")
                    }
                    Err(db) => tracing::warn!(claim_id, "un-marking an unsent settlement: {db}"),
                }
                match e {
                    // The node refused it (typically a nonce another transaction took, now
                    // caught up on): sign again, once.
                    SettleError::NotBroadcast { ref message } if !signed_again => {
                        tracing::warn!(claim_id, "signing a refused settlement again: {message}");
                        signed_again = true;
                    }
                    e => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
}
