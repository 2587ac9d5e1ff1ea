//! EVM payments end to end: the real gateway, a real origin, and a real chain (anvil with our
//! EIP-3009 token), paid by a client signing with alloy.

mod common;

use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::signers::local::PrivateKeySigner;
use common::chain::*;
use common::*;
use serde_json::{json, Value};
use x402_gate::store::Store;

const PRICE: u64 = 10_000;

struct Setup {
    chain: Chain,
    up: Upstream,
    gw: Gateway,
    pay_to: Address,
    payer: PrivateKeySigner,
}

async fn setup_with(hook: Option<Hook>) -> Setup {
    setup_on(Chain::start().await, hook).await
}

/// `setup_with` on a chain of the test's own making.
async fn setup_on(chain: Chain, hook: Option<Hook>) -> Setup {
    let up = Upstream::start_with_hook(hook);
    let pay_to = new_signer().address();
    let cfg = evm_config(
        &up.url(),
        &chain.rpc.url,
        &chain.settler_key,
        &chain.token.to_checksum(None),
        &pay_to.to_checksum(None),
    );
    let gw = Gateway::start(&cfg);
    let payer = new_signer();
    chain.mint(payer.address(), 1_000_000).await;
    Setup {
        chain,
        up,
        gw,
        pay_to,
        payer,
    }
}

async fn setup() -> Setup {
    setup_with(None).await
}

/// A chain, an origin and a config whose SQLite database lives in the test's own directory, so it
/// outlives a gateway that is stopped and started again.
struct Durable {
    chain: Chain,
    up: Upstream,
    pay_to: Address,
    payer: PrivateKeySigner,
    cfg: String,
    db_url: String,
    _dir: tempfile::TempDir,
}

async fn durable_setup() -> Durable {
    let chain = Chain::start().await;
    let up = Upstream::start();
    let pay_to = new_signer().address();
    let payer = new_signer();
    chain.mint(payer.address(), 1_000_000).await;
    let cfg = evm_config(
        &up.url(),
        &chain.rpc.url,
        &chain.settler_key,
        &chain.token.to_checksum(None),
        &pay_to.to_checksum(None),
    );
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("gate.db").display());
    Durable {
        chain,
        up,
        pay_to,
        payer,
        cfg,
        db_url,
        _dir: dir,
    }
}

/// The offer the gateway makes for `path`.
async fn offer(gw: &Gateway, path: &str) -> Value {
    offer_for(gw, path).await
}

/// A valid v2 payment header for `path`, signed by `payer`.
async fn pay(s: &Setup, path: &str) -> (String, Authorization) {
    let offer = offer(&s.gw, path).await;
    let auth = Authorization::for_offer(&offer, s.payer.address());
    let sig = auth.sign(&s.payer);
    (v2_header(&offer, auth.payload(&sig)), auth)
}

async fn store(gw: &Gateway) -> Store {
    Store::connect(&gw.database_url).await.unwrap()
}

fn receipt(resp: &reqwest::Response, name: &str) -> Value {
    decode_b64_json(
        resp.headers()
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap(),
    )
}

fn error_of(resp: &reqwest::Response) -> String {
    let v2 = decode_b64_json(resp.headers()["payment-required"].to_str().unwrap());
    v2["error"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_v2_payment_is_verified_settled_and_served() {
    let s = setup().await;
    let (header, auth) = pay(&s, "/paid/report").await;
    let before = s.chain.balance(s.pay_to).await;
    let seen = s.chain.rpc.methods.lock().unwrap().len();
    let resp = client()
        .get(s.gw.url("/paid/report"))
        .header("payment-signature", &header)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let r = receipt(&resp, "payment-response");
    assert_eq!(r["success"], true);
    assert_eq!(r["network"], "eip155:84532");
    assert_eq!(r["payer"], s.payer.address().to_checksum(None));
    let tx = r["transaction"].as_str().unwrap().to_string();
    assert_eq!(tx.len(), 66);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["path"], "/paid/report");
    assert!(
        body["headers"].get("payment-signature").is_none(),
        "the proof reached the origin"
    );
    assert_eq!(s.chain.balance(s.pay_to).await - before, U256::from(PRICE));
    assert!(
        s.chain
            .authorization_used(s.payer.address(), auth.nonce)
            .await
    );
    let ledger = store(&s.gw).await.ledger(10).await.unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].tx_hash, tx);
    assert_eq!(ledger[0].amount, PRICE.to_string());
    assert_eq!(ledger[0].payer, s.payer.address().to_checksum(None));
    assert_eq!(ledger[0].pay_to, s.pay_to.to_checksum(None));
    assert_eq!(ledger[0].tenant, "acme");
    assert_eq!(ledger[0].route, "/paid/*");
    assert!(ledger[0].block_number > 0);
    assert_eq!(s.up.hits(), 1);
    // Settled in one round trip: anvil serves eth_sendRawTransactionSync, which answers with the
    // receipt, so no receipt is polled for.
    let methods = s.chain.rpc.methods.lock().unwrap()[seen..].to_vec();
    let n = |m: &str| methods.iter().filter(|x| *x == m).count();
    assert_eq!(n("eth_sendRawTransactionSync"), 1, "{methods:?}");
    assert_eq!(n("eth_sendRawTransaction"), 0, "{methods:?}");
    assert_eq!(n("eth_getTransactionReceipt"), 0, "{methods:?}");
}

/// A node without `eth_sendRawTransactionSync` (-32601): the first settlement is sent plain and
/// its receipt polled for, and every later one goes plain at once, never asking again.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_without_the_sync_send_is_sent_plain_transactions() {
    let s = setup().await;
    s.chain.rpc.set_fault(
        "eth_sendRawTransactionSync",
        Fault::MethodNotFound,
        usize::MAX,
    );
    for i in 0..3 {
        let path = format!("/paid/plain/{i}");
        let (header, auth) = pay(&s, &path).await;
        let resp = client()
            .get(s.gw.url(&path))
            .header("payment-signature", &header)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
        assert!(
            s.chain
                .authorization_used(s.payer.address(), auth.nonce)
                .await
        );
    }
    let methods = s.chain.rpc.methods.lock().unwrap().clone();
    let n = |m: &str| methods.iter().filter(|x| *x == m).count();
    assert_eq!(
        n("eth_sendRawTransactionSync"),
        1,
        "asked once: {methods:?}"
    );
    assert_eq!(n("eth_sendRawTransaction"), 3, "{methods:?}");
    assert!(n("eth_getTransactionReceipt") >= 3, "{methods:?}");
    assert_eq!(store(&s.gw).await.ledger(10).await.unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_v1_payment_is_settled_with_an_x_payment_response() {
    let s = setup().await;
    let offer = offer(&s.gw, "/paid/v1").await;
    let auth = Authorization::for_offer(&offer, s.payer.address());
    let header = v1_header("base-sepolia", auth.payload(&auth.sign(&s.payer)));
    let resp = client()
        .get(s.gw.url("/paid/v1"))
        .header("x-payment", header)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert!(resp.headers().get("payment-response").is_none());
    let r = receipt(&resp, "x-payment-response");
    assert_eq!(r["success"], true);
    assert_eq!(s.chain.balance(s.pay_to).await, U256::from(PRICE));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_smart_wallet_pays_with_an_erc1271_signature() {
    let s = setup().await;
    let owner = new_signer();
    let wallet = s.chain.deploy_wallet(owner.address()).await;
    s.chain.mint(wallet, 50_000).await;
    let offer = offer(&s.gw, "/paid/wallet").await;
    let auth = Authorization::for_offer(&offer, wallet);
    // Coinbase-Smart-Wallet-style wrapper: abi.encode(ownerIndex, ownerSignature).
    use alloy::sol_types::SolValue;
    let wrapped = (
        U256::ZERO,
        alloy::primitives::Bytes::from(auth.sign(&owner)),
    )
        .abi_encode_params();
    let resp = client()
        .get(s.gw.url("/paid/wallet"))
        .header(
            "payment-signature",
            v2_header(&offer, auth.payload(&wrapped)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", error_of(&resp));
    assert_eq!(s.chain.balance(s.pay_to).await, U256::from(PRICE));
    // A wrapper signed by someone else is refused on-chain, with no settlement.
    let auth = Authorization::for_offer(&offer, wallet);
    let wrapped = (
        U256::ZERO,
        alloy::primitives::Bytes::from(auth.sign(&new_signer())),
    )
        .abi_encode_params();
    let resp = client()
        .get(s.gw.url("/paid/wallet"))
        .header(
            "payment-signature",
            v2_header(&offer, auth.payload(&wrapped)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 402);
    assert!(
        error_of(&resp).starts_with("invalid_exact_evm_signature"),
        "{}",
        error_of(&resp)
    );
    assert_eq!(s.up.hits(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_proof_is_refused_and_never_reaches_the_origin() {
    let s = setup().await;
    let (header, _) = pay(&s, "/paid/once").await;
    let c = client();
    let first = c
        .get(s.gw.url("/paid/once"))
        .header("payment-signature", &header)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 201);
    let calls = s.chain.rpc.calls();
    let again = c
        .get(s.gw.url("/paid/once"))
        .header("payment-signature", &header)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 402);
    assert!(
        error_of(&again).starts_with("duplicate_settlement"),
        "{}",
        error_of(&again)
    );
    assert_eq!(
        s.chain.rpc.calls(),
        calls,
        "a replay is answered from the cache and the store, no RPC"
    );
    // The same proof on another priced route is the same payment.
    let elsewhere = c
        .get(s.gw.url("/paid/other"))
        .header("payment-signature", &header)
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 402);
    assert_eq!(s.up.hits(), 1);
    assert_eq!(s.chain.balance(s.pay_to).await, U256::from(PRICE));
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_concurrent_copies_of_one_proof_are_served_once() {
    let s = setup().await;
    let (header, _) = pay(&s, "/paid/race").await;
    let c = client();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let req = c
            .get(s.gw.url("/paid/race"))
            .header("payment-signature", header.clone());
        tasks.push(tokio::spawn(async move {
            req.send().await.unwrap().status().as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 402).count(),
        19,
        "{statuses:?}"
    );
    assert_eq!(s.up.hits(), 1, "the origin ran once for one payment");
    assert_eq!(s.chain.balance(s.pay_to).await, U256::from(PRICE));
    assert_eq!(store(&s.gw).await.ledger(10).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_payments_from_one_settler_never_collide() {
    let s = setup().await;
    let c = client();
    let offer = offer(&s.gw, "/paid/many").await;
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let auth = Authorization::for_offer(&offer, s.payer.address());
        let header = v2_header(&offer, auth.payload(&auth.sign(&s.payer)));
        let req = c
            .get(s.gw.url("/paid/many"))
            .header("payment-signature", header);
        tasks.push(tokio::spawn(async move {
            req.send().await.unwrap().status().as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 201);
    }
    assert_eq!(s.chain.balance(s.pay_to).await, U256::from(12 * PRICE));
    assert_eq!(store(&s.gw).await.ledger(100).await.unwrap().len(), 12);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_invalid_proof_gets_its_reason_and_local_ones_cost_no_rpc() {
    let s = setup().await;
    let c = client();
    let offer = offer(&s.gw, "/paid/x").await;
    let base = Authorization::for_offer(&offer, s.payer.address());
    let send = |header: String| {
        let req = c
            .get(s.gw.url("/paid/x"))
            .header("payment-signature", header);
        async move { req.send().await.unwrap() }
    };

    // Caught locally: no RPC call at all.
    let mut local: Vec<(&str, String)> = Vec::new();
    let mut a = base.clone();
    a.valid_before = now() - 1;
    local.push((
        "invalid_exact_evm_payload_authorization_valid_before",
        v2_header(&offer, a.payload(&a.sign(&s.payer))),
    ));
    let mut a = base.clone();
    a.valid_after = now() + 300;
    local.push((
        "invalid_exact_evm_payload_authorization_valid_after",
        v2_header(&offer, a.payload(&a.sign(&s.payer))),
    ));
    let mut a = base.clone();
    a.value = U256::from(PRICE - 1);
    local.push((
        "invalid_exact_evm_authorization_value",
        v2_header(&offer, a.payload(&a.sign(&s.payer))),
    ));
    let mut a = base.clone();
    a.to = new_signer().address();
    local.push((
        "invalid_exact_evm_recipient_mismatch",
        v2_header(&offer, a.payload(&a.sign(&s.payer))),
    ));
    let mut a = base.clone();
    a.chain_id = 1; // signed for another chain
    local.push((
        "invalid_exact_evm_signature",
        v2_header(&offer, a.payload(&a.sign(&s.payer))),
    ));
    let mut a = base.clone();
    a.asset = new_signer().address(); // signed for another token
    local.push((
        "invalid_exact_evm_signature",
        v2_header(&offer, a.payload(&a.sign(&s.payer))),
    ));
    let a = base.clone();
    local.push((
        "invalid_exact_evm_signature",
        v2_header(&offer, a.payload(&a.sign(&new_signer()))),
    ));
    let mut wrong_chain = offer.clone();
    wrong_chain["network"] = json!("eip155:1");
    local.push((
        "no_matching_payment_requirements",
        v2_header(&wrong_chain, base.payload(&base.sign(&s.payer))),
    ));
    let mut wrong_asset = offer.clone();
    wrong_asset["asset"] = json!(new_signer().address().to_checksum(None));
    local.push((
        "no_matching_payment_requirements",
        v2_header(&wrong_asset, base.payload(&base.sign(&s.payer))),
    ));

    let calls = s.chain.rpc.calls();
    for (reason, header) in local {
        let resp = send(header).await;
        assert_eq!(resp.status(), 402);
        assert!(
            error_of(&resp).starts_with(reason),
            "{reason} expected, got {}",
            error_of(&resp)
        );
    }
    assert_eq!(
        s.chain.rpc.calls(),
        calls,
        "local checks must not touch the chain"
    );

    // Known only on-chain: insufficient balance, an already used and a cancelled authorization.
    let poor = new_signer();
    let a = Authorization::for_offer(&offer, poor.address());
    let resp = send(v2_header(&offer, a.payload(&a.sign(&poor)))).await;
    assert!(
        error_of(&resp).starts_with("invalid_exact_evm_insufficient_balance"),
        "{}",
        error_of(&resp)
    );

    let used = Authorization::for_offer(&offer, s.payer.address());
    let sig = used.sign(&s.payer);
    let (r, ss, v) = (&sig[..32], &sig[32..64], sig[64]);
    use alloy::sol_types::SolCall;
    let call = common::chain::ITestUSDC::transferWithAuthorizationCall {
        from: used.from,
        to: used.to,
        value: used.value,
        validAfter: U256::from(used.valid_after),
        validBefore: U256::from(used.valid_before),
        nonce: used.nonce,
        v,
        r: alloy::primitives::B256::from_slice(r),
        s: alloy::primitives::B256::from_slice(ss),
    };
    assert!(s
        .chain
        .send(s.chain.token, call.abi_encode())
        .await
        .status());
    let resp = send(v2_header(&offer, used.payload(&sig))).await;
    assert!(
        error_of(&resp).starts_with("invalid_exact_evm_nonce_already_used"),
        "{}",
        error_of(&resp)
    );

    let cancelled = Authorization::for_offer(&offer, s.payer.address());
    s.chain.cancel(&s.payer, cancelled.nonce).await;
    let resp = send(v2_header(
        &offer,
        cancelled.payload(&cancelled.sign(&s.payer)),
    ))
    .await;
    assert!(
        error_of(&resp).starts_with("invalid_exact_evm_nonce_already_used"),
        "{}",
        error_of(&resp)
    );

    assert_eq!(s.up.hits(), 0, "no invalid proof may reach the origin");
    assert_eq!(store(&s.gw).await.count_claims("claimed").await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn after_an_origin_error_is_passed_through_and_not_charged() {
    let s = setup().await;
    let (header, auth) = pay(&s, "/paid/status/500").await;
    let resp = client()
        .get(s.gw.url("/paid/status/500"))
        .header("payment-signature", &header)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    assert!(resp.headers().get("payment-response").is_none());
    assert_eq!(resp.text().await.unwrap(), "status 500");
    assert_eq!(s.chain.balance(s.pay_to).await, U256::ZERO);
    assert!(
        !s.chain
            .authorization_used(s.payer.address(), auth.nonce)
            .await
    );
    let db = store(&s.gw).await;
    assert_eq!(db.count_claims("released").await.unwrap(), 1);
    assert!(db.ledger(10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_failed_settlement_is_a_402_without_the_body() {
    // The payer cancels its authorization while the origin works: settlement then reverts.
    let payer = new_signer();
    let nonce_slot: Arc<std::sync::Mutex<Option<alloy::primitives::B256>>> = Default::default();
    let chain_slot: Arc<tokio::sync::OnceCell<(String, Address)>> = Default::default();
    let hook: Hook = {
        let payer = payer.clone();
        let nonce_slot = nonce_slot.clone();
        let chain_slot = chain_slot.clone();
        Arc::new(move || {
            let payer = payer.clone();
            let nonce = nonce_slot.lock().unwrap().take();
            let chain = chain_slot.get().cloned();
            Box::pin(async move {
                if let (Some(nonce), Some((url, token))) = (nonce, chain) {
                    cancel_via(&url, token, &payer, nonce).await;
                }
            })
        })
    };
    let mut s = setup_with(Some(hook)).await;
    s.payer = payer;
    s.chain.mint(s.payer.address(), 1_000_000).await;
    chain_slot
        .set((s.chain.anvil.endpoint(), s.chain.token))
        .unwrap();
    let (header, auth) = pay(&s, "/paid/hook").await;
    *nonce_slot.lock().unwrap() = Some(auth.nonce);
    let resp = client()
        .get(s.gw.url("/paid/hook"))
        .header("payment-signature", &header)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 402);
    let r = receipt(&resp, "payment-response");
    assert_eq!(r["success"], false);
    assert_eq!(r["errorReason"], "invalid_exact_evm_transaction_failed");
    assert_eq!(
        r["transaction"].as_str().unwrap().len(),
        66,
        "the reverted tx is named"
    );
    let body = resp.text().await.unwrap();
    assert!(
        !body.contains("/paid/hook\",\"query\""),
        "the origin's body leaked: {body}"
    );
    let v1: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v1["error"], "invalid_exact_evm_transaction_failed");
    assert_eq!(s.up.hits(), 1);
    assert_eq!(s.chain.balance(s.pay_to).await, U256::ZERO);
    assert_eq!(store(&s.gw).await.count_claims("failed").await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn before_settles_first_then_serves() {
    let s = setup().await;
    let (header, _) = pay(&s, "/before/x").await;
    let resp = client()
        .get(s.gw.url("/before/x"))
        .header("payment-signature", &header)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(receipt(&resp, "payment-response")["success"], true);
    assert_eq!(s.chain.balance(s.pay_to).await, U256::from(PRICE));
    // Under `before` the client pays whatever the origin answers.
    let (header, _) = pay(&s, "/before/status/500").await;
    let resp = client()
        .get(s.gw.url("/before/status/500"))
        .header("payment-signature", &header)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(receipt(&resp, "payment-response")["success"], true);
    assert_eq!(s.chain.balance(s.pay_to).await, U256::from(2 * PRICE));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_rpc_outage_is_a_503_and_charges_nothing() {
    let s = setup().await;
    let (header, auth) = pay(&s, "/paid/outage").await;
    s.chain.rpc.set_down(true);
    let resp = client()
        .get(s.gw.url("/paid/outage"))
        .header("payment-signature", &header)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "5");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "payment_unavailable");
    assert_eq!(s.up.hits(), 0);
    let db = store(&s.gw).await;
    assert_eq!(
        db.count_claims("claimed").await.unwrap(),
        0,
        "nothing claimed during the outage"
    );
    // The RPC is back: the very same proof pays.
    s.chain.rpc.set_down(false);
    let resp = client()
        .get(s.gw.url("/paid/outage"))
        .header("payment-signature", &header)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert!(
        s.chain
            .authorization_used(s.payer.address(), auth.nonce)
            .await
    );
    assert_eq!(s.chain.balance(s.pay_to).await, U256::from(PRICE));
}

#[tokio::test(flavor = "multi_thread")]
async fn deferred_answers_first_and_settles_in_the_background() {
    let s = setup().await;
    let (header, auth) = pay(&s, "/deferred/x").await;
    let resp = client()
        .get(s.gw.url("/deferred/x"))
        .header("payment-signature", &header)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let r = receipt(&resp, "payment-response");
    assert_eq!(r["success"], true);
    assert_eq!(
        r["transaction"], "",
        "deferred: no transaction yet when the response leaves"
    );
    let db = store(&s.gw).await;
    wait_for(|| async { db.ledger(10).await.unwrap().len() == 1 }).await;
    assert!(
        s.chain
            .authorization_used(s.payer.address(), auth.nonce)
            .await
    );
    assert_eq!(s.chain.balance(s.pay_to).await, U256::from(PRICE));
}

#[tokio::test(flavor = "multi_thread")]
async fn deferred_settlements_survive_a_restart_and_land_once() {
    use alloy::providers::ext::AnvilApi;
    use alloy::providers::Provider;
    let Durable {
        chain,
        up: _up,
        pay_to,
        payer,
        cfg,
        db_url,
        _dir,
    } = durable_setup().await;
    let gw = Gateway::start_with_db(&cfg, &db_url);

    // Stop mining: settlements get signed and sent but cannot confirm before the gateway dies.
    chain.provider.anvil_set_auto_mine(false).await.unwrap();
    let offer = offer(&gw, "/deferred/r").await;
    let n = 5;
    let mut nonces = Vec::new();
    for _ in 0..n {
        let auth = Authorization::for_offer(&offer, payer.address());
        nonces.push(auth.nonce);
        let resp = client()
            .get(gw.url("/deferred/r"))
            .header(
                "payment-signature",
                v2_header(&offer, auth.payload(&auth.sign(&payer))),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
    }
    let db = Store::connect(&db_url).await.unwrap();
    wait_for(|| async { db.count_claims("settling").await.unwrap() == n }).await;
    assert!(db.ledger(100).await.unwrap().is_empty());

    // Kill the gateway mid-settlement; only the database remains.
    drop(gw);
    chain.provider.anvil_set_auto_mine(true).await.unwrap();
    chain.provider.evm_mine(None).await.unwrap();

    // Restarted, it finds the queued settlements, recognises the transactions it already sent,
    // and records each payment once.
    let gw = Gateway::start_with_db(&cfg, &db_url);
    wait_for(|| async { db.ledger(100).await.unwrap().len() == n as usize }).await;
    assert_eq!(chain.balance(pay_to).await, U256::from(n as u64 * PRICE));
    for nonce in nonces {
        assert!(chain.authorization_used(payer.address(), nonce).await);
    }
    let ledger = db.ledger(100).await.unwrap();
    let mut txs: Vec<_> = ledger.iter().map(|e| e.tx_hash.clone()).collect();
    txs.sort();
    txs.dedup();
    // One transaction per payment, or fewer where items due together went out as one batch.
    assert!((1..=n as usize).contains(&txs.len()), "{txs:?}");
    // The settler sent exactly the transactions the ledger names, each once, across both lives
    // of the gateway: none was sent again as a second transaction after the restart.
    let settler: PrivateKeySigner = chain.settler_key.parse().unwrap();
    let sent = chain
        .provider
        .get_transaction_count(settler.address())
        .await
        .unwrap();
    assert_eq!(sent, txs.len() as u64);
    assert_eq!(db.count_claims("settled").await.unwrap(), n);
    drop(gw);
}

/// A deferred settlement queued by the version whose queue stored the alloy `EvmAuthorization`
/// in alloy's serde form (stored format 1, before migration 0005) lands after the upgrade: the
/// row is read as a chain-neutral payment with an `evm` payload of layout 0, and settled once.
#[tokio::test(flavor = "multi_thread")]
async fn a_settlement_queued_in_the_old_stored_format_lands_after_an_upgrade() {
    use x402_gate::payments::chain::{PaymentKey, Verified};
    use x402_gate::payments::evm::EvmAuthorization;
    use x402_gate::store::{ClaimContext, Durability::Synced};
    let Durable {
        chain,
        up: _up,
        pay_to,
        payer,
        cfg,
        db_url,
        _dir,
    } = durable_setup().await;
    let gw = Gateway::start_with_db(&cfg, &db_url);
    let offer = offer(&gw, "/deferred/old").await;
    drop(gw);

    let auth = Authorization::for_offer(&offer, payer.address());
    let sig = auth.sign(&payer);
    let key = json!({
        "network": offer["network"],
        "asset": format!("{:#x}", auth.asset),
        "payer": format!("{:#x}", auth.from),
        "nonce": format!("{:#x}", auth.nonce),
    });
    // The old version's row, field for field as its serde wrote it (uint256 as 0x hex).
    let format_1 = json!({
        "key": key,
        "payer": auth.from.to_checksum(None),
        "pay_to": auth.to.to_checksum(None),
        "amount": auth.value.to_string(),
        "valid_before": auth.valid_before,
        "authorization": {
            "chain_id": auth.chain_id,
            "asset": format!("{:#x}", auth.asset),
            "from": format!("{:#x}", auth.from),
            "to": format!("{:#x}", auth.to),
            "value": format!("{:#x}", auth.value),
            "valid_after": format!("{:#x}", U256::from(auth.valid_after)),
            "valid_before": format!("{:#x}", U256::from(auth.valid_before)),
            "nonce": format!("{:#x}", auth.nonce),
            "signature": format!("0x{}", alloy::hex::encode(&sig)),
        }
    });
    // Its claim, as the old version made it (the claim's columns did not change).
    let db = Store::connect(&db_url).await.unwrap();
    let claimed = Verified {
        key: serde_json::from_value::<PaymentKey>(key).unwrap(),
        payer: auth.from.to_checksum(None),
        pay_to: auth.to.to_checksum(None),
        amount: auth.value.to_string(),
        expires_at: auth.valid_before,
        scheme_payload: EvmAuthorization {
            chain_id: auth.chain_id,
            asset: auth.asset,
            from: auth.from,
            to: auth.to,
            value: auth.value,
            valid_after: U256::from(auth.valid_after),
            valid_before: U256::from(auth.valid_before),
            nonce: auth.nonce,
            signature: sig.clone().into(),
        }
        .to_payload(),
    };
    let ctx = ClaimContext {
        tenant: "acme",
        route: "/deferred/*",
    };
    let id = db
        .claim(&claimed, &ctx, None, Synced)
        .await
        .unwrap()
        .id()
        .unwrap();
    let raw = sqlx::SqlitePool::connect(&db_url).await.unwrap();
    sqlx::query(
        "INSERT INTO settlement_queue (claim_id, verified, status, attempts, next_attempt_at, created_at, updated_at)
         VALUES (?1, ?2, 'queued', 0, 0, 0, 0)",
    )
    .bind(id)
    .bind(format_1.to_string())
    .execute(&raw)
    .await
    .unwrap();
    sqlx::query("UPDATE payment_claims SET status = 'queued' WHERE id = ?1")
        .bind(id)
        .execute(&raw)
        .await
        .unwrap();
    raw.close().await;

    // The upgraded gateway's worker settles it.
    let gw = Gateway::start_with_db(&cfg, &db_url);
    wait_for(|| async { db.ledger(10).await.unwrap().len() == 1 }).await;
    assert_eq!(chain.balance(pay_to).await, U256::from(PRICE));
    assert!(chain.authorization_used(payer.address(), auth.nonce).await);
    assert_eq!(
        db.claim_status(id).await.unwrap().as_deref(),
        Some("settled")
    );
    drop(gw);
}

/// A client nobody here wrote: the reference `@x402/fetch` + `@x402/evm` (npm, v2) pays through
/// the gateway on its own, from the 402 to the receipt.
#[tokio::test(flavor = "multi_thread")]
async fn the_reference_x402_fetch_client_pays() {
    let s = setup().await;
    let key = format!("0x{}", alloy::hex::encode(s.payer.to_bytes()));
    let url = s.gw.url("/paid/from-js?lang=ts");
    let script = repo_path("tools/x402-fetch-pay.mjs");
    let out = tokio::process::Command::new("node")
        .arg(script)
        .arg(&url)
        .arg(&key)
        .output()
        .await
        .expect("node runs (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "the client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["status"], 201, "{result}");
    assert_eq!(result["receipt"]["success"], true, "{result}");
    assert_eq!(
        result["receipt"]["payer"],
        s.payer.address().to_checksum(None)
    );
    let body: Value = serde_json::from_str(result["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["path"], "/paid/from-js");
    assert_eq!(s.chain.balance(s.pay_to).await, U256::from(PRICE));
    assert_eq!(s.up.hits(), 1);
    assert_eq!(store(&s.gw).await.ledger(10).await.unwrap().len(), 1);
}

/// The value of one Prometheus sample, `name{labels}`, or 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_follow_the_payment_funnel() {
    let s = setup().await;
    let c = client();
    c.get(s.gw.url("/free/x")).send().await.unwrap();
    c.get(s.gw.url("/nowhere")).send().await.unwrap();
    let (header, _) = pay(&s, "/paid/m").await; // one challenge
    assert_eq!(
        c.get(s.gw.url("/paid/m"))
            .header("payment-signature", &header)
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    assert_eq!(
        c.get(s.gw.url("/paid/m"))
            .header("payment-signature", &header)
            .send()
            .await
            .unwrap()
            .status(),
        402
    );
    c.get(s.gw.url("/paid/m"))
        .header("payment-signature", "garbage")
        .send()
        .await
        .unwrap();
    let (header, _) = pay(&s, "/paid/status/500").await; // a second challenge
    assert_eq!(
        c.get(s.gw.url("/paid/status/500"))
            .header("payment-signature", &header)
            .send()
            .await
            .unwrap()
            .status(),
        500
    );

    // Metrics are written in the logging phase, after the response went out: wait for the last.
    let mut m = s.gw.metrics().await;
    for _ in 0..100 {
        if sample(&m, r#"x402_requests_total{route="priced"}"#) >= 6.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        m = s.gw.metrics().await;
    }
    // One scrape more: a scrape reads the families in name order, so the one that saw the last
    // request counted may have read `x402_payment_attempts_total` just before that request's
    // increment landed (seen once in CI: admitted 1 of 2). A scrape begun after it sees all.
    m = s.gw.metrics().await;
    assert_eq!(
        sample(&m, r#"x402_requests_total{route="free"}"#),
        1.0,
        "{m}"
    );
    assert_eq!(sample(&m, r#"x402_requests_total{route="no_route"}"#), 1.0);
    assert_eq!(sample(&m, r#"x402_requests_total{route="priced"}"#), 6.0);
    assert_eq!(sample(&m, "x402_challenges_total"), 2.0);
    assert_eq!(
        sample(&m, r#"x402_payment_attempts_total{outcome="admitted"}"#),
        2.0
    );
    assert_eq!(
        sample(&m, r#"x402_payment_attempts_total{outcome="duplicate"}"#),
        1.0
    );
    assert_eq!(
        sample(&m, r#"x402_payment_attempts_total{outcome="invalid"}"#),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            r#"x402_payments_verified_total{network="eip155:84532",tenant="acme"}"#
        ),
        2.0
    );
    assert_eq!(
        sample(
            &m,
            r#"x402_settlements_total{network="eip155:84532",outcome="settled",policy="after"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            r#"x402_settlements_total{network="eip155:84532",outcome="released",policy="after"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            r#"x402_settlement_duration_seconds_count{network="eip155:84532"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            r#"x402_verification_duration_seconds_count{network="eip155:84532"}"#
        ),
        3.0
    );
}

/// A node that is down (connection refused), not just erroring: still our failure, a 503.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_refusing_connections_is_a_503() {
    let chain = Chain::start().await;
    let up = Upstream::start();
    let pay_to = new_signer().address();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let cfg = evm_config(
        &up.url(),
        &dead,
        &chain.settler_key,
        &chain.token.to_checksum(None),
        &pay_to.to_checksum(None),
    );
    let gw = Gateway::start(&cfg);
    let payer = new_signer();
    let offer = offer(&gw, "/paid/x").await;
    let auth = Authorization::for_offer(&offer, payer.address());
    let resp = client()
        .get(gw.url("/paid/x"))
        .header(
            "payment-signature",
            v2_header(&offer, auth.payload(&auth.sign(&payer))),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "5");
    assert_eq!(up.hits(), 0);
    assert_eq!(store(&gw).await.count_claims("claimed").await.unwrap(), 0);
}

/// A settlement sent just before the gateway died (no receipt seen, nothing recorded) is found
/// and written to the ledger after a restart: every settlement that landed is recorded.
#[tokio::test(flavor = "multi_thread")]
async fn a_settlement_interrupted_by_a_crash_is_reconciled_on_restart() {
    use alloy::providers::ext::AnvilApi;
    let Durable {
        chain,
        up: _up,
        pay_to,
        payer,
        cfg,
        db_url,
        _dir,
    } = durable_setup().await;
    let gw = Gateway::start_with_db(&cfg, &db_url);
    let offer = offer(&gw, "/paid/crash").await;
    let auth = Authorization::for_offer(&offer, payer.address());
    let header = v2_header(&offer, auth.payload(&auth.sign(&payer)));

    // Mining paused: the settlement is sent, and the gateway waits for a receipt that won't come.
    chain.provider.anvil_set_auto_mine(false).await.unwrap();
    let req = client()
        .get(gw.url("/paid/crash"))
        .header("payment-signature", header);
    let pending = tokio::spawn(async move { req.send().await });
    let db = Store::connect(&db_url).await.unwrap();
    wait_for(|| async { db.count_claims("settling").await.unwrap() == 1 }).await;
    // The claim says `settling` just before the send: wait until the node has the transaction.
    wait_for(|| async { pending_settlements(&chain).await == 1 }).await;
    drop(gw); // the crash: nothing about the outcome was recorded
    let _ = pending.await;
    assert!(db.ledger(10).await.unwrap().is_empty());

    chain.provider.anvil_set_auto_mine(true).await.unwrap();
    chain.provider.evm_mine(None).await.unwrap();
    assert_eq!(
        chain.balance(pay_to).await,
        U256::from(PRICE),
        "the money moved"
    );

    let _gw = Gateway::start_with_db(&cfg, &db_url);
    wait_for(|| async { db.ledger(10).await.unwrap().len() == 1 }).await;
    let entry = &db.ledger(10).await.unwrap()[0];
    assert_eq!(entry.pay_to, pay_to.to_checksum(None));
    assert_eq!(entry.amount, PRICE.to_string());
    assert_eq!(entry.route, "/paid/*");
    assert_eq!(db.count_claims("settled").await.unwrap(), 1);
    assert!(chain.authorization_used(payer.address(), auth.nonce).await);
}

// Settlement under failures of our own side (issue 7, findings 7 to 9): an answer lost after the
// node took the transaction, a failed database write, a dropped transaction, a stalled RPC call.

/// A client that gives up well before a settlement's 60 s receipt wait, so a wedged gateway fails
/// the test quickly instead of hanging it.
fn impatient() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// A v2 payment header for `offer` signed by `signer`, and its authorization.
fn signed_for(offer: &Value, signer: &PrivateKeySigner) -> (String, Authorization) {
    let auth = Authorization::for_offer(offer, signer.address());
    (v2_header(offer, auth.payload(&auth.sign(signer))), auth)
}

/// Pays `path` with `header` from a task of its own, as an impatient client.
fn pay_in_task(
    gw: &Arc<Gateway>,
    path: &str,
    header: String,
) -> tokio::task::JoinHandle<reqwest::Response> {
    let (gw, path) = (gw.clone(), path.to_string());
    tokio::spawn(async move {
        impatient()
            .get(gw.url(&path))
            .header("payment-signature", header)
            .send()
            .await
            .unwrap()
    })
}

/// A payment for `offer` by a funded payer of its own: a payer's second payment under way makes
/// the overdraw guard read its balance, an `eth_call` too.
async fn funded_payment(chain: &Chain, offer: &Value) -> String {
    let payer = new_signer();
    chain.mint(payer.address(), 1_000_000).await;
    signed_for(offer, &payer).0
}

/// One payment to `path` (it warms the connection), then a wait for the health probe's look at
/// Multicall3's address: simulations are grouped once Multicall3 is known.
async fn warm_and_look_for_multicall3(gw: &Arc<Gateway>, path: &str, chain: &Chain, offer: &Value) {
    let paid = pay_in_task(gw, path, funded_payment(chain, offer).await);
    assert!(paid.await.unwrap().status().is_success());
    while chain.rpc.count("eth_getCode") == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The settler's transactions the node holds, mined or in its pool.
async fn pending_settlements(chain: &Chain) -> u64 {
    use alloy::providers::Provider;
    let settler: PrivateKeySigner = chain.settler_key.parse().unwrap();
    chain
        .provider
        .get_transaction_count(settler.address())
        .pending()
        .await
        .unwrap()
}

/// Finding 7: the node took the settlement but its answer was lost (a 502 from a load balancer, a
/// cut connection) while the transaction waits in the pool. The gateway looks it up by hash
/// instead of releasing the claim: the payer is charged once, served, and recorded, and the same
/// proof is then a duplicate.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_answer_to_a_sent_settlement_is_looked_up_not_released() {
    use alloy::providers::ext::AnvilApi;
    for fault in [Fault::Lose502, Fault::LoseReset] {
        let s = setup().await;
        // Blocks every second: the transaction sits in the pool when the send's answer is lost.
        s.chain.provider.anvil_set_auto_mine(false).await.unwrap();
        s.chain.provider.anvil_set_interval_mining(1).await.unwrap();
        let (header, auth) = pay(&s, "/paid/lost").await;
        s.chain
            .rpc
            .set_fault("eth_sendRawTransaction", fault, usize::MAX);
        let resp = impatient()
            .get(s.gw.url("/paid/lost"))
            .header("payment-signature", &header)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "{fault:?}");
        let r = receipt(&resp, "payment-response");
        assert_eq!(r["success"], true);
        s.chain.rpc.clear_faults();
        assert_eq!(s.chain.balance(s.pay_to).await, U256::from(PRICE));
        assert!(
            s.chain
                .authorization_used(s.payer.address(), auth.nonce)
                .await
        );
        let ledger = store(&s.gw).await.ledger(10).await.unwrap();
        assert_eq!(ledger.len(), 1, "{fault:?}: the transfer is in the ledger");
        assert_eq!(ledger[0].tx_hash, r["transaction"].as_str().unwrap());
        // The same proof again: a duplicate, the origin does not run again, no second transaction.
        let resp = impatient()
            .get(s.gw.url("/paid/lost"))
            .header("payment-signature", &header)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 402);
        assert!(error_of(&resp).starts_with("duplicate_settlement"));
        assert_eq!(s.up.hits(), 1);
        assert_eq!(s.chain.settler_nonce().await, 1);
        assert_eq!(s.chain.rpc.count("eth_sendRawTransaction"), 1);
    }
}

/// Finding 7: a proof whose claim was released (the origin failed, not charged) is checked on
/// chain again before it is admitted, never re-admitted from the verification cache: here the
/// payer cancelled it meanwhile, so the origin must not run a second time.
#[tokio::test(flavor = "multi_thread")]
async fn a_released_proof_is_verified_on_chain_again() {
    let s = setup().await;
    let (header, auth) = pay(&s, "/paid/status/404").await;
    let resp = client()
        .get(s.gw.url("/paid/status/404"))
        .header("payment-signature", &header)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(s.up.hits(), 1);
    s.chain.cancel(&s.payer, auth.nonce).await;
    let resp = client()
        .get(s.gw.url("/paid/status/404"))
        .header("payment-signature", &header)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 402);
    assert!(
        error_of(&resp).starts_with("invalid_exact_evm_nonce_already_used"),
        "{}",
        error_of(&resp)
    );
    assert_eq!(
        s.up.hits(),
        1,
        "the released proof was re-admitted from the cache"
    );
}

/// Finding 8: the write that records a signed settlement fails (here a trigger refuses it). The
/// payment is a 503 and not charged, and the settler's nonce it took is used again: the next
/// payment settles at once instead of queueing behind a gap for a minute.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_settlement_write_leaves_no_nonce_gap() {
    let s = setup().await;
    let db = sqlx::SqlitePool::connect(&s.gw.database_url).await.unwrap();
    refuse_settling(&db).await;
    let (first, _) = pay(&s, "/paid/gap").await;
    let resp = impatient()
        .get(s.gw.url("/paid/gap"))
        .header("payment-signature", &first)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(s.chain.balance(s.pay_to).await, U256::ZERO);
    allow_settling(&db).await;

    let (second, _) = pay(&s, "/paid/gap").await;
    let started = std::time::Instant::now();
    let resp = impatient()
        .get(s.gw.url("/paid/gap"))
        .header("payment-signature", &second)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "settled after {:?}",
        started.elapsed()
    );
    // The first proof was not charged: it pays now.
    let resp = impatient()
        .get(s.gw.url("/paid/gap"))
        .header("payment-signature", &first)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(s.chain.balance(s.pay_to).await, U256::from(2 * PRICE));
    assert_eq!(s.chain.settler_nonce().await, 2);
    assert_eq!(store(&s.gw).await.ledger(10).await.unwrap().len(), 2);
}

/// Finding 8: a node takes the settlement and then drops it (it never gets mined). The gateway
/// sends the same signed bytes again until they land, so the payment settles and the settler
/// does not wedge behind it.
#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_settlement_is_sent_again_until_it_lands() {
    let s = setup().await;
    s.chain
        .rpc
        .set_fault("eth_sendRawTransaction", Fault::Swallow, 1);
    let (header, _) = pay(&s, "/paid/dropped").await;
    let started = std::time::Instant::now();
    let resp = impatient()
        .get(s.gw.url("/paid/dropped"))
        .header("payment-signature", &header)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "settled after {:?}",
        started.elapsed()
    );
    assert!(s.chain.rpc.count("eth_sendRawTransaction") >= 2);
    assert_eq!(s.chain.balance(s.pay_to).await, U256::from(PRICE));
    // The next payment is not stuck behind anything.
    let (header, _) = pay(&s, "/paid/dropped").await;
    let started = std::time::Instant::now();
    let resp = impatient()
        .get(s.gw.url("/paid/dropped"))
        .header("payment-signature", &header)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(s.chain.settler_nonce().await, 2);
    assert_eq!(store(&s.gw).await.ledger(10).await.unwrap().len(), 2);
}

/// Finding 9: an RPC call that never answers (`eth_feeHistory` while settling, `eth_call` while
/// verifying) is a 503 within the network's `rpc_timeout_seconds`, charges nothing, and the
/// gateway works again, with the same proofs, once the RPC answers.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_rpc_call_is_a_503_within_the_timeout() {
    let chain = Chain::start().await;
    let up = Upstream::start();
    let pay_to = new_signer().address();
    let cfg = evm_config(
        &up.url(),
        &chain.rpc.url,
        &chain.settler_key,
        &chain.token.to_checksum(None),
        &pay_to.to_checksum(None),
    )
    .replace("settler_key = ", "rpc_timeout_seconds = 2\nsettler_key = ");
    let gw = Gateway::start(&cfg);
    let payer = new_signer();
    chain.mint(payer.address(), 1_000_000).await;
    let offer = offer(&gw, "/paid/slow").await;
    let proof = || {
        let auth = Authorization::for_offer(&offer, payer.address());
        v2_header(&offer, auth.payload(&auth.sign(&payer)))
    };
    let get = |header: &str| {
        impatient()
            .get(gw.url("/paid/slow"))
            .header("payment-signature", header)
            .send()
    };

    // Settling: the fee estimate never answers.
    chain
        .rpc
        .set_fault("eth_feeHistory", Fault::Stall, usize::MAX);
    let first = proof();
    let started = std::time::Instant::now();
    let resp = get(&first).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "5");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    chain.rpc.clear_faults();

    // Verifying: the simulation never answers.
    chain.rpc.set_fault("eth_call", Fault::Stall, usize::MAX);
    let second = proof();
    let started = std::time::Instant::now();
    let resp = get(&second).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(chain.balance(pay_to).await, U256::ZERO);
    chain.rpc.clear_faults();

    // The RPC answers again: both proofs pay, each once.
    for header in [&first, &second] {
        let resp = get(header).await.unwrap();
        assert_eq!(resp.status(), 201);
    }
    assert_eq!(chain.balance(pay_to).await, U256::from(2 * PRICE));
    assert_eq!(store(&gw).await.ledger(10).await.unwrap().len(), 2);
}

/// Finding 8: a settlement the node dropped while the gateway went down (nothing mined, nothing
/// recorded) is sent again from the bytes stored with its claim after the restart, lands once,
/// and is recorded.
#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_settlement_is_sent_again_after_a_restart() {
    let Durable {
        chain,
        up: _up,
        pay_to,
        payer,
        cfg,
        db_url,
        _dir,
    } = durable_setup().await;
    let gw = Gateway::start_with_db(&cfg, &db_url);
    let offer = offer(&gw, "/paid/lost-in-pool").await;
    let auth = Authorization::for_offer(&offer, payer.address());
    let header = v2_header(&offer, auth.payload(&auth.sign(&payer)));
    // Every send is taken and dropped: the gateway waits for a receipt that cannot come.
    chain
        .rpc
        .set_fault("eth_sendRawTransaction", Fault::Swallow, usize::MAX);
    let req = client()
        .get(gw.url("/paid/lost-in-pool"))
        .header("payment-signature", header);
    let pending = tokio::spawn(async move { req.send().await });
    let db = Store::connect(&db_url).await.unwrap();
    wait_for(|| async { db.count_claims("settling").await.unwrap() == 1 }).await;
    drop(gw);
    let _ = pending.await;
    assert_eq!(chain.balance(pay_to).await, U256::ZERO, "nothing was mined");

    chain.rpc.clear_faults();
    let started = std::time::Instant::now();
    let _gw = Gateway::start_with_db(&cfg, &db_url);
    wait_for(|| async { db.ledger(10).await.unwrap().len() == 1 }).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(chain.balance(pay_to).await, U256::from(PRICE));
    assert_eq!(chain.settler_nonce().await, 1);
    assert_eq!(db.count_claims("settled").await.unwrap(), 1);
}

/// Simulations that wait for a call slot go to the node together, as one Multicall3
/// `aggregate3` call, and each keeps the answer it would get alone: a payer without the funds
/// and a cancelled authorization are refused with their own reasons, the good payments served.
/// (That a group never lends a member another member's transfer is `simulate.rs`'s unit test:
/// here every payment before the group has paid the payee already.)
#[tokio::test(flavor = "multi_thread")]
async fn simulations_that_wait_go_together_and_each_keeps_its_own_answer() {
    let s = setup().await;
    let gw = Arc::new(s.gw);
    let offer = offer(&gw, "/paid/group").await;
    let signed_by = |signer: &PrivateKeySigner| signed_for(&offer, signer);
    let pay = |header: String| pay_in_task(&gw, "/paid/group", header);
    // Every payment by a payer of its own (`funded_payment`).
    let funded = || funded_payment(&s.chain, &offer);
    warm_and_look_for_multicall3(&gw, "/paid/group", &s.chain, &offer).await;
    let poor = new_signer();
    let (cancelled, auth) = signed_by(&s.payer);
    s.chain.cancel(&s.payer, auth.nonce).await;
    let (good, blocking) = (
        [funded().await, funded().await],
        [funded().await, funded().await],
    );

    // Both call slots held: the next two simulations are answered after 300 ms, a wait the
    // members below sit out in the queue (they would go alone after 500 ms: see the next test).
    let calls = s.chain.rpc.count("eth_call");
    s.chain
        .rpc
        .set_fault("eth_call", Fault::Slow(Duration::from_millis(300)), 2);
    let blockers = blocking.map(pay);
    while s.chain.rpc.count("eth_call") < calls + 2 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let [good_1, good_2] = good;
    let members = [good_1, signed_by(&poor).0, cancelled, good_2].map(pay);
    for b in blockers {
        assert!(b.await.unwrap().status().is_success());
    }
    let mut answers = Vec::new();
    for m in members {
        let resp = m.await.unwrap();
        let status = resp.status();
        answers.push(if status.is_success() {
            "paid".to_string()
        } else {
            let error = error_of(&resp);
            format!("{status} {}", error.split(':').next().unwrap_or_default())
        });
    }
    assert_eq!(
        answers,
        [
            "paid",
            "402 Payment Required invalid_exact_evm_insufficient_balance",
            "402 Payment Required invalid_exact_evm_nonce_already_used",
            "paid"
        ]
    );
    // Five calls for six payments' eight simulations: the two slow ones, one group of four, and
    // the two that failed in it again, alone, for their precise reasons.
    assert_eq!(s.chain.rpc.count("eth_call"), calls + 5);
    assert_eq!(
        s.up.hits(),
        5,
        "the warm-up, two blockers, two good members"
    );
    assert_eq!(s.chain.balance(s.pay_to).await, U256::from(5 * PRICE));
}

/// An attacker's code at Multicall3's address (`contracts/LyingMulticall3.sol`: an `aggregate3`
/// that calls nothing and answers every call as succeeded) is never trusted. Multicall3's
/// deployer key is compromised, and other code was deployed at that address on one chain. Here,
/// simulations that wait for a call slot, which would go to it as one group, go alone, and
/// payments that cannot pay are refused before the origin runs. With the code's hash unchecked,
/// the group passes all four and the origin serves them unpaid.
#[tokio::test(flavor = "multi_thread")]
async fn a_lying_contract_at_multicall3s_address_never_passes_a_payment() {
    let chain = Chain::start_bare().await;
    chain
        .place_at_multicall3(&Chain::deployed_code("LyingMulticall3"))
        .await;
    let Setup {
        chain,
        up,
        gw,
        pay_to,
        ..
    } = setup_on(chain, None).await;
    let gw = Arc::new(gw);
    let offer = offer(&gw, "/paid/liar").await;
    let pay = |header: String| pay_in_task(&gw, "/paid/liar", header);
    let funded = || funded_payment(&chain, &offer);
    warm_and_look_for_multicall3(&gw, "/paid/liar", &chain, &offer).await;
    let blocking = [funded().await, funded().await];
    // Payers with nothing: only the simulation finds them out.
    let unfunded: Vec<String> = (0..4)
        .map(|_| signed_for(&offer, &new_signer()).0)
        .collect();

    // Both call slots held for 300 ms while the four arrive, as in the test above, where they
    // go to the node as one group.
    let calls = chain.rpc.count("eth_call");
    chain
        .rpc
        .set_fault("eth_call", Fault::Slow(Duration::from_millis(300)), 2);
    let blockers = blocking.map(pay);
    while chain.rpc.count("eth_call") < calls + 2 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let members: Vec<_> = unfunded.into_iter().map(pay).collect();
    for b in blockers {
        assert!(b.await.unwrap().status().is_success());
    }
    let mut answers = Vec::new();
    for m in members {
        let resp = m.await.unwrap();
        answers.push(format!("{} {}", resp.status(), error_of(&resp)));
    }
    assert_eq!(
        up.hits(),
        3,
        "the warm-up and the two blockers reach the origin, no payment that cannot pay: {answers:?}"
    );
    // Each of the four simulated alone (grouped, they would have been one call).
    assert_eq!(chain.rpc.count("eth_call"), calls + 6);
    for answer in &answers {
        assert!(
            answer.starts_with("402 Payment Required invalid_exact_evm_insufficient_balance"),
            "{answer}"
        );
    }
    assert_eq!(chain.balance(pay_to).await, U256::from(3 * PRICE));
}

/// A group's one call that the node never answers is a 503 for every member within the network's
/// `rpc_timeout_seconds` (not a wait per member, nor a 402), nothing is charged, and the same
/// proofs pay once the node answers.
#[tokio::test(flavor = "multi_thread")]
async fn a_group_the_node_never_answers_is_a_503_for_each_member() {
    let chain = Chain::start().await;
    let up = Upstream::start();
    let pay_to = new_signer().address();
    let cfg = evm_config(
        &up.url(),
        &chain.rpc.url,
        &chain.settler_key,
        &chain.token.to_checksum(None),
        &pay_to.to_checksum(None),
    )
    .replace("settler_key = ", "rpc_timeout_seconds = 2\nsettler_key = ");
    let gw = Arc::new(Gateway::start(&cfg));
    let offer = offer(&gw, "/paid/group-stall").await;
    let pay = |header: String| pay_in_task(&gw, "/paid/group-stall", header);
    let funded = || funded_payment(&chain, &offer);
    warm_and_look_for_multicall3(&gw, "/paid/group-stall", &chain, &offer).await;
    let blocking = [funded().await, funded().await];
    let members = [funded().await, funded().await, funded().await];

    // Both call slots held for 300 ms; the members queue, and the group's call never answers.
    let calls = chain.rpc.count("eth_call");
    chain
        .rpc
        .set_fault("eth_call", Fault::Slow(Duration::from_millis(300)), 2);
    let blockers = blocking.map(pay);
    while chain.rpc.count("eth_call") < calls + 2 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    chain.rpc.set_fault("eth_call", Fault::Stall, 1);
    let started = std::time::Instant::now();
    let waiting = members.clone().map(pay);
    for b in blockers {
        assert!(b.await.unwrap().status().is_success());
    }
    for m in waiting {
        let resp = m.await.unwrap();
        assert_eq!(resp.status(), 503, "{}", error_of(&resp));
        assert_eq!(resp.headers()["retry-after"], "5");
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(5),
        "answered after {waited:?}: one timed-out call for the group"
    );
    assert_eq!(
        chain.rpc.count("eth_call"),
        calls + 3,
        "two slow calls and the group's, none made again alone"
    );
    assert_eq!(up.hits(), 3, "the warm-up and the blockers only");
    assert_eq!(chain.balance(pay_to).await, U256::from(3 * PRICE));

    // The node answers again: each proof pays, once.
    for header in members {
        assert!(pay(header).await.unwrap().status().is_success());
    }
    assert_eq!(chain.balance(pay_to).await, U256::from(6 * PRICE));
}

/// A node that answers a simulation with an error of its own (here "method not found"; a rate
/// limit or a "header not found" alike) did not run it: a 503 to retry, not a 402 that blames the
/// payment, and the payment goes through once the node answers again.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_error_that_is_not_a_revert_is_a_503() {
    let s = setup().await;
    let (header, _) = pay(&s, "/paid/refused").await;
    s.chain.rpc.set_fault("eth_call", Fault::MethodNotFound, 1);
    let send = || {
        client()
            .get(s.gw.url("/paid/refused"))
            .header("payment-signature", &header)
            .send()
    };
    let resp = send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(s.up.hits(), 0);
    let resp = send().await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(s.chain.balance(s.pay_to).await, U256::from(PRICE));
}

/// A simulation that finds both call slots taken by calls the node does not answer waits a
/// moment for them (500 ms), then goes alone: a stalled call never holds up the payments behind
/// it.
#[tokio::test(flavor = "multi_thread")]
async fn a_simulation_behind_stalled_ones_goes_alone() {
    let s = setup().await;
    // Grouping starts once the health probe has found Multicall3.
    while s.chain.rpc.count("eth_getCode") == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (warm, _) = pay(&s, "/paid/stall").await;
    let get = |header: String| {
        let url = s.gw.url("/paid/stall");
        tokio::spawn(async move {
            impatient()
                .get(url)
                .header("payment-signature", header)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    assert!(get(warm).await.unwrap().is_success());
    let calls = s.chain.rpc.count("eth_call");
    s.chain.rpc.set_fault("eth_call", Fault::Stall, 2);
    let stalled = [
        get(pay(&s, "/paid/stall").await.0),
        get(pay(&s, "/paid/stall").await.0),
    ];
    while s.chain.rpc.count("eth_call") < calls + 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = std::time::Instant::now();
    let status = get(pay(&s, "/paid/stall").await.0).await.unwrap();
    assert!(status.is_success(), "{status}");
    let waited = started.elapsed();
    // It queued for a group (grouping on), gave up after 500 ms, and did not wait for the
    // stalled calls' timeout.
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_secs(2),
        "waited {waited:?} behind the stalled calls"
    );
    assert_eq!(s.chain.rpc.count("eth_call"), calls + 3);
    for handle in stalled {
        handle.abort();
    }
}
