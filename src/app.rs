//! The one wiring module: validated `Config` -> shared state -> pingora `Server` and its services.
//!
//! pingora's own `ServerConf` is derived from ours, so operators never write pingora YAML.
//! pingora owns its runtimes: `run` is synchronous and blocks until shutdown.

use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};

use crate::config::Config;
use crate::proxy::{Gateway, ProxySettings};
use crate::routes::RouteTable;

/// Process-level options from the command line.
#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    pub daemon: bool,
    pub upgrade: bool,
}

/// Builds the pingora server with every service the config asks for.
pub fn build_server(config: &Config, options: &RunOptions) -> anyhow::Result<Server> {
    let conf = ServerConf {
        threads: config.server.threads,
        daemon: options.daemon,
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

    let routes = Arc::new(RouteTable::build(config));
    let gateway = Gateway::new(routes, ProxySettings::from(&config.server));
    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        gateway,
        "x402-gate proxy",
    );
    proxy.add_tcp(&config.server.listen.to_string());
    server.add_service(proxy);
    Ok(server)
}

/// Runs the gateway until `shutdown` fires (default: Unix signals).
pub fn run(
    config: Config,
    options: RunOptions,
    shutdown: Option<Box<dyn ShutdownSignalWatch + Send + Sync>>,
) -> anyhow::Result<()> {
    let server = build_server(&config, &options).context("building the server")?;
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
