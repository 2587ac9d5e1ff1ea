//! TLS and HTTP/2 at the edge: the real gateway terminating TLS with a certificate from a local CA
//! made here, an HTTPS client that trusts only that CA, and real payments on anvil over HTTP/1.1
//! and over HTTP/2 (chosen by ALPN). The x402 headers and the money-safety rules must not depend
//! on the protocol: a 402 over h2 carries the same challenge, an unpaid or replayed h2 request
//! never reaches the origin, and h2 streams multiplexed on one connection are paid one by one.
//! The certificate is swapped on disk and served without a restart.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use alloy::primitives::U256;
use common::chain::*;
use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use reqwest::Version;
use x402_gate::config::Config;

const HOST: &str = "gate.test";
const PRICE: u64 = 10_000;

/// A CA of the test's own, and leaf certificates for `gate.test` signed by it.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        TestCa { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn leaf(&self) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec![HOST.to_string()]).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            // The chain as operators deploy it: leaf, then the CA.
            cert_pem: format!("{}{}", cert.pem(), self.issuer.pem()),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

fn write_leaf(dir: &Path, leaf: &Leaf) {
    std::fs::write(dir.join("cert.pem"), &leaf.cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &leaf.key_pem).unwrap();
}

fn tls_section(dir: &Path) -> String {
    format!(
        "\n[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    )
}

/// An HTTPS client that trusts only `ca`, reaching `gate.test` at `addr`. `h2`: ALPN offers
/// `h2` and `http/1.1` (the server chooses h2); otherwise HTTP/1.1 only.
fn tls_client(ca: &str, addr: SocketAddr, h2: bool) -> reqwest::Client {
    let b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .resolve(HOST, addr)
        .tls_info(true)
        .timeout(Duration::from_secs(30));
    let b = if h2 { b } else { b.http1_only() };
    b.build().unwrap()
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("https://{HOST}:{}{path}", addr.port())
}

/// Unpaid, paid, refused and replayed requests over one client; returns the proofs it paid with.
async fn pay_over(
    http: &reqwest::Client,
    version: Version,
    gw: &Gateway,
    up: &Upstream,
    chain: &Chain,
    payer: &alloy::signers::local::PrivateKeySigner,
) {
    let label = format!("{version:?}");
    let paid = url(gw.addr, "/paid/report");
    // The challenge: same headers as over plain HTTP/1.1, origin untouched.
    let hits = up.hits();
    let resp = http.get(&paid).send().await.unwrap();
    assert_eq!(resp.version(), version, "{label}");
    assert_eq!(resp.status(), 402, "{label}");
    assert_eq!(resp.headers()["cache-control"], "no-store", "{label}");
    let exposed = resp.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(exposed.contains("PAYMENT-REQUIRED"), "{label}: {exposed}");
    let v2 = decode_b64_json(resp.headers()["payment-required"].to_str().unwrap());
    assert_eq!(
        v2["resource"]["url"],
        format!("https://{HOST}:{}/paid/report", gw.addr.port()),
        "{label}: resource.url names the scheme and authority the client used"
    );
    let v1: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v1["x402Version"], 1, "{label}");
    assert_eq!(up.hits(), hits, "{label}: a 402 never reaches the origin");

    // A header that does not decode: a fresh 402 with the reason, origin untouched.
    let resp = http
        .get(&paid)
        .header("PAYMENT-SIGNATURE", "garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 402, "{label}");
    let refusal = decode_b64_json(resp.headers()["payment-required"].to_str().unwrap());
    assert!(
        refusal["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid_payload"),
        "{label}: {refusal}"
    );
    assert_eq!(
        up.hits(),
        hits,
        "{label}: a bad proof never reaches the origin"
    );

    // Paid: the origin sees https in X-Forwarded-Proto and never the proof.
    let offer = v2["accepts"][0].clone();
    let before = chain
        .balance(offer["payTo"].as_str().unwrap().parse().unwrap())
        .await;
    let auth = Authorization::for_offer(&offer, payer.address());
    let header = v2_header(&offer, auth.payload(&auth.sign(payer)));
    let resp = http
        .get(&paid)
        .header("payment-signature", &header)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), version, "{label}");
    assert_eq!(resp.status(), 201, "{label}");
    let receipt = decode_b64_json(resp.headers()["payment-response"].to_str().unwrap());
    assert_eq!(receipt["success"], true, "{label}: {receipt}");
    assert!(receipt["transaction"].as_str().unwrap().starts_with("0x"));
    let echo: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https", "{label}");
    assert!(
        echo["headers"].get("payment-signature").is_none(),
        "{label}: the origin never sees the proof"
    );
    assert_eq!(up.hits(), hits + 1, "{label}");
    let after = chain
        .balance(offer["payTo"].as_str().unwrap().parse().unwrap())
        .await;
    assert_eq!(after - before, U256::from(PRICE), "{label}: one transfer");

    // The same proof again: refused before the origin, nothing moves.
    let resp = http
        .get(&paid)
        .header("payment-signature", &header)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 402, "{label}");
    let refusal = decode_b64_json(resp.headers()["payment-required"].to_str().unwrap());
    assert!(
        refusal["error"]
            .as_str()
            .unwrap()
            .contains("duplicate_settlement"),
        "{label}: {refusal}"
    );
    assert_eq!(
        up.hits(),
        hits + 1,
        "{label}: a replay never reaches the origin"
    );
    let last = chain
        .balance(offer["payTo"].as_str().unwrap().parse().unwrap())
        .await;
    assert_eq!(last, after, "{label}: a replay moves nothing");

    // A free route: forwarded, with the scheme the client used.
    let resp = http.get(url(gw.addr, "/free/x")).send().await.unwrap();
    assert_eq!(resp.status(), 201, "{label}");
    let echo: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https", "{label}");
}

#[tokio::test(flavor = "multi_thread")]
async fn payments_over_tls_on_http1_and_http2() {
    let chain = Chain::start().await;
    let up = Upstream::start();
    let pay_to = new_signer().address();
    let payer = new_signer();
    chain.mint(payer.address(), 1_000_000).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("x402-gate test CA");
    write_leaf(dir.path(), &ca.leaf());
    let cfg = evm_config(
        &up.url(),
        &chain.rpc.url,
        &chain.settler_key,
        &chain.token.to_checksum(None),
        &pay_to.to_checksum(None),
    ) + &tls_section(dir.path());
    let gw = Gateway::start(&cfg);

    let h1 = tls_client(&ca.pem(), gw.addr, false);
    pay_over(&h1, Version::HTTP_11, &gw, &up, &chain, &payer).await;
    let h2 = tls_client(&ca.pem(), gw.addr, true);
    pay_over(&h2, Version::HTTP_2, &gw, &up, &chain, &payer).await;

    // Eight payments as concurrent streams of one h2 connection: each paid once, each answered
    // with its own receipt.
    let resp = h2.get(url(gw.addr, "/paid/many")).send().await.unwrap();
    let v2 = decode_b64_json(resp.headers()["payment-required"].to_str().unwrap());
    let offer = v2["accepts"][0].clone();
    let hits = up.hits();
    let before = chain.balance(pay_to).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let auth = Authorization::for_offer(&offer, payer.address());
        let header = v2_header(&offer, auth.payload(&auth.sign(&payer)));
        let (h2, u) = (h2.clone(), url(gw.addr, "/paid/many"));
        tasks.push(tokio::spawn(async move {
            let r = h2
                .get(u)
                .header("payment-signature", header)
                .send()
                .await
                .unwrap();
            assert_eq!(r.version(), Version::HTTP_2);
            let receipt = decode_b64_json(r.headers()["payment-response"].to_str().unwrap());
            (
                r.status(),
                receipt["transaction"].as_str().unwrap().to_string(),
            )
        }));
    }
    let mut txs = Vec::new();
    for t in tasks {
        let (status, tx) = t.await.unwrap();
        assert_eq!(status, 201);
        txs.push(tx);
    }
    // Each stream's receipt names the transaction that settled its payment: its own, or the
    // batch it went out in (the chain has Multicall3), as the ledger has it, once per payment.
    let db = x402_gate::store::Store::connect(&gw.database_url)
        .await
        .unwrap();
    let mut ledger: Vec<String> = db
        .ledger(8)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.tx_hash)
        .collect();
    ledger.sort();
    txs.sort();
    assert_eq!(
        txs, ledger,
        "eight settlements, each receipt naming its own"
    );
    assert_eq!(up.hits(), hits + 8);
    assert_eq!(chain.balance(pay_to).await - before, U256::from(8 * PRICE));

    // Plain HTTP on the TLS port gets no answer that a client could take for the gateway's.
    let plain = client()
        .get(format!("http://{}/free/x", gw.addr))
        .send()
        .await;
    assert!(
        plain.is_err() || plain.unwrap().status() != 201,
        "no plaintext service on a TLS listener"
    );
}

/// `[server.tls] listen` adds a TLS listener beside the plain one; each tells the origin what
/// the client used.
#[tokio::test(flavor = "multi_thread")]
async fn a_tls_listener_beside_the_plain_one() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("x402-gate test CA");
    write_leaf(dir.path(), &ca.leaf());
    let tls_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = basic_config(&up.url(), "")
        + &tls_section(dir.path())
        + &format!("listen = \"{tls_addr}\"\nhttp2 = false\n");
    let gw = Gateway::start(&cfg);
    let resp = client().get(gw.url("/free/x")).send().await.unwrap();
    let echo: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(echo["headers"]["x-forwarded-proto"], "http");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(tls_addr).is_err() {
        assert!(Instant::now() < deadline, "the TLS listener did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // http2 = false: ALPN offers only HTTP/1.1, so an h2-capable client gets HTTP/1.1.
    let resp = tls_client(&ca.pem(), tls_addr, true)
        .get(url(tls_addr, "/free/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), Version::HTTP_11);
    let echo: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
}

/// The leaf certificate a fresh connection is served.
async fn served_leaf(ca_pems: &[String], addr: SocketAddr) -> Vec<u8> {
    let mut b = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .resolve(HOST, addr)
        .tls_info(true)
        .pool_max_idle_per_host(0);
    for pem in ca_pems {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap());
    }
    let resp = b
        .build()
        .unwrap()
        .get(url(addr, "/free/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("the peer certificate")
        .to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renewed_certificate_is_served_without_a_restart_and_a_broken_one_is_not() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let old_ca = TestCa::new("old CA");
    let new_ca = TestCa::new("new CA");
    let first = old_ca.leaf();
    write_leaf(dir.path(), &first);
    let gw = Gateway::start(&(basic_config(&up.url(), "") + &tls_section(dir.path())));
    let cas = [old_ca.pem(), new_ca.pem()];
    assert_eq!(served_leaf(&cas, gw.addr).await, first.der);

    // A connection kept open across the swap keeps working.
    let kept = tls_client(&old_ca.pem(), gw.addr, true);
    assert_eq!(
        kept.get(url(gw.addr, "/free/a"))
            .send()
            .await
            .unwrap()
            .status(),
        201
    );

    // Renewal, as certbot does it: new files, no signal.
    let renewed = new_ca.leaf();
    write_leaf(dir.path(), &renewed);
    let deadline = Instant::now() + Duration::from_secs(20);
    while served_leaf(&cas, gw.addr).await != renewed.der {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was not served within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        kept.get(url(gw.addr, "/free/b"))
            .send()
            .await
            .unwrap()
            .status(),
        201,
        "an open connection outlives the swap"
    );

    // A key that does not match its certificate: refused, the renewed pair keeps serving.
    let other = new_ca.leaf();
    std::fs::write(dir.path().join("key.pem"), &other.key_pem).unwrap();
    tokio::time::sleep(tls_check_period() + Duration::from_secs(1)).await;
    assert_eq!(served_leaf(&cas, gw.addr).await, renewed.der);
}

fn tls_check_period() -> Duration {
    x402_gate::tls::CHECK_EVERY
}

#[test]
fn check_reports_tls_file_errors_with_their_key_paths() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("x402-gate test CA");
    let leaf = ca.leaf();
    let other = ca.leaf();
    let base = basic_config("http://127.0.0.1:9", "")
        .replace("{listen}", "127.0.0.1:0")
        .replace("{admin}", "127.0.0.1:0")
        .replace("{metrics}", "127.0.0.1:0");
    let errors = |tls: &str| -> Vec<String> {
        match Config::from_toml(&(base.clone() + tls), &|_| None) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    };

    let missing = errors(&tls_section(dir.path()));
    assert!(
        missing
            .iter()
            .any(|e| e.starts_with("server.tls.cert: cannot read")),
        "{missing:?}"
    );

    std::fs::write(dir.path().join("cert.pem"), &leaf.cert_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), &other.key_pem).unwrap();
    let mismatch = errors(&tls_section(dir.path()));
    assert!(
        mismatch
            .iter()
            .any(|e| e.starts_with("server.tls.key: the private key does not belong")),
        "{mismatch:?}"
    );

    std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
    let garbage = errors(&tls_section(dir.path()));
    assert!(
        garbage
            .iter()
            .any(|e| e.starts_with("server.tls.key:") && e.contains("no PEM private key")),
        "{garbage:?}"
    );

    std::fs::write(dir.path().join("key.pem"), &leaf.key_pem).unwrap();
    assert_eq!(errors(&tls_section(dir.path())), Vec::<String>::new());
    let no_key = errors(&format!(
        "\n[server.tls]\ncert = \"{}\"\n",
        dir.path().join("cert.pem").display()
    ));
    assert!(
        no_key
            .iter()
            .any(|e| e.starts_with("server.tls.key: is required")),
        "{no_key:?}"
    );
}
