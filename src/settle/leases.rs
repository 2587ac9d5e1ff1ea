//! The settler-lease keeper: a background service that takes, renews and gives back this
//! instance's leases on settler keys, and writes what it holds on each network's `LaneBoard`.
//!
//! On Postgres, several instances share the settler keys of a network: each leases one key (a
//! lease row with an expiry, renewed every few seconds while the instance lives) and signs only
//! with it, so no two instances ever take the same nonce. A crashed instance's key becomes free
//! when its lease lapses; a clean shutdown gives it back at once. An instance stops signing with a
//! key a few seconds before its lease could lapse, so a key is never used by two holders at once
//! even when renewals fail (the database is down).
//!
//! On SQLite (one instance per database file) every key is this instance's, without leases, as
//! long as it holds the database's signing lock ([`SigningLock`]): during a graceful upgrade two
//! processes share the file for a few seconds, and only one of them may sign. The new process
//! (`handover`) waits for the old one to exit before it signs; its paid requests wait with it
//! rather than fail.
//! May import: store, verify.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::payments::lanes::LaneBoard;
use crate::store::{Backend, LazyStore, Store};

/// How long a lease lasts without renewal.
pub const LEASE_SECONDS: i64 = 15;
/// How often leases are renewed (and free keys looked for).
const RENEW_EVERY: Duration = Duration::from_secs(4);
/// A key is no longer used this long before its lease could lapse.
const SAFETY_MARGIN: Duration = Duration::from_secs(4);
/// How many keys of a network one instance holds at once: one each, so N keys serve N instances.
const LANES_PER_INSTANCE: usize = 1;
/// How often a process waiting for its predecessor's keys (a graceful upgrade) looks again.
const HANDOVER_POLL: Duration = Duration::from_millis(200);
/// How long a new process waits for the keys of the one it upgrades before it gives up and
/// answers as an instance without keys: the old process drains for at most pingora's close
/// timeout (5 s), grace period (5 s) and shutdown timeout (10 s).
pub const HANDOVER_WAIT: Duration = Duration::from_secs(30);

/// An exclusive lock (`flock`) on a file beside a SQLite database, held by the process that signs
/// settlements for it. Two processes signing with one key take the same nonces; with SQLite that
/// can only happen during a graceful upgrade (or with a second instance started on the same file
/// by mistake), and this lock makes the second one wait instead. The operating system releases it
/// when the holder exits, however it exits. A separate file, not the database itself: closing any
/// descriptor of the database would drop SQLite's own POSIX locks.
pub struct SigningLock {
    path: PathBuf,
    held: Mutex<Option<std::fs::File>>,
}

impl SigningLock {
    /// The lock of a `sqlite:` database file; `None` for Postgres and in-memory databases.
    pub fn for_database(url: &str) -> Option<SigningLock> {
        let rest = url.strip_prefix("sqlite:")?;
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if path.is_empty() || path == ":memory:" || query.contains("mode=memory") {
            return None;
        }
        Some(SigningLock {
            path: PathBuf::from(format!("{path}.signing.lock")),
            held: Mutex::new(None),
        })
    }

    /// Takes the lock if nobody holds it; true while this process holds it. Kept until the
    /// keeper is dropped, at the very end of the process's shutdown: settlements still in flight
    /// while it drains sign under it.
    pub fn try_hold(&self) -> bool {
        let mut held = self.held.lock().expect("not poisoned");
        if held.is_some() {
            return true;
        }
        let file = match std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.path)
        {
            Ok(f) => f,
            Err(e) => {
                // Without the file there is nothing to coordinate on; refusing to sign would stop
                // a gateway whose database directory is read-only but for the database itself.
                tracing::warn!(path = %self.path.display(), "cannot open the settler signing lock ({e}); signing without it");
                return true;
            }
        };
        match file.try_lock() {
            Ok(()) => {
                *held = Some(file);
                true
            }
            Err(std::fs::TryLockError::WouldBlock) => false,
            Err(std::fs::TryLockError::Error(e)) => {
                tracing::warn!(path = %self.path.display(), "cannot take the settler signing lock ({e}); signing without it");
                true
            }
        }
    }
}

/// One network's keys, as the keeper leases them.
pub struct LeasedNetwork {
    pub network: String,
    /// Lower-case settler addresses, in lane order.
    pub settlers: Vec<String>,
    pub board: Arc<LaneBoard>,
}

pub struct LeaseKeeper {
    pub store: Arc<LazyStore>,
    pub networks: Vec<LeasedNetwork>,
    /// This instance, as named in the lease rows.
    pub holder: String,
    /// SQLite: the database's signing lock (see `SigningLock`).
    pub signing_lock: Option<SigningLock>,
    /// Set when this process took its listeners over from a running one (`--upgrade`): until
    /// then, it waits for that process's keys instead of declaring itself keyless.
    pub handover_until: Option<Instant>,
    /// Whether the wait for another process's signing lock was logged (once per wait).
    pub waiting_logged: std::sync::atomic::AtomicBool,
}

/// A name for this instance that no other will have: host, process and 64 random bits.
pub fn instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let mut r = [0u8; 8];
    getrandom::fill(&mut r).expect("the OS random source is available");
    let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
    format!("{host}/{}/{hex}", std::process::id())
}

impl LeaseKeeper {
    fn waiting_for_handover(&self) -> bool {
        self.handover_until.is_some_and(|t| Instant::now() < t)
    }

    /// One round: renew what is held, take free keys up to the per-instance number, and publish
    /// the result. Returns how many keys are held, over all networks.
    pub async fn round(&self, store: &Store) -> usize {
        let mut total = 0;
        for n in &self.networks {
            if store.backend() == Backend::Sqlite {
                // One instance per SQLite file: every key is ours, once no other process signs.
                if !self.signing_lock.as_ref().is_none_or(SigningLock::try_hold) {
                    if !self.waiting_logged.swap(true, Ordering::Relaxed) {
                        tracing::warn!(network = %n.network, "another process signs with this database's settler keys (the one being upgraded?): waiting for it to exit before signing");
                    }
                    for i in 0..n.settlers.len() {
                        n.board.set(i, None);
                    }
                    if !self.waiting_for_handover() {
                        n.board.mark_ready();
                    }
                    continue;
                }
                if self.waiting_logged.swap(false, Ordering::Relaxed) {
                    tracing::info!(network = %n.network, "took the settler keys over");
                }
                let forever = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
                for i in 0..n.settlers.len() {
                    n.board.set(i, Some(forever));
                }
                total += n.settlers.len();
                n.board.mark_ready();
                continue;
            }
            let mut held = n.board.held_now();
            for &i in &held.clone() {
                match self.lease(store, n, i).await {
                    Ok(true) => {}
                    Ok(false) => {
                        // Someone else has it: our lease lapsed (a long pause?). Stop at once.
                        tracing::error!(network = %n.network, settler = %n.settlers[i], "lost the lease on a settler key");
                        n.board.set(i, None);
                        held.retain(|h| *h != i);
                    }
                    // Keep signing until the deadline set by the last renewal; then it stops.
                    Err(e) => {
                        tracing::warn!(network = %n.network, "renewing a settler lease: {e}")
                    }
                }
            }
            if held.len() < LANES_PER_INSTANCE {
                // Start at a random key so instances starting together spread over the keys.
                let start = random_index(n.settlers.len());
                for k in 0..n.settlers.len() {
                    let i = (start + k) % n.settlers.len();
                    if held.contains(&i) {
                        continue;
                    }
                    match self.lease(store, n, i).await {
                        Ok(true) => {
                            tracing::info!(network = %n.network, settler = %n.settlers[i], "leased a settler key");
                            held.push(i);
                            if held.len() >= LANES_PER_INSTANCE {
                                break;
                            }
                        }
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(network = %n.network, "leasing a settler key: {e}");
                            break;
                        }
                    }
                }
                if held.is_empty() {
                    tracing::warn!(network = %n.network, keys = n.settlers.len(), "every settler key is leased by another instance: this one cannot settle on this network");
                }
            }
            total += held.len();
            if !held.is_empty() || !self.waiting_for_handover() {
                n.board.mark_ready();
            }
        }
        total
    }

    /// Takes or renews lane `i`; on success the board says it is held until shortly before the
    /// lease could lapse.
    async fn lease(
        &self,
        store: &Store,
        n: &LeasedNetwork,
        i: usize,
    ) -> Result<bool, crate::store::StoreError> {
        let asked = Instant::now();
        let expires = crate::payments::chain::unix_now() as i64 + LEASE_SECONDS;
        let ok = store
            .lease_settler(&n.network, &n.settlers[i], &self.holder, expires)
            .await?;
        if ok {
            // Counted from before the request, so a slow answer only shortens our use of it.
            let until = asked + Duration::from_secs(LEASE_SECONDS as u64) - SAFETY_MARGIN;
            n.board.set(i, Some(until));
        }
        Ok(ok)
    }

    /// Gives back every key held (a clean shutdown), so another instance may take it at once.
    pub async fn release_all(&self, store: &Store) {
        if store.backend() == Backend::Sqlite {
            return;
        }
        for n in &self.networks {
            for i in n.board.held_now() {
                n.board.set(i, None);
                if let Err(e) = store
                    .release_settler(&n.network, &n.settlers[i], &self.holder)
                    .await
                {
                    tracing::warn!(network = %n.network, "releasing a settler lease: {e}");
                }
            }
        }
    }
}

fn random_index(len: usize) -> usize {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the OS random source is available");
    (u64::from_le_bytes(b) % len.max(1) as u64) as usize
}

#[async_trait]
impl BackgroundService for LeaseKeeper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            match self.store.get().await {
                Ok(store) => {
                    self.round(store).await;
                }
                Err(e) => {
                    tracing::warn!("settler leases: database unavailable: {e}");
                    // Nothing to wait for: let early payments fail fast with a clear error.
                    for n in &self.networks {
                        n.board.mark_ready();
                    }
                }
            }
            let keyless = self.networks.iter().any(|n| n.board.held_now().is_empty());
            let next = if keyless && self.waiting_for_handover() {
                HANDOVER_POLL
            } else {
                RENEW_EVERY
            };
            tokio::select! {
                _ = shutdown.changed() => {
                    if let Ok(store) = self.store.get().await {
                        self.release_all(store).await;
                    }
                    return;
                }
                _ = tokio::time::sleep(next) => {}
            }
        }
    }
}
