//! Deferred settlement, one queued item at a time: the step the deferred worker runs. The signed
//! transaction is stored before it is sent; a retry sends the same bytes again (or just waits for
//! their receipt), so a restart mid-settlement never pays twice. Attempts back off exponentially
//! and stop after `MAX_ATTEMPTS`, leaving the item failed with its last error; except while a sent
//! transaction's outcome is unknown: that one is sent again until it lands or its authorization
//! has expired, never abandoned while it might still move the money.

use crate::payments::chain::{unix_now, Attempt, ChainBackends, SettleError};
use crate::store::{ClaimContext, QueuedSettlement, Store};

const MAX_ATTEMPTS: i64 = 8;

/// What became of one attempt at a queued settlement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueuedOutcome {
    /// Landed and recorded in the ledger.
    Settled,
    /// Never will land (reverted, expired, given up): the claim failed, its count given back.
    Failed,
    /// Not decided yet: another attempt is scheduled (or the item is picked up again).
    Later,
}

impl QueuedOutcome {
    /// The metrics label of a final outcome.
    pub fn label(self) -> Option<&'static str> {
        match self {
            QueuedOutcome::Settled => Some("settled"),
            QueuedOutcome::Failed => Some("failed"),
            QueuedOutcome::Later => None,
        }
    }
}

/// Attempts one queued settlement: settles it, fails it for good, or schedules another attempt.
pub async fn settle_queued(
    store: &Store,
    backends: &ChainBackends,
    item: QueuedSettlement,
) -> QueuedOutcome {
    let id = item.claim_id;
    let v = &item.verified;
    let ctx = ClaimContext {
        tenant: &item.tenant,
        route: &item.route,
    };
    let Some(verifier) = backends.get_str(&v.key.network) else {
        return fail(store, id, &format!("no verifier for {}", v.key.network)).await;
    };
    let (prepared, attempt) = match &item.prepared {
        // Sent before (by an earlier attempt or an earlier life of the gateway): send it again.
        Some(p) => (p.clone(), Attempt::Again),
        None => {
            if v.expires_at <= unix_now() {
                let why = "the authorization expired before it could be settled";
                return fail(store, id, why).await;
            }
            match verifier.prepare(v).await {
                Ok(p) => {
                    if let Err(e) = store.queue_prepared(id, &p).await {
                        // Never sent: give its nonce back so no later settlement waits behind it.
                        verifier.abandon(&p).await;
                        tracing::warn!(claim_id = id, "saving a prepared settlement: {e}");
                        return QueuedOutcome::Later;
                    }
                    (p, Attempt::First)
                }
                Err(e) => return retry(store, &item, &e.to_string(), Retry::Fresh).await,
            }
        }
    };
    match verifier.submit(v, &prepared, attempt).await {
        Ok(s) => {
            // Not recorded: the item stays queued with its transaction, and the next attempt
            // finds it mined and records it.
            if let Err(e) = store.queue_settled(id, v, &s, &ctx).await {
                tracing::error!(claim_id = id, tx = %s.transaction, "deferred settlement landed but was not recorded: {e}");
                return QueuedOutcome::Later;
            }
            tracing::info!(claim_id = id, tx = %s.transaction, "deferred settlement landed");
            QueuedOutcome::Settled
        }
        Err(SettleError::Failed {
            reason, message, ..
        }) => {
            let why = format!("{reason}: {message}");
            tracing::warn!(claim_id = id, "deferred settlement failed: {why}");
            fail(store, id, &why).await
        }
        // Not broadcast and never will be (refused by the node, or it never reached it): the
        // signed transaction is dropped and the next attempt signs anew.
        Err(e @ (SettleError::NotBroadcast { .. } | SettleError::Unavailable(_))) => {
            retry(store, &item, &e.to_string(), Retry::Fresh).await
        }
        // Sent, outcome unknown: keep the transaction and send it again later.
        Err(e @ SettleError::Pending { .. }) => {
            retry(store, &item, &e.to_string(), Retry::SameTransaction).await
        }
    }
}

/// Fails a queued settlement for good: its claim and its queue item in one transaction. If that
/// cannot be written the item stays queued and its next attempt comes to the same end.
async fn fail(store: &Store, claim_id: i64, why: &str) -> QueuedOutcome {
    match store.queue_fail(claim_id, why).await {
        Ok(()) => QueuedOutcome::Failed,
        Err(e) => {
            tracing::warn!(claim_id, "recording a failed deferred settlement: {e}");
            QueuedOutcome::Later
        }
    }
}

/// What the next attempt of a queued settlement starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Nothing is in flight: sign anew (the stored transaction, if any, is dropped).
    Fresh,
    /// A sent transaction may still land: send the same one again, for as long as its
    /// authorization can settle, however many attempts that takes.
    SameTransaction,
}

/// A sent transaction not mined this long after its authorization expired never will be.
const EXPIRY_MARGIN: u64 = 60;

async fn retry(store: &Store, item: &QueuedSettlement, error: &str, next: Retry) -> QueuedOutcome {
    let attempts = item.attempts + 1;
    let in_flight =
        next == Retry::SameTransaction && unix_now() <= item.verified.expires_at + EXPIRY_MARGIN;
    if attempts >= MAX_ATTEMPTS && !in_flight {
        let why = format!("gave up after {attempts} attempts: {error}");
        tracing::error!(claim_id = item.claim_id, "{why}");
        return fail(store, item.claim_id, &why).await;
    }
    let backoff = 1i64 << attempts.min(6);
    let next_at = unix_now() as i64 + backoff;
    if let Err(e) = store
        .queue_retry(
            item.claim_id,
            attempts,
            next_at,
            error,
            next == Retry::Fresh,
        )
        .await
    {
        tracing::warn!(claim_id = item.claim_id, "scheduling a retry: {e}");
    }
    QueuedOutcome::Later
}
