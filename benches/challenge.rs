//! The 402 path against baselines measured in the same run, with the tool the peer figures in
//! `shared/design/peers.md` were measured with (`wrk -t1 -c32`):
//! - the origin alone (an axum echo server);
//! - a free route through the gateway (pingora pass-through to that origin);
//! - a priced route without payment: the gateway answers the 402 itself (tenant standing from
//!   cache, challenge from the precomputed `accepts`).
//!
//! The gateway runs with one worker thread, like the peers' one-core figures. "Server CPU" is this
//! process's CPU time per request during the run (wrk runs as its own process): the origin's for
//! the first line, gateway plus origin for the second, the gateway's alone for the third.
//!
//!   cargo bench --bench challenge          (needs wrk: apt-get install wrk)
//!   X402_BENCH_SECONDS=10 cargo bench --bench challenge

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;

use common::*;

struct Wrk {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// CPU time of this process (the servers; wrk runs apart) per request, in microseconds.
    cpu_us: f64,
}

/// User + system CPU seconds of this process so far, from /proc.
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // /proc reports clock ticks; Linux uses 100 per second (USER_HZ).
    (ticks(11) + ticks(12)) / 100.0
}

fn wrk(url: &str, seconds: u64) -> Wrk {
    let cpu0 = process_cpu_seconds();
    let out = Command::new("wrk")
        .args(["-t1", "-c32", &format!("-d{seconds}s"), "--latency", url])
        .output()
        .expect("wrk runs (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |prefix: &str| -> Option<String> {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .map(|l| {
                l[prefix.len()..]
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
    };
    let ms = |v: Option<String>| -> f64 {
        let v = v.unwrap_or_default();
        if let Some(x) = v.strip_suffix("us") {
            x.parse::<f64>().unwrap_or(0.0) / 1000.0
        } else if let Some(x) = v.strip_suffix("ms") {
            x.parse().unwrap_or(0.0)
        } else if let Some(x) = v.strip_suffix('s') {
            x.parse::<f64>().unwrap_or(0.0) * 1000.0
        } else {
            0.0
        }
    };
    let cpu = process_cpu_seconds() - cpu0;
    let rps: f64 = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    Wrk {
        rps,
        p50_ms: ms(field("50%")),
        p99_ms: ms(field("99%")),
        cpu_us: cpu * 1e6 / (rps * seconds as f64).max(1.0),
    }
}

fn main() {
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("this benchmark needs wrk: apt-get install wrk");
        std::process::exit(1);
    }
    let seconds: u64 = std::env::var("X402_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let up = Upstream::start();
    // basic_config runs the gateway with one worker thread.
    let gw = Gateway::start(&basic_config(&up.url(), ""));
    // Warm up every path once.
    for url in [
        format!("{}/free/x", up.url()),
        gw.url("/free/x"),
        gw.url("/paid/x"),
    ] {
        wrk(&url, 1);
    }
    let origin = wrk(&format!("{}/free/x", up.url()), seconds);
    let free = wrk(&gw.url("/free/x"), seconds);
    let challenge = wrk(&gw.url("/paid/x"), seconds);
    println!("x402-gate 402-path benchmark: wrk -t1 -c32 -d{seconds}s, gateway threads = 1");
    for (name, r) in [
        ("origin alone", &origin),
        ("free route via gateway", &free),
        ("402 challenge", &challenge),
    ] {
        println!(
            "{name:<24} {:>10.0} req/s   p50 {:.3} ms   p99 {:.3} ms   server CPU {:.1} us/req",
            r.rps, r.p50_ms, r.p99_ms, r.cpu_us
        );
    }
    println!(
        "ratios: 402 / free-route pass-through = {:.2}x throughput, {:.2}x CPU per request; 402 / origin alone = {:.2}x throughput",
        challenge.rps / free.rps,
        challenge.cpu_us / free.cpu_us,
        challenge.rps / origin.rps
    );
}
