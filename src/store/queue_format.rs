//! The stored formats of a deferred settlement (`settlement_queue.verified`, versioned by its
//! `format` column, migration 0005). Written in the newest format; every older one is upgraded
//! on read, so a settlement queued by an earlier version settles after an upgrade.
//!
//! - 1: JSON of the verified payment as it was before the payload was chain-neutral: the EVM
//!   authorization in alloy's serde form under `authorization`, the expiry as `valid_before`.
//!   Only the EVM backend existed then, so its `authorization` becomes an `evm` scheme payload of
//!   layout `v` 0, which the EVM backend reads as it was written (see `payments::evm`).
//! - 2: JSON of `payments::chain::Verified`.
//!
//! May import: payments::chain (value types only).

use serde::Deserialize;

use super::StoreError;
use crate::payments::chain::{PaymentKey, SchemePayload, Verified};

/// The format `encode` writes.
pub const CURRENT: i64 = 2;

pub(super) fn encode(v: &Verified) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn decode(format: i64, json: &str) -> Result<Verified, StoreError> {
    let corrupt =
        |e: serde_json::Error| StoreError::Corrupt(format!("queued format {format}: {e}"));
    match format {
        1 => serde_json::from_str::<Format1>(json)
            .map(Format1::upgrade)
            .map_err(corrupt),
        2 => serde_json::from_str(json).map_err(corrupt),
        other => Err(StoreError::Corrupt(format!(
            "queued settlement in unknown format {other} (written by a newer version?)"
        ))),
    }
}

/// A format-1 row, as it was written.
#[derive(Deserialize)]
struct Format1 {
    key: PaymentKey,
    payer: String,
    pay_to: String,
    amount: String,
    valid_before: u64,
    /// The EVM authorization in alloy's serde form, kept as it is for the EVM backend to read.
    authorization: serde_json::Value,
}

impl Format1 {
    fn upgrade(self) -> Verified {
        Verified {
            key: self.key,
            payer: self.payer,
            pay_to: self.pay_to,
            amount: self.amount,
            expires_at: self.valid_before,
            scheme_payload: SchemePayload {
                chain: "evm".into(),
                v: 0,
                data: self.authorization,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row queued by the version before format 2, byte for byte.
    pub const FORMAT1_ROW: &str = r#"{"key":{"network":"eip155:84532","asset":"0x036cbd53842c5426634e7929541ec2318f3dcf7e","payer":"0x70997970c51812dc3a010c7d01b50e0d17dc79c8","nonce":"0x0000000000000000000000000000000000000000000000000000000000000007"},"payer":"0x70997970C51812dc3A010C7d01b50e0d17dc79C8","pay_to":"0x209693Bc6afc0C5328bA36FaF03C514EF312287C","amount":"10000","valid_before":4000000000,"authorization":{"chain_id":84532,"asset":"0x036cbd53842c5426634e7929541ec2318f3dcf7e","from":"0x70997970c51812dc3a010c7d01b50e0d17dc79c8","to":"0x209693bc6afc0c5328ba36faf03c514ef312287c","value":"0x2710","valid_after":"0x0","valid_before":"0xee6b2800","nonce":"0x0000000000000000000000000000000000000000000000000000000000000007","signature":"0x0101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101"}}"#;

    #[test]
    fn format_1_is_upgraded_and_format_2_round_trips() {
        let v = decode(1, FORMAT1_ROW).unwrap();
        assert_eq!(v.expires_at, 4_000_000_000);
        assert_eq!(v.amount, "10000");
        assert_eq!(v.scheme_payload.chain, "evm");
        assert_eq!(v.scheme_payload.v, 0);
        assert_eq!(v.scheme_payload.data["value"], "0x2710");
        let again = decode(CURRENT, &encode(&v).unwrap()).unwrap();
        assert_eq!(again, v);
        assert!(matches!(decode(3, "{}"), Err(StoreError::Corrupt(_))));
    }
}
