//! A real EVM chain for tests: anvil (from npm, installed by scripts/setup.sh) with our EIP-3009
//! token deployed, behind a JSON-RPC proxy that counts round trips and can play an outage, or a
//! fault on one method (a lost answer, a connection cut, a call that never returns, a dropped
//! transaction).

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use alloy::network::TransactionBuilder;
use alloy::node_bindings::{Anvil, AnvilInstance};
use alloy::primitives::{Address, Bytes, B256, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol;
use alloy::sol_types::{SolCall, SolValue};
use axum::body::Bytes as AxBytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use x402_gate::payments::evm::{
    sign_authorization, token_domain, TransferWithAuthorization, MULTICALL3,
};

pub const CHAIN_ID: u64 = 84532;
pub const TOKEN_NAME: &str = "USD Coin";
pub const TOKEN_VERSION: &str = "2";

sol! {
    interface ITestUSDC {
        function mint(address to, uint256 amount) external;
        function balanceOf(address account) external view returns (uint256);
        function authorizationState(address authorizer, bytes32 nonce) external view returns (bool);
        function cancelAuthorization(address authorizer, bytes32 nonce, uint8 v, bytes32 r, bytes32 s) external;
        function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, uint8 v, bytes32 r, bytes32 s) external;
    }
    struct CancelAuthorization { address authorizer; bytes32 nonce; }
}

/// The anvil binary: `ANVIL_PATH`, the one scripts/setup.sh installs, or `anvil` on PATH.
pub fn anvil_path() -> PathBuf {
    if let Ok(p) = std::env::var("ANVIL_PATH") {
        return p.into();
    }
    let local = super::repo_path("tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    if local.exists() {
        local
    } else {
        "anvil".into()
    }
}

/// Deterministic unique 32 bytes (keys, nonces) without pulling in an RNG.
pub fn unique_b256(label: &str) -> B256 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mut h = Sha256::new();
    h.update(label.as_bytes());
    h.update(n.to_le_bytes());
    h.update(t.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    B256::from_slice(&h.finalize())
}

pub fn new_signer() -> PrivateKeySigner {
    PrivateKeySigner::from_bytes(&unique_b256("key")).unwrap()
}

pub fn now() -> u64 {
    x402_gate::payments::chain::unix_now()
}

/// What the proxy does to a request of one JSON-RPC method while a fault is set for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forwards the request to anvil, then answers 502: a load balancer that lost the answer.
    Lose502,
    /// Forwards the request to anvil, then cuts the connection in the middle of the answer.
    LoseReset,
    /// Never answers.
    Stall,
    /// `eth_sendRawTransaction` only: answers success (the transaction's hash) without
    /// forwarding, as a node that accepted the transaction and then dropped it from its pool.
    /// To `eth_sendRawTransactionSync`, what such a node answers once its wait is over: EIP-7966's
    /// timeout error, naming the transaction.
    Swallow,
    /// Answers JSON-RPC's "method not found" (-32601) without forwarding: a node that does not
    /// serve the method.
    MethodNotFound,
    /// Forwards the request at once and holds the answer back this long: a node slow to answer,
    /// as one answering `eth_sendRawTransactionSync` on a chain with slow blocks is.
    Slow(std::time::Duration),
}

/// The two ways of sending a transaction are one family: a fault set on `eth_sendRawTransaction`
/// plays on a sync send too (one set on `eth_sendRawTransactionSync` only on that), and counts
/// include both, so the tests of lost and dropped sends keep testing whichever the gateway uses.
pub fn method_family(method: &str) -> &str {
    match method {
        "eth_sendRawTransactionSync" => "eth_sendRawTransaction",
        m => m,
    }
}

/// A JSON-RPC proxy in front of anvil: counts requests, answers 503 while `down`, and plays the
/// faults set per method.
pub struct RpcProxy {
    pub url: String,
    pub calls: Arc<AtomicUsize>,
    /// Total wall time spent answering JSON-RPC requests, in nanoseconds: the chain's share.
    pub busy_nanos: Arc<AtomicU64>,
    pub down: Arc<AtomicBool>,
    pub methods: Arc<Mutex<Vec<String>>>,
    /// Method -> (fault, how many more requests it applies to).
    faults: Arc<Mutex<HashMap<String, (Fault, usize)>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

#[derive(Clone)]
struct ProxyState {
    target: String,
    client: reqwest::Client,
    calls: Arc<AtomicUsize>,
    busy_nanos: Arc<AtomicU64>,
    down: Arc<AtomicBool>,
    methods: Arc<Mutex<Vec<String>>>,
    faults: Arc<Mutex<HashMap<String, (Fault, usize)>>>,
}

async fn forward(State(s): State<ProxyState>, body: AxBytes) -> Response {
    if s.down.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "rpc down").into_response();
    }
    s.calls.fetch_add(1, Ordering::SeqCst);
    let mut fault = None;
    let request = serde_json::from_slice::<Value>(&body).ok();
    if let Some(v) = &request {
        let mut m = s.methods.lock().unwrap();
        match v {
            Value::Array(items) => m.extend(
                items
                    .iter()
                    .filter_map(|i| i["method"].as_str().map(String::from)),
            ),
            v => {
                if let Some(method) = v["method"].as_str() {
                    m.push(method.to_string());
                    let mut faults = s.faults.lock().unwrap();
                    // A fault set on the method itself first, then one set on its family.
                    let key = if faults.contains_key(method) {
                        method
                    } else {
                        method_family(method)
                    };
                    if let Some((f, left)) = faults.get_mut(key) {
                        if *left > 0 {
                            *left -= 1;
                            fault = Some(*f);
                        }
                    }
                }
            }
        }
    }
    match fault {
        Some(Fault::Stall) => std::future::pending::<()>().await,
        Some(Fault::MethodNotFound) => {
            let v = request.unwrap();
            let error = json!({"code": -32601, "message": format!("the method {} does not exist/is not available", v["method"])});
            let answer = json!({"jsonrpc": "2.0", "id": v["id"], "error": error});
            return (
                StatusCode::OK,
                [("content-type", "application/json")],
                answer.to_string(),
            )
                .into_response();
        }
        Some(Fault::Swallow) => {
            let v = request.unwrap();
            let raw: Bytes = v["params"][0].as_str().unwrap().parse().unwrap();
            let hash = alloy::primitives::keccak256(&raw);
            let answer = if v["method"] == "eth_sendRawTransactionSync" {
                let error = json!({"code": 4, "message": "transaction not mined within the wait", "data": hash});
                json!({"jsonrpc": "2.0", "id": v["id"], "error": error})
            } else {
                json!({"jsonrpc": "2.0", "id": v["id"], "result": hash})
            };
            return (
                StatusCode::OK,
                [("content-type", "application/json")],
                answer.to_string(),
            )
                .into_response();
        }
        _ => {}
    }
    let started = std::time::Instant::now();
    let resp = match s
        .client
        .post(&s.target)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
    {
        Ok(r) => {
            let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
            let bytes = r.bytes().await.unwrap_or_default();
            (status, [("content-type", "application/json")], bytes).into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    s.busy_nanos
        .fetch_add(started.elapsed().as_nanos() as u64, Ordering::SeqCst);
    if let Some(Fault::Slow(wait)) = fault {
        tokio::time::sleep(wait).await;
    }
    match fault {
        Some(Fault::Lose502) => (StatusCode::BAD_GATEWAY, "upstream reset").into_response(),
        Some(Fault::LoseReset) => {
            // Headers go out, then the body fails: hyper cuts the connection mid-answer.
            let cut = futures_util::stream::once(async {
                Err::<AxBytes, _>(std::io::Error::other("connection reset"))
            });
            Response::builder()
                .header("content-type", "application/json")
                .body(axum::body::Body::from_stream(cut))
                .unwrap()
        }
        _ => resp,
    }
}

impl RpcProxy {
    pub fn start(target: String) -> RpcProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let busy_nanos = Arc::new(AtomicU64::new(0));
        let down = Arc::new(AtomicBool::new(false));
        let methods = Arc::new(Mutex::new(Vec::new()));
        let faults = Arc::new(Mutex::new(HashMap::new()));
        let state = ProxyState {
            target,
            client: reqwest::Client::new(),
            calls: calls.clone(),
            busy_nanos: busy_nanos.clone(),
            down: down.clone(),
            methods: methods.clone(),
            faults: faults.clone(),
        };
        let app = Router::new().route("/", post(forward)).with_state(state);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        runtime.spawn(async move {
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(l, app).await.unwrap()
        });
        RpcProxy {
            url,
            calls,
            busy_nanos,
            down,
            methods,
            faults,
            runtime: Some(runtime),
        }
    }

    /// Plays `fault` on the next `times` requests of `method` (`usize::MAX`: until cleared).
    pub fn set_fault(&self, method: &str, fault: Fault, times: usize) {
        self.faults
            .lock()
            .unwrap()
            .insert(method.to_string(), (fault, times));
    }

    /// Ends every fault; requests already stalled stay stalled.
    pub fn clear_faults(&self) {
        self.faults.lock().unwrap().clear();
    }

    /// How many requests of `method` (of its family: see `method_family`) reached the proxy.
    pub fn count(&self, method: &str) -> usize {
        self.methods
            .lock()
            .unwrap()
            .iter()
            .filter(|m| method_family(m) == method_family(method))
            .count()
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

impl Drop for RpcProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// anvil with the token deployed, a funded settler, and helpers.
pub struct Chain {
    pub anvil: AnvilInstance,
    pub rpc: RpcProxy,
    pub provider: DynProvider,
    pub token: Address,
    pub deployer: Address,
    /// anvil's second dev account: pays the gas of settlements.
    pub settler_key: String,
}

fn artifact(name: &str) -> Bytes {
    let path = super::repo_path(&format!("contracts/artifacts/{name}.json"));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["bytecode"].as_str().unwrap().parse().unwrap()
}

impl Chain {
    /// A chain as the gateway meets on a real network: with a Multicall3 (so concurrent
    /// payments are settled in batches).
    pub async fn start() -> Chain {
        let chain = Self::start_with(&[]).await;
        chain.install_multicall3().await;
        chain
    }

    /// A fresh anvil without Multicall3: every payment is settled by its own transaction.
    pub async fn start_bare() -> Chain {
        Self::start_with(&[]).await
    }

    /// A chain that also mines a block every second, as a real chain does, besides mining each
    /// transaction as it arrives. Tests with many concurrent settlements need it: automine mines
    /// one block per arriving transaction, so transactions that arrive ahead of a lower nonce
    /// wait in anvil's pool for the next arrival, and after the last one nothing mines them (a
    /// real chain's next block would).
    pub async fn start_busy() -> Chain {
        let chain = Self::start_with(&["--block-time", "1", "--mixed-mining"]).await;
        chain.install_multicall3().await;
        chain
    }

    async fn start_with(args: &[&str]) -> Chain {
        let anvil = Anvil::at(anvil_path())
            .chain_id(CHAIN_ID)
            .args(args.iter().copied())
            .try_spawn()
            .expect("anvil starts (run scripts/setup.sh to install it)");
        let provider = ProviderBuilder::new()
            .connect_http(anvil.endpoint_url())
            .erased();
        let deployer = anvil.addresses()[0];
        let mut code = artifact("TestUSDC").to_vec();
        code.extend((TOKEN_NAME.to_string(), TOKEN_VERSION.to_string()).abi_encode_params());
        let token = deploy(&provider, deployer, code).await;
        let settler_key = format!("0x{}", alloy::hex::encode(anvil.keys()[1].to_bytes()));
        let rpc = RpcProxy::start(anvil.endpoint());
        Chain {
            anvil,
            rpc,
            provider,
            token,
            deployer,
            settler_key,
        }
    }

    /// Deploys Multicall3 as it was deployed on the chains we serve: its pre-signed deployment
    /// transaction (contracts/multicall3-deploy.tx, from github.com/mds1/multicall), its
    /// deployer's first, sent once the deployer is funded, which places Multicall3's code at its
    /// address. The gateway then groups simulations and settles waiting payments in batches.
    /// Once a chain: the deployer's first nonce is then spent.
    pub async fn install_multicall3(&self) {
        let deployer: Address = "0x05f32B3cC3888453ff71B01135B34FF8e41263F2"
            .parse()
            .unwrap();
        assert_eq!(
            self.provider.get_transaction_count(deployer).await.unwrap(),
            0,
            "Multicall3 was deployed on this chain already"
        );
        // 1,000,000 gas at 100 gwei.
        self.set_eth_balance(deployer, 100_000_000_000_000_000)
            .await;
        // Code placed there by `place_at_multicall3` would make the deployment collide.
        self.place_at_multicall3("0x").await;
        let raw =
            std::fs::read_to_string(super::repo_path("contracts/multicall3-deploy.tx")).unwrap();
        let raw = alloy::hex::decode(raw.trim()).unwrap();
        let sent = self.provider.send_raw_transaction(&raw).await.unwrap();
        // Mined at once (automine), or within a block time.
        let receipt = tokio::time::timeout(std::time::Duration::from_secs(30), sent.get_receipt())
            .await
            .expect("Multicall3's deployment is mined")
            .unwrap();
        assert!(receipt.status(), "Multicall3's deployment: {receipt:?}");
        assert_eq!(receipt.contract_address, Some(MULTICALL3));
    }

    /// Places other code at Multicall3's address (`anvil_setCode`; "0x" clears it).
    pub async fn place_at_multicall3(&self, code: &str) {
        let _: Value = self
            .provider
            .raw_request("anvil_setCode".into(), (MULTICALL3, code))
            .await
            .unwrap();
    }

    /// The runtime code of a contract in contracts/artifacts.
    pub fn deployed_code(name: &str) -> String {
        let path = super::repo_path(&format!("contracts/artifacts/{name}.json"));
        let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        v["deployedBytecode"].as_str().unwrap().to_string()
    }

    /// `n` more funded keys for settlers (anvil's dev accounts 2, 3, ...; 0 deploys and mints,
    /// 1 is `settler_key`).
    pub fn extra_settler_keys(&self, n: usize) -> Vec<String> {
        self.anvil.keys()[2..2 + n]
            .iter()
            .map(|k| format!("0x{}", alloy::hex::encode(k.to_bytes())))
            .collect()
    }

    pub async fn send(&self, to: Address, data: Vec<u8>) -> alloy::rpc::types::TransactionReceipt {
        let tx = TransactionRequest::default()
            .from(self.deployer)
            .to(to)
            .input(Bytes::from(data).into());
        self.provider
            .send_transaction(tx)
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap()
    }

    pub async fn mint(&self, to: Address, amount: u64) {
        let call = ITestUSDC::mintCall {
            to,
            amount: U256::from(amount),
        };
        assert!(self.send(self.token, call.abi_encode()).await.status());
    }

    pub async fn balance(&self, who: Address) -> U256 {
        let call = ITestUSDC::balanceOfCall { account: who };
        let tx = TransactionRequest::default()
            .to(self.token)
            .input(Bytes::from(call.abi_encode()).into());
        let raw = self.provider.call(tx).await.unwrap();
        ITestUSDC::balanceOfCall::abi_decode_returns(&raw).unwrap()
    }

    pub async fn authorization_used(&self, who: Address, nonce: B256) -> bool {
        let call = ITestUSDC::authorizationStateCall {
            authorizer: who,
            nonce,
        };
        let tx = TransactionRequest::default()
            .to(self.token)
            .input(Bytes::from(call.abi_encode()).into());
        let raw = self.provider.call(tx).await.unwrap();
        ITestUSDC::authorizationStateCall::abi_decode_returns(&raw).unwrap()
    }

    /// Cancels an authorization on-chain, as its payer can at any time.
    pub async fn cancel(&self, payer: &PrivateKeySigner, nonce: B256) {
        let data = cancel_calldata(self.token, payer, nonce);
        assert!(self.send(self.token, data).await.status());
    }

    /// Turns anvil's mining of each transaction as it arrives on or off. Off, transactions wait
    /// in its pool until `mine` (as on a chain between blocks).
    pub async fn set_automine(&self, on: bool) {
        let _: Value = self
            .provider
            .raw_request("evm_setAutomine".into(), (on,))
            .await
            .unwrap();
    }

    /// Mines one block of what anvil's pool holds that can pay the block's base fee.
    pub async fn mine(&self) {
        let _: Value = self
            .provider
            .raw_request("evm_mine".into(), ())
            .await
            .unwrap();
    }

    /// The base fee of the next block, in wei: a surge, as a busy chain has.
    pub async fn set_next_base_fee(&self, wei: u128) {
        let _: Value = self
            .provider
            .raw_request("anvil_setNextBlockBaseFeePerGas".into(), (U256::from(wei),))
            .await
            .unwrap();
    }

    /// The settler's mined transaction count (`settler_key`'s nonce).
    pub async fn settler_nonce(&self) -> u64 {
        let settler: PrivateKeySigner = self.settler_key.parse().unwrap();
        self.provider
            .get_transaction_count(settler.address())
            .await
            .unwrap()
    }

    /// Sets an account's native balance (what pays its gas), in wei.
    pub async fn set_eth_balance(&self, who: Address, wei: u128) {
        let _: Value = self
            .provider
            .raw_request("anvil_setBalance".into(), (who, U256::from(wei)))
            .await
            .unwrap();
    }

    /// How many transactions anvil's pool holds, runnable or queued.
    pub async fn pool_size(&self) -> u64 {
        let status: Value = self
            .provider
            .raw_request("txpool_status".into(), ())
            .await
            .unwrap();
        let count = |k: &str| {
            u64::from_str_radix(status[k].as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
        };
        count("pending") + count("queued")
    }

    /// The hashes of the transactions anvil's pool holds, runnable or queued.
    pub async fn pool_hashes(&self) -> Vec<String> {
        let pool: Value = self
            .provider
            .raw_request("txpool_content".into(), ())
            .await
            .unwrap();
        let mut hashes = Vec::new();
        for kind in ["pending", "queued"] {
            for txs in pool[kind].as_object().into_iter().flat_map(|s| s.values()) {
                for tx in txs.as_object().into_iter().flat_map(|t| t.values()) {
                    hashes.push(tx["hash"].as_str().unwrap().to_string());
                }
            }
        }
        hashes
    }

    /// Deploys an ERC-1271 smart wallet owned by `owner`.
    pub async fn deploy_wallet(&self, owner: Address) -> Address {
        let mut code = artifact("TestSmartWallet").to_vec();
        code.extend(owner.abi_encode());
        deploy(&self.provider, self.deployer, code).await
    }
}

/// Calldata of `cancelAuthorization(payer, nonce)` on `token`, signed by the payer.
pub fn cancel_calldata(token: Address, payer: &PrivateKeySigner, nonce: B256) -> Vec<u8> {
    use alloy::signers::SignerSync;
    use alloy::sol_types::SolStruct;
    let msg = CancelAuthorization {
        authorizer: payer.address(),
        nonce,
    };
    let domain = token_domain(TOKEN_NAME, TOKEN_VERSION, CHAIN_ID, token);
    let sig = payer
        .sign_hash_sync(&msg.eip712_signing_hash(&domain))
        .unwrap();
    ITestUSDC::cancelAuthorizationCall {
        authorizer: payer.address(),
        nonce,
        v: 27 + sig.v() as u8,
        r: sig.r().into(),
        s: sig.s().into(),
    }
    .abi_encode()
}

/// Cancels `payer`'s authorization `nonce` through a fresh provider straight to anvil at `url`
/// (tests call it from inside the origin, while the gateway waits for it).
pub async fn cancel_via(url: &str, token: Address, payer: &PrivateKeySigner, nonce: B256) {
    let provider = ProviderBuilder::new().connect_http(url.parse().unwrap());
    let from = provider.get_accounts().await.unwrap()[0];
    let tx = TransactionRequest::default()
        .from(from)
        .to(token)
        .input(Bytes::from(cancel_calldata(token, payer, nonce)).into());
    assert!(mined(&provider, tx).await.status());
}

/// Sends `tx` and waits for its receipt.
async fn mined(provider: &impl Provider, tx: TransactionRequest) -> TransactionReceipt {
    provider
        .send_transaction(tx)
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap()
}

async fn deploy(provider: &DynProvider, from: Address, code: Vec<u8>) -> Address {
    let tx = TransactionRequest::default()
        .from(from)
        .with_deploy_code(Bytes::from(code));
    let receipt = mined(provider, tx).await;
    assert!(receipt.status(), "deployment failed");
    receipt.contract_address.unwrap()
}

/// What a paying client signs; tests change fields to build invalid proofs.
#[derive(Debug, Clone)]
pub struct Authorization {
    pub from: Address,
    pub to: Address,
    pub value: U256,
    pub valid_after: u64,
    pub valid_before: u64,
    pub nonce: B256,
    pub chain_id: u64,
    pub asset: Address,
    pub name: String,
    pub version: String,
}

impl Authorization {
    /// The authorization an SDK client builds for an offered `accepts[]` entry.
    pub fn for_offer(offer: &Value, from: Address) -> Authorization {
        Authorization {
            from,
            to: offer["payTo"].as_str().unwrap().parse().unwrap(),
            value: U256::from_str_radix(offer["amount"].as_str().unwrap(), 10).unwrap(),
            valid_after: now() - 600,
            valid_before: now() + offer["maxTimeoutSeconds"].as_u64().unwrap(),
            nonce: unique_b256("nonce"),
            chain_id: offer["network"].as_str().unwrap()["eip155:".len()..]
                .parse()
                .unwrap(),
            asset: offer["asset"].as_str().unwrap().parse().unwrap(),
            name: offer["extra"]["name"].as_str().unwrap().to_string(),
            version: offer["extra"]["version"].as_str().unwrap().to_string(),
        }
    }

    pub fn sign(&self, signer: &PrivateKeySigner) -> Vec<u8> {
        let domain = token_domain(&self.name, &self.version, self.chain_id, self.asset);
        let msg = TransferWithAuthorization {
            from: self.from,
            to: self.to,
            value: self.value,
            validAfter: U256::from(self.valid_after),
            validBefore: U256::from(self.valid_before),
            nonce: self.nonce,
        };
        sign_authorization(signer, &domain, &msg)
            .as_bytes()
            .to_vec()
    }

    pub fn payload(&self, signature: &[u8]) -> Value {
        json!({
            "signature": format!("0x{}", alloy::hex::encode(signature)),
            "authorization": {
                "from": self.from.to_checksum(None),
                "to": self.to.to_checksum(None),
                "value": self.value.to_string(),
                "validAfter": self.valid_after.to_string(),
                "validBefore": self.valid_before.to_string(),
                "nonce": format!("{:#x}", self.nonce),
            }
        })
    }
}

/// A v2 `PAYMENT-SIGNATURE` header paying `offer` with `payload`.
pub fn v2_header(offer: &Value, payload: Value) -> String {
    let proof = json!({"x402Version": 2, "accepted": offer, "payload": payload});
    base64::engine::general_purpose::STANDARD.encode(proof.to_string())
}

/// A v1 `X-PAYMENT` header.
pub fn v1_header(network: &str, payload: Value) -> String {
    let proof =
        json!({"x402Version": 1, "scheme": "exact", "network": network, "payload": payload});
    base64::engine::general_purpose::STANDARD.encode(proof.to_string())
}

pub fn decode_b64_json(value: &str) -> Value {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// What anvil still holds unmined, by sender: nonces runnable (`pending`) and waiting
/// (`queued`), beside the sender's mined count. A settlement queued at exactly the mined count
/// is anvil's pool race (foundry #10122: it arrived while the transaction below it was being
/// mined, and nothing will run it), not a gap the gateway left.
pub async fn print_txpool(label: &str, provider: &impl Provider) {
    let Ok(pool) = provider
        .raw_request::<_, Value>("txpool_content".into(), ())
        .await
    else {
        eprintln!("  {label}: anvil's txpool_content unreadable");
        return;
    };
    let mut held = 0;
    for kind in ["pending", "queued"] {
        let Some(senders) = pool[kind].as_object() else {
            continue;
        };
        held += senders.len();
        for (from, txs) in senders {
            let nonces: Vec<&String> = txs
                .as_object()
                .map(|t| t.keys().collect())
                .unwrap_or_default();
            let mined = match from.parse::<Address>() {
                Ok(a) => provider.get_transaction_count(a).await.ok(),
                Err(_) => None,
            };
            eprintln!(
                "  {label}: anvil {kind} from {from}: nonces {nonces:?}, mined count {mined:?}"
            );
        }
    }
    if held == 0 {
        eprintln!("  {label}: anvil holds no unmined transaction");
    }
}
