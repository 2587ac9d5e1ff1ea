//! Raw config -> typed `Config`, collecting every error with its key path.
//!
//! Each section is checked even when an earlier one failed, so one run lists everything wrong with a
//! file. Cross-references (a route's tenant, a tenant's tier, a route network's pay_to) are checked
//! against whatever parsed, so a typo shows up once, where it was made.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

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
    let log_format = raw.log_format.map_or(LogFormat::Text, |f| {
        f.parse().unwrap_or_else(|msg| {
            e.push("server.log_format", msg);
            LogFormat::Text
        })
    });
    ServerConfig {
        log_format,
        listen,
        admin_listen,
        metrics_listen,
        public_url,
        threads: threads.max(1),
        max_payment_header_bytes,
        max_request_header_bytes,
        body_read_timeout: Duration::from_secs(body_secs.max(1)),
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

const MAX_RATE: f64 = 1_000_000.0;
const MAX_BURST: u64 = 1_000_000;
const MAX_REDIS_TIMEOUT_MS: u64 = 10_000;

fn rate_limit(raw: RawRateLimitSection, e: &mut Errors) -> RateLimitConfig {
    let mut one = |path: &str, raw: Option<RawRate>| -> Option<RateLimit> {
        let raw = raw?;
        let Some(rate) = raw.rate else {
            e.push(format!("{path}.rate"), "is required (requests per second)");
            return None;
        };
        if !(rate.is_finite() && rate > 0.0 && rate <= MAX_RATE) {
            e.push(
                format!("{path}.rate"),
                format!("must be a number of requests per second above 0 and at most {MAX_RATE}"),
            );
            return None;
        }
        let burst = raw.burst.unwrap_or_else(|| rate.ceil().max(1.0) as u64);
        if !(1..=MAX_BURST).contains(&burst) {
            e.push(
                format!("{path}.burst"),
                format!("must be between 1 and {MAX_BURST}"),
            );
            return None;
        }
        Some(RateLimit {
            rate,
            burst: burst as u32,
        })
    };
    let proxy_per_ip = one("rate_limit.proxy.per_ip", raw.proxy.per_ip);
    let proxy_per_tenant = one("rate_limit.proxy.per_tenant", raw.proxy.per_tenant);
    let admin_per_ip = one("rate_limit.admin.per_ip", raw.admin.per_ip);
    let admin_per_tenant = one("rate_limit.admin.per_tenant", raw.admin.per_tenant);
    let redis_url = raw.redis_url.map(|url| {
        let known = ["redis://", "rediss://", "redis+unix://", "unix://"];
        if !known.iter().any(|p| url.starts_with(p)) {
            e.push(
                "rate_limit.redis_url",
                "must start with redis://, rediss://, redis+unix:// or unix://",
            );
        } else if let Err(err) = redis_url_ok(&url) {
            e.push("rate_limit.redis_url", err);
        }
        Secret::new(url)
    });
    let namespace = raw.namespace.filter(|n| {
        let ok = !n.is_empty()
            && n.len() <= 64
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
        if !ok {
            e.push(
                "rate_limit.namespace",
                "must be 1 to 64 characters of letters, digits, '-', '_', '.' or ':'",
            );
        }
        ok
    });
    let timeout_ms = raw.redis_timeout_ms.unwrap_or(100);
    if !(1..=MAX_REDIS_TIMEOUT_MS).contains(&timeout_ms) {
        e.push(
            "rate_limit.redis_timeout_ms",
            format!("must be between 1 and {MAX_REDIS_TIMEOUT_MS}"),
        );
    }
    RateLimitConfig {
        proxy_per_ip,
        proxy_per_tenant,
        admin_per_ip,
        admin_per_tenant,
        redis_url,
        namespace,
        redis_timeout: Duration::from_millis(timeout_ms.clamp(1, MAX_REDIS_TIMEOUT_MS)),
    }
}

/// A Redis URL parses (its text is never echoed: it may carry a password).
fn redis_url_ok(url: &str) -> Result<(), String> {
    url::Url::parse(url)
        .map(|_| ())
        .map_err(|_| "is not a valid URL".to_string())
}

const DEFAULT_PROBE_INTERVAL: u64 = 5;
const DEFAULT_RPC_MAX_AGE: u64 = 30;
const DEFAULT_STORE_TIMEOUT: u64 = 2;

fn health(raw: RawHealth, e: &mut Errors) -> HealthConfig {
    let mut secs = |key: &str, value: Option<u64>, default: u64, max: u64| -> u64 {
        let v = value.unwrap_or(default);
        if !(1..=max).contains(&v) {
            e.push(
                format!("health.{key}"),
                format!("must be between 1 and {max}"),
            );
            return default;
        }
        v
    };
    let interval = secs(
        "probe_interval_seconds",
        raw.probe_interval_seconds,
        DEFAULT_PROBE_INTERVAL,
        3600,
    );
    let max_age = secs(
        "rpc_max_age_seconds",
        raw.rpc_max_age_seconds,
        DEFAULT_RPC_MAX_AGE,
        86400,
    );
    let store = secs(
        "store_timeout_seconds",
        raw.store_timeout_seconds,
        DEFAULT_STORE_TIMEOUT,
        60,
    );
    if max_age <= interval {
        // One probe late would make the gateway flap between ready and not.
        e.push(
            "health.rpc_max_age_seconds",
            format!("must be longer than health.probe_interval_seconds ({interval})"),
        );
    }
    HealthConfig {
        probe_interval: Duration::from_secs(interval),
        rpc_max_age: Duration::from_secs(max_age),
        store_timeout: Duration::from_secs(store),
    }
}

/// A native-coin amount written in whole coins (`"0.05"` ETH) -> the smallest unit (wei), with
/// `decimals` digits after the point at most.
pub fn parse_native_amount(text: &str, decimals: u32) -> Result<u128, String> {
    let text = text.trim();
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && frac.is_empty() || !digits(whole) || !digits(frac) {
        return Err(format!(
            "`{text}` is not an amount in whole coins like \"0.01\""
        ));
    }
    if frac.len() > decimals as usize {
        return Err(format!("`{text}` has more than {decimals} decimals"));
    }
    let scale = 10u128.pow(decimals);
    let too_big = || format!("`{text}` is too large");
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| too_big())?
    };
    let frac: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse::<u128>().map_err(|_| too_big())? * 10u128.pow(decimals - frac.len() as u32)
    };
    whole
        .checked_mul(scale)
        .and_then(|w| w.checked_add(frac))
        .ok_or_else(too_big)
}

fn networks(raw: BTreeMap<String, RawNetwork>, e: &mut Errors) -> BTreeMap<Network, NetworkConfig> {
    let mut out = BTreeMap::new();
    for (key, net) in raw {
        let path = format!("networks.{}", key_segment(&key));
        let network = match Network::from_str(&key) {
            Ok(n) => n,
            Err(err) => {
                e.push(&path, err.to_string());
                continue;
            }
        };
        let rpc_url = net.rpc_url.unwrap_or_default();
        match url::Url::parse(&rpc_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https" | "ws" | "wss") => {}
            _ => e.push(
                format!("{path}.rpc_url"),
                format!("`{rpc_url}` is not an http(s) or ws(s) URL"),
            ),
        }
        let rpc_timeout_seconds = net
            .rpc_timeout_seconds
            .unwrap_or(DEFAULT_RPC_TIMEOUT_SECONDS);
        if rpc_timeout_seconds == 0 {
            e.push(format!("{path}.rpc_timeout_seconds"), "must be at least 1");
        }
        let min_settler_balance = net.min_settler_balance.and_then(|raw| {
            let key = format!("{path}.min_settler_balance");
            let text = match raw {
                RawCoins::Text(text) => text,
                RawCoins::Number(n) => {
                    // A float cannot say 0.1 exactly; amounts of money are strings.
                    e.push(
                        key,
                        format!("write it as a string of whole coins, e.g. \"{n}\""),
                    );
                    return None;
                }
            };
            // ETH has 18 decimals, SOL 9.
            let decimals = match network.namespace() {
                Namespace::Eip155 => 18,
                Namespace::Solana => 9,
            };
            parse_native_amount(&text, decimals)
                .map_err(|m| e.push(key, m))
                .ok()
        });
        let signer = match network.namespace() {
            Namespace::Eip155 => {
                if net.fee_payer_key.is_some() {
                    e.push(
                        format!("{path}.fee_payer_key"),
                        "is for Solana networks; EVM networks use settler_key",
                    );
                }
                let mut keys: Vec<(String, String)> = Vec::new();
                if let Some(k) = net.settler_key {
                    keys.push((format!("{path}.settler_key"), k));
                }
                for (i, k) in net.settler_keys.unwrap_or_default().into_iter().enumerate() {
                    keys.push((format!("{path}.settler_keys[{i}]"), k));
                }
                if keys.is_empty() {
                    e.push(
                        format!("{path}.settler_key"),
                        "is required (or settler_keys): a 32-byte hex private key",
                    );
                }
                let mut seen = BTreeSet::new();
                for (key_path, key) in &keys {
                    if !is_evm_private_key(key) {
                        e.push(
                            key_path,
                            "must be a 32-byte hex private key (0x followed by 64 hex digits)",
                        );
                    } else if !seen.insert(key.to_ascii_lowercase()) {
                        e.push(key_path, "repeats another settler key of this network");
                    }
                }
                NetworkSigner::Evm {
                    settler_keys: keys.into_iter().map(|(_, k)| Secret::new(k)).collect(),
                    confirmations: net.confirmations.unwrap_or(1).max(1),
                }
            }
            Namespace::Solana => {
                if net.settler_key.is_some() {
                    e.push(
                        format!("{path}.settler_key"),
                        "is for EVM networks; Solana networks use fee_payer_key",
                    );
                }
                let key = net.fee_payer_key.unwrap_or_default();
                let fee_payer = match bs58::decode(&key).into_vec() {
                    Ok(bytes) if bytes.len() == 64 => bs58::encode(&bytes[32..]).into_string(),
                    _ => {
                        e.push(
                            format!("{path}.fee_payer_key"),
                            "must be a base58 64-byte keypair",
                        );
                        String::new()
                    }
                };
                NetworkSigner::Solana {
                    fee_payer_key: Secret::new(key),
                    fee_payer,
                }
            }
        };
        if net.assets.is_empty() {
            e.push(
                format!("{path}.assets"),
                "a network needs at least one asset",
            );
        }
        let mut symbols = BTreeSet::new();
        let mut assets = Vec::new();
        for (i, raw_asset) in net.assets.into_iter().enumerate() {
            let Some(a) = asset(&network, raw_asset, &format!("{path}.assets[{i}]"), e) else {
                continue;
            };
            if symbols.insert(a.symbol.clone()) {
                assets.push(a);
            } else {
                e.push(
                    format!("{path}.assets[{i}].symbol"),
                    format!("symbol `{}` is listed twice", a.symbol),
                );
            }
        }
        out.insert(
            network.clone(),
            NetworkConfig {
                network,
                rpc_url,
                rpc_timeout: Duration::from_secs(rpc_timeout_seconds.max(1)),
                min_settler_balance,
                signer,
                assets,
            },
        );
    }
    out
}

fn asset(network: &Network, raw: RawAsset, path: &str, e: &mut Errors) -> Option<AssetConfig> {
    let before = e.0.len();
    let symbol = raw.symbol.unwrap_or_default();
    if symbol.is_empty() {
        e.push(format!("{path}.symbol"), "is required");
    }
    let decimals = raw.decimals.unwrap_or_else(|| {
        e.push(format!("{path}.decimals"), "is required");
        0
    });
    if decimals > 30 {
        e.push(format!("{path}.decimals"), "must be at most 30");
    }
    let (address, eip712) = match network.namespace() {
        Namespace::Eip155 => {
            if raw.mint.is_some() {
                e.push(
                    format!("{path}.mint"),
                    "is for Solana assets; EVM assets use address",
                );
            }
            let address = match raw.address.as_deref().map(parse_evm_address) {
                Some(Ok(a)) => a,
                Some(Err(msg)) => {
                    e.push(format!("{path}.address"), msg);
                    String::new()
                }
                None => {
                    e.push(format!("{path}.address"), "is required");
                    String::new()
                }
            };
            // The EIP-712 domain must be the token's own: clients sign over it, and a wrong name
            // ("USDC" vs "USD Coin") makes every signature fail.
            let name = raw.eip712_name.unwrap_or_default();
            let version = raw.eip712_version.unwrap_or_default();
            if name.is_empty() {
                e.push(
                    format!("{path}.eip712_name"),
                    "is required (the token's EIP-712 name(), e.g. \"USD Coin\")",
                );
            }
            if version.is_empty() {
                e.push(
                    format!("{path}.eip712_version"),
                    "is required (the token's EIP-712 version(), e.g. \"2\")",
                );
            }
            (address, Some((name, version)))
        }
        Namespace::Solana => {
            if raw.address.is_some() {
                e.push(
                    format!("{path}.address"),
                    "is for EVM assets; Solana assets use mint",
                );
            }
            if raw.eip712_name.is_some() || raw.eip712_version.is_some() {
                e.push(path, "eip712_name/eip712_version apply to EVM assets only");
            }
            let mint = raw.mint.unwrap_or_default();
            if !is_solana_address(&mint) {
                e.push(
                    format!("{path}.mint"),
                    format!("`{mint}` is not a base58 Solana address"),
                );
            }
            (mint, None)
        }
    };
    (e.0.len() == before).then_some(AssetConfig {
        symbol,
        address,
        decimals,
        eip712,
    })
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

fn routes(
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
fn route_networks(
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

fn parse_path_pattern(p: &str) -> Result<PathPattern, String> {
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

fn parse_upstream(u: &str) -> Result<Upstream, String> {
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

fn is_evm_private_key(k: &str) -> bool {
    let hex = k.strip_prefix("0x").unwrap_or(k);
    hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) && hex.bytes().any(|b| b != b'0')
}

/// Parses an EVM address, refusing a mixed-case one whose EIP-55 checksum is wrong (a typo), and
/// returns it checksummed.
fn parse_evm_address(a: &str) -> Result<String, String> {
    let body = a.strip_prefix("0x").unwrap_or("");
    if body.len() != 40 || !body.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "`{a}` is not an EVM address (0x followed by 40 hex digits)"
        ));
    }
    let mixed = body.bytes().any(|b| b.is_ascii_lowercase())
        && body.bytes().any(|b| b.is_ascii_uppercase());
    let checksummed = eip55(&body.to_ascii_lowercase());
    if mixed && checksummed[2..] != *body {
        return Err(format!("`{a}` has a wrong EIP-55 checksum (a typo?)"));
    }
    Ok(checksummed)
}

/// The EIP-55 mixed-case form of a lower-case 40-digit hex address: a letter is upper-cased where
/// the matching nibble of the keccak-256 of the lower-case hex is 8 or more.
fn eip55(lower: &str) -> String {
    use sha3::{Digest, Keccak256};
    let hash = Keccak256::digest(lower.as_bytes());
    let mut out = String::with_capacity(42);
    out.push_str("0x");
    for (i, c) in lower.chars().enumerate() {
        let nibble = (hash[i / 2] >> if i % 2 == 0 { 4 } else { 0 }) & 0x0f;
        out.push(if nibble >= 8 {
            c.to_ascii_uppercase()
        } else {
            c
        });
    }
    out
}

fn is_solana_address(a: &str) -> bool {
    matches!(bs58::decode(a).into_vec(), Ok(b) if b.len() == 32)
}

/// Parses a payout address for its network's namespace (EVM hex, Solana base58).
pub fn parse_address_for(network: &Network, a: &str) -> Result<String, String> {
    match network.namespace() {
        Namespace::Eip155 => parse_evm_address(a),
        Namespace::Solana if is_solana_address(a) => Ok(a.to_string()),
        Namespace::Solana => Err(format!("`{a}` is not a base58 Solana address")),
    }
}

#[cfg(test)]
mod checksum_tests {
    use super::*;

    #[test]
    fn eip55_vectors_from_the_eip() {
        for a in [
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
            "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        ] {
            assert_eq!(eip55(&a[2..].to_ascii_lowercase()), a);
            assert_eq!(parse_evm_address(a).unwrap(), a);
            assert_eq!(parse_evm_address(&a.to_ascii_lowercase()).unwrap(), a);
        }
        assert!(parse_evm_address("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD").is_err());
    }
}
