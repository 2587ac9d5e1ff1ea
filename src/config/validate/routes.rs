//! `[[routes]]`: path patterns, upstreams, prices, methods, charged statuses, and the networks
//! each priced route is paid on.

use super::*;

pub(super) fn routes(
    raw: Vec<RawRoute>,
    networks: &BTreeMap<Network, NetworkConfig>,
    tiers: &BTreeMap<String, Tier>,
    tenants: &[TenantConfig],
    e: &mut Errors,
) -> Vec<RouteConfig> {
    let mut out = Vec::new();
    for (index, r) in raw.into_iter().enumerate() {
        let path = format!("routes[{index}]");
        let before = e.0.len();
        let tenant_id = r.tenant.unwrap_or_default();
        let tenant = tenants.iter().find(|t| t.id == tenant_id);
        if tenant.is_none() {
            e.push(
                format!("{path}.tenant"),
                format!("no tenant `{tenant_id}` is declared in [[tenants]]"),
            );
        }
        let path_pattern = match r.path.as_deref().map(parse_path_pattern) {
            Some(Ok(p)) => p,
            Some(Err(msg)) => {
                e.push(format!("{path}.path"), msg);
                PathPattern::Exact("/".into())
            }
            None => {
                e.push(format!("{path}.path"), "is required");
                PathPattern::Exact("/".into())
            }
        };
        let host = r.host.map(|h| h.to_ascii_lowercase());
        if let Some(h) = &host {
            if h.is_empty() || h.contains('/') || h.contains(' ') {
                e.push(format!("{path}.host"), format!("`{h}` is not a host name"));
            }
        }
        let methods = r.methods.map(|ms| {
            let mut ms: Vec<String> = ms
                .into_iter()
                .enumerate()
                .map(|(i, m)| {
                    let upper = m.to_ascii_uppercase();
                    if http::Method::from_bytes(upper.as_bytes()).is_err() || upper.is_empty() {
                        e.push(
                            format!("{path}.methods[{i}]"),
                            format!("`{m}` is not an HTTP method"),
                        );
                    }
                    upper
                })
                .collect();
            // HEAD is GET without the body (RFC 9110 9.3.2): a GET-only priced route must not let
            // HEAD fall through to a free catch-all that an origin answers as GET.
            if ms.iter().any(|m| m == "GET") && !ms.iter().any(|m| m == "HEAD") {
                ms.push("HEAD".into());
            }
            ms
        });
        let upstream = match r.upstream.as_deref().map(parse_upstream) {
            Some(Ok(u)) => Some(u),
            Some(Err(msg)) => {
                e.push(format!("{path}.upstream"), msg);
                None
            }
            None => {
                e.push(format!("{path}.upstream"), "is required");
                None
            }
        };
        let price = match r.price {
            None => {
                e.push(
                    format!("{path}.price"),
                    "is required (\"free\", \"$0.01\", or { amount, asset })",
                );
                Price::Free
            }
            Some(RawPrice::Text(t)) if t == "free" => Price::Free,
            Some(RawPrice::Text(t)) if t.starts_with('$') => Price::Usd(t),
            Some(RawPrice::Text(t)) => {
                e.push(
                    format!("{path}.price"),
                    format!(
                        "`{t}` is not \"free\", a USD price like \"$0.01\", or {{ amount, asset }}"
                    ),
                );
                Price::Free
            }
            Some(RawPrice::Fixed { amount, asset }) => match amount.parse::<AtomicAmount>() {
                Ok(a) => Price::Fixed { amount: a, asset },
                Err(err) => {
                    e.push(
                        format!("{path}.price.amount"),
                        format!("{err}: give atomic units as an integer string"),
                    );
                    Price::Free
                }
            },
        };
        let settle = match r.settle.as_deref() {
            None | Some("after") => SettlePolicy::After,
            Some("before") => SettlePolicy::Before,
            Some("deferred") => SettlePolicy::Deferred,
            Some(other) => {
                e.push(
                    format!("{path}.settle"),
                    format!("`{other}` is not one of before, after, deferred"),
                );
                SettlePolicy::After
            }
        };
        let max_timeout_seconds = r.max_timeout_seconds.unwrap_or(60);
        if max_timeout_seconds < MIN_TIMEOUT_SECONDS {
            e.push(
                format!("{path}.max_timeout_seconds"),
                format!("must be at least {MIN_TIMEOUT_SECONDS} (an authorization must outlive its settlement)"),
            );
        }
        let charged = match r.charge_statuses {
            None => ChargedStatuses::default(),
            Some(list) if list.is_empty() => {
                e.push(
                    format!("{path}.charge_statuses"),
                    "must list at least one status (default: [\"2xx\", \"3xx\"])",
                );
                ChargedStatuses::default()
            }
            Some(list) => ChargedStatuses(
                list.iter()
                    .enumerate()
                    .filter_map(|(i, t)| match ChargedStatuses::parse_one(t) {
                        Ok(s) => Some(s),
                        Err(msg) => {
                            e.push(format!("{path}.charge_statuses[{i}]"), msg);
                            None
                        }
                    })
                    .collect(),
            ),
        };
        let networks_listed = r.networks.as_ref().map(|l| {
            l.iter()
                .filter_map(|n| Network::from_str(n).ok())
                .collect::<Vec<_>>()
        });
        let route_networks = match (&price, tenant) {
            (Price::Free, _) | (_, None) => Vec::new(),
            (price, Some(tenant)) => {
                route_networks(&path, r.networks, price, tenant, networks, tiers, e)
            }
        };
        if let (Some(upstream), Some(_), true) = (upstream, tenant, e.0.len() == before) {
            out.push(RouteConfig {
                api_id: None,
                index,
                tenant: tenant_id,
                host,
                path: path_pattern,
                methods,
                upstream,
                price,
                networks: route_networks,
                networks_listed,
                description: r.description.unwrap_or_default(),
                mime_type: r.mime_type.unwrap_or_else(|| "application/json".into()),
                settle,
                max_timeout_seconds,
                charged,
                case_insensitive: r.case_insensitive.unwrap_or(false),
                allow_upgrade: r.allow_upgrade.unwrap_or(false),
            });
        }
    }
    out
}

/// The networks a priced route is paid on: the listed ones, each checked, or by default every
/// configured network the tenant's tier allows and the tenant has a pay_to for. Also checks that
/// the price is representable in each asset it will be charged in.
pub(super) fn route_networks(
    path: &str,
    listed: Option<Vec<String>>,
    price: &Price,
    tenant: &TenantConfig,
    networks: &BTreeMap<Network, NetworkConfig>,
    tiers: &BTreeMap<String, Tier>,
    e: &mut Errors,
) -> Vec<Network> {
    let tier = tiers.get(&tenant.tier);
    let chargeable = |n: &NetworkConfig| match price {
        Price::Fixed { asset, .. } => n.assets.iter().any(|a| &a.symbol == asset),
        _ => !n.assets.is_empty(),
    };
    let chosen: Vec<Network> = match listed {
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, id)| {
                let p = format!("{path}.networks[{i}]");
                let network = match Network::from_str(id) {
                    Ok(n) => n,
                    Err(err) => {
                        e.push(p, err.to_string());
                        return None;
                    }
                };
                let Some(config) = networks.get(&network) else {
                    e.push(
                        p,
                        format!("network `{id}` is not configured under [networks]"),
                    );
                    return None;
                };
                if !tenant.pay_to.contains_key(&network) {
                    e.push(
                        p,
                        format!("tenant `{}` has no pay_to for `{id}`", tenant.id),
                    );
                    return None;
                }
                if let Some(tier) = tier {
                    if !tier.allows(&network) {
                        e.push(
                            p,
                            format!(
                                "tier `{}` of tenant `{}` does not allow `{id}`",
                                tier.name, tenant.id
                            ),
                        );
                        return None;
                    }
                }
                if !chargeable(config) {
                    e.push(
                        p,
                        format!("network `{id}` has no asset this price can be paid in"),
                    );
                    return None;
                }
                Some(network)
            })
            .collect(),
        None => {
            let all: Vec<Network> = networks
                .values()
                .filter(|n| tenant.pay_to.contains_key(&n.network))
                .filter(|n| tier.is_some_and(|t| t.allows(&n.network)))
                .filter(|n| chargeable(n))
                .map(|n| n.network.clone())
                .collect();
            if all.is_empty() && tier.is_some() {
                e.push(
                    format!("{path}.networks"),
                    format!(
                        "no network to be paid on: none of [networks] is allowed by tier `{}`, has a pay_to of tenant `{}`, and carries the price's asset",
                        tenant.tier, tenant.id
                    ),
                );
            }
            all
        }
    };
    // The price must convert exactly in every asset it will be asked in.
    if let Price::Usd(usd) = price {
        let mut reported = BTreeSet::new();
        for network in &chosen {
            for asset in &networks[network].assets {
                match AtomicAmount::from_usd(usd, asset.decimals) {
                    Ok(AtomicAmount(0)) => {
                        if reported.insert("zero".to_string()) {
                            e.push(
                                format!("{path}.price"),
                                "a price of zero is written \"free\"",
                            );
                        }
                    }
                    Ok(_) => {}
                    Err(err) => {
                        if reported.insert(err.to_string()) {
                            e.push(
                                format!("{path}.price"),
                                format!("{err} ({} on {network})", asset.symbol),
                            );
                        }
                    }
                }
            }
        }
    }
    if let Price::Fixed { amount, .. } = price {
        if amount.0 == 0 {
            e.push(
                format!("{path}.price.amount"),
                "a price of zero is written \"free\"",
            );
        }
    }
    chosen
}

pub(super) fn parse_path_pattern(p: &str) -> Result<PathPattern, String> {
    if !p.starts_with('/') {
        return Err(format!("`{p}` must start with /"));
    }
    if let Some(prefix) = p.strip_suffix("/*") {
        if prefix.contains('*') {
            return Err(format!("`{p}`: * is only allowed as a final /*"));
        }
        return Ok(PathPattern::Prefix(prefix.to_string()));
    }
    if p.contains('*') {
        return Err(format!("`{p}`: * is only allowed as a final /*"));
    }
    if p.contains("//") || p.split('/').any(|s| s == "." || s == "..") || p.contains('%') {
        return Err(format!(
            "`{p}` is not a normalized path (no //, dot segments or %-escapes)"
        ));
    }
    Ok(PathPattern::Exact(p.to_string()))
}

pub(super) fn parse_upstream(u: &str) -> Result<Upstream, String> {
    let parsed = url::Url::parse(u).map_err(|err| format!("`{u}` is not a URL: {err}"))?;
    let tls = match parsed.scheme() {
        "http" => false,
        "https" => true,
        other => return Err(format!("`{u}`: scheme `{other}` is not http or https")),
    };
    let host = match parsed.host() {
        Some(url::Host::Domain(d)) => d.to_string(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err(format!("`{u}` has no host")),
    };
    if parsed.path() != "/" || parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!(
            "`{u}`: an upstream is scheme://host[:port] only; the request's path is forwarded as is"
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!(
            "`{u}`: credentials in the upstream URL are not supported"
        ));
    }
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| format!("`{u}` has no port"))?;
    Ok(Upstream { tls, host, port })
}
