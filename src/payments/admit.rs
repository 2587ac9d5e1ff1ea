//! Admission: a matched proof is verified (or recalled from the cache), claimed exactly once with
//! the tenant's quota count, and held against the payer's balance.

use super::state::{PaymentState, Stage};
use super::verify_only::verify_cached;
use super::{release, Payments, Rejection};
use crate::config::SettlePolicy;
use crate::payments::chain::VerifyError;
use crate::pricing::Offer;
use crate::routes::Route;
use crate::store::{ClaimContext, ClaimOutcome, Durability, ExposureQuery, PayerExposure};
use crate::x402::{PaymentProof, Reason};

/// The outcome of presenting a matched proof.
#[derive(Debug)]
pub enum Admission {
    Admitted(Box<PaymentState>),
    /// Not acceptable: 402 with the reason.
    Rejected(Rejection),
    /// Our side failed (RPC, database): 503, nothing claimed.
    Unavailable(String),
    /// The tenant's monthly verified payments are used up: 429, nothing claimed.
    QuotaExceeded,
}

/// Who a payment is for: the ledger's tenant and route, and when it settles.
#[derive(Debug, Clone)]
pub struct Payee {
    pub tenant: String,
    pub route: String,
    pub policy: SettlePolicy,
}

impl Payee {
    pub fn of(route: &Route) -> Payee {
        Payee {
            tenant: route.config.tenant.clone(),
            route: route_name(route),
            policy: route.config.settle,
        }
    }
}

/// How durable a claim's commit must be (store's `durability.rs`). Under `before`, the
/// settlement's synced record follows the claim before anything leaves the gateway on its
/// strength, and syncs it too. Under `after` and `deferred` the origin is served on the claim
/// alone: a power cut must not forget it, or the same proof could be served again.
pub fn claim_durability(policy: SettlePolicy) -> Durability {
    match policy {
        SettlePolicy::Before => Durability::Relaxed,
        SettlePolicy::After | SettlePolicy::Deferred => Durability::Synced,
    }
}

/// Verifies (or recalls) a proof and claims it for this request to `route`.
pub async fn admit(
    payments: &Payments,
    route: &Route,
    offer: &Offer,
    proof: &PaymentProof,
    header: &[u8],
    receipt_header: &'static str,
    limit: Option<i64>,
) -> Admission {
    admit_to(
        payments,
        Payee::of(route),
        offer,
        proof,
        header,
        receipt_header,
        limit,
    )
    .await
}

/// Verifies (or recalls) a proof and claims it for `payee`, counted toward `payee.tenant`'s
/// month within `limit`.
pub async fn admit_to(
    payments: &Payments,
    payee: Payee,
    offer: &Offer,
    proof: &PaymentProof,
    header: &[u8],
    receipt_header: &'static str,
    limit: Option<i64>,
) -> Admission {
    let Some(verifier) = payments.backends.get(&offer.network) else {
        return Admission::Rejected(Rejection::new(
            Reason::UnexpectedVerifyError,
            format!("payments on {} are not verifiable here", offer.network),
        ));
    };
    if let Err(e) = verifier.ready_to_settle().await {
        return Admission::Unavailable(e.to_string());
    }
    let checked = verify_cached(payments, verifier.as_ref(), offer, proof, header).await;
    let (key, checked_at_ms) = (checked.key, checked.checked_at_ms);
    let verified = match checked.outcome {
        Ok(v) => v,
        Err(VerifyError::Invalid { reason, message }) => {
            return Admission::Rejected(Rejection::new(reason, message))
        }
        Err(VerifyError::Unavailable(msg)) => return Admission::Unavailable(msg),
    };
    let store = match payments.store.get().await {
        Ok(s) => s,
        Err(e) => return Admission::Unavailable(format!("database: {e}")),
    };
    let Payee {
        tenant,
        route: route_name,
        policy,
    } = payee;
    let ctx = ClaimContext {
        tenant: &tenant,
        route: &route_name,
    };
    let exposure = ExposureQuery {
        since_ms: checked_at_ms,
        limit: MAX_UNSETTLED_PER_PAYER as i64 + 1,
    };
    let claimed = store
        .claim_exposing(&verified, &ctx, limit, claim_durability(policy), exposure)
        .await;
    let (outcome, exposure) = match claimed {
        Ok((outcome, exposure)) => (Ok(outcome), exposure),
        Err(e) => (Err(e), None),
    };
    // The claim's count is the authority; the cached standing only spares unpaid requests a query
    // and may lag a second. Refresh it at once only when the limit was hit, so the next request is
    // refused before it is asked to pay (not after every payment: that is two queries each).
    if matches!(outcome, Ok(ClaimOutcome::QuotaExceeded)) {
        payments.tenants.invalidate(&tenant).await;
    }
    match outcome {
        Ok(ClaimOutcome::Claimed(claim_id)) => {
            tracing::debug!(claim_id, network = %verified.key.network, %tenant, "payment claimed");
            let state = Box::new(PaymentState {
                network: verified.key.network.clone(),
                receipt_network: match proof {
                    PaymentProof::V1(_) => offer
                        .network
                        .v1_name()
                        .map_or_else(|| verified.key.network.clone(), str::to_string),
                    PaymentProof::V2(_) => verified.key.network.clone(),
                },
                verified,
                claim_id,
                receipt_header,
                policy,
                tenant,
                route: route_name,
                stage: Stage::Claimed,
                cache_key: key,
            });
            guard_overdraw(
                payments,
                verifier.as_ref(),
                store,
                state,
                checked_at_ms,
                exposure,
            )
            .await
        }
        Ok(ClaimOutcome::Duplicate) => Admission::Rejected(Rejection::new(
            Reason::DuplicateSettlement,
            "this payment has already been used",
        )),
        Ok(ClaimOutcome::QuotaExceeded) => Admission::QuotaExceeded,
        Err(e) => Admission::Unavailable(format!("database: {e}")),
    }
}

/// How many unsettled payments one payer may have of one asset at once.
pub const MAX_UNSETTLED_PER_PAYER: usize = 64;

/// Holds a payer's unsettled payments against its balance, after its new claim is made.
///
/// Each authorization is simulated alone, so ten signed against a balance that covers one all
/// verify: under `deferred` all ten would be served and one paid, under `after` nine settlements
/// would revert at the settler's cost. Counting after the claim is made (this one included)
/// means that of two racing admissions at least the later one sees both and is held against
/// the balance of both: at worst one is refused and retried, never both admitted past the
/// balance. Read after the commit (here, when `read` is `None`), each sees the other; read in
/// the claim's own transaction after its insert (`read`: SQLite, whose one writer orders the
/// two), the later one sees the earlier. The simulation that verified this payment proved the balance
/// covered it then; it still does, and no RPC call is needed, unless another payment of this payer
/// is unsettled, or settled since (its transfer may have spent what the simulation saw).
async fn guard_overdraw(
    payments: &Payments,
    verifier: &dyn crate::payments::chain::ChainBackend,
    store: &crate::store::Store,
    mut state: Box<PaymentState>,
    checked_at_ms: i64,
    read: Option<PayerExposure>,
) -> Admission {
    let key = state.verified.key.clone();
    let limit = MAX_UNSETTLED_PER_PAYER as i64 + 1;
    let exposure = match read {
        Some(x) => Ok(x),
        None => {
            store
                .payer_exposure(&key.network, &key.asset, &key.payer, checked_at_ms, limit)
                .await
        }
    };
    let refusal = match exposure {
        Err(e) => Err(format!("database: {e}")),
        Ok(x) if x.unsettled > MAX_UNSETTLED_PER_PAYER => Ok(Some(Rejection::new(
            Reason::TooManyUnsettledPayments,
            format!(
                "this payer has {MAX_UNSETTLED_PER_PAYER} payments awaiting settlement; retry once they settle"
            ),
        ))),
        // This one alone, and nothing settled since its check: the simulation still holds.
        Ok(x) if x.unsettled <= 1 && !x.settled_since => Ok(None),
        Ok(x) => balance_covers(verifier, &key, x.owed).await,
    };
    match refusal {
        Ok(None) => Admission::Admitted(state),
        Ok(Some(r)) => {
            release(payments, &mut state, &r.error_text()).await;
            Admission::Rejected(r)
        }
        Err(msg) => {
            release(payments, &mut state, &msg).await;
            Admission::Unavailable(msg)
        }
    }
}

/// One balance lookup: `None` when the payer's balance covers what it owes, or the refusal.
async fn balance_covers(
    verifier: &dyn crate::payments::chain::ChainBackend,
    key: &crate::payments::chain::PaymentKey,
    owed: u128,
) -> Result<Option<Rejection>, String> {
    match verifier.balance_of(&key.asset, &key.payer).await {
        Ok(Some(balance)) if balance < owed => Ok(Some(Rejection::new(
            // Each scheme's own code for it, as its clients know it.
            match key
                .network
                .parse::<crate::x402::Network>()
                .map(|n| n.namespace())
            {
                Ok(crate::x402::Namespace::Solana) => Reason::InsufficientFunds,
                _ => Reason::InvalidExactEvmInsufficientBalance,
            },
            format!(
                "the payer's balance ({balance}) does not cover its unsettled payments ({owed})"
            ),
        ))),
        Ok(_) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// The route as it is named in the ledger.
pub fn route_name(route: &Route) -> String {
    match &route.config.path {
        crate::config::PathPattern::Exact(p) => p.clone(),
        crate::config::PathPattern::Prefix(p) => format!("{p}/*"),
    }
}
