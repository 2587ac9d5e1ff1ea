//! One round of SQLite's writer (`writer.rs`): every write waiting, in one transaction and one
//! commit, in as few round trips to the connection's thread as its answers allow (each is two
//! thread wake-ups, and under load a wait for a core: they, not the statements, were most of a
//! round's time).
//!
//! - Claims, each a script (`script.rs`): `SAVEPOINT`, the claim's insert, its month's count,
//!   the payer's exposure when asked (the overdraw guard's read: in the claim's transaction,
//!   after its insert, so it sees every claim committed before and every claim of the round
//!   before it; a claim after it sees it, as SQLite's one writer orders claims alone). Its
//!   outcome decides how its savepoint ends (a replay or a quota refusal is rolled back alone),
//!   and that ending opens the next claim's script: one round trip a claim.
//! - Settlement records: a claim's one `UPDATE`, which changes nothing when it refuses; a batch's
//!   one `UPDATE` of all its claims, in a savepoint (a finished claim refuses its batch only).
//! - Ledger rows: one insert and one update per settlement transaction (`write_rows_in`).
//!
//! Then `COMMIT` (`ROLLBACK` when nothing is to be kept: replays and refusals only), whose end
//! row (`script::END`) says it ran. Nothing is answered before it. A lone write costs what it
//! did alone: a claim's script and its end (two round trips), a record's one statement
//! committed on its own, a payment's ledger script (`LEDGER_SCRIPT`). A database error in any
//! write fails the round's every write (none is kept): a claim then answers 503 and is made
//! again by its client's retry, a record refused is never sent, a ledger row is written again
//! by the reconciler.

use sqlx::{AnyConnection, Row};
use tokio::sync::oneshot;

use super::ledger::{write_ledger_script, write_rows_in, LedgerBinds};
use super::script::{self, ScriptConn};
use super::tenants::period_of;
use super::writer::{ClaimJob, Claimed, Msg};
use super::{
    exposure_sql, mark_batch_on, mark_settling_on, now, AnyQuery, ClaimOutcome, Durability,
    PayerExposure, StoreError,
};
use crate::payments::chain::PreparedSettlement;

type Reply = oneshot::Sender<Result<(), StoreError>>;

/// The writes one round makes.
#[derive(Default)]
pub(super) struct Round {
    claims: Vec<ClaimJob>,
    marks: Vec<(Vec<i64>, PreparedSettlement, Reply)>,
    ledgers: Vec<(Vec<LedgerBinds>, Reply)>,
}

impl Round {
    pub(super) fn add(&mut self, msg: Msg) {
        match msg {
            Msg::Claim(job) => self.claims.push(*job),
            Msg::Mark {
                claim_ids,
                prepared,
                reply,
            } => self.marks.push((claim_ids, prepared, reply)),
            Msg::Ledger { rows, reply } => self.ledgers.push((rows, reply)),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.claims.len() + self.marks.len() + self.ledgers.len()
    }

    /// Whether the round's commit must be synced: one synced write syncs the lot.
    pub(super) fn synced(&self) -> bool {
        !self.marks.is_empty()
            || self
                .claims
                .iter()
                .any(|c| c.durability == Durability::Synced)
    }

    /// Answers every write with `e` (a lone write with `e` itself): nothing was committed.
    pub(super) fn fail(self, e: StoreError) {
        if self.len() > 1 {
            tracing::warn!(
                writes = self.len(),
                "a shared database transaction failed: {e}"
            );
        }
        let why = e.to_string();
        let mut first = Some(e);
        let mut next = || {
            first
                .take()
                .unwrap_or_else(|| StoreError::Group(why.clone()))
        };
        for job in self.claims {
            let _ = job.reply.send(Err(next()));
        }
        for (_, _, reply) in self.marks {
            let _ = reply.send(Err(next()));
        }
        for (_, reply) in self.ledgers {
            let _ = reply.send(Err(next()));
        }
    }

    /// Makes the round's writes on the connection in `slot` (which holds one) and answers each.
    /// A connection that failed is left out of `slot` (closed).
    pub(super) async fn write(mut self, slot: &mut Option<AnyConnection>) {
        if self.claims.is_empty() && self.ledgers.is_empty() {
            if let [(ids, prepared, _)] = self.marks.as_slice() {
                if let [id] = ids.as_slice() {
                    let conn = slot.as_mut().expect("a held connection");
                    let done = mark_settling_on(conn, *id, prepared).await;
                    // A refusal leaves the connection as it was.
                    if matches!(done, Err(StoreError::Db(_))) {
                        *slot = None;
                    }
                    let (_, _, reply) = self.marks.pop().expect("one");
                    let _ = reply.send(done);
                    return;
                }
            }
        }
        if self.claims.is_empty() && self.marks.is_empty() {
            if let [(rows, _)] = self.ledgers.as_slice() {
                if let [row] = rows.as_slice() {
                    let done = write_ledger_script(ScriptConn::held(slot), row).await;
                    if done.is_err() {
                        *slot = None;
                    }
                    let (_, reply) = self.ledgers.pop().expect("one");
                    let _ = reply.send(done);
                    return;
                }
            }
        }
        let mut conn = ScriptConn::held(slot);
        let done = self.write_together(&mut conn).await;
        conn.ended(done.is_ok()).await;
        drop(conn);
        match done {
            Ok((claimed, marked)) => {
                for (job, outcome) in self.claims.into_iter().zip(claimed) {
                    let _ = job.reply.send(Ok(outcome));
                }
                for ((_, _, reply), outcome) in self.marks.into_iter().zip(marked) {
                    let _ = reply.send(outcome);
                }
                for (_, reply) in self.ledgers {
                    let _ = reply.send(Ok(()));
                }
            }
            Err(e) => {
                // Closed: a fresh connection for the next round.
                *slot = None;
                self.fail(e);
            }
        }
    }

    /// The round as one transaction (see the module's doc): each claim's answer and each
    /// record's, or the error that failed them all. The caller ends the transaction on error.
    async fn write_together(
        &self,
        conn: &mut ScriptConn<'_>,
    ) -> Result<(Vec<Claimed>, Vec<Result<(), StoreError>>), StoreError> {
        let t = now();
        // What must run before the next statement: the transaction's `BEGIN`, then the last
        // claim's savepoint's end; sent with the next script.
        let mut pending = String::from("BEGIN;");
        let mut claimed = Vec::with_capacity(self.claims.len());
        for job in &self.claims {
            let mut sql = std::mem::take(&mut pending);
            sql.push_str("SAVEPOINT claim;");
            push_claim_script(&mut sql, job);
            let rows = bind_claim(sqlx::query(sqlx::AssertSqlSafe(sql)), job, t)
                .fetch_all(conn.conn())
                .await?;
            script::ran_whole(&rows)?;
            let outcome = read_claim(&rows, job)?;
            pending.push_str(match outcome.0 {
                ClaimOutcome::Claimed(_) => "RELEASE claim;",
                _ => "ROLLBACK TO claim; RELEASE claim;",
            });
            claimed.push(outcome);
        }
        if !self.marks.is_empty() || !self.ledgers.is_empty() {
            run(conn.conn(), std::mem::take(&mut pending)).await?;
        }
        let mut marked = Vec::with_capacity(self.marks.len());
        for (ids, prepared, _) in &self.marks {
            let outcome = match ids.as_slice() {
                [id] => mark_settling_on(conn.conn(), *id, prepared).await,
                _ => {
                    run(conn.conn(), "SAVEPOINT mark;".into()).await?;
                    let outcome = mark_batch_on(conn.conn(), ids, prepared).await;
                    let end = match outcome {
                        Ok(()) => "RELEASE mark;",
                        _ => "ROLLBACK TO mark; RELEASE mark;",
                    };
                    run(conn.conn(), end.into()).await?;
                    outcome
                }
            };
            match outcome {
                Ok(()) | Err(StoreError::ClaimFinished(_)) => marked.push(outcome),
                Err(e) => return Err(e),
            }
        }
        let rows: Vec<&LedgerBinds> = self.ledgers.iter().flat_map(|(r, _)| r).collect();
        if !rows.is_empty() {
            write_rows_in(conn.conn(), &rows).await?;
        }
        // Nothing to keep (replays and refusals only: a lone replay, say): rolled back, with no
        // commit to sync. With `END`: a bare `COMMIT` whose connection thread died would
        // answer nothing and look done.
        let kept = !self.marks.is_empty()
            || !self.ledgers.is_empty()
            || claimed
                .iter()
                .any(|(outcome, _)| matches!(outcome, ClaimOutcome::Claimed(_)));
        if kept {
            pending.push_str("COMMIT;");
        } else {
            pending = "ROLLBACK;".into();
        }
        pending.push_str(script::END);
        let rows = sqlx::query(sqlx::AssertSqlSafe(pending))
            .fetch_all(conn.conn())
            .await?;
        script::ran_whole(&rows)?;
        Ok((claimed, marked))
    }
}

/// Runs `sql` (statements without parameters) and requires it ran whole.
async fn run(conn: &mut AnyConnection, mut sql: String) -> Result<(), StoreError> {
    sql.push_str(script::END);
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(conn)
        .await?;
    script::ran_whole(&rows)
}

/// A claim's statements (`claim_in`'s two, the payer's exposure when asked) and `END`, its
/// parameters bound by `bind_claim`. Each row says what it is in its first column: no `claim`
/// row is a replay, no `count` row a tenant past its limit.
fn push_claim_script(sql: &mut String, job: &ClaimJob) {
    sql.push_str(concat!(
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
}

fn bind_claim<'q>(q: AnyQuery<'q>, job: &'q ClaimJob, t: i64) -> AnyQuery<'q> {
    let v = &job.verified;
    q.bind(&v.key.network)
        .bind(&v.key.asset)
        .bind(&v.key.payer)
        .bind(&v.key.nonce)
        .bind(&job.tenant)
        .bind(&job.route)
        .bind(&v.amount)
        .bind(v.expires_at.min(i64::MAX as u64) as i64)
        .bind(t)
        .bind(period_of(t))
        .bind(job.limit.unwrap_or(i64::MAX))
        .bind(job.exposure.map_or(0, |e| e.since_ms))
}

/// A claim script's outcome, from its rows.
fn read_claim(rows: &[sqlx::any::AnyRow], job: &ClaimJob) -> Result<Claimed, StoreError> {
    let mut id = None;
    let mut counted = false;
    for r in rows {
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
}
