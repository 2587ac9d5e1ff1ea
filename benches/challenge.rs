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
#[path = "support/mod.rs"]
mod support;

use common::*;
use support::wrk::{self, wrk};

fn main() {
    if !wrk::available() {
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
