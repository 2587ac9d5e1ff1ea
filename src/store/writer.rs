//! SQLite's one writer. SQLite lets one connection write at a time: a write on any other waits
//! for its lock, asleep in SQLite's busy handler (1, 2, 5, 10 ms... between tries), and every
//! commit pays its own fsync. So a payment's writes, its claim, its settlement record
//! (`mark_settling`, a batch's `mark_settling_batch`) and its ledger row (`record_settlement`,
//! a batch's `record_settlements`), go to one thread, which takes everything waiting and writes
//! it in ONE transaction with one commit (`round.rs`). Nothing waits for a timer: a write that
//! finds the thread idle is made at once, alone.
//!
//! The thread runs SQLite itself (rusqlite, on the same SQLite library sqlx links), so a
//! statement is a function call. Through sqlx each statement was a message to the connection's
//! own thread and back: two thread wake-ups, which under load cost more than the statements and
//! held a round to a few writes a millisecond.
//!
//! An answer is sent only after its commit, so an answered write is as durable as before; when
//! the shared transaction fails, every write in it fails (as if never made), as a lone write's
//! failed commit did. A round holding any synced write (a synced claim, a settlement record, a
//! reconciled ledger row) commits with `synchronous = FULL` and syncs the lot; one of relaxed
//! writes only (`before` claims, the ledger rows of settlements a request saw land:
//! `durability.rs`) with `NORMAL`. One connection takes both, set before each round as it needs
//! (SQLite lets a connection change it between transactions): with a connection for each, a
//! round found the database changed by the other since its last and dropped its page cache,
//! reading the pages back (measured: within the noise of CPU per payment; one connection is
//! simply the least that works). It is opened when first needed
//! (a store opened only to prepare the database, before the gateway forks into a daemon, never
//! opens it: SQLite's connections must not cross a fork), as sqlx opens its own (foreign keys
//! on, a 5-second busy wait). One that could not end a failed round is closed (SQLite rolls back
//! whatever it left open) and the next round opens another. A round that panics loses its
//! answers (each caller then acts as on a lost answer, below), is logged, and the thread goes on
//! with a fresh connection; should the thread be gone, callers write on the pools.
//!
//! Postgres takes concurrent commits itself, and several instances share it: writes there stay
//! one transaction each, on the pool.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use super::ledger::LedgerBinds;
use super::round::Round;
use super::{ClaimContext, ClaimOutcome, Durability, ExposureQuery, PayerExposure, StoreError};
use crate::payments::chain::{PreparedSettlement, Verified};

/// The most writes one round takes.
const MAX_ROUND: usize = 256;

/// The writing thread's inbox.
#[derive(Clone)]
pub(super) struct Writer {
    tx: mpsc::UnboundedSender<Msg>,
}

/// What the thread is asked.
enum Msg {
    Write(Write),
    /// `PRAGMA synchronous` of a synced round and of a relaxed one (`sqlite_writer_synchronous`).
    Synchronous(oneshot::Sender<Result<(i64, i64), StoreError>>),
}

/// One write waiting for the thread.
pub(super) enum Write {
    Claim(Box<ClaimJob>),
    /// `mark_settling` for each claim (one, or a batch's: all of them or none), synced.
    Mark {
        claim_ids: Vec<i64>,
        prepared: PreparedSettlement,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Ledger rows (one payment's, or a batch's landed members', or a reconciled one).
    Ledger {
        rows: Vec<LedgerBinds>,
        durability: Durability,
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
    /// Starts the writing thread for the SQLite file at `path`, which exists and is migrated.
    /// A file it cannot open is an error here, at connect, not in every payment's write after
    /// (the check's connection is closed before this returns); `None` when no thread could be
    /// started (the pools take the writes).
    pub(super) fn start(path: PathBuf) -> Result<Option<Writer>, StoreError> {
        open(&path).map_err(|source| StoreError::WriterOpen {
            path: path.display().to_string(),
            source,
        })?;
        let (tx, rx) = mpsc::unbounded_channel();
        let started = std::thread::Builder::new()
            .name("x402-db-writer".into())
            .spawn(move || run(&path, rx));
        if let Err(e) = started {
            tracing::warn!("SQLite's writing thread did not start: {e}");
            return Ok(None);
        }
        Ok(Some(Writer { tx }))
    }

    /// Makes the claim in the next round; `None` when the thread is gone (it panicked) before
    /// answering: the caller claims on its own.
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
        self.tx.send(Msg::Write(Write::Claim(Box::new(job)))).ok()?;
        // The thread stopped before answering: the caller claims on its own. A round cut short
        // never committed; one stopped at its `COMMIT` may have, and the caller's claim is then
        // refused as a replay: never claimed twice, and an unanswered claim is released when
        // its authorization expires.
        answer.await.ok()
    }

    /// `mark_settling` (one claim) or `mark_settling_batch` in the next round; `None` when the
    /// thread is gone before taking it (nothing was written). An answer lost after it was taken
    /// is an error: the write may have landed, and the caller undoes it as any failed record.
    pub(super) async fn mark(
        &self,
        claim_ids: &[i64],
        prepared: &PreparedSettlement,
    ) -> Option<Result<(), StoreError>> {
        let (reply, answer) = oneshot::channel();
        let msg = Msg::Write(Write::Mark {
            claim_ids: claim_ids.to_vec(),
            prepared: prepared.clone(),
            reply,
        });
        self.tx.send(msg).ok()?;
        Some(answer.await.unwrap_or_else(|_| Err(gone())))
    }

    /// Ledger rows in the next round; the rows back when the thread is gone before taking them
    /// (nothing was written).
    pub(super) async fn ledger(
        &self,
        rows: Vec<LedgerBinds>,
        durability: Durability,
    ) -> Result<Result<(), StoreError>, Vec<LedgerBinds>> {
        let (reply, answer) = oneshot::channel();
        let msg = Msg::Write(Write::Ledger {
            rows,
            durability,
            reply,
        });
        if let Err(mpsc::error::SendError(msg)) = self.tx.send(msg) {
            let Msg::Write(Write::Ledger { rows, .. }) = msg else {
                unreachable!("sent a ledger write")
            };
            return Err(rows);
        }
        Ok(answer.await.unwrap_or_else(|_| Err(gone())))
    }

    /// `PRAGMA synchronous` the thread's synced rounds and relaxed rounds commit with (2 = FULL,
    /// 1 = NORMAL), read back from its connection; `None` when the thread is gone.
    pub(super) async fn synchronous(&self) -> Option<Result<(i64, i64), StoreError>> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Msg::Synchronous(reply)).ok()?;
        answer.await.ok()
    }
}

fn gone() -> StoreError {
    StoreError::Group("the database's writing thread stopped".into())
}

/// How long a write waits for SQLite's lock held by another connection (the pools' writes):
/// sqlx's default, which the pools use.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

fn run(path: &Path, mut queue: mpsc::UnboundedReceiver<Msg>) {
    let mut conns = Conns { path, conn: None };
    // Ends when every sender is gone: the store was dropped.
    while let Some(first) = queue.blocking_recv() {
        let mut round = Round::default();
        let mut probes = Vec::new();
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Synchronous(reply) => probes.push(reply),
                Msg::Write(write) => round.add(write),
            }
            if round.len() < MAX_ROUND {
                next = queue.try_recv().ok();
            }
        }
        if round.len() > 0 {
            // A panic drops the round's answers (their callers see them lost); the connection
            // may hold a transaction half-made, so it is closed, which rolls it back.
            let wrote =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| conns.write(round)));
            if wrote.is_err() {
                tracing::error!(
                    "SQLite's writer panicked in a round; its writes were not answered"
                );
                conns.conn = None;
            }
        }
        for reply in probes {
            let _ = reply.send(conns.synchronous());
        }
    }
}

/// The thread's connection, opened when first needed, and the `synchronous` it is set to.
struct Conns<'a> {
    path: &'a Path,
    conn: Option<(Connection, Option<Sync>)>,
}

/// `PRAGMA synchronous` for a round: `FULL` when it holds a synced write, else `NORMAL`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sync {
    Full,
    Normal,
}

impl Sync {
    fn of(synced: bool) -> Sync {
        if synced {
            Sync::Full
        } else {
            Sync::Normal
        }
    }

    fn pragma(self) -> &'static str {
        match self {
            Sync::Full => "FULL",
            Sync::Normal => "NORMAL",
        }
    }
}

impl Conns<'_> {
    /// The connection, opened if need be, set to `sync` (between rounds: no transaction is
    /// open, and SQLite refuses the change inside one). One that cannot be set is closed.
    fn get(&mut self, sync: Sync) -> rusqlite::Result<&Connection> {
        let (conn, now) = match &mut self.conn {
            Some(held) => held,
            None => self.conn.insert((open(self.path)?, None)),
        };
        if *now != Some(sync) {
            if let Err(e) = conn.pragma_update(None, "synchronous", sync.pragma()) {
                self.conn = None;
                return Err(e);
            }
            *now = Some(sync);
        }
        Ok(&self.conn.as_ref().expect("opened").0)
    }

    fn write(&mut self, round: Round) {
        let conn = match self.get(Sync::of(round.synced())) {
            Ok(conn) => conn,
            Err(e) => return round.fail(e.into()),
        };
        if !round.write(conn) {
            self.conn = None;
        }
    }

    /// What a synced round and a relaxed round commit with, read back from the connection.
    fn synchronous(&mut self) -> Result<(i64, i64), StoreError> {
        let mut read = |sync| -> rusqlite::Result<i64> {
            self.get(sync)?
                .pragma_query_value(None, "synchronous", |r| r.get(0))
        };
        Ok((read(Sync::Full)?, read(Sync::Normal)?))
    }
}

/// A connection to the file, set up as sqlx sets up its own.
fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // The path's fixed statements (claim, count, exposure, record, ledger row, savepoints):
    // all of them stay prepared.
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::super::round::PANIC_BEFORE_COMMIT;
    use super::super::{ClaimOutcome, Store};
    use super::*;
    use crate::payments::chain::{PaymentKey, SchemePayload};

    fn verified(nonce: u8) -> Verified {
        Verified {
            key: PaymentKey {
                network: "eip155:84532".into(),
                asset: "0x036cbd53842c5426634e7929541ec2318f3dcf7e".into(),
                payer: "0x00000000000000000000000000000000000000aa".into(),
                nonce: format!("0x{nonce:064x}"),
            },
            payer: "0x00000000000000000000000000000000000000AA".into(),
            pay_to: "0x00000000000000000000000000000000000000BB".into(),
            amount: "10000".into(),
            expires_at: 4_000_000_000,
            scheme_payload: SchemePayload {
                chain: "test".into(),
                v: 1,
                data: serde_json::json!({}),
            },
        }
    }

    /// A round that panics mid-way (a bug's path: `PANIC_BEFORE_COMMIT`) commits nothing, its
    /// caller sees its answer lost and claims on the pool, and the thread goes on with a fresh
    /// connection. On a real SQLite file.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_round_that_panics_commits_nothing_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("gate.db").display());
        let store = Store::connect(&url).await.unwrap();
        let writer = store.writer.clone().expect("SQLite's writer runs");
        let panics = ClaimContext {
            tenant: "acme",
            route: PANIC_BEFORE_COMMIT,
        };
        let plain = ClaimContext {
            tenant: "acme",
            route: "/paid",
        };
        let claim = |v, ctx| writer.claim(v, ctx, Some(100), Durability::Synced, None);

        // The answer is lost, and the claim's insert, made in the round, was not committed.
        let first = verified(1);
        assert!(claim(&first, &panics).await.is_none());
        assert_eq!(store.count_claims("claimed").await.unwrap(), 0);
        // The thread goes on (a fresh connection): the same payment is claimed once, through it.
        let (outcome, _) = claim(&first, &plain).await.unwrap().unwrap();
        assert!(matches!(outcome, ClaimOutcome::Claimed(_)), "{outcome:?}");
        let (again, _) = claim(&first, &plain).await.unwrap().unwrap();
        assert_eq!(again, ClaimOutcome::Duplicate);
        assert_eq!(store.count_claims("claimed").await.unwrap(), 1);
        // The tenant's months counted the payment once: the panicked round's count was rolled
        // back too (the claim above proves the insert was).
        let counted: i64 =
            sqlx::query_scalar("SELECT SUM(verified) FROM usage_counters WHERE tenant_id = 'acme'")
                .fetch_one(&store.pool)
                .await
                .unwrap();
        assert_eq!(counted, 1);

        // Through the store, a lost answer is claimed on the pool: the caller gets its claim.
        let second = verified(2);
        let outcome = store
            .claim(&second, &panics, Some(100), Durability::Synced)
            .await
            .unwrap();
        assert!(matches!(outcome, ClaimOutcome::Claimed(_)), "{outcome:?}");
        let (replay, _) = claim(&second, &plain).await.unwrap().unwrap();
        assert_eq!(replay, ClaimOutcome::Duplicate);
        assert_eq!(store.count_claims("claimed").await.unwrap(), 2);
    }
}
