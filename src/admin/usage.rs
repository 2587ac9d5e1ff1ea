//! A tenant's own usage this month (`usage:read`): verified payments against the tier's limit,
//! revenue per network and asset, and daily totals.

use axum::extract::State;
use axum::Json;

use super::extract::{needs, TenantKey};
use super::*;
use crate::store::{month_start, now};

#[utoipa::path(get, path = "/api/v1/x402/usage", responses((status = 200, body = UsageView), (status = 401, body = ErrorBody)),
    security(("api_key" = ["usage:read"])))]
pub async fn usage(
    State(state): State<AdminState>,
    me: TenantKey<needs::UsageRead>,
) -> ApiResult<Json<UsageView>> {
    state.tenants.invalidate(&me.tenant).await;
    let standing = state.tenants.state(&me.tenant).await?;
    let store = state.store().await?;
    let since = month_start(now());
    let revenue = store.revenue(&me.tenant, since).await?;
    let daily = store.daily(&me.tenant, since).await?;
    let limit = standing.limit();
    Ok(Json(UsageView {
        tenant: me.tenant,
        tier: standing.tier.name.clone(),
        period: standing.period.clone(),
        verified: standing.used,
        limit,
        remaining: limit.map(|l| (l - standing.used).max(0)),
        revenue: revenue.into_iter().map(Into::into).collect(),
        daily: daily.into_iter().map(Into::into).collect(),
    }))
}
