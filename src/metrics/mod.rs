//! Prometheus metrics for the whole payment funnel, one place. A registry per gateway instance
//! (not the process-global one), so tests and embedded gateways never share counters.
//! Served as text on `server.metrics_listen` at `/metrics`.
//!
//! The funnel, in order:
//! - `x402_requests_total{route}`: requests by route kind (free, priced, no_route);
//! - `x402_challenges_total`: 402s answered to requests without a payment;
//! - `x402_payment_attempts_total{outcome}`: requests carrying a payment: admitted, invalid,
//!   duplicate, quota_exceeded, unavailable, rate_limited;
//! - `x402_payments_verified_total{tenant,network}`: payments verified and claimed;
//! - `x402_settlements_total{network,policy,outcome}`: settled, failed, pending, unavailable,
//!   queued, released (not charged);
//! - `x402_settlement_duration_seconds{network}` and `x402_verification_duration_seconds{network}`;
//! - `x402_tenant_refusals_total{reason}`: tenant_suspended, tenant_quota_exceeded before a
//!   challenge.
//!
//! Health (written by the probe in `health.rs`; one series per configured network and settler
//! key, so the label sets stay bounded by the config):
//! - `x402_rpc_up{network}`: 1 while the network's RPC answered a probe within
//!   `health.rpc_max_age_seconds`, else 0;
//! - `x402_settler_balance_wei{network,settler}`: each settler key's gas balance, in the chain's
//!   smallest native unit (wei on EVM);
//! - `x402_settler_below_floor{network,settler}`: 1 when that balance is below the network's
//!   `min_settler_balance`, else 0 (always 0 without a floor).
//!
//! Rate limits (`[rate_limit]`, see `ratelimit.rs`):
//! - `x402_rate_limited_total{scope}`: 429 `rate_limited` answers by limit (proxy_ip,
//!   proxy_tenant, admin_ip, admin_tenant);
//! - `x402_rate_limit_fallback_total`: decisions the local limiter took because Redis was down or
//!   slow.
//!
//! Operations (`ops.rs`, in `Metrics::ops`): `x402_rpc_calls_total{network,method,outcome}` and
//! `x402_rpc_call_duration_seconds{network,method}` (every JSON-RPC call, timed under alloy's
//! client); `x402_verification_cache_total{result}`; `x402_upstream_responses_total{route,status}`
//! and `x402_upstream_duration_seconds{route}` (route: the configured pattern, never the request's
//! path); `x402_deferred_queue_depth` and `x402_deferred_queue_oldest_age_seconds`;
//! `x402_settler_lane_held{network,settler}` and `x402_settler_next_nonce{network,settler}`;
//! `x402_config_reloads_total{result}`, `x402_config_last_reload_success`,
//! `x402_config_last_reload_timestamp_seconds`, `x402_config_restart_required`; and
//! `x402_build_info{version,commit}`.
//!
//! May import: payments::chain (the `RpcObserver` trait it implements).

mod ops;

pub use ops::{unix_seconds, Ops, COMMIT};

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub challenges: IntCounter,
    /// Requests answered from their head alone (`proxy::quick`).
    pub quick_answers: IntCounter,
    pub attempts: IntCounterVec,
    pub verified: IntCounterVec,
    pub settlements: IntCounterVec,
    pub settlement_seconds: HistogramVec,
    pub verification_seconds: HistogramVec,
    pub tenant_refusals: IntCounterVec,
    pub rpc_up: IntGaugeVec,
    pub settler_balance: GaugeVec,
    pub settler_below_floor: IntGaugeVec,
    pub rate_limited: IntCounterVec,
    pub rate_limit_fallback: IntCounter,
    /// RPC, cache, origins, queue, lanes, reloads, build.
    pub ops: Ops,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        // Settlement on a fast chain takes milliseconds, on a slow one seconds.
        let buckets = ops::BUCKETS.to_vec();
        let histogram = |name: &str, help: &str| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.clone()),
                &["network"],
            )
            .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let challenges = IntCounter::new(
            "x402_challenges_total",
            "402 challenges answered to requests without a payment",
        )
        .expect("valid metric");
        registry
            .register(Box::new(challenges.clone()))
            .expect("unique metric");
        let quick_answers = IntCounter::new(
            "x402_quick_answers_total",
            "Requests answered from their head alone, without pingora's session (unpaid requests for priced routes on plain HTTP/1.1); also counted in x402_requests_total",
        )
        .expect("valid metric");
        registry
            .register(Box::new(quick_answers.clone()))
            .expect("unique metric");
        let int_gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let settler_balance = GaugeVec::new(
            Opts::new(
                "x402_settler_balance_wei",
                "Gas balance of each settler key, in the chain's smallest native unit",
            ),
            &["network", "settler"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(settler_balance.clone()))
            .expect("unique metric");
        let rate_limit_fallback = IntCounter::new(
            "x402_rate_limit_fallback_total",
            "Rate limit decisions taken by the local limiter because Redis was unavailable",
        )
        .expect("valid metric");
        registry
            .register(Box::new(rate_limit_fallback.clone()))
            .expect("unique metric");
        Metrics {
            rate_limited: counter(
                "x402_rate_limited_total",
                "Requests refused with a 429 rate_limited, by limit",
                &["scope"],
            ),
            rate_limit_fallback,
            rpc_up: int_gauge(
                "x402_rpc_up",
                "1 while the network's RPC answered a health probe recently",
                &["network"],
            ),
            settler_balance,
            settler_below_floor: int_gauge(
                "x402_settler_below_floor",
                "1 when a settler's gas balance is below the network's min_settler_balance",
                &["network", "settler"],
            ),
            requests: counter("x402_requests_total", "Requests by route kind", &["route"]),
            challenges,
            quick_answers,
            attempts: counter(
                "x402_payment_attempts_total",
                "Requests carrying a payment, by outcome",
                &["outcome"],
            ),
            verified: counter(
                "x402_payments_verified_total",
                "Payments verified and claimed",
                &["tenant", "network"],
            ),
            settlements: counter(
                "x402_settlements_total",
                "Settlement outcomes",
                &["network", "policy", "outcome"],
            ),
            settlement_seconds: histogram(
                "x402_settlement_duration_seconds",
                "Time to settle on-chain, from signing to receipt",
            ),
            verification_seconds: histogram(
                "x402_verification_duration_seconds",
                "Time to verify a payment, cached answers included",
            ),
            tenant_refusals: counter(
                "x402_tenant_refusals_total",
                "Priced requests refused for the tenant's standing",
                &["reason"],
            ),
            ops: Ops::register(&registry),
            registry,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// Serves `/metrics` on `server.metrics_listen`.
pub struct MetricsService {
    pub listen: SocketAddr,
    pub metrics: Arc<Metrics>,
}

#[async_trait]
impl BackgroundService for MetricsService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Shared with the successor of a graceful upgrade (see `net`).
        let listener = match crate::net::bind_shared(self.listen) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(listen = %self.listen, "the metrics endpoint cannot listen: {e}");
                return;
            }
        };
        let metrics = self.metrics.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        metrics.render(),
                    )
                }
            }),
        );
        let stop = async move {
            let _ = shutdown.changed().await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!("metrics endpoint: {e}");
        }
    }
}
