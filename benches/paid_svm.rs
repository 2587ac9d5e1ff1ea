//! Paid-request benchmark on Solana: fresh valid SVM payments through the real gateway on the
//! test SVM (litesvm behind the tests' JSON-RPC server), the sibling of `paid.rs` for EVM.
//!
//! Prints, per payment: end-to-end latency; the time spent inside JSON-RPC calls (the chain's
//! share, measured in the RPC server); the gateway's own time (the rest, minus the free-route
//! baseline measured in the same run); and the RPC round trips made before the request was
//! forwarded to the origin (target: one, the simulation).
//!
//!   cargo bench --bench paid_svm              (X402_BENCH_PAYMENTS=200 by default)
//!
//! litesvm executes a transaction in process, so "the chain" here is far faster than a cluster:
//! the confirmation a real validator gives in 0.4 to 1 s comes back at once, and the figures are
//! the gateway's cost, not a network's.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::svm::*;
use common::*;
use solana_signer::Signer;

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

const DEVNET: &str = "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1";

async fn run() {
    let n: usize = std::env::var("X402_BENCH_PAYMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let chain = Arc::new(SvmChain::start());
    // The origin notes how many RPC calls had happened when the paid request reached it.
    let seen_at_origin = Arc::new(AtomicUsize::new(0));
    let hook: Hook = {
        let chain = chain.clone();
        let seen = seen_at_origin.clone();
        Arc::new(move || {
            seen.store(chain.calls(), Ordering::SeqCst);
            Box::pin(async {})
        })
    };
    let up = Upstream::start_with_hook(Some(hook));
    let pay_to = chain.new_recipient();
    let payer = chain.new_payer(1_000_000_000);
    let cfg = format!(
        r#"
[server]
listen = "{{listen}}"
admin_listen = "{{admin}}"
metrics_listen = "{{metrics}}"
threads = 2
[admin]
token = "{ADMIN_TOKEN}"
[networks."{DEVNET}"]
rpc_url = "{rpc}"
fee_payer_key = "{key}"
assets = [{{ symbol = "USDC", mint = "{mint}", decimals = 6 }}]
[[tenants]]
id = "acme"
pay_to = {{ "{DEVNET}" = "{pay_to}" }}
[[routes]]
tenant = "acme"
path = "/paid/*"
upstream = "{upstream}"
price = "$0.01"
[[routes]]
tenant = "acme"
path = "/free/*"
upstream = "{upstream}"
price = "free"
"#,
        rpc = chain.rpc_url(),
        key = chain.fee_payer_key(),
        mint = chain.mint(),
        upstream = up.url(),
    );
    let gw = Gateway::start(&cfg);
    let c = client();

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
    let slot0 = chain.slot();
    let mut total = Vec::with_capacity(n);
    let mut chain_time = Duration::ZERO;
    let mut before_forward = Vec::with_capacity(n);
    let mut calls_total = 0;
    for _ in 0..n {
        let header = chain
            .payment(&offer, &payer.pubkey())
            .header(&offer, &payer);
        let calls0 = chain.calls();
        let busy0 = chain.busy();
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
        chain_time += chain.busy() - busy0;
        before_forward.push(seen_at_origin.load(Ordering::SeqCst) - calls0);
        calls_total += chain.calls() - calls0;
    }
    assert_eq!(
        chain.token_balance(&pay_to, &chain.mint()),
        10_000 * n as u64,
        "every payment landed once"
    );
    total.sort();
    let mean = |v: &[Duration]| v.iter().sum::<Duration>() / v.len() as u32;
    let paid_mean = mean(&total);
    let chain_mean = chain_time / n as u32;
    let free_mean = mean(&free);
    let own = paid_mean.saturating_sub(chain_mean);
    let own_extra = own.saturating_sub(free_mean);
    let max_before = *before_forward.iter().max().unwrap();
    let min_before = *before_forward.iter().min().unwrap();

    println!(
        "x402-gate paid-path benchmark (Solana): {n} fresh payments, sequential, settle=after"
    );
    println!(
        "chain: litesvm behind the tests' JSON-RPC server, slots {slot0}..{}",
        chain.slot()
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
