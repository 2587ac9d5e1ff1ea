//! What anyone may ask: the chains and assets this gateway accepts (with a key, which of them
//! the caller's tier allows), liveness and readiness.

use axum::extract::State;
use axum::Json;

use super::extract::TenantKey;
use super::*;

#[utoipa::path(get, path = "/api/v1/x402/supported-chains", responses((status = 200, body = SupportedChains)))]
pub async fn supported_chains(
    State(state): State<AdminState>,
    // The key is optional here; a bad one is still an error rather than silently ignored.
    me: Option<TenantKey>,
) -> ApiResult<Json<SupportedChains>> {
    let tier = match me {
        Some(me) => Some(state.tenants.state(&me.tenant).await?.tier.clone()),
        None => None,
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
    state.store().await?.ping().await?;
    Ok(Json(Status {
        status: "ready".into(),
    }))
}
