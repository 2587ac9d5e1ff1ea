//! The payment steps of a request, as plain async functions over the verifier, the store and the
//! cache; no pingora `Session` here, so each outcome is a value `mod.rs` turns into a response.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::cache::VerifyCache;
use crate::config::SettlePolicy;
use crate::pricing::Offer;
use crate::routes::Route;
use crate::settle::settle_claim;
use crate::store::{ClaimContext, ClaimOutcome, LazyStore};
use crate::tenants::TenantDirectory;
use crate::verify::{SettleError, Settlement, Verified, Verifiers, VerifyError};
use crate::x402::{self, PaymentProof, Reason, SettlementResponse};

use super::gate::Rejection;

/// Everything the proxy needs to take payments.
pub struct Payments {
    pub verifiers: Verifiers,
    pub tenants: Arc<TenantDirectory>,
    pub store: Arc<LazyStore>,
    pub cache: VerifyCache,
    pub queue_wakeup: Arc<Notify>,
}

/// Where a claimed payment stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// Claimed for this request; settlement not decided yet.
    Claimed,
    Settled(Settlement),
    /// Given back: not charged.
    Released,
    /// In the deferred queue.
    Queued,
    /// Settlement refused or its outcome unknown: the claim stays, never reusable.
    Unsettled,
    /// A settlement or enqueue task is running on its own; it records its outcome whatever
    /// becomes of this request.
    Settling,
}

/// A payment admitted for this request.
#[derive(Debug, Clone)]
pub struct PaymentState {
    pub verified: Arc<Verified>,
    pub claim_id: i64,
    /// The receipt header: `payment-response` for v2 proofs, `x-payment-response` for v1.
    pub receipt_header: &'static str,
    pub network: String,
    /// The network as the receipt names it: the v1 name (`base-sepolia`) for a v1 proof, which
    /// v1 clients expect, and CAIP-2 for v2.
    pub receipt_network: String,
    pub policy: SettlePolicy,
    pub tenant: String,
    pub route: String,
    pub stage: Stage,
    /// The proof's verification-cache key, forgotten when the claim is released or fails, so the
    /// proof is never re-admitted without the on-chain check.
    pub cache_key: [u8; 32],
}

impl PaymentState {
    fn ctx(&self) -> ClaimContext<'_> {
        ClaimContext {
            tenant: &self.tenant,
            route: &self.route,
        }
    }

    pub fn receipt_ok(&self, transaction: &str) -> SettlementResponse {
        SettlementResponse {
            success: true,
            error_reason: None,
            transaction: transaction.to_string(),
            network: self.receipt_network.clone(),
            payer: Some(self.verified.payer.clone()),
        }
    }

    pub fn receipt_failed(&self, reason: &str, transaction: Option<&str>) -> SettlementResponse {
        SettlementResponse {
            success: false,
            error_reason: Some(reason.to_string()),
            transaction: transaction.unwrap_or_default().to_string(),
            network: self.receipt_network.clone(),
            payer: Some(self.verified.payer.clone()),
        }
    }
}

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

/// The outcome of settling: the receipt to send, or why the client gets no resource.
#[derive(Debug)]
pub enum SettleOutcome {
    Settled(SettlementResponse),
    /// 402 with this `success:false` receipt: nothing was charged or the charge failed.
    Refused(SettlementResponse),
    /// 503: our side failed before anything was broadcast; the claim was released.
    Unavailable(String),
    /// 503 with this receipt: broadcast, outcome unknown; the claim is kept.
    Pending(SettlementResponse),
}

/// Verifies (or recalls) a proof and claims it for this request.
pub async fn admit(
    payments: &Payments,
    route: &Route,
    offer: &Offer,
    proof: &PaymentProof,
    header: &[u8],
    receipt_header: &'static str,
    limit: Option<i64>,
) -> Admission {
    let Some(verifier) = payments.verifiers.get(&offer.network) else {
        return Admission::Rejected(Rejection::new(
            Reason::UnexpectedVerifyError,
            format!("payments on {} are not verifiable here", offer.network),
        ));
    };
    if let Err(e) = verifier.ready_to_settle().await {
        return Admission::Unavailable(e.to_string());
    }
    let key = VerifyCache::key(header, offer);
    let outcome = match payments.cache.get(&key).await {
        Some(hit) => hit,
        None => {
            let fresh = verifier.verify(offer, proof).await.map(Arc::new);
            payments.cache.put(key, &fresh).await;
            fresh
        }
    };
    let verified = match outcome {
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
    let tenant = route.config.tenant.clone();
    let route_name = route_name(route);
    let ctx = ClaimContext {
        tenant: &tenant,
        route: &route_name,
    };
    let outcome = store.claim(&verified, &ctx, limit).await;
    // The claim's count is the authority; the cached standing only spares unpaid requests a query
    // and may lag a second. Refresh it at once only when the limit was hit, so the next request is
    // refused before it is asked to pay (not after every payment: that is two queries each).
    if matches!(outcome, Ok(ClaimOutcome::QuotaExceeded)) {
        payments.tenants.invalidate(&tenant).await;
    }
    match outcome {
        Ok(ClaimOutcome::Claimed(claim_id)) => {
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
                policy: route.config.settle,
                tenant,
                route: route_name,
                stage: Stage::Claimed,
                cache_key: key,
            });
            guard_overdraw(payments, verifier.as_ref(), store, state).await
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

/// Holds a payer's unsettled payments against its balance, after its new claim is committed.
///
/// Each authorization is simulated alone, so ten signed against a balance that covers one all
/// verify: under `deferred` all ten would be served and one paid, under `after` nine settlements
/// would revert at the settler's cost. Counting after the claim is committed (this one included)
/// means two racing admissions each see the other: at worst both are refused and retried, never
/// both admitted past the balance. A payer with nothing else in flight costs no RPC call (the
/// simulation already showed the balance covers this payment).
async fn guard_overdraw(
    payments: &Payments,
    verifier: &dyn crate::verify::PaymentVerifier,
    store: &crate::store::Store,
    mut state: Box<PaymentState>,
) -> Admission {
    let key = state.verified.key.clone();
    let limit = MAX_UNSETTLED_PER_PAYER as i64 + 1;
    let refusal = match store
        .payer_outstanding(&key.network, &key.asset, &key.payer, limit)
        .await
    {
        Err(e) => Err(format!("database: {e}")),
        Ok((count, _)) if count > MAX_UNSETTLED_PER_PAYER => Ok(Some(Rejection::new(
            Reason::TooManyUnsettledPayments,
            format!(
                "this payer has {MAX_UNSETTLED_PER_PAYER} payments awaiting settlement; retry once they settle"
            ),
        ))),
        Ok((count, _)) if count <= 1 => Ok(None),
        Ok((_, owed)) => match verifier.balance_of(&key.asset, &key.payer).await {
            Ok(Some(balance)) if balance < owed => Ok(Some(Rejection::new(
                Reason::InvalidExactEvmInsufficientBalance,
                format!(
                    "the payer's balance ({balance}) does not cover its unsettled payments ({owed})"
                ),
            ))),
            Ok(_) => Ok(None),
            Err(e) => Err(e.to_string()),
        },
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

/// The route as it is named in the ledger.
pub fn route_name(route: &Route) -> String {
    match &route.config.path {
        crate::config::PathPattern::Exact(p) => p.clone(),
        crate::config::PathPattern::Prefix(p) => format!("{p}/*"),
    }
}

/// Settles an admitted payment now.
pub async fn settle(payments: &Payments, state: &mut PaymentState) -> SettleOutcome {
    let Some(verifier) = payments.verifiers.get_str(&state.network) else {
        return SettleOutcome::Unavailable(format!("no verifier for {}", state.network));
    };
    let store = match payments.store.get().await {
        Ok(s) => s,
        Err(e) => return SettleOutcome::Unavailable(format!("database: {e}")),
    };
    match settle_claim(
        verifier.as_ref(),
        store,
        state.claim_id,
        &state.verified,
        &state.ctx(),
    )
    .await
    {
        Ok(s) => {
            let receipt = state.receipt_ok(&s.transaction);
            state.stage = Stage::Settled(s);
            SettleOutcome::Settled(receipt)
        }
        Err(SettleError::Failed {
            reason,
            message,
            transaction,
        }) => {
            let _ = store
                .mark_failed(state.claim_id, &format!("{reason}: {message}"))
                .await;
            payments.cache.invalidate(&state.cache_key).await;
            state.stage = Stage::Unsettled;
            SettleOutcome::Refused(state.receipt_failed(reason.as_str(), transaction.as_deref()))
        }
        // Nothing was broadcast: the claim is `claimed` again and given back.
        Err(e @ (SettleError::Unavailable(_) | SettleError::NotBroadcast { .. })) => {
            let msg = e.to_string();
            release(payments, state, &msg).await;
            SettleOutcome::Unavailable(msg)
        }
        // Maybe broadcast: the claim stays `settling`, never released; the reconciler sends the
        // transaction again until it lands (and records it) or its authorization expires.
        Err(SettleError::Pending {
            transaction,
            message,
        }) => {
            tracing::warn!(claim_id = state.claim_id, tx = %transaction, "settlement outcome unknown: {message}");
            state.stage = Stage::Unsettled;
            SettleOutcome::Pending(state.receipt_failed("settlement_pending", Some(&transaction)))
        }
    }
}

/// Puts an admitted payment in the deferred queue; the receipt says it is accepted, with no
/// transaction yet.
pub async fn enqueue(payments: &Payments, state: &mut PaymentState) -> SettleOutcome {
    let store = match payments.store.get().await {
        Ok(s) => s,
        Err(e) => return SettleOutcome::Unavailable(format!("database: {e}")),
    };
    match store.enqueue(state.claim_id, &state.verified).await {
        Ok(()) => {
            state.stage = Stage::Queued;
            payments.queue_wakeup.notify_one();
            SettleOutcome::Settled(state.receipt_ok(""))
        }
        Err(e) => {
            let msg = format!("queueing the settlement: {e}");
            release(payments, state, &msg).await;
            SettleOutcome::Unavailable(msg)
        }
    }
}

impl SettleOutcome {
    /// The metrics label of this outcome.
    pub fn label(&self) -> &'static str {
        match self {
            SettleOutcome::Settled(_) => "settled",
            SettleOutcome::Refused(_) => "failed",
            SettleOutcome::Unavailable(_) => "unavailable",
            SettleOutcome::Pending(_) => "pending",
        }
    }
}

/// Gives the claim back (not charged), if it is still only claimed (the store refuses any other:
/// a `settling` claim's transaction may still land). The proof leaves the verification cache, so
/// presenting it again is checked on-chain again.
pub async fn release(payments: &Payments, state: &mut PaymentState, why: &str) {
    if !matches!(state.stage, Stage::Claimed) {
        return;
    }
    state.stage = Stage::Released;
    payments.cache.invalidate(&state.cache_key).await;
    match payments.store.get().await {
        Ok(store) => {
            if let Err(e) = store.release(state.claim_id, why).await {
                tracing::warn!(claim_id = state.claim_id, "releasing a claim: {e}");
            }
        }
        Err(e) => tracing::warn!(claim_id = state.claim_id, "releasing a claim: {e}"),
    }
}

/// Runs `settle` in a task of its own, so that it finishes, and records what happened, even if
/// this request's future is dropped mid-way (pingora drops it when either side of the proxied
/// exchange fails). The state says `Settling` until the task reports back.
pub async fn settle_detached(payments: &Arc<Payments>, state: &mut PaymentState) -> SettleOutcome {
    let (p, mut s) = (payments.clone(), state.clone());
    state.stage = Stage::Settling;
    let task = tokio::spawn(async move {
        let outcome = settle(&p, &mut s).await;
        (s.stage, outcome)
    });
    finish_detached(state, task).await
}

/// `enqueue` in a task of its own, for the same reason as `settle_detached`.
pub async fn enqueue_detached(payments: &Arc<Payments>, state: &mut PaymentState) -> SettleOutcome {
    let (p, mut s) = (payments.clone(), state.clone());
    state.stage = Stage::Settling;
    let task = tokio::spawn(async move {
        let outcome = enqueue(&p, &mut s).await;
        (s.stage, outcome)
    });
    finish_detached(state, task).await
}

async fn finish_detached(
    state: &mut PaymentState,
    task: tokio::task::JoinHandle<(Stage, SettleOutcome)>,
) -> SettleOutcome {
    match task.await {
        Ok((stage, outcome)) => {
            state.stage = stage;
            outcome
        }
        // Only a panic gets here; the claim stays as it is (never reusable), for the reconciler.
        Err(e) => {
            tracing::error!(claim_id = state.claim_id, "settlement task failed: {e}");
            state.stage = Stage::Unsettled;
            SettleOutcome::Unavailable("the settlement task failed".into())
        }
    }
}

/// Whether a status is an interim answer (1xx other than 101): never the origin's final word.
pub fn is_interim(status: u16) -> bool {
    (100..200).contains(&status) && status != 101
}

/// Whether a final origin status is one the route charges for: its `charge_statuses`, and a
/// `101 Switching Protocols` on a route that allows upgrades (the tunnel is what was paid for).
pub fn is_charged(route: &crate::config::RouteConfig, status: u16) -> bool {
    if status == 101 {
        return route.allow_upgrade;
    }
    !is_interim(status) && route.charged.charges(status)
}

/// What becomes of a claimed payment whose request ended without a final answer from the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unanswered {
    /// The origin has the request and the client left: charged as if the origin had answered
    /// with a charged status, since we cannot know its answer and it may have acted on it.
    Charge,
    /// The origin never got the request, or failed (unreachable, reset, timed out): not charged.
    Release,
}

/// Decides `Unanswered` from whether the request reached the origin and whether the request
/// ended because the client went away (rather than the origin failing).
pub fn unanswered(forwarded: bool, client_left: bool) -> Unanswered {
    if forwarded && client_left {
        Unanswered::Charge
    } else {
        Unanswered::Release
    }
}

/// The receipt header for a proof's version.
pub fn receipt_header_for(proof: &PaymentProof) -> &'static str {
    match proof {
        PaymentProof::V1(_) => x402::X_PAYMENT_RESPONSE,
        PaymentProof::V2(_) => x402::PAYMENT_RESPONSE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ChargedStatuses, Config};

    fn route(extra: &str) -> crate::config::RouteConfig {
        let text = format!(
            r#"
[networks."eip155:84532"]
rpc_url = "http://127.0.0.1:8545"
settler_key = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
assets = [{{ symbol = "USDC", address = "0x036cbd53842c5426634e7929541ec2318f3dcf7e", decimals = 6, eip712_name = "USDC", eip712_version = "2" }}]
[[tenants]]
id = "acme"
pay_to = {{ "eip155:84532" = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C" }}
[[routes]]
tenant = "acme"
path = "/paid"
upstream = "http://127.0.0.1:1"
price = "$0.01"
{extra}
"#
        );
        Config::from_toml(&text, &|_| None).unwrap().routes[0].clone()
    }

    #[test]
    fn charged_statuses() {
        let r = route("");
        assert_eq!(r.charged, ChargedStatuses::default());
        for (status, charged) in [(200, true), (204, true), (302, true), (304, true)] {
            assert_eq!(is_charged(&r, status), charged, "{status}");
        }
        for status in [100, 101, 103, 400, 404, 500, 503] {
            assert!(!is_charged(&r, status), "{status}");
        }
        let r = route(
            r#"charge_statuses = ["2xx", "404"]
allow_upgrade = true"#,
        );
        assert!(is_charged(&r, 404) && is_charged(&r, 201) && is_charged(&r, 101));
        assert!(!is_charged(&r, 302) && !is_charged(&r, 100));
        assert!(is_interim(100) && is_interim(103) && !is_interim(101) && !is_interim(200));
    }

    #[test]
    fn unanswered_requests() {
        assert_eq!(unanswered(true, true), Unanswered::Charge);
        assert_eq!(unanswered(true, false), Unanswered::Release);
        assert_eq!(unanswered(false, true), Unanswered::Release);
        assert_eq!(unanswered(false, false), Unanswered::Release);
    }
}
