//! Paid-request benchmark: fresh valid payments through the real gateway on a fresh anvil chain.
//!
//! Prints, per payment: end-to-end latency; the time spent inside JSON-RPC calls (the chain's
//! share, measured at a proxy in front of anvil); the gateway's own time (the rest, minus the
//! free-route baseline measured in the same run); and the number of RPC round trips made before
//! the request was forwarded to the origin (target: one, the simulation).
//!
//!   cargo bench --bench paid                  (X402_BENCH_PAYMENTS=200 by default)
//!   X402_BENCH_DB=sqlite:///dev/shm/b.db cargo bench --bench paid   (database on tmpfs: shows
//!                                             what the three durable SQLite commits cost)
//!
//! "Gateway's own time" is everything outside JSON-RPC calls, so it includes waiting between
//! receipt polls for anvil to mine, and the fsyncs of the claim, the pre-broadcast tx hash and the
//! ledger row.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::providers::Provider;
use common::chain::*;
use common::*;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn run() {
    let n: usize = std::env::var("X402_BENCH_PAYMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let chain = Chain::start().await;
    // The origin notes how many RPC calls had happened when the paid request reached it.
    let rpc_calls = chain.rpc.calls.clone();
    let seen_at_origin = Arc::new(AtomicUsize::new(0));
    let hook: Hook = {
        let rpc_calls = rpc_calls.clone();
        let seen = seen_at_origin.clone();
        Arc::new(move || {
            seen.store(rpc_calls.load(Ordering::SeqCst), Ordering::SeqCst);
            Box::pin(async {})
        })
    };
    let up = Upstream::start_with_hook(Some(hook));
    let pay_to = new_signer().address();
    let payer = new_signer();
    chain.mint(payer.address(), 1_000_000_000).await;
    let cfg = evm_config(
        &up.url(),
        &chain.rpc.url,
        &chain.settler_key,
        &chain.token.to_checksum(None),
        &pay_to.to_checksum(None),
    );
    let gw = match std::env::var("X402_BENCH_DB") {
        Ok(url) => Gateway::start_with_db(&cfg, &url),
        Err(_) => Gateway::start(&cfg),
    };
    let c = client();
    let first_block = chain.provider.get_block_number().await.unwrap();

    // Baseline: the same origin through the same gateway on a free route.
    let mut free = Vec::with_capacity(n);
    for i in 0..n + 10 {
        let t = Instant::now();
        let r = c.get(gw.url("/free/hook")).send().await.unwrap();
        assert_eq!(r.status(), 201);
        r.bytes().await.unwrap();
        if i >= 10 {
            free.push(t.elapsed());
        }
    }
    free.sort();

    let resp = c.get(gw.url("/paid/hook")).send().await.unwrap();
    let offer =
        decode_b64_json(resp.headers()["payment-required"].to_str().unwrap())["accepts"][0].clone();
    let mut total = Vec::with_capacity(n);
    let mut chain_time = Duration::ZERO;
    let mut before_forward = Vec::with_capacity(n);
    let mut calls_total = 0;
    for _ in 0..n {
        let auth = Authorization::for_offer(&offer, payer.address());
        let header = v2_header(&offer, auth.payload(&auth.sign(&payer)));
        let calls0 = chain.rpc.calls();
        let busy0 = chain.rpc.busy_nanos.load(Ordering::SeqCst);
        let t = Instant::now();
        let r = c
            .get(gw.url("/paid/hook"))
            .header("payment-signature", header)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        r.bytes().await.unwrap();
        total.push(t.elapsed());
        chain_time += Duration::from_nanos(chain.rpc.busy_nanos.load(Ordering::SeqCst) - busy0);
        before_forward.push(seen_at_origin.load(Ordering::SeqCst) - calls0);
        calls_total += chain.rpc.calls() - calls0;
    }
    let last_block = chain.provider.get_block_number().await.unwrap();
    total.sort();
    let mean = |v: &[Duration]| v.iter().sum::<Duration>() / v.len() as u32;
    let paid_mean = mean(&total);
    let chain_mean = chain_time / n as u32;
    let free_mean = mean(&free);
    let own = paid_mean.saturating_sub(chain_mean);
    let own_extra = own.saturating_sub(free_mean);
    let max_before = *before_forward.iter().max().unwrap();
    let min_before = *before_forward.iter().min().unwrap();

    println!("x402-gate paid-path benchmark: {n} fresh payments, sequential, settle=after");
    println!(
        "chain: anvil, blocks {first_block}..{last_block} ({} mined in the run)",
        last_block - first_block
    );
    println!("baseline free route (same gateway, same origin): mean {:.3} ms, p50 {:.3} ms, p99 {:.3} ms",
        ms(free_mean), ms(percentile(&free, 0.5)), ms(percentile(&free, 0.99)));
    println!(
        "paid request end to end:  mean {:.3} ms, p50 {:.3} ms, p99 {:.3} ms",
        ms(paid_mean),
        ms(percentile(&total, 0.5)),
        ms(percentile(&total, 0.99))
    );
    println!(
        "  inside JSON-RPC (chain): mean {:.3} ms per payment, {:.1} calls per payment",
        ms(chain_mean),
        calls_total as f64 / n as f64
    );
    println!("  gateway's own time:      mean {:.3} ms per payment ({:.3} ms above the free-route baseline)",
        ms(own), ms(own_extra));
    println!("  RPC round trips before forwarding: min {min_before}, max {max_before} (target: 1)");
    println!(
        "ratio paid/free latency: {:.2}x; chain share of paid latency: {:.0} %",
        paid_mean.as_secs_f64() / free_mean.as_secs_f64(),
        100.0 * chain_mean.as_secs_f64() / paid_mean.as_secs_f64()
    );
    drop(gw);
}
