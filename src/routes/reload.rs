//! Rebuilds the route table when tenants change through the management API (at once, in this
//! instance) or in another instance sharing the database (every few seconds, in the background).

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::RouteTable;
use crate::config::Config;
use crate::pricing::TenantTerms;
use crate::store::{LazyStore, StoreError, TenantRecord};
use crate::x402::Network;

const REFRESH: Duration = Duration::from_secs(5);

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

pub struct RouteReloader {
    pub config: Arc<Config>,
    pub table: Arc<ArcSwap<RouteTable>>,
    pub store: Arc<LazyStore>,
}

impl RouteReloader {
    pub async fn reload(&self) -> Result<(), StoreError> {
        let store = self.store.get().await?;
        let records = store.tenants().await?;
        let terms = terms_from_records(&self.config, &records);
        self.table
            .store(Arc::new(RouteTable::build_with(&self.config, &terms)));
        Ok(())
    }
}

#[async_trait]
impl BackgroundService for RouteReloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(REFRESH) => {
                    if let Err(e) = self.reload().await {
                        tracing::warn!("refreshing tenant terms: {e}");
                    }
                }
            }
        }
    }
}
