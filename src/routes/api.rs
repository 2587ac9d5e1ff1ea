//! Routes written through the management API: which of the stored ones are served, and where a
//! tenant may put one.
//!
//! A stored route is validated by the config's own route code every time the table is built
//! (`config::api_route`), against the running config and the tenant as the store has it; one
//! that no longer validates (a network removed, a tier changed) or that lies outside its
//! tenant's namespace is skipped with a warning, never served half-checked. Pure: the store
//! reads are the reloader's.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Mutex;

use crate::config::{api_route, Config, ConfigError, PathPattern, RouteConfig, TenantConfig};
use crate::store::{ApiRouteRecord, Namespace, TenantRecord};
use crate::x402::Network;

/// The tenant as the route validation needs it, from the store's record.
pub fn tenant_config(record: &TenantRecord) -> TenantConfig {
    TenantConfig {
        id: record.id.clone(),
        name: record.name.clone(),
        email: record.email.clone(),
        tier: record.tier.clone(),
        pay_to: record
            .pay_to
            .iter()
            .filter_map(|(n, a)| Network::from_str(n).ok().map(|n| (n, a.clone())))
            .collect(),
    }
}

fn path_under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    path == prefix || path.starts_with(&format!("{prefix}/"))
}

/// Whether `route` lies inside `ns`: on one of its hosts, or under its path prefix (on any host,
/// or on one of its hosts). Nothing is inside an empty namespace.
pub fn in_namespace(route: &RouteConfig, ns: &Namespace) -> Result<(), String> {
    let on_own_host = route.host.as_ref().is_some_and(|h| ns.hosts.contains(h));
    if on_own_host {
        return Ok(());
    }
    if let Some(prefix) = &ns.path_prefix {
        let path = match &route.path {
            PathPattern::Exact(p) | PathPattern::Prefix(p) => p,
        };
        if route.host.is_none() && path_under(path, prefix) {
            return Ok(());
        }
    }
    Err(match (&ns.hosts[..], &ns.path_prefix) {
        ([], None) => {
            "no namespace is assigned to this tenant: ask the operator for a host or a path prefix"
                .into()
        }
        (hosts, prefix) => format!(
            "a route must be on one of the hosts [{}]{}",
            hosts.join(", "),
            prefix
                .as_ref()
                .map(|p| format!(" or, without host, under the path {p}"))
                .unwrap_or_default()
        ),
    })
}

/// Whether two namespaces overlap (the operator may not give two tenants the same ground).
pub fn overlaps(a: &Namespace, b: &Namespace) -> bool {
    a.hosts.iter().any(|h| b.hosts.contains(h))
        || matches!((&a.path_prefix, &b.path_prefix), (Some(x), Some(y)) if path_under(x, y) || path_under(y, x))
}

/// One stored route, validated and checked against its tenant's namespace, at table position
/// `index`.
pub fn compile_one(
    record: &ApiRouteRecord,
    config: &Config,
    tenant: &TenantRecord,
    ns: &Namespace,
    index: usize,
) -> Result<RouteConfig, Vec<ConfigError>> {
    let route = api_route(
        &record.id,
        &record.spec,
        config,
        &tenant_config(tenant),
        index,
    )?;
    in_namespace(&route, ns).map_err(|m| vec![ConfigError::new("host", m)])?;
    Ok(route)
}

/// The stored routes that are served, in table order after the file's.
pub fn compile(
    config: &Config,
    records: &[ApiRouteRecord],
    tenants: &[TenantRecord],
    namespaces: &HashMap<String, Namespace>,
) -> Vec<RouteConfig> {
    let empty = Namespace::default();
    let mut out = Vec::new();
    for record in records {
        let Some(tenant) = tenants.iter().find(|t| t.id == record.tenant) else {
            tracing::warn!(route = %record.id, tenant = %record.tenant, "API route of an unknown tenant skipped");
            continue;
        };
        let ns = namespaces.get(&record.tenant).unwrap_or(&empty);
        match compile_one(record, config, tenant, ns, config.routes.len() + out.len()) {
            Ok(route) => out.push(route),
            Err(errors) => {
                let why: Vec<String> = errors
                    .iter()
                    .map(|e| format!("{}: {}", e.path, e.message))
                    .collect();
                tracing::warn!(route = %record.id, tenant = %record.tenant, "API route no longer valid, not served: {}", why.join("; "));
            }
        }
    }
    // A route on a host matches before a host-less one: a tenant's path prefix, valid on every
    // host, never takes a request from a host another tenant owns and routes.
    out.sort_by_key(|r| r.host.is_none());
    for (i, r) in out.iter_mut().enumerate() {
        r.index = config.routes.len() + i;
    }
    out
}

/// What the reloader last read of the API routes, so a config reload rebuilds with them
/// without a store round trip.
#[derive(Debug, Default)]
pub struct ApiRoutes {
    pub last: Mutex<Snapshot>,
}

#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// The store's `route_changes` version these were read at (`None`: never read).
    pub version: Option<i64>,
    pub records: Vec<ApiRouteRecord>,
    pub namespaces: HashMap<String, Namespace>,
    pub tenants: Vec<TenantRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: Option<&str>, path: PathPattern) -> RouteConfig {
        let cfg = Config::from_toml(
            r#"
[[tenants]]
id = "acme"
[[routes]]
tenant = "acme"
path = "/x"
upstream = "http://127.0.0.1:1"
price = "free"
"#,
            &|_| None,
        )
        .unwrap();
        let mut r = cfg.routes[0].clone();
        r.host = host.map(String::from);
        r.path = path;
        r
    }

    #[test]
    fn a_route_must_lie_inside_its_tenants_namespace() {
        let ns = Namespace {
            hosts: vec!["acme.example".into()],
            path_prefix: Some("/acme".into()),
        };
        let inside = [
            route(Some("acme.example"), PathPattern::Prefix("".into())),
            route(None, PathPattern::Prefix("/acme".into())),
            route(None, PathPattern::Exact("/acme/v1/data".into())),
        ];
        for r in &inside {
            assert!(in_namespace(r, &ns).is_ok(), "{:?} {:?}", r.host, r.path);
        }
        let outside = [
            route(Some("other.example"), PathPattern::Prefix("/acme".into())),
            route(None, PathPattern::Prefix("/acmex".into())),
            route(None, PathPattern::Prefix("".into())),
            route(None, PathPattern::Exact("/other".into())),
        ];
        for r in &outside {
            assert!(in_namespace(r, &ns).is_err(), "{:?} {:?}", r.host, r.path);
        }
        assert!(in_namespace(&inside[1], &Namespace::default()).is_err());
    }

    #[test]
    fn namespaces_overlap_on_a_shared_host_or_nested_prefixes() {
        let ns = |hosts: &[&str], prefix: Option<&str>| Namespace {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            path_prefix: prefix.map(String::from),
        };
        assert!(overlaps(&ns(&["a.x"], None), &ns(&["a.x", "b.x"], None)));
        assert!(overlaps(&ns(&[], Some("/a")), &ns(&[], Some("/a/b"))));
        assert!(!overlaps(&ns(&[], Some("/a")), &ns(&[], Some("/ab"))));
        assert!(!overlaps(
            &ns(&["a.x"], Some("/a")),
            &ns(&["b.x"], Some("/b"))
        ));
    }
}
