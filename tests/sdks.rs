//! The client SDKs (`sdks/python`, `sdks/typescript`) against the real gateway on a real chain.
//!
//! Each test starts anvil with the test token, a real origin and the real gateway, pays one request
//! through it (a real EIP-3009 transfer, settled on chain), signs a second payment it does not
//! send, and then runs the SDK's own test suite as a child process (pytest; `npm test`: tsc, then
//! `node --test`) with the management API's address, the admin token, the paid transaction and
//! the signed payment in `X402_GATE_*` variables. The SDK suites create tenants and keys, read
//! usage after the payment, verify the payment and the transaction, rotate and revoke keys, write
//! routes in a namespace (to this test's origin, which `[routes_api] upstream_allow` opens), meet
//! each error kind, and fail when the served OpenAPI document and the SDK disagree. A suite that
//! fails prints its output here. `scripts/setup.sh` installs what they run (a Python venv in
//! `sdks/python/.venv`, `sdks/typescript/node_modules`).

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use common::chain::*;
use common::*;
use serde_json::{json, Value};

/// What `/paid/*` costs, in the token's atomic units ($0.01 at 6 decimals).
const PRICE: u64 = 10_000;
const MAINNET_USDC: &str = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48";

/// The gateway with one paid request already made through it.
struct Stack {
    _chain: Chain,
    up: Upstream,
    gw: Gateway,
    pay_to: Address,
    payer: PrivateKeySigner,
    /// The settlement of the paid request.
    tx_hash: String,
}

fn config(up: &str, chain: &Chain, pay_to: Address) -> String {
    let pay_to = pay_to.to_checksum(None);
    let token = chain.token.to_checksum(None);
    format!(
        r#"
[server]
listen = "{{listen}}"
admin_listen = "{{admin}}"
metrics_listen = "{{metrics}}"
threads = 2

[admin]
token = "{ADMIN_TOKEN}"

[networks."eip155:84532"]
rpc_url = "{rpc}"
settler_key = "{settler}"
assets = [{{ symbol = "USDC", address = "{token}", decimals = 6, eip712_name = "USD Coin", eip712_version = "2" }}]

# Listed in supported-chains; the free tier does not allow it (a 403 `network_not_allowed`).
[networks."eip155:1"]
rpc_url = "{rpc}"
settler_key = "{settler}"
assets = [{{ symbol = "USDC", address = "{MAINNET_USDC}", decimals = 6, eip712_name = "USD Coin", eip712_version = "2" }}]

# One verified payment a month: the SDK suites reach a 429 `tenant_quota_exceeded` cheaply.
[tiers.tiny]
monthly_verifications = 1
networks = ["eip155:84532"]

# The SDK suites write routes to the test's own origin on loopback.
[routes_api]
upstream_allow = ["127.0.0.1"]

[[tenants]]
id = "acme"
email = "ops@acme.test"
pay_to = {{ "eip155:84532" = "{pay_to}" }}

[[routes]]
tenant = "acme"
path = "/paid/*"
upstream = "{up}"
price = "$0.01"
"#,
        rpc = chain.rpc.url,
        settler = chain.settler_key,
    )
}

/// The first `accepts[]` entry of `path`'s challenge.
async fn offer(gw: &Gateway, path: &str) -> Value {
    let resp = client().get(gw.url(path)).send().await.unwrap();
    assert_eq!(resp.status(), 402);
    let header = resp.headers()["payment-required"].to_str().unwrap();
    decode_b64_json(header)["accepts"][0].clone()
}

impl Stack {
    async fn start() -> Stack {
        let chain = Chain::start().await;
        let up = Upstream::start();
        let pay_to = new_signer().address();
        let gw = Gateway::start(&config(&up.url(), &chain, pay_to));
        let payer = new_signer();
        chain.mint(payer.address(), 10_000_000).await;

        // A real paid request: verified, served, settled on chain.
        let offer = offer(&gw, "/paid/report").await;
        let auth = Authorization::for_offer(&offer, payer.address());
        let resp = client()
            .get(gw.url("/paid/report"))
            .header(
                "payment-signature",
                v2_header(&offer, auth.payload(&auth.sign(&payer))),
            )
            .send()
            .await
            .unwrap();
        // The origin answers 201: served, and so charged.
        assert_eq!(resp.status(), 201);
        let page: Value = client()
            .get(gw.admin_url("/api/v1/x402/admin/payments?tenant=acme"))
            .header("x-admin-key", ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let paid = &page["payments"][0];
        assert_eq!(paid["status"], "settled", "{page}");
        let tx_hash = paid["tx_hash"].as_str().unwrap().to_string();
        Stack {
            _chain: chain,
            up,
            gw,
            pay_to,
            payer,
            tx_hash,
        }
    }

    /// What an SDK suite is told, with a freshly signed payment of `/paid/*` that nobody has
    /// sent or verified yet (each suite verifies its own).
    async fn env(&self) -> Vec<(&'static str, String)> {
        let offer = offer(&self.gw, "/paid/report").await;
        let auth = Authorization::for_offer(&offer, self.payer.address());
        let payload = json!({
            "x402Version": 2,
            "accepted": offer,
            "payload": auth.payload(&auth.sign(&self.payer)),
        });
        let payment = json!({"paymentPayload": payload, "paymentRequirements": offer});
        vec![
            ("X402_GATE_URL", self.gw.admin_url("")),
            ("X402_GATE_ADMIN_TOKEN", ADMIN_TOKEN.to_string()),
            ("X402_GATE_PAID_TENANT", "acme".to_string()),
            ("X402_GATE_PAID_TX", self.tx_hash.clone()),
            ("X402_GATE_PAID_AMOUNT", PRICE.to_string()),
            ("X402_GATE_PAY_TO", self.pay_to.to_checksum(None)),
            ("X402_GATE_PAYER", self.payer.address().to_checksum(None)),
            ("X402_GATE_NETWORK", "eip155:84532".to_string()),
            ("X402_GATE_DENIED_NETWORK", "eip155:1".to_string()),
            ("X402_GATE_UPSTREAM", self.up.url()),
            ("X402_GATE_PAYMENT", payment.to_string()),
        ]
    }
}

/// Runs `program args` in `dir` with `env`, and fails the test with its output unless it
/// succeeds within five minutes and `ran_all` finds in its output that no test was skipped.
async fn run_suite(
    what: &str,
    dir: &Path,
    program: &Path,
    args: &[&str],
    env: &[(&str, String)],
    ran_all: fn(&str) -> bool,
) {
    assert!(
        program.exists(),
        "{what}: {} is missing: run scripts/setup.sh to install the SDKs' test tools",
        program.display()
    );
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what}: still running after 300 s"))
        .unwrap_or_else(|e| panic!("{what}: cannot run {}: {e}", program.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    assert!(
        ran_all(&stdout),
        "{what} skipped tests:\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    // Shown with --nocapture: the suite's own count of passed tests.
    let summary = stdout.lines().rev().find(|l| l.contains("pass"));
    println!(
        "{what}: passed in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        summary.unwrap_or("").trim()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_sdk_passes_its_suite_against_the_real_gateway() {
    let s = Stack::start().await;
    let dir = repo_path("sdks/python");
    let python = dir.join(".venv/bin/python");
    let env = s.env().await;
    run_suite(
        "the Python SDK's tests (pytest)",
        &dir,
        &python,
        &["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        &env,
        |out| out.contains(" passed") && !out.contains("skipped"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_typescript_sdk_passes_its_suite_against_the_real_gateway() {
    let s = Stack::start().await;
    let dir = repo_path("sdks/typescript");
    assert!(
        dir.join("node_modules/.bin/tsc").exists(),
        "sdks/typescript/node_modules is missing: run scripts/setup.sh"
    );
    let env = s.env().await;
    // `npm test`: tsc builds dist/, then `node --test`.
    run_suite(
        "the TypeScript SDK's tests (tsc, node --test)",
        &dir,
        Path::new("/usr/bin/env"),
        &["npm", "test", "--silent"],
        &env,
        |out| !out.contains("# SKIP") && out.contains("# fail 0") && out.contains("# cancelled 0"),
    )
    .await;
}
