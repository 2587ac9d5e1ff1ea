//! Finds out what became of settlements whose outcome was never recorded: the gateway stopped
//! between sending a transaction and seeing its receipt, or the receipt took longer than the
//! request could wait (the client got a 503 `settlement_pending`). Every settlement that landed
//! ends up in the ledger. One that is not mined is sent again, the very bytes stored with its
//! claim, until it lands or its authorization has expired: a node that dropped it (or never got
//! it) must not leave the payment hanging, nor the settler's later nonces queued behind it. One
//! that stays unmined all the same (sent again, or refused by the node as it is), untouched for
//! `STALE_AFTER`, is replaced at the node's fees: the same calls and settler nonce, signed
//! again, recorded first and then sent, as a request's own wait replaces (`payments/landing.rs`).
//! A base fee that outran its fee cap while the gateway was down would otherwise hold the payment
//! until its authorization expired, and every later settlement of its settler behind it.
//!
//! Claims left `claimed` with no request to finish them (the gateway was killed mid-request, or
//! the claim's commit reached the database but its answer never came back) are released once
//! their authorization has expired: from then on nothing can settle them.
//!
//! The first pass after a start looks at every `settling` claim (none can be in flight in a process
//! that just started); later passes only at those untouched for longer than any request waits for
//! a receipt. Recording is idempotent, so racing an in-flight settlement is harmless.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::payments::chain::{
    unix_now, ChainBackend, ChainBackends, PreparedSettlement, Resent, TxOutcome,
};
use crate::payments::landing::go_back;
use crate::store::{LazyStore, SettlingClaim, Store};

const INTERVAL: Duration = Duration::from_secs(15);
/// Longer than a request waits for a receipt (60 s) and re-signs once, so in-flight settlements
/// are left to their request.
const STALE_AFTER: i64 = 90;
/// After sending transactions again, how long to give them before looking once more, so a pass
/// records what it revived (after a restart, without waiting for the next pass).
const RESENT_SETTLE: Duration = Duration::from_secs(2);
/// A transaction not mined this long after its authorization expired never will be.
const EXPIRY_MARGIN: i64 = 60;
/// A stuck settlement is replaced only while some payment it carries has at least this long
/// left before its authorization expires: time to be mined before it can only revert.
const REPLACE_BEFORE_EXPIRY: i64 = 30;

pub struct Reconciler {
    pub store: Arc<LazyStore>,
    pub backends: ChainBackends,
}

impl Reconciler {
    /// One pass over the claims last touched at or before `older_than`; returns how many were
    /// resolved.
    pub async fn run_once(&self, store: &Store, older_than: i64) -> usize {
        match store
            .release_expired_claims(unix_now() as i64 - EXPIRY_MARGIN)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!("released {n} claims left open past their authorization"),
            Err(e) => tracing::warn!("releasing expired claims: {e}"),
        }
        let claims = match store.settling_claims(older_than, 100).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("reconciling settlements: {e}");
                return 0;
            }
        };
        let mut resolved = 0;
        let (mut resent, mut stuck) = (Vec::new(), Vec::new());
        for c in claims {
            let Some(verifier) = self.backends.get_str(&c.network) else {
                continue;
            };
            match resolve(store, verifier.as_ref(), &c, true).await {
                Step::Resolved => resolved += 1,
                Step::Resent => resent.push(c),
                // The node will not take its bytes as they are: a replacement may land it.
                Step::Refused => stuck.push(c),
                Step::Open => {}
            }
        }
        if !resent.is_empty() {
            tokio::time::sleep(RESENT_SETTLE).await;
            let (n, unmined) = self.look_again(store, resent).await;
            resolved += n;
            // Sent again and still not mined: they may wait behind a number nothing will use.
            // Every stored transaction was sent again above, so what is missing now is a gap.
            let repaired = self.repair_gaps(&unmined).await;
            // What the fillers let through is recorded now, not a whole staleness period later.
            let (again, rest): (Vec<_>, Vec<_>) = unmined
                .into_iter()
                .partition(|c| repaired.contains(&c.network));
            if !again.is_empty() {
                tokio::time::sleep(RESENT_SETTLE).await;
            }
            let (n, unmined) = self.look_again(store, again).await;
            resolved += n;
            stuck.extend(unmined);
            stuck.extend(rest);
        }
        resolved + self.replace_stuck(store, stuck).await
    }

    /// Looks each claim up once more (nothing sent): how many were recorded as landed or
    /// failed, and the rest.
    async fn look_again(
        &self,
        store: &Store,
        claims: Vec<SettlingClaim>,
    ) -> (usize, Vec<SettlingClaim>) {
        let mut resolved = 0;
        let mut open = Vec::new();
        for c in claims {
            match self.backends.get_str(&c.network) {
                Some(v) if resolve(store, v.as_ref(), &c, false).await == Step::Resolved => {
                    resolved += 1
                }
                _ => open.push(c),
            }
        }
        (resolved, open)
    }

    /// Fills the settler nonce gaps that may hold `unmined` back, network by network: the
    /// networks where a gap was filled.
    async fn repair_gaps(&self, unmined: &[SettlingClaim]) -> Vec<String> {
        let mut networks: Vec<&str> = unmined.iter().map(|c| c.network.as_str()).collect();
        networks.sort_unstable();
        networks.dedup();
        let mut repaired = Vec::new();
        for network in networks {
            let Some(verifier) = self.backends.get_str(network) else {
                continue;
            };
            let raws: Vec<String> = unmined
                .iter()
                .filter(|c| c.network == network)
                .filter_map(|c| c.tx_raw.clone())
                .collect();
            let filled = verifier.repair_stuck(&raws).await;
            if filled > 0 {
                tracing::warn!(
                    network,
                    filled,
                    "filled settler nonce gaps that held stored settlements back"
                );
                repaired.push(network.to_string());
            }
        }
        repaired
    }

    /// Replaces, at the node's fees now, the transactions of claims that stayed unmined though
    /// sent again (or whose bytes the node refused), once they went `STALE_AFTER` untouched: a
    /// fee cap the base fee outran while the gateway was down never lands as it is, and the
    /// settler's later nonces wait behind it. As every replacement (`payments/landing.rs`) it is
    /// recorded on the claims first (every claim its transaction settles), then sent; a
    /// replacement the node refuses never left, and the claims go back to naming the one it
    /// replaced (the refused one still watched). This pass or a later one records whichever
    /// transaction is mined. Returns how many claims it saw land.
    async fn replace_stuck(&self, store: &Store, stuck: Vec<SettlingClaim>) -> usize {
        let now = unix_now() as i64;
        // One replacement per transaction, for every claim of it here: a batch's members share
        // theirs.
        let mut groups: Vec<Vec<SettlingClaim>> = Vec::new();
        for c in stuck {
            match groups.iter_mut().find(|g| g[0].tx_hash == c.tx_hash) {
                Some(g) => g.push(c),
                None => groups.push(vec![c]),
            }
        }
        let mut replaced: Vec<SettlingClaim> = Vec::new();
        for group in groups {
            let c = &group[0];
            let Some(verifier) = self.backends.get_str(&c.network) else {
                continue;
            };
            // Touched lately, it may still be mined as it is (the first pass after a start sees
            // every claim, some sent a moment before the stop). Past (or about to pass) every
            // member's authorization, a replacement could only revert and burn its gas.
            let stale = group.iter().all(|m| m.touched_at <= now - STALE_AFTER);
            let live = group
                .iter()
                .any(|m| m.valid_before > now + REPLACE_BEFORE_EXPIRY);
            let Some(raw) = c.tx_raw.clone() else {
                continue;
            };
            if !verifier.replaces() || !stale || !live {
                continue;
            }
            let prepared = PreparedSettlement {
                transaction: c.tx_hash.clone(),
                settler: verifier.settler_of(&raw).unwrap_or_default(),
                raw,
                nonce: None,
                replaces: c.tx_replaced.clone(),
            };
            let replacement = match verifier.replace(&prepared).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(claim_id = c.claim_id, tx = %c.tx_hash, "not replacing a stuck settlement: {e}");
                    continue;
                }
            };
            let ids: Vec<i64> = group.iter().map(|m| m.claim_id).collect();
            if let Err(e) = store
                .record_replacement(&ids, &c.tx_hash, &replacement)
                .await
            {
                // Not recorded, so never sent: another attempt moved a claim on, or the write
                // failed (a later pass tries again).
                tracing::warn!(claim_id = c.claim_id, tx = %c.tx_hash, "recording a stuck settlement's replacement: {e}");
                continue;
            }
            let named =
                send_replacement(store, verifier.as_ref(), &ids, prepared, replacement).await;
            replaced.extend(group.into_iter().map(|m| SettlingClaim {
                tx_hash: named.transaction.clone(),
                tx_raw: Some(named.raw.clone()),
                tx_replaced: named.replaces.clone(),
                touched_at: now,
                ..m
            }));
        }
        if replaced.is_empty() {
            return 0;
        }
        tokio::time::sleep(RESENT_SETTLE).await;
        self.look_again(store, replaced).await.0
    }
}

/// Sends `replacement` (recorded on the claims `ids` in place of `prepared`) and returns the
/// settlement the claims name from then on: the replacement, or, when the node refused it (it
/// never left), `prepared` again, with the refused one among those watched (`landing::go_back`,
/// as a request's wait does).
async fn send_replacement(
    store: &Store,
    verifier: &dyn ChainBackend,
    ids: &[i64],
    prepared: PreparedSettlement,
    replacement: PreparedSettlement,
) -> PreparedSettlement {
    let id = ids[0];
    match verifier.resend(&replacement.raw).await {
        Ok(Resent::Sent) => {
            tracing::info!(claim_id = id, replaced = %prepared.transaction, tx = %replacement.transaction, "replaced a stuck settlement");
            replacement
        }
        Ok(Resent::Refused(why)) => {
            tracing::warn!(claim_id = id, tx = %replacement.transaction, "the node refused a stuck settlement's replacement: {why}");
            go_back(store, ids, &replacement.transaction, prepared).await
        }
        // Its nonce used, or no answer: it may be out; a later look tells.
        Ok(other) => {
            tracing::warn!(claim_id = id, tx = %replacement.transaction, "sending a stuck settlement's replacement: {other:?}");
            replacement
        }
        Err(e) => {
            tracing::warn!(claim_id = id, tx = %replacement.transaction, "sending a stuck settlement's replacement: {e}");
            replacement
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Recorded as landed, or failed.
    Resolved,
    /// Not mined; its transaction was sent again.
    Resent,
    /// Not mined, and the node refused its transaction's bytes (not for a used nonce).
    Refused,
    /// Still unknown.
    Open,
}

/// What became of a settling claim's transaction, or of one it replaced (they share a nonce, so
/// at most one is mined): the first that is mined decides; `NotFound` when none is, an error
/// when a lookup failed and none was found.
async fn outcome_of(
    verifier: &dyn ChainBackend,
    c: &SettlingClaim,
) -> Result<TxOutcome, crate::payments::chain::VerifyError> {
    let mut failed = None;
    for tx in c.candidates() {
        match verifier
            .settlement_outcome(tx, &c.asset, &c.payer, &c.nonce, &c.amount)
            .await
        {
            Ok(TxOutcome::NotFound) => {}
            Err(e) => failed = Some(e),
            found => return found,
        }
    }
    failed.map_or(Ok(TxOutcome::NotFound), Err)
}

/// Looks one settling claim up and records what became of it; sends a transaction that is not
/// mined again when `resend` and its authorization can still settle.
async fn resolve(
    store: &Store,
    verifier: &dyn ChainBackend,
    c: &SettlingClaim,
    resend: bool,
) -> Step {
    let outcome = outcome_of(verifier, c).await;
    match outcome {
        Ok(TxOutcome::Landed { settlement, pay_to }) => {
            if store
                .record_reconciled(c, &pay_to, &settlement)
                .await
                .is_ok()
            {
                tracing::info!(claim_id = c.claim_id, tx = %settlement.transaction, "reconciled a settlement that landed");
                return Step::Resolved;
            }
            Step::Open
        }
        Ok(TxOutcome::Failed(why)) => {
            if store.mark_failed(c.claim_id, &why).await.is_ok() {
                return Step::Resolved;
            }
            Step::Open
        }
        Ok(TxOutcome::NotFound) if unix_now() as i64 > c.valid_before + EXPIRY_MARGIN => {
            let why = "the settlement transaction never landed and the authorization expired";
            if store.mark_failed(c.claim_id, why).await.is_ok() {
                return Step::Resolved;
            }
            Step::Open
        }
        Ok(TxOutcome::NotFound) => {
            let Some(raw) = c.tx_raw.as_deref().filter(|_| resend) else {
                return Step::Open;
            };
            match verifier.resend(raw).await {
                Ok(Resent::Sent) => {
                    tracing::info!(claim_id = c.claim_id, tx = %c.tx_hash, "sent a settlement that was not mined again");
                    Step::Resent
                }
                // Its nonce was used by a mined transaction. Unless that was this one, mined
                // since we looked, it can never land: nothing moved.
                Ok(Resent::NonceUsed) => {
                    match outcome_of(verifier, c).await {
                        Ok(TxOutcome::NotFound) => {
                            let why = "another transaction took the settlement's nonce";
                            if store.mark_failed(c.claim_id, why).await.is_ok() {
                                return Step::Resolved;
                            }
                            Step::Open
                        }
                        // Landed or failed after all: the next look records it.
                        _ => Step::Resent,
                    }
                }
                Ok(Resent::Refused(why)) => {
                    tracing::warn!(claim_id = c.claim_id, tx = %c.tx_hash, "sending a settlement again: {why}");
                    Step::Refused
                }
                Err(e) => {
                    tracing::warn!(claim_id = c.claim_id, "sending a settlement again: {e}");
                    Step::Open
                }
            }
        }
        Err(e) => {
            tracing::warn!(claim_id = c.claim_id, "reconciling: {e}");
            Step::Open
        }
    }
}

#[async_trait]
impl BackgroundService for Reconciler {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut first = true;
        loop {
            match self.store.get().await {
                Ok(store) => {
                    let older_than = if first {
                        i64::MAX
                    } else {
                        unix_now() as i64 - STALE_AFTER
                    };
                    first = false;
                    self.run_once(store, older_than).await;
                }
                Err(e) => tracing::warn!("reconciling settlements: database unavailable: {e}"),
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(INTERVAL) => {}
            }
        }
    }
}
