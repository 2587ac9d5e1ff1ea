//! Paid throughput: concurrent clients paying through the real gateway, batched settlement on and
//! off, each configuration on a fresh anvil (with Multicall3 at its usual address) and a fresh
//! durable SQLite database on disk, all in one run.
//!
//! Each client is its own payer and pays `X402_BENCH_PER_CLIENT` times (default 16) in a row,
//! with payments signed before the clock starts (the client's signing is not the gateway's
//! cost). Prints, per configuration: paid requests per second, failures, latency percentiles,
//! settlement transactions, gas per payment; then the ratios batched/unbatched in this run.
//!
//!   cargo bench --bench throughput                       (16 and 64 clients)
//!   X402_BENCH_CLIENTS=64 X402_BENCH_PER_CLIENT=32 cargo bench --bench throughput
//!   X402_BENCH_JSON=target/throughput.json ...           (also writes the figures as JSON)

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use alloy::primitives::B256;
use alloy::providers::Provider;
use common::chain::*;
use common::*;
use serde_json::{json, Value};
use x402_gate::store::Store;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

struct Figures {
    clients: usize,
    batch_max: usize,
    payments: usize,
    failures: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    transactions: usize,
    gas: u64,
    settled: usize,
}

impl Figures {
    fn paid_per_second(&self) -> f64 {
        (self.payments - self.failures) as f64 / self.elapsed.as_secs_f64()
    }
    fn gas_per_payment(&self) -> f64 {
        self.gas as f64 / self.settled.max(1) as f64
    }
    fn pct(&self, p: f64) -> f64 {
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i].as_secs_f64() * 1000.0
    }
    fn json(&self) -> Value {
        json!({
            "clients": self.clients,
            "batch_max": self.batch_max,
            "payments": self.payments,
            "failures": self.failures,
            "seconds": self.elapsed.as_secs_f64(),
            "paid_per_second": self.paid_per_second(),
            "p50_ms": self.pct(0.5),
            "p99_ms": self.pct(0.99),
            "settlement_transactions": self.transactions,
            "gas_per_payment": self.gas_per_payment(),
        })
    }
}

async fn run() {
    let per_client: usize = env_or("X402_BENCH_PER_CLIENT", "16").parse().unwrap();
    let client_counts: Vec<usize> = env_or("X402_BENCH_CLIENTS", "16,64")
        .split(',')
        .map(|c| c.trim().parse().unwrap())
        .collect();
    let mut all = Vec::new();
    for &clients in &client_counts {
        for batch_max in [1, 64] {
            all.push(measure(clients, per_client, batch_max).await);
        }
    }
    println!(
        "x402-gate paid throughput: settle=after, {per_client} payments per client, durable SQLite on disk, fresh anvil per row"
    );
    println!(
        "{:>7} {:>9} {:>9} {:>8} {:>9} {:>9} {:>9} {:>6} {:>10}",
        "clients", "batching", "payments", "failed", "paid/s", "p50 ms", "p99 ms", "txs", "gas/pay"
    );
    for f in &all {
        println!(
            "{:>7} {:>9} {:>9} {:>8} {:>9.0} {:>9.2} {:>9.2} {:>6} {:>10.0}",
            f.clients,
            if f.batch_max > 1 { "on" } else { "off" },
            f.payments,
            f.failures,
            f.paid_per_second(),
            f.pct(0.5),
            f.pct(0.99),
            f.transactions,
            f.gas_per_payment()
        );
    }
    for pair in all.chunks(2) {
        let (off, on) = (&pair[0], &pair[1]);
        println!(
            "{} clients, batching on/off: paid/s {:.2}x, p50 {:.2}x, gas per payment {:.2}x, transactions {:.2}x",
            on.clients,
            on.paid_per_second() / off.paid_per_second(),
            on.pct(0.5) / off.pct(0.5),
            on.gas_per_payment() / off.gas_per_payment(),
            on.transactions as f64 / off.transactions as f64
        );
    }
    if let Ok(path) = std::env::var("X402_BENCH_JSON") {
        let doc = json!({
            "bench": "throughput",
            "per_client": per_client,
            "rows": all.iter().map(Figures::json).collect::<Vec<_>>(),
        });
        std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
        println!("wrote {path}");
    }
}

async fn measure(clients: usize, per_client: usize, batch_max: usize) -> Figures {
    let chain = Chain::start().await;
    let up = Upstream::start();
    let pay_to = new_signer().address();
    let cfg = evm_config(
        &up.url(),
        &chain.rpc.url,
        &chain.settler_key,
        &chain.token.to_checksum(None),
        &pay_to.to_checksum(None),
    )
    .replace(
        "settler_key = ",
        &format!("batch_max = {batch_max}\nsettler_key = "),
    );
    let gw = Gateway::start(&cfg);
    let c = client();
    let resp = c.get(gw.url("/paid/bench")).send().await.unwrap();
    let offer =
        decode_b64_json(resp.headers()["payment-required"].to_str().unwrap())["accepts"][0].clone();

    // Payers funded and payments signed before the clock starts.
    let mut signed = Vec::new();
    for _ in 0..clients {
        let payer = new_signer();
        chain.mint(payer.address(), 1_000_000_000).await;
        let headers: Vec<String> = (0..per_client)
            .map(|_| {
                let auth = Authorization::for_offer(&offer, payer.address());
                v2_header(&offer, auth.payload(&auth.sign(&payer)))
            })
            .collect();
        signed.push(headers);
    }
    // Warm the connection pool and the gateway's caches on the free route.
    for _ in 0..clients {
        c.get(gw.url("/free/warm")).send().await.unwrap();
    }

    let started = Instant::now();
    let tasks: Vec<_> = signed
        .into_iter()
        .map(|headers| {
            let c = client();
            let url = gw.url("/paid/bench");
            tokio::spawn(async move {
                let mut out = Vec::new();
                for h in headers {
                    let t = Instant::now();
                    let ok = match c.get(&url).header("payment-signature", h).send().await {
                        Ok(r) => {
                            let ok = r.status().is_success();
                            let _ = r.bytes().await;
                            ok
                        }
                        Err(_) => false,
                    };
                    out.push((ok, t.elapsed()));
                }
                out
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failures = 0;
    for t in tasks {
        for (ok, d) in t.await.unwrap() {
            failures += usize::from(!ok);
            latencies.push(d);
        }
    }
    let elapsed = started.elapsed();
    latencies.sort();

    // Gas: every settlement transaction in the ledger, once.
    let db = Store::connect(&gw.database_url).await.unwrap();
    let ledger = db.ledger(1_000_000).await.unwrap();
    let txs: HashSet<String> = ledger.iter().map(|r| r.tx_hash.clone()).collect();
    let mut gas = 0u64;
    for tx in &txs {
        let hash: B256 = tx.parse().unwrap();
        gas += chain
            .provider
            .get_transaction_receipt(hash)
            .await
            .unwrap()
            .unwrap()
            .gas_used;
    }
    let f = Figures {
        clients,
        batch_max,
        payments: clients * per_client,
        failures,
        elapsed,
        latencies,
        transactions: txs.len(),
        gas,
        settled: ledger.len(),
    };
    eprintln!(
        "{clients} clients, batch_max {batch_max}: {:.0} paid/s, {} failed, {} txs",
        f.paid_per_second(),
        f.failures,
        f.transactions
    );
    f
}
