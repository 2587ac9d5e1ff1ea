//! The header codec: x402 headers carry standard base64 of UTF-8 JSON.
//!
//! Decode leniently (standard or URL-safe alphabet, padded or not, surrounding whitespace) because
//! clients differ; encode strictly (standard alphabet, padded) because the TS client's decoder checks
//! `^[A-Za-z0-9+/]*={0,2}$` and rejects anything else.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use serde::Serialize;
use serde_json::Value;

use super::types::{PaymentPayload, PaymentPayloadV1, PaymentProof};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("the payment header is not base64")]
    NotBase64,
    #[error("the payment header is not JSON: {0}")]
    NotJson(String),
    #[error("x402Version is missing or not a number")]
    MissingVersion,
    #[error("unsupported x402Version {0} (supported: 1, 2)")]
    UnsupportedVersion(u64),
    #[error("the payment payload does not match the x402 v{version} shape: {message}")]
    BadShape { version: u8, message: String },
}

/// Encodes a wire value as a header value: standard, padded base64 of its JSON.
pub fn encode_header<T: Serialize>(value: &T) -> String {
    // Serializing our own wire types cannot fail: they hold no maps with non-string keys.
    let json = serde_json::to_vec(value).expect("wire types serialize");
    STANDARD.encode(json)
}

/// Decodes base64 in any of the alphabets clients are seen to send.
pub fn decode_base64(value: &str) -> Result<Vec<u8>, CodecError> {
    let value = value.trim();
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(value).ok())
        .ok_or(CodecError::NotBase64)
}

/// Decodes a `PAYMENT-SIGNATURE` or `X-PAYMENT` header into a proof, branching on `x402Version`
/// (not on which header carried it: some clients send v2 payloads in `X-PAYMENT`).
pub fn decode_payment(header: &str) -> Result<PaymentProof, CodecError> {
    let bytes = decode_base64(header)?;
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|e| CodecError::NotJson(e.to_string()))?;
    let version = value
        .get("x402Version")
        .and_then(Value::as_u64)
        .ok_or(CodecError::MissingVersion)?;
    match version {
        1 => serde_json::from_value::<PaymentPayloadV1>(value)
            .map(PaymentProof::V1)
            .map_err(|e| CodecError::BadShape {
                version: 1,
                message: e.to_string(),
            }),
        2 => serde_json::from_value::<PaymentPayload>(value)
            .map(|p| PaymentProof::V2(Box::new(p)))
            .map_err(|e| CodecError::BadShape {
                version: 2,
                message: e.to_string(),
            }),
        other => Err(CodecError::UnsupportedVersion(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x402::types::*;
    use serde_json::json;

    /// The v2 `PaymentRequired` example from the specification.
    fn spec_payment_required() -> Value {
        json!({
          "x402Version": 2,
          "error": "Payment required",
          "resource": {"url": "https://api.example.com/premium", "description": "Premium data", "mimeType": "application/json"},
          "accepts": [{
            "scheme": "exact",
            "network": "eip155:84532",
            "amount": "10000",
            "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
            "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
            "maxTimeoutSeconds": 60,
            "extra": {"name": "USDC", "version": "2"}
          }],
          "extensions": {}
        })
    }

    fn spec_payment_payload_v2() -> Value {
        json!({
          "x402Version": 2,
          "resource": {"url": "https://api.example.com/premium", "description": "Premium data", "mimeType": "application/json"},
          "accepted": spec_payment_required()["accepts"][0].clone(),
          "payload": {
            "signature": "0x2d6a7588d6acca505cbf0d9a4a227e0c52c6c34008c8e8986a1283259764173608a2ce6496642e377d6da8dbbf5836e9bd15092f9ecab05ded3d6293af148b571c",
            "authorization": {
              "from": "0x857b06519E91e3A54538791bDbb0E22373e36b66",
              "to": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
              "value": "10000",
              "validAfter": "1740672089",
              "validBefore": "1740672154",
              "nonce": "0xf3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f13480"
            }
          },
          "extensions": {}
        })
    }

    #[test]
    fn spec_payment_required_round_trips() {
        let golden = spec_payment_required();
        let typed: PaymentRequired = serde_json::from_value(golden.clone()).unwrap();
        assert_eq!(
            typed.accepts[0].pay_to,
            "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
        );
        assert_eq!(typed.accepts[0].amount, "10000");
        assert_eq!(serde_json::to_value(&typed).unwrap(), golden);
        let header = encode_header(&typed);
        let back: PaymentRequired =
            serde_json::from_slice(&decode_base64(&header).unwrap()).unwrap();
        assert_eq!(back, typed);
    }

    #[test]
    fn spec_v1_body_round_trips() {
        let golden = json!({
          "x402Version": 1,
          "error": "X-PAYMENT header is required",
          "accepts": [{
            "scheme": "exact", "network": "base-sepolia", "maxAmountRequired": "10000",
            "resource": "https://api.example.com/premium", "description": "Premium data",
            "mimeType": "application/json", "outputSchema": null,
            "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", "maxTimeoutSeconds": 60,
            "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
            "extra": {"name": "USDC", "version": "2"}
          }]
        });
        let typed: PaymentRequiredV1 = serde_json::from_value(golden.clone()).unwrap();
        // Read with `outputSchema: null`, written without the key (v1 clients refuse the null).
        let mut expected = golden.clone();
        expected["accepts"][0]
            .as_object_mut()
            .unwrap()
            .remove("outputSchema");
        assert_eq!(serde_json::to_value(&typed).unwrap(), expected);
    }

    #[test]
    fn decodes_spec_v2_payload() {
        let header = STANDARD.encode(spec_payment_payload_v2().to_string());
        let PaymentProof::V2(p) = decode_payment(&header).unwrap() else {
            panic!("expected v2")
        };
        assert_eq!(p.accepted.network, "eip155:84532");
        assert_eq!(p.payload["authorization"]["value"], "10000");
    }

    #[test]
    fn decodes_v1_payload_and_lenient_alphabets() {
        let v1 = json!({"x402Version":1,"scheme":"exact","network":"base-sepolia",
            "payload": spec_payment_payload_v2()["payload"].clone()});
        let raw = v1.to_string();
        for header in [
            STANDARD.encode(&raw),
            STANDARD_NO_PAD.encode(&raw),
            URL_SAFE.encode(&raw),
            format!("  {}  ", URL_SAFE_NO_PAD.encode(&raw)),
        ] {
            let proof = decode_payment(&header).unwrap();
            assert_eq!(proof.version(), 1);
            assert_eq!(proof.scheme(), "exact");
        }
    }

    #[test]
    fn encodes_strict_standard_base64() {
        // Bytes that differ between the standard and URL-safe alphabets.
        let header = encode_header(&json!({"k": "\u{00ff}\u{00fe}?>>>"}));
        assert!(header
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'='));
        assert_eq!(header.len() % 4, 0);
    }

    #[test]
    fn rejects_each_kind_of_garbage() {
        assert_eq!(decode_payment("not base64 !!!"), Err(CodecError::NotBase64));
        assert!(matches!(
            decode_payment(&STANDARD.encode("{not json")),
            Err(CodecError::NotJson(_))
        ));
        assert_eq!(
            decode_payment(&STANDARD.encode("{}")),
            Err(CodecError::MissingVersion)
        );
        assert_eq!(
            decode_payment(&STANDARD.encode(r#"{"x402Version":3}"#)),
            Err(CodecError::UnsupportedVersion(3))
        );
        assert!(matches!(
            decode_payment(&STANDARD.encode(r#"{"x402Version":2,"payload":{}}"#)),
            Err(CodecError::BadShape { version: 2, .. })
        ));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// JSON without floats (serde_json reads floats without exact round-tripping, and no
        /// x402 field is one): nulls, booleans, integers, any strings, nested arrays and objects.
        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                any::<String>().prop_map(Value::from),
            ];
            leaf.prop_recursive(4, 32, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    prop::collection::vec((any::<String>(), inner), 0..6)
                        .prop_map(|kv| Value::Object(kv.into_iter().collect())),
                ]
            })
        }

        fn requirements() -> impl Strategy<Value = PaymentRequirements> {
            (
                any::<String>(),
                any::<String>(),
                "[0-9]{1,40}",
                any::<String>(),
                any::<String>(),
                any::<u64>(),
                prop::option::of(json_value()),
            )
                .prop_map(
                    |(scheme, network, amount, asset, pay_to, timeout, extra)| {
                        PaymentRequirements {
                            scheme,
                            network,
                            amount,
                            asset,
                            pay_to,
                            max_timeout_seconds: timeout,
                            // `Some(null)` is written as `null` and read back as `None`.
                            extra: extra.filter(|e| !e.is_null()),
                        }
                    },
                )
        }

        fn resource() -> impl Strategy<Value = ResourceInfo> {
            (
                any::<String>(),
                prop::option::of(any::<String>()),
                prop::option::of(any::<String>()),
            )
                .prop_map(|(url, description, mime_type)| ResourceInfo {
                    url,
                    description,
                    mime_type,
                })
        }

        fn payload_v2() -> impl Strategy<Value = PaymentPayload> {
            (
                prop::option::of(resource()),
                requirements(),
                json_value(),
                prop::option::of(json_value()),
            )
                .prop_map(|(resource, accepted, payload, extensions)| PaymentPayload {
                    x402_version: 2,
                    resource,
                    accepted,
                    payload,
                    extensions: extensions.filter(|e| !e.is_null()),
                })
        }

        fn payload_v1() -> impl Strategy<Value = PaymentPayloadV1> {
            (any::<String>(), any::<String>(), json_value()).prop_map(
                |(scheme, network, payload)| PaymentPayloadV1 {
                    x402_version: 1,
                    scheme,
                    network,
                    payload,
                },
            )
        }

        proptest! {
            /// Any v2 payload, encoded as a header, decodes to itself.
            #[test]
            fn v2_payloads_round_trip(p in payload_v2()) {
                let header = encode_header(&p);
                prop_assert_eq!(decode_payment(&header), Ok(PaymentProof::V2(Box::new(p))));
            }

            /// Any v1 payload, encoded as a header, decodes to itself.
            #[test]
            fn v1_payloads_round_trip(p in payload_v1()) {
                let header = encode_header(&p);
                prop_assert_eq!(decode_payment(&header), Ok(PaymentProof::V1(p)));
            }

            /// Every alphabet a client may use, padded or not, with surrounding whitespace,
            /// decodes to the same bytes; our own encoding is strict, padded standard base64.
            #[test]
            fn every_base64_variant_decodes(bytes in prop::collection::vec(any::<u8>(), 0..300), pad in "[ \t\r\n]{0,3}") {
                for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
                    let text = format!("{pad}{}{pad}", engine.encode(&bytes));
                    prop_assert_eq!(decode_base64(&text), Ok(bytes.clone()));
                }
                let ours = encode_header(&Value::from(STANDARD.encode(&bytes)));
                prop_assert!(ours.len() % 4 == 0);
                prop_assert!(ours.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')));
            }

            /// Challenges and receipts survive their header encoding too.
            #[test]
            fn challenges_and_receipts_round_trip(
                accepts in prop::collection::vec(requirements(), 0..4),
                resource in resource(),
                error in prop::option::of(any::<String>()),
                success in any::<bool>(),
                transaction in any::<String>(),
            ) {
                let challenge = PaymentRequired { x402_version: 2, error: error.clone(), resource, accepts, extensions: None };
                let back: PaymentRequired = serde_json::from_slice(&decode_base64(&encode_header(&challenge)).unwrap()).unwrap();
                prop_assert_eq!(back, challenge);
                let receipt = SettlementResponse { success, error_reason: error, transaction, network: "eip155:8453".into(), payer: None };
                let back: SettlementResponse = serde_json::from_slice(&decode_base64(&encode_header(&receipt)).unwrap()).unwrap();
                prop_assert_eq!(back, receipt);
            }

            /// Any text is decoded or refused with a typed error, never a panic; and any JSON
            /// value is classified by its `x402Version` alone.
            #[test]
            fn any_header_decodes_or_errs(text in "\\PC{0,200}", value in json_value(), version in prop::option::of(any::<u64>())) {
                let _ = decode_payment(&text);
                let mut value = value;
                if let (Value::Object(o), Some(v)) = (&mut value, version) {
                    o.insert("x402Version".into(), v.into());
                }
                match decode_payment(&STANDARD.encode(value.to_string())) {
                    Ok(proof) => prop_assert_eq!(Some(u64::from(proof.version())), value.get("x402Version").and_then(Value::as_u64)),
                    Err(CodecError::UnsupportedVersion(v)) => prop_assert!(v != 1 && v != 2),
                    Err(CodecError::MissingVersion) => prop_assert!(value.get("x402Version").and_then(Value::as_u64).is_none()),
                    Err(CodecError::BadShape { version, .. }) => prop_assert!(version == 1 || version == 2),
                    Err(e) => prop_assert!(false, "valid base64 JSON refused as {:?}", e),
                }
            }
        }
    }
}
