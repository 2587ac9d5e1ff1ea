//! The one renderer of the gateway's own responses (`render`, `send`): 402 challenges, JSON
//! errors (400, 403, 404, 408, 429 with `Retry-After` when rate limited, 431, 502, 503) and CORS preflights, each a `decide::Reply`.
//! Every one carries the request id and the CORS headers, because a browser client that cannot read a 402's headers
//! cannot pay.

use std::borrow::Cow;

use bytes::Bytes;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorType::InvalidHTTPHeader, Result};

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

/// A response of the gateway's own: its status, its headers in the order they are written, and
/// its body. pingora's session is given it as a `ResponseHeader` (`Rendered::header`); the quick
/// path writes the same bytes itself (`quick::wire`), without building pingora's header maps.
#[derive(Debug)]
pub struct Rendered<'a> {
    pub status: u16,
    pub headers: Vec<(&'static str, Cow<'a, str>)>,
    pub body: Bytes,
}

impl Rendered<'_> {
    /// The response header pingora writes: the same headers, names as given, in order.
    pub fn header(&self) -> Result<ResponseHeader> {
        let mut resp = ResponseHeader::build(self.status, Some(self.headers.len()))?;
        for (name, value) in &self.headers {
            resp.append_header(*name, header_value(value)?)?;
        }
        Ok(resp)
    }
}

/// A header's value as `ResponseHeader::insert_header` takes a `&str` or a `String`: any byte
/// but controls (tab allowed) and DEL.
pub fn header_value(value: &str) -> Result<HeaderValue> {
    HeaderValue::from_bytes(value.as_bytes())
        .map_err(|_| Error::explain(InvalidHTTPHeader, "invalid value while insert"))
}

/// The CORS headers of a response the gateway writes (`add_cors`'s, in its order).
fn cors<'a>(headers: &mut Vec<(&'static str, Cow<'a, str>)>, allow_origin: &'a str) {
    headers.push(("access-control-allow-origin", Cow::Borrowed(allow_origin)));
    headers.push((
        "access-control-expose-headers",
        Cow::Borrowed(EXPOSE_HEADERS),
    ));
    if allow_origin != "*" {
        headers.push(("vary", Cow::Borrowed("Origin")));
    }
}

fn receipt_header(headers: &mut Vec<(&'static str, Cow<'_, str>)>, receipt: Receipt<'_>) {
    if let Some((name, r)) = receipt {
        headers.push((name, Cow::Owned(x402::encode_header(r))));
    }
}

/// How long a client should wait before retrying after a 503 of ours.
pub const RETRY_AFTER_SECONDS: &str = "5";

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
pub fn render(
    reply: Reply,
    allow_origin: &str,
    request_id: &str,
) -> Result<(ResponseHeader, Bytes)> {
    let rendered = rendered(reply, allow_origin, request_id);
    Ok((rendered.header()?, rendered.body))
}

/// `render`'s response as status, ordered headers and body (see `Rendered`).
/// Takes the reply by value: a challenge's precomputed body and header move in, uncopied.
pub fn rendered<'a>(reply: Reply, allow_origin: &'a str, request_id: &'a str) -> Rendered<'a> {
    let Reply {
        body: reply_body,
        receipt,
        close,
    } = reply;
    let receipt = receipt.as_deref().map(|(h, r)| (*h, r));
    let mut headers = Vec::with_capacity(12);
    let (status, body) = match reply_body {
        Body::Challenge(c) => {
            let Challenge { header, body } = c;
            headers.push((x402::PAYMENT_REQUIRED, Cow::Owned(header)));
            headers.push(("content-type", Cow::Borrowed("application/json")));
            headers.push(("content-length", Cow::Owned(body.len().to_string())));
            headers.push(("cache-control", Cow::Borrowed("no-store")));
            receipt_header(&mut headers, receipt);
            cors(&mut headers, allow_origin);
            (402, Bytes::from(body))
        }
        Body::Unavailable(message) => {
            let body = unavailable_body(message);
            headers.push(("content-type", Cow::Borrowed("application/json")));
            headers.push(("content-length", Cow::Owned(body.len().to_string())));
            headers.push(("cache-control", Cow::Borrowed("no-store")));
            headers.push(("retry-after", Cow::Borrowed(RETRY_AFTER_SECONDS)));
            receipt_header(&mut headers, receipt);
            cors(&mut headers, allow_origin);
            (503, body)
        }
        Body::Error {
            status,
            code,
            message,
        } => error_parts(
            &mut headers,
            status,
            serde_json::json!({"error": code, "message": message}),
            receipt,
            allow_origin,
        ),
        Body::QuotaExceeded { period, limit } => error_parts(
            &mut headers,
            429,
            serde_json::json!({
                "error": "tenant_quota_exceeded",
                "message": "this API has used its verified payments for the month; try again next month",
                "period": period,
                "limit": limit,
            }),
            receipt,
            allow_origin,
        ),
        Body::RateLimited { retry_after } => {
            let parts = error_parts(
                &mut headers,
                429,
                serde_json::json!({
                    "error": "rate_limited",
                    "message": format!("too many requests; retry in {retry_after} s"),
                }),
                receipt,
                allow_origin,
            );
            headers.push(("retry-after", Cow::Owned(retry_after.to_string())));
            parts
        }
        Body::Preflight { methods, requested } => {
            headers.push(("access-control-allow-origin", Cow::Borrowed(allow_origin)));
            headers.push(("access-control-allow-methods", Cow::Owned(methods)));
            let allowed = match requested {
                Some(extra) if !extra.trim().is_empty() => format!("{ALLOW_HEADERS}, {extra}"),
                _ => ALLOW_HEADERS.to_string(),
            };
            headers.push(("access-control-allow-headers", Cow::Owned(allowed)));
            headers.push((
                "access-control-expose-headers",
                Cow::Borrowed(EXPOSE_HEADERS),
            ));
            headers.push(("access-control-max-age", Cow::Borrowed("600")));
            headers.push(("content-length", Cow::Borrowed("0")));
            (204, Bytes::new())
        }
    };
    if close {
        headers.push(("connection", Cow::Borrowed("close")));
    }
    if !request_id.is_empty() {
        headers.push((REQUEST_ID_HEADER, Cow::Borrowed(request_id)));
    }
    Rendered {
        status,
        headers,
        body,
    }
}

fn error_parts<'a>(
    headers: &mut Vec<(&'static str, Cow<'a, str>)>,
    status: u16,
    json: serde_json::Value,
    receipt: Receipt<'_>,
    allow_origin: &'a str,
) -> (u16, Bytes) {
    let body = serde_json::to_vec(&json).expect("json serializes");
    headers.push(("content-type", Cow::Borrowed("application/json")));
    headers.push(("content-length", Cow::Owned(body.len().to_string())));
    headers.push(("cache-control", Cow::Borrowed("no-store")));
    receipt_header(headers, receipt);
    cors(headers, allow_origin);
    (status, Bytes::from(body))
}

/// The largest request body the gateway reads and drops, unforwarded, to keep the connection
/// open after answering without it: a JSON call's, not an upload's.
pub const DROPPED_BODY_MAX: u64 = 64 * 1024;
/// How long reading such a body may take after the answer went out; a client slower than that
/// loses the connection, as it would without the read.
pub const DROPPED_BODY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether the gateway reads and drops the unread body of a request it answers itself (a 402
/// to an unpaid POST, say), keeping the connection for the next request, rather than closing
/// it: when the body's length is known (`Content-Length`, no `Transfer-Encoding`) and at most
/// `DROPPED_BODY_MAX`, and the client is not waiting for a `100 Continue` it will never get
/// (`Expect`: it may send the body or not, so the connection cannot tell its next request from
/// the body). A client that pays after a 402 then needs no new connection (in production, no new
/// TLS handshake). Pure.
pub fn drops_body(headers: &http::HeaderMap) -> bool {
    use http::header::{CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING};
    if headers.contains_key(TRANSFER_ENCODING) || headers.contains_key(EXPECT) {
        return false;
    }
    let mut lengths = headers.get_all(CONTENT_LENGTH).iter();
    let (Some(length), None) = (lengths.next(), lengths.next()) else {
        return false;
    };
    length
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n <= DROPPED_BODY_MAX)
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
    } else if drops_body(&session.req_header().headers) {
        // pingora closes a connection whose request body is unread when the answer goes out;
        // told not to, it reads the rest after the answer (`finish`), within the wait.
        session.set_close_on_response_before_downstream_finish(false);
        session.set_total_drain_timeout(Some(DROPPED_BODY_WAIT));
    }
    let (resp, body) = render(reply, allow_origin, request_id)?;
    if body.is_empty() {
        return session.write_response_header(Box::new(resp), true).await;
    }
    write(session, resp, body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn only_a_small_body_of_known_length_is_read_and_dropped() {
        let max = DROPPED_BODY_MAX.to_string();
        let over = (DROPPED_BODY_MAX + 1).to_string();
        for (pairs, drops) in [
            (vec![("content-length", "17")], true),
            (vec![("content-length", " 0 ")], true),
            (vec![("content-length", max.as_str())], true),
            (vec![("content-length", over.as_str())], false),
            (vec![("content-length", "-1")], false),
            (vec![("content-length", "1e3")], false),
            (
                vec![("content-length", "17"), ("content-length", "17")],
                false,
            ),
            (vec![("transfer-encoding", "chunked")], false),
            (
                vec![("content-length", "17"), ("transfer-encoding", "chunked")],
                false,
            ),
            (
                vec![("content-length", "17"), ("expect", "100-continue")],
                false,
            ),
            // No body at all: nothing to read, pingora keeps the connection anyway.
            (vec![], false),
        ] {
            assert_eq!(drops_body(&headers(&pairs)), drops, "{pairs:?}");
        }
    }
}
