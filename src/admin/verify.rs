//! The verify API (`verify` scope): an x402 payment proof against requirements, or an on-chain
//! transfer, checked for the caller's tenant and counted against its monthly quota.

use std::str::FromStr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::extract::{needs, AuthedBody, Body, TenantKey};
use super::*;
use crate::pricing::{requirement_eq, Offer};
use crate::store::{now, period_of};
use crate::verify::VerifyError;
use crate::x402::{self, AtomicAmount, Network, PaymentProof, PaymentRequirements};

fn invalid(e: VerifyError) -> ApiResult<Json<VerifyResult>> {
    match e {
        VerifyError::Invalid { reason, message } => Ok(Json(VerifyResult {
            is_valid: false,
            invalid_reason: Some(reason.to_string()),
            // Node error texts end up here; a tenant never sees a URL or key through them.
            invalid_message: Some(x402::redact::scrub(&message)),
            payer: None,
            amount: None,
            asset: None,
            cached: false,
        })),
        VerifyError::Unavailable(msg) => {
            tracing::warn!("verify API: {msg}");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "verification_unavailable",
                "the chain is unreachable; retry shortly",
            ))
        }
    }
}

/// The configuration of a network the caller's tier allows, or why it cannot be used.
fn allowed_network<'s>(
    state: &'s AdminState,
    standing: &crate::tenants::TenantState,
    network: &Network,
) -> ApiResult<&'s crate::config::NetworkConfig> {
    if !standing.tier.allows(network) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "network_not_allowed",
            format!("tier `{}` does not allow {network}", standing.tier.name),
        ));
    }
    state.config.networks.get(network).ok_or_else(|| {
        ApiError::bad_request(format!(
            "network {network} is not configured on this gateway"
        ))
    })
}

fn quota_error(period: &str) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "tenant_quota_exceeded",
        format!("the verified payments of {period} are used up"),
    )
}

#[utoipa::path(post, path = "/api/v1/x402/verify", request_body = VerifyRequest,
    responses((status = 200, body = VerifyResult), (status = 400, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = ["verify"])))]
pub async fn verify(
    State(state): State<AdminState>,
    AuthedBody(me, b): AuthedBody<TenantKey<needs::Verify>, Result<Body<VerifyRequest>, ApiError>>,
) -> ApiResult<Json<VerifyResult>> {
    let Body(req) = b.map_err(|e| {
        ApiError::bad_request(format!(
            "expected {{paymentPayload, paymentRequirements}} or {{tx_hash, chain, expected_amount, recipient}}: {}",
            e.message
        ))
    })?;
    let standing = state.tenants.state(&me.tenant).await?;
    if !standing.active {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "tenant_suspended",
            "this account is suspended",
        ));
    }
    if !standing.has_quota() {
        return Err(quota_error(&standing.period));
    }
    let period = period_of(now());
    let store = state.store().await?;
    match req {
        VerifyRequest::Payment(p) => {
            let requirements: PaymentRequirements = serde_json::from_value(p.payment_requirements)
                .map_err(|e| ApiError::bad_request(format!("paymentRequirements: {e}")))?;
            let network = Network::from_str(&requirements.network)
                .map_err(|e| ApiError::bad_request(format!("paymentRequirements.network: {e}")))?;
            let net = allowed_network(&state, &standing, &network)?;
            let asset = net
                .assets
                .iter()
                .find(|a| a.address.eq_ignore_ascii_case(&requirements.asset))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "asset {} is not configured on {network}",
                        requirements.asset
                    ))
                })?;
            let amount: AtomicAmount = requirements
                .amount
                .parse()
                .map_err(|e| ApiError::bad_request(format!("paymentRequirements.amount: {e}")))?;
            let raw = serde_json::to_vec(&p.payment_payload).unwrap_or_default();
            let proof = x402::decode_payment(&base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                &raw,
            ))
            .map_err(|e| ApiError::bad_request(format!("paymentPayload: {e}")))?;
            if let PaymentProof::V2(v2) = &proof {
                if !requirement_eq(&requirements, &v2.accepted, network.namespace()) {
                    return invalid(VerifyError::invalid(
                        x402::Reason::NoMatchingRequirements,
                        "paymentPayload.accepted differs from paymentRequirements",
                    ));
                }
            }
            let offer = Offer {
                network: network.clone(),
                asset: asset.clone(),
                pay_to: requirements.pay_to.clone(),
                amount,
                requirement: requirements,
            };
            let Some(verifier) = state.verifiers.get(&network) else {
                return invalid(VerifyError::invalid(
                    x402::Reason::UnexpectedVerifyError,
                    format!("payments on {network} are not verifiable here"),
                ));
            };
            let key = crate::cache::VerifyCache::key(&raw, &offer);
            if let Some(hit) = state.cache.get(&key).await {
                return match hit {
                    Ok(v) => Ok(Json(VerifyResult {
                        is_valid: true,
                        invalid_reason: None,
                        invalid_message: None,
                        payer: Some(v.payer.clone()),
                        amount: Some(v.amount.clone()),
                        asset: Some(offer.asset.address.clone()),
                        cached: true,
                    })),
                    Err(e) => invalid(e).map(|Json(mut r)| {
                        r.cached = true;
                        Json(r)
                    }),
                };
            }
            let outcome = verifier.verify(&offer, &proof).await.map(Arc::new);
            state.cache.put(key, &outcome).await;
            let v = match outcome {
                Ok(v) => v,
                Err(e) => return invalid(e),
            };
            if !store
                .count_verification(&me.tenant, &period, standing.limit())
                .await?
            {
                return Err(quota_error(&period));
            }
            state.tenants.invalidate(&me.tenant).await;
            Ok(Json(VerifyResult {
                is_valid: true,
                invalid_reason: None,
                invalid_message: None,
                payer: Some(v.payer.clone()),
                amount: Some(v.amount.clone()),
                asset: Some(offer.asset.address.clone()),
                cached: false,
            }))
        }
        VerifyRequest::Transaction(t) => {
            let network = Network::from_str(&t.chain)
                .ok()
                .or_else(|| Network::from_v1_name(&t.chain))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "chain `{}` is neither a CAIP-2 id nor a known network name",
                        t.chain
                    ))
                })?;
            let net = allowed_network(&state, &standing, &network)?;
            let expected: AtomicAmount = t.expected_amount.parse().map_err(|e| {
                ApiError::bad_request(format!("expected_amount: {e} (atomic units)"))
            })?;
            let Some(verifier) = state.verifiers.get(&network) else {
                return invalid(VerifyError::invalid(
                    x402::Reason::UnexpectedVerifyError,
                    format!("transactions on {network} are not verifiable here"),
                ));
            };
            let facts = match verifier
                .verify_transfer(&t.tx_hash, &t.recipient, expected.0, &net.assets)
                .await
            {
                Ok(f) => f,
                Err(e) => return invalid(e),
            };
            // Each transaction counts once per tenant.
            if !store
                .consume_transaction(
                    &me.tenant,
                    network.as_str(),
                    &facts.transaction,
                    &facts.payer,
                    &facts.amount,
                )
                .await?
            {
                return invalid(VerifyError::invalid(
                    x402::Reason::TxAlreadyUsed,
                    "this transaction was already verified for this account",
                ));
            }
            if !store
                .count_verification(&me.tenant, &period, standing.limit())
                .await?
            {
                let _ = store
                    .unconsume_transaction(&me.tenant, network.as_str(), &facts.transaction)
                    .await;
                return Err(quota_error(&period));
            }
            state.tenants.invalidate(&me.tenant).await;
            Ok(Json(VerifyResult {
                is_valid: true,
                invalid_reason: None,
                invalid_message: None,
                payer: Some(facts.payer),
                amount: Some(facts.amount),
                asset: Some(facts.asset),
                cached: false,
            }))
        }
    }
}
