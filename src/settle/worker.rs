//! The deferred-settlement worker: a pingora background service that drains the durable queue.
//!
//! Each item is signed once and its transaction stored before it is sent; a retry re-sends the
//! same bytes (or just waits for their receipt), so a restart mid-settlement never pays twice.
//! Attempts back off exponentially and stop after `MAX_ATTEMPTS`, leaving the item `failed` for
//! an operator, with its last error; except while a sent transaction's outcome is unknown: that
//! one is sent again until it lands or its authorization has expired, never abandoned while it
//! might still move the money.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::store::{ClaimContext, LazyStore, QueuedSettlement, Store};
use crate::verify::{unix_now, Attempt, SettleError, Verifiers};

const MAX_ATTEMPTS: i64 = 8;
const BATCH: i64 = 64;
/// Settlements in flight at once; the settler's nonce lock serializes their broadcast anyway.
const MAX_IN_FLIGHT: usize = 64;
const IDLE_POLL: Duration = Duration::from_millis(500);
/// How long a worker owns a queue item it took: longer than one attempt can take (a receipt
/// wait of 60 s plus RPC timeouts), so another instance only takes it after this one died.
const ITEM_LEASE_SECONDS: i64 = 180;

pub struct SettlementWorker {
    pub store: Arc<LazyStore>,
    pub verifiers: Verifiers,
    /// Rung by the proxy when it queues a settlement, so the worker starts at once.
    pub wakeup: Arc<Notify>,
    /// Claims being settled right now: each item runs as its own task (one waiting a minute
    /// for a receipt must not hold back the others), and never twice at once.
    pub in_flight: Arc<Mutex<HashSet<i64>>>,
    pub metrics: Arc<Metrics>,
    /// This instance, as named in queue leases.
    pub holder: String,
}

impl SettlementWorker {
    pub fn new(
        store: Arc<LazyStore>,
        verifiers: Verifiers,
        wakeup: Arc<Notify>,
        metrics: Arc<Metrics>,
        holder: String,
    ) -> Self {
        SettlementWorker {
            store,
            verifiers,
            wakeup,
            in_flight: Default::default(),
            metrics,
            holder,
        }
    }

    /// Starts a task for every due item not already in flight; returns how many it started.
    pub async fn dispatch(&self, store: &Store) -> usize {
        let due = match store.due(BATCH).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("deferred settlements: reading the queue: {e}");
                return 0;
            }
        };
        let mut started = 0;
        for item in due {
            if self.in_flight.lock().expect("not poisoned").len() >= MAX_IN_FLIGHT
                || !self
                    .in_flight
                    .lock()
                    .expect("not poisoned")
                    .insert(item.claim_id)
            {
                continue;
            }
            // Another instance sharing the database may be working on it: take it first.
            let until = unix_now() as i64 + ITEM_LEASE_SECONDS;
            match store.take_queued(item.claim_id, &self.holder, until).await {
                Ok(true) => {}
                Ok(false) => {
                    self.in_flight
                        .lock()
                        .expect("not poisoned")
                        .remove(&item.claim_id);
                    continue;
                }
                Err(e) => {
                    self.in_flight
                        .lock()
                        .expect("not poisoned")
                        .remove(&item.claim_id);
                    tracing::warn!(claim_id = item.claim_id, "taking a queued settlement: {e}");
                    continue;
                }
            }
            started += 1;
            let store = store.clone();
            let verifiers = self.verifiers.clone();
            let in_flight = self.in_flight.clone();
            let wakeup = self.wakeup.clone();
            let metrics = self.metrics.clone();
            tokio::spawn(async move {
                let id = item.claim_id;
                let network = item.verified.key.network.clone();
                let started = std::time::Instant::now();
                if let Some(outcome) = process(&store, &verifiers, item).await {
                    metrics
                        .settlements
                        .with_label_values(&[&network, "deferred", outcome])
                        .inc();
                    if outcome == "settled" {
                        metrics
                            .settlement_seconds
                            .with_label_values(&[&network])
                            .observe(started.elapsed().as_secs_f64());
                    }
                }
                in_flight.lock().expect("not poisoned").remove(&id);
                // A slot is free: look at the queue again.
                wakeup.notify_one();
            });
        }
        started
    }
}

/// Attempts one queued settlement; returns its final outcome (settled, failed) once it has one.
async fn process(
    store: &Store,
    verifiers: &Verifiers,
    item: QueuedSettlement,
) -> Option<&'static str> {
    let id = item.claim_id;
    let v = &item.verified;
    let ctx = ClaimContext {
        tenant: &item.tenant,
        route: &item.route,
    };
    let Some(verifier) = verifiers.get_str(&v.key.network) else {
        let why = format!("no verifier for {}", v.key.network);
        let _ = store.mark_failed(id, &why).await;
        let _ = store.queue_finish(id, "failed", Some(&why)).await;
        return Some("failed");
    };
    let (prepared, attempt) = match &item.prepared {
        // Sent before (by an earlier attempt or an earlier life of the gateway): send it again.
        Some(p) => (p.clone(), Attempt::Again),
        None => {
            if v.valid_before <= unix_now() {
                let why = "the authorization expired before it could be settled";
                let _ = store.mark_failed(id, why).await;
                let _ = store.queue_finish(id, "failed", Some(why)).await;
                return Some("failed");
            }
            match verifier.prepare(v).await {
                Ok(p) => {
                    if let Err(e) = store.queue_prepared(id, &p).await {
                        // Never sent: give its nonce back so no later settlement waits behind it.
                        verifier.abandon(&p).await;
                        tracing::warn!(claim_id = id, "saving a prepared settlement: {e}");
                        return None;
                    }
                    (p, Attempt::First)
                }
                Err(e) => return retry(store, &item, &e.to_string(), Retry::Fresh).await,
            }
        }
    };
    match verifier.submit(v, &prepared, attempt).await {
        Ok(s) => {
            if let Err(e) = store.record_settlement(id, v, &s, &ctx).await {
                tracing::error!(claim_id = id, tx = %s.transaction, "deferred settlement landed but was not recorded: {e}");
                return None;
            }
            let _ = store.queue_finish(id, "done", None).await;
            tracing::info!(claim_id = id, tx = %s.transaction, "deferred settlement landed");
            Some("settled")
        }
        Err(SettleError::Failed {
            reason, message, ..
        }) => {
            let why = format!("{reason}: {message}");
            let _ = store.mark_failed(id, &why).await;
            let _ = store.queue_finish(id, "failed", Some(&why)).await;
            tracing::warn!(claim_id = id, "deferred settlement failed: {why}");
            Some("failed")
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

async fn retry(
    store: &Store,
    item: &QueuedSettlement,
    error: &str,
    next: Retry,
) -> Option<&'static str> {
    let attempts = item.attempts + 1;
    let in_flight =
        next == Retry::SameTransaction && unix_now() <= item.verified.valid_before + EXPIRY_MARGIN;
    if attempts >= MAX_ATTEMPTS && !in_flight {
        let why = format!("gave up after {attempts} attempts: {error}");
        let _ = store.mark_failed(item.claim_id, &why).await;
        let _ = store
            .queue_finish(item.claim_id, "failed", Some(&why))
            .await;
        tracing::error!(claim_id = item.claim_id, "{why}");
        return Some("failed");
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
    None
}

#[async_trait]
impl BackgroundService for SettlementWorker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.store.get().await {
                Ok(store) => {
                    self.dispatch(store).await;
                }
                Err(e) => tracing::warn!("deferred settlements: database unavailable: {e}"),
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = self.wakeup.notified() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
            }
        }
    }
}
