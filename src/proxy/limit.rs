//! Rate limit on invalid payments, per client IP (config.md: invalid proofs never count toward a
//! tenant's quota, but they are rate limited). A client over the limit gets a 429 for requests
//! carrying a payment, before any decoding or RPC call; requests without one still get their 402.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use moka::sync::Cache;

pub struct InvalidPaymentLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    /// IPs over the limit, until when.
    blocked: Cache<IpAddr, Instant>,
}

impl InvalidPaymentLimiter {
    /// `per_minute` invalid payments per IP, with bursts of the same size.
    pub fn new(per_minute: u32) -> Self {
        let n = NonZeroU32::new(per_minute.max(1)).expect("at least 1");
        InvalidPaymentLimiter {
            limiter: RateLimiter::keyed(Quota::per_minute(n)),
            blocked: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
        }
    }

    /// Seconds until `ip` may present a payment again, if it is blocked now.
    pub fn blocked_for(&self, ip: IpAddr) -> Option<u64> {
        let until = self.blocked.get(&ip)?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then(|| left.as_secs().max(1))
    }

    /// Records an invalid payment from `ip`; past the limit, the IP is blocked until the limiter
    /// would admit it again.
    pub fn record_invalid(&self, ip: IpAddr) {
        if let Err(not_until) = self.limiter.check_key(&ip) {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            self.blocked.insert(ip, Instant::now() + wait);
        }
        // Forget idle keys now and then so the limiter's state stays bounded.
        if self.limiter.len() > 100_000 {
            self.limiter.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_per_ip() {
        let l = InvalidPaymentLimiter::new(3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(l.blocked_for(a), None);
            l.record_invalid(a);
        }
        assert_eq!(
            l.blocked_for(a),
            None,
            "three invalid payments are within the limit"
        );
        l.record_invalid(a);
        assert!(l.blocked_for(a).is_some_and(|s| (1..=60).contains(&s)));
        assert_eq!(l.blocked_for(b), None, "other clients are not affected");
    }
}
