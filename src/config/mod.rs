//! Configuration: the TOML surface (raw.rs), `${VAR}` expansion (env.rs), and validation into the
//! typed `Config` (validate/) that the rest of the gateway uses.
//!
//! Loading never stops at the first mistake: every error is collected with its key path
//! (`routes[2].price: ...`), so an operator fixes a file in one pass. May import: x402.

mod env;
mod raw;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::x402::{AtomicAmount, Network};

pub use env::expand_str;
pub use validate::{
    api_route, parse_address_for, DEFAULT_BATCH_MAX, DEFAULT_REPLACE_AFTER,
    DEFAULT_SETTLEMENTS_IN_FLIGHT,
};

/// One configuration error, with the key path it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every error found in a config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// A value read from the environment that must never be printed (keys, tokens).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub admin: AdminConfig,
    pub health: HealthConfig,
    pub networks: BTreeMap<Network, NetworkConfig>,
    pub tiers: BTreeMap<String, Tier>,
    pub tenants: Vec<TenantConfig>,
    pub routes: Vec<RouteConfig>,
    pub rate_limit: RateLimitConfig,
    pub routes_api: RoutesApiConfig,
    pub sentry: SentryConfig,
    pub billing: BillingConfig,
}

/// `[routes_api]`: routes tenants write through the management API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutesApiConfig {
    /// How many routes one tenant may write (0: tenants write none; the operator still can).
    pub max_routes_per_tenant: u64,
    /// Upstream hosts or addresses a tenant's route may reach although they are internal
    /// (loopback, private, link-local); matched as written, case-insensitively.
    pub upstream_allow: Vec<String>,
}

/// `[sentry]`: where panics and error-level events are reported. Without a DSN (here or in
/// `SENTRY_DSN`) nothing is sent anywhere.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SentryConfig {
    /// A secret: the DSN's key lets anyone post events to the project.
    pub dsn: Option<Secret>,
    pub environment: Option<String>,
    /// The share of error events sent, 0.0 to 1.0.
    pub sample_rate: f32,
}

/// `[server.tls]`: the public listener terminates TLS with this certificate.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    pub files: crate::tls::CertFiles,
    /// A second, TLS listener beside the plain `server.listen`; `None`: `server.listen` itself
    /// speaks TLS.
    pub listen: Option<SocketAddr>,
    /// Offer HTTP/2 (ALPN `h2`) as well as HTTP/1.1.
    pub http2: bool,
}

/// `[billing]`: plan billing. Both parts are optional; without them tiers change only through
/// the operator's management API.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BillingConfig {
    pub stripe: Option<StripeConfig>,
    pub x402: Option<X402PlansConfig>,
}

/// `[billing.stripe]`: subscriptions paid by card through Stripe Checkout, applied by webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct StripeConfig {
    /// Every secret a `Stripe-Signature` may be signed with: during a rotation Stripe signs with
    /// the old and the new one, and either must be accepted.
    pub webhook_secrets: Vec<Secret>,
    /// The secret API key Checkout sessions are created with (`None`: no Checkout endpoint).
    pub api_key: Option<Secret>,
    /// `https://api.stripe.com` unless a test points it at a local server. No trailing slash.
    pub api_base: String,
    /// How far a signature's timestamp may be from now (Stripe's libraries default to 300 s).
    pub tolerance: Duration,
    pub success_url: Option<String>,
    pub cancel_url: Option<String>,
    /// Stripe price id -> tier name.
    pub prices: BTreeMap<String, String>,
    /// tier -> the price id Checkout sells for it.
    pub checkout_prices: BTreeMap<String, String>,
}

/// `[billing.x402]`: plans paid with x402 to the operator, a period at a time.
#[derive(Debug, Clone, PartialEq)]
pub struct X402PlansConfig {
    pub network: Network,
    /// The operator's address on `network`.
    pub pay_to: String,
    /// How long one payment keeps the plan (recorded as `paid_until`).
    pub period: Duration,
    pub max_timeout_seconds: u64,
    /// tier -> its price per period, a USD amount ("$299").
    pub prices: BTreeMap<String, String>,
}

/// `[rate_limit]`: request rates per client IP and per tenant, on the proxy and on the
/// management API. Every limit is optional (absent: no limit).
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitConfig {
    pub proxy_per_ip: Option<RateLimit>,
    pub proxy_per_tenant: Option<RateLimit>,
    pub admin_per_ip: Option<RateLimit>,
    pub admin_per_tenant: Option<RateLimit>,
    /// Limits shared by every instance through this Redis; without it each instance counts alone.
    pub redis_url: Option<Secret>,
    /// Extra key namespace: keys are `x402:rl:<namespace>:<scope>:<key>` (or without it).
    pub namespace: Option<String>,
    /// How long one Redis call may take before the local limiter decides instead.
    pub redis_timeout: Duration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            proxy_per_ip: None,
            proxy_per_tenant: None,
            admin_per_ip: None,
            admin_per_tenant: None,
            redis_url: None,
            namespace: None,
            redis_timeout: Duration::from_millis(100),
        }
    }
}

impl RateLimitConfig {
    pub fn any(&self) -> bool {
        self.proxy_per_ip.is_some()
            || self.proxy_per_tenant.is_some()
            || self.admin_per_ip.is_some()
            || self.admin_per_tenant.is_some()
    }
}

/// A rate in requests per second with bursts of up to `burst` requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub rate: f64,
    pub burst: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    /// Base of `resource.url` in challenges, without a trailing slash. When unset, the request's
    /// `Host` is used.
    pub public_url: Option<String>,
    pub threads: usize,
    /// Largest accepted `PAYMENT-SIGNATURE` / `X-PAYMENT` value; larger ones get a 402.
    pub max_payment_header_bytes: usize,
    /// Largest accepted request header block (all names and values); larger ones get a 431.
    pub max_request_header_bytes: usize,
    /// How long the gateway waits for each read of a request body before answering 408.
    pub body_read_timeout: Duration,
    /// How long each read of the origin's answer may wait; past it the answer is a 504 and
    /// nothing is charged (the origin timed out).
    pub upstream_read_timeout: Duration,
    pub cors_allow_origin: String,
    /// Invalid payments one client IP may present per minute before it gets 429s.
    pub invalid_payments_per_minute: u32,
    /// How log lines are written: human-readable text (the default) or one JSON object a line.
    pub log_format: LogFormat,
    /// TLS (and HTTP/2) on the public listener.
    pub tls: Option<TlsConfig>,
    /// Where a process started with `--upgrade` receives the listening sockets of the running one.
    pub upgrade_sock: std::path::PathBuf,
    /// Where the process id is written in daemon mode (`--daemon`).
    pub pid_file: std::path::PathBuf,
}

/// `server.log_format`; the `--log-format` flag overrides it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("`{other}` is not one of text, json")),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseConfig {
    pub url: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub token: Option<Secret>,
    /// How long the management listener waits for a request's complete head (from the first
    /// byte, or from the end of the previous response on a kept-alive connection).
    pub header_read_timeout: Duration,
    /// How long a management connection may go without a byte in either direction (a body that
    /// stops half-way, a client that stops reading) before it is closed.
    pub idle_timeout: Duration,
}

/// How readiness (`/ready` on the management API) is judged.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// How often each network's RPC is probed (block number, settler balances).
    pub probe_interval: Duration,
    /// A network whose RPC has not answered a probe for longer than this makes `/ready` false.
    pub rpc_max_age: Duration,
    /// How long `/ready` waits for the store to answer its cheap query.
    pub store_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfig {
    pub network: Network,
    pub rpc_url: String,
    /// Bounds every call to `rpc_url`; one that takes longer is an outage (a 503).
    pub rpc_timeout: Duration,
    /// The gas balance below which a settler is reported (`/ready`, metrics), in the chain's
    /// smallest native unit (wei on EVM, lamports on Solana). Configured in whole-coin units.
    pub min_settler_balance: Option<u128>,
    pub signer: NetworkSigner,
    pub assets: Vec<AssetConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NetworkSigner {
    /// Hex private keys of the hot wallets that submit EVM settlements and pay their gas
    /// (`settler_key`, then `settler_keys`). Each is one nonce lane; instances sharing a database
    /// lease them so no two ever sign with one key at once.
    Evm {
        settler_keys: Vec<Secret>,
        confirmations: u64,
        /// Most payments settled by one transaction (`batch_max`, default 64): concurrent
        /// payments are settled together through Multicall3 where the network has it. 1: every
        /// payment is its own transaction.
        batch_max: usize,
        /// Settlement transactions of this network under way at once
        /// (`settlements_in_flight`, default 4); payments that find none free wait and go out
        /// together in the next one.
        settlements_in_flight: usize,
        /// How long a sent settlement may go unmined before it is replaced by the same calls at
        /// higher fees (`replace_after_seconds`, default 15; 0: never, `None`).
        replace_after: Option<Duration>,
    },
    /// Base58 keypair that co-signs Solana payments as fee payer.
    Solana {
        fee_payer_key: Secret,
        fee_payer: String,
        /// How final a settlement must be before it counts (and the origin runs, under `before`).
        commitment: SolanaCommitment,
    },
}

/// The Solana commitment a settlement is confirmed to (`commitment = "confirmed"` by default).
/// `processed` is not offered: a processed block can still be dropped, and a payment that
/// vanishes after its request was served is money lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SolanaCommitment {
    #[default]
    Confirmed,
    Finalized,
}

impl SolanaCommitment {
    pub fn as_str(self) -> &'static str {
        match self {
            SolanaCommitment::Confirmed => "confirmed",
            SolanaCommitment::Finalized => "finalized",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AssetConfig {
    pub symbol: String,
    /// EVM: the EIP-55 checksummed token address. Solana: the mint, base58.
    pub address: String,
    pub decimals: u8,
    /// EVM only: the token's EIP-712 domain name and version, as `name()`/`version()` report them.
    pub eip712: Option<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    pub name: String,
    /// `None` is unlimited.
    pub monthly_verifications: Option<u64>,
    /// CAIP-2 ids or patterns (`solana:*`, `*`).
    pub networks: Vec<String>,
}

impl Tier {
    pub fn allows(&self, network: &Network) -> bool {
        self.networks.iter().any(|p| network.matches_pattern(p))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TenantConfig {
    pub id: String,
    pub name: String,
    pub email: Option<String>,
    pub tier: String,
    pub pay_to: BTreeMap<Network, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    Exact(String),
    /// `/v1/forecast/*`: matches `/v1/forecast` and everything below it. Stored without `/*`.
    Prefix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl Upstream {
    /// `host:port` as it goes in the `Host` header and the connection address.
    pub fn authority(&self) -> String {
        let default_port = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default_port {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettlePolicy {
    Before,
    After,
    Deferred,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Price {
    Free,
    /// A USD amount, charged in every USD stablecoin the route's networks carry.
    Usd(String),
    /// A fixed amount in atomic units of one asset, by symbol.
    Fixed {
        amount: AtomicAmount,
        asset: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// Position in the file, for messages and metrics labels.
    pub index: usize,
    /// The route's id when it was written through the management API (its upstream is then
    /// checked against `[routes_api]` at every connection); `None` for the file's routes.
    pub api_id: Option<String>,
    pub tenant: String,
    /// Lower-case, without port.
    pub host: Option<String>,
    pub path: PathPattern,
    /// Upper-case method names; `None` means every method.
    pub methods: Option<Vec<String>>,
    pub upstream: Upstream,
    pub price: Price,
    /// The networks the route can be paid on, resolved against the tenant's tier and pay_to as
    /// the file declares them.
    pub networks: Vec<Network>,
    /// The `networks` key as written (`None`: every network the tenant's tier allows), so the
    /// offers can be re-resolved when a tenant's tier or pay_to changes at run time.
    pub networks_listed: Option<Vec<Network>>,
    pub description: String,
    pub mime_type: String,
    pub settle: SettlePolicy,
    pub max_timeout_seconds: u64,
    /// Which final origin statuses are charged (default 2xx and 3xx).
    pub charged: ChargedStatuses,
    /// Match the path case-insensitively, for origins that serve `/PAID/x` as `/paid/x`.
    pub case_insensitive: bool,
    /// Whether an `Upgrade` (WebSocket) request may pass; its 101 is then the charged answer.
    pub allow_upgrade: bool,
}

/// One entry of `charge_statuses`: a whole class (`"2xx"`) or one code (`"404"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusSpec {
    Class(u16),
    Code(u16),
}

/// The final origin statuses a priced route charges for. Anything else is passed through
/// uncharged and its claim released, so the same proof may pay for a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargedStatuses(pub Vec<StatusSpec>);

impl Default for ChargedStatuses {
    /// 2xx and 3xx: a redirect to the content is as good as the content.
    fn default() -> Self {
        ChargedStatuses(vec![StatusSpec::Class(2), StatusSpec::Class(3)])
    }
}

impl ChargedStatuses {
    /// Whether a final status is charged. Informational statuses never are: they are not final.
    pub fn charges(&self, status: u16) -> bool {
        self.0.iter().any(|s| match *s {
            StatusSpec::Class(c) => status / 100 == c,
            StatusSpec::Code(c) => status == c,
        })
    }

    /// Parses `"2xx"` or `"404"`; informational statuses are refused (they are never final).
    pub fn parse_one(text: &str) -> Result<StatusSpec, String> {
        let t = text.trim().to_ascii_lowercase();
        if let Some(class) = t.strip_suffix("xx") {
            return match class.parse::<u16>() {
                Ok(c @ 2..=5) => Ok(StatusSpec::Class(c)),
                _ => Err(format!("`{text}` is not one of 2xx, 3xx, 4xx, 5xx")),
            };
        }
        match t.parse::<u16>() {
            Ok(c @ 200..=599) => Ok(StatusSpec::Code(c)),
            _ => Err(format!(
                "`{text}` is not a final status code (200-599) or a class like \"2xx\""
            )),
        }
    }
}

impl Config {
    /// Reads, expands and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError::new(
                "",
                format!("cannot read {}: {e}", path.display()),
            )])
        })?;
        Self::from_toml(&text, &|name| std::env::var(name).ok())
    }

    /// Parses and validates config text; `env` resolves `${VAR}` references.
    pub fn from_toml(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();
        let mut tree: toml::Value = match toml::from_str::<toml::Table>(text) {
            Ok(t) => toml::Value::Table(t),
            Err(e) => {
                return Err(ConfigErrors(vec![ConfigError::new(
                    "",
                    format!("not valid TOML: {e}"),
                )]))
            }
        };
        env::expand_tree(&mut tree, &mut Vec::new(), env, &mut errors);

        let mut unknown = Vec::new();
        let mut on_unknown = |path: serde_ignored::Path| unknown.push(render_path(&path));
        let de = serde_ignored::Deserializer::new(tree, &mut on_unknown);
        let raw: Result<raw::RawConfig, _> = serde_path_to_error::deserialize(de);
        for path in unknown {
            errors.push(ConfigError::new(path, "unknown key"));
        }
        let raw = match raw {
            Ok(raw) => raw,
            Err(e) => {
                let path = e.path().to_string();
                errors.push(ConfigError::new(
                    if path == "." { String::new() } else { path },
                    e.into_inner().to_string(),
                ));
                return Err(ConfigErrors(errors));
            }
        };
        match validate::validate(raw, errors) {
            (Some(config), errors) if errors.is_empty() => Ok(config),
            (_, errors) => Err(ConfigErrors(errors)),
        }
    }
}

fn render_path(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", render_path(parent)),
        P::Map { parent, key } => {
            let parent = render_path(parent);
            let key = env::key_segment(key);
            if parent.is_empty() {
                key
            } else {
                format!("{parent}.{key}")
            }
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            render_path(parent)
        }
    }
}

#[cfg(test)]
mod tests;
