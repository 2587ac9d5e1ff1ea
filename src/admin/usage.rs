//! A tenant's usage this month: verified payments against the tier's limit, revenue per route,
//! network and asset, and daily totals. A tenant's `usage:read` key reads its own; the operator
//! names the tenant (`?tenant=`).

use axum::extract::State;
use axum::Json;

use super::extract::{needs, OperatorOrKey, QueryParams};
use super::*;
use crate::store::{month_start, now};

#[utoipa::path(get, path = "/api/v1/x402/usage", params(UsageQuery),
    responses((status = 200, body = UsageView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = ["usage:read"]), ("admin" = [])))]
pub async fn usage(
    State(state): State<AdminState>,
    QueryParams(q): QueryParams<UsageQuery>,
    caller: OperatorOrKey<needs::UsageRead>,
) -> ApiResult<Json<UsageView>> {
    let tenant = match caller {
        OperatorOrKey::Operator => {
            let id = q.tenant.ok_or_else(|| {
                ApiError::bad_request("the operator names the tenant: ?tenant=<id>")
            })?;
            state.tenant_or_404(&id).await?.id
        }
        OperatorOrKey::Key(key) => {
            if q.tenant.as_ref().is_some_and(|t| *t != key.tenant) {
                return Err(ApiError::not_found("tenant"));
            }
            key.tenant
        }
    };
    state.tenants.invalidate(&tenant).await;
    let standing = state.tenants.state(&tenant).await?;
    let store = state.store().await?;
    let since = month_start(now());
    let revenue = store.revenue(&tenant, since).await?;
    let daily = store.daily(&tenant, since).await?;
    let limit = standing.limit();
    Ok(Json(UsageView {
        tenant,
        tier: standing.tier.name.clone(),
        period: standing.period.clone(),
        verified: standing.used,
        limit,
        remaining: limit.map(|l| (l - standing.used).max(0)),
        revenue: revenue.into_iter().map(Into::into).collect(),
        daily: daily.into_iter().map(Into::into).collect(),
    }))
}
