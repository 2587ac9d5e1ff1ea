//! The management API fuzzed from its own OpenAPI document with schemathesis (PyPI), against the
//! real gateway: anvil as the chain (so the verify API and `/ready` meet a live RPC and a 5xx is
//! never the environment's fault), a real origin, a tenant with keys.
//!
//! schemathesis reads `/api/v1/openapi.json` as served, generates valid and invalid requests for
//! every operation (bodies, path and query parameters, wrong types, missing fields, odd strings)
//! and checks every answer: `not_a_server_error` (no 5xx for any client input),
//! `response_schema_conformance` (every answer has the shape the document promises for its
//! status), `status_code_conformance` (every status is one the document lists for the operation)
//! and `content_type_conformance` (the documented content type: JSON, never a framework's plain
//! text). It runs twice: as the operator (`X-Admin-Key`) and as a tenant's API key (bearer),
//! which reach different code in most handlers. A failing run prints schemathesis' report, with
//! a `curl` line that reproduces each finding.
//!
//! Not checked: that the API accepts every request the document allows and refuses every other
//! (`positive_data_acceptance`, `negative_data_rejection`). The document does not carry the
//! handlers' validation (an email must hold `@`, `limit` is 1..500, a tier must exist), so those
//! checks report the document's looseness, not faults.
//!
//! CI runs a short form (`X402_API_FUZZ_EXAMPLES`, default 8 examples per operation and phase,
//! a fixed seed; about 30 s); by hand, more: `X402_API_FUZZ_EXAMPLES=400
//! X402_API_FUZZ_SEED=$RANDOM cargo test --test api_fuzz -- --nocapture` (about 25 minutes on
//! 2 cores). `scripts/setup.sh` installs schemathesis, pinned in
//! `tests/api_fuzz/requirements.txt`, into `tests/api_fuzz/.venv`.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::chain::*;
use common::*;
use serde_json::{json, Value};

fn config(up: &str, chain: &Chain) -> String {
    let token = chain.token.to_checksum(None);
    format!(
        r#"
[server]
listen = "{{listen}}"
admin_listen = "{{admin}}"
metrics_listen = "{{metrics}}"
threads = 1

[admin]
token = "{ADMIN_TOKEN}"

[networks."eip155:84532"]
rpc_url = "{rpc}"
settler_key = "{settler}"
assets = [{{ symbol = "USDC", address = "{token}", decimals = 6, eip712_name = "USD Coin", eip712_version = "2" }}]

[tiers.tiny]
monthly_verifications = 1000
networks = ["eip155:84532"]

[[tenants]]
id = "acme"
email = "ops@acme.test"
pay_to = {{ "eip155:84532" = "{PAY_TO}" }}

[[routes]]
tenant = "acme"
path = "/paid/*"
upstream = "{up}"
price = "$0.01"
"#,
        rpc = chain.rpc.url,
        settler = chain.settler_key,
    )
}

/// Operations left out of a run, each with why. schemathesis' `--exclude-operation-id` names
/// them by their operationId (the handler's name).
///
/// - `reload_config`: reloads the config file, a process-wide change outside the API's data
///   (this gateway was not started from a file, so it would only ever answer 409).
/// - `own_revoke_key`, `own_rotate_key` (tenant run only): the stateful phase links the keys a
///   list returns to these, and revoking (or rotating with no grace) the very key the run
///   authenticates with would turn every later request into a 401 and hide whatever comes after.
///   Both are fuzzed in the operator run, where the credential is the admin token.
const EXCLUDED_ALWAYS: &[&str] = &["reload_config"];
const EXCLUDED_FOR_TENANT: &[&str] = &["own_revoke_key", "own_rotate_key"];

fn examples() -> u32 {
    std::env::var("X402_API_FUZZ_EXAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
}

fn seed() -> String {
    std::env::var("X402_API_FUZZ_SEED").unwrap_or_else(|_| "402".into())
}

/// Runs `schemathesis run` against the gateway's management API with `auth` as the credential
/// header, and fails the test with its report unless every check passed.
async fn schemathesis(what: &str, gw: &Gateway, auth: &str, excluded: &[&str]) {
    let st = repo_path("tests/api_fuzz/.venv/bin/schemathesis");
    assert!(
        st.exists(),
        "{} is missing: run scripts/setup.sh to install schemathesis",
        st.display()
    );
    // schemathesis writes nothing we keep; its working directory is a throwaway.
    let dir = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = vec![
        "run".into(),
        gw.admin_url("/api/v1/openapi.json"),
        "--url".into(),
        gw.admin_url(""),
        "--header".into(),
        auth.into(),
        "--checks".into(),
        "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance".into(),
        "--phases".into(),
        "examples,coverage,fuzzing,stateful".into(),
        "--max-examples".into(),
        examples().to_string(),
        "--seed".into(),
        seed(),
        "--workers".into(),
        "1".into(),
        "--request-timeout".into(),
        "20".into(),
        "--generation-database".into(),
        "none".into(),
        // Findings are failures; the health checks (slow data generation on a loaded 2-core
        // machine) are not.
        "--suppress-health-check".into(),
        "all".into(),
        "--continue-on-failure".into(),
        "--no-color".into(),
    ];
    for op in EXCLUDED_ALWAYS.iter().chain(excluded) {
        args.push("--exclude-operation-id".into());
        args.push((*op).into());
    }
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new(&st);
    cmd.args(&args)
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(1800), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what}: schemathesis still running after 1800 s"))
        .unwrap_or_else(|e| panic!("{what}: cannot run {}: {e}", st.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what}: schemathesis found problems ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    // It must have tested something: a document it could not read would "pass" with nothing run.
    // Its summary line reads `N generated, N passed`.
    let summary = stdout
        .lines()
        .find(|l| l.contains(" generated, ") && l.trim().ends_with(" passed"))
        .unwrap_or("")
        .trim();
    let passed: u64 = summary
        .trim_end_matches(" passed")
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        passed > 0,
        "{what}: schemathesis ran no test:\n{stdout}\n{stderr}"
    );
    println!(
        "{what}: {} examples per operation and phase, seed {}: {:.1} s: {}",
        examples(),
        seed(),
        started.elapsed().as_secs_f64(),
        summary
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_management_api_answers_every_input_as_its_document_says() {
    let chain = Chain::start().await;
    let up = Upstream::start();
    let gw = Gateway::start(&config(&up.url(), &chain));
    let c = client();
    // A tenant made through the API (its first key holds every scope) beside the file's `acme`.
    let created: Value = c
        .post(gw.admin_url("/api/v1/x402/admin/create-tenant"))
        .header("x-admin-key", ADMIN_TOKEN)
        .json(&json!({"email": "fuzz@newco.test", "tier": "tiny", "id": "newco"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = created["api_key"]["key"].as_str().unwrap().to_string();
    // A key of the file's tenant, and a narrower one, so lists have more than one entry.
    for body in [json!({}), json!({"scopes": ["usage:read"]})] {
        let resp = c
            .post(gw.admin_url("/api/v1/x402/admin/tenants/acme/keys"))
            .header("x-admin-key", ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
    }

    // The tenant first: the operator's run may suspend or change any tenant, `newco` too.
    schemathesis(
        "as a tenant's API key",
        &gw,
        &format!("Authorization: Bearer {key}"),
        EXCLUDED_FOR_TENANT,
    )
    .await;
    schemathesis(
        "as the operator",
        &gw,
        &format!("X-Admin-Key: {ADMIN_TOKEN}"),
        &[],
    )
    .await;

    // The gateway is still serving after all of it, once `acme` is as it was: the operator's run
    // changes and suspends tenants (answered then with a 403 `no_payable_network` or
    // `tenant_suspended`, as it should be).
    let resp = c
        .patch(gw.admin_url("/api/v1/x402/admin/tenants/acme"))
        .header("x-admin-key", ADMIN_TOKEN)
        .json(&json!({"tier": "free", "pay_to": {"eip155:84532": PAY_TO}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = c
        .post(gw.admin_url("/api/v1/x402/admin/tenants/acme/activate"))
        .header("x-admin-key", ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = c.get(gw.url("/paid/x")).send().await.unwrap();
    assert_eq!(resp.status(), 402, "{}", resp.text().await.unwrap());
    let resp = c.get(gw.admin_url("/health")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}
