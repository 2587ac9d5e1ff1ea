//! SIGTERM to the real binary while a paid request is in flight: the request finishes, its
//! settlement lands and is recorded, and the process exits cleanly. A real anvil, a real origin
//! that takes its time, and the gateway as its own process (signals go to a process).

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use alloy::primitives::U256;
use common::chain::*;
use common::*;
use x402_gate::store::Store;

const PRICE: u64 = 10_000;

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_an_in_flight_paid_request_finish_and_records_its_settlement() {
    let chain = Chain::start().await;
    // The origin answers `/…/hook` after 1.5 s: the request is in flight when SIGTERM arrives.
    let hook: Hook = std::sync::Arc::new(|| {
        Box::pin(async { tokio::time::sleep(Duration::from_millis(1500)).await })
    });
    let up = Upstream::start_with_hook(Some(hook));
    let pay_to = new_signer().address();
    let payer = new_signer();
    chain.mint(payer.address(), 1_000_000).await;
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("gate.db").display());
    let listen = format!("127.0.0.1:{}", free_port());
    let text = evm_config(
        &up.url(),
        &chain.rpc.url,
        &chain.settler_key,
        &chain.token.to_checksum(None),
        &pay_to.to_checksum(None),
    )
    .replace("{listen}", &listen)
    .replace("{admin}", &format!("127.0.0.1:{}", free_port()))
    .replace("{metrics}", &format!("127.0.0.1:{}", free_port()))
        + &format!("\n[database]\nurl = \"{db_url}\"\n");
    let cfg = dir.path().join("gate.toml");
    std::fs::write(&cfg, text).unwrap();
    let mut gw = tokio::process::Command::new(env!("CARGO_BIN_EXE_x402-gate"))
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://{listen}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let offer = loop {
        if let Ok(r) = client().get(format!("{base}/paid/hook")).send().await {
            if r.status() == 402 {
                let v2 = decode_b64_json(r.headers()["payment-required"].to_str().unwrap());
                break v2["accepts"][0].clone();
            }
        }
        assert!(Instant::now() < deadline, "the gateway did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let auth = Authorization::for_offer(&offer, payer.address());
    let header = v2_header(&offer, auth.payload(&auth.sign(&payer)));
    let paid = tokio::spawn({
        let url = format!("{base}/paid/hook");
        async move {
            client()
                .get(url)
                .header("payment-signature", header)
                .send()
                .await
        }
    });
    // The request reaches the origin, then the gateway is asked to terminate.
    let deadline = Instant::now() + Duration::from_secs(10);
    while up.hits() < 1 {
        assert!(
            Instant::now() < deadline,
            "the paid request never reached the origin"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = gw.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());

    let resp = paid
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(resp.status(), 201);
    let receipt = decode_b64_json(resp.headers()["payment-response"].to_str().unwrap());
    assert_eq!(receipt["success"], true);
    assert_eq!(chain.balance(pay_to).await, U256::from(PRICE));
    let status = tokio::time::timeout(Duration::from_secs(30), gw.wait())
        .await
        .expect("the gateway exits after its grace period")
        .unwrap();
    assert!(status.success(), "{status}");
    // Recorded before the process went away.
    let store = Store::connect(&db_url).await.unwrap();
    let ledger = store.ledger(10).await.unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(
        ledger[0].tx_hash,
        receipt["transaction"].as_str().unwrap(),
        "the ledger names the receipt's transaction"
    );
}
