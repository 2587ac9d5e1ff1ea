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
use support::paid::{print_runs, throughput, Figures};

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
    print_runs(&all);
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
