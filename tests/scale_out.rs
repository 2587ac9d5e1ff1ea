//! Several instances sharing one Postgres and a network's settler keys: each leases its own key,
//! so concurrent settlements never collide on a nonce; a key held by an instance that died
//! becomes usable once its lease lapses. Real anvil, real Postgres, real gateways.

mod common;

use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};
use alloy::signers::local::PrivateKeySigner;
use common::chain::*;
use common::*;
use x402_gate::store::Store;

const PRICE: u64 = 10_000;

fn config(up: &str, chain: &Chain, keys: &[String], pay_to: Address) -> String {
    let keys: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
    format!(
        r#"
[server]
listen = "{{listen}}"
admin_listen = "{{admin}}"
metrics_listen = "{{metrics}}"
threads = 2

[networks."eip155:84532"]
rpc_url = "{rpc}"
settler_keys = [{keys}]
assets = [{{ symbol = "USDC", address = "{token}", decimals = 6, eip712_name = "USD Coin", eip712_version = "2" }}]

[tiers.free]
monthly_verifications = 1000000
networks = ["eip155:84532"]

[[tenants]]
id = "acme"
pay_to = {{ "eip155:84532" = "{pay_to}" }}

[[routes]]
tenant = "acme"
path = "/paid/*"
upstream = "{up}"
price = "$0.01"
"#,
        rpc = chain.rpc.url,
        keys = keys.join(", "),
        token = chain.token.to_checksum(None),
        pay_to = pay_to.to_checksum(None),
    )
}

async fn paid_header(gw: &Gateway, path: &str, payer: &PrivateKeySigner) -> String {
    let resp = client().get(gw.url(path)).send().await.unwrap();
    assert_eq!(resp.status(), 402);
    let v2 = decode_b64_json(resp.headers()["payment-required"].to_str().unwrap());
    let offer = v2["accepts"][0].clone();
    let auth = Authorization::for_offer(&offer, payer.address());
    v2_header(&offer, auth.payload(&auth.sign(payer)))
}

async fn pay(gw: &Gateway, path: &str, header: String) -> (u16, String) {
    let resp = client()
        .get(gw.url(path))
        .header("payment-signature", header)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// 2 instances, 2 keys, 3 rounds of 60 concurrent fresh payments split across them: every one is
/// served and settled by exactly one transfer, with no 503.
#[tokio::test(flavor = "multi_thread")]
async fn two_instances_settle_concurrently_without_nonce_collisions() {
    // A failure shows the gateways' warnings: a settlement left unmined names where its nonce
    // stands against the node's. This test once saw one unmined for 60 s in CI: most likely
    // anvil's pool race under `--mixed-mining` (a transaction inserted just after its
    // predecessor was mined and pruned waits forever), which the log would show as "runnable
    // and held back by the node".
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_test_writer()
        .try_init();
    let chain = Chain::start_busy().await;
    let up = Upstream::start();
    let pay_to = new_signer().address();
    // Four payers, as a busy API has many (one payer's unsettled payments are bounded).
    let payers: Vec<PrivateKeySigner> = (0..4).map(|_| new_signer()).collect();
    for p in &payers {
        chain.mint(p.address(), 100_000_000).await;
    }
    let mut keys = vec![chain.settler_key.clone()];
    keys.extend(chain.extra_settler_keys(1));
    let cfg = config(&up.url(), &chain, &keys, pay_to);
    let db = fresh_postgres_url().await;
    let a = Gateway::start_with_db(&cfg, &db);
    let b = Gateway::start_with_db(&cfg, &db);
    let mut paid = 0u64;
    for round in 0..3 {
        let mut headers = Vec::new();
        for i in 0..60 {
            headers.push(paid_header(&a, "/paid/x", &payers[i % 4]).await);
        }
        let mut tasks = Vec::new();
        for (i, h) in headers.into_iter().enumerate() {
            let url = if i % 2 == 0 {
                a.url("/paid/x")
            } else {
                b.url("/paid/x")
            };
            tasks.push(tokio::spawn(async move {
                let resp = client()
                    .get(url)
                    .header("payment-signature", h)
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                (status, resp.text().await.unwrap_or_default())
            }));
        }
        for t in tasks {
            let (status, body) = t.await.unwrap();
            assert_eq!(status, 201, "round {round}: {body}");
        }
        paid += 60;
        assert_eq!(
            chain.balance(pay_to).await,
            U256::from(paid * PRICE),
            "round {round}: one transfer per payment"
        );
    }
    assert_eq!(up.hits(), 180);
    let store = Store::connect(&db).await.unwrap();
    assert_eq!(store.ledger(1000).await.unwrap().len(), 180);
}

/// One key, two instances: the one without a key says so (503, nothing charged) instead of
/// colliding; when the holder stops, the other takes the key over.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_is_never_shared_and_moves_when_its_holder_stops() {
    let chain = Chain::start_busy().await;
    let up = Upstream::start();
    let pay_to = new_signer().address();
    let payer = new_signer();
    chain.mint(payer.address(), 10_000_000).await;
    let cfg = config(
        &up.url(),
        &chain,
        std::slice::from_ref(&chain.settler_key),
        pay_to,
    );
    let db = fresh_postgres_url().await;
    let a = Gateway::start_with_db(&cfg, &db);
    // A pays first, so its keeper has surely leased the only key before B starts.
    let (status, body) = pay(&a, "/paid/x", paid_header(&a, "/paid/x", &payer).await).await;
    assert_eq!(status, 201, "{body}");
    let b = Gateway::start_with_db(&cfg, &db);
    let header = paid_header(&b, "/paid/x", &payer).await;
    let (status, body) = pay(&b, "/paid/x", header.clone()).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(chain.balance(pay_to).await, U256::from(PRICE));
    assert_eq!(up.hits(), 1, "nothing served without a settler");
    // A stops cleanly and gives its key back; B takes it on its next round.
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = pay(&b, "/paid/x", header.clone()).await;
        if status == 201 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(Instant::now() < deadline, "B never got the key: {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(chain.balance(pay_to).await, U256::from(2 * PRICE));
}

/// A key whose holder died (its lease row stays) is usable again once the lease lapses.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_instances_key_is_taken_after_its_lease() {
    let chain = Chain::start_busy().await;
    let up = Upstream::start();
    let pay_to = new_signer().address();
    let payer = new_signer();
    chain.mint(payer.address(), 10_000_000).await;
    let settler = PrivateKeySigner::from_bytes(
        &chain
            .settler_key
            .parse::<alloy::primitives::B256>()
            .unwrap(),
    )
    .unwrap()
    .address();
    let cfg = config(
        &up.url(),
        &chain,
        std::slice::from_ref(&chain.settler_key),
        pay_to,
    );
    let db = fresh_postgres_url().await;
    // The dead instance's lease: still valid for 3 s.
    let store = Store::connect(&db).await.unwrap();
    let expires = now() as i64 + 3;
    assert!(store
        .lease_settler(
            "eip155:84532",
            &settler.to_checksum(None),
            "dead-instance",
            expires
        )
        .await
        .unwrap());
    let gw = Gateway::start_with_db(&cfg, &db);
    let header = paid_header(&gw, "/paid/x", &payer).await;
    let (status, _) = pay(&gw, "/paid/x", header.clone()).await;
    assert_eq!(status, 503, "the key is still leased");
    let started = Instant::now();
    loop {
        let (status, body) = pay(&gw, "/paid/x", header.clone()).await;
        if status == 201 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the lapsed lease was never taken: {body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (holder, _) = store
        .settler_lease("eip155:84532", &settler.to_checksum(None))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(holder, "dead-instance");
    assert_eq!(chain.balance(pay_to).await, U256::from(PRICE));
}
