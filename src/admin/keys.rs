//! API keys: minted, listed, rotated and revoked by the operator for any tenant
//! (`/admin/tenants/{id}/keys`, `/admin/keys/...`) or by a tenant's `keys:write` key for its own
//! (`/keys/...`). A key never grants more scopes than its creator holds.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::extract::{needs, AuthedBody, Operator, OptionalBody, PathParam, TenantKey};
use super::*;
use crate::store::now;
use crate::tenants::{mint_key, DEFAULT_ROTATION_GRACE_SECONDS, SCOPES};

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
pub(super) fn all_scopes() -> Vec<String> {
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

/// Mints and stores a key for `tenant`; the answer holds its secret, shown this once.
pub(super) async fn issue_key(
    state: &AdminState,
    tenant: &str,
    scopes: Vec<String>,
    expires_at: Option<i64>,
) -> ApiResult<NewKey> {
    let minted = mint_key(tenant, &scopes, expires_at);
    state.store().await?.insert_key(&minted.record).await?;
    Ok(NewKey {
        key: minted.secret,
        info: minted.record.into(),
    })
}

/// The tenant key asking for a rotation: its tenant and scopes.
struct Caller<'a> {
    tenant: &'a str,
    scopes: &'a [String],
}

impl<'a, S> From<&'a TenantKey<S>> for Caller<'a> {
    fn from(key: &'a TenantKey<S>) -> Self {
        Caller {
            tenant: &key.tenant,
            scopes: &key.scopes,
        }
    }
}

/// Rotates `key_id`: a new key with the old one's scopes and expiry; the old one keeps working
/// for `grace` seconds. `caller` is the tenant key asking, or None for the operator.
async fn rotate(
    state: &AdminState,
    key_id: &str,
    caller: Option<Caller<'_>>,
    grace: Option<i64>,
) -> ApiResult<Json<RotatedKey>> {
    let grace = grace.unwrap_or(DEFAULT_ROTATION_GRACE_SECONDS);
    let retire_at = deadline("grace_seconds", grace, 0)?;
    let store = state.store().await?;
    let old = store
        .key(key_id)
        .await?
        .filter(|k| caller.as_ref().is_none_or(|c| c.tenant == k.tenant_id))
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
        check_held(&old.scopes, caller.scopes)?;
    }
    let new_key = issue_key(state, &old.tenant_id, old.scopes.clone(), old.expires_at).await?;
    store
        .retire_key(&old.id, &new_key.info.id, retire_at)
        .await?;
    state.keys.invalidate(&old).await;
    let old = store
        .key(&old.id)
        .await?
        .ok_or_else(|| ApiError::not_found("key"))?;
    Ok(Json(RotatedKey {
        new_key,
        old_key: old.into(),
    }))
}

/// Revokes `key_id`, if `owner` (None for the operator) owns it.
async fn revoke(state: &AdminState, key_id: &str, owner: Option<&str>) -> ApiResult<Json<KeyView>> {
    let store = state.store().await?;
    let key = store
        .key(key_id)
        .await?
        .filter(|k| owner.is_none_or(|o| o == k.tenant_id))
        .ok_or_else(|| ApiError::not_found("key"))?;
    store.revoke_key(&key.id).await?;
    state.keys.invalidate(&key).await;
    let key = store
        .key(&key.id)
        .await?
        .ok_or_else(|| ApiError::not_found("key"))?;
    Ok(Json(key.into()))
}

#[utoipa::path(post, path = "/api/v1/x402/admin/tenants/{id}/keys", params(("id" = String, Path)), request_body = Option<CreateKeyRequest>,
    responses((status = 201, body = NewKey), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)), security(("admin" = [])))]
pub async fn admin_create_key(
    State(state): State<AdminState>,
    PathParam(id): PathParam<String>,
    AuthedBody(_op, OptionalBody(req)): AuthedBody<Operator, OptionalBody<CreateKeyRequest>>,
) -> ApiResult<(StatusCode, Json<NewKey>)> {
    let scopes = check_scopes(req.scopes, &all_scopes())?;
    let expires_at = expiry(req.expires_in_seconds)?;
    state.tenant_or_404(&id).await?;
    let key = issue_key(&state, &id, scopes, expires_at).await?;
    Ok((StatusCode::CREATED, Json(key)))
}

#[utoipa::path(get, path = "/api/v1/x402/admin/tenants/{id}/keys", params(("id" = String, Path)),
    responses((status = 200, body = [KeyView]), (status = 404, body = ErrorBody)), security(("admin" = [])))]
pub async fn admin_list_keys(
    State(state): State<AdminState>,
    PathParam(id): PathParam<String>,
    _: Operator,
) -> ApiResult<Json<Vec<KeyView>>> {
    state.tenant_or_404(&id).await?;
    let keys = state.store().await?.keys_of(&id).await?;
    Ok(Json(keys.into_iter().map(Into::into).collect()))
}

#[utoipa::path(post, path = "/api/v1/x402/admin/keys/{key_id}/rotate", params(("key_id" = String, Path)), request_body = Option<RotateKeyRequest>,
    responses((status = 200, body = RotatedKey), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "`key_not_live`: the key is revoked or expired")), security(("admin" = [])))]
pub async fn admin_rotate_key(
    State(state): State<AdminState>,
    PathParam(key_id): PathParam<String>,
    AuthedBody(_op, OptionalBody(req)): AuthedBody<Operator, OptionalBody<RotateKeyRequest>>,
) -> ApiResult<Json<RotatedKey>> {
    rotate(&state, &key_id, None, req.grace_seconds).await
}

#[utoipa::path(post, path = "/api/v1/x402/admin/keys/{key_id}/revoke", params(("key_id" = String, Path)),
    responses((status = 200, body = KeyView), (status = 404, body = ErrorBody)), security(("admin" = [])))]
pub async fn admin_revoke_key(
    State(state): State<AdminState>,
    PathParam(key_id): PathParam<String>,
    _: Operator,
) -> ApiResult<Json<KeyView>> {
    revoke(&state, &key_id, None).await
}

#[utoipa::path(post, path = "/api/v1/x402/keys", request_body = Option<CreateKeyRequest>,
    responses((status = 201, body = NewKey), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)), security(("api_key" = ["keys:write"])))]
pub async fn own_create_key(
    State(state): State<AdminState>,
    AuthedBody(me, OptionalBody(req)): AuthedBody<
        TenantKey<needs::KeysWrite>,
        OptionalBody<CreateKeyRequest>,
    >,
) -> ApiResult<(StatusCode, Json<NewKey>)> {
    let scopes = check_scopes(req.scopes, &me.scopes)?;
    let expires_at = expiry(req.expires_in_seconds)?;
    let key = issue_key(&state, &me.tenant, scopes, expires_at).await?;
    Ok((StatusCode::CREATED, Json(key)))
}

#[utoipa::path(get, path = "/api/v1/x402/keys", responses((status = 200, body = [KeyView])), security(("api_key" = ["keys:write"])))]
pub async fn own_list_keys(
    State(state): State<AdminState>,
    me: TenantKey<needs::KeysWrite>,
) -> ApiResult<Json<Vec<KeyView>>> {
    let keys = state.store().await?.keys_of(&me.tenant).await?;
    Ok(Json(keys.into_iter().map(Into::into).collect()))
}

#[utoipa::path(post, path = "/api/v1/x402/keys/{key_id}/rotate", params(("key_id" = String, Path)), request_body = Option<RotateKeyRequest>,
    responses((status = 200, body = RotatedKey), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "`key_not_live`: the key is revoked or expired")), security(("api_key" = ["keys:write"])))]
pub async fn own_rotate_key(
    State(state): State<AdminState>,
    PathParam(key_id): PathParam<String>,
    AuthedBody(me, OptionalBody(req)): AuthedBody<
        TenantKey<needs::KeysWrite>,
        OptionalBody<RotateKeyRequest>,
    >,
) -> ApiResult<Json<RotatedKey>> {
    rotate(&state, &key_id, Some((&me).into()), req.grace_seconds).await
}

#[utoipa::path(post, path = "/api/v1/x402/keys/{key_id}/revoke", params(("key_id" = String, Path)),
    responses((status = 200, body = KeyView), (status = 404, body = ErrorBody)), security(("api_key" = ["keys:write"])))]
pub async fn own_revoke_key(
    State(state): State<AdminState>,
    PathParam(key_id): PathParam<String>,
    me: TenantKey<needs::KeysWrite>,
) -> ApiResult<Json<KeyView>> {
    revoke(&state, &key_id, Some(&me.tenant)).await
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
