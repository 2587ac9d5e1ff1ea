//! How a write's commit reaches the disk: synced before the commit returns, or relaxed.
//!
//! A commit's fsync is most of what a sequential payment spends in the database (three per
//! payment: claim, settlement record, ledger). Some of them guard nothing a power cut could
//! harm, and skip it:
//!
//! - a `before` payment's claim: a synced write, the settlement's record, always follows it
//!   before anything leaves the gateway on its strength (a transaction broadcast, a request to
//!   the origin, an answer), and persists it with itself. Lost with the power, the claim leaves
//!   nothing behind: nothing was sent, served or answered.
//! - the ledger row of a settlement the request saw land: the claim's synced record already
//!   names its transaction and holds its bytes. Lost with the power, the row is written again
//!   from that record by the reconciler's first pass after the restart (as after a crash between
//!   broadcast and receipt).
//!
//! A relaxed commit is as atomic, isolated and visible as any (a replay racing it is refused
//! the same); it survives a crash of the gateway. Only a crash of the machine (SQLite) or of the
//! database server (Postgres) within a fraction of a second may lose it: SQLite's next synced
//! commit or checkpoint syncs the write-ahead log it is in (one file: an fsync syncs every frame
//! before it), and Postgres's WAL writer flushes it within three `wal_writer_delay`s.
//!
//! SQLite sets `synchronous` per connection and refuses to change it inside a transaction, so
//! relaxed writes have a connection of their own, always `NORMAL`; a pooled connection switched
//! back and forth could go back to the pool relaxed when a write is cancelled mid-way. Postgres
//! sets `synchronous_commit = off` for the one transaction (`SET LOCAL`).

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor};

use super::{Backend, Store, StoreError, ACQUIRE_TIMEOUT};

/// How a write's commit reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Synced before the commit returns: survives a power cut.
    Synced,
    /// Visible at once, synced by the next synced commit or within a fraction of a second: only
    /// for a write whose loss in a power cut harms no one (see the module's doc).
    Relaxed,
}

/// The SQLite connections relaxed writes use, `NORMAL` for their whole life: one at a time
/// from this pool (the writer, `writer.rs`, holds one of its own besides), so they seldom
/// contend with each other for the file's one writer lock.
pub(super) async fn relaxed_sqlite_pool(url: &str) -> Result<AnyPool, StoreError> {
    Ok(AnyPoolOptions::new()
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // As the main SQLite pool: no ping before each use (`Store::connect`).
        .test_before_acquire(false)
        .max_connections(1)
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                conn.execute("PRAGMA synchronous = NORMAL").await?;
                Ok(())
            })
        })
        .connect(url)
        .await?)
}

impl Store {
    /// Begins a transaction whose commit is `durability`.
    pub(super) async fn begin_with(
        &self,
        durability: Durability,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        match (durability, self.backend, &self.relaxed) {
            (Durability::Relaxed, Backend::Sqlite, Some(relaxed)) => Ok(relaxed.begin().await?),
            (Durability::Relaxed, Backend::Postgres, _) => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SET LOCAL synchronous_commit = off")
                    .execute(&mut *tx)
                    .await?;
                Ok(tx)
            }
            _ => Ok(self.pool.begin().await?),
        }
    }

    /// Whether the connection relaxed SQLite writes use is `NORMAL` (tests: it must never be
    /// the pool's, whose commits stay `FULL`). `None` on Postgres.
    pub async fn sqlite_synchronous(&self) -> Result<Option<(i64, i64)>, StoreError> {
        let Some(relaxed) = &self.relaxed else {
            return Ok(None);
        };
        Ok(Some((
            synchronous(&self.pool).await?,
            synchronous(relaxed).await?,
        )))
    }
}

impl Store {
    /// `PRAGMA synchronous` of SQLite's writer's connections (`writer.rs`), the synced one and
    /// the relaxed one (tests: FULL and NORMAL). `None` on Postgres, or with no writer.
    pub async fn sqlite_writer_synchronous(&self) -> Result<Option<(i64, i64)>, StoreError> {
        match &self.writer {
            Some(writer) => writer.synchronous().await.transpose(),
            None => Ok(None),
        }
    }
}

/// `PRAGMA synchronous` of one of `pool`'s connections (2 = FULL, 1 = NORMAL).
async fn synchronous(pool: &AnyPool) -> Result<i64, StoreError> {
    use sqlx::Row;
    let row = sqlx::query("PRAGMA synchronous").fetch_one(pool).await?;
    Ok(row.try_get::<i64, _>(0)?)
}
