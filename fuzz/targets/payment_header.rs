//! The payment header, as a client sends it: `PAYMENT-SIGNATURE` (v2) or `X-PAYMENT` (v1), base64
//! of JSON, decoded into a typed proof and matched against a priced route's offers
//! (`payments::check_payment`, the proxy's and the management API's one entry point).
//!
//! Properties: a header is either matched or refused with a typed reason, never a panic; a
//! matched proof is `exact` and pays one of our offers; what decodes re-encodes (in our strict
//! alphabet and in the others we accept) to the same proof.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::Value;
use x402_gate::payments::{check_payment, PaymentCheck};
use x402_gate::pricing::{requirement_eq, Offers};
use x402_gate::x402::{decode_payment, encode_header, CodecError, Network, PaymentProof, Reason};

/// The header size limit the proxy applies (its default `max_header_bytes`).
const MAX_HEADER_BYTES: usize = 8192;

pub fn offers() -> &'static Offers {
    super::fixture_table()
        .find(None, "GET", "/paid/x")
        .and_then(|r| r.offers.as_ref())
        .expect("the fixture prices /paid/*")
}

pub fn run(data: &[u8]) {
    let offers = offers();
    // The name only picks the receipt header; the decoding is the same for both.
    let name = if data.first().is_some_and(|b| b % 2 == 0) {
        "payment-signature"
    } else {
        "x-payment"
    };
    let checked = check_payment(offers, Some((name, data)), MAX_HEADER_BYTES);
    let decoded = std::str::from_utf8(data).map(decode_payment);
    match &checked {
        PaymentCheck::Missing => panic!("a present header is never Missing"),
        PaymentCheck::Rejected(r) => {
            if data.len() > MAX_HEADER_BYTES {
                assert_eq!(r.reason, Reason::PayloadTooLarge);
            }
            assert!(!r.message.is_empty());
        }
        PaymentCheck::Matched {
            offer,
            proof,
            header,
        } => {
            assert_eq!(*header, name);
            assert!(data.len() <= MAX_HEADER_BYTES);
            assert_eq!(proof.scheme(), "exact");
            assert_eq!(Ok(Ok(proof.clone())), decoded.clone().map_err(|_| ()));
            match proof {
                PaymentProof::V2(p) => assert!(requirement_eq(
                    &offer.requirement,
                    &p.accepted,
                    offer.network.namespace()
                )),
                PaymentProof::V1(p) => {
                    assert_eq!(
                        Network::from_v1_name(&p.network),
                        Some(offer.network.clone())
                    )
                }
            }
        }
    }
    let Ok(decoded) = decoded else { return };
    match decoded {
        Ok(proof) => round_trip(&proof),
        Err(e) => {
            if data.len() <= MAX_HEADER_BYTES {
                let PaymentCheck::Rejected(r) = checked else {
                    panic!("an undecodable header was accepted")
                };
                let want = match e {
                    CodecError::UnsupportedVersion(_) => Reason::InvalidX402Version,
                    _ => Reason::InvalidPayload,
                };
                assert_eq!(r.reason, want);
            }
        }
    }
}

/// A decoded proof, encoded as we encode headers and decoded again, is the same proof; so is its
/// JSON in the URL-safe unpadded alphabet some clients send.
fn round_trip(proof: &PaymentProof) {
    let json = match proof {
        PaymentProof::V1(p) => serde_json::to_value(p),
        PaymentProof::V2(p) => serde_json::to_value(p),
    }
    .expect("wire types serialize");
    // serde_json reads floats without exact round-tripping (its `float_roundtrip` feature is off),
    // and no field we compare is a float: the property is stated for float-free proofs.
    if has_float(&json) {
        return;
    }
    let header = encode_header(&json);
    assert!(header
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')));
    assert_eq!(decode_payment(&header).as_ref(), Ok(proof));
    let bytes = STANDARD.decode(&header).expect("our own base64");
    assert_eq!(
        decode_payment(&URL_SAFE_NO_PAD.encode(bytes)).as_ref(),
        Ok(proof)
    );
}

fn has_float(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_f64(),
        Value::Array(a) => a.iter().any(has_float),
        Value::Object(o) => o.values().any(has_float),
        _ => false,
    }
}
