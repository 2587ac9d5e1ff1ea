//! The x402 wire protocol, pure: v1 and v2 message types, the base64 header codec, CAIP-2 network
//! ids and their v1 names, atomic amounts, the wire reason codes, and `redact` (error texts made
//! safe to store, log and show: no URLs, no keys).
//!
//! No async, no I/O, nothing from pingora, sqlx or an RPC client: everything here is a value or a
//! function of values, so it is tested with the specification's own example messages.
//! May import: serde, base64, thiserror. Nothing internal.

pub mod amount;
pub mod codec;
pub mod network;
pub mod reason;
pub mod redact;
pub mod types;

pub use amount::{AmountError, AtomicAmount};
pub use codec::{decode_payment, encode_header, CodecError};
pub use network::{Namespace, Network, NetworkError};
pub use reason::Reason;
pub use types::*;

/// Response header carrying the v2 challenge.
pub const PAYMENT_REQUIRED: &str = "payment-required";
/// Request header carrying a v2 proof.
pub const PAYMENT_SIGNATURE: &str = "payment-signature";
/// Request header carrying a v1 proof.
pub const X_PAYMENT: &str = "x-payment";
/// Response header carrying a v2 settlement receipt.
pub const PAYMENT_RESPONSE: &str = "payment-response";
/// Response header carrying a v1 settlement receipt.
pub const X_PAYMENT_RESPONSE: &str = "x-payment-response";
