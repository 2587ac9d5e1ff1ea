//! Tenants (operator only): create (with a first key holding every scope), list, read, update,
//! suspend and activate. A change is followed at once by challenges and quotas.

use std::collections::BTreeMap;
use std::str::FromStr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::extract::{AuthedBody, Body, Operator, PathParam};
use super::keys::{all_scopes, issue_key};
use super::*;
use crate::config::parse_address_for;
use crate::store::{now, TenantRecord};
use crate::x402::Network;

fn check_tier(state: &AdminState, tier: &str) -> ApiResult<()> {
    let config = state.config.load();
    if config.tiers.contains_key(tier) {
        Ok(())
    } else {
        let known: Vec<_> = config.tiers.keys().map(String::as_str).collect();
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

fn slug(s: &str) -> String {
    let mut out: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    out.truncate(40);
    out.trim_matches('-').to_string()
}

#[utoipa::path(post, path = "/api/v1/x402/admin/create-tenant", request_body = CreateTenantRequest,
    responses((status = 201, body = CreatedTenant), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("admin" = [])))]
pub async fn create_tenant(
    State(state): State<AdminState>,
    AuthedBody(_op, Body(req)): AuthedBody<Operator, Body<CreateTenantRequest>>,
) -> ApiResult<(StatusCode, Json<CreatedTenant>)> {
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
    if !state.store().await?.create_tenant(&record).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "tenant_exists",
            format!("tenant `{id}` already exists"),
        ));
    }
    let key = issue_key(&state, &id, all_scopes(), None).await?;
    let tenant = state.tenant_or_404(&id).await?;
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
    _: Operator,
) -> ApiResult<Json<Vec<TenantView>>> {
    let all = state.store().await?.tenants().await?;
    Ok(Json(all.into_iter().map(Into::into).collect()))
}

#[utoipa::path(get, path = "/api/v1/x402/admin/tenants/{id}", params(("id" = String, Path)),
    responses((status = 200, body = TenantView), (status = 404, body = ErrorBody)), security(("admin" = [])))]
pub async fn get_tenant(
    State(state): State<AdminState>,
    PathParam(id): PathParam<String>,
    _: Operator,
) -> ApiResult<Json<TenantView>> {
    Ok(Json(state.tenant_or_404(&id).await?.into()))
}

#[utoipa::path(patch, path = "/api/v1/x402/admin/tenants/{id}", params(("id" = String, Path)), request_body = UpdateTenantRequest,
    responses((status = 200, body = TenantView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)), security(("admin" = [])))]
pub async fn update_tenant(
    State(state): State<AdminState>,
    PathParam(id): PathParam<String>,
    AuthedBody(_op, Body(req)): AuthedBody<Operator, Body<UpdateTenantRequest>>,
) -> ApiResult<Json<TenantView>> {
    if let Some(tier) = &req.tier {
        check_tier(&state, tier)?;
    }
    let pay_to = req.pay_to.as_ref().map(check_pay_to).transpose()?;
    let found = state
        .store()
        .await?
        .update_tenant(
            &id,
            req.name.as_deref(),
            req.tier.as_deref(),
            None,
            pay_to.as_ref(),
        )
        .await?;
    if !found {
        return Err(ApiError::not_found("tenant"));
    }
    state.tenants_changed(&id).await;
    Ok(Json(state.tenant_or_404(&id).await?.into()))
}

async fn set_status(state: &AdminState, id: &str, status: &str) -> ApiResult<Json<TenantView>> {
    let store = state.store().await?;
    if !store
        .update_tenant(id, None, None, Some(status), None)
        .await?
    {
        return Err(ApiError::not_found("tenant"));
    }
    state.tenants_changed(id).await;
    Ok(Json(state.tenant_or_404(id).await?.into()))
}

#[utoipa::path(post, path = "/api/v1/x402/admin/tenants/{id}/suspend", params(("id" = String, Path)),
    responses((status = 200, body = TenantView), (status = 404, body = ErrorBody)), security(("admin" = [])))]
pub async fn suspend_tenant(
    State(state): State<AdminState>,
    PathParam(id): PathParam<String>,
    _: Operator,
) -> ApiResult<Json<TenantView>> {
    set_status(&state, &id, "suspended").await
}

#[utoipa::path(post, path = "/api/v1/x402/admin/tenants/{id}/activate", params(("id" = String, Path)),
    responses((status = 200, body = TenantView), (status = 404, body = ErrorBody)), security(("admin" = [])))]
pub async fn activate_tenant(
    State(state): State<AdminState>,
    PathParam(id): PathParam<String>,
    _: Operator,
) -> ApiResult<Json<TenantView>> {
    set_status(&state, &id, "active").await
}

#[utoipa::path(get, path = "/api/v1/x402/admin/tiers", responses((status = 200, body = [TierView])), security(("admin" = [])))]
pub async fn list_tiers(State(state): State<AdminState>, _: Operator) -> Json<Vec<TierView>> {
    Json(
        state
            .config
            .load()
            .tiers
            .values()
            .map(|t| TierView {
                name: t.name.clone(),
                monthly_verifications: t.monthly_verifications,
                networks: t.networks.clone(),
            })
            .collect(),
    )
}
