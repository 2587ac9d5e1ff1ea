//! In-memory caches (moka). Never the authority on replay or money: a cached "valid" only saves
//! the RPC round trip of verification; the store's claim still decides whether a proof is served.
//! A proof whose claim was released or whose settlement failed is forgotten here, so presenting it
//! again is checked on-chain again (the payer may have spent or cancelled it meanwhile).
//! Lookups are counted in `x402_verification_cache_total{result}` when built `with_metrics`.
//! May import: payments::chain (value types only, never a backend), pricing, metrics, x402.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use sha2::{Digest, Sha256};

use crate::metrics::Metrics;
use crate::payments::chain::{unix_now, Verified, VerifyError};
use crate::pricing::Offer;

/// How long a successful verification is reused. Short: the payer can move funds meanwhile, and
/// settlement re-checks on-chain anyway.
const VALID_TTL: Duration = Duration::from_secs(30);
/// How long an invalid proof is remembered, so a client hammering with garbage costs no RPC.
const INVALID_TTL: Duration = Duration::from_secs(5);
const CAPACITY: u64 = 100_000;
/// Longer than any verification (RPC timeouts bound them); only a vanished one lives this long.
const IN_FLIGHT_TTL: Duration = Duration::from_secs(120);

/// One verification under way, shared by every request presenting the same proof meanwhile.
pub type InFlight = Arc<tokio::sync::OnceCell<Result<Arc<Verified>, VerifyError>>>;

#[derive(Clone)]
pub struct VerifyCache {
    valid: Cache<[u8; 32], Arc<Verified>>,
    invalid: Cache<[u8; 32], VerifyError>,
    /// Verifications under way: twenty concurrent copies of one proof cost one RPC round trip,
    /// not twenty (a replay storm is not an amplifier against our node). The TTL only bounds an
    /// entry whose verifying request vanished; a finished one is removed at once.
    in_flight: Cache<[u8; 32], InFlight>,
    metrics: Option<Arc<Metrics>>,
}

impl Default for VerifyCache {
    fn default() -> Self {
        VerifyCache {
            valid: Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(VALID_TTL)
                .build(),
            invalid: Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(INVALID_TTL)
                .build(),
            in_flight: Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(IN_FLIGHT_TTL)
                .build(),
            metrics: None,
        }
    }
}

impl VerifyCache {
    /// A cache whose lookups are counted (hits and misses) in `metrics`.
    pub fn with_metrics(metrics: Arc<Metrics>) -> Self {
        VerifyCache {
            metrics: Some(metrics),
            ..Self::default()
        }
    }

    /// The key of a proof presented for an offer: the header bytes and what they were checked
    /// against, so one proof checked against two different prices is two entries.
    pub fn key(header: &[u8], offer: &Offer) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(header);
        h.update([0]);
        h.update(offer.requirement.network.as_bytes());
        h.update(offer.requirement.asset.as_bytes());
        h.update(offer.requirement.pay_to.as_bytes());
        h.update(offer.requirement.amount.as_bytes());
        h.finalize().into()
    }

    /// A remembered outcome. A valid one is only returned while the authorization has time left.
    pub async fn get(&self, key: &[u8; 32]) -> Option<Result<Arc<Verified>, VerifyError>> {
        let found = self.lookup(key).await;
        if let Some(m) = &self.metrics {
            match found {
                Some(_) => m.ops.cache_hit.inc(),
                None => m.ops.cache_miss.inc(),
            }
        }
        found
    }

    async fn lookup(&self, key: &[u8; 32]) -> Option<Result<Arc<Verified>, VerifyError>> {
        if let Some(v) = self.valid.get(key).await {
            if v.expires_at >= unix_now() + 6 {
                return Some(Ok(v));
            }
            self.valid.invalidate(key).await;
        }
        self.invalid.get(key).await.map(Err)
    }

    /// Forgets a proof's outcome: the next presentation is verified on-chain again.
    pub async fn invalidate(&self, key: &[u8; 32]) {
        self.valid.invalidate(key).await;
        self.invalid.invalidate(key).await;
    }

    /// The verification of `key` under way, joined, or a new one to run: whoever runs the cell's
    /// initializer verifies; everyone else waits for its outcome. If the runner's request is
    /// dropped mid-way, a waiter takes over (tokio's `OnceCell`).
    pub async fn in_flight(&self, key: [u8; 32]) -> InFlight {
        self.in_flight
            .get_with(key, async { Arc::new(tokio::sync::OnceCell::new()) })
            .await
    }

    /// The verification of `key` finished and its outcome is stored (or was an outage): the
    /// next presentation starts from the caches again.
    pub async fn finished(&self, key: &[u8; 32]) {
        self.in_flight.invalidate(key).await;
    }

    pub async fn put(&self, key: [u8; 32], outcome: &Result<Arc<Verified>, VerifyError>) {
        match outcome {
            Ok(v) => self.valid.insert(key, v.clone()).await,
            Err(e @ VerifyError::Invalid { .. }) => self.invalid.insert(key, e.clone()).await,
            // An outage says nothing about the proof.
            Err(VerifyError::Unavailable(_)) => {}
        }
    }
}
