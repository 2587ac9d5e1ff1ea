//! Error reporting to Sentry, against a local receiver standing in for Sentry (a tiny HTTP server
//! that keeps every envelope posted to it): an internal error and a panic arrive, and none of the
//! secrets the test put in the config, the error text and the panic message is in what arrived.
//! The real binary reports too, with the DSN from `SENTRY_DSN`.

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::post;
use common::*;
use x402_gate::config::{Config, LogFormat};
use x402_gate::{logging, reporting};

/// Stands in for Sentry: keeps the body of every envelope posted to `/api/<project>/envelope/`.
struct Receiver {
    port: u16,
    envelopes: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let envelopes = Arc::new(Mutex::new(Vec::new()));
        let kept = envelopes.clone();
        let app = axum::Router::new().route(
            "/api/{project}/envelope/",
            post(move |body: Bytes| {
                let kept = kept.clone();
                async move {
                    kept.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&body).into_owned());
                    "{}"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { port, envelopes }
    }

    /// A DSN pointing here; its public key is a secret like any other.
    fn dsn(&self) -> String {
        format!("http://{DSN_KEY}@127.0.0.1:{}/42", self.port)
    }

    /// Waits until an envelope holding `needle` arrived, and returns every envelope so far.
    async fn wait_for(&self, needle: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let all = self.envelopes.lock().unwrap().clone();
            if all.iter().any(|e| e.contains(needle)) {
                return all;
            }
            assert!(
                Instant::now() < deadline,
                "no event with `{needle}` arrived; got {all:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

const DSN_KEY: &str = "d5c0ffee0123456789abcdef01234567";
const SETTLER: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
const RPC_KEY: &str = "AlchemyKey0123456789abcdefXYZ";
const QUERY_KEY: &str = "QueryKey9876543210zyx";
const DB_PASSWORD: &str = "DbPassw0rdSecret42";
const REDIS_PASSWORD: &str = "RedisPassw0rdSecret7";
const API_KEY: &str = "x402_live_0123456789abcdef0123456789abcdef0123456789abcdef";
const PAYMENT_HEADER: &str =
    "eyJ4NDAyVmVyc2lvbiI6MiwicGF5bG9hZCI6eyJzaWduYXR1cmUiOiIweGRlYWRiZWVmIn19";

/// Every secret the test put anywhere: none may arrive.
fn secrets() -> Vec<&'static str> {
    vec![
        ADMIN_TOKEN,
        SETTLER,
        &SETTLER[2..],
        RPC_KEY,
        QUERY_KEY,
        DB_PASSWORD,
        REDIS_PASSWORD,
        API_KEY,
        PAYMENT_HEADER,
        DSN_KEY,
    ]
}

fn rpc_url() -> String {
    format!("http://127.0.0.1:1/v2/{RPC_KEY}?apikey={QUERY_KEY}")
}

/// A config holding every kind of secret; `sentry` is appended as is.
fn config_text(database_url: &str, sentry: &str) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"
admin_listen = "{{admin}}"
metrics_listen = "{{metrics}}"
threads = 1

[admin]
token = "{ADMIN_TOKEN}"

[database]
url = "{database_url}"

[rate_limit]
redis_url = "redis://:{REDIS_PASSWORD}@127.0.0.1:1"

[networks."eip155:84532"]
rpc_url = "{rpc}"
settler_key = "{SETTLER}"
assets = [{{ symbol = "USDC", address = "{USDC_BASE_SEPOLIA}", decimals = 6, eip712_name = "USDC", eip712_version = "2" }}]

[[tenants]]
id = "acme"
pay_to = {{ "eip155:84532" = "{PAY_TO}" }}

[[routes]]
tenant = "acme"
path = "/free/*"
upstream = "http://127.0.0.1:9"
price = "free"
{sentry}
"#,
        rpc = rpc_url()
    )
}

fn assert_clean(envelopes: &[String]) {
    for e in envelopes {
        for s in secrets() {
            assert!(!e.contains(s), "secret `{s}` reached Sentry:\n{e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_internal_error_and_a_panic_arrive_without_secrets() {
    let receiver = Receiver::start().await;
    let text = config_text(
        &format!("postgres://gate:{DB_PASSWORD}@127.0.0.1:1/gate"),
        &format!(
            "[sentry]\ndsn = \"{}\"\nenvironment = \"test\"\n",
            receiver.dsn()
        ),
    )
    .replace("{listen}", "127.0.0.1:0")
    .replace("{admin}", "127.0.0.1:0")
    .replace("{metrics}", "127.0.0.1:0");
    let config = Config::from_toml(&text, &|_| None).unwrap();
    let dsn = reporting::dsn(&config.sentry).expect("the DSN is configured");
    let guard = reporting::init(&config, &dsn).unwrap();
    let sink = std::io::sink;
    tracing::subscriber::set_global_default(logging::reporting_subscriber(
        LogFormat::Json,
        "info".into(),
        sink,
    ))
    .unwrap();

    // An internal error whose text picked up every secret (an RPC error printing its URL, a
    // request's headers, the keys), as the gateway would log it.
    let leaky = format!(
        "settlement failed: POST {rpc} with key {SETTLER} (bare {bare}), admin {ADMIN_TOKEN}, \
         db postgres://gate:{DB_PASSWORD}@db/gate, redis password {REDIS_PASSWORD}, \
         api key {API_KEY}, header {PAYMENT_HEADER}, rpc key alone {RPC_KEY}",
        rpc = rpc_url(),
        bare = &SETTLER[2..],
    );
    tracing::warn!(target: "x402_gate::payments", "a breadcrumb first: {leaky}");
    tracing::error!(target: "x402_gate::payments", claim_id = 7, detail = %leaky, "error-marker-1 {leaky}");
    // A library's error line is context (a breadcrumb), not an event of its own.
    tracing::error!(target: "pingora_core::listeners", "library-marker TLS handshake failed");
    // A panic on a worker thread, its message full of secrets too.
    let panicked = std::thread::spawn(move || panic!("panic-marker-2 {leaky}")).join();
    assert!(panicked.is_err());
    assert!(guard.flush(Duration::from_secs(10)));

    let all = receiver.wait_for("error-marker-1").await;
    let all_after_panic = receiver.wait_for("panic-marker-2").await;
    assert!(all.len() <= all_after_panic.len());
    assert_clean(&all_after_panic);
    let error = all_after_panic
        .iter()
        .find(|e| e.contains("error-marker-1"))
        .unwrap();
    assert!(error.contains("settlement failed"), "{error}");
    assert!(
        error.contains("<redacted>") || error.contains("<url>"),
        "{error}"
    );
    assert!(error.contains("\"environment\":\"test\""), "{error}");
    assert!(
        error.contains("a breadcrumb first"),
        "warnings ride along as breadcrumbs: {error}"
    );
    assert!(
        !all_after_panic.iter().any(|e| e.contains("library-marker")
            && !e.contains("error-marker-1")
            && !e.contains("panic-marker-2")),
        "a library's error line is not an event of its own"
    );
    drop(guard);
}

/// The real binary, reporting to `SENTRY_DSN`: the metrics port is taken, which the gateway
/// reports as an error, and the event arrives without the config's secrets.
#[tokio::test(flavor = "multi_thread")]
async fn the_binary_reports_to_the_dsn_in_its_environment() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("gate.db").display());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let text = config_text(&db, "")
        .replace("{listen}", &format!("127.0.0.1:{}", free_port()))
        .replace("{admin}", &format!("127.0.0.1:{}", free_port()))
        .replace("{metrics}", &taken.local_addr().unwrap().to_string());
    let cfg = dir.path().join("gate.toml");
    std::fs::write(&cfg, text).unwrap();
    let mut gw = tokio::process::Command::new(env!("CARGO_BIN_EXE_x402-gate"))
        .arg("--config")
        .arg(&cfg)
        .env("SENTRY_DSN", receiver.dsn())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let all = receiver
        .wait_for("the metrics endpoint cannot listen")
        .await;
    assert_clean(&all);
    let event = all
        .iter()
        .find(|e| e.contains("the metrics endpoint cannot listen"))
        .unwrap();
    assert!(
        event.contains(x402_gate::cli::VERSION),
        "the release is the build: {event}"
    );
    let pid = gw.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(20), gw.wait()).await;
    drop(taken);
}
