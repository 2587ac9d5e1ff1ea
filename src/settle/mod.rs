//! Settlement of claimed payments: immediately (policies `before` and `after`), or from the
//! durable queue in the background (`deferred`, see `worker.rs`).
//!
//! A settlement transaction is signed first, its hash written to the claim, then sent: after a
//! crash the claim says which transaction to look for, and the queue keeps the very bytes to
//! re-send, so a payment is never settled by two transactions.
//! May import: verify, store.

pub mod leases;
pub mod reconcile;
pub mod worker;

use crate::store::{ClaimContext, Store};
use crate::verify::{PaymentVerifier, SettleError, Settlement, Verified};

/// Settles one claimed payment now and records it in the ledger.
pub async fn settle_claim(
    verifier: &dyn PaymentVerifier,
    store: &Store,
    claim_id: i64,
    verified: &Verified,
    ctx: &ClaimContext<'_>,
) -> Result<Settlement, SettleError> {
    let mut attempt = 0;
    loop {
        let prepared = verifier.prepare(verified).await?;
        store
            .mark_settling(claim_id, &prepared.transaction)
            .await
            .map_err(|e| SettleError::Unavailable(format!("recording the settlement: {e}")))?;
        match verifier.submit(verified, &prepared).await {
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
            // The node refused the transaction before broadcasting it (typically a nonce another
            // transaction took): sign again with a fresh nonce, once.
            Err(SettleError::Unavailable(msg)) if attempt == 0 && msg.contains("refused") => {
                tracing::warn!(claim_id, "re-signing a refused settlement: {msg}");
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
