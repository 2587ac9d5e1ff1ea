//! The dashboard: a single-page app (sources in `dashboard/`, built into `dashboard/dist` and
//! embedded in the binary by `build.rs`) served at `/dashboard`, and its session endpoints.
//!
//! The page signs in with an API key or the admin token (`POST /dashboard/api/login`), which
//! starts a server-side session (`session.rs`) held by an HttpOnly, SameSite=Strict cookie; from
//! then on it calls the management API itself (`/api/v1/x402/...`) with that cookie, and with the
//! session's CSRF token in `X-CSRF-Token` on every change (checked by the extractors in
//! `extract.rs`). `assets.rs` serves the embedded files with a strict Content-Security-Policy.

mod assets;
pub mod session;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::extract::Body;
use super::{AdminState, ApiError, ApiResult};
use crate::config::Secret;
use crate::tenants::{admin_token_matches, AuthError};
use session::{Principal, Session};

/// The dashboard's routes (merged into the management router).
pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/dashboard", get(assets::to_index))
        .route("/dashboard/", get(assets::index))
        .route("/dashboard/{*path}", get(assets::asset))
        .route("/dashboard/api/login", post(login))
        .route("/dashboard/api/session", get(current))
        .route("/dashboard/api/logout", post(logout))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// An API key (`x402_live_...`) or the admin token.
    pub token: String,
}

/// What the page knows of its session: never the credential, only who it is and the CSRF token.
#[derive(Debug, Serialize)]
pub struct SessionView {
    /// operator | tenant
    pub role: &'static str,
    pub tenant: Option<String>,
    /// The signed-in key's scopes (every scope for the operator).
    pub scopes: Vec<String>,
    /// Send as `X-CSRF-Token` on every state-changing request.
    pub csrf: String,
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

/// Who `token` signs in as: the operator, or the tenant of a live API key (with its scopes).
async fn principal_for(state: &AdminState, token: &str) -> ApiResult<(Principal, Vec<String>)> {
    let token = token.trim();
    if let Some(admin) = &state.config.load().admin.token {
        if admin_token_matches(admin.expose(), token) {
            return Ok((Principal::Operator, super::keys::all_scopes()));
        }
    }
    match state.keys.authenticate(token, None).await {
        Ok(record) => Ok((
            Principal::Tenant {
                tenant: record.tenant_id,
                key: Secret::new(token),
            },
            record.scopes,
        )),
        Err(AuthError::Unavailable) => Err(AuthError::Unavailable.into()),
        Err(_) => Err(unauthorized("not a valid API key or admin token")),
    }
}

fn view(session: &Session, scopes: Vec<String>) -> SessionView {
    let (role, tenant) = match &session.principal {
        Principal::Operator => ("operator", None),
        Principal::Tenant { tenant, .. } => ("tenant", Some(tenant.clone())),
    };
    SessionView {
        role,
        tenant,
        scopes,
        csrf: session.csrf.clone(),
    }
}

/// `POST /dashboard/api/login`: `{"token": ...}` -> a session cookie and the session's view. A
/// JSON body is required, which a cross-site form cannot send without a CORS preflight we never
/// answer, so a sign-in cannot be forged either.
async fn login(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Body(req): Body<LoginRequest>,
) -> ApiResult<Response> {
    let (principal, scopes) = principal_for(&state, &req.token).await?;
    let (id, session) = state.sessions.create(principal);
    let cookie = session::set_cookie(&id, session::over_tls(&headers));
    Ok((
        [
            (header::SET_COOKIE, cookie),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        Json(view(&session, scopes)),
    )
        .into_response())
}

/// `GET /dashboard/api/session`: the current session, or a 401 (its cookie is HttpOnly, so the
/// page asks). A tenant's key is authenticated again: a revoked key's session ends here.
async fn current(State(state): State<AdminState>, headers: HeaderMap) -> ApiResult<Response> {
    let id = session::cookie_id(&headers).ok_or_else(|| unauthorized("not signed in"))?;
    let s = state
        .sessions
        .get(id)
        .ok_or_else(|| unauthorized("not signed in"))?;
    let scopes = match &s.principal {
        Principal::Operator => super::keys::all_scopes(),
        Principal::Tenant { key, .. } => match state.keys.authenticate(key.expose(), None).await {
            Ok(record) => record.scopes,
            Err(AuthError::Unavailable) => return Err(AuthError::Unavailable.into()),
            Err(e) => {
                state.sessions.remove(id);
                return Err(unauthorized(&format!("signed out: {e}")));
            }
        },
    };
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(view(&s, scopes)),
    )
        .into_response())
}

/// `POST /dashboard/api/logout`: ends the session on the server and clears the cookie. Needs the
/// CSRF token (no other site can sign a user out).
async fn logout(State(state): State<AdminState>, headers: HeaderMap) -> ApiResult<Response> {
    if let Some(id) = session::cookie_id(&headers) {
        if let Some(s) = state.sessions.get(id) {
            let presented = headers
                .get(session::CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !s.csrf_matches(presented) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "csrf_failed",
                    "signing out needs the session's X-CSRF-Token header",
                ));
            }
            state.sessions.remove(id);
        }
    }
    Ok((
        StatusCode::NO_CONTENT,
        [(
            header::SET_COOKIE,
            session::clear_cookie(session::over_tls(&headers)),
        )],
    )
        .into_response())
}
