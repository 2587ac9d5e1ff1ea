//! The operational metrics beside the payment funnel: RPC calls, the verification cache, the
//! origins, the deferred queue, settler lanes, config reloads and the build. Every label value
//! comes from the config or from a fixed set in the code, never from a request.

use prometheus::{
    Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use super::Metrics;
use crate::payments::chain::{RpcObserver, RpcOutcome};

/// Seconds, from a fast local call to a slow remote one.
pub(super) const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The commit the binary was built from (`build.rs`), or `unknown`.
pub const COMMIT: &str = env!("X402_GATE_COMMIT_ID");

pub struct Ops {
    /// `x402_rpc_calls_total{network,method,outcome}`: ok, rpc_error, transport_error.
    pub rpc_calls: IntCounterVec,
    /// `x402_rpc_call_duration_seconds{network,method}`.
    pub rpc_seconds: HistogramVec,
    /// `x402_settlement_replacements_total{network}`: replacements signed for stuck settlements
    /// (each EVM network's series made at start, at 0).
    pub replacements: IntCounterVec,
    /// `x402_verification_cache_total{result="hit"}`: a payment verified from the cache.
    pub cache_hit: IntCounter,
    /// `x402_verification_cache_total{result="miss"}`: a payment verified by its backend.
    pub cache_miss: IntCounter,
    /// `x402_upstream_responses_total{route,status}`: the origin's final status class (2xx...)
    /// or `error` (unreachable, reset, timed out), by configured route.
    pub upstream_responses: IntCounterVec,
    /// `x402_upstream_duration_seconds{route}`: from forwarding to the origin's response head.
    pub upstream_seconds: HistogramVec,
    /// `x402_deferred_queue_depth`: deferred settlements waiting (all instances sharing the
    /// database see the same queue).
    pub queue_depth: IntGauge,
    /// `x402_deferred_queue_oldest_age_seconds`: how long the oldest of them has waited.
    pub queue_oldest_age: Gauge,
    /// `x402_settler_lane_held{network,settler}`: 1 while this instance holds the key's lease.
    pub lane_held: IntGaugeVec,
    /// `x402_settler_next_nonce{network,settler}`: the nonce the lane signs with next.
    pub settler_nonce: IntGaugeVec,
    /// `x402_config_reloads_total{result}`: applied, invalid, failed.
    pub reloads: IntCounterVec,
    /// `x402_config_last_reload_success`: 1 when the last reload (or the start) applied.
    pub reload_success: IntGauge,
    /// `x402_config_last_reload_timestamp_seconds`: Unix time of the last reload (or the start).
    pub reload_time: Gauge,
    /// `x402_config_restart_required`: changes in the file waiting for a restart or upgrade.
    pub restart_pending: IntGauge,
    /// `x402_build_info{version,commit}`: always 1.
    pub build_info: IntGaugeVec,
}

impl Ops {
    pub(super) fn register(registry: &Registry) -> Ops {
        fn reg<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
            r.register(Box::new(c.clone())).expect("unique metric");
            c
        }
        let counter = |name: &str, help: &str, labels: &[&str]| {
            reg(
                registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            reg(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()),
                    labels,
                )
                .expect("valid metric"),
            )
        };
        let int_gauge = |name: &str, help: &str, labels: &[&str]| {
            reg(
                registry,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let cache = counter(
            "x402_verification_cache_total",
            "Verification cache lookups: hit (answered from the cache) or miss (verified by the \
             chain backend, or joined a verification of the same proof under way)",
            &["result"],
        );
        let build_info = int_gauge(
            "x402_build_info",
            "The running build: version and commit",
            &["version", "commit"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), COMMIT])
            .set(1);
        let ops = Ops {
            rpc_calls: counter(
                "x402_rpc_calls_total",
                "JSON-RPC calls to each network's node, by method and outcome",
                &["network", "method", "outcome"],
            ),
            rpc_seconds: histogram(
                "x402_rpc_call_duration_seconds",
                "Time of each JSON-RPC call, by network and method",
                &["network", "method"],
            ),
            replacements: counter(
                "x402_settlement_replacements_total",
                "Replacement transactions signed for settlements sent and not mined in time",
                &["network"],
            ),
            cache_hit: cache.with_label_values(&["hit"]),
            cache_miss: cache.with_label_values(&["miss"]),
            upstream_responses: counter(
                "x402_upstream_responses_total",
                "Origin answers by configured route and status class (error: no answer)",
                &["route", "status"],
            ),
            upstream_seconds: histogram(
                "x402_upstream_duration_seconds",
                "Time from forwarding a request to the origin's response head, by route",
                &["route"],
            ),
            queue_depth: reg(
                registry,
                IntGauge::new(
                    "x402_deferred_queue_depth",
                    "Deferred settlements waiting in the queue",
                )
                .expect("valid metric"),
            ),
            queue_oldest_age: reg(
                registry,
                Gauge::new(
                    "x402_deferred_queue_oldest_age_seconds",
                    "How long the oldest deferred settlement in the queue has waited",
                )
                .expect("valid metric"),
            ),
            lane_held: int_gauge(
                "x402_settler_lane_held",
                "1 while this instance holds the lease of the settler key (its nonce lane)",
                &["network", "settler"],
            ),
            settler_nonce: int_gauge(
                "x402_settler_next_nonce",
                "The nonce the settler key signs its next settlement with",
                &["network", "settler"],
            ),
            reloads: counter(
                "x402_config_reloads_total",
                "Config reloads (SIGHUP or the management API) by result",
                &["result"],
            ),
            reload_success: reg(
                registry,
                IntGauge::new(
                    "x402_config_last_reload_success",
                    "1 when the last config reload (or the start) applied, 0 when it was refused",
                )
                .expect("valid metric"),
            ),
            reload_time: reg(
                registry,
                Gauge::new(
                    "x402_config_last_reload_timestamp_seconds",
                    "Unix time of the last config reload attempt (or the start)",
                )
                .expect("valid metric"),
            ),
            restart_pending: reg(
                registry,
                IntGauge::new(
                    "x402_config_restart_required",
                    "Changes in the config file that wait for a restart or graceful upgrade",
                )
                .expect("valid metric"),
            ),
            build_info,
        };
        ops.reload_success.set(1);
        ops.reload_time.set(unix_seconds());
        ops
    }
}

/// Unix time now, in (fractional) seconds.
pub fn unix_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl RpcObserver for Metrics {
    fn rpc_call(&self, network: &str, method: &'static str, outcome: RpcOutcome, seconds: f64) {
        self.ops
            .rpc_calls
            .with_label_values(&[network, method, outcome.as_str()])
            .inc();
        self.ops
            .rpc_seconds
            .with_label_values(&[network, method])
            .observe(seconds);
    }

    fn settlement_replaced(&self, network: &str) {
        self.ops.replacements.with_label_values(&[network]).inc();
    }
}
