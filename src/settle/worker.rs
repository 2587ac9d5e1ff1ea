//! The deferred-settlement worker: a pingora background service that drains the durable queue.
//! It only schedules: takes due items (leased, so two instances never work on one), runs each as
//! its own task, and records metrics; each attempt itself is `payments::settle_queued`. First
//! attempts due together on one network go out as one batch (`payments::settle_queued_batch`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::payments::chain::{unix_now, ChainBackends};
use crate::payments::{settle_queued, settle_queued_batch};
use crate::store::{LazyStore, QueuedSettlement, Store};

const BATCH: i64 = 64;
/// Settlements in flight at once; the settler's nonce lock serializes their broadcast anyway.
const MAX_IN_FLIGHT: usize = 64;
const IDLE_POLL: Duration = Duration::from_millis(500);
/// How long a worker owns a queue item it took: longer than one attempt can take (a receipt
/// wait of 60 s plus RPC timeouts), so another instance only takes it after this one died.
const ITEM_LEASE_SECONDS: i64 = 180;
/// How often the queue's depth and age are read for the metrics.
const STATS_EVERY: Duration = Duration::from_secs(5);

pub struct SettlementWorker {
    pub store: Arc<LazyStore>,
    pub backends: ChainBackends,
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
        backends: ChainBackends,
        wakeup: Arc<Notify>,
        metrics: Arc<Metrics>,
        holder: String,
    ) -> Self {
        SettlementWorker {
            store,
            backends,
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
        let mut taken = Vec::new();
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
            taken.push(item);
        }
        let started = taken.len();
        for group in self.groups(taken).await {
            let store = store.clone();
            let backends = self.backends.clone();
            let in_flight = self.in_flight.clone();
            let wakeup = self.wakeup.clone();
            let metrics = self.metrics.clone();
            tokio::spawn(async move {
                let network = group[0].verified.key.network.clone();
                let started = std::time::Instant::now();
                let outcomes = match backends.get_str(&network).cloned() {
                    Some(verifier) if group.len() > 1 => {
                        settle_queued_batch(&store, &backends, &verifier, group).await
                    }
                    _ => {
                        let mut outcomes = Vec::new();
                        for item in group {
                            let id = item.claim_id;
                            outcomes.push((id, settle_queued(&store, &backends, item).await));
                        }
                        outcomes
                    }
                };
                for (id, outcome) in outcomes {
                    if let Some(outcome) = outcome.label() {
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
                }
                // A slot is free: look at the queue again.
                wakeup.notify_one();
            });
        }
        started
    }

    /// What runs as one task: first attempts of one network together, up to what one of its
    /// transactions can carry (`batch_capacity`: 1 where it does not batch); every other item
    /// alone (a retry sends its own stored transaction again).
    async fn groups(&self, items: Vec<QueuedSettlement>) -> Vec<Vec<QueuedSettlement>> {
        let mut groups = Vec::new();
        let mut fresh: HashMap<String, Vec<QueuedSettlement>> = HashMap::new();
        for item in items {
            if item.prepared.is_none() {
                fresh
                    .entry(item.verified.key.network.clone())
                    .or_default()
                    .push(item);
            } else {
                groups.push(vec![item]);
            }
        }
        for (network, items) in fresh {
            let capacity = match self.backends.get_str(&network) {
                Some(b) => b.batch_capacity().await.max(1),
                None => 1,
            };
            let mut items = items.into_iter().peekable();
            while items.peek().is_some() {
                groups.push(items.by_ref().take(capacity).collect());
            }
        }
        groups
    }

    /// Publishes the queue's depth and the age of its oldest item.
    pub async fn publish_stats(&self, store: &Store) {
        match store.queue_stats().await {
            Ok((depth, oldest)) => {
                let ops = &self.metrics.ops;
                ops.queue_depth.set(depth);
                let age = oldest.map_or(0, |t| (unix_now() as i64 - t).max(0));
                ops.queue_oldest_age.set(age as f64);
            }
            Err(e) => tracing::debug!("deferred settlements: reading the queue's size: {e}"),
        }
    }
}

#[async_trait]
impl BackgroundService for SettlementWorker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut stats_at: Option<std::time::Instant> = None;
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.store.get().await {
                Ok(store) => {
                    self.dispatch(store).await;
                    if stats_at.is_none_or(|t| t.elapsed() >= STATS_EVERY) {
                        self.publish_stats(store).await;
                        stats_at = Some(std::time::Instant::now());
                    }
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
