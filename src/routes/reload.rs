//! Rebuilds the route table when tenants change through the management API (at once, in this
//! instance), in another instance sharing the database (every few seconds, in the background),
//! or when the config file is reloaded (`reload::`).
//!
//! Every rebuild of one table goes through one lock, reading the config inside it, so a rebuild
//! that started from an older config or older terms can never overwrite a newer table.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::api::{self, ApiRoutes, Snapshot};
use super::RouteTable;
use crate::config::Config;
use crate::pricing::TenantTerms;
use crate::store::{LazyStore, Store, StoreError, TenantRecord};
use crate::x402::Network;

const REFRESH: Duration = Duration::from_secs(5);
const ROUTES_CHECK: Duration = Duration::from_secs(1);

/// The tenants' current terms as the store has them.
pub fn terms_from_records(
    config: &Config,
    records: &[TenantRecord],
) -> HashMap<String, TenantTerms> {
    records
        .iter()
        .map(|r| {
            let pay_to: BTreeMap<Network, String> = r
                .pay_to
                .iter()
                .filter_map(|(n, a)| Network::from_str(n).ok().map(|n| (n, a.clone())))
                .collect();
            (
                r.id.clone(),
                TenantTerms {
                    tier: config.tiers.get(&r.tier).cloned(),
                    pay_to,
                },
            )
        })
        .collect()
}

/// Creates or updates the tenants `config` declares (name, email, tier and pay_to follow the
/// file; a suspension made through the API is kept), and returns every tenant's terms. At start
/// and on every config reload.
pub async fn sync_config_tenants(
    store: &Store,
    config: &Config,
) -> Result<HashMap<String, TenantTerms>, StoreError> {
    for t in &config.tenants {
        store
            .upsert_config_tenant(&TenantRecord {
                id: t.id.clone(),
                name: t.name.clone(),
                email: t.email.clone(),
                tier: t.tier.clone(),
                status: "active".into(),
                pay_to: t
                    .pay_to
                    .iter()
                    .map(|(n, a)| (n.to_string(), a.clone()))
                    .collect(),
                source: "config".into(),
                created_at: 0,
                updated_at: 0,
            })
            .await?;
    }
    let records = store.tenants().await?;
    Ok(terms_from_records(config, &records))
}

pub struct RouteReloader {
    /// The running config; a config reload swaps it (through `install`).
    pub config: Arc<ArcSwap<Config>>,
    pub table: Arc<ArcSwap<RouteTable>>,
    pub store: Arc<LazyStore>,
    /// Shared by every reloader of `table`.
    pub rebuilding: Arc<tokio::sync::Mutex<()>>,
    /// The API routes as last read, shared by every reloader of `table`.
    pub api: Arc<ApiRoutes>,
}

impl RouteReloader {
    /// Rebuilds the table from the running config and the tenants' terms in the store.
    pub async fn reload(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.rebuilding.lock().await;
        let store = self.store.get().await?;
        // The version first: a change committed while the rest is read moves it again, and the
        // next check rebuilds once more.
        let version = store.route_version().await?;
        let records = store.tenants().await?;
        let routes = store.api_routes(None).await?;
        let namespaces = store.namespaces().await?.into_iter().collect();
        let config = self.config.load_full();
        let terms = terms_from_records(&config, &records);
        let api = api::compile(&config, &routes, &records, &namespaces);
        *self.api.last.lock().expect("not poisoned") = Snapshot {
            version: Some(version),
            records: routes,
            namespaces,
            tenants: records,
        };
        self.swap_table(&config, &api, &terms);
        Ok(())
    }

    /// Rebuilds when the API routes changed in the store since they were last read (by this
    /// instance or another): one cheap read when nothing did.
    pub async fn reload_if_routes_changed(&self) -> Result<bool, StoreError> {
        let store = self.store.get().await?;
        let version = store.route_version().await?;
        let seen = self.api.last.lock().expect("not poisoned").version;
        if seen == Some(version) {
            return Ok(false);
        }
        self.reload().await?;
        Ok(true)
    }

    /// Runs with `config` from now on: swaps it in and rebuilds the table under it with `terms`.
    pub async fn install(&self, config: Arc<Config>, terms: &HashMap<String, TenantTerms>) {
        let _one_at_a_time = self.rebuilding.lock().await;
        self.config.store(config.clone());
        // The API routes as last read, validated again under the new config.
        let snap = self.api.last.lock().expect("not poisoned").clone();
        let api = api::compile(&config, &snap.records, &snap.tenants, &snap.namespaces);
        self.swap_table(&config, &api, terms);
    }

    fn swap_table(
        &self,
        config: &Config,
        api: &[crate::config::RouteConfig],
        terms: &HashMap<String, TenantTerms>,
    ) {
        let previous = self.table.load();
        let table = RouteTable::rebuild(config, api, terms, &previous, Instant::now());
        self.table.store(Arc::new(table));
    }
}

#[async_trait]
impl BackgroundService for RouteReloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Route writes are noticed within a second (one cheap read of the change counter);
        // tenant terms (tier, pay_to) are refreshed every few seconds.
        let mut since_full = Duration::ZERO;
        // At once: the API routes join the file's as soon as the gateway runs.
        if let Err(e) = self.reload().await {
            tracing::warn!("loading routes and tenant terms: {e}");
        }
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(ROUTES_CHECK) => {
                    since_full += ROUTES_CHECK;
                    let done = if since_full >= REFRESH {
                        since_full = Duration::ZERO;
                        self.reload().await.map(|_| true)
                    } else {
                        self.reload_if_routes_changed().await
                    };
                    if let Err(e) = done {
                        tracing::warn!("refreshing routes and tenant terms: {e}");
                    }
                }
            }
        }
    }
}
