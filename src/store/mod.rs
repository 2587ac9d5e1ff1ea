//! Durable state: consume-once payment claims, the settlement ledger, the deferred queue.
//!
//! One implementation over sqlx's `Any` driver serves both backends: SQLite (the embedded
//! default, WAL mode, created on first start) and Postgres (several gateway instances sharing
//! state). Every statement is in the SQL both speak (`ON CONFLICT`, `RETURNING`, `$n`
//! parameters); only the migrations differ, in `migrations/sqlite` and `migrations/postgres`.
//! On SQLite a payment's writes are made by one thread running SQLite in-process (rusqlite, on
//! the library sqlx links), with the same statements' texts.
//! The store is the authority on replay: caches may answer "valid", only a claim here admits.
//! This file: the types, and connecting (migrations, SQLite's WAL); `claims.rs`: the claim
//! lifecycle (claim, release, settling, replacement, failed) and a payer's exposure; `writer.rs`:
//! SQLite's one writer, a thread taking a payment's writes (claim, settlement record, ledger row)
//! and writing all those waiting in one transaction (`round.rs`); `durability.rs`: the commits
//! that may skip their fsync, and how; `ledger.rs`:
//! the settlement ledger and the reconciler's lookups; `queue.rs`: the deferred queue, whose
//! stored format is versioned (`queue_format.rs`); `leases.rs`: settler-key and queue-item leases;
//! `tenants.rs`: tenants, API keys, usage counters and verified transactions; `routes.rs`:
//! routes and namespaces written through the management API; `billing.rs`: plan
//! billing (Stripe events applied once and in order, x402-paid periods).
//! May import: payments::chain (the chain-neutral value types, never a chain backend), x402.

/// The claim's row on its UNIQUE key: a new claim, or a released one taken again (a replay
/// changes nothing and returns no row). One text for `claim_in` and SQLite's writer
/// (`round.rs`).
macro_rules! claim_insert {
    () => {
        "INSERT INTO payment_claims
            (network, asset, payer, nonce, status, tenant, route, amount, valid_before, claimed_at, updated_at, period)
         VALUES ($1, $2, $3, $4, 'claimed', $5, $6, $7, $8, $9, $9, $10)
         ON CONFLICT (network, asset, payer, nonce) DO UPDATE SET
            status = 'claimed', tenant = excluded.tenant, route = excluded.route,
            amount = excluded.amount, tx_hash = NULL, tx_raw = NULL, tx_replaced = NULL, error = NULL, period = excluded.period,
            claimed_at = excluded.claimed_at, updated_at = excluded.updated_at
         WHERE payment_claims.status = 'released'"
    };
}

/// The ledger's row, at most one per claim. One text for `write_ledger_in` and SQLite's writer
/// (`round.rs`).
macro_rules! ledger_insert {
    () => {
        concat!(
            ledger_columns!(),
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (claim_id) DO NOTHING"
        )
    };
}

/// The ledger's insert up to its values (eleven a row), for one row or many.
macro_rules! ledger_columns {
    () => {
        "INSERT INTO settlements
            (claim_id, network, asset, payer, pay_to, amount, tx_hash, block_number, tenant, route, settled_at)"
    };
}

mod billing;
mod claims;
mod durability;
mod leases;
mod ledger;
mod queue;
pub mod queue_format;
mod round;
mod routes;
mod tenants;
mod writer;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyConnection, AnyPool, Row};

pub use billing::{BillingRecord, BillingStatus, StripeApplied, StripeUpdate};
pub use durability::Durability;
pub use routes::{ApiRouteRecord, Namespace, RouteWrite};
pub use tenants::{
    day_string, month_start, period_of, ApiKeyRecord, DailyLine, PaymentFilter, PaymentRecord,
    RevenueLine, TenantRecord, TransactionUse,
};

pub(crate) use claims::fail_claim;
use claims::{exposure_sql, finished_sql, mark_batch_sql, mark_settling_on, MARK_SQL};

use crate::payments::chain::{PreparedSettlement, Settlement, Verified};

/// The reason code stored with a released claim's text when the text brings none of its own.
pub const RELEASED_REASON: &str = "not_charged";
/// The reason code stored with a failed claim's text when the text brings none of its own.
pub const FAILED_REASON: &str = "settlement_failed";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// SQLite's writer (`writer.rs`) runs SQLite in its own thread, not through sqlx.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// SQLite's writer could not open the database's file (an in-memory database has none).
    #[error("database: SQLite's writer cannot open `{path}`: {source}")]
    WriterOpen {
        path: String,
        source: rusqlite::Error,
    },
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("unsupported database URL `{0}`")]
    Url(String),
    /// A write that must move a claim found it already finished (settled, failed or released):
    /// whatever was about to happen to it must not.
    #[error("claim {0} is already finished")]
    ClaimFinished(i64),
    /// The shared transaction of a round of writes failed (see `writer.rs`): every write in it
    /// is as if never made. Also a write whose answer was lost with the writing thread, which
    /// may have landed (its caller undoes it as any failed write).
    #[error("database: {0}")]
    Group(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite: the thread making a payment's writes, those waiting together in one commit
    /// (`writer.rs`). `None` on Postgres, and should no thread start.
    writer: Option<writer::Writer>,
    /// SQLite: the connection relaxed writes commit on (`durability.rs`). `None` on Postgres.
    relaxed: Option<AnyPool>,
}

/// A row of the settlement ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub claim_id: i64,
    pub network: String,
    pub asset: String,
    pub payer: String,
    pub pay_to: String,
    pub amount: String,
    pub tx_hash: String,
    pub block_number: i64,
    pub tenant: String,
    pub route: String,
    pub settled_at: i64,
}

/// What one ledger row records.
struct LedgerRow<'a> {
    claim_id: i64,
    network: &'a str,
    asset: &'a str,
    payer: &'a str,
    pay_to: &'a str,
    amount: &'a str,
    settlement: &'a Settlement,
    tenant: &'a str,
    route: &'a str,
}

impl<'a> LedgerRow<'a> {
    /// The row of a verified payment that landed in `settlement`.
    fn of_verified(
        claim_id: i64,
        v: &'a Verified,
        settlement: &'a Settlement,
        ctx: &ClaimContext<'a>,
    ) -> Self {
        LedgerRow {
            claim_id,
            network: &v.key.network,
            asset: &v.key.asset,
            payer: &v.payer,
            pay_to: &v.pay_to,
            amount: &v.amount,
            settlement,
            tenant: ctx.tenant,
            route: ctx.route,
        }
    }
}

/// Where a claim stands, as `payment_claims.status` stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimStatus {
    /// Admitted for a request; no settlement transaction sent.
    Claimed,
    /// A settlement transaction was signed and recorded, and may have been sent: its outcome is
    /// not known. Never released; the transaction is sent again until it lands or expires.
    Settling,
    /// On-chain and in the ledger.
    Settled,
    /// In the deferred queue.
    Queued,
    /// Not charged; the proof may be presented again.
    Released,
    /// Settlement reverted or could never land: nothing moved.
    Failed,
}

impl ClaimStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimStatus::Claimed => "claimed",
            ClaimStatus::Settling => "settling",
            ClaimStatus::Settled => "settled",
            ClaimStatus::Queued => "queued",
            ClaimStatus::Released => "released",
            ClaimStatus::Failed => "failed",
        }
    }
}

/// Where a deferred settlement stands in the queue (stored as these strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueStatus {
    /// Waiting for (another) attempt.
    Queued,
    /// Settled and recorded.
    Done,
    /// Given up: it never will settle.
    Failed,
}

impl QueueStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueStatus::Queued => "queued",
            QueueStatus::Done => "done",
            QueueStatus::Failed => "failed",
        }
    }
}

/// A claim whose settlement transaction's outcome was never recorded.
#[derive(Debug, Clone)]
pub struct SettlingClaim {
    pub claim_id: i64,
    pub network: String,
    pub asset: String,
    /// Lower-case hex, as claimed.
    pub payer: String,
    /// The payment's nonce (its `PaymentKey`'s), which tells it from the others one batch
    /// transaction settles.
    pub nonce: String,
    pub amount: String,
    pub tenant: String,
    pub route: String,
    pub tx_hash: String,
    /// The signed transaction, to send again if a node dropped it (`None` before migration 0003).
    pub tx_raw: Option<String>,
    /// The transactions `tx_hash` replaced (same nonce, lower fees), oldest first: any one of
    /// them may be the one mined.
    pub tx_replaced: Vec<String>,
    pub valid_before: i64,
    /// When the claim was last written (unix seconds): a transaction unmined that long after its
    /// last send or replacement is stuck.
    pub touched_at: i64,
}

impl SettlingClaim {
    /// Every transaction that may settle this claim: its current one, then those it replaced,
    /// newest first.
    pub fn candidates(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.tx_hash.as_str())
            .chain(self.tx_replaced.iter().rev().map(String::as_str))
    }
}

/// A deferred settlement due for an attempt.
#[derive(Debug, Clone)]
pub struct QueuedSettlement {
    pub claim_id: i64,
    pub verified: Verified,
    pub attempts: i64,
    pub prepared: Option<PreparedSettlement>,
    pub tenant: String,
    pub route: String,
}

/// What became of a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOutcome {
    Claimed(i64),
    /// The payment was already claimed: a replay.
    Duplicate,
    /// The tenant has used its verified payments for this month.
    QuotaExceeded,
}

impl ClaimOutcome {
    pub fn id(self) -> Option<i64> {
        match self {
            ClaimOutcome::Claimed(id) => Some(id),
            _ => None,
        }
    }
}

/// A payer's unsettled payments of one asset (see `Store::payer_exposure`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PayerExposure {
    /// How many claims are not settled yet.
    pub unsettled: usize,
    /// Their sum, in atomic units.
    pub owed: u128,
    /// Whether a payment was settled since the time asked about.
    pub settled_since: bool,
}

/// A payer's exposure to read with its new claim (`Store::claim_exposing`): settlements since
/// `since_ms` (Unix milliseconds) count, and at most `limit` unsettled claims are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExposureQuery {
    pub since_ms: i64,
    pub limit: i64,
}

/// Where a claim was made and for what, recorded with it.
#[derive(Debug, Clone)]
pub struct ClaimContext<'a> {
    pub tenant: &'a str,
    pub route: &'a str,
}

/// A query on either backend, its parameters being bound.
type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// `$first, $first+1, ...`: `n` numbered parameters for an `IN` list or a row of values.
fn placeholders(first: usize, n: usize) -> String {
    let mut s = String::with_capacity(n * 5);
    for i in 0..n {
        if i > 0 {
            s.push_str(", ");
        }
        s.push('$');
        s.push_str(&(first + i).to_string());
    }
    s
}

/// How long an operation waits for a pooled connection.
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The file an `sqlite:` URL names, as sqlx reads it.
fn sqlite_file(url: &str) -> Result<std::path::PathBuf, StoreError> {
    use std::str::FromStr;
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?;
    Ok(options.get_filename().to_path_buf())
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn now() -> i64 {
    crate::payments::chain::unix_now() as i64
}

impl Store {
    /// Connects and brings the schema up to date. `sqlite://PATH` creates the file if needed.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if let Some(rest) = url.strip_prefix("sqlite:") {
            let sep = if rest.contains('?') { '&' } else { '?' };
            let url = if rest.contains("mode=") {
                url.to_string()
            } else {
                format!("{url}{sep}mode=rwc")
            };
            (Backend::Sqlite, url)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_string())
        } else {
            return Err(StoreError::Url(url.to_string()));
        };
        let pool = AnyPoolOptions::new()
            // A request waiting for a connection answers 503 after this, not after sqlx's 30 s
            // default: a database that stopped answering is our outage, reported quickly.
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // sqlx pings a pooled connection before handing it out: for Postgres that finds a
            // connection the server dropped before a query fails on it; an SQLite connection
            // is a thread in this process, and the ping only a round trip to it (and two thread
            // wake-ups) on every use, several a payment. (sqlx still pings each connection as it
            // goes back to the pool, which catches one a cancelled query left unusable.)
            .test_before_acquire(backend == Backend::Postgres)
            .max_connections(match backend {
                // SQLite has one writer; more connections only queue on its lock.
                Backend::Sqlite => 4,
                Backend::Postgres => 16,
            })
            .connect(&url)
            .await?;
        if backend == Backend::Sqlite {
            // WAL: readers never block the writer nor the writer them, and a commit costs one
            // fsync instead of the rollback journal's several. sqlx leaves the journal mode as
            // it finds it (DELETE for a new file), so it is set here, once per file (it
            // persists), with `synchronous` left at FULL: a commit is as durable as before.
            // A file another process holds open may refuse the switch; then it stays as it was.
            match sqlx::query("PRAGMA journal_mode = WAL")
                .fetch_one(&pool)
                .await
                .and_then(|row| row.try_get::<String, _>(0))
            {
                Ok(mode) if mode.eq_ignore_ascii_case("wal") => {}
                Ok(mode) => tracing::warn!(mode, "SQLite is not in WAL mode; writes are slower"),
                Err(e) => tracing::warn!("SQLite journal mode unchanged: {e}"),
            }
        }
        match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await?,
        }
        let relaxed = match backend {
            // After the migrations: the file exists and is in WAL mode.
            Backend::Sqlite => Some(durability::relaxed_sqlite_pool(&url).await?),
            Backend::Postgres => None,
        };
        let writer = match backend {
            Backend::Sqlite => writer::Writer::start(sqlite_file(&url)?)?,
            Backend::Postgres => None,
        };
        Ok(Store {
            pool,
            backend,
            writer,
            relaxed,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }
}

/// A store opened on first use, in the runtime that first uses it: a sqlx pool's sockets belong
/// to the runtime that created them, and each pingora service runs its own runtime.
pub struct LazyStore {
    url: String,
    cell: tokio::sync::OnceCell<Store>,
}

impl LazyStore {
    pub fn new(url: impl Into<String>) -> Self {
        LazyStore {
            url: url.into(),
            cell: tokio::sync::OnceCell::new(),
        }
    }

    pub async fn get(&self) -> Result<&Store, StoreError> {
        self.cell
            .get_or_try_init(|| Store::connect(&self.url))
            .await
    }
}
