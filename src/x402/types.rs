//! x402 wire types, v2 and v1, named as the specification names them.
//!
//! Free-form parts (`extra`, `payload`, `extensions`, `outputSchema`) stay `serde_json::Value`:
//! their shape depends on the scheme and network, and the scheme's verifier gives them a type.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// v2 `ResourceInfo`: what is being paid for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceInfo {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
}

/// v2 `PaymentRequirements`: one way to pay, as offered in `accepts[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirements {
    pub scheme: String,
    pub network: String,
    /// Atomic units, decimal integer string.
    pub amount: String,
    pub asset: String,
    pub pay_to: String,
    pub max_timeout_seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
}

/// v2 `PaymentRequired`: the decoded `PAYMENT-REQUIRED` header of a 402.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequired {
    pub x402_version: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub resource: ResourceInfo,
    pub accepts: Vec<PaymentRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Value>,
}

/// v2 `PaymentPayload`: the decoded `PAYMENT-SIGNATURE` header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayload {
    pub x402_version: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceInfo>,
    /// The client's copy of the requirement it chose. Informational only: we verify against our
    /// own stored requirement, never against this echo.
    pub accepted: PaymentRequirements,
    pub payload: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Value>,
}

/// v1 `PaymentRequirements`, as listed in the 402 JSON body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirementsV1 {
    pub scheme: String,
    /// A v1 network name (`base-sepolia`), never CAIP-2.
    pub network: String,
    pub max_amount_required: String,
    pub resource: String,
    pub description: String,
    pub mime_type: String,
    /// Left out when absent: v1 clients that validate it as an optional object (the v1 reference
    /// client among them) refuse a whole 402 that carries `"outputSchema": null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    pub pay_to: String,
    pub max_timeout_seconds: u64,
    pub asset: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
}

/// v1 402 body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequiredV1 {
    pub x402_version: u8,
    pub error: String,
    pub accepts: Vec<PaymentRequirementsV1>,
}

/// v1 `PaymentPayload`: the decoded `X-PAYMENT` header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayloadV1 {
    pub x402_version: u8,
    pub scheme: String,
    pub network: String,
    pub payload: Value,
}

/// A decoded payment proof of either version.
#[derive(Debug, Clone, PartialEq)]
pub enum PaymentProof {
    V1(PaymentPayloadV1),
    // Boxed: the v2 payload carries the echoed requirement and is several times larger.
    V2(Box<PaymentPayload>),
}

impl PaymentProof {
    pub fn version(&self) -> u8 {
        match self {
            PaymentProof::V1(_) => 1,
            PaymentProof::V2(_) => 2,
        }
    }

    pub fn scheme(&self) -> &str {
        match self {
            PaymentProof::V1(p) => &p.scheme,
            PaymentProof::V2(p) => &p.accepted.scheme,
        }
    }

    /// The scheme-specific payload (`{signature, authorization}` for EVM exact).
    pub fn payload(&self) -> &Value {
        match self {
            PaymentProof::V1(p) => &p.payload,
            PaymentProof::V2(p) => &p.payload,
        }
    }
}

/// `SettlementResponse`: the decoded `PAYMENT-RESPONSE` / `X-PAYMENT-RESPONSE` header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettlementResponse {
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    /// The transaction hash, or "" when nothing was sent.
    pub transaction: String,
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
}

/// Facilitator-style `VerifyResponse`, for the verification API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResponse {
    pub is_valid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
}
