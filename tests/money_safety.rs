//! Money safety through the real gateway, as an attacker and as an unlucky operator would try it:
//! raw request lines an HTTP library never sends, interim (1xx) answers, upgrades, clients that
//! hang up, redirects, requests that gateway and origin could read differently, and a v1-only
//! client from the npm registry. The origin here is a raw TCP server, so it can send what axum
//! would not (103 Early Hints, 100 Continue, 101 tunnels).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::signers::local::PrivateKeySigner;
use common::chain::*;
use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use x402_gate::store::Store;

const PRICE: u64 = 10_000;

/// A raw HTTP/1.1 origin that records every request line it reads. What it answers depends on the
/// last path segment:
/// - `early-hints`: `103 Early Hints`, then `200`;
/// - `redirect`: `302` to `/elsewhere`;
/// - `slow`: `200` after 1.5 s;
/// - `upgrade`: `101 Switching Protocols`, then echoes bytes back;
/// - `fail`: `500`;
/// - anything else: `200` with `served METHOD TARGET`.
///
/// A request with `Expect: 100-continue` gets `100 Continue` before its body is read.
struct RawOrigin {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawOrigin {
    async fn start() -> RawOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve_raw(conn, log.clone()));
            }
        });
        RawOrigin { addr, seen, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests reached the origin whose target contains `needle`.
    fn hits(&self, needle: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }
}

async fn serve_raw(mut conn: TcpStream, seen: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let line = head.lines().next().unwrap_or_default().to_string();
    seen.lock().unwrap().push(line.clone());
    let lower = head.to_ascii_lowercase();
    let length: usize = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    if lower.contains("expect: 100-continue") {
        let _ = conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
    }
    while buf.len() < head_end + length {
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let target = line.split(' ').nth(1).unwrap_or("/").to_string();
    let last = target
        .split('?')
        .next()
        .unwrap_or_default()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let ok = |body: String| {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let served = format!("served {}", line.rsplit_once(' ').map_or("", |(a, _)| a));
    let answer = match last.as_str() {
        "early-hints" => format!(
            "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n{}",
            ok(served)
        ),
        "redirect" => "HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
        "fail" => "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\nConnection: close\r\n\r\nfail".to_string(),
        "slow" => {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            ok(served)
        }
        "upgrade" => {
            // pingora 0.9.1 tears an upgrade down when the 101 is read before the request's own
            // (empty) body end is handled (cloudflare/pingora#946, fix not released): answer the
            // way a real WebSocket server usually does, a moment after the request.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = conn
                .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                .await;
            // The tunnel: echo whatever comes until the client closes.
            loop {
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if conn.write_all(&chunk[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
        _ => ok(served),
    };
    let _ = conn.write_all(answer.as_bytes()).await;
    let _ = conn.shutdown().await;
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn config(origin: &str, rpc_url: &str, settler_key: &str, token: &str, pay_to: &str) -> String {
    let route = |path: &str, extra: &str| {
        format!(
            "\n[[routes]]\ntenant = \"acme\"\npath = \"{path}\"\nupstream = \"{origin}\"\nprice = \"$0.01\"\n{extra}\n"
        )
    };
    let mut text = format!(
        r#"
[server]
listen = "{{listen}}"
admin_listen = "{{admin}}"
metrics_listen = "{{metrics}}"
threads = 2

[admin]
token = "{ADMIN_TOKEN}"

[networks."eip155:84532"]
rpc_url = "{rpc_url}"
settler_key = "{settler_key}"
assets = [{{ symbol = "USDC", address = "{token}", decimals = 6, eip712_name = "USD Coin", eip712_version = "2" }}]

[[tenants]]
id = "acme"
pay_to = {{ "eip155:84532" = "{pay_to}" }}
"#
    );
    text += &route("/paid/*", "");
    text += &route("/g/*", "methods = [\"GET\"]");
    text += &route("/ci/*", "case_insensitive = true");
    text += &route("/ws/*", "allow_upgrade = true");
    text += &route("/deferred/*", "settle = \"deferred\"");
    text += &route("/strict/*", "charge_statuses = [\"2xx\"]");
    text += &format!(
        "\n[[routes]]\ntenant = \"acme\"\npath = \"/before-down/*\"\nupstream = \"http://127.0.0.1:{}\"\nprice = \"$0.01\"\nsettle = \"before\"\n",
        closed_port()
    );
    text += &format!(
        "\n[[routes]]\ntenant = \"acme\"\npath = \"/*\"\nupstream = \"{origin}\"\nprice = \"free\"\n"
    );
    text
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    free_port()
}

struct Setup {
    chain: Chain,
    origin: RawOrigin,
    gw: Gateway,
    pay_to: Address,
    payer: PrivateKeySigner,
}

async fn setup() -> Setup {
    let chain = Chain::start().await;
    let origin = RawOrigin::start().await;
    let pay_to = new_signer().address();
    let cfg = config(
        &origin.url(),
        &chain.rpc.url,
        &chain.settler_key,
        &chain.token.to_checksum(None),
        &pay_to.to_checksum(None),
    );
    let gw = Gateway::start(&cfg);
    let payer = new_signer();
    chain.mint(payer.address(), 1_000_000).await;
    Setup {
        chain,
        origin,
        gw,
        pay_to,
        payer,
    }
}

impl Setup {
    /// A fresh, valid v2 payment header for `path`.
    async fn pay(&self, path: &str) -> String {
        let resp = client().get(self.gw.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 402, "{path} is priced");
        let v2 = decode_b64_json(resp.headers()["payment-required"].to_str().unwrap());
        let offer = v2["accepts"][0].clone();
        let auth = Authorization::for_offer(&offer, self.payer.address());
        let sig = auth.sign(&self.payer);
        v2_header(&offer, auth.payload(&sig))
    }

    async fn earned(&self) -> U256 {
        self.chain.balance(self.pay_to).await
    }

    async fn ledger_len(&self) -> usize {
        Store::connect(&self.gw.database_url)
            .await
            .unwrap()
            .ledger(100)
            .await
            .unwrap()
            .len()
    }

    /// Sends raw bytes and reads until the gateway closes (every request here says
    /// `Connection: close`) or 10 s pass.
    async fn raw(&self, request: &str) -> Raw {
        let mut conn = TcpStream::connect(self.gw.addr).await.unwrap();
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut out)).await;
        Raw(String::from_utf8_lossy(&out).to_string())
    }
}

/// A raw response stream: zero or more interim (1xx) heads, then the final one.
struct Raw(String);

impl Raw {
    /// Every status line's code, in order.
    fn statuses(&self) -> Vec<u16> {
        self.0
            .split("\r\n")
            .filter_map(|l| l.strip_prefix("HTTP/1.1 "))
            .filter_map(|l| l.get(..3)?.parse().ok())
            .collect()
    }

    /// The final status: the last one that is not informational (101 is final).
    fn status(&self) -> u16 {
        *self
            .statuses()
            .iter()
            .rev()
            .find(|s| **s >= 200 || **s == 101)
            .unwrap_or_else(|| panic!("no final status in {:?}", self.0))
    }

    /// A header of the final answer, case-insensitively.
    fn header(&self, name: &str) -> Option<String> {
        let start = self
            .0
            .rfind(&format!("HTTP/1.1 {}", self.status()))
            .unwrap_or(0);
        let head = &self.0[start..];
        let head = &head[..head.find("\r\n\r\n").unwrap_or(head.len())];
        head.split("\r\n").find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    fn receipt(&self) -> Option<Value> {
        self.header("payment-response")
            .or_else(|| self.header("x-payment-response"))
            .map(|v| decode_b64_json(&v))
    }

    /// The `error` code of a JSON error body.
    fn error_code(&self) -> String {
        let body = &self.0[self.0.rfind("\r\n\r\n").map_or(0, |i| i + 4)..];
        serde_json::from_str::<Value>(body)
            .map(|v| v["error"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    }

    /// The reason code of a 402's `PAYMENT-REQUIRED` error.
    fn challenge_error(&self) -> String {
        let v2 = decode_b64_json(&self.header("payment-required").expect("a 402 challenge"));
        v2["error"].as_str().unwrap_or_default().to_string()
    }
}

fn get(target: &str, payment: Option<&str>, extra: &str) -> String {
    let pay = payment.map_or(String::new(), |p| format!("PAYMENT-SIGNATURE: {p}\r\n"));
    format!("GET {target} HTTP/1.1\r\nHost: gw.test\r\n{pay}{extra}Connection: close\r\n\r\n")
}

/// Waits up to 10 s for `cond`.
async fn eventually<F, Fut>(mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Finding 1: pingora routes `GET paid/report` as `/` but forwards the original bytes, so a free
/// `/*` served the priced path. Only origin-form and absolute-form targets are accepted, and what
/// is forwarded is what was routed on.
#[tokio::test(flavor = "multi_thread")]
async fn request_targets_that_are_not_paths_are_refused() {
    let s = setup().await;
    for target in ["paid/report", "*", "gw.test:80", "paid"] {
        let r = s.raw(&get(target, None, "")).await;
        assert_eq!(r.status(), 400, "{target}: {}", r.0);
        assert_eq!(r.error_code(), "bad_request_target", "{target}");
    }
    assert_eq!(s.origin.hits("paid"), 0, "nothing reached the origin");
    // Absolute-form is routed on its path, so the priced route asks for payment...
    let r = s.raw(&get("http://gw.test/paid/report", None, "")).await;
    assert_eq!(r.status(), 402, "{}", r.0);
    // ...and a free one is forwarded as origin-form, exactly the path that was matched.
    let r = s.raw(&get("http://gw.test/free/x?q=1", None, "")).await;
    assert_eq!(r.status(), 200, "{}", r.0);
    assert_eq!(s.origin.hits("GET /free/x?q=1 HTTP/1.1"), 1);
    assert_eq!(s.origin.hits("http://"), 0);
}

/// Finding 2: a 1xx answer released the claim and the final 200 went out free, the proof still
/// reusable. Only the final status decides, under `after` and `deferred`.
#[tokio::test(flavor = "multi_thread")]
async fn interim_answers_never_decide_a_payment() {
    let s = setup().await;
    let mut paid = 0u64;
    for path in ["/paid/early-hints", "/deferred/early-hints"] {
        let proof = s.pay(path).await;
        let r = s.raw(&get(path, Some(&proof), "")).await;
        assert_eq!(r.statuses().first(), Some(&103), "{path}: {}", r.0);
        assert_eq!(r.status(), 200, "{path}: {}", r.0);
        let receipt = r
            .receipt()
            .unwrap_or_else(|| panic!("{path}: no receipt: {}", r.0));
        assert_eq!(receipt["success"], true, "{path}");
        paid += PRICE;
        // The same proof again: used, never served twice.
        let again = s.raw(&get(path, Some(&proof), "")).await;
        assert_eq!(again.status(), 402, "{path}");
        assert!(
            again.challenge_error().starts_with("duplicate_settlement"),
            "{path}"
        );
        assert_eq!(s.origin.hits(path), 1, "{path}");
    }
    // A client asking for 100 Continue.
    let proof = s.pay("/paid/upload").await;
    let body = "x".repeat(64);
    let req = format!(
        "POST /paid/upload HTTP/1.1\r\nHost: gw.test\r\nPAYMENT-SIGNATURE: {proof}\r\nExpect: 100-continue\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let r = s.raw(&req).await;
    assert_eq!(r.status(), 200, "{}", r.0);
    assert_eq!(r.receipt().expect("a receipt")["success"], true);
    paid += PRICE;
    let again = s.raw(&req).await;
    assert_eq!(again.status(), 402);
    assert!(s.origin.hits("/paid/upload") <= 1);
    assert!(
        eventually(|| async { s.earned().await == U256::from(paid) }).await,
        "every final 200 was paid for"
    );
}

/// Finding 3: a 101 on a priced route was a free, reusable tunnel. Upgrades on priced routes are
/// refused unless the route allows them, and then the 101 is charged; h2c is refused everywhere.
#[tokio::test(flavor = "multi_thread")]
async fn upgrades_are_refused_or_charged() {
    let s = setup().await;
    let ws = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    let proof = s.pay("/paid/upgrade").await;
    let r = s.raw(&get("/paid/upgrade", Some(&proof), ws)).await;
    assert_eq!(r.status(), 400, "{}", r.0);
    assert_eq!(r.error_code(), "upgrade_refused");
    // h2c on a free route would carry requests for any path past the gateway.
    let h2c = "Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n";
    let r = s.raw(&get("/free/upgrade", None, h2c)).await;
    assert_eq!(r.status(), 400, "{}", r.0);
    assert_eq!(s.origin.hits("upgrade"), 0);

    // A route that allows upgrades charges the 101 before it goes out.
    let proof = s.pay("/ws/upgrade").await;
    let mut conn = TcpStream::connect(s.gw.addr).await.unwrap();
    let req = format!(
        "GET /ws/upgrade HTTP/1.1\r\nHost: gw.test\r\nPAYMENT-SIGNATURE: {proof}\r\n{ws}\r\n"
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while find(&head, b"\r\n\r\n").is_none() {
        conn.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = Raw(String::from_utf8_lossy(&head).to_string());
    assert_eq!(head.status(), 101, "{}", head.0);
    assert_eq!(
        head.receipt().expect("the 101 carries a receipt")["success"],
        true
    );
    conn.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    conn.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping", "the tunnel works");
    drop(conn);
    assert_eq!(s.earned().await, U256::from(PRICE));
    // The proof is spent.
    let r = s.raw(&get("/ws/upgrade", Some(&proof), ws)).await;
    assert_eq!(r.status(), 402, "{}", r.0);
    assert_eq!(s.origin.hits("/ws/upgrade"), 1);
}

/// Finding 4: the claim was released when the client hung up, so one proof ran the origin again
/// and again. Once the origin has the request, the payment is charged.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_hangs_up_after_forwarding_is_charged_once() {
    let s = setup().await;
    let proof = s.pay("/paid/slow").await;
    for _ in 0..3 {
        let mut conn = TcpStream::connect(s.gw.addr).await.unwrap();
        conn.write_all(get("/paid/slow", Some(&proof), "").as_bytes())
            .await
            .unwrap();
        // Long enough for the request to reach the origin, which answers after 1.5 s.
        assert!(eventually(|| async { s.origin.hits("/paid/slow") > 0 }).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(conn);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        s.origin.hits("/paid/slow"),
        1,
        "one proof reaches the origin once"
    );
    assert!(
        eventually(|| async { s.earned().await == U256::from(PRICE) }).await,
        "the payer who left was charged"
    );
    assert!(eventually(|| async { s.ledger_len().await == 1 }).await);
    // A client that leaves before its request is forwarded is not charged: unpaid paths stay so.
    let r = s.raw(&get("/paid/slow", Some(&proof), "")).await;
    assert_eq!(r.status(), 402);
    assert!(r.challenge_error().starts_with("duplicate_settlement"));
}

/// Finding 5: 3xx answers were free and the proof reusable. By default 2xx and 3xx are charged;
/// a route can narrow that, and then the uncharged proof is given back for a retry (documented).
#[tokio::test(flavor = "multi_thread")]
async fn redirects_are_charged_unless_the_route_says_otherwise() {
    let s = setup().await;
    let proof = s.pay("/paid/redirect").await;
    let r = s.raw(&get("/paid/redirect", Some(&proof), "")).await;
    assert_eq!(r.status(), 302, "{}", r.0);
    assert_eq!(r.receipt().expect("a receipt")["success"], true);
    let r = s.raw(&get("/paid/redirect", Some(&proof), "")).await;
    assert_eq!(r.status(), 402, "spent");
    assert_eq!(s.earned().await, U256::from(PRICE));

    // charge_statuses = ["2xx"]: the 302 passes through uncharged, and the proof pays later.
    let proof = s.pay("/strict/redirect").await;
    let r = s.raw(&get("/strict/redirect", Some(&proof), "")).await;
    assert_eq!(r.status(), 302);
    assert!(r.receipt().is_none());
    assert_eq!(s.earned().await, U256::from(PRICE));
    let r = s.raw(&get("/strict/content", Some(&proof), "")).await;
    assert_eq!(r.status(), 200, "{}", r.0);
    assert_eq!(s.earned().await, U256::from(2 * PRICE));
    // A failing origin is never charged.
    let proof = s.pay("/paid/fail").await;
    let r = s.raw(&get("/paid/fail", Some(&proof), "")).await;
    assert_eq!(r.status(), 500);
    assert!(r.receipt().is_none());
    assert_eq!(s.earned().await, U256::from(2 * PRICE));
}

/// Finding 6: requests the gateway and common origins read differently.
#[tokio::test(flavor = "multi_thread")]
async fn requests_an_origin_could_read_differently_do_not_pass_free() {
    let s = setup().await;
    // HEAD on a GET-only priced route is priced, not free.
    let r = s
        .raw("HEAD /g/data HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(r.status(), 402, "{}", r.0);
    // A method in the wrong case, path parameters in any spelling.
    let r = s
        .raw("get /paid/data HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(r.status(), 400, "{}", r.0);
    assert_eq!(r.error_code(), "bad_method");
    for target in [
        "/paid;x/data",
        "/paid%3b/data",
        "/paid%3B/data",
        "/x/..;/paid/data",
    ] {
        let r = s.raw(&get(target, None, "")).await;
        assert_eq!(r.status(), 400, "{target}: {}", r.0);
        assert_eq!(r.error_code(), "bad_path", "{target}");
    }
    // A case-insensitive route matches any case...
    let r = s.raw(&get("/CI/Data", None, "")).await;
    assert_eq!(r.status(), 402, "{}", r.0);
    // ...and the default stays case-sensitive (documented: set case_insensitive for such origins).
    let r = s.raw(&get("/PAID/data", None, "")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(s.origin.hits("/paid"), 0);
    assert_eq!(s.origin.hits("/g/"), 0);
    assert_eq!(s.origin.hits("/CI/"), 0);
}

/// Finding 16: under `before`, a settled payer whose origin is unreachable got a 502 without its
/// receipt.
#[tokio::test(flavor = "multi_thread")]
async fn a_settled_payer_gets_its_receipt_on_a_gateway_error() {
    let s = setup().await;
    let proof = s.pay("/before-down/x").await;
    let r = s.raw(&get("/before-down/x", Some(&proof), "")).await;
    assert_eq!(r.status(), 502, "{}", r.0);
    let receipt = r.receipt().expect("the receipt of the money that moved");
    assert_eq!(receipt["success"], true);
    assert!(receipt["transaction"].as_str().unwrap().starts_with("0x"));
    assert_eq!(s.earned().await, U256::from(PRICE));
}

/// Finding 17: the v1 reference client (npm `x402-fetch` 1.x) refused our 402 (`outputSchema:
/// null`) and v1 receipts named the network in CAIP-2. It pays end to end now.
#[tokio::test(flavor = "multi_thread")]
async fn a_v1_only_client_from_npm_pays() {
    let s = setup().await;
    let resp = client().get(s.gw.url("/paid/v1")).send().await.unwrap();
    let body: Value = resp.json().await.unwrap();
    assert!(body["accepts"][0].get("outputSchema").is_none(), "{body}");
    let key = format!("0x{}", alloy::hex::encode(s.payer.to_bytes()));
    let out = tokio::process::Command::new("node")
        .arg(repo_path("tools/x402-v1-pay.mjs"))
        .arg(s.gw.url("/paid/v1?from=npm"))
        .arg(&key)
        .output()
        .await
        .expect("node runs (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "the v1 client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["status"], 200, "{result}");
    assert_eq!(result["receipt"]["success"], true, "{result}");
    assert_eq!(result["receipt"]["network"], "base-sepolia", "{result}");
    assert_eq!(s.earned().await, U256::from(PRICE));
    assert_eq!(s.origin.hits("GET /paid/v1?from=npm"), 1);
}

/// Finding 10: ten authorizations against a balance that covers one were all admitted (under
/// `deferred`: ten served, one paid; under `after`: nine settlements reverted at our gas). A
/// payer's unsettled payments are held against its balance.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_authorizations_never_overdraw_a_payer() {
    let s = setup().await;
    for path in ["/deferred/overdraw", "/paid/overdraw"] {
        let payer = new_signer();
        s.chain.mint(payer.address(), PRICE).await;
        let resp = client().get(s.gw.url(path)).send().await.unwrap();
        let v2 = decode_b64_json(resp.headers()["payment-required"].to_str().unwrap());
        let offer = v2["accepts"][0].clone();
        let before = s.earned().await;
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let auth = Authorization::for_offer(&offer, payer.address());
            let header = v2_header(&offer, auth.payload(&auth.sign(&payer)));
            let url = s.gw.url(path);
            tasks.push(tokio::spawn(async move {
                client()
                    .get(url)
                    .header("payment-signature", header)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }));
        }
        let mut served = 0;
        for t in tasks {
            let status = t.await.unwrap();
            assert!(status == 200 || status == 402, "{path}: {status}");
            served += (status == 200) as u64;
        }
        assert!(
            served <= 1,
            "{path}: {served} served against one payment's balance"
        );
        assert_eq!(s.origin.hits(path), served as usize, "{path}");
        // Whatever was served is paid for, and nothing failed on-chain.
        assert!(
            eventually(|| async { s.earned().await == before + U256::from(served * PRICE) }).await,
            "{path}"
        );
        let store = Store::connect(&s.gw.database_url).await.unwrap();
        assert_eq!(store.count_claims("failed").await.unwrap(), 0, "{path}");
    }
}
