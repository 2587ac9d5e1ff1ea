//! The route table: (host, method, path) -> route, first match wins, built once from the config.
//!
//! Matching runs on a normalized path (dot segments resolved, unreserved %-escapes decoded,
//! repeated slashes collapsed), and that normalized path is what goes upstream. Otherwise
//! `/v1/%66orecast/x` or `/free/../v1/forecast/x` would miss a priced route, fall through to a free
//! catch-all, and reach an origin that decodes them into the priced resource without payment.
//! May import: config, pricing, x402.

pub mod api;
pub mod reload;
pub mod upstream;

use std::borrow::Cow;
use std::sync::Arc;

use std::collections::HashMap;
use std::time::Instant;

use crate::config::{Config, PathPattern, RouteConfig};
use crate::pricing::{Offers, TenantTerms};

/// A configured route with its precomputed payment offers (`None` for a free route).
#[derive(Debug)]
pub struct Route {
    pub config: RouteConfig,
    pub offers: Option<Offers>,
    /// The route as metrics and logs name it: its host (if any) and path pattern as configured
    /// (`/paid/*`, `api.example.com/v1/*`), never a request's own path.
    pub label: String,
    /// For a route written through the management API: what its upstream may resolve to,
    /// checked again at every connection (a DNS answer can change after the route was
    /// written). `None` for the file's routes, which the operator vouches for.
    pub upstream_policy: Option<Arc<upstream::UpstreamPolicy>>,
    /// The upstream's authority as the `Host` header the origin gets, made once for the route
    /// (a request only clones it) instead of formatted and validated on every request. `None`
    /// if it is not a valid header value (the config's checks make that impossible); the request
    /// then forms it itself and fails as it would have.
    pub host_header: Option<http::HeaderValue>,
}

impl Route {
    pub fn is_free(&self) -> bool {
        self.offers.is_none()
    }

    /// Whether `other` is the same route of another table (same tenant, host, methods and path),
    /// so offers can carry over from one to the other.
    fn same_as(&self, other: &Route) -> bool {
        let (a, b) = (&self.config, &other.config);
        a.tenant == b.tenant && a.host == b.host && a.path == b.path && a.methods == b.methods
    }
}

/// A route's name for metrics and logs: `host` + pattern as configured.
pub fn route_label(config: &RouteConfig) -> String {
    let pattern = match &config.path {
        PathPattern::Exact(p) => p.clone(),
        PathPattern::Prefix(p) => format!("{}/*", p.trim_end_matches('/')),
    };
    match &config.host {
        Some(host) => format!("{host}{pattern}"),
        None => pattern,
    }
}

#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path must start with /")]
    NotAbsolute,
    #[error("the path contains an encoded slash, backslash or NUL")]
    EncodedSeparator,
    #[error("the path contains an invalid %-escape")]
    BadEscape,
    #[error("the path climbs above the root")]
    AboveRoot,
    /// `;` path parameters: Tomcat, Jetty and IIS strip them (`/paid;x/data` is `/paid/data`
    /// there), other origins keep them. Either reading can turn a priced path into a free one, so
    /// the gateway serves neither.
    #[error("the path contains `;` parameters, which this gateway does not accept")]
    PathParameter,
}

impl RouteTable {
    /// The table as the config declares it.
    pub fn build(config: &Config) -> Self {
        Self::build_with(config, &HashMap::new())
    }

    /// The table with some tenants' terms (tier, pay_to) taken from `terms` instead of the
    /// config: how changes made through the management API reach the challenges.
    pub fn build_with(config: &Config, terms: &HashMap<String, TenantTerms>) -> Self {
        Self::build_all(config, &[], terms)
    }

    /// The file's routes, then the routes written through the management API (`api`, already
    /// validated and inside their tenants' namespaces): the operator's routes match first.
    pub fn build_all(
        config: &Config,
        api: &[RouteConfig],
        terms: &HashMap<String, TenantTerms>,
    ) -> Self {
        let policy = Arc::new(upstream::UpstreamPolicy::for_config(config));
        let routes = config
            .routes
            .iter()
            .chain(api)
            .map(|r| {
                let t = terms
                    .get(&r.tenant)
                    .cloned()
                    .or_else(|| TenantTerms::from_config(config, &r.tenant));
                Arc::new(Route {
                    config: r.clone(),
                    offers: t.and_then(|t| Offers::for_route(r, config, &t)),
                    label: route_label(r),
                    upstream_policy: r.api_id.as_ref().map(|_| policy.clone()),
                    host_header: http::HeaderValue::try_from(r.upstream.authority()).ok(),
                })
            })
            .collect();
        RouteTable { routes }
    }

    /// `build_with`, replacing `previous`: a route that was in it keeps accepting, for a while,
    /// what it offered there (`Offers::superseding`), so a client quoted just before a price
    /// change is not refused.
    pub fn rebuild(
        config: &Config,
        api: &[RouteConfig],
        terms: &HashMap<String, TenantTerms>,
        previous: &RouteTable,
        now: Instant,
    ) -> Self {
        let mut table = Self::build_all(config, api, terms);
        for route in &mut table.routes {
            let old = previous
                .routes
                .iter()
                .find(|o| o.same_as(route))
                .and_then(|o| o.offers.as_ref());
            let (Some(old), Some(r)) = (old, Arc::get_mut(route)) else {
                continue;
            };
            r.offers = r.offers.take().map(|o| o.superseding(old, now));
        }
        table
    }

    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.iter()
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The first route matching the request. `host` may carry a port; `path` must be normalized.
    pub fn find(&self, host: Option<&str>, method: &str, path: &str) -> Option<&Arc<Route>> {
        let host = host.map(strip_port);
        self.routes.iter().find(|r| {
            let c = &r.config;
            let host_ok = match (&c.host, host) {
                (None, _) => true,
                (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
                (Some(_), None) => false,
            };
            let method_ok = c
                .methods
                .as_ref()
                .is_none_or(|ms| ms.iter().any(|m| m == method));
            host_ok
                && method_ok
                && if c.case_insensitive {
                    path_matches_ignore_case(&c.path, path)
                } else {
                    path_matches(&c.path, path)
                }
        })
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [::1]:8080
        return host.split_once(']').map_or(host, |(h, _)| &h[1..]);
    }
    host.rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(h, _)| h)
}

pub fn path_matches(pattern: &PathPattern, path: &str) -> bool {
    match pattern {
        PathPattern::Exact(p) => p == path,
        PathPattern::Prefix(prefix) => {
            prefix.is_empty()
                || path == prefix
                || (path.starts_with(prefix.as_str()) && path.as_bytes()[prefix.len()] == b'/')
        }
    }
}

/// As `path_matches`, for routes whose origin treats paths case-insensitively (IIS, some
/// Windows-hosted and case-folding origins): `/PAID/x` must match a priced `/paid/*` there.
pub fn path_matches_ignore_case(pattern: &PathPattern, path: &str) -> bool {
    match pattern {
        PathPattern::Exact(p) => p.eq_ignore_ascii_case(path),
        PathPattern::Prefix(prefix) => {
            prefix.is_empty()
                || path.eq_ignore_ascii_case(prefix)
                || (path.len() > prefix.len()
                    && path.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
                    && path.as_bytes()[prefix.len()] == b'/')
        }
    }
}

/// Normalizes a request path (without query) for matching and forwarding. Borrowed when nothing
/// changes, which is the common case.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    // Most paths hold none of what the checks below look for: one pass over the bytes says so
    // (each `contains` below is a search of its own; together they were most of routing's cost).
    let mut prev = 0u8;
    let plain = raw.bytes().all(|c| {
        let special = matches!(c, b';' | b'%' | b'\\' | b'.') || (c == b'/' && prev == b'/');
        prev = c;
        !special
    });
    if plain {
        return Ok(Cow::Borrowed(raw));
    }
    if raw.contains(';') || raw.contains("%3b") || raw.contains("%3B") {
        return Err(PathError::PathParameter);
    }
    let clean = !raw.contains('%')
        && !raw.contains("//")
        && !raw.contains('\\')
        && !raw.split('/').any(|s| s == "." || s == "..");
    if clean {
        return Ok(Cow::Borrowed(raw));
    }
    if raw.contains('\\') {
        return Err(PathError::EncodedSeparator);
    }
    // Decode only unreserved characters (RFC 3986 6.2.2.2); reserved escapes stay as they are.
    let bytes = raw.as_bytes();
    let mut decoded = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
            // Two hex digits, checked here: `from_str_radix` also takes a sign (`%+1` would
            // decode to 0x01 and be forwarded as the invalid escape `%+1`).
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(PathError::BadEscape);
            }
            let v = u8::from_str_radix(hex, 16).map_err(|_| PathError::BadEscape)?;
            if matches!(v, b'/' | b'\\' | 0) {
                return Err(PathError::EncodedSeparator);
            }
            if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                decoded.push(v as char);
            } else {
                decoded.push('%');
                decoded.push_str(&hex.to_ascii_uppercase());
            }
            i += 3;
        } else {
            // Non-ASCII bytes cannot appear in a valid request target; pass them through intact.
            let ch = raw[i..].chars().next().expect("in bounds");
            decoded.push(ch);
            i += ch.len_utf8();
        }
    }
    let mut out: Vec<&str> = Vec::new();
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop().ok_or(PathError::AboveRoot)?;
            }
            s => out.push(s),
        }
    }
    let mut path = String::with_capacity(decoded.len());
    for seg in &out {
        path.push('/');
        path.push_str(seg);
    }
    if path.is_empty() || trailing {
        path.push('/');
    }
    Ok(Cow::Owned(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_and_exact_matching() {
        let p = PathPattern::Prefix("/v1/forecast".into());
        assert!(path_matches(&p, "/v1/forecast"));
        assert!(path_matches(&p, "/v1/forecast/"));
        assert!(path_matches(&p, "/v1/forecast/paris"));
        assert!(!path_matches(&p, "/v1/forecastx"));
        assert!(!path_matches(&p, "/v1"));
        assert!(path_matches(
            &PathPattern::Prefix(String::new()),
            "/anything"
        ));
        let e = PathPattern::Exact("/health".into());
        assert!(path_matches(&e, "/health"));
        assert!(!path_matches(&e, "/health/"));
    }

    /// The one-pass check in front of `normalize_path` decides exactly what its old six
    /// searches decided: a path is passed on as it is (borrowed) if and only if it has no `;`, no
    /// `%` (so no `%3b` either), no `//`, no backslash and no `.` or `..` segment. Every path of up to
    /// five characters over the characters that matter.
    #[test]
    fn the_one_pass_check_borrows_exactly_what_the_searches_did() {
        let old_clean = |raw: &str| {
            !raw.contains(';')
                && !raw.contains("%3b")
                && !raw.contains("%3B")
                && !raw.contains('%')
                && !raw.contains("//")
                && !raw.contains('\\')
                && !raw.split('/').any(|s| s == "." || s == "..")
        };
        let alphabet = ['/', 'a', '.', ';', '%', '\\', '3', 'B', '\u{e9}'];
        let mut paths = vec![String::from("/")];
        let mut checked = 0;
        for _ in 0..4 {
            let mut longer = Vec::new();
            for p in &paths {
                let borrowed = matches!(normalize_path(p), Ok(Cow::Borrowed(_)));
                assert_eq!(borrowed, old_clean(p), "{p:?}");
                checked += 1;
                for c in alphabet {
                    longer.push(format!("{p}{c}"));
                }
            }
            paths = longer;
        }
        for p in &paths {
            let borrowed = matches!(normalize_path(p), Ok(Cow::Borrowed(_)));
            assert_eq!(borrowed, old_clean(p), "{p:?}");
            checked += 1;
        }
        assert_eq!(checked, 1 + 9 + 81 + 729 + 6561);
    }

    #[test]
    fn normalizes_evasions() {
        let n = |p| normalize_path(p).map(|c| c.into_owned());
        assert_eq!(n("/v1/forecast/x").unwrap(), "/v1/forecast/x");
        assert!(matches!(normalize_path("/a/b"), Ok(Cow::Borrowed(_))));
        assert_eq!(n("/v1/%66orecast/x").unwrap(), "/v1/forecast/x");
        assert_eq!(n("//v1//forecast/x").unwrap(), "/v1/forecast/x");
        assert_eq!(n("/free/../v1/forecast/x").unwrap(), "/v1/forecast/x");
        assert_eq!(
            n("/v1/./forecast/%2e%2e/forecast/").unwrap(),
            "/v1/forecast/"
        );
        assert_eq!(n("/a%20b").unwrap(), "/a%20b");
        assert_eq!(n("/a%3fb").unwrap(), "/a%3Fb");
        assert_eq!(n("/..").unwrap_err(), PathError::AboveRoot);
        assert_eq!(
            n("/v1%2fforecast").unwrap_err(),
            PathError::EncodedSeparator
        );
        assert_eq!(
            n("/v1%5Cforecast").unwrap_err(),
            PathError::EncodedSeparator
        );
        assert_eq!(n("/a%zz").unwrap_err(), PathError::BadEscape);
        assert_eq!(n("/a%4").unwrap_err(), PathError::BadEscape);
        // A sign is not a hex digit (u8::from_str_radix would take `+1`): fuzz/corpus regression.
        assert_eq!(n("/paid%+1/x").unwrap_err(), PathError::BadEscape);
        assert_eq!(n("/a%+f").unwrap_err(), PathError::BadEscape);
        assert_eq!(n("x").unwrap_err(), PathError::NotAbsolute);
        assert_eq!(n("/paid;x/data").unwrap_err(), PathError::PathParameter);
        assert_eq!(n("/paid%3b/data").unwrap_err(), PathError::PathParameter);
        assert_eq!(n("/paid%3B/data").unwrap_err(), PathError::PathParameter);
    }

    #[test]
    fn case_insensitive_matching() {
        let p = PathPattern::Prefix("/paid".into());
        assert!(path_matches_ignore_case(&p, "/PAID/data"));
        assert!(path_matches_ignore_case(&p, "/Paid"));
        assert!(!path_matches_ignore_case(&p, "/PAIDX"));
        assert!(!path_matches(&p, "/PAID/data"));
        let e = PathPattern::Exact("/a/B".into());
        assert!(path_matches_ignore_case(&e, "/A/b"));
        assert!(!path_matches_ignore_case(&e, "/A/b/"));
    }

    #[test]
    fn strips_ports_from_hosts() {
        assert_eq!(strip_port("api.example.com:8080"), "api.example.com");
        assert_eq!(strip_port("api.example.com"), "api.example.com");
        assert_eq!(strip_port("[::1]:8080"), "::1");
    }

    /// The `Host` the origin gets is made once per route, and is the upstream's authority as
    /// `Upstream::authority` writes it: default ports left out, IPv6 hosts bracketed.
    #[test]
    fn each_route_carries_its_upstreams_host_header() {
        let upstreams = [
            ("http://127.0.0.1:9000", "127.0.0.1:9000"),
            ("https://example.org", "example.org"),
            ("http://example.org:80", "example.org"),
            ("https://example.org:8443", "example.org:8443"),
            ("http://[::1]:8080", "[::1]:8080"),
        ];
        let mut text = String::from(
            "[server]\nlisten = \"127.0.0.1:8402\"\n[[tenants]]\nid = \"acme\"\ntier = \"free\"\n",
        );
        for (i, (upstream, _)) in upstreams.iter().enumerate() {
            text.push_str(&format!(
                "[[routes]]\ntenant = \"acme\"\npath = \"/r{i}/*\"\nupstream = \"{upstream}\"\nprice = \"free\"\n"
            ));
        }
        let config = Config::from_toml(&text, &|_| None).unwrap();
        let table = RouteTable::build_all(&config, &[], &HashMap::new());
        assert_eq!(table.routes.len(), upstreams.len());
        for (route, (upstream, host)) in table.routes.iter().zip(upstreams) {
            assert_eq!(
                route.host_header.as_ref().map(|h| h.to_str().unwrap()),
                Some(host),
                "{upstream}"
            );
            assert_eq!(route.config.upstream.authority(), host, "{upstream}");
        }
    }
}
