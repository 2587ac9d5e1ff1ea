//! Several settler keys for one network, each a nonce lane, and the board that says which of them
//! this instance may sign with right now.
//!
//! A key's nonces are one sequence: two processes signing with one key at once take the same
//! nonce, and one of the two settlements is refused (`nonce too low`) after its payer was served.
//! So every key is leased (see `settle::leases`): an instance signs only with keys it holds, and
//! keys are never shared. Verification needs no key (it simulates from any address), so any lane
//! verifies.
//!
//! May import: payments::chain, pricing, x402. The leases themselves (the store) are `settle::leases`' business; this
//! module only reads the board it writes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::watch;

use super::chain::*;
use crate::pricing::Offer;
use crate::x402::PaymentProof;

/// How long `prepare` waits for the first round of leases at start before it gives up.
pub const FIRST_LEASE_WAIT: Duration = Duration::from_secs(5);

/// Which lanes this instance holds, and until when (a lease not renewed in time stops being used
/// before another instance can take it).
pub struct LaneBoard {
    /// One entry per lane: `Some(deadline)` while held.
    held: Mutex<Vec<Option<Instant>>>,
    /// Becomes true after the first round of leasing, so early payments wait for it.
    ready: watch::Sender<bool>,
    /// How long a payment waits for that round: longer while a graceful upgrade hands the keys
    /// over from the process being replaced.
    first_wait: Duration,
}

impl LaneBoard {
    pub fn new(lanes: usize) -> Self {
        Self::with_first_wait(lanes, FIRST_LEASE_WAIT)
    }

    /// A board whose payments wait up to `first_wait` for the first keys.
    pub fn with_first_wait(lanes: usize, first_wait: Duration) -> Self {
        LaneBoard {
            held: Mutex::new(vec![None; lanes]),
            ready: watch::Sender::new(false),
            first_wait,
        }
    }

    pub fn lanes(&self) -> usize {
        self.held.lock().expect("not poisoned").len()
    }

    /// Records that lane `i` is held until `deadline` (`None`: not held).
    pub fn set(&self, i: usize, deadline: Option<Instant>) {
        if let Some(slot) = self.held.lock().expect("not poisoned").get_mut(i) {
            *slot = deadline;
        }
    }

    /// Marks the first round of leasing as done.
    pub fn mark_ready(&self) {
        self.ready.send_replace(true);
    }

    /// The lanes held now.
    pub fn held_now(&self) -> Vec<usize> {
        let now = Instant::now();
        self.held
            .lock()
            .expect("not poisoned")
            .iter()
            .enumerate()
            .filter(|(_, d)| d.is_some_and(|d| d > now))
            .map(|(i, _)| i)
            .collect()
    }

    async fn wait_ready(&self) {
        let mut rx = self.ready.subscribe();
        let _ = tokio::time::timeout(self.first_wait, rx.wait_for(|r| *r)).await;
    }
}

/// One lane: a settler address and the verifier that signs with its key.
pub struct Lane {
    pub settler: String,
    pub verifier: Arc<dyn ChainBackend>,
}

/// A network's lanes behind one `ChainBackend`: settles through a lane this instance holds.
pub struct Lanes {
    network: String,
    lanes: Vec<Lane>,
    board: Arc<LaneBoard>,
    next: AtomicUsize,
    /// When a payment-path call last got an answer from the node (see `last_answer`).
    answered: Mutex<Option<Instant>>,
}

impl Lanes {
    pub fn new(network: String, lanes: Vec<Lane>, board: Arc<LaneBoard>) -> Self {
        assert!(!lanes.is_empty(), "a network has at least one settler key");
        Lanes {
            network,
            lanes,
            board,
            next: AtomicUsize::new(0),
            answered: Mutex::new(None),
        }
    }

    pub fn settlers(&self) -> Vec<String> {
        self.lanes.iter().map(|l| l.settler.clone()).collect()
    }

    pub fn board(&self) -> &Arc<LaneBoard> {
        &self.board
    }

    /// A held lane, round-robin over those held, or why there is none.
    async fn pick(&self) -> Result<&Lane, SettleError> {
        let mut held = self.board.held_now();
        if held.is_empty() {
            self.board.wait_ready().await;
            held = self.board.held_now();
        }
        if held.is_empty() {
            return Err(SettleError::Unavailable(format!(
                "no settler key of {} is free: all {} are leased by other instances sharing the \
                 database (configure at least one settler_keys entry per instance)",
                self.network,
                self.lanes.len()
            )));
        }
        let i = held[self.next.fetch_add(1, Ordering::Relaxed) % held.len()];
        Ok(&self.lanes[i])
    }

    /// Notes that the node answered, when `ok`; passes `result` on.
    fn noted<T, E>(&self, result: Result<T, E>, ok: impl Fn(&T) -> bool) -> Result<T, E> {
        if result.as_ref().is_ok_and(ok) {
            *self.answered.lock().expect("not poisoned") = Some(Instant::now());
        }
        result
    }

    /// The lane that signed `prepared`, or the first one (any lane can broadcast signed bytes).
    fn signer_of(&self, prepared: &PreparedSettlement) -> &Lane {
        self.lanes
            .iter()
            .find(|l| l.settler.eq_ignore_ascii_case(&prepared.settler))
            .unwrap_or(&self.lanes[0])
    }
}

#[async_trait]
impl ChainBackend for Lanes {
    /// Every lane's settler balance (held or not: the keys are this config's, so the set stays
    /// bounded), each marked with whether this instance holds it now.
    async fn probe(&self) -> Result<ChainHealth, VerifyError> {
        // Which keys are held is known after the first round of leasing (at once after it).
        self.board.wait_ready().await;
        let held = self.board.held_now();
        let mut out = ChainHealth::default();
        for (i, lane) in self.lanes.iter().enumerate() {
            let h = lane.verifier.probe().await?;
            out.height = out.height.max(h.height);
            out.settlers.extend(h.settlers.into_iter().map(|mut s| {
                s.held = held.contains(&i);
                s
            }));
        }
        Ok(out)
    }

    async fn settlement_outcome(
        &self,
        tx_hash: &str,
        asset: &str,
        from: &str,
        nonce: &str,
        value: &str,
    ) -> Result<TxOutcome, VerifyError> {
        let outcome = self.lanes[0]
            .verifier
            .settlement_outcome(tx_hash, asset, from, nonce, value)
            .await;
        self.noted(outcome, |_| true)
    }

    async fn verify_transfer(
        &self,
        tx_hash: &str,
        recipient: &str,
        min_amount: u128,
        assets: &[crate::config::AssetConfig],
    ) -> Result<TransferFacts, VerifyError> {
        let facts = self.lanes[0]
            .verifier
            .verify_transfer(tx_hash, recipient, min_amount, assets)
            .await;
        self.noted(facts, |_| true)
    }

    async fn verify(&self, offer: &Offer, proof: &PaymentProof) -> Result<Verified, VerifyError> {
        // A valid proof was simulated on the node (`verify` makes that round trip last).
        let verified = self.lanes[0].verifier.verify(offer, proof).await;
        self.noted(verified, |_| true)
    }

    async fn balance_of(&self, asset: &str, owner: &str) -> Result<Option<u128>, VerifyError> {
        let balance = self.lanes[0].verifier.balance_of(asset, owner).await;
        // `None` is a backend that did not ask.
        self.noted(balance, |b| b.is_some())
    }

    fn last_answer(&self) -> Option<Instant> {
        *self.answered.lock().expect("not poisoned")
    }

    fn settler_nonces(&self) -> Vec<(String, u64)> {
        self.lanes
            .iter()
            .flat_map(|l| l.verifier.settler_nonces())
            .collect()
    }

    async fn ready_to_settle(&self) -> Result<(), SettleError> {
        self.pick().await.map(|_| ())
    }

    async fn prepare(&self, verified: &Verified) -> Result<PreparedSettlement, SettleError> {
        self.pick().await?.verifier.prepare(verified).await
    }

    async fn batch_capacity(&self) -> usize {
        // Every lane talks to the same node: the first one's answer is the network's.
        self.lanes[0].verifier.batch_capacity().await
    }

    fn settlement_slots(&self) -> usize {
        self.lanes[0].verifier.settlement_slots()
    }

    async fn prepare_batch(&self, members: &[Verified]) -> Result<PreparedSettlement, SettleError> {
        self.pick().await?.verifier.prepare_batch(members).await
    }

    async fn submit_batch(
        &self,
        members: &[Verified],
        prepared: &PreparedSettlement,
        attempt: Attempt,
    ) -> Result<Vec<Result<Settlement, SettleError>>, SettleError> {
        let settled = self
            .signer_of(prepared)
            .verifier
            .submit_batch(members, prepared, attempt)
            .await;
        self.noted(settled, |_| true)
    }

    async fn abandon(&self, prepared: &PreparedSettlement) {
        // The nonce goes back to the lane that took it.
        self.signer_of(prepared).verifier.abandon(prepared).await
    }

    async fn submit(
        &self,
        verified: &Verified,
        prepared: &PreparedSettlement,
        attempt: Attempt,
    ) -> Result<Settlement, SettleError> {
        let settled = self
            .signer_of(prepared)
            .verifier
            .submit(verified, prepared, attempt)
            .await;
        self.noted(settled, |_| true)
    }

    async fn replace(
        &self,
        prepared: &PreparedSettlement,
    ) -> Result<PreparedSettlement, SettleError> {
        // Signing with a key whose lease another instance took would race that instance's
        // counter for the nonce: only a lane this instance holds replaces its transaction.
        // Right after a start (the reconciler's first pass) the first round of leasing may not
        // have run yet.
        if self.board.held_now().is_empty() {
            self.board.wait_ready().await;
        }
        let lane = self.signer_of(prepared);
        let held = self
            .board
            .held_now()
            .into_iter()
            .any(|i| std::ptr::eq(&self.lanes[i], lane));
        if !held {
            return Err(SettleError::Unavailable(
                "the settler key that signed it is not held by this instance".into(),
            ));
        }
        lane.verifier.replace(prepared).await
    }

    fn replaces(&self) -> bool {
        self.lanes[0].verifier.replaces()
    }

    fn settler_of(&self, raw: &str) -> Option<String> {
        // Any lane reads a transaction's signer.
        self.lanes[0].verifier.settler_of(raw)
    }

    async fn resend(&self, raw: &str) -> Result<Resent, VerifyError> {
        // Signed bytes go out the same through any lane.
        self.lanes[0].verifier.resend(raw).await
    }

    async fn repair_stuck(&self, stuck: &[String]) -> usize {
        // Only through lanes this instance holds: a key another instance signs with has its
        // numbers in that instance's hands (each lane picks its own key's transactions).
        // Right after a start the first round of leasing may not have run yet.
        if self.board.held_now().is_empty() {
            self.board.wait_ready().await;
        }
        let mut filled = 0;
        for i in self.board.held_now() {
            filled += self.lanes[i].verifier.repair_stuck(stuck).await;
        }
        filled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_board_hands_out_only_lanes_held_and_unexpired() {
        let board = LaneBoard::new(3);
        assert!(board.held_now().is_empty());
        let later = Instant::now() + Duration::from_secs(60);
        board.set(0, Some(later));
        board.set(2, Some(Instant::now() - Duration::from_millis(1)));
        assert_eq!(board.held_now(), vec![0]);
        board.set(2, Some(later));
        assert_eq!(board.held_now(), vec![0, 2]);
        board.set(0, None);
        assert_eq!(board.held_now(), vec![2]);
        // Waiting for readiness ends as soon as the first round is done.
        board.mark_ready();
        tokio::time::timeout(Duration::from_millis(100), board.wait_ready())
            .await
            .unwrap();
    }
}

#[cfg(test)]
mod answer_tests {
    use super::*;
    use crate::payments::fake::FakeChain;

    #[tokio::test]
    async fn payment_path_answers_count_as_the_node_answering() {
        let fake = Arc::new(FakeChain::default());
        let lanes = Lanes::new(
            "eip155:84532".into(),
            vec![Lane {
                settler: "0xA".into(),
                verifier: fake.clone(),
            }],
            Arc::new(LaneBoard::new(1)),
        );
        // Unknown balance: the backend asked nobody.
        lanes.balance_of("0xT", "0xP").await.unwrap();
        assert_eq!(lanes.last_answer(), None);
        *fake.balance.lock().unwrap() = Some(5);
        let before = Instant::now();
        lanes.balance_of("0xT", "0xP").await.unwrap();
        assert!(lanes.last_answer().is_some_and(|t| t >= before));
    }
}
