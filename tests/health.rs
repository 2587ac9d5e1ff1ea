//! Readiness against the real gateway and a real chain: `/ready` follows the network's RPC (an
//! outage of the JSON-RPC proxy in front of anvil), the settlers' gas balances against
//! `min_settler_balance` (drained with `anvil_setBalance`), and the store (a Postgres schema
//! dropped under the gateway), in its body and in the metrics.

mod common;

use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};
use alloy::providers::ext::AnvilApi;
use alloy::signers::local::PrivateKeySigner;
use common::chain::*;
use common::*;
use serde_json::Value;

const NETWORK: &str = "eip155:84532";

/// The EVM test config with a second settler key, a floor of 1 ETH and a fast probe.
fn config(chain: &Chain, up: &Upstream, extra_key: &str) -> String {
    let cfg = evm_config(
        &up.url(),
        &chain.rpc.url,
        &chain.settler_key,
        &chain.token.to_checksum(None),
        &new_signer().address().to_checksum(None),
    );
    let key_line = format!("settler_key = \"{}\"", chain.settler_key);
    assert!(cfg.contains(&key_line));
    let cfg = cfg.replace(
        &key_line,
        &format!("{key_line}\nsettler_keys = [\"{extra_key}\"]\nmin_settler_balance = \"1\""),
    );
    format!("{cfg}\n[health]\nprobe_interval_seconds = 1\nrpc_max_age_seconds = 2\n")
}

async fn ready(gw: &Gateway) -> (u16, Value) {
    let resp = client().get(gw.admin_url("/ready")).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// Polls `/ready` until `want` holds, for at most `limit`; returns the last answer and how long
/// it took.
async fn ready_until(
    gw: &Gateway,
    limit: Duration,
    want: impl Fn(u16, &Value) -> bool,
) -> (u16, Value, Duration) {
    let start = Instant::now();
    loop {
        let (status, body) = ready(gw).await;
        if want(status, &body) {
            return (status, body, start.elapsed());
        }
        assert!(
            start.elapsed() < limit,
            "/ready did not change within {limit:?}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of one series in the Prometheus text, e.g. `x402_rpc_up{network="..."}`.
fn series(metrics: &str, name_and_labels: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(name_and_labels)
            .and_then(|rest| rest.strip_prefix(' '))
            .map(|v| v.trim().parse().unwrap())
    })
}

fn address_of(key: &str) -> Address {
    key.parse::<PrivateKeySigner>().unwrap().address()
}

fn settler<'a>(body: &'a Value, address: &Address) -> &'a Value {
    body["networks"][0]["settlers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["settler"] == address.to_checksum(None))
        .unwrap_or_else(|| panic!("{address} in {body}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_follows_the_rpc_and_reports_settlers_below_their_floor() {
    let chain = Chain::start().await;
    let up = Upstream::start();
    let extra = chain.extra_settler_keys(1).remove(0);
    let gw = Gateway::start(&config(&chain, &up, &extra));
    let (first, second) = (address_of(&chain.settler_key), address_of(&extra));

    // Funded dev accounts, the RPC up: ready, with both settlers and their balances.
    let (status, body) = ready(&gw).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["store"]["ok"], true);
    let net = &body["networks"][0];
    assert_eq!(net["network"], NETWORK);
    assert_eq!(
        (&net["checked"], &net["rpc_ok"]),
        (&Value::Bool(true), &Value::Bool(true))
    );
    assert_eq!(net["min_settler_balance"], "1000000000000000000");
    for a in [&first, &second] {
        let s = settler(&body, a);
        assert_eq!(
            (&s["held"], &s["below_floor"]),
            (&Value::Bool(true), &Value::Bool(false))
        );
        let balance: u128 = s["balance"].as_str().unwrap().parse().unwrap();
        assert!(balance > 10u128.pow(18), "{s}");
    }
    let metrics = gw.metrics().await;
    assert_eq!(
        series(&metrics, &format!("x402_rpc_up{{network=\"{NETWORK}\"}}")),
        Some(1.0)
    );

    // The RPC goes down: not ready once the last answer is older than 2 s (probing every 1 s).
    chain.rpc.set_down(true);
    let (_, body, took) = ready_until(&gw, Duration::from_secs(10), |s, _| s == 503).await;
    assert!(took < Duration::from_secs(6), "took {took:?}");
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["networks"][0]["rpc_ok"], false);
    assert!(
        body["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with(&format!("{NETWORK}: the RPC has not answered for")),
        "{body}"
    );
    assert!(body["networks"][0]["error"].is_string(), "{body}");
    // No RPC URL leaks into the body.
    assert!(!body.to_string().contains(&chain.rpc.url), "{body}");
    // The gauge is written by the probe, so it follows within one more probe.
    let start = Instant::now();
    while series(
        &gw.metrics().await,
        &format!("x402_rpc_up{{network=\"{NETWORK}\"}}"),
    ) != Some(0.0)
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "x402_rpc_up stays 1"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Back: ready again within a probe or two.
    chain.rpc.set_down(false);
    let (_, body, took) = ready_until(&gw, Duration::from_secs(10), |s, _| s == 200).await;
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(body["status"], "ready");

    // One of the two settlers this instance holds drained below 1 ETH: degraded, still 200.
    let half_eth = U256::from(5u128 * 10u128.pow(17));
    chain
        .provider
        .anvil_set_balance(first, half_eth)
        .await
        .unwrap();
    let (status, body, _) =
        ready_until(&gw, Duration::from_secs(10), |_, b| b["status"] != "ready").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "degraded");
    let s = settler(&body, &first);
    assert_eq!(
        (&s["below_floor"], &s["balance"]),
        (&Value::Bool(true), &Value::from("500000000000000000"))
    );
    assert_eq!(settler(&body, &second)["below_floor"], false);
    let warning = body["warnings"][0].as_str().unwrap();
    assert!(warning.contains(&first.to_checksum(None)), "{warning}");
    let metrics = gw.metrics().await;
    let labels = |a: &Address| {
        format!(
            "{{network=\"{NETWORK}\",settler=\"{}\"}}",
            a.to_checksum(None)
        )
    };
    assert_eq!(
        series(
            &metrics,
            &format!("x402_settler_below_floor{}", labels(&first))
        ),
        Some(1.0)
    );
    assert_eq!(
        series(
            &metrics,
            &format!("x402_settler_below_floor{}", labels(&second))
        ),
        Some(0.0)
    );
    assert_eq!(
        series(
            &metrics,
            &format!("x402_settler_balance_wei{}", labels(&first))
        ),
        Some(5e17)
    );

    // Both drained: no key this instance holds can be trusted to pay gas: not ready.
    chain
        .provider
        .anvil_set_balance(second, U256::ZERO)
        .await
        .unwrap();
    let (_, body, _) = ready_until(&gw, Duration::from_secs(10), |s, _| s == 503).await;
    assert_eq!(body["status"], "not_ready");
    assert!(
        body["reasons"][0]
            .as_str()
            .unwrap()
            .contains("every settler key this instance holds"),
        "{body}"
    );
    assert_eq!(body["warnings"].as_array().unwrap().len(), 2);

    // Refilled: ready.
    let ten_eth = U256::from(10u128 * 10u128.pow(18));
    chain
        .provider
        .anvil_set_balance(first, ten_eth)
        .await
        .unwrap();
    chain
        .provider
        .anvil_set_balance(second, ten_eth)
        .await
        .unwrap();
    ready_until(&gw, Duration::from_secs(10), |s, b| {
        s == 200 && b["status"] == "ready"
    })
    .await;
    let metrics = gw.metrics().await;
    assert_eq!(
        series(
            &metrics,
            &format!("x402_settler_below_floor{}", labels(&first))
        ),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_is_false_when_the_store_does_not_answer() {
    let chain = Chain::start().await;
    let up = Upstream::start();
    let extra = chain.extra_settler_keys(1).remove(0);
    let url = fresh_postgres_url().await;
    let gw = Gateway::start_with_db(&config(&chain, &up, &extra), &url);
    let (status, body) = ready(&gw).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &Value::from("ready")),
        "{body}"
    );

    // The gateway's schema is dropped under it: its cheap query fails, so it is not ready.
    let schema = url.rsplit("search_path%3D").next().unwrap().to_string();
    let base = std::env::var("X402_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let admin = sqlx::PgPool::connect(&base).await.unwrap();
    let ddl = sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE"));
    sqlx::query(ddl).execute(&admin).await.unwrap();
    let (status, body) = ready(&gw).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["store"]["ok"], false);
    assert!(
        body["reasons"][0].as_str().unwrap().starts_with("store: "),
        "{body}"
    );
    // The URL (and any password in it) stays out of the answer.
    assert!(!body.to_string().contains("postgres"), "{body}");
    // The chain is fine: only the store is named.
    assert_eq!(body["reasons"].as_array().unwrap().len(), 1, "{body}");
}
