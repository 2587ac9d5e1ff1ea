//! Tenants at request time: their current status, tier and monthly usage (cached briefly, the
//! store stays the authority), and API keys: minted from the OS CSPRNG, shown once, stored as
//! SHA-256 hashes, authenticated through a short cache that revocation clears.
//! May import: store, config, x402.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use moka::future::Cache;
use moka::sync::Cache as SyncCache;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Tier;
use crate::store::{period_of, ApiKeyRecord, LazyStore, StoreError};

/// Every key starts with this, so a leaked one is recognisable (and greppable by scanners).
pub const KEY_PREFIX: &str = "x402_live_";
/// Characters of the random part stored in clear to find a key's row.
const LOOKUP_LEN: usize = 12;
/// The scopes a key can carry.
pub const SCOPES: &[&str] = &[
    "verify",
    "usage:read",
    "keys:write",
    "payments:read",
    "routes:write",
];
/// How long a rotated key keeps working by default.
pub const DEFAULT_ROTATION_GRACE_SECONDS: i64 = 24 * 3600;

/// A tenant's standing right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantState {
    pub active: bool,
    pub tier: Tier,
    pub period: String,
    pub used: i64,
}

impl TenantState {
    /// Whether another verified payment fits this month.
    pub fn has_quota(&self) -> bool {
        self.tier
            .monthly_verifications
            .is_none_or(|limit| (self.used as u64) < limit)
    }

    pub fn limit(&self) -> Option<i64> {
        self.tier
            .monthly_verifications
            .map(|l| l.min(i64::MAX as u64) as i64)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error("no tenant `{0}`")]
    Unknown(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How long a standing read earlier may stand in when the database cannot be read: a database
/// that stalls for a few seconds (a slow commit under load, a failover) must not turn every
/// unpaid request into a 503. Serving it costs little: the claim re-checks the quota in the
/// transaction that counts the payment, and a suspension made meanwhile applies within a second
/// of the database answering again (a stale standing is cached for a second, like a fresh one).
const STALE_FOR: Duration = Duration::from_secs(60);

/// Tenant standing by id, cached for a second: the 402 path must not cost a query per request,
/// and the claim re-checks the quota atomically anyway.
pub struct TenantDirectory {
    store: Arc<LazyStore>,
    /// The tiers of the running config; a config reload swaps them (`set_tiers`).
    tiers: Arc<ArcSwap<BTreeMap<String, Tier>>>,
    /// Sync cache of shared values: a hit on the 402 path is a lock-free read and a refcount,
    /// no allocation.
    states: SyncCache<String, Arc<TenantState>>,
    /// The last standing read of each tenant, kept `STALE_FOR`: served when a fresh read fails.
    last_known: SyncCache<String, Arc<TenantState>>,
}

impl TenantDirectory {
    pub fn new(store: Arc<LazyStore>, tiers: BTreeMap<String, Tier>) -> Self {
        TenantDirectory {
            store,
            tiers: Arc::new(ArcSwap::from_pointee(tiers)),
            states: SyncCache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(1))
                .build(),
            last_known: SyncCache::builder()
                .max_capacity(100_000)
                .time_to_live(STALE_FOR)
                .build(),
        }
    }

    /// A directory over another store (another service's pool, in its own runtime) sharing this
    /// one's tiers and cached standings: a change made through either (the management API
    /// changing a tier, a reload) is seen by both at once, so the proxy applies the new limits
    /// on its next request.
    pub fn sharing(&self, store: Arc<LazyStore>) -> Self {
        TenantDirectory {
            store,
            tiers: self.tiers.clone(),
            states: self.states.clone(),
            last_known: self.last_known.clone(),
        }
    }

    pub fn tiers(&self) -> Arc<BTreeMap<String, Tier>> {
        self.tiers.load_full()
    }

    /// The tiers of a reloaded config: every cached standing is forgotten, so the next request
    /// of each tenant is judged under its new tier.
    pub fn set_tiers(&self, tiers: BTreeMap<String, Tier>) {
        self.tiers.store(Arc::new(tiers));
        self.states.invalidate_all();
        self.last_known.invalidate_all();
    }

    /// The tenant's standing: cached for a second; read from the store after that, or, when the
    /// store cannot be read, the last standing read within `STALE_FOR`.
    pub async fn state(&self, tenant: &str) -> Result<Arc<TenantState>, TenantError> {
        if let Some(s) = self.states.get(tenant) {
            return Ok(s);
        }
        // Boxed: the database read's future is large, and kept inline it would be moved in and
        // out of place on every request, the cached ones too, by each caller up the chain.
        match Box::pin(self.read(tenant)).await {
            Ok(state) => {
                self.states.insert(tenant.to_string(), state.clone());
                self.last_known.insert(tenant.to_string(), state.clone());
                Ok(state)
            }
            Err(TenantError::Store(e)) => match self.last_known.get(tenant) {
                Some(stale) => {
                    tracing::warn!(
                        tenant,
                        "tenant standing unreadable, serving the last one read: {e}"
                    );
                    // Cached again for a second, so a sick database is not asked once per
                    // request while it recovers.
                    self.states.insert(tenant.to_string(), stale.clone());
                    Ok(stale)
                }
                None => Err(TenantError::Store(e)),
            },
            Err(e) => Err(e),
        }
    }

    async fn read(&self, tenant: &str) -> Result<Arc<TenantState>, TenantError> {
        let store = self.store.get().await?;
        let record = store
            .tenant(tenant)
            .await?
            .ok_or_else(|| TenantError::Unknown(tenant.to_string()))?;
        let period = period_of(crate::store::now());
        let used = store.usage(tenant, &period).await?;
        let tier = self
            .tiers
            .load()
            .get(&record.tier)
            .cloned()
            .unwrap_or(Tier {
                // A tier removed from the config since: nothing is allowed until it is fixed.
                name: record.tier.clone(),
                monthly_verifications: Some(0),
                networks: Vec::new(),
            });
        Ok(Arc::new(TenantState {
            active: record.status == "active",
            tier,
            period,
            used,
        }))
    }

    /// Forgets a tenant's cached standing (after a payment was counted, or an admin change).
    /// The last-known standing stays: it is only served while the store cannot be read.
    pub async fn invalidate(&self, tenant: &str) {
        self.states.invalidate(tenant);
    }
}

/// A freshly minted key: the secret (shown once) and its stored record.
#[derive(Debug, Clone)]
pub struct MintedKey {
    pub secret: String,
    pub record: ApiKeyRecord,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the OS random source is available");
    hex(&buf)
}

pub fn hash_key(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Lower-case hex, without a prefix.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Mints a key for `tenant` with `scopes`, expiring at `expires_at` (Unix seconds) if given.
pub fn mint_key(tenant: &str, scopes: &[String], expires_at: Option<i64>) -> MintedKey {
    let random = random_hex(24);
    let secret = format!("{KEY_PREFIX}{random}");
    MintedKey {
        record: ApiKeyRecord {
            id: format!("key_{}", random_hex(8)),
            tenant_id: tenant.to_string(),
            prefix: random[..LOOKUP_LEN].to_string(),
            hash: hash_key(&secret),
            scopes: scopes.to_vec(),
            created_at: crate::store::now(),
            expires_at,
            revoked_at: None,
            last_used_at: None,
            replaced_by: None,
        },
        secret,
    }
}

/// Authenticates API keys; lookups are cached for a few seconds and dropped on revoke.
pub struct KeyAuth {
    store: Arc<LazyStore>,
    cache: Cache<String, Option<ApiKeyRecord>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing API key")]
    Missing,
    #[error("invalid API key")]
    Invalid,
    #[error("this API key has expired")]
    Expired,
    #[error("this API key has been revoked")]
    Revoked,
    #[error("this API key lacks the `{0}` scope")]
    Scope(String),
    #[error("the key store is unavailable")]
    Unavailable,
}

impl KeyAuth {
    pub fn new(store: Arc<LazyStore>) -> Self {
        KeyAuth {
            store,
            // Short: a key revoked through another instance sharing the database stops working
            // here within this time (revocation through this instance clears it at once).
            cache: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(5))
                .build(),
        }
    }

    /// The key record for a presented secret, if it is valid now and carries `scope`.
    pub async fn authenticate(
        &self,
        secret: &str,
        scope: Option<&str>,
    ) -> Result<ApiKeyRecord, AuthError> {
        let random = secret.strip_prefix(KEY_PREFIX).ok_or(AuthError::Invalid)?;
        if random.len() < LOOKUP_LEN || !random.is_ascii() {
            return Err(AuthError::Invalid);
        }
        let prefix = &random[..LOOKUP_LEN];
        let record = match self.cache.get(prefix).await {
            Some(r) => r,
            None => {
                let store = self.store.get().await.map_err(|_| AuthError::Unavailable)?;
                let r = store
                    .key_by_prefix(prefix)
                    .await
                    .map_err(|_| AuthError::Unavailable)?;
                self.cache.insert(prefix.to_string(), r.clone()).await;
                r
            }
        };
        let record = record.ok_or(AuthError::Invalid)?;
        // Constant time: the hash comparison must not leak how much of a guess was right.
        if !bool::from(hash_key(secret).as_bytes().ct_eq(record.hash.as_bytes())) {
            return Err(AuthError::Invalid);
        }
        let now = crate::store::now();
        if record.revoked_at.is_some() {
            return Err(AuthError::Revoked);
        }
        if record.expires_at.is_some_and(|e| e <= now) {
            return Err(AuthError::Expired);
        }
        if let Some(scope) = scope {
            if !record.scopes.iter().any(|s| s == scope) {
                return Err(AuthError::Scope(scope.to_string()));
            }
        }
        if let Ok(store) = self.store.get().await {
            let _ = store.touch_key(&record.id).await;
        }
        Ok(record)
    }

    /// Drops the cached lookup of a key (after revoke or rotation).
    pub async fn invalidate(&self, record: &ApiKeyRecord) {
        self.cache.invalidate(&record.prefix).await;
    }
}

/// Constant-time comparison of the admin credential.
pub fn admin_token_matches(expected: &str, presented: &str) -> bool {
    let (a, b) = (
        Sha256::digest(expected.as_bytes()),
        Sha256::digest(presented.as_bytes()),
    );
    bool::from(a.ct_eq(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_random_and_stored_hashed() {
        let a = mint_key("acme", &["verify".into()], None);
        let b = mint_key("acme", &["verify".into()], None);
        assert!(a.secret.starts_with(KEY_PREFIX));
        assert_eq!(a.secret.len(), KEY_PREFIX.len() + 48);
        assert_ne!(a.secret, b.secret);
        assert_ne!(a.record.id, b.record.id);
        assert_eq!(a.record.hash, hash_key(&a.secret));
        assert!(!a.record.hash.contains(&a.secret[KEY_PREFIX.len()..]));
        assert_eq!(
            &a.secret[KEY_PREFIX.len()..KEY_PREFIX.len() + 12],
            a.record.prefix
        );
    }

    #[test]
    fn admin_tokens_compare_exactly() {
        assert!(admin_token_matches(
            "a-long-admin-token",
            "a-long-admin-token"
        ));
        assert!(!admin_token_matches(
            "a-long-admin-token",
            "a-long-admin-tokem"
        ));
        assert!(!admin_token_matches("a-long-admin-token", ""));
    }

    #[test]
    fn quota() {
        let tier = |limit| Tier {
            name: "t".into(),
            monthly_verifications: limit,
            networks: vec![],
        };
        let s = |limit, used| TenantState {
            active: true,
            tier: tier(limit),
            period: "2026-11".into(),
            used,
        };
        assert!(s(Some(10), 9).has_quota());
        assert!(!s(Some(10), 10).has_quota());
        assert!(s(None, i64::MAX - 1).has_quota());
        assert!(!s(Some(0), 0).has_quota());
    }
}
