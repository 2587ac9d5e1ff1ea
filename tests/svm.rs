//! Solana payments end to end: the real gateway, a real origin, and a real SVM (litesvm with the
//! real SPL Token, Token-2022, ATA and Memo programs, behind the tests' JSON-RPC server), paid by
//! a client building and partially signing its transaction here, and by the npm reference client.

mod common;

use std::time::Duration;

use common::svm::*;
use common::*;
use serde_json::{json, Value};
use solana_hash::Hash;
use solana_keypair::Keypair;
use solana_pubkey::Pubkey;
use solana_signature::Signature;
use solana_signer::Signer;
use x402_gate::store::Store;

const PRICE: u64 = 10_000;
const DEVNET: &str = "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1";

/// A config with the test SVM as devnet (two assets: the SPL Token mint and the Token-2022
/// mint), one tenant paid at `pay_to`: `/paid/*` settles after, `/before/*` before,
/// `/deferred/*` deferred, all $0.01.
fn svm_config(upstream: &str, chain: &SvmChain, pay_to: &Pubkey, extra: &str) -> String {
    svm_config_with(upstream, chain, pay_to, extra, true)
}

fn svm_config_with(
    upstream: &str,
    chain: &SvmChain,
    pay_to: &Pubkey,
    extra: &str,
    token_2022: bool,
) -> String {
    let t22 = if token_2022 {
        format!(
            "{{ symbol = \"USDT\", mint = \"{}\", decimals = 6 }},",
            chain.mint_2022()
        )
    } else {
        String::new()
    };
    format!(
        r#"
[server]
listen = "{{listen}}"
admin_listen = "{{admin}}"
metrics_listen = "{{metrics}}"
threads = 2

[admin]
token = "{ADMIN_TOKEN}"

[networks."{DEVNET}"]
rpc_url = "{rpc}"
fee_payer_key = "{key}"
assets = [
  {{ symbol = "USDC", mint = "{mint}", decimals = 6 }},
  {t22}
]
{extra}

[[tenants]]
id = "acme"
pay_to = {{ "{DEVNET}" = "{pay_to}" }}

[[routes]]
tenant = "acme"
path = "/paid/*"
upstream = "{upstream}"
price = "$0.01"

[[routes]]
tenant = "acme"
path = "/before/*"
upstream = "{upstream}"
price = "$0.01"
settle = "before"

[[routes]]
tenant = "acme"
path = "/deferred/*"
upstream = "{upstream}"
price = "$0.01"
settle = "deferred"
"#,
        rpc = chain.rpc_url(),
        key = chain.fee_payer_key(),
        mint = chain.mint(),
    )
}

struct Setup {
    chain: SvmChain,
    up: Upstream,
    gw: Gateway,
    pay_to: Pubkey,
    payer: Keypair,
}

fn setup_with(extra: &str) -> Setup {
    let chain = SvmChain::start();
    let up = Upstream::start();
    let pay_to = chain.new_recipient();
    let gw = Gateway::start(&svm_config(&up.url(), &chain, &pay_to, extra));
    let payer = chain.new_payer(1_000_000);
    chain.mint_to(&payer.pubkey(), &chain.mint_2022(), 1_000_000);
    Setup {
        chain,
        up,
        gw,
        pay_to,
        payer,
    }
}

fn setup() -> Setup {
    setup_with("")
}

/// The offer the gateway makes for `path` in `mint`.
async fn offer_in(gw: &Gateway, path: &str, mint: &Pubkey) -> Value {
    let resp = client().get(gw.url(path)).send().await.unwrap();
    assert_eq!(resp.status(), 402);
    let v2 = decode_b64_json(resp.headers()["payment-required"].to_str().unwrap());
    v2["accepts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["asset"] == mint.to_string())
        .unwrap_or_else(|| panic!("no offer in {mint}: {v2}"))
        .clone()
}

async fn offer_for(s: &Setup, path: &str) -> Value {
    offer_in(&s.gw, path, &s.chain.mint()).await
}

async fn get_paid(gw: &Gateway, path: &str, header: &str) -> reqwest::Response {
    client()
        .get(gw.url(path))
        .header("payment-signature", header)
        .send()
        .await
        .unwrap()
}

fn receipt(resp: &reqwest::Response) -> Value {
    decode_b64_json(
        resp.headers()
            .get("payment-response")
            .expect("a PAYMENT-RESPONSE")
            .to_str()
            .unwrap(),
    )
}

fn error_of(resp: &reqwest::Response) -> String {
    let v2 = decode_b64_json(resp.headers()["payment-required"].to_str().unwrap());
    v2["error"].as_str().unwrap().to_string()
}

async fn store(gw: &Gateway) -> Store {
    Store::connect(&gw.database_url).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_payment_settles_and_is_served_under_each_policy() {
    let s = setup();
    let mut landed = 0;
    for (i, path) in ["/paid/a", "/before/b", "/deferred/c"].iter().enumerate() {
        let offer = offer_for(&s, path).await;
        assert_eq!(offer["network"], DEVNET);
        assert_eq!(
            offer["extra"]["feePayer"],
            s.chain.fee_payer_pubkey().to_string()
        );
        assert_eq!(offer["payTo"], s.pay_to.to_string());
        assert_eq!(offer["amount"], PRICE.to_string());
        let header = s
            .chain
            .payment(&offer, &s.payer.pubkey())
            .header(&offer, &s.payer);
        let resp = get_paid(&s.gw, path, &header).await;
        assert_eq!(resp.status(), 201, "{path}");
        let r = receipt(&resp);
        assert_eq!(r["success"], true, "{r}");
        assert_eq!(r["network"], DEVNET);
        assert_eq!(r["payer"], s.payer.pubkey().to_string());
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["path"], *path);
        assert!(body["headers"].get("payment-signature").is_none());
        if *path == "/deferred/c" {
            // Answered first; the receipt says so, and the settlement follows.
            wait_for(|| async { store(&s.gw).await.ledger(10).await.unwrap().len() == 3 }).await;
        } else {
            let sig: Signature = r["transaction"].as_str().unwrap().parse().unwrap();
            assert_eq!(s.chain.landed(&sig), Some(Ok(())), "{path}");
        }
        landed += 1;
        assert_eq!(
            s.chain.token_balance(&s.pay_to, &s.chain.mint()),
            PRICE * landed,
            "payTo received exactly the price ({path})"
        );
        assert_eq!(s.up.hits(), i + 1);
    }
    let ledger = store(&s.gw).await.ledger(10).await.unwrap();
    assert_eq!(ledger.len(), 3);
    for row in &ledger {
        assert_eq!(row.amount, PRICE.to_string());
        assert_eq!(row.payer, s.payer.pubkey().to_string());
        assert_eq!(row.pay_to, s.pay_to.to_string());
        assert_eq!(row.network, DEVNET);
        let sig: Signature = row.tx_hash.parse().expect("a base58 signature");
        assert_eq!(s.chain.landed(&sig), Some(Ok(())));
    }
    // The fee payer paid the fees; the payer's SOL was never touched (it has none).
    assert_eq!(s.chain.sol_balance(&s.payer.pubkey()), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_and_token_2022_payments_are_accepted() {
    let s = setup();
    let offer = offer_for(&s, "/paid/legacy").await;
    let mut payment = s.chain.payment(&offer, &s.payer.pubkey());
    payment.legacy = true;
    let resp = get_paid(&s.gw, "/paid/legacy", &payment.header(&offer, &s.payer)).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(s.chain.token_balance(&s.pay_to, &s.chain.mint()), PRICE);

    let offer = offer_in(&s.gw, "/paid/t22", &s.chain.mint_2022()).await;
    let payment = s.chain.payment(&offer, &s.payer.pubkey());
    assert_ne!(
        payment.token_program,
        s.chain.token_program(&s.chain.mint())
    );
    let resp = get_paid(&s.gw, "/paid/t22", &payment.header(&offer, &s.payer)).await;
    assert_eq!(resp.status(), 201, "{}", error_text(resp).await);
    assert_eq!(
        s.chain.token_balance(&s.pay_to, &s.chain.mint_2022()),
        PRICE
    );
    assert_eq!(s.up.hits(), 2);
}

async fn error_text(resp: reqwest::Response) -> String {
    match resp.headers().get("payment-required") {
        Some(h) => decode_b64_json(h.to_str().unwrap())["error"].to_string(),
        None => resp.text().await.unwrap_or_default(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn replays_are_refused_and_the_origin_runs_once() {
    let s = setup();
    let offer = offer_for(&s, "/paid/once").await;
    let header = s
        .chain
        .payment(&offer, &s.payer.pubkey())
        .header(&offer, &s.payer);
    assert_eq!(get_paid(&s.gw, "/paid/once", &header).await.status(), 201);
    let sends = s.chain.count("sendTransaction");
    let again = get_paid(&s.gw, "/paid/once", &header).await;
    assert_eq!(again.status(), 402);
    assert!(error_of(&again).starts_with("duplicate_settlement"));
    // On another priced route, the same transaction is the same payment.
    let elsewhere = get_paid(&s.gw, "/before/other", &header).await;
    assert_eq!(elsewhere.status(), 402);
    assert_eq!(
        s.chain.count("sendTransaction"),
        sends,
        "a replay is never sent"
    );

    // Twenty concurrent copies of a fresh payment: one is served.
    let offer = offer_for(&s, "/paid/race").await;
    let header = s
        .chain
        .payment(&offer, &s.payer.pubkey())
        .header(&offer, &s.payer);
    let sims = s.chain.count("simulateTransaction");
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let req = client()
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
    assert_eq!(s.up.hits(), 2, "the origin ran once per payment");
    assert_eq!(
        s.chain.count("simulateTransaction") - sims,
        1,
        "concurrent copies share one verification"
    );
    assert_eq!(s.chain.token_balance(&s.pay_to, &s.chain.mint()), 2 * PRICE);
    assert_eq!(store(&s.gw).await.ledger(10).await.unwrap().len(), 2);
}

/// Two instances on one Postgres: copies of one payment sent to both are served once.
#[tokio::test(flavor = "multi_thread")]
async fn replays_across_two_instances_are_served_once() {
    let chain = SvmChain::start();
    let up = Upstream::start();
    let pay_to = chain.new_recipient();
    let db = fresh_postgres_url().await;
    let cfg = svm_config(&up.url(), &chain, &pay_to, "");
    let a = Gateway::start_with_db(&cfg, &db);
    let b = Gateway::start_with_db(&cfg, &db);
    let payer = chain.new_payer(1_000_000);
    for round in 0..3 {
        let offer = offer_in(&a, "/paid/x", &chain.mint()).await;
        let header = chain
            .payment(&offer, &payer.pubkey())
            .header(&offer, &payer);
        let mut tasks = Vec::new();
        for i in 0..20 {
            let url = if i % 2 == 0 {
                a.url("/paid/x")
            } else {
                b.url("/paid/x")
            };
            let req = client()
                .get(url)
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
            "round {round}: {statuses:?}"
        );
        assert_eq!(up.hits(), round + 1);
    }
    assert_eq!(chain.token_balance(&pay_to, &chain.mint()), 3 * PRICE);
    assert_eq!(store(&a).await.ledger(10).await.unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_invalid_payment_gets_its_reason_and_is_never_sent() {
    let s = setup();
    let broke = s.chain.new_payer(0);
    let offer = offer_for(&s, "/paid/bad").await;
    let base = || s.chain.payment(&offer, &s.payer.pubkey());
    let stranger = Pubkey::new_unique();
    let mut cases: Vec<(&str, SvmPayment, &Keypair, bool)> = vec![
        (
            "invalid_exact_svm_payload_transaction_fee_payer_transferring_funds",
            base().fee_payer_as_authority(),
            &s.payer,
            false,
        ),
        (
            "invalid_exact_svm_payload_transaction_fee_payer_included_in_instruction_accounts",
            base().fee_payer_in_memo(),
            &s.payer,
            false,
        ),
        (
            "invalid_exact_svm_payload_unknown_fifth_instruction",
            base().with_extra(instruction(stranger, vec![], vec![1])),
            &s.payer,
            false,
        ),
    ];
    let mut p = base();
    p.mint = s.chain.mint_2022();
    p.token_program = s.chain.token_program(&s.chain.mint_2022());
    cases.push((
        "invalid_exact_svm_payload_mint_mismatch",
        p,
        &s.payer,
        false,
    ));
    let mut p = base();
    p.destination = Some(ata(&stranger, &s.chain.mint(), &p.token_program));
    cases.push((
        "invalid_exact_svm_payload_recipient_mismatch",
        p,
        &s.payer,
        false,
    ));
    let mut p = base();
    p.amount = PRICE - 1;
    cases.push((
        "invalid_exact_svm_payload_amount_mismatch",
        p,
        &s.payer,
        false,
    ));
    let mut p = base();
    p.decimals = 9;
    cases.push((
        "invalid_exact_svm_payload_decimals_mismatch",
        p,
        &s.payer,
        false,
    ));
    let mut p = base();
    p.compute_unit_limit = None;
    cases.push((
        "invalid_exact_svm_payload_transaction_instructions_compute_limit_instruction",
        p,
        &s.payer,
        false,
    ));
    let mut p = base();
    p.compute_unit_price = Some(MAX_COMPUTE_UNIT_PRICE + 1);
    cases.push((
        "invalid_exact_svm_payload_transaction_instructions_compute_price_instruction_too_high",
        p,
        &s.payer,
        false,
    ));
    // Signed by someone else than the token owner.
    cases.push((
        "invalid_exact_svm_payload_signature_invalid",
        base(),
        &broke,
        false,
    ));
    // These pass the local checks; the simulation finds them out.
    cases.push((
        "insufficient_funds",
        s.chain.payment(&offer, &broke.pubkey()),
        &broke,
        true,
    ));
    let mut p = base();
    p.blockhash = Hash::new_unique();
    cases.push((
        "invalid_exact_svm_transaction_simulation_failed",
        p,
        &s.payer,
        true,
    ));

    for (want, payment, signer, simulated) in cases {
        let sims = s.chain.count("simulateTransaction");
        let resp = get_paid(&s.gw, "/paid/bad", &payment.header(&offer, signer)).await;
        assert_eq!(resp.status(), 402, "{want}");
        let got = error_of(&resp);
        assert!(got.starts_with(want), "want {want}, got {got}");
        assert_eq!(
            s.chain.count("simulateTransaction") - sims,
            usize::from(simulated),
            "{want}: local checks cost no RPC call"
        );
    }
    assert_eq!(
        s.chain.count("sendTransaction"),
        0,
        "nothing refused was sent"
    );
    assert_eq!(s.up.hits(), 0);
    assert_eq!(s.chain.token_balance(&s.pay_to, &s.chain.mint()), 0);
    assert!(store(&s.gw).await.ledger(10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_rpc_outage_is_a_503_and_the_payment_stays_good() {
    let s = setup();
    let offer = offer_for(&s, "/paid/outage").await;
    let header = s
        .chain
        .payment(&offer, &s.payer.pubkey())
        .header(&offer, &s.payer);
    s.chain.set_down(true);
    let resp = get_paid(&s.gw, "/paid/outage", &header).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(s.up.hits(), 0);
    s.chain.set_down(false);
    let resp = get_paid(&s.gw, "/paid/outage", &header).await;
    assert_eq!(
        resp.status(),
        201,
        "the same payment pays once the RPC is back"
    );
    assert_eq!(s.chain.token_balance(&s.pay_to, &s.chain.mint()), PRICE);
}

/// The answer to the send is lost (it times out) but the transaction landed: the settlement
/// is looked up, not given up, and the client gets its receipt.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_answer_to_the_send_is_looked_up() {
    // The send's answer comes after the RPC timeout: lost, as far as the gateway can tell.
    let s = setup_with("rpc_timeout_seconds = 1");
    let offer = offer_for(&s, "/paid/lost").await;
    let header = s
        .chain
        .payment(&offer, &s.payer.pubkey())
        .header(&offer, &s.payer);
    s.chain.set_stall("sendTransaction", Duration::from_secs(3));
    let resp = get_paid(&s.gw, "/paid/lost", &header).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(receipt(&resp)["success"], true);
    assert_eq!(s.chain.token_balance(&s.pay_to, &s.chain.mint()), PRICE);
    assert_eq!(store(&s.gw).await.ledger(10).await.unwrap().len(), 1);
}

/// A sent transaction that never lands (the node dropped it) and whose blockhash expires has
/// moved nothing: under `after` the client gets a 402 with `success: false`, nobody is charged.
#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_transaction_whose_blockhash_expires_charges_nothing() {
    let s = setup();
    let offer = offer_for(&s, "/paid/dropped").await;
    let header = s
        .chain
        .payment(&offer, &s.payer.pubkey())
        .header(&offer, &s.payer);
    s.chain.set_swallow(true);
    let gw_url = s.gw.url("/paid/dropped");
    let req = tokio::spawn(async move {
        client()
            .get(gw_url)
            .header("payment-signature", header)
            .send()
            .await
            .unwrap()
    });
    // Re-sent while unseen; then the blockhash expires.
    wait_for(|| async { s.chain.count("sendTransaction") >= 2 }).await;
    s.chain.expire_blockhash();
    let resp = req.await.unwrap();
    assert_eq!(resp.status(), 402);
    let r = receipt(&resp);
    assert_eq!(r["success"], false, "{r}");
    assert!(error_of(&resp).starts_with("invalid_exact_svm_transaction_failed"));
    assert_eq!(s.chain.token_balance(&s.pay_to, &s.chain.mint()), 0);
    assert!(store(&s.gw).await.ledger(10).await.unwrap().is_empty());
}

/// The reference client nobody here wrote, `@x402/fetch` + `@x402/svm` 2.27, pays through the
/// gateway from the 402 to the receipt.
#[tokio::test(flavor = "multi_thread")]
async fn the_reference_npm_client_pays() {
    let s = setup();
    let url = s.gw.url("/paid/from-js");
    let out = tokio::process::Command::new("node")
        .arg(repo_path("tools/x402-svm-pay.mjs"))
        .arg(&url)
        .arg(s.payer.to_base58_string())
        .arg(s.chain.rpc_url())
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
    assert_eq!(result["receipt"]["payer"], s.payer.pubkey().to_string());
    assert_eq!(s.up.hits(), 1);
    assert_eq!(s.chain.token_balance(&s.pay_to, &s.chain.mint()), PRICE);
    assert_eq!(store(&s.gw).await.ledger(10).await.unwrap().len(), 1);
}

async fn tenant_key(gw: &Gateway) -> String {
    let resp = client()
        .post(gw.admin_url("/api/v1/x402/admin/tenants/acme/keys"))
        .header("x-admin-key", ADMIN_TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    resp.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn verify_tx(gw: &Gateway, key: &str, body: Value) -> Value {
    let resp = client()
        .post(gw.admin_url("/api/v1/x402/verify"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_verify_api_accepts_a_paid_solana_transaction_once() {
    // Only the SPL Token mint is configured: a Token-2022 transfer is of an unknown asset.
    let chain = SvmChain::start();
    let up = Upstream::start();
    let pay_to = chain.new_recipient();
    let gw = Gateway::start(&svm_config_with(&up.url(), &chain, &pay_to, "", false));
    let payer = chain.new_payer(1_000_000);
    chain.mint_to(&payer.pubkey(), &chain.mint_2022(), 1_000_000);
    let s = Setup {
        chain,
        up,
        gw,
        pay_to,
        payer,
    };
    let key = tenant_key(&s.gw).await;
    // A payment made through the gateway, then presented as a transaction.
    let offer = offer_for(&s, "/paid/tx").await;
    let header = s
        .chain
        .payment(&offer, &s.payer.pubkey())
        .header(&offer, &s.payer);
    let resp = get_paid(&s.gw, "/paid/tx", &header).await;
    let tx = receipt(&resp)["transaction"].as_str().unwrap().to_string();
    let check = |amount: &str, recipient: &Pubkey| json!({"tx_hash": tx, "chain": "solana-devnet", "expected_amount": amount, "recipient": recipient.to_string()});
    let other = s.chain.new_recipient();
    let v = verify_tx(&s.gw, &key, check("20000", &s.pay_to)).await;
    assert_eq!(v["invalidReason"], "insufficient_amount", "{v}");
    let v = verify_tx(&s.gw, &key, check("10000", &other)).await;
    assert_eq!(v["invalidReason"], "no_matching_transfer", "{v}");
    let v = verify_tx(&s.gw, &key, check("10000", &s.pay_to)).await;
    assert_eq!(v["isValid"], true, "{v}");
    assert_eq!(v["amount"], "10000");
    assert_eq!(v["asset"], s.chain.mint().to_string());
    assert_eq!(v["payer"], s.payer.pubkey().to_string());
    let v = verify_tx(&s.gw, &key, check("10000", &s.pay_to)).await;
    assert_eq!(v["invalidReason"], "tx_already_used", "{v}");

    // A transfer of a mint this network does not configure is no payment.
    let stray_offer = s.chain.offer(PRICE, &s.chain.mint_2022(), &s.pay_to);
    let mut stray = s
        .chain
        .payment(&stray_offer, &s.payer.pubkey())
        .sign(&s.payer);
    stray.signatures[0] = s.chain.fee_payer().sign_message(&stray.message.serialize());
    let stray = s.chain.process(stray).expect("the transfer lands");
    assert_eq!(
        s.chain.token_balance(&s.pay_to, &s.chain.mint_2022()),
        PRICE
    );
    let v = verify_tx(
        &s.gw,
        &key,
        json!({"tx_hash": stray.to_string(), "chain": DEVNET, "expected_amount": "1", "recipient": s.pay_to.to_string()}),
    )
    .await;
    assert_eq!(v["invalidReason"], "no_matching_transfer", "{v}");
    let v = verify_tx(
        &s.gw,
        &key,
        json!({"tx_hash": Signature::from([7u8; 64]).to_string(), "chain": DEVNET, "expected_amount": "1", "recipient": s.pay_to.to_string()}),
    )
    .await;
    assert_eq!(v["invalidReason"], "tx_not_found", "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tier_without_solana_is_never_offered_it() {
    let chain = SvmChain::start();
    let up = Upstream::start();
    let pay_to = chain.new_recipient();
    let cfg = format!(
        r#"
[server]
listen = "{{listen}}"
admin_listen = "{{admin}}"
metrics_listen = "{{metrics}}"
[admin]
token = "{ADMIN_TOKEN}"
[networks."eip155:84532"]
rpc_url = "http://127.0.0.1:1"
settler_key = "{SETTLER_KEY}"
assets = [{{ symbol = "USDC", address = "{USDC_BASE_SEPOLIA}", decimals = 6, eip712_name = "USDC", eip712_version = "2" }}]
[networks."{DEVNET}"]
rpc_url = "{rpc}"
fee_payer_key = "{key}"
assets = [{{ symbol = "USDC", mint = "{mint}", decimals = 6 }}]
[tiers.free]
networks = ["eip155:84532"]
[[tenants]]
id = "acme"
pay_to = {{ "eip155:84532" = "{PAY_TO}", "{DEVNET}" = "{pay_to}" }}
[[routes]]
tenant = "acme"
path = "/paid/*"
upstream = "{upstream}"
price = "$0.01"
"#,
        rpc = chain.rpc_url(),
        key = chain.fee_payer_key(),
        mint = chain.mint(),
        upstream = up.url(),
    );
    let gw = Gateway::start(&cfg);
    let resp = client().get(gw.url("/paid/x")).send().await.unwrap();
    let accepts = resp
        .headers()
        .get("payment-required")
        .map(|h| decode_b64_json(h.to_str().unwrap())["accepts"].clone());
    assert_eq!(resp.status(), 402);
    let accepts = accepts.expect("a v2 challenge");
    let networks: Vec<&str> = accepts
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["network"].as_str().unwrap())
        .collect();
    assert_eq!(networks, ["eip155:84532"], "only what the tier allows");
    // supported-chains lists the network, and says this tenant's tier does not allow it.
    let all: Value = client()
        .get(gw.admin_url("/api/v1/x402/supported-chains"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let solana = all["chains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["network"] == DEVNET)
        .expect("Solana is listed")
        .clone();
    assert_eq!(solana["v1_name"], "solana-devnet", "{solana}");
    assert_eq!(solana["assets"][0]["address"], chain.mint().to_string());
    let key = tenant_key(&gw).await;
    let mine: Value = client()
        .get(gw.admin_url("/api/v1/x402/supported-chains"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let solana = mine["chains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["network"] == DEVNET)
        .unwrap()
        .clone();
    assert_eq!(solana["allowed"], false, "{mine}");
}

/// The settlement landed, but the gateway never saw its confirmation (the status replies were
/// lost) before it went down: on restart the reconciler finds the transaction and records it.
#[tokio::test(flavor = "multi_thread")]
async fn a_settlement_whose_confirmation_was_not_seen_is_reconciled_on_restart() {
    let chain = SvmChain::start();
    let up = Upstream::start();
    let pay_to = chain.new_recipient();
    let payer = chain.new_payer(1_000_000);
    let cfg = svm_config(&up.url(), &chain, &pay_to, "rpc_timeout_seconds = 1");
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("gate.db").display());
    let gw = Gateway::start_with_db(&cfg, &db_url);
    let offer = offer_in(&gw, "/paid/crash", &chain.mint()).await;
    let header = chain
        .payment(&offer, &payer.pubkey())
        .header(&offer, &payer);

    chain.set_stall("getSignatureStatuses", Duration::from_secs(60));
    let req = client()
        .get(gw.url("/paid/crash"))
        .header("payment-signature", header);
    let pending = tokio::spawn(async move { req.send().await });
    // The transfer lands; the gateway cannot see it.
    wait_for(|| async { chain.token_balance(&pay_to, &chain.mint()) == PRICE }).await;
    let db = Store::connect(&db_url).await.unwrap();
    assert_eq!(db.count_claims("settling").await.unwrap(), 1);
    drop(gw);
    pending.abort();
    assert!(
        db.ledger(10).await.unwrap().is_empty(),
        "nothing recorded yet"
    );

    chain.clear_stalls();
    let _gw = Gateway::start_with_db(&cfg, &db_url);
    wait_for(|| async { db.ledger(10).await.unwrap().len() == 1 }).await;
    let entry = &db.ledger(10).await.unwrap()[0];
    assert_eq!(entry.pay_to, pay_to.to_string());
    assert_eq!(entry.payer, payer.pubkey().to_string());
    assert_eq!(entry.amount, PRICE.to_string());
    let sig: Signature = entry.tx_hash.parse().unwrap();
    assert_eq!(chain.landed(&sig), Some(Ok(())));
    assert_eq!(db.count_claims("settled").await.unwrap(), 1);
    assert_eq!(
        chain.token_balance(&pay_to, &chain.mint()),
        PRICE,
        "paid once"
    );
}

/// A settlement sent but dropped by the node before the gateway went down: on restart the
/// reconciler sends the same bytes again, and they land once.
#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_settlement_is_sent_again_after_a_restart() {
    let chain = SvmChain::start();
    let up = Upstream::start();
    let pay_to = chain.new_recipient();
    let payer = chain.new_payer(1_000_000);
    let cfg = svm_config(&up.url(), &chain, &pay_to, "");
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("gate.db").display());
    let gw = Gateway::start_with_db(&cfg, &db_url);
    let offer = offer_in(&gw, "/paid/dropped", &chain.mint()).await;
    let header = chain
        .payment(&offer, &payer.pubkey())
        .header(&offer, &payer);

    chain.set_swallow(true);
    let req = client()
        .get(gw.url("/paid/dropped"))
        .header("payment-signature", header);
    let pending = tokio::spawn(async move { req.send().await });
    wait_for(|| async { chain.count("sendTransaction") >= 1 }).await;
    drop(gw);
    pending.abort();
    let db = Store::connect(&db_url).await.unwrap();
    assert!(db.ledger(10).await.unwrap().is_empty());
    assert_eq!(chain.token_balance(&pay_to, &chain.mint()), 0);

    chain.set_swallow(false);
    let _gw = Gateway::start_with_db(&cfg, &db_url);
    wait_for(|| async { db.ledger(10).await.unwrap().len() == 1 }).await;
    assert_eq!(chain.token_balance(&pay_to, &chain.mint()), PRICE);
    assert_eq!(db.count_claims("settled").await.unwrap(), 1);
}

async fn ready(gw: &Gateway) -> (u16, Value) {
    let resp = client().get(gw.admin_url("/ready")).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

async fn ready_until(gw: &Gateway, want: u16) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = ready(gw).await;
        if status == want {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/ready stayed {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const FAST_PROBE: &str =
    "min_settler_balance = \"1\"\n[health]\nprobe_interval_seconds = 1\nrpc_max_age_seconds = 2";

/// `/ready` probes the Solana RPC (slot, the fee payer's SOL against its floor) and follows an
/// outage; an RPC of another cluster is never ready.
#[tokio::test(flavor = "multi_thread")]
async fn ready_follows_the_solana_rpc_and_its_cluster() {
    let s = setup_with(FAST_PROBE);
    let body = ready_until(&s.gw, 200).await;
    let net = &body["networks"][0];
    assert_eq!(net["network"], DEVNET, "{body}");
    assert_eq!(net["checked"], true);
    let fee_payer = &net["settlers"][0];
    assert_eq!(fee_payer["settler"], s.chain.fee_payer_pubkey().to_string());
    assert_eq!(
        fee_payer["balance"],
        s.chain.sol_balance(&s.chain.fee_payer_pubkey()).to_string()
    );
    assert_eq!(fee_payer["below_floor"], false);
    s.chain.set_down(true);
    ready_until(&s.gw, 503).await;
    s.chain.set_down(false);
    ready_until(&s.gw, 200).await;

    // The same config against a chain that says it is mainnet.
    let other = SvmChain::start_with_genesis("5eykt4UsFv8P8NJdTREpY1vzqKqZKvdpKuc147dw2N9d");
    let up = Upstream::start();
    let gw = Gateway::start(&svm_config(
        &up.url(),
        &other,
        &other.new_recipient(),
        FAST_PROBE,
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, body) = ready(&gw).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.to_string().contains("genesis"), "{body}");
}

/// Ten payments signed against a balance that covers one, presented at once under `deferred`
/// (answered before settlement): each simulates fine alone, and one is served.
#[tokio::test(flavor = "multi_thread")]
async fn ten_payments_against_one_payments_balance_are_served_once() {
    let s = setup();
    let poor = s.chain.new_payer(PRICE);
    let offer = offer_for(&s, "/deferred/overdraw").await;
    let headers: Vec<String> = (0..10)
        .map(|_| {
            s.chain
                .payment(&offer, &poor.pubkey())
                .header(&offer, &poor)
        })
        .collect();
    let mut tasks = Vec::new();
    for h in headers {
        let req = client()
            .get(s.gw.url("/deferred/overdraw"))
            .header("payment-signature", h);
        tasks.push(tokio::spawn(async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let error = resp
                .headers()
                .get("payment-required")
                .map(|h| decode_b64_json(h.to_str().unwrap())["error"].to_string());
            (status, error)
        }));
    }
    let mut served = 0;
    for t in tasks {
        let (status, error) = t.await.unwrap();
        match status {
            201 => served += 1,
            402 => assert!(
                error
                    .as_deref()
                    .is_some_and(|e| e.contains("insufficient_funds")
                        || e.contains("too_many")
                        || e.contains("simulation_failed")),
                "{error:?}"
            ),
            other => panic!("unexpected {other}"),
        }
    }
    // Racing admissions each see the others: at worst all are refused (and may retry), never
    // more served than the balance pays for.
    assert!(served <= 1, "{served} served against one payment's balance");
    let want = served as u64 * PRICE;
    wait_for(|| async { s.chain.token_balance(&s.pay_to, &s.chain.mint()) == want }).await;
    wait_for(|| async { store(&s.gw).await.ledger(10).await.unwrap().len() == served }).await;
    assert_eq!(s.up.hits(), served);
    // Once nothing is in flight, the balance pays for the next payment.
    let resp = get_paid(
        &s.gw,
        "/deferred/overdraw",
        &s.chain
            .payment(&offer, &poor.pubkey())
            .header(&offer, &poor),
    )
    .await;
    assert_eq!(resp.status(), if served == 0 { 201 } else { 402 });
}
