//! The payment core: every step of taking a payment, as plain async functions over the chain
//! backends (`chain.rs`), the store and the verification cache. No transport here: the proxy, the
//! management API and the background workers are thin adapters that turn these values into
//! responses, and there is exactly one implementation of each step.
//!
//! - `present.rs`: the payment header found, decoded and matched against the offers.
//! - `admit.rs`: verify (cached), claim atomically with the quota count for the payee (a route's
//!   tenant, or the operator for a plan), hold the payer's unsettled payments against its balance.
//! - `settle.rs`: settle now (sign, record, send, record), enqueue for the deferred worker,
//!   release (not charged); each also as a detached task that outlives its request.
//! - `batch.rs`: group commit: payments that wait for a settlement slot go out together, in one
//!   transaction, where the network's backend can batch.
//! - `landing.rs`: a recorded settlement sent and waited for, replaced at higher fees (the
//!   replacement recorded first) while it is stuck unmined.
//! - `queued.rs`: one attempt at a deferred settlement (the worker schedules them).
//! - `verify_only.rs`: verification without a claim (the verify API, a future facilitator).
//! - `rules.rs`: which statuses are charged, and what an unanswered request costs.
//! - `state.rs`: where a payment stands, and its receipts.
//!
//! The chain seam lives here too: `chain.rs` (trait `ChainBackend` and its chain-neutral value
//! types), the backends `evm/` (alloy only there), `svm/` (the solana crates only there) and
//! `fake.rs` (unit tests), and `lanes.rs`
//! (several settler keys behind one backend). Those import only each other, pricing, config and
//! x402, never the core, store or cache, so store and cache can use the value types without
//! reaching a backend.
//!
//! May import: store, cache, tenants, config, pricing, routes, x402. Never proxy, admin,
//! pingora or axum.

pub mod chain;
pub mod evm;
pub mod lanes;
pub mod svm;

mod admit;
mod batch;
pub(crate) mod landing;
mod present;
mod queued;
mod rules;
mod settle;
mod state;
mod verify_only;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use tokio::sync::Notify;

use crate::cache::VerifyCache;
use crate::payments::chain::ChainBackends;
use crate::store::LazyStore;
use crate::tenants::TenantDirectory;
use crate::x402::Reason;

pub use admit::{admit, admit_to, route_name, Admission, Payee, MAX_UNSETTLED_PER_PAYER};
pub use batch::{Batchers, IN_FLIGHT as SETTLEMENTS_IN_FLIGHT};
pub use present::{check_payment, payment_header, PaymentCheck};
pub use queued::{settle_queued, settle_queued_batch, QueuedOutcome};
pub use rules::{is_charged, is_interim, receipt_header_for, unanswered, Unanswered};
pub use settle::{enqueue, enqueue_detached, release, settle, settle_claim, settle_detached};
pub use state::{PaymentState, SettleOutcome, Stage};
pub use verify_only::{
    verify_for_tenant, verify_only, verify_transfer_for_tenant, TenantCheck, Transfer,
    TransferCheck, Verification,
};

/// Everything the payment steps need: the chain backends, the tenants, the store, the cache.
pub struct Payments {
    pub backends: ChainBackends,
    pub tenants: Arc<TenantDirectory>,
    pub store: Arc<LazyStore>,
    pub cache: VerifyCache,
    pub queue_wakeup: Arc<Notify>,
    /// Each network's settlement queue, which batches payments that wait (see `batch.rs`).
    pub batchers: Batchers,
}

/// Why a payment was not accepted: a stable wire reason plus a message for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub message: String,
}

impl Rejection {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Rejection {
            reason,
            message: message.into(),
        }
    }

    /// The `error` text of a 402: the stable code first, so scripts can match on it.
    pub fn error_text(&self) -> String {
        format!("{}: {}", self.reason, self.message)
    }
}
