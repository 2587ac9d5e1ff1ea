//! The EVM `exact` payload: the client's `{signature, authorization}` through every local check
//! of `EvmBackend::check_locally` (shape, addresses, uint256s, recipient, exact amount, time
//! window, EIP-712 signature recovery, EIP-6492 refusal), and the stored form a verified payment
//! is settled from (`EvmAuthorization::{to_payload, from_payload}`, every layout version).
//! Pure: the backend's RPC URL is never called, and "now" is fixed (`super::NOW`).
//!
//! Input: JSON. `{"chain": …, "v": …, "data": …}` is read as a stored `SchemePayload`; anything
//! else as the proof's `payload`, and also as `data` of both stored layouts.
//!
//! Properties: a malformed payload is a typed `Invalid` reason, never a panic nor `Unavailable`;
//! an accepted one pays exactly our price to our payee within its window; a parsed authorization
//! survives its stored form unchanged.

use std::sync::OnceLock;
use std::time::Duration;

use alloy::primitives::U256;
use serde_json::Value;
use x402_gate::payments::chain::{SchemePayload, VerifyError};
use x402_gate::payments::evm::{EvmAuthorization, EvmBackend, CHAIN, PAYLOAD_VERSION};
use x402_gate::pricing::Offer;
use x402_gate::x402::{Network, PaymentPayloadV1, PaymentProof};

use super::{EVM_NETWORK, EVM_SETTLER_KEY, NOW};

pub fn offer() -> &'static Offer {
    super::paid_offer(EVM_NETWORK)
}

pub fn backend() -> &'static EvmBackend {
    static BACKEND: OnceLock<EvmBackend> = OnceLock::new();
    BACKEND.get_or_init(|| {
        let network: Network = EVM_NETWORK.parse().expect("a CAIP-2 id");
        EvmBackend::new(
            &network,
            "http://127.0.0.1:1",
            EVM_SETTLER_KEY,
            1,
            Duration::from_secs(1),
        )
        .expect("the backend builds without a chain")
    })
}

pub fn run(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if value.get("chain").is_some() && value.get("data").is_some() {
        if let Ok(stored) = serde_json::from_value::<SchemePayload>(value) {
            stored_round_trip(&stored);
        }
        return;
    }
    for v in [0, PAYLOAD_VERSION] {
        stored_round_trip(&SchemePayload {
            chain: CHAIN.into(),
            v,
            data: value.clone(),
        });
    }
    let proof = PaymentProof::V1(PaymentPayloadV1 {
        x402_version: 1,
        scheme: "exact".into(),
        network: "base-sepolia".into(),
        payload: value,
    });
    let offer = offer();
    match backend().check_locally(offer, &proof, NOW) {
        Ok(auth) => {
            assert!(auth
                .to
                .to_checksum(None)
                .eq_ignore_ascii_case(&offer.pay_to));
            assert_eq!(auth.value.to_string(), offer.amount.to_string());
            assert!(format!("{:#x}", auth.asset).eq_ignore_ascii_case(&offer.asset.address));
            assert!(auth.valid_after <= U256::from(NOW));
            assert!(auth.valid_before >= U256::from(NOW + 6));
            stored_round_trip(&auth.to_payload());
            let again = EvmAuthorization::from_payload(&auth.to_payload())
                .expect("a verified authorization's own stored form parses");
            assert_eq!(again, auth);
        }
        Err(VerifyError::Invalid { message, .. }) => assert!(!message.is_empty()),
        Err(e @ VerifyError::Unavailable(_)) => panic!("a local check went to the chain: {e}"),
    }
}

/// What parses from a stored payload is written back in the current layout, and that parses to
/// the same authorization.
fn stored_round_trip(stored: &SchemePayload) {
    let Ok(auth) = EvmAuthorization::from_payload(stored) else {
        return;
    };
    let written = auth.to_payload();
    assert_eq!(
        (written.chain.as_str(), written.v),
        (CHAIN, PAYLOAD_VERSION)
    );
    let text = serde_json::to_string(&written).expect("a payload serializes");
    let back: SchemePayload = serde_json::from_str(&text).expect("and deserializes");
    assert_eq!(
        EvmAuthorization::from_payload(&back).expect("our own layout parses"),
        auth
    );
}
