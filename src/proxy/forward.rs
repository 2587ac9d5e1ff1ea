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

/// Removes the hop-by-hop headers (`HOP_BY_HOP`, `Connection` and the headers it names, except
/// `Upgrade`) and those in `also`, reading the header names once: a request carries a handful of
/// headers, and looking each listed name up in the map (parsing it first) cost more than the
/// scan.
fn remove_unforwarded(req: &mut RequestHeader, also: &[&str]) {
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
    // Header names are lowercase in the map (`HeaderName`), as are ours.
    let doomed: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            HOP_BY_HOP.contains(&name)
                || also.contains(&name)
                || (name == http::header::CONNECTION.as_str() && !upgrade)
                || (name != "upgrade" && listed.iter().any(|l| l == name))
        })
        .cloned()
        .collect();
    for name in &doomed {
        req.remove_header(name);
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
    // The host goes in as the SNI even for a plain upstream: pingora keys its connection pool
    // on it, so routes to two host names at one address never share a connection.
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
    // First, so nothing the gateway adds below is removed again. pingora (0.9) already dropped
    // the hop-by-hop headers and those `Connection` names, and refused a request naming `Host` or
    // `X-Forwarded-*`; this keeps that true under any pingora policy. The origin must never see
    // a proof it could replay elsewhere.
    remove_unforwarded(upstream, &[x402::PAYMENT_SIGNATURE, x402::X_PAYMENT]);
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
    upstream.insert_header("x-forwarded-proto", http::HeaderValue::from_static(proto))?;
    if let Some(id) = &ctx.request_id_value {
        upstream.insert_header(REQUEST_ID_HEADER, id.clone())?;
    }
    if let Some(ip) = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
    {
        static XFF: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");
        let xff = match upstream.headers.get(&XFF).and_then(|v| v.to_str().ok()) {
            Some(prev) => format!("{prev}, {ip}"),
            None => ip_text(ip),
        };
        upstream.insert_header("x-forwarded-for", xff)?;
    }
    // From here the origin may act on the request: a paid request whose client leaves now is
    // charged (see `logging`).
    ctx.forwarded = true;
    Ok(())
}

/// `ip` as text, as `Display` writes it; an IPv4 address without the formatting machinery
/// (`to_string` was a tenth of forwarding's cost).
fn ip_text(ip: std::net::IpAddr) -> String {
    let std::net::IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut out = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_text_is_display() {
        for v4 in [
            [0, 0, 0, 0],
            [127, 0, 0, 1],
            [10, 9, 99, 100],
            [255, 255, 255, 255],
            [1, 20, 200, 109],
        ] {
            let ip = std::net::IpAddr::from(v4);
            assert_eq!(ip_text(ip), ip.to_string());
        }
        let v6: std::net::IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(ip_text(v6), "2001:db8::1");
    }
}
