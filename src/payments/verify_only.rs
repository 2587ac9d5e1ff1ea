//! Verification through the cache, without a claim: the first step of admission, and the whole of
//! the verify API (and of a future facilitator endpoint).

use std::sync::Arc;

use super::Payments;
use crate::cache::VerifyCache;
use crate::pricing::Offer;
use crate::verify::{PaymentVerifier, Verified, VerifyError};
use crate::x402::{PaymentProof, Reason};

/// A verification outcome, and whether it came from the cache.
#[derive(Debug, Clone)]
pub struct Verification {
    pub outcome: Result<Arc<Verified>, VerifyError>,
    pub cached: bool,
    /// The cache key of this proof for this offer (forgotten when its claim is released).
    pub key: [u8; 32],
    /// When the chain was asked (Unix seconds; for a cached outcome, as early as it could have
    /// been): what it showed may have changed since.
    pub checked_at: i64,
}

/// How old a cached outcome can be (the cache keeps valid ones 30 s), plus a second of rounding.
const CACHE_AGE_BOUND: i64 = 31;

/// Verifies `proof` against `offer` with the network's backend, or recalls the outcome (valid
/// 30 s, invalid 5 s). `raw` is the proof as presented, the cache's identity of it.
pub async fn verify_only(
    payments: &Payments,
    offer: &Offer,
    proof: &PaymentProof,
    raw: &[u8],
) -> Verification {
    let Some(verifier) = payments.verifiers.get(&offer.network) else {
        return Verification {
            outcome: Err(VerifyError::invalid(
                Reason::UnexpectedVerifyError,
                format!("payments on {} are not verifiable here", offer.network),
            )),
            cached: false,
            key: VerifyCache::key(raw, offer),
            checked_at: crate::store::now(),
        };
    };
    verify_cached(payments, verifier.as_ref(), offer, proof, raw).await
}

pub(super) async fn verify_cached(
    payments: &Payments,
    verifier: &dyn PaymentVerifier,
    offer: &Offer,
    proof: &PaymentProof,
    raw: &[u8],
) -> Verification {
    let key = VerifyCache::key(raw, offer);
    let now = crate::store::now();
    if let Some(hit) = payments.cache.get(&key).await {
        return Verification {
            outcome: hit,
            cached: true,
            key,
            checked_at: now - CACHE_AGE_BOUND,
        };
    }
    let fresh = verifier.verify(offer, proof).await.map(Arc::new);
    payments.cache.put(key, &fresh).await;
    Verification {
        outcome: fresh,
        cached: false,
        key,
        checked_at: now,
    }
}
