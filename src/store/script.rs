//! Scripts: several statements sent to SQLite as one query. sqlx runs each statement, `BEGIN`
//! and `COMMIT` as a message to the connection's own thread and back, two thread wake-ups each:
//! on a payment's path those wake-ups cost more CPU than the statements. A query of several
//! statements is one message: SQLite runs them in order on that thread and stops at the first
//! that fails. Only SQLite runs them (Postgres takes one statement per query with parameters).
//!
//! A script that opens a transaction does so behind sqlx's back (sqlx's own `Transaction` rolls
//! back when dropped; this one cannot know), so it runs on a `ScriptConn`: until the transaction
//! is known to have ended, committed or rolled back, dropping it closes the connection instead
//! of giving it back to the pool with a transaction open.

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool};

use super::StoreError;

/// A pooled connection running a script that opens its own transaction (see the module's doc).
pub(super) struct ScriptConn {
    conn: PoolConnection<Any>,
    open: bool,
}

impl ScriptConn {
    pub(super) async fn acquire(pool: &AnyPool) -> Result<Self, StoreError> {
        Ok(ScriptConn {
            conn: pool.acquire().await?,
            open: true,
        })
    }

    pub(super) fn conn(&mut self) -> &mut AnyConnection {
        &mut self.conn
    }

    /// After the statement that should have ended the transaction: `ended` says whether it
    /// did (it succeeded); if not, whatever is open is rolled back here, and should that fail
    /// too the connection is closed when this is dropped.
    pub(super) async fn ended(&mut self, ended: bool) {
        self.open = !ended
            && sqlx::query("ROLLBACK")
                .execute(&mut *self.conn)
                .await
                .is_err();
    }
}

impl Drop for ScriptConn {
    fn drop(&mut self) {
        if self.open {
            self.conn.close_on_drop();
        }
    }
}
