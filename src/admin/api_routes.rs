//! Routes as data: `/api/v1/x402/routes` (list, create, change, delete) for a tenant's own key
//! (`routes:write` to write) and for the operator (any tenant), and the operator's namespace
//! assignment (`/api/v1/x402/admin/tenants/{id}/namespace`).
//!
//! A route is validated by the config's own route code (`config::api_route`), must lie inside
//! its tenant's namespace, and a tenant's upstream must resolve to public addresses only (or to
//! what `[routes_api] upstream_allow` opens); then it is stored and this instance's table is
//! rebuilt at once (others notice within a second). The file's routes are listed, read-only.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::extract::{needs, Operator, OperatorOrKey, QueryParams};
use super::{AdminState, ApiError, ApiResult, ErrorBody};
use crate::config::{ConfigError, PathPattern, Price, RouteConfig, SettlePolicy};
use crate::routes::api::{compile_one, overlaps};
use crate::routes::upstream::{UpstreamError, UpstreamPolicy};
use crate::store::{ApiRouteRecord, Namespace, RouteWrite};

/// A route as the API shows it: its fields as written, plus where it comes from.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RouteView {
    /// `r_…` for API routes; `config:<index>` for the file's.
    pub id: String,
    pub tenant: String,
    /// `api` (written through this API) or `config` (the file's; read-only here).
    pub source: String,
    /// Whether the route is in the table this instance serves (an API route that no longer
    /// validates under the running config is kept but not served).
    pub served: bool,
    /// The route's fields, as a `[[routes]]` entry writes them (`path`, `upstream`, `price`,
    /// ...), beside the four above.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub spec: Map<String, Value>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RouteList {
    pub routes: Vec<RouteView>,
}

/// A field's validation error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// 400 `invalid_route`, with every field's error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InvalidRoute {
    pub error: String,
    pub message: String,
    pub fields: Vec<FieldError>,
}

type RouteResult<T> = Result<T, RouteError>;

/// An API error, or a validation failure with its fields.
pub enum RouteError {
    Api(ApiError),
    Invalid(Vec<FieldError>),
}

impl From<ApiError> for RouteError {
    fn from(e: ApiError) -> Self {
        RouteError::Api(e)
    }
}

impl axum::response::IntoResponse for RouteError {
    fn into_response(self) -> axum::response::Response {
        match self {
            RouteError::Api(e) => e.into_response(),
            RouteError::Invalid(fields) => {
                let message = fields
                    .iter()
                    .map(|f| {
                        if f.field.is_empty() {
                            f.message.clone()
                        } else {
                            format!("{}: {}", f.field, f.message)
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                (
                    StatusCode::BAD_REQUEST,
                    Json(InvalidRoute {
                        error: "invalid_route".into(),
                        message,
                        fields,
                    }),
                )
                    .into_response()
            }
        }
    }
}

fn fields(errors: Vec<ConfigError>) -> RouteError {
    RouteError::Invalid(
        errors
            .into_iter()
            .map(|e| FieldError {
                field: e.path,
                message: e.message,
            })
            .collect(),
    )
}

/// A JSON body of the routes API. One that cannot be read (no JSON content type, not JSON, not the
/// shape asked for) is a 400 `invalid_route` like every other refusal of these endpoints, not
/// axum's plain-text 400, 415 or 422 (found by schemathesis, `tests/api_fuzz.rs`).
pub struct RouteBody<T>(pub T);

impl<T: serde::de::DeserializeOwned> axum::extract::FromRequest<AdminState> for RouteBody<T> {
    type Rejection = RouteError;

    async fn from_request(req: axum::extract::Request, state: &AdminState) -> RouteResult<Self> {
        <Json<T> as axum::extract::FromRequest<AdminState>>::from_request(req, state)
            .await
            .map(|Json(v)| RouteBody(v))
            .map_err(|e| invalid("", e.body_text()))
    }
}

/// The `{id}` of a routes API path; one that does not decode (`%FF`) is a 400 `invalid_route`.
pub struct RouteParam(pub String);

impl axum::extract::FromRequestParts<AdminState> for RouteParam {
    type Rejection = RouteError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AdminState,
    ) -> RouteResult<Self> {
        <axum::extract::Path<String> as axum::extract::FromRequestParts<AdminState>>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| RouteParam(v))
            .map_err(|e| invalid("id", e.body_text()))
    }
}

fn invalid(field: &str, message: impl Into<String>) -> RouteError {
    RouteError::Invalid(vec![FieldError {
        field: field.into(),
        message: message.into(),
    }])
}

/// The file's route as a spec.
fn config_spec(r: &RouteConfig) -> Value {
    let path = match &r.path {
        PathPattern::Exact(p) => p.clone(),
        PathPattern::Prefix(p) => format!("{}/*", p.trim_end_matches('/')),
    };
    let price = match &r.price {
        Price::Free => Value::from("free"),
        Price::Usd(d) => Value::from(format!("${d}")),
        Price::Fixed { amount, asset } => {
            serde_json::json!({"amount": amount.to_string(), "asset": asset})
        }
    };
    let scheme = if r.upstream.tls { "https" } else { "http" };
    serde_json::json!({
        "host": r.host,
        "path": path,
        "methods": r.methods,
        "upstream": format!("{scheme}://{}", r.upstream.authority()),
        "price": price,
        "networks": r.networks_listed.as_ref().map(|ns| ns.iter().map(|n| n.to_string()).collect::<Vec<_>>()),
        "settle": match r.settle {
            SettlePolicy::Before => "before",
            SettlePolicy::After => "after",
            SettlePolicy::Deferred => "deferred",
        },
        "description": r.description,
    })
}

fn as_map(spec: Value) -> Map<String, Value> {
    match spec {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn view(record: &ApiRouteRecord, served: bool) -> RouteView {
    RouteView {
        id: record.id.clone(),
        tenant: record.tenant.clone(),
        source: "api".into(),
        served,
        spec: as_map(record.spec.clone()),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RouteQuery {
    /// The operator's filter: one tenant's routes.
    pub tenant: Option<String>,
}

/// Who is asking: a tenant (its own routes only) or the operator (`None`: any tenant).
fn caller<S>(who: &OperatorOrKey<S>) -> Option<String> {
    match who {
        OperatorOrKey::Operator => None,
        OperatorOrKey::Key(k) => Some(k.tenant.clone()),
    }
}

#[utoipa::path(get, path = "/api/v1/x402/routes", params(RouteQuery),
    responses((status = 200, body = RouteList)),
    security(("admin" = []), ("api_key" = [])))]
pub async fn list_routes(
    State(state): State<AdminState>,
    who: OperatorOrKey,
    QueryParams(q): QueryParams<RouteQuery>,
) -> ApiResult<Json<RouteList>> {
    let tenant = caller(&who).or(q.tenant);
    let store = state.store.get().await.map_err(ApiError::from)?;
    let config = state.config.load_full();
    let table = state.reloader.table.load_full();
    let served = |id: &str| {
        table
            .routes()
            .any(|r| r.config.api_id.as_deref() == Some(id))
    };
    let mut routes: Vec<RouteView> = config
        .routes
        .iter()
        .filter(|r| tenant.as_ref().is_none_or(|t| &r.tenant == t))
        .map(|r| RouteView {
            id: format!("config:{}", r.index),
            tenant: r.tenant.clone(),
            source: "config".into(),
            served: true,
            spec: as_map(config_spec(r)),
        })
        .collect();
    let records = store
        .api_routes(tenant.as_deref())
        .await
        .map_err(ApiError::from)?;
    routes.extend(records.iter().map(|r| view(r, served(&r.id))));
    Ok(Json(RouteList { routes }))
}

/// Validates `spec` as a route of `tenant`: the file's rules, the namespace, the upstream.
async fn check(
    state: &AdminState,
    id: &str,
    tenant: &str,
    spec: &Value,
    operator: bool,
) -> RouteResult<()> {
    let config = state.config.load_full();
    let store = state.store.get().await.map_err(ApiError::from)?;
    let record = store
        .tenant(tenant)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    let ns = store.namespace(tenant).await.map_err(ApiError::from)?;
    let stored = ApiRouteRecord {
        id: id.into(),
        tenant: tenant.into(),
        spec: spec.clone(),
        created_at: 0,
        updated_at: 0,
    };
    let route = compile_one(&stored, &config, &record, &ns, config.routes.len()).map_err(fields)?;
    // The operator vouches for its own upstreams; a tenant's are an SSRF surface.
    if !operator {
        let up = &route.upstream;
        UpstreamPolicy::for_config(&config)
            .resolve(&up.host, up.port)
            .await
            .map_err(|e| match e {
                UpstreamError::Forbidden { .. } | UpstreamError::Unresolvable(_) => {
                    invalid("upstream", e.to_string())
                }
            })?;
    }
    Ok(())
}

fn spec_of(body: Value) -> RouteResult<Map<String, Value>> {
    match body {
        Value::Object(m) => Ok(m),
        _ => Err(invalid(
            "",
            "the body must be a JSON object of route fields",
        )),
    }
}

fn new_route_id() -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the OS has randomness");
    format!(
        "r_{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

#[utoipa::path(post, path = "/api/v1/x402/routes", request_body = Object,
    responses((status = 201, body = RouteView), (status = 400, body = InvalidRoute),
        (status = 409, body = ErrorBody, description = "`route_limit_reached`: the tenant has as many routes as it may")),
    security(("admin" = []), ("api_key" = ["routes:write"])))]
pub async fn create_route(
    State(state): State<AdminState>,
    who: OperatorOrKey<needs::RoutesWrite>,
    RouteBody(body): RouteBody<Value>,
) -> RouteResult<(StatusCode, Json<RouteView>)> {
    let mut spec = spec_of(body)?;
    let operator = matches!(who, OperatorOrKey::Operator);
    let tenant = match caller(&who) {
        Some(own) => own,
        None => spec
            .get("tenant")
            .and_then(Value::as_str)
            .map(String::from)
            .ok_or_else(|| invalid("tenant", "is required: the tenant the route is for"))?,
    };
    spec.remove("tenant");
    let spec = Value::Object(spec);
    let id = new_route_id();
    // A tenant key's own `tenant` field, if any, is checked by the validation.
    check(&state, &id, &tenant, &spec, operator).await?;
    let config = state.config.load_full();
    // The limit bounds tenants; the operator writes for them without one.
    let max = if operator {
        i64::MAX
    } else {
        config.routes_api.max_routes_per_tenant as i64
    };
    let store = state.store.get().await.map_err(ApiError::from)?;
    match store
        .insert_api_route(&id, &tenant, &spec, max)
        .await
        .map_err(ApiError::from)?
    {
        RouteWrite::Done => {}
        RouteWrite::LimitReached => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "route_limit_reached",
                format!(
                "this tenant has {} routes, as many as [routes_api] max_routes_per_tenant allows",
                config.routes_api.max_routes_per_tenant
            ),
            )
            .into())
        }
        RouteWrite::NotFound => unreachable!("an insert finds nothing missing"),
    }
    rebuild(&state).await;
    let record = store
        .api_route(&id)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| ApiError::not_found("route"))?;
    let served = served(&state, &id);
    Ok((StatusCode::CREATED, Json(view(&record, served))))
}

/// This instance's table now; other instances notice the change counter within a second.
async fn rebuild(state: &AdminState) {
    if let Err(e) = state.reloader.reload().await {
        tracing::warn!("rebuilding routes after an API change: {e}");
    }
}

fn served(state: &AdminState, id: &str) -> bool {
    state
        .reloader
        .table
        .load()
        .routes()
        .any(|r| r.config.api_id.as_deref() == Some(id))
}

/// The stored route `id`, if the caller may see it (404 otherwise: another tenant's route is
/// not even confirmed to exist).
async fn owned(state: &AdminState, id: &str, tenant: Option<&str>) -> RouteResult<ApiRouteRecord> {
    let store = state.store.get().await.map_err(ApiError::from)?;
    let record = store.api_route(id).await.map_err(ApiError::from)?;
    match record {
        Some(r) if tenant.is_none_or(|t| t == r.tenant) => Ok(r),
        _ if id.starts_with("config:") => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "config_route",
            "routes from the configuration file are read-only here; change the file and reload",
        )
        .into()),
        _ => Err(ApiError::not_found("route").into()),
    }
}

#[utoipa::path(patch, path = "/api/v1/x402/routes/{id}", params(("id" = String, Path)), request_body = Object,
    responses((status = 200, body = RouteView), (status = 400, body = InvalidRoute),
        (status = 403, body = ErrorBody, description = "`config_route`: the file's routes are read-only here"),
        (status = 404, body = ErrorBody)),
    security(("admin" = []), ("api_key" = ["routes:write"])))]
pub async fn update_route(
    State(state): State<AdminState>,
    who: OperatorOrKey<needs::RoutesWrite>,
    RouteParam(id): RouteParam,
    RouteBody(body): RouteBody<Value>,
) -> RouteResult<Json<RouteView>> {
    let tenant = caller(&who);
    let record = owned(&state, &id, tenant.as_deref()).await?;
    let patch = spec_of(body)?;
    if patch.contains_key("tenant") {
        return Err(invalid("tenant", "a route cannot move to another tenant"));
    }
    // A merge patch: a field set to null goes back to its default.
    let mut spec = match record.spec.clone() {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    for (k, v) in patch {
        if v.is_null() {
            spec.remove(&k);
        } else {
            spec.insert(k, v);
        }
    }
    let spec = Value::Object(spec);
    check(
        &state,
        &id,
        &record.tenant,
        &spec,
        matches!(who, OperatorOrKey::Operator),
    )
    .await?;
    let store = state.store.get().await.map_err(ApiError::from)?;
    match store
        .update_api_route(&id, tenant.as_deref(), &spec)
        .await
        .map_err(ApiError::from)?
    {
        RouteWrite::Done => {}
        _ => return Err(ApiError::not_found("route").into()),
    }
    rebuild(&state).await;
    let record = store
        .api_route(&id)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| ApiError::not_found("route"))?;
    Ok(Json(view(&record, served(&state, &id))))
}

#[utoipa::path(delete, path = "/api/v1/x402/routes/{id}", params(("id" = String, Path)), responses((status = 204),
        (status = 403, body = ErrorBody, description = "`config_route`: the file's routes are read-only here"),
        (status = 404, body = ErrorBody)),
    security(("admin" = []), ("api_key" = ["routes:write"])))]
pub async fn delete_route(
    State(state): State<AdminState>,
    who: OperatorOrKey<needs::RoutesWrite>,
    RouteParam(id): RouteParam,
) -> RouteResult<StatusCode> {
    let tenant = caller(&who);
    owned(&state, &id, tenant.as_deref()).await?;
    let store = state.store.get().await.map_err(ApiError::from)?;
    match store
        .delete_api_route(&id, tenant.as_deref())
        .await
        .map_err(ApiError::from)?
    {
        RouteWrite::Done => {}
        _ => return Err(ApiError::not_found("route").into()),
    }
    rebuild(&state).await;
    Ok(StatusCode::NO_CONTENT)
}

// Unknown fields are refused, as in every other request body of the API (a typo is a 400, not a
// setting silently ignored). (Not a doc comment: it would become the schema's description.)
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NamespaceBody {
    /// Host names the tenant's routes may match (lower-cased).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// A path prefix (`/acme`) the tenant's host-less routes must live under.
    pub path_prefix: Option<String>,
}

#[utoipa::path(put, path = "/api/v1/x402/admin/tenants/{id}/namespace", params(("id" = String, Path)), request_body = NamespaceBody,
    responses((status = 200, body = NamespaceBody), (status = 400, body = InvalidRoute), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`namespace_taken`: another tenant holds a host or prefix")),
    security(("admin" = [])))]
pub async fn set_namespace(
    State(state): State<AdminState>,
    _op: Operator,
    RouteParam(tenant): RouteParam,
    RouteBody(body): RouteBody<NamespaceBody>,
) -> RouteResult<Json<NamespaceBody>> {
    let hosts: Vec<String> = body
        .hosts
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    for (i, h) in hosts.iter().enumerate() {
        if h.is_empty() || h.contains('/') || h.contains(' ') || h.contains(':') {
            return Err(invalid(
                &format!("hosts[{i}]"),
                format!("`{h}` is not a host name"),
            ));
        }
    }
    let path_prefix = match body.path_prefix.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(p) if p.starts_with('/') && p.len() > 1 && !p.contains('*') => {
            Some(p.trim_end_matches('/').to_string())
        }
        Some(p) => {
            return Err(invalid(
                "path_prefix",
                format!("`{p}` must be an absolute path other than /, without *"),
            ))
        }
    };
    let ns = Namespace { hosts, path_prefix };
    let store = state.store.get().await.map_err(ApiError::from)?;
    store
        .tenant(&tenant)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    let others: HashMap<String, Namespace> = store
        .namespaces()
        .await
        .map_err(ApiError::from)?
        .into_iter()
        .filter(|(t, _)| *t != tenant)
        .collect();
    if let Some((other, _)) = others.iter().find(|(_, o)| overlaps(&ns, o)) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "namespace_taken",
            format!("tenant `{other}` already has one of these hosts or an overlapping prefix"),
        )
        .into());
    }
    store
        .set_namespace(&tenant, &ns)
        .await
        .map_err(ApiError::from)?;
    rebuild(&state).await;
    Ok(Json(NamespaceBody {
        hosts: ns.hosts,
        path_prefix: ns.path_prefix,
    }))
}
