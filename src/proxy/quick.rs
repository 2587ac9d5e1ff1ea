//! The quick answer: a request for a priced route that carries no payment is answered from its
//! raw head, without pingora's session.
//!
//! A 402 challenge is the answer the gateway gives most (every x402 client asks first without
//! paying), and its cost was mostly pingora's per-request work: building the session and the
//! proxy's boxed future (moving them into place alone was about 15k instructions), parsing the
//! head into case-preserving header maps, and the response's header maps again. nginx answers a
//! fixed response in a fraction of that. Here the connection loop (`idle.rs`) hands the first
//! bytes it read to `Gateway::quick`, which answers them itself when, and only when, nothing
//! about the request needs pingora:
//!
//! - `parse` (pure): the whole head arrived in that one read and nothing after it (no body, no
//!   pipelined request); HTTP/1.1; no payment header (`PAYMENT-SIGNATURE`, `X-PAYMENT`), no
//!   `Content-Length`, `Transfer-Encoding`, `Expect` or `Upgrade`, and no `Connection` but
//!   `keep-alive`; origin-form target; at most one `Host`, without userinfo; every header one
//!   the `http` crate accepts; not `HEAD`, `CONNECT` or `OPTIONS`. Anything else goes to
//!   pingora, whose checks then apply as before.
//! - `Gateway::quick`: the request routes (the same `decide::route_request`) to a priced route
//!   without an upgrade; the gateway is not draining, and the connection is not counted against
//!   a reuse limit. These are pure too, so a request that falls through to pingora has had
//!   nothing counted or changed.
//!
//! From there the request is the quick path's, whatever its answer: the same steps as
//! `request_filter` (`admit.rs`: the client's and the tenant's rate limits, the tenant's
//! standing, the resource URL, the challenge), then the same renderer (`respond::render`),
//! written as pingora writes a response head (`Date`, `Connection`, the same header order and
//! case), the same metrics (`finish`) and the same access line. A test holds the bytes equal to
//! pingora's answer to the same request.

use std::future::Future;
use std::net::IpAddr;
use std::task::Poll;

use bytes::{BufMut, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Uri};
use pingora::http::ResponseHeader;
use pingora::proxy::ProxyHttp;
use tracing::Instrument;

use pingora::{
    Error, ErrorType::InvalidHTTPHeader, ErrorType::WriteError, ErrorType::WriteTimedout,
};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::decide::{self, Presented, Reply, RequestFacts};
use super::idle::KEEPALIVE_IDLE;
use super::phases::{access_line, Access};
use super::respond::Rendered;
use super::{gate, Gateway, RequestCtx};
use crate::routes::normalize_path;
use crate::x402;

/// The most headers a quick request may have (a larger head goes to pingora, which takes 256).
const MAX_HEADERS: usize = 64;

/// A request head that came whole in one read, parsed and checked as fit for the quick path.
#[derive(Debug)]
pub struct Head {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
}

/// Parses `bytes` as one whole request head with nothing after it, fit for the quick path
/// (see the module's doc), without a payment header, and `wanted` by the caller (its method,
/// `Host` and path: asked before the header map is built, so a request the quick path does
/// not want costs little more than httparse's parse); `None` for anything pingora must handle.
pub fn parse(
    bytes: &[u8],
    wanted: impl FnOnce(&Method, Option<&str>, &str) -> bool,
) -> Option<Head> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    match req.parse(bytes) {
        Ok(httparse::Status::Complete(n)) if n == bytes.len() => {}
        _ => return None,
    }
    if req.version != Some(1) {
        return None;
    }
    let method = Method::from_bytes(req.method?.as_bytes()).ok()?;
    if matches!(method, Method::HEAD | Method::CONNECT | Method::OPTIONS) {
        return None;
    }
    let target = req.path?;
    if !target.starts_with('/') {
        return None;
    }
    // The path as `Uri::path` reads it: the caller routes on it, and the `Uri` (a copy of the
    // target and a second parse) is built only for a request it wants.
    let path = target.split(['?', '#']).next().unwrap_or(target);
    // Everything that disqualifies a request is read off httparse's slices first: a request
    // left to pingora (a paid one, one with a body) costs no header map.
    let mut host = None;
    let mut connection = false;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            // Two are pingora's to refuse; userinfo in one too.
            if host.is_some() || h.value.contains(&b'@') {
                return None;
            }
            // As `HeaderValue::to_str`, which the routing reads it with: visible ASCII only,
            // else routed as no host at all.
            let visible = h
                .value
                .iter()
                .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b));
            host = Some(visible.then(|| std::str::from_utf8(h.value).ok()).flatten());
        } else if name.eq_ignore_ascii_case("connection") {
            // Only the HTTP/1.1 default said out loud, once.
            if connection || !h.value.eq_ignore_ascii_case(b"keep-alive") {
                return None;
            }
            connection = true;
        } else if [
            x402::PAYMENT_SIGNATURE,
            x402::X_PAYMENT,
            "content-length",
            "transfer-encoding",
            "expect",
            "upgrade",
        ]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
        {
            return None;
        }
    }
    if !wanted(&method, host.flatten(), path) {
        return None;
    }
    let uri = Uri::try_from(target).ok()?;
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(h.value).ok()?;
        headers.append(name, value);
    }
    Some(Head {
        method,
        uri,
        headers,
    })
}

/// A rendered reply as pingora's HTTP/1 server writes a response: the status line, the headers
/// in order with the `Date` and `Connection` pingora adds to every final response (in its order
/// and case), a blank line, the body. Written straight from `Rendered`: building pingora's
/// `ResponseHeader` (two header maps, each name parsed) cost more than the rest of the answer.
/// A reply naming its own `Date` or `Connection` (a closing reply names `Connection`) goes through
/// `wire_header`, pingora's header map, for pingora's rules on which one stands where.
pub fn wire(r: &Rendered<'_>, close: bool) -> pingora::Result<BytesMut> {
    let names_own = r.headers.iter().any(|(n, _)| {
        n.eq_ignore_ascii_case(header::DATE.as_str())
            || n.eq_ignore_ascii_case(header::CONNECTION.as_str())
    });
    if names_own {
        return wire_header(r.header()?, &r.body, close);
    }
    let status = http::StatusCode::from_u16(r.status)
        .map_err(|_| Error::explain(InvalidHTTPHeader, "invalid status"))?;
    let date = pingora::protocols::http::date::get_cached_date();
    let connection: &[u8] = if close { b"close" } else { b"keep-alive" };
    // Room for all of it at once: the challenge's header alone outgrew a guess, and growing
    // the buffer copied what was written so far.
    let fields: usize = r.headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
    let mut buf = BytesMut::with_capacity(128 + date.len() + fields + r.body.len());
    buf.put_slice(b"HTTP/1.1 ");
    buf.put_slice(status.as_str().as_bytes());
    buf.put_u8(b' ');
    if let Some(reason) = status.canonical_reason() {
        buf.put_slice(reason.as_bytes());
    }
    buf.put_slice(b"\r\n");
    for (name, value) in &r.headers {
        if !valid_value(value) {
            return Err(Error::explain(
                InvalidHTTPHeader,
                "invalid value while insert",
            ));
        }
        buf.put_slice(name.as_bytes());
        buf.put_slice(b": ");
        buf.put_slice(value.as_bytes());
        buf.put_slice(b"\r\n");
    }
    buf.put_slice(b"Date: ");
    buf.put_slice(date.as_bytes());
    buf.put_slice(b"\r\nConnection: ");
    buf.put_slice(connection);
    buf.put_slice(b"\r\n\r\n");
    buf.put_slice(&r.body);
    Ok(buf)
}

/// Whether `respond::header_value` takes `value` (as the `http` crate checks, without making
/// the `HeaderValue`).
fn valid_value(value: &str) -> bool {
    // Every byte looked at, with no early exit: the compiler makes this a vector loop, which the
    // challenge's kilobyte of base64 made worth it (a byte-at-a-time check with an early exit
    // was most of `wire`'s cost).
    !value.bytes().fold(false, |bad, b| {
        bad | ((b < 0x20 && b != b'\t') | (b == 0x7f))
    })
}

/// `resp` and `body` as pingora's HTTP/1 server writes a response: the status line, the headers
/// with the `Date` and `Connection` pingora adds to every final response (in its order and case),
/// a blank line, the body.
pub fn wire_header(
    mut resp: ResponseHeader,
    body: &[u8],
    close: bool,
) -> pingora::Result<BytesMut> {
    let date = pingora::protocols::http::date::get_cached_date();
    let connection = if close { "close" } else { "keep-alive" };
    // pingora inserts both into the header maps, where new names go last; written straight
    // after the others instead, the bytes are the same for less work. A response that already
    // names either (a reply that closes its connection) takes pingora's way, which replaces the
    // value where it stands.
    let appended =
        !resp.headers.contains_key(header::DATE) && !resp.headers.contains_key(header::CONNECTION);
    if !appended {
        resp.insert_header(header::DATE, date.clone())?;
        resp.insert_header(header::CONNECTION, connection)?;
    }
    let mut buf = BytesMut::with_capacity(512 + body.len());
    buf.put_slice(b"HTTP/1.1 ");
    buf.put_slice(resp.status.as_str().as_bytes());
    buf.put_u8(b' ');
    if let Some(reason) = resp.get_reason_phrase() {
        buf.put_slice(reason.as_bytes());
    }
    buf.put_slice(b"\r\n");
    resp.header_to_h1_wire(&mut buf);
    if appended {
        buf.put_slice(b"Date: ");
        buf.put_slice(date.as_bytes());
        buf.put_slice(b"\r\nConnection: ");
        buf.put_slice(connection.as_bytes());
        buf.put_slice(b"\r\n");
    }
    buf.put_slice(b"\r\n");
    buf.put_slice(body);
    Ok(buf)
}

impl Gateway {
    /// The head of a request the quick path may answer: fit (`parse`), for a priced route, while
    /// the gateway is not draining (answers then say `Connection: close`: pingora's). Pure.
    pub fn take(&self, bytes: &[u8]) -> Option<Head> {
        if self.draining.is_set() {
            return None;
        }
        let routes = self.routes.load();
        parse(bytes, |method, host, path| {
            normalize_path(path)
                .ok()
                .and_then(|path| routes.find(host, method.as_str(), &path))
                .is_some_and(|route| !route.is_free())
        })
    }

    /// Answers a head `take` gave on `conn` when nothing about it needs pingora (see the
    /// module's doc): `None` hands it on untouched, nothing counted or written. `Some`: whether
    /// the connection may carry the client's next request.
    pub async fn quick<W>(&self, head: &Head, client: Option<IpAddr>, conn: &mut W) -> Option<bool>
    where
        W: AsyncWrite + Unpin + Send,
    {
        let live = self.live.load_full();
        let host = head.headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let path_and_query = head.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let facts = RequestFacts {
            raw_target: path_and_query.as_bytes(),
            method: head.method.as_str(),
            path: head.uri.path(),
            headers: &head.headers,
            host,
            max_header_bytes: live.settings.max_request_header_bytes,
        };
        let routed = decide::route_request(&facts, &self.routes.load()).ok()?;
        let route = routed.route.clone();
        let offers = route.offers.as_ref()?;
        // `parse` refused a head naming a payment header.
        debug_assert!(gate::payment_header(&head.headers).is_none());
        // Draining may have begun since `take`: its answers say `Connection: close` (pingora's).
        if routed.upgrade || self.draining.is_set() {
            return None;
        }
        // The request is the quick path's from here, whatever its answer.
        let mut ctx = self.new_ctx();
        ctx.start(&head.headers);
        ctx.facts.route = "rejected";
        let span = ctx.span();
        let refused = async {
            self.limit_client(&live, client).await?;
            ctx.rewritten_path = routed.rewritten_path;
            ctx.client_host = host.map(str::to_owned);
            ctx.route = Some(route.clone());
            self.limit_tenant(&live, &route).await?;
            self.standing_for(&live, &route, offers, path_and_query, &mut ctx)
                .await?;
            let max = live.settings.max_payment_header_bytes;
            let check = gate::check_payment(offers, None, max);
            match decide::presented(check, offers, &ctx.resource_url) {
                Presented::Refused { reply, .. } => {
                    ctx.facts.challenged = true;
                    Ok(reply)
                }
                // Without a payment header there is nothing to pay with: never here. Were it
                // ever, the request is still this path's (its limits are counted): it fails as
                // a phase of pingora's would, with a 500.
                Presented::Paid { .. } => {
                    debug_assert!(false, "a payment with no payment header");
                    Err(Reply::error(500, "internal_error", "the gateway failed"))
                }
            }
        }
        .instrument(span.clone())
        .await;
        let reply = match refused {
            Ok(reply) | Err(reply) => reply,
        };
        let close = reply.close;
        let origin = &live.settings.cors_allow_origin;
        let rendered = span.in_scope(|| {
            tracing::debug!(body = reply.body.kind(), "answered by the gateway");
            respond_bytes(reply, origin, &ctx).or_else(|e| {
                // pingora answers a phase that failed with a 500; so does this path.
                tracing::error!("could not render the gateway's answer: {e}");
                let reply = Reply::error(500, "internal_error", "the gateway failed");
                respond_bytes(reply, origin, &ctx)
            })
        });
        let (status, failed) = match rendered {
            Ok((status, bytes)) => (Some(status), send(conn, &bytes).await.err()),
            Err(e) => (None, Some(e)),
        };
        self.metrics.quick_answers.inc();
        self.finish(failed.as_deref(), &mut ctx)
            .instrument(span.clone())
            .await;
        let access = Access {
            method: head.method.as_str(),
            path: head.uri.path(),
            client,
            status,
        };
        span.in_scope(|| access_line(&access, failed.as_deref(), &ctx));
        Some(!close && failed.is_none())
    }
}

/// Writes a whole answer and sends it. A client that does not take it within the keep-alive
/// timeout loses the connection (pingora sets no write timeout; a 402 fits in the socket's send
/// buffer, so this only ends a connection whose client stopped reading long ago).
async fn send<W>(conn: &mut W, bytes: &[u8]) -> pingora::Result<()>
where
    W: AsyncWrite + Unpin + Send,
{
    let mut write = std::pin::pin!(async {
        conn.write_all(bytes).await?;
        conn.flush().await
    });
    // An answer nearly always goes out whole on the first try: a timer (and its wheel entry) only
    // for one that has to wait for the client.
    let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
    let sent = match first {
        Poll::Ready(done) => Ok(done),
        Poll::Pending => tokio::time::timeout(KEEPALIVE_IDLE, write).await,
    };
    match sent {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            Err(Error::because(WriteError, "writing the gateway's answer", e).into_down())
        }
        Err(_) => Err(Error::explain(WriteTimedout, "writing the gateway's answer").into_down()),
    }
}

/// The reply rendered by the one renderer and written as pingora would: the status and bytes.
fn respond_bytes(
    reply: decide::Reply,
    allow_origin: &str,
    ctx: &RequestCtx,
) -> pingora::Result<(u16, BytesMut)> {
    let close = reply.close;
    let rendered = super::respond::rendered(reply, allow_origin, &ctx.request_id);
    Ok((rendered.status, wire(&rendered, close)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    /// Wants every request (the route is the gateway's question).
    fn any(_: &Method, _: Option<&str>, _: &str) -> bool {
        true
    }

    /// `valid_value` takes exactly what `HeaderValue::from_str` takes, byte by byte, wherever
    /// the byte falls in a long value (the vector loop's lanes and its tail).
    #[test]
    fn valid_value_agrees_with_the_http_crate() {
        for b in 0u8..=0x7f {
            let c = char::from(b);
            for at in [0usize, 1, 15, 16, 31, 32, 33, 1000] {
                let mut v = "a".repeat(1001);
                v.replace_range(at..at + 1, &c.to_string());
                assert_eq!(
                    valid_value(&v),
                    HeaderValue::from_str(&v).is_ok(),
                    "byte {b:#x} at {at}"
                );
            }
        }
        // Text beyond ASCII: `from_str` takes it (as opaque bytes), and so does the check.
        assert!(valid_value("caf\u{e9}"));
        assert!(HeaderValue::from_str("caf\u{e9}").is_ok());
    }

    #[test]
    fn the_caller_is_asked_for_the_method_host_and_target() {
        let mut asked = None;
        let bytes = b"POST /paid/a?x=1 HTTP/1.1\r\nhost: api.test\r\n\r\n";
        let head = parse(bytes, |m, h, p| {
            asked = Some((m.clone(), h.map(str::to_owned), p.to_string()));
            false
        });
        assert!(head.is_none(), "not wanted, not taken");
        let (method, host, path) = asked.expect("asked");
        assert_eq!(method, Method::POST);
        assert_eq!(host.as_deref(), Some("api.test"));
        assert_eq!(path, "/paid/a", "the path, as `Uri::path` reads it");
        for (target, path) in [("/a#frag", "/a"), ("/a?q#f", "/a"), ("/", "/")] {
            let bytes = format!("GET {target} HTTP/1.1\r\n\r\n");
            let mut seen = None;
            parse(bytes.as_bytes(), |_, _, p| {
                seen = Some(p.to_string());
                false
            });
            let uri = Uri::try_from(target).unwrap();
            assert_eq!(seen.as_deref(), Some(path), "{target}");
            assert_eq!(uri.path(), path, "{target}: as the Uri reads it");
        }
        assert!(parse(b"GET / HTTP/1.1\r\n\r\n", |_, h, _| h.is_none()).is_some());
        // A `Host` the routing cannot read as text is no host to it, nor to the caller.
        let odd = "GET / HTTP/1.1\r\nHost: caf\u{e9}.test\r\n\r\n";
        assert!(parse(odd.as_bytes(), |_, h, _| h.is_none()).is_some());
    }

    #[test]
    fn a_plain_get_is_fit_and_parsed_as_sent() {
        let head = parse(
            b"GET /paid/a?x=1 HTTP/1.1\r\nHost: api.test:8080\r\nAccept: */*\r\nX-Request-Id: r1\r\n\r\n",
            any,
        )
            .expect("fit");
        assert_eq!(head.method, Method::GET);
        assert_eq!(head.uri.path(), "/paid/a");
        assert_eq!(head.uri.path_and_query().unwrap().as_str(), "/paid/a?x=1");
        assert_eq!(head.headers.get("host").unwrap(), "api.test:8080");
        assert_eq!(head.headers.get("x-request-id").unwrap(), "r1");
        assert_eq!(head.headers.len(), 3);
        let keep = parse(b"POST /p HTTP/1.1\r\nConnection: Keep-Alive\r\n\r\n", any).expect("fit");
        assert_eq!(keep.method, Method::POST);
    }

    #[test]
    fn anything_pingora_must_handle_is_not_fit() {
        let unfit: &[&[u8]] = &[
            // Not whole, or more than one head.
            b"GET /p HTTP/1.1\r\nHost: a\r\n",
            b"GET /p HTTP/1.1\r\nHost: a\r\n\r\nGET /q HTTP/1.1\r\n\r\n",
            b"GET /p HTTP/1.1\r\nHost: a\r\n\r\nx",
            // Not HTTP/1.1.
            b"GET /p HTTP/1.0\r\nHost: a\r\n\r\n",
            // A body, or framing pingora decides on.
            b"POST /p HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST /p HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            b"GET /p HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            b"GET /p HTTP/1.1\r\nConnection: close\r\n\r\n",
            b"GET /p HTTP/1.1\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
            // Methods pingora treats apart.
            b"HEAD /p HTTP/1.1\r\n\r\n",
            b"OPTIONS /p HTTP/1.1\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            // Targets and hosts pingora checks.
            b"GET http://a/p HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET * HTTP/1.1\r\n\r\n",
            b"GET /p HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET /p HTTP/1.1\r\nHost: u@a\r\n\r\n",
            // A payment: verified, claimed and settled by pingora's phases.
            b"GET /p HTTP/1.1\r\nPayment-Signature: e30=\r\n\r\n",
            b"GET /p HTTP/1.1\r\nX-PAYMENT: e30=\r\n\r\n",
            // Bytes httparse refuses (pingora escapes some of them and tries again).
            b"GET /p q HTTP/1.1\r\n\r\n",
            b"GET /p\x01 HTTP/1.1\r\n\r\n",
            b"\r\n",
        ];
        for bytes in unfit {
            assert!(
                parse(bytes, any).is_none(),
                "taken: {:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        let mut many = b"GET /p HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(
            parse(&many, any).is_none(),
            "more headers than the quick path takes"
        );
    }

    #[test]
    fn a_response_is_written_as_pingora_writes_one() {
        let mut resp = ResponseHeader::build(402, Some(4)).unwrap();
        resp.insert_header("PAYMENT-REQUIRED", "abc").unwrap();
        resp.insert_header("content-length", "2").unwrap();
        let bytes = wire_header(resp, b"{}", false).unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let lines: Vec<&str> = head.split("\r\n").collect();
        assert_eq!(lines[0], "HTTP/1.1 402 Payment Required");
        assert_eq!(lines[1], "PAYMENT-REQUIRED: abc");
        assert_eq!(lines[2], "content-length: 2");
        assert!(lines[3].starts_with("Date: "), "{lines:?}");
        assert_eq!(lines[4], "Connection: keep-alive");
        assert_eq!(lines.len(), 5);
        assert_eq!(body, "{}");
        let closing = wire_header(ResponseHeader::build(400, None).unwrap(), b"", true).unwrap();
        assert!(String::from_utf8_lossy(&closing).contains("Connection: close\r\n\r\n"));
        // A reply that names its own `Connection` keeps one, where it stands, as pingora's.
        let mut named = ResponseHeader::build(400, Some(2)).unwrap();
        named.insert_header("connection", "close").unwrap();
        named.insert_header("x-request-id", "r").unwrap();
        let text = String::from_utf8(wire_header(named, b"", true).unwrap().to_vec()).unwrap();
        let lines: Vec<&str> = text.trim_end().split("\r\n").collect();
        assert_eq!(lines[1], "Connection: close", "{text}");
        assert_eq!(lines[2], "x-request-id: r", "{text}");
        assert!(lines[3].starts_with("Date: "), "{text}");
        assert_eq!(lines.len(), 4, "{text}");
    }

    /// The Date line (pingora's cached second may turn between two writes) blanked.
    fn dateless(bytes: &[u8]) -> String {
        String::from_utf8(bytes.to_vec())
            .unwrap()
            .split("\r\n")
            .map(|l| {
                if l.starts_with("Date: ") {
                    "Date: -"
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\r\n")
    }

    #[test]
    fn a_rendered_reply_is_written_as_its_pingora_header_writes() {
        use crate::pricing::Challenge;
        use decide::Body;
        let challenge = || {
            Reply::new(Body::Challenge(Challenge {
                header: "eyJ4NDAyVmVyc2lvbiI6Mn0=".into(),
                body: b"{\"x402Version\":1}".to_vec(),
            }))
        };
        let replies = [
            (challenge(), "*", "req-1"),
            (challenge(), "https://app.test", ""),
            (Reply::error(403, "tenant_suspended", "suspended"), "*", "r"),
            (
                Reply::new(Body::RateLimited { retry_after: 7 }),
                "https://a.test",
                "r",
            ),
            (Reply::new(Body::Unavailable("database")), "*", "r"),
            (
                Reply::new(Body::QuotaExceeded {
                    period: "2026-11".into(),
                    limit: Some(3),
                }),
                "*",
                "r",
            ),
        ];
        for (reply, origin, id) in replies {
            let kind = reply.body.kind();
            let rendered = crate::proxy::respond::rendered(reply, origin, id);
            for close in [false, true] {
                let direct = wire(&rendered, close).unwrap();
                let through =
                    wire_header(rendered.header().unwrap(), &rendered.body, close).unwrap();
                assert_eq!(
                    dateless(&direct),
                    dateless(&through),
                    "{kind}, close {close}"
                );
            }
        }
        // A reply that closes names its own `Connection`: pingora's header map places it.
        let mut closing = Reply::error(400, "bad_request", "no");
        closing.close = true;
        let rendered = crate::proxy::respond::rendered(closing, "*", "r");
        let text = dateless(&wire(&rendered, true).unwrap());
        assert_eq!(text.matches("onnection: close").count(), 1, "{text}");
        // A value the `http` crate refuses is refused by both, as pingora's `insert_header`; obs-text
        // is taken by both.
        let bad = Rendered {
            status: 402,
            headers: vec![("x-bad", Cow::Borrowed("a\nb"))],
            body: bytes::Bytes::new(),
        };
        assert!(wire(&bad, false).is_err() && bad.header().is_err());
        let obs = Rendered {
            status: 402,
            headers: vec![("x-obs", Cow::Owned("caf\u{e9}".into()))],
            body: bytes::Bytes::new(),
        };
        let through = wire_header(obs.header().unwrap(), b"", false).unwrap();
        assert_eq!(dateless(&wire(&obs, false).unwrap()), dateless(&through));
        let borrowed = Rendered {
            status: 402,
            headers: vec![("x-obs", Cow::Borrowed("caf\u{e9}"))],
            body: bytes::Bytes::new(),
        };
        let through = wire_header(borrowed.header().unwrap(), b"", false).unwrap();
        assert_eq!(
            dateless(&wire(&borrowed, false).unwrap()),
            dateless(&through)
        );
    }
}
