//! Request rate limits (`[rate_limit]`): per client IP and per tenant, on the proxy and on the
//! management API. Each limit is a rate (requests per second) with a burst, enforced as GCRA.
//!
//! In process by default (`governor`, one keyed limiter per scope). With `redis_url`, every
//! instance shares one count in Redis: one Lua script (EVALSHA, loaded on first use) runs GCRA
//! atomically on the server's clock, under `x402:rl:[<namespace>:]<scope>:<key>`, each key
//! expiring once its state no longer matters. If Redis errors or takes longer than
//! `redis_timeout_ms`, the local limiter decides instead: logged once per outage (warn), counted
//! in `x402_rate_limit_fallback_total`, and Redis is retried after a short pause. A request is
//! never refused because Redis is down, only by a limit.
//!
//! Callers hold one `RateLimiter` per runtime (the proxy's and the management API's), since a
//! Redis connection belongs to the runtime that opened it.
//! May import: config, metrics.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota};
use redis::aio::MultiplexedConnection;

use crate::config::{RateLimit, RateLimitConfig};
use crate::metrics::Metrics;

/// Which limit a request is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    ProxyIp,
    ProxyTenant,
    AdminIp,
    AdminTenant,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ProxyIp => "proxy_ip",
            Scope::ProxyTenant => "proxy_tenant",
            Scope::AdminIp => "admin_ip",
            Scope::AdminTenant => "admin_tenant",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    const ALL: [Scope; 4] = [
        Scope::ProxyIp,
        Scope::ProxyTenant,
        Scope::AdminIp,
        Scope::AdminTenant,
    ];
}

/// Over the limit: retry after this many whole seconds (rounded up, at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: u64,
}

impl Limited {
    fn after(wait: Duration) -> Self {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Limited {
            retry_after: secs.max(1),
        }
    }
}

struct Local {
    limit: RateLimit,
    limiter: DefaultKeyedRateLimiter<String>,
}

/// How long Redis is left alone after it failed, before the next try.
const REDIS_RETRY_PAUSE: Duration = Duration::from_secs(1);
/// How many keys a local limiter holds before idle ones are dropped.
const LOCAL_MAX_KEYS: usize = 100_000;

/// GCRA on the server's clock, in microseconds. KEYS[1]: the key; ARGV[1]: the emission interval
/// (µs per request); ARGV[2]: the burst. Returns {1, 0} when admitted, {0, wait_µs} when not.
/// The theoretical arrival time is stored as an integer string (Lua's own number formatting
/// would round it) and expires when it is in the past. `replicate_commands` lets Redis before 5
/// write after reading `TIME` (later versions always replicate a script's effects).
const GCRA_LUA: &str = r#"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if allow_at > now then
  return {0, allow_at - now}
end
local ttl_ms = math.floor((new_tat - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl_ms)
return {1, 0}
"#;

struct Shared {
    client: redis::Client,
    script: redis::Script,
    prefix: String,
    timeout: Duration,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// In an outage (Redis failed last): the warning is logged once, at its start.
    down: AtomicBool,
    /// While down, Redis is not asked before this instant (ms since `epoch`).
    retry_at_ms: AtomicU64,
    epoch: Instant,
}

pub struct RateLimiter {
    /// The limits this limiter enforces (a config reload builds a new limiter only when they
    /// change, so counts survive reloads that leave them alone).
    config: RateLimitConfig,
    local: [Option<Local>; 4],
    shared: Option<Shared>,
    metrics: Arc<Metrics>,
}

impl RateLimiter {
    /// The limiter for `config`. A Redis URL that does not parse leaves the limits local (config
    /// validation has already refused one that is malformed).
    pub fn new(config: &RateLimitConfig, metrics: Arc<Metrics>) -> Self {
        let limit_of = |s: Scope| match s {
            Scope::ProxyIp => config.proxy_per_ip,
            Scope::ProxyTenant => config.proxy_per_tenant,
            Scope::AdminIp => config.admin_per_ip,
            Scope::AdminTenant => config.admin_per_tenant,
        };
        let local = Scope::ALL.map(|s| {
            limit_of(s).map(|limit| Local {
                limit,
                limiter: governor::RateLimiter::keyed(quota(limit)),
            })
        });
        let shared =
            config
                .redis_url
                .as_ref()
                .and_then(|url| match redis::Client::open(url.expose()) {
                    Ok(client) => Some(Shared {
                        client,
                        script: redis::Script::new(GCRA_LUA),
                        prefix: match &config.namespace {
                            Some(ns) => format!("x402:rl:{ns}:"),
                            None => "x402:rl:".to_string(),
                        },
                        timeout: config.redis_timeout,
                        conn: tokio::sync::Mutex::new(None),
                        down: AtomicBool::new(false),
                        retry_at_ms: AtomicU64::new(0),
                        epoch: Instant::now(),
                    }),
                    Err(_) => {
                        tracing::error!("rate_limit.redis_url is unusable; rate limits stay local");
                        None
                    }
                });
        RateLimiter {
            config: config.clone(),
            local,
            shared,
            metrics,
        }
    }

    /// The limits it was built for.
    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    /// The limiter for a reloaded `config`: this one when the limits are the same (its counts
    /// and Redis connection kept), a new one otherwise (local counts start afresh; shared ones in
    /// Redis carry on under the same keys).
    pub fn reloaded(self: &Arc<Self>, config: &RateLimitConfig) -> Arc<Self> {
        if &self.config == config {
            self.clone()
        } else {
            Arc::new(Self::new(config, self.metrics.clone()))
        }
    }

    /// Whether any limit applies to `scope`.
    pub fn limits(&self, scope: Scope) -> bool {
        self.local[scope.index()].is_some()
    }

    /// Counts one request of `key` against `scope`'s limit: `Err` when it is over.
    pub async fn check(&self, scope: Scope, key: &str) -> Result<(), Limited> {
        let Some(local) = &self.local[scope.index()] else {
            return Ok(());
        };
        let outcome = match &self.shared {
            // Boxed: the shared counter's future (a Redis round trip) is large, and inline it
            // would be moved into place for every request checked locally too.
            Some(shared) => match Box::pin(shared.check(scope, key, local.limit)).await {
                Some(outcome) => outcome,
                None => {
                    self.metrics.rate_limit_fallback.inc();
                    local.check(key)
                }
            },
            None => local.check(key),
        };
        if outcome.is_err() {
            self.metrics
                .rate_limited
                .with_label_values(&[scope.as_str()])
                .inc();
        }
        outcome
    }
}

fn quota(limit: RateLimit) -> Quota {
    let period = Duration::from_secs_f64(1.0 / limit.rate).max(Duration::from_nanos(1));
    let burst = NonZeroU32::new(limit.burst.max(1)).expect("at least 1");
    Quota::with_period(period)
        .expect("a positive period")
        .allow_burst(burst)
}

impl Local {
    fn check(&self, key: &str) -> Result<(), Limited> {
        let outcome = match self.limiter.check_key(&key.to_string()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let now = governor::clock::Clock::now(&governor::clock::DefaultClock::default());
                Err(Limited::after(not_until.wait_time_from(now)))
            }
        };
        if self.limiter.len() > LOCAL_MAX_KEYS {
            self.limiter.retain_recent();
        }
        outcome
    }
}

impl Shared {
    /// The shared decision, or `None` when Redis cannot give one now (the caller falls back).
    async fn check(
        &self,
        scope: Scope,
        key: &str,
        limit: RateLimit,
    ) -> Option<Result<(), Limited>> {
        if self.down.load(Ordering::Relaxed)
            && self.now_ms() < self.retry_at_ms.load(Ordering::Relaxed)
        {
            return None;
        }
        match tokio::time::timeout(self.timeout, self.eval(scope, key, limit)).await {
            Ok(Ok(outcome)) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!("rate limits: Redis is back; limits are shared again");
                }
                Some(outcome)
            }
            Ok(Err(e)) => {
                self.failed(&e.to_string()).await;
                None
            }
            Err(_) => {
                self.failed(&format!("no answer within {:?}", self.timeout))
                    .await;
                None
            }
        }
    }

    async fn eval(
        &self,
        scope: Scope,
        key: &str,
        limit: RateLimit,
    ) -> redis::RedisResult<Result<(), Limited>> {
        let mut conn = {
            let mut slot = self.conn.lock().await;
            match slot.as_ref() {
                Some(c) => c.clone(),
                None => {
                    let c = self.client.get_multiplexed_async_connection().await?;
                    *slot = Some(c.clone());
                    c
                }
            }
        };
        let interval_us = ((1e6 / limit.rate).round() as u64).max(1);
        let redis_key = format!("{}{}:{}", self.prefix, scope.as_str(), key);
        let (admitted, wait_us): (i64, i64) = self
            .script
            .key(redis_key)
            .arg(interval_us)
            .arg(limit.burst)
            .invoke_async(&mut conn)
            .await?;
        Ok(if admitted == 1 {
            Ok(())
        } else {
            Err(Limited::after(Duration::from_micros(wait_us.max(0) as u64)))
        })
    }

    async fn failed(&self, why: &str) {
        // A broken connection is opened afresh on the next try.
        if let Ok(mut slot) = self.conn.try_lock() {
            *slot = None;
        }
        self.retry_at_ms.store(
            self.now_ms() + REDIS_RETRY_PAUSE.as_millis() as u64,
            Ordering::Relaxed,
        );
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "rate limits: Redis is unavailable ({}); falling back to this instance's own limits",
                crate::x402::redact::scrub(why)
            );
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(rate: f64, burst: u32) -> RateLimitConfig {
        RateLimitConfig {
            proxy_per_tenant: Some(RateLimit { rate, burst }),
            ..RateLimitConfig::default()
        }
    }

    #[tokio::test]
    async fn local_limit_admits_the_burst_then_refuses_per_key() {
        let l = RateLimiter::new(&config(1.0, 3), Arc::new(Metrics::new()));
        for _ in 0..3 {
            assert_eq!(l.check(Scope::ProxyTenant, "a").await, Ok(()));
        }
        let Err(limited) = l.check(Scope::ProxyTenant, "a").await else {
            panic!("the fourth request is over the burst");
        };
        assert_eq!(limited.retry_after, 1);
        assert_eq!(l.check(Scope::ProxyTenant, "b").await, Ok(()));
        // Scopes without a limit admit everything.
        for _ in 0..10 {
            assert_eq!(l.check(Scope::ProxyIp, "a").await, Ok(()));
        }
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(Limited::after(Duration::from_millis(1)).retry_after, 1);
        assert_eq!(Limited::after(Duration::from_millis(1001)).retry_after, 2);
        assert_eq!(Limited::after(Duration::from_secs(3)).retry_after, 3);
    }
}
