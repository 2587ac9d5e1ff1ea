//! Routes written through the management API, and the namespaces tenants may write them in.
//!
//! A route is stored as its spec (the JSON of a `[[routes]]` entry), never as validated values:
//! it is validated by the config's own code each time it is loaded, so a route that a later
//! config makes invalid (a network removed) is reported and skipped, not served half-checked.

use sqlx::Row;

use super::{now, Store, StoreError};

/// A stored API route.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRouteRecord {
    pub id: String,
    pub tenant: String,
    pub spec: serde_json::Value,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Where a tenant may put routes.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Namespace {
    /// Lower-case host names the tenant's routes may match.
    pub hosts: Vec<String>,
    /// A path prefix (`/acme`) the tenant's routes may live under, on any host.
    pub path_prefix: Option<String>,
}

/// What became of writing a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteWrite {
    Done,
    /// The tenant has as many routes as it may.
    LimitReached,
    /// No such route (of this tenant).
    NotFound,
}

fn record(row: &sqlx::any::AnyRow) -> Result<ApiRouteRecord, StoreError> {
    let spec: String = row.try_get("spec")?;
    Ok(ApiRouteRecord {
        id: row.try_get("id")?,
        tenant: row.try_get("tenant_id")?,
        spec: serde_json::from_str(&spec).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Takes the change counter's row lock first: concurrent writers queue here, so a count read
/// after it is still true at commit.
const BUMP: &str = "UPDATE route_changes SET version = version + 1 WHERE id = 1";

impl Store {
    /// The change counter: every instance rebuilds its routes when it moves.
    pub async fn route_version(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT version FROM route_changes WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("version")?)
    }

    /// Every API route (of `tenant`, if given), oldest first: the order they are matched in.
    pub async fn api_routes(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<ApiRouteRecord>, StoreError> {
        let rows = match tenant {
            Some(t) => {
                sqlx::query(
                    "SELECT id, tenant_id, spec, created_at, updated_at FROM api_routes
                     WHERE tenant_id = $1 ORDER BY created_at, id",
                )
                .bind(t)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT id, tenant_id, spec, created_at, updated_at FROM api_routes
                     ORDER BY created_at, id",
                )
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(record).collect()
    }

    pub async fn api_route(&self, id: &str) -> Result<Option<ApiRouteRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, tenant_id, spec, created_at, updated_at FROM api_routes WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(record).transpose()
    }

    /// Adds a route unless its tenant already has `max` of them.
    pub async fn insert_api_route(
        &self,
        id: &str,
        tenant: &str,
        spec: &serde_json::Value,
        max: i64,
    ) -> Result<RouteWrite, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(BUMP).execute(&mut *tx).await?;
        let row = sqlx::query("SELECT COUNT(*) AS n FROM api_routes WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_one(&mut *tx)
            .await?;
        let n: i64 = row.try_get("n")?;
        if n >= max {
            tx.rollback().await?;
            return Ok(RouteWrite::LimitReached);
        }
        let t = now();
        sqlx::query(
            "INSERT INTO api_routes (id, tenant_id, spec, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(tenant)
        .bind(spec.to_string())
        .bind(t)
        .bind(t)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(RouteWrite::Done)
    }

    /// Replaces a route's spec (of `tenant` only, if given).
    pub async fn update_api_route(
        &self,
        id: &str,
        tenant: Option<&str>,
        spec: &serde_json::Value,
    ) -> Result<RouteWrite, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(BUMP).execute(&mut *tx).await?;
        let done = sqlx::query(
            "UPDATE api_routes SET spec = $1, updated_at = $2
             WHERE id = $3 AND ($4 IS NULL OR tenant_id = $4)",
        )
        .bind(spec.to_string())
        .bind(now())
        .bind(id)
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(RouteWrite::NotFound);
        }
        tx.commit().await?;
        Ok(RouteWrite::Done)
    }

    /// Deletes a route (of `tenant` only, if given).
    pub async fn delete_api_route(
        &self,
        id: &str,
        tenant: Option<&str>,
    ) -> Result<RouteWrite, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(BUMP).execute(&mut *tx).await?;
        let done =
            sqlx::query("DELETE FROM api_routes WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2)")
                .bind(id)
                .bind(tenant)
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(RouteWrite::NotFound);
        }
        tx.commit().await?;
        Ok(RouteWrite::Done)
    }

    /// The namespace the operator assigned to `tenant` (empty when none).
    pub async fn namespace(&self, tenant: &str) -> Result<Namespace, StoreError> {
        let row =
            sqlx::query("SELECT hosts, path_prefix FROM tenant_namespaces WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_optional(&self.pool)
                .await?;
        let Some(row) = row else {
            return Ok(Namespace::default());
        };
        let hosts: String = row.try_get("hosts")?;
        Ok(Namespace {
            hosts: serde_json::from_str(&hosts).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            path_prefix: row.try_get("path_prefix")?,
        })
    }

    /// Every tenant's namespace.
    pub async fn namespaces(&self) -> Result<Vec<(String, Namespace)>, StoreError> {
        let rows = sqlx::query("SELECT tenant_id, hosts, path_prefix FROM tenant_namespaces")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let hosts: String = row.try_get("hosts")?;
                Ok((
                    row.try_get("tenant_id")?,
                    Namespace {
                        hosts: serde_json::from_str(&hosts)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                        path_prefix: row.try_get("path_prefix")?,
                    },
                ))
            })
            .collect()
    }

    /// Assigns `tenant`'s namespace (the operator's call).
    pub async fn set_namespace(&self, tenant: &str, ns: &Namespace) -> Result<(), StoreError> {
        let hosts =
            serde_json::to_string(&ns.hosts).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(BUMP).execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO tenant_namespaces (tenant_id, hosts, path_prefix) VALUES ($1, $2, $3)
             ON CONFLICT (tenant_id) DO UPDATE SET hosts = $2, path_prefix = $3",
        )
        .bind(tenant)
        .bind(hosts)
        .bind(ns.path_prefix.as_deref())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
