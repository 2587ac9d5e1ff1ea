//! The one renderer of the gateway's own responses (`render`, `send`): 402 challenges, JSON
//! errors (400, 403, 404, 408, 429 with `Retry-After` when rate limited, 431, 502, 503) and CORS preflights, each a `decide::Reply`.
//! Every one carries the request id and the CORS headers, because a browser client that cannot read a 402's headers
//! cannot pay.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use super::decide::{Body, Reply};
use crate::logging::REQUEST_ID_HEADER;
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

async fn write(session: &mut Session, resp: ResponseHeader, body: Bytes) -> Result<()> {
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

/// The one renderer of the gateway's own answers: a `Reply` as a response header and its body,
/// which carries the request's id like every answer.
/// Takes the reply by value: a challenge's precomputed body moves into the response, uncopied.
pub fn render(
    reply: Reply,
    allow_origin: &str,
    request_id: &str,
) -> Result<(ResponseHeader, Bytes)> {
    let Reply {
        body: reply_body,
        receipt,
        close,
    } = reply;
    let receipt = receipt.as_deref().map(|(h, r)| (*h, r));
    let (mut resp, body) = match reply_body {
        Body::Challenge(c) => (
            challenge_header(&c, receipt, allow_origin)?,
            Bytes::from(c.body),
        ),
        Body::Unavailable(message) => {
            let body = unavailable_body(message);
            (unavailable_header(body.len(), receipt, allow_origin)?, body)
        }
        Body::Error {
            status,
            code,
            message,
        } => error_parts(
            status,
            serde_json::json!({"error": code, "message": message}),
            receipt,
            allow_origin,
        )?,
        Body::QuotaExceeded { period, limit } => error_parts(
            429,
            serde_json::json!({
                "error": "tenant_quota_exceeded",
                "message": "this API has used its verified payments for the month; try again next month",
                "period": period,
                "limit": limit,
            }),
            receipt,
            allow_origin,
        )?,
        Body::RateLimited { retry_after } => {
            let (mut resp, body) = error_parts(
                429,
                serde_json::json!({
                    "error": "rate_limited",
                    "message": format!("too many requests; retry in {retry_after} s"),
                }),
                receipt,
                allow_origin,
            )?;
            resp.insert_header("retry-after", retry_after.to_string())?;
            (resp, body)
        }
        Body::Preflight { methods, requested } => {
            let mut resp = ResponseHeader::build(204, Some(7))?;
            resp.insert_header("access-control-allow-origin", allow_origin)?;
            resp.insert_header("access-control-allow-methods", methods.as_str())?;
            let headers = match requested {
                Some(extra) if !extra.trim().is_empty() => format!("{ALLOW_HEADERS}, {extra}"),
                _ => ALLOW_HEADERS.to_string(),
            };
            resp.insert_header("access-control-allow-headers", headers)?;
            resp.insert_header("access-control-expose-headers", EXPOSE_HEADERS)?;
            resp.insert_header("access-control-max-age", "600")?;
            resp.insert_header("content-length", "0")?;
            (resp, Bytes::new())
        }
    };
    if close {
        resp.insert_header("connection", "close")?;
    }
    if !request_id.is_empty() {
        resp.insert_header(REQUEST_ID_HEADER, request_id)?;
    }
    Ok((resp, body))
}

fn error_parts(
    status: u16,
    json: serde_json::Value,
    receipt: Receipt<'_>,
    allow_origin: &str,
) -> Result<(ResponseHeader, Bytes)> {
    let body = serde_json::to_vec(&json).expect("json serializes");
    let mut resp = ResponseHeader::build(status, Some(6))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("cache-control", "no-store")?;
    if let Some((name, r)) = receipt {
        resp.insert_header(name, x402::encode_header(r))?;
    }
    add_cors(&mut resp, allow_origin)?;
    Ok((resp, Bytes::from(body)))
}

/// Writes a reply as the whole answer to the request.
pub async fn send(
    session: &mut Session,
    reply: Reply,
    allow_origin: &str,
    request_id: &str,
) -> Result<()> {
    if reply.close {
        session.set_keepalive(None);
    }
    let (resp, body) = render(reply, allow_origin, request_id)?;
    if body.is_empty() {
        return session.write_response_header(Box::new(resp), true).await;
    }
    write(session, resp, body).await
}
