//! `[rate_limit]` and `[health]`: rates, bursts, the Redis URL, probe intervals and bounds.

use super::*;

pub(super) const MAX_RATE: f64 = 1_000_000.0;

pub(super) const MAX_BURST: u64 = 1_000_000;

pub(super) const MAX_REDIS_TIMEOUT_MS: u64 = 10_000;

pub(super) fn rate_limit(raw: RawRateLimitSection, e: &mut Errors) -> RateLimitConfig {
    let mut one = |path: &str, raw: Option<RawRate>| -> Option<RateLimit> {
        let raw = raw?;
        let Some(rate) = raw.rate else {
            e.push(format!("{path}.rate"), "is required (requests per second)");
            return None;
        };
        if !(rate.is_finite() && rate > 0.0 && rate <= MAX_RATE) {
            e.push(
                format!("{path}.rate"),
                format!("must be a number of requests per second above 0 and at most {MAX_RATE}"),
            );
            return None;
        }
        let burst = raw.burst.unwrap_or_else(|| rate.ceil().max(1.0) as u64);
        if !(1..=MAX_BURST).contains(&burst) {
            e.push(
                format!("{path}.burst"),
                format!("must be between 1 and {MAX_BURST}"),
            );
            return None;
        }
        Some(RateLimit {
            rate,
            burst: burst as u32,
        })
    };
    let proxy_per_ip = one("rate_limit.proxy.per_ip", raw.proxy.per_ip);
    let proxy_per_tenant = one("rate_limit.proxy.per_tenant", raw.proxy.per_tenant);
    let admin_per_ip = one("rate_limit.admin.per_ip", raw.admin.per_ip);
    let admin_per_tenant = one("rate_limit.admin.per_tenant", raw.admin.per_tenant);
    let redis_url = raw.redis_url.map(|url| {
        let known = ["redis://", "rediss://", "redis+unix://", "unix://"];
        if !known.iter().any(|p| url.starts_with(p)) {
            e.push(
                "rate_limit.redis_url",
                "must start with redis://, rediss://, redis+unix:// or unix://",
            );
        } else if let Err(err) = redis_url_ok(&url) {
            e.push("rate_limit.redis_url", err);
        }
        Secret::new(url)
    });
    let namespace = raw.namespace.filter(|n| {
        let ok = !n.is_empty()
            && n.len() <= 64
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
        if !ok {
            e.push(
                "rate_limit.namespace",
                "must be 1 to 64 characters of letters, digits, '-', '_', '.' or ':'",
            );
        }
        ok
    });
    let timeout_ms = raw.redis_timeout_ms.unwrap_or(100);
    if !(1..=MAX_REDIS_TIMEOUT_MS).contains(&timeout_ms) {
        e.push(
            "rate_limit.redis_timeout_ms",
            format!("must be between 1 and {MAX_REDIS_TIMEOUT_MS}"),
        );
    }
    RateLimitConfig {
        proxy_per_ip,
        proxy_per_tenant,
        admin_per_ip,
        admin_per_tenant,
        redis_url,
        namespace,
        redis_timeout: Duration::from_millis(timeout_ms.clamp(1, MAX_REDIS_TIMEOUT_MS)),
    }
}

/// A Redis URL parses (its text is never echoed: it may carry a password).
pub(super) fn redis_url_ok(url: &str) -> Result<(), String> {
    url::Url::parse(url)
        .map(|_| ())
        .map_err(|_| "is not a valid URL".to_string())
}

pub(super) const DEFAULT_PROBE_INTERVAL: u64 = 5;

pub(super) const DEFAULT_RPC_MAX_AGE: u64 = 30;

pub(super) const DEFAULT_STORE_TIMEOUT: u64 = 2;

pub(super) fn health(raw: RawHealth, e: &mut Errors) -> HealthConfig {
    let mut secs = |key: &str, value: Option<u64>, default: u64, max: u64| -> u64 {
        let v = value.unwrap_or(default);
        if !(1..=max).contains(&v) {
            e.push(
                format!("health.{key}"),
                format!("must be between 1 and {max}"),
            );
            return default;
        }
        v
    };
    let interval = secs(
        "probe_interval_seconds",
        raw.probe_interval_seconds,
        DEFAULT_PROBE_INTERVAL,
        3600,
    );
    let max_age = secs(
        "rpc_max_age_seconds",
        raw.rpc_max_age_seconds,
        DEFAULT_RPC_MAX_AGE,
        86400,
    );
    let store = secs(
        "store_timeout_seconds",
        raw.store_timeout_seconds,
        DEFAULT_STORE_TIMEOUT,
        60,
    );
    if max_age <= interval {
        // One probe late would make the gateway flap between ready and not.
        e.push(
            "health.rpc_max_age_seconds",
            format!("must be longer than health.probe_interval_seconds ({interval})"),
        );
    }
    HealthConfig {
        probe_interval: Duration::from_secs(interval),
        rpc_max_age: Duration::from_secs(max_age),
        store_timeout: Duration::from_secs(store),
    }
}
