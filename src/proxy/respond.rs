//! The one place that writes the gateway's own responses: 402 challenges, JSON errors (404, 400,
//! 408, 431, 502, 503) and CORS preflights. Every one carries the CORS headers, because a browser
//! client that cannot read a 402's headers cannot pay.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use crate::pricing::Challenge;
use crate::x402::{self, SettlementResponse};

/// Headers a browser client must be allowed to read.
pub const EXPOSE_HEADERS: &str = "PAYMENT-REQUIRED, PAYMENT-RESPONSE, X-PAYMENT-RESPONSE";
/// Request headers a paying browser client sends. `Access-Control-Expose-Headers` is listed because
/// the SDK fetch/axios wrappers wrongly send it as a request header (x402#3478).
pub const ALLOW_HEADERS: &str = "PAYMENT-SIGNATURE, X-PAYMENT, SIGN-IN-WITH-X, Content-Type, Authorization, Access-Control-Expose-Headers";

/// Adds the CORS response headers to any response the gateway writes or forwards for a priced route.
pub fn add_cors(resp: &mut ResponseHeader, allow_origin: &str) -> Result<()> {
    resp.insert_header("access-control-allow-origin", allow_origin)?;
    resp.insert_header("access-control-expose-headers", EXPOSE_HEADERS)?;
    if allow_origin != "*" {
        resp.append_header("vary", "Origin")?;
    }
    Ok(())
}

/// A receipt header to attach: its name (v1 or v2) and the settlement response.
pub type Receipt<'a> = Option<(&'static str, &'a SettlementResponse)>;

/// The 402 response header for a challenge, optionally carrying a `success:false` receipt.
pub fn challenge_header(
    c: &Challenge,
    receipt: Receipt<'_>,
    allow_origin: &str,
) -> Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(402, Some(7))?;
    resp.insert_header(x402::PAYMENT_REQUIRED, c.header.as_str())?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", c.body.len().to_string())?;
    resp.insert_header("cache-control", "no-store")?;
    if let Some((name, r)) = receipt {
        resp.insert_header(name, x402::encode_header(r))?;
    }
    add_cors(&mut resp, allow_origin)?;
    Ok(resp)
}

pub async fn challenge(
    session: &mut Session,
    c: Challenge,
    receipt: Receipt<'_>,
    allow_origin: &str,
) -> Result<()> {
    let resp = challenge_header(&c, receipt, allow_origin)?;
    write(session, resp, Bytes::from(c.body)).await
}

/// How long a client should wait before retrying after a 503 of ours.
pub const RETRY_AFTER_SECONDS: &str = "5";

/// The 503 response header: our side (RPC, database) failed; the client was not charged unless
/// the receipt says a settlement is pending.
pub fn unavailable_header(
    body_len: usize,
    receipt: Receipt<'_>,
    allow_origin: &str,
) -> Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(503, Some(6))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body_len.to_string())?;
    resp.insert_header("cache-control", "no-store")?;
    resp.insert_header("retry-after", RETRY_AFTER_SECONDS)?;
    if let Some((name, r)) = receipt {
        resp.insert_header(name, x402::encode_header(r))?;
    }
    add_cors(&mut resp, allow_origin)?;
    Ok(resp)
}

pub fn unavailable_body(message: &str) -> Bytes {
    Bytes::from(
        serde_json::to_vec(
            &serde_json::json!({"error": "payment_unavailable", "message": message}),
        )
        .expect("json serializes"),
    )
}

pub async fn unavailable(
    session: &mut Session,
    message: &str,
    receipt: Receipt<'_>,
    allow_origin: &str,
) -> Result<()> {
    let body = unavailable_body(message);
    let resp = unavailable_header(body.len(), receipt, allow_origin)?;
    write(session, resp, body).await
}

/// A JSON error `{"error": code, "message": ...}`.
pub async fn json_error(
    session: &mut Session,
    status: u16,
    code: &str,
    message: &str,
    allow_origin: &str,
) -> Result<()> {
    json_error_with_receipt(session, status, code, message, None, allow_origin).await
}

/// A JSON error that also carries a receipt: a payer whose money moved gets its receipt on every
/// answer, the gateway's own errors included (an unreachable origin after a `before` settlement).
pub async fn json_error_with_receipt(
    session: &mut Session,
    status: u16,
    code: &str,
    message: &str,
    receipt: Receipt<'_>,
    allow_origin: &str,
) -> Result<()> {
    let body = serde_json::to_vec(&serde_json::json!({"error": code, "message": message}))
        .expect("json serializes");
    let mut resp = ResponseHeader::build(status, Some(6))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("cache-control", "no-store")?;
    if let Some((name, r)) = receipt {
        resp.insert_header(name, x402::encode_header(r))?;
    }
    add_cors(&mut resp, allow_origin)?;
    write(session, resp, Bytes::from(body)).await
}

pub async fn preflight(
    session: &mut Session,
    allow_methods: &str,
    requested_headers: Option<&str>,
    allow_origin: &str,
) -> Result<()> {
    let mut resp = ResponseHeader::build(204, Some(7))?;
    resp.insert_header("access-control-allow-origin", allow_origin)?;
    resp.insert_header("access-control-allow-methods", allow_methods)?;
    let headers = match requested_headers {
        Some(extra) if !extra.trim().is_empty() => format!("{ALLOW_HEADERS}, {extra}"),
        _ => ALLOW_HEADERS.to_string(),
    };
    resp.insert_header("access-control-allow-headers", headers)?;
    resp.insert_header("access-control-expose-headers", EXPOSE_HEADERS)?;
    resp.insert_header("access-control-max-age", "600")?;
    resp.insert_header("content-length", "0")?;
    session.write_response_header(Box::new(resp), true).await
}

async fn write(session: &mut Session, resp: ResponseHeader, body: Bytes) -> Result<()> {
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

/// 429 for a tenant whose monthly verified payments are used up; asked before any payment.
pub async fn quota_exceeded(
    session: &mut Session,
    standing: &crate::tenants::TenantState,
    allow_origin: &str,
) -> Result<()> {
    let body = serde_json::to_vec(&serde_json::json!({
        "error": "tenant_quota_exceeded",
        "message": "this API has used its verified payments for the month; try again next month",
        "period": standing.period,
        "limit": standing.limit(),
    }))
    .expect("json serializes");
    let mut resp = ResponseHeader::build(429, Some(5))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("cache-control", "no-store")?;
    add_cors(&mut resp, allow_origin)?;
    write(session, resp, Bytes::from(body)).await
}
