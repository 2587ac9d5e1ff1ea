//! Side by side, in one run on one machine: every path a paying client or an operator pays for,
//! against baselines measured in the same run. Prints one table with ratios and writes JSON.
//!
//! - `wrk -t1 -c32` (servers on one worker thread, in this process; "CPU" is this process's CPU
//!   time per request): nginx returning a fixed 200 (its own process's CPU; skipped when nginx
//!   is not installed), the origin alone (an axum echo server), a bare pingora pass-through to
//!   it (`support/bare.rs`), the gateway's free route, its 402, and an invalid proof (a wrong
//!   signature, refused locally with its reason);
//! - paid requests on a fresh anvil with Multicall3 and durable SQLite on disk: sequential
//!   through the gateway binary (latency, the gateway process's CPU per payment), then 16 and 64 concurrent clients with batching off and on
//!   (paid/s, failures, gas per payment);
//! - the gateway binary's resident memory idle, and holding idle keep-alive connections.
//!
//! ```text
//! cargo bench --bench compare                      (needs wrk: apt-get install wrk)
//! X402_BENCH_SHORT=1 cargo bench --bench compare   (a little of each: CI runs it in debug)
//! X402_BENCH_JSON=path ...                         (default target/compare.json)
//! X402_BENCH_ONLY=http,sequential,paid,memory ... (some parts only)
//! X402_BENCH_SEQUENTIAL=N ...                      (N sequential payments per policy)
//! X402_BENCH_CLIENTS=16,64 X402_BENCH_BATCHING=on ... (some concurrent runs only)
//! X402_BENCH_WRAP='valgrind --tool=callgrind' ...  (the gateway binary under a profiler that
//!                                                   runs it in its own process)
//! ```

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use serde_json::{json, Value};

use common::chain::{decode_b64_json, v2_header, Authorization};
use common::*;
use support::paid::{print_runs, sequential, throughput, Figures};
use support::wrk::{wrk_measuring, wrk_with, Wrk};
use support::{idle, pct_ms};

struct Plan {
    wrk_seconds: u64,
    sequential: usize,
    per_client: usize,
    clients: Vec<usize>,
    idle_connections: usize,
}

fn plan() -> Plan {
    if std::env::var("X402_BENCH_SHORT").is_ok_and(|v| v == "1") {
        Plan {
            wrk_seconds: 1,
            sequential: 5,
            per_client: 2,
            clients: vec![4],
            idle_connections: 200,
        }
    } else {
        Plan {
            wrk_seconds: 5,
            sequential: 200,
            per_client: 16,
            clients: vec![16, 64],
            idle_connections: 10_000,
        }
    }
}

fn main() {
    // Re-run as a bare pingora process of its own (`memory`), so its RSS is its own.
    if let Ok(addrs) = std::env::var("X402_BARE_PINGORA") {
        let (listen, origin) = addrs.split_once(',').unwrap();
        support::bare::start(listen.parse().unwrap(), origin.parse().unwrap());
        loop {
            std::thread::park();
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

/// Whether this part runs (`X402_BENCH_ONLY` unset: all of them).
fn part(name: &str) -> bool {
    std::env::var("X402_BENCH_ONLY").map_or(true, |only| only.split(',').any(|p| p.trim() == name))
}

async fn run() {
    let mut plan = plan();
    if let Some(n) = std::env::var("X402_BENCH_SEQUENTIAL")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        plan.sequential = n;
    }
    let mut doc = serde_json::Map::new();

    // 1. Fixed responses and pass-through, with wrk.
    let http = if !part("http") {
        None
    } else if support::wrk::available() {
        Some(http_paths(plan.wrk_seconds).await)
    } else {
        eprintln!("wrk is not installed (apt-get install wrk): the wrk rows are skipped");
        None
    };

    // 2. Paid requests.
    // Sequential, under the default policy (`after`) and under `before` (whose claim commits
    // without its own fsync: store/durability.rs).
    let mut seqs = Vec::new();
    if part("sequential") {
        for (policy, path) in [("after", "/paid/seq"), ("before", "/before/seq")] {
            seqs.push((policy, sequential(plan.sequential, path).await));
        }
    }
    let mut runs: Vec<Figures> = Vec::new();
    if let Ok(clients) = std::env::var("X402_BENCH_CLIENTS") {
        plan.clients = clients
            .split(',')
            .filter_map(|c| c.trim().parse().ok())
            .collect();
    }
    let batching = std::env::var("X402_BENCH_BATCHING").unwrap_or_default();
    for &clients in &plan.clients {
        for batch_max in [1, 64] {
            let wanted = match batching.as_str() {
                "on" => batch_max > 1,
                "off" => batch_max == 1,
                _ => true,
            };
            if part("paid") && wanted {
                runs.push(throughput(clients, plan.per_client, batch_max).await);
            }
        }
    }

    // 3. Memory: the binary idle, then holding idle keep-alive connections.
    let (rss_idle, rss_held, held) = if part("memory") {
        memory(plan.idle_connections).await
    } else {
        (0, 0, 0)
    };
    let (bare_idle, bare_held, bare_n) = if part("memory") {
        bare_memory(plan.idle_connections).await
    } else {
        (0, 0, 0)
    };

    println!("x402-gate side by side (one run, this machine; ratios compare within the run)");
    if let Some(h) = &http {
        println!(
            "wrk -t1 -c32 -d{}s, servers on one worker thread:",
            plan.wrk_seconds
        );
        for (name, r) in h {
            println!(
                "  {name:<26} {:>9.0} req/s  p50 {:>6.3} ms  p99 {:>6.3} ms  CPU {:>6.1} us/req",
                r.rps, r.p50_ms, r.p99_ms, r.cpu_us
            );
            doc.insert(
                name.to_string(),
                json!({"rps": r.rps, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "cpu_us": r.cpu_us}),
            );
        }
        let get = |n: &str| &h.iter().find(|(name, _)| *name == n).unwrap().1;
        let (origin, bare, free, challenge) = (
            get("origin alone"),
            get("bare pingora"),
            get("free route"),
            get("402 challenge"),
        );
        let mut ratios = json!({
            "free_vs_bare_throughput": free.rps / bare.rps,
            "free_vs_bare_cpu": free.cpu_us / bare.cpu_us,
            "free_minus_bare_p99_ms": free.p99_ms - bare.p99_ms,
            "challenge_vs_free_throughput": challenge.rps / free.rps,
            "challenge_vs_origin_cpu": challenge.cpu_us / origin.cpu_us,
        });
        println!(
            "  free route / bare pingora: {:.2}x throughput, {:.2}x CPU, p99 {:+.3} ms",
            free.rps / bare.rps,
            free.cpu_us / bare.cpu_us,
            free.p99_ms - bare.p99_ms
        );
        println!(
            "  402 / free route: {:.2}x throughput; 402 CPU / origin's fixed response: {:.2}x",
            challenge.rps / free.rps,
            challenge.cpu_us / origin.cpu_us
        );
        let slow = get("402 via pingora's session");
        ratios["quick_vs_pingora_402_throughput"] = json!(challenge.rps / slow.rps);
        ratios["quick_vs_pingora_402_cpu"] = json!(challenge.cpu_us / slow.cpu_us);
        println!(
            "  402 answered quick / through pingora's session: {:.2}x throughput, {:.2}x CPU",
            challenge.rps / slow.rps,
            challenge.cpu_us / slow.cpu_us
        );
        let post = get("402 to a JSON POST");
        ratios["post_vs_get_402_throughput"] = json!(post.rps / challenge.rps);
        ratios["post_vs_get_402_cpu"] = json!(post.cpu_us / challenge.cpu_us);
        println!(
            "  402 to a JSON POST / to a GET: {:.2}x throughput, {:.2}x CPU",
            post.rps / challenge.rps,
            post.cpu_us / challenge.cpu_us
        );
        if let Some((_, nginx)) = h.iter().find(|(name, _)| *name == NGINX) {
            ratios["challenge_vs_nginx_cpu"] = json!(challenge.cpu_us / nginx.cpu_us);
            println!(
                "  402 CPU / nginx's fixed 200: {:.2}x",
                challenge.cpu_us / nginx.cpu_us
            );
        }
        doc.insert("http_ratios".into(), ratios);
    }
    let mut sequential_doc = serde_json::Map::new();
    for (policy, seq) in &seqs {
        let l = &seq.latencies;
        println!(
            "paid, sequential, settle = {policy} ({} payments): p50 {:.2} ms, p99 {:.2} ms; CPU per payment: gateway {:.2} ms (its own process), origin + client {:.2} ms",
            l.len(),
            pct_ms(l, 0.5),
            pct_ms(l, 0.99),
            seq.gateway_cpu_ms,
            seq.rest_cpu_ms,
        );
        sequential_doc.insert(
            policy.to_string(),
            json!({"payments": l.len(), "p50_ms": pct_ms(l, 0.5), "p99_ms": pct_ms(l, 0.99),
                   "gateway_cpu_ms_per_payment": seq.gateway_cpu_ms,
                   "rest_cpu_ms_per_payment": seq.rest_cpu_ms}),
        );
    }
    doc.insert("paid_sequential".into(), Value::Object(sequential_doc));
    println!(
        "paid, concurrent ({} payments per client):",
        plan.per_client
    );
    print_runs(&runs);
    doc.insert(
        "paid_concurrent".into(),
        Value::Array(runs.iter().map(Figures::json).collect()),
    );
    println!(
        "memory (the gateway binary): idle {:.1} MiB; {} of {} idle keep-alive connections held: {:.1} MiB ({:.1} KiB per connection)",
        rss_idle as f64 / 1024.0,
        held,
        plan.idle_connections,
        rss_held as f64 / 1024.0,
        (rss_held.saturating_sub(rss_idle)) as f64 / held.max(1) as f64
    );
    println!(
        "memory (bare pingora, its own process): idle {:.1} MiB; {} idle keep-alive connections held: {:.1} MiB ({:.1} KiB per connection)",
        bare_idle as f64 / 1024.0,
        bare_n,
        bare_held as f64 / 1024.0,
        (bare_held.saturating_sub(bare_idle)) as f64 / bare_n.max(1) as f64
    );
    doc.insert(
        "memory".into(),
        json!({"idle_kib": rss_idle, "connections": held, "held_kib": rss_held,
               "bare_pingora": {"idle_kib": bare_idle, "connections": bare_n, "held_kib": bare_held}}),
    );
    let path = std::env::var("X402_BENCH_JSON")
        .unwrap_or_else(|_| format!("{}/target/compare.json", env!("CARGO_MANIFEST_DIR")));
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&Value::Object(doc)).unwrap(),
    )
    .unwrap();
    println!("wrote {path}");
}

const NGINX: &str = "nginx fixed 200";

/// The wrk rows: nginx's fixed 200 (when installed), origin alone, bare pingora, free route, 402
/// (quick, and through pingora's session), invalid proof.
async fn http_paths(seconds: u64) -> Vec<(&'static str, Wrk)> {
    let nginx = support::nginx::Nginx::start(format!("127.0.0.1:{}", free_port()).parse().unwrap());
    if nginx.is_none() {
        eprintln!("nginx is not installed (apt-get install nginx-light): its row is skipped");
    }
    let up = Upstream::start();
    let bare: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    support::bare::start(bare, up.addr);
    // One worker thread, as the bare proxy; invalid proofs are not rate-limited here (the
    // benchmark is one client address).
    let gw = Gateway::start(&basic_config(
        &up.url(),
        "invalid_payments_per_minute = 1000000000",
    ));
    let c = client();
    let resp = c.get(gw.url("/paid/x")).send().await.unwrap();
    let v2 = decode_b64_json(resp.headers()["payment-required"].to_str().unwrap());
    let offer = v2["accepts"][0].clone();
    // Signed by a stranger: refused locally (the signature does not recover to `from`).
    let auth = Authorization::for_offer(&offer, common::chain::new_signer().address());
    let invalid = v2_header(
        &offer,
        auth.payload(&auth.sign(&common::chain::new_signer())),
    );
    let check = c
        .get(gw.url("/paid/x"))
        .header("payment-signature", &invalid)
        .send()
        .await
        .unwrap();
    assert_eq!(check.status(), 402, "the invalid proof is refused");
    let invalid_header = format!("payment-signature: {invalid}");
    // A paid API's usual first request: a JSON POST without a payment. Its 402 keeps the
    // connection (the body is read and dropped: `src/proxy/respond.rs`), as a GET's does.
    let post = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(post.path(), POST_SCRIPT).unwrap();
    let post_script = post.path().display().to_string();
    let urls: [(&str, String, &[&str]); 7] = [
        ("origin alone", format!("{}/free/x", up.url()), &[]),
        ("bare pingora", format!("http://{bare}/free/x"), &[]),
        ("free route", gw.url("/free/x"), &[]),
        ("402 challenge", gw.url("/paid/x"), &[]),
        // The same 402 through pingora's session: an announced empty body is one of the things
        // the quick answer (`src/proxy/quick.rs`) leaves to pingora.
        (
            "402 via pingora's session",
            gw.url("/paid/x"),
            &["-H", "content-length: 0"],
        ),
        (
            "402 to a JSON POST",
            gw.url("/paid/x"),
            &["-s", &post_script],
        ),
        ("invalid proof", gw.url("/paid/x"), &["-H", &invalid_header]),
    ];
    let run = |url: &str, extra: &[&str], secs: u64| wrk_with(url, secs, extra);
    // Warm every path, then measure each.
    let mut rows = Vec::new();
    if let Some(n) = &nginx {
        let url = format!("http://{}/free/x", n.addr);
        let cpu = || n.cpu_seconds();
        wrk_measuring(&url, 1, &[], &cpu);
        rows.push((NGINX, wrk_measuring(&url, seconds, &[], &cpu)));
    }
    for (_, url, extra) in &urls {
        run(url, extra, 1);
    }
    rows.extend(
        urls.iter()
            .map(|(name, url, extra)| (*name, run(url, extra, seconds))),
    );
    rows
}

/// wrk's script for the JSON POST row.
const POST_SCRIPT: &str = r#"wrk.method = "POST"
wrk.body = '{"model":"small","prompt":"a paid call with a JSON body, as most paid APIs take"}'
wrk.headers["Content-Type"] = "application/json"
"#;

/// The gateway binary's RSS idle, and holding `n` idle keep-alive connections (and how many it
/// took), in KiB.
async fn memory(n: usize) -> (u64, u64, usize) {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let listen: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = basic_config(&up.url(), "")
        .replace("{listen}", &listen.to_string())
        .replace("{admin}", &format!("127.0.0.1:{}", free_port()))
        .replace("{metrics}", &format!("127.0.0.1:{}", free_port()))
        + &format!(
            "\n[database]\nurl = \"sqlite://{}\"\n",
            dir.path().join("gate.db").display()
        );
    let file = dir.path().join("gate.toml");
    std::fs::write(&file, cfg).unwrap();
    let gw = idle::Process::start(&file, listen);
    // One request first, so every lazily built part exists; then idle.
    let (warm, _) = idle::hold(listen, "/free/warm", 1).await;
    drop(warm);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let rss_idle = gw.rss_kib();
    let (held, answered) = idle::hold(listen, "/free/idle", n).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let rss_held = gw.rss_kib();
    drop(held);
    (rss_idle, rss_held, answered)
}

/// `memory` for the bare pingora pass-through, run as a process of its own (this benchmark's
/// binary again, see `main`).
async fn bare_memory(n: usize) -> (u64, u64, usize) {
    let up = Upstream::start();
    let listen: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .env("X402_BARE_PINGORA", format!("{listen},{}", up.addr))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(listen).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the bare proxy did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (warm, _) = idle::hold(listen, "/free/warm", 1).await;
    drop(warm);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let rss_idle = support::rss_kib(child.id());
    let (held, answered) = idle::hold(listen, "/free/idle", n).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let rss_held = support::rss_kib(child.id());
    drop(held);
    let _ = child.kill();
    let _ = child.wait();
    (rss_idle, rss_held, answered)
}
