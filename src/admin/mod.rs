//! The management API (axum) on `server.admin_listen`, never on the public listener.
//!
//! Operators authenticate with `admin.token` (`X-Admin-Key` or `Authorization: Bearer`,
//! compared in constant time); tenants with their API keys (`Authorization: Bearer` or
//! `X-API-Key`), scoped, and only ever to their own data. Paths and shapes of the product's first
//! design are kept (`/api/v1/x402/admin/create-tenant`, `/api/v1/x402/verify`,
//! `/api/v1/x402/usage`, `/api/v1/x402/supported-chains`). The OpenAPI document is generated
//! from this code (utoipa) and served at `/api/v1/openapi.json`.
//!
//! This file holds the state, the error answer (`ApiError`, with `From` impls for the errors
//! handlers meet, so they use `?`), the router and the OpenAPI document. `extract.rs`: who is
//! calling (`Operator`, `TenantKey<needs::Scope>`, `OperatorOrKey`) and bodies as extractors.
//! Handlers by resource: `tenants.rs`, `keys.rs`, `payments.rs`, `verify.rs`, `usage.rs`,
//! `status.rs` (supported chains, health, readiness), `reload.rs` (config reload),
//! `billing.rs` (the Stripe webhook, Checkout, plans paid with x402), `api_routes.rs` (routes
//! as data, namespaces). `types.rs`: bodies and their OpenAPI schemas. `serve.rs` serves the
//! router with header-read and idle timeouts. `dashboard/`: the embedded single-page dashboard
//! at `/dashboard` and its cookie sessions, which the extractors accept in place of a credential
//! header (with a CSRF token on every change).
//! May import: payments, store, tenants, pricing, billing, routes (reload, api, upstream),
//! reload (its handle and report), config, health, logging, x402.

mod api_routes;
mod billing;
pub mod dashboard;
mod extract;
mod keys;
mod payments;
mod reload;
mod serve;
mod status;
mod tenants;
mod types;
mod usage;
mod verify;

/// Every handler under one name: utoipa tags each operation with the module path written in
/// `paths(...)` below, so the published document keeps its one tag, `handlers`.
mod handlers {
    pub use super::api_routes::*;
    pub use super::billing::*;
    pub use super::keys::*;
    pub use super::payments::*;
    pub use super::reload::*;
    pub use super::status::*;
    pub use super::tenants::*;
    pub use super::usage::*;
    pub use super::verify::*;
}

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use utoipa::OpenApi;

use tracing::Instrument;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::logging;
use crate::ratelimit::{RateLimiter, Scope};
use crate::routes::reload::RouteReloader;
use crate::store::{LazyStore, Store, StoreError};
use crate::tenants::{AuthError, KeyAuth, TenantDirectory, TenantError};

pub use billing::Billing;
pub use types::*;

/// What the handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// The running config (a reload swaps it; `admin.token` is read from it per request).
    pub config: Arc<ArcSwap<Config>>,
    pub store: Arc<LazyStore>,
    pub tenants: Arc<TenantDirectory>,
    pub keys: Arc<KeyAuth>,
    pub reloader: Arc<RouteReloader>,
    /// The payment core, on this service's own store (the verify API is one of its adapters).
    pub payments: Arc<crate::payments::Payments>,
    /// What the health probe saw, for `/ready`.
    pub health: Arc<crate::health::HealthBoard>,
    /// `[rate_limit]`'s management API limits (per client IP, per authenticated tenant); a
    /// reload swaps them.
    pub limits: Arc<ArcSwap<RateLimiter>>,
    /// Runs config reloads (`POST /api/v1/x402/admin/reload`); `None` when the gateway was not
    /// started from a file.
    pub reload: Option<crate::reload::ReloadHandle>,
    /// The dashboard's sign-in sessions (this instance's memory).
    pub sessions: Arc<dashboard::session::Sessions>,
    /// `[billing]`: the x402 plans' offers and Stripe's client.
    pub billing: Arc<Billing>,
}

/// Every `error` code the API answers with, and its status. Published as the `enum` of
/// `ErrorBody.error` in the OpenAPI document, with each code's status in its `x-error-statuses`
/// (the SDKs map each code to an exception class);
/// `ApiError::new` refuses, in debug builds, a code missing here.
pub const ERROR_CODES: &[(&str, u16)] = &[
    ("bad_request", 400),
    ("unauthorized", 401),
    ("insufficient_scope", 403),
    ("scope_not_held", 403),
    ("admin_disabled", 403),
    ("tenant_suspended", 403),
    ("network_not_allowed", 403),
    ("not_found", 404),
    ("method_not_allowed", 405),
    ("tenant_exists", 409),
    ("key_not_live", 409),
    ("reload_unavailable", 409),
    ("route_limit_reached", 409),
    ("namespace_taken", 409),
    ("config_route", 403),
    // A route that does not validate: also answered with `fields` (`InvalidRoute`).
    ("invalid_route", 400),
    // The dashboard's session cookie (dashboard/session.rs), never met with a credential header.
    ("session_expired", 401),
    ("csrf_failed", 403),
    ("operator_only", 403),
    ("tenant_only", 403),
    ("dashboard_not_built", 503),
    // Plans and billing (billing.rs).
    ("billing_disabled", 404),
    ("invalid_signature", 400),
    ("not_for_sale", 400),
    ("stripe_unavailable", 502),
    ("payment_unavailable", 503),
    ("settlement_pending", 503),
    ("internal", 500),
    ("plan_not_applied", 500),
    ("tenant_quota_exceeded", 429),
    ("rate_limited", 429),
    ("unavailable", 503),
    ("verification_unavailable", 503),
];

/// An error answer: `{"error": code, "message": ...}` with its status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for `Retry-After` (a 429 `rate_limited`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        debug_assert!(
            ERROR_CODES.contains(&(code, status.as_u16())),
            "error code `{code}` with status {status} is not in ERROR_CODES"
        );
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    /// A 429 `rate_limited` with `Retry-After`: over a `[rate_limit]` limit.
    pub fn rate_limited(limited: crate::ratelimit::Limited) -> Self {
        let secs = limited.retry_after;
        ApiError {
            retry_after: Some(secs),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests; retry in {secs} s"),
            )
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such {what}"),
        )
    }
    pub fn unavailable(e: impl std::fmt::Display) -> Self {
        tracing::warn!("admin API: {e}");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the database is unavailable; retry shortly",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(ErrorBody {
                error: self.code.to_string(),
                message: self.message,
            }),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        resp
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unavailable => ApiError::unavailable(e),
            AuthError::Scope(_) => {
                ApiError::new(StatusCode::FORBIDDEN, "insufficient_scope", e.to_string())
            }
            _ => ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string()),
        }
    }
}

/// The store unreachable or failing: a 503 `unavailable` (the cause is logged, never shown).
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::unavailable(e)
    }
}

/// A tenant's standing unreadable: a 503 `unavailable`, like the store it comes from.
impl From<TenantError> for ApiError {
    fn from(e: TenantError) -> Self {
        ApiError::unavailable(e)
    }
}

/// For extractors that cannot fail, such as `Result<Body<T>, ApiError>`.
impl From<std::convert::Infallible> for ApiError {
    fn from(e: std::convert::Infallible) -> Self {
        match e {}
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

impl AdminState {
    pub async fn store(&self) -> ApiResult<&Store> {
        Ok(self.store.get().await?)
    }

    /// Re-reads tenants after a change so challenges and quotas follow at once.
    pub async fn tenants_changed(&self, tenant: &str) {
        self.tenants.invalidate(tenant).await;
        if let Err(e) = self.reloader.reload().await {
            tracing::warn!("reloading routes after a tenant change: {e}");
        }
    }

    /// A tenant by id, or 404 (every per-tenant handler starts here).
    pub(crate) async fn tenant_or_404(&self, id: &str) -> ApiResult<crate::store::TenantRecord> {
        self.store()
            .await?
            .tenant(id)
            .await?
            .ok_or_else(|| ApiError::not_found("tenant"))
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "x402-gate management API",
        description = "Tenants, API keys, usage, payment verification and plan billing."
    ),
    paths(
        handlers::create_tenant,
        handlers::list_tenants,
        handlers::get_tenant,
        handlers::update_tenant,
        handlers::suspend_tenant,
        handlers::activate_tenant,
        handlers::list_tiers,
        handlers::admin_create_key,
        handlers::admin_list_keys,
        handlers::admin_rotate_key,
        handlers::admin_revoke_key,
        handlers::list_payments,
        handlers::reload_config,
        handlers::own_create_key,
        handlers::own_list_keys,
        handlers::own_rotate_key,
        handlers::own_revoke_key,
        handlers::verify,
        handlers::usage,
        handlers::supported_chains,
        handlers::health,
        handlers::ready,
        handlers::list_routes,
        handlers::create_route,
        handlers::update_route,
        handlers::delete_route,
        handlers::set_namespace,
        handlers::stripe_webhook,
        handlers::checkout,
        handlers::upgrade,
        handlers::billing,
    ),
    modifiers(&Documented)
)]
pub struct ApiDoc;

/// What the `#[utoipa::path]` annotations leave out: the security schemes the operations name,
/// the `error` codes, and the errors every operation can answer with (a missing or bad credential,
/// a scope or standing refused, a rate limit, the database unavailable).
struct Documented;

impl utoipa::Modify for Documented {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{SchemaType, Type};
        use utoipa::openapi::security::SecurityScheme;
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder};
        use utoipa::openapi::{Content, Ref, RefOr, Required, ResponseBuilder, Schema};

        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Admin-Key",
                "The operator's admin.token (also accepted as `Authorization: Bearer`).",
            ))),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A tenant's API key, `x402_live_…` (also accepted as `X-API-Key`).",
                    ))
                    .build(),
            ),
        );
        if let Some(RefOr::T(Schema::Object(body))) = components.schemas.get_mut("ErrorBody") {
            if let Some(RefOr::T(Schema::Object(error))) = body.properties.get_mut("error") {
                error.enum_values = Some(ERROR_CODES.iter().map(|(c, _)| (*c).into()).collect());
                // Each code's status, for clients that map codes to exception classes.
                let statuses: serde_json::Map<String, serde_json::Value> = ERROR_CODES
                    .iter()
                    .map(|(c, s)| (c.to_string(), (*s).into()))
                    .collect();
                error
                    .extensions
                    .get_or_insert_with(Default::default)
                    .insert("x-error-statuses".into(), statuses.into());
            }
        }

        let error = |description: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        Content::new(Some(Ref::from_schema_name("ErrorBody"))),
                    )
                    .build(),
            )
        };
        for (path, item) in doc.paths.paths.iter_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in operations.into_iter().flatten() {
                // An optional body (`request_body = Option<T>`) comes out as `oneOf: [null, T]`;
                // what the handler takes is T or no body at all (not a JSON null).
                if let Some(body) = op.request_body.as_mut() {
                    let mut optional = false;
                    for content in body.content.values_mut() {
                        if let Some(RefOr::T(Schema::OneOf(one))) = &content.schema {
                            let is_null = |s: &RefOr<Schema>| {
                                matches!(s, RefOr::T(Schema::Object(o))
                                    if matches!(o.schema_type, SchemaType::Type(Type::Null)))
                            };
                            let mut rest = one.items.iter().filter(|s| !is_null(s));
                            if let (Some(only), None) = (rest.next(), rest.next()) {
                                content.schema = Some(only.clone());
                                optional = true;
                            }
                        }
                    }
                    if optional {
                        body.required = Some(Required::False);
                    }
                }
                let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
                // A path parameter that does not decode (`%FF`) is a 400 (`PathParam`).
                let path_params = op.parameters.as_ref().is_some_and(|ps| {
                    ps.iter()
                        .any(|p| matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Path))
                });
                let responses = &mut op.responses.responses;
                let mut add = |status: &str, description: &str| {
                    responses
                        .entry(status.to_string())
                        .or_insert_with(|| error(description));
                };
                if secured {
                    add(
                        "401",
                        "`unauthorized`: a missing, unknown, expired or revoked credential",
                    );
                    add(
                        "403",
                        "`insufficient_scope` (the key lacks the operation's scope), \
                         `admin_disabled` (no admin.token configured), or a refusal of the \
                         operation itself",
                    );
                    add(
                        "503",
                        "`unavailable`: the database does not answer; retry shortly",
                    );
                }
                if path_params {
                    add(
                        "400",
                        "`bad_request`: a path parameter that does not decode, or a bad body",
                    );
                }
                if path != "/health" && path != "/ready" {
                    add(
                        "429",
                        "`rate_limited`: over a `[rate_limit]` limit (see `Retry-After`)",
                    );
                }
            }
        }
    }
}

pub fn router(state: AdminState) -> Router {
    use handlers::*;
    Router::new()
        .route("/api/v1/x402/admin/create-tenant", post(create_tenant))
        .route("/api/v1/x402/admin/tenants", get(list_tenants))
        .route("/api/v1/x402/admin/tiers", get(list_tiers))
        .route(
            "/api/v1/x402/admin/tenants/{id}",
            get(get_tenant).patch(update_tenant),
        )
        .route(
            "/api/v1/x402/admin/tenants/{id}/suspend",
            post(suspend_tenant),
        )
        .route(
            "/api/v1/x402/admin/tenants/{id}/activate",
            post(activate_tenant),
        )
        .route(
            "/api/v1/x402/admin/tenants/{id}/keys",
            post(admin_create_key).get(admin_list_keys),
        )
        .route(
            "/api/v1/x402/admin/keys/{key_id}/rotate",
            post(admin_rotate_key),
        )
        .route(
            "/api/v1/x402/admin/keys/{key_id}/revoke",
            post(admin_revoke_key),
        )
        .route("/api/v1/x402/admin/payments", get(list_payments))
        .route("/api/v1/x402/admin/reload", post(reload_config))
        .route(
            "/api/v1/x402/admin/tenants/{id}/namespace",
            axum::routing::put(set_namespace),
        )
        .route("/api/v1/x402/routes", get(list_routes).post(create_route))
        .route(
            "/api/v1/x402/routes/{id}",
            axum::routing::patch(update_route).delete(delete_route),
        )
        .route("/api/v1/x402/keys", post(own_create_key).get(own_list_keys))
        .route("/api/v1/x402/keys/{key_id}/rotate", post(own_rotate_key))
        .route("/api/v1/x402/keys/{key_id}/revoke", post(own_revoke_key))
        .route("/api/v1/x402/verify", post(verify))
        .route("/api/v1/x402/usage", get(usage))
        .route("/api/v1/x402/supported-chains", get(supported_chains))
        .route("/api/v1/x402/billing", get(billing))
        .route("/api/v1/x402/billing/stripe/webhook", post(stripe_webhook))
        .route("/api/v1/x402/billing/checkout", post(checkout))
        .route(crate::billing::plans::UPGRADE_PATH, post(upgrade))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route(
            "/api/v1/openapi.json",
            get(|| async { Json(ApiDoc::openapi()) }),
        )
        .merge(dashboard::routes())
        .fallback(|| async { ApiError::not_found("endpoint") })
        // Unused methods get a JSON 405 too, not an empty body.
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limit_per_ip,
        ))
        .layer(axum::middleware::from_fn(request_log))
        .with_state(state)
}

/// `rate_limit.admin.per_ip`, before anything else is read. `/health` and `/ready` are left out:
/// load balancers and orchestrators poll them.
async fn limit_per_ip(
    axum::extract::State(state): axum::extract::State<AdminState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path();
    let limits = state.limits.load_full();
    if limits.limits(Scope::AdminIp) && path != "/health" && path != "/ready" {
        let ip = req
            .extensions()
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        if let Some(ip) = ip {
            if let Err(limited) = limits.check(Scope::AdminIp, &ip.to_string()).await {
                return ApiError::rate_limited(limited).into_response();
            }
        }
    }
    next.run(req).await
}

/// Each management request runs in a `request` span with its id (the caller's sane
/// `X-Request-Id`, or a fresh one), answers with that id, and ends with one access line. No
/// header value is logged: they carry the admin token and API keys.
async fn request_log(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let id = logging::request_id(req.headers());
    let span = logging::request_span(&id);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let started = std::time::Instant::now();
    async move {
        let mut resp = next.run(req).await;
        if let Ok(value) = axum::http::HeaderValue::from_str(&id) {
            resp.headers_mut().insert(logging::REQUEST_ID_HEADER, value);
        }
        tracing::info!(
            target: "x402_gate::access",
            listener = "admin",
            method = method.as_str(),
            path = path.as_str(),
            route = route.as_deref(),
            status = resp.status().as_u16(),
            total_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
            "request"
        );
        resp
    }
    .instrument(span)
    .await
}

/// The management API as a pingora background service, listening on `admin_listen`.
pub struct AdminService {
    pub listen: SocketAddr,
    pub state: AdminState,
}

#[async_trait]
impl BackgroundService for AdminService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Shared with the successor of a graceful upgrade (see `net`).
        let listener = match crate::net::bind_shared(self.listen) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(listen = %self.listen, "the management API cannot listen: {e}");
                return;
            }
        };
        tracing::info!(listen = %self.listen, "management API listening");
        let app = router(self.state.clone());
        let stop = async move {
            let _ = shutdown.changed().await;
        };
        let config = self.state.config.load_full();
        let timeouts = serve::Timeouts {
            header_read: config.admin.header_read_timeout,
            idle: config.admin.idle_timeout,
        };
        serve::serve(listener, app, timeouts, stop).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn doc() -> Value {
        serde_json::to_value(ApiDoc::openapi()).unwrap()
    }

    #[test]
    fn the_document_defines_what_it_references() {
        let doc = doc();
        let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for requirement in op["security"].as_array().into_iter().flatten() {
                    for name in requirement.as_object().unwrap().keys() {
                        assert!(schemes.contains_key(name), "{method} {path}: {name}");
                    }
                }
                // Parameters are where they are said to be: path ones in the path (required),
                // and every query parameter of this API is optional.
                for p in op["parameters"].as_array().into_iter().flatten() {
                    let name = p["name"].as_str().unwrap();
                    let in_path = path.contains(&format!("{{{name}}}"));
                    assert_eq!(p["in"] == "path", in_path, "{method} {path}: {name}");
                    if in_path || p["in"] == "query" {
                        assert_eq!(p["required"] == true, in_path, "{method} {path}: {name}");
                    }
                }
                // Every `{name}` of the path is declared as a path parameter.
                for segment in path.split('/') {
                    if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}'))
                    {
                        let declared = op["parameters"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|p| p["in"] == "path" && p["name"] == name);
                        assert!(declared, "{method} {path}: `{name}` is not declared");
                    }
                }
                // An optional body is the schema itself, not `oneOf: [null, ...]`.
                let body = &op["requestBody"]["content"]["application/json"]["schema"];
                assert!(body.get("oneOf").is_none() || body["oneOf"][0]["type"] != "null");
                let responses = op["responses"].as_object().unwrap();
                if op.get("security").is_some() {
                    for status in ["401", "403", "503"] {
                        assert!(responses.contains_key(status), "{method} {path}: {status}");
                    }
                }
            }
        }
    }

    #[test]
    fn every_error_code_is_published_with_its_status() {
        let doc = doc();
        let error = &doc["components"]["schemas"]["ErrorBody"]["properties"]["error"];
        let codes: Vec<&str> = error["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(
            codes,
            ERROR_CODES.iter().map(|(c, _)| *c).collect::<Vec<_>>()
        );
        for (code, status) in ERROR_CODES {
            assert_eq!(error["x-error-statuses"][code], *status, "{code}");
        }
        // The helpers use codes of the list (ApiError::new asserts it in debug builds).
        let e = ApiError::rate_limited(crate::ratelimit::Limited { retry_after: 3 });
        assert_eq!((e.status.as_u16(), e.code), (429, "rate_limited"));
        assert_eq!(ApiError::not_found("tenant").code, "not_found");
        assert_eq!(ApiError::bad_request("x").code, "bad_request");
    }
}
