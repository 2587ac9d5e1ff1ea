//! The first step of taking a payment: the presented header decoded and matched against the
//! offers. Pure; its callers (the proxy, the management API's priced endpoints) render what it
//! finds. Headers are `http` types, which both listeners' frameworks use.

use http::{HeaderMap, HeaderName};

use super::Rejection;
use crate::pricing::{Offer, Offers};
use crate::x402::{self, CodecError, PaymentProof, Reason};

/// What the payment header of a request to a priced route amounts to.
#[derive(Debug)]
pub enum PaymentCheck<'a> {
    /// No payment header: answer with the challenge.
    Missing,
    /// A header that cannot be accepted: answer with the challenge and the reason.
    Rejected(Rejection),
    /// A well-formed proof for one of our offers; it still has to be verified.
    Matched {
        offer: &'a Offer,
        proof: PaymentProof,
        /// Which header carried it, so the receipt goes back in the matching one.
        header: &'static str,
    },
}

/// Finds the payment header: `PAYMENT-SIGNATURE` (v2) first, then `X-PAYMENT` (v1).
pub fn payment_header(headers: &HeaderMap) -> Option<(&'static str, &[u8])> {
    // Looked up by `HeaderName`: a name given as text is parsed again on every lookup, and
    // every request to a priced route asks for both.
    static NAMES: [(HeaderName, &str); 2] = [
        (
            HeaderName::from_static(x402::PAYMENT_SIGNATURE),
            x402::PAYMENT_SIGNATURE,
        ),
        (HeaderName::from_static(x402::X_PAYMENT), x402::X_PAYMENT),
    ];
    NAMES
        .iter()
        .find_map(|(key, name)| headers.get(key).map(|v| (*name, v.as_bytes())))
}

/// Decodes and matches a payment header against a route's offers.
pub fn check_payment<'a>(
    offers: &'a Offers,
    header: Option<(&'static str, &[u8])>,
    max_header_bytes: usize,
) -> PaymentCheck<'a> {
    let Some((name, value)) = header else {
        return PaymentCheck::Missing;
    };
    if value.len() > max_header_bytes {
        return PaymentCheck::Rejected(Rejection::new(
            Reason::PayloadTooLarge,
            format!(
                "the {name} header is {} bytes; the limit is {max_header_bytes}",
                value.len()
            ),
        ));
    }
    let Ok(text) = std::str::from_utf8(value) else {
        return PaymentCheck::Rejected(Rejection::new(
            Reason::InvalidPayload,
            "the payment header is not ASCII",
        ));
    };
    let proof = match x402::decode_payment(text) {
        Ok(p) => p,
        Err(e) => {
            let reason = match e {
                CodecError::UnsupportedVersion(_) => Reason::InvalidX402Version,
                _ => Reason::InvalidPayload,
            };
            return PaymentCheck::Rejected(Rejection::new(reason, e.to_string()));
        }
    };
    if proof.scheme() != "exact" {
        return PaymentCheck::Rejected(Rejection::new(
            Reason::UnsupportedScheme,
            format!(
                "scheme `{}` is not offered here; use `exact`",
                proof.scheme()
            ),
        ));
    }
    match offers.match_proof(&proof) {
        Some(offer) => PaymentCheck::Matched {
            offer,
            proof,
            header: name,
        },
        None => PaymentCheck::Rejected(Rejection::new(
            Reason::NoMatchingRequirements,
            "the payment does not match any of this route's payment requirements",
        )),
    }
}
