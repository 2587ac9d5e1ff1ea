//! Plan billing against the real gateway: Stripe webhooks signed by the test exactly as Stripe
//! signs them (HMAC-SHA256 over "{t}.{body}" with the endpoint secret), Checkout sessions created
//! against a local HTTP server standing in for Stripe's API (it records each request), and a plan
//! paid with x402 on a real local chain.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::chain::*;
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use x402_gate::store::Store;

const OLD_SECRET: &str = "whsec_old_0123456789";
const NEW_SECRET: &str = "whsec_new_9876543210";
const API_KEY: &str = "sk_test_billing_123";

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `Stripe-Signature` as Stripe computes it.
fn stripe_signature(secret: &str, t: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    format!(
        "t={t},v1={}",
        alloy::hex::encode(mac.finalize().into_bytes())
    )
}

/// A subscription event as Stripe sends it (the fields this gateway reads, and some it does not).
fn subscription_event(id: &str, kind: &str, created: i64, status: &str, price: &str) -> String {
    json!({
        "id": id,
        "object": "event",
        "api_version": "2024-06-20",
        "created": created,
        "type": kind,
        "livemode": false,
        "data": {"object": {
            "id": "sub_1Test",
            "object": "subscription",
            "customer": "cus_Test",
            "status": status,
            "metadata": {"tenant_id": "acme"},
            "items": {"object": "list", "data": [{"id": "si_1", "price": {"id": price, "object": "price"}, "quantity": 1}]}
        }}
    })
    .to_string()
}

/// A config with two networks: Base Sepolia (in every tier) and Ethereum (starter and up), so a
/// tier change shows in the route's challenge.
fn stripe_config(api_base: &str) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"
admin_listen = "{{admin}}"
metrics_listen = "{{metrics}}"
threads = 1

[admin]
token = "{ADMIN_TOKEN}"

[networks."eip155:84532"]
rpc_url = "http://127.0.0.1:1"
settler_key = "{SETTLER_KEY}"
assets = [{{ symbol = "USDC", address = "{USDC_BASE_SEPOLIA}", decimals = 6, eip712_name = "USDC", eip712_version = "2" }}]

[networks."eip155:1"]
rpc_url = "http://127.0.0.1:1"
settler_key = "{SETTLER_KEY}"
assets = [{{ symbol = "USDC", address = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48", decimals = 6, eip712_name = "USD Coin", eip712_version = "2" }}]

[[tenants]]
id = "acme"
email = "billing@acme.test"
pay_to = {{ "eip155:84532" = "{PAY_TO}", "eip155:1" = "{PAY_TO}" }}

[[routes]]
tenant = "acme"
path = "/paid/*"
upstream = "http://127.0.0.1:1"
price = "$0.01"

[billing.stripe]
webhook_secrets = ["{OLD_SECRET}", "{NEW_SECRET}"]
api_key = "{API_KEY}"
api_base = "{api_base}"
success_url = "https://app.example/billing/done"
cancel_url = "https://app.example/billing"
prices = {{ price_pro = "pro", price_starter = "starter" }}
"#
    )
}

struct Webhooks {
    gw: Gateway,
    key: String,
}

async fn api_key(gw: &Gateway, tenant: &str) -> String {
    let resp = client()
        .post(gw.admin_url(&format!("/api/v1/x402/admin/tenants/{tenant}/keys")))
        .header("x-admin-key", ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    resp.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn webhooks(api_base: &str) -> Webhooks {
    let gw = Gateway::start(&stripe_config(api_base));
    let key = api_key(&gw, "acme").await;
    Webhooks { gw, key }
}

impl Webhooks {
    async fn deliver(&self, body: &str, signature: Option<String>) -> (u16, Value) {
        let mut req = client()
            .post(self.gw.admin_url("/api/v1/x402/billing/stripe/webhook"))
            .header("content-type", "application/json; charset=utf-8")
            .body(body.to_string());
        if let Some(sig) = signature {
            req = req.header("stripe-signature", sig);
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    /// Delivered now, signed with the new secret.
    async fn send(&self, body: &str) -> (u16, Value) {
        self.deliver(body, Some(stripe_signature(NEW_SECRET, unix_now(), body)))
            .await
    }

    async fn tier(&self) -> String {
        let v: Value = client()
            .get(self.gw.admin_url("/api/v1/x402/billing"))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["tier"].as_str().unwrap().to_string()
    }

    async fn billing(&self) -> Value {
        client()
            .get(self.gw.admin_url("/api/v1/x402/billing"))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The networks the priced route offers now.
    async fn offered(&self) -> Vec<String> {
        let resp = client().get(self.gw.url("/paid/x")).send().await.unwrap();
        assert_eq!(resp.status(), 402);
        let v2 = decode_b64_json(resp.headers()["payment-required"].to_str().unwrap());
        v2["accepts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["network"].as_str().unwrap().to_string())
            .collect()
    }

    async fn ethereum_allowed(&self) -> (String, bool) {
        let v: Value = client()
            .get(self.gw.admin_url("/api/v1/x402/supported-chains"))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let eth = v["chains"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["network"] == "eip155:1")
            .unwrap()["allowed"]
            .as_bool()
            .unwrap();
        (v["tier"].as_str().unwrap().to_string(), eth)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_sets_the_tier_at_once_in_challenges_and_supported_chains() {
    let w = webhooks("http://127.0.0.1:1").await;
    assert_eq!(w.offered().await, ["eip155:84532"]);
    assert_eq!(w.ethereum_allowed().await, ("free".into(), false));

    let body = subscription_event(
        "evt_created",
        "customer.subscription.created",
        unix_now(),
        "active",
        "price_pro",
    );
    let (status, ack) = w.send(&body).await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["outcome"], "applied");

    // No waiting: the very next challenge and supported-chains follow the new tier.
    assert_eq!(w.offered().await, ["eip155:1", "eip155:84532"]);
    assert_eq!(w.ethereum_allowed().await, ("pro".into(), true));
    let billing = w.billing().await;
    assert_eq!(billing["source"], "stripe");
    assert_eq!(billing["status"], "active");

    // Cancelled: back to free, again at once.
    let body = subscription_event(
        "evt_deleted",
        "customer.subscription.deleted",
        unix_now(),
        "canceled",
        "price_pro",
    );
    assert_eq!(w.send(&body).await.1["outcome"], "applied");
    assert_eq!(w.offered().await, ["eip155:84532"]);
    assert_eq!(w.billing().await["status"], "canceled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_are_verified_as_stripe_signs_them() {
    let w = webhooks("http://127.0.0.1:1").await;
    let now = unix_now();
    let body = subscription_event(
        "evt_sig",
        "customer.subscription.updated",
        now,
        "active",
        "price_pro",
    );
    let refused = |(status, v): (u16, Value)| {
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["error"], "invalid_signature", "{v}");
    };
    // Tampered: signed, then the price changed.
    let sig = stripe_signature(NEW_SECRET, now, &body);
    refused(
        w.deliver(
            &body.replace("price_pro", "price_starter"),
            Some(sig.clone()),
        )
        .await,
    );
    // The signature moved to another timestamp.
    refused(
        w.deliver(
            &body,
            Some(sig.replace(&format!("t={now}"), &format!("t={}", now + 1))),
        )
        .await,
    );
    // A secret that is not configured.
    refused(
        w.deliver(&body, Some(stripe_signature("whsec_other", now, &body)))
            .await,
    );
    // Stale: signed correctly, six minutes ago (the tolerance is five).
    let old = now - 360;
    refused(
        w.deliver(&body, Some(stripe_signature(NEW_SECRET, old, &body)))
            .await,
    );
    // No header at all.
    refused(w.deliver(&body, None).await);
    assert_eq!(w.tier().await, "free", "nothing refused was applied");

    // Rotation: the first secret signs, alongside a v1 from a secret we do not hold.
    let mut header = stripe_signature(OLD_SECRET, now, &body);
    header.push_str(&format!(",v1={}", "ab".repeat(32)));
    let (status, ack) = w.deliver(&body, Some(header)).await;
    assert_eq!((status, ack["outcome"].as_str()), (200, Some("applied")));
    assert_eq!(w.tier().await, "pro");
    // And the second one.
    let body2 = subscription_event(
        "evt_sig2",
        "customer.subscription.updated",
        now + 1,
        "active",
        "price_starter",
    );
    let (status, _) = w
        .deliver(&body2, Some(stripe_signature(NEW_SECRET, now, &body2)))
        .await;
    assert_eq!(status, 200);
    assert_eq!(w.tier().await, "starter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_applies_once_and_never_out_of_order() {
    let w = webhooks("http://127.0.0.1:1").await;
    let t = unix_now() - 1000;
    let store = Store::connect(&w.gw.database_url).await.unwrap();

    let created = subscription_event(
        "evt_1",
        "customer.subscription.created",
        t,
        "active",
        "price_starter",
    );
    assert_eq!(w.send(&created).await.1["outcome"], "applied");
    assert_eq!(w.tier().await, "starter");

    // The newer update (an upgrade) arrives before an older one (a cancellation).
    let newer = subscription_event(
        "evt_3",
        "customer.subscription.updated",
        t + 200,
        "active",
        "price_pro",
    );
    let older = subscription_event(
        "evt_2",
        "customer.subscription.updated",
        t + 100,
        "canceled",
        "price_starter",
    );
    assert_eq!(w.send(&newer).await.1["outcome"], "applied");
    assert_eq!(w.send(&older).await.1["outcome"], "stale");
    assert_eq!(
        w.tier().await,
        "pro",
        "an older event must not regress the tier"
    );
    assert_eq!(
        store
            .billing_event_outcome("evt_2")
            .await
            .unwrap()
            .as_deref(),
        Some("stale")
    );

    // Replayed: Stripe delivers again (freshly signed), the event id is the same.
    let downgrade = subscription_event(
        "evt_4",
        "customer.subscription.updated",
        t + 300,
        "active",
        "price_starter",
    );
    assert_eq!(w.send(&downgrade).await.1["outcome"], "applied");
    assert_eq!(w.tier().await, "starter");
    // The operator moves the tenant by hand meanwhile; a replay must not undo it.
    let patched = client()
        .patch(w.gw.admin_url("/api/v1/x402/admin/tenants/acme"))
        .header("x-admin-key", ADMIN_TOKEN)
        .json(&json!({"tier": "enterprise"}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let (status, ack) = w.send(&downgrade).await;
    assert_eq!((status, ack["outcome"].as_str()), (200, Some("duplicate")));
    assert_eq!(w.tier().await, "enterprise");

    // A failed renewal invoice, naming only its subscription: the tier is kept, past_due.
    let invoice = json!({
        "id": "evt_5", "object": "event", "created": t + 400, "type": "invoice.payment_failed",
        "data": {"object": {"id": "in_1", "object": "invoice", "customer": "cus_Test",
            "subscription": "sub_1Test", "attempt_count": 1}}
    })
    .to_string();
    assert_eq!(w.send(&invoice).await.1["outcome"], "applied");
    assert_eq!(w.tier().await, "enterprise");
    assert_eq!(w.billing().await["status"], "past_due");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_price_is_acknowledged_and_ignored() {
    let w = webhooks("http://127.0.0.1:1").await;
    let body = subscription_event(
        "evt_unknown",
        "customer.subscription.created",
        unix_now(),
        "active",
        "price_not_configured",
    );
    // 200: Stripe would retry anything else for days, to the same result.
    let (status, ack) = w.send(&body).await;
    assert_eq!(status, 200);
    assert_eq!(ack["outcome"], "ignored");
    assert!(
        ack["detail"]
            .as_str()
            .unwrap()
            .contains("price_not_configured"),
        "{ack}"
    );
    assert_eq!(w.tier().await, "free");
    // Not recorded: once the price is configured, the event can be resent from Stripe.
    let store = Store::connect(&w.gw.database_url).await.unwrap();
    assert_eq!(
        store.billing_event_outcome("evt_unknown").await.unwrap(),
        None
    );
    // An event type that does not concern plans is acknowledged too.
    let other = json!({"id": "evt_c", "object": "event", "created": unix_now(),
        "type": "charge.succeeded", "data": {"object": {}}})
    .to_string();
    assert_eq!(w.send(&other).await.1["outcome"], "ignored");
}

/// One request Stripe's stand-in received.
#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    authorization: String,
    content_type: String,
    form: Vec<(String, String)>,
}

/// A local HTTP server standing in for Stripe's API: records every request and answers
/// `POST /v1/checkout/sessions` as Stripe does.
async fn fake_stripe() -> (String, Arc<Mutex<Vec<Recorded>>>) {
    use axum::extract::Request;
    let seen: Arc<Mutex<Vec<Recorded>>> = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |req: Request| {
        let log = log.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            let header = |n: &str| {
                parts
                    .headers
                    .get(n)
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default()
            };
            log.lock().unwrap().push(Recorded {
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
                authorization: header("authorization"),
                content_type: header("content-type"),
                form: url::form_urlencoded::parse(&bytes).into_owned().collect(),
            });
            axum::Json(json!({
                "id": "cs_test_a1", "object": "checkout.session", "mode": "subscription",
                "url": "https://checkout.stripe.com/c/pay/cs_test_a1"
            }))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_creates_a_subscription_session_at_the_configured_stripe() {
    let (base, seen) = fake_stripe().await;
    let w = webhooks(&base).await;
    let resp = client()
        .post(w.gw.admin_url("/api/v1/x402/billing/checkout"))
        .bearer_auth(&w.key)
        .json(&json!({"tier": "pro"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["id"], "cs_test_a1");
    assert_eq!(v["url"], "https://checkout.stripe.com/c/pay/cs_test_a1");

    let recorded = seen.lock().unwrap().clone();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let r = &recorded[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/checkout/sessions");
    assert_eq!(r.authorization, format!("Bearer {API_KEY}"));
    assert_eq!(r.content_type, "application/x-www-form-urlencoded");
    let field = |k: &str| {
        r.form
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {k} in {:?}", r.form))
    };
    assert_eq!(field("mode"), "subscription");
    assert_eq!(field("line_items[0][price]"), "price_pro");
    assert_eq!(field("line_items[0][quantity]"), "1");
    assert_eq!(field("success_url"), "https://app.example/billing/done");
    assert_eq!(field("cancel_url"), "https://app.example/billing");
    assert_eq!(field("client_reference_id"), "acme");
    assert_eq!(field("subscription_data[metadata][tenant_id]"), "acme");
    assert_eq!(field("customer_email"), "billing@acme.test");

    // A tier with no Stripe price is not for sale, and Stripe is not called.
    let resp = client()
        .post(w.gw.admin_url("/api/v1/x402/billing/checkout"))
        .bearer_auth(&w.key)
        .json(&json!({"tier": "enterprise"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "not_for_sale");
    assert_eq!(seen.lock().unwrap().len(), 1);
    // Without a key: 401, Stripe not called.
    let resp = client()
        .post(w.gw.admin_url("/api/v1/x402/billing/checkout"))
        .json(&json!({"tier": "pro"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(seen.lock().unwrap().len(), 1);
}

const PLAN_PRICE: u64 = 50_000; // "$0.05"

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_paid_with_x402_changes_the_tier_and_its_limits_at_once() {
    let chain = Chain::start().await;
    let up = Upstream::start();
    let tenant_pay_to = new_signer().address();
    let operator = new_signer().address();
    let token = chain.token.to_checksum(None);
    let cfg = format!(
        r#"
[server]
listen = "{{listen}}"
admin_listen = "{{admin}}"
metrics_listen = "{{metrics}}"
threads = 2

[admin]
token = "{ADMIN_TOKEN}"

[networks."eip155:84532"]
rpc_url = "{rpc}"
settler_key = "{settler}"
assets = [{{ symbol = "USDC", address = "{token}", decimals = 6, eip712_name = "USD Coin", eip712_version = "2" }}]

[tiers.free]
monthly_verifications = 1

[[tenants]]
id = "acme"
pay_to = {{ "eip155:84532" = "{tenant_pay_to}" }}

[[routes]]
tenant = "acme"
path = "/paid/*"
upstream = "{up}"
price = "$0.01"

[billing.x402]
network = "eip155:84532"
pay_to = "{operator}"
prices = {{ pro = "$0.05" }}
"#,
        rpc = chain.rpc.url,
        settler = chain.settler_key,
        tenant_pay_to = tenant_pay_to.to_checksum(None),
        operator = operator.to_checksum(None),
        up = up.url(),
    );
    let gw = Gateway::start(&cfg);
    let key = api_key(&gw, "acme").await;
    let payer = new_signer();
    chain.mint(payer.address(), 1_000_000).await;

    // The free tier's one payment of the month, then the quota is spent.
    let resp = client().get(gw.url("/paid/a")).send().await.unwrap();
    let offer =
        decode_b64_json(resp.headers()["payment-required"].to_str().unwrap())["accepts"][0].clone();
    let auth = Authorization::for_offer(&offer, payer.address());
    let paid = client()
        .get(gw.url("/paid/a"))
        .header(
            "payment-signature",
            v2_header(&offer, auth.payload(&auth.sign(&payer))),
        )
        .send()
        .await
        .unwrap();
    assert!(paid.status().is_success(), "{}", paid.status());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        client()
            .get(gw.url("/paid/b"))
            .send()
            .await
            .unwrap()
            .status(),
        429
    );

    let upgrade = |header: Option<String>| {
        let mut req = client()
            .post(gw.admin_url("/api/v1/x402/billing/upgrade"))
            .bearer_auth(&key)
            .json(&json!({"tier": "pro"}));
        if let Some(h) = header {
            req = req.header("payment-signature", h);
        }
        req.send()
    };

    // No payment: an x402 challenge for the plan's price, to the operator.
    let resp = upgrade(None).await.unwrap();
    assert_eq!(resp.status(), 402);
    let challenge = decode_b64_json(resp.headers()["payment-required"].to_str().unwrap());
    assert_eq!(challenge["x402Version"], 2);
    assert!(challenge["resource"]["url"]
        .as_str()
        .unwrap()
        .ends_with("/api/v1/x402/billing/upgrade"));
    let plan = challenge["accepts"][0].clone();
    assert_eq!(plan["amount"], PLAN_PRICE.to_string());
    assert_eq!(plan["payTo"], operator.to_checksum(None));
    let v1: Value = resp.json().await.unwrap();
    assert_eq!(v1["x402Version"], 1);
    assert_eq!(v1["accepts"][0]["network"], "base-sepolia");

    // An invalid payment (signed for less than the price): a 402 naming why; nothing changes.
    let mut short = Authorization::for_offer(&plan, payer.address());
    short.value = alloy::primitives::U256::from(PLAN_PRICE - 1);
    let resp = upgrade(Some(v2_header(&plan, short.payload(&short.sign(&payer)))))
        .await
        .unwrap();
    assert_eq!(resp.status(), 402);
    let error = decode_b64_json(resp.headers()["payment-required"].to_str().unwrap())["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.starts_with("invalid_exact_evm"), "{error}");

    // An RPC outage: our failure, a 503, nothing charged and the tier unchanged.
    chain.rpc.set_down(true);
    let during = Authorization::for_offer(&plan, payer.address());
    let resp = upgrade(Some(v2_header(&plan, during.payload(&during.sign(&payer)))))
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    chain.rpc.set_down(false);
    assert_eq!(chain.balance(operator).await, alloy::primitives::U256::ZERO);

    // Paid: settled on-chain to the operator, then the tier changes.
    let auth = Authorization::for_offer(&plan, payer.address());
    let header = v2_header(&plan, auth.payload(&auth.sign(&payer)));
    let resp = upgrade(Some(header.clone())).await.unwrap();
    assert_eq!(resp.status(), 200);
    let receipt = decode_b64_json(resp.headers()["payment-response"].to_str().unwrap());
    assert_eq!(receipt["success"], true);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["tier"], "pro");
    assert!(v["paid_until"].as_i64().unwrap() >= unix_now() + 29 * 86_400);
    assert_eq!(
        chain.balance(operator).await,
        alloy::primitives::U256::from(PLAN_PRICE)
    );

    // The new monthly limit applies to the very next request: a challenge, not a 429.
    let resp = client().get(gw.url("/paid/b")).send().await.unwrap();
    assert_eq!(resp.status(), 402);
    let usage: Value = client()
        .get(gw.admin_url("/api/v1/x402/usage"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(usage["tier"], "pro");
    assert_eq!(usage["limit"], 500_000);
    // The plan payment is the operator's revenue, not a payment of the tenant's month.
    assert_eq!(usage["verified"], 1);

    // Replayed: refused, and charged once only.
    let resp = upgrade(Some(header)).await.unwrap();
    assert_eq!(resp.status(), 402);
    let error = decode_b64_json(resp.headers()["payment-required"].to_str().unwrap())["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.starts_with("duplicate_settlement"), "{error}");
    assert_eq!(
        chain.balance(operator).await,
        alloy::primitives::U256::from(PLAN_PRICE)
    );
    let billing: Value = client()
        .get(gw.admin_url("/api/v1/x402/billing"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(billing["source"], "x402");
    assert_eq!(billing["status"], "active");
}
