//! The pingora `ProxyHttp` implementation: one concern per phase.
//!
//! - `request_filter`: header-size cap -> path normalization -> CORS preflight -> route match ->
//!   free routes pass -> payment header check. Every refusal is written by `respond.rs`, then the
//!   phase returns `Ok(true)` so nothing reaches the upstream.
//! - `upstream_peer`: the peer from `ctx.route` only.
//! - `upstream_request_filter`: forward the normalized path, rewrite `Host`, add `X-Forwarded-*`,
//!   strip payment and hop-by-hop headers.
//! - `response_filter`: CORS headers on priced routes.
//! - `fail_to_proxy`: the gateway's own statuses for timeouts and unreachable upstreams.
//!
//! May import: routes, pricing, x402, config. Decisions live in `gate.rs` as plain functions.

mod ctx;
pub mod gate;
pub mod respond;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};

pub use ctx::RequestCtx;
use gate::PaymentCheck;

use crate::config::ServerConfig;
use crate::routes::{normalize_path, RouteTable};
use crate::x402::{self, Reason};

/// Settings the proxy reads on every request, taken from `[server]`.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub public_url: Option<String>,
    pub max_payment_header_bytes: usize,
    pub max_request_header_bytes: usize,
    pub body_read_timeout: Duration,
    pub cors_allow_origin: String,
}

impl From<&ServerConfig> for ProxySettings {
    fn from(s: &ServerConfig) -> Self {
        ProxySettings {
            public_url: s.public_url.clone(),
            max_payment_header_bytes: s.max_payment_header_bytes,
            max_request_header_bytes: s.max_request_header_bytes,
            body_read_timeout: s.body_read_timeout,
            cors_allow_origin: s.cors_allow_origin.clone(),
        }
    }
}

pub struct Gateway {
    routes: Arc<RouteTable>,
    settings: ProxySettings,
}

impl Gateway {
    pub fn new(routes: Arc<RouteTable>, settings: ProxySettings) -> Self {
        Gateway { routes, settings }
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

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let origin = &self.settings.cors_allow_origin;
        let req = session.req_header();
        if gate::header_block_size(&req.headers) > self.settings.max_request_header_bytes {
            let msg = format!(
                "request headers exceed {} bytes",
                self.settings.max_request_header_bytes
            );
            respond::json_error(session, 431, "request_header_too_large", &msg, origin).await?;
            return Ok(true);
        }
        let path = match normalize_path(req.uri.path()) {
            Ok(p) => p,
            Err(e) => {
                let msg = e.to_string();
                respond::json_error(session, 400, "bad_path", &msg, origin).await?;
                return Ok(true);
            }
        };
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.host())
            .map(str::to_owned);

        if let Some(method) = gate::preflight_method(&req.method, &req.headers) {
            if let Some(route) = self.routes.find(host.as_deref(), method, &path) {
                if !route.is_free() {
                    let methods = route
                        .config
                        .methods
                        .as_ref()
                        .map_or_else(|| method.to_string(), |m| m.join(", "));
                    let requested = req
                        .headers
                        .get(http::header::ACCESS_CONTROL_REQUEST_HEADERS)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    respond::preflight(session, &methods, requested.as_deref(), origin).await?;
                    return Ok(true);
                }
            }
        }

        let Some(route) = self
            .routes
            .find(host.as_deref(), req.method.as_str(), &path)
            .cloned()
        else {
            let msg = format!("no route for {} {}", req.method, path);
            respond::json_error(session, 404, "no_route", &msg, origin).await?;
            return Ok(true);
        };
        if let std::borrow::Cow::Owned(p) = path {
            ctx.rewritten_path = Some(p);
        }
        ctx.client_host = host;
        ctx.route = Some(route.clone());
        // Applies to every body read from here on; a stalled upload gets a 408 (fail_to_proxy).
        session.set_read_timeout(Some(self.settings.body_read_timeout));

        let Some(offers) = route.offers.as_ref() else {
            return Ok(false);
        };
        let req = session.req_header();
        let check = gate::check_payment(
            offers,
            gate::payment_header(&req.headers),
            self.settings.max_payment_header_bytes,
        );
        let error = match check {
            PaymentCheck::Missing => "Payment required".to_string(),
            PaymentCheck::Rejected(r) => r.error_text(),
            // Verification arrives with the EVM payments work; until then a well-formed payment
            // is refused, and a priced route is never forwarded unpaid.
            PaymentCheck::Matched { .. } => gate::Rejection::new(
                Reason::UnexpectedVerifyError,
                "payment verification is not enabled for this network",
            )
            .error_text(),
        };
        let path_and_query = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let url = gate::resource_url(
            self.settings.public_url.as_deref(),
            ctx.client_host.as_deref(),
            path_and_query,
        );
        respond::challenge(session, offers.challenge(&url, &error), origin).await?;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
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

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
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
        // The origin must never see a proof it could replay elsewhere.
        upstream.remove_header(x402::PAYMENT_SIGNATURE);
        upstream.remove_header(x402::X_PAYMENT);
        strip_hop_by_hop(upstream);
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        resp.remove_header("keep-alive");
        resp.remove_header("proxy-connection");
        if ctx.route.as_ref().is_some_and(|r| !r.is_free()) {
            respond::add_cors(resp, &self.settings.cors_allow_origin)?;
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        _ctx: &mut RequestCtx,
    ) -> FailToProxy {
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
            let origin = self.settings.cors_allow_origin.clone();
            if let Err(err) = respond::json_error(session, code, name, &message, &origin).await {
                tracing::debug!("could not write the error response: {err}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
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
