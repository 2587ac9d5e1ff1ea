//! The pingora `ProxyHttp` implementation, an adapter over `payments`: one concern per phase.
//!
//! - `request_filter` (`admit.rs`): the request's decisions (`decide.rs`) in order: rate limit
//!   per client IP, header-size cap, request line, path normalization, CORS preflight, route
//!   match, upgrade, rate limit per tenant; free routes pass; tenant standing, payment header,
//!   verify (cached), atomic claim, settle now if the route settles `before`. Every refusal is a
//!   `Reply` rendered by `respond.rs`, then the phase returns `Ok(true)` so nothing reaches the
//!   upstream.
//! - `upstream_peer`, `upstream_request_filter` (`forward.rs`): the peer from `ctx.route` only;
//!   the routed path, `Host`, `X-Forwarded-*`, the request id; no payment or hop-by-hop header.
//! - `response_filter` (`phases.rs`): interim answers pass untouched; on the final one, settle
//!   `after` (or queue `deferred`) when the route charges its status, before the first byte
//!   leaves; release the claim when it does not; add the receipt and CORS. A failed settlement
//!   turns the response into a 402 and `response_body_filter` drops the body.
//! - `fail_to_proxy` (`phases.rs`): the gateway's own statuses for timeouts and unreachable
//!   upstreams, with the receipt if money already moved.
//! - `logging` (`phases.rs`): a claim still undecided is charged if its request reached the origin
//!   and the client left, released otherwise; metrics; one access line.
//!
//! - `idle.rs`: the connection loop around pingora's: an idle keep-alive connection waits for its
//!   next request holding only its socket, in a task of its own.
//! - `write_buffer.rs`: a plain TCP connection's write buffer, allocated while a response is
//!   written and given back when the connection idles.
//! - `quick.rs`: an unpaid request for a priced route, plain enough, answered from its head by
//!   the same steps and renderer without pingora's session (the connection loop asks first).
//! - `drain.rs`: answers close their connections once a graceful upgrade or termination began.
//!
//! May import: payments, routes, pricing, tenants, metrics, logging, config, x402.

mod admit;
mod ctx;
pub mod decide;
pub mod drain;
mod forward;
pub mod gate;
pub mod idle;
pub mod limit;
mod phases;
pub mod quick;
pub mod respond;
pub mod write_buffer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::payments::{self as pay, Payments, SettleOutcome, Stage};
pub use ctx::RequestCtx;
use decide::{Presented, Reply, RequestFacts};
use forward::{forward_headers, peer_for};
use phases::{access_line, truncated};
use tracing::Instrument;

use crate::logging::REQUEST_ID_HEADER;

use crate::config::SettlePolicy;
use crate::config::{PathPattern, RateLimitConfig, ServerConfig};
use crate::metrics::Metrics;
use crate::ratelimit::{RateLimiter, Scope};
use crate::routes::RouteTable;
use crate::x402;

/// Settings the proxy reads on every request, taken from `[server]`.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub invalid_payments_per_minute: u32,
    pub public_url: Option<String>,
    pub max_payment_header_bytes: usize,
    pub max_request_header_bytes: usize,
    pub body_read_timeout: Duration,
    pub upstream_read_timeout: Duration,
    pub cors_allow_origin: String,
}

impl From<&ServerConfig> for ProxySettings {
    fn from(s: &ServerConfig) -> Self {
        ProxySettings {
            invalid_payments_per_minute: s.invalid_payments_per_minute,
            public_url: s.public_url.clone(),
            max_payment_header_bytes: s.max_payment_header_bytes,
            max_request_header_bytes: s.max_request_header_bytes,
            body_read_timeout: s.body_read_timeout,
            upstream_read_timeout: s.upstream_read_timeout,
            cors_allow_origin: s.cors_allow_origin.clone(),
        }
    }
}

/// What a config reload changes in the proxy, swapped as one: each request takes a snapshot in
/// its first phase and keeps it to its end.
pub struct ProxyLive {
    pub settings: ProxySettings,
    /// Invalid payments per client IP (`server.invalid_payments_per_minute`).
    pub invalid: Arc<limit::InvalidPaymentLimiter>,
    /// `[rate_limit]`'s proxy limits (per client IP, per tenant).
    pub limits: Arc<RateLimiter>,
}

impl ProxyLive {
    pub fn new(server: &ServerConfig, limits: Arc<RateLimiter>) -> Self {
        let settings = ProxySettings::from(server);
        ProxyLive {
            invalid: Arc::new(limit::InvalidPaymentLimiter::new(
                settings.invalid_payments_per_minute,
            )),
            settings,
            limits,
        }
    }

    /// The state for a reloaded config, keeping the limiters (and their counts) whose settings
    /// did not change.
    pub fn reloaded(&self, server: &ServerConfig, rate_limit: &RateLimitConfig) -> Self {
        let settings = ProxySettings::from(server);
        let invalid =
            if settings.invalid_payments_per_minute == self.settings.invalid_payments_per_minute {
                self.invalid.clone()
            } else {
                Arc::new(limit::InvalidPaymentLimiter::new(
                    settings.invalid_payments_per_minute,
                ))
            };
        ProxyLive {
            settings,
            invalid,
            limits: self.limits.reloaded(rate_limit),
        }
    }
}

#[derive(Clone)]
pub struct Gateway {
    routes: Arc<ArcSwap<RouteTable>>,
    live: Arc<ArcSwap<ProxyLive>>,
    payments: Arc<Payments>,
    metrics: Arc<Metrics>,
    /// Raised before a graceful upgrade hands over (see `drain`).
    draining: drain::Draining,
}

impl Gateway {
    pub fn new(
        routes: Arc<ArcSwap<RouteTable>>,
        live: Arc<ArcSwap<ProxyLive>>,
        payments: Arc<Payments>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Gateway {
            routes,
            live,
            payments,
            metrics,
            draining: drain::Draining::default(),
        }
    }

    /// The flag `drain::DrainWatch` raises for this proxy.
    pub fn draining(&self) -> drain::Draining {
        self.draining.clone()
    }

    /// The request's snapshot of the live settings (taken by its first phase).
    fn live(&self, ctx: &mut RequestCtx) -> Arc<ProxyLive> {
        ctx.live
            .get_or_insert_with(|| self.live.load_full())
            .clone()
    }
}

// `quick.rs` answers some requests without pingora's session, by these phases' own steps: a hook
// added here that pingora runs before or around `request_filter` (`early_request_filter`,
// downstream modules such as compression, connection-reuse hooks) must be added there too, or
// such requests skip it.
#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Some(std::time::Instant::now()),
            live: Some(self.live.load_full()),
            ..RequestCtx::default()
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.start(&session.req_header().headers);
        if self.draining.is_set() {
            // HTTP/1.1: `Connection: close` on the answer (see `drain`); a no-op on HTTP/2.
            session.set_keepalive(None);
        }
        let span = ctx.span();
        async {
            match self.admit_request(session, ctx).await {
                Ok(()) => Ok(false),
                Err(reply) => {
                    tracing::debug!(body = reply.body.kind(), "answered by the gateway");
                    let live = self.live(ctx);
                    let origin = &live.settings.cors_allow_origin;
                    respond::send(session, reply, origin, &ctx.request_id).await?;
                    Ok(true)
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        ctx.upstream_started = Some(std::time::Instant::now());
        let span = ctx.span();
        peer_for(ctx).instrument(span).await
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let span = ctx.span();
        span.in_scope(|| forward_headers(session, upstream, ctx))
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(id) = &ctx.request_id_value {
            // The origin's own id, if it sent one, gives way to the one the client knows.
            resp.insert_header(REQUEST_ID_HEADER, id.clone())?;
        }
        let span = ctx.span();
        self.answer(resp, ctx).instrument(span).await
    }
    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if ctx.replacement_body.is_some() || ctx.body_replaced {
            // The first call carries our body; every later chunk of the origin's is dropped.
            *body = ctx.replacement_body.take();
            ctx.body_replaced = true;
        }
        Ok(None)
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        ctx.start(&session.req_header().headers);
        let span = ctx.span();
        async {
            self.finish(e, ctx).await;
            access_line(&phases::Access::of(session), e, ctx);
        }
        .instrument(span)
        .await
    }
    /// What pingora's own error lines say about the request. Its default is the request line
    /// with the query string (which can carry secrets) and `Host`; ours is the method, the
    /// normalized path without its query, and the request id that ties the line to the rest.
    fn request_summary(&self, session: &Session, ctx: &RequestCtx) -> String {
        let req = session.req_header();
        let path = ctx
            .rewritten_path
            .as_deref()
            .unwrap_or_else(|| req.uri.path());
        format!(
            "{} {}, request_id: {}",
            req.method,
            truncated(path, 256),
            ctx.request_id
        )
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        ctx.start(&session.req_header().headers);
        let span = ctx.span();
        self.fail(session, e, ctx).instrument(span).await
    }
}
