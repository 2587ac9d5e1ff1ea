//! What anyone may ask: the chains and assets this gateway accepts (with a key, which of them
//! the caller's tier allows), liveness and readiness.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use crate::health::HealthBoard;

use super::extract::TenantKey;
use super::*;

#[utoipa::path(get, path = "/api/v1/x402/supported-chains", responses((status = 200, body = SupportedChains),
    (status = 401, body = ErrorBody, description = "`unauthorized`: a key was sent and is not valid (the key is optional)")))]
pub async fn supported_chains(
    State(state): State<AdminState>,
    // The key is optional here; a bad one is still an error rather than silently ignored.
    me: Option<TenantKey>,
) -> ApiResult<Json<SupportedChains>> {
    let tier = match me {
        Some(me) => Some(state.tenants.state(&me.tenant).await?.tier.clone()),
        None => None,
    };
    let chains = state
        .config
        .load()
        .networks
        .values()
        .map(|n| ChainView {
            network: n.network.to_string(),
            v1_name: n.network.v1_name().map(String::from),
            assets: n
                .assets
                .iter()
                .map(|a| AssetView {
                    symbol: a.symbol.clone(),
                    address: a.address.clone(),
                    decimals: a.decimals,
                })
                .collect(),
            allowed: tier.as_ref().map(|t| t.allows(&n.network)),
        })
        .collect();
    Ok(Json(SupportedChains {
        chains,
        tier: tier.map(|t| t.name),
    }))
}

#[utoipa::path(get, path = "/health", responses((status = 200, body = Status)))]
pub async fn health() -> Json<Status> {
    Json(Status {
        status: "ok".into(),
    })
}

/// How long `/ready` waits, right after start, for the first round of probes.
const FIRST_PROBE_WAIT: Duration = Duration::from_secs(5);

/// Readiness, judged now: not ready (503) when the store does not answer within
/// `health.store_timeout_seconds`, when a probed network's RPC has not answered a probe within
/// `health.rpc_max_age_seconds`, or when every settler key this instance holds on a network is
/// below its `min_settler_balance`; degraded (200) when some settler is below its floor.
#[utoipa::path(get, path = "/ready", responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn ready(State(state): State<AdminState>) -> (StatusCode, Json<Readiness>) {
    let store = match tokio::time::timeout(state.health.config.store_timeout, async {
        state.store.get().await?.ping().await
    })
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::warn!("/ready: the store: {e}");
            // The cause is logged; the body names the kind only (no URL, no credentials).
            Err("the database does not answer".to_string())
        }
        Err(_) => Err(format!(
            "the database did not answer within {} s",
            state.health.config.store_timeout.as_secs()
        )),
    };
    state.health.wait_first_round(FIRST_PROBE_WAIT).await;
    let body = judge(&state.health, Instant::now(), store);
    let status = if body.status == "not_ready" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(body))
}

/// The readiness rules, over the store's answer and the probe's board.
pub fn judge(board: &HealthBoard, now: Instant, store: Result<(), String>) -> Readiness {
    let mut reasons = Vec::new();
    let mut warnings = Vec::new();
    if let Err(e) = &store {
        reasons.push(format!("store: {e}"));
    }
    let max_age = board.config.rpc_max_age.as_secs();
    let mut networks = Vec::new();
    for n in board.snapshot() {
        let rpc_ok = board.rpc_fresh(&n, now);
        let age = n.last_success.map(|t| now.saturating_duration_since(t));
        if n.checked && !rpc_ok {
            reasons.push(match age {
                None => format!("{}: the RPC has not answered a probe yet", n.network),
                Some(age) => format!(
                    "{}: the RPC has not answered for {} s (limit {max_age} s)",
                    n.network,
                    age.as_secs()
                ),
            });
        }
        if let Some(floor) = n.floor {
            // The chain's smallest native unit, which balances and floors are kept in.
            let unit = if n.network.starts_with("solana:") {
                "lamports"
            } else {
                "wei"
            };
            for s in n.settlers.iter().filter(|s| s.below_floor) {
                warnings.push(format!(
                    "{}: settler {} holds {} {unit}, below min_settler_balance {floor} {unit}",
                    n.network, s.settler, s.balance
                ));
            }
            // Every key this instance signs with is low: it cannot be trusted to settle here,
            // so the load balancer should prefer an instance with a funded key.
            let held: Vec<_> = n.settlers.iter().filter(|s| s.held).collect();
            if !held.is_empty() && held.iter().all(|s| s.below_floor) {
                reasons.push(format!(
                    "{}: every settler key this instance holds is below min_settler_balance",
                    n.network
                ));
            }
        }
        networks.push(NetworkReadiness {
            network: n.network.clone(),
            checked: n.checked,
            rpc_ok: n.checked && rpc_ok,
            last_answer_seconds_ago: age.map(|a| (a.as_secs_f64() * 10.0).round() / 10.0),
            error: n.last_error.clone(),
            block: n.height,
            min_settler_balance: n.floor.map(|f| f.to_string()),
            settlers: n
                .settlers
                .iter()
                .map(|s| SettlerReadiness {
                    settler: s.settler.clone(),
                    balance: s.balance.to_string(),
                    held: s.held,
                    below_floor: s.below_floor,
                })
                .collect(),
        });
    }
    let status = if !reasons.is_empty() {
        "not_ready"
    } else if !warnings.is_empty() {
        "degraded"
    } else {
        "ready"
    };
    Readiness {
        status: status.into(),
        reasons,
        warnings,
        store: StoreHealth {
            ok: store.is_ok(),
            error: store.err(),
        },
        networks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HealthConfig;
    use crate::payments::chain::{ChainHealth, SettlerFunds};

    fn board(floor: Option<u128>) -> HealthBoard {
        HealthBoard::new(
            HealthConfig {
                probe_interval: Duration::from_secs(1),
                rpc_max_age: Duration::from_secs(10),
                store_timeout: Duration::from_secs(1),
            },
            &[
                ("eip155:1".into(), true, floor),
                ("solana:x".into(), false, None),
            ],
        )
    }

    fn funds(settler: &str, balance: u128, held: bool) -> SettlerFunds {
        SettlerFunds {
            settler: settler.into(),
            balance,
            held,
        }
    }

    #[test]
    fn readiness_follows_the_store_the_rpc_age_and_the_held_settlers() {
        let t0 = Instant::now();
        let b = board(Some(100));
        // Never probed: not ready; the unprobed Solana network does not count.
        let r = judge(&b, t0, Ok(()));
        assert_eq!(r.status, "not_ready");
        assert_eq!(r.reasons.len(), 1, "{:?}", r.reasons);
        assert!(r.reasons[0].starts_with("eip155:1:"));

        let probe = |settlers| {
            Ok(ChainHealth {
                height: Some(1),
                settlers,
            })
        };
        b.record("eip155:1", t0, probe(vec![funds("0xA", 500, true)]));
        assert_eq!(judge(&b, t0, Ok(())).status, "ready");
        assert_eq!(
            judge(&b, t0, Err("down".into())).status,
            "not_ready",
            "the store"
        );
        let late = judge(&b, t0 + Duration::from_secs(11), Ok(()));
        assert_eq!(late.status, "not_ready");
        assert!(late.reasons[0].contains("has not answered for 11 s"));

        // One of two held keys low: degraded; the only held key low: not ready; a low key held
        // by another instance only warns.
        b.record(
            "eip155:1",
            t0,
            probe(vec![funds("0xA", 99, true), funds("0xB", 500, true)]),
        );
        let r = judge(&b, t0, Ok(()));
        assert_eq!((r.status.as_str(), r.warnings.len()), ("degraded", 1));
        b.record(
            "eip155:1",
            t0,
            probe(vec![funds("0xA", 99, true), funds("0xB", 5, false)]),
        );
        let r = judge(&b, t0, Ok(()));
        assert_eq!((r.status.as_str(), r.warnings.len()), ("not_ready", 2));
        b.record(
            "eip155:1",
            t0,
            probe(vec![funds("0xA", 500, true), funds("0xB", 5, false)]),
        );
        assert_eq!(judge(&b, t0, Ok(())).status, "degraded");
        // No floor: balances are reported, never judged.
        let b = board(None);
        b.record("eip155:1", t0, probe(vec![funds("0xA", 0, true)]));
        let r = judge(&b, t0, Ok(()));
        assert_eq!(r.status, "ready");
        assert_eq!(r.networks[0].settlers[0].balance, "0");
    }
}
