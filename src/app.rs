//! The one wiring module: validated `Config` -> shared state -> pingora `Server` and its services.
//!
//! pingora's own `ServerConf` is derived from ours, so operators never write pingora YAML.
//! pingora owns its runtimes: `run` is synchronous and blocks until shutdown.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};

use arc_swap::ArcSwap;

use crate::admin::{AdminService, AdminState};
use crate::cache::VerifyCache;
use crate::config::{Config, NetworkSigner};
use crate::health::{HealthBoard, HealthProbe};
use crate::metrics::{Metrics, MetricsService};
use crate::payments::chain::{ChainBackends, RpcObserver};
use crate::payments::evm::EvmBackend;
use crate::payments::lanes::{Lane, LaneBoard, Lanes, FIRST_LEASE_WAIT};
use crate::payments::svm::SvmBackend;
use crate::payments::Payments;
use crate::pricing::TenantTerms;
use crate::proxy::drain::DrainWatch;
use crate::proxy::idle::Parked;
use crate::proxy::{Gateway, ProxyLive};
use crate::ratelimit::RateLimiter;
use crate::reload::{ConfigReloader, LiveParts, ReloadService};
use crate::routes::reload::{sync_config_tenants, RouteReloader};
use crate::routes::RouteTable;
use crate::settle::leases::{instance_id, LeaseKeeper, LeasedNetwork, SigningLock, HANDOVER_WAIT};
use crate::settle::reconcile::Reconciler;
use crate::settle::worker::SettlementWorker;
use crate::store::{LazyStore, Store};
use crate::tenants::{KeyAuth, TenantDirectory};
use crate::tls::{CertReloader, EdgeCert};

/// Process-level options from the command line.
#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    pub daemon: bool,
    pub upgrade: bool,
    /// The file the config was read from: what a reload reads again. Without it the
    /// management API's reload answers 409.
    pub config_file: Option<PathBuf>,
    /// Reload on SIGHUP (the real binary; an embedded gateway leaves the process's signals).
    pub reload_on_sighup: bool,
}

/// Builds the pingora server with every service the config asks for. `terms` are the tenants'
/// current terms from the store (see `prepare_database`).
pub fn build_server(
    config: &Config,
    options: &RunOptions,
    terms: &HashMap<String, TenantTerms>,
) -> anyhow::Result<Server> {
    let conf = ServerConf {
        threads: config.server.threads,
        daemon: options.daemon,
        // Graceful upgrade (`--upgrade`): the new process receives the listening sockets here.
        upgrade_sock: config.server.upgrade_sock.display().to_string(),
        pid_file: config.server.pid_file.display().to_string(),
        // SIGTERM: stop accepting, let in-flight requests (and their settlements) finish.
        grace_period_seconds: Some(5),
        graceful_shutdown_timeout_seconds: Some(10),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: options.upgrade,
        daemon: options.daemon,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let shared_config = Arc::new(ArcSwap::from_pointee(config.clone()));
    let routes = Arc::new(ArcSwap::from_pointee(RouteTable::build_with(config, terms)));
    // Every rebuild of the route table (tenant refresh, admin change, config reload) takes it.
    let rebuilding = Arc::new(tokio::sync::Mutex::new(()));
    let metrics = Arc::new(Metrics::new());
    // Each EVM network's replacement count starts at 0, so an alert on its increase sees the
    // first one (an unused label set is not exported at all).
    for (network, net) in &config.networks {
        if matches!(net.signer, NetworkSigner::Evm { .. }) {
            metrics
                .ops
                .replacements
                .with_label_values(&[&network.to_string()]);
        }
    }
    let (backends, leased) = build_backends(config, options, Some(metrics.clone()))?;
    let wakeup = Arc::new(tokio::sync::Notify::new());
    // Each service opens its own pool, in its own runtime (see `LazyStore`).
    let db = || Arc::new(LazyStore::new(&config.database.url));
    let proxy_db = db();
    let proxy_tenants = Arc::new(TenantDirectory::new(proxy_db.clone(), config.tiers.clone()));
    let payments = Arc::new(Payments {
        backends: backends.clone(),
        tenants: proxy_tenants.clone(),
        store: proxy_db,
        cache: VerifyCache::with_metrics(metrics.clone()),
        queue_wakeup: wakeup.clone(),
        batchers: Default::default(),
    });
    // Readiness: every configured network is on the board; those with a backend are probed.
    let health_board = Arc::new(HealthBoard::new(
        config.health.clone(),
        &config
            .networks
            .iter()
            .map(|(n, net)| {
                (
                    n.to_string(),
                    backends.get(n).is_some(),
                    net.min_settler_balance,
                )
            })
            .collect::<Vec<_>>(),
    ));
    server.add_service(pingora::services::background::background_service(
        "health probe",
        HealthProbe {
            board: health_board.clone(),
            backends: config
                .networks
                .keys()
                .filter_map(|n| backends.get(n).map(|b| (n.to_string(), b.clone())))
                .collect(),
            metrics: metrics.clone(),
        },
    ));
    server.add_service(pingora::services::background::background_service(
        "metrics",
        MetricsService {
            listen: config.server.metrics_listen,
            metrics: metrics.clone(),
        },
    ));
    let holder = instance_id();
    server.add_service(pingora::services::background::background_service(
        "settler leases",
        LeaseKeeper {
            store: db(),
            networks: leased,
            holder: holder.clone(),
            signing_lock: SigningLock::for_database(&config.database.url),
            handover_until: options
                .upgrade
                .then(|| std::time::Instant::now() + HANDOVER_WAIT),
            waiting_logged: Default::default(),
        },
    ));
    let worker = SettlementWorker::new(
        db(),
        backends.clone(),
        wakeup.clone(),
        metrics.clone(),
        holder,
    );
    server.add_service(pingora::services::background::background_service(
        "settlement reconciler",
        Reconciler {
            store: db(),
            backends: backends.clone(),
        },
    ));
    let api_routes = Arc::new(crate::routes::api::ApiRoutes::default());
    let route_reloader = |store: Arc<LazyStore>| RouteReloader {
        config: shared_config.clone(),
        table: routes.clone(),
        store,
        rebuilding: rebuilding.clone(),
        api: api_routes.clone(),
    };
    server.add_service(pingora::services::background::background_service(
        "tenant terms",
        route_reloader(db()),
    ));
    let proxy_live = Arc::new(ArcSwap::from_pointee(ProxyLive::new(
        &config.server,
        Arc::new(RateLimiter::new(&config.rate_limit, metrics.clone())),
    )));
    let admin_limits = Arc::new(ArcSwap::from_pointee(RateLimiter::new(
        &config.rate_limit,
        metrics.clone(),
    )));
    let admin_db = db();
    // Sharing the proxy's cached standings: a tier changed through the management API (by the
    // operator, a Stripe webhook or an x402 plan payment) applies to the next proxied request.
    let admin_tenants = Arc::new(proxy_tenants.sharing(admin_db.clone()));
    // Reloads run in their own service, one at a time, with their own pool.
    let reload = options.config_file.as_ref().map(|path| {
        let reload_db = db();
        let (service, handle) = ReloadService::new(
            ConfigReloader {
                path: path.clone(),
                store: reload_db.clone(),
                parts: LiveParts {
                    routes: route_reloader(reload_db),
                    tenants: vec![proxy_tenants.clone(), admin_tenants.clone()],
                    proxy: proxy_live.clone(),
                    admin_limits: admin_limits.clone(),
                    health: health_board.clone(),
                },
                metrics: metrics.clone(),
            },
            options.reload_on_sighup,
        );
        server.add_service(pingora::services::background::background_service(
            "config reload",
            service,
        ));
        handle
    });
    let admin = AdminService {
        listen: config.server.admin_listen,
        state: AdminState {
            config: shared_config.clone(),
            store: admin_db.clone(),
            tenants: admin_tenants.clone(),
            keys: Arc::new(KeyAuth::new(admin_db.clone())),
            reloader: Arc::new(route_reloader(admin_db.clone())),
            payments: Arc::new(Payments {
                backends,
                tenants: admin_tenants,
                store: admin_db,
                cache: VerifyCache::with_metrics(metrics.clone()),
                queue_wakeup: wakeup,
                batchers: Default::default(),
            }),
            health: health_board,
            limits: admin_limits,
            reload,
            sessions: Default::default(),
            billing: Arc::new(crate::admin::Billing::new(config)),
        },
    };
    server.add_service(pingora::services::background::background_service(
        "management API",
        admin,
    ));
    server.add_service(pingora::services::background::background_service(
        "deferred settlements",
        worker,
    ));
    let gateway = Gateway::new(routes, proxy_live, payments, metrics.clone());
    server.add_service(pingora::services::background::background_service(
        "drain watch",
        DrainWatch::new(server.watch_execution_phase(), gateway.draining()),
    ));
    let mut proxy = pingora::services::listening::Service::new(
        "x402-gate proxy".to_string(),
        Parked::with_quick(
            pingora::proxy::http_proxy(&server.configuration, gateway.clone()),
            gateway,
        ),
    );
    add_public_listeners(&mut server, &mut proxy, config)?;
    server.add_service(proxy);
    Ok(server)
}

/// The write buffer of each public TLS connection: the same 4 KiB as a plain TCP connection's
/// (`proxy::write_buffer::CAPACITY`, where the size is explained), so a challenge leaves in one
/// `send`; pingora's default (1,460 bytes) splits one offering two networks. pingora allocates it
/// for every connection and keeps it while the connection idles. Bodies of unknown length are
/// flushed chunk by chunk whatever the buffer (pingora), so streaming is not delayed.
const TLS_WRITE_BUFFER: usize = crate::proxy::write_buffer::CAPACITY;
/// The read buffer of each public TLS connection. pingora's default is 64 KiB, allocated zeroed
/// for every connection: 55 KiB of resident memory per idle keep-alive connection (570 MiB for
/// 10,000, measured by `benches/compare.rs`). A request head fits in 4 KiB, and a larger read
/// (a request body) bypasses the buffer, so nothing is read in smaller pieces than before.
const TLS_READ_BUFFER: usize = 4 * 1024;

/// A plain TCP connection has no pingora buffers: `proxy::idle` reads a request's first bytes
/// into a stack buffer and puts them back, pingora then parses the head in its own buffer, and
/// bodies are read into pingora's body buffers; its writes are gathered by `proxy::write_buffer`,
/// taken on a response's first write and given back when the connection next waits for a
/// request. pingora's buffers would be 4 KiB each per idle connection, and a read buffer one
/// more copy of every request.
const TCP_BUFFERS: usize = 0;

fn public_listener(addr: std::net::SocketAddr, tls: bool) -> ListenerConfig {
    let (read, write) = if tls {
        (TLS_READ_BUFFER, TLS_WRITE_BUFFER)
    } else {
        (TCP_BUFFERS, TCP_BUFFERS)
    };
    ListenerConfig::tcp(addr.to_string())
        .l4_buffer(L4BufferSettings::default().read(read).write(write))
}

/// The public listener: plain TCP, or TLS (with HTTP/2 by ALPN) when `[server.tls]` is set; with
/// `server.tls.listen`, both. The certificate is loaded now, so a bad pair stops the start.
fn add_public_listeners(
    server: &mut Server,
    proxy: &mut pingora::services::listening::Service<Parked<pingora::proxy::HttpProxy<Gateway>>>,
    config: &Config,
) -> anyhow::Result<()> {
    let Some(tls) = &config.server.tls else {
        proxy.add_listener(public_listener(config.server.listen, false));
        return Ok(());
    };
    let cert = Arc::new(EdgeCert::load(tls).context("server.tls")?);
    let tls_listen = match tls.listen {
        Some(addr) => {
            proxy.add_listener(public_listener(config.server.listen, false));
            addr
        }
        None => config.server.listen,
    };
    proxy.add_listener(public_listener(tls_listen, true).tls(cert.listener_settings(tls.http2)?));
    server.add_service(pingora::services::background::background_service(
        "TLS certificate reloader",
        CertReloader { cert },
    ));
    Ok(())
}

/// One verifier per configured network that this build can verify: for EVM, one lane per
/// settler key behind `Lanes`, and the networks whose keys the lease keeper must lease.
pub fn build_backends(
    config: &Config,
    options: &RunOptions,
    rpc_observer: Option<Arc<dyn RpcObserver>>,
) -> anyhow::Result<(ChainBackends, Vec<LeasedNetwork>)> {
    // Taking over from a running process (`--upgrade`), payments wait for its keys for as long as
    // it may take to drain, instead of failing as those of an instance without keys.
    let first_wait = if options.upgrade {
        HANDOVER_WAIT
    } else {
        FIRST_LEASE_WAIT
    };
    let mut backends = ChainBackends::default();
    let mut leased = Vec::new();
    for (network, net) in &config.networks {
        match &net.signer {
            NetworkSigner::Evm {
                settler_keys,
                confirmations,
                batch_max,
                settlements_in_flight,
                replace_after,
            } => {
                let mut lanes = Vec::new();
                for key in settler_keys {
                    let v = EvmBackend::observed(
                        network,
                        &net.rpc_url,
                        key.expose(),
                        *confirmations,
                        net.rpc_timeout,
                        rpc_observer.clone(),
                    )
                    .with_context(|| format!("networks.\"{network}\""))?
                    .with_batching(*batch_max, *settlements_in_flight)
                    .with_replacement(*replace_after);
                    lanes.push(Lane {
                        settler: v.settler_address().to_checksum(None),
                        verifier: Arc::new(v),
                    });
                }
                let settlers: Vec<String> = lanes.iter().map(|l| l.settler.clone()).collect();
                tracing::info!(%network, settlers = ?settlers, "EVM payments enabled");
                let board = Arc::new(LaneBoard::with_first_wait(lanes.len(), first_wait));
                leased.push(LeasedNetwork {
                    network: network.to_string(),
                    settlers: settlers.iter().map(|s| s.to_ascii_lowercase()).collect(),
                    board: board.clone(),
                });
                backends.insert(
                    network.clone(),
                    Arc::new(Lanes::new(network.to_string(), lanes, board)),
                );
            }
            NetworkSigner::Solana {
                fee_payer_key,
                commitment,
                ..
            } => {
                // No lease: Solana has no settler nonce, so instances may co-sign with one fee
                // payer at once; each payment is claimed once in the shared store.
                let v = SvmBackend::new(
                    network,
                    &net.rpc_url,
                    fee_payer_key.expose(),
                    *commitment,
                    net.rpc_timeout,
                )
                .with_context(|| format!("networks.\"{network}\""))?;
                tracing::info!(%network, fee_payer = %v.fee_payer(), commitment = commitment.as_str(), "Solana payments enabled");
                backends.insert(network.clone(), Arc::new(v));
            }
        }
    }
    Ok((backends, leased))
}

/// Opens the database once at start, so a wrong URL or a failed migration stops the gateway
/// before it listens, instead of failing every paid request; creates or updates the tenants the
/// config declares; and returns every tenant's current terms. The pool is dropped with its
/// throwaway runtime; the services open their own.
pub fn prepare_database(config: &Config) -> anyhow::Result<HashMap<String, TenantTerms>> {
    let url = &config.database.url;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let store = Store::connect(url).await?;
        sync_config_tenants(&store, config).await
    })
    .with_context(|| format!("database.url `{}`", redact_url(url)))
}

/// A database URL without its password, for messages.
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// Runs the gateway until `shutdown` fires (default: Unix signals).
pub fn run(
    config: Config,
    options: RunOptions,
    shutdown: Option<Box<dyn ShutdownSignalWatch + Send + Sync>>,
) -> anyhow::Result<()> {
    if options.reload_on_sighup {
        crate::reload::catch_sighup().context("handling SIGHUP")?;
    }
    let terms = prepare_database(&config)?;
    let server = build_server(&config, &options, &terms).context("building the server")?;
    tracing::info!(listen = %config.server.listen, routes = config.routes.len(), "x402-gate starting");
    let args = match shutdown {
        Some(signal) => RunArgs {
            shutdown_signal: signal,
        },
        None => RunArgs::default(),
    };
    server.run(args);
    Ok(())
}

/// A shutdown signal driven by a channel, for embedding the gateway (tests, benchmarks).
pub struct ChannelShutdown(pub tokio::sync::watch::Receiver<bool>);

#[async_trait]
impl ShutdownSignalWatch for ChannelShutdown {
    async fn recv(&self) -> ShutdownSignal {
        let mut rx = self.0.clone();
        // An error means the sender is gone, which is a request to stop too.
        let _ = rx.wait_for(|stop| *stop).await;
        ShutdownSignal::FastShutdown
    }
}
