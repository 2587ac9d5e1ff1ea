//! Durable state: consume-once payment claims, the settlement ledger, the deferred queue.
//!
//! One implementation over sqlx's `Any` driver serves both backends: SQLite (the embedded
//! default, WAL mode, created on first start) and Postgres (several gateway instances sharing
//! state). Every statement is in the SQL both speak (`ON CONFLICT`, `RETURNING`, `$n`
//! parameters); only the migrations differ, in `migrations/sqlite` and `migrations/postgres`.
//! On SQLite a payment's writes are made by one thread running SQLite in-process (rusqlite, on
//! the library sqlx links), with the same statements' texts.
//! The store is the authority on replay: caches may answer "valid", only a claim here admits.
//! This file: the types and the claim lifecycle (claim, release, settling, failed); `writer.rs`:
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

use crate::payments::chain::{PreparedSettlement, Settlement, Verified};
use crate::x402::redact;

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

/// A claim's settlement record: `$1` transaction, `$2` its bytes, `$3` now, `$4` the claim. One
/// text for `mark_settling_on` and SQLite's writer (`round.rs`).
const MARK_SQL: &str =
    "UPDATE payment_claims SET status = 'settling', tx_hash = $1, tx_raw = $2, tx_replaced = NULL, error = NULL, updated_at = $3
     WHERE id = $4 AND status IN ('claimed', 'queued', 'settling')
       AND (status <> 'settling' OR tx_replaced IS NULL)";

/// `MARK_SQL` for `n` claims, `$4` onwards.
fn mark_batch_sql(n: usize) -> String {
    format!(
        "UPDATE payment_claims SET status = 'settling', tx_hash = $1, tx_raw = $2, tx_replaced = NULL, error = NULL, updated_at = $3
         WHERE status IN ('claimed', 'queued', 'settling')
           AND (status <> 'settling' OR tx_replaced IS NULL) AND id IN ({})",
        placeholders(4, n)
    )
}

/// Which of `n` claims (`$1` onwards) is finished: after a batch's record moved fewer than all.
fn finished_sql(n: usize) -> String {
    format!(
        "SELECT id FROM payment_claims WHERE id IN ({}) AND status NOT IN ('claimed', 'queued', 'settling')",
        placeholders(1, n)
    )
}

/// Names the signed transaction on its claim (`settling`), on `executor` (a transaction, or the
/// pool for one claim alone), before it is sent. Only an open claim (claimed, queued, or settling
/// under an earlier transaction) moves: a claim released, failed or settled meanwhile (a write
/// that reached the database late, a reconciler that got there first) refuses, and its
/// transaction must then never be sent.
async fn mark_settling_on<'e, E>(
    executor: E,
    claim_id: i64,
    p: &PreparedSettlement,
) -> Result<(), StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let done = sqlx::query(MARK_SQL)
        .bind(&p.transaction)
        .bind(&p.raw)
        .bind(now())
        .bind(claim_id)
        .execute(executor)
        .await?;
    if done.rows_affected() != 1 {
        return Err(StoreError::ClaimFinished(claim_id));
    }
    Ok(())
}

/// `mark_settling_on` for every claim of a batch transaction, as one statement: all of them
/// name it, or (one finished claim among them) `ClaimFinished` names a finished one, and the
/// caller must roll back what the statement did (Postgres, and SQLite's pools should its writer
/// be gone). A statement per claim cost a round trip each on the batch's way to the chain.
async fn mark_batch_on(
    conn: &mut AnyConnection,
    claim_ids: &[i64],
    p: &PreparedSettlement,
) -> Result<(), StoreError> {
    debug_assert!(!claim_ids.is_empty(), "a batch has members");
    let sql = mark_batch_sql(claim_ids.len());
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&p.transaction)
        .bind(&p.raw)
        .bind(now());
    for id in claim_ids {
        q = q.bind(id);
    }
    let done = q.execute(&mut *conn).await?;
    // A claim named twice moves once.
    let mut distinct = claim_ids.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    if done.rows_affected() == distinct.len() as u64 {
        return Ok(());
    }
    // Which one finished, for the caller's log: any that did not move.
    let mut q = sqlx::query(sqlx::AssertSqlSafe(finished_sql(claim_ids.len())));
    for id in claim_ids {
        q = q.bind(id);
    }
    let finished = q.fetch_optional(&mut *conn).await?;
    let id = match finished {
        Some(row) => row.try_get::<i64, _>(0)?,
        None => claim_ids[0],
    };
    Err(StoreError::ClaimFinished(id))
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

/// The claim itself, inside `tx`: the row on the UNIQUE key and the month's count. Anything but
/// `Claimed` must be rolled back by the caller (a quota refusal has inserted the row).
async fn claim_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    v: &Verified,
    ctx: &ClaimContext<'_>,
    limit: Option<i64>,
    t: i64,
) -> Result<ClaimOutcome, StoreError> {
    let period = period_of(t);
    let row = sqlx::query(concat!(claim_insert!(), " RETURNING id"))
        .bind(&v.key.network)
        .bind(&v.key.asset)
        .bind(&v.key.payer)
        .bind(&v.key.nonce)
        .bind(ctx.tenant)
        .bind(ctx.route)
        .bind(&v.amount)
        .bind(v.expires_at.min(i64::MAX as u64) as i64)
        .bind(t)
        .bind(&period)
        .fetch_optional(&mut **tx)
        .await?;
    let Some(row) = row else {
        return Ok(ClaimOutcome::Duplicate);
    };
    if !tenants::count_in(&mut **tx, ctx.tenant, &period, limit).await? {
        return Ok(ClaimOutcome::QuotaExceeded);
    }
    Ok(ClaimOutcome::Claimed(row.get::<i64, _>(0)))
}

/// Moves a claim to `failed` inside `tx`. Nothing moved, so the tenant's month gets its verified
/// payment back, once: only the first transition into `failed` counts (a settled claim never
/// fails). `why` is stored as shown to tenants: see [`Store::release`].
pub(crate) async fn fail_claim(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    claim_id: i64,
    why: &str,
) -> Result<(), StoreError> {
    let why = redact::with_reason(FAILED_REASON, why);
    let row = sqlx::query(
        "UPDATE payment_claims SET status = 'failed', error = $1, updated_at = $2
         WHERE id = $3 AND status NOT IN ('failed', 'settled', 'released')
         RETURNING tenant, period",
    )
    .bind(&why)
    .bind(now())
    .bind(claim_id)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(row) = row {
        uncount(tx, &row).await?;
    }
    Ok(())
}

/// Gives a claim's verified payment back to its tenant's month, inside the transaction that
/// moved the claim to `released` or `failed` (`row`: its `tenant, period`).
async fn uncount(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    row: &AnyRow,
) -> Result<(), StoreError> {
    let (tenant, period): (String, Option<String>) = (row.try_get(0)?, row.try_get(1)?);
    if let Some(period) = period {
        sqlx::query(
            "UPDATE usage_counters SET verified = verified - 1
             WHERE tenant_id = $1 AND period = $2 AND verified > 0",
        )
        .bind(tenant)
        .bind(period)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// How long an operation waits for a pooled connection.
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// `payer_exposure`'s query: rows of (amount, kind), `kind` being `unsettled` (each unsettled
/// claim's amount, at most `limit` of them) or `settled` (one row if a claim was settled since
/// the parameter `since`). `$1`, `$2`, `$3`: network, asset, payer. The limit is written into
/// the text, not bound: SQLite marks a bound `LIMIT` as one its plan depends on, and binding it
/// again (every call) makes it prepare the statement anew (callgrind: about 160k instructions a
/// payment). The text is the same for the one limit callers use, so it stays cached.
fn exposure_sql(limit: i64, since: &str) -> String {
    format!(
        "SELECT o.amount, 'unsettled' AS kind FROM (
             SELECT amount FROM payment_claims
             WHERE network = $1 AND asset = $2 AND payer = $3
               AND status IN ('claimed', 'settling', 'queued')
             LIMIT {limit}) o
         UNION ALL
         SELECT '0', 'settled' FROM (
             SELECT 1 AS one FROM payment_claims
             WHERE network = $1 AND asset = $2 AND payer = $3
               AND status = 'settled' AND settled_at_ms >= {since}
             LIMIT 1) s",
        limit = limit.max(0)
    )
}

impl PayerExposure {
    /// Sums `exposure_sql`'s rows, their kind in column `kind` and amount in column `amount`.
    fn of_rows<'r>(
        rows: impl Iterator<Item = &'r AnyRow>,
        kind: usize,
        amount: usize,
    ) -> Result<Self, StoreError> {
        let mut exposure = PayerExposure::default();
        for r in rows {
            let (k, a): (String, String) = (r.try_get(kind)?, r.try_get(amount)?);
            exposure.add(&k, &a)?;
        }
        Ok(exposure)
    }

    /// Counts one of `exposure_sql`'s rows.
    fn add(&mut self, kind: &str, amount: &str) -> Result<(), StoreError> {
        if kind == "settled" {
            self.settled_since = true;
            return Ok(());
        }
        let a: u128 = amount
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("claim amount `{amount}`")))?;
        self.unsettled += 1;
        self.owed = self.owed.saturating_add(a);
        Ok(())
    }
}

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

    /// Claims a payment for one request and counts it toward the tenant's month, in one
    /// transaction: the claim is one atomic statement on the UNIQUE key (a replay gets
    /// `Duplicate`), the count one conditional upsert that refuses to pass `limit` (`None`:
    /// unlimited). A claim released as not charged can be taken again. `durability`: see
    /// `durability.rs` for when a claim may be relaxed.
    pub async fn claim(
        &self,
        v: &Verified,
        ctx: &ClaimContext<'_>,
        limit: Option<i64>,
        durability: Durability,
    ) -> Result<ClaimOutcome, StoreError> {
        Ok(self.claim_with(v, ctx, limit, durability, None).await?.0)
    }

    /// `claim`, and for a claim made the payer's exposure (`payer_exposure`) when the store
    /// could read it in the claim's own transaction, after the claim's insert: SQLite, through
    /// its writer (`writer.rs`, `round.rs`). SQLite has one writer, so a claim racing this one
    /// is made after it (in a later round, or later in the same one) and its own read sees this
    /// one; as reading after the commit does. `None`: read it after the commit
    /// (`payer_exposure`).
    pub async fn claim_exposing(
        &self,
        v: &Verified,
        ctx: &ClaimContext<'_>,
        limit: Option<i64>,
        durability: Durability,
        exposure: ExposureQuery,
    ) -> Result<(ClaimOutcome, Option<PayerExposure>), StoreError> {
        self.claim_with(v, ctx, limit, durability, Some(exposure))
            .await
    }

    async fn claim_with(
        &self,
        v: &Verified,
        ctx: &ClaimContext<'_>,
        limit: Option<i64>,
        durability: Durability,
        exposure: Option<ExposureQuery>,
    ) -> Result<(ClaimOutcome, Option<PayerExposure>), StoreError> {
        if let Some(queue) = &self.writer {
            if let Some(outcome) = queue.claim(v, ctx, limit, durability, exposure).await {
                return outcome;
            }
        }
        let mut tx = self.begin_with(durability).await?;
        let outcome = claim_in(&mut tx, v, ctx, limit, now()).await?;
        match outcome {
            ClaimOutcome::Claimed(_) => tx.commit().await?,
            _ => tx.rollback().await?,
        }
        Ok((outcome, None))
    }

    /// Gives a claim back: the payment was not charged and may be presented again. Only a claim
    /// with no settlement transaction in flight (`claimed`) can be released: a `settling` one may
    /// still land, and a settled, queued or failed one must never become claimable again.
    /// Its verified payment is given back to the tenant's month too.
    pub async fn release(&self, claim_id: i64, why: &str) -> Result<bool, StoreError> {
        // Tenants read this text (`payments[].error`): a reason code and a scrubbed message,
        // never a raw client error (an RPC error names the URL, API key included).
        let why = redact::with_reason(RELEASED_REASON, why);
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE payment_claims SET status = 'released', error = $1, updated_at = $2
             WHERE id = $3 AND status = 'claimed'
             RETURNING tenant, period",
        )
        .bind(&why)
        .bind(now())
        .bind(claim_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(false);
        };
        uncount(&mut tx, &row).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Releases `claimed` claims whose authorization expired before `expired_before` (Unix
    /// seconds): no request can settle them any more, so whatever left them open (a gateway
    /// killed mid-request, a claim whose commit was acknowledged to nobody because the database
    /// connection broke) they are not charged. Gives their payers' exposure and tenants' months
    /// back. Returns how many it released.
    pub async fn release_expired_claims(&self, expired_before: i64) -> Result<usize, StoreError> {
        let ids: Vec<i64> = sqlx::query(
            "SELECT id FROM payment_claims WHERE status = 'claimed' AND valid_before < $1 LIMIT 500",
        )
        .bind(expired_before)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
        let mut released = 0;
        for id in ids {
            if self
                .release(
                    id,
                    "the request ended without an outcome and the authorization expired",
                )
                .await?
            {
                released += 1;
            }
        }
        Ok(released)
    }

    /// Records a signed settlement transaction, hash and bytes, before it is sent: from here on
    /// the claim is `settling`, and whatever happens the transaction can be looked up and sent
    /// again.
    pub async fn mark_settling(
        &self,
        claim_id: i64,
        p: &PreparedSettlement,
    ) -> Result<(), StoreError> {
        // SQLite: by its writer (`writer.rs`), in a round's transaction with the other writes
        // waiting. Postgres: one statement, atomic and synced on its own.
        if let Some(queue) = &self.writer {
            if let Some(done) = queue.mark(&[claim_id], p).await {
                return done;
            }
        }
        mark_settling_on(&self.pool, claim_id, p).await
    }

    /// `mark_settling` for every claim a batch transaction settles, in one transaction (one
    /// commit for the lot): all of them name it, or none does. One finished claim among them
    /// refuses the lot (`ClaimFinished`), and the transaction must then never be sent.
    pub async fn mark_settling_batch(
        &self,
        claim_ids: &[i64],
        p: &PreparedSettlement,
    ) -> Result<(), StoreError> {
        // Nothing to name (no caller sends an empty batch; `id IN ()` would answer Ok anyway).
        if claim_ids.is_empty() {
            return Ok(());
        }
        // SQLite: by its writer, in one transaction with the other writes waiting
        // (`writer.rs`).
        if let Some(queue) = &self.writer {
            if let Some(done) = queue.mark(claim_ids, p).await {
                return done;
            }
        }
        let mut tx = self.pool.begin().await?;
        // A refusal drops `tx`: rolled back.
        mark_batch_on(&mut tx, claim_ids, p).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The claims of `claim_ids` (one payment's, or a batch's) that name the sent settlement
    /// `current` move to `p`, a transaction with the same nonce (its replacement at higher fees,
    /// or, the node having refused that, the one it replaced), which names the others it may be
    /// mined instead of (`p.replaces`, `current` among them): written durably on the claims,
    /// and on their deferred items, before `p` is sent, so a crash at any point leaves every
    /// transaction that may be mined named. Every claim still settling on `current` moves (a
    /// batch's other members too), or none does: one of `claim_ids` finished meanwhile (its
    /// settlement was recorded: one of them was mined) or moved to another transaction (another
    /// member's attempt replaced it first) refuses with `ClaimFinished`, and `p` must then never
    /// be sent.
    pub async fn record_replacement(
        &self,
        claim_ids: &[i64],
        current: &str,
        p: &PreparedSettlement,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(p).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let earlier = p.replaces.join(" ");
        let mut distinct = claim_ids.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        let now = now();
        let mut tx = self.pool.begin().await?;
        // One statement's text for both updates below, `$6` onwards naming claims or not.
        let moving = |only: &str| {
            let sql = format!(
                "UPDATE payment_claims SET tx_hash = $1, tx_raw = $2, tx_replaced = $3, updated_at = $4
                 WHERE status = 'settling' AND tx_hash = $5{only}"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(p.transaction.clone())
                .bind(p.raw.clone())
                .bind(earlier.clone())
                .bind(now)
                .bind(current.to_string())
        };
        // The caller's claims first, the update itself the check (a `SELECT` first would let two
        // attempts replacing one transaction at once both pass it under Postgres' read
        // committed, and both send): all of them move, or none.
        let mut q = moving(&format!(" AND id IN ({})", placeholders(6, distinct.len())));
        for id in &distinct {
            q = q.bind(id);
        }
        if q.execute(&mut *tx).await?.rows_affected() != distinct.len() as u64 {
            tx.rollback().await?;
            return Err(StoreError::ClaimFinished(distinct[0]));
        }
        // Then every other claim the transaction settles, not only the caller's: a deferred
        // batch's members are retried one by one, and a member left naming the old transactions
        // would not watch the new one, which settles it too.
        moving("").execute(&mut *tx).await?;
        sqlx::query(
            "UPDATE settlement_queue SET prepared = $1, updated_at = $2
             WHERE prepared IS NOT NULL AND claim_id IN (
                 SELECT id FROM payment_claims WHERE status = 'settling' AND tx_hash = $3)",
        )
        .bind(&json)
        .bind(now)
        .bind(&p.transaction)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The settlement transaction `tx_hash` was never broadcast (the node refused it, or it never
    /// reached the node): the claim goes back to `claimed`, so it may be settled anew or released.
    /// Returns whether it did (it no longer names that transaction otherwise).
    pub async fn unmark_settling(&self, claim_id: i64, tx_hash: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE payment_claims SET status = 'claimed', tx_hash = NULL, tx_raw = NULL, tx_replaced = NULL, updated_at = $1
             WHERE id = $2 AND status = 'settling' AND tx_hash = $3",
        )
        .bind(now())
        .bind(claim_id)
        .bind(tx_hash)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks a claim failed. `why` is stored as shown to tenants: see [`Store::release`].
    pub async fn mark_failed(&self, claim_id: i64, why: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        fail_claim(&mut tx, claim_id, why).await?;
        tx.commit().await?;
        Ok(())
    }

    /// What a payer has promised but not yet paid in one asset, to hold against its balance, in
    /// one round trip: its unsettled claims (claimed, settling or queued; at most `limit` of them),
    /// how many and their sum, and whether a payment of its was settled at or after `since_ms`
    /// (Unix milliseconds), whose transfer may have spent what an earlier balance check saw.
    /// Instances sharing a database compare their clocks here: keep them synchronized (NTP).
    pub async fn payer_exposure(
        &self,
        network: &str,
        asset: &str,
        payer: &str,
        since_ms: i64,
        limit: i64,
    ) -> Result<PayerExposure, StoreError> {
        let sql = exposure_sql(limit, "$4");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(network)
            .bind(asset)
            .bind(payer)
            .bind(since_ms)
            .fetch_all(&self.pool)
            .await?;
        PayerExposure::of_rows(rows.iter(), 1, 0)
    }

    /// The status of a claim, by id.
    pub async fn claim_status(&self, claim_id: i64) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT status FROM payment_claims WHERE id = $1")
            .bind(claim_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get::<String, _>(0)))
    }

    /// Counts claims by status (operators' view, and tests).
    pub async fn count_claims(&self, status: &str) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM payment_claims WHERE status = $1")
            .bind(status)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.get::<i64, _>(0))
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
