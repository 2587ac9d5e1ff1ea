//! Shared harness for the integration tests: a real upstream (axum on port 0) and the real gateway
//! (pingora, in process, on a free port), both torn down when dropped.

#![allow(dead_code)]

pub mod chain;
pub mod faults;
pub mod invariants;
pub mod svm;
pub mod svm_pay;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use x402_gate::app::{self, ChannelShutdown, RunOptions};
use x402_gate::config::Config;

pub const SETTLER_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
pub const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
pub const USDC_BASE_SEPOLIA: &str = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";

/// A real HTTP origin on a port-0 listener that counts the requests it serves.
/// Runs inside the origin before it answers a `/…/hook` request: tests use it to act on the
/// chain while the gateway waits for the origin (e.g. the payer cancelling its authorization).
pub type Hook =
    Arc<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync>;

pub struct Upstream {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // Tests drop this inside their own runtime, where a blocking runtime drop panics.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Upstream {
    pub fn start() -> Upstream {
        Self::start_with_hook(None)
    }

    pub fn start_with_hook(hook: Option<Hook>) -> Upstream {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let app = Router::new()
            .route("/{p}/big/{n}", get(big))
            .route("/{p}/status/{code}", any(status))
            .route(
                "/{p}/hook",
                any(move |req: Request| {
                    let hook = hook.clone();
                    async move {
                        if let Some(h) = hook {
                            h().await;
                        }
                        echo(req).await
                    }
                }),
            )
            .fallback(any(echo))
            .layer(axum::middleware::from_fn(
                move |req: Request, next: axum::middleware::Next| {
                    let counter = counter.clone();
                    async move {
                        counter.fetch_add(1, Ordering::SeqCst);
                        next.run(req).await
                    }
                },
            ));
        // Bound with std so this works from inside a test's own runtime too.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap()
        });
        Upstream {
            addr,
            hits,
            runtime: Some(runtime),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Echoes the request as JSON, with a custom header and a 201 so status passthrough is visible.
async fn echo(req: Request) -> Response {
    let (parts, body) = req.into_parts();
    // A body that breaks off (tests/hostile.rs sends malformed chunked ones) is a 400 here, not a
    // panic in the test process.
    let Ok(body) = axum::body::to_bytes(body, 64 * 1024 * 1024).await else {
        return (StatusCode::BAD_REQUEST, "unreadable body").into_response();
    };
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
        .collect();
    let json = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_len": body.len(),
        "body_sha": sha(&body),
    });
    let mut h = HeaderMap::new();
    h.insert("x-origin", "echo".parse().unwrap());
    h.insert("set-cookie", "a=1".parse().unwrap());
    (StatusCode::CREATED, h, axum::Json(json)).into_response()
}

/// A streamed response of `n` bytes in 64 KiB chunks, deterministic content.
async fn big(Path((_, n)): Path<(String, usize)>) -> Response {
    let chunks = (0..n).step_by(65536).map(move |start| {
        let len = 65536.min(n - start);
        Ok::<_, std::io::Error>(Bytes::from(pattern(start, len)))
    });
    Response::builder()
        .header("content-type", "application/octet-stream")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .unwrap()
}

async fn status(Path((_, code)): Path<(String, u16)>) -> Response {
    (
        StatusCode::from_u16(code).unwrap(),
        format!("status {code}"),
    )
        .into_response()
}

pub fn pattern(start: usize, len: usize) -> Vec<u8> {
    (start..start + len).map(|i| (i % 251) as u8).collect()
}

/// A cheap content fingerprint (FNV-1a), enough to tell bodies apart in tests.
pub fn sha(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

/// A free local port. pingora binds inside `run`, so the test reserves a port and hands it over;
/// the window between the two is tiny and the OS does not reuse ports that fast.
/// Never the same port twice in one test process: the OS may hand a just-released port out again
/// at once, and a gateway given one port for two listeners refuses its own config.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// The real gateway, running in this process until dropped.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

pub struct Gateway {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub database_url: String,
    /// The config file it was started from (`start_from_file`), which a reload reads again.
    pub config_file: Option<PathBuf>,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl Gateway {
    /// Starts the gateway with `toml`, in which `{listen}` is replaced by the chosen address, on a
    /// fresh SQLite database of its own.
    pub fn start(toml: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("gate.db").display());
        let mut gw = Self::start_with_db(toml, &url);
        gw._dir = Some(dir);
        gw
    }

    /// Starts the gateway on the database at `url` (to restart on the same state).
    pub fn start_with_db(toml: &str, database_url: &str) -> Gateway {
        Self::launch(toml, database_url, None)
    }

    /// Starts the gateway from a config file (in a fresh temp directory, with a fresh SQLite
    /// database), as the binary does: `reload_config` can then rewrite it and reload.
    pub fn start_from_file(toml: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("gate.db").display());
        let file = dir.path().join("gate.toml");
        let mut gw = Self::launch(toml, &url, Some(file));
        gw._dir = Some(dir);
        gw
    }

    /// `toml` with this gateway's addresses and database in place of the placeholders.
    pub fn render(&self, toml: &str) -> String {
        render(
            toml,
            self.addr,
            self.admin_addr,
            self.metrics_addr,
            &self.database_url,
        )
    }

    /// Rewrites the config file (placeholders filled as at start) for the next reload.
    pub fn write_config(&self, toml: &str) {
        let file = self.config_file.as_ref().expect("started from a file");
        std::fs::write(file, self.render(toml)).unwrap();
    }

    fn launch(toml: &str, database_url: &str, file: Option<PathBuf>) -> Gateway {
        // X402_TEST_LOG=warn,x402_gate=debug shows the gateway's logs when chasing a failure.
        if let Ok(filter) = std::env::var("X402_TEST_LOG") {
            let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
        }
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let text = render(toml, addr, admin_addr, metrics_addr, database_url);
        let config = Config::from_toml(&text, &|_| None).unwrap_or_else(|e| panic!("{e}"));
        if let Some(file) = &file {
            std::fs::write(file, &text).unwrap();
        }
        let options = RunOptions {
            config_file: file.clone(),
            ..RunOptions::default()
        };
        let (stop, rx) = tokio::sync::watch::channel(false);
        let thread = std::thread::spawn(move || {
            app::run(config, options, Some(Box::new(ChannelShutdown(rx)))).unwrap();
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        // The management API and the metrics endpoint are background services that bind on
        // their own schedule: a test that calls one right after start must not race it.
        let mut listeners = vec![addr];
        if toml.contains("{admin}") {
            listeners.push(admin_addr);
        }
        if toml.contains("{metrics}") {
            listeners.push(metrics_addr);
        }
        for listener in listeners {
            while TcpStream::connect(listener).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "gateway did not start listening on {listener}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Gateway {
            addr,
            admin_addr,
            metrics_addr,
            database_url: database_url.to_string(),
            config_file: file,
            stop,
            thread: Some(thread),
            _dir: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Takes the temp directory holding this gateway's database, so it outlives the gateway.
    pub fn take_dir(&mut self) -> Option<tempfile::TempDir> {
        self._dir.take()
    }

    /// The Prometheus text of this gateway's metrics.
    pub async fn metrics(&self) -> String {
        client()
            .get(format!("http://{}/metrics", self.metrics_addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }
}

/// `toml` with `{listen}`, `{admin}`, `{metrics}` filled in, and a `[database]` pointing at
/// `database_url` unless it has one.
pub fn render(
    toml: &str,
    addr: SocketAddr,
    admin: SocketAddr,
    metrics: SocketAddr,
    database_url: &str,
) -> String {
    let mut text = toml
        .replace("{listen}", &addr.to_string())
        .replace("{admin}", &admin.to_string())
        .replace("{metrics}", &metrics.to_string());
    if !text.contains("[database]") {
        text.push_str(&format!("\n[database]\nurl = \"{database_url}\"\n"));
    }
    text
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A config with one EVM network, one tenant, a priced and a free route to `upstream`.
pub fn basic_config(upstream: &str, extra_server: &str) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"
admin_listen = "{{admin}}"
metrics_listen = "{{metrics}}"
threads = 1
{extra_server}

[admin]
token = "{ADMIN_TOKEN}"

[networks."eip155:84532"]
rpc_url = "http://127.0.0.1:1"
settler_key = "{SETTLER_KEY}"
assets = [{{ symbol = "USDC", address = "{USDC_BASE_SEPOLIA}", decimals = 6, eip712_name = "USDC", eip712_version = "2" }}]

[networks."eip155:31337"]
rpc_url = "http://127.0.0.1:1"
settler_key = "{SETTLER_KEY}"
assets = [{{ symbol = "USDC", address = "0x5FbDB2315678afecb367f032d93F642f64180aa3", decimals = 6, eip712_name = "USD Coin", eip712_version = "2" }}]

[tiers.free]
networks = ["eip155:84532", "eip155:31337"]

[[tenants]]
id = "acme"
pay_to = {{ "eip155:84532" = "{PAY_TO}", "eip155:31337" = "{PAY_TO}" }}

[[routes]]
tenant = "acme"
path = "/paid/*"
upstream = "{upstream}"
price = "$0.01"
description = "Paid data"

[[routes]]
tenant = "acme"
path = "/only-get"
methods = ["GET"]
upstream = "{upstream}"
price = "free"

[[routes]]
tenant = "acme"
host = "free.test"
path = "/*"
upstream = "{upstream}"
price = "free"

[[routes]]
tenant = "acme"
path = "/free/*"
upstream = "{upstream}"
price = "free"
"#
    )
}

/// The first offer (`accepts[0]` of the v2 `PAYMENT-REQUIRED`) the gateway answers for `path`.
pub async fn offer_for(gw: &Gateway, path: &str) -> serde_json::Value {
    let resp = client().get(gw.url(path)).send().await.unwrap();
    assert_eq!(resp.status(), 402);
    let v2 = chain::decode_b64_json(resp.headers()["payment-required"].to_str().unwrap());
    v2["accepts"][0].clone()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A config for payments on the test chain: `/paid/*` settles after, `/before/*` before,
/// `/deferred/*` deferred, all $0.01; `/free/*` is free.
pub fn evm_config(
    upstream: &str,
    rpc_url: &str,
    settler_key: &str,
    token: &str,
    pay_to: &str,
) -> String {
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
rpc_url = "{rpc_url}"
settler_key = "{settler_key}"
assets = [{{ symbol = "USDC", address = "{token}", decimals = 6, eip712_name = "USD Coin", eip712_version = "2" }}]

[[tenants]]
id = "acme"
pay_to = {{ "eip155:84532" = "{pay_to}" }}

[[routes]]
tenant = "acme"
path = "/paid/*"
upstream = "{upstream}"
price = "$0.01"

[[routes]]
tenant = "acme"
path = "/before/*"
upstream = "{upstream}"
price = "$0.01"
settle = "before"

[[routes]]
tenant = "acme"
path = "/deferred/*"
upstream = "{upstream}"
price = "$0.01"
settle = "deferred"

[[routes]]
tenant = "acme"
path = "/free/*"
upstream = "{upstream}"
price = "free"
"#
    )
}

/// A fresh, empty schema on the test Postgres (`X402_TEST_DATABASE_URL`, default
/// postgres://postgres@127.0.0.1:5432/test), as a URL whose connections use it.
pub async fn fresh_postgres_url() -> String {
    let base = std::env::var("X402_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("t{}", &chain::unique_b256("schema").to_string()[2..18]);
    let admin = sqlx::PgPool::connect(&base).await.unwrap();
    // The schema name is hex digits we generated: safe to splice.
    let ddl = sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}"));
    sqlx::query(ddl).execute(&admin).await.unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{schema}")
}

/// Makes every claim's move to `settling` fail on a gateway's SQLite database, as a full disk
/// would, until `allow_settling`: a settlement signed but never recorded, so never sent.
pub async fn refuse_settling(db: &sqlx::SqlitePool) {
    sqlx::query(
        "CREATE TRIGGER refuse_settling BEFORE UPDATE OF status ON payment_claims
         WHEN NEW.status = 'settling' BEGIN SELECT RAISE(ABORT, 'disk full'); END",
    )
    .execute(db)
    .await
    .unwrap();
}

pub async fn allow_settling(db: &sqlx::SqlitePool) {
    sqlx::query("DROP TRIGGER refuse_settling")
        .execute(db)
        .await
        .unwrap();
}

/// Sends `sig` (`-TERM`, `-QUIT`, `-HUP`) to a gateway running as its own process.
pub fn signal(child: &tokio::process::Child, sig: &str) {
    let pid = child.id().expect("still running").to_string();
    let ok = std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Waits for a gateway process told to stop to exit, successfully, within its grace period.
pub async fn exits_cleanly(child: &mut tokio::process::Child) {
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait())
        .await
        .expect("the gateway exits within 30 s")
        .unwrap();
    assert!(status.success(), "{status}");
}

/// Polls `cond` every 50 ms until it holds; fails the test after 30 s.
pub async fn wait_for<F, Fut>(mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !cond().await {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not met within 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
