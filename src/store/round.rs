//! One round of SQLite's writer (`writer.rs`): every write waiting, in one transaction and one
//! commit, on the writer's own connection in the writer's own thread. A statement is a function
//! call into SQLite here; through sqlx it was a message to the connection's thread and back (two
//! thread wake-ups, and under load a wait for a core each), which was most of a round's time.
//!
//! - Claims: the claim's insert, its month's count, the payer's exposure when asked (the
//!   overdraw guard's read: in the claim's transaction, after its insert, so it sees every claim
//!   committed before and every claim of the round before it; a claim after it sees it, as
//!   SQLite's one writer orders claims alone). A replay or a quota refusal is rolled back to its
//!   savepoint alone.
//! - Settlement records: a claim's one `UPDATE`, which changes nothing when it refuses; a batch's
//!   one `UPDATE` of all its claims, in a savepoint (a finished claim refuses its batch only).
//! - Ledger rows: each row's insert and its claim's move to `settled` (relaxed ones; a
//!   reconciled row is synced, as a settlement record is).
//!
//! Then `COMMIT` (`ROLLBACK` when nothing is to be kept: replays and refusals only). Nothing is
//! answered before it. Each write runs in a savepoint of its own (`alone`): one the database
//! refuses for its own rows (a constraint, a trigger) is undone alone and answered with the
//! refusal, and the round's other writes go on. Any other database error (I/O, a full disk)
//! fails the round's every write (none is kept). Either way a claim refused answers 503 and is
//! made again by its client's retry, a record refused is never sent, and a ledger row refused is
//! written again by the reconciler.
//!
//! The statements' texts are the ones the sqlx paths run (Postgres, and SQLite's fallbacks), with
//! their `$N` parameters bound by name (`bind`).

use rusqlite::{Connection, Row, ToSql};
use tokio::sync::oneshot;

use super::ledger::{LedgerBinds, SETTLED_SQL};
use super::tenants::{period_of, COUNT_SQL};
use super::writer::{ClaimJob, Claimed, Write};
use super::{
    exposure_sql, finished_sql, mark_batch_sql, now, now_ms, ClaimOutcome, Durability,
    PayerExposure, StoreError, MARK_SQL,
};
use crate::payments::chain::PreparedSettlement;

type Reply = oneshot::Sender<Result<(), StoreError>>;

/// A claim made for this route makes its round panic before the commit, with its writes made
/// and uncommitted: the path a bug in a round would take (`writer.rs`'s tests only).
#[cfg(test)]
pub(super) const PANIC_BEFORE_COMMIT: &str = "/test/panic-before-commit";

/// A round's answers: each claim's, each settlement record's, each ledger write's.
type Answers = (
    Vec<Result<Claimed, StoreError>>,
    Vec<Result<(), StoreError>>,
    Vec<Result<(), StoreError>>,
);

/// The writes one round makes.
#[derive(Default)]
pub(super) struct Round {
    claims: Vec<ClaimJob>,
    marks: Vec<(Vec<i64>, PreparedSettlement, Reply)>,
    ledgers: Vec<(Vec<LedgerBinds>, Durability, Reply)>,
}

impl Round {
    pub(super) fn add(&mut self, write: Write) {
        match write {
            Write::Claim(job) => self.claims.push(*job),
            Write::Mark {
                claim_ids,
                prepared,
                reply,
            } => self.marks.push((claim_ids, prepared, reply)),
            Write::Ledger {
                rows,
                durability,
                reply,
            } => self.ledgers.push((rows, durability, reply)),
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
            || self
                .ledgers
                .iter()
                .any(|(_, durability, _)| *durability == Durability::Synced)
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
        for (_, _, reply) in self.ledgers {
            let _ = reply.send(Err(next()));
        }
    }

    /// Makes the round's writes on `conn` and answers each. Returns whether `conn` may serve
    /// the next round: one that could not roll back a failed round is closed by the caller
    /// (closing rolls back whatever it left open).
    pub(super) fn write(self, conn: &Connection) -> bool {
        match self.write_together(conn) {
            Ok((claimed, marked, recorded)) => {
                for (job, outcome) in self.claims.into_iter().zip(claimed) {
                    let _ = job.reply.send(outcome);
                }
                for ((_, _, reply), outcome) in self.marks.into_iter().zip(marked) {
                    let _ = reply.send(outcome);
                }
                for ((_, _, reply), outcome) in self.ledgers.into_iter().zip(recorded) {
                    let _ = reply.send(outcome);
                }
                true
            }
            Err(e) => {
                // A failed `COMMIT` may have rolled back already (SQLite does on some I/O
                // errors): then there is nothing to end.
                let usable = conn.is_autocommit() || exec(conn, "ROLLBACK").is_ok();
                self.fail(e);
                usable
            }
        }
    }

    /// The round as one transaction (see the module's doc): each write's answer, or the error
    /// that failed them all. The caller ends the transaction on error.
    fn write_together(&self, conn: &Connection) -> Result<Answers, StoreError> {
        let t = now();
        // The write lock from the start: a transaction that read first and wrote later could
        // find its snapshot stale at its first write, an error no busy wait resolves.
        exec(conn, "BEGIN IMMEDIATE")?;
        let mut claimed = Vec::with_capacity(self.claims.len());
        for job in &self.claims {
            claimed.push(alone(conn, || {
                let outcome = claim(conn, job, t)?;
                // A replay or a refusal keeps nothing (a quota refusal has inserted the row).
                let keep = matches!(outcome.0, ClaimOutcome::Claimed(_));
                Ok((outcome, keep))
            })?);
        }
        let mut marked = Vec::with_capacity(self.marks.len());
        for (ids, prepared, _) in &self.marks {
            marked.push(alone(conn, || {
                mark(conn, ids, prepared, t)?;
                Ok(((), true))
            })?);
        }
        let t_ms = now_ms();
        let mut recorded = Vec::with_capacity(self.ledgers.len());
        for (rows, _, _) in &self.ledgers {
            recorded.push(alone(conn, || {
                for row in rows {
                    ledger_row(conn, row, t, t_ms)?;
                }
                Ok(((), true))
            })?);
        }
        #[cfg(test)]
        if self.claims.iter().any(|c| c.route == PANIC_BEFORE_COMMIT) {
            panic!("a test's round panics before its commit");
        }
        // Nothing to keep (replays, refusals and refused writes only: a lone replay, say):
        // rolled back, with no commit to sync.
        let kept = marked.iter().any(Result::is_ok)
            || recorded.iter().any(Result::is_ok)
            || claimed
                .iter()
                .any(|c| matches!(c, Ok((ClaimOutcome::Claimed(_), _))));
        exec(conn, if kept { "COMMIT" } else { "ROLLBACK" })?;
        Ok((claimed, marked, recorded))
    }
}

/// One write of a round in a savepoint of its own: `write` gives its answer and whether to keep
/// what it did. Refused by the database for its own rows (`refused_alone`: a constraint, a
/// trigger's `RAISE`, a claim finished before its record) it is undone alone, and the refusal is
/// its answer; the round's other writes go on. Any other error (I/O, a full disk, a lock) fails
/// the round.
fn alone<T>(
    conn: &Connection,
    write: impl FnOnce() -> Result<(T, bool), StoreError>,
) -> Result<Result<T, StoreError>, StoreError> {
    exec(conn, "SAVEPOINT write")?;
    let (answer, keep) = match write() {
        Ok((answer, keep)) => (Ok(answer), keep),
        Err(e) if refused_alone(&e) => (Err(e), false),
        Err(e) => return Err(e),
    };
    if !keep {
        exec(conn, "ROLLBACK TO write")?;
    }
    exec(conn, "RELEASE write")?;
    Ok(answer)
}

/// Whether an error is the database refusing one write's rows, not the transaction failing.
fn refused_alone(e: &StoreError) -> bool {
    match e {
        StoreError::ClaimFinished(_) => true,
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
            f.code == rusqlite::ErrorCode::ConstraintViolation
        }
        _ => false,
    }
}

/// One claim's statements (in its own savepoint: `alone`); anything but `Claimed` must be rolled
/// back (a quota refusal has inserted the row).
fn claim(conn: &Connection, job: &ClaimJob, t: i64) -> Result<Claimed, StoreError> {
    let v = &job.verified;
    let period = period_of(t);
    let expires = v.expires_at.min(i64::MAX as u64) as i64;
    let id = first_row(
        conn,
        concat!(claim_insert!(), " RETURNING id"),
        &[
            &v.key.network,
            &v.key.asset,
            &v.key.payer,
            &v.key.nonce,
            &job.tenant,
            &job.route,
            &v.amount,
            &expires,
            &t,
            &period,
        ],
        |r| r.get::<_, i64>(0),
    )?;
    let Some(id) = id else {
        return Ok((ClaimOutcome::Duplicate, None));
    };
    let limit = job.limit.unwrap_or(i64::MAX);
    let counted = limit > 0
        && first_row(conn, COUNT_SQL, &[&job.tenant, &period, &limit], |_| Ok(()))?.is_some();
    if !counted {
        return Ok((ClaimOutcome::QuotaExceeded, None));
    }
    let exposure = match job.exposure {
        None => None,
        Some(q) => {
            // The text is the same for the one limit callers use: prepared once.
            let mut stmt = conn.prepare_cached(&exposure_sql(q.limit, "$4"))?;
            bind(
                &mut stmt,
                &[&v.key.network, &v.key.asset, &v.key.payer, &q.since_ms],
            )?;
            let mut rows = stmt.raw_query();
            let mut exposure = PayerExposure::default();
            while let Some(r) = rows.next()? {
                let (kind, amount): (String, String) = (r.get(1)?, r.get(0)?);
                exposure.add(&kind, &amount)?;
            }
            Some(exposure)
        }
    };
    Ok((ClaimOutcome::Claimed(id), exposure))
}

/// A settlement record: one claim's, or a batch's (all of its claims or none, in a savepoint).
fn mark(conn: &Connection, ids: &[i64], p: &PreparedSettlement, t: i64) -> Result<(), StoreError> {
    if let [id] = ids {
        let moved = execute(conn, MARK_SQL, &[&p.transaction, &p.raw, &t, id])?;
        return match moved {
            1 => Ok(()),
            _ => Err(StoreError::ClaimFinished(*id)),
        };
    }
    let mut values: Vec<&dyn ToSql> = vec![&p.transaction, &p.raw, &t];
    values.extend(ids.iter().map(|id| id as &dyn ToSql));
    exec(conn, "SAVEPOINT mark")?;
    // Not cached: a batch's size varies, and its texts would push the path's fixed statements
    // out of the connection's cache.
    let mut stmt = conn.prepare(&mark_batch_sql(ids.len()))?;
    bind(&mut stmt, &values)?;
    let moved = stmt.raw_execute()?;
    drop(stmt);
    // A claim named twice moves once.
    let mut distinct = ids.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    if moved == distinct.len() {
        exec(conn, "RELEASE mark")?;
        return Ok(());
    }
    // Which one finished, for the caller's log: any that did not move.
    let mut stmt = conn.prepare(&finished_sql(ids.len()))?;
    let ids_only: Vec<&dyn ToSql> = ids.iter().map(|id| id as &dyn ToSql).collect();
    bind(&mut stmt, &ids_only)?;
    let finished = {
        let mut rows = stmt.raw_query();
        match rows.next()? {
            Some(r) => r.get::<_, i64>(0)?,
            None => ids[0],
        }
    };
    drop(stmt);
    exec(conn, "ROLLBACK TO mark")?;
    exec(conn, "RELEASE mark")?;
    Err(StoreError::ClaimFinished(finished))
}

/// A ledger row (none if its claim has one) and its claim moved to `settled`.
fn ledger_row(conn: &Connection, b: &LedgerBinds, t: i64, t_ms: i64) -> Result<(), StoreError> {
    execute(
        conn,
        ledger_insert!(),
        &[
            &b.claim_id,
            &b.network,
            &b.asset,
            &b.payer,
            &b.pay_to,
            &b.amount,
            &b.tx_hash,
            &b.block_number,
            &b.tenant,
            &b.route,
            &t,
        ],
    )?;
    execute(conn, SETTLED_SQL, &[&b.tx_hash, &t, &b.claim_id, &t_ms])?;
    Ok(())
}

/// Binds each `$N` of `stmt` to `values[N - 1]`. SQLite numbers a statement's parameters by
/// their first appearance, not by `N` (`SETTLED_SQL` has `$4` before `$3`), so each one's name
/// says which value it takes. The names are read from SQLite's own statement (no allocation, no
/// lookup by name: this runs for every statement of every payment).
fn bind(stmt: &mut rusqlite::Statement<'_>, values: &[&dyn ToSql]) -> rusqlite::Result<()> {
    for index in 1..=stmt.parameter_count() {
        let value = stmt
            .parameter_name(index)
            .and_then(|name| name.strip_prefix('$'))
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| values.get(n.checked_sub(1)?));
        let Some(value) = value else {
            let name = stmt.parameter_name(index).unwrap_or("?");
            return Err(rusqlite::Error::InvalidParameterName(name.to_string()));
        };
        stmt.raw_bind_parameter(index, *value)?;
    }
    Ok(())
}

/// Runs a statement without parameters (cached: the transaction's and savepoints').
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.raw_execute().map(drop)
}

/// Runs a statement that returns no rows; how many rows it changed.
fn execute(conn: &Connection, sql: &str, values: &[&dyn ToSql]) -> rusqlite::Result<usize> {
    let mut stmt = conn.prepare_cached(sql)?;
    bind(&mut stmt, values)?;
    stmt.raw_execute()
}

/// Runs a statement and reads its first row, if any.
fn first_row<T>(
    conn: &Connection,
    sql: &str,
    values: &[&dyn ToSql],
    read: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Option<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    bind(&mut stmt, values)?;
    let mut rows = stmt.raw_query();
    match rows.next()? {
        Some(r) => read(r).map(Some),
        None => Ok(None),
    }
}
