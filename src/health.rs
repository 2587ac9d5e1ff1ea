//! The health probe: a background service that asks every configured network's RPC, every
//! `health.probe_interval_seconds`, for its latest block and the gas balance of each settler key
//! (`ChainBackend::probe`), and writes what it saw on a `HealthBoard` that `/ready` reads and in
//! the health metrics (with each lane's lease and next nonce, `ChainBackend::settler_nonces`).
//! A config reload changes the gas floors in place (`set_floor`).
//!
//! Readiness is judged from the board when asked (`admin::status`), so a probe that hangs or a
//! node that went away shows as an answer growing old, not as a stale "ok".
//! May import: payments::chain, config, metrics.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::watch;

use crate::config::HealthConfig;
use crate::metrics::Metrics;
use crate::payments::chain::{ChainBackend, ChainHealth};

/// What the probe last saw of one network.
#[derive(Debug, Clone, Default)]
pub struct NetworkHealth {
    /// CAIP-2 id.
    pub network: String,
    /// Whether this build probes it (it has a backend); a network without one takes no payment
    /// and is reported without counting against readiness.
    pub checked: bool,
    /// When its RPC last answered a probe.
    pub last_success: Option<Instant>,
    /// Why the last probe failed, if it did (scrubbed of URLs and keys by the backend).
    pub last_error: Option<String>,
    pub height: Option<u64>,
    /// The network's `min_settler_balance`, in the smallest native unit.
    pub floor: Option<u128>,
    /// The settler balances of the last successful probe.
    pub settlers: Vec<SettlerHealth>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlerHealth {
    pub settler: String,
    pub balance: u128,
    pub held: bool,
    pub below_floor: bool,
}

/// The probe's findings, shared with the management API.
pub struct HealthBoard {
    pub config: HealthConfig,
    networks: Mutex<BTreeMap<String, NetworkHealth>>,
    /// Becomes true once every network was probed once, so `/ready` right after start answers
    /// from a probe rather than "not probed yet".
    first_round: watch::Sender<bool>,
}

impl HealthBoard {
    /// A board for `networks`: (CAIP-2 id, probed by this build, floor).
    pub fn new(config: HealthConfig, networks: &[(String, bool, Option<u128>)]) -> Self {
        let networks = networks
            .iter()
            .map(|(n, checked, floor)| {
                (
                    n.clone(),
                    NetworkHealth {
                        network: n.clone(),
                        checked: *checked,
                        floor: *floor,
                        ..NetworkHealth::default()
                    },
                )
            })
            .collect();
        HealthBoard {
            config,
            networks: Mutex::new(networks),
            first_round: watch::Sender::new(false),
        }
    }

    /// Every network, in CAIP-2 order.
    pub fn snapshot(&self) -> Vec<NetworkHealth> {
        self.networks
            .lock()
            .expect("not poisoned")
            .values()
            .cloned()
            .collect()
    }

    /// Records one probe's outcome for `network`.
    pub fn record(&self, network: &str, at: Instant, outcome: Result<ChainHealth, String>) {
        let mut nets = self.networks.lock().expect("not poisoned");
        let Some(n) = nets.get_mut(network) else {
            return;
        };
        match outcome {
            Ok(h) => {
                n.last_success = Some(at);
                n.last_error = None;
                n.height = h.height.or(n.height);
                let floor = n.floor;
                n.settlers = h
                    .settlers
                    .into_iter()
                    .map(|s| SettlerHealth {
                        below_floor: floor.is_some_and(|f| s.balance < f),
                        settler: s.settler,
                        balance: s.balance,
                        held: s.held,
                    })
                    .collect();
            }
            // The balances seen last stay: the RPC being down says nothing new about them.
            Err(e) => n.last_error = Some(e),
        }
    }

    /// A reloaded `min_settler_balance` for `network`; the balances seen last are judged
    /// against it at once.
    pub fn set_floor(&self, network: &str, floor: Option<u128>) {
        let mut nets = self.networks.lock().expect("not poisoned");
        if let Some(n) = nets.get_mut(network) {
            n.floor = floor;
            for s in &mut n.settlers {
                s.below_floor = floor.is_some_and(|f| s.balance < f);
            }
        }
    }

    /// Counts an answer the node gave on the payment path at `at` as fresh as a probe's (the
    /// balances and the last probe error stay as they are).
    pub fn note_answer(&self, network: &str, at: Instant) {
        let mut nets = self.networks.lock().expect("not poisoned");
        if let Some(n) = nets.get_mut(network) {
            n.last_success = n.last_success.max(Some(at));
        }
    }

    /// Whether `n`'s RPC answered within `health.rpc_max_age_seconds` of `now`.
    pub fn rpc_fresh(&self, n: &NetworkHealth, now: Instant) -> bool {
        n.last_success
            .is_some_and(|t| now.saturating_duration_since(t) <= self.config.rpc_max_age)
    }

    pub fn mark_first_round(&self) {
        self.first_round.send_replace(true);
    }

    /// Waits (at most `limit`) for the first round of probes.
    pub async fn wait_first_round(&self, limit: Duration) {
        let mut rx = self.first_round.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|r| *r)).await;
    }
}

/// The background service that probes.
pub struct HealthProbe {
    pub board: Arc<HealthBoard>,
    /// The probed networks: CAIP-2 id and its backend.
    pub backends: Vec<(String, Arc<dyn ChainBackend>)>,
    pub metrics: Arc<Metrics>,
}

impl HealthProbe {
    /// Probes every network once, all at once (a hung node delays only its own answer, bounded
    /// by the RPC timeout and by `rpc_max_age`), and publishes the results.
    pub async fn round(&self) {
        let limit = self.board.config.rpc_max_age;
        let mut probes = tokio::task::JoinSet::new();
        for (network, backend) in &self.backends {
            let (network, backend) = (network.clone(), backend.clone());
            probes.spawn(async move {
                let outcome = match tokio::time::timeout(limit, backend.probe()).await {
                    Ok(Ok(h)) => Ok(h),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer within {} s", limit.as_secs())),
                };
                (network, outcome)
            });
        }
        let results: Vec<_> = probes.join_all().await;
        let now = Instant::now();
        for (network, outcome) in results {
            if let Err(e) = &outcome {
                tracing::warn!(%network, "health probe: {e}");
            }
            self.board.record(&network, now, outcome);
        }
        for (network, backend) in &self.backends {
            if let Some(at) = backend.last_answer() {
                self.board.note_answer(network, at);
            }
        }
        self.publish(now);
    }

    fn publish(&self, now: Instant) {
        for (network, backend) in &self.backends {
            for (settler, nonce) in backend.settler_nonces() {
                self.metrics
                    .ops
                    .settler_nonce
                    .with_label_values(&[network.as_str(), settler.as_str()])
                    .set(nonce.min(i64::MAX as u64) as i64);
            }
        }
        for n in self.board.snapshot().iter().filter(|n| n.checked) {
            let up = self.board.rpc_fresh(n, now);
            self.metrics
                .rpc_up
                .with_label_values(&[&n.network])
                .set(up as i64);
            for s in &n.settlers {
                let labels = [n.network.as_str(), s.settler.as_str()];
                self.metrics
                    .settler_balance
                    .with_label_values(&labels)
                    .set(s.balance as f64);
                self.metrics
                    .settler_below_floor
                    .with_label_values(&labels)
                    .set(s.below_floor as i64);
                self.metrics
                    .ops
                    .lane_held
                    .with_label_values(&labels)
                    .set(s.held as i64);
                if s.below_floor {
                    tracing::warn!(network = %n.network, settler = %s.settler, balance = %s.balance, "settler gas balance below min_settler_balance");
                }
            }
        }
    }
}

#[async_trait]
impl BackgroundService for HealthProbe {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(self.board.config.probe_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = self.round() => {}
            }
            self.board.mark_first_round();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payments::chain::SettlerFunds;

    fn board() -> HealthBoard {
        HealthBoard::new(
            HealthConfig {
                probe_interval: Duration::from_secs(1),
                rpc_max_age: Duration::from_secs(10),
                store_timeout: Duration::from_secs(1),
            },
            &[("eip155:1".into(), true, Some(100))],
        )
    }

    #[test]
    fn a_probe_records_balances_against_the_floor_and_keeps_them_through_an_outage() {
        let b = board();
        let t0 = Instant::now();
        assert!(!b.rpc_fresh(&b.snapshot()[0], t0), "never probed");
        let funds = |settler: &str, balance| SettlerFunds {
            settler: settler.into(),
            balance,
            held: true,
        };
        b.record(
            "eip155:1",
            t0,
            Ok(ChainHealth {
                height: Some(7),
                settlers: vec![funds("0xA", 99), funds("0xB", 100)],
            }),
        );
        let n = &b.snapshot()[0];
        assert!(b.rpc_fresh(n, t0 + Duration::from_secs(10)));
        assert!(!b.rpc_fresh(n, t0 + Duration::from_secs(11)));
        let below: Vec<bool> = n.settlers.iter().map(|s| s.below_floor).collect();
        assert_eq!(below, vec![true, false], "the floor itself is enough");
        b.record("eip155:1", t0 + Duration::from_secs(1), Err("down".into()));
        let n = &b.snapshot()[0];
        assert_eq!(n.last_success, Some(t0));
        assert_eq!(n.last_error.as_deref(), Some("down"));
        assert_eq!(n.settlers.len(), 2);
        assert_eq!(n.height, Some(7));
        // A payment-path answer later than the last probe's counts; an older one changes nothing.
        let t5 = t0 + Duration::from_secs(5);
        b.note_answer("eip155:1", t5);
        b.note_answer("eip155:1", t0);
        let n = &b.snapshot()[0];
        assert_eq!(n.last_success, Some(t5));
        assert!(b.rpc_fresh(n, t0 + Duration::from_secs(15)));
    }
}
