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

#[path = "support/mod.rs"]
mod support;

use serde_json::json;
use support::paid::{throughput, Figures};

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

async fn run() {
    let per_client: usize = env_or("X402_BENCH_PER_CLIENT", "16").parse().unwrap();
    let client_counts: Vec<usize> = env_or("X402_BENCH_CLIENTS", "16,64")
        .split(',')
        .map(|c| c.trim().parse().unwrap())
        .collect();
    let mut all = Vec::new();
    for &clients in &client_counts {
        for batch_max in [1, 64] {
            all.push(throughput(clients, per_client, batch_max).await);
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
