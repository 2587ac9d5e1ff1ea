//! Routes as data through the real gateway: a tenant created through the API, with only its key,
//! writes a priced route in the namespace the operator gave it, a client pays it on a real chain,
//! and a second instance on the same Postgres serves it within 5 s; tenants cannot reach outside
//! their namespace or each other's routes; upstreams are checked against every kind of internal
//! address; the file's routes are read-only.

mod common;

use std::time::{Duration, Instant};

use common::chain::*;
use common::*;
use serde_json::{json, Value};

async fn call(
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
    auth: (&str, &str),
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client()
        .request(method, gw.admin_url(path))
        .header(auth.0, auth.1);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn operator() -> (&'static str, &'static str) {
    ("x-admin-key", ADMIN_TOKEN)
}

/// Creates tenant `id` paid at `pay_to`, gives it `prefix` and `host`, and returns its key.
async fn tenant(gw: &Gateway, id: &str, pay_to: &str, prefix: &str, host: &str) -> String {
    let (status, v) = call(
        gw,
        reqwest::Method::POST,
        "/api/v1/x402/admin/create-tenant",
        operator(),
        Some(
            json!({"id": id, "email": format!("{id}@x.test"), "tier": "starter",
            "pay_to": {"eip155:84532": pay_to}}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let key = v["api_key"]["key"].as_str().unwrap().to_string();
    let (status, v) = call(
        gw,
        reqwest::Method::PUT,
        &format!("/api/v1/x402/admin/tenants/{id}/namespace"),
        operator(),
        Some(json!({"hosts": [host], "path_prefix": prefix})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    key
}

fn bearer(key: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {key}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_writes_a_priced_route_and_a_client_pays_it_on_two_instances() {
    let chain = Chain::start().await;
    let up = Upstream::start();
    let pay_to = new_signer().address();
    let db = fresh_postgres_url().await;
    let cfg = format!(
        "{}\n[routes_api]\nupstream_allow = [\"127.0.0.1\"]\nmax_routes_per_tenant = 3\n",
        evm_config(
            &up.url(),
            &chain.rpc.url,
            &chain.settler_key,
            &chain.token.to_checksum(None),
            &pay_to.to_checksum(None),
        )
    );
    // Two settler keys: each instance leases one, so either can settle.
    let key_line = format!("settler_key = \"{}\"", chain.settler_key);
    let extra = chain.extra_settler_keys(1).remove(0);
    let cfg = cfg.replace(
        &key_line,
        &format!("{key_line}\nsettler_keys = [\"{extra}\"]"),
    );
    let a = Gateway::start_with_db(&cfg, &db);
    let b = Gateway::start_with_db(&cfg, &db);
    let newco_pay_to = new_signer().address().to_checksum(None);
    let key = tenant(&a, "newco", &newco_pay_to, "/newco", "newco.test").await;
    let auth = bearer(&key);

    // Before the route exists, nothing is served there.
    let before = client().get(b.url("/newco/data")).send().await.unwrap();
    assert_ne!(before.status(), 402);

    let (status, route) = call(
        &a,
        reqwest::Method::POST,
        "/api/v1/x402/routes",
        (auth.0, &auth.1),
        Some(
            json!({"path": "/newco/*", "upstream": up.url(), "price": "$0.02", "settle": "before"}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{route}");
    assert_eq!(route["tenant"], "newco");
    assert_eq!(route["served"], true);
    let id = route["id"].as_str().unwrap().to_string();

    // Instance b serves it within 5 s, with the tenant's price and payout address.
    let started = Instant::now();
    let offer = loop {
        let resp = client().get(b.url("/newco/data")).send().await.unwrap();
        if resp.status() == 402 {
            let v2 = decode_b64_json(resp.headers()["payment-required"].to_str().unwrap());
            break v2["accepts"][0].clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "instance b did not serve the new route within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(offer["amount"], "20000");
    assert_eq!(offer["payTo"], newco_pay_to);

    // A client pays it (through b); the tenant sees the payment in its usage (through a).
    let payer = new_signer();
    chain.mint(payer.address(), 1_000_000).await;
    let auth_p = Authorization::for_offer(&offer, payer.address());
    let header = v2_header(&offer, auth_p.payload(&auth_p.sign(&payer)));
    // A 503 (the instance has not leased its settler key yet) charges nothing: retry, as a
    // client told `Retry-After` does.
    let started = Instant::now();
    let paid = loop {
        let resp = client()
            .get(b.url("/newco/data"))
            .header("payment-signature", header.clone())
            .send()
            .await
            .unwrap();
        if resp.status() != 503 || started.elapsed() > Duration::from_secs(10) {
            break resp;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(paid.status(), 201);
    assert_eq!(up.hits(), 1);
    let (status, usage) = call(
        &a,
        reqwest::Method::GET,
        "/api/v1/x402/usage",
        (auth.0, &auth.1),
        None,
    )
    .await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!(usage["verified"], 1, "{usage}");
    assert_eq!(usage["revenue"][0]["route"], "/newco/*", "{usage}");

    // A price change through the API reaches b too; a delete removes the route everywhere.
    let (status, v) = call(
        &a,
        reqwest::Method::PATCH,
        &format!("/api/v1/x402/routes/{id}"),
        (auth.0, &auth.1),
        Some(json!({"price": "$0.05"})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let started = Instant::now();
    loop {
        let resp = client().get(b.url("/newco/data")).send().await.unwrap();
        let v2 = decode_b64_json(resp.headers()["payment-required"].to_str().unwrap());
        if v2["accepts"][0]["amount"] == "50000" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = call(
        &a,
        reqwest::Method::DELETE,
        &format!("/api/v1/x402/routes/{id}"),
        (auth.0, &auth.1),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let started = Instant::now();
    while client()
        .get(b.url("/newco/data"))
        .send()
        .await
        .unwrap()
        .status()
        == 402
    {
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_stay_in_their_namespace_and_upstreams_stay_public() {
    let up = Upstream::start();
    let cfg = format!(
        "{}\n[routes_api]\nupstream_allow = [\"127.0.0.1\"]\nmax_routes_per_tenant = 2\n",
        basic_config(&up.url(), "")
    );
    let gw = Gateway::start(&cfg);
    let one = tenant(&gw, "one", PAY_TO, "/one", "one.test").await;
    let two = tenant(&gw, "two", PAY_TO, "/two", "two.test").await;
    let (a1, a2) = (bearer(&one), bearer(&two));
    let post = |auth: (&'static str, String), body: Value| {
        let gw = &gw;
        async move {
            call(
                gw,
                reqwest::Method::POST,
                "/api/v1/x402/routes",
                (auth.0, &auth.1),
                Some(body),
            )
            .await
        }
    };

    // Outside its namespace: another tenant's prefix or host, the root, a catch-all.
    for body in [
        json!({"path": "/two/*", "upstream": up.url(), "price": "free"}),
        json!({"host": "two.test", "path": "/one/*", "upstream": up.url(), "price": "free"}),
        json!({"path": "/*", "upstream": up.url(), "price": "free"}),
        json!({"path": "/paid/*", "upstream": up.url(), "price": "free"}),
    ] {
        let (status, v) = post(a1.clone(), body.clone()).await;
        assert_eq!(status, 400, "{body} -> {v}");
        assert_eq!(v["error"], "invalid_route");
        assert_eq!(v["fields"][0]["field"], "host", "{v}");
    }
    // A namespace another tenant has is not given twice.
    let (status, v) = call(
        &gw,
        reqwest::Method::PUT,
        "/api/v1/x402/admin/tenants/one/namespace",
        operator(),
        Some(json!({"hosts": ["two.test"]})),
    )
    .await;
    assert_eq!(status, 409, "{v}");

    // Upstreams: every kind of internal address is refused, with the field.
    for upstream in [
        "http://127.0.0.2:9000",
        "http://localhost.:9000",
        "http://169.254.169.254",
        "http://10.1.2.3",
        "http://192.168.0.10",
        "http://[::1]:9000",
        "http://[fd00::1]",
        "http://0.0.0.0:9000",
        &gw.admin_url(""),
    ] {
        let (status, v) = post(
            a1.clone(),
            json!({"path": "/one/x", "upstream": upstream, "price": "free"}),
        )
        .await;
        assert_eq!(status, 400, "{upstream} -> {v}");
        assert_eq!(v["fields"][0]["field"], "upstream", "{upstream}: {v}");
    }

    // Validation is the file's, every error with its field.
    let (status, v) = post(
        a1.clone(),
        json!({"path": "one", "upstream": "ftp://x", "price": "ten", "colour": "red"}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = post(
        a1.clone(),
        json!({"path": "/one/v1", "upstream": "ftp://x", "price": "ten", "methods": ["GET", "NO PE"]}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    let fields: Vec<&str> = v["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    for f in ["upstream", "price", "methods[1]"] {
        assert!(fields.contains(&f), "{f} in {fields:?}");
    }

    // Inside: allowed; the allowlisted loopback origin works.
    let (status, mine) = post(
        a1.clone(),
        json!({"path": "/one/*", "upstream": up.url(), "price": "$0.01"}),
    )
    .await;
    assert_eq!(status, 201, "{mine}");
    let id = mine["id"].as_str().unwrap();
    // The limit: two routes each.
    assert_eq!(
        post(
            a1.clone(),
            json!({"host": "one.test", "path": "/a", "upstream": up.url(), "price": "free"})
        )
        .await
        .0,
        201
    );
    let (status, v) = post(
        a1.clone(),
        json!({"host": "one.test", "path": "/b", "upstream": up.url(), "price": "free"}),
    )
    .await;
    assert_eq!(
        (status, v["error"].as_str()),
        (409, Some("route_limit_reached"))
    );

    // Tenant two can neither see, change nor delete tenant one's route.
    let (_, list) = call(
        &gw,
        reqwest::Method::GET,
        "/api/v1/x402/routes",
        (a2.0, &a2.1),
        None,
    )
    .await;
    assert!(list["routes"].as_array().unwrap().is_empty(), "{list}");
    for method in [reqwest::Method::PATCH, reqwest::Method::DELETE] {
        let (status, _) = call(
            &gw,
            method,
            &format!("/api/v1/x402/routes/{id}"),
            (a2.0, &a2.1),
            Some(json!({"price": "free"})),
        )
        .await;
        assert_eq!(status, 404);
    }
    // A key without routes:write cannot write.
    let (status, v) = call(
        &gw,
        reqwest::Method::POST,
        "/api/v1/x402/admin/tenants/one/keys",
        operator(),
        Some(json!({"scopes": ["usage:read"]})),
    )
    .await;
    assert_eq!(status, 201);
    let narrow = bearer(v["key"].as_str().unwrap());
    assert_eq!(
        post(
            narrow,
            json!({"path": "/one/z", "upstream": up.url(), "price": "free"})
        )
        .await
        .0,
        403
    );

    // The file's routes are listed to the operator, read-only.
    let (_, all) = call(
        &gw,
        reqwest::Method::GET,
        "/api/v1/x402/routes",
        operator(),
        None,
    )
    .await;
    let config_route = all["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["source"] == "config")
        .expect("the file's routes are listed")
        .clone();
    let (status, v) = call(
        &gw,
        reqwest::Method::PATCH,
        &format!(
            "/api/v1/x402/routes/{}",
            config_route["id"].as_str().unwrap()
        ),
        operator(),
        Some(json!({"price": "free"})),
    )
    .await;
    assert_eq!((status, v["error"].as_str()), (403, Some("config_route")));

    // The tenant's route is served; the file's /paid/* still matches first for its own paths.
    let resp = client().get(gw.url("/one/data")).send().await.unwrap();
    assert_eq!(resp.status(), 402);
}
