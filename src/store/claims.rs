//! Group commit for claims on SQLite. SQLite has one writer: concurrent claims only queue on its
//! lock (sleeping in its busy handler between tries), and each commit pays its own fsync. So
//! claims are handed to one task that takes every claim waiting and makes them in ONE
//! transaction, each in a savepoint of its own (a duplicate or a quota refusal is rolled back
//! alone), with one commit. A claim that finds the task idle is committed at once, alone: no
//! timer, no added latency. A claim is answered only after its commit, so an answered claim is
//! as durable as before; when the shared commit fails, every claim in it fails (as if never
//! made), as a single claim's failed commit did.
//!
//! A claim alone (every claim of a sequential client) needs no savepoint: it is one script
//! (`script.rs`, `claim_alone`), the payer's exposure read in it for the overdraw guard, and a
//! `COMMIT`: two round trips to SQLite's connection thread. The task holds its connections
//! between groups (a pooled one costs a third round trip, sqlx's ping on its way back).
//!
//! A group whose claims may all be relaxed (`durability.rs`) commits on the relaxed connection;
//! one synced claim among them syncs the lot.
//!
//! Postgres takes concurrent commits itself, and several instances share it: claims there stay
//! one transaction each.

use sqlx::{Acquire, AnyConnection, AnyPool, Connection, Row};
use tokio::sync::{mpsc, oneshot};

use super::ledger::{write_ledger_script, LedgerBinds};
use super::script::{self, ScriptConn};
use super::tenants::period_of;
use super::{
    claim_in, exposure_sql, mark_settling_on, now, ClaimContext, ClaimOutcome, Durability,
    ExposureQuery, PayerExposure, StoreError,
};
use crate::payments::chain::{PreparedSettlement, Verified};

/// The most claims one shared transaction makes.
const MAX_GROUP: usize = 256;

/// The claims waiting for the committing task, and the other writes of a payment it makes on
/// the connections it holds: the settlement record (`Store::mark_settling`) and the ledger row
/// (`Store::record_settlement`), which on a pooled connection would each pay a third round trip,
/// sqlx's ping on the connection's way back to the pool.
#[derive(Clone)]
pub(super) struct ClaimQueue {
    tx: mpsc::UnboundedSender<Msg>,
}

enum Msg {
    Claim(Job),
    Write(Write),
}

/// A payment's other writes, each made alone on the connection it needs.
enum Write {
    /// `mark_settling_on` on the synced connection.
    Mark {
        claim_id: i64,
        prepared: PreparedSettlement,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// The ledger script on the relaxed connection.
    Ledger {
        binds: LedgerBinds,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

struct Job {
    verified: Verified,
    tenant: String,
    route: String,
    limit: Option<i64>,
    durability: Durability,
    exposure: Option<ExposureQuery>,
    reply: oneshot::Sender<Result<Claimed, StoreError>>,
}

/// A claim's outcome, and the payer's exposure when it was read with it.
type Claimed = (ClaimOutcome, Option<PayerExposure>);

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
        exposure: Option<ExposureQuery>,
    ) -> Option<Result<Claimed, StoreError>> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            verified: v.clone(),
            tenant: ctx.tenant.to_string(),
            route: ctx.route.to_string(),
            limit,
            durability,
            exposure,
            reply,
        };
        self.tx.send(Msg::Claim(job)).ok()?;
        // A task that stopped mid-group never committed this claim (its transaction rolled back
        // with it): the caller's own claim is the only one.
        answer.await.ok()
    }

    /// `mark_settling` on the task's synced connection; `None` when the task is gone before
    /// taking it (nothing was written). An answer lost after it was taken is an error: the
    /// write may have landed, and the caller undoes it as any failed record.
    pub(super) async fn mark(
        &self,
        claim_id: i64,
        prepared: &PreparedSettlement,
    ) -> Option<Result<(), StoreError>> {
        let (reply, answer) = oneshot::channel();
        let msg = Msg::Write(Write::Mark {
            claim_id,
            prepared: prepared.clone(),
            reply,
        });
        self.tx.send(msg).ok()?;
        Some(answer.await.unwrap_or_else(|_| Err(gone())))
    }

    /// The ledger write on the task's relaxed connection; the row back when the task is gone
    /// before taking it (nothing was written).
    pub(super) async fn ledger(
        &self,
        binds: LedgerBinds,
    ) -> Result<Result<(), StoreError>, LedgerBinds> {
        let (reply, answer) = oneshot::channel();
        let msg = Msg::Write(Write::Ledger { binds, reply });
        if let Err(mpsc::error::SendError(msg)) = self.tx.send(msg) {
            let Msg::Write(Write::Ledger { binds, .. }) = msg else {
                unreachable!("sent a ledger write")
            };
            return Err(binds);
        }
        Ok(answer.await.unwrap_or_else(|_| Err(gone())))
    }
}

fn gone() -> StoreError {
    StoreError::Group("the database's writing task stopped".into())
}

async fn run(pool: AnyPool, relaxed: AnyPool, mut queue: mpsc::UnboundedReceiver<Msg>) {
    // The connections claims are made on (synced, relaxed), held by this task between groups:
    // a pooled connection is pinged on its way back to the pool after every use, a round trip
    // to its thread, and nothing else uses these. Detached from their pools, which open others
    // for everyone else. One that failed is dropped (closed: SQLite rolls back whatever it
    // left open) and the next use takes a fresh one.
    let mut synced: Option<AnyConnection> = None;
    let mut relaxed_held: Option<AnyConnection> = None;
    while let Some(first) = queue.recv().await {
        let mut jobs = Vec::new();
        let mut writes = Vec::new();
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Claim(job) => jobs.push(job),
                Msg::Write(write) => writes.push(write),
            }
            if jobs.len() + writes.len() < MAX_GROUP {
                next = queue.try_recv().ok();
            }
        }
        if !jobs.is_empty() {
            let (slot, from) = if jobs.iter().all(|j| j.durability == Durability::Relaxed) {
                (&mut relaxed_held, &relaxed)
            } else {
                (&mut synced, &pool)
            };
            let outcomes = match fill(slot, from).await {
                Ok(()) => commit_group(slot, &jobs).await,
                Err(e) => Err(e),
            };
            match outcomes {
                Ok(outcomes) => {
                    for (job, outcome) in jobs.into_iter().zip(outcomes) {
                        let _ = job.reply.send(Ok(outcome));
                    }
                }
                Err(e) => {
                    *slot = None;
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
        // Other payments' writes (each payment's come one after the other, each answered
        // before the next is asked), one at a time as they came.
        for write in writes {
            match write {
                Write::Mark {
                    claim_id,
                    prepared,
                    reply,
                } => {
                    let done = match fill(&mut synced, &pool).await {
                        Ok(()) => {
                            let conn = synced.as_mut().expect("filled");
                            mark_settling_on(conn, claim_id, &prepared).await
                        }
                        Err(e) => Err(e),
                    };
                    // A refusal (the claim finished) leaves the connection as it was.
                    if matches!(done, Err(StoreError::Db(_))) {
                        synced = None;
                    }
                    let _ = reply.send(done);
                }
                Write::Ledger { binds, reply } => {
                    let done = match fill(&mut relaxed_held, &relaxed).await {
                        Ok(()) => {
                            write_ledger_script(ScriptConn::held(&mut relaxed_held), &binds).await
                        }
                        Err(e) => Err(e),
                    };
                    if done.is_err() {
                        relaxed_held = None;
                    }
                    let _ = reply.send(done);
                }
            }
        }
    }
}

/// A connection from `from` in `slot`, detached from the pool, unless it holds one.
async fn fill(slot: &mut Option<AnyConnection>, from: &AnyPool) -> Result<(), StoreError> {
    if slot.is_none() {
        *slot = Some(from.acquire().await?.detach());
    }
    Ok(())
}

/// Every job's claim in one transaction, each in its own savepoint; one commit, on the
/// connection in `slot`. Any database error fails the lot (nothing of it is committed). A claim
/// alone is `claim_alone`'s.
async fn commit_group(
    slot: &mut Option<AnyConnection>,
    jobs: &[Job],
) -> Result<Vec<Claimed>, StoreError> {
    let t = now();
    if let [job] = jobs {
        return Ok(vec![claim_alone(ScriptConn::held(slot), job, t).await?]);
    }
    let conn = slot.as_mut().expect("a held connection");
    let mut tx = Connection::begin(conn).await?;
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
        // The exposure is read after the commit, where every claim of the group is seen.
        outcomes.push((outcome, None));
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// `claim_in`'s two statements, and the payer's exposure after them, as one script
/// (`script.rs`) opening the transaction; then `COMMIT` (claimed) or `ROLLBACK`: two round trips
/// to SQLite's connection thread where `BEGIN`, the statements one by one, `COMMIT` and the
/// exposure read after it took five. Each row says what it is in its first column: no `claim`
/// row is a replay, no `count` row a tenant past its limit, and either is rolled back whole.
async fn claim_alone(mut conn: ScriptConn<'_>, job: &Job, t: i64) -> Result<Claimed, StoreError> {
    let period = period_of(t);
    let mut sql = String::from(concat!(
        "BEGIN;\n",
        claim_insert!(),
        " RETURNING 'claim', id;
         INSERT INTO usage_counters (tenant_id, period, verified)
         SELECT $5, $10, 1 WHERE $11 > 0
         ON CONFLICT (tenant_id, period) DO UPDATE SET verified = usage_counters.verified + 1
         WHERE usage_counters.verified < $11
         RETURNING 'count', verified;"
    ));
    if let Some(exposure) = job.exposure {
        sql.push_str("SELECT kind, amount FROM (");
        sql.push_str(&exposure_sql(exposure.limit, "$12"));
        sql.push_str(") x;");
    }
    sql.push_str(script::END);
    let v = &job.verified;
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&v.key.network)
        .bind(&v.key.asset)
        .bind(&v.key.payer)
        .bind(&v.key.nonce)
        .bind(&job.tenant)
        .bind(&job.route)
        .bind(&v.amount)
        .bind(v.expires_at.min(i64::MAX as u64) as i64)
        .bind(t)
        .bind(&period)
        .bind(job.limit.unwrap_or(i64::MAX))
        .bind(job.exposure.map_or(0, |e| e.since_ms))
        .fetch_all(conn.conn())
        .await;
    let read = rows.map_err(StoreError::from).and_then(|rows| {
        script::ran_whole(&rows)?;
        let mut id = None;
        let mut counted = false;
        for r in &rows {
            match r.try_get::<String, _>(0)?.as_str() {
                "claim" => id = Some(r.try_get::<i64, _>(1)?),
                "count" => counted = true,
                _ => {}
            }
        }
        let outcome = match (id, counted) {
            (None, _) => ClaimOutcome::Duplicate,
            (Some(_), false) => ClaimOutcome::QuotaExceeded,
            (Some(id), true) => ClaimOutcome::Claimed(id),
        };
        let exposure = match (outcome, job.exposure) {
            (ClaimOutcome::Claimed(_), Some(_)) => {
                let others = rows.iter().filter(|r| {
                    r.try_get::<String, _>(0)
                        .is_ok_and(|k| k != "claim" && k != "count" && k != "end")
                });
                Some(PayerExposure::of_rows(others, 0, 1)?)
            }
            _ => None,
        };
        Ok((outcome, exposure))
    });
    let claimed = match read {
        Ok(claimed) => claimed,
        Err(e) => {
            conn.ended(false).await;
            return Err(e);
        }
    };
    // With `END` too: a bare `COMMIT` whose connection thread died would answer nothing and
    // look done.
    let end = match claimed.0 {
        ClaimOutcome::Claimed(_) => "COMMIT; SELECT 'end';",
        _ => "ROLLBACK; SELECT 'end';",
    };
    let ended = sqlx::query(end)
        .fetch_all(conn.conn())
        .await
        .map_err(StoreError::from)
        .and_then(|rows| script::ran_whole(&rows));
    conn.ended(ended.is_ok()).await;
    match claimed.0 {
        // Claimed only once committed.
        ClaimOutcome::Claimed(_) => ended.map(|_| claimed),
        // A replay or a refusal whose ROLLBACK failed: nothing of it can be committed (its
        // connection is closed, which rolls the transaction back), and the answer stands.
        _ => Ok(claimed),
    }
}
