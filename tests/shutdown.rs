//! SIGTERM to the real binary while a paid request is in flight: the request finishes, its
//! settlement lands and is recorded, its access line is written, and the process exits cleanly.
//! And the binary's log writer: a stderr nobody reads stalls no request, and loses no line. A
//! real anvil, a real origin that takes its time, and the gateway as its own process (signals go
//! to a process, and stderr is a process's).

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
    let log = dir.path().join("gate.log");
    let mut gw = tokio::process::Command::new(env!("CARGO_BIN_EXE_x402-gate"))
        .arg("--config")
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
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
    signal(&gw, "-TERM");

    let resp = paid
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(resp.status(), 201);
    let receipt = decode_b64_json(resp.headers()["payment-response"].to_str().unwrap());
    assert_eq!(receipt["success"], true);
    assert_eq!(chain.balance(pay_to).await, U256::from(PRICE));
    exits_cleanly(&mut gw).await;
    // Recorded before the process went away.
    let store = Store::connect(&db_url).await.unwrap();
    let ledger = store.ledger(10).await.unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(
        ledger[0].tx_hash,
        receipt["transaction"].as_str().unwrap(),
        "the ledger names the receipt's transaction"
    );
    // The log writer thread wrote out what it still held when the process exited: the paid
    // request's access line is among the last lines written.
    let log = std::fs::read_to_string(&log).unwrap();
    let paid_line = log
        .lines()
        .find(|l| l.contains("x402_gate::access") && l.contains("payment=\"admitted\""))
        .unwrap_or_else(|| panic!("no access line for the paid request in:\n{log}"));
    assert!(paid_line.contains("status=201"), "{paid_line}");
    assert!(paid_line.contains("settlement=\"settled\""), "{paid_line}");
}

/// Access lines go to stderr from a thread of their own: a pipe that fills because its reader
/// stopped (a stuck log shipper) delays no request, and once read again it holds every line.
#[tokio::test(flavor = "multi_thread")]
async fn a_stderr_nobody_reads_stalls_no_request_and_loses_no_line() {
    use tokio::io::AsyncReadExt;
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("gate.db").display());
    let listen: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let text = render(
        &basic_config(&up.url(), ""),
        listen,
        format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        &db_url,
    );
    let cfg = dir.path().join("gate.toml");
    std::fs::write(&cfg, text).unwrap();
    let mut gw = tokio::process::Command::new(env!("CARGO_BIN_EXE_x402-gate"))
        .arg("--config")
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = gw.stderr.take().unwrap();
    let base = format!("http://{listen}");
    let c = client();
    // Refused connections (not listening yet) write no access line; every answer does.
    let mut answered_warmup = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = c.get(format!("{base}/free/warmup")).send().await {
            answered_warmup += 1;
            if r.status().is_success() {
                break;
            }
        }
        if Instant::now() > deadline {
            let _ = gw.start_kill();
            let mut early = String::new();
            let _ = stderr.read_to_string(&mut early).await;
            panic!("the gateway did not start:\n{early}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Each access line is a few hundred bytes: 3,000 of them are several times a pipe's 64 KiB.
    // Written by the request's own thread, the first few hundred would fill the pipe and every
    // later request would hang in `write`.
    const REQUESTS: usize = 3_000;
    let started = Instant::now();
    for i in 0..REQUESTS {
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            c.get(format!("{base}/free/{i}")).send(),
        )
        .await
        .unwrap_or_else(|_| panic!("request {i} stalled behind a full stderr"))
        .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }
    eprintln!(
        "{REQUESTS} requests with stderr unread: {:?}",
        started.elapsed()
    );
    // Read again: every line comes out, then the process ends and stderr closes.
    let reader = tokio::spawn(async move {
        let mut all = Vec::new();
        stderr.read_to_end(&mut all).await.unwrap();
        String::from_utf8(all).unwrap()
    });
    signal(&gw, "-TERM");
    exits_cleanly(&mut gw).await;
    let log = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("stderr closes")
        .unwrap();
    let access: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("x402_gate::access"))
        .collect();
    assert_eq!(
        access.len(),
        REQUESTS + answered_warmup,
        "one access line per answered request, none lost"
    );
    for i in [0, REQUESTS / 2, REQUESTS - 1] {
        let path = format!("path=\"/free/{i}\"");
        assert!(
            access.iter().any(|l| l.contains(&path)),
            "the line of /free/{i} is there"
        );
    }
}
