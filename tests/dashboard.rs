//! The dashboard: its sessions and CSRF protection through the real management listener, the
//! committed build matching its sources, and the whole product in a real browser (Debian's
//! chromium driven by playwright-core, `dashboard/tests/browser.mjs`) against a real gateway on a
//! real chain with real payments made first. Screenshots land in
//! `target/dashboard-screenshots/`.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::chain::*;
use common::*;
use reqwest::header::{COOKIE, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A key of every scope for `tenant`, minted by the operator.
async fn key_for(gw: &Gateway, tenant: &str) -> String {
    let resp = client()
        .post(gw.admin_url(&format!("/api/v1/x402/admin/tenants/{tenant}/keys")))
        .header("x-admin-key", ADMIN_TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    resp.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Signs in to the dashboard with `token`: the `Set-Cookie` header and the session's view.
async fn login(gw: &Gateway, token: &str) -> (String, Value) {
    let resp = client()
        .post(gw.admin_url("/dashboard/api/login"))
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let set_cookie = resp.headers()[SET_COOKIE].to_str().unwrap().to_string();
    (set_cookie, resp.json().await.unwrap())
}

/// `name=value` of a `Set-Cookie` header, to send back.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_string()
}

async fn send(
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = client()
        .request(method, gw.admin_url(path))
        .header(COOKIE, cookie)
        .json(&json!({}));
    if let Some(token) = csrf {
        req = req.header("x-csrf-token", token);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_are_httponly_samesite_cookies_and_changes_need_the_csrf_token() {
    let up = Upstream::start();
    let gw = Gateway::start(&basic_config(&up.url(), ""));
    let key = key_for(&gw, "acme").await;
    let post = reqwest::Method::POST;
    let get = reqwest::Method::GET;

    // The page itself, with a strict CSP; /dashboard redirects to it.
    let resp = client()
        .get(gw.admin_url("/dashboard"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 308);
    let resp = client()
        .get(gw.admin_url("/dashboard/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let csp = resp.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(resp.text().await.unwrap().contains("/dashboard/assets/"));

    // A wrong credential is refused and starts no session.
    let resp = client()
        .post(gw.admin_url("/dashboard/api/login"))
        .json(&json!({"token": "x402_live_nope-nope-nope-nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get(SET_COOKIE).is_none());

    // The cookie: HttpOnly, SameSite=Strict, not Secure over plain HTTP; Secure behind TLS.
    let (set_cookie, view) = login(&gw, &key).await;
    assert!(set_cookie.starts_with("x402_session="), "{set_cookie}");
    assert!(set_cookie.contains("; HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("; SameSite=Strict"), "{set_cookie}");
    assert!(!set_cookie.contains("Secure"), "{set_cookie}");
    assert_eq!(view["role"], "tenant");
    assert_eq!(view["tenant"], "acme");
    // The key never comes back to the page, in the body or the cookie.
    assert!(!view.to_string().contains(&key) && !set_cookie.contains(&key));
    let csrf = view["csrf"].as_str().unwrap().to_string();
    let cookie = cookie_pair(&set_cookie);
    let resp = client()
        .post(gw.admin_url("/dashboard/api/login"))
        .header("x-forwarded-proto", "https")
        .json(&json!({ "token": key }))
        .send()
        .await
        .unwrap();
    assert!(resp.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .ends_with("; Secure"));

    // Reads need no CSRF token; a change without it, or with a wrong one, is refused and does
    // nothing; with it, it is made.
    let (status, keys) = send(&gw, get.clone(), "/api/v1/x402/keys", &cookie, None).await;
    assert_eq!(status, 200, "{keys}");
    let count = keys.as_array().unwrap().len();
    for bad in [None, Some("wrong"), Some("")] {
        let (status, e) = send(&gw, post.clone(), "/api/v1/x402/keys", &cookie, bad).await;
        assert_eq!(status, 403, "{bad:?}: {e}");
        assert_eq!(e["error"], "csrf_failed");
    }
    let (_, keys) = send(&gw, get.clone(), "/api/v1/x402/keys", &cookie, None).await;
    assert_eq!(keys.as_array().unwrap().len(), count, "nothing was created");
    let (status, created) =
        send(&gw, post.clone(), "/api/v1/x402/keys", &cookie, Some(&csrf)).await;
    assert_eq!(status, 201, "{created}");
    // Another session's token is no good either.
    let (other_cookie, other) = login(&gw, &key).await;
    let (status, _) = send(
        &gw,
        post.clone(),
        "/api/v1/x402/keys",
        &cookie,
        other["csrf"].as_str(),
    )
    .await;
    assert_eq!(status, 403);
    // A tenant's session cannot act as the operator.
    let (status, e) = send(
        &gw,
        post.clone(),
        "/api/v1/x402/admin/tenants/acme/suspend",
        &cookie,
        Some(&csrf),
    )
    .await;
    assert_eq!(
        (status.as_u16(), e["error"].as_str()),
        (403, Some("operator_only"))
    );

    // The operator's session: the same rule on its changes.
    let (op_set, op) = login(&gw, ADMIN_TOKEN).await;
    assert_eq!(op["role"], "operator");
    let op_cookie = cookie_pair(&op_set);
    let suspend = "/api/v1/x402/admin/tenants/acme/suspend";
    let (status, _) = send(&gw, post.clone(), suspend, &op_cookie, None).await;
    assert_eq!(status, 403);
    let (status, t) = send(
        &gw,
        get.clone(),
        "/api/v1/x402/admin/tenants/acme",
        &op_cookie,
        None,
    )
    .await;
    assert_eq!(
        (status.as_u16(), t["status"].as_str()),
        (200, Some("active"))
    );
    let (status, t) = send(&gw, post.clone(), suspend, &op_cookie, op["csrf"].as_str()).await;
    assert_eq!(
        (status.as_u16(), t["status"].as_str()),
        (200, Some("suspended"))
    );

    // Signing out needs the token too, then ends the session on the server.
    let (status, _) = send(&gw, post.clone(), "/dashboard/api/logout", &cookie, None).await;
    assert_eq!(status, 403);
    let resp = client()
        .post(gw.admin_url("/dashboard/api/logout"))
        .header(COOKIE, &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let cleared = resp.headers()[SET_COOKIE].to_str().unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let (status, e) = send(&gw, get.clone(), "/api/v1/x402/keys", &cookie, None).await;
    assert_eq!(
        (status.as_u16(), e["error"].as_str()),
        (401, Some("session_expired"))
    );
    let (status, _) = send(&gw, get.clone(), "/dashboard/api/session", &cookie, None).await;
    assert_eq!(status, 401);

    // Revoking the key a session signed in with ends that session's access at once.
    let other_cookie = cookie_pair(&other_cookie);
    let (status, _) = send(
        &gw,
        get.clone(),
        "/dashboard/api/session",
        &other_cookie,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let resp = client()
        .get(gw.admin_url("/api/v1/x402/admin/tenants/acme/keys"))
        .header("x-admin-key", ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let keys: Value = resp.json().await.unwrap();
    let prefix = key.trim_start_matches("x402_live_");
    let id = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| prefix.starts_with(k["prefix"].as_str().unwrap()))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let resp = client()
        .post(gw.admin_url(&format!("/api/v1/x402/admin/keys/{id}/revoke")))
        .header("x-admin-key", ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (status, _) = send(&gw, get.clone(), "/api/v1/x402/keys", &other_cookie, None).await;
    assert_eq!(status, 401);
    let (status, _) = send(&gw, get, "/dashboard/api/session", &other_cookie, None).await;
    assert_eq!(status, 401);
}

/// `dashboard/dist` (embedded in the binary) is what `dashboard/src` builds to: rebuilt into a
/// temporary directory with the pinned toolchain and compared file by file.
#[test]
fn the_committed_dashboard_build_matches_its_sources() {
    let dashboard = repo_path("dashboard");
    let vite = dashboard.join("node_modules/vite/bin/vite.js");
    assert!(
        vite.exists(),
        "{} is missing: run scripts/setup.sh (it runs npm ci in dashboard/)",
        vite.display()
    );
    let out = tempfile::tempdir().unwrap();
    let status = Command::new("node")
        .arg(&vite)
        .args(["build", "--logLevel", "warn", "--emptyOutDir", "--outDir"])
        .arg(out.path())
        .current_dir(&dashboard)
        .status()
        .expect("node runs");
    assert!(status.success(), "the dashboard does not build");
    let list = |root: &PathBuf| -> Vec<(String, Vec<u8>)> {
        let mut files = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for e in std::fs::read_dir(&dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    dirs.push(p);
                } else {
                    let rel = p.strip_prefix(root).unwrap().display().to_string();
                    files.push((rel, std::fs::read(&p).unwrap()));
                }
            }
        }
        files.sort();
        files
    };
    let built = list(&out.path().to_path_buf());
    let committed = list(&dashboard.join("dist"));
    let names = |v: &[(String, Vec<u8>)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&committed),
        names(&built),
        "dashboard/dist is stale: run `cd dashboard && npm run build` and commit dist/"
    );
    for ((name, a), (_, b)) in committed.iter().zip(&built) {
        assert!(
            a == b,
            "dashboard/dist/{name} is stale: run `cd dashboard && npm run build` and commit dist/"
        );
    }
}

/// Whether the routes API (issue 11, items 1-2) is in this build.
async fn routes_api(gw: &Gateway) -> bool {
    let resp = client()
        .get(gw.admin_url("/api/v1/x402/routes"))
        .header("x-admin-key", ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    resp.status() != 404
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_in_a_real_browser_after_real_payments() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: run scripts/setup.sh (it installs Debian's chromium)"
    );
    let chain = Chain::start().await;
    let up = Upstream::start();
    let pay_to = new_signer().address();
    // The tenant's routes go to the test origin on loopback, which the operator allows.
    let cfg = format!(
        "{}\n[routes_api]\nupstream_allow = [\"127.0.0.1\"]\n",
        evm_config(
            &up.url(),
            &chain.rpc.url,
            &chain.settler_key,
            &chain.token.to_checksum(None),
            &pay_to.to_checksum(None),
        )
    );
    let gw = Gateway::start(&cfg);
    let payer = new_signer();
    chain.mint(payer.address(), 10_000_000).await;
    let key = key_for(&gw, "acme").await;
    // The operator gives acme the ground its dashboard route is written on.
    let ns = client()
        .put(gw.admin_url("/api/v1/x402/admin/tenants/acme/namespace"))
        .header("x-admin-key", ADMIN_TOKEN)
        .json(&serde_json::json!({"path_prefix": "/dash"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ns.status(), 200);

    // Two real payments, settled on the chain, before the browser looks.
    const PAYMENTS: usize = 2;
    for i in 0..PAYMENTS {
        let path = format!("/paid/report-{i}");
        let resp = client().get(gw.url(&path)).send().await.unwrap();
        let offer = decode_b64_json(resp.headers()["payment-required"].to_str().unwrap())
            ["accepts"][0]
            .clone();
        let auth = Authorization::for_offer(&offer, payer.address());
        let header = v2_header(&offer, auth.payload(&auth.sign(&payer)));
        let resp = client()
            .get(gw.url(&path))
            .header("payment-signature", header)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "payment {i}: {}", resp.status());
        assert!(resp.headers().contains_key("payment-response"));
    }
    let routes_available = routes_api(&gw).await;

    let shots = repo_path("target/dashboard-screenshots");
    let out = tokio::process::Command::new("node")
        .arg(repo_path("dashboard/tests/browser.mjs"))
        .env("DASH_URL", gw.admin_url("/dashboard/"))
        .env("TENANT", "acme")
        .env("TENANT_KEY", &key)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("EXPECT_PAYMENTS", PAYMENTS.to_string())
        .env("GATEWAY_URL", gw.url(""))
        .env("UPSTREAM_URL", up.url())
        .env(
            "PAYER_KEY",
            format!("0x{}", alloy::hex::encode(payer.to_bytes())),
        )
        .env("PAY_SCRIPT", repo_path("tools/x402-fetch-pay.mjs"))
        .env("SCREENSHOT_DIR", &shots)
        .env("CHROMIUM", &chromium)
        .output()
        .await
        .expect("node runs (scripts/setup.sh installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "no result from the browser script:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(
        out.status.success() && result["ok"] == true,
        "the browser test failed: {}\nchecks passed: {}\nstderr: {}",
        result["error"].as_str().unwrap_or(""),
        result["checks"],
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = if routes_available {
        "available"
    } else {
        "unavailable"
    };
    assert_eq!(result["routes"], expected, "{result}");
    eprintln!(
        "browser checks passed ({}): {}",
        result["checks"].as_array().unwrap().len(),
        result["checks"]
    );
    for page in [
        "01-sign-in",
        "02-usage",
        "03-payments",
        "05-keys",
        "09-tenants",
    ] {
        assert!(
            shots.join(format!("{page}.png")).exists(),
            "no screenshot {page}"
        );
    }
}
