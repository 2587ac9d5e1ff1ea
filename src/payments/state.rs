//! Where an admitted payment stands, its receipts, and the outcome of settling it.

use std::sync::Arc;

use crate::config::SettlePolicy;
use crate::payments::chain::{Settlement, Verified};
use crate::store::ClaimContext;
use crate::x402::SettlementResponse;

/// Where a claimed payment stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// Claimed for this request; settlement not decided yet.
    Claimed,
    Settled(Settlement),
    /// Given back: not charged.
    Released,
    /// In the deferred queue.
    Queued,
    /// Settlement refused or its outcome unknown: the claim stays, never reusable.
    Unsettled,
    /// A settlement or enqueue task is running on its own; it records its outcome whatever
    /// becomes of this request.
    Settling,
}

/// A payment admitted for this request.
#[derive(Debug, Clone)]
pub struct PaymentState {
    pub verified: Arc<Verified>,
    pub claim_id: i64,
    /// The receipt header: `payment-response` for v2 proofs, `x-payment-response` for v1.
    pub receipt_header: &'static str,
    pub network: String,
    /// The network as the receipt names it: the v1 name (`base-sepolia`) for a v1 proof, which
    /// v1 clients expect, and CAIP-2 for v2.
    pub receipt_network: String,
    pub policy: SettlePolicy,
    pub tenant: String,
    pub route: String,
    pub stage: Stage,
    /// The proof's verification-cache key, forgotten when the claim is released or fails, so the
    /// proof is never re-admitted without the on-chain check.
    pub cache_key: [u8; 32],
}

impl PaymentState {
    pub(crate) fn ctx(&self) -> ClaimContext<'_> {
        ClaimContext {
            tenant: &self.tenant,
            route: &self.route,
        }
    }

    pub fn receipt_ok(&self, transaction: &str) -> SettlementResponse {
        SettlementResponse {
            success: true,
            error_reason: None,
            transaction: transaction.to_string(),
            network: self.receipt_network.clone(),
            payer: Some(self.verified.payer.clone()),
        }
    }

    pub fn receipt_failed(&self, reason: &str, transaction: Option<&str>) -> SettlementResponse {
        SettlementResponse {
            success: false,
            error_reason: Some(reason.to_string()),
            transaction: transaction.unwrap_or_default().to_string(),
            network: self.receipt_network.clone(),
            payer: Some(self.verified.payer.clone()),
        }
    }
}

/// The outcome of settling: the receipt to send, or why the client gets no resource.
#[derive(Debug)]
pub enum SettleOutcome {
    Settled(SettlementResponse),
    /// 402 with this `success:false` receipt: nothing was charged or the charge failed.
    Refused(SettlementResponse),
    /// 503: our side failed before anything was broadcast; the claim was released.
    Unavailable(String),
    /// 503 with this receipt: broadcast, outcome unknown; the claim is kept.
    Pending(SettlementResponse),
}

impl SettleOutcome {
    /// The metrics label of this outcome.
    pub fn label(&self) -> &'static str {
        match self {
            SettleOutcome::Settled(_) => "settled",
            SettleOutcome::Refused(_) => "failed",
            SettleOutcome::Unavailable(_) => "unavailable",
            SettleOutcome::Pending(_) => "pending",
        }
    }
}
