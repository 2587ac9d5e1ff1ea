//! Soak and load: mixed traffic at a fixed rate through the real gateway binary, for a minute or
//! more, with paid requests settled on a real anvil chain and the ledger on SQLite.
//!
//! The load is open-loop: requests start on a fixed schedule (`X402_SOAK_RATE` per second,
//! default 1000) whether or not earlier ones have finished, so a slow gateway shows up as
//! latency and errors, not as a politely lower rate. The mix: one request in
//! `X402_SOAK_PAID_EVERY` (default 50) a fresh valid payment (`after`: verified, claimed,
//! forwarded, settled on chain, receipt); of the rest, 40% a free route, 30% a priced route
//! without payment (402) and 30% an invalid payment (402, refused before any RPC call).
//!
//! Baseline, measured in the same run: the origin alone, at the same rate, for 5 s. Every 5 s
//! of the soak prints the achieved rate, latency percentiles (and p50 over the baseline's p50),
//! errors, and the gateway's RSS. At the end: every paid request is in the ledger and on chain,
//! no request failed, and RSS is flat (the second half's peak within 10% + 4 MiB of the
//! first half's). A JSON summary goes to `target/soak.json`.
//!
//!   cargo bench --bench soak                    (1000 req/s for 60 s)
//!   X402_SOAK_RATE=1500 X402_SOAK_SECS=120 cargo bench --bench soak

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use common::chain::*;
use common::*;
use serde_json::{json, Value};
use support::{pct_ms, rss_kib};

const PRICE: u64 = 10_000;
const WINDOW: Duration = Duration::from_secs(5);

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Origin,
    Free,
    Unpaid,
    Invalid,
    Paid,
}

#[derive(Default)]
struct Window {
    latencies: Vec<Duration>,
    errors: Vec<String>,
    by_kind: [usize; 5],
}

struct Stats {
    windows: Mutex<Vec<Window>>,
    start: Instant,
    paid_ok: AtomicUsize,
    in_flight: AtomicUsize,
}

impl Stats {
    fn record(&self, kind: Kind, latency: Duration, error: Option<String>) {
        let w = (self.start.elapsed().as_secs_f64() / WINDOW.as_secs_f64()) as usize;
        let mut windows = self.windows.lock().unwrap();
        while windows.len() <= w {
            windows.push(Window::default());
        }
        windows[w].latencies.push(latency);
        windows[w].by_kind[kind as usize] += 1;
        if let Some(e) = error {
            windows[w].errors.push(e);
        }
    }
}

/// One request of `kind`; an error is any answer other than the one this kind must get.
async fn one(
    http: &reqwest::Client,
    base: &str,
    kind: Kind,
    n: u64,
    offer: &Value,
    payer: &PrivateKeySigner,
) -> Option<String> {
    let (path, header) = match kind {
        Kind::Origin => (format!("/free/{n}"), None),
        Kind::Free => (format!("/free/{n}"), None),
        Kind::Unpaid => (format!("/paid/{n}"), None),
        Kind::Invalid => {
            let auth = Authorization::for_offer(offer, payer.address());
            let mut sig = auth.sign(payer);
            sig[10] ^= 0xff;
            (
                format!("/paid/{n}"),
                Some(v2_header(offer, auth.payload(&sig))),
            )
        }
        Kind::Paid => {
            let auth = Authorization::for_offer(offer, payer.address());
            let h = v2_header(offer, auth.payload(&auth.sign(payer)));
            (format!("/paid/{n}"), Some(h))
        }
    };
    let mut req = http.get(format!("{base}{path}"));
    if let Some(h) = header {
        req = req.header("payment-signature", h);
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return Some(format!("{kind:?}: {e}")),
    };
    let status = resp.status().as_u16();
    let receipt_ok = resp
        .headers()
        .get("payment-response")
        .map(|v| decode_b64_json(v.to_str().unwrap())["success"] == true);
    if let Err(e) = resp.bytes().await {
        return Some(format!("{kind:?}: body: {e}"));
    }
    let expected = match kind {
        Kind::Origin | Kind::Free => status == 201,
        Kind::Unpaid | Kind::Invalid => status == 402,
        Kind::Paid => status == 201 && receipt_ok == Some(true),
    };
    (!expected).then(|| format!("{kind:?}: status {status}, receipt {receipt_ok:?}"))
}

/// Drives `kind_of(n)` requests at `rate` per second for `secs` seconds against `base`.
#[allow(clippy::too_many_arguments)]
async fn drive(
    base: String,
    rate: u64,
    secs: u64,
    kind_of: fn(u64) -> Kind,
    offer: Arc<Value>,
    payers: Arc<Vec<PrivateKeySigner>>,
    stats: Arc<Stats>,
    pid: Option<u32>,
) -> Vec<u64> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(512)
        .build()
        .unwrap();
    let total = rate * secs;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut rss = Vec::new();
    let mut next_rss = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..total {
        let at = stats.start + interval.mul_f64(n as f64);
        tokio::time::sleep_until(at.into()).await;
        if let Some(pid) = pid {
            if Instant::now() >= next_rss {
                rss.push(rss_kib(pid));
                next_rss += Duration::from_secs(1);
            }
        }
        let (http, base, offer, payers, stats) = (
            http.clone(),
            base.clone(),
            offer.clone(),
            payers.clone(),
            stats.clone(),
        );
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        tasks.spawn(async move {
            let kind = kind_of(n);
            let payer = &payers[(n as usize) % payers.len()];
            let t = Instant::now();
            let error = one(&http, &base, kind, n, &offer, payer).await;
            if kind == Kind::Paid && error.is_none() {
                stats.paid_ok.fetch_add(1, Ordering::Relaxed);
            }
            stats.record(kind, t.elapsed(), error);
            stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        });
        while let Some(done) = tasks.try_join_next() {
            done.unwrap();
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    rss
}

/// One paid request in `X402_SOAK_PAID_EVERY` (default 50, 2%); the rest 40% free, and the
/// unpaid and invalid 402s in equal shares.
fn mixed(n: u64) -> Kind {
    static EVERY: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let every = *EVERY.get_or_init(|| env_or("X402_SOAK_PAID_EVERY", 50).max(2));
    let slot = n % every;
    if slot == every - 1 {
        return Kind::Paid;
    }
    match slot * 100 / (every - 1) {
        0..=39 => Kind::Free,
        40..=69 => Kind::Unpaid,
        _ => Kind::Invalid,
    }
}

async fn run() {
    let rate = env_or("X402_SOAK_RATE", 1000);
    let secs = env_or("X402_SOAK_SECS", 60);
    let chain = Chain::start_busy().await;
    let up = Upstream::start();
    let pay_to = new_signer().address();
    let payers: Vec<PrivateKeySigner> = (0..32).map(|_| new_signer()).collect();
    for p in &payers {
        chain.mint(p.address(), 1_000_000_000).await;
    }
    let payers = Arc::new(payers);

    // Baseline: the origin alone at the same rate.
    let base_stats = Arc::new(Stats {
        windows: Default::default(),
        start: Instant::now(),
        paid_ok: AtomicUsize::new(0),
        in_flight: AtomicUsize::new(0),
    });
    drive(
        up.url(),
        rate,
        5,
        |_| Kind::Origin,
        Arc::new(Value::Null),
        payers.clone(),
        base_stats.clone(),
        None,
    )
    .await;
    let mut base_lat: Vec<Duration> = base_stats
        .windows
        .lock()
        .unwrap()
        .iter()
        .flat_map(|w| w.latencies.clone())
        .collect();
    base_lat.sort();
    let base_p50 = pct_ms(&base_lat, 0.5);
    println!(
        "baseline (origin alone, {rate}/s): p50 {:.2} ms, p99 {:.2} ms",
        base_p50,
        pct_ms(&base_lat, 0.99)
    );

    // The gateway: the release binary, its own process, SQLite in a temp dir.
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let cfg = evm_config(
        &up.url(),
        &chain.rpc.url,
        &chain.settler_key,
        &chain.token.to_checksum(None),
        &pay_to.to_checksum(None),
    )
    .replace("{listen}", &listen)
    .replace("{admin}", &format!("127.0.0.1:{}", free_port()))
    .replace("{metrics}", &format!("127.0.0.1:{}", free_port()))
    .replace(
        "threads = 2",
        "threads = 2\ninvalid_payments_per_minute = 100000000",
    )
    + &format!(
        "\n[tiers.free]\nmonthly_verifications = 100000000\nnetworks = [\"eip155:84532\"]\n\n[database]\nurl = \"sqlite://{}\"\n",
        dir.path().join("gate.db").display()
    );
    let config = dir.path().join("gate.toml");
    std::fs::write(&config, cfg).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_x402-gate"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let base = format!("http://{listen}");
    while tokio::net::TcpStream::connect(&listen).await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let c = client();
    let resp = c.get(format!("{base}/paid/x")).send().await.unwrap();
    let v2 = decode_b64_json(resp.headers()["payment-required"].to_str().unwrap());
    let offer = Arc::new(v2["accepts"][0].clone());
    let idle_rss = rss_kib(pid);
    let first_block = chain.provider.get_block_number().await.unwrap();

    let stats = Arc::new(Stats {
        windows: Default::default(),
        start: Instant::now(),
        paid_ok: AtomicUsize::new(0),
        in_flight: AtomicUsize::new(0),
    });
    let rss = drive(
        base.clone(),
        rate,
        secs,
        mixed,
        offer,
        payers.clone(),
        stats.clone(),
        Some(pid),
    )
    .await;
    let elapsed = stats.start.elapsed();

    println!(
        "\n{:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>7} {:>9}",
        "window", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "p50/base", "errors", "RSS MiB"
    );
    let windows = std::mem::take(&mut *stats.windows.lock().unwrap());
    let mut all = Vec::new();
    let mut errors = Vec::new();
    let mut rows = Vec::new();
    for (i, w) in windows.iter().enumerate() {
        let mut l = w.latencies.clone();
        l.sort();
        let r = rss
            .get(
                ((i + 1) * WINDOW.as_secs() as usize)
                    .min(rss.len())
                    .saturating_sub(1),
            )
            .copied()
            .unwrap_or(0);
        println!(
            "{:>5}s {:>8.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}x {:>7} {:>9.1}",
            (i + 1) * WINDOW.as_secs() as usize,
            l.len() as f64 / WINDOW.as_secs_f64(),
            pct_ms(&l, 0.5),
            pct_ms(&l, 0.9),
            pct_ms(&l, 0.99),
            pct_ms(&l, 1.0),
            pct_ms(&l, 0.5) / base_p50,
            w.errors.len(),
            r as f64 / 1024.0
        );
        rows.push(json!({
            "window_end_s": (i + 1) * WINDOW.as_secs() as usize,
            "requests": l.len(),
            "p50_ms": pct_ms(&l, 0.5),
            "p99_ms": pct_ms(&l, 0.99),
            "errors": w.errors.len(),
            "rss_kib": r,
        }));
        all.extend(l);
        errors.extend(w.errors.iter().cloned());
    }
    all.sort();
    let total = all.len();
    let paid_ok = stats.paid_ok.load(Ordering::Relaxed);

    // Every paid request is on chain and in the ledger.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let store = x402_gate::store::Store::connect(&format!(
        "sqlite://{}",
        dir.path().join("gate.db").display()
    ))
    .await
    .unwrap();
    let ledger = store.ledger(10_000_000).await.unwrap().len();
    let earned = chain.balance(pay_to).await;
    let last_block = chain.provider.get_block_number().await.unwrap();

    let half = rss.len() / 2;
    let first_peak = rss[..half].iter().copied().max().unwrap_or(0);
    let second_peak = rss[half..].iter().copied().max().unwrap_or(0);
    let summary = json!({
        "rate_target": rate,
        "seconds": elapsed.as_secs_f64(),
        "requests": total,
        "achieved_rate": total as f64 / elapsed.as_secs_f64(),
        "paid_ok": paid_ok,
        "ledger_rows": ledger,
        "blocks": last_block - first_block,
        "errors": errors.len(),
        "p50_ms": pct_ms(&all, 0.5),
        "p90_ms": pct_ms(&all, 0.9),
        "p99_ms": pct_ms(&all, 0.99),
        "max_ms": pct_ms(&all, 1.0),
        "baseline_p50_ms": base_p50,
        "rss_idle_kib": idle_rss,
        "rss_first_half_peak_kib": first_peak,
        "rss_second_half_peak_kib": second_peak,
        "windows": rows,
    });
    println!(
        "\n{total} requests in {:.1} s ({:.0}/s of {rate}/s target), {paid_ok} paid and settled \
         ({ledger} ledger rows), {} errors; p50 {:.2} ms ({:.2}x the origin alone), p99 {:.2} ms; \
         RSS idle {:.1} MiB, peak {:.1} MiB in the first half, {:.1} MiB in the second",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        errors.len(),
        pct_ms(&all, 0.5),
        pct_ms(&all, 0.5) / base_p50,
        pct_ms(&all, 0.99),
        idle_rss as f64 / 1024.0,
        first_peak as f64 / 1024.0,
        second_peak as f64 / 1024.0,
    );
    let out = repo_path("target/soak.json");
    std::fs::write(&out, serde_json::to_string_pretty(&summary).unwrap()).unwrap();
    println!("summary written to {}", out.display());
    child.kill().await.unwrap();

    for e in errors.iter().take(20) {
        println!("error: {e}");
    }
    assert!(errors.is_empty(), "{} requests failed", errors.len());
    assert_eq!(ledger, paid_ok, "every paid request is in the ledger");
    assert_eq!(
        earned,
        alloy::primitives::U256::from(PRICE * paid_ok as u64),
        "every paid request moved its price on chain"
    );
    assert!(
        second_peak as f64 <= first_peak as f64 * 1.10 + 4096.0,
        "RSS grew: first half peak {first_peak} KiB, second half {second_peak} KiB"
    );
}
