//! Config reload without a dropped request: on SIGHUP or `POST /api/v1/x402/admin/reload`, the
//! file the gateway started from is read again and validated exactly as at start; a file with
//! any error is refused with every error and its key path, and the running config keeps serving.
//! A valid one is planned (`plan.rs`: what changes live, what waits for a restart) and applied:
//!
//! 1. the file's tenants are written to the store (as at start) and every tenant's terms read
//!    back; if the store fails, nothing is applied;
//! 2. the tiers go to the tenant directories (their cached standings are dropped), the gas floors
//!    to the health board, the per-request `[server]` settings and `[rate_limit]` to the proxy
//!    and the management API (limiters whose limits did not change keep their counts);
//! 3. the config and the route table are swapped together (`RouteReloader::install`).
//!
//! Nothing is torn down: listeners, connections and in-flight requests are untouched (a request
//! keeps the route and settings it started with), and a client quoted a price just before the
//! reload may still pay it for that quote's `maxTimeoutSeconds` (`Offers::superseding`).
//!
//! Reloads run one at a time in one background service (`ReloadService`), which owns its store
//! pool; the management API asks it through a `ReloadHandle`. Each one is logged, counted in
//! `x402_config_reloads_total{result}` and reported (`ReloadReport`).
//! May import: config, routes (reload), tenants, proxy (its live state), ratelimit, health,
//! store, metrics, x402.

pub mod plan;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::config::{Config, ConfigError};
use crate::health::HealthBoard;
use crate::metrics::{unix_seconds, Metrics};
use crate::proxy::ProxyLive;
use crate::ratelimit::RateLimiter;
use crate::routes::reload::{sync_config_tenants, RouteReloader};
use crate::store::LazyStore;
use crate::tenants::TenantDirectory;
use crate::x402::redact::scrub;

pub use plan::{plan, Pending, Plan};

/// How a reload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReloadResult {
    /// The file was valid and what can change live now runs.
    Applied,
    /// The file has errors (listed): nothing changed.
    Invalid,
    /// The file was valid but the store could not take its tenants: nothing changed.
    Failed,
}

impl ReloadResult {
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Applied => "applied",
            ReloadResult::Invalid => "invalid",
            ReloadResult::Failed => "failed",
        }
    }
}

/// One error of a refused file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FileError {
    /// The key path (`routes[2].price`), empty for the file as a whole.
    pub path: String,
    pub message: String,
}

impl From<&ConfigError> for FileError {
    fn from(e: &ConfigError) -> Self {
        FileError {
            path: e.path.clone(),
            message: scrub(&e.message),
        }
    }
}

/// What a reload did: the answer of the management endpoint, and what SIGHUP logs.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReloadReport {
    pub result: ReloadResult,
    /// The file that was read.
    pub file: String,
    /// Key paths now running with the file's values (`routes[3]`, `tenants."acme"`...).
    pub applied: Vec<String>,
    /// Changes in the file that take effect only after a restart or graceful upgrade; until
    /// then their running values stay.
    pub restart_required: Vec<Pending>,
    /// Why the file was refused (`invalid`): every error with its key path.
    pub errors: Vec<FileError>,
    /// Why a valid file could not be applied (`failed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Everything a reload swaps.
pub struct LiveParts {
    /// Swaps the running config and the route table (with its own store, used for nothing but
    /// the background refresh's reads; `install` does not touch it).
    pub routes: RouteReloader,
    /// The proxy's and the management API's tenant directories.
    pub tenants: Vec<Arc<TenantDirectory>>,
    pub proxy: Arc<ArcSwap<ProxyLive>>,
    pub admin_limits: Arc<ArcSwap<RateLimiter>>,
    pub health: Arc<HealthBoard>,
}

/// Reads, checks and applies the config file.
pub struct ConfigReloader {
    pub path: PathBuf,
    /// Used only by the service that runs reloads (a pool belongs to its runtime).
    pub store: Arc<LazyStore>,
    pub parts: LiveParts,
    pub metrics: Arc<Metrics>,
}

impl ConfigReloader {
    /// One reload, start to end; logs and counts it.
    pub async fn reload(&self) -> ReloadReport {
        let report = self.run().await;
        self.record(&report);
        report
    }

    async fn run(&self) -> ReloadReport {
        let mut report = ReloadReport {
            result: ReloadResult::Invalid,
            file: self.path.display().to_string(),
            applied: Vec::new(),
            restart_required: Vec::new(),
            errors: Vec::new(),
            message: None,
        };
        // A small file, read once: blocking the service's own runtime for it is harmless.
        let file = match Config::load(&self.path) {
            Ok(c) => c,
            Err(errors) => {
                report.errors = errors.0.iter().map(FileError::from).collect();
                return report;
            }
        };
        let running = self.parts.routes.config.load_full();
        let Plan {
            effective,
            applied,
            restart_required,
        } = plan(&running, file);
        report.restart_required = restart_required;
        let terms = match self.store.get().await {
            Ok(store) => sync_config_tenants(store, &effective).await,
            Err(e) => Err(e),
        };
        let terms = match terms {
            Ok(t) => t,
            Err(e) => {
                report.result = ReloadResult::Failed;
                report.message = Some(format!(
                    "the database could not take the file's tenants; nothing changed: {}",
                    scrub(&e.to_string())
                ));
                return report;
            }
        };
        let effective = Arc::new(effective);
        let p = &self.parts;
        for t in &p.tenants {
            t.set_tiers(effective.tiers.clone());
        }
        for (n, net) in &effective.networks {
            p.health.set_floor(n.as_str(), net.min_settler_balance);
        }
        let proxy = p
            .proxy
            .load()
            .reloaded(&effective.server, &effective.rate_limit);
        p.proxy.store(Arc::new(proxy));
        let admin_limits = p.admin_limits.load().reloaded(&effective.rate_limit);
        p.admin_limits.store(admin_limits);
        p.routes.install(effective, &terms).await;
        report.result = ReloadResult::Applied;
        report.applied = applied;
        report
    }

    fn record(&self, report: &ReloadReport) {
        let ops = &self.metrics.ops;
        ops.reloads
            .with_label_values(&[report.result.as_str()])
            .inc();
        ops.reload_time.set(unix_seconds());
        ops.reload_success
            .set((report.result == ReloadResult::Applied) as i64);
        if report.result == ReloadResult::Applied {
            ops.restart_pending
                .set(report.restart_required.len() as i64);
        }
        match report.result {
            ReloadResult::Applied => {
                tracing::info!(file = %report.file, applied = ?report.applied, "config reloaded")
            }
            ReloadResult::Invalid => {
                tracing::error!(file = %report.file, errors = report.errors.len(), "config reload refused: the file has errors; the running config keeps serving");
                for e in &report.errors {
                    tracing::error!(path = %e.path, "config reload: {}", e.message);
                }
            }
            ReloadResult::Failed => {
                tracing::error!(file = %report.file, "config reload failed: {}", report.message.as_deref().unwrap_or(""))
            }
        }
        for p in &report.restart_required {
            tracing::warn!(path = %p.path, "config reload: {}", p.reason);
        }
    }
}

/// Makes SIGHUP harmless from now on: its default action kills the process, and a reload asked
/// for while the gateway is still starting (`systemctl reload` right after `start`) must not. The
/// handler tokio installs stays for the life of the process; until the reload service listens,
/// a SIGHUP does nothing.
pub fn catch_sighup() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async { signal(SignalKind::hangup()).map(drop) })
}

type Request = oneshot::Sender<ReloadReport>;

/// Asks the reload service for a reload and waits for its report.
#[derive(Clone)]
pub struct ReloadHandle(mpsc::Sender<Request>);

impl ReloadHandle {
    /// `None` when the service is gone (the gateway is stopping).
    pub async fn reload(&self) -> Option<ReloadReport> {
        let (tx, rx) = oneshot::channel();
        self.0.send(tx).await.ok()?;
        rx.await.ok()
    }
}

/// The background service that runs reloads, one at a time: asked through its handle, and on
/// SIGHUP when `sighup` is set (the real binary; an embedded gateway leaves the process's
/// signals alone).
pub struct ReloadService {
    reloader: ConfigReloader,
    requests: Mutex<Option<mpsc::Receiver<Request>>>,
    sighup: bool,
}

impl ReloadService {
    pub fn new(reloader: ConfigReloader, sighup: bool) -> (ReloadService, ReloadHandle) {
        let (tx, rx) = mpsc::channel(8);
        let service = ReloadService {
            reloader,
            requests: Mutex::new(Some(rx)),
            sighup,
        };
        (service, ReloadHandle(tx))
    }
}

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(mut requests) = self.requests.lock().expect("not poisoned").take() else {
            return;
        };
        let mut hangup = if self.sighup {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!(
                        "cannot listen for SIGHUP, reload through the management API only: {e}"
                    );
                    None
                }
            }
        } else {
            None
        };
        loop {
            let hup = async {
                match hangup.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                asked = requests.recv() => match asked {
                    Some(reply) => {
                        let report = self.reloader.reload().await;
                        let _ = reply.send(report);
                    }
                    None => return,
                },
                Some(()) = hup => {
                    tracing::info!(file = %self.reloader.path.display(), "SIGHUP: reloading the config");
                    self.reloader.reload().await;
                }
            }
        }
    }
}
