//! The EVM scheme payload: the EIP-3009 authorization a verified payment carries to settlement,
//! and its stored form. `EvmAuthorization` (alloy types) never leaves the EVM backend: `verify`
//! turns it into a chain-neutral `SchemePayload`, and settlement parses it back here.
//!
//! Stored layouts of `SchemePayload.data` (`chain` = `"evm"`), every one still read:
//! - `v` 1 (written now): `{"chain_id": 84532, "asset": "0x…", "from": "0x…", "to": "0x…",
//!   "value": "10000", "valid_after": "0", "valid_before": "1700000000", "nonce": "0x…32 bytes",
//!   "signature": "0x…"}`: addresses and bytes as 0x hex, uint256s as decimal strings (as the
//!   x402 wire writes amounts).
//! - `v` 0: the same fields as alloy's serde wrote them before the payload was ours (deferred
//!   queue rows of stored format 1): uint256s as 0x hex strings (`"0x2710"`, `"0x0"`).

use alloy::primitives::{Address, Bytes, Signature, B256, U256};
use alloy::sol_types::SolCall;
use serde::{Deserialize, Serialize};

use super::IEip3009;
use crate::payments::chain::SchemePayload;

/// The chain family tag of EVM scheme payloads.
pub const CHAIN: &str = "evm";
/// The layout `to_payload` writes.
pub const PAYLOAD_VERSION: u32 = 1;

/// The EIP-3009 authorization of a verified payment, as settlement needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvmAuthorization {
    pub chain_id: u64,
    pub asset: Address,
    pub from: Address,
    pub to: Address,
    pub value: U256,
    pub valid_after: U256,
    pub valid_before: U256,
    pub nonce: B256,
    /// 65-byte EOA signatures are stored normalized to low-s (on-chain ecrecover wrappers
    /// reject high-s); others are passed as they came to the `bytes` overload.
    pub signature: Bytes,
}

/// `SchemePayload.data` of every version: all strings, so its layout is ours, not a library's.
#[derive(Debug, Serialize, Deserialize)]
struct StoredAuthorization {
    chain_id: u64,
    asset: String,
    from: String,
    to: String,
    value: String,
    valid_after: String,
    valid_before: String,
    nonce: String,
    signature: String,
}

/// Why a scheme payload cannot be settled by the EVM backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("EVM scheme payload: {0}")]
pub struct PayloadError(String);

impl EvmAuthorization {
    /// The chain-neutral form a `Verified` carries.
    pub fn to_payload(&self) -> SchemePayload {
        let stored = StoredAuthorization {
            chain_id: self.chain_id,
            asset: format!("{:#x}", self.asset),
            from: format!("{:#x}", self.from),
            to: format!("{:#x}", self.to),
            value: self.value.to_string(),
            valid_after: self.valid_after.to_string(),
            valid_before: self.valid_before.to_string(),
            nonce: format!("{:#x}", self.nonce),
            signature: alloy::hex::encode_prefixed(&self.signature),
        };
        SchemePayload {
            chain: CHAIN.into(),
            v: PAYLOAD_VERSION,
            data: serde_json::to_value(stored).expect("strings and integers serialize"),
        }
    }

    /// Parses a payload this backend wrote, in any of its layouts.
    pub fn from_payload(payload: &SchemePayload) -> Result<Self, PayloadError> {
        let bad = |what: String| PayloadError(what);
        if payload.chain != CHAIN {
            return Err(bad(format!("a `{}` payload, not `{CHAIN}`", payload.chain)));
        }
        let radix = match payload.v {
            0 => 16,
            1 => 10,
            v => {
                return Err(bad(format!(
                    "unknown layout v{v} (written by a newer version?)"
                )))
            }
        };
        let s: StoredAuthorization = serde_json::from_value(payload.data.clone())
            .map_err(|e| bad(format!("v{}: {e}", payload.v)))?;
        let address = |field: &str, text: &str| {
            text.parse::<Address>()
                .map_err(|_| bad(format!("{field} `{text}` is not an address")))
        };
        let uint = |field: &str, text: &str| {
            let digits = if radix == 16 {
                text.strip_prefix("0x").unwrap_or(text)
            } else {
                text
            };
            U256::from_str_radix(digits, radix)
                .map_err(|_| bad(format!("{field} `{text}` is not a base-{radix} uint256")))
        };
        let nonce: B256 = s
            .nonce
            .parse()
            .map_err(|_| bad(format!("nonce `{}` is not 32 bytes of hex", s.nonce)))?;
        let signature: Bytes = s
            .signature
            .parse()
            .map_err(|_| bad("signature is not hex".into()))?;
        // `calldata` splits a 65-byte signature into v, r, s: it must parse.
        if signature.len() == 65 && Signature::from_raw(&signature).is_err() {
            return Err(bad("65-byte signature does not parse".into()));
        }
        Ok(EvmAuthorization {
            chain_id: s.chain_id,
            asset: address("asset", &s.asset)?,
            from: address("from", &s.from)?,
            to: address("to", &s.to)?,
            value: uint("value", &s.value)?,
            valid_after: uint("valid_after", &s.valid_after)?,
            valid_before: uint("valid_before", &s.valid_before)?,
            nonce,
            signature,
        })
    }

    /// The `transferWithAuthorization` call that settles it.
    pub(super) fn calldata(&self) -> Bytes {
        if self.signature.len() == 65 {
            let sig = Signature::from_raw(&self.signature).expect("stored signatures parse");
            IEip3009::transferWithAuthorization_0Call {
                from: self.from,
                to: self.to,
                value: self.value,
                validAfter: self.valid_after,
                validBefore: self.valid_before,
                nonce: self.nonce,
                v: 27 + sig.v() as u8,
                r: sig.r().into(),
                s: sig.s().into(),
            }
            .abi_encode()
            .into()
        } else {
            IEip3009::transferWithAuthorization_1Call {
                from: self.from,
                to: self.to,
                value: self.value,
                validAfter: self.valid_after,
                validBefore: self.valid_before,
                nonce: self.nonce,
                signature: self.signature.clone(),
            }
            .abi_encode()
            .into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> EvmAuthorization {
        EvmAuthorization {
            chain_id: 84532,
            asset: "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
                .parse()
                .unwrap(),
            from: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
                .parse()
                .unwrap(),
            to: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
                .parse()
                .unwrap(),
            value: U256::from(10_000),
            valid_after: U256::ZERO,
            valid_before: U256::from(4_000_000_000u64),
            nonce: B256::with_last_byte(7),
            signature: Bytes::from(vec![1u8; 65]),
        }
    }

    #[test]
    fn payloads_round_trip_in_our_own_layout() {
        let p = auth().to_payload();
        assert_eq!((p.chain.as_str(), p.v), (CHAIN, PAYLOAD_VERSION));
        assert_eq!(
            p.data,
            serde_json::json!({
                "chain_id": 84532,
                "asset": "0x036cbd53842c5426634e7929541ec2318f3dcf7e",
                "from": "0x70997970c51812dc3a010c7d01b50e0d17dc79c8",
                "to": "0x209693bc6afc0c5328ba36faf03c514ef312287c",
                "value": "10000",
                "valid_after": "0",
                "valid_before": "4000000000",
                "nonce": format!("0x{:064x}", 7),
                "signature": format!("0x{}", "01".repeat(65)),
            })
        );
        // Through the queue's JSON and back.
        let text = serde_json::to_string(&p).unwrap();
        let back: SchemePayload = serde_json::from_str(&text).unwrap();
        assert_eq!(EvmAuthorization::from_payload(&back).unwrap(), auth());
    }

    /// A deferred settlement queued before the payload was ours (stored format 1) carries the
    /// authorization as alloy's serde wrote it; the store hands it over as layout `v` 0, and it
    /// settles exactly as before: the same authorization, the same calldata.
    #[test]
    fn legacy_alloy_serde_authorizations_still_settle() {
        let legacy = serde_json::json!({
            "chain_id": 84532,
            "asset": "0x036cbd53842c5426634e7929541ec2318f3dcf7e",
            "from": "0x70997970c51812dc3a010c7d01b50e0d17dc79c8",
            "to": "0x209693bc6afc0c5328ba36faf03c514ef312287c",
            "value": "0x2710",
            "valid_after": "0x0",
            "valid_before": "0xee6b2800",
            "nonce": "0x0000000000000000000000000000000000000000000000000000000000000007",
            "signature": format!("0x{}", "01".repeat(65)),
        });
        let payload = SchemePayload {
            chain: CHAIN.into(),
            v: 0,
            data: legacy,
        };
        let parsed = EvmAuthorization::from_payload(&payload).unwrap();
        assert_eq!(parsed, auth());
        assert_eq!(parsed.calldata(), auth().calldata());
    }

    #[test]
    fn foreign_unknown_or_broken_payloads_are_refused() {
        let mut p = auth().to_payload();
        p.chain = "solana".into();
        assert!(EvmAuthorization::from_payload(&p).is_err());
        let mut p = auth().to_payload();
        p.v = 2;
        assert!(EvmAuthorization::from_payload(&p).is_err());
        let mut p = auth().to_payload();
        p.data["value"] = "0x2710".into();
        assert!(EvmAuthorization::from_payload(&p).is_err(), "v1 is decimal");
        let mut p = auth().to_payload();
        p.data["signature"] = format!("0x{}", "00".repeat(64) + "05").into();
        assert!(
            EvmAuthorization::from_payload(&p).is_err(),
            "a 65-byte signature that does not parse would panic in calldata"
        );
    }
}
