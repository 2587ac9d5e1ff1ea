//! Tenants, API keys, monthly usage and verified transactions.

use std::collections::BTreeMap;

use sqlx::Row;

use super::{now, Store, StoreError};

/// A tenant as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TenantRecord {
    pub id: String,
    pub name: String,
    pub email: Option<String>,
    pub tier: String,
    pub status: String,
    pub pay_to: BTreeMap<String, String>,
    pub source: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What became of recording a transaction verified through the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionUse {
    Counted,
    /// This tenant verified it before: each transaction counts once.
    AlreadyUsed,
    /// The tenant's verified payments of the month are used up; nothing recorded.
    QuotaExceeded,
}

/// An API key as stored (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApiKeyRecord {
    pub id: String,
    pub tenant_id: String,
    pub prefix: String,
    #[serde(skip)]
    pub hash: String,
    pub scopes: Vec<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub replaced_by: Option<String>,
}

impl ApiKeyRecord {
    /// Usable now: not revoked and not past its expiry.
    pub fn is_live(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }
}

/// Revenue of one route on one network and asset, in atomic units.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RevenueLine {
    pub route: String,
    pub network: String,
    pub asset: String,
    pub payments: i64,
    pub amount: String,
}

/// Settled payments on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DailyLine {
    /// YYYY-MM-DD
    pub day: String,
    pub payments: i64,
}

/// One payment, for operators' listings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PaymentRecord {
    pub id: i64,
    pub tenant: String,
    pub route: String,
    pub network: String,
    pub asset: String,
    pub payer: String,
    pub amount: String,
    pub status: String,
    pub tx_hash: Option<String>,
    pub error: Option<String>,
    pub claimed_at: i64,
}

/// Filters for listing payments; `before_id` pages backwards from a previous page's last id.
#[derive(Debug, Clone, Default)]
pub struct PaymentFilter {
    pub tenant: Option<String>,
    pub network: Option<String>,
    pub status: Option<String>,
    pub before_id: Option<i64>,
    pub limit: i64,
}

/// The UTC month of a Unix time, as `YYYY-MM`: quotas roll over on the first of the month, UTC.
pub fn period_of(unix: i64) -> String {
    let (y, m, _) = civil_from_days(unix.div_euclid(86_400));
    format!("{y:04}-{m:02}")
}

/// Unix time of the first second of the UTC month containing `unix`.
pub fn month_start(unix: i64) -> i64 {
    let days = unix.div_euclid(86_400);
    let (_, _, d) = civil_from_days(days);
    (days - (d as i64 - 1)) * 86_400
}

/// The UTC day of a day number since the epoch, as `YYYY-MM-DD`.
pub fn day_string(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn tenant_from_row(r: &sqlx::any::AnyRow) -> Result<TenantRecord, StoreError> {
    let pay_to: String = r.get(5);
    Ok(TenantRecord {
        id: r.get(0),
        name: r.get(1),
        email: r.get(2),
        tier: r.get(3),
        status: r.get(4),
        pay_to: serde_json::from_str(&pay_to).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        source: r.get(6),
        created_at: r.get(7),
        updated_at: r.get(8),
    })
}

const TENANT_COLUMNS: &str =
    "id, name, email, tier, status, pay_to, source, created_at, updated_at";
const KEY_COLUMNS: &str =
    "id, tenant_id, prefix, hash, scopes, created_at, expires_at, revoked_at, last_used_at, replaced_by";

fn key_from_row(r: &sqlx::any::AnyRow) -> ApiKeyRecord {
    let scopes: String = r.get(4);
    ApiKeyRecord {
        id: r.get(0),
        tenant_id: r.get(1),
        prefix: r.get(2),
        hash: r.get(3),
        scopes: scopes.split_whitespace().map(String::from).collect(),
        created_at: r.get(5),
        expires_at: r.get(6),
        revoked_at: r.get(7),
        last_used_at: r.get(8),
        replaced_by: r.get(9),
    }
}

impl Store {
    /// Creates or updates a tenant declared in the config. Its status (set through the API) is
    /// kept; name, email, tier and pay_to follow the file, except the tier of a tenant whose plan
    /// is billed (a `tenant_billing` row): what it paid for outlives a restart.
    pub async fn upsert_config_tenant(&self, t: &TenantRecord) -> Result<(), StoreError> {
        let pay_to =
            serde_json::to_string(&t.pay_to).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let at = now();
        sqlx::query(
            "INSERT INTO tenants (id, name, email, tier, status, pay_to, source, created_at, updated_at)
             VALUES ($1, $2, $3, $4, 'active', $5, 'config', $6, $6)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, email = excluded.email,
                tier = CASE WHEN EXISTS (SELECT 1 FROM tenant_billing b WHERE b.tenant_id = tenants.id)
                    THEN tenants.tier ELSE excluded.tier END,
                pay_to = excluded.pay_to, source = 'config', updated_at = excluded.updated_at",
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(&t.email)
        .bind(&t.tier)
        .bind(pay_to)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Creates a tenant; `false` if the id is taken.
    pub async fn create_tenant(&self, t: &TenantRecord) -> Result<bool, StoreError> {
        let pay_to =
            serde_json::to_string(&t.pay_to).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let at = now();
        let done = sqlx::query(
            "INSERT INTO tenants (id, name, email, tier, status, pay_to, source, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(&t.email)
        .bind(&t.tier)
        .bind(&t.status)
        .bind(pay_to)
        .bind(&t.source)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn tenant(&self, id: &str) -> Result<Option<TenantRecord>, StoreError> {
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(tenant_from_row).transpose()
    }

    pub async fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(tenant_from_row).collect()
    }

    /// Updates the given fields of a tenant; `false` if it does not exist.
    pub async fn update_tenant(
        &self,
        id: &str,
        name: Option<&str>,
        tier: Option<&str>,
        status: Option<&str>,
        pay_to: Option<&BTreeMap<String, String>>,
    ) -> Result<bool, StoreError> {
        let pay_to = pay_to
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let done = sqlx::query(
            "UPDATE tenants SET name = COALESCE($1, name), tier = COALESCE($2, tier),
                status = COALESCE($3, status), pay_to = COALESCE($4, pay_to), updated_at = $5
             WHERE id = $6",
        )
        .bind(name)
        .bind(tier)
        .bind(status)
        .bind(pay_to)
        .bind(now())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn insert_key(&self, k: &ApiKeyRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, prefix, hash, scopes, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&k.id)
        .bind(&k.tenant_id)
        .bind(&k.prefix)
        .bind(&k.hash)
        .bind(k.scopes.join(" "))
        .bind(k.created_at)
        .bind(k.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn key_by_prefix(&self, prefix: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE prefix = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(prefix)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(key_from_row))
    }

    pub async fn key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(key_from_row))
    }

    pub async fn keys_of(&self, tenant: &str) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(key_from_row).collect())
    }

    pub async fn revoke_key(&self, id: &str) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now())
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks `old` as replaced by `new`, valid until `until` (the rotation grace period).
    pub async fn retire_key(&self, old: &str, new: &str, until: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE api_keys SET replaced_by = $1,
                expires_at = CASE WHEN expires_at IS NULL OR expires_at > $2 THEN $2 ELSE expires_at END
             WHERE id = $3",
        )
        .bind(new)
        .bind(until)
        .bind(old)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn touch_key(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
            .bind(now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Verified payments of a tenant in a period.
    pub async fn usage(&self, tenant: &str, period: &str) -> Result<i64, StoreError> {
        let row =
            sqlx::query("SELECT verified FROM usage_counters WHERE tenant_id = $1 AND period = $2")
                .bind(tenant)
                .bind(period)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| r.get::<i64, _>(0)).unwrap_or(0))
    }

    /// Counts one verified payment if the tenant is under `limit` this period: one conditional
    /// upsert, so concurrent callers (on any instance) never pass the limit. `false`: at the limit.
    pub async fn count_verification(
        &self,
        tenant: &str,
        period: &str,
        limit: Option<i64>,
    ) -> Result<bool, StoreError> {
        count_in(&self.pool, tenant, period, limit).await
    }

    /// Records a transaction verified through the API and counts it toward the tenant's month,
    /// in one database transaction (`facts.0`, the transaction id, in its backend's canonical
    /// form): it counts once per tenant, and never past `limit`.
    pub async fn consume_transaction_counted(
        &self,
        tenant: &str,
        network: &str,
        facts: (&str, &str, &str),
        period: &str,
        limit: Option<i64>,
    ) -> Result<TransactionUse, StoreError> {
        let (tx_hash, payer, amount) = facts;
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "INSERT INTO verified_transactions (tenant_id, network, tx_hash, payer, amount, verified_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, network, tx_hash) DO NOTHING",
        )
        .bind(tenant)
        .bind(network)
        // As the backend wrote it, canonical for its chain: EVM hashes are lower-case hex
        // already, and Solana signatures are base58, where case matters.
        .bind(tx_hash)
        .bind(payer)
        .bind(amount)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(TransactionUse::AlreadyUsed);
        }
        if !count_in(&mut *tx, tenant, period, limit).await? {
            tx.rollback().await?;
            return Ok(TransactionUse::QuotaExceeded);
        }
        tx.commit().await?;
        Ok(TransactionUse::Counted)
    }

    /// Settled revenue of a tenant since `since`, by route, network and asset.
    pub async fn revenue(&self, tenant: &str, since: i64) -> Result<Vec<RevenueLine>, StoreError> {
        let rows = sqlx::query(
            "SELECT route, network, asset, COUNT(*), CAST(SUM(CAST(amount AS BIGINT)) AS BIGINT)
             FROM settlements WHERE tenant = $1 AND settled_at >= $2
             GROUP BY route, network, asset ORDER BY route, network, asset",
        )
        .bind(tenant)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| RevenueLine {
                route: r.get(0),
                network: r.get(1),
                asset: r.get(2),
                payments: r.get(3),
                amount: r.get::<i64, _>(4).to_string(),
            })
            .collect())
    }

    /// Settled payments of a tenant per UTC day since `since`.
    pub async fn daily(&self, tenant: &str, since: i64) -> Result<Vec<DailyLine>, StoreError> {
        let rows = sqlx::query(
            "SELECT settled_at / 86400 AS day, COUNT(*) FROM settlements
             WHERE tenant = $1 AND settled_at >= $2 GROUP BY settled_at / 86400 ORDER BY 1",
        )
        .bind(tenant)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| DailyLine {
                day: day_string(r.get::<i64, _>(0)),
                payments: r.get(1),
            })
            .collect())
    }

    /// Payments, newest first, filtered.
    pub async fn payments(&self, f: &PaymentFilter) -> Result<Vec<PaymentRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, tenant, route, network, asset, payer, amount, status, tx_hash, error, claimed_at
             FROM payment_claims
             WHERE ($1 IS NULL OR tenant = $1) AND ($2 IS NULL OR network = $2)
               AND ($3 IS NULL OR status = $3) AND ($4 IS NULL OR id < $4)
             ORDER BY id DESC LIMIT $5",
        )
        .bind(&f.tenant)
        .bind(&f.network)
        .bind(&f.status)
        .bind(f.before_id)
        .bind(f.limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| PaymentRecord {
                id: r.get(0),
                tenant: r.get(1),
                route: r.get(2),
                network: r.get(3),
                asset: r.get(4),
                payer: r.get(5),
                amount: r.get(6),
                status: r.get(7),
                tx_hash: r.get(8),
                error: r.get(9),
                claimed_at: r.get(10),
            })
            .collect())
    }

    /// Whether the database answers with our schema: one indexed read of a small table of ours
    /// (a bare `SELECT 1` would pass on a database whose tables are gone).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1 FROM settler_leases LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(())
    }
}

/// The month's count of a tenant's verified payments, one more, unless that passes the limit:
/// `$1` tenant, `$2` period, `$3` limit (positive). A row when counted, none when refused.
/// One text for `count_in` and SQLite's writer (`round.rs`).
pub(super) const COUNT_SQL: &str =
    "INSERT INTO usage_counters (tenant_id, period, verified) VALUES ($1, $2, 1)
     ON CONFLICT (tenant_id, period) DO UPDATE SET verified = usage_counters.verified + 1
     WHERE usage_counters.verified < $3
     RETURNING verified";

/// The conditional increment, usable inside a transaction.
pub(super) async fn count_in<'e, E>(
    executor: E,
    tenant: &str,
    period: &str,
    limit: Option<i64>,
) -> Result<bool, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let limit = limit.unwrap_or(i64::MAX);
    if limit <= 0 {
        return Ok(false);
    }
    let row = sqlx::query(COUNT_SQL)
        .bind(tenant)
        .bind(period)
        .bind(limit)
        .fetch_optional(executor)
        .await?;
    Ok(row.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_roll_over_in_utc() {
        assert_eq!(period_of(0), "1970-01");
        // 2026-11-30T23:59:59Z and one second later.
        assert_eq!(period_of(1_796_083_199), "2026-11");
        assert_eq!(period_of(1_796_083_200), "2026-12");
        assert_eq!(period_of(1_798_761_600), "2027-01");
        assert_eq!(day_string(20_516), "2026-03-04");
        // Leap day.
        assert_eq!(day_string(19_782), "2024-02-29");
        assert_eq!(month_start(1_796_083_199), 1_793_491_200); // 2026-11-01T00:00:00Z
        assert_eq!(month_start(1_793_491_200), 1_793_491_200);
    }
}
