//! The quick answer (`src/proxy/quick.rs`) on the real gateway: an unpaid request for a priced
//! route, plain enough, is answered from its head without pingora's session. What must hold: its
//! bytes are pingora's answer to the same request (but the `Date` a second may change), it
//! shares a keep-alive connection with requests pingora serves (a free route's, a paid one's
//! with a body, pipelined ones, a closing one) in any order, nothing of it reaches the origin,
//! and it counts in the metrics and the rate limits as any request. Each request's path is told
//! by `x402_quick_answers_total`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn quick_answers(gw: &Gateway) -> f64 {
    metric(&gw.metrics().await, "x402_quick_answers_total ")
}

/// Reads one whole response from `s`: its head, and the body its `Content-Length` gives.
async fn response(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte))
            .await
            .expect("a response within 10 s")
            .unwrap();
        assert_eq!(n, 1, "the connection closed mid-head: {got:?}");
        got.push(byte[0]);
    }
    let head = String::from_utf8(got).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .expect("a Content-Length");
    let mut body = vec![0u8; len];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut body))
        .await
        .expect("the body within 10 s")
        .unwrap();
    head + &String::from_utf8(body).unwrap()
}

fn status_of(response: &str) -> u16 {
    response.split(' ').nth(1).unwrap().parse().unwrap()
}

/// `response` with its `Date` value blanked: a second may pass between two answers.
fn dateless(response: &str) -> String {
    response
        .split("\r\n")
        .map(|l| {
            if l.starts_with("Date: ") {
                "Date: -"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap()
}

/// `head` (a request's head without its blank line) sent as it is, which the quick path takes,
/// then with an empty body announced, which it leaves to pingora: both answers, and how many
/// quick answers the gateway counted after each.
async fn both_ways(gw: &Gateway, s: &mut TcpStream, head: &str) -> (String, String) {
    let before = quick_answers(gw).await;
    s.write_all(format!("{head}\r\n").as_bytes()).await.unwrap();
    let quick = response(s).await;
    assert_eq!(
        quick_answers(gw).await,
        before + 1.0,
        "taken by the quick path"
    );
    s.write_all(format!("{head}Content-Length: 0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let pingoras = response(s).await;
    assert_eq!(quick_answers(gw).await, before + 1.0, "left to pingora");
    (quick, pingoras)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_402_is_byte_for_byte_the_402_pingora_writes() {
    let up = Upstream::start();
    let gw = Gateway::start(&basic_config(&up.url(), ""));
    let mut s = connect(gw.addr).await;
    let head = format!(
        "GET /paid/report?day=1 HTTP/1.1\r\nHost: {}\r\nAccept: */*\r\nUser-Agent: t/1\r\n\
         X-Request-Id: compare-1\r\n",
        gw.addr
    );
    let (quick, pingoras) = both_ways(&gw, &mut s, &head).await;
    assert_eq!(status_of(&quick), 402, "{quick}");
    assert!(quick.contains("\r\npayment-required: "), "{quick}");
    assert!(quick.contains("\r\nx-request-id: compare-1\r\n"), "{quick}");
    assert!(quick.contains("\r\nConnection: keep-alive\r\n"), "{quick}");
    assert_eq!(dateless(&quick), dateless(&pingoras));
    // A POST without a body, from a browser (a CORS `Origin`), the same way.
    let v1 = format!(
        "POST /paid/v1 HTTP/1.1\r\nHost: {}\r\nOrigin: https://app.test\r\nX-Request-Id: compare-2\r\n",
        gw.addr
    );
    let (quick, pingoras) = both_ways(&gw, &mut s, &v1).await;
    assert_eq!(dateless(&quick), dateless(&pingoras));
    // A `Host` that is not ASCII: routed on, and written back in `resource.url`, the same way.
    let odd = "GET /paid/x HTTP/1.1\r\nHost: caf\u{e9}.test\r\nX-Request-Id: compare-3\r\n";
    let (quick, pingoras) = both_ways(&gw, &mut s, odd).await;
    assert_eq!(dateless(&quick), dateless(&pingoras));
    // The tenant suspended: a 403 instead of the challenge, the same way.
    let (status, _) = admin(&gw, "/api/v1/x402/admin/tenants/acme/suspend").await;
    assert_eq!(status, 200);
    let gone = "GET /paid/x HTTP/1.1\r\nHost: a.test\r\nX-Request-Id: compare-4\r\n";
    let (quick, pingoras) = both_ways(&gw, &mut s, gone).await;
    assert_eq!(status_of(&quick), 403, "{quick}");
    assert!(quick.contains("\"error\":\"tenant_suspended\""), "{quick}");
    assert_eq!(dateless(&quick), dateless(&pingoras));
    let m = gw.metrics().await;
    assert_eq!(metric(&m, "x402_quick_answers_total "), 4.0, "{m}");
    assert_eq!(
        metric(
            &m,
            "x402_tenant_refusals_total{reason=\"tenant_suspended\"} "
        ),
        2.0
    );
    assert_eq!(up.hits(), 0, "no unpaid request reached the origin");
}

/// POSTs to the management API as the operator: the status and JSON body.
async fn admin(gw: &Gateway, path: &str) -> (u16, serde_json::Value) {
    let resp = client()
        .post(gw.admin_url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_answers_and_pingoras_share_one_keep_alive_connection_in_any_order() {
    let up = Upstream::start();
    let gw = Gateway::start(&basic_config(&up.url(), ""));
    let host = gw.addr;
    let mut s = connect(gw.addr).await;
    let unpaid = format!("GET /paid/a HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let mut statuses = Vec::new();
    for request in [
        unpaid.clone(),
        // A free route: proxied by pingora, on the same connection.
        format!("GET /free/a HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        unpaid.clone(),
        // An announced empty body: pingora's.
        format!("POST /paid/a HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n"),
        // A payment that is not one: pingora's phases refuse it.
        format!("GET /paid/a HTTP/1.1\r\nHost: {host}\r\nPAYMENT-SIGNATURE: bm90IGpzb24=\r\n\r\n"),
        unpaid.clone(),
    ] {
        s.write_all(request.as_bytes()).await.unwrap();
        statuses.push(status_of(&response(&mut s).await));
    }
    assert_eq!(statuses, [402, 201, 402, 402, 402, 402]);
    assert_eq!(quick_answers(&gw).await, 3.0);
    // A request dripped in two writes: the first read is not a whole head, so pingora's too.
    s.write_all(b"GET /paid/a HTTP/1.1\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(format!("Host: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(status_of(&response(&mut s).await), 402);
    s.write_all(unpaid.as_bytes()).await.unwrap();
    assert_eq!(status_of(&response(&mut s).await), 402);
    assert_eq!(quick_answers(&gw).await, 4.0);
    // The client says it is done: answered, then the connection ends.
    s.write_all(
        format!("GET /paid/a HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let last = response(&mut s).await;
    assert_eq!(status_of(&last), 402);
    assert!(last.contains("\r\nConnection: close\r\n"), "{last}");
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("closed within 10 s")
        .unwrap();
    assert_eq!(n, 0, "nothing after the last answer");
    let m = gw.metrics().await;
    assert_eq!(metric(&m, "x402_challenges_total "), 7.0, "{m}");
    assert_eq!(metric(&m, "x402_requests_total{route=\"priced\"} "), 8.0);
    assert_eq!(metric(&m, "x402_requests_total{route=\"free\"} "), 1.0);
    // Two requests in one write: not one whole head, so pingora's, which answers the first and
    // then the second or closes the connection (it does not pipeline).
    let mut s = connect(gw.addr).await;
    s.write_all(format!("{unpaid}{unpaid}").as_bytes())
        .await
        .unwrap();
    assert_eq!(status_of(&response(&mut s).await), 402);
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("the second answered or the connection closed within 10 s")
        .unwrap();
    assert!(
        rest.is_empty() || rest.starts_with(b"HTTP/1.1 402 "),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(quick_answers(&gw).await, 4.0);
    assert_eq!(up.hits(), 1, "only the free request reached the origin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_answers_count_against_the_rate_limits_and_are_refused_by_them() {
    let up = Upstream::start();
    let gw = Gateway::start(&format!(
        "{}\n[rate_limit]\nproxy.per_ip = {{ rate = 0.1, burst = 2 }}\n",
        basic_config(&up.url(), "")
    ));
    let mut s = connect(gw.addr).await;
    let unpaid = format!("GET /paid/a HTTP/1.1\r\nHost: {}\r\n\r\n", gw.addr);
    let mut answers = Vec::new();
    for _ in 0..3 {
        s.write_all(unpaid.as_bytes()).await.unwrap();
        answers.push(response(&mut s).await);
    }
    let statuses: Vec<u16> = answers.iter().map(|a| status_of(a)).collect();
    assert_eq!(statuses, [402, 402, 429]);
    assert!(answers[2].contains("\r\nretry-after: "), "{}", answers[2]);
    assert!(
        answers[2].contains("\"error\":\"rate_limited\""),
        "{}",
        answers[2]
    );
    // pingora's path sees the same count: the next request over the limit too.
    s.write_all(format!("GET /free/a HTTP/1.1\r\nHost: {}\r\n\r\n", gw.addr).as_bytes())
        .await
        .unwrap();
    assert_eq!(status_of(&response(&mut s).await), 429);
    let m = gw.metrics().await;
    assert_eq!(quick_answers(&gw).await, 3.0);
    assert_eq!(
        metric(&m, "x402_rate_limited_total{scope=\"proxy_ip\"} "),
        2.0,
        "{m}"
    );
    assert_eq!(metric(&m, "x402_challenges_total "), 2.0);
    assert_eq!(up.hits(), 0);
}
