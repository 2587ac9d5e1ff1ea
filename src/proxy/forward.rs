//! What goes to the origin: the peer, and the request's headers as the origin sees them.

use super::*;

/// Request headers that describe one connection, not the request: never forwarded
/// (RFC 9110 7.6.1). `Upgrade` is kept so WebSocket upgrades still work.
pub(super) const HOP_BY_HOP: &[&str] = &[
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
];

pub(super) fn strip_hop_by_hop(req: &mut RequestHeader) {
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
pub(super) async fn peer_for(ctx: &RequestCtx) -> Result<Box<HttpPeer>> {
    let route = ctx
        .route
        .as_ref()
        .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route in context"))?;
    let up = &route.config.upstream;
    let addr: SocketAddr = if let Some(policy) = &route.upstream_policy {
        // A tenant's upstream: resolved and checked now, and connected to at the very address
        // checked, so a DNS answer that changed since the route was written (rebinding to
        // loopback or the metadata service) never gets a connection.
        let addrs = policy.resolve(&up.host, up.port).await.map_err(|e| {
            tracing::warn!(route = %route.label, "upstream refused at connect: {e}");
            Error::explain(ErrorType::ConnectRefused, e.to_string()).into_up()
        })?;
        addrs[0]
    } else {
        match up.host.parse::<std::net::IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, up.port),
            // pingora's HttpPeer::new resolves synchronously and panics on failure: resolve
            // here, asynchronously, and turn a failure into a 502.
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
        }
    };
    let mut peer = HttpPeer::new(addr, up.tls, up.host.clone());
    peer.options.connection_timeout = Some(Duration::from_secs(5));
    peer.options.total_connection_timeout = Some(Duration::from_secs(10));
    peer.options.read_timeout = Some(ctx.live.as_ref().map_or(Duration::from_secs(60), |l| {
        l.settings.upstream_read_timeout
    }));
    Ok(Box::new(peer))
}

/// The request as the origin sees it: the normalized path, its `Host`, `X-Forwarded-*` and the
/// request id; no payment proof and no hop-by-hop header.
pub(super) fn forward_headers(
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
        match &route.host_header {
            Some(host) => upstream.insert_header(http::header::HOST, host.clone())?,
            None => {
                upstream.insert_header(http::header::HOST, route.config.upstream.authority())?
            }
        }
    }
    if let Some(host) = &ctx.client_host {
        upstream.insert_header("x-forwarded-host", host.as_str())?;
    }
    // What the client used, replacing any value it sent: the origin may trust this one.
    let proto = if ctx.client_tls { "https" } else { "http" };
    upstream.insert_header("x-forwarded-proto", proto)?;
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
