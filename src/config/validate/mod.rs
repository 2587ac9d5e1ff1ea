//! Raw config -> typed `Config`, collecting every error with its key path.
//!
//! Each section is checked even when an earlier one failed, so one run lists everything wrong with a
//! file. Cross-references (a route's tenant, a tenant's tier, a route network's pay_to) are checked
//! against whatever parsed, so a typo shows up once, where it was made.
//!
//! This file: the entry point, `[server]`, `[database]`, `[admin]`, tiers and tenants;
//! `networks.rs`: networks, assets and address formats; `routes.rs`: routes and the networks each
//! is paid on; `limits.rs`: `[rate_limit]` and `[health]`; `edge.rs`: `[server.tls]` (the certificate files are
//! read and checked), the upgrade socket and pid file, `[sentry]`. `billing.rs`: `[billing]`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

mod api_route;
mod billing;
mod edge;
mod limits;
mod networks;
mod routes;

pub use api_route::api_route;
use limits::{health, rate_limit};
use networks::networks;
#[cfg(test)]
pub(super) use networks::parse_native_amount;
pub use networks::{
    parse_address_for, DEFAULT_BATCH_MAX, DEFAULT_REPLACE_AFTER, DEFAULT_SETTLEMENTS_IN_FLIGHT,
};
use routes::routes;

use super::env::key_segment;
use super::raw::*;
use super::*;
use crate::x402::{AtomicAmount, Namespace, Network};

const DEFAULT_LISTEN: &str = "0.0.0.0:8402";
const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8403";
const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9402";
const DEFAULT_DATABASE_URL: &str = "sqlite://x402-gate.db";
/// x402 proofs are about 1 KiB of base64 for EVM and under 2 KiB for Solana; 8 KiB leaves room
/// for smart-wallet signatures while keeping a garbage header cheap to refuse.
const DEFAULT_MAX_PAYMENT_HEADER: usize = 8 * 1024;
const DEFAULT_MAX_REQUEST_HEADERS: usize = 64 * 1024;
const DEFAULT_BODY_READ_TIMEOUT: u64 = 30;
const DEFAULT_UPSTREAM_READ_TIMEOUT: u64 = 60;
/// The management API's timeouts: a partial request must not hold a connection open for good.
const DEFAULT_ADMIN_HEADER_READ_TIMEOUT: u64 = 10;
const DEFAULT_ADMIN_IDLE_TIMEOUT: u64 = 60;
const MAX_ADMIN_TIMEOUT: u64 = 3600;
/// Generous for a client with bugs, a hard stop for one spraying garbage.
const DEFAULT_INVALID_PER_MINUTE: u32 = 60;
/// Long enough for a busy public RPC, short enough that a client waiting on a stalled node gets
/// its 503 before it gives up.
const DEFAULT_RPC_TIMEOUT_SECONDS: u64 = 10;
/// Below this, an authorization signed for `maxTimeoutSeconds` may expire before it settles.
const MIN_TIMEOUT_SECONDS: u64 = 10;

/// The built-in plans (config.md); `[tiers.NAME]` overrides them key by key.
pub fn builtin_tiers() -> BTreeMap<String, Tier> {
    let base = ["eip155:8453", "eip155:84532", "solana:*"];
    let ethereum = ["eip155:1", "eip155:11155111"];
    let pro_extra = [
        "eip155:137",
        "eip155:80002",
        "eip155:42161",
        "eip155:421614",
        "eip155:10",
        "eip155:11155420",
    ];
    let list = |parts: &[&[&str]]| -> Vec<String> {
        parts
            .iter()
            .flat_map(|p| p.iter().map(|s| s.to_string()))
            .collect()
    };
    [
        ("free", Some(1_000), list(&[&base])),
        ("starter", Some(50_000), list(&[&base, &ethereum])),
        ("pro", Some(500_000), list(&[&base, &ethereum, &pro_extra])),
        ("enterprise", None, vec!["*".to_string()]),
    ]
    .into_iter()
    .map(|(name, limit, networks)| {
        (
            name.to_string(),
            Tier {
                name: name.to_string(),
                monthly_verifications: limit,
                networks,
            },
        )
    })
    .collect()
}

struct Errors(Vec<ConfigError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError::new(path, message));
    }
}

pub fn validate(raw: RawConfig, errors: Vec<ConfigError>) -> (Option<Config>, Vec<ConfigError>) {
    let mut e = Errors(errors);
    let server = server(raw.server, &mut e);
    let database = DatabaseConfig {
        url: database_url(raw.database.url, &mut e),
    };
    let admin = AdminConfig {
        token: admin_token(raw.admin.token, &mut e),
        header_read_timeout: admin_timeout(
            "admin.header_read_timeout_seconds",
            raw.admin.header_read_timeout_seconds,
            DEFAULT_ADMIN_HEADER_READ_TIMEOUT,
            &mut e,
        ),
        idle_timeout: admin_timeout(
            "admin.idle_timeout_seconds",
            raw.admin.idle_timeout_seconds,
            DEFAULT_ADMIN_IDLE_TIMEOUT,
            &mut e,
        ),
    };
    let health = health(raw.health, &mut e);
    let networks = networks(raw.networks, &mut e);
    let tiers = tiers(raw.tiers, &mut e);
    let tenants = tenants(raw.tenants, &tiers, &mut e);
    let routes = routes(raw.routes, &networks, &tiers, &tenants, &mut e);
    let rate_limit = rate_limit(raw.rate_limit, &mut e);
    let routes_api = RoutesApiConfig {
        max_routes_per_tenant: raw.routes_api.max_routes_per_tenant.unwrap_or(50),
        upstream_allow: raw
            .routes_api
            .upstream_allow
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .filter_map(|(i, h)| {
                let h = h.trim().to_ascii_lowercase();
                if h.is_empty() || h.contains('/') || h.contains(' ') {
                    e.push(
                        format!("routes_api.upstream_allow[{i}]"),
                        "must be a host name or an IP address, without scheme or port",
                    );
                    None
                } else {
                    Some(h)
                }
            })
            .collect(),
    };
    let sentry = edge::sentry(raw.sentry, &mut e);
    let billing = billing::billing(raw.billing, &networks, &tiers, &mut e);
    let config = Config {
        server,
        database,
        admin,
        health,
        networks,
        tiers,
        tenants,
        routes,
        rate_limit,
        routes_api,
        sentry,
        billing,
    };
    let ok = e.0.is_empty();
    (ok.then_some(config), e.0)
}

fn server(raw: RawServer, e: &mut Errors) -> ServerConfig {
    let mut addr = |key: &str, value: Option<String>, default: &str| -> SocketAddr {
        let text = value.unwrap_or_else(|| default.to_string());
        text.parse().unwrap_or_else(|_| {
            e.push(
                format!("server.{key}"),
                format!("`{text}` is not an address like 127.0.0.1:8402"),
            );
            default.parse().expect("default address parses")
        })
    };
    let listen = addr("listen", raw.listen, DEFAULT_LISTEN);
    let admin_listen = addr("admin_listen", raw.admin_listen, DEFAULT_ADMIN_LISTEN);
    let metrics_listen = addr("metrics_listen", raw.metrics_listen, DEFAULT_METRICS_LISTEN);
    // Port 0 asks the OS for a free port, so two port-0 listeners never collide.
    let named = [
        ("server.listen", listen),
        ("server.admin_listen", admin_listen),
        ("server.metrics_listen", metrics_listen),
    ];
    for (i, (key, a)) in named.iter().enumerate() {
        if a.port() == 0 {
            continue;
        }
        if let Some((other, _)) = named[..i].iter().find(|(_, b)| b == a) {
            e.push(*key, format!("{a} is already used by {other}"));
        }
    }

    let public_url = raw.public_url.and_then(|u| match url::Url::parse(&u) {
        Ok(parsed)
            if matches!(parsed.scheme(), "http" | "https")
                && parsed.host().is_some()
                && parsed.query().is_none() =>
        {
            Some(u.trim_end_matches('/').to_string())
        }
        _ => {
            e.push(
                "server.public_url",
                format!("`{u}` is not an absolute http(s) URL without a query"),
            );
            None
        }
    });
    let threads = raw.threads.unwrap_or(2);
    if threads == 0 {
        e.push("server.threads", "must be at least 1");
    }
    let max_payment_header_bytes = raw
        .max_payment_header_bytes
        .unwrap_or(DEFAULT_MAX_PAYMENT_HEADER);
    if !(512..=64 * 1024).contains(&max_payment_header_bytes) {
        e.push(
            "server.max_payment_header_bytes",
            "must be between 512 and 65536",
        );
    }
    let max_request_header_bytes = raw
        .max_request_header_bytes
        .unwrap_or(DEFAULT_MAX_REQUEST_HEADERS);
    // pingora itself refuses header blocks over 1 MiB with a 400; ours must sit below that.
    if !(4096..=1024 * 1024).contains(&max_request_header_bytes) {
        e.push(
            "server.max_request_header_bytes",
            "must be between 4096 and 1048576",
        );
    } else if max_request_header_bytes < max_payment_header_bytes {
        e.push(
            "server.max_request_header_bytes",
            "must not be smaller than server.max_payment_header_bytes",
        );
    }
    let body_secs = raw
        .body_read_timeout_seconds
        .unwrap_or(DEFAULT_BODY_READ_TIMEOUT);
    if body_secs == 0 {
        e.push("server.body_read_timeout_seconds", "must be at least 1");
    }
    let upstream_secs = raw
        .upstream_read_timeout_seconds
        .unwrap_or(DEFAULT_UPSTREAM_READ_TIMEOUT);
    if !(1..=3600).contains(&upstream_secs) {
        e.push("server.upstream_read_timeout_seconds", "must be 1..3600");
    }
    let log_format = raw.log_format.map_or(LogFormat::Text, |f| {
        f.parse().unwrap_or_else(|msg| {
            e.push("server.log_format", msg);
            LogFormat::Text
        })
    });
    let tls = edge::tls(raw.tls, &named, e);
    let upgrade_sock = edge::upgrade_sock(raw.upgrade_sock, e);
    let pid_file = edge::pid_file(raw.pid_file, e);
    ServerConfig {
        tls,
        upgrade_sock,
        pid_file,
        log_format,
        listen,
        admin_listen,
        metrics_listen,
        public_url,
        threads: threads.max(1),
        max_payment_header_bytes,
        max_request_header_bytes,
        body_read_timeout: Duration::from_secs(body_secs.max(1)),
        upstream_read_timeout: Duration::from_secs(upstream_secs.clamp(1, 3600)),
        cors_allow_origin: raw.cors_allow_origin.unwrap_or_else(|| "*".to_string()),
        invalid_payments_per_minute: match raw.invalid_payments_per_minute {
            Some(0) => {
                e.push("server.invalid_payments_per_minute", "must be at least 1");
                1
            }
            Some(n) => n,
            None => DEFAULT_INVALID_PER_MINUTE,
        },
    }
}

fn database_url(url: Option<String>, e: &mut Errors) -> String {
    let url = url.unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string());
    let known = ["sqlite:", "postgres://", "postgresql://"];
    if !known.iter().any(|p| url.starts_with(p)) {
        e.push(
            "database.url",
            "must start with sqlite:, postgres:// or postgresql://",
        );
    }
    url
}

fn admin_timeout(key: &str, seconds: Option<u64>, default: u64, e: &mut Errors) -> Duration {
    let seconds = seconds.unwrap_or(default);
    if !(1..=MAX_ADMIN_TIMEOUT).contains(&seconds) {
        e.push(key, format!("must be between 1 and {MAX_ADMIN_TIMEOUT}"));
        return Duration::from_secs(default);
    }
    Duration::from_secs(seconds)
}

fn admin_token(token: Option<String>, e: &mut Errors) -> Option<Secret> {
    let token = token?;
    if token.len() < 16 {
        e.push(
            "admin.token",
            "is shorter than 16 characters; use a long random value",
        );
    }
    Some(Secret::new(token))
}

fn tiers(raw: BTreeMap<String, RawTier>, e: &mut Errors) -> BTreeMap<String, Tier> {
    let mut tiers = builtin_tiers();
    for (name, t) in raw {
        let path = format!("tiers.{}", key_segment(&name));
        let existing = tiers.get(&name).cloned();
        let limit = match (t.monthly_verifications, &existing) {
            (Some(RawLimit::Count(n)), _) => Some(n),
            (Some(RawLimit::Word(w)), _) if w == "unlimited" => None,
            (Some(RawLimit::Word(w)), _) => {
                e.push(
                    format!("{path}.monthly_verifications"),
                    format!("`{w}` is neither a number nor \"unlimited\""),
                );
                None
            }
            (None, Some(t)) => t.monthly_verifications,
            (None, None) => {
                e.push(
                    format!("{path}.monthly_verifications"),
                    "is required for a tier that is not built in",
                );
                None
            }
        };
        let networks = match (t.networks, &existing) {
            (Some(list), _) => {
                for (i, p) in list.iter().enumerate() {
                    let pattern_ok = p == "*"
                        || p.strip_suffix(":*")
                            .is_some_and(|ns| ns == "eip155" || ns == "solana")
                        || Network::from_str(p).is_ok();
                    if !pattern_ok {
                        e.push(
                            format!("{path}.networks[{i}]"),
                            format!("`{p}` is not a CAIP-2 id or pattern like `solana:*`"),
                        );
                    }
                }
                list
            }
            (None, Some(t)) => t.networks.clone(),
            (None, None) => {
                e.push(
                    format!("{path}.networks"),
                    "is required for a tier that is not built in",
                );
                Vec::new()
            }
        };
        tiers.insert(
            name.clone(),
            Tier {
                name,
                monthly_verifications: limit,
                networks,
            },
        );
    }
    tiers
}

fn tenants(
    raw: Vec<RawTenant>,
    tiers: &BTreeMap<String, Tier>,
    e: &mut Errors,
) -> Vec<TenantConfig> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, t) in raw.into_iter().enumerate() {
        let path = format!("tenants[{i}]");
        let id = t.id.unwrap_or_default();
        if id.is_empty()
            || id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            e.push(
                format!("{path}.id"),
                "must be 1-64 characters of a-z, 0-9, - and _",
            );
        } else if !seen.insert(id.clone()) {
            e.push(format!("{path}.id"), format!("`{id}` is declared twice"));
        }
        let tier = t.tier.unwrap_or_else(|| "free".to_string());
        if !tiers.contains_key(&tier) {
            let known: Vec<_> = tiers.keys().map(String::as_str).collect();
            e.push(
                format!("{path}.tier"),
                format!("unknown tier `{tier}` (known: {})", known.join(", ")),
            );
        }
        if let Some(email) = &t.email {
            if !email.contains('@') {
                e.push(
                    format!("{path}.email"),
                    format!("`{email}` is not an email address"),
                );
            }
        }
        let mut pay_to = BTreeMap::new();
        for (net, addr) in t.pay_to {
            let p = format!("{path}.pay_to.{}", key_segment(&net));
            match Network::from_str(&net) {
                Err(err) => e.push(p, err.to_string()),
                Ok(network) => match parse_address_for(&network, &addr) {
                    Ok(addr) => {
                        pay_to.insert(network, addr);
                    }
                    Err(msg) => e.push(p, msg),
                },
            }
        }
        out.push(TenantConfig {
            name: t.name.unwrap_or_else(|| id.clone()),
            id,
            email: t.email,
            tier,
            pay_to,
        });
    }
    out
}
