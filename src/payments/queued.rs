//! Deferred settlement, one queued item at a time: the step the deferred worker runs. The signed
//! transaction is stored before it is sent; a retry sends the same bytes again (or just waits for
//! their receipt), so a restart mid-settlement never pays twice. Attempts back off exponentially
//! and stop after `MAX_ATTEMPTS`, leaving the item failed with its last error; except while a sent
//! transaction's outcome is unknown: that one is sent again until it lands or its authorization
//! has expired, never abandoned while it might still move the money.
//!
//! First attempts of several items of one network can go out as one batch transaction
//! (`settle_queued_batch`), where the network batches: the worker hands over what is due
//! together. Each item still ends on its own (its own authorization in the receipt), and a
//! batch that cannot have moved anything leaves each item to be signed anew.

use std::sync::Arc;

use crate::payments::chain::{unix_now, Attempt, ChainBackend, ChainBackends, SettleError};
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
    let (mut prepared, attempt) = match &item.prepared {
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
    let landed = super::landing::land(
        verifier,
        store,
        &[id],
        &mut prepared,
        attempt,
        |p, attempt| async move { verifier.submit(v, &p, attempt).await },
    )
    .await;
    match landed {
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
        Err(
            e @ (SettleError::Pending { .. }
            | SettleError::Stalled { .. }
            | SettleError::ReplacementRefused { .. }),
        ) => retry(store, &item, &e.to_string(), Retry::SameTransaction).await,
    }
}

/// First attempts at queued settlements of one network (none has a transaction yet), settled by
/// one batch transaction; each item's outcome. Items whose authorization expired fail on their
/// own; fewer than two left go through `settle_queued`.
pub async fn settle_queued_batch(
    store: &Store,
    backends: &ChainBackends,
    verifier: &Arc<dyn ChainBackend>,
    items: Vec<QueuedSettlement>,
) -> Vec<(i64, QueuedOutcome)> {
    let mut out = Vec::with_capacity(items.len());
    let (fresh, expired): (Vec<_>, Vec<_>) = items
        .into_iter()
        .partition(|i| i.prepared.is_none() && i.verified.expires_at > unix_now());
    for item in expired {
        out.push((item.claim_id, settle_queued(store, backends, item).await));
    }
    if fresh.len() < 2 {
        for item in fresh {
            out.push((item.claim_id, settle_queued(store, backends, item).await));
        }
        return out;
    }
    let members: Vec<_> = fresh.iter().map(|i| i.verified.clone()).collect();
    let ids: Vec<i64> = fresh.iter().map(|i| i.claim_id).collect();
    let retry_all = |next: Retry, why: String| {
        let fresh = &fresh;
        async move {
            let mut outcomes = Vec::new();
            for item in fresh {
                outcomes.push((item.claim_id, retry(store, item, &why, next).await));
            }
            outcomes
        }
    };
    let mut prepared = match verifier.prepare_batch(&members).await {
        Ok(p) => p,
        Err(e) => {
            out.extend(retry_all(Retry::Fresh, e.to_string()).await);
            return out;
        }
    };
    if let Err(e) = store.queue_prepared_batch(&ids, &prepared).await {
        // Never sent: give its nonce back so no later settlement waits behind it. (A write that
        // landed with its answer lost leaves the items naming it: their next attempt sends it
        // again, or finds its nonce taken and signs anew. Deferred payments were served already,
        // so a late settlement is what they are owed.)
        verifier.abandon(&prepared).await;
        tracing::warn!(tx = %prepared.transaction, "saving a prepared batch settlement: {e}");
        out.extend(ids.iter().map(|&id| (id, QueuedOutcome::Later)));
        return out;
    }
    let members = &members;
    let landed = super::landing::land(
        verifier,
        store,
        &ids,
        &mut prepared,
        Attempt::First,
        |p, attempt| async move { verifier.submit_batch(members, &p, attempt).await },
    )
    .await;
    match landed {
        Ok(outcomes) => {
            let landed: Vec<_> = fresh
                .iter()
                .zip(&outcomes)
                .filter_map(|(item, o)| {
                    o.as_ref().ok().map(|s| {
                        let ctx = ClaimContext {
                            tenant: &item.tenant,
                            route: &item.route,
                        };
                        (item.claim_id, &item.verified, s, ctx)
                    })
                })
                .collect();
            // Not recorded: the items stay queued with their transaction, and their next
            // attempt finds each one's outcome in its receipt and records it.
            let recorded = match store.queue_settled_batch(&landed).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(tx = %prepared.transaction, "deferred batch settlement landed but was not recorded: {e}");
                    false
                }
            };
            tracing::info!(tx = %prepared.transaction, items = fresh.len(), landed = landed.len(), "deferred batch settlement mined");
            for (item, outcome) in fresh.iter().zip(outcomes) {
                let outcome = match outcome {
                    Ok(_) if recorded => QueuedOutcome::Settled,
                    Ok(_) => QueuedOutcome::Later,
                    Err(e) => {
                        tracing::warn!(
                            claim_id = item.claim_id,
                            "deferred settlement failed in its batch: {e}"
                        );
                        fail(store, item.claim_id, &e.to_string()).await
                    }
                };
                out.push((item.claim_id, outcome));
            }
        }
        // Nothing moved (never sent, or reverted as a whole): each is signed anew next time.
        Err(e) if e.nothing_sent() || matches!(e, SettleError::Failed { .. }) => {
            out.extend(retry_all(Retry::Fresh, e.to_string()).await);
        }
        Err(e) => out.extend(retry_all(Retry::SameTransaction, e.to_string()).await),
    }
    out
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
