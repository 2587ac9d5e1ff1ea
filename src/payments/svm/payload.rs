//! The SVM scheme payload: what a verified Solana payment carries to settlement, in the
//! chain-neutral `SchemePayload` the deferred queue stores.
//!
//! Stored layouts of `SchemePayload.data` (`chain` = `"svm"`), every one still read:
//! - `v` 1 (written now): `{"transaction": "<base64 wire bytes, as the client signed them>",
//!   "token_program": "<base58>"}`. Our fee-payer signature is not stored here: settlement adds
//!   it (deterministically: the same message always gets the same signature).

use base64::Engine;
use serde::{Deserialize, Serialize};
use solana_transaction::versioned::VersionedTransaction;

use super::verify::{self, CheckedTransfer};
use crate::payments::chain::SchemePayload;

/// The chain family tag of SVM scheme payloads.
pub const CHAIN: &str = "svm";
/// The layout `to_payload` writes.
pub const PAYLOAD_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct StoredPayment {
    transaction: String,
    token_program: String,
}

/// Why a scheme payload cannot be settled by the SVM backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SVM scheme payload: {0}")]
pub struct PayloadError(String);

pub fn to_payload(checked: &CheckedTransfer) -> SchemePayload {
    let bytes = bincode::serialize(&checked.transaction).expect("a decoded transaction encodes");
    let stored = StoredPayment {
        transaction: base64::engine::general_purpose::STANDARD.encode(bytes),
        token_program: checked.token_program.to_string(),
    };
    SchemePayload {
        chain: CHAIN.into(),
        v: PAYLOAD_VERSION,
        data: serde_json::to_value(stored).expect("strings serialize"),
    }
}

/// The client's partially signed transaction, back from a stored payload.
pub fn from_payload(payload: &SchemePayload) -> Result<VersionedTransaction, PayloadError> {
    if payload.chain != CHAIN {
        return Err(PayloadError(format!(
            "made by the `{}` backend, not `{CHAIN}`",
            payload.chain
        )));
    }
    if payload.v != PAYLOAD_VERSION {
        return Err(PayloadError(format!(
            "unknown layout version {}",
            payload.v
        )));
    }
    let stored: StoredPayment = serde_json::from_value(payload.data.clone())
        .map_err(|e| PayloadError(format!("layout {}: {e}", payload.v)))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&stored.transaction)
        .map_err(|e| PayloadError(format!("transaction is not base64: {e}")))?;
    verify::decode(&bytes).map_err(|e| PayloadError(e.to_string()))
}
