//! The settler's nonce counter: handed out under a synchronous lock with no I/O inside; a nonce
//! whose transaction is never sent is handed out again first, or its gap filled at once, so no
//! later settlement queues behind it.

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
}

impl NonceState {
    fn take(&mut self) -> Option<u64> {
        if let Some(n) = self.free.pop_first() {
            return Some(n);
        }
        let n = self.next?;
        self.next = Some(n + 1);
        Some(n)
    }

    /// The node counts `count` transactions from the settler, mined or pending: every nonce below
    /// is used. Never moves back, so a nonce handed out and not sent yet is never handed out twice.
    fn sync(&mut self, count: u64) {
        self.next = Some(self.next.map_or(count, |n| n.max(count)));
        self.free.retain(|n| *n >= count);
    }

    /// Takes back a nonce whose transaction was never sent. The highest one handed out just
    /// rolls the counter back; one below a nonce already handed out is a gap that transaction may
    /// be queued behind: it is returned as `Gap` for the caller to fill, and stays out of `free`.
    fn give_back(&mut self, nonce: u64) -> GivenBack {
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
            } => self.resync_nonce().await,
            Sent::Refused { message, .. } | Sent::NotDelivered(message) => {
                tracing::warn!(nonce, "could not fill a settler nonce gap: {message}");
                self.nonce.lock().expect("not poisoned").free.insert(nonce);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
