//! The gateway foundation end to end: real pingora in front of a real origin on port 0.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use base64::Engine;
use common::*;
use serde_json::{json, Value};

fn decode_challenge(resp: &reqwest::Response) -> Value {
    let header = resp
        .headers()
        .get("payment-required")
        .expect("402 carries PAYMENT-REQUIRED")
        .to_str()
        .unwrap();
    // Strict standard base64: what the TS client's decoder accepts.
    assert!(header
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(header)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::STANDARD.encode(v.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn free_route_passes_status_headers_and_body() {
    let up = Upstream::start();
    let gw = Gateway::start(&basic_config(&up.url(), ""));
    let resp = client()
        .get(gw.url("/free/a/b?x=1&y=%20z"))
        .header("x-custom", "kept")
        .header("payment-signature", "must-not-leak")
        .header("connection", "x-secret")
        .header("x-secret", "hop-by-hop")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["x-origin"], "echo");
    assert_eq!(resp.headers()["set-cookie"], "a=1");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["method"], "GET");
    assert_eq!(body["path"], "/free/a/b");
    assert_eq!(body["query"], "x=1&y=%20z");
    let h = &body["headers"];
    assert_eq!(h["x-custom"], "kept");
    assert_eq!(h["host"], up.addr.to_string());
    assert_eq!(h["x-forwarded-host"], gw.addr.to_string());
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    for gone in ["payment-signature", "x-secret", "proxy-authorization"] {
        assert!(h.get(gone).is_none(), "{gone} reached the origin: {h}");
    }
    assert_eq!(up.hits(), 1);
}

/// `Connection` names the client's own hop-by-hop headers: those go, but what the gateway adds
/// for the origin stays. pingora (0.9) strips the named headers before `upstream_request_filter`
/// and refuses a request naming `Host` or an `X-Forwarded-*` header outright; the gateway's own
/// removal runs before it adds its headers. This holds that behaviour across upgrades of either.
#[tokio::test(flavor = "multi_thread")]
async fn connection_cannot_strip_what_the_gateway_adds() {
    let up = Upstream::start();
    let gw = Gateway::start(&basic_config(&up.url(), ""));
    let resp = client()
        .get(gw.url("/free/a"))
        .header("connection", "X-Request-Id, x-mine")
        .header("x-mine", "hop-by-hop")
        .header("x-request-id", "client-id-1")
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 201, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    let h = &body["headers"];
    assert_eq!(h["host"], up.addr.to_string());
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    // The request's id (the client's, which is sane) still reaches the origin.
    assert_eq!(id, "client-id-1");
    assert_eq!(h["x-request-id"], id.as_str());
    assert!(h.get("x-mine").is_none(), "x-mine reached the origin: {h}");
    assert!(
        h.get("connection").is_none(),
        "connection reached the origin: {h}"
    );
    // A client may not hide its address (or its host) from the origin this way.
    for named in [
        "x-forwarded-for",
        "X-Forwarded-Proto",
        "x-forwarded-host",
        "host",
    ] {
        let resp = client()
            .get(gw.url("/free/a"))
            .header("connection", named)
            .header("x-forwarded-for", "10.9.9.9")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "Connection: {named}");
    }
    assert_eq!(up.hits(), 1, "only the first request reached the origin");
}

#[tokio::test(flavor = "multi_thread")]
async fn post_bodies_and_large_streams_pass_intact() {
    let up = Upstream::start();
    let gw = Gateway::start(&basic_config(&up.url(), ""));
    let c = client();

    // A 3 MiB body with Content-Length.
    let body = pattern(7, 3 * 1024 * 1024);
    let resp = c
        .post(gw.url("/free/upload"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let echo: Value = resp.json().await.unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body_len"], body.len());
    assert_eq!(echo["body_sha"], sha(&body));

    // A chunked request body streamed in pieces.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..40).map(|i| Ok(pattern(i * 50_000, 50_000))).collect();
    let expected: Vec<u8> = (0..40).flat_map(|i| pattern(i * 50_000, 50_000)).collect();
    let resp = c
        .put(gw.url("/free/stream"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    let echo: Value = resp.json().await.unwrap();
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["body_len"], expected.len());
    assert_eq!(echo["body_sha"], sha(&expected));

    // A 40 MB streamed response.
    let n = 40_000_000;
    let resp = c
        .get(gw.url(&format!("/free/big/{n}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = resp.bytes().await.unwrap();
    assert_eq!(got.len(), n);
    assert_eq!(sha(&got), sha(&pattern(0, n)));

    // Upstream statuses pass through, errors included.
    for code in [204u16, 404, 500, 503] {
        let resp = c
            .get(gw.url(&format!("/free/status/{code}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), code);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn priced_route_answers_with_a_v2_and_v1_challenge() {
    let up = Upstream::start();
    let gw = Gateway::start(&basic_config(&up.url(), ""));
    let resp = client()
        .get(gw.url("/paid/report?day=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 402);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    let expose = resp.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap();
    for h in ["PAYMENT-REQUIRED", "PAYMENT-RESPONSE", "X-PAYMENT-RESPONSE"] {
        assert!(expose.contains(h), "{expose}");
    }
    let v2 = decode_challenge(&resp);
    assert_eq!(v2["x402Version"], 2);
    assert_eq!(v2["error"], "Payment required");
    assert_eq!(
        v2["resource"]["url"],
        format!("http://{}/paid/report?day=1", gw.addr)
    );
    assert_eq!(v2["resource"]["description"], "Paid data");
    let accepts = v2["accepts"].as_array().unwrap();
    assert_eq!(accepts.len(), 2);
    // Default order is by CAIP-2 id; a route's `networks` list sets it explicitly.
    assert_eq!(accepts[0]["network"], "eip155:31337");
    assert_eq!(accepts[0]["extra"]["name"], "USD Coin");
    assert_eq!(
        accepts[1],
        json!({
            "scheme": "exact",
            "network": "eip155:84532",
            "amount": "10000",
            "asset": USDC_BASE_SEPOLIA,
            "payTo": PAY_TO,
            "maxTimeoutSeconds": 60,
            "extra": {"name": "USDC", "version": "2"}
        })
    );

    // The body is the v1 form, listing only networks with a v1 name.
    let v1: Value = resp.json().await.unwrap();
    assert_eq!(v1["x402Version"], 1);
    let v1_accepts = v1["accepts"].as_array().unwrap();
    assert_eq!(v1_accepts.len(), 1);
    assert_eq!(v1_accepts[0]["network"], "base-sepolia");
    assert_eq!(v1_accepts[0]["maxAmountRequired"], "10000");
    assert_eq!(
        v1_accepts[0]["resource"],
        format!("http://{}/paid/report?day=1", gw.addr)
    );
    assert_eq!(up.hits(), 0, "an unpaid request reached the origin");

    // The challenge is byte-stable across requests.
    let again = client()
        .get(gw.url("/paid/report?day=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.headers()["payment-required"],
        client()
            .get(gw.url("/paid/report?day=1"))
            .send()
            .await
            .unwrap()
            .headers()["payment-required"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn public_url_sets_the_resource_url() {
    let up = Upstream::start();
    let gw = Gateway::start(&basic_config(
        &up.url(),
        "public_url = \"https://api.example.com/\"",
    ));
    let resp = client().get(gw.url("/paid/x")).send().await.unwrap();
    assert_eq!(
        decode_challenge(&resp)["resource"]["url"],
        "https://api.example.com/paid/x"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_payment_headers_get_a_402_with_a_reason() {
    let up = Upstream::start();
    let gw = Gateway::start(&basic_config(&up.url(), "max_payment_header_bytes = 1024"));
    let c = client();
    let offered =
        decode_challenge(&c.get(gw.url("/paid/x")).send().await.unwrap())["accepts"][1].clone();
    let mut wrong_amount = offered.clone();
    wrong_amount["amount"] = json!("1");
    let mut wrong_payto = offered.clone();
    wrong_payto["payTo"] = json!("0x0000000000000000000000000000000000000001");

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "payment-signature",
            "!!!not base64!!!".into(),
            "invalid_payload",
        ),
        (
            "payment-signature",
            b64(&json!("just a string")),
            "invalid_payload",
        ),
        (
            "x-payment",
            base64::engine::general_purpose::STANDARD.encode("{not json"),
            "invalid_payload",
        ),
        (
            "payment-signature",
            "A".repeat(2000),
            "invalid_payload_too_large",
        ),
        (
            "payment-signature",
            b64(&json!({"x402Version": 9})),
            "invalid_x402_version",
        ),
        (
            "payment-signature",
            b64(&json!({"x402Version": 2, "accepted": wrong_amount, "payload": {}})),
            "no_matching_payment_requirements",
        ),
        (
            "payment-signature",
            b64(&json!({"x402Version": 2, "accepted": wrong_payto, "payload": {}})),
            "no_matching_payment_requirements",
        ),
        (
            "x-payment",
            b64(&json!({"x402Version": 1, "scheme": "exact", "network": "base", "payload": {}})),
            "no_matching_payment_requirements",
        ),
        // Matching, but the payload is not an EIP-3009 authorization: caught locally.
        (
            "payment-signature",
            b64(&json!({"x402Version": 2, "accepted": offered, "payload": {}})),
            "invalid_exact_evm_payload",
        ),
    ];
    for (name, value, reason) in cases {
        let resp = c
            .get(gw.url("/paid/x"))
            .header(name, &value)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 402, "{name}: {value:.40}");
        let v2 = decode_challenge(&resp);
        let error = v2["error"].as_str().unwrap();
        assert!(
            error.starts_with(&format!("{reason}: ")),
            "{reason} expected, got {error}"
        );
        assert_eq!(
            v2["accepts"].as_array().unwrap().len(),
            2,
            "a fresh challenge comes back"
        );
        let v1: Value = resp.json().await.unwrap();
        assert_eq!(v1["error"], error);
    }
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_routes_and_methods_get_a_404() {
    let up = Upstream::start();
    let gw = Gateway::start(&basic_config(&up.url(), ""));
    let c = client();
    let resp = c.get(gw.url("/nowhere")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "no_route");
    assert_eq!(
        c.post(gw.url("/only-get")).send().await.unwrap().status(),
        404
    );
    assert_eq!(
        c.get(gw.url("/only-get")).send().await.unwrap().status(),
        201
    );
    // A route bound to a host matches only that host.
    let resp = c
        .get(gw.url("/anything"))
        .header("host", "free.test")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(up.hits(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_preflight_allows_the_payment_headers() {
    let up = Upstream::start();
    let gw = Gateway::start(&basic_config(&up.url(), ""));
    let resp = client()
        .request(reqwest::Method::OPTIONS, gw.url("/paid/x"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .header(
            "access-control-request-headers",
            "payment-signature, x-trace",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    let allow = h["access-control-allow-headers"].to_str().unwrap();
    for name in ["PAYMENT-SIGNATURE", "X-PAYMENT", "Content-Type", "x-trace"] {
        assert!(allow.contains(name), "{allow}");
    }
    assert!(h["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .contains("PAYMENT-REQUIRED"));
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn path_tricks_never_reach_a_priced_resource_for_free() {
    let up = Upstream::start();
    let gw = Gateway::start(&basic_config(&up.url(), ""));
    // Raw requests: an HTTP client would normalize these paths itself.
    for path in [
        "/free/../paid/x",
        "/%70aid/x",
        "//paid//x",
        "/free/./../paid/x",
    ] {
        let (status, _) = raw_request(gw.addr, &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"));
        assert_eq!(status, 402, "{path}");
    }
    let (status, body) = raw_request(gw.addr, "GET /paid%2Fx HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(status, 400);
    assert!(body.contains("bad_path"), "{body}");
    // A normalized free path is forwarded normalized.
    let (status, body) = raw_request(gw.addr, "GET /free/a/../b HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(status, 201);
    assert!(body.contains("\"path\":\"/free/b\""), "{body}");
    assert_eq!(up.hits(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_input_limits() {
    let up = Upstream::start();
    let gw = Gateway::start(&basic_config(
        &up.url(),
        "max_request_header_bytes = 8192\nbody_read_timeout_seconds = 1",
    ));
    // Oversized header block: 431.
    let resp = client()
        .get(gw.url("/free/x"))
        .header("x-big", "a".repeat(9000))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 431);

    // A body that never arrives: 408 after the body read timeout.
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /free/slow HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly-ten-b")
        .unwrap();
    let started = std::time::Instant::now();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_upstream_is_a_502() {
    let gw = Gateway::start(&basic_config(
        &format!("http://127.0.0.1:{}", free_port()),
        "",
    ));
    let resp = client().get(gw.url("/free/x")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "bad_gateway");
}

/// Sends raw bytes and returns (status, whole response text), for paths a client would rewrite.
fn raw_request(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = request.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_spraying_invalid_payments_is_rate_limited() {
    let up = Upstream::start();
    let gw = Gateway::start(&basic_config(&up.url(), "invalid_payments_per_minute = 3"));
    let c = client();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let resp = c
            .get(gw.url("/paid/x"))
            .header("payment-signature", "garbage")
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    // Three within the limit, the fourth trips it, the fifth is refused before any decoding.
    assert_eq!(statuses, [402, 402, 402, 402, 429]);
    let resp = c
        .get(gw.url("/paid/x"))
        .header("payment-signature", "garbage")
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "too_many_invalid_payments");
    // Asking for the price still works, and so do free routes.
    assert_eq!(c.get(gw.url("/paid/x")).send().await.unwrap().status(), 402);
    assert_eq!(c.get(gw.url("/free/x")).send().await.unwrap().status(), 201);
    assert_eq!(up.hits(), 1);
}
