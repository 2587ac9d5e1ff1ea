//! Paid requests through the real gateway on a fresh anvil (with Multicall3 at its usual
//! address): concurrent clients for throughput, batched settlement on or off.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use alloy::primitives::B256;
use alloy::providers::Provider;
use serde_json::{json, Value};
use x402_gate::store::Store;

use crate::common::chain::*;
use crate::common::*;

/// One paid-throughput run's figures.
pub struct Figures {
    pub clients: usize,
    pub batch_max: usize,
    pub payments: usize,
    pub failures: usize,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
    pub transactions: usize,
    pub gas: u64,
    pub settled: usize,
    /// The settlement transaction that carried the most payments: how many, and its gas per
    /// payment.
    pub largest_batch: usize,
    pub largest_batch_gas_per_payment: f64,
}

impl Figures {
    pub fn paid_per_second(&self) -> f64 {
        (self.payments - self.failures) as f64 / self.elapsed.as_secs_f64()
    }
    pub fn gas_per_payment(&self) -> f64 {
        self.gas as f64 / self.settled.max(1) as f64
    }
    pub fn pct(&self, p: f64) -> f64 {
        super::pct_ms(&self.latencies, p)
    }
    pub fn json(&self) -> Value {
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
            "largest_batch": self.largest_batch,
            "largest_batch_gas_per_payment": self.largest_batch_gas_per_payment,
        })
    }
}

/// `runs` as a table, then the batching on/off ratios of each pair (runs come as off, on).
pub fn print_runs(runs: &[Figures]) {
    println!(
        "  {:>7} {:>9} {:>9} {:>7} {:>8} {:>8} {:>8} {:>6} {:>8}",
        "clients", "batching", "payments", "failed", "paid/s", "p50 ms", "p99 ms", "txs", "gas/pay"
    );
    for f in runs {
        println!(
            "  {:>7} {:>9} {:>9} {:>7} {:>8.0} {:>8.2} {:>8.2} {:>6} {:>8.0}",
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
    for pair in runs.chunks(2).filter(|p| p.len() == 2) {
        let (off, on) = (&pair[0], &pair[1]);
        println!(
            "  {} clients, batching on/off: {:.2}x paid/s, {:.2}x p50, {:.2}x gas per payment, {:.2}x transactions; largest batch {} payments at {:.0} gas each ({:.2}x a payment alone)",
            on.clients,
            on.paid_per_second() / off.paid_per_second(),
            on.pct(0.5) / off.pct(0.5),
            on.gas_per_payment() / off.gas_per_payment(),
            on.transactions as f64 / off.transactions as f64,
            on.largest_batch,
            on.largest_batch_gas_per_payment,
            on.largest_batch_gas_per_payment / off.gas_per_payment()
        );
    }
}

/// `clients` concurrent payers, `per_client` payments each in a row, through a fresh gateway
/// (`batch_max` for the network) on a fresh anvil with Multicall3 and a fresh durable SQLite
/// database on disk. Payments are signed before the clock starts.
pub async fn throughput(clients: usize, per_client: usize, batch_max: usize) -> Figures {
    // A chain that also mines a block a second, as a real one does: with automine alone, one
    // transaction anvil's pool holds back (its pool race, foundry #10122) stalls every
    // settlement behind it, and in one run this session the 60 s of validity signed up front ran
    // out for 945 of 1,024 payments while 64 waited 70 s (src/payments/evm/send.rs's receipt
    // wait) for a 503.
    let chain = Chain::start_busy().await;
    let up = Upstream::start();
    let pay_to = new_signer().address();
    let cfg = evm_config(
        &up.url(),
        &node_url(&chain),
        &chain.settler_key,
        &chain.token.to_checksum(None),
        &pay_to.to_checksum(None),
    )
    .replace(
        "settler_key = ",
        &format!("batch_max = {batch_max}\nsettler_key = "),
    )
    // The free tier caps verified payments per month (1,000): lifted, as a paying plan does.
    + "\n[tiers.free]\nmonthly_verifications = 100000000\nnetworks = [\"eip155:84532\"]\n";
    let gw = Gateway::start(&cfg);
    let c = client();
    let offer = offer_for(&gw, "/paid/bench").await;

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

    // The first 503 (a settlement sent and not confirmed: a stalled chain, README) has anvil's
    // pool printed at that moment: which of the settler's nonces it holds, runnable or waiting,
    // against its mined count.
    let stalled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = signed
        .into_iter()
        .map(|headers| {
            let c = client();
            let url = gw.url("/paid/bench");
            let (stalled, provider) = (stalled.clone(), chain.provider.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                for h in headers {
                    let t = Instant::now();
                    // What went wrong, when something did: the status and the gateway's
                    // reason (its body's start), or the client's error.
                    let failed = match c.get(&url).header("payment-signature", h).send().await {
                        Ok(r) => {
                            let status = r.status();
                            if status == 503 && !stalled.swap(true, Ordering::SeqCst) {
                                let label = format!(
                                    "{clients} clients, batch_max {batch_max}, first 503 after {:.1} s",
                                    started.elapsed().as_secs_f64()
                                );
                                print_txpool(&label, &provider).await;
                            }
                            let body = r.bytes().await.unwrap_or_default();
                            (!status.is_success()).then(|| {
                                let body = String::from_utf8_lossy(&body);
                                format!("{status}: {}", body.chars().take(160).collect::<String>())
                            })
                        }
                        Err(e) => Some(format!("client error: {e}")),
                    };
                    out.push((failed, t.elapsed()));
                }
                out
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failures = 0;
    let mut why = std::collections::BTreeMap::<String, usize>::new();
    for t in tasks {
        for (failed, d) in t.await.unwrap() {
            if let Some(failed) = failed {
                failures += 1;
                *why.entry(failed).or_default() += 1;
            }
            latencies.push(d);
        }
    }
    // The benchmark asserts nothing, but a failure is printed with its reason: a payment that
    // fails under load is a finding, not noise.
    for (failed, n) in why.iter().take(5) {
        eprintln!("{clients} clients, batch_max {batch_max}: {n} failed with {failed}");
    }
    let elapsed = started.elapsed();
    latencies.sort();
    // Where the time went, from the gateway's own histograms: each stage's mean and count.
    let metrics = gw.metrics().await;
    for (stage, mean_ms, count) in stages(&metrics) {
        eprintln!(
            "{clients} clients, batch_max {batch_max}: {stage}: {mean_ms:.2} ms mean over {count}"
        );
    }
    // Settlements that stalled (anvil's pool holds one back now and then: foundry #10122) and
    // were signed again at higher fees: a slow run says so itself.
    let replaced: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("x402_settlement_replacements_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();

    // Gas: every settlement transaction in the ledger, once.
    let db = Store::connect(&gw.database_url).await.unwrap();
    let ledger = db.ledger(1_000_000).await.unwrap();
    let mut members: HashMap<String, usize> = HashMap::new();
    for row in &ledger {
        *members.entry(row.tx_hash.clone()).or_default() += 1;
    }
    let mut gas = 0u64;
    let mut largest = (0usize, 0u64);
    for (tx, &n) in &members {
        let hash: B256 = tx.parse().unwrap();
        let used = chain
            .provider
            .get_transaction_receipt(hash)
            .await
            .unwrap()
            .unwrap()
            .gas_used;
        gas += used;
        if n > largest.0 {
            largest = (n, used);
        }
    }
    let txs = members;
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
        largest_batch: largest.0,
        largest_batch_gas_per_payment: largest.1 as f64 / largest.0.max(1) as f64,
    };
    eprintln!(
        "{clients} clients, batch_max {batch_max}: {:.0} paid/s, {} failed, {} txs, {replaced} replacements",
        f.paid_per_second(),
        f.failures,
        f.transactions
    );
    f
}

/// Where the gateway sends its JSON-RPC calls: to anvil itself, as a deployment sends them to its
/// node. The tests' RPC proxy (`chain.rpc`, there to count calls and play faults) is not in the
/// way: it is one thread of this process that parses every request and makes it again, so it
/// added a hop to each call and took CPU from the gateway (before this, every figure here was
/// measured through it).
fn node_url(chain: &Chain) -> String {
    chain.anvil.endpoint()
}

/// Every histogram's mean (ms) and count in Prometheus text, one per label set.
fn stages(text: &str) -> Vec<(String, f64, u64)> {
    let mut sums = HashMap::new();
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        if name.contains("_seconds_sum") {
            sums.insert(name.replace("_sum", ""), value);
        } else if name.contains("_seconds_count") {
            let stage = name.replace("_count", "");
            if let Some(sum) = sums.get(&stage) {
                out.push((stage, sum * 1000.0 / value.max(1.0), value as u64));
            }
        }
    }
    out
}

/// What `sequential` measured: the sorted latencies, and CPU milliseconds per payment of the
/// gateway (the real binary, a process of its own, SQLite included) and of this process (the
/// origin and the client).
pub struct Sequential {
    pub latencies: Vec<Duration>,
    pub gateway_cpu_ms: f64,
    pub rest_cpu_ms: f64,
}

/// `n` fresh payments one after another to `path` (a route of `evm_config`: `/paid/...` settles
/// `after`, `/before/...` `before`) through the gateway binary on a fresh anvil, with durable
/// SQLite on disk.
pub async fn sequential(n: usize, path: &str) -> Sequential {
    let chain = Chain::start().await;
    let up = Upstream::start();
    let pay_to = new_signer().address();
    let dir = tempfile::tempdir().unwrap();
    let port = || -> std::net::SocketAddr { format!("127.0.0.1:{}", free_port()).parse().unwrap() };
    let listen = port();
    let metrics = port();
    let text = render(
        &evm_config(
            &up.url(),
            &node_url(&chain),
            &chain.settler_key,
            &chain.token.to_checksum(None),
            &pay_to.to_checksum(None),
        ),
        listen,
        port(),
        metrics,
        &format!("sqlite://{}", dir.path().join("gate.db").display()),
    );
    let file = dir.path().join("gate.toml");
    std::fs::write(&file, text).unwrap();
    let gw = super::idle::Process::start(&file, listen);
    let gateway_cpu = || super::wrk::cpu_seconds_of(&format!("/proc/{}/stat", gw.child.id()));
    let url = format!("http://{listen}{path}");
    let c = client();
    let challenge = c.get(&url).send().await.unwrap();
    assert_eq!(challenge.status(), 402);
    let offer = decode_b64_json(challenge.headers()["payment-required"].to_str().unwrap())
        ["accepts"][0]
        .clone();
    let payer = new_signer();
    chain.mint(payer.address(), 1_000_000_000).await;
    let headers: Vec<String> = (0..n + 5)
        .map(|_| {
            let auth = Authorization::for_offer(&offer, payer.address());
            v2_header(&offer, auth.payload(&auth.sign(&payer)))
        })
        .collect();
    let mut latencies = Vec::with_capacity(n);
    let (mut rest, mut gateway) = (0.0, 0.0);
    for (i, h) in headers.into_iter().enumerate() {
        let (rest0, gateway0) = (super::wrk::process_cpu_seconds(), gateway_cpu());
        let t = Instant::now();
        let r = c
            .get(&url)
            .header("payment-signature", h)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        r.bytes().await.unwrap();
        // The first few warm the connection and the caches.
        if i >= 5 {
            latencies.push(t.elapsed());
            rest += super::wrk::process_cpu_seconds() - rest0;
            gateway += gateway_cpu() - gateway0;
        }
    }
    latencies.sort();
    let text = c
        .get(format!("http://{metrics}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (stage, mean_ms, count) in stages(&text) {
        eprintln!("sequential {path}: {stage}: {mean_ms:.2} ms mean over {count}");
    }
    Sequential {
        latencies,
        gateway_cpu_ms: gateway * 1000.0 / n as f64,
        rest_cpu_ms: rest * 1000.0 / n as f64,
    }
}
