//! pingora's graceful binary upgrade with the real binary, under a steady load of free and paid
//! requests: a second process started with `--upgrade` takes the listening socket over from the
//! running one (sent over `server.upgrade_sock` when the old one gets SIGQUIT), the old one
//! drains and exits, and no request fails: every paid request is answered with its receipt,
//! settled once on anvil and in the ledger, even though both processes share one SQLite file and
//! one settler key for a while (the new one signs only once the old one is gone).

mod common;

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::primitives::U256;
use common::chain::*;
use common::*;
use x402_gate::store::Store;

const PRICE: u64 = 10_000;

fn spawn_gateway(cfg: &Path, log: &Path, upgrade: bool) -> tokio::process::Child {
    let log = std::fs::File::create(log).unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_x402-gate"));
    cmd.arg("--config").arg(cfg);
    if upgrade {
        cmd.arg("--upgrade");
    }
    cmd.stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// What the load saw.
#[derive(Default)]
struct Tally {
    free_ok: usize,
    paid_ok: usize,
    transactions: Vec<String>,
    failures: Vec<String>,
}

/// One client loop until `stop`: free requests, or paid ones each with a fresh authorization.
async fn load(
    base: String,
    paid: bool,
    offer: serde_json::Value,
    payer: alloy::signers::local::PrivateKeySigner,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
) {
    // One pooled, keep-alive client per loop, as a real client would hold.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    while !stop.load(Ordering::SeqCst) {
        if !paid {
            let r = http.get(format!("{base}/free/ping")).send().await;
            let mut t = tally.lock().unwrap();
            match r {
                Ok(r) if r.status() == 201 => t.free_ok += 1,
                Ok(r) => t.failures.push(format!("free: status {}", r.status())),
                Err(e) => t.failures.push(format!("free: {e:?}")),
            }
        } else {
            let auth = Authorization::for_offer(&offer, payer.address());
            let header = v2_header(&offer, auth.payload(&auth.sign(&payer)));
            let r = http
                .get(format!("{base}/paid/data"))
                .header("payment-signature", header)
                .send()
                .await;
            let outcome = match r {
                Ok(r) if r.status() == 201 => {
                    let receipt =
                        decode_b64_json(r.headers()["payment-response"].to_str().unwrap());
                    if receipt["success"] == true {
                        Ok(receipt["transaction"].as_str().unwrap().to_string())
                    } else {
                        Err(format!("paid: receipt {receipt}"))
                    }
                }
                Ok(r) => Err(format!(
                    "paid: status {} {:?}",
                    r.status(),
                    r.headers().get("payment-required")
                )),
                Err(e) => Err(format!("paid: {e:?}")),
            };
            let mut t = tally.lock().unwrap();
            match outcome {
                Ok(tx) => {
                    t.paid_ok += 1;
                    t.transactions.push(tx);
                }
                Err(e) => t.failures.push(e),
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_upgrade_under_load_loses_no_request() {
    let chain = Chain::start().await;
    let up = Upstream::start();
    let pay_to = new_signer().address();
    let payer = new_signer();
    chain.mint(payer.address(), 100_000_000).await;
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("gate.db").display());
    let sock = dir.path().join("upgrade.sock");
    let listen = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let text = evm_config(
        &up.url(),
        &chain.rpc.url,
        &chain.settler_key,
        &chain.token.to_checksum(None),
        &pay_to.to_checksum(None),
    )
    .replace(
        "threads = 2",
        &format!("threads = 2\nupgrade_sock = \"{}\"", sock.display()),
    )
    .replace("{listen}", &listen)
    .replace("{admin}", &admin)
    .replace("{metrics}", &format!("127.0.0.1:{}", free_port()))
        + &format!("\n[database]\nurl = \"{db_url}\"\n");
    let cfg = dir.path().join("gate.toml");
    std::fs::write(&cfg, text).unwrap();
    let (log_a, log_b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let logs = || {
        format!(
            "--- old process ---\n{}\n--- new process ---\n{}",
            std::fs::read_to_string(&log_a).unwrap_or_default(),
            std::fs::read_to_string(&log_b).unwrap_or_default()
        )
    };

    let mut old = spawn_gateway(&cfg, &log_a, false);
    let base = format!("http://{listen}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let offer = loop {
        if let Ok(r) = client().get(format!("{base}/paid/data")).send().await {
            if r.status() == 402 {
                let v2 = decode_b64_json(r.headers()["payment-required"].to_str().unwrap());
                break v2["accepts"][0].clone();
            }
        }
        assert!(Instant::now() < deadline, "the gateway did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Steady load: two paying clients and two free ones.
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let workers: Vec<_> = [true, true, false, false]
        .into_iter()
        .map(|paid| {
            tokio::spawn(load(
                base.clone(),
                paid,
                offer.clone(),
                payer.clone(),
                stop.clone(),
                tally.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before_upgrade = {
        let t = tally.lock().unwrap();
        (t.free_ok, t.paid_ok)
    };
    assert!(
        before_upgrade.0 > 0 && before_upgrade.1 > 0,
        "the old process serves"
    );

    // The upgrade: the new process waits on the upgrade socket, the old one sends its
    // listeners there on SIGQUIT, then drains and exits.
    let mut new = spawn_gateway(&cfg, &log_b, true);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sock.exists() {
        assert!(
            Instant::now() < deadline,
            "the new process never listened on the upgrade socket\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(&old, "-QUIT");
    let status = tokio::time::timeout(Duration::from_secs(45), old.wait())
        .await
        .unwrap_or_else(|_| panic!("the old process did not exit\n{}", logs()))
        .unwrap();
    assert!(status.success(), "the old process exited with {status}");
    let at_exit = {
        let t = tally.lock().unwrap();
        (t.free_ok, t.paid_ok)
    };

    // Only the new process is left: it serves free and paid requests, and its management API.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    let t = std::mem::take(&mut *tally.lock().unwrap());
    assert!(
        t.failures.is_empty(),
        "{} request(s) failed across the upgrade: {:#?}\n{}",
        t.failures.len(),
        t.failures,
        logs()
    );
    assert!(
        t.free_ok > at_exit.0 && t.paid_ok > at_exit.1,
        "the new process serves after the old one exited: {at_exit:?} -> ({}, {})",
        t.free_ok,
        t.paid_ok
    );
    let ready = client()
        .get(format!("http://{admin}/health"))
        .send()
        .await
        .unwrap();
    assert!(
        ready.status().is_success(),
        "the new management API answers"
    );

    // Every paid request settled exactly once, on chain and in the ledger: the payee got exactly
    // the paid requests, and the receipts name the ledger's transactions, one row per paid
    // request (a transaction may settle several: concurrent payments go out in batches).
    assert_eq!(
        chain.balance(pay_to).await,
        U256::from(PRICE * t.paid_ok as u64),
        "the payee got exactly the paid requests"
    );
    let store = Store::connect(&db_url).await.unwrap();
    let ledger = store.ledger(10_000).await.unwrap();
    assert_eq!(ledger.len(), t.paid_ok, "every settlement is in the ledger");
    let mut receipts = t.transactions.clone();
    let mut rows: Vec<String> = ledger.iter().map(|r| r.tx_hash.clone()).collect();
    receipts.sort();
    rows.sort();
    assert_eq!(
        receipts, rows,
        "each receipt names its payment's ledger transaction"
    );

    // The handover as it happened: the old process drained (its answers closed their
    // connections), and the new one signed only once it had the settler keys to itself.
    let (a, b) = (
        std::fs::read_to_string(&log_a).unwrap(),
        std::fs::read_to_string(&log_b).unwrap(),
    );
    assert!(a.contains("draining"), "{}", logs());
    assert!(b.contains("took the settler keys over"), "{}", logs());

    signal(&new, "-TERM");
    exits_cleanly(&mut new).await;
    eprintln!(
        "upgrade under load: {} free and {} paid requests, none failed (before the upgrade: {:?}, \
         when the old process exited: {:?})",
        t.free_ok, t.paid_ok, before_upgrade, at_exit
    );
}
