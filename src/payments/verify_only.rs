//! Verification through the cache, without a claim: the first step of admission, and the whole of
//! the verify API (and of a future facilitator endpoint).

use std::sync::Arc;

use super::Payments;
use crate::cache::VerifyCache;
use crate::config::AssetConfig;
use crate::payments::chain::{ChainBackend, TransferFacts, Verified, VerifyError};
use crate::pricing::Offer;
use crate::store::{period_of, TransactionUse};
use crate::x402::{Network, PaymentProof, Reason};

/// A verification outcome, and whether it came from the cache.
#[derive(Debug, Clone)]
pub struct Verification {
    pub outcome: Result<Arc<Verified>, VerifyError>,
    pub cached: bool,
    /// The cache key of this proof for this offer (forgotten when its claim is released).
    pub key: [u8; 32],
    /// When the chain was asked (Unix milliseconds; for a cached outcome, as early as it could
    /// have been): what it showed may have changed since.
    pub checked_at_ms: i64,
}

/// How old a cached outcome can be: the cache keeps valid ones 30 s.
const CACHE_AGE_BOUND_MS: i64 = 30_000;

/// Verifies `proof` against `offer` with the network's backend, or recalls the outcome (valid
/// 30 s, invalid 5 s). `raw` is the proof as presented, the cache's identity of it.
pub async fn verify_only(
    payments: &Payments,
    offer: &Offer,
    proof: &PaymentProof,
    raw: &[u8],
) -> Verification {
    let Some(verifier) = payments.backends.get(&offer.network) else {
        return Verification {
            outcome: Err(VerifyError::invalid(
                Reason::UnexpectedVerifyError,
                format!("payments on {} are not verifiable here", offer.network),
            )),
            cached: false,
            key: VerifyCache::key(raw, offer),
            checked_at_ms: crate::store::now_ms(),
        };
    };
    verify_cached(payments, verifier.as_ref(), offer, proof, raw).await
}

pub(super) async fn verify_cached(
    payments: &Payments,
    verifier: &dyn ChainBackend,
    offer: &Offer,
    proof: &PaymentProof,
    raw: &[u8],
) -> Verification {
    let key = VerifyCache::key(raw, offer);
    let now_ms = crate::store::now_ms();
    if let Some(hit) = payments.cache.get(&key).await {
        return Verification {
            outcome: hit,
            cached: true,
            key,
            checked_at_ms: now_ms - CACHE_AGE_BOUND_MS,
        };
    }
    // Concurrent presentations of one proof share one verification.
    let ran = std::sync::atomic::AtomicBool::new(false);
    let cell = payments.cache.in_flight(key).await;
    let outcome = cell
        .get_or_init(|| async {
            ran.store(true, std::sync::atomic::Ordering::Relaxed);
            let fresh = verifier.verify(offer, proof).await.map(Arc::new);
            payments.cache.put(key, &fresh).await;
            fresh
        })
        .await
        .clone();
    let ran = ran.load(std::sync::atomic::Ordering::Relaxed);
    if ran {
        payments.cache.finished(&key).await;
    }
    // A joined outcome counts as remembered: the verify API counts a proof once, and its age
    // is bounded as a cached one's.
    Verification {
        outcome,
        cached: !ran,
        key,
        checked_at_ms: if ran {
            now_ms
        } else {
            now_ms - CACHE_AGE_BOUND_MS
        },
    }
}

/// What verifying a proof for a tenant (the verify API) came to.
#[derive(Debug)]
pub enum TenantCheck {
    /// Valid; counted toward the tenant's month unless it was a cached repeat.
    Valid {
        verified: Arc<Verified>,
        cached: bool,
    },
    /// Not acceptable, with the backend's reason.
    Invalid { error: VerifyError, cached: bool },
    /// The chain could not be asked.
    Unavailable(String),
    /// Valid, but the tenant's verified payments of the month are used up: not counted.
    QuotaExceeded,
}

/// Verifies a proof for `tenant`, and counts a fresh valid one toward its month (never past
/// `limit`: one conditional upsert). Cached repeats are answered but not counted again.
pub async fn verify_for_tenant(
    payments: &Payments,
    tenant: &str,
    limit: Option<i64>,
    offer: &Offer,
    proof: &PaymentProof,
    raw: &[u8],
) -> TenantCheck {
    let checked = verify_only(payments, offer, proof, raw).await;
    let verified = match checked.outcome {
        Ok(v) => v,
        Err(VerifyError::Unavailable(msg)) => return TenantCheck::Unavailable(msg),
        Err(error) => {
            return TenantCheck::Invalid {
                error,
                cached: checked.cached,
            }
        }
    };
    if checked.cached {
        return TenantCheck::Valid {
            verified,
            cached: true,
        };
    }
    let store = match payments.store.get().await {
        Ok(s) => s,
        Err(e) => return TenantCheck::Unavailable(format!("database: {e}")),
    };
    let period = period_of(crate::store::now());
    match store.count_verification(tenant, &period, limit).await {
        Ok(true) => {
            payments.tenants.invalidate(tenant).await;
            TenantCheck::Valid {
                verified,
                cached: false,
            }
        }
        Ok(false) => TenantCheck::QuotaExceeded,
        Err(e) => TenantCheck::Unavailable(format!("database: {e}")),
    }
}

/// A mined transfer to look for: at least `min_amount` of one of `assets` to `recipient`.
#[derive(Debug, Clone, Copy)]
pub struct Transfer<'a> {
    pub network: &'a Network,
    pub tx_hash: &'a str,
    pub recipient: &'a str,
    pub min_amount: u128,
    pub assets: &'a [AssetConfig],
}

/// What checking a mined transfer for a tenant came to.
#[derive(Debug)]
pub enum TransferCheck {
    /// A transfer of at least the amount, counted once for this tenant.
    Valid(TransferFacts),
    Invalid(VerifyError),
    Unavailable(String),
    QuotaExceeded,
}

/// Checks a mined transaction for a transfer of at least `min_amount` of one of `assets` to
/// `recipient`, and records it for `tenant` with its count, atomically: a transaction counts once
/// per tenant, and never past `limit`.
pub async fn verify_transfer_for_tenant(
    payments: &Payments,
    tenant: &str,
    limit: Option<i64>,
    transfer: Transfer<'_>,
) -> TransferCheck {
    let Transfer {
        network,
        tx_hash,
        recipient,
        min_amount,
        assets,
    } = transfer;
    let Some(verifier) = payments.backends.get(network) else {
        return TransferCheck::Invalid(VerifyError::invalid(
            Reason::UnexpectedVerifyError,
            format!("transactions on {network} are not verifiable here"),
        ));
    };
    let facts = match verifier
        .verify_transfer(tx_hash, recipient, min_amount, assets)
        .await
    {
        Ok(f) => f,
        Err(VerifyError::Unavailable(msg)) => return TransferCheck::Unavailable(msg),
        Err(e) => return TransferCheck::Invalid(e),
    };
    let store = match payments.store.get().await {
        Ok(s) => s,
        Err(e) => return TransferCheck::Unavailable(format!("database: {e}")),
    };
    let period = period_of(crate::store::now());
    let used = store
        .consume_transaction_counted(
            tenant,
            network.as_str(),
            (&facts.transaction, &facts.payer, &facts.amount),
            &period,
            limit,
        )
        .await;
    match used {
        Ok(TransactionUse::Counted) => {
            payments.tenants.invalidate(tenant).await;
            TransferCheck::Valid(facts)
        }
        Ok(TransactionUse::AlreadyUsed) => TransferCheck::Invalid(VerifyError::invalid(
            Reason::TxAlreadyUsed,
            "this transaction was already verified for this account",
        )),
        Ok(TransactionUse::QuotaExceeded) => TransferCheck::QuotaExceeded,
        Err(e) => TransferCheck::Unavailable(format!("database: {e}")),
    }
}
