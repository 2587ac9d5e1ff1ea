//! Simulations made together: verifications of one network that are waiting while earlier
//! simulations are under way share one `eth_call`, Multicall3's `aggregate3` with every call
//! allowed to fail, group commit as settlement batches are (`batch.rs`).
//!
//! Under load a node spends most of an `eth_call` on the call itself (the request, a state view,
//! an EVM set up), not on the transfer it runs: one call for many payments is what lets it keep
//! up. A group does not wait for a timer to fill: a simulation that finds a call slot free and
//! nobody waiting runs alone, at once, exactly as without grouping, so a quiet gateway's latency
//! does not change.
//!
//! A group only ever says yes for a member that would pass alone, for payers whose signature is
//! checked without running their code (65- or 64-byte signatures of plain accounts; a smart
//! wallet's, of any other length, is always simulated alone):
//! - a member that fails inside the group is simulated again alone, and that answer (its revert
//!   and its diagnosis) is the one given, as if there had been no group;
//! - a member only joins a group when no earlier member pays its payer (`to == from`): an earlier
//!   member's transfer could otherwise fund it. Earlier members can only take a payer's balance
//!   or use a nonce, which makes a later member fail (and be simulated again alone), never pass.
//! - a group call the node answers with a revert of the whole (out of gas, say) is answered
//!   member by member, alone; one it does not answer, or answers with an error that is not a
//!   revert (a rate limit), is every member's outage: a 503 each, not a call each alone.
//!
//! A group's gas is the batch settlement's own budget for as many payments (`batch.rs`), so one
//! member's token or account code cannot take a node's whole `eth_call` allowance, or its time,
//! from the others.
//!
//! A simulation waits at most `GROUP_WAIT` to be taken into a group, then its group's call,
//! bounded by the RPC timeout as any call is; a member that failed in the group is then
//! simulated alone, one call more.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use super::batch::{batch_gas, IMulticall3};
use super::*;

/// Simulations under way at once per backend: enough that a quiet gateway's simulations never
/// wait for each other's round trips, few enough that a busy one's form groups.
const CALLS_IN_FLIGHT: usize = 2;
/// How long a simulation waits to be taken into a group before it runs alone: a node this slow
/// to answer the calls under way gains nothing from grouping, and a member waiting for a slot and
/// then for its group's call would otherwise take up to two `rpc_timeout`s to fail.
const GROUP_WAIT: Duration = Duration::from_millis(500);
/// Most members one group call carries: at the batch settlement's 150k gas each, under 10M.
const GROUP_MAX: usize = 64;

/// What one simulation said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Simulated {
    /// The transfer would succeed now.
    Passed,
    /// It reverts, with this reason (decoded where the token gave one).
    Reverted(String),
    /// The node did not answer (a transport error, a timeout, an error that is not a revert).
    Unreachable(String),
}

impl Simulated {
    /// A call's answer: its value, or why there is none (a revert, or no usable answer).
    fn of<T>(answer: Result<T, RpcError<TransportErrorKind>>) -> Result<T, Simulated> {
        answer.map_err(|e| match revert_text(&e) {
            Some(revert) => Simulated::Reverted(revert),
            None => Simulated::Unreachable(e.to_string()),
        })
    }
}

/// Whether the token checks `auth`'s signature without running the payer's code: an account's
/// 65- or 64-byte signature. (A smart wallet's is checked by calling it, and its code could do
/// anything inside a group: use the group's gas, read what earlier members changed.)
fn plain_signature(auth: &EvmAuthorization) -> bool {
    matches!(auth.signature.len(), 64 | 65)
}

/// One backend's simulations: the call slots, and the members waiting for one.
pub(super) struct Simulator {
    inner: Arc<Inner>,
}

struct Inner {
    provider: RootProvider,
    /// The `from` of every simulation: the settler, as the settlement will be sent.
    from: Address,
    slots: Arc<Semaphore>,
    waiting: Mutex<VecDeque<Waiting>>,
    /// Names each waiting member, so one that stops waiting can take itself out.
    next_id: AtomicU64,
}

struct Waiting {
    id: u64,
    auth: EvmAuthorization,
    reply: oneshot::Sender<Simulated>,
}

impl Simulator {
    pub(super) fn new(provider: RootProvider, from: Address) -> Self {
        Simulator {
            inner: Arc::new(Inner {
                provider,
                from,
                slots: Arc::new(Semaphore::new(CALLS_IN_FLIGHT)),
                waiting: Mutex::new(VecDeque::new()),
                next_id: AtomicU64::new(0),
            }),
        }
    }

    /// Simulates `auth`: alone when a slot is free and nobody waits, when the network has no
    /// Multicall3 (`grouped` false) or when the payer's signature runs its code; else in the
    /// next group.
    pub(super) async fn simulate(&self, auth: &EvmAuthorization, grouped: bool) -> Simulated {
        let inner = &self.inner;
        if !grouped || !plain_signature(auth) {
            return inner.alone(auth).await;
        }
        if inner.waiting.lock().expect("not poisoned").is_empty() {
            if let Ok(permit) = inner.slots.clone().try_acquire_owned() {
                // Released by `Slot`'s drop even if this request is dropped mid-call, and the
                // members that queued meanwhile are started then.
                let _slot = Slot {
                    inner: inner.clone(),
                    permit: Some(permit),
                };
                return inner.alone(auth).await;
            }
        }
        let (reply, mut answer) = oneshot::channel();
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        inner
            .waiting
            .lock()
            .expect("not poisoned")
            .push_back(Waiting {
                id,
                auth: auth.clone(),
                reply,
            });
        Inner::start_groups(inner);
        let lost = || Simulated::Unreachable("the simulation task stopped".into());
        // A group's task always answers (it runs to its end whatever happens to this request);
        // only a runtime shutting down loses it.
        match tokio::time::timeout(GROUP_WAIT, &mut answer).await {
            Ok(answer) => answer.unwrap_or_else(|_| lost()),
            Err(_) => {
                let mine = {
                    let mut waiting = inner.waiting.lock().expect("not poisoned");
                    let at = waiting.iter().position(|w| w.id == id);
                    at.and_then(|at| waiting.remove(at))
                };
                match mine {
                    // Still waiting for a slot: the calls under way are slow; alone, at once.
                    Some(_) => inner.alone(auth).await,
                    // Already in a group's call, which is bounded as any call is.
                    None => answer.await.unwrap_or_else(|_| lost()),
                }
            }
        }
    }
}

/// A call slot held by a simulation running in its caller's task.
struct Slot {
    inner: Arc<Inner>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        drop(self.permit.take());
        Inner::start_groups(&self.inner);
    }
}

impl Inner {
    async fn alone(&self, auth: &EvmAuthorization) -> Simulated {
        let tx = TransactionRequest::default()
            .from(self.from)
            .to(auth.asset)
            .input(auth.calldata().into());
        match Simulated::of(self.provider.call(tx).await) {
            Ok(_) => Simulated::Passed,
            Err(why) => why,
        }
    }

    /// Starts a group call for the waiting members while slots are free. Called after a member
    /// queues and after every call ends, so no member waits while a slot is free.
    fn start_groups(this: &Arc<Inner>) {
        // A drop outside a runtime (its shutdown) starts nothing: the waiting members' answers
        // are dropped with it.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        loop {
            let Ok(permit) = this.slots.clone().try_acquire_owned() else {
                return;
            };
            let group = take_group(&mut this.waiting.lock().expect("not poisoned"));
            if group.is_empty() {
                // A member that queued while this permit was held found no slot: look again
                // now that it is back, or it would wait with a slot free.
                drop(permit);
                if this.waiting.lock().expect("not poisoned").is_empty() {
                    return;
                }
                continue;
            }
            let inner = this.clone();
            runtime.spawn(async move {
                let _slot = Slot {
                    inner: inner.clone(),
                    permit: Some(permit),
                };
                inner.run_group(group).await;
            });
        }
    }

    async fn run_group(self: Arc<Self>, group: Vec<Waiting>) {
        if group.len() == 1 {
            let w = group.into_iter().next().expect("one member");
            let answer = self.alone(&w.auth).await;
            let _ = w.reply.send(answer);
            return;
        }
        let calls = group
            .iter()
            .map(|w| IMulticall3::Call3 {
                target: w.auth.asset,
                allowFailure: true,
                callData: w.auth.calldata(),
            })
            .collect();
        let tx = TransactionRequest::default()
            .from(self.from)
            .to(MULTICALL3)
            .gas_limit(batch_gas(group.len()))
            .input(Bytes::from(IMulticall3::aggregate3Call { calls }.abi_encode()).into());
        let results = match Simulated::of(self.provider.call(tx).await) {
            Ok(raw) => IMulticall3::aggregate3Call::abi_decode_returns(&raw)
                .ok()
                .filter(|r| r.len() == group.len()),
            Err(Simulated::Unreachable(message)) => {
                // Each member alone would wait for the node again, or be refused again.
                for w in group {
                    let _ = w.reply.send(Simulated::Unreachable(message.clone()));
                }
                return;
            }
            // The group reverted as a whole (out of gas, say): each member alone, below.
            Err(_) => None,
        };
        let passed: Vec<bool> = match results {
            Some(results) => results.iter().map(|r| r.success).collect(),
            None => vec![false; group.len()],
        };
        for (w, passed) in group.into_iter().zip(passed) {
            if passed {
                let _ = w.reply.send(Simulated::Passed);
            } else {
                // Seldom (a failed payment): alone, in a task of its own, outside the slots.
                let inner = self.clone();
                tokio::spawn(async move {
                    let answer = inner.alone(&w.auth).await;
                    let _ = w.reply.send(answer);
                });
            }
        }
    }
}

/// Up to `GROUP_MAX` waiting members, in arrival order, leaving for a later group any whose payer
/// an earlier member of this group pays. Members whose request is gone (nobody awaits the
/// answer) are dropped, not simulated.
fn take_group(waiting: &mut VecDeque<Waiting>) -> Vec<Waiting> {
    let mut group: Vec<Waiting> = Vec::new();
    let mut paid = std::collections::HashSet::new();
    let mut later = VecDeque::new();
    while group.len() < GROUP_MAX {
        let Some(w) = waiting.pop_front() else {
            break;
        };
        if w.reply.is_closed() {
            continue;
        }
        if paid.contains(&w.auth.from) {
            later.push_back(w);
        } else {
            paid.insert(w.auth.to);
            group.push(w);
        }
    }
    while let Some(w) = later.pop_back() {
        waiting.push_front(w);
    }
    group
}

/// `take_group` alone: pure logic over a queue (no node; the authorizations are never sent).
#[cfg(test)]
mod tests {
    use super::*;

    /// A waiting member, and the receiver its request would await (kept alive by the test: a
    /// member nobody awaits is dropped from the queue).
    fn waiting(id: u64, from: Address, to: Address) -> (Waiting, oneshot::Receiver<Simulated>) {
        let (reply, answer) = oneshot::channel();
        let w = Waiting {
            id,
            auth: EvmAuthorization {
                chain_id: 1,
                asset: Address::ZERO,
                from,
                to,
                value: U256::from(1),
                valid_after: U256::ZERO,
                valid_before: U256::MAX,
                nonce: B256::with_last_byte(id as u8),
                signature: Bytes::new(),
            },
            reply,
        };
        (w, answer)
    }

    fn queue(
        members: impl IntoIterator<Item = (Waiting, oneshot::Receiver<Simulated>)>,
    ) -> (VecDeque<Waiting>, Vec<oneshot::Receiver<Simulated>>) {
        members.into_iter().unzip()
    }

    fn ids(members: &[Waiting]) -> Vec<u64> {
        members.iter().map(|w| w.id).collect()
    }

    #[test]
    fn a_payer_whom_an_earlier_member_pays_waits_for_a_later_group() {
        let (a, b, payee) = (
            Address::repeat_byte(1),
            Address::repeat_byte(2),
            Address::repeat_byte(9),
        );
        let (mut queue, _answers) = queue([
            waiting(0, a, payee),
            // The payee paying: member 0's transfer would fund it inside the group.
            waiting(1, payee, payee),
            waiting(2, b, payee),
            waiting(3, payee, a),
        ]);
        let first = take_group(&mut queue);
        assert_eq!(ids(&first), [0, 2]);
        assert_eq!(ids(queue.make_contiguous()), [1, 3], "kept, in their order");
        // First in its own group, nobody before it pays it; the next one's payer it pays.
        let second = take_group(&mut queue);
        assert_eq!(ids(&second), [1]);
        assert_eq!(ids(&take_group(&mut queue)), [3]);
        assert!(take_group(&mut queue).is_empty());
    }

    #[test]
    fn a_group_takes_at_most_group_max_in_arrival_order() {
        let payee = Address::repeat_byte(9);
        let n = GROUP_MAX as u64;
        let (mut queue, _answers) =
            queue((0..n + 3).map(|i| waiting(i, Address::repeat_byte(1), payee)));
        let first = take_group(&mut queue);
        assert_eq!(ids(&first), (0..n).collect::<Vec<_>>());
        assert_eq!(ids(&take_group(&mut queue)), [n, n + 1, n + 2]);
    }

    #[test]
    fn a_chain_of_payments_goes_one_link_per_group() {
        let [a, b, c, d] = [1, 2, 3, 4].map(Address::repeat_byte);
        // a pays b, b pays c, c pays d: each link could fund the next.
        let (mut queue, _answers) = queue([waiting(0, a, b), waiting(1, b, c), waiting(2, c, d)]);
        assert_eq!(ids(&take_group(&mut queue)), [0, 2]);
        assert_eq!(ids(&take_group(&mut queue)), [1]);
    }

    #[test]
    fn a_member_nobody_awaits_is_dropped_unsimulated() {
        let payee = Address::repeat_byte(9);
        let (mut queue, mut answers) =
            queue((0..3).map(|i| waiting(i, Address::repeat_byte(1), payee)));
        drop(answers.remove(1));
        assert_eq!(ids(&take_group(&mut queue)), [0, 2]);
        assert!(queue.is_empty());
    }
}
