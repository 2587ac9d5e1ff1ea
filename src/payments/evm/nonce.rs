//! The settler's nonce counter: handed out under a synchronous lock with no I/O inside; a nonce
//! whose transaction is never sent is handed out again first, or its gap filled at once, so no
//! later settlement queues behind it.
//!
//! A transaction is broadcast only once every lower nonce handed out is stored with its claim (or
//! given back): were the gateway killed between handing nonce 4 out and storing its transaction,
//! with nonce 5 already sent, nothing after the restart would know nonce 4 was missing, and 5
//! would wait in the node's pool for good. Stored, every transaction below 5 is sent again by the
//! reconciler. (Found by the chaos suite: tests/chaos.rs, a `pair` schedule.)

use super::*;

/// The settler's nonces. Only ever touched under a synchronous lock with no I/O inside: reading
/// the node's count happens outside it.
#[derive(Default)]
pub(super) struct NonceState {
    /// The next nonce never handed out; `None` until read from the node.
    next: Option<u64>,
    /// Nonces handed out whose transactions were never sent: handed out again first, so no
    /// later transaction waits behind the gap they would leave.
    free: BTreeSet<u64>,
    /// Nonces handed out whose transactions are not stored yet: a higher nonce is not broadcast
    /// while one of these is below it.
    unstored: BTreeSet<u64>,
}

impl NonceState {
    fn take(&mut self) -> Option<u64> {
        let n = match self.free.pop_first() {
            Some(n) => n,
            None => {
                let n = self.next?;
                self.next = Some(n + 1);
                n
            }
        };
        self.unstored.insert(n);
        Some(n)
    }

    /// `nonce`'s transaction is stored with its claim.
    fn stored(&mut self, nonce: u64) {
        self.unstored.remove(&nonce);
    }

    /// Whether a nonce below `nonce` is handed out and not stored yet.
    fn lower_unstored(&self, nonce: u64) -> bool {
        self.unstored.first().is_some_and(|n| *n < nonce)
    }

    /// The node counts `count` transactions from the settler, mined or pending: every nonce below
    /// is used. Never moves back, so a nonce handed out and not sent yet is never handed out twice.
    fn sync(&mut self, count: u64) {
        self.next = Some(self.next.map_or(count, |n| n.max(count)));
        self.free.retain(|n| *n >= count);
        self.unstored.retain(|n| *n >= count);
    }

    /// Takes back a nonce whose transaction was never sent. The highest one handed out just
    /// rolls the counter back; one below a nonce already handed out is a gap that transaction may
    /// be queued behind: it is returned as `Gap` for the caller to fill, and stays out of `free`.
    fn give_back(&mut self, nonce: u64) -> GivenBack {
        self.unstored.remove(&nonce);
        match self.next {
            Some(next) if next == nonce + 1 => {
                self.next = Some(nonce);
                // Nonces given back just below are no gaps any more either.
                while let Some(n) = self.next.filter(|n| *n > 0).map(|n| n - 1) {
                    if !self.free.remove(&n) {
                        break;
                    }
                    self.next = Some(n);
                }
                GivenBack::RolledBack
            }
            Some(next) if nonce < next => GivenBack::Gap,
            _ => GivenBack::Ignored,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum GivenBack {
    RolledBack,
    Gap,
    /// Not ours to give back (the counter was re-read since).
    Ignored,
}

/// The longest a settlement waits for lower nonces' transactions to be stored.
const STORE_ORDER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl EvmBackend {
    /// The next nonce this settler would hand out, once it was read from the node.
    pub(super) fn next_nonce(&self) -> Option<u64> {
        let state = self.nonce.lock().expect("not poisoned");
        state.free.first().copied().or(state.next)
    }

    /// The settler's next nonce: one given back first, else the counter, read from the node
    /// (outside the lock) when there is none.
    pub(super) async fn take_nonce(&self) -> Result<u64, SettleError> {
        loop {
            if let Some(n) = self.nonce.lock().expect("not poisoned").take() {
                return Ok(n);
            }
            let count = self.pending_count().await?;
            self.nonce.lock().expect("not poisoned").sync(count);
        }
    }

    /// Called with a transaction that is stored with its claim, before it is broadcast: waits
    /// (at most `STORE_ORDER_WAIT`) until every lower nonce handed out is stored too or given back.
    pub(super) async fn wait_lower_stored(&self, nonce: Option<u64>) {
        let Some(n) = nonce else { return };
        self.nonce.lock().expect("not poisoned").stored(n);
        let deadline = std::time::Instant::now() + STORE_ORDER_WAIT;
        while self.nonce.lock().expect("not poisoned").lower_unstored(n) {
            if std::time::Instant::now() >= deadline {
                // A lower settlement stuck on a slow database: do not hold this one back for
                // it. Only a kill from here until that one is stored would leave a gap.
                tracing::warn!(
                    nonce = n,
                    "broadcasting ahead of a lower settler nonce not stored yet"
                );
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    pub(super) async fn pending_count(&self) -> Result<u64, SettleError> {
        self.provider
            .get_transaction_count(self.settler.address())
            .pending()
            .await
            .map_err(|e| SettleError::Unavailable(scrub(&format!("settler nonce: {e}"))))
    }

    /// Our counter fell behind the node's (its nonce was used): catch up. If the node cannot be
    /// asked now, the next refusal asks again.
    pub(super) async fn resync_nonce(&self) {
        if let Ok(count) = self.pending_count().await {
            self.nonce.lock().expect("not poisoned").sync(count);
        }
    }

    /// A nonce whose transaction was never sent is taken back; if a later nonce was handed out
    /// meanwhile, its transaction would wait behind the gap, so the gap is filled at once.
    pub(super) async fn give_back(&self, nonce: Option<u64>) {
        let Some(n) = nonce else { return };
        let given = self.nonce.lock().expect("not poisoned").give_back(n);
        if given == GivenBack::Gap {
            self.fill_gap(n).await;
        }
    }

    /// Fills the nonces below this settler's stuck stored transactions (`stuck`: raw, 0x hex, any
    /// signer's) that the node has no runnable transaction for, no stored transaction holds, and
    /// no settlement of this process has out unstored: the gaps they wait behind. Returns how
    /// many it filled. (A settlement of ours stored but not sent yet whose nonce is filled is
    /// refused with `nonce too low` and signs again, as after any nonce another transaction took.)
    pub(super) async fn fill_stuck_gaps(&self, stuck: &[String]) -> usize {
        use alloy::consensus::Transaction;
        use alloy::eips::eip2718::Decodable2718;
        let me = self.settler.address();
        let held: BTreeSet<u64> = stuck
            .iter()
            .filter_map(|raw| {
                let bytes: Bytes = raw.parse().ok()?;
                // Settlements are EIP-1559 transactions; anything else is not ours.
                let TxEnvelope::Eip1559(tx) = TxEnvelope::decode_2718(&mut bytes.as_ref()).ok()?
                else {
                    return None;
                };
                let signer = tx
                    .signature()
                    .recover_address_from_prehash(&tx.tx().signature_hash())
                    .ok()?;
                (signer == me).then(|| tx.tx().nonce())
            })
            .collect();
        let Some(&highest) = held.last() else {
            return 0;
        };
        // The node's pending count: mined, and waiting with no gap before them. A number below
        // it is used or about to be; one at or above it below our stuck transaction has no
        // transaction the node could run, which is what holds ours back.
        let Ok(next) = self.pending_count().await else {
            return 0;
        };
        let gaps: Vec<u64> = {
            let mut state = self.nonce.lock().expect("not poisoned");
            let gaps: Vec<u64> = (next..highest)
                .filter(|n| !held.contains(n) && !state.unstored.contains(n))
                .collect();
            // Filled now, not handed out again.
            for n in &gaps {
                state.free.remove(n);
            }
            gaps
        };
        for n in &gaps {
            tracing::warn!(
                nonce = n,
                "a stored settlement waits behind an unused settler nonce: filling it"
            );
            self.fill_gap(*n).await;
        }
        gaps.len()
    }

    /// Why a sent settlement (`raw`) is still not mined, for the log: where its nonce stands
    /// against the node's counts (`unmined_verdict`).
    pub(super) async fn unmined_standing(&self, raw: &Bytes) -> String {
        use alloy::consensus::Transaction;
        use alloy::eips::eip2718::Decodable2718;
        let Ok(tx) = TxEnvelope::decode_2718(&mut raw.as_ref()) else {
            return "its bytes do not decode".into();
        };
        let me = self.settler.address();
        let (mined, pending) = (
            self.provider.get_transaction_count(me).latest().await,
            self.provider.get_transaction_count(me).pending().await,
        );
        let (Ok(mined), Ok(pending)) = (mined, pending) else {
            return format!("nonce {}; the node's counts unreadable", tx.nonce());
        };
        let n = tx.nonce();
        let verdict = unmined_verdict(n, mined, pending);
        format!("nonce {n}, node has {mined} mined and {pending} pending: {verdict}")
    }

    /// Sends a zero-value transfer from the settler to itself with `nonce`. If that is not sent
    /// either, the nonce goes to `free`, and the next settlement takes it.
    pub(super) async fn fill_gap(&self, nonce: u64) {
        let sent = match self.fees().await {
            Ok((max_fee, tip)) => {
                let mut tx = TxEip1559 {
                    chain_id: self.chain_id,
                    nonce,
                    gas_limit: 21_000,
                    max_fee_per_gas: max_fee,
                    max_priority_fee_per_gas: tip,
                    to: TxKind::Call(self.settler.address()),
                    value: U256::ZERO,
                    access_list: Default::default(),
                    input: Bytes::new(),
                };
                match self.settler.sign_transaction_sync(&mut tx) {
                    Ok(sig) => {
                        let raw = TxEnvelope::from(tx.into_signed(sig)).encoded_2718();
                        self.send_raw(&raw.into()).await
                    }
                    Err(e) => Sent::NotDelivered(format!("signing: {e}")),
                }
            }
            Err(e) => Sent::NotDelivered(e.to_string()),
        };
        match sent {
            // Taken, or maybe: either way the nonce is spent; a lost filler leaves the gap to
            // the next settlement's `nonce too low` resync.
            Sent::Accepted | Sent::Unknown(_) => {
                tracing::info!(nonce, "filled a settler nonce gap with a self-transfer")
            }
            Sent::Refused {
                nonce_used: true, ..
            }
            | Sent::Held(_) => self.resync_nonce().await,
            Sent::Refused { message, .. } | Sent::NotDelivered(message) => {
                tracing::warn!(nonce, "could not fill a settler nonce gap: {message}");
                self.nonce.lock().expect("not poisoned").free.insert(nonce);
            }
        }
    }
}

/// Where an unmined settlement's nonce `n` stands against the node's `mined` and `pending`
/// counts. Below `pending` but not mined: the node holds a runnable transaction back. Exactly at
/// `mined` yet not counted pending: nothing is missing below it, and still the node does not
/// run it: it dropped it (nodes evict a transaction whose fee cap the base fee passed), or it
/// holds it wrongly (anvil, when a transaction arrives while the one below it is being mined:
/// its pool race, foundry #10122); re-sending the same bytes does not help either, replacing
/// them (`replace.rs`) may. Above both: it waits
/// behind a nonce nothing the node has uses (a gap, which the reconciler fills once the claim is
/// stale).
pub(super) fn unmined_verdict(n: u64, mined: u64, pending: u64) -> &'static str {
    if n < mined {
        "its nonce is used: mined since, or taken by another transaction"
    } else if n < pending {
        "runnable and held back by the node"
    } else if n == mined {
        "at the node's next nonce with nothing missing below it, yet not runnable: the node dropped it (a fee cap under the base fee) or queued it wrongly (anvil's pool race); the same bytes sent again will not unstick it, a replacement may"
    } else {
        "waiting behind a settler nonce the node has no transaction for"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unmined_settlement_is_placed_against_the_nodes_counts() {
        // 10 mined; the node holds 10 and 11 runnable.
        assert!(unmined_verdict(9, 10, 12).starts_with("its nonce is used"));
        assert!(unmined_verdict(10, 10, 12).starts_with("runnable and held back"));
        assert!(unmined_verdict(11, 10, 12).starts_with("runnable and held back"));
        // Nothing runnable: at the next nonce is the node's fault, above it a gap.
        assert!(unmined_verdict(10, 10, 10).contains("queued it wrongly"));
        assert!(unmined_verdict(12, 10, 10).starts_with("waiting behind"));
        assert!(unmined_verdict(12, 10, 11).starts_with("waiting behind"));
    }

    #[test]
    fn nonces_given_back_are_reused_or_reported_as_gaps() {
        let mut s = NonceState::default();
        assert_eq!(s.take(), None, "unknown until read from the node");
        s.sync(5);
        assert_eq!((s.take(), s.take(), s.take()), (Some(5), Some(6), Some(7)));
        // The highest one handed out: the counter rolls back, and the one below it too once it
        // comes back.
        assert_eq!(s.give_back(7), GivenBack::RolledBack);
        assert_eq!(s.next, Some(7));
        // 5 comes back while 6 is out: a gap, for the caller to fill.
        assert_eq!(s.give_back(5), GivenBack::Gap);
        assert!(s.free.is_empty());
        s.free.insert(5); // the fill failed
        assert_eq!(s.give_back(6), GivenBack::RolledBack);
        assert_eq!(s.next, Some(5), "6 rolled back, then 5 with it");
        assert_eq!(s.take(), Some(5));
        // A failed fill left 4 free below a counter at 6: handed out first.
        s.free.insert(4);
        assert_eq!(s.take(), Some(4));
        assert_eq!(s.take(), Some(6));
        // A re-read never moves the counter back and drops free nonces the node has used.
        s.free.insert(3);
        s.sync(4);
        assert_eq!(s.next, Some(7));
        assert!(s.free.is_empty());
        s.sync(9);
        assert_eq!(s.take(), Some(9));
        assert_eq!(s.give_back(20), GivenBack::Ignored);
    }

    #[test]
    fn a_nonce_waits_for_lower_ones_to_be_stored_or_given_back() {
        let mut s = NonceState::default();
        s.sync(4);
        let (a, b, c) = (s.take().unwrap(), s.take().unwrap(), s.take().unwrap());
        s.stored(b);
        assert!(s.lower_unstored(b), "4 is out and not stored: 5 must wait");
        assert!(!s.lower_unstored(a), "nothing below 4");
        s.stored(a);
        assert!(!s.lower_unstored(b));
        assert!(s.lower_unstored(c + 1), "6 itself is not stored yet");
        assert_eq!(s.give_back(c), GivenBack::RolledBack);
        assert!(!s.lower_unstored(c + 1), "given back: nothing to wait for");
        // A re-read from the node drops what it has used.
        let d = s.take().unwrap();
        s.sync(d + 1);
        assert!(!s.lower_unstored(d + 5));
    }
}
