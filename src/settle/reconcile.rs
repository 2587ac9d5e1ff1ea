//! Finds out what became of settlements whose outcome was never recorded: the gateway stopped
//! between sending a transaction and seeing its receipt, or the receipt took longer than the
//! request could wait (the client got a 503 `settlement_pending`). Every settlement that landed
//! ends up in the ledger.
//!
//! The first pass after a start looks at every `settling` claim (none can be in flight in a process
//! that just started); later passes only at those untouched for longer than any request waits for
//! a receipt. Recording is idempotent, so racing an in-flight settlement is harmless.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::store::{LazyStore, Store};
use crate::verify::{unix_now, TxOutcome, Verifiers};

const INTERVAL: Duration = Duration::from_secs(30);
/// Longer than a request waits for a receipt (60 s), so in-flight settlements are left alone.
const STALE_AFTER: i64 = 120;
/// A transaction not mined this long after its authorization expired never will be.
const EXPIRY_MARGIN: i64 = 60;

pub struct Reconciler {
    pub store: Arc<LazyStore>,
    pub verifiers: Verifiers,
}

impl Reconciler {
    /// One pass over the claims last touched at or before `older_than`; returns how many were
    /// resolved.
    pub async fn run_once(&self, store: &Store, older_than: i64) -> usize {
        let claims = match store.settling_claims(older_than, 100).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("reconciling settlements: {e}");
                return 0;
            }
        };
        let mut resolved = 0;
        for c in claims {
            let Some(verifier) = self.verifiers.get_str(&c.network) else {
                continue;
            };
            match verifier
                .settlement_outcome(&c.tx_hash, &c.asset, &c.payer, &c.amount)
                .await
            {
                Ok(TxOutcome::Landed { settlement, pay_to }) => {
                    if store
                        .record_reconciled(&c, &pay_to, &settlement)
                        .await
                        .is_ok()
                    {
                        tracing::info!(claim_id = c.claim_id, tx = %c.tx_hash, "reconciled a settlement that landed");
                        resolved += 1;
                    }
                }
                Ok(TxOutcome::Failed(why)) => {
                    if store.mark_failed(c.claim_id, &why).await.is_ok() {
                        resolved += 1;
                    }
                }
                Ok(TxOutcome::NotFound) if unix_now() as i64 > c.valid_before + EXPIRY_MARGIN => {
                    let why =
                        "the settlement transaction never landed and the authorization expired";
                    if store.mark_failed(c.claim_id, why).await.is_ok() {
                        resolved += 1;
                    }
                }
                Ok(TxOutcome::NotFound) => {}
                Err(e) => tracing::warn!(claim_id = c.claim_id, "reconciling: {e}"),
            }
        }
        resolved
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
