//! Per-request context: decisions made in `request_filter`, carried to later phases so they are
//! never recomputed (and `upstream_peer`, which runs again on retry, reads only from here).

use std::sync::Arc;

use bytes::Bytes;

use super::pay::PaymentState;
use crate::logging;
use crate::routes::Route;

#[derive(Default)]
pub struct RequestCtx {
    /// This request's id (the client's sane `X-Request-Id`, or a fresh one): sent upstream and
    /// back to the client. Empty until the first phase that sees the request sets it.
    pub request_id: String,
    /// `request_id` as a header value, made once: the upstream request and the answer each take
    /// a clone (a reference count, not a copy). `None` until `start`.
    pub request_id_value: Option<http::HeaderValue>,
    /// The `request` span carrying `request_id`; each phase runs in it (see `span`).
    pub span: Option<tracing::Span>,
    /// When the gateway first saw the request, for the access line's total time.
    pub started: Option<std::time::Instant>,
    /// The live settings this request runs under (a config reload mid-request changes nothing
    /// for it).
    pub live: Option<Arc<super::ProxyLive>>,
    /// The matched route; `None` until matched, and for requests answered by the gateway itself.
    pub route: Option<Arc<Route>>,
    /// The normalized path, when it differs from what the client sent; forwarded instead.
    pub rewritten_path: Option<String>,
    /// The client's `Host`, for `X-Forwarded-Host` once `Host` is rewritten to the upstream's.
    pub client_host: Option<String>,
    /// The client reached us over TLS: `X-Forwarded-Proto: https`, and `https://` in
    /// `resource.url` when no `public_url` is set.
    pub client_tls: bool,
    /// `resource.url` of this request, for challenges written after the origin answered.
    pub resource_url: String,
    /// The payment admitted for this request, and where its settlement stands.
    pub payment: Option<PaymentState>,
    /// When set, the origin's body is dropped and this is sent instead (settlement failed after
    /// the origin answered, so the client gets a 402 and none of what it did not pay for).
    pub replacement_body: Option<Bytes>,
    /// Set when the request was handed to the origin: from then on a paid request is charged
    /// even if its client leaves before the answer.
    pub forwarded: bool,
    /// When the request was handed to `upstream_peer` (connecting, then forwarding), for the
    /// origin's latency.
    pub upstream_started: Option<std::time::Instant>,
    /// Set once the replacement body went out, so the rest of the origin's body is dropped.
    pub body_replaced: bool,
    /// What happened, for the metrics and the access line written in `logging`.
    pub facts: Facts,
}

impl RequestCtx {
    /// Sets the request id, its span and the start time, once: the first phase to see the
    /// request does it (`request_filter`, or `fail_to_proxy`/`logging` for a request that never
    /// got there).
    pub fn start(&mut self, headers: &http::HeaderMap) {
        if self.request_id.is_empty() {
            self.request_id = logging::request_id(headers);
            // Only sane ids are kept (`logging::request_id`), and a fresh one is hex: always a
            // valid value.
            self.request_id_value = http::HeaderValue::from_str(&self.request_id).ok();
            self.span = Some(logging::request_span(&self.request_id));
        }
        self.started.get_or_insert_with(std::time::Instant::now);
    }

    /// The request's span (none before `start`).
    pub fn span(&self) -> tracing::Span {
        self.span.clone().unwrap_or_else(tracing::Span::none)
    }
}

/// Facts about a request, recorded where decisions are made and turned into metrics in
/// `logging`, the one phase that writes them.
#[derive(Debug, Default)]
pub struct Facts {
    /// free | priced | no_route | rejected (answered before routing: bad path, header size)
    pub route: &'static str,
    /// A 402 was answered to a request without a payment.
    pub challenged: bool,
    /// The outcome of a request carrying a payment.
    pub attempt: Option<&'static str>,
    /// Why a priced request was refused for its tenant's standing.
    pub refusal: Option<&'static str>,
    /// Network and seconds spent verifying.
    pub verification: Option<(String, f64)>,
    /// Settlement outcome and, when a transaction was attempted, its seconds.
    pub settlement: Option<(&'static str, Option<f64>)>,
    /// The origin's answer: its status class (`2xx`...) or `error`, and, when it answered, the
    /// seconds from `upstream_peer` to its response head.
    pub upstream: Option<(&'static str, Option<f64>)>,
}

/// The label of an origin's final status: its class.
pub fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}
