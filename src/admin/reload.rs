//! `POST /api/v1/x402/admin/reload`: the operator's config reload (as SIGHUP does), answered with
//! what it did: 200 applied, 422 the file's errors (the running config keeps serving), 503 the
//! store could not take the file's tenants (nothing changed).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::extract::Operator;
use super::*;
use crate::reload::{ReloadReport, ReloadResult};

#[utoipa::path(post, path = "/api/v1/x402/admin/reload",
    responses(
        (status = 200, description = "applied; `restart_required` lists what waits for a restart", body = ReloadReport),
        (status = 409, description = "the gateway was not started from a config file", body = ErrorBody),
        (status = 422, description = "the file has errors; nothing changed", body = ReloadReport),
        (status = 503, description = "the database could not take the file's tenants; nothing changed", body = ReloadReport),
    ),
    security(("admin" = [])))]
pub async fn reload_config(State(state): State<AdminState>, _: Operator) -> ApiResult<Response> {
    let Some(handle) = &state.reload else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "reload_unavailable",
            "this gateway was not started from a config file",
        ));
    };
    let report: ReloadReport = handle.reload().await.ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the gateway is shutting down",
        )
    })?;
    let status = match report.result {
        ReloadResult::Applied => StatusCode::OK,
        ReloadResult::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
        ReloadResult::Failed => StatusCode::SERVICE_UNAVAILABLE,
    };
    Ok((status, Json(report)).into_response())
}
