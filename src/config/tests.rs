use super::*;

const SETTLER: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";

fn env(name: &str) -> Option<String> {
    (name == "SETTLER_KEY").then(|| SETTLER.to_string())
}

fn valid() -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:8402"
public_url = "https://api.example.com/"

[networks."eip155:84532"]
rpc_url = "http://127.0.0.1:8545"
settler_key = "${{SETTLER_KEY}}"
assets = [{{ symbol = "USDC", address = "0x036CbD53842c5426634e7929541eC2318f3dCF7e", decimals = 6, eip712_name = "USDC", eip712_version = "2" }}]

[[tenants]]
id = "acme"
tier = "starter"
pay_to = {{ "eip155:84532" = "{PAY_TO}" }}

[[routes]]
tenant = "acme"
path = "/v1/forecast/*"
methods = ["get"]
upstream = "http://127.0.0.1:9000"
price = "$0.01"

[[routes]]
tenant = "acme"
path = "/health"
upstream = "https://example.org"
price = "free"
"#
    )
}

fn errors_of(text: &str) -> Vec<String> {
    Config::from_toml(text, &env)
        .map(|_| Vec::new())
        .unwrap_or_else(|e| e.0.iter().map(|e| e.to_string()).collect())
}

/// Asserts that `text` is refused with an error at `path` whose message contains `needle`.
fn assert_refused(text: &str, path: &str, needle: &str) {
    let errors = Config::from_toml(text, &env).expect_err("config should be refused");
    assert!(
        errors
            .0
            .iter()
            .any(|e| e.path == path && e.message.contains(needle)),
        "no error at `{path}` containing `{needle}` in:\n{errors}"
    );
}

#[test]
fn valid_config_resolves_defaults() {
    let c = Config::from_toml(&valid(), &env).unwrap();
    assert_eq!(
        c.server.public_url.as_deref(),
        Some("https://api.example.com")
    );
    assert_eq!(c.database.url, "sqlite://x402-gate.db");
    assert_eq!(
        c.server.upstream_read_timeout,
        std::time::Duration::from_secs(60)
    );
    assert_eq!(c.routes.len(), 2);
    let r = &c.routes[0];
    assert_eq!(r.path, PathPattern::Prefix("/v1/forecast".into()));
    // GET implies HEAD, so HEAD cannot fall through to a free route.
    assert_eq!(
        r.methods.as_deref(),
        Some(&["GET".to_string(), "HEAD".to_string()][..])
    );
    assert_eq!(r.settle, SettlePolicy::After);
    assert_eq!(r.charged, ChargedStatuses::default());
    assert!(!r.case_insensitive && !r.allow_upgrade);
    assert_eq!(r.max_timeout_seconds, 60);
    assert_eq!(r.networks, vec!["eip155:84532".parse().unwrap()]);
    assert!(c.routes[1].upstream.tls);
    assert_eq!(c.routes[1].upstream.port, 443);
    match &c.networks.values().next().unwrap().signer {
        NetworkSigner::Evm { settler_keys, .. } => {
            assert_eq!(settler_keys.len(), 1);
            assert_eq!(settler_keys[0].expose(), SETTLER)
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !format!("{c:?}").contains(SETTLER),
        "secrets must not be printed"
    );
}

#[test]
fn unknown_keys_are_all_reported_with_paths() {
    let text = valid()
        .replace("[server]", "[server]\nlisten_port = 1")
        .replace("price = \"free\"", "price = \"free\"\nupstrem = \"x\"");
    let errors = errors_of(&text);
    assert!(
        errors.contains(&"server.listen_port: unknown key".to_string()),
        "{errors:?}"
    );
    assert!(
        errors.contains(&"routes[1].upstrem: unknown key".to_string()),
        "{errors:?}"
    );
}

#[test]
fn unknown_tenant() {
    assert_refused(
        &valid().replace(
            "tenant = \"acme\"\npath = \"/health\"",
            "tenant = \"acne\"\npath = \"/health\"",
        ),
        "routes[1].tenant",
        "no tenant `acne`",
    );
}

#[test]
fn network_without_asset() {
    let text = valid().replace(
        "[[tenants]]",
        "[networks.\"eip155:8453\"]\nrpc_url = \"http://x\"\nsettler_key = \"${SETTLER_KEY}\"\n\n[[tenants]]",
    );
    assert_refused(
        &text,
        "networks.\"eip155:8453\".assets",
        "at least one asset",
    );
}

#[test]
fn price_more_precise_than_asset() {
    assert_refused(
        &valid().replace("\"$0.01\"", "\"$0.0000001\""),
        "routes[0].price",
        "7 decimal places but the asset allows 6",
    );
}

#[test]
fn pay_to_that_does_not_parse() {
    assert_refused(
        &valid().replace(PAY_TO, "0x1234"),
        "tenants[0].pay_to.\"eip155:84532\"",
        "not an EVM address",
    );
    // A mixed-case address with a broken checksum is a typo, not an address.
    let typo = PAY_TO.replace("Bc6", "bC6");
    assert_refused(
        &valid().replace(PAY_TO, &typo),
        "tenants[0].pay_to.\"eip155:84532\"",
        "checksum",
    );
    let solana = valid().replace(
        &format!("\"eip155:84532\" = \"{PAY_TO}\""),
        &format!("\"eip155:84532\" = \"{PAY_TO}\", \"solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1\" = \"{PAY_TO}\""),
    );
    assert_refused(
        &solana,
        "tenants[0].pay_to.\"solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1\"",
        "base58",
    );
}

#[test]
fn route_network_without_pay_to() {
    let text = valid()
        .replace(
            "[[tenants]]",
            "[networks.\"eip155:8453\"]\nrpc_url = \"http://x\"\nsettler_key = \"${SETTLER_KEY}\"\nassets = [{ symbol = \"USDC\", address = \"0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913\", decimals = 6, eip712_name = \"USD Coin\", eip712_version = \"2\" }]\n\n[[tenants]]",
        )
        .replace("price = \"$0.01\"", "price = \"$0.01\"\nnetworks = [\"eip155:84532\", \"eip155:8453\"]");
    assert_refused(
        &text,
        "routes[0].networks[1]",
        "has no pay_to for `eip155:8453`",
    );
}

#[test]
fn two_listeners_on_one_address() {
    let text = valid().replace(
        "listen = \"127.0.0.1:8402\"",
        "listen = \"127.0.0.1:8402\"\nadmin_listen = \"127.0.0.1:8402\"",
    );
    assert_refused(
        &text,
        "server.admin_listen",
        "already used by server.listen",
    );
    // Port 0 listeners each get their own port.
    let zeros = valid().replace(
        "listen = \"127.0.0.1:8402\"",
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"",
    );
    assert!(errors_of(&zeros).is_empty(), "{:?}", errors_of(&zeros));
}

#[test]
fn upstream_that_is_not_http() {
    assert_refused(
        &valid().replace("http://127.0.0.1:9000", "ftp://127.0.0.1:9000"),
        "routes[0].upstream",
        "not http or https",
    );
    assert_refused(
        &valid().replace("http://127.0.0.1:9000", "127.0.0.1:9000"),
        "routes[0].upstream",
        "",
    );
    assert_refused(
        &valid().replace("http://127.0.0.1:9000", "http://127.0.0.1:9000/api"),
        "routes[0].upstream",
        "scheme://host[:port] only",
    );
}

#[test]
fn unset_variable() {
    let errors = Config::from_toml(&valid(), &|_| None).unwrap_err();
    assert!(
        errors
            .0
            .iter()
            .any(|e| e.path == "networks.\"eip155:84532\".settler_key"
                && e.message.contains("`SETTLER_KEY` is not set")),
        "{errors}"
    );
}

#[test]
fn every_error_is_reported_in_one_pass() {
    let text = valid()
        .replace("\"$0.01\"", "\"$0.0000001\"")
        .replace("https://example.org", "gopher://x")
        .replace("tier = \"starter\"", "tier = \"platinum\"")
        .replace("[server]", "[server]\nthreads = 0");
    let errors = errors_of(&text);
    for expected in ["server.threads", "tenants[0].tier", "routes[1].upstream"] {
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "{expected} missing from {errors:?}"
        );
    }
}

#[test]
fn other_refusals() {
    for bad in ["0", "3601"] {
        assert_refused(
            &valid().replace(
                "listen = \"127.0.0.1:8402\"",
                &format!("listen = \"127.0.0.1:8402\"\nupstream_read_timeout_seconds = {bad}"),
            ),
            "server.upstream_read_timeout_seconds",
            "1..3600",
        );
    }
    assert_refused(
        &valid().replace("\"/health\"", "\"health\""),
        "routes[1].path",
        "must start with /",
    );
    assert_refused(
        &valid().replace("\"/health\"", "\"/he*lth\""),
        "routes[1].path",
        "final /*",
    );
    assert_refused(
        &valid().replace("[\"get\"]", "[\"GE T\"]"),
        "routes[0].methods[0]",
        "not an HTTP method",
    );
    assert_refused(
        &valid().replace("\"$0.01\"", "\"0.01\""),
        "routes[0].price",
        "is not \"free\"",
    );
    assert_refused(
        &valid().replace("\"$0.01\"", "\"$0\""),
        "routes[0].price",
        "zero",
    );
    assert_refused(
        &valid().replace("price = \"$0.01\"", "price = \"$0.01\"\nsettle = \"later\""),
        "routes[0].settle",
        "before, after, deferred",
    );
    assert_refused(
        &valid().replace(
            "price = \"$0.01\"",
            "price = \"$0.01\"\ncharge_statuses = [\"2xx\", \"1xx\"]",
        ),
        "routes[0].charge_statuses[1]",
        "2xx, 3xx, 4xx, 5xx",
    );
    assert_refused(
        &valid().replace(
            "price = \"$0.01\"",
            "price = \"$0.01\"\ncharge_statuses = [\"100\"]",
        ),
        "routes[0].charge_statuses[0]",
        "final status",
    );
    assert_refused(
        &valid().replace(
            "price = \"$0.01\"",
            "price = \"$0.01\"\ncharge_statuses = []",
        ),
        "routes[0].charge_statuses",
        "at least one",
    );
    assert_refused(
        &valid().replace(
            "price = \"$0.01\"",
            "price = \"$0.01\"\nmax_timeout_seconds = 3",
        ),
        "routes[0].max_timeout_seconds",
        "at least 10",
    );
    assert_refused(
        &valid().replace("eip712_name = \"USDC\", ", ""),
        "networks.\"eip155:84532\".assets[0].eip712_name",
        "is required",
    );
    assert_refused(
        &valid().replace("[server]", "[server]\nthreads = \"two\""),
        "server.threads",
        "invalid type",
    );
    assert_refused("[server\n", "", "not valid TOML");
}

#[test]
fn tier_gating_of_route_networks() {
    // The free tier does not allow Ethereum mainnet.
    let text = valid()
        .replace("tier = \"starter\"", "tier = \"free\"")
        .replace(
            "[[tenants]]",
            "[networks.\"eip155:1\"]\nrpc_url = \"http://x\"\nsettler_key = \"${SETTLER_KEY}\"\nassets = [{ symbol = \"USDC\", address = \"0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48\", decimals = 6, eip712_name = \"USD Coin\", eip712_version = \"2\" }]\n\n[[tenants]]",
        )
        .replace(
            &format!("\"eip155:84532\" = \"{PAY_TO}\""),
            &format!("\"eip155:84532\" = \"{PAY_TO}\", \"eip155:1\" = \"{PAY_TO}\""),
        );
    // By default the route silently offers only what the tier allows...
    let c = Config::from_toml(&text, &env).unwrap();
    assert_eq!(c.routes[0].networks, vec!["eip155:84532".parse().unwrap()]);
    // ...and asking for more is an error.
    let explicit = text.replace(
        "price = \"$0.01\"",
        "price = \"$0.01\"\nnetworks = [\"eip155:1\"]",
    );
    assert_refused(
        &explicit,
        "routes[0].networks[0]",
        "does not allow `eip155:1`",
    );
}

#[test]
fn admin_timeouts_default_and_are_bounded() {
    let c = Config::from_toml(&valid(), &env).unwrap();
    assert_eq!(c.admin.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.admin.idle_timeout, Duration::from_secs(60));
    let set = valid().replace(
        "[server]",
        "[admin]\nheader_read_timeout_seconds = 1\nidle_timeout_seconds = 5\n\n[server]",
    );
    let c = Config::from_toml(&set, &env).unwrap();
    assert_eq!(c.admin.header_read_timeout, Duration::from_secs(1));
    assert_eq!(c.admin.idle_timeout, Duration::from_secs(5));
    assert_refused(
        &valid().replace(
            "[server]",
            "[admin]\nheader_read_timeout_seconds = 0\n\n[server]",
        ),
        "admin.header_read_timeout_seconds",
        "between 1 and 3600",
    );
    assert_refused(
        &valid().replace(
            "[server]",
            "[admin]\nidle_timeout_seconds = 86400\n\n[server]",
        ),
        "admin.idle_timeout_seconds",
        "between 1 and 3600",
    );
}

#[test]
fn rpc_timeout_defaults_to_ten_seconds_and_must_be_positive() {
    let config = Config::from_toml(&valid(), &env).unwrap();
    let net = config.networks.values().next().unwrap();
    assert_eq!(net.rpc_timeout, std::time::Duration::from_secs(10));
    let text = valid().replace(
        "rpc_url = \"http://127.0.0.1:8545\"",
        "rpc_url = \"http://127.0.0.1:8545\"\nrpc_timeout_seconds = 3",
    );
    let config = Config::from_toml(&text, &env).unwrap();
    let net = config.networks.values().next().unwrap();
    assert_eq!(net.rpc_timeout, std::time::Duration::from_secs(3));
    assert_refused(
        &text.replace("rpc_timeout_seconds = 3", "rpc_timeout_seconds = 0"),
        "networks.\"eip155:84532\".rpc_timeout_seconds",
        "at least 1",
    );
}

#[test]
fn batching_defaults_on_and_is_bounded() {
    let evm = |text: &str| match Config::from_toml(text, &env)
        .unwrap()
        .networks
        .values()
        .next()
        .unwrap()
        .signer
        .clone()
    {
        NetworkSigner::Evm {
            batch_max,
            settlements_in_flight,
            ..
        } => (batch_max, settlements_in_flight),
        other => panic!("{other:?}"),
    };
    assert_eq!(evm(&valid()), (64, 4));
    let with = |keys: &str| {
        valid().replace(
            "rpc_url = \"http://127.0.0.1:8545\"",
            &format!("rpc_url = \"http://127.0.0.1:8545\"\n{keys}"),
        )
    };
    assert_eq!(
        evm(&with("batch_max = 1\nsettlements_in_flight = 16")),
        (1, 16)
    );
    let net = "networks.\"eip155:84532\"";
    for bad in ["batch_max = 0", "batch_max = 257"] {
        assert_refused(
            &with(bad),
            &format!("{net}.batch_max"),
            "from 1 (no batching) to 256",
        );
    }
    for bad in ["settlements_in_flight = 0", "settlements_in_flight = 65"] {
        assert_refused(
            &with(bad),
            &format!("{net}.settlements_in_flight"),
            "from 1 to 64",
        );
    }
    let replace_after = |text: &str| match Config::from_toml(text, &env)
        .unwrap()
        .networks
        .values()
        .next()
        .unwrap()
        .signer
        .clone()
    {
        NetworkSigner::Evm { replace_after, .. } => replace_after,
        other => panic!("{other:?}"),
    };
    assert_eq!(replace_after(&valid()), Some(Duration::from_secs(15)));
    assert_eq!(
        replace_after(&with("replace_after_seconds = 4")),
        Some(Duration::from_secs(4))
    );
    assert_eq!(replace_after(&with("replace_after_seconds = 0")), None);
    assert_refused(
        &with("replace_after_seconds = 31"),
        &format!("{net}.replace_after_seconds"),
        "from 1 to 30",
    );
}

#[test]
fn log_format_defaults_to_text_and_is_validated() {
    let c = Config::from_toml(&valid(), &env).unwrap();
    assert_eq!(c.server.log_format, LogFormat::Text);
    let json = valid().replace("[server]", "[server]\nlog_format = \"json\"");
    let c = Config::from_toml(&json, &env).unwrap();
    assert_eq!(c.server.log_format, LogFormat::Json);
    assert_refused(
        &valid().replace("[server]", "[server]\nlog_format = \"JSON\""),
        "server.log_format",
        "not one of text, json",
    );
}

#[test]
fn health_defaults_and_bounds() {
    use std::time::Duration;
    let config = Config::from_toml(&valid(), &env).unwrap();
    assert_eq!(config.health.probe_interval, Duration::from_secs(5));
    assert_eq!(config.health.rpc_max_age, Duration::from_secs(30));
    assert_eq!(config.health.store_timeout, Duration::from_secs(2));
    let with = |body: &str| format!("{}\n[health]\n{body}\n", valid());
    let config = Config::from_toml(
        &with("probe_interval_seconds = 1\nrpc_max_age_seconds = 2\nstore_timeout_seconds = 5"),
        &env,
    )
    .unwrap();
    assert_eq!(config.health.rpc_max_age, Duration::from_secs(2));
    assert_refused(
        &with("probe_interval_seconds = 0"),
        "health.probe_interval_seconds",
        "between 1 and",
    );
    assert_refused(
        &with("probe_interval_seconds = 10\nrpc_max_age_seconds = 10"),
        "health.rpc_max_age_seconds",
        "longer than health.probe_interval_seconds (10)",
    );
    assert_refused(
        &with("store_timeout_seconds = 61"),
        "health.store_timeout_seconds",
        "between 1 and 60",
    );
}

#[test]
fn min_settler_balance_is_whole_coins_in_a_string() {
    let net_line = "rpc_url = \"http://127.0.0.1:8545\"";
    let with =
        |v: &str| valid().replace(net_line, &format!("{net_line}\nmin_settler_balance = {v}"));
    let floor = |v: &str| {
        Config::from_toml(&with(v), &env)
            .unwrap()
            .networks
            .values()
            .next()
            .unwrap()
            .min_settler_balance
    };
    assert_eq!(
        Config::from_toml(&valid(), &env)
            .unwrap()
            .networks
            .values()
            .next()
            .unwrap()
            .min_settler_balance,
        None
    );
    assert_eq!(floor("\"0.01\""), Some(10_000_000_000_000_000));
    assert_eq!(floor("\"2\""), Some(2_000_000_000_000_000_000));
    assert_eq!(floor("\".5\""), Some(500_000_000_000_000_000));
    assert_eq!(floor("\"0.000000000000000001\""), Some(1));
    let path = "networks.\"eip155:84532\".min_settler_balance";
    assert_refused(
        &with("\"0.0000000000000000001\""),
        path,
        "more than 18 decimals",
    );
    assert_refused(&with("\"1e-3\""), path, "not an amount in whole coins");
    assert_refused(&with("\"-1\""), path, "not an amount in whole coins");
    assert_refused(&with("\".\""), path, "not an amount in whole coins");
    assert_refused(&with("\"999999999999999999999999\""), path, "too large");
    // A TOML number is refused: a float cannot say 0.1 exactly.
    assert_refused(
        &with("0.01"),
        path,
        "write it as a string of whole coins, e.g. \"0.01\"",
    );
}

#[test]
fn native_amounts_use_the_chains_decimals() {
    use super::validate::parse_native_amount;
    assert_eq!(parse_native_amount("1.5", 9), Ok(1_500_000_000));
    assert!(parse_native_amount("1.0000000001", 9).is_err());
    assert!(parse_native_amount("", 18).is_err());
}

#[test]
fn rate_limits_are_optional_and_validated_with_their_paths() {
    use std::time::Duration;
    let config = Config::from_toml(&valid(), &env).unwrap();
    assert!(!config.rate_limit.any(), "no limit unless configured");
    assert!(config.rate_limit.redis_url.is_none());
    let with = |body: &str| format!("{}\n[rate_limit]\n{body}\n", valid());
    let config = Config::from_toml(
        &with(
            "redis_url = \"redis://127.0.0.1:6379/0\"\nnamespace = \"eu-1\"\nredis_timeout_ms = 50\n\
             proxy.per_ip = { rate = 2.5 }\nproxy.per_tenant = { rate = 10, burst = 40 }\n\
             admin.per_tenant = { rate = 0.5, burst = 1 }",
        ),
        &env,
    )
    .unwrap();
    let rl = &config.rate_limit;
    assert_eq!(
        rl.proxy_per_ip,
        Some(RateLimit {
            rate: 2.5,
            burst: 3
        })
    );
    assert_eq!(
        rl.proxy_per_tenant,
        Some(RateLimit {
            rate: 10.0,
            burst: 40
        })
    );
    assert_eq!(rl.admin_per_ip, None);
    assert_eq!(
        rl.admin_per_tenant,
        Some(RateLimit {
            rate: 0.5,
            burst: 1
        })
    );
    assert_eq!(rl.namespace.as_deref(), Some("eu-1"));
    assert_eq!(rl.redis_timeout, Duration::from_millis(50));
    assert!(
        format!("{rl:?}").contains("Secret(***)"),
        "the URL is a secret"
    );
    assert_refused(
        &with("proxy.per_ip = { burst = 3 }"),
        "rate_limit.proxy.per_ip.rate",
        "is required",
    );
    assert_refused(
        &with("admin.per_ip = { rate = 0 }"),
        "rate_limit.admin.per_ip.rate",
        "above 0",
    );
    assert_refused(
        &with("admin.per_tenant = { rate = 1, burst = 0 }"),
        "rate_limit.admin.per_tenant.burst",
        "between 1 and",
    );
    assert_refused(
        &with("redis_url = \"http://127.0.0.1:6379\""),
        "rate_limit.redis_url",
        "must start with redis://",
    );
    assert_refused(
        &with("namespace = \"a b\""),
        "rate_limit.namespace",
        "letters, digits",
    );
    assert_refused(
        &with("redis_timeout_ms = 0"),
        "rate_limit.redis_timeout_ms",
        "between 1 and 10000",
    );
    assert_refused(
        &with("proxy.per_ip = { rate = 1, brust = 2 }"),
        "rate_limit.proxy.per_ip.brust",
        "unknown key",
    );
}

#[test]
fn billing_is_validated_with_its_key_paths() {
    let text = r#"
[networks."eip155:84532"]
rpc_url = "http://127.0.0.1:8545"
settler_key = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
assets = [{ symbol = "USDC", address = "0x036CbD53842c5426634e7929541eC2318f3dCF7e", decimals = 6, eip712_name = "USDC", eip712_version = "2" }]
[billing.stripe]
webhook_secrets = []
api_key = "${STRIPE_KEY}"
api_base = "ftp://x"
tolerance_seconds = 0
prices = { price_a = "gold", price_b = "pro", price_c = "pro" }
[billing.x402]
network = "eip155:8453"
pay_to = "0xnot"
prices = { pro = "299", starter = "$0.0000001" }
"#;
    let errors = Config::from_toml(text, &|_| Some("sk_test".into()))
        .unwrap_err()
        .0;
    let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
    for p in [
        "billing.stripe.webhook_secrets",
        "billing.stripe.api_base",
        "billing.stripe.tolerance_seconds",
        "billing.stripe.success_url",
        "billing.stripe.cancel_url",
        "billing.stripe.prices.price_a",
        "billing.stripe.checkout_prices.pro",
        "billing.x402.network",
        "billing.x402.prices.pro",
    ] {
        assert!(paths.contains(&p), "{p} missing from {paths:?}");
    }

    let ok = r#"
[networks."eip155:84532"]
rpc_url = "http://127.0.0.1:8545"
settler_key = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
assets = [{ symbol = "USDC", address = "0x036CbD53842c5426634e7929541eC2318f3dCF7e", decimals = 6, eip712_name = "USDC", eip712_version = "2" }]
[billing.stripe]
webhook_secrets = ["${WHSEC}"]
prices = { price_b = "pro", price_c = "pro" }
checkout_prices = { pro = "price_c" }
[billing.x402]
network = "eip155:84532"
pay_to = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
prices = { pro = "$299" }
"#;
    let c = Config::from_toml(ok, &|_| Some("whsec_x".into())).unwrap();
    let s = c.billing.stripe.unwrap();
    assert_eq!(s.api_base, "https://api.stripe.com");
    assert_eq!(s.tolerance.as_secs(), 300);
    assert_eq!(s.webhook_secrets[0].expose(), "whsec_x");
    assert_eq!(s.checkout_prices["pro"], "price_c");
    assert_eq!(c.billing.x402.unwrap().period.as_secs(), 30 * 86_400);
}

mod amount_properties {
    use super::validate::parse_native_amount;
    use crate::x402::AtomicAmount;
    use proptest::prelude::*;

    proptest! {
        /// Native-coin floors (`"0.05"` ETH, in whole coins) and token prices are read by two
        /// parsers: on any text, neither panics, and where both accept they agree to the unit.
        /// They differ only where documented: floors accept `"1."` and refuse trailing zeros
        /// past the chain's decimals; prices do the opposite.
        #[test]
        fn native_amounts_agree_with_token_amounts(
            text in "[ ]?[0-9]{0,45}(\\.[0-9]{0,25})?[ ]?|[-+]?[0-9]{1,20}[eE_,.]?[0-9]{0,5}|\\PC{0,30}",
            decimals in prop::sample::select(vec![9u32, 18]),
        ) {
            let native = parse_native_amount(&text, decimals).ok();
            let trimmed = text.trim();
            let token = AtomicAmount::from_decimal(trimmed, decimals as u8).ok().map(|t| t.0);
            if native.is_some() && !trimmed.ends_with('.') {
                prop_assert_eq!(token, native);
            }
            let frac_digits = trimmed.split_once('.').map_or(0, |(_, f)| f.len());
            if token.is_some() && frac_digits <= decimals as usize {
                prop_assert_eq!(native, token);
            }
        }
    }
}
