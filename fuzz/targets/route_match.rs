//! The request path normalizer and the route matcher: `routes::normalize_path`,
//! `RouteTable::find`, and the proxy's `decide::route_request` that checks the request line,
//! normalizes and routes.
//!
//! Input: byte 0 picks the method and the `Host`, the rest is the request target as sent.
//!
//! Properties, beyond "no panic":
//! - a normalized path is a fixed point: normalizing it again changes nothing;
//! - it has no empty, `.` or `..` segment, no `\`, no `;`, and every `%` starts a valid
//!   upper-case escape of a reserved byte (unreserved ones are decoded);
//! - the route it matches is the route its re-normalization matches, and the route an origin's
//!   view of it (every escape decoded) matches: an escape never moves a request across routes;
//! - a routed request forwards a path that routes, again, to the same route.

use std::sync::Arc;

use http::HeaderMap;
use x402_gate::proxy::decide::{route_request, RequestFacts};
use x402_gate::routes::{normalize_path, Route, RouteTable};

const METHODS: [&str; 8] = [
    "GET", "POST", "HEAD", "OPTIONS", "get", "PUT", "DELETE", "PROPFIND",
];
const HOSTS: [Option<&str>; 4] = [
    None,
    Some("api.example.com"),
    Some("API.Example.com:8443"),
    Some("[::1]:80"),
];

fn same(a: Option<&Arc<Route>>, b: Option<&Arc<Route>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

pub fn run(data: &[u8]) {
    let Some((&pick, target)) = data.split_first() else {
        return;
    };
    let method = METHODS[usize::from(pick & 7)];
    let host = HOSTS[usize::from((pick >> 3) & 3)];
    let table = super::fixture_table();

    // The path as pingora hands it over: origin-form up to the query; absolute-form's path.
    let Ok(text) = std::str::from_utf8(target) else {
        return;
    };
    let path = if text.starts_with('/') {
        text.split(['?', '#']).next().unwrap_or("").to_string()
    } else {
        match http::Uri::try_from(text) {
            Ok(uri) if uri.scheme().is_some() => uri.path().to_string(),
            _ => "/".to_string(),
        }
    };
    let path = path.as_str();
    check_normalized(table, host, method, path);

    let headers = HeaderMap::new();
    let facts = RequestFacts {
        raw_target: target,
        method,
        path,
        headers: &headers,
        host,
        max_header_bytes: 8192,
    };
    match route_request(&facts, table) {
        Ok(routed) => {
            let forwarded = routed.rewritten_path.as_deref().unwrap_or(path);
            let again = normalize_path(forwarded).expect("a forwarded path normalizes");
            assert_eq!(again, forwarded, "a forwarded path is normalized");
            let found = table.find(host, method, forwarded);
            assert!(
                same(found, Some(&routed.route)),
                "the forwarded path {forwarded:?} routes elsewhere"
            );
        }
        Err((reply, _)) => {
            let kind = reply.body.kind();
            assert!(!kind.is_empty());
        }
    }
}

fn check_normalized(table: &RouteTable, host: Option<&str>, method: &str, path: &str) {
    let Ok(normalized) = normalize_path(path) else {
        return;
    };
    let n: &str = &normalized;
    assert!(n.starts_with('/'), "{n:?}");
    assert!(!n.contains('\\') && !n.contains(';'), "{n:?}");
    let segments: Vec<&str> = n[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, s) in segments.iter().enumerate() {
        assert!(*s != "." && *s != "..", "dot segment in {n:?}");
        assert!(!s.is_empty() || i == last, "empty segment in {n:?}");
    }
    let bytes = n.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%' {
            let hex = bytes.get(i + 1..i + 3).expect("a complete escape");
            assert!(
                hex.iter()
                    .all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(h)),
                "invalid escape in {n:?}"
            );
            let v = u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap();
            assert!(
                !(v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~')),
                "an unreserved byte left escaped in {n:?}"
            );
        }
    }
    match normalize_path(n) {
        Ok(again) => assert_eq!(again, n, "normalizing is not idempotent"),
        Err(e) => panic!("normalizing {n:?} again failed: {e}"),
    }
    let route = table.find(host, method, n);
    // An origin's view: every escape decoded. Where that view has no byte that changes how an
    // origin splits the path (`%`, `?`, `#`, `;`, `\`, controls), it must route the same.
    let mut decoded = Vec::with_capacity(n.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            decoded.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    if let Ok(view) = String::from_utf8(decoded) {
        let splits = |c: char| matches!(c, '%' | '?' | '#' | ';' | '\\') || c.is_control();
        if !view.contains(splits) {
            assert!(
                same(route, table.find(host, method, &view)),
                "{n:?} and its decoded form {view:?} route differently"
            );
        }
    }
}
