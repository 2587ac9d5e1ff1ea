//! The Grafana dashboard (`deploy/grafana/x402-gate.json`) queries only what the gateway exports:
//! a real gateway on a real chain serves free, paid (after and deferred), replayed, refused,
//! rate-limited and management traffic and one reload, then every series name its queries name
//! must be in `/metrics`, and every label they group by must be a label of a series they name.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::chain::*;
use common::*;
use serde_json::Value;

/// Every PromQL expression of the dashboard: panel targets and templating queries.
fn queries(dashboard: &Value) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(dashboard, &mut out);
    out
}

/// The metric names an expression names (`x402_…`).
fn names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("x402_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// The labels of `by (…)` clauses.
fn grouped_by(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("by (") {
        let tail = &rest[i + 4..];
        let end = tail.find(')').unwrap();
        out.extend(tail[..end].split(',').map(|l| l.trim().to_string()));
        rest = &tail[end..];
    }
    out
}

/// Series name -> label names, from the Prometheus text format.
fn exported(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let series = line.rsplit_once(' ').unwrap().0;
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        let entry = out.entry(name.to_string()).or_default();
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            entry.insert(pair.split('=').next().unwrap().to_string());
        }
    }
    out
}

async fn pay(url: &str, payer: &alloy::signers::local::PrivateKeySigner) -> String {
    let r = client().get(url).send().await.unwrap();
    assert_eq!(r.status(), 402);
    let v2 = decode_b64_json(r.headers()["payment-required"].to_str().unwrap());
    let offer = v2["accepts"][0].clone();
    let auth = Authorization::for_offer(&offer, payer.address());
    let header = v2_header(&offer, auth.payload(&auth.sign(payer)));
    let r = client()
        .get(url)
        .header("payment-signature", &header)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{url}");
    header
}

#[test]
fn the_dashboard_is_valid_json_with_queries() {
    let text = std::fs::read_to_string(repo_path("deploy/grafana/x402-gate.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(dashboard["uid"], "x402-gate");
    let qs = queries(&dashboard);
    assert!(qs.len() > 20, "{qs:?}");
    for q in &qs {
        assert!(!names(q).is_empty(), "a query naming no x402 series: {q}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_series_the_dashboard_queries_is_exported() {
    let chain = Chain::start().await;
    let up = Upstream::start();
    let pay_to = new_signer().address().to_checksum(None);
    let config = evm_config(
        &up.url(),
        &chain.rpc.url,
        &chain.settler_key,
        &chain.token.to_checksum(None),
        &pay_to,
    ) + &format!(
        r#"
[[tenants]]
id = "beta"
pay_to = {{ "eip155:84532" = "{pay_to}" }}

[[routes]]
tenant = "beta"
path = "/beta/*"
upstream = "{}"
price = "$0.01"

[health]
probe_interval_seconds = 1

[rate_limit]
admin.per_tenant = {{ rate = 0.01, burst = 1 }}
"#,
        up.url()
    );
    let gw = Gateway::start_from_file(&config);
    let payer = new_signer();
    chain.mint(payer.address(), 1_000_000).await;
    let c = client();

    // Free, paid (after, then deferred), and a replay (a cache hit, refused as a duplicate).
    assert_eq!(c.get(gw.url("/free/x")).send().await.unwrap().status(), 201);
    let header = pay(&gw.url("/paid/x"), &payer).await;
    let replay = c
        .get(gw.url("/paid/x"))
        .header("payment-signature", &header)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 402);
    pay(&gw.url("/deferred/x"), &payer).await;
    // A suspended tenant's priced route: a refusal before any challenge.
    let op = |req: reqwest::RequestBuilder| req.header("x-admin-key", ADMIN_TOKEN);
    let r = op(c.post(gw.admin_url("/api/v1/x402/admin/tenants/beta/suspend")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(c.get(gw.url("/beta/x")).send().await.unwrap().status(), 403);
    // A tenant key over its management limit.
    let key: Value = op(c.post(gw.admin_url("/api/v1/x402/admin/tenants/acme/keys")))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = key["key"].as_str().unwrap();
    let usage = || {
        c.get(gw.admin_url("/api/v1/x402/usage"))
            .bearer_auth(key)
            .send()
    };
    assert_eq!(usage().await.unwrap().status(), 200);
    assert_eq!(usage().await.unwrap().status(), 429);
    // A reload.
    let r = op(c.post(gw.admin_url("/api/v1/x402/admin/reload")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_path("deploy/grafana/x402-gate.json")).unwrap(),
    )
    .unwrap();
    let qs = queries(&dashboard);
    // Gauges written by the probe (every second here) and the deferred worker come a little later.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let metrics = exported(&gw.metrics().await);
        let mut missing = Vec::new();
        for q in &qs {
            let named = names(q);
            for n in &named {
                if !metrics.contains_key(n) {
                    missing.push(format!("{n} (in `{q}`)"));
                }
            }
            let labels: BTreeSet<&String> = named
                .iter()
                .filter_map(|n| metrics.get(n))
                .flatten()
                .collect();
            for l in grouped_by(q) {
                // `instance` is Prometheus' own label; `le` is every histogram bucket's.
                if !labels.contains(&l) && l != "instance" {
                    missing.push(format!("label {l} (in `{q}`)"));
                }
            }
        }
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dashboard queries what the gateway does not export:\n{}",
            missing.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The label sets stay bounded: routes by pattern, never the request's path.
    let text = gw.metrics().await;
    assert!(text.contains("x402_upstream_responses_total{route=\"/free/*\",status=\"2xx\"} 1"));
    assert!(
        !text.contains("/free/x"),
        "a raw request path in the metrics"
    );
    assert!(!text.contains(&payer.address().to_checksum(None)));
    assert!(text.contains("x402_verification_cache_total{result=\"hit\"} 1"));
    assert!(text.contains(&format!(
        "x402_build_info{{commit=\"{}\",version=\"{}\"}} 1",
        x402_gate::metrics::COMMIT,
        env!("CARGO_PKG_VERSION")
    )));
    assert!(text.contains(
        "x402_rpc_calls_total{method=\"eth_call\",network=\"eip155:84532\",outcome=\"ok\"}"
    ));
}
