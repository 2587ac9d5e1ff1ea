//! Group commit for settlements: payments of one network that are ready to settle while earlier
//! ones are still being settled go out together, in one transaction, instead of one each.
//!
//! No timer: a payment that finds a free slot (fewer than `settlements_in_flight` settlements of
//! its network under way) is settled at once: alone by the single-payment path (`settle_claim`),
//! or with those that reached the queue in the same instant. Payments that arrive while every
//! slot is busy wait in the network's queue, and the next slot to free takes all of them (up to
//! the backend's `batch_capacity`) as one batch. So a quiet gateway settles exactly as without
//! batching, and a busy one pays one transaction's base cost, one settler nonce and two
//! database commits (mark, ledger) per batch instead of per payment.
//!
//! A batch keeps every promise the single path makes (see `settle.rs`): its transaction is
//! signed, then named on every member's claim in one database transaction, then sent; members
//! are charged only by their own authorization's use in the receipt. When nothing of the batch
//! can have moved (it was never sent, or it reverted as a whole), each member is settled alone
//! instead, so a batch never costs a payment that would have settled by itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::Instrument;

use super::settle::{settle_claim, undo_records};
use crate::payments::chain::{Attempt, ChainBackend, SettleError, Settlement, Verified};
use crate::store::{ClaimContext, Store, StoreError};

/// Settlements of one network under way at once (each a batch or a single payment) by default:
/// the network's `settlements_in_flight` (`ChainBackend::settlement_slots`).
pub const IN_FLIGHT: usize = crate::config::DEFAULT_SETTLEMENTS_IN_FLIGHT as usize;

/// One network's settlement queue each, started on first use.
#[derive(Default)]
pub struct Batchers {
    by_network: Mutex<HashMap<String, Queue>>,
}

/// A network's queue: its task's inbox, the settlement slots, and how many jobs are queued and
/// not yet taken into a settlement.
#[derive(Clone)]
struct Queue {
    tx: mpsc::UnboundedSender<Job>,
    slots: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
}

/// A claimed payment waiting to be settled, and where its outcome goes.
struct Job {
    claim_id: i64,
    verified: Verified,
    tenant: String,
    route: String,
    reply: oneshot::Sender<Result<Settlement, SettleError>>,
}

impl Job {
    fn ctx(&self) -> ClaimContext<'_> {
        ClaimContext {
            tenant: &self.tenant,
            route: &self.route,
        }
    }
}

impl Batchers {
    /// Settles one claimed payment and records it, as `settle_claim` does: alone when its
    /// network cannot batch or a slot is free, else in the next batch.
    pub async fn settle(
        &self,
        backend: &Arc<dyn ChainBackend>,
        store: &Store,
        claim_id: i64,
        verified: &Verified,
        ctx: &ClaimContext<'_>,
    ) -> Result<Settlement, SettleError> {
        if backend.batch_capacity().await <= 1 {
            return settle_claim(backend, store, claim_id, verified, ctx).await;
        }
        let queue = self.queue(backend, store, &verified.key.network);
        // A free slot and nobody waiting: settled at once in the caller's task (every caller
        // runs this in a task of its own, so a dropped request cannot cut it short), as the
        // queue's task would settle it alone, without the hops to it and back.
        if queue.waiting.load(Ordering::Acquire) == 0 {
            if let Ok(slot) = queue.slots.clone().try_acquire_owned() {
                let outcome = settle_claim(backend, store, claim_id, verified, ctx).await;
                drop(slot);
                return outcome;
            }
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            claim_id,
            verified: verified.clone(),
            tenant: ctx.tenant.to_string(),
            route: ctx.route.to_string(),
            reply,
        };
        queue.waiting.fetch_add(1, Ordering::AcqRel);
        if let Err(mpsc::error::SendError(_)) = queue.tx.send(job) {
            queue.waiting.fetch_sub(1, Ordering::AcqRel);
            // The queue's task is gone (its runtime stopped): nothing was done for this claim.
            return settle_claim(backend, store, claim_id, verified, ctx).await;
        }
        match answer.await {
            Ok(outcome) => outcome,
            // Only a panic in a settlement task gets here. Nothing is released on this: the
            // store refuses to release a claim that names a transaction, and the reconciler
            // finishes it.
            Err(_) => Err(SettleError::Unavailable(
                "the settlement task stopped".into(),
            )),
        }
    }

    /// The network's queue, its task started on first use (in the caller's runtime, the one
    /// whose store and RPC clients it uses).
    fn queue(&self, backend: &Arc<dyn ChainBackend>, store: &Store, network: &str) -> Queue {
        let mut queues = self.by_network.lock().expect("not poisoned");
        if let Some(q) = queues.get(network).filter(|q| !q.tx.is_closed()) {
            return q.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let queue = Queue {
            tx,
            slots: Arc::new(Semaphore::new(backend.settlement_slots().max(1))),
            waiting: Arc::new(AtomicUsize::new(0)),
        };
        tokio::spawn(
            run(backend.clone(), store.clone(), queue.clone(), rx)
                .instrument(tracing::info_span!("batcher", %network)),
        );
        queues.insert(network.to_string(), queue.clone());
        queue
    }
}

/// Takes jobs as slots free: one alone when it finds a slot free, all that waited (up to the
/// backend's capacity) when it had to wait.
async fn run(
    backend: Arc<dyn ChainBackend>,
    store: Store,
    shared: Queue,
    mut queue: mpsc::UnboundedReceiver<Job>,
) {
    // Only the senders the map holds keep the queue open; this task's own must not.
    let Queue { slots, waiting, .. } = shared;
    while let Some(first) = queue.recv().await {
        let slot = slots.clone().acquire_owned().await.expect("never closed");
        let capacity = backend.batch_capacity().await.max(1);
        let mut jobs = vec![first];
        while jobs.len() < capacity {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        waiting.fetch_sub(jobs.len(), Ordering::AcqRel);
        let (backend, store) = (backend.clone(), store.clone());
        tokio::spawn(async move {
            settle_jobs(&backend, &store, jobs).await;
            drop(slot);
        });
    }
}

/// Settles `jobs` (one alone, several as a batch) and answers each; returns when all are done.
async fn settle_jobs(backend: &Arc<dyn ChainBackend>, store: &Store, jobs: Vec<Job>) {
    if jobs.len() > 1 {
        if let Some(outcomes) = settle_batch(backend, store, &jobs).await {
            for (job, outcome) in jobs.into_iter().zip(outcomes) {
                // A request that went away still had its claim settled and recorded.
                let _ = job.reply.send(outcome);
            }
            return;
        }
    }
    if jobs.len() == 1 {
        // Alone: in this task, without one more.
        let job = jobs.into_iter().next().expect("one job");
        let outcome = settle_claim(backend, store, job.claim_id, &job.verified, &job.ctx()).await;
        let _ = job.reply.send(outcome);
        return;
    }
    // Each alone, all at once (the single path's nonce counter keeps them apart).
    let mut alone = tokio::task::JoinSet::new();
    for job in jobs {
        let (backend, store) = (backend.clone(), store.clone());
        alone.spawn(
            async move {
                let outcome =
                    settle_claim(&backend, &store, job.claim_id, &job.verified, &job.ctx()).await;
                let _ = job.reply.send(outcome);
            }
            .in_current_span(),
        );
    }
    while alone.join_next().await.is_some() {}
}

/// One transaction for all of `jobs`: each one's outcome, or `None` when nothing of the batch
/// can have moved and each should be settled alone.
async fn settle_batch(
    backend: &Arc<dyn ChainBackend>,
    store: &Store,
    jobs: &[Job],
) -> Option<Vec<Result<Settlement, SettleError>>> {
    let members: Vec<Verified> = jobs.iter().map(|j| j.verified.clone()).collect();
    let ids: Vec<i64> = jobs.iter().map(|j| j.claim_id).collect();
    let mut prepared = match backend.prepare_batch(&members).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(
                members = jobs.len(),
                "signing a batch settlement, settling each alone: {e}"
            );
            return None;
        }
    };
    if let Err(e) = store.mark_settling_batch(&ids, &prepared).await {
        tracing::warn!(members = jobs.len(), tx = %prepared.transaction, "recording a batch settlement failed, not sending it: {e}");
        // Never sent; undone as the single path undoes (see `settle_claim`), for every member.
        if !undo_records(store, backend, &ids, &prepared).await {
            let pending = SettleError::Pending {
                transaction: prepared.transaction.clone(),
                message: format!("recording the settlement: {e}"),
            };
            return Some(vec![Err(pending); jobs.len()]);
        }
        return match e {
            // A member's claim was finished meanwhile: the others go alone (that one refuses).
            StoreError::ClaimFinished(_) => None,
            e => {
                let e = SettleError::Unavailable(format!("recording the settlement: {e}"));
                Some(vec![Err(e); jobs.len()])
            }
        };
    }
    let members = &members;
    let landed = super::landing::land(
        backend,
        store,
        &ids,
        &mut prepared,
        Attempt::First,
        |p, attempt| async move { backend.submit_batch(members, &p, attempt).await },
    )
    .await;
    match landed {
        Ok(outcomes) => {
            let landed: Vec<_> = jobs
                .iter()
                .zip(&outcomes)
                .filter_map(|(j, o)| {
                    o.as_ref()
                        .ok()
                        .map(|s| (j.claim_id, &j.verified, s, j.ctx()))
                })
                .collect();
            if let Err(e) = store.record_settlements(&landed).await {
                // The money moved; every claim names the transaction, so the reconciler repairs
                // the ledger from it (by each payment's own authorization). Serving is right.
                tracing::error!(tx = %prepared.transaction, members = landed.len(), "batch settlement landed but was not recorded: {e}");
            }
            tracing::debug!(tx = %prepared.transaction, members = jobs.len(), landed = landed.len(), "batch settled");
            Some(outcomes)
        }
        // Nothing can have moved: never sent, or mined and reverted as a whole (every
        // authorization still unused). The claims go back to `claimed` where they still name
        // this transaction; each is then settled alone (and signed anew).
        Err(e) if e.nothing_sent() || matches!(e, SettleError::Failed { .. }) => {
            tracing::warn!(tx = %prepared.transaction, members = jobs.len(), "batch settlement did not go through, settling each alone: {e}");
            if e.nothing_sent() {
                for &id in &ids {
                    if let Err(db) = store.unmark_settling(id, &prepared.transaction).await {
                        tracing::warn!(
                            claim_id = id,
                            "un-marking an unsent batch settlement: {db}"
                        );
                    }
                }
            }
            None
        }
        // Maybe sent: every member stays `settling` on it; the reconciler finishes them.
        Err(e) => Some(vec![Err(e); jobs.len()]),
    }
}
