//! `[rate_limit]` against the real gateway: the in-process limits per client IP and per tenant on
//! the proxy and on the management API (429 `rate_limited` with `Retry-After` past the burst);
//! two instances sharing the real Redis on 127.0.0.1:6379 enforce one tenant limit together; with
//! Redis unreachable, requests keep flowing on local limits and the fallback metric moves.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// `basic_config` with a second tenant, `beta`, owning the free route `/beta/*`, and `limits`
/// as the `[rate_limit]` table's body.
fn config(upstream: &str, limits: &str) -> String {
    format!(
        r#"{base}
[[tenants]]
id = "beta"
pay_to = {{ "eip155:84532" = "{PAY_TO}" }}

[[routes]]
tenant = "beta"
path = "/beta/*"
upstream = "{upstream}"
price = "free"

[rate_limit]
{limits}
"#,
        base = basic_config(upstream, ""),
    )
}

/// Asserts a 429 `rate_limited` with a `Retry-After` of 1..=`max_secs` whole seconds.
async fn assert_limited(resp: reqwest::Response, max_secs: u64) {
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp
        .headers()
        .get("retry-after")
        .expect("a Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in whole seconds");
    assert!((1..=max_secs).contains(&retry), "Retry-After {retry}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited", "{body}");
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn get(url: String) -> reqwest::Response {
    client().get(url).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_limits_per_ip_and_per_tenant_in_process() {
    let up = Upstream::start();
    // Per IP: every request of this client counts, whatever the route.
    let gw = Gateway::start(&config(
        &up.url(),
        "proxy.per_ip = { rate = 0.5, burst = 3 }",
    ));
    assert_eq!(get(gw.url("/free/a")).await.status(), 201);
    assert_eq!(get(gw.url("/beta/a")).await.status(), 201);
    assert_eq!(get(gw.url("/paid/a")).await.status(), 402);
    let resp = get(gw.url("/beta/b")).await;
    assert!(resp.headers().contains_key("x-request-id"));
    assert_limited(resp, 2).await;
    assert_eq!(up.hits(), 2, "a limited request never reaches the origin");
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "x402_rate_limited_total{scope=\"proxy_ip\"}"),
        1.0
    );
    drop(gw);

    // Per tenant: acme's routes share one limit, beta's are not affected.
    let gw = Gateway::start(&config(
        &up.url(),
        "proxy.per_tenant = { rate = 0.5, burst = 3 }",
    ));
    for path in ["/free/a", "/only-get", "/paid/a"] {
        assert_ne!(get(gw.url(path)).await.status(), 429, "{path}");
    }
    assert_limited(get(gw.url("/free/b")).await, 2).await;
    assert_limited(get(gw.url("/paid/b")).await, 2).await;
    for _ in 0..3 {
        assert_eq!(get(gw.url("/beta/a")).await.status(), 201);
    }
    assert_limited(get(gw.url("/beta/a")).await, 2).await;
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "x402_rate_limited_total{scope=\"proxy_tenant\"}"),
        3.0
    );
    // The rate refills: after one emission interval (2 s) acme has one request again.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(get(gw.url("/free/c")).await.status(), 201);
    assert_limited(get(gw.url("/free/d")).await, 2).await;
}

async fn operator_get(gw: &Gateway, path: &str) -> reqwest::Response {
    client()
        .get(gw.admin_url(path))
        .header("x-admin-key", ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
}

async fn key_for(gw: &Gateway, tenant: &str) -> String {
    let resp = client()
        .post(gw.admin_url(&format!("/api/v1/x402/admin/tenants/{tenant}/keys")))
        .header("x-admin-key", ADMIN_TOKEN)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let v: Value = resp.json().await.unwrap();
    v["key"].as_str().unwrap().to_string()
}

async fn usage(gw: &Gateway, key: &str) -> reqwest::Response {
    client()
        .get(gw.admin_url("/api/v1/x402/usage"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_limits_per_ip_and_per_tenant_in_process() {
    let up = Upstream::start();
    let gw = Gateway::start(&config(
        &up.url(),
        "admin.per_ip = { rate = 0.5, burst = 3 }",
    ));
    for _ in 0..3 {
        assert_eq!(
            operator_get(&gw, "/api/v1/x402/admin/tenants")
                .await
                .status(),
            200
        );
    }
    let resp = operator_get(&gw, "/api/v1/x402/supported-chains").await;
    assert!(resp.headers().contains_key("x-request-id"));
    assert_limited(resp, 2).await;
    // Probes are never limited.
    for _ in 0..5 {
        assert_eq!(get(gw.admin_url("/health")).await.status(), 200);
    }
    // The proxy listener has its own limits (none here).
    for _ in 0..5 {
        assert_eq!(get(gw.url("/free/a")).await.status(), 201);
    }
    drop(gw);

    let gw = Gateway::start(&config(
        &up.url(),
        "admin.per_tenant = { rate = 0.5, burst = 2 }",
    ));
    let acme = key_for(&gw, "acme").await;
    let acme2 = key_for(&gw, "acme").await;
    let beta = key_for(&gw, "beta").await;
    assert_eq!(usage(&gw, &acme).await.status(), 200);
    assert_eq!(usage(&gw, &acme2).await.status(), 200);
    // Both of acme's keys count toward acme's one limit.
    assert_limited(usage(&gw, &acme).await, 2).await;
    assert_eq!(usage(&gw, &beta).await.status(), 200);
    // The operator is not a tenant.
    for _ in 0..4 {
        assert_eq!(
            operator_get(&gw, "/api/v1/x402/admin/tenants")
                .await
                .status(),
            200
        );
    }
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "x402_rate_limited_total{scope=\"admin_tenant\"}"),
        1.0
    );
}

/// A namespace of its own for this run, so runs (and their keys) never meet.
fn unique_namespace() -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("test-{hex}")
}

async fn redis_or_fail() -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(REDIS_URL).unwrap();
    let conn = tokio::time::timeout(
        Duration::from_secs(3),
        client.get_multiplexed_async_connection(),
    )
    .await;
    match conn {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => panic!(
            "these tests need a Redis on {REDIS_URL} (the machine provides one); connecting: {e}"
        ),
        Err(_) => panic!("these tests need a Redis on {REDIS_URL}; it did not answer in 3 s"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_tenant_limit_through_redis() {
    let mut redis = redis_or_fail().await;
    let ns = unique_namespace();
    let (rate, burst) = (5.0, 5.0);
    let up = Upstream::start();
    let limits = format!(
        "redis_url = \"{REDIS_URL}\"\nnamespace = \"{ns}\"\nredis_timeout_ms = 500\n\
         proxy.per_tenant = {{ rate = {rate}, burst = {burst} }}"
    );
    let a = Arc::new(Gateway::start(&config(&up.url(), &limits)));
    let b = Arc::new(Gateway::start(&config(&up.url(), &limits)));
    let admitted = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let window = Duration::from_secs(3);
    let mut tasks = Vec::new();
    // Four clients, two on each instance, as fast as they can.
    for i in 0..4 {
        let gw = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (admitted, refused) = (admitted.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            let mut per_instance = (0, 0);
            while started.elapsed() < window {
                let resp = get(gw.url("/free/x")).await;
                match resp.status().as_u16() {
                    201 => {
                        admitted.fetch_add(1, Ordering::SeqCst);
                        per_instance.0 += 1;
                    }
                    429 => {
                        refused.fetch_add(1, Ordering::SeqCst);
                        per_instance.1 += 1;
                        // Gentle on a shared machine: the point is many attempts, not a flood.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    s => panic!("unexpected status {s}"),
                }
            }
            per_instance
        }));
    }
    let mut on_a = (0, 0);
    let mut on_b = (0, 0);
    for (i, t) in tasks.into_iter().enumerate() {
        let (ok, no) = t.await.unwrap();
        let side = if i % 2 == 0 { &mut on_a } else { &mut on_b };
        side.0 += ok;
        side.1 += no;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let admitted = admitted.load(Ordering::SeqCst) as f64;
    let refused = refused.load(Ordering::SeqCst);
    let bound = rate * elapsed + burst;
    eprintln!("admitted {admitted}, refused {refused} in {elapsed:.2} s (bound {bound:.1}; a {on_a:?}, b {on_b:?})");
    assert!(
        admitted <= bound + 1.0,
        "{admitted} admitted in {elapsed:.2} s; the shared limit allows {bound:.1} \
         (a: {on_a:?}, b: {on_b:?})"
    );
    // Each instance alone would have admitted its own burst and rate: far more than the bound.
    assert!(
        admitted >= burst + rate * (elapsed - 1.0),
        "{admitted} admitted in {elapsed:.2} s: the limit should admit about {bound:.1}"
    );
    assert!(refused > 0 && on_a.0 > 0 && on_b.0 > 0 && on_a.1 > 0 && on_b.1 > 0);
    assert_eq!(up.hits() as f64, admitted);
    for gw in [&a, &b] {
        let m = gw.metrics().await;
        assert_eq!(metric(&m, "x402_rate_limit_fallback_total"), 0.0, "{m}");
    }
    // The state lives in Redis, under the namespace, and expires.
    let key = format!("x402:rl:{ns}:proxy_tenant:acme");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 10_000, "{key} PTTL {ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_falls_back_to_local_limits() {
    let closed = free_port();
    let up = Upstream::start();
    let gw = Gateway::start(&config(
        &up.url(),
        &format!(
            "redis_url = \"redis://127.0.0.1:{closed}\"\nnamespace = \"{}\"\n\
             proxy.per_tenant = {{ rate = 0.5, burst = 3 }}",
            unique_namespace()
        ),
    ));
    // Requests keep flowing (a challenge is still a challenge, not a 503) on the local limit.
    assert_eq!(get(gw.url("/free/a")).await.status(), 201);
    assert_eq!(get(gw.url("/paid/a")).await.status(), 402);
    assert_eq!(get(gw.url("/free/b")).await.status(), 201);
    assert_limited(get(gw.url("/free/c")).await, 2).await;
    assert_eq!(get(gw.url("/beta/a")).await.status(), 201);
    let m = gw.metrics().await;
    assert!(
        metric(&m, "x402_rate_limit_fallback_total") >= 5.0,
        "every decision was local: {m}"
    );
    assert_eq!(
        metric(&m, "x402_rate_limited_total{scope=\"proxy_tenant\"}"),
        1.0
    );
    drop(gw);

    // A Redis that accepts connections and never answers: the timeout decides, then local limits.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gw = Gateway::start(&config(
        &up.url(),
        &format!(
            "redis_url = \"redis://{}\"\nredis_timeout_ms = 50\n\
             proxy.per_tenant = {{ rate = 0.5, burst = 2 }}",
            silent.local_addr().unwrap()
        ),
    ));
    let started = Instant::now();
    assert_eq!(get(gw.url("/free/a")).await.status(), 201);
    assert_eq!(get(gw.url("/free/b")).await.status(), 201);
    assert_limited(get(gw.url("/free/c")).await, 2).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a silent Redis costs at most its timeout, then is left alone for a while"
    );
    let m = gw.metrics().await;
    assert!(metric(&m, "x402_rate_limit_fallback_total") >= 3.0, "{m}");
}
