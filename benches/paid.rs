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
    let start_gateway = || match std::env::var("X402_BENCH_DB") {
        Ok(url) => Gateway::start_with_db(&cfg, &url),
        Err(_) => Gateway::start(&cfg),
    };
    // Two gateways on the same chain, one after the other: the first meets a node that does not
    // serve eth_sendRawTransactionSync (the proxy answers -32601), so it sends plain transactions
    // and polls receipts; the second settles in one round trip. The same run, the same anvil.
    chain.rpc.set_fault(
        "eth_sendRawTransactionSync",
        Fault::MethodNotFound,
        usize::MAX,
    );
    let plain = {
        let gw = start_gateway();
        measure(&chain, &gw, &payer, &seen_at_origin, n).await
    };
    chain.rpc.clear_faults();
    let sync = {
        let gw = start_gateway();
        measure(&chain, &gw, &payer, &seen_at_origin, n).await
    };

    println!("x402-gate paid-path benchmark: {n} fresh payments, sequential, settle=after");
    for (name, r) in [
        ("plain send + receipt polls", &plain),
        ("eth_sendRawTransactionSync", &sync),
    ] {
        println!("{name}:");
        r.print();
    }
    println!(
        "ratio sync/plain: p50 {:.2}x, mean {:.2}x, RPC calls per payment {:.2}x",
        sync.p50().as_secs_f64() / plain.p50().as_secs_f64(),
        sync.paid_mean().as_secs_f64() / plain.paid_mean().as_secs_f64(),
        sync.calls_per_payment() / plain.calls_per_payment()
    );
}

/// One gateway's figures: the free-route baseline and `n` sequential fresh payments.
struct Run {
    n: usize,
    free: Vec<Duration>,
    total: Vec<Duration>,
    chain_time: Duration,
    calls_total: usize,
    before_forward: Vec<usize>,
    blocks: (u64, u64),
}

impl Run {
    fn mean(v: &[Duration]) -> Duration {
        v.iter().sum::<Duration>() / v.len() as u32
    }
    fn paid_mean(&self) -> Duration {
        Self::mean(&self.total)
    }
    fn p50(&self) -> Duration {
        percentile(&self.total, 0.5)
    }
    fn calls_per_payment(&self) -> f64 {
        self.calls_total as f64 / self.n as f64
    }

    fn print(&self) {
        let paid_mean = self.paid_mean();
        let chain_mean = self.chain_time / self.n as u32;
        let free_mean = Self::mean(&self.free);
        let own = paid_mean.saturating_sub(chain_mean);
        let own_extra = own.saturating_sub(free_mean);
        let max_before = *self.before_forward.iter().max().unwrap();
        let min_before = *self.before_forward.iter().min().unwrap();
        println!(
            "  chain: anvil, blocks {}..{} ({} mined in the run)",
            self.blocks.0,
            self.blocks.1,
            self.blocks.1 - self.blocks.0
        );
        println!("  baseline free route (same gateway, same origin): mean {:.3} ms, p50 {:.3} ms, p99 {:.3} ms",
            ms(free_mean), ms(percentile(&self.free, 0.5)), ms(percentile(&self.free, 0.99)));
        println!(
            "  paid request end to end:  mean {:.3} ms, p50 {:.3} ms, p99 {:.3} ms",
            ms(paid_mean),
            ms(self.p50()),
            ms(percentile(&self.total, 0.99))
        );
        println!(
            "    inside JSON-RPC (chain): mean {:.3} ms per payment, {:.1} calls per payment",
            ms(chain_mean),
            self.calls_per_payment()
        );
        println!("    gateway's own time:      mean {:.3} ms per payment ({:.3} ms above the free-route baseline)",
            ms(own), ms(own_extra));
        println!(
            "    RPC round trips before forwarding: min {min_before}, max {max_before} (target: 1)"
        );
        println!(
            "  ratio paid/free latency: {:.2}x; chain share of paid latency: {:.0} %",
            paid_mean.as_secs_f64() / free_mean.as_secs_f64(),
            100.0 * chain_mean.as_secs_f64() / paid_mean.as_secs_f64()
        );
    }
}

async fn measure(
    chain: &Chain,
    gw: &Gateway,
    payer: &alloy::signers::local::PrivateKeySigner,
    seen_at_origin: &AtomicUsize,
    n: usize,
) -> Run {
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
        let header = v2_header(&offer, auth.payload(&auth.sign(payer)));
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
    Run {
        n,
        free,
        total,
        chain_time,
        calls_total,
        before_forward,
        blocks: (first_block, last_block),
    }
}
