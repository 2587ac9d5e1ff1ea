//! What a reloaded file changes, as a plain function of the running config and the file's: the
//! config to run with from now on, the key paths that change live, and those that wait for a
//! restart (or a graceful upgrade).
//!
//! Live: routes (prices, upstreams, policies...), tenants, tiers, `[rate_limit]`, network assets
//! and `min_settler_balance`, `admin.token`, and the per-request `[server]` settings
//! (`public_url`, header and body limits, CORS, invalid payments per minute).
//!
//! Restart: what the process binds or opens at start: listeners, `threads`, `log_format`,
//! `database.url`, the management listener's timeouts, `[health]`, and each network's RPC client
//! and settler keys (`rpc_url`, `rpc_timeout_seconds`, settler keys, `confirmations`; Solana's
//! `fee_payer_key` and `commitment`; networks added or removed). Their running values are kept in the effective config, so what the gateway
//! reports and serves stays what it runs. A network added to the file is left out until then (no
//! route offers a network without its backend); one removed from the file is no longer offered,
//! and its backend keeps running (queued settlements on it still land) until the restart.

use std::fmt::Display;

use serde::Serialize;

use crate::config::{Config, NetworkSigner};

/// A change that waits for a restart: its key path and why. Never carries the values (URLs and
/// keys are secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Pending {
    pub path: String,
    pub reason: String,
}

/// What a reload does.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The config to run with: the file's, with what cannot change live kept as it runs.
    pub effective: Config,
    /// Key paths changed live (`routes[3]`, `tenants."acme"`, `rate_limit`...).
    pub applied: Vec<String>,
    /// Changes in the file that take effect only after a restart or graceful upgrade.
    pub restart_required: Vec<Pending>,
}

const RESTART: &str = "bound at start: takes effect after a restart or graceful upgrade";

/// Plans the move from `running` to the config read from the file.
pub fn plan(running: &Config, file: Config) -> Plan {
    let mut eff = file;
    let mut pending = Vec::new();
    {
        let mut keep = |path: &str, reason: &str, changed: bool| {
            if changed {
                pending.push(Pending {
                    path: path.to_string(),
                    reason: reason.to_string(),
                });
            }
        };
        let (s, r) = (&mut eff.server, &running.server);
        keep("server.listen", RESTART, s.listen != r.listen);
        keep(
            "server.admin_listen",
            RESTART,
            s.admin_listen != r.admin_listen,
        );
        keep(
            "server.metrics_listen",
            RESTART,
            s.metrics_listen != r.metrics_listen,
        );
        keep("server.threads", RESTART, s.threads != r.threads);
        keep("server.log_format", RESTART, s.log_format != r.log_format);
        s.listen = r.listen;
        s.admin_listen = r.admin_listen;
        s.metrics_listen = r.metrics_listen;
        s.threads = r.threads;
        s.log_format = r.log_format;
        // The certificate files' content is re-read by the TLS reloader on its own; which files,
        // and the TLS listener itself, are set up at start.
        keep(
            "server.tls",
            "the TLS listener is set up at start: takes effect after a restart or graceful \
             upgrade (the certificate files' content reloads by itself)",
            s.tls != r.tls,
        );
        keep(
            "server.upgrade_sock",
            RESTART,
            s.upgrade_sock != r.upgrade_sock,
        );
        keep("server.pid_file", RESTART, s.pid_file != r.pid_file);
        s.tls = r.tls.clone();
        s.upgrade_sock = r.upgrade_sock.clone();
        s.pid_file = r.pid_file.clone();
        keep(
            "database.url",
            "every service holds its own pool: takes effect after a restart or graceful upgrade",
            eff.database != running.database,
        );
        eff.database = running.database.clone();
        keep(
            "sentry",
            "error reporting starts with the process: takes effect after a restart or graceful \
             upgrade",
            eff.sentry != running.sentry,
        );
        eff.sentry = running.sentry.clone();
        let (a, r) = (&mut eff.admin, &running.admin);
        keep(
            "admin.header_read_timeout_seconds",
            RESTART,
            a.header_read_timeout != r.header_read_timeout,
        );
        keep(
            "admin.idle_timeout_seconds",
            RESTART,
            a.idle_timeout != r.idle_timeout,
        );
        a.header_read_timeout = r.header_read_timeout;
        a.idle_timeout = r.idle_timeout;
        let (h, r) = (&eff.health, &running.health);
        keep(
            "health.probe_interval_seconds",
            RESTART,
            h.probe_interval != r.probe_interval,
        );
        keep(
            "health.rpc_max_age_seconds",
            RESTART,
            h.rpc_max_age != r.rpc_max_age,
        );
        keep(
            "health.store_timeout_seconds",
            RESTART,
            h.store_timeout != r.store_timeout,
        );
        eff.health = running.health.clone();

        let chain = "the network's RPC client and settler keys start with the process: takes \
                     effect after a restart or graceful upgrade";
        eff.networks.retain(|n, _| {
            let known = running.networks.contains_key(n);
            keep(
                &net_path(n),
                "a network added to the file is offered after a restart or graceful upgrade \
                 (its RPC client, settler keys and leases start with the process)",
                !known,
            );
            known
        });
        for (n, net) in eff.networks.iter_mut() {
            let old = &running.networks[n];
            let p = net_path(n);
            keep(&format!("{p}.rpc_url"), chain, net.rpc_url != old.rpc_url);
            keep(
                &format!("{p}.rpc_timeout_seconds"),
                chain,
                net.rpc_timeout != old.rpc_timeout,
            );
            match (&net.signer, &old.signer) {
                (
                    NetworkSigner::Evm {
                        settler_keys,
                        confirmations,
                        batch_max,
                        settlements_in_flight,
                        replace_after,
                    },
                    NetworkSigner::Evm {
                        settler_keys: old_keys,
                        confirmations: old_confirmations,
                        batch_max: old_batch_max,
                        settlements_in_flight: old_in_flight,
                        replace_after: old_replace_after,
                    },
                ) => {
                    keep(
                        &format!("{p}.replace_after_seconds"),
                        chain,
                        replace_after != old_replace_after,
                    );
                    keep(
                        &format!("{p}.settlements_in_flight"),
                        chain,
                        settlements_in_flight != old_in_flight,
                    );
                    keep(&format!("{p}.batch_max"), chain, batch_max != old_batch_max);
                    keep(
                        &format!("{p}.settler_keys"),
                        chain,
                        settler_keys != old_keys,
                    );
                    keep(
                        &format!("{p}.confirmations"),
                        chain,
                        confirmations != old_confirmations,
                    );
                }
                (
                    NetworkSigner::Solana {
                        fee_payer_key,
                        commitment,
                        ..
                    },
                    NetworkSigner::Solana {
                        fee_payer_key: old_key,
                        commitment: old_commitment,
                        ..
                    },
                ) => {
                    keep(
                        &format!("{p}.fee_payer_key"),
                        chain,
                        fee_payer_key != old_key,
                    );
                    keep(
                        &format!("{p}.commitment"),
                        chain,
                        commitment != old_commitment,
                    );
                }
                // One CAIP-2 id is one chain family: the signer's kind cannot change.
                (a, b) => keep(&format!("{p}.settler_keys"), chain, a != b),
            }
            net.rpc_url = old.rpc_url.clone();
            net.rpc_timeout = old.rpc_timeout;
            net.signer = old.signer.clone();
        }
        for n in running.networks.keys() {
            keep(
                &net_path(n),
                "removed from the file: no longer offered; its RPC client and settler keys keep \
                 running (queued settlements still land) until a restart or graceful upgrade",
                !eff.networks.contains_key(n),
            );
        }
    }
    let applied = live_changes(running, &eff);
    Plan {
        effective: eff,
        applied,
        restart_required: pending,
    }
}

fn net_path(n: &impl Display) -> String {
    format!("networks.\"{n}\"")
}

/// The key paths where `eff` differs from `running` (only live parts can differ by now).
fn live_changes(running: &Config, eff: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut note = |path: String, changed: bool| {
        if changed {
            out.push(path);
        }
    };
    let (s, r) = (&eff.server, &running.server);
    note("server.public_url".into(), s.public_url != r.public_url);
    note(
        "server.max_payment_header_bytes".into(),
        s.max_payment_header_bytes != r.max_payment_header_bytes,
    );
    note(
        "server.max_request_header_bytes".into(),
        s.max_request_header_bytes != r.max_request_header_bytes,
    );
    note(
        "server.body_read_timeout_seconds".into(),
        s.body_read_timeout != r.body_read_timeout,
    );
    note(
        "server.upstream_read_timeout_seconds".into(),
        s.upstream_read_timeout != r.upstream_read_timeout,
    );
    note(
        "server.cors_allow_origin".into(),
        s.cors_allow_origin != r.cors_allow_origin,
    );
    note(
        "server.invalid_payments_per_minute".into(),
        s.invalid_payments_per_minute != r.invalid_payments_per_minute,
    );
    note("admin.token".into(), eff.admin.token != running.admin.token);
    for (n, net) in &eff.networks {
        if let Some(old) = running.networks.get(n) {
            let p = net_path(n);
            note(format!("{p}.assets"), net.assets != old.assets);
            note(
                format!("{p}.min_settler_balance"),
                net.min_settler_balance != old.min_settler_balance,
            );
        }
    }
    keyed(
        &mut note,
        "tiers",
        running.tiers.iter().map(|(k, v)| (k.as_str(), v)),
        eff.tiers.iter().map(|(k, v)| (k.as_str(), v)),
    );
    keyed(
        &mut note,
        "tenants",
        running.tenants.iter().map(|t| (t.id.as_str(), t)),
        eff.tenants.iter().map(|t| (t.id.as_str(), t)),
    );
    let n = running.routes.len().max(eff.routes.len());
    for i in 0..n {
        note(
            format!("routes[{i}]"),
            running.routes.get(i) != eff.routes.get(i),
        );
    }
    note("rate_limit".into(), eff.rate_limit != running.rate_limit);
    out
}

/// `section."key"` for every key added, removed or changed between two keyed collections.
fn keyed<'a, T: PartialEq + 'a>(
    note: &mut impl FnMut(String, bool),
    section: &str,
    old: impl Iterator<Item = (&'a str, &'a T)>,
    new: impl Iterator<Item = (&'a str, &'a T)>,
) {
    let old: Vec<_> = old.collect();
    let new: Vec<_> = new.collect();
    for (k, v) in &new {
        let before = old.iter().find(|(o, _)| o == k).map(|(_, v)| *v);
        note(format!("{section}.\"{k}\""), before != Some(*v));
    }
    for (k, _) in &old {
        note(
            format!("{section}.\"{k}\""),
            !new.iter().any(|(n, _)| n == k),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
    const KEY2: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

    fn config(extra: &str, price: &str, settler: &str, listen: &str) -> Config {
        let text = format!(
            r#"
[server]
listen = "{listen}"
[networks."eip155:84532"]
rpc_url = "http://127.0.0.1:8545"
settler_key = "{settler}"
assets = [{{ symbol = "USDC", address = "0x036CbD53842c5426634e7929541eC2318f3dCF7e", decimals = 6, eip712_name = "USDC", eip712_version = "2" }}]
[[tenants]]
id = "acme"
pay_to = {{ "eip155:84532" = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C" }}
[[routes]]
tenant = "acme"
path = "/paid/*"
upstream = "http://127.0.0.1:9000"
price = "{price}"
{extra}
"#
        );
        Config::from_toml(&text, &|_| None).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn an_unchanged_file_changes_nothing() {
        let c = config("", "$0.01", KEY, "127.0.0.1:8402");
        let p = plan(&c, c.clone());
        assert!(p.applied.is_empty(), "{:?}", p.applied);
        assert!(p.restart_required.is_empty());
        assert_eq!(p.effective, c);
    }

    #[test]
    fn prices_and_new_routes_apply_live() {
        let old = config("", "$0.01", KEY, "127.0.0.1:8402");
        let route = "[[routes]]\ntenant = \"acme\"\npath = \"/new/*\"\nupstream = \"http://127.0.0.1:9000\"\nprice = \"free\"\n";
        let new = config(route, "$0.02", KEY, "127.0.0.1:8402");
        let p = plan(&old, new.clone());
        assert_eq!(p.applied, vec!["routes[0]", "routes[1]"]);
        assert!(p.restart_required.is_empty());
        assert_eq!(p.effective, new);
    }

    #[test]
    fn listeners_and_settler_keys_wait_for_a_restart_and_keep_running_values() {
        let old = config("", "$0.01", KEY, "127.0.0.1:8402");
        let new = config("", "$0.02", KEY2, "127.0.0.1:8502");
        let p = plan(&old, new);
        let paths: Vec<_> = p.restart_required.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["server.listen", "networks.\"eip155:84532\".settler_keys"]
        );
        assert_eq!(p.applied, vec!["routes[0]"], "the price still applies");
        assert_eq!(p.effective.server.listen, old.server.listen);
        assert_eq!(
            p.effective.networks.values().next().unwrap().signer,
            old.networks.values().next().unwrap().signer
        );
        // No value, secret or not, is ever in a reason.
        for r in &p.restart_required {
            assert!(!r.reason.contains("0x"), "{}", r.reason);
            assert!(!r.reason.contains("8502"), "{}", r.reason);
        }
    }

    #[test]
    fn a_new_network_waits_for_a_restart_and_is_not_offered_meanwhile() {
        let old = config("", "$0.01", KEY, "127.0.0.1:8402");
        let extra = format!(
            "[networks.\"eip155:8453\"]\nrpc_url = \"http://127.0.0.1:8545\"\nsettler_key = \"{KEY}\"\n\
             assets = [{{ symbol = \"USDC\", address = \"0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913\", decimals = 6, eip712_name = \"USD Coin\", eip712_version = \"2\" }}]\n"
        );
        let new = config(&extra, "$0.01", KEY, "127.0.0.1:8402");
        let p = plan(&old, new);
        assert_eq!(p.restart_required.len(), 1);
        assert_eq!(p.restart_required[0].path, "networks.\"eip155:8453\"");
        assert_eq!(p.effective.networks.len(), 1);
    }

    #[test]
    fn tenants_tiers_and_limits_are_named_by_key() {
        let old = config("", "$0.01", KEY, "127.0.0.1:8402");
        let extra = "[tiers.gold]\nmonthly_verifications = 5\nnetworks = [\"*\"]\n\
                     [[tenants]]\nid = \"beta\"\n\
                     [rate_limit]\nproxy.per_ip = { rate = 5, burst = 10 }\n";
        let new = config(extra, "$0.01", KEY, "127.0.0.1:8402");
        let p = plan(&old, new);
        assert_eq!(
            p.applied,
            vec!["tiers.\"gold\"", "tenants.\"beta\"", "rate_limit"]
        );
    }
}
