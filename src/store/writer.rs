//! SQLite's one writer. SQLite lets one connection write at a time: a write on any other waits
//! for its lock, asleep in SQLite's busy handler (1, 2, 5, 10 ms... between tries), and every
//! commit pays its own fsync. So a payment's writes, its claim, its settlement record
//! (`mark_settling`, a batch's `mark_settling_batch`) and its ledger row (`record_settlement`,
//! a batch's `record_settlements`), go to one task, which takes everything waiting and writes it
//! in ONE transaction with one commit (`round.rs`). Nothing waits for a timer: a write that finds
//! the task idle is made at once, alone, exactly as it would be without the task.
//!
//! An answer is sent only after its commit, so an answered write is as durable as before; when
//! the shared transaction fails, every write in it fails (as if never made), as a lone write's
//! failed commit did. A round holding any synced write (a synced claim, a settlement record)
//! commits on the synced connection and syncs the lot; one of relaxed writes only (`before`
//! claims, ledger rows: `durability.rs`) on the relaxed connection.
//!
//! The task holds its two connections between rounds, detached from their pools: a pooled one is
//! pinged on its way back to the pool, one more round trip to its thread. One that failed is
//! dropped (closed: SQLite rolls back whatever it left open) and the next round opens another.
//! Should the task be gone (its runtime stopped), callers write on the pools as before.
//!
//! Postgres takes concurrent commits itself, and several instances share it: writes there stay
//! one transaction each, on the pool.

use sqlx::{AnyConnection, AnyPool};
use tokio::sync::{mpsc, oneshot};

use super::ledger::LedgerBinds;
use super::round::Round;
use super::{ClaimContext, ClaimOutcome, Durability, ExposureQuery, PayerExposure, StoreError};
use crate::payments::chain::{PreparedSettlement, Verified};

/// The most writes one round takes.
const MAX_ROUND: usize = 256;

/// The writing task's inbox.
#[derive(Clone)]
pub(super) struct Writer {
    tx: mpsc::UnboundedSender<Msg>,
}

/// One write waiting for the task.
pub(super) enum Msg {
    Claim(Box<ClaimJob>),
    /// `mark_settling` for each claim (one, or a batch's: all of them or none), synced.
    Mark {
        claim_ids: Vec<i64>,
        prepared: PreparedSettlement,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Ledger rows (one payment's, or a batch's landed members'), relaxed.
    Ledger {
        rows: Vec<LedgerBinds>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

/// A claim to make (`claim_in`'s statements) and where its answer goes.
pub(super) struct ClaimJob {
    pub verified: Verified,
    pub tenant: String,
    pub route: String,
    pub limit: Option<i64>,
    pub durability: Durability,
    pub exposure: Option<ExposureQuery>,
    pub reply: oneshot::Sender<Result<Claimed, StoreError>>,
}

/// A claim's outcome, and the payer's exposure when it was read with it.
pub(super) type Claimed = (ClaimOutcome, Option<PayerExposure>);

impl Writer {
    /// Starts the writing task in the current runtime (`None` outside one).
    pub(super) fn start(pool: AnyPool, relaxed: AnyPool) -> Option<Writer> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (tx, rx) = mpsc::unbounded_channel();
        runtime.spawn(run(pool, relaxed, rx));
        Some(Writer { tx })
    }

    /// Makes the claim in the next round; `None` when the task is gone (its runtime stopped):
    /// nothing was done, and the caller claims on its own.
    pub(super) async fn claim(
        &self,
        v: &Verified,
        ctx: &ClaimContext<'_>,
        limit: Option<i64>,
        durability: Durability,
        exposure: Option<ExposureQuery>,
    ) -> Option<Result<Claimed, StoreError>> {
        let (reply, answer) = oneshot::channel();
        let job = ClaimJob {
            verified: v.clone(),
            tenant: ctx.tenant.to_string(),
            route: ctx.route.to_string(),
            limit,
            durability,
            exposure,
            reply,
        };
        self.tx.send(Msg::Claim(Box::new(job))).ok()?;
        // The task stopped (its runtime did) before answering: the caller claims on its own. A
        // round cut short never committed; one stopped at its `COMMIT` may have, and the
        // caller's claim is then refused as a replay: never claimed twice, and an unanswered
        // claim is released when its authorization expires.
        answer.await.ok()
    }

    /// `mark_settling` (one claim) or `mark_settling_batch` in the next round; `None` when the
    /// task is gone before taking it (nothing was written). An answer lost after it was taken
    /// is an error: the write may have landed, and the caller undoes it as any failed record.
    pub(super) async fn mark(
        &self,
        claim_ids: &[i64],
        prepared: &PreparedSettlement,
    ) -> Option<Result<(), StoreError>> {
        let (reply, answer) = oneshot::channel();
        let msg = Msg::Mark {
            claim_ids: claim_ids.to_vec(),
            prepared: prepared.clone(),
            reply,
        };
        self.tx.send(msg).ok()?;
        Some(answer.await.unwrap_or_else(|_| Err(gone())))
    }

    /// Ledger rows in the next round; the rows back when the task is gone before taking them
    /// (nothing was written).
    pub(super) async fn ledger(
        &self,
        rows: Vec<LedgerBinds>,
    ) -> Result<Result<(), StoreError>, Vec<LedgerBinds>> {
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError(msg)) = self.tx.send(Msg::Ledger { rows, reply }) {
            let Msg::Ledger { rows, .. } = msg else {
                unreachable!("sent a ledger write")
            };
            return Err(rows);
        }
        Ok(answer.await.unwrap_or_else(|_| Err(gone())))
    }
}

fn gone() -> StoreError {
    StoreError::Group("the database's writing task stopped".into())
}

async fn run(pool: AnyPool, relaxed: AnyPool, mut queue: mpsc::UnboundedReceiver<Msg>) {
    let mut synced: Option<AnyConnection> = None;
    let mut relaxed_held: Option<AnyConnection> = None;
    while let Some(first) = queue.recv().await {
        let mut round = Round::default();
        round.add(first);
        while round.len() < MAX_ROUND {
            match queue.try_recv() {
                Ok(msg) => round.add(msg),
                Err(_) => break,
            }
        }
        let (slot, from) = if round.synced() {
            (&mut synced, &pool)
        } else {
            (&mut relaxed_held, &relaxed)
        };
        if slot.is_none() {
            match from.acquire().await {
                Ok(conn) => *slot = Some(conn.detach()),
                Err(e) => {
                    round.fail(e.into());
                    continue;
                }
            }
        }
        round.write(slot).await;
    }
}
