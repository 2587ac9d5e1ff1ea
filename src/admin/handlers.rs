//! The management API's handlers. Each authenticates first, then validates, then acts.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;

use super::*;
use crate::config::parse_address_for;
use crate::pricing::{requirement_eq, Offer};
use crate::store::{month_start, period_of, PaymentFilter, TenantRecord};
use crate::tenants::{mint_key, DEFAULT_ROTATION_GRACE_SECONDS, SCOPES};
use crate::verify::VerifyError;
use crate::x402::{self, AtomicAmount, Network, PaymentProof, PaymentRequirements};

/// Every body error (malformed JSON, unknown or missing fields, wrong types) is a 400 with the
/// parser's message.
fn body<T>(b: Result<Json<T>, JsonRejection>) -> ApiResult<T> {
    b.map(|Json(v)| v)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

fn optional_body<T: Default>(b: Result<Json<T>, JsonRejection>) -> ApiResult<T> {
    match b {
        Err(JsonRejection::MissingJsonContentType(_)) => Ok(T::default()),
        other => body(other),
    }
}

fn now() -> i64 {
    crate::store::now()
}

fn check_tier(state: &AdminState, tier: &str) -> ApiResult<()> {
    if state.config.tiers.contains_key(tier) {
        Ok(())
    } else {
        let known: Vec<_> = state.config.tiers.keys().map(String::as_str).collect();
        Err(ApiError::bad_request(format!(
            "unknown tier `{tier}` (known: {})",
            known.join(", ")
        )))
    }
}

fn check_pay_to(pay_to: &BTreeMap<String, String>) -> ApiResult<BTreeMap<String, String>> {
    pay_to
        .iter()
        .map(|(n, a)| {
            let network = Network::from_str(n)
                .map_err(|e| ApiError::bad_request(format!("pay_to.{n}: {e}")))?;
            let addr = parse_address_for(&network, a)
                .map_err(|e| ApiError::bad_request(format!("pay_to.{n}: {e}")))?;
            Ok((network.to_string(), addr))
        })
        .collect()
}

/// The scopes of a new key: those asked for, by default every scope its creator holds. A key
/// never grants more than its creator holds (the operator holds every scope), or a key with only
/// `keys:write` could mint itself a key with all of them.
fn check_scopes(requested: Option<Vec<String>>, creator: &[String]) -> ApiResult<Vec<String>> {
    let Some(scopes) = requested else {
        return Ok(creator.to_vec());
    };
    if scopes.is_empty() {
        return Err(ApiError::bad_request("a key needs at least one scope"));
    }
    for s in &scopes {
        if !SCOPES.contains(&s.as_str()) {
            return Err(ApiError::bad_request(format!(
                "unknown scope `{s}` (known: {})",
                SCOPES.join(", ")
            )));
        }
    }
    check_held(&scopes, creator)?;
    Ok(scopes)
}

/// Every scope of `granted` is one `creator` holds, or a 403 naming the ones it does not.
fn check_held(granted: &[String], creator: &[String]) -> ApiResult<()> {
    let missing: Vec<&str> = granted
        .iter()
        .filter(|s| !creator.contains(s))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "scope_not_held",
        format!(
            "a key can only grant scopes it holds itself; this key holds {} and cannot grant {}",
            creator.join(", "),
            missing.join(", ")
        ),
    ))
}

/// Every scope: what the operator holds and grants by default.
fn all_scopes() -> Vec<String> {
    SCOPES.iter().map(|s| s.to_string()).collect()
}

/// The longest key lifetime or rotation grace accepted: 100 years. Far enough for anyone, and it
/// keeps `now + seconds` well inside i64 (near i64::MAX the sum overflowed: a panic in debug
/// builds, a key dead at once in release builds).
const MAX_LIFETIME_SECONDS: i64 = 100 * 365 * 24 * 3600;

/// `now + seconds` for a lifetime given as `field` in a request, or a 400 saying what is allowed.
fn deadline(field: &str, seconds: i64, min: i64) -> ApiResult<i64> {
    if !(min..=MAX_LIFETIME_SECONDS).contains(&seconds) {
        return Err(ApiError::bad_request(format!(
            "{field} must be between {min} and {MAX_LIFETIME_SECONDS} (100 years)"
        )));
    }
    now()
        .checked_add(seconds)
        .ok_or_else(|| ApiError::bad_request(format!("{field} is too large")))
}

/// When a new key expires: `expires_in_seconds` from now, or never.
fn expiry(expires_in: Option<i64>) -> ApiResult<Option<i64>> {
    expires_in
        .map(|s| deadline("expires_in_seconds", s, 1))
        .transpose()
}

fn slug(s: &str) -> String {
    let mut out: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    out.truncate(40);
    out.trim_matches('-').to_string()
}

async fn issue_key(
    state: &AdminState,
    tenant: &str,
    scopes: Vec<String>,
    expires_at: Option<i64>,
) -> ApiResult<NewKey> {
    let minted = mint_key(tenant, &scopes, expires_at);
    state
        .store()
        .await?
        .insert_key(&minted.record)
        .await
        .map_err(ApiError::unavailable)?;
    Ok(NewKey {
        key: minted.secret,
        info: minted.record.into(),
    })
}

async fn tenant_or_404(state: &AdminState, id: &str) -> ApiResult<TenantRecord> {
    state
        .store()
        .await?
        .tenant(id)
        .await
        .map_err(ApiError::unavailable)?
        .ok_or_else(|| ApiError::not_found("tenant"))
}

#[utoipa::path(post, path = "/api/v1/x402/admin/create-tenant", request_body = CreateTenantRequest,
    responses((status = 201, body = CreatedTenant), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("admin" = [])))]
pub async fn create_tenant(
    State(state): State<AdminState>,
    headers: HeaderMap,
    b: Result<Json<CreateTenantRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<CreatedTenant>)> {
    state.require_admin(&headers)?;
    let req = body(b)?;
    if !req.email.contains('@') || req.email.len() > 254 {
        return Err(ApiError::bad_request(format!(
            "`{}` is not an email address",
            req.email
        )));
    }
    check_tier(&state, &req.tier)?;
    let pay_to = check_pay_to(&req.pay_to.unwrap_or_default())?;
    let name = req.name.unwrap_or_else(|| req.email.clone());
    let id = match req.id {
        Some(id) => id,
        None => {
            let base = slug(&name);
            let base = if base.is_empty() {
                "tenant".to_string()
            } else {
                base
            };
            format!(
                "{base}-{}",
                &crate::tenants::hash_key(&format!("{}{}", req.email, now()))[..6]
            )
        }
    };
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(ApiError::bad_request(
            "id must be 1-64 characters of a-z, 0-9, - and _",
        ));
    }
    let record = TenantRecord {
        id: id.clone(),
        name,
        email: Some(req.email),
        tier: req.tier,
        status: "active".into(),
        pay_to,
        source: "api".into(),
        created_at: now(),
        updated_at: now(),
    };
    let store = state.store().await?;
    if !store
        .create_tenant(&record)
        .await
        .map_err(ApiError::unavailable)?
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "tenant_exists",
            format!("tenant `{id}` already exists"),
        ));
    }
    let key = issue_key(&state, &id, all_scopes(), None).await?;
    let tenant = tenant_or_404(&state, &id).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedTenant {
            tenant: tenant.into(),
            api_key: key,
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/x402/admin/tenants", responses((status = 200, body = [TenantView])), security(("admin" = [])))]
pub async fn list_tenants(
    State(state): State<AdminState>,
    headers: HeaderMap,
) -> ApiResult<Json<Vec<TenantView>>> {
    state.require_admin(&headers)?;
    let all = state
        .store()
        .await?
        .tenants()
        .await
        .map_err(ApiError::unavailable)?;
    Ok(Json(all.into_iter().map(Into::into).collect()))
}

#[utoipa::path(get, path = "/api/v1/x402/admin/tenants/{id}", params(("id" = String, Path)),
    responses((status = 200, body = TenantView), (status = 404, body = ErrorBody)), security(("admin" = [])))]
pub async fn get_tenant(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<TenantView>> {
    state.require_admin(&headers)?;
    Ok(Json(tenant_or_404(&state, &id).await?.into()))
}

#[utoipa::path(patch, path = "/api/v1/x402/admin/tenants/{id}", params(("id" = String, Path)), request_body = UpdateTenantRequest,
    responses((status = 200, body = TenantView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)), security(("admin" = [])))]
pub async fn update_tenant(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    b: Result<Json<UpdateTenantRequest>, JsonRejection>,
) -> ApiResult<Json<TenantView>> {
    state.require_admin(&headers)?;
    let req = body(b)?;
    if let Some(tier) = &req.tier {
        check_tier(&state, tier)?;
    }
    let pay_to = req.pay_to.as_ref().map(check_pay_to).transpose()?;
    let store = state.store().await?;
    let found = store
        .update_tenant(
            &id,
            req.name.as_deref(),
            req.tier.as_deref(),
            None,
            pay_to.as_ref(),
        )
        .await
        .map_err(ApiError::unavailable)?;
    if !found {
        return Err(ApiError::not_found("tenant"));
    }
    state.tenants_changed(&id).await;
    Ok(Json(tenant_or_404(&state, &id).await?.into()))
}

async fn set_status(
    state: &AdminState,
    headers: &HeaderMap,
    id: &str,
    status: &str,
) -> ApiResult<Json<TenantView>> {
    state.require_admin(headers)?;
    let store = state.store().await?;
    if !store
        .update_tenant(id, None, None, Some(status), None)
        .await
        .map_err(ApiError::unavailable)?
    {
        return Err(ApiError::not_found("tenant"));
    }
    state.tenants_changed(id).await;
    Ok(Json(tenant_or_404(state, id).await?.into()))
}

#[utoipa::path(post, path = "/api/v1/x402/admin/tenants/{id}/suspend", params(("id" = String, Path)),
    responses((status = 200, body = TenantView), (status = 404, body = ErrorBody)), security(("admin" = [])))]
pub async fn suspend_tenant(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<TenantView>> {
    set_status(&state, &headers, &id, "suspended").await
}

#[utoipa::path(post, path = "/api/v1/x402/admin/tenants/{id}/activate", params(("id" = String, Path)),
    responses((status = 200, body = TenantView), (status = 404, body = ErrorBody)), security(("admin" = [])))]
pub async fn activate_tenant(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<TenantView>> {
    set_status(&state, &headers, &id, "active").await
}

#[utoipa::path(post, path = "/api/v1/x402/admin/tenants/{id}/keys", params(("id" = String, Path)), request_body = CreateKeyRequest,
    responses((status = 201, body = NewKey), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)), security(("admin" = [])))]
pub async fn admin_create_key(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    b: Result<Json<CreateKeyRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<NewKey>)> {
    state.require_admin(&headers)?;
    let req = optional_body(b)?;
    let scopes = check_scopes(req.scopes, &all_scopes())?;
    let expires_at = expiry(req.expires_in_seconds)?;
    tenant_or_404(&state, &id).await?;
    let key = issue_key(&state, &id, scopes, expires_at).await?;
    Ok((StatusCode::CREATED, Json(key)))
}

#[utoipa::path(get, path = "/api/v1/x402/admin/tenants/{id}/keys", params(("id" = String, Path)),
    responses((status = 200, body = [KeyView])), security(("admin" = [])))]
pub async fn admin_list_keys(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<KeyView>>> {
    state.require_admin(&headers)?;
    tenant_or_404(&state, &id).await?;
    let keys = state
        .store()
        .await?
        .keys_of(&id)
        .await
        .map_err(ApiError::unavailable)?;
    Ok(Json(keys.into_iter().map(Into::into).collect()))
}

/// Rotates `key_id`: a new key with the old one's scopes and expiry; the old one keeps working
/// for `grace` seconds. `caller` is the tenant key asking, or None for the operator.
async fn rotate(
    state: &AdminState,
    key_id: &str,
    caller: Option<&ApiKeyRecord>,
    grace: Option<i64>,
) -> ApiResult<Json<RotatedKey>> {
    let grace = grace.unwrap_or(DEFAULT_ROTATION_GRACE_SECONDS);
    let retire_at = deadline("grace_seconds", grace, 0)?;
    let store = state.store().await?;
    let old = store.key(key_id).await.map_err(ApiError::unavailable)?;
    let old = old
        .filter(|k| caller.is_none_or(|c| c.tenant_id == k.tenant_id))
        .ok_or_else(|| ApiError::not_found("key"))?;
    if !old.is_live(now()) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "key_not_live",
            "a revoked or expired key cannot be rotated",
        ));
    }
    // Rotating hands the caller a new key with the old one's scopes: the same rule as minting.
    if let Some(caller) = caller {
        check_held(&old.scopes, &caller.scopes)?;
    }
    let new_key = issue_key(state, &old.tenant_id, old.scopes.clone(), old.expires_at).await?;
    store
        .retire_key(&old.id, &new_key.info.id, retire_at)
        .await
        .map_err(ApiError::unavailable)?;
    state.keys.invalidate(&old).await;
    let old = store
        .key(&old.id)
        .await
        .map_err(ApiError::unavailable)?
        .ok_or_else(|| ApiError::not_found("key"))?;
    Ok(Json(RotatedKey {
        new_key,
        old_key: old.into(),
    }))
}

async fn revoke(state: &AdminState, key_id: &str, owner: Option<&str>) -> ApiResult<Json<KeyView>> {
    let store = state.store().await?;
    let key = store
        .key(key_id)
        .await
        .map_err(ApiError::unavailable)?
        .filter(|k| owner.is_none_or(|o| o == k.tenant_id))
        .ok_or_else(|| ApiError::not_found("key"))?;
    store
        .revoke_key(&key.id)
        .await
        .map_err(ApiError::unavailable)?;
    state.keys.invalidate(&key).await;
    let key = store
        .key(&key.id)
        .await
        .map_err(ApiError::unavailable)?
        .ok_or_else(|| ApiError::not_found("key"))?;
    Ok(Json(key.into()))
}

#[utoipa::path(post, path = "/api/v1/x402/admin/keys/{key_id}/rotate", params(("key_id" = String, Path)), request_body = RotateKeyRequest,
    responses((status = 200, body = RotatedKey), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)), security(("admin" = [])))]
pub async fn admin_rotate_key(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(key_id): Path<String>,
    b: Result<Json<RotateKeyRequest>, JsonRejection>,
) -> ApiResult<Json<RotatedKey>> {
    state.require_admin(&headers)?;
    let req = optional_body(b)?;
    rotate(&state, &key_id, None, req.grace_seconds).await
}

#[utoipa::path(post, path = "/api/v1/x402/admin/keys/{key_id}/revoke", params(("key_id" = String, Path)),
    responses((status = 200, body = KeyView), (status = 404, body = ErrorBody)), security(("admin" = [])))]
pub async fn admin_revoke_key(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(key_id): Path<String>,
) -> ApiResult<Json<KeyView>> {
    state.require_admin(&headers)?;
    revoke(&state, &key_id, None).await
}

#[utoipa::path(get, path = "/api/v1/x402/admin/payments", params(PaymentsQuery),
    responses((status = 200, body = PaymentsPage)), security(("admin" = []), ("api_key" = [])))]
pub async fn list_payments(
    State(state): State<AdminState>,
    headers: HeaderMap,
    q: Result<Query<PaymentsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<PaymentsPage>> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    // Operators see everything; a tenant key with payments:read sees its own tenant only.
    let tenant = if state.require_admin(&headers).is_ok() {
        q.tenant
    } else {
        let key = state.require_key(&headers, Some("payments:read")).await?;
        if q.tenant.as_ref().is_some_and(|t| *t != key.tenant_id) {
            return Err(ApiError::not_found("tenant"));
        }
        Some(key.tenant_id)
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 500"));
    }
    let filter = PaymentFilter {
        tenant,
        network: q.network,
        status: q.status,
        before_id: q.before,
        limit,
    };
    let rows = state
        .store()
        .await?
        .payments(&filter)
        .await
        .map_err(ApiError::unavailable)?;
    let next_before = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|p| p.id))
        .flatten();
    Ok(Json(PaymentsPage {
        payments: rows.into_iter().map(Into::into).collect(),
        next_before,
    }))
}

#[utoipa::path(post, path = "/api/v1/x402/keys", request_body = CreateKeyRequest,
    responses((status = 201, body = NewKey), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)), security(("api_key" = ["keys:write"])))]
pub async fn own_create_key(
    State(state): State<AdminState>,
    headers: HeaderMap,
    b: Result<Json<CreateKeyRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<NewKey>)> {
    let me = state.require_key(&headers, Some("keys:write")).await?;
    let req = optional_body(b)?;
    let scopes = check_scopes(req.scopes, &me.scopes)?;
    let expires_at = expiry(req.expires_in_seconds)?;
    let key = issue_key(&state, &me.tenant_id, scopes, expires_at).await?;
    Ok((StatusCode::CREATED, Json(key)))
}

#[utoipa::path(get, path = "/api/v1/x402/keys", responses((status = 200, body = [KeyView])), security(("api_key" = ["keys:write"])))]
pub async fn own_list_keys(
    State(state): State<AdminState>,
    headers: HeaderMap,
) -> ApiResult<Json<Vec<KeyView>>> {
    let me = state.require_key(&headers, Some("keys:write")).await?;
    let keys = state
        .store()
        .await?
        .keys_of(&me.tenant_id)
        .await
        .map_err(ApiError::unavailable)?;
    Ok(Json(keys.into_iter().map(Into::into).collect()))
}

#[utoipa::path(post, path = "/api/v1/x402/keys/{key_id}/rotate", params(("key_id" = String, Path)), request_body = RotateKeyRequest,
    responses((status = 200, body = RotatedKey), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("api_key" = ["keys:write"])))]
pub async fn own_rotate_key(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(key_id): Path<String>,
    b: Result<Json<RotateKeyRequest>, JsonRejection>,
) -> ApiResult<Json<RotatedKey>> {
    let me = state.require_key(&headers, Some("keys:write")).await?;
    let req = optional_body(b)?;
    rotate(&state, &key_id, Some(&me), req.grace_seconds).await
}

#[utoipa::path(post, path = "/api/v1/x402/keys/{key_id}/revoke", params(("key_id" = String, Path)),
    responses((status = 200, body = KeyView), (status = 404, body = ErrorBody)), security(("api_key" = ["keys:write"])))]
pub async fn own_revoke_key(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(key_id): Path<String>,
) -> ApiResult<Json<KeyView>> {
    let me = state.require_key(&headers, Some("keys:write")).await?;
    revoke(&state, &key_id, Some(&me.tenant_id)).await
}

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
    headers: HeaderMap,
    b: Result<Json<VerifyRequest>, JsonRejection>,
) -> ApiResult<Json<VerifyResult>> {
    let me = state.require_key(&headers, Some("verify")).await?;
    let req = body(b).map_err(|e| {
        ApiError::bad_request(format!(
            "expected {{paymentPayload, paymentRequirements}} or {{tx_hash, chain, expected_amount, recipient}}: {}",
            e.message
        ))
    })?;
    let standing = state
        .tenants
        .state(&me.tenant_id)
        .await
        .map_err(ApiError::unavailable)?;
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
                .count_verification(&me.tenant_id, &period, standing.limit())
                .await
                .map_err(ApiError::unavailable)?
            {
                return Err(quota_error(&period));
            }
            state.tenants.invalidate(&me.tenant_id).await;
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
                    &me.tenant_id,
                    network.as_str(),
                    &facts.transaction,
                    &facts.payer,
                    &facts.amount,
                )
                .await
                .map_err(ApiError::unavailable)?
            {
                return invalid(VerifyError::invalid(
                    x402::Reason::TxAlreadyUsed,
                    "this transaction was already verified for this account",
                ));
            }
            if !store
                .count_verification(&me.tenant_id, &period, standing.limit())
                .await
                .map_err(ApiError::unavailable)?
            {
                let _ = store
                    .unconsume_transaction(&me.tenant_id, network.as_str(), &facts.transaction)
                    .await;
                return Err(quota_error(&period));
            }
            state.tenants.invalidate(&me.tenant_id).await;
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

#[utoipa::path(get, path = "/api/v1/x402/usage", responses((status = 200, body = UsageView), (status = 401, body = ErrorBody)),
    security(("api_key" = ["usage:read"])))]
pub async fn usage(
    State(state): State<AdminState>,
    headers: HeaderMap,
) -> ApiResult<Json<UsageView>> {
    let me = state.require_key(&headers, Some("usage:read")).await?;
    state.tenants.invalidate(&me.tenant_id).await;
    let standing = state
        .tenants
        .state(&me.tenant_id)
        .await
        .map_err(ApiError::unavailable)?;
    let store = state.store().await?;
    let since = month_start(now());
    let revenue = store
        .revenue(&me.tenant_id, since)
        .await
        .map_err(ApiError::unavailable)?;
    let daily = store
        .daily(&me.tenant_id, since)
        .await
        .map_err(ApiError::unavailable)?;
    let limit = standing.limit();
    Ok(Json(UsageView {
        tenant: me.tenant_id,
        tier: standing.tier.name.clone(),
        period: standing.period.clone(),
        verified: standing.used,
        limit,
        remaining: limit.map(|l| (l - standing.used).max(0)),
        revenue: revenue.into_iter().map(Into::into).collect(),
        daily: daily.into_iter().map(Into::into).collect(),
    }))
}

#[utoipa::path(get, path = "/api/v1/x402/supported-chains", responses((status = 200, body = SupportedChains)))]
pub async fn supported_chains(
    State(state): State<AdminState>,
    headers: HeaderMap,
) -> ApiResult<Json<SupportedChains>> {
    // The key is optional here; a bad one is still an error rather than silently ignored.
    let tier = if headers.contains_key("x-api-key")
        || headers.contains_key(axum::http::header::AUTHORIZATION)
    {
        let me = state.require_key(&headers, None).await?;
        Some(
            state
                .tenants
                .state(&me.tenant_id)
                .await
                .map_err(ApiError::unavailable)?
                .tier
                .clone(),
        )
    } else {
        None
    };
    let chains = state
        .config
        .networks
        .values()
        .map(|n| ChainView {
            network: n.network.to_string(),
            v1_name: n.network.v1_name().map(String::from),
            assets: n
                .assets
                .iter()
                .map(|a| AssetView {
                    symbol: a.symbol.clone(),
                    address: a.address.clone(),
                    decimals: a.decimals,
                })
                .collect(),
            allowed: tier.as_ref().map(|t| t.allows(&n.network)),
        })
        .collect();
    Ok(Json(SupportedChains {
        chains,
        tier: tier.map(|t| t.name),
    }))
}

#[utoipa::path(get, path = "/health", responses((status = 200, body = Status)))]
pub async fn health() -> Json<Status> {
    Json(Status {
        status: "ok".into(),
    })
}

#[utoipa::path(get, path = "/ready", responses((status = 200, body = Status), (status = 503, body = ErrorBody)))]
pub async fn ready(State(state): State<AdminState>) -> ApiResult<Json<Status>> {
    state
        .store()
        .await?
        .ping()
        .await
        .map_err(ApiError::unavailable)?;
    Ok(Json(Status {
        status: "ready".into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_new_key_gets_at_most_its_creators_scopes() {
        let writer = v(&["keys:write"]);
        assert_eq!(check_scopes(None, &writer).unwrap(), writer);
        assert_eq!(check_scopes(None, &all_scopes()).unwrap(), all_scopes());
        let e = check_scopes(Some(v(&["keys:write", "verify"])), &writer).unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::FORBIDDEN, "scope_not_held")
        );
        assert!(e.message.contains("cannot grant verify"), "{}", e.message);
        assert_eq!(
            check_scopes(Some(v(&["usage:read"])), &all_scopes()).unwrap(),
            v(&["usage:read"])
        );
        // Unknown or no scopes are a bad request whoever asks.
        let e = check_scopes(Some(v(&["root"])), &all_scopes()).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = check_scopes(Some(vec![]), &writer).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn lifetimes_are_bounded_and_never_overflow() {
        for bad in [
            i64::MAX,
            i64::MAX - now(),
            MAX_LIFETIME_SECONDS + 1,
            0,
            -1,
            i64::MIN,
        ] {
            let e = expiry(Some(bad)).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(e.message.contains("expires_in_seconds"), "{}", e.message);
        }
        let at = expiry(Some(MAX_LIFETIME_SECONDS)).unwrap().unwrap();
        assert!(at > now());
        assert_eq!(expiry(None).unwrap(), None);
        assert!(deadline("grace_seconds", 0, 0).is_ok());
        assert!(deadline("grace_seconds", -1, 0).is_err());
    }
}
