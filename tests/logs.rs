//! Logs of the real gateway, captured at TRACE for `x402_gate` in the JSON format operators ship:
//! every line of a request carries its request id (the client's when sane, a generated one
//! otherwise, returned on every answer and sent upstream), each request has exactly one access
//! line, and no secret the test knows (admin token, API key, settler key, payment headers, a
//! query-string token) appears in any line.
//!
//! This binary installs its own global subscriber before the gateway starts, so it holds one
//! test only (a second would share the capture).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::chain::*;
use common::*;
use serde_json::Value;
use tracing_subscriber::EnvFilter;
use x402_gate::config::LogFormat;
use x402_gate::logging;

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn install() -> Capture {
        let capture = Capture(Arc::new(Mutex::new(Vec::new())));
        let writer = capture.clone();
        let subscriber = logging::subscriber(
            LogFormat::Json,
            EnvFilter::new("warn,x402_gate=trace"),
            move || writer.clone(),
        );
        // Also routes the `log` records pingora writes (its error lines) into the capture.
        tracing_subscriber::util::SubscriberInitExt::try_init(subscriber)
            .expect("the first subscriber");
        capture
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).expect("log lines are UTF-8")
    }

    /// Parsed lines from byte offset `from`.
    fn lines_from(&self, from: usize) -> Vec<Line> {
        let text = self.text();
        text[from..]
            .lines()
            .map(|l| Line {
                json: serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")),
                raw: l.to_string(),
            })
            .collect()
    }

    /// Waits until the access line of `id` is written (`logging` runs after the answer left).
    async fn access_line(&self, id: &str) -> Line {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(l) = self
                .lines_from(0)
                .into_iter()
                .find(|l| l.is_access() && l.request_id().as_deref() == Some(id))
            {
                return l;
            }
            assert!(Instant::now() < deadline, "no access line for {id}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

struct Line {
    json: Value,
    raw: String,
}

impl Line {
    fn target(&self) -> &str {
        self.json["target"].as_str().unwrap_or_default()
    }

    fn is_access(&self) -> bool {
        self.target() == logging::ACCESS
    }

    /// The request id of the `request` span this line was written in.
    fn request_id(&self) -> Option<String> {
        self.json["spans"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == "request")
            .and_then(|s| s["request_id"].as_str())
            .map(str::to_string)
    }

    /// Lines from these targets are only ever written while serving a request.
    fn is_request_work(&self) -> bool {
        [
            "x402_gate::proxy",
            "x402_gate::payments",
            "x402_gate::access",
            "x402_gate::admin",
            "x402_gate::tenants",
            "x402_gate::cache",
        ]
        .iter()
        .any(|t| self.target().starts_with(t))
    }
}

/// One request made by the test: its id and where its lines start in the capture.
struct Sent {
    name: &'static str,
    id: String,
    from: usize,
    to: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_on_every_line_one_access_line_and_no_secrets() {
    let logs = Capture::install();
    let chain = Chain::start().await;
    let up = Upstream::start();
    let pay_to = new_signer().address();
    let mut cfg = evm_config(
        &up.url(),
        &chain.rpc.url,
        &chain.settler_key,
        &chain.token.to_checksum(None),
        &pay_to.to_checksum(None),
    );
    // An upstream that refuses connections: pingora writes an error line of its own.
    cfg.push_str(&format!(
        "\n[[routes]]\ntenant = \"acme\"\npath = \"/down/*\"\nupstream = \"http://127.0.0.1:{}\"\nprice = \"free\"\n",
        free_port()
    ));
    let gw = Gateway::start(&cfg);
    let payer = new_signer();
    chain.mint(payer.address(), 1_000_000).await;
    let http = client();
    let mut sent: Vec<Sent> = Vec::new();
    let mut secrets: Vec<(&str, String)> = vec![
        ("admin token", ADMIN_TOKEN.to_string()),
        ("settler key", chain.settler_key.clone()),
        (
            "settler key without 0x",
            chain.settler_key.trim_start_matches("0x").to_string(),
        ),
    ];

    // Runs one request, checks the id it answers with, and waits for its access line so that
    // each request's lines sit in a window of their own.
    macro_rules! request {
        ($name:expr, $builder:expr, $sent_id:expr) => {{
            let from = logs.len();
            let mut b = $builder;
            let sent_id: Option<&str> = $sent_id;
            if let Some(id) = sent_id {
                b = b.header("x-request-id", id);
            }
            let resp = b.send().await.unwrap();
            let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
            match sent_id {
                Some(s) if logging::is_sane_request_id(s) => assert_eq!(id, s, "{}", $name),
                _ => {
                    assert_eq!(id.len(), 32, "{}: a generated id, not {id}", $name);
                    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{}", $name);
                }
            }
            let access = logs.access_line(&id).await;
            sent.push(Sent {
                name: $name,
                id: id.clone(),
                from,
                to: logs.len(),
            });
            (resp, access)
        }};
    }

    // An operator call with the admin token: mints an API key.
    let (resp, access) = request!(
        "admin: mint key",
        http.post(gw.admin_url("/api/v1/x402/admin/tenants/acme/keys"))
            .header("x-admin-key", ADMIN_TOKEN)
            .json(&serde_json::json!({})),
        Some("admin-mint-1")
    );
    assert_eq!(resp.status(), 201);
    assert_eq!(access.json["listener"], "admin");
    assert_eq!(access.json["status"], 201);
    assert_eq!(access.json["route"], "/api/v1/x402/admin/tenants/{id}/keys");
    let key = resp.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    secrets.push(("API key", key.clone()));

    // A tenant call with the API key, without an id of its own.
    let (resp, _) = request!(
        "api key: usage",
        http.get(gw.admin_url("/api/v1/x402/usage"))
            .bearer_auth(&key),
        None
    );
    assert_eq!(resp.status(), 200);

    // An operator call with a wrong token.
    let wrong = "wrong-admin-token-0123456789-secret";
    secrets.push(("wrong admin token", wrong.to_string()));
    let (resp, _) = request!(
        "admin: wrong token",
        http.get(gw.admin_url("/api/v1/x402/admin/tenants"))
            .header("x-admin-key", wrong),
        None
    );
    assert_eq!(resp.status(), 401);

    // Unpaid: a 402, with a token in the query string that must not be logged.
    let query_secret = "qs-token-5f1e0c9a";
    secrets.push(("query-string token", query_secret.to_string()));
    let (resp, access) = request!(
        "unpaid",
        http.get(gw.url(&format!("/paid/doc?api_key={query_secret}"))),
        Some("unpaid-1")
    );
    assert_eq!(resp.status(), 402);
    assert_eq!(access.json["status"], 402);
    assert_eq!(access.json["payment"], "challenged");
    assert_eq!(access.json["path"], "/paid/doc");
    assert_eq!(access.json["route"], "/paid/*");
    assert_eq!(access.json["tenant"], "acme");
    let challenge = decode_b64_json(resp.headers()["payment-required"].to_str().unwrap());
    let offer = challenge["accepts"][0].clone();

    // A bad payment: well formed, signed by someone other than the payer it names.
    let auth = Authorization::for_offer(&offer, payer.address());
    let forged_sig = auth.sign(&new_signer());
    let forged = v2_header(&offer, auth.payload(&forged_sig));
    secrets.push(("forged payment header", forged.clone()));
    let (resp, access) = request!(
        "bad payment",
        http.get(gw.url("/paid/doc"))
            .header("payment-signature", &forged),
        Some("not a sane id!")
    );
    assert_eq!(resp.status(), 402);
    let outcome = access.json["payment"].as_str().unwrap_or_default();
    assert!(
        !outcome.is_empty() && outcome != "admitted",
        "{}",
        access.raw
    );

    // Paid, settled after the origin answers; the origin sees the id, never the proof.
    let auth = Authorization::for_offer(&offer, payer.address());
    let sig = auth.sign(&payer);
    let header = v2_header(&offer, auth.payload(&sig));
    secrets.push(("payment header", header.clone()));
    secrets.push(("payment signature", alloy::hex::encode(&sig)));
    let (resp, access) = request!(
        "paid after",
        http.get(gw.url("/paid/doc?sig=also-not-logged"))
            .header("payment-signature", &header),
        Some("paid-after-1")
    );
    assert_eq!(resp.status(), 201);
    assert!(resp.headers().contains_key("payment-response"));
    let echoed: Value = resp.json().await.unwrap();
    assert_eq!(echoed["headers"]["x-request-id"], "paid-after-1");
    assert!(echoed["headers"].get("payment-signature").is_none());
    for (k, v) in [
        ("status", Value::from(201)),
        ("payment", "admitted".into()),
        ("settlement", "settled".into()),
        ("network", "eip155:84532".into()),
        ("route", "/paid/*".into()),
        ("tenant", "acme".into()),
        ("path", "/paid/doc".into()),
        ("method", "GET".into()),
    ] {
        assert_eq!(access.json[k], v, "{k} in {}", access.raw);
    }
    for k in ["total_ms", "verify_ms", "settle_ms"] {
        assert!(access.json[k].is_number(), "{k} in {}", access.raw);
    }

    // Paid, settled before the request is forwarded; the id is generated and still reaches the
    // origin.
    let resp = http.get(gw.url("/before/x")).send().await.unwrap();
    let offer =
        decode_b64_json(resp.headers()["payment-required"].to_str().unwrap())["accepts"][0].clone();
    logs.access_line(resp.headers()["x-request-id"].to_str().unwrap())
        .await;
    let auth = Authorization::for_offer(&offer, payer.address());
    let sig = auth.sign(&payer);
    let header = v2_header(&offer, auth.payload(&sig));
    secrets.push(("payment header (before)", header.clone()));
    let (resp, access) = request!(
        "paid before",
        http.get(gw.url("/before/x"))
            .header("payment-signature", &header),
        None
    );
    assert_eq!(resp.status(), 201);
    let returned = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let echoed: Value = resp.json().await.unwrap();
    assert_eq!(echoed["headers"]["x-request-id"], returned.as_str());
    assert_eq!(access.json["settlement"], "settled", "{}", access.raw);

    // A free route with an id that is too long: replaced.
    let (resp, _) = request!(
        "free, long id",
        http.get(gw.url("/free/a")),
        Some(&"x".repeat(129))
    );
    assert_eq!(resp.status(), 201);

    // The upstream is down: a 502 of ours, and pingora's error line names the request by our
    // summary (no query string), with its id.
    let (resp, access) = request!(
        "upstream down",
        http.get(gw.url("/down/x?token=down-secret-77")),
        Some("down-1")
    );
    assert_eq!(resp.status(), 502);
    assert_eq!(access.json["status"], 502);
    secrets.push(("query-string token (502)", "down-secret-77".to_string()));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !logs.text().contains("GET /down/x, request_id: down-1") {
        assert!(
            Instant::now() < deadline,
            "pingora's error line names the request id"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Every line of request work in a request's window carries that request's id, and each
    // request has exactly one access line.
    let all = logs.lines_from(0);
    let mut by_id: HashMap<String, usize> = HashMap::new();
    for s in &sent {
        let window = logs.lines_from(s.from);
        let window = &window[..window
            .iter()
            .scan(s.from, |at, l| {
                *at += l.raw.len() + 1;
                Some(*at)
            })
            .take_while(|at| *at <= s.to)
            .count()];
        assert!(!window.is_empty(), "{}: no lines", s.name);
        for l in window {
            if l.is_request_work() || l.request_id().is_some() {
                assert_eq!(
                    l.request_id().as_deref(),
                    Some(s.id.as_str()),
                    "{}: a line without its id: {}",
                    s.name,
                    l.raw
                );
            }
        }
        let access = all
            .iter()
            .filter(|l| l.is_access() && l.request_id().as_deref() == Some(s.id.as_str()))
            .count();
        assert_eq!(access, 1, "{}: access lines", s.name);
        *by_id.entry(s.id.clone()).or_default() += 1;
    }
    assert!(by_id.values().all(|n| *n == 1), "ids are unique: {by_id:?}");
    // The payment core, settling in a task of its own, wrote in the request's span.
    assert!(
        all.iter()
            .any(|l| l.target().starts_with("x402_gate::payments")
                && l.request_id().as_deref() == Some("paid-after-1")),
        "no payment-core line carries the paid request's id"
    );

    // No secret anywhere, whatever the level.
    let text = logs.text();
    // X402_LOGS_DUMP=FILE keeps the captured lines for a look.
    if let Ok(path) = std::env::var("X402_LOGS_DUMP") {
        std::fs::write(path, &text).unwrap();
    }
    let lower = text.to_ascii_lowercase();
    for (what, secret) in &secrets {
        assert!(
            !lower.contains(&secret.to_ascii_lowercase()),
            "the {what} is in the logs"
        );
    }
    assert!(
        !text.contains("also-not-logged"),
        "a query string is logged"
    );
    drop(gw);
}
