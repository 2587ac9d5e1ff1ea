//! Settlement of admitted payments: now (policies `before` and `after`), or queued for the
//! deferred worker; and release, when a payment is not charged.
//!
//! A settlement transaction is signed first, its hash and bytes written to the claim, then sent:
//! after a crash or a drop the claim says which transaction to look for and holds the very bytes
//! to send again, so a payment is never settled by two transactions. A claim goes back to
//! `claimed` (and may be released) only when its transaction provably never left: the database
//! did not record it, or the node refused it. Once it may have left, the claim stays `settling`
//! until the transaction lands or its authorization expires.

use std::sync::Arc;

use tracing::Instrument;

use super::state::{PaymentState, SettleOutcome, Stage};
use super::Payments;
use crate::payments::chain::{
    Attempt, ChainBackend, PreparedSettlement, SettleError, Settlement, Verified,
};
use crate::store::{ClaimContext, Store};

/// Settles an admitted payment now.
pub async fn settle(payments: &Payments, state: &mut PaymentState) -> SettleOutcome {
    let Some(verifier) = payments.backends.get_str(&state.network) else {
        return SettleOutcome::Unavailable(format!("no verifier for {}", state.network));
    };
    let store = match payments.store.get().await {
        Ok(s) => s,
        Err(e) => return SettleOutcome::Unavailable(format!("database: {e}")),
    };
    match payments
        .batchers
        .settle(
            verifier,
            store,
            state.claim_id,
            &state.verified,
            &state.ctx(),
        )
        .await
    {
        Ok(s) => {
            tracing::debug!(claim_id = state.claim_id, tx = %s.transaction, "payment settled");
            let receipt = state.receipt_ok(&s.transaction);
            state.stage = Stage::Settled(s);
            SettleOutcome::Settled(receipt)
        }
        Err(SettleError::Failed {
            reason,
            message,
            transaction,
        }) => {
            let _ = store
                .mark_failed(state.claim_id, &format!("{reason}: {message}"))
                .await;
            payments.cache.invalidate(&state.cache_key).await;
            state.stage = Stage::Unsettled;
            SettleOutcome::Refused(state.receipt_failed(reason.as_str(), transaction.as_deref()))
        }
        // Nothing was broadcast: the claim is `claimed` again and given back.
        Err(e @ (SettleError::Unavailable(_) | SettleError::NotBroadcast { .. })) => {
            let msg = e.to_string();
            release(payments, state, &msg).await;
            SettleOutcome::Unavailable(msg)
        }
        // Maybe broadcast: the claim stays `settling`, never released; the reconciler sends the
        // transaction again until it lands (and records it) or its authorization expires.
        // (`Stalled` does not get here: `landing.rs` replaces it, or makes it `Pending`.)
        Err(
            SettleError::Pending {
                transaction,
                message,
            }
            | SettleError::Stalled {
                transaction,
                message,
            }
            | SettleError::ReplacementRefused {
                transaction,
                message,
            },
        ) => {
            tracing::warn!(claim_id = state.claim_id, tx = %transaction, "settlement outcome unknown: {message}");
            state.stage = Stage::Unsettled;
            SettleOutcome::Pending(state.receipt_failed("settlement_pending", Some(&transaction)))
        }
    }
}

/// Puts an admitted payment in the deferred queue; the receipt says it is accepted, with no
/// transaction yet.
pub async fn enqueue(payments: &Payments, state: &mut PaymentState) -> SettleOutcome {
    let store = match payments.store.get().await {
        Ok(s) => s,
        Err(e) => return SettleOutcome::Unavailable(format!("database: {e}")),
    };
    match store.enqueue(state.claim_id, &state.verified).await {
        Ok(()) => {
            state.stage = Stage::Queued;
            payments.queue_wakeup.notify_one();
            SettleOutcome::Settled(state.receipt_ok(""))
        }
        Err(e) => {
            let msg = format!("queueing the settlement: {e}");
            release(payments, state, &msg).await;
            SettleOutcome::Unavailable(msg)
        }
    }
}

/// Gives the claim back (not charged), if it is still only claimed (the store refuses any other:
/// a `settling` claim's transaction may still land). The proof leaves the verification cache, so
/// presenting it again is checked on-chain again.
pub async fn release(payments: &Payments, state: &mut PaymentState, why: &str) {
    if !matches!(state.stage, Stage::Claimed) {
        return;
    }
    state.stage = Stage::Released;
    payments.cache.invalidate(&state.cache_key).await;
    match payments.store.get().await {
        Ok(store) => {
            if let Err(e) = store.release(state.claim_id, why).await {
                tracing::warn!(claim_id = state.claim_id, "releasing a claim: {e}");
            }
        }
        Err(e) => tracing::warn!(claim_id = state.claim_id, "releasing a claim: {e}"),
    }
}

/// Runs `settle` in a task of its own, so that it finishes, and records what happened, even if
/// this request's future is dropped mid-way (pingora drops it when either side of the proxied
/// exchange fails). The state says `Settling` until the task reports back.
pub async fn settle_detached(payments: &Arc<Payments>, state: &mut PaymentState) -> SettleOutcome {
    let (p, mut s) = (payments.clone(), state.clone());
    state.stage = Stage::Settling;
    // The task logs in the caller's span (the request's, with its id).
    let task = tokio::spawn(
        async move {
            let outcome = settle(&p, &mut s).await;
            (s.stage, outcome)
        }
        .instrument(tracing::Span::current()),
    );
    finish_detached(state, task).await
}

/// `enqueue` in a task of its own, for the same reason as `settle_detached`.
pub async fn enqueue_detached(payments: &Arc<Payments>, state: &mut PaymentState) -> SettleOutcome {
    let (p, mut s) = (payments.clone(), state.clone());
    state.stage = Stage::Settling;
    let task = tokio::spawn(
        async move {
            let outcome = enqueue(&p, &mut s).await;
            (s.stage, outcome)
        }
        .instrument(tracing::Span::current()),
    );
    finish_detached(state, task).await
}

async fn finish_detached(
    state: &mut PaymentState,
    task: tokio::task::JoinHandle<(Stage, SettleOutcome)>,
) -> SettleOutcome {
    match task.await {
        Ok((stage, outcome)) => {
            state.stage = stage;
            outcome
        }
        // Only a panic gets here; the claim stays as it is (never reusable), for the reconciler.
        Err(e) => {
            tracing::error!(claim_id = state.claim_id, "settlement task failed: {e}");
            state.stage = Stage::Unsettled;
            SettleOutcome::Unavailable("the settlement task failed".into())
        }
    }
}

/// Settles one claimed payment now and records it in the ledger.
pub async fn settle_claim(
    verifier: &Arc<dyn ChainBackend>,
    store: &Store,
    claim_id: i64,
    verified: &Verified,
    ctx: &ClaimContext<'_>,
) -> Result<Settlement, SettleError> {
    let mut signed_again = false;
    loop {
        let mut prepared = verifier.prepare(verified).await?;
        if let Err(e) = store.mark_settling(claim_id, &prepared).await {
            // Never sent. But the write may have landed with its answer lost, and then the
            // reconciler would send the stored transaction later, charging a payer who was
            // told 503 and served nothing (found by the chaos suite: `postgres` seeds 10 and
            // 26). So it is undone first, and only once the claim surely names no transaction
            // does its nonce go back (else every later settlement queues behind the gap).
            return Err(
                if undo_records(store, verifier, &[claim_id], &prepared).await {
                    SettleError::Unavailable(format!("recording the settlement: {e}"))
                } else {
                    // The database still does not answer: the payer is told the truth, a
                    // settlement that may still happen, named; the undoing goes on in the
                    // background until the database answers, so that it will not.
                    SettleError::Pending {
                        transaction: prepared.transaction.clone(),
                        message: format!("recording the settlement: {e}"),
                    }
                },
            );
        }
        let landed = super::landing::land(
            verifier,
            store,
            &[claim_id],
            &mut prepared,
            Attempt::First,
            |p, attempt| async move { verifier.submit(verified, &p, attempt).await },
        )
        .await;
        match landed {
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

/// How long a request tries to undo a settlement record whose write failed: a database that
/// dropped a connection usually answers again within moments.
const UNDO_TRIES: u32 = 4;
const UNDO_PAUSE: std::time::Duration = std::time::Duration::from_millis(250);
/// How long the background undo keeps trying: less than the reconciler's staleness limit (90 s),
/// after which the reconciler would send a stored transaction it finds.
const UNDO_BACKGROUND_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// Undoes the record of a never-sent settlement transaction on each of `claim_ids` (one claim,
/// or a batch's). Once the database has answered for every one, the claims surely name no
/// transaction and its nonce goes back: `true`. Else the undoing goes on in the background, and
/// `false` tells the caller that the transaction may still be sent (by a reconciler, should the
/// undoing never get through).
pub(super) async fn undo_records(
    store: &Store,
    verifier: &Arc<dyn ChainBackend>,
    claim_ids: &[i64],
    prepared: &PreparedSettlement,
) -> bool {
    let mut left = claim_ids.to_vec();
    for i in 0..UNDO_TRIES {
        left = undo_each(store, &left, &prepared.transaction).await;
        if left.is_empty() {
            verifier.abandon(prepared).await;
            return true;
        }
        if i + 1 < UNDO_TRIES {
            tokio::time::sleep(UNDO_PAUSE).await;
        }
    }
    tokio::spawn(undo_in_background(
        store.clone(),
        verifier.clone(),
        left,
        prepared.clone(),
    ));
    false
}

/// Un-marks `tx` on each claim; the ones the database did not answer for.
async fn undo_each(store: &Store, claim_ids: &[i64], tx: &str) -> Vec<i64> {
    let mut left = Vec::new();
    for &claim_id in claim_ids {
        if store.unmark_settling(claim_id, tx).await.is_err() {
            left.push(claim_id);
        }
    }
    left
}

/// Keeps undoing a never-sent settlement's record until the database answers for every claim
/// (then its nonce goes back; the claims stay `claimed`, and are released once their
/// authorizations expire, as any claim nobody finishes), or until the reconciler's turn would
/// come.
async fn undo_in_background(
    store: Store,
    verifier: Arc<dyn ChainBackend>,
    mut claim_ids: Vec<i64>,
    prepared: PreparedSettlement,
) {
    let started = std::time::Instant::now();
    while started.elapsed() < UNDO_BACKGROUND_FOR {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        claim_ids = undo_each(&store, &claim_ids, &prepared.transaction).await;
        if claim_ids.is_empty() {
            verifier.abandon(&prepared).await;
            tracing::info!(tx = %prepared.transaction, "a never-sent settlement's record is undone: nothing will be charged");
            return;
        }
    }
    tracing::error!(claims = ?claim_ids, tx = %prepared.transaction, "could not undo a never-sent settlement's record; the reconciler may send it");
}
