//! Stripe: webhook signatures, what each event means for a tenant's plan, and Checkout sessions.
//!
//! Signatures are checked exactly as Stripe documents ("Verify webhook signatures manually"): the
//! `Stripe-Signature` header is `t=<unix seconds>,v1=<hex>[,v1=<hex>...]` (other schemes such as
//! `v0` are ignored); the expected signature is HMAC-SHA256, keyed with the endpoint secret
//! (`whsec_...`, the whole string), over `"{t}.{raw body}"`. Any `v1` matching any configured
//! secret passes (Stripe signs with both secrets while one is being rolled), compared in constant
//! time; then the timestamp must be within the tolerance of now, so a captured delivery cannot be
//! replayed later. The raw body is what is signed: it is verified before it is parsed.

use std::collections::BTreeMap;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::FREE_TIER;
use crate::config::{Secret, StripeConfig};
use crate::store::{BillingStatus, StripeUpdate};

/// Why a webhook delivery is refused (a 400: Stripe retries it, and shows the failure).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no Stripe-Signature header")]
    Missing,
    #[error("the Stripe-Signature header has no t= timestamp")]
    NoTimestamp,
    #[error("the Stripe-Signature header has no v1= signature")]
    NoSignature,
    #[error("the Stripe-Signature header is malformed: {0}")]
    Malformed(&'static str),
    #[error("no v1 signature matches a configured webhook secret")]
    Mismatch,
    #[error("the signature's timestamp is {age} s from now; the tolerance is {tolerance} s")]
    Stale { age: i64, tolerance: u64 },
}

/// A parsed `Stripe-Signature` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    pub timestamp: i64,
    /// Every `v1` signature, decoded from hex.
    pub v1: Vec<Vec<u8>>,
}

/// Parses `t=…,v1=…[,v1=…]`. Unknown schemes (`v0`) are skipped, as Stripe's libraries do; a
/// `v1` that is not hex cannot match anything and is dropped.
pub fn parse_signature_header(header: &str) -> Result<SignatureHeader, SignatureError> {
    let mut timestamp = None;
    let mut v1 = Vec::new();
    for item in header.split(',') {
        let Some((key, value)) = item.trim().split_once('=') else {
            return Err(SignatureError::Malformed("an item is not key=value"));
        };
        match key {
            "t" => {
                if timestamp.is_some() {
                    return Err(SignatureError::Malformed("more than one t="));
                }
                timestamp = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| SignatureError::Malformed("t= is not a number"))?,
                );
            }
            "v1" => {
                if let Some(bytes) = decode_hex(value) {
                    v1.push(bytes);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::NoTimestamp)?;
    if v1.is_empty() {
        return Err(SignatureError::NoSignature);
    }
    Ok(SignatureHeader { timestamp, v1 })
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// The `v1` signature Stripe computes: HMAC-SHA256(secret, "{t}.{body}").
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// Verifies a delivery: some `v1` matches some secret (constant time), and the timestamp is
/// within `tolerance` of `now`. The signature is checked first, so a forged header learns
/// nothing from the timestamp check.
pub fn verify_signature(
    header: Option<&str>,
    body: &[u8],
    secrets: &[Secret],
    tolerance: Duration,
    now: i64,
) -> Result<SignatureHeader, SignatureError> {
    let parsed = parse_signature_header(header.ok_or(SignatureError::Missing)?)?;
    let mut matched = subtle::Choice::from(0u8);
    // Every pair is compared, whatever matched earlier: the time taken does not depend on which.
    for secret in secrets {
        let expected = sign(secret.expose(), parsed.timestamp, body);
        for candidate in &parsed.v1 {
            matched |= expected.as_slice().ct_eq(candidate.as_slice());
        }
    }
    if !bool::from(matched) {
        return Err(SignatureError::Mismatch);
    }
    let age = now - parsed.timestamp;
    let tolerance = tolerance.as_secs();
    if age.unsigned_abs() > tolerance {
        return Err(SignatureError::Stale { age, tolerance });
    }
    Ok(parsed)
}

/// A webhook body that is signed but not an event we can read (a 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the body is not JSON: {0}")]
    Json(String),
    #[error("the event has no {0}")]
    Missing(&'static str),
}

/// The parts of a Stripe event this gateway reads.
#[derive(Debug, Clone, PartialEq)]
pub struct StripeEvent {
    pub id: String,
    pub event_type: String,
    pub created: i64,
    /// `data.object`: a subscription or an invoice.
    pub object: Value,
}

pub fn parse_event(body: &[u8]) -> Result<StripeEvent, EventError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| EventError::Json(e.to_string()))?;
    Ok(StripeEvent {
        id: v["id"]
            .as_str()
            .ok_or(EventError::Missing("id"))?
            .to_string(),
        event_type: v["type"]
            .as_str()
            .ok_or(EventError::Missing("type"))?
            .to_string(),
        created: v["created"]
            .as_i64()
            .ok_or(EventError::Missing("created"))?,
        object: v["data"]["object"].clone(),
    })
}

/// Why a signed event changes nothing and is not recorded. Answered 200: Stripe retries any
/// other status for days, and a retry would be ignored again. Not recording it means the
/// operator can resend it from Stripe's dashboard once the config knows its price.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    #[error("event type `{0}` does not concern plans")]
    EventType(String),
    #[error("no price of the subscription is in billing.stripe.prices ({0})")]
    UnknownPrice(String),
    #[error("subscription status `{0}`: nothing is paid yet")]
    NotPaidYet(String),
    #[error("unknown subscription status `{0}`")]
    UnknownStatus(String),
    #[error("the object carries neither metadata.tenant_id nor a subscription id")]
    NoTenant,
}

fn text(v: &Value) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

/// An id field that Stripe sends as a string, or as the expanded object.
fn id_of(v: &Value) -> Option<String> {
    text(v).or_else(|| text(&v["id"]))
}

/// The prices of a subscription's items, in order.
fn subscription_prices(sub: &Value) -> Vec<String> {
    sub["items"]["data"]
        .as_array()
        .map(|items| items.iter().filter_map(|i| id_of(&i["price"])).collect())
        .unwrap_or_default()
}

/// The tier and billing status a subscription in `status` with `tier` (its price's, if known)
/// means. `Err` when it means nothing to apply.
pub fn subscription_effect(
    status: &str,
    tier: Option<&str>,
    prices: &[String],
) -> Result<(Option<String>, BillingStatus), Ignored> {
    match status {
        "active" | "trialing" => match tier {
            Some(t) => Ok((Some(t.to_string()), BillingStatus::Active)),
            None => Err(Ignored::UnknownPrice(prices.join(", "))),
        },
        // Stripe is retrying the renewal: the tenant keeps what it paid for meanwhile.
        "past_due" => Ok((None, BillingStatus::PastDue)),
        // Retries exhausted, cancelled, never completed, or paused: back to the free plan.
        "unpaid" | "canceled" | "incomplete_expired" | "paused" => {
            Ok((Some(FREE_TIER.to_string()), BillingStatus::Canceled))
        }
        "incomplete" => Err(Ignored::NotPaidYet(status.to_string())),
        other => Err(Ignored::UnknownStatus(other.to_string())),
    }
}

/// What an event does to its tenant's plan (see the table in `billing`'s module doc), or why
/// it does nothing. Pure: the store applies the result.
pub fn interpret(
    event: &StripeEvent,
    prices: &BTreeMap<String, String>,
) -> Result<StripeUpdate, Ignored> {
    let obj = &event.object;
    let (tenant, subscription, customer, tier, status) = match event.event_type.as_str() {
        "customer.subscription.created" | "customer.subscription.updated" => {
            let listed = subscription_prices(obj);
            let tier = listed
                .iter()
                .find_map(|p| prices.get(p))
                .map(String::as_str);
            let status = obj["status"].as_str().unwrap_or_default();
            let (tier, status) = subscription_effect(status, tier, &listed)?;
            (
                text(&obj["metadata"]["tenant_id"]),
                text(&obj["id"]),
                id_of(&obj["customer"]),
                tier,
                status,
            )
        }
        "customer.subscription.deleted" => (
            text(&obj["metadata"]["tenant_id"]),
            text(&obj["id"]),
            id_of(&obj["customer"]),
            Some(FREE_TIER.to_string()),
            BillingStatus::Canceled,
        ),
        "invoice.payment_failed" => {
            // The invoice names its subscription at the top level (API versions before
            // 2025-03-31) or under `parent.subscription_details` (since); the subscription's
            // metadata is copied there too.
            let details = if obj["parent"]["subscription_details"].is_object() {
                &obj["parent"]["subscription_details"]
            } else {
                &obj["subscription_details"]
            };
            (
                text(&details["metadata"]["tenant_id"]),
                id_of(&details["subscription"]).or_else(|| id_of(&obj["subscription"])),
                id_of(&obj["customer"]),
                None,
                BillingStatus::PastDue,
            )
        }
        other => return Err(Ignored::EventType(other.to_string())),
    };
    if tenant.is_none() && subscription.is_none() {
        return Err(Ignored::NoTenant);
    }
    Ok(StripeUpdate {
        event_id: event.id.clone(),
        event_type: event.event_type.clone(),
        created: event.created,
        tenant,
        subscription,
        customer,
        tier,
        status,
    })
}

/// Why a Checkout session could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("billing.stripe.api_key is not configured")]
    NotConfigured,
    #[error("tier `{0}` is not sold through Stripe (no price in billing.stripe.prices)")]
    NotForSale(String),
    /// Stripe answered with an error (its message; the key is never in it).
    #[error("Stripe refused the session ({status}): {message}")]
    Refused { status: u16, message: String },
    /// Stripe could not be reached, or answered something unreadable.
    #[error("Stripe is unreachable: {0}")]
    Unreachable(String),
}

/// A created Checkout session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutSession {
    pub id: String,
    pub url: String,
}

/// The form fields of a subscription Checkout session for `tenant` buying `price`. The tenant id
/// goes into `subscription_data[metadata][tenant_id]`, so every subscription event names it.
pub fn checkout_form(
    cfg: &StripeConfig,
    tenant: &str,
    email: Option<&str>,
    price: &str,
) -> Vec<(&'static str, String)> {
    let mut form = vec![
        ("mode", "subscription".to_string()),
        ("line_items[0][price]", price.to_string()),
        ("line_items[0][quantity]", "1".to_string()),
        ("success_url", cfg.success_url.clone().unwrap_or_default()),
        ("cancel_url", cfg.cancel_url.clone().unwrap_or_default()),
        ("client_reference_id", tenant.to_string()),
        ("subscription_data[metadata][tenant_id]", tenant.to_string()),
        ("metadata[tenant_id]", tenant.to_string()),
    ];
    if let Some(email) = email {
        form.push(("customer_email", email.to_string()));
    }
    form
}

/// Calls Stripe's API at `billing.stripe.api_base`.
pub struct StripeClient {
    http: reqwest::Client,
}

impl Default for StripeClient {
    fn default() -> Self {
        StripeClient {
            http: reqwest::Client::builder()
                // A tenant waits on this call: fail within a bounded time.
                .timeout(Duration::from_secs(15))
                .build()
                .expect("the HTTP client builds"),
        }
    }
}

impl StripeClient {
    /// Creates a subscription Checkout session for `tenant` to buy `tier`.
    pub async fn create_checkout_session(
        &self,
        cfg: &StripeConfig,
        tenant: &str,
        email: Option<&str>,
        tier: &str,
    ) -> Result<CheckoutSession, CheckoutError> {
        let key = cfg.api_key.as_ref().ok_or(CheckoutError::NotConfigured)?;
        let price = cfg
            .checkout_prices
            .get(tier)
            .ok_or_else(|| CheckoutError::NotForSale(tier.to_string()))?;
        let resp = self
            .http
            .post(format!("{}/v1/checkout/sessions", cfg.api_base))
            .bearer_auth(key.expose())
            .form(&checkout_form(cfg, tenant, email, price))
            .send()
            .await
            .map_err(|e| CheckoutError::Unreachable(crate::x402::redact::scrub(&e.to_string())))?;
        let status = resp.status().as_u16();
        let body: Value = resp
            .json()
            .await
            .map_err(|e| CheckoutError::Unreachable(format!("unreadable answer: {e}")))?;
        if !(200..300).contains(&status) {
            return Err(CheckoutError::Refused {
                status,
                message: body["error"]["message"]
                    .as_str()
                    .unwrap_or("no message")
                    .to_string(),
            });
        }
        match (text(&body["id"]), text(&body["url"])) {
            (Some(id), Some(url)) => Ok(CheckoutSession { id, url }),
            _ => Err(CheckoutError::Unreachable(
                "the answer has no session id or url".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn secrets(s: &[&str]) -> Vec<Secret> {
        s.iter().map(|s| Secret::new(*s)).collect()
    }

    const BODY: &[u8] = br#"{"id":"evt_1","type":"customer.subscription.updated"}"#;
    const TOL: Duration = Duration::from_secs(300);

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Computed apart from this code: python3 hmac.new(b"whsec_test", b"1700000000.{}", sha256).
        assert_eq!(
            hex(&sign("whsec_test", 1_700_000_000, b"{}")),
            "35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91"
        );
    }

    #[test]
    fn a_valid_signature_passes_with_any_secret_and_any_v1() {
        let t = 1_700_000_000;
        let good = hex(&sign("whsec_new", t, BODY));
        let header = format!("t={t},v1={},v1={good},v0=abc", "00".repeat(32));
        let ok = verify_signature(
            Some(&header),
            BODY,
            &secrets(&["whsec_old", "whsec_new"]),
            TOL,
            t + 10,
        )
        .unwrap();
        assert_eq!(ok.timestamp, t);
        assert_eq!(ok.v1.len(), 2);
    }

    #[test]
    fn tampering_a_wrong_secret_and_staleness_are_refused() {
        let t = 1_700_000_000;
        let header = format!("t={t},v1={}", hex(&sign("whsec_a", t, BODY)));
        let s = secrets(&["whsec_a"]);
        assert_eq!(
            verify_signature(Some(&header), b"{\"id\":\"evt_2\"}", &s, TOL, t),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(Some(&header), BODY, &secrets(&["whsec_b"]), TOL, t),
            Err(SignatureError::Mismatch)
        );
        // The timestamp is signed: moving it breaks the signature.
        let moved = header.replace(&format!("t={t}"), &format!("t={}", t + 1));
        assert_eq!(
            verify_signature(Some(&moved), BODY, &s, TOL, t),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(Some(&header), BODY, &s, TOL, t + 301),
            Err(SignatureError::Stale {
                age: 301,
                tolerance: 300
            })
        );
        assert!(verify_signature(Some(&header), BODY, &s, TOL, t + 300).is_ok());
        assert!(verify_signature(Some(&header), BODY, &s, TOL, t - 301).is_err());
    }

    #[test]
    fn malformed_headers() {
        let s = secrets(&["k"]);
        let v = |h: Option<&str>| verify_signature(h, BODY, &s, TOL, 0).unwrap_err();
        assert_eq!(v(None), SignatureError::Missing);
        assert_eq!(v(Some("v1=00")), SignatureError::NoTimestamp);
        assert_eq!(v(Some("t=1")), SignatureError::NoSignature);
        assert_eq!(v(Some("t=1,v1=zz")), SignatureError::NoSignature);
        assert!(matches!(v(Some("t=x,v1=00")), SignatureError::Malformed(_)));
        assert!(matches!(v(Some("garbage")), SignatureError::Malformed(_)));
        assert!(matches!(
            v(Some("t=1,t=2,v1=00")),
            SignatureError::Malformed(_)
        ));
    }

    fn event(kind: &str, object: Value) -> StripeEvent {
        StripeEvent {
            id: "evt_1".into(),
            event_type: kind.into(),
            created: 100,
            object,
        }
    }

    fn sub(status: &str, price: &str) -> Value {
        json!({"id": "sub_1", "object": "subscription", "customer": "cus_1", "status": status,
            "metadata": {"tenant_id": "acme"},
            "items": {"data": [{"price": {"id": price}}]}})
    }

    fn table() -> BTreeMap<String, String> {
        [("price_pro".to_string(), "pro".to_string())].into()
    }

    #[test]
    fn subscription_events_map_to_tier_and_status() {
        let u = interpret(
            &event("customer.subscription.created", sub("active", "price_pro")),
            &table(),
        )
        .unwrap();
        assert_eq!(u.tenant.as_deref(), Some("acme"));
        assert_eq!(u.subscription.as_deref(), Some("sub_1"));
        assert_eq!(u.customer.as_deref(), Some("cus_1"));
        assert_eq!(u.tier.as_deref(), Some("pro"));
        assert_eq!(u.status, BillingStatus::Active);
        assert_eq!(u.created, 100);

        let trial = interpret(
            &event(
                "customer.subscription.updated",
                sub("trialing", "price_pro"),
            ),
            &table(),
        )
        .unwrap();
        assert_eq!(
            (trial.tier.as_deref(), trial.status),
            (Some("pro"), BillingStatus::Active)
        );
        let past_due = interpret(
            &event(
                "customer.subscription.updated",
                sub("past_due", "price_pro"),
            ),
            &table(),
        )
        .unwrap();
        assert_eq!(
            (past_due.tier, past_due.status),
            (None, BillingStatus::PastDue)
        );
        for lapsed in ["unpaid", "canceled", "incomplete_expired", "paused"] {
            let u = interpret(
                &event("customer.subscription.updated", sub(lapsed, "price_pro")),
                &table(),
            )
            .unwrap();
            assert_eq!(
                (u.tier.as_deref(), u.status),
                (Some("free"), BillingStatus::Canceled),
                "{lapsed}"
            );
        }
        let deleted = interpret(
            &event(
                "customer.subscription.deleted",
                sub("canceled", "price_gone"),
            ),
            &table(),
        )
        .unwrap();
        assert_eq!(deleted.tier.as_deref(), Some("free"));
    }

    #[test]
    fn what_is_ignored() {
        let t = table();
        assert_eq!(
            interpret(
                &event("customer.subscription.created", sub("active", "price_x")),
                &t
            ),
            Err(Ignored::UnknownPrice("price_x".into()))
        );
        assert_eq!(
            interpret(
                &event(
                    "customer.subscription.created",
                    sub("incomplete", "price_pro")
                ),
                &t
            ),
            Err(Ignored::NotPaidYet("incomplete".into()))
        );
        assert!(matches!(
            interpret(&event("charge.succeeded", json!({})), &t),
            Err(Ignored::EventType(_))
        ));
        assert_eq!(
            interpret(
                &event(
                    "customer.subscription.updated",
                    json!({"status": "active", "items": {"data": [{"price": "price_pro"}]}})
                ),
                &t
            ),
            Err(Ignored::NoTenant)
        );
    }

    #[test]
    fn failed_invoices_find_their_subscription_in_either_api_version() {
        let old = json!({"object": "invoice", "customer": "cus_1", "subscription": "sub_1",
            "subscription_details": {"metadata": {"tenant_id": "acme"}}});
        let new = json!({"object": "invoice", "customer": "cus_1",
            "parent": {"subscription_details": {"subscription": "sub_1", "metadata": {"tenant_id": "acme"}}}});
        let bare = json!({"object": "invoice", "subscription": "sub_1"});
        for inv in [old, new, bare] {
            let u = interpret(&event("invoice.payment_failed", inv.clone()), &table()).unwrap();
            assert_eq!(u.subscription.as_deref(), Some("sub_1"), "{inv}");
            assert_eq!((u.tier, u.status), (None, BillingStatus::PastDue));
        }
    }

    #[test]
    fn checkout_form_names_the_tenant_everywhere_stripe_carries_it() {
        let cfg = StripeConfig {
            webhook_secrets: vec![],
            api_key: Some(Secret::new("sk_test")),
            api_base: "http://x".into(),
            tolerance: TOL,
            success_url: Some("https://app/ok".into()),
            cancel_url: Some("https://app/no".into()),
            prices: table(),
            checkout_prices: [("pro".to_string(), "price_pro".to_string())].into(),
        };
        let form: BTreeMap<_, _> = checkout_form(&cfg, "acme", Some("a@b.c"), "price_pro")
            .into_iter()
            .collect();
        assert_eq!(form["mode"], "subscription");
        assert_eq!(form["line_items[0][price]"], "price_pro");
        assert_eq!(form["client_reference_id"], "acme");
        assert_eq!(form["subscription_data[metadata][tenant_id]"], "acme");
        assert_eq!(form["success_url"], "https://app/ok");
        assert_eq!(form["customer_email"], "a@b.c");
    }
}
