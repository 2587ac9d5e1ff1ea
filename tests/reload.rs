//! Config reload through the real gateway: under steady load of free and paid requests a reload
//! changes a price and adds a route without a single failed request; a broken file is refused with
//! every error and the running config keeps serving; what cannot change live is reported; and
//! SIGHUP reloads the real binary.

mod common;

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::signers::local::PrivateKeySigner;
use common::chain::*;
use common::*;
use serde_json::Value;

/// One paid request as an x402 client makes it: the 402, then the payment of its first offer.
/// Returns the amount paid.
async fn pay_once(
    client: &reqwest::Client,
    url: &str,
    payer: &PrivateKeySigner,
) -> Result<u64, String> {
    let r = client.get(url).send().await.map_err(|e| e.to_string())?;
    if r.status() != 402 {
        return Err(format!("unpaid request answered {}", r.status()));
    }
    let v2 = decode_b64_json(r.headers()["payment-required"].to_str().unwrap());
    let offer = v2["accepts"][0].clone();
    let auth = Authorization::for_offer(&offer, payer.address());
    let header = v2_header(&offer, auth.payload(&auth.sign(payer)));
    let r = client
        .get(url)
        .header("payment-signature", header)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    if status != 201 {
        let why = r
            .headers()
            .get("payment-required")
            .map(|h| decode_b64_json(h.to_str().unwrap())["error"].to_string());
        return Err(format!("paid request answered {status}: {why:?}"));
    }
    let receipt = decode_b64_json(r.headers()["payment-response"].to_str().unwrap());
    if receipt["success"] != true {
        return Err(format!("receipt {receipt}"));
    }
    Ok(offer["amount"].as_str().unwrap().parse().unwrap())
}

async fn reload(gw: &Gateway) -> (u16, Value) {
    let r = client()
        .post(gw.admin_url("/api/v1/x402/admin/reload"))
        .header("x-admin-key", ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[derive(Default)]
struct Tally {
    free: AtomicUsize,
    paid_old: AtomicUsize,
    paid_new: AtomicUsize,
    added: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_under_load_changes_a_price_and_adds_a_route_without_a_failed_request() {
    let chain = Chain::start_busy().await;
    let up = Upstream::start();
    let pay_to = new_signer().address().to_checksum(None);
    let config = evm_config(
        &up.url(),
        &chain.rpc.url,
        &chain.settler_key,
        &chain.token.to_checksum(None),
        &pay_to,
    );
    let gw = Gateway::start_from_file(&config);
    let payers: Vec<PrivateKeySigner> = (0..3).map(|_| new_signer()).collect();
    for p in &payers {
        chain.mint(p.address(), 100_000_000).await;
    }
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    // When the reload answered: a request to the new route started after it must be served.
    let reloaded_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let mut load = Vec::new();
    for _ in 0..3 {
        let (tally, stop, url) = (tally.clone(), stop.clone(), gw.url("/free/item"));
        load.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 201 => tally.free.fetch_add(1, Ordering::Relaxed),
                    Ok(r) => {
                        tally.fail(format!("free: {}", r.status()));
                        0
                    }
                    Err(e) => {
                        tally.fail(format!("free: {e}"));
                        0
                    }
                };
            }
        }));
    }
    for payer in payers {
        let (tally, stop, url) = (tally.clone(), stop.clone(), gw.url("/paid/item"));
        load.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                match pay_once(&c, &url, &payer).await {
                    Ok(10_000) => tally.paid_old.fetch_add(1, Ordering::Relaxed),
                    Ok(20_000) => tally.paid_new.fetch_add(1, Ordering::Relaxed),
                    Ok(other) => {
                        tally.fail(format!("paid an unexpected {other}"));
                        0
                    }
                    Err(e) => {
                        tally.fail(format!("paid: {e}"));
                        0
                    }
                };
            }
        }));
    }
    {
        let (tally, stop, url) = (tally.clone(), stop.clone(), gw.url("/added/item"));
        let reloaded_at = reloaded_at.clone();
        load.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let after_reload = reloaded_at.lock().unwrap().is_some_and(|t| started > t);
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 201 => {
                        tally.added.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) if r.status() == 404 && !after_reload => {}
                    Ok(r) => tally.fail(format!("added route: {}", r.status())),
                    Err(e) => tally.fail(format!("added route: {e}")),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    // Steady load on the old config first.
    let deadline = Instant::now() + Duration::from_secs(20);
    while tally.paid_old.load(Ordering::Relaxed) < 6 {
        assert!(
            Instant::now() < deadline,
            "no paid traffic before the reload"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let added = format!(
        "\n[[routes]]\ntenant = \"acme\"\npath = \"/added/*\"\nupstream = \"{}\"\nprice = \"free\"\n",
        up.url()
    );
    // A client quoted the old price just before the reload pays it just after.
    let straddler = new_signer();
    chain.mint(straddler.address(), 1_000_000).await;
    let r = client().get(gw.url("/paid/straddle")).send().await.unwrap();
    let quoted =
        decode_b64_json(r.headers()["payment-required"].to_str().unwrap())["accepts"][0].clone();
    assert_eq!(quoted["amount"], "10000");
    let new_config = config.replacen("price = \"$0.01\"", "price = \"$0.02\"", 1) + &added;
    gw.write_config(&new_config);
    let (status, report) = reload(&gw).await;
    *reloaded_at.lock().unwrap() = Some(Instant::now());
    let auth = Authorization::for_offer(&quoted, straddler.address());
    let r = client()
        .get(gw.url("/paid/straddle"))
        .header(
            "payment-signature",
            v2_header(&quoted, auth.payload(&auth.sign(&straddler))),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        201,
        "a quote from before the reload is honoured"
    );
    let fresh = client().get(gw.url("/paid/straddle")).send().await.unwrap();
    let v2 = decode_b64_json(fresh.headers()["payment-required"].to_str().unwrap());
    assert_eq!(
        v2["accepts"][0]["amount"], "20000",
        "new quotes carry the new price"
    );
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["result"], "applied");
    assert_eq!(
        report["applied"],
        serde_json::json!(["routes[0]", "routes[4]"]),
        "{report}"
    );
    assert_eq!(report["restart_required"], serde_json::json!([]));
    // Steady load on the new config.
    let deadline = Instant::now() + Duration::from_secs(20);
    while tally.paid_new.load(Ordering::Relaxed) < 6 || tally.added.load(Ordering::Relaxed) < 20 {
        assert!(Instant::now() < deadline, "no traffic after the reload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let failures = tally.failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "failed requests: {failures:#?}");
    assert!(tally.free.load(Ordering::Relaxed) > 50);
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "x402_config_reloads_total{result=\"applied\"}"),
        Some(1.0)
    );
    assert_eq!(metric(&m, "x402_config_last_reload_success"), Some(1.0));
    eprintln!(
        "free {}, paid at the old price {}, at the new price {}, new route {}",
        tally.free.load(Ordering::Relaxed),
        tally.paid_old.load(Ordering::Relaxed),
        tally.paid_new.load(Ordering::Relaxed),
        tally.added.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_file_is_refused_with_every_error_and_the_old_config_keeps_serving() {
    let up = Upstream::start();
    let config = basic_config(&up.url(), "");
    let gw = Gateway::start_from_file(&config);
    let c = client();
    let amount = |r: &reqwest::Response| {
        decode_b64_json(r.headers()["payment-required"].to_str().unwrap())["accepts"][0]["amount"]
            .clone()
    };
    let r = c.get(gw.url("/paid/x")).send().await.unwrap();
    assert_eq!(amount(&r), "10000");

    // Only the operator may reload.
    let r = c
        .post(gw.admin_url("/api/v1/x402/admin/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Two mistakes and a changed price: refused whole, each error with its key path.
    let broken = config.replacen("price = \"$0.01\"", "price = \"$0.05\"", 1)
        + "\n[[routes]]\ntenant = \"ghost\"\npath = \"/ghost\"\nupstream = \"http://127.0.0.1:1\"\nprice = \"free\"\ncolour = \"blue\"\n";
    gw.write_config(&broken);
    let (status, report) = reload(&gw).await;
    assert_eq!(status, 422, "{report}");
    assert_eq!(report["result"], "invalid");
    let paths: Vec<&str> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"routes[4].tenant"), "{report}");
    assert!(paths.contains(&"routes[4].colour"), "{report}");
    assert_eq!(report["applied"], serde_json::json!([]));
    // The running config keeps serving, unchanged.
    let r = c.get(gw.url("/paid/x")).send().await.unwrap();
    assert_eq!(r.status(), 402);
    assert_eq!(amount(&r), "10000", "the refused price is not applied");
    let r = c.get(gw.url("/free/x")).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "x402_config_reloads_total{result=\"invalid\"}"),
        Some(1.0)
    );
    assert_eq!(metric(&m, "x402_config_last_reload_success"), Some(0.0));

    // A listener change cannot apply live: reported, the rest applies, the old port serves.
    let other_port = format!("127.0.0.1:{}", free_port());
    let moved = gw
        .render(&config)
        .replacen(&gw.addr.to_string(), &other_port, 1)
        .replacen("price = \"$0.01\"", "price = \"$0.03\"", 1);
    std::fs::write(gw.config_file.as_ref().unwrap(), moved).unwrap();
    let (status, report) = reload(&gw).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["applied"], serde_json::json!(["routes[0]"]));
    assert_eq!(report["restart_required"][0]["path"], "server.listen");
    let r = c.get(gw.url("/paid/x")).send().await.unwrap();
    assert_eq!(amount(&r), "30000");
    let m = gw.metrics().await;
    assert_eq!(metric(&m, "x402_config_restart_required"), Some(1.0));
    assert_eq!(metric(&m, "x402_config_last_reload_success"), Some(1.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_embedded_gateway_without_a_file_answers_409() {
    let up = Upstream::start();
    let gw = Gateway::start(&basic_config(&up.url(), ""));
    let (status, body) = reload(&gw).await;
    assert_eq!(status, 409);
    assert_eq!(body["error"], "reload_unavailable");
    // The endpoint and its answer are in the OpenAPI document.
    let doc: Value = client()
        .get(gw.admin_url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/api/v1/x402/admin/reload"]["post"].is_object());
    assert!(doc["components"]["schemas"]["ReloadReport"].is_object());
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_real_binary() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("gate.db").display());
    let listen = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let metrics = format!("127.0.0.1:{}", free_port());
    let render = |text: &str| {
        text.replace("{listen}", &listen)
            .replace("{admin}", &admin)
            .replace("{metrics}", &metrics)
            + &format!("\n[database]\nurl = \"{db_url}\"\n")
    };
    let config = basic_config(&up.url(), "");
    let cfg = dir.path().join("gate.toml");
    std::fs::write(&cfg, render(&config)).unwrap();
    let log = dir.path().join("gate.log");
    let mut gw = tokio::process::Command::new(env!("CARGO_BIN_EXE_x402-gate"))
        .arg("--config")
        .arg(&cfg)
        .arg("--log-format")
        .arg("json")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://{listen}");
    let c = client();
    let amount = |v2: &str| decode_b64_json(v2)["accepts"][0]["amount"].clone();
    let challenge = || async {
        let r = c.get(format!("{base}/paid/x")).send().await.ok()?;
        (r.status() == 402).then(|| {
            r.headers()["payment-required"]
                .to_str()
                .unwrap()
                .to_string()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v2) = challenge().await {
            assert_eq!(amount(&v2), "10000");
            break;
        }
        assert!(Instant::now() < deadline, "the gateway did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The reload service listens for SIGHUP once it runs; so does the admin API: wait for it.
    while c
        .get(format!("http://{admin}/health"))
        .send()
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the management API did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hup = || signal(&gw, "-HUP");
    let added = format!(
        "\n[[routes]]\ntenant = \"acme\"\npath = \"/added/*\"\nupstream = \"{}\"\nprice = \"free\"\n",
        up.url()
    );
    let new_config = config.replacen("price = \"$0.01\"", "price = \"$0.05\"", 1) + &added;
    std::fs::write(&cfg, render(&new_config)).unwrap();
    hup();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let added = c.get(format!("{base}/added/x")).send().await.unwrap();
        let v2 = challenge().await.expect("still serving challenges");
        if added.status() == 201 && amount(&v2) == "50000" {
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A broken file on SIGHUP: logged with its key path, and the running config stays.
    let broken = config.clone()
        + "\n[[routes]]\ntenant = \"ghost\"\npath = \"/ghost\"\nupstream = \"http://127.0.0.1:1\"\nprice = \"free\"\ncolour = \"blue\"\n";
    std::fs::write(&cfg, render(&broken)).unwrap();
    hup();
    let metrics_url = format!("http://{metrics}/metrics");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = c
            .get(&metrics_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metric(&m, "x402_config_reloads_total{result=\"invalid\"}") == Some(1.0) {
            assert_eq!(
                metric(&m, "x402_config_reloads_total{result=\"applied\"}"),
                Some(1.0)
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the broken file was not reported"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(amount(&challenge().await.unwrap()), "50000");
    assert_eq!(
        c.get(format!("{base}/added/x"))
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    signal(&gw, "-TERM");
    exits_cleanly(&mut gw).await;
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(
        logs.lines()
            .any(|l| l.contains("SIGHUP: reloading the config")),
        "{logs}"
    );
    assert!(
        logs.lines().any(|l| l.contains("config reload refused")),
        "{logs}"
    );
    for path in ["routes[4].tenant", "routes[4].colour"] {
        assert!(
            logs.lines()
                .any(|l| l.contains(&format!("\"path\":\"{path}\""))),
            "{path} not logged:\n{logs}"
        );
    }
}
