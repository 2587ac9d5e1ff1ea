//! Request and response bodies of the management API, with their OpenAPI schemas. Requests refuse
//! unknown fields, so a typo is a 400 and not a silently ignored setting.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::store::{ApiKeyRecord, DailyLine, PaymentRecord, RevenueLine, TenantRecord};
use crate::x402::redact;

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable snake_case code.
    pub error: String,
    pub message: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantRequest {
    pub email: String,
    /// free | starter | pro | enterprise, or a custom tier of the config.
    pub tier: String,
    pub name: Option<String>,
    /// Defaults to one derived from the name or email.
    pub id: Option<String>,
    /// CAIP-2 network -> payout address.
    pub pay_to: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantView {
    pub id: String,
    pub name: String,
    pub email: Option<String>,
    pub tier: String,
    /// active | suspended
    pub status: String,
    pub pay_to: BTreeMap<String, String>,
    /// config (declared in the TOML) | api
    pub source: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<TenantRecord> for TenantView {
    fn from(t: TenantRecord) -> Self {
        TenantView {
            id: t.id,
            name: t.name,
            email: t.email,
            tier: t.tier,
            status: t.status,
            pay_to: t.pay_to,
            source: t.source,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

/// A plan (tier) of the config.
#[derive(Debug, Serialize, ToSchema)]
pub struct TierView {
    pub name: String,
    /// null: unlimited.
    pub monthly_verifications: Option<u64>,
    /// CAIP-2 ids or patterns (`solana:*`, `*`).
    pub networks: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub tenant_id: String,
    /// The lookup prefix; the key itself is never stored.
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub replaced_by: Option<String>,
}

impl From<ApiKeyRecord> for KeyView {
    fn from(k: ApiKeyRecord) -> Self {
        KeyView {
            id: k.id,
            tenant_id: k.tenant_id,
            prefix: k.prefix,
            scopes: k.scopes,
            created_at: k.created_at,
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
            last_used_at: k.last_used_at,
            replaced_by: k.replaced_by,
        }
    }
}

/// A new key: `key` is shown this once and never again.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewKey {
    pub key: String,
    #[serde(flatten)]
    pub info: KeyView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedTenant {
    pub tenant: TenantView,
    pub api_key: NewKey,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenantRequest {
    pub name: Option<String>,
    pub tier: Option<String>,
    pub pay_to: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// Default: every scope its creator holds (all four for the operator: verify, usage:read,
    /// keys:write, payments:read). A tenant key cannot grant a scope it does not hold (403
    /// `scope_not_held`).
    pub scopes: Option<Vec<String>>,
    /// 1..=3153600000 (100 years). Default: never expires.
    pub expires_in_seconds: Option<i64>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKeyRequest {
    /// How long the old key keeps working; default 86400 (24 h), 0 for at once, at most
    /// 3153600000 (100 years).
    pub grace_seconds: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedKey {
    pub new_key: NewKey,
    pub old_key: KeyView,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PaymentsQuery {
    pub tenant: Option<String>,
    pub network: Option<String>,
    /// claimed | settling | settled | queued | released | failed
    pub status: Option<String>,
    /// Page backwards: the `next_before` of the previous page.
    pub before: Option<i64>,
    /// 1..500, default 50.
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentView {
    pub id: i64,
    pub tenant: String,
    pub route: String,
    pub network: String,
    pub asset: String,
    pub payer: String,
    pub amount: String,
    pub status: String,
    pub tx_hash: Option<String>,
    /// Why the payment was not settled: `reason_code: message`, the message scrubbed of URLs and
    /// anything key-like.
    pub error: Option<String>,
    /// The leading reason code of `error` (e.g. `not_charged`, `settlement_failed`,
    /// `invalid_exact_evm_transaction_failed`).
    pub error_reason: Option<String>,
    pub claimed_at: i64,
}

impl From<PaymentRecord> for PaymentView {
    fn from(p: PaymentRecord) -> Self {
        // Scrubbed again where it is shown: rows written before texts were scrubbed on write
        // may still hold an RPC URL with its API key.
        let error = p.error.as_deref().map(redact::scrub);
        let error_reason = error
            .as_deref()
            .and_then(redact::reason_of)
            .map(String::from);
        PaymentView {
            id: p.id,
            tenant: p.tenant,
            route: p.route,
            network: p.network,
            asset: p.asset,
            payer: p.payer,
            amount: p.amount,
            status: p.status,
            tx_hash: p.tx_hash,
            error,
            error_reason,
            claimed_at: p.claimed_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentsPage {
    pub payments: Vec<PaymentView>,
    pub next_before: Option<i64>,
}

/// Either an x402 payment payload against requirements (the facilitator `/verify` shape), or a
/// transaction already on chain.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum VerifyRequest {
    Payment(VerifyPaymentRequest),
    Transaction(VerifyTransactionRequest),
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VerifyPaymentRequest {
    pub x402_version: Option<u8>,
    #[schema(value_type = Object)]
    pub payment_payload: serde_json::Value,
    #[schema(value_type = Object)]
    pub payment_requirements: serde_json::Value,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyTransactionRequest {
    pub tx_hash: String,
    /// CAIP-2 id or v1 name (`eip155:84532`, `base-sepolia`).
    pub chain: String,
    /// Atomic units, decimal: the least the transfer must carry.
    pub expected_amount: String,
    pub recipient: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResult {
    pub is_valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
    /// For transactions: the transfer found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asset: Option<String>,
    /// Whether the answer came from the cache (cached answers are not counted again).
    pub cached: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RevenueView {
    pub route: String,
    pub network: String,
    pub asset: String,
    pub payments: i64,
    /// Atomic units.
    pub amount: String,
}

impl From<RevenueLine> for RevenueView {
    fn from(r: RevenueLine) -> Self {
        RevenueView {
            route: r.route,
            network: r.network,
            asset: r.asset,
            payments: r.payments,
            amount: r.amount,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DayView {
    pub day: String,
    pub payments: i64,
}

impl From<DailyLine> for DayView {
    fn from(d: DailyLine) -> Self {
        DayView {
            day: d.day,
            payments: d.payments,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// The operator's choice of tenant (required for it); a tenant key may name only its own.
    pub tenant: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageView {
    pub tenant: String,
    pub tier: String,
    /// The UTC month, YYYY-MM.
    pub period: String,
    pub verified: i64,
    /// null: unlimited.
    pub limit: Option<i64>,
    pub remaining: Option<i64>,
    pub revenue: Vec<RevenueView>,
    pub daily: Vec<DayView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AssetView {
    pub symbol: String,
    pub address: String,
    pub decimals: u8,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChainView {
    pub network: String,
    pub v1_name: Option<String>,
    pub assets: Vec<AssetView>,
    /// With an API key: whether the caller's tier allows this network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SupportedChains {
    pub chains: Vec<ChainView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    pub status: String,
}

/// `/ready`'s answer, with HTTP 200 when `status` is `ready` or `degraded` and 503 when it is
/// `not_ready`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// ready | degraded (serving, with warnings) | not_ready
    pub status: String,
    /// Why it is not ready: each a short sentence naming the store or the network.
    pub reasons: Vec<String>,
    /// What degrades it without making it unready (a settler below its floor).
    pub warnings: Vec<String>,
    pub store: StoreHealth,
    pub networks: Vec<NetworkReadiness>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StoreHealth {
    pub ok: bool,
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NetworkReadiness {
    /// CAIP-2 id.
    pub network: String,
    /// Whether this build probes it (false: no backend for its chain family; it takes no
    /// payment and does not count against readiness).
    pub checked: bool,
    /// Whether its RPC answered within `health.rpc_max_age_seconds`.
    pub rpc_ok: bool,
    /// Seconds since its RPC last answered a probe; absent if it never did.
    pub last_answer_seconds_ago: Option<f64>,
    /// The last probe's error, if the last probe failed.
    pub error: Option<String>,
    /// The latest block the node reported.
    pub block: Option<u64>,
    /// `min_settler_balance` in the smallest native unit (wei), decimal; absent without a floor.
    pub min_settler_balance: Option<String>,
    pub settlers: Vec<SettlerReadiness>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SettlerReadiness {
    pub settler: String,
    /// Gas balance in the smallest native unit (wei), decimal.
    pub balance: String,
    /// Whether this instance holds the key's lease (signs with it now).
    pub held: bool,
    pub below_floor: bool,
}
