//! The verify API (`verify` scope): an x402 payment proof against requirements, or an on-chain
//! transfer, checked for the caller's tenant and counted against its monthly quota. A thin
//! adapter: the body is parsed here; verifying, caching and counting are `payments`'.

use std::str::FromStr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::extract::{needs, AuthedBody, Body, TenantKey};
use super::*;
use crate::payments::chain::VerifyError;
use crate::payments::{self, TenantCheck, TransferCheck};
use crate::pricing::{requirement_eq, Offer};
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
    config: &'s crate::config::Config,
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
    config.networks.get(network).ok_or_else(|| {
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
    responses((status = 200, body = VerifyResult), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "`insufficient_scope`, `tenant_suspended`, or `network_not_allowed` (the tier does not allow the network)"),
        (status = 429, body = ErrorBody, description = "`tenant_quota_exceeded` (this month's verified payments are used up) or `rate_limited`"),
        (status = 503, body = ErrorBody, description = "`verification_unavailable` (the chain does not answer) or `unavailable`")),
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
    let limit = standing.limit();
    let config = state.config.load_full();
    match req {
        VerifyRequest::Payment(p) => {
            let requirements: PaymentRequirements = serde_json::from_value(p.payment_requirements)
                .map_err(|e| ApiError::bad_request(format!("paymentRequirements: {e}")))?;
            let network = Network::from_str(&requirements.network)
                .map_err(|e| ApiError::bad_request(format!("paymentRequirements.network: {e}")))?;
            let net = allowed_network(&config, &standing, &network)?;
            let asset = net
                .assets
                .iter()
                .find(|a| match network.namespace() {
                    x402::Namespace::Eip155 => a.address.eq_ignore_ascii_case(&requirements.asset),
                    // Base58: case is part of the address.
                    x402::Namespace::Solana => a.address == requirements.asset,
                })
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
            let checked = payments::verify_for_tenant(
                &state.payments,
                &me.tenant,
                limit,
                &offer,
                &proof,
                &raw,
            )
            .await;
            match checked {
                TenantCheck::Valid { verified, cached } => Ok(Json(VerifyResult {
                    is_valid: true,
                    invalid_reason: None,
                    invalid_message: None,
                    payer: Some(verified.payer.clone()),
                    amount: Some(verified.amount.clone()),
                    asset: Some(offer.asset.address.clone()),
                    cached,
                })),
                TenantCheck::Invalid { error, cached } => invalid(error).map(|Json(mut r)| {
                    r.cached = cached;
                    Json(r)
                }),
                TenantCheck::Unavailable(msg) => invalid(VerifyError::Unavailable(msg)),
                TenantCheck::QuotaExceeded => Err(quota_error(&standing.period)),
            }
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
            let net = allowed_network(&config, &standing, &network)?;
            let expected: AtomicAmount = t.expected_amount.parse().map_err(|e| {
                ApiError::bad_request(format!("expected_amount: {e} (atomic units)"))
            })?;
            let transfer = payments::Transfer {
                network: &network,
                tx_hash: &t.tx_hash,
                recipient: &t.recipient,
                min_amount: expected.0,
                assets: &net.assets,
            };
            match payments::verify_transfer_for_tenant(&state.payments, &me.tenant, limit, transfer)
                .await
            {
                TransferCheck::Valid(facts) => Ok(Json(VerifyResult {
                    is_valid: true,
                    invalid_reason: None,
                    invalid_message: None,
                    payer: Some(facts.payer),
                    amount: Some(facts.amount),
                    asset: Some(facts.asset),
                    cached: false,
                })),
                TransferCheck::Invalid(e) => invalid(e),
                TransferCheck::Unavailable(msg) => invalid(VerifyError::Unavailable(msg)),
                TransferCheck::QuotaExceeded => Err(quota_error(&standing.period)),
            }
        }
    }
}
