//! The serde mirror of the TOML file: exactly the user-facing surface of config.md, loosely typed.
//! Nothing here is trusted; `validate/` turns it into the typed `Config` or a list of errors.
//!
//! Unknown keys are not refused by serde (which would stop at the first); `mod.rs` collects all of
//! them with `serde_ignored` and reports each with its path.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub database: RawDatabase,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub health: RawHealth,
    #[serde(default)]
    pub networks: BTreeMap<String, RawNetwork>,
    #[serde(default)]
    pub tiers: BTreeMap<String, RawTier>,
    #[serde(default)]
    pub tenants: Vec<RawTenant>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub rate_limit: RawRateLimitSection,
    #[serde(default)]
    pub routes_api: RawRoutesApi,
    #[serde(default)]
    pub sentry: RawSentry,
    #[serde(default)]
    pub billing: RawBilling,
}

/// `[routes_api]`: routes tenants write through the management API.
#[derive(Debug, Default, Deserialize)]
pub struct RawRoutesApi {
    pub max_routes_per_tenant: Option<u64>,
    pub upstream_allow: Option<Vec<String>>,
}

/// `[sentry]`: error reporting.
#[derive(Debug, Default, Deserialize)]
pub struct RawSentry {
    pub dsn: Option<String>,
    pub environment: Option<String>,
    pub sample_rate: Option<f32>,
}

/// `[server.tls]`: TLS on the public listener.
#[derive(Debug, Default, Deserialize)]
pub struct RawTls {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub listen: Option<String>,
    pub http2: Option<bool>,
}

/// `[billing]`: how tenants pay for their plans (Stripe subscriptions, or x402 itself).
#[derive(Debug, Default, Deserialize)]
pub struct RawBilling {
    pub stripe: Option<RawStripe>,
    pub x402: Option<RawX402Plans>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawStripe {
    pub webhook_secrets: Option<Vec<String>>,
    pub api_key: Option<String>,
    pub api_base: Option<String>,
    pub tolerance_seconds: Option<u64>,
    pub success_url: Option<String>,
    pub cancel_url: Option<String>,
    /// Stripe price id -> tier.
    #[serde(default)]
    pub prices: BTreeMap<String, String>,
    /// tier -> the price id Checkout sells, when several prices map to one tier.
    #[serde(default)]
    pub checkout_prices: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawX402Plans {
    pub network: Option<String>,
    pub pay_to: Option<String>,
    pub period_days: Option<u64>,
    pub max_timeout_seconds: Option<u64>,
    /// tier -> monthly price ("$299").
    #[serde(default)]
    pub prices: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRateLimitSection {
    pub redis_url: Option<String>,
    pub namespace: Option<String>,
    pub redis_timeout_ms: Option<u64>,
    #[serde(default)]
    pub proxy: RawRateScopes,
    #[serde(default)]
    pub admin: RawRateScopes,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRateScopes {
    pub per_ip: Option<RawRate>,
    pub per_tenant: Option<RawRate>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRate {
    pub rate: Option<f64>,
    pub burst: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawServer {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub metrics_listen: Option<String>,
    pub public_url: Option<String>,
    pub threads: Option<usize>,
    pub max_payment_header_bytes: Option<usize>,
    pub max_request_header_bytes: Option<usize>,
    pub body_read_timeout_seconds: Option<u64>,
    pub upstream_read_timeout_seconds: Option<u64>,
    pub cors_allow_origin: Option<String>,
    pub invalid_payments_per_minute: Option<u32>,
    pub log_format: Option<String>,
    pub upgrade_sock: Option<String>,
    pub pid_file: Option<String>,
    pub tls: Option<RawTls>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawDatabase {
    pub url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawAdmin {
    pub token: Option<String>,
    pub header_read_timeout_seconds: Option<u64>,
    pub idle_timeout_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawHealth {
    pub probe_interval_seconds: Option<u64>,
    pub rpc_max_age_seconds: Option<u64>,
    pub store_timeout_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct RawNetwork {
    pub rpc_url: Option<String>,
    pub settler_key: Option<String>,
    pub settler_keys: Option<Vec<String>>,
    pub fee_payer_key: Option<String>,
    pub confirmations: Option<u64>,
    pub batch_max: Option<u64>,
    pub settlements_in_flight: Option<u64>,
    pub replace_after_seconds: Option<u64>,
    pub commitment: Option<String>,
    pub rpc_timeout_seconds: Option<u64>,
    pub min_settler_balance: Option<RawCoins>,
    #[serde(default)]
    pub assets: Vec<RawAsset>,
}

/// An amount of a chain's native coin: a string of whole coins; a number is refused with a hint.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawCoins {
    Text(String),
    Number(f64),
}

#[derive(Debug, Deserialize)]
pub struct RawAsset {
    pub symbol: Option<String>,
    pub address: Option<String>,
    pub mint: Option<String>,
    pub decimals: Option<u8>,
    pub eip712_name: Option<String>,
    pub eip712_version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawLimit {
    Count(u64),
    Word(String),
}

#[derive(Debug, Deserialize)]
pub struct RawTier {
    pub monthly_verifications: Option<RawLimit>,
    pub networks: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
pub struct RawTenant {
    pub id: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub tier: Option<String>,
    #[serde(default)]
    pub pay_to: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawPrice {
    Text(String),
    Fixed { amount: String, asset: String },
}

#[derive(Debug, Deserialize)]
pub struct RawRoute {
    pub tenant: Option<String>,
    pub host: Option<String>,
    pub path: Option<String>,
    pub methods: Option<Vec<String>>,
    pub upstream: Option<String>,
    pub price: Option<RawPrice>,
    pub networks: Option<Vec<String>>,
    pub description: Option<String>,
    pub mime_type: Option<String>,
    pub settle: Option<String>,
    pub max_timeout_seconds: Option<u64>,
    pub charge_statuses: Option<Vec<String>>,
    pub case_insensitive: Option<bool>,
    pub allow_upgrade: Option<bool>,
}
