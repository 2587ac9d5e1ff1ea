//! Plan billing: the Stripe webhook (no admin auth: the signature is the credential), a Checkout
//! session for a tenant's upgrade, an upgrade paid with x402 (a priced management endpoint), and
//! a tenant's billing state. Thin adapters: signatures and event meanings are `billing::stripe`'s,
//! taking a payment is `payments`', recording is `store`'s. A tier change is followed at once by
//! challenges, supported-chains and quotas (`tenants_changed`).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{AuthedBody, Body, TenantKey};
use super::*;
use crate::billing::plans::{PlanOffers, OPERATOR_LEDGER, UPGRADE_PATH};
use crate::billing::stripe::{self, CheckoutError, Ignored, StripeClient};
use crate::config::Config;
use crate::payments::{self, Admission, Payee, PaymentCheck, SettleOutcome};
use crate::pricing::Offers;
use crate::store::{BillingRecord, StripeApplied};
use crate::x402::SettlementResponse;

/// What the billing handlers share: the x402 plans' offers (built once) and Stripe's client.
pub struct Billing {
    pub plans: Option<PlanOffers>,
    pub stripe: StripeClient,
}

impl Billing {
    pub fn new(config: &Config) -> Billing {
        Billing {
            plans: config
                .billing
                .x402
                .as_ref()
                .map(|p| PlanOffers::new(config, p)),
            stripe: StripeClient::default(),
        }
    }
}

fn disabled(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "billing_disabled",
        format!("{what} is not configured on this gateway"),
    )
}

async fn active_tenant(state: &AdminState, tenant: &str) -> ApiResult<crate::store::TenantRecord> {
    let record = state.tenant_or_404(tenant).await?;
    if record.status != "active" {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "tenant_suspended",
            "this account is suspended",
        ));
    }
    Ok(record)
}

/// How a webhook delivery was taken (always 200: Stripe retries anything else).
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookAck {
    pub received: bool,
    /// applied | duplicate | stale | ignored
    pub outcome: String,
    /// Why it was ignored, or the tenant it was applied to.
    pub detail: Option<String>,
}

fn ack(outcome: &str, detail: Option<String>) -> Json<WebhookAck> {
    Json(WebhookAck {
        received: true,
        outcome: outcome.into(),
        detail,
    })
}

/// A Stripe webhook delivery. Answered 400 when the signature or the body is bad (Stripe shows
/// the failure and retries), 503 when the database is down (retried), else 200: applied, a
/// duplicate of an event already processed, stale (older than the tenant's newest event), or
/// ignored (an event type, price or tenant this gateway does not know; logged).
#[utoipa::path(post, path = "/api/v1/x402/billing/stripe/webhook",
    params(("Stripe-Signature" = String, Header, description = "t=<unix>,v1=<hex HMAC-SHA256>")),
    request_body(content = String, content_type = "application/json", description = "A Stripe event, exactly as Stripe sent it"),
    responses((status = 200, body = WebhookAck), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn stripe_webhook(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<WebhookAck>> {
    let config = state.config.load_full();
    let cfg = config
        .billing
        .stripe
        .as_ref()
        .ok_or_else(|| disabled("Stripe billing"))?;
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    stripe::verify_signature(
        signature,
        &body,
        &cfg.webhook_secrets,
        cfg.tolerance,
        crate::store::now(),
    )
    .map_err(|e| {
        tracing::warn!("Stripe webhook refused: {e}");
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_signature", e.to_string())
    })?;
    let event = stripe::parse_event(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let update = match stripe::interpret(&event, &cfg.prices) {
        Ok(u) => u,
        Err(why) => {
            // An unknown price is a config gap the operator must see; the rest is routine.
            if matches!(why, Ignored::UnknownPrice(_)) {
                tracing::warn!(event = %event.id, kind = %event.event_type, "Stripe event ignored: {why}");
            } else {
                tracing::info!(event = %event.id, kind = %event.event_type, "Stripe event ignored: {why}");
            }
            return Ok(ack("ignored", Some(why.to_string())));
        }
    };
    match state.store().await?.apply_stripe_event(&update).await? {
        StripeApplied::Applied {
            tenant,
            tier_changed,
        } => {
            tracing::info!(event = %event.id, kind = %event.event_type, %tenant, tier = ?update.tier, status = update.status.as_str(), "Stripe event applied");
            if tier_changed {
                state.tenants_changed(&tenant).await;
            }
            Ok(ack("applied", Some(tenant)))
        }
        StripeApplied::Duplicate => Ok(ack("duplicate", None)),
        StripeApplied::Stale { tenant } => {
            tracing::info!(event = %event.id, %tenant, "Stripe event older than the tenant's newest: recorded, not applied");
            Ok(ack("stale", Some(tenant)))
        }
        StripeApplied::UnknownTenant => {
            tracing::warn!(event = %event.id, tenant = ?update.tenant, subscription = ?update.subscription, "Stripe event for no known tenant ignored");
            Ok(ack("ignored", Some("no such tenant".into())))
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    /// The tier to move to (a tier the operator sells).
    pub tier: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckoutView {
    /// The Checkout session id (cs_...).
    pub id: String,
    /// Where to send the tenant to pay.
    pub url: String,
}

/// Creates a Stripe Checkout session for the caller's tenant to subscribe to `tier`; the
/// subscription's events then set the tier through the webhook.
#[utoipa::path(post, path = "/api/v1/x402/billing/checkout", request_body = PlanRequest,
    responses((status = 200, body = CheckoutView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 502, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn checkout(
    State(state): State<AdminState>,
    AuthedBody(me, Body(req)): AuthedBody<TenantKey, Body<PlanRequest>>,
) -> ApiResult<Json<CheckoutView>> {
    let config = state.config.load_full();
    let cfg = config
        .billing
        .stripe
        .as_ref()
        .filter(|c| c.api_key.is_some())
        .ok_or_else(|| disabled("Stripe Checkout"))?;
    let tenant = active_tenant(&state, &me.tenant).await?;
    let session = state
        .billing
        .stripe
        .create_checkout_session(cfg, &tenant.id, tenant.email.as_deref(), &req.tier)
        .await
        .map_err(|e| match e {
            CheckoutError::NotConfigured => disabled("Stripe Checkout"),
            CheckoutError::NotForSale(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "not_for_sale", e.to_string())
            }
            CheckoutError::Refused { .. } | CheckoutError::Unreachable(_) => {
                tracing::warn!(tenant = %tenant.id, "Stripe Checkout: {e}");
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "stripe_unavailable",
                    "Stripe did not create the session; retry shortly",
                )
            }
        })?;
    Ok(Json(CheckoutView {
        id: session.id,
        url: session.url,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UpgradeView {
    pub tenant: String,
    pub tier: String,
    /// The end of the paid period (Unix seconds).
    pub paid_until: i64,
    /// The settlement transaction.
    pub transaction: String,
    pub network: String,
    pub payer: Option<String>,
}

/// A 402 with the plan's challenge; `receipt` when a settlement was refused.
fn payment_required(
    offers: &Offers,
    url: &str,
    error: &str,
    receipt: Option<(&'static str, &SettlementResponse)>,
) -> Response {
    let challenge = offers.challenge(url, error);
    let mut resp = (StatusCode::PAYMENT_REQUIRED, challenge.body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&challenge.header) {
        h.insert(crate::x402::PAYMENT_REQUIRED, v);
    }
    if let Some((name, r)) = receipt {
        if let Ok(v) = HeaderValue::from_str(&crate::x402::encode_header(r)) {
            h.insert(name, v);
        }
    }
    resp
}

/// How many times a settled plan's tier is written before giving up (the money has moved: a
/// database blip must not lose what was paid for).
const APPLY_ATTEMPTS: u32 = 5;

/// Upgrades (or renews) the caller's plan, paid with x402 to the operator: without a payment, a
/// 402 whose challenge prices the tier's period; with `PAYMENT-SIGNATURE` (or `X-PAYMENT`), the
/// payment is verified, claimed once and settled on-chain, and only then the tier changes. A bad
/// or replayed payment is a 402 with its reason; a chain or database outage a 503.
#[utoipa::path(post, path = "/api/v1/x402/billing/upgrade", request_body = PlanRequest,
    params(("PAYMENT-SIGNATURE" = Option<String>, Header, description = "x402 v2 payment (or X-PAYMENT, v1)")),
    responses((status = 200, body = UpgradeView), (status = 400, body = ErrorBody), (status = 402, description = "Payment required: the PAYMENT-REQUIRED header (v2) and the v1 body"),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn upgrade(
    State(state): State<AdminState>,
    headers: HeaderMap,
    AuthedBody(me, Body(req)): AuthedBody<TenantKey, Body<PlanRequest>>,
) -> ApiResult<Response> {
    let plans = state
        .billing
        .plans
        .as_ref()
        .ok_or_else(|| disabled("x402 plan billing"))?;
    let offers = plans.offers(&req.tier).ok_or_else(|| {
        let sold: Vec<_> = plans.tiers().collect();
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "not_for_sale",
            format!(
                "tier `{}` is not sold for x402 (sold: {})",
                req.tier,
                sold.join(", ")
            ),
        )
    })?;
    let tenant = active_tenant(&state, &me.tenant).await?;
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let url = format!("http://{host}{UPGRADE_PATH}");
    let presented = payments::payment_header(&headers);
    let (offer, proof) = match payments::check_payment(
        offers,
        presented,
        state.config.load().server.max_payment_header_bytes,
    ) {
        PaymentCheck::Missing => {
            return Ok(payment_required(offers, &url, "Payment required", None))
        }
        PaymentCheck::Rejected(r) => {
            return Ok(payment_required(offers, &url, &r.error_text(), None))
        }
        PaymentCheck::Matched { offer, proof, .. } => (offer, proof),
    };
    let raw = presented.map(|(_, v)| v).unwrap_or_default();
    let receipt_header = payments::receipt_header_for(&proof);
    let payee = Payee {
        // The operator's revenue, named in the ledger with who paid for what.
        tenant: OPERATOR_LEDGER.into(),
        route: format!("billing:{}:{}", req.tier, tenant.id),
        policy: crate::config::SettlePolicy::Before,
    };
    // Plan payments never count toward any tenant's month.
    let admission = payments::admit_to(
        &state.payments,
        payee,
        offer,
        &proof,
        raw,
        receipt_header,
        None,
    )
    .await;
    let payment = match admission {
        Admission::Admitted(p) => *p,
        Admission::Rejected(r) => return Ok(payment_required(offers, &url, &r.error_text(), None)),
        Admission::Unavailable(msg) => {
            tracing::warn!(tenant = %tenant.id, "plan payment unavailable: {msg}");
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "payment_unavailable",
                "payment verification is temporarily unavailable; retry shortly",
            ));
        }
        // No limit is passed, so no quota can be hit; answered as our failure all the same.
        Admission::QuotaExceeded => {
            return Err(ApiError::unavailable("a plan payment hit a quota"));
        }
    };
    // Settlement and the tier change run in one task of their own: if the client goes away
    // mid-way, a payment that settles still gets its plan.
    let (tier, period) = (req.tier.clone(), plans.config.period.as_secs() as i64);
    let task_state = state.clone();
    let tenant_id = tenant.id.clone();
    let task = tokio::spawn(async move {
        let mut payment = payment;
        let outcome = payments::settle(&task_state.payments, &mut payment).await;
        let applied = match &outcome {
            SettleOutcome::Settled(_) => {
                Some(apply_plan(&task_state, &tenant_id, &tier, period).await)
            }
            _ => None,
        };
        (outcome, applied)
    });
    let (outcome, applied) = task.await.map_err(|e| {
        tracing::error!("plan payment task failed: {e}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the plan payment did not complete; contact the operator",
        )
    })?;
    match (outcome, applied) {
        (SettleOutcome::Settled(receipt), Some(Ok(paid_until))) => {
            let mut resp = Json(UpgradeView {
                tenant: tenant.id,
                tier: req.tier,
                paid_until,
                transaction: receipt.transaction.clone(),
                network: receipt.network.clone(),
                payer: receipt.payer.clone(),
            })
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&crate::x402::encode_header(&receipt)) {
                resp.headers_mut().insert(receipt_header, v);
            }
            Ok(resp)
        }
        (SettleOutcome::Settled(receipt), _) => {
            tracing::error!(tenant = %tenant.id, tier = %req.tier, tx = %receipt.transaction, "plan paid but not applied: apply it by hand");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "plan_not_applied",
                format!(
                    "the payment settled ({}) but the plan could not be recorded; contact the operator",
                    receipt.transaction
                ),
            ))
        }
        (SettleOutcome::Refused(receipt), _) => {
            let error = receipt.error_reason.clone().unwrap_or_default();
            Ok(payment_required(
                offers,
                &url,
                &error,
                Some((receipt_header, &receipt)),
            ))
        }
        (SettleOutcome::Unavailable(msg), _) => {
            tracing::warn!(tenant = %tenant.id, "plan settlement unavailable: {msg}");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "payment_unavailable",
                "settlement is temporarily unavailable; nothing was charged, retry shortly",
            ))
        }
        (SettleOutcome::Pending(receipt), _) => {
            tracing::warn!(tenant = %tenant.id, tx = %receipt.transaction, "plan settlement pending");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "settlement_pending",
                format!(
                    "the settlement ({}) was sent but not confirmed yet; the plan is not changed",
                    receipt.transaction
                ),
            ))
        }
    }
}

/// Writes the paid tier (retrying: the money has moved) and makes it visible at once.
async fn apply_plan(state: &AdminState, tenant: &str, tier: &str, period: i64) -> ApiResult<i64> {
    let mut last = None;
    for attempt in 0..APPLY_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(200 << attempt)).await;
        }
        match state.store().await {
            Ok(store) => match store.apply_x402_plan(tenant, tier, period).await {
                Ok(paid_until) => {
                    tracing::info!(%tenant, %tier, paid_until, "plan paid with x402 applied");
                    state.tenants_changed(tenant).await;
                    return Ok(paid_until);
                }
                Err(e) => last = Some(ApiError::from(e)),
            },
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| ApiError::unavailable("no attempt")))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BillingView {
    pub tenant: String,
    pub tier: String,
    /// stripe | x402, when the plan has ever been billed.
    pub source: Option<String>,
    /// active | past_due | canceled, when billed.
    pub status: Option<String>,
    /// x402 plans: the end of the paid period (Unix seconds).
    pub paid_until: Option<i64>,
    /// Tiers sold for x402, with their price per period.
    pub x402_prices: std::collections::BTreeMap<String, String>,
    /// Tiers sold through Stripe Checkout.
    pub stripe_tiers: Vec<String>,
}

/// The caller's plan and how it is billed, and what it can buy.
#[utoipa::path(get, path = "/api/v1/x402/billing", responses((status = 200, body = BillingView), (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn billing(
    State(state): State<AdminState>,
    me: TenantKey,
) -> ApiResult<Json<BillingView>> {
    let tenant = state.tenant_or_404(&me.tenant).await?;
    let record: Option<BillingRecord> = state.store().await?.billing(&tenant.id).await?;
    let config = state.config.load_full();
    let billing = &config.billing;
    Ok(Json(BillingView {
        tenant: tenant.id,
        tier: tenant.tier,
        source: record.as_ref().map(|r| r.source.clone()),
        status: record.as_ref().map(|r| r.status.clone()),
        paid_until: record.and_then(|r| r.paid_until),
        x402_prices: billing
            .x402
            .as_ref()
            .map(|p| p.prices.clone())
            .unwrap_or_default(),
        stripe_tiers: billing
            .stripe
            .as_ref()
            .filter(|s| s.api_key.is_some())
            .map(|s| s.checkout_prices.keys().cloned().collect())
            .unwrap_or_default(),
    }))
}
