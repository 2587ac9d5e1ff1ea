//! Group commit for claims on SQLite. SQLite has one writer: concurrent claims only queue on its
//! lock (sleeping in its busy handler between tries), and each commit pays its own fsync. So
//! claims are handed to one task that takes every claim waiting and makes them in ONE
//! transaction, each in a savepoint of its own (a duplicate or a quota refusal is rolled back
//! alone), with one commit. A claim that finds the task idle is committed at once, alone: no
//! timer, no added latency. A claim is answered only after its commit, so an answered claim is
//! as durable as before; when the shared commit fails, every claim in it fails (as if never
//! made), as a single claim's failed commit did.
//!
//! A group whose claims may all be relaxed (`durability.rs`) commits on the relaxed connection;
//! one synced claim among them syncs the lot.
//!
//! Postgres takes concurrent commits itself, and several instances share it: claims there stay
//! one transaction each.

use sqlx::{Acquire, AnyPool};
use tokio::sync::{mpsc, oneshot};

use super::{claim_in, now, ClaimContext, ClaimOutcome, Durability, StoreError};
use crate::payments::chain::Verified;

/// The most claims one shared transaction makes.
const MAX_GROUP: usize = 256;

/// The claims waiting for the committing task.
#[derive(Clone)]
pub(super) struct ClaimQueue {
    tx: mpsc::UnboundedSender<Job>,
}

struct Job {
    verified: Verified,
    tenant: String,
    route: String,
    limit: Option<i64>,
    durability: Durability,
    reply: oneshot::Sender<Result<ClaimOutcome, StoreError>>,
}

impl ClaimQueue {
    /// Starts the committing task in the current runtime (`None` outside one).
    pub(super) fn start(pool: AnyPool, relaxed: AnyPool) -> Option<ClaimQueue> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (tx, rx) = mpsc::unbounded_channel();
        runtime.spawn(run(pool, relaxed, rx));
        Some(ClaimQueue { tx })
    }

    /// Makes the claim in the next shared transaction; `None` when the task is gone (its
    /// runtime stopped): nothing was done, and the caller claims on its own.
    pub(super) async fn claim(
        &self,
        v: &Verified,
        ctx: &ClaimContext<'_>,
        limit: Option<i64>,
        durability: Durability,
    ) -> Option<Result<ClaimOutcome, StoreError>> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            verified: v.clone(),
            tenant: ctx.tenant.to_string(),
            route: ctx.route.to_string(),
            limit,
            durability,
            reply,
        };
        self.tx.send(job).ok()?;
        // A task that stopped mid-group never committed this claim (its transaction rolled back
        // with it): the caller's own claim is the only one.
        answer.await.ok()
    }
}

async fn run(pool: AnyPool, relaxed: AnyPool, mut queue: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = queue.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let on = if jobs.iter().all(|j| j.durability == Durability::Relaxed) {
            &relaxed
        } else {
            &pool
        };
        match commit_group(on, &jobs).await {
            Ok(outcomes) => {
                for (job, outcome) in jobs.into_iter().zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                let why = e.to_string();
                tracing::warn!(
                    claims = jobs.len(),
                    "a shared claim transaction failed: {why}"
                );
                for job in jobs {
                    let _ = job.reply.send(Err(StoreError::Group(why.clone())));
                }
            }
        }
    }
}

/// Every job's claim in one transaction, each in its own savepoint; one commit. Any database
/// error fails the lot (nothing of it is committed).
async fn commit_group(pool: &AnyPool, jobs: &[Job]) -> Result<Vec<ClaimOutcome>, StoreError> {
    let t = now();
    let mut tx = pool.begin().await?;
    if let [job] = jobs {
        // A claim alone (every claim of a sequential client): the transaction is its own, and
        // savepoints would only add two round trips to the connection's thread.
        let ctx = ClaimContext {
            tenant: &job.tenant,
            route: &job.route,
        };
        let outcome = claim_in(&mut tx, &job.verified, &ctx, job.limit, t).await?;
        match outcome {
            ClaimOutcome::Claimed(_) => tx.commit().await?,
            _ => tx.rollback().await?,
        }
        return Ok(vec![outcome]);
    }
    let mut outcomes = Vec::with_capacity(jobs.len());
    for job in jobs {
        let ctx = ClaimContext {
            tenant: &job.tenant,
            route: &job.route,
        };
        let mut savepoint = tx.begin().await?;
        let outcome = claim_in(&mut savepoint, &job.verified, &ctx, job.limit, t).await?;
        match outcome {
            ClaimOutcome::Claimed(_) => savepoint.commit().await?,
            _ => savepoint.rollback().await?,
        }
        outcomes.push(outcome);
    }
    tx.commit().await?;
    Ok(outcomes)
}
