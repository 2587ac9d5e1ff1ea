//! Every shipped config file passes `--check`; a broken one is refused with every error and its
//! key path, through the real binary.

mod common;

use std::process::Command;

fn check(path: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_x402-gate"))
        .arg("--config")
        .arg(path)
        .arg("--check")
        .env_remove("SETTLER_KEY")
        .output()
        .unwrap()
}

#[test]
fn every_shipped_config_passes_check() {
    let dir = common::repo_path("config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = check(&path);
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
        checked >= 2,
        "expected config/example.toml and config/local.toml"
    );
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
