//! Every shipped config file passes `--check` (config/production.toml with the environment
//! variables it names set); a broken one is refused with every error and its key path, through
//! the real binary. The systemd unit runs the production config, reloads with SIGHUP and is
//! hardened.

mod common;

use std::process::Command;

fn check(path: &std::path::Path) -> std::process::Output {
    check_with(path, &[])
}

fn check_with(path: &std::path::Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_x402-gate"));
    cmd.arg("--config").arg(path).arg("--check");
    for (name, _) in PRODUCTION_ENV {
        cmd.env_remove(name);
    }
    cmd.env_remove("SETTLER_KEY")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// What config/production.toml takes from the environment (deploy/systemd's env file), with
/// values of the right shape.
const PRODUCTION_ENV: &[(&str, &str)] = &[
    ("X402_PUBLIC_URL", "https://api.acme.example"),
    ("X402_PRIVATE_ADDR", "10.0.0.5"),
    (
        "X402_DATABASE_URL",
        "postgres://x402:secret@db.internal:5432/x402?sslmode=require",
    ),
    ("X402_REDIS_URL", "redis://redis.internal:6379"),
    (
        "X402_ADMIN_TOKEN",
        "a-long-random-operator-token-0123456789",
    ),
    ("BASE_RPC_URL", "https://base-mainnet.example/v2/rpc-key"),
    (
        "BASE_SETTLER_KEY_1",
        "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    ),
    (
        "BASE_SETTLER_KEY_2",
        "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    ),
    (
        "BASE_SETTLER_KEY_3",
        "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    ),
    (
        "ACME_PAYOUT_ADDRESS",
        "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
    ),
];

#[test]
fn every_shipped_config_passes_check() {
    let dir = common::repo_path("config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = if path.ends_with("production.toml") {
                check_with(&path, PRODUCTION_ENV)
            } else {
                check(&path)
            };
            assert!(
                out.status.success(),
                "{} failed --check:\n{}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 3,
        "expected config/example.toml, local.toml and production.toml"
    );
}

#[test]
fn the_production_config_names_every_secret_it_lacks() {
    let path = common::repo_path("config/production.toml");
    let out = check_with(&path, PRODUCTION_ENV);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("1 networks, 1 tenants, 2 routes"),
        "{stdout}"
    );
    // Without its environment, every variable is named with its key path.
    let out = check_with(&path, &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for (name, _) in PRODUCTION_ENV {
        if *name == "X402_PRIVATE_ADDR" {
            continue; // it has a default
        }
        assert!(
            stderr.contains(&format!("environment variable `{name}` is not set")),
            "`{name}` not named:\n{stderr}"
        );
    }
    // Postgres and Redis: what several instances share.
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("url = \"${X402_DATABASE_URL}\""));
    assert!(text.contains("redis_url = \"${X402_REDIS_URL}\""));
}

#[test]
fn the_systemd_unit_runs_the_production_config_reloads_with_sighup_and_is_hardened() {
    let unit =
        std::fs::read_to_string(common::repo_path("deploy/systemd/x402-gate.service")).unwrap();
    let value = |key: &str| -> Vec<&str> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .collect()
    };
    assert_eq!(
        value("ExecStart"),
        ["/usr/local/bin/x402-gate --config /etc/x402-gate/production.toml"]
    );
    assert_eq!(value("ExecReload"), ["/bin/kill -HUP $MAINPID"]);
    assert_eq!(value("KillSignal"), ["SIGTERM"]);
    for (key, want) in [
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("CapabilityBoundingSet", ""),
        ("MemoryDenyWriteExecute", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("SystemCallFilter", "@system-service"),
    ] {
        assert!(value(key).contains(&want), "{key}={want} missing");
    }
    // Where systemd is installed, it must accept the unit (paths pointed at this build).
    let Ok(analyze) = which("systemd-analyze") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join("x402-gate.env");
    std::fs::write(&env, "").unwrap();
    let local = unit
        .replace("/usr/local/bin/x402-gate", env!("CARGO_BIN_EXE_x402-gate"))
        .replace("/etc/x402-gate/x402-gate.env", env.to_str().unwrap());
    let path = dir.path().join("x402-gate.service");
    std::fs::write(&path, local).unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}

#[test]
fn a_broken_config_is_refused_with_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[server]
listen = "127.0.0.1:9999"
admin_listen = "127.0.0.1:9999"
[networks."eip155:84532"]
rpc_url = "http://127.0.0.1:8545"
settler_key = "${X402_TEST_UNSET_VARIABLE}"
assets = []
[[routes]]
tenant = "ghost"
path = "/x"
upstream = "ftp://example.org"
price = "$0.01"
colour = "blue"
"#,
    )
    .unwrap();
    let out = check(&path);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "server.admin_listen: 127.0.0.1:9999 is already used by server.listen",
        "networks.\"eip155:84532\".settler_key: environment variable `X402_TEST_UNSET_VARIABLE` is not set",
        "networks.\"eip155:84532\".assets: a network needs at least one asset",
        "routes[0].tenant: no tenant `ghost`",
        "routes[0].upstream:",
        "routes[0].colour: unknown key",
    ] {
        assert!(stderr.contains(expected), "missing `{expected}` in:\n{stderr}");
    }
}

#[test]
fn version_names_the_build() {
    let out = Command::new(env!("CARGO_BIN_EXE_x402-gate"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let expected = format!("x402-gate {} (", env!("CARGO_PKG_VERSION"));
    assert!(text.starts_with(&expected), "{text}");
    // The build: the target triple and the profile, and the commit when built from a checkout.
    assert!(
        text.contains("-linux-") || text.contains("-apple-") || text.contains("-windows-"),
        "{text}"
    );
    assert!(text.contains("debug") || text.contains("release"), "{text}");
}

#[test]
fn log_format_is_validated_with_its_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\nlog_format = \"xml\"\n").unwrap();
    let out = check(&path);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server.log_format"), "{stderr}");
    assert!(stderr.contains("text, json"), "{stderr}");
}
