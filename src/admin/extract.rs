//! The management API's extractors: who is calling, and bodies and queries whose rejections are
//! `ApiError`s (a 400 with the parser's message).
//!
//! Who is calling: [`Operator`] (the `admin.token`, compared in constant time), [`TenantKey`]
//! (a tenant's API key holding the scope named by its type parameter, see [`needs`]) and
//! [`OperatorOrKey`]. A request with no credential header may instead carry a dashboard session
//! cookie (`dashboard/session.rs`): it stands for the credential its user signed in with, and a
//! state-changing request on it must carry the session's CSRF token (`X-CSRF-Token`), or it is a
//! 403 `csrf_failed`. Credential headers are never sent by a browser on its own, so requests with
//! them need no CSRF token and work exactly as before. An `Option<TenantKey>` is `None` only when no credential is presented; a
//! bad one is still an error. A handler names these after its path and, when it takes a body,
//! inside [`AuthedBody`], so the checks run in the same order as when each handler called them
//! itself.

use std::marker::PhantomData;

use axum::extract::rejection::JsonRejection;
use axum::extract::{
    FromRequest, FromRequestParts, OptionalFromRequestParts, Path, Query, Request,
};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::Json;
use serde::de::DeserializeOwned;

use super::dashboard::session::{self, Principal, Session};
use super::{AdminState, ApiError, ApiResult};
use crate::ratelimit::Scope;
use crate::tenants::{admin_token_matches, AuthError};

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// Whether the request names a credential of its own (then any session cookie is ignored).
fn has_credential_header(headers: &HeaderMap) -> bool {
    headers.contains_key("x-admin-key")
        || headers.contains_key("x-api-key")
        || headers.contains_key(AUTHORIZATION)
}

/// The dashboard session a request without credential headers carries: `None` without a session
/// cookie; a 401 for a session that is unknown, expired or signed out; a 403 `csrf_failed` for a
/// state-changing request without the session's CSRF token.
pub(super) fn session_of(state: &AdminState, parts: &Parts) -> ApiResult<Option<Session>> {
    if has_credential_header(&parts.headers) {
        return Ok(None);
    }
    let Some(id) = session::cookie_id(&parts.headers) else {
        return Ok(None);
    };
    let found = state.sessions.get(id).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "session_expired",
            "the dashboard session has ended; sign in again",
        )
    })?;
    let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        let presented = parts
            .headers
            .get(session::CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !found.csrf_matches(presented) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf_failed",
                "a change made with a dashboard session needs the session's X-CSRF-Token header",
            ));
        }
    }
    Ok(Some(found))
}

/// The operator, authenticated with `admin.token` (`X-Admin-Key` or `Authorization: Bearer`),
/// or a dashboard session signed in with it.
#[derive(Debug, Clone, Copy)]
pub struct Operator;

impl Operator {
    fn check(state: &AdminState, parts: &Parts) -> ApiResult<Operator> {
        if let Some(s) = session_of(state, parts)? {
            return match s.principal {
                Principal::Operator => Ok(Operator),
                Principal::Tenant { .. } => Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "operator_only",
                    "this needs the operator; the dashboard is signed in with a tenant's key",
                )),
            };
        }
        let headers = &parts.headers;
        // The running config's token: a reload that changes it applies to the next request.
        let config = state.config.load();
        let Some(token) = &config.admin.token else {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "admin_disabled",
                "no admin.token is configured, so the operator endpoints are disabled",
            ));
        };
        let presented = headers
            .get("x-admin-key")
            .and_then(|v| v.to_str().ok())
            .or_else(|| bearer(headers))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "missing admin credential",
                )
            })?;
        if admin_token_matches(token.expose(), presented) {
            Ok(Operator)
        } else {
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "invalid admin credential",
            ))
        }
    }
}

impl FromRequestParts<AdminState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> ApiResult<Self> {
        Operator::check(state, parts)
    }
}

/// The scope a [`TenantKey`] must hold, as a type: `TenantKey<needs::Verify>`.
pub trait RequiredScope: Send + Sync + 'static {
    /// One of `tenants::SCOPES`, or `None` for any valid key.
    const SCOPE: Option<&'static str>;
}

/// The scopes, as types for [`TenantKey`]'s parameter.
pub mod needs {
    use super::RequiredScope;

    macro_rules! scopes {
        ($($(#[$doc:meta])* $name:ident = $scope:expr;)*) => {$(
            $(#[$doc])*
            #[derive(Debug, Clone, Copy)]
            pub struct $name;
            impl RequiredScope for $name {
                const SCOPE: Option<&'static str> = $scope;
            }
        )*};
    }

    scopes! {
        /// Any valid key, whatever its scopes.
        AnyScope = None;
        /// `verify`: the verify API.
        Verify = Some("verify");
        /// `usage:read`: the tenant's own usage.
        UsageRead = Some("usage:read");
        /// `keys:write`: the tenant's own keys.
        KeysWrite = Some("keys:write");
        /// `payments:read`: the tenant's own payments.
        PaymentsRead = Some("payments:read");
        /// `routes:write`: the tenant's own routes.
        RoutesWrite = Some("routes:write");
    }
}

/// A tenant's API key (`Authorization: Bearer` or `X-API-Key`), valid now and holding `S`'s
/// scope. The scope is checked by `KeyAuth::authenticate` itself, before the key is marked used;
/// then the tenant's `rate_limit.admin.per_tenant` limit (a 429 `rate_limited` when over it).
#[derive(Debug, Clone)]
pub struct TenantKey<S = needs::AnyScope> {
    pub tenant: String,
    pub scopes: Vec<String>,
    scope: PhantomData<S>,
}

impl<S: RequiredScope> TenantKey<S> {
    async fn check(state: &AdminState, parts: &Parts) -> ApiResult<Self> {
        // A dashboard session holds its key server-side: it is authenticated again here, so a
        // key revoked or expired since sign-in ends its session's access at once.
        let from_session = match session_of(state, parts)? {
            Some(Session {
                principal: Principal::Tenant { key, .. },
                ..
            }) => Some(key),
            Some(_) => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "tenant_only",
                    "this acts for a tenant's key; the dashboard is signed in as the operator",
                ))
            }
            None => None,
        };
        let headers = &parts.headers;
        let secret = match &from_session {
            Some(key) => key.expose(),
            None => headers
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .or_else(|| bearer(headers))
                .ok_or(AuthError::Missing)?,
        };
        let record = state.keys.authenticate(secret, S::SCOPE).await?;
        // `rate_limit.admin.per_tenant`: every key of a tenant counts toward its one limit.
        state
            .limits
            .load_full()
            .check(Scope::AdminTenant, &record.tenant_id)
            .await
            .map_err(ApiError::rate_limited)?;
        Ok(TenantKey {
            tenant: record.tenant_id,
            scopes: record.scopes,
            scope: PhantomData,
        })
    }
}

impl<S: RequiredScope> FromRequestParts<AdminState> for TenantKey<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> ApiResult<Self> {
        Self::check(state, parts).await
    }
}

/// `None` when neither `X-API-Key` nor `Authorization` is sent (nor a tenant's dashboard
/// session); a key that is sent must be valid.
impl<S: RequiredScope> OptionalFromRequestParts<AdminState> for TenantKey<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> ApiResult<Option<Self>> {
        if parts.headers.contains_key("x-api-key") || parts.headers.contains_key(AUTHORIZATION) {
            return Self::check(state, parts).await.map(Some);
        }
        match session_of(state, parts)? {
            Some(Session {
                principal: Principal::Tenant { .. },
                ..
            }) => Self::check(state, parts).await.map(Some),
            _ => Ok(None),
        }
    }
}

/// The operator if its credential is valid, else a tenant key holding `S`'s scope (and that
/// key's error if it is not one either).
#[derive(Debug, Clone)]
pub enum OperatorOrKey<S = needs::AnyScope> {
    Operator,
    Key(TenantKey<S>),
}

impl<S: RequiredScope> FromRequestParts<AdminState> for OperatorOrKey<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> ApiResult<Self> {
        if Operator::check(state, parts).is_ok() {
            return Ok(OperatorOrKey::Operator);
        }
        TenantKey::check(state, parts).await.map(OperatorOrKey::Key)
    }
}

/// A caller `A` and a body `B`, the body read before the caller is authenticated: the order of a
/// handler that took its body and then checked credentials, so an unauthenticated request is
/// still read whole (the admin listener's idle timeout applies to a half-sent body) and still
/// answered with the credential error before any body error.
#[derive(Debug)]
pub struct AuthedBody<A, B>(pub A, pub B);

impl<A, B> FromRequest<AdminState> for AuthedBody<A, B>
where
    A: FromRequestParts<AdminState, Rejection = ApiError>,
    B: FromRequest<AdminState> + Send,
    B::Rejection: Send,
    ApiError: From<B::Rejection>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AdminState) -> ApiResult<Self> {
        let (mut parts, body) = req.into_parts();
        let b = B::from_request(Request::from_parts(parts.clone(), body), state).await;
        let a = A::from_request_parts(&mut parts, state).await?;
        Ok(AuthedBody(a, b?))
    }
}

/// A JSON body; every body error (malformed JSON, unknown or missing fields, wrong types, no
/// JSON content type) is a 400 with the parser's message.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AdminState> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AdminState) -> ApiResult<Self> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(v)| Body(v))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// A JSON body that may be left out (no JSON content type): then `T::default()`.
#[derive(Debug)]
pub struct OptionalBody<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<AdminState> for OptionalBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AdminState) -> ApiResult<Self> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(OptionalBody(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Ok(OptionalBody(T::default())),
            Err(e) => Err(ApiError::bad_request(e.body_text())),
        }
    }
}

/// A query string; a malformed one is a 400 with the parser's message.
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned> FromRequestParts<AdminState> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> ApiResult<Self> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| QueryParams(v))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// A path parameter; one that does not decode (a `%`-escape that is not UTF-8, such as
/// `/tenants/%FF`) is a 400 `bad_request` with the parser's message, in the API's JSON like every
/// other error (axum's own `Path` answers such a request in plain text).
#[derive(Debug)]
pub struct PathParam<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AdminState> for PathParam<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> ApiResult<Self> {
        <Path<T> as FromRequestParts<AdminState>>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| PathParam(v))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenants::SCOPES;

    #[test]
    fn every_required_scope_is_a_known_scope() {
        for scope in [
            needs::Verify::SCOPE,
            needs::UsageRead::SCOPE,
            needs::KeysWrite::SCOPE,
            needs::PaymentsRead::SCOPE,
        ] {
            assert!(SCOPES.contains(&scope.unwrap()), "{scope:?}");
        }
        assert_eq!(needs::AnyScope::SCOPE, None);
    }
}
