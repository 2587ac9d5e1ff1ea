//! The pingora `ProxyHttp` implementation: one concern per phase.
//!
//! - `request_filter`: rate limit per client IP -> header-size cap -> path normalization -> CORS
//!   preflight -> route match -> rate limit per tenant -> free routes pass -> payment header
//!   check -> verify (cached) -> atomic claim -> settle now if the route settles `before`. Every
//!   refusal is written by `respond.rs`, then the phase returns `Ok(true)` so nothing reaches
//!   the upstream.
//! - `upstream_peer`: the peer from `ctx.route` only.
//! - `upstream_request_filter`: forward the normalized path, rewrite `Host`, add `X-Forwarded-*`,
//!   strip payment and hop-by-hop headers.
//! - `response_filter`: settle `after` (or queue `deferred`) when the origin's status is charged,
//!   before the first byte leaves; release the claim when it is not; add the receipt and CORS.
//!   A failed settlement turns the response into a 402 and `response_body_filter` drops the body.
//! - `fail_to_proxy`: the gateway's own statuses for timeouts and unreachable upstreams.
//! - `logging`: a claim that was never settled, queued or released (the origin never answered,
//!   the client went away) is released: not charged.
//!
//! May import: payments, routes, pricing, config, x402. Header decisions live in `gate.rs` as
//! plain functions; every payment step is `payments`' (this module only adapts it to pingora).

mod ctx;
pub mod decide;
pub mod gate;
pub mod limit;
pub mod respond;

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
use tracing::Instrument;

use crate::logging::REQUEST_ID_HEADER;

use crate::config::SettlePolicy;
use crate::config::{PathPattern, ServerConfig};
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
            cors_allow_origin: s.cors_allow_origin.clone(),
        }
    }
}

pub struct Gateway {
    routes: Arc<ArcSwap<RouteTable>>,
    invalid: limit::InvalidPaymentLimiter,
    /// `[rate_limit]`'s proxy limits (per client IP, per tenant).
    limits: Arc<RateLimiter>,
    settings: ProxySettings,
    payments: Arc<Payments>,
    metrics: Arc<Metrics>,
}

impl Gateway {
    pub fn new(
        routes: Arc<ArcSwap<RouteTable>>,
        settings: ProxySettings,
        payments: Arc<Payments>,
        metrics: Arc<Metrics>,
        limits: Arc<RateLimiter>,
    ) -> Self {
        Gateway {
            routes,
            invalid: limit::InvalidPaymentLimiter::new(settings.invalid_payments_per_minute),
            limits,
            settings,
            payments,
            metrics,
        }
    }
}

/// Request headers that describe one connection, not the request: never forwarded
/// (RFC 9110 7.6.1). `Upgrade` is kept so WebSocket upgrades still work.
const HOP_BY_HOP: &[&str] = &[
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
];

impl Gateway {
    /// `request_filter` as a sequence of decisions (`decide.rs`): each step either hands on to the
    /// next or ends the request with the reply the caller renders. `Ok` forwards the request, with
    /// its payment admitted (and settled, under `before`) in `ctx`.
    async fn admit_request(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<(), Reply> {
        ctx.facts.route = "rejected";
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        if let Some(ip) = client_ip.filter(|_| self.limits.limits(Scope::ProxyIp)) {
            self.limits
                .check(Scope::ProxyIp, &ip.to_string())
                .await
                .map_err(decide::rate_limited)?;
        }
        let req = session.req_header();
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.host())
            .map(str::to_owned);
        let facts = RequestFacts {
            raw_target: req.raw_path(),
            method: req.method.as_str(),
            path: req.uri.path(),
            headers: &req.headers,
            host: host.as_deref(),
            max_header_bytes: self.settings.max_request_header_bytes,
        };
        let routed = decide::route_request(&facts, &self.routes.load()).map_err(|(r, fact)| {
            ctx.facts.route = fact;
            r
        })?;
        let path_and_query = req
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string();
        let header = gate::payment_header(&req.headers).map(|(n, v)| (n, v.to_vec()));
        if routed.upgrade {
            // Whatever the gateway answers itself (402, 503...), the client may already be
            // speaking the new protocol: never read another request from this connection.
            session.set_keepalive(None);
        }
        let route = routed.route;
        ctx.rewritten_path = routed.rewritten_path;
        ctx.client_host = host;
        ctx.route = Some(route.clone());
        self.limits
            .check(Scope::ProxyTenant, &route.config.tenant)
            .await
            .map_err(decide::rate_limited)?;
        // Applies to every body read from here on; a stalled upload gets a 408 (fail_to_proxy).
        session.set_read_timeout(Some(self.settings.body_read_timeout));

        let Some(offers) = route.offers.as_ref() else {
            ctx.facts.route = "free";
            return Ok(());
        };
        ctx.facts.route = "priced";
        let standing = self
            .payments
            .tenants
            .state(&route.config.tenant)
            .await
            .map_err(|e| {
                tracing::warn!(tenant = %route.config.tenant, "tenant standing unavailable: {e}");
                Reply::new(decide::Body::Unavailable(
                    "the gateway cannot check this API's plan right now",
                ))
            })?;
        decide::check_standing(&standing, offers).map_err(|(r, refusal)| {
            ctx.facts.refusal = refusal;
            r
        })?;
        ctx.resource_url = gate::resource_url(
            self.settings.public_url.as_deref(),
            ctx.client_host.as_deref(),
            &path_and_query,
        );
        if let (Some(_), Some(ip)) = (&header, client_ip) {
            if let Some(secs) = self.invalid.blocked_for(ip) {
                ctx.facts.attempt = Some("rate_limited");
                let msg = format!("too many invalid payments from this address; retry in {secs} s");
                return Err(Reply::error(429, "too_many_invalid_payments", msg));
            }
        }
        let record_invalid = |invalid: bool| {
            if let (true, Some(ip)) = (invalid, client_ip) {
                self.invalid.record_invalid(ip);
            }
        };
        let check = gate::check_payment(
            offers,
            header.as_ref().map(|(n, v)| (*n, v.as_slice())),
            self.settings.max_payment_header_bytes,
        );
        let (offer, proof) = match decide::presented(check, offers, &ctx.resource_url) {
            Presented::Paid { offer, proof } => (offer, proof),
            Presented::Refused { reply, invalid } => {
                if invalid {
                    ctx.facts.attempt = Some("invalid");
                } else {
                    ctx.facts.challenged = true;
                }
                record_invalid(invalid);
                return Err(reply);
            }
        };
        let header_bytes = header.map(|(_, v)| v).unwrap_or_default();
        let receipt_header = pay::receipt_header_for(&proof);
        let started = std::time::Instant::now();
        let admission = pay::admit(
            &self.payments,
            &route,
            offer,
            &proof,
            &header_bytes,
            receipt_header,
            standing.limit(),
        )
        .await;
        ctx.facts.verification = Some((offer.network.to_string(), started.elapsed().as_secs_f64()));
        let mut state = decide::admitted(admission, offers, &ctx.resource_url, &standing).map_err(
            |(reply, fact, invalid)| {
                ctx.facts.attempt = Some(fact);
                record_invalid(invalid);
                reply
            },
        )?;
        ctx.facts.attempt = Some("admitted");
        if routed.upgrade {
            // A tunnel is paid for before it opens: once the 101 is out, the gateway sees none of
            // what flows through it (and pingora's upgrade hand-off must not wait on a settlement).
            state.policy = SettlePolicy::Before;
        }
        if state.policy == SettlePolicy::Before {
            let started = std::time::Instant::now();
            let outcome = pay::settle_detached(&self.payments, &mut state).await;
            ctx.facts.settlement = Some((outcome.label(), Some(started.elapsed().as_secs_f64())));
            let settled = decide::settled(outcome, Some(offers), &ctx.resource_url, receipt_header);
            ctx.payment = Some(state);
            settled?;
            return Ok(());
        }
        ctx.payment = Some(state);
        Ok(())
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Some(std::time::Instant::now()),
            ..RequestCtx::default()
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.start(&session.req_header().headers);
        let span = ctx.span();
        async {
            match self.admit_request(session, ctx).await {
                Ok(()) => Ok(false),
                Err(reply) => {
                    tracing::debug!(body = reply.body.kind(), "answered by the gateway");
                    let origin = &self.settings.cors_allow_origin;
                    respond::send(session, &reply, origin, &ctx.request_id).await?;
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
        if !ctx.request_id.is_empty() {
            // The origin's own id, if it sent one, gives way to the one the client knows.
            resp.insert_header(REQUEST_ID_HEADER, ctx.request_id.as_str())?;
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
            access_line(session, e, ctx);
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

impl Gateway {
    /// `fail_to_proxy`, in the request's span.
    async fn fail(&self, session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
        let (code, name, message) = match (e.esource(), e.etype()) {
            (_, ErrorType::HTTPStatus(code)) => (*code, "error", "request failed".to_string()),
            (ErrorSource::Downstream, ErrorType::ReadTimedout) => (
                408,
                "request_timeout",
                "the request body was not received in time".to_string(),
            ),
            (
                ErrorSource::Downstream,
                ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed,
            ) => (0, "", String::new()),
            (ErrorSource::Downstream, _) => (400, "bad_request", e.to_string()),
            (ErrorSource::Upstream, _) => (
                502,
                "bad_gateway",
                "the upstream could not be reached or failed to answer".to_string(),
            ),
            _ => (500, "internal_error", "the gateway failed".to_string()),
        };
        if code > 0 && session.response_written().is_none() {
            // Money that already moved (`before`) is receipted on every answer, errors included.
            let receipt = ctx.payment.as_ref().and_then(|p| match &p.stage {
                Stage::Settled(s) => Some((p.receipt_header, p.receipt_ok(&s.transaction))),
                _ => None,
            });
            let reply = Reply::error(code, name, message).with_receipt(receipt);
            if let Err(err) = respond::send(
                session,
                &reply,
                &self.settings.cors_allow_origin,
                &ctx.request_id,
            )
            .await
            {
                tracing::debug!("could not write the error response: {err}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// `response_filter`, in the request's span: settle `after` or queue `deferred` when the
    /// origin's status is charged, release when not; the receipt, or a 402 instead of the answer.
    async fn answer(&self, resp: &mut ResponseHeader, ctx: &mut RequestCtx) -> Result<()> {
        resp.remove_header("keep-alive");
        resp.remove_header("proxy-connection");
        let status = resp.status.as_u16();
        if pay::is_interim(status) {
            // 100 Continue, 103 Early Hints: not the origin's answer; only the final one decides.
            return Ok(());
        }
        let origin = &self.settings.cors_allow_origin;
        if ctx.route.as_ref().is_some_and(|r| !r.is_free()) {
            respond::add_cors(resp, origin)?;
        }
        let Some(state) = ctx.payment.as_mut() else {
            return Ok(());
        };
        let charged = ctx
            .route
            .as_ref()
            .is_some_and(|r| pay::is_charged(&r.config, status));
        let outcome = match (&state.stage, state.policy) {
            (Stage::Settled(s), _) => SettleOutcome::Settled(state.receipt_ok(&s.transaction)),
            (Stage::Claimed, _) if !charged => {
                // A status the route does not charge for (4xx, 5xx by default): pass it through,
                // charge nothing, and give the proof back for a retry.
                pay::release(&self.payments, state, &format!("origin answered {status}")).await;
                return Ok(());
            }
            (Stage::Claimed, SettlePolicy::Deferred) => {
                let outcome = pay::enqueue_detached(&self.payments, state).await;
                let label = if matches!(outcome, SettleOutcome::Settled(_)) {
                    "queued"
                } else {
                    outcome.label()
                };
                ctx.facts.settlement = Some((label, None));
                outcome
            }
            (Stage::Claimed, _) => {
                let started = std::time::Instant::now();
                let outcome = pay::settle_detached(&self.payments, state).await;
                ctx.facts.settlement =
                    Some((outcome.label(), Some(started.elapsed().as_secs_f64())));
                outcome
            }
            _ => return Ok(()),
        };
        let offers = ctx.route.as_ref().and_then(|r| r.offers.as_ref());
        match decide::settled(outcome, offers, &ctx.resource_url, state.receipt_header) {
            Ok((name, receipt)) => {
                resp.insert_header(name, x402::encode_header(&receipt))?;
            }
            Err(reply) => {
                // None of the origin's answer goes out: the client did not pay for it.
                let (header, body) = respond::render(&reply, origin, &ctx.request_id)?;
                *resp = header;
                ctx.replacement_body = Some(body);
            }
        }
        Ok(())
    }

    /// `logging`, in the request's span: an unanswered claim is charged or released, then the
    /// request's metrics.
    async fn finish(&self, e: Option<&Error>, ctx: &mut RequestCtx) {
        if let Some(state) = ctx.payment.as_mut() {
            if state.stage == Stage::Claimed {
                let client_left = e.is_some_and(|e| e.esource() == &ErrorSource::Downstream);
                match pay::unanswered(ctx.forwarded, client_left) {
                    pay::Unanswered::Charge => {
                        // The origin has the request and may act on it; releasing here would let
                        // one proof run it again and again by hanging up each time.
                        let outcome = if state.policy == SettlePolicy::Deferred {
                            pay::enqueue_detached(&self.payments, state).await
                        } else {
                            pay::settle_detached(&self.payments, state).await
                        };
                        ctx.facts.settlement = Some((outcome.label(), None));
                    }
                    pay::Unanswered::Release => {
                        pay::release(&self.payments, state, "the origin never answered").await
                    }
                }
            }
        }
        let m = &self.metrics;
        let f = &ctx.facts;
        if !f.route.is_empty() {
            m.requests.with_label_values(&[f.route]).inc();
        }
        if f.challenged {
            m.challenges.inc();
        }
        if let Some(a) = f.attempt {
            m.attempts.with_label_values(&[a]).inc();
        }
        if let Some(r) = f.refusal {
            m.tenant_refusals.with_label_values(&[r]).inc();
        }
        if let Some((network, secs)) = &f.verification {
            m.verification_seconds
                .with_label_values(&[network])
                .observe(*secs);
        }
        if let Some(state) = &ctx.payment {
            m.verified
                .with_label_values(&[&state.tenant, &state.network])
                .inc();
            let policy = match state.policy {
                SettlePolicy::Before => "before",
                SettlePolicy::After => "after",
                SettlePolicy::Deferred => "deferred",
            };
            let outcome = match (&state.stage, f.settlement) {
                (Stage::Released, _) => Some("released"),
                (_, Some((label, _))) => Some(label),
                _ => None,
            };
            if let Some(outcome) = outcome {
                m.settlements
                    .with_label_values(&[&state.network, policy, outcome])
                    .inc();
            }
            if let Some((_, Some(secs))) = f.settlement {
                m.settlement_seconds
                    .with_label_values(&[&state.network])
                    .observe(secs);
            }
        }
    }
}

fn strip_hop_by_hop(req: &mut RequestHeader) {
    // Headers named in `Connection` are hop-by-hop too.
    let listed: Vec<String> = req
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    let upgrade = listed.iter().any(|s| s == "upgrade");
    for name in listed.iter().filter(|s| *s != "upgrade") {
        req.remove_header(name.as_str());
    }
    for name in HOP_BY_HOP {
        req.remove_header(*name);
    }
    if !upgrade {
        req.remove_header(&http::header::CONNECTION);
    }
}

/// The peer from `ctx.route` only (this runs again on a retry).
async fn peer_for(ctx: &RequestCtx) -> Result<Box<HttpPeer>> {
    let route = ctx
        .route
        .as_ref()
        .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route in context"))?;
    let up = &route.config.upstream;
    let addr: SocketAddr = match up.host.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, up.port),
        // pingora's HttpPeer::new resolves synchronously and panics on failure: resolve here,
        // asynchronously, and turn a failure into a 502.
        Err(_) => tokio::net::lookup_host((up.host.as_str(), up.port))
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| {
                Error::explain(
                    ErrorType::ConnectNoRoute,
                    format!("cannot resolve upstream host {}", up.host),
                )
                .into_up()
            })?,
    };
    let mut peer = HttpPeer::new(addr, up.tls, up.host.clone());
    peer.options.connection_timeout = Some(Duration::from_secs(5));
    peer.options.total_connection_timeout = Some(Duration::from_secs(10));
    peer.options.read_timeout = Some(Duration::from_secs(60));
    Ok(Box::new(peer))
}

/// The request as the origin sees it: the normalized path, its `Host`, `X-Forwarded-*` and the
/// request id; no payment proof and no hop-by-hop header.
fn forward_headers(
    session: &Session,
    upstream: &mut RequestHeader,
    ctx: &mut RequestCtx,
) -> Result<()> {
    if let Some(path) = &ctx.rewritten_path {
        let pq = match upstream.uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path.clone(),
        };
        let uri = http::Uri::builder()
            .path_and_query(pq)
            .build()
            .map_err(|e| Error::because(ErrorType::InternalError, "rewriting path", e))?;
        upstream.set_uri(uri);
    }
    if let Some(route) = &ctx.route {
        upstream.insert_header(http::header::HOST, route.config.upstream.authority())?;
    }
    if let Some(host) = &ctx.client_host {
        upstream.insert_header("x-forwarded-host", host.as_str())?;
    }
    upstream.insert_header("x-forwarded-proto", "http")?;
    if !ctx.request_id.is_empty() {
        upstream.insert_header(REQUEST_ID_HEADER, ctx.request_id.as_str())?;
    }
    if let Some(ip) = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
    {
        let xff = match upstream
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(prev) => format!("{prev}, {ip}"),
            None => ip.to_string(),
        };
        upstream.insert_header("x-forwarded-for", xff)?;
    }
    // From here the origin may act on the request: a paid request whose client leaves now is
    // charged (see `logging`).
    ctx.forwarded = true;
    // The origin must never see a proof it could replay elsewhere.
    upstream.remove_header(x402::PAYMENT_SIGNATURE);
    upstream.remove_header(x402::X_PAYMENT);
    strip_hop_by_hop(upstream);
    Ok(())
}

/// The one access-log line of a request, written last. The path is the normalized one without
/// its query (which can carry secrets); no header but the request id (in the span) is logged.
fn access_line(session: &Session, e: Option<&Error>, ctx: &RequestCtx) {
    let req = session.req_header();
    let path = ctx
        .rewritten_path
        .as_deref()
        .unwrap_or_else(|| req.uri.path());
    let route = ctx.route.as_ref().map(|r| match &r.config.path {
        PathPattern::Exact(p) => p.clone(),
        PathPattern::Prefix(p) => format!("{}/*", p.trim_end_matches('/')),
    });
    let f = &ctx.facts;
    let payment = f
        .attempt
        .or(f.challenged.then_some("challenged"))
        .or(f.refusal);
    let settlement = match (&ctx.payment, f.settlement) {
        (Some(p), _) if p.stage == Stage::Released => Some("released"),
        (_, Some((label, _))) => Some(label),
        _ => None,
    };
    let network = ctx
        .payment
        .as_ref()
        .map(|p| p.network.as_str())
        .or(f.verification.as_ref().map(|(n, _)| n.as_str()));
    let ms = |secs: f64| (secs * 1e6).round() / 1e3;
    let total_ms = ctx.started.map(|t| ms(t.elapsed().as_secs_f64()));
    let client = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip().to_string());
    tracing::info!(
        target: "x402_gate::access",
        method = req.method.as_str(),
        path = truncated(path, 256),
        route = route.as_deref(),
        kind = f.route,
        tenant = ctx.route.as_ref().map(|r| r.config.tenant.as_str()),
        status = session.response_written().map(|h| h.status.as_u16()),
        payment,
        refusal = f.refusal,
        settlement,
        network,
        total_ms,
        verify_ms = f.verification.as_ref().map(|(_, s)| ms(*s)),
        settle_ms = f.settlement.and_then(|(_, s)| s).map(ms),
        client = client.as_deref(),
        error = e.map(|e| e.etype().as_str()),
        "request"
    );
}

/// At most `max` bytes of `s`, cut on a character boundary.
fn truncated(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
