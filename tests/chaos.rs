//! Chaos: seeded fault schedules played against the real gateway binary, a real anvil with the
//! EIP-3009 token, the test SVM (litesvm with the real SPL Token program, behind the tests'
//! JSON-RPC server, tests/common/svm.rs), real SQLite and Postgres, while clients drive mixed
//! traffic (free, unpaid, invalid, paid on either chain under `after`, `before` and `deferred`,
//! replays, and payers cancelling their payment while the origin works) at an origin that
//! sometimes fails, resets or times out. After every schedule the invariant checker
//! (tests/common/invariants.rs) reconciles both chains, the ledger and what the origin and the
//! clients saw.
//!
//! Each seed draws one scenario and its schedule:
//! - `rpc`: the RPCs behind fault proxies: latency, stalls, resets, refused connections, half-open
//!   connections (answers lost), for windows of a second or so, each window on the EVM RPC, the
//!   Solana RPC or both;
//! - `postgres`: the same faults between the gateway and Postgres;
//! - `kill`: the gateway (SQLite) SIGKILLed at random points during paid traffic and restarted;
//! - `pair`: two instances on one Postgres, one of them SIGKILLed and restarted later.
//!
//! The schedule (when each fault starts and ends, which request each client sends) depends only
//! on the seed; timing on a busy machine does not. CI runs 20 schedules, five of each scenario (see
//! `CI_SEEDS`); by hand: `X402_CHAOS_SEEDS=1-200 cargo test --test chaos -- --nocapture`, or one
//! failing seed: `X402_CHAOS_SEEDS=17`.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use common::chain::*;
use common::faults::{FaultProxy, Mode};
use common::invariants::{self, ClientSaw, OriginHit, Policy, Served, Tag};
use common::svm::{SvmChain, DEVNET};
use common::*;
use serde_json::Value;
use solana_keypair::Keypair;
use solana_signer::Signer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The EVM network (anvil plays Base Sepolia).
const EVM: &str = "eip155:84532";
const PRICE: u64 = 10_000;
const CLIENTS: usize = 6;
/// How long the load runs in each schedule.
const LOAD: Duration = Duration::from_secs(6);
/// The gateway's upstream read timeout; the origin's slow answers take longer.
const UPSTREAM_TIMEOUT_SECS: u64 = 1;
const SLOW: Duration = Duration::from_millis(1_500);

/// SplitMix64: a tiny seeded generator, so a seed names one schedule exactly.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Rpc,
    Postgres,
    Kill,
    Pair,
}

/// Which RPC a fault window hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpcs {
    Evm,
    Svm,
    Both,
}

#[derive(Debug, Clone, Copy)]
enum Event {
    Rpc(Rpcs, Mode),
    Db(Mode),
    Kill(usize),
    Restart(usize),
}

struct Schedule {
    scenario: Scenario,
    events: Vec<(Duration, Event)>,
}

fn fault_mode(rng: &mut Rng) -> Mode {
    match rng.below(5) {
        0 => Mode::Latency(rng.millis(20, 300)),
        1 => Mode::Stall,
        2 => Mode::Reset,
        3 => Mode::Refuse,
        _ => Mode::HalfOpen,
    }
}

fn schedule(seed: u64) -> Schedule {
    let mut rng = Rng(seed);
    let scenario = match seed % 4 {
        1 => Scenario::Rpc,
        2 => Scenario::Postgres,
        3 => Scenario::Kill,
        _ => Scenario::Pair,
    };
    let mut events = Vec::new();
    let mut t = rng.millis(300, 1_000);
    while t < LOAD {
        match scenario {
            Scenario::Rpc | Scenario::Postgres => {
                let mode = fault_mode(&mut rng);
                let len = rng.millis(200, 1_500);
                let (on, off) = if scenario == Scenario::Rpc {
                    let rpcs = match rng.below(3) {
                        0 => Rpcs::Evm,
                        1 => Rpcs::Svm,
                        _ => Rpcs::Both,
                    };
                    (Event::Rpc(rpcs, mode), Event::Rpc(rpcs, Mode::Pass))
                } else {
                    (Event::Db(mode), Event::Db(Mode::Pass))
                };
                events.push((t, on));
                events.push((t + len, off));
                t += len + rng.millis(300, 1_200);
            }
            Scenario::Kill | Scenario::Pair => {
                let down = rng.millis(100, 800);
                events.push((t, Event::Kill(0)));
                events.push((t + down, Event::Restart(0)));
                t += down + rng.millis(1_000, 2_500);
            }
        }
    }
    if scenario == Scenario::Kill {
        // Some latency on the chains too, so kills land while settlements are in flight.
        let latency = Mode::Latency(rng.millis(5, 40));
        events.push((Duration::ZERO, Event::Rpc(Rpcs::Both, latency)));
        events.sort_by_key(|e| e.0);
    }
    Schedule { scenario, events }
}

// ---------------------------------------------------------------------------------------------
// The origin: raw HTTP/1.1, so it can reset a connection or answer late, and record every request
// with the tag the client gave it.

struct Origin {
    addr: SocketAddr,
    hits: Arc<Mutex<Vec<OriginHit>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// What the origin needs to play a payer cancelling its payment.
#[derive(Clone)]
struct Canceller {
    rpc: String,
    token: Address,
    deployer: Address,
    payers: Arc<Vec<PrivateKeySigner>>,
    lock: Arc<tokio::sync::Mutex<()>>,
    svm: Arc<SvmChain>,
    /// The one-off Solana payers of cancelling requests, by base58 address.
    svm_payers: Arc<Mutex<std::collections::HashMap<String, Keypair>>>,
}

impl Origin {
    fn start(canceller: Canceller) -> Origin {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let h = hits.clone();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                if let Ok((conn, _)) = listener.accept().await {
                    tokio::spawn(origin_conn(conn, h.clone(), canceller.clone()));
                }
            }
        });
        Origin {
            addr,
            hits,
            runtime: Some(runtime),
        }
    }
}

async fn origin_conn(
    mut conn: tokio::net::TcpStream,
    hits: Arc<Mutex<Vec<OriginHit>>>,
    canceller: Canceller,
) {
    let mut buf = Vec::new();
    loop {
        let head = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                buf.drain(..end + 4);
                break head;
            }
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        let tag = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("x-chaos-tag")
                    .then(|| Tag::parse(v.trim()))
            })
            .unwrap_or(Tag::Free);
        let mut parts = path.trim_start_matches('/').split('/');
        let policy = match parts.next() {
            Some("after") => Some(Policy::After),
            Some("before") => Some(Policy::Before),
            Some("deferred") => Some(Policy::Deferred),
            _ => None,
        };
        let behaviour = parts.next().unwrap_or("ok").to_string();
        let served = match behaviour.as_str() {
            "err" => Served::Error,
            "reset" => Served::Reset,
            "slow" => Served::Timeout,
            _ => Served::Ok,
        };
        if behaviour == "cancel" {
            if let Tag::Paid(network, payer, nonce) = &tag {
                if network == EVM {
                    canceller.cancel(payer, nonce).await;
                } else {
                    canceller.cancel_svm(payer);
                }
            }
        }
        hits.lock().unwrap().push(OriginHit {
            tag,
            policy,
            served,
            at: Instant::now(),
        });
        let answer: &[u8] = match served {
            Served::Reset => {
                let _ = conn.set_zero_linger();
                return;
            }
            Served::Timeout => {
                tokio::time::sleep(SLOW).await;
                b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nlate"
            }
            Served::Error => b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\nfail",
            Served::Ok => b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\ncontent",
        };
        if conn.write_all(answer).await.is_err() {
            return;
        }
    }
}

impl Canceller {
    /// The payer cancels its authorization on chain (anvil signs the carrier transaction).
    async fn cancel(&self, payer: &str, nonce: &str) {
        let Some(signer) = self
            .payers
            .iter()
            .find(|p| format!("{:#x}", p.address()) == payer)
        else {
            return;
        };
        let nonce: B256 = nonce.parse().unwrap();
        let data = cancel_calldata(self.token, signer, nonce);
        let provider = ProviderBuilder::new()
            .connect_http(self.rpc.parse().unwrap())
            .erased();
        // One sender account: one cancellation at a time keeps its nonces in order.
        let _one = self.lock.lock().await;
        let tx = TransactionRequest::default()
            .from(self.deployer)
            .to(self.token)
            .input(alloy::primitives::Bytes::from(data).into());
        // Refused when the authorization was used already (a `before` route settled first, or
        // a replay's second cancellation): the attack simply came too late.
        if let Ok(pending) = provider.send_transaction(tx).await {
            let _ = pending.get_receipt().await;
        }
    }

    /// A Solana payer cannot cancel one payment: it moves its tokens away so the transaction it
    /// handed over fails on chain. Its payer is a one-off funded for this payment only, so no
    /// other (deferred) payment of the client's is hit.
    fn cancel_svm(&self, payer: &str) {
        let Some(keypair) = self.svm_payers.lock().unwrap().remove(payer) else {
            return;
        };
        // Nothing left to move when a `before` route settled first, or for a replay.
        let _ = self.svm.move_all_away(&keypair, &self.svm.mint());
    }
}

// ---------------------------------------------------------------------------------------------
// The gateway, as a real process that can be SIGKILLed and started again on the same state.

struct Instance {
    config: PathBuf,
    log: PathBuf,
    addr: SocketAddr,
    child: Option<tokio::process::Child>,
    starts: usize,
}

impl Instance {
    async fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_x402-gate"))
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "warn,x402_gate=info")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.starts += 1;
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(self.addr).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "gateway did not start; log: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "gateway exited with {status}; log: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.start_kill().unwrap();
            child.wait().await.unwrap();
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// The Solana side of the gateway's config.
struct SvmNet {
    rpc: String,
    fee_payer_key: String,
    mint: String,
    pay_to: String,
}

#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename the list
fn gateway_config(
    listen: SocketAddr,
    dir: &Path,
    n: usize,
    rpc: &str,
    settler_keys: &[String],
    token: Address,
    pay_to: Address,
    svm: &SvmNet,
    database_url: &str,
    origin: SocketAddr,
) -> String {
    let keys: Vec<String> = settler_keys.iter().map(|k| format!("\"{k}\"")).collect();
    let routes: String = ["after", "before", "deferred"]
        .iter()
        .map(|p| {
            format!(
                "[[routes]]\ntenant = \"acme\"\npath = \"/{p}/*\"\nupstream = \"http://{origin}\"\nprice = \"$0.01\"\nsettle = \"{p}\"\n{}\n",
                // Deferred settlement gets time to ride out the faults: the seller's choice.
                if *p == "deferred" { "max_timeout_seconds = 300\n" } else { "" }
            )
        })
        .collect();
    format!(
        r#"
[server]
listen = "{listen}"
admin_listen = "127.0.0.1:{admin}"
metrics_listen = "127.0.0.1:{metrics}"
threads = 2
invalid_payments_per_minute = 1000000
upstream_read_timeout_seconds = {UPSTREAM_TIMEOUT_SECS}
upgrade_sock = "{dir}/upgrade{n}.sock"
pid_file = "{dir}/gate{n}.pid"

[networks."{EVM}"]
rpc_url = "{rpc}"
rpc_timeout_seconds = 2
settler_keys = [{keys}]
# One settlement transaction under way at a time: payments that arrive meanwhile wait and go out
# as one batch (the chain has Multicall3), so the faults meet batches as much as single payments.
settlements_in_flight = 1
# A settlement whose receipt the faults hide for 1 s is replaced (same nonce, higher fees): the
# faults meet replacements, and the reconciler settlements with several transactions, too.
replace_after_seconds = 1
assets = [{{ symbol = "USDC", address = "{token}", decimals = 6, eip712_name = "USD Coin", eip712_version = "2" }}]

# Every route offers Solana too; all three policies settle there (one fee payer, co-signing).
[networks."{DEVNET}"]
rpc_url = "{svm_rpc}"
rpc_timeout_seconds = 2
fee_payer_key = "{fee_payer_key}"
assets = [{{ symbol = "USDC", mint = "{mint}", decimals = 6 }}]

[tiers.free]
monthly_verifications = 100000000
networks = ["{EVM}", "{DEVNET}"]

[[tenants]]
id = "acme"
pay_to = {{ "{EVM}" = "{pay_to}", "{DEVNET}" = "{svm_pay_to}" }}

{routes}
[[routes]]
tenant = "acme"
path = "/free/*"
upstream = "http://{origin}"
price = "free"

[database]
url = "{database_url}"
"#,
        admin = free_port(),
        metrics = free_port(),
        dir = dir.display(),
        keys = keys.join(", "),
        token = token.to_checksum(None),
        pay_to = pay_to.to_checksum(None),
        svm_rpc = svm.rpc,
        fee_payer_key = svm.fee_payer_key,
        mint = svm.mint,
        svm_pay_to = svm.pay_to,
    )
}

// ---------------------------------------------------------------------------------------------
// The load: each client draws its requests from its own seeded generator.

#[derive(Clone)]
struct Load {
    base: Vec<String>,
    /// Per policy, its EVM offer and its Solana offer.
    offers: Arc<Vec<(Policy, Value, Value)>>,
    seen: Arc<Mutex<Vec<ClientSaw>>>,
    svm: Arc<SvmChain>,
    /// Where a cancelling Solana payer leaves its keypair for the origin (see `cancel_svm`).
    svm_payers: Arc<Mutex<std::collections::HashMap<String, Keypair>>>,
}

/// A Solana payment of `offer` by `payer`, as an SDK client builds it: its header and its tag.
fn svm_paid(load: &Load, offer: &Value, payer: &Keypair) -> (String, Tag) {
    let tx = load.svm.payment(offer, &payer.pubkey()).sign(payer);
    let tag = Tag::paid(invariants::svm_key(DEVNET, &tx));
    let header = v2_header(
        offer,
        serde_json::json!({"transaction": common::svm::encode_tx(&tx)}),
    );
    (header, tag)
}

/// A Solana payment of `offer` naming `payer` as the transfer's authority, its signature made by
/// someone else: refused by the local checks, before any RPC call.
fn svm_forged(load: &Load, offer: &Value, payer: &Keypair, stranger: &Keypair) -> String {
    let mut tx = load.svm.payment(offer, &payer.pubkey()).sign(payer);
    let slot = tx
        .message
        .static_account_keys()
        .iter()
        .position(|k| *k == payer.pubkey())
        .unwrap();
    let forged = stranger.sign_message(&tx.message.serialize());
    tx.signatures[slot] = forged;
    v2_header(
        offer,
        serde_json::json!({"transaction": common::svm::encode_tx(&tx)}),
    )
}

async fn client_loop(
    load: Load,
    idx: usize,
    seed: u64,
    payer: PrivateKeySigner,
    svm_payer: Keypair,
    until: Instant,
) {
    let mut rng = Rng(seed ^ ((idx as u64 + 1) << 32));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let stranger = new_signer();
    let svm_stranger = Keypair::new();
    let mut used: Vec<(Policy, String, Tag)> = Vec::new();
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let base = &load.base[rng.below(load.base.len() as u64) as usize];
        let (policy, evm_offer, svm_offer) =
            load.offers[rng.below(load.offers.len() as u64) as usize].clone();
        // Half the payments (and the invalid ones) on Solana.
        let on_svm = rng.below(2) == 1;
        let offer = if on_svm { svm_offer } else { evm_offer };
        let behaviour = match rng.below(100) {
            0..=69 => "ok",
            70..=79 => "err",
            80..=85 => "reset",
            86..=91 => "slow",
            _ => "cancel",
        };
        let kind = rng.below(100);
        let (path, tag, header, cancelled) = match kind {
            0..=6 => (format!("/free/{n}"), Tag::Free, None, false),
            7..=14 => (
                format!("/{}/ok/{n}", policy.path()),
                Tag::Unpaid,
                None,
                false,
            ),
            15..=22 => {
                // Signed by someone other than `from`: refused before any RPC call.
                let header = if on_svm {
                    svm_forged(&load, &offer, &svm_payer, &svm_stranger)
                } else {
                    let auth = Authorization::for_offer(&offer, payer.address());
                    v2_header(&offer, auth.payload(&auth.sign(&stranger)))
                };
                (
                    format!("/{}/ok/{n}", policy.path()),
                    Tag::Invalid,
                    Some(header),
                    false,
                )
            }
            23..=29 if !used.is_empty() => {
                // A replay of one of this client's earlier proofs, on its own route.
                let (p, header, tag) = used[rng.below(used.len() as u64) as usize].clone();
                (format!("/{}/ok/{n}", p.path()), tag, Some(header), false)
            }
            _ if on_svm => {
                let (header, tag) = if behaviour == "cancel" {
                    // A one-off payer holding this payment's price only, whose keypair the
                    // origin takes to move the tokens away.
                    let one_off = load.svm.new_payer(PRICE);
                    let paid = svm_paid(&load, &offer, &one_off);
                    load.svm_payers
                        .lock()
                        .unwrap()
                        .insert(one_off.pubkey().to_string(), one_off);
                    paid
                } else {
                    svm_paid(&load, &offer, &svm_payer)
                };
                used.push((policy, header.clone(), tag.clone()));
                let path = format!("/{}/{behaviour}/{n}", policy.path());
                (path, tag, Some(header), behaviour == "cancel")
            }
            _ => {
                let auth = Authorization::for_offer(&offer, payer.address());
                let header = v2_header(&offer, auth.payload(&auth.sign(&payer)));
                let tag = Tag::Paid(
                    EVM.to_string(),
                    format!("{:#x}", payer.address()),
                    format!("{:#x}", auth.nonce),
                );
                used.push((policy, header.clone(), tag.clone()));
                let path = format!("/{}/{behaviour}/{n}", policy.path());
                (path, tag, Some(header), behaviour == "cancel")
            }
        };
        let route_policy = if path.starts_with("/free/") {
            None
        } else {
            // A replayed proof goes to its own route; the path says which.
            Some(match path.split('/').nth(1) {
                Some("before") => Policy::Before,
                Some("deferred") => Policy::Deferred,
                _ => Policy::After,
            })
        };
        let mut req = http
            .get(format!("{base}{path}"))
            .header("x-chaos-tag", tag.header());
        if let Some(h) = &header {
            req = req.header("payment-signature", h);
        }
        let (status, receipt) = match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let receipt = resp.headers().get("payment-response").map(|v| {
                    let r = decode_b64_json(v.to_str().unwrap());
                    let network = r["network"]
                        .as_str()
                        .map(str::to_string)
                        .or_else(|| tag.key().map(|k| k.0))
                        .unwrap_or_default();
                    (
                        r["success"].as_bool().unwrap_or(false),
                        invariants::canon(&network, r["transaction"].as_str().unwrap_or("")),
                    )
                });
                // Read the body: a response cut half-way is no answer.
                match resp.bytes().await {
                    Ok(_) => (Some(status), receipt),
                    Err(e) => {
                        note(&format!("{path}: body: {e:?}"));
                        (None, receipt)
                    }
                }
            }
            Err(e) => {
                note(&format!("{path}: {e:?}"));
                (None, None)
            }
        };
        if status.is_none() {
            // As a real client would: no hammering a gateway that is not there.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        load.seen.lock().unwrap().push(ClientSaw {
            tag,
            policy: route_policy,
            status,
            receipt,
            cancelled,
            ended: Instant::now(),
        });
    }
}

/// A line about a request with no answer, shown with `X402_CHAOS_VERBOSE=1`.
fn note(line: &str) {
    if std::env::var_os("X402_CHAOS_VERBOSE").is_some() {
        eprintln!("  unanswered {line}");
    }
}

// ---------------------------------------------------------------------------------------------

struct Outcome {
    scenario: Scenario,
    /// Whether the drain had to restart the instances to finish.
    restarted: bool,
    /// Settlements that stalled (`replace_after_seconds`), and replacements signed for them.
    replaced: (usize, usize),
    report: invariants::Report,
    requests: usize,
    statuses: std::collections::BTreeMap<String, usize>,
}

async fn run_seed(seed: u64) -> Outcome {
    let plan = schedule(seed);
    let dir = tempfile::tempdir().unwrap();
    let chain = Chain::start_busy().await;
    let pay_to = new_signer().address();
    let payers: Vec<PrivateKeySigner> = (0..CLIENTS).map(|_| new_signer()).collect();
    for p in &payers {
        chain.mint(p.address(), 1_000_000_000).await;
    }
    let anvil_addr: SocketAddr = format!("127.0.0.1:{}", chain.anvil.port()).parse().unwrap();
    let rpc_proxy = FaultProxy::start(anvil_addr);
    let svm = Arc::new(SvmChain::start());
    let svm_pay_to = svm.new_recipient();
    let svm_payers: Vec<Keypair> = (0..CLIENTS).map(|_| svm.new_payer(1_000_000_000)).collect();
    let svm_addr: SocketAddr = svm.rpc_url()["http://".len()..].parse().unwrap();
    let svm_proxy = FaultProxy::start(svm_addr);
    let svm_net = SvmNet {
        rpc: format!("http://{}", svm_proxy.addr),
        fee_payer_key: svm.fee_payer_key(),
        mint: svm.mint().to_string(),
        pay_to: svm_pay_to.to_string(),
    };
    let one_off_payers = Arc::new(Mutex::new(std::collections::HashMap::new()));
    let origin = Origin::start(Canceller {
        rpc: chain.anvil.endpoint(),
        token: chain.token,
        deployer: chain.deployer,
        payers: Arc::new(payers.clone()),
        lock: Default::default(),
        svm: svm.clone(),
        svm_payers: one_off_payers.clone(),
    });
    let on_postgres = matches!(plan.scenario, Scenario::Postgres | Scenario::Pair);
    let (database_url, gateway_db_url, db_proxy) = if on_postgres {
        let url = fresh_postgres_url().await;
        let proxy = FaultProxy::start("127.0.0.1:5432".parse().unwrap());
        let through = url.replace("127.0.0.1:5432", &proxy.addr.to_string());
        (url, through, Some(proxy))
    } else {
        let url = format!("sqlite://{}", dir.path().join("gate.db").display());
        (url.clone(), url, None)
    };
    let instances = if plan.scenario == Scenario::Pair {
        2
    } else {
        1
    };
    let keys = chain.extra_settler_keys(instances);
    let mut gateways = Vec::new();
    for n in 0..instances {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = dir.path().join(format!("gate{n}.toml"));
        let mut all_keys = vec![chain.settler_key.clone()];
        all_keys.extend(keys.iter().cloned());
        std::fs::write(
            &config,
            gateway_config(
                addr,
                dir.path(),
                n,
                &format!("http://{}", rpc_proxy.addr),
                &all_keys[..instances],
                chain.token,
                pay_to,
                &svm_net,
                &gateway_db_url,
                origin.addr,
            ),
        )
        .unwrap();
        let mut gw = Instance {
            config,
            log: dir.path().join(format!("gate{n}.log")),
            addr,
            child: None,
            starts: 0,
        };
        gw.start().await;
        gateways.push(gw);
    }

    // The offers, as a client learns them from a 402.
    let mut offers = Vec::new();
    for p in [Policy::After, Policy::Before, Policy::Deferred] {
        let resp = client()
            .get(gateways[0].url(&format!("/{}/ok/0", p.path())))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 402);
        let v2 = decode_b64_json(resp.headers()["payment-required"].to_str().unwrap());
        let on = |network: &str| {
            v2["accepts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|o| o["network"] == network)
                .unwrap_or_else(|| panic!("no {network} offer: {v2}"))
                .clone()
        };
        offers.push((p, on(EVM), on(DEVNET)));
    }

    let load = Load {
        base: gateways.iter().map(|g| g.url("")).collect(),
        offers: Arc::new(offers),
        seen: Default::default(),
        svm: svm.clone(),
        svm_payers: one_off_payers,
    };
    let started = Instant::now();
    let until = started + LOAD;
    let clients: Vec<_> = payers
        .iter()
        .zip(svm_payers)
        .enumerate()
        .map(|(i, (p, s))| tokio::spawn(client_loop(load.clone(), i, seed, p.clone(), s, until)))
        .collect();

    for (at, event) in &plan.events {
        tokio::time::sleep_until((started + *at).into()).await;
        match *event {
            Event::Rpc(rpcs, m) => {
                if rpcs != Rpcs::Svm {
                    rpc_proxy.set(m);
                }
                if rpcs != Rpcs::Evm {
                    svm_proxy.set(m);
                }
            }
            Event::Db(m) => db_proxy.as_ref().unwrap().set(m),
            Event::Kill(i) => gateways[i].kill().await,
            Event::Restart(i) => gateways[i].start().await,
        }
    }
    for c in clients {
        c.await.unwrap();
    }

    // Faults end; every instance runs; the gateway gets time to finish what it started.
    rpc_proxy.set(Mode::Pass);
    svm_proxy.set(Mode::Pass);
    if let Some(p) = &db_proxy {
        p.set(Mode::Pass);
    }
    for gw in gateways.iter_mut() {
        if gw.child.is_none() {
            gw.start().await;
        }
    }
    let restarted = if drain(&database_url, Duration::from_secs(10)).await {
        false
    } else {
        // What is left waits on time: a settlement whose recording failed is looked up again
        // 90 s later (or at the next start), a deferred item leased by an instance that was
        // killed is taken over when its 180 s lease ends, a settler key when its 15 s one does.
        // Skip the wait: stop every instance, end the leases their lives held, and start them
        // again; each one's first reconciler pass looks at every settlement.
        for gw in gateways.iter_mut() {
            gw.kill().await;
        }
        expire_leases(&database_url).await;
        for gw in gateways.iter_mut() {
            gw.start().await;
        }
        drain(&database_url, Duration::from_secs(45)).await;
        true
    };

    let hits = origin.hits.lock().unwrap().clone();
    let seen = load.seen.lock().unwrap().clone();
    let mut statuses = std::collections::BTreeMap::new();
    for c in &seen {
        let key = c.status.map_or("none".to_string(), |s| s.to_string());
        *statuses.entry(key).or_insert(0) += 1;
    }
    let report = invariants::check(invariants::Records {
        network: EVM,
        provider: &chain.provider,
        token: chain.token,
        pay_to,
        svm: Some(invariants::SvmRecords {
            network: DEVNET,
            chain: &svm,
            mint: svm.mint(),
            pay_to: svm_pay_to,
        }),
        price: PRICE,
        database_url: &database_url,
        origin: &hits,
        clients: &seen,
    })
    .await;
    let verbose = std::env::var_os("X402_CHAOS_VERBOSE").is_some();
    if !report.violations.is_empty() {
        print_txpool(&format!("seed {seed}"), &chain.provider).await;
    }
    if !report.violations.is_empty() || (restarted && verbose) {
        for (n, gw) in gateways.iter().enumerate() {
            let keep = std::env::temp_dir().join(format!("x402-chaos-seed{seed}-gate{n}.log"));
            let _ = std::fs::copy(&gw.log, &keep);
            eprintln!(
                "--- seed {seed} gateway log (whole: {}):\n{}",
                keep.display(),
                tail(&std::fs::read_to_string(&gw.log).unwrap_or_default(), 30)
            );
        }
    }
    let gateways_logs: Vec<PathBuf> = gateways.iter().map(|gw| gw.log.clone()).collect();
    for mut gw in gateways {
        gw.kill().await;
    }
    // Settlements the faults kept unmined long enough to be replaced, and replacements signed
    // (a fault on the fee estimate leaves a stalled settlement pending), by the gateways' logs.
    let count = |needle: &str| -> usize {
        gateways_logs
            .iter()
            .map(|log| {
                std::fs::read_to_string(log)
                    .unwrap_or_default()
                    .matches(needle)
                    .count()
            })
            .sum()
    };
    let replaced = (
        count("replacing it:"),
        count("replacing a stuck settlement"),
    );
    Outcome {
        scenario: plan.scenario,
        restarted,
        replaced,
        report,
        requests: seen.len(),
        statuses,
    }
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

async fn pool(database_url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(database_url)
        .await
        .unwrap()
}

/// Waits until no settlement is in flight or queued, at most `limit`; returns whether none is.
async fn drain(database_url: &str, limit: Duration) -> bool {
    let pool = pool(database_url).await;
    let deadline = Instant::now() + limit;
    let mut done = false;
    while Instant::now() < deadline {
        let open: i64 = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM payment_claims WHERE status = 'settling')
                  + (SELECT COUNT(*) FROM settlement_queue WHERE status = 'queued')",
        )
        .fetch_one(&pool)
        .await
        .map(|r| sqlx::Row::get(&r, 0))
        .unwrap_or(1);
        if open == 0 {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if !done && std::env::var_os("X402_CHAOS_VERBOSE").is_some() {
        // What the drain waited on, by network: which chain's settlements a restart finishes.
        let left = sqlx::query(
            "SELECT c.network, c.status, c.tx_hash, c.route, q.status, q.last_error
             FROM payment_claims c LEFT JOIN settlement_queue q ON q.claim_id = c.id
             WHERE c.status = 'settling' OR q.status = 'queued'",
        )
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
        for row in left {
            use sqlx::Row;
            eprintln!(
                "  left open: {} {} tx {:?} route {} queue {:?} ({:?})",
                row.get::<String, _>(0),
                row.get::<String, _>(1),
                row.get::<Option<String>, _>(2),
                row.get::<String, _>(3),
                row.get::<Option<String>, _>(4),
                row.get::<Option<String>, _>(5),
            );
        }
    }
    pool.close().await;
    done
}

/// Ends every lease (deferred items, settler keys), as if their time had passed: only once no
/// instance is running.
async fn expire_leases(database_url: &str) {
    let pool = pool(database_url).await;
    for sql in [
        "UPDATE settlement_queue SET lease_until = 0 WHERE status = 'queued'",
        "UPDATE settler_leases SET expires_at = 0",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    pool.close().await;
}

/// Without `X402_CHAOS_SEEDS`: seeds 1 to 20, five schedules of each scenario. (The `postgres` and
/// `pair` scenarios were left out until deferred claims stopped being left `settling` after
/// Postgres faults: seeds 6, 26 and 30.)
const CI_SEEDS: &str = "1-20";

fn seeds() -> Vec<u64> {
    let spec = std::env::var("X402_CHAOS_SEEDS").unwrap_or_else(|_| CI_SEEDS.into());
    spec.split(',')
        .flat_map(|part| match part.split_once('-') {
            Some((a, b)) => (a.trim().parse().unwrap()..=b.trim().parse().unwrap()).collect(),
            None => vec![part.trim().parse::<u64>().unwrap()],
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_invariants_hold_under_seeded_fault_schedules() {
    let mut failed = Vec::new();
    for seed in seeds() {
        let t = Instant::now();
        let o = run_seed(seed).await;
        let r = &o.report;
        eprintln!(
            "seed {seed} ({:?}): {} requests {:?}; settled {} ({} on Solana, {} in {} EVM batches), delivered {}, \
             withheld {}, unanswered {}, open claims {}, stalled {} (replaced {}); {} violations; {:.1} s{}",
            o.scenario,
            o.requests,
            o.statuses,
            r.settled,
            r.settled_svm,
            r.batched,
            r.batches,
            r.delivered,
            r.withheld,
            r.unanswered,
            r.open_claims,
            o.replaced.0,
            o.replaced.1,
            r.violations.len(),
            t.elapsed().as_secs_f64(),
            if o.restarted {
                " (drained by a restart)"
            } else {
                ""
            }
        );
        for v in &r.violations {
            eprintln!("  seed {seed}: {v}");
        }
        assert!(
            r.settled > r.settled_svm && r.settled_svm > 0,
            "seed {seed}: nothing settled on one of the chains; the run proved nothing there"
        );
        if !r.violations.is_empty() {
            failed.push(seed);
        }
    }
    assert!(
        failed.is_empty(),
        "invariants broken for seeds {failed:?}; rerun one with X402_CHAOS_SEEDS=<seed>"
    );
}
