//! The Solana `exact` payment: a client's partially signed transaction through every local check
//! (`payments::svm::verify::check`: canonical bincode, size, sanitize, lookup tables, fee payer
//! isolation, signer count, instruction layout, compute budget caps, `TransferChecked` mint,
//! destination, amount and decimals, trailing instructions, signatures), the proof payload around
//! it (`SvmBackend::check_locally`: JSON, base64), and the stored form it is settled from
//! (`payments::svm::from_payload`). Pure: the backend's RPC URL is never called.
//!
//! Input: a raw wire transaction, or (first byte `{`) JSON: a stored `SchemePayload` when it has
//! `chain` and `data`, else the proof's `payload` (`{"transaction": "<base64>"}`).
//!
//! Properties: a malformed payment is a typed `Invalid` reason, never a panic nor `Unavailable`;
//! an accepted one is canonical (its bytes are exactly its re-encoding), pays exactly our price
//! from an account that is not our fee payer, and is the same payment (same message id) through
//! the raw, the proof and the stored entry points.

use std::sync::OnceLock;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};
use x402_gate::config::SolanaCommitment;
use x402_gate::payments::chain::{SchemePayload, VerifyError};
use x402_gate::payments::svm::verify::{self, CheckedTransfer, Expected};
use x402_gate::payments::svm::{from_payload, SvmBackend, CHAIN, PAYLOAD_VERSION};
use x402_gate::pricing::Offer;
use x402_gate::x402::{Network, PaymentPayloadV1, PaymentProof};

use super::{SVM_FEE_PAYER_KEY, SVM_NETWORK};

pub fn offer() -> &'static Offer {
    super::paid_offer(SVM_NETWORK)
}

pub fn backend() -> &'static SvmBackend {
    static BACKEND: OnceLock<SvmBackend> = OnceLock::new();
    BACKEND.get_or_init(|| {
        let network: Network = SVM_NETWORK.parse().expect("a CAIP-2 id");
        SvmBackend::new(
            &network,
            "http://127.0.0.1:1",
            SVM_FEE_PAYER_KEY,
            SolanaCommitment::Confirmed,
            Duration::from_secs(1),
        )
        .expect("the backend builds without a cluster")
    })
}

/// What the fixture's offer asks for, as the local checks compare it.
pub fn expected() -> &'static Expected {
    static EXPECTED: OnceLock<Expected> = OnceLock::new();
    EXPECTED.get_or_init(|| {
        let offer = offer();
        Expected {
            fee_payer: backend().fee_payer(),
            mint: verify::pubkey("asset", &offer.asset.address).expect("a mint"),
            pay_to: verify::pubkey("payTo", &offer.pay_to).expect("a wallet"),
            amount: u64::try_from(offer.amount.0).expect("a token amount"),
            decimals: offer.asset.decimals,
        }
    })
}

fn proof(payload: Value) -> PaymentProof {
    PaymentProof::V1(PaymentPayloadV1 {
        x402_version: 1,
        scheme: "exact".into(),
        network: "solana-devnet".into(),
        payload,
    })
}

pub fn run(data: &[u8]) {
    if data.first() == Some(&b'{') {
        let Ok(value) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        if value.get("chain").is_some() && value.get("data").is_some() {
            if let Ok(stored) = serde_json::from_value::<SchemePayload>(value) {
                if let Ok(tx) = from_payload(&stored) {
                    let bytes = bincode::serialize(&tx).expect("a decoded transaction encodes");
                    assert_eq!(verify::decode(&bytes).expect("and decodes again"), tx);
                }
            }
            return;
        }
        match backend().check_locally(offer(), &proof(value)) {
            Ok(checked) => {
                let bytes = bincode::serialize(&checked.transaction).expect("encodes");
                accepted(&bytes, &checked);
            }
            Err(e) => invalid(e),
        }
        return;
    }
    match verify::check(data, expected()) {
        Ok(checked) => {
            accepted(data, &checked);
            // The same bytes as a client's proof payload: the same payment.
            let payload = json!({"transaction": STANDARD.encode(data)});
            let via_proof = backend()
                .check_locally(offer(), &proof(payload))
                .expect("the same transaction in a proof passes");
            assert_eq!(via_proof.message_id(), checked.message_id());
        }
        Err(e) => invalid(e),
    }
}

fn invalid(e: VerifyError) {
    match e {
        VerifyError::Invalid { message, .. } => assert!(!message.is_empty()),
        VerifyError::Unavailable(m) => panic!("a local check went to the cluster: {m}"),
    }
}

fn accepted(bytes: &[u8], checked: &CheckedTransfer) {
    let want = expected();
    assert_eq!(
        bincode::serialize(&checked.transaction).expect("encodes"),
        bytes,
        "an accepted transaction is canonical"
    );
    assert_eq!(checked.amount, want.amount);
    assert_ne!(checked.authority, want.fee_payer);
    assert_ne!(checked.source, want.fee_payer);
    assert!(
        checked.token_program == verify::TOKEN_PROGRAM
            || checked.token_program == verify::TOKEN_2022_PROGRAM
    );
    assert_eq!(checked.message, checked.transaction.message.serialize());
    let id = checked.message_id();
    assert!(
        id.len() == 64
            && id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    // The stored form (layout v1, as `payload.rs` documents it) gives back the same transaction.
    let stored = SchemePayload {
        chain: CHAIN.into(),
        v: PAYLOAD_VERSION,
        data: json!({
            "transaction": STANDARD.encode(bytes),
            "token_program": checked.token_program.to_string(),
        }),
    };
    let back = from_payload(&stored).expect("the stored form parses");
    assert_eq!(back, checked.transaction);
}
