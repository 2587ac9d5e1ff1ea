//! Scripts: several statements sent to SQLite as one query. sqlx runs each statement, `BEGIN`
//! and `COMMIT` as a message to the connection's own thread and back, two thread wake-ups each:
//! on a payment's path those wake-ups cost more CPU than the statements. A query of several
//! statements is one message: SQLite runs them in order on that thread and stops at the first
//! that fails. Only SQLite runs them (Postgres takes one statement per query with parameters).
//!
//! Every script ends with `SELECT 'end'` (`END`), and its caller requires that row: a
//! connection thread that died mid-script closes its channel without an error, and the rows
//! before it would look like a whole answer.
//!
//! sqlx runs several statements in one query on SQLite only, and calls that deprecated
//! (launchbadge/sqlx#3108) without removing it; Cargo.lock pins the version. Should a later sqlx
//! refuse it, the store's tests fail at once (`tests/store.rs`), and the statement-by-statement
//! transactions Postgres runs (`claim_in`, `write_ledger_in`) are the way back.
//!
//! A script that opens a transaction does so behind sqlx's back (sqlx's own `Transaction` rolls
//! back when dropped; this one cannot know), so it runs on a `ScriptConn`: until the transaction
//! is known to have ended, committed or rolled back, dropping it closes the connection instead
//! of giving it back to the pool with a transaction open.

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool};

use super::StoreError;

/// The last statement of every script, and the tag of the row it answers.
pub(super) const END: &str = "SELECT 'end';";

/// Whether a script's rows end with `END`'s row (its first column is its tag), and so ran whole.
pub(super) fn ran_whole(rows: &[sqlx::any::AnyRow]) -> Result<(), StoreError> {
    use sqlx::Row;
    match rows.last().map(|r| r.try_get::<String, _>(0)) {
        Some(Ok(tag)) if tag == "end" => Ok(()),
        _ => Err(StoreError::ScriptCut),
    }
}

/// A connection running a script that opens its own transaction (see the module's doc): from
/// a pool, or one its owner holds (`held`).
pub(super) struct ScriptConn<'a> {
    conn: Conn<'a>,
    open: bool,
}

enum Conn<'a> {
    Pooled(PoolConnection<Any>),
    /// The owner's slot, which holds a connection while this lives: emptied (the connection
    /// closed) when a transaction may be open.
    Held(&'a mut Option<AnyConnection>),
}

impl ScriptConn<'static> {
    pub(super) async fn acquire(pool: &AnyPool) -> Result<Self, StoreError> {
        Ok(ScriptConn {
            conn: Conn::Pooled(pool.acquire().await?),
            open: true,
        })
    }
}

impl<'a> ScriptConn<'a> {
    /// On the connection in `slot`, which must hold one.
    pub(super) fn held(slot: &'a mut Option<AnyConnection>) -> Self {
        assert!(slot.is_some(), "a held connection");
        ScriptConn {
            conn: Conn::Held(slot),
            open: true,
        }
    }

    pub(super) fn conn(&mut self) -> &mut AnyConnection {
        match &mut self.conn {
            Conn::Pooled(c) => c,
            Conn::Held(slot) => slot.as_mut().expect("a held connection"),
        }
    }

    /// After the statement that should have ended the transaction: `ended` says whether it
    /// did (it succeeded); if not, whatever is open is rolled back here, and should that fail
    /// too the connection is closed when this is dropped.
    pub(super) async fn ended(&mut self, ended: bool) {
        self.open = !ended && sqlx::query("ROLLBACK").execute(self.conn()).await.is_err();
    }
}

impl Drop for ScriptConn<'_> {
    fn drop(&mut self) {
        if self.open {
            match &mut self.conn {
                Conn::Pooled(c) => c.close_on_drop(),
                // Dropping an SQLite connection closes it, which rolls back what it left open.
                Conn::Held(slot) => drop(slot.take()),
            }
        }
    }
}
