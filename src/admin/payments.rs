//! The payments ledger, newest first, a page at a time: the operator sees every tenant's, a
//! tenant's `payments:read` key its own tenant's only.

use axum::extract::State;
use axum::Json;

use super::extract::{needs, OperatorOrKey, QueryParams};
use super::*;
use crate::store::PaymentFilter;

#[utoipa::path(get, path = "/api/v1/x402/admin/payments", params(PaymentsQuery),
    responses((status = 200, body = PaymentsPage), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody, description = "`not_found`: a key asked for another tenant")), security(("admin" = []), ("api_key" = [])))]
pub async fn list_payments(
    State(state): State<AdminState>,
    QueryParams(q): QueryParams<PaymentsQuery>,
    caller: OperatorOrKey<needs::PaymentsRead>,
) -> ApiResult<Json<PaymentsPage>> {
    let tenant = match caller {
        OperatorOrKey::Operator => q.tenant,
        OperatorOrKey::Key(key) => {
            if q.tenant.as_ref().is_some_and(|t| *t != key.tenant) {
                return Err(ApiError::not_found("tenant"));
            }
            Some(key.tenant)
        }
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 500"));
    }
    let filter = PaymentFilter {
        tenant,
        network: q.network,
        status: q.status,
        before_id: q.before,
        limit,
    };
    let rows = state.store().await?.payments(&filter).await?;
    let next_before = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|p| p.id))
        .flatten();
    Ok(Json(PaymentsPage {
        payments: rows.into_iter().map(Into::into).collect(),
        next_before,
    }))
}
