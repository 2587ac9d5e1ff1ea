//! The payment pipeline on a scripted chain backend (`fake.rs`) and a real SQLite store: every
//! admission and settlement outcome, the quota counting and the release rules, without a chain.
//! The same steps against a real chain are `tests/evm.rs` and `tests/money_safety.rs`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::json;
use tokio::sync::Notify;

use super::fake::{FakeChain, AMOUNT};
use super::*;
use crate::config::Config;
use crate::payments::chain::{SettleError, VerifyError};
use crate::routes::{Route, RouteTable};
use crate::store::{LazyStore, Store, TenantRecord};
use crate::x402::{PaymentPayloadV1, PaymentProof};

struct Pipeline {
    payments: Arc<Payments>,
    chain: Arc<FakeChain>,
    route: Arc<Route>,
    _dir: tempfile::TempDir,
}

impl Pipeline {
    async fn new() -> Pipeline {
        let text = r#"
[networks."eip155:84532"]
rpc_url = "http://127.0.0.1:1"
settler_key = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
assets = [{ symbol = "USDC", address = "0x036CbD53842c5426634e7929541eC2318f3dCF7e", decimals = 6, eip712_name = "USDC", eip712_version = "2" }]
[tiers.tiny]
monthly_verifications = 3
networks = ["eip155:84532"]
[[tenants]]
id = "acme"
tier = "tiny"
pay_to = { "eip155:84532" = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C" }
[[routes]]
tenant = "acme"
path = "/paid"
upstream = "http://127.0.0.1:1"
price = "$0.01"
"#;
        let config = Config::from_toml(text, &|_| None).unwrap();
        let route = RouteTable::build(&config)
            .find(None, "GET", "/paid")
            .unwrap()
            .clone();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("p.db").display());
        let store = Arc::new(LazyStore::new(&url));
        store
            .get()
            .await
            .unwrap()
            .upsert_config_tenant(&TenantRecord {
                id: "acme".into(),
                name: "acme".into(),
                email: None,
                tier: "tiny".into(),
                status: "active".into(),
                pay_to: Default::default(),
                source: "config".into(),
                created_at: 0,
                updated_at: 0,
            })
            .await
            .unwrap();
        let chain = Arc::new(FakeChain::default());
        let mut backends = crate::payments::chain::ChainBackends::default();
        backends.insert("eip155:84532".parse().unwrap(), chain.clone());
        let payments = Arc::new(Payments {
            backends,
            tenants: Arc::new(crate::tenants::TenantDirectory::new(
                store.clone(),
                config.tiers.clone(),
            )),
            store,
            cache: Default::default(),
            queue_wakeup: Arc::new(Notify::new()),
            batchers: Default::default(),
        });
        Pipeline {
            payments,
            chain,
            route,
            _dir: dir,
        }
    }

    async fn admit(&self, nonce: u8) -> Admission {
        let proof = PaymentProof::V1(PaymentPayloadV1 {
            x402_version: 1,
            scheme: "exact".into(),
            network: "base-sepolia".into(),
            payload: json!({ "nonce": nonce }),
        });
        let offer = &self.route.offers.as_ref().unwrap().offers[0];
        let raw = format!("proof-{nonce}");
        admit(
            &self.payments,
            &self.route,
            offer,
            &proof,
            raw.as_bytes(),
            "x-payment-response",
            Some(3),
        )
        .await
    }

    async fn admitted(&self, nonce: u8) -> PaymentState {
        match self.admit(nonce).await {
            Admission::Admitted(s) => *s,
            other => panic!("nonce {nonce}: {other:?}"),
        }
    }

    async fn store(&self) -> &Store {
        self.payments.store.get().await.unwrap()
    }

    async fn status(&self, state: &PaymentState) -> String {
        self.store()
            .await
            .claim_status(state.claim_id)
            .await
            .unwrap()
            .unwrap()
    }

    /// Verified payments counted toward the tenant's month.
    async fn used(&self) -> i64 {
        self.payments.tenants.invalidate("acme").await;
        self.payments.tenants.state("acme").await.unwrap().used
    }

    fn verifications(&self) -> u64 {
        self.chain.verifications.load(Ordering::SeqCst)
    }
}

fn reason(a: &Admission) -> Reason {
    match a {
        Admission::Rejected(r) => r.reason,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn every_admission_outcome() {
    let p = Pipeline::new().await;
    // Invalid: a 402 with the backend's reason; nothing claimed or counted.
    p.chain
        .verify_errors
        .lock()
        .unwrap()
        .push_back(VerifyError::invalid(
            Reason::InvalidExactEvmSignature,
            "bad",
        ));
    assert_eq!(reason(&p.admit(1).await), Reason::InvalidExactEvmSignature);
    // Our side down: 503, nothing claimed.
    p.chain
        .verify_errors
        .lock()
        .unwrap()
        .push_back(VerifyError::Unavailable("rpc down".into()));
    assert!(matches!(p.admit(2).await, Admission::Unavailable(_)));
    assert_eq!(p.used().await, 0);
    // No settler for this network here: refused before anything is verified.
    *p.chain.not_ready.lock().unwrap() = Some(SettleError::Unavailable("no key".into()));
    let before = p.verifications();
    assert!(matches!(p.admit(3).await, Admission::Unavailable(_)));
    assert_eq!(p.verifications(), before);
    *p.chain.not_ready.lock().unwrap() = None;
    // Valid: claimed and counted once; the same proof again is a duplicate (from the cache).
    let s = p.admitted(3).await;
    assert_eq!(s.stage, Stage::Claimed);
    assert_eq!(p.status(&s).await, "claimed");
    assert_eq!(p.used().await, 1);
    let before = p.verifications();
    assert_eq!(reason(&p.admit(3).await), Reason::DuplicateSettlement);
    assert_eq!(p.verifications(), before, "recalled from the cache");
    assert_eq!(p.used().await, 1);
    // The quota (3 a month) admits exactly up to the limit.
    p.admitted(4).await;
    p.admitted(5).await;
    assert!(matches!(p.admit(6).await, Admission::QuotaExceeded));
    assert_eq!(p.used().await, 3);
}

#[tokio::test]
async fn a_payers_unsettled_payments_are_held_against_its_balance() {
    let p = Pipeline::new().await;
    *p.chain.balance.lock().unwrap() = Some(AMOUNT + AMOUNT / 2);
    // Alone: no balance lookup needed, the simulation covered it.
    let first = p.admitted(1).await;
    // A second while the first is unsettled: 20000 owed against 15000.
    let second = p.admit(2).await;
    assert_eq!(reason(&second), Reason::InvalidExactEvmInsufficientBalance);
    assert_eq!(p.used().await, 1, "the refused one gave its count back");
    // Once the first settled, the second fits.
    let mut first = first;
    assert!(matches!(
        settle(&p.payments, &mut first).await,
        SettleOutcome::Settled(_)
    ));
    let mut second = p.admitted(2).await;
    // Proof 3 is checked on-chain now, while the second is still unsettled...
    let offer = &p.route.offers.as_ref().unwrap().offers[0];
    let proof3 = PaymentProof::V1(PaymentPayloadV1 {
        x402_version: 1,
        scheme: "exact".into(),
        network: "base-sepolia".into(),
        payload: json!({ "nonce": 3 }),
    });
    assert!(verify_only(&p.payments, offer, &proof3, b"proof-3")
        .await
        .outcome
        .is_ok());
    // ...then the second settles and spends the balance that check saw.
    assert!(matches!(
        settle(&p.payments, &mut second).await,
        SettleOutcome::Settled(_)
    ));
    *p.chain.balance.lock().unwrap() = Some(AMOUNT / 2);
    let lookups = p.chain.balance_lookups.load(Ordering::SeqCst);
    assert_eq!(
        reason(&p.admit(3).await),
        Reason::InvalidExactEvmInsufficientBalance,
        "asked again: a settlement since its check may have spent it"
    );
    assert_eq!(p.chain.balance_lookups.load(Ordering::SeqCst), lookups + 1);
    // A payment checked after the last settlement, with nothing else in flight, costs no lookup.
    *p.chain.balance.lock().unwrap() = Some(10 * AMOUNT);
    p.admitted(4).await;
    assert_eq!(p.chain.balance_lookups.load(Ordering::SeqCst), lookups + 1);
}

#[tokio::test]
async fn every_settlement_outcome() {
    let p = Pipeline::new().await;
    // Landed: recorded in the ledger, the claim settled.
    let mut s = p.admitted(1).await;
    let SettleOutcome::Settled(receipt) = settle(&p.payments, &mut s).await else {
        panic!()
    };
    assert!(receipt.success);
    assert_eq!(
        receipt.network, "base-sepolia",
        "a v1 proof gets a v1 receipt"
    );
    assert!(matches!(s.stage, Stage::Settled(_)));
    assert_eq!(p.status(&s).await, "settled");
    assert_eq!(p.store().await.ledger(10).await.unwrap().len(), 1);
    assert_eq!(p.used().await, 1);

    // Reverted: refused with the reason, the claim failed and never reusable, its count back.
    let mut s = p.admitted(2).await;
    p.chain
        .settle_outcomes
        .lock()
        .unwrap()
        .push_back(Err(SettleError::Failed {
            reason: Reason::InvalidExactEvmTransactionFailed,
            message: "reverted".into(),
            transaction: Some("0xdead".into()),
        }));
    let SettleOutcome::Refused(receipt) = settle(&p.payments, &mut s).await else {
        panic!()
    };
    assert!(!receipt.success);
    assert_eq!(receipt.transaction, "0xdead");
    assert_eq!(p.status(&s).await, "failed");
    assert_eq!(p.used().await, 1);
    assert_eq!(reason(&p.admit(2).await), Reason::DuplicateSettlement);

    // Refused by the node twice (signed anew once): nothing sent, so released and reusable,
    // and verified again (not from the cache) when presented again.
    let mut s = p.admitted(3).await;
    for _ in 0..2 {
        p.chain
            .settle_outcomes
            .lock()
            .unwrap()
            .push_back(Err(SettleError::NotBroadcast {
                message: "nonce too low".into(),
            }));
    }
    assert!(matches!(
        settle(&p.payments, &mut s).await,
        SettleOutcome::Unavailable(_)
    ));
    assert_eq!(s.stage, Stage::Released);
    assert_eq!(p.status(&s).await, "released");
    assert_eq!(p.used().await, 1);
    let before = p.verifications();
    let again = p.admitted(3).await;
    assert_eq!(p.verifications(), before + 1, "checked again, not recalled");
    assert_eq!(again.claim_id, s.claim_id);
    let mut s = again;
    assert!(matches!(
        settle(&p.payments, &mut s).await,
        SettleOutcome::Settled(_)
    ));
    assert_eq!(p.used().await, 2);

    // Maybe broadcast: pending, the claim kept `settling` and never released or reusable.
    let mut s = p.admitted(4).await;
    p.chain
        .settle_outcomes
        .lock()
        .unwrap()
        .push_back(Err(SettleError::Pending {
            transaction: "0xbeef".into(),
            message: "answer lost".into(),
        }));
    let SettleOutcome::Pending(receipt) = settle(&p.payments, &mut s).await else {
        panic!()
    };
    assert_eq!(receipt.transaction, "0xbeef");
    assert_eq!(p.status(&s).await, "settling");
    release(&p.payments, &mut s, "must not").await;
    assert_eq!(p.status(&s).await, "settling");
    assert_eq!(reason(&p.admit(4).await), Reason::DuplicateSettlement);
}

#[tokio::test]
async fn enqueue_release_and_detached_steps() {
    let p = Pipeline::new().await;
    // Queued: accepted with an empty transaction, the claim queued for the worker.
    let mut s = p.admitted(1).await;
    let SettleOutcome::Settled(receipt) = enqueue_detached(&p.payments, &mut s).await else {
        panic!()
    };
    assert!(receipt.success && receipt.transaction.is_empty());
    assert_eq!(s.stage, Stage::Queued);
    assert_eq!(p.status(&s).await, "queued");
    release(&p.payments, &mut s, "must not").await;
    assert_eq!(p.status(&s).await, "queued");

    // Released (the origin failed): not charged, count back, the proof usable again.
    let mut s = p.admitted(2).await;
    assert_eq!(p.used().await, 2);
    release(&p.payments, &mut s, "origin answered 500").await;
    assert_eq!(s.stage, Stage::Released);
    assert_eq!(p.status(&s).await, "released");
    assert_eq!(p.used().await, 1);
    let mut s = p.admitted(2).await;

    // A detached settlement reports back like an inline one.
    assert!(matches!(
        settle_detached(&p.payments, &mut s).await,
        SettleOutcome::Settled(_)
    ));
    assert!(matches!(s.stage, Stage::Settled(_)));
    // Settled is final: a release does nothing.
    release(&p.payments, &mut s, "must not").await;
    assert_eq!(p.status(&s).await, "settled");
}

/// Only a `before` claim may skip its fsync: the settlement's synced record follows it before
/// anything leaves the gateway. An `after` or `deferred` claim is all that stands between the
/// origin's answer and the same proof served again after a power cut.
#[test]
fn only_a_before_claim_is_relaxed() {
    use crate::config::SettlePolicy;
    use crate::store::Durability;
    assert_eq!(
        admit::claim_durability(SettlePolicy::Before),
        Durability::Relaxed
    );
    for policy in [SettlePolicy::After, SettlePolicy::Deferred] {
        assert_eq!(admit::claim_durability(policy), Durability::Synced);
    }
}
