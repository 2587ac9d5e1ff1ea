//! One store suite, run on both backends: SQLite (a temp file) and the machine's Postgres
//! (`X402_TEST_DATABASE_URL`, default postgres://postgres@127.0.0.1:5432/test), each test in a
//! fresh schema so tests run in parallel without seeing each other.

use std::sync::Arc;

use alloy::primitives::{Bytes, B256, U256};
use x402_gate::payments::chain::{
    PaymentKey, PreparedSettlement, SchemePayload, Settlement, Verified,
};
use x402_gate::payments::evm::EvmAuthorization;
use x402_gate::store::Durability::{self, Synced};
use x402_gate::store::{
    day_string, period_of, ApiKeyRecord, Backend, ClaimContext, ClaimOutcome, PaymentFilter,
    QueueStatus, Store, StoreError, TenantRecord, TransactionUse,
};

const CTX: ClaimContext<'static> = ClaimContext {
    tenant: "acme",
    route: "/paid/*",
};

fn postgres_base() -> String {
    std::env::var("X402_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A database of the given backend, plus whatever keeps it alive, and a URL to open it again.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

async fn fresh(backend: &str) -> TestDb {
    match backend {
        "sqlite" => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("gate.db").display());
            TestDb {
                url,
                _dir: Some(dir),
            }
        }
        _ => {
            let schema = format!("t{}", rand_suffix());
            let admin = sqlx::PgPool::connect(&postgres_base()).await.unwrap();
            // The schema name is hex digits we generated: safe to splice.
            let ddl = sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}"));
            sqlx::query(ddl).execute(&admin).await.unwrap();
            let sep = if postgres_base().contains('?') {
                '&'
            } else {
                '?'
            };
            let url = format!(
                "{}{sep}options=-c%20search_path%3D{schema}",
                postgres_base()
            );
            TestDb { url, _dir: None }
        }
    }
}

/// A schema name's suffix no other test of any run shares: the clock, the process and a count
/// (tests start together, and two clock readings on two threads may be equal). One run failed
/// at its `CREATE SCHEMA` (the error's text was not kept; a shared name is the one cause found
/// in the code).
fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let count = COUNT.fetch_add(1, Ordering::Relaxed);
    format!("{n:x}p{:x}c{count:x}", std::process::id())
}

/// The EIP-3009 authorization of the test payment with this nonce.
fn authorization(nonce: u8) -> EvmAuthorization {
    EvmAuthorization {
        chain_id: 84532,
        asset: "0x5FbDB2315678afecb367f032d93F642f64180aa3"
            .parse()
            .unwrap(),
        from: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
            .parse()
            .unwrap(),
        to: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
            .parse()
            .unwrap(),
        value: U256::from(10_000),
        valid_after: U256::ZERO,
        valid_before: U256::from(4_000_000_000u64),
        nonce: B256::with_last_byte(nonce),
        signature: Bytes::from(vec![1u8; 65]),
    }
}

fn verified(nonce: u8) -> Verified {
    let auth = authorization(nonce);
    Verified {
        key: PaymentKey {
            network: "eip155:84532".into(),
            asset: format!("{:#x}", auth.asset),
            payer: format!("{:#x}", auth.from),
            nonce: format!("{:#x}", auth.nonce),
        },
        payer: auth.from.to_checksum(None),
        pay_to: auth.to.to_checksum(None),
        amount: "10000".into(),
        expires_at: 4_000_000_000,
        scheme_payload: auth.to_payload(),
    }
}

/// Claims `v` (synced, no quota limit) and returns its claim id.
async fn claimed(store: &Store, v: &Verified) -> i64 {
    store
        .claim(v, &CTX, None, Synced)
        .await
        .unwrap()
        .id()
        .unwrap()
}

fn settlement(tx: u8) -> Settlement {
    Settlement {
        transaction: format!("{:#x}", B256::with_last_byte(tx)),
        block_number: 7,
        network: "eip155:84532".into(),
        payer: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".into(),
    }
}

async fn claim_is_once_until_released(store: Store) {
    let v = verified(1);
    let id = store
        .claim(&v, &CTX, None, Synced)
        .await
        .unwrap()
        .id()
        .expect("first claim");
    assert_eq!(
        store.claim(&v, &CTX, None, Synced).await.unwrap().id(),
        None,
        "a replay must not claim"
    );
    // Another nonce is another payment.
    assert!(store
        .claim(&verified(2), &CTX, None, Synced)
        .await
        .unwrap()
        .id()
        .is_some());
    // Released (not charged): the same proof may be presented again, same row.
    assert!(store.release(id, "origin answered 500").await.unwrap());
    assert_eq!(
        store.claim_status(id).await.unwrap().as_deref(),
        Some("released")
    );
    assert_eq!(
        store.claim(&v, &CTX, None, Synced).await.unwrap().id(),
        Some(id)
    );
    // A settlement transaction recorded: it may be in flight, so the claim cannot be released,
    // and the reconciler finds it with the bytes to send again.
    let sent = PreparedSettlement {
        transaction: settlement(8).transaction,
        raw: "0x02f9".into(),
        settler: String::new(),
        nonce: Some(3),
        replaces: Vec::new(),
    };
    store.mark_settling(id, &sent).await.unwrap();
    assert!(
        !store.release(id, "rpc answer lost").await.unwrap(),
        "a settling claim cannot be released"
    );
    let open = store.settling_claims(i64::MAX, 10).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].tx_raw.as_deref(), Some("0x02f9"));
    // Only the transaction it names, once proven unsent, turns it back into a plain claim.
    assert!(!store.unmark_settling(id, "0xother").await.unwrap());
    assert!(store.unmark_settling(id, &sent.transaction).await.unwrap());
    assert_eq!(
        store.claim_status(id).await.unwrap().as_deref(),
        Some("claimed")
    );
    // Settled: never again.
    store
        .record_settlement(id, &v, &settlement(9), &CTX)
        .await
        .unwrap();
    assert!(
        !store.release(id, "too late").await.unwrap(),
        "a settled claim cannot be released"
    );
    assert_eq!(
        store.claim_status(id).await.unwrap().as_deref(),
        Some("settled")
    );
    assert_eq!(
        store.claim(&v, &CTX, None, Synced).await.unwrap().id(),
        None
    );
    store
        .record_settlement(id, &v, &settlement(9), &CTX)
        .await
        .unwrap();
    let ledger = store.ledger(10).await.unwrap();
    assert_eq!(
        ledger.len(),
        1,
        "recording twice must not duplicate the ledger row"
    );
    assert_eq!(ledger[0].tx_hash, settlement(9).transaction);
    assert_eq!(ledger[0].amount, "10000");
    assert_eq!(ledger[0].tenant, "acme");
    assert_eq!(ledger[0].route, "/paid/*");
    assert_eq!(ledger[0].block_number, 7);
}

/// Claims nobody will finish (a kill mid-request, a commit whose answer was lost) are released
/// once their authorization has expired, and only then; settling and settled ones never are.
async fn expired_open_claims_are_released(store: Store) {
    let mut old = verified(40);
    old.expires_at = 1_000;
    let open = claimed(&store, &old).await;
    let mut sending = verified(41);
    sending.expires_at = 1_000;
    let settling = claimed(&store, &sending).await;
    let sent = PreparedSettlement {
        transaction: settlement(41).transaction,
        raw: "0x02f9".into(),
        settler: String::new(),
        nonce: Some(1),
        replaces: Vec::new(),
    };
    store.mark_settling(settling, &sent).await.unwrap();
    let live = claimed(&store, &verified(42)).await;
    assert_eq!(
        store.release_expired_claims(999).await.unwrap(),
        0,
        "not expired yet"
    );
    assert_eq!(store.release_expired_claims(2_000).await.unwrap(), 1);
    assert_eq!(
        store.claim_status(open).await.unwrap().as_deref(),
        Some("released")
    );
    assert_eq!(
        store.claim_status(settling).await.unwrap().as_deref(),
        Some("settling")
    );
    assert_eq!(
        store.claim_status(live).await.unwrap().as_deref(),
        Some("claimed")
    );
    assert_eq!(
        store.release_expired_claims(2_000).await.unwrap(),
        0,
        "once"
    );
}

async fn settled_claims_are_never_reclaimed(store: Store) {
    let v = verified(3);
    let id = claimed(&store, &v).await;
    store
        .record_settlement(id, &v, &settlement(3), &CTX)
        .await
        .unwrap();
    assert_eq!(
        store.claim(&v, &CTX, None, Synced).await.unwrap().id(),
        None
    );
    let failed = verified(4);
    let fid = claimed(&store, &failed).await;
    store.mark_failed(fid, "reverted").await.unwrap();
    assert_eq!(
        store.claim(&failed, &CTX, None, Synced).await.unwrap().id(),
        None
    );
    let queued = verified(7);
    let qid = claimed(&store, &queued).await;
    store.enqueue(qid, &queued).await.unwrap();
    assert!(
        !store.release(qid, "x").await.unwrap(),
        "a queued claim cannot be released"
    );
    assert_eq!(
        store.claim(&queued, &CTX, None, Synced).await.unwrap().id(),
        None
    );
}

/// A payer's exposure counts at most `limit` of its unsettled claims (the limit is written into
/// the statement: each value its own text), sums them, and sees a settlement made at or after
/// the time asked about.
async fn payer_exposure_stops_at_its_limit(store: Store) {
    let first = verified(1);
    let (network, asset, payer) = (&first.key.network, &first.key.asset, &first.key.payer);
    let mut ids = Vec::new();
    for n in 1..=70 {
        ids.push(claimed(&store, &verified(n)).await);
    }
    for (limit, counted) in [(65, 65), (3, 3), (65, 65), (100, 70), (0, 0)] {
        let x = store
            .payer_exposure(network, asset, payer, 0, limit)
            .await
            .unwrap();
        assert_eq!(
            (x.unsettled, x.owed, x.settled_since),
            (counted, counted as u128 * 10_000, false),
            "limit {limit}"
        );
    }
    store
        .record_settlement(ids[0], &first, &settlement(1), &CTX)
        .await
        .unwrap();
    let x = store
        .payer_exposure(network, asset, payer, 0, 65)
        .await
        .unwrap();
    assert_eq!((x.unsettled, x.settled_since), (65, true));
    let x = store
        .payer_exposure(network, asset, payer, i64::MAX, 100)
        .await
        .unwrap();
    assert_eq!((x.unsettled, x.settled_since), (69, false));
    // Another payer's claims are not this one's.
    let x = store
        .payer_exposure(
            network,
            asset,
            "0x0000000000000000000000000000000000000001",
            0,
            65,
        )
        .await
        .unwrap();
    assert_eq!((x.unsettled, x.owed, x.settled_since), (0, 0, false));
}

/// A claim's durability: half the racers claim `Relaxed` (a `before` route's claim, on SQLite's
/// relaxed connection), half `Synced`, on each of two stores.
fn mixed(i: usize) -> Durability {
    if i % 4 < 2 {
        Synced
    } else {
        Durability::Relaxed
    }
}

async fn concurrent_claims_admit_exactly_one(url: String) {
    // Two independent pools, as two gateway instances would have.
    let a = Store::connect(&url).await.unwrap();
    let b = Store::connect(&url).await.unwrap();
    let v = Arc::new(verified(5));
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let v = v.clone();
        tasks.push(tokio::spawn(async move {
            store.claim(&v, &CTX, None, mixed(i)).await.unwrap().id()
        }));
    }
    let mut won = 0;
    for t in tasks {
        if t.await.unwrap().is_some() {
            won += 1;
        }
    }
    assert_eq!(won, 1, "exactly one concurrent claim may win");
}

async fn queue_survives_reopening(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let v = verified(6);
    let id = claimed(&store, &v).await;
    store.enqueue(id, &v).await.unwrap();
    store.enqueue(id, &v).await.unwrap(); // idempotent
    assert_eq!(
        store.claim_status(id).await.unwrap().as_deref(),
        Some("queued")
    );
    drop(store);

    let store = Store::connect(&url).await.unwrap();
    let due = store.due(10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].verified, v);
    assert!(due[0].prepared.is_none());
    let prepared = PreparedSettlement {
        transaction: settlement(6).transaction,
        raw: "0x02f8".into(),
        settler: String::new(),
        nonce: Some(7),
        replaces: Vec::new(),
    };
    store.queue_prepared(id, &prepared).await.unwrap();
    assert_eq!(
        store.due(10).await.unwrap()[0].prepared.as_ref(),
        Some(&prepared)
    );
    // Retried later: not due now.
    store
        .queue_retry(id, 1, i64::MAX / 2, "rpc down", true)
        .await
        .unwrap();
    assert!(store.due(10).await.unwrap().is_empty());
    store
        .queue_retry(id, 1, 0, "rpc down", false)
        .await
        .unwrap();
    let due = store.due(10).await.unwrap();
    assert_eq!(due[0].attempts, 1);
    assert!(
        due[0].prepared.is_none(),
        "forget_prepared dropped the stale transaction"
    );
    store
        .record_settlement(id, &v, &settlement(6), &CTX)
        .await
        .unwrap();
    store
        .queue_finish(id, QueueStatus::Done, None)
        .await
        .unwrap();
    assert!(store.due(10).await.unwrap().is_empty());
    assert_eq!(
        store.claim_status(id).await.unwrap().as_deref(),
        Some("settled")
    );
}

/// A deferred settlement queued by the version before stored format 2 (its `verified` JSON held
/// the alloy `EvmAuthorization` in alloy's serde form) is read back as today's chain-neutral
/// `Verified`, and the EVM backend parses its payload into the very authorization it was.
async fn format_1_queue_rows_are_upgraded_on_read(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let v = verified(11);
    let id = claimed(&store, &v).await;
    // Written as the previous version wrote it: its JSON, its columns (no `format`), its SQL.
    let format_1 = r#"{"key":{"network":"eip155:84532","asset":"0x5fbdb2315678afecb367f032d93f642f64180aa3","payer":"0x70997970c51812dc3a010c7d01b50e0d17dc79c8","nonce":"0x000000000000000000000000000000000000000000000000000000000000000b"},"payer":"0x70997970C51812dc3A010C7d01b50e0d17dc79C8","pay_to":"0x209693Bc6afc0C5328bA36FaF03C514EF312287C","amount":"10000","valid_before":4000000000,"authorization":{"chain_id":84532,"asset":"0x5fbdb2315678afecb367f032d93f642f64180aa3","from":"0x70997970c51812dc3a010c7d01b50e0d17dc79c8","to":"0x209693bc6afc0c5328ba36faf03c514ef312287c","value":"0x2710","valid_after":"0x0","valid_before":"0xee6b2800","nonce":"0x000000000000000000000000000000000000000000000000000000000000000b","signature":"0x0101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101"}}"#;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    sqlx::query(
        "INSERT INTO settlement_queue (claim_id, verified, status, attempts, next_attempt_at, created_at, updated_at)
         VALUES ($1, $2, 'queued', 0, 0, 0, 0)",
    )
    .bind(id)
    .bind(format_1)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("UPDATE payment_claims SET status = 'queued' WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let due = store.due(10).await.unwrap();
    assert_eq!(due.len(), 1);
    let got = &due[0].verified;
    assert_eq!(
        got.scheme_payload,
        SchemePayload {
            chain: "evm".into(),
            v: 0,
            data: serde_json::from_str::<serde_json::Value>(format_1).unwrap()["authorization"]
                .clone(),
        }
    );
    // Everything but the payload's layout is what today's version would have queued.
    assert_eq!(
        Verified {
            scheme_payload: v.scheme_payload.clone(),
            ..got.clone()
        },
        v
    );
    assert_eq!(
        EvmAuthorization::from_payload(&got.scheme_payload).unwrap(),
        authorization(11),
        "the EVM backend settles it as the authorization it was"
    );
    // Rows written now are format 2 and read back as they were written.
    let w = verified(12);
    let wid = claimed(&store, &w).await;
    store.enqueue(wid, &w).await.unwrap();
    let due = store.due(10).await.unwrap();
    assert_eq!(due.len(), 2);
    assert_eq!(due.iter().find(|d| d.claim_id == wid).unwrap().verified, w);
}

fn tenant(id: &str) -> TenantRecord {
    TenantRecord {
        id: id.into(),
        name: format!("{id} Inc"),
        email: Some(format!("ops@{id}.test")),
        tier: "free".into(),
        status: "active".into(),
        pay_to: [(
            "eip155:84532".to_string(),
            "0x209693Bc6afc0C5328bA36FaF03C514EF312287C".to_string(),
        )]
        .into_iter()
        .collect(),
        source: "api".into(),
        created_at: 0,
        updated_at: 0,
    }
}

async fn tenants_keys_and_transactions(store: Store) {
    assert!(store.create_tenant(&tenant("acme")).await.unwrap());
    assert!(
        !store.create_tenant(&tenant("acme")).await.unwrap(),
        "ids are unique"
    );
    assert!(store
        .update_tenant("acme", None, Some("pro"), Some("suspended"), None)
        .await
        .unwrap());
    let t = store.tenant("acme").await.unwrap().unwrap();
    assert_eq!((t.tier.as_str(), t.status.as_str()), ("pro", "suspended"));
    assert_eq!(
        t.pay_to["eip155:84532"],
        "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
    );
    // A config upsert follows the file but keeps the status set through the API.
    let mut from_file = tenant("acme");
    from_file.tier = "starter".into();
    store.upsert_config_tenant(&from_file).await.unwrap();
    let t = store.tenant("acme").await.unwrap().unwrap();
    assert_eq!(
        (t.tier.as_str(), t.status.as_str(), t.source.as_str()),
        ("starter", "suspended", "config")
    );
    assert!(store.tenant("nobody").await.unwrap().is_none());
    assert!(!store
        .update_tenant("nobody", Some("x"), None, None, None)
        .await
        .unwrap());

    let key = ApiKeyRecord {
        id: "key_1".into(),
        tenant_id: "acme".into(),
        prefix: "abcdef123456".into(),
        hash: "00ff".into(),
        scopes: vec!["verify".into(), "usage:read".into()],
        created_at: 1,
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
        replaced_by: None,
    };
    store.insert_key(&key).await.unwrap();
    let found = store.key_by_prefix("abcdef123456").await.unwrap().unwrap();
    assert_eq!(found.scopes, key.scopes);
    assert!(found.is_live(100));
    store.touch_key("key_1").await.unwrap();
    assert!(store
        .key("key_1")
        .await
        .unwrap()
        .unwrap()
        .last_used_at
        .is_some());
    store.retire_key("key_1", "key_2", 50).await.unwrap();
    let retired = store.key("key_1").await.unwrap().unwrap();
    assert!(retired.is_live(49) && !retired.is_live(50));
    assert_eq!(retired.replaced_by.as_deref(), Some("key_2"));
    assert!(store.revoke_key("key_1").await.unwrap());
    assert!(!store.revoke_key("key_1").await.unwrap());
    assert!(!store.key("key_1").await.unwrap().unwrap().is_live(0));
    assert_eq!(store.keys_of("acme").await.unwrap().len(), 1);

    // A transaction counts once per tenant (whatever the hash's case), never past the limit.
    let period = period_of(x402_gate::payments::chain::unix_now() as i64);
    let used = |tenant: &'static str, tx: &'static str, limit: Option<i64>| {
        let store = store.clone();
        let period = period.clone();
        async move {
            store
                .consume_transaction_counted(
                    tenant,
                    "eip155:84532",
                    (tx, "0x1", "10"),
                    &period,
                    limit,
                )
                .await
                .unwrap()
        }
    };
    // Ids are kept as the backend wrote them (its canonical form: lower-case hex on EVM, base58,
    // where case matters, on Solana): the store compares them exactly.
    assert_eq!(used("acme", "0xab", None).await, TransactionUse::Counted);
    assert_eq!(
        used("acme", "0xab", None).await,
        TransactionUse::AlreadyUsed
    );
    let sig =
        "5VERv8NMvzbJMEkV8xnrLkEaWRtSz9CosKDYjCJjBRnbJLgp8uirBgmQpjKhoR4tjF3ZpRzrFmBV6UjKdiSZkQUW";
    assert_eq!(used("acme", sig, None).await, TransactionUse::Counted);
    assert_eq!(
        used("acme", "5verv8nmvzbjmekv8xnrlkeawrtsz9coskdyjcjjbrnbjlgp8uirbgmqpjkhor4tjf3zprzrfmbv6ujkdiszkquw", None).await,
        TransactionUse::Counted,
        "two base58 signatures differing in case are two transactions"
    );
    assert_eq!(used("other", "0xab", None).await, TransactionUse::Counted);
    // At the limit nothing is recorded: the same transaction counts once the limit allows.
    assert_eq!(
        used("other", "0xcd", Some(1)).await,
        TransactionUse::QuotaExceeded
    );
    assert_eq!(used("other", "0xcd", None).await, TransactionUse::Counted);
}

async fn quota_admits_exactly_the_limit_under_concurrency(url: String) {
    let a = Store::connect(&url).await.unwrap();
    let b = Store::connect(&url).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..50u8 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            store
                .claim(&verified(100 + i), &CTX, Some(10), mixed(i as usize))
                .await
                .unwrap()
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    let claimed: Vec<i64> = outcomes.iter().filter_map(|o| o.id()).collect();
    assert_eq!(claimed.len(), 10, "{outcomes:?}");
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == ClaimOutcome::QuotaExceeded)
            .count(),
        40
    );
    let period = period_of(x402_gate::payments::chain::unix_now() as i64);
    assert_eq!(a.usage("acme", &period).await.unwrap(), 10);
    // A refused claim left no row behind: the same proof can pay once there is room.
    assert_eq!(a.count_claims("claimed").await.unwrap(), 10);
    // Releasing a claim (not charged) gives its count back.
    assert!(a.release(claimed[0], "origin failed").await.unwrap());
    assert_eq!(a.usage("acme", &period).await.unwrap(), 9);
    let late = outcomes
        .iter()
        .position(|o| *o == ClaimOutcome::QuotaExceeded)
        .unwrap() as u8;
    assert!(a
        .claim(&verified(100 + late), &CTX, Some(10), Synced)
        .await
        .unwrap()
        .id()
        .is_some());
    assert_eq!(a.usage("acme", &period).await.unwrap(), 10);
    assert!(!a
        .count_verification("acme", &period, Some(10))
        .await
        .unwrap());
    assert!(a.count_verification("acme", &period, None).await.unwrap());
}

async fn revenue_and_daily_series(store: Store) {
    for (i, route) in [(1u8, "/a/*"), (2, "/a/*"), (3, "/b")] {
        let v = verified(i);
        let ctx = ClaimContext {
            tenant: "acme",
            route,
        };
        let id = store
            .claim(&v, &ctx, None, Synced)
            .await
            .unwrap()
            .id()
            .unwrap();
        store
            .record_settlement(id, &v, &settlement(i), &ctx)
            .await
            .unwrap();
    }
    let lines = store.revenue("acme", 0).await.unwrap();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        (
            lines[0].route.as_str(),
            lines[0].payments,
            lines[0].amount.as_str()
        ),
        ("/a/*", 2, "20000")
    );
    assert_eq!(
        (
            lines[1].route.as_str(),
            lines[1].payments,
            lines[1].amount.as_str()
        ),
        ("/b", 1, "10000")
    );
    let days = store.daily("acme", 0).await.unwrap();
    assert_eq!(days.len(), 1);
    assert_eq!(days[0].payments, 3);
    assert_eq!(
        days[0].day,
        day_string(x402_gate::payments::chain::unix_now() as i64 / 86_400)
    );
    let page = store
        .payments(&PaymentFilter {
            tenant: Some("acme".into()),
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 2);
    let rest = store
        .payments(&PaymentFilter {
            before_id: Some(page[1].id),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert!(store
        .payments(&PaymentFilter {
            tenant: Some("other".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .is_empty());
    assert!(store.revenue("other", 0).await.unwrap().is_empty());
}

fn now() -> u64 {
    x402_gate::payments::chain::unix_now()
}

/// Settler keys and queue items are leased: one holder at a time, taken over only once the
/// holder's lease lapsed, and racing takers never both win.
async fn leases_have_one_holder(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let soon = now() as i64 + 60;
    let (net, key) = ("eip155:84532", "0xAbC0000000000000000000000000000000000001");
    assert!(store.lease_settler(net, key, "a", soon).await.unwrap());
    assert!(!store.lease_settler(net, key, "b", soon).await.unwrap());
    assert!(
        store.lease_settler(net, key, "a", soon + 5).await.unwrap(),
        "renewal"
    );
    assert_eq!(
        store.settler_lease(net, key).await.unwrap(),
        Some(("a".to_string(), soon + 5))
    );
    // Lapsed: another holder takes it.
    assert!(store
        .lease_settler(net, key, "a", now() as i64 - 1)
        .await
        .unwrap());
    assert!(store.lease_settler(net, key, "b", soon).await.unwrap());
    assert!(!store.lease_settler(net, key, "a", soon).await.unwrap());
    // A clean release frees it at once; releasing another's lease does nothing.
    store.release_settler(net, key, "a").await.unwrap();
    assert!(!store.lease_settler(net, key, "a", soon).await.unwrap());
    store.release_settler(net, key, "b").await.unwrap();
    assert!(store.lease_settler(net, key, "a", soon).await.unwrap());

    // Ten instances race for one free key: exactly one wins.
    let key2 = "0xabc0000000000000000000000000000000000002";
    let mut tasks = Vec::new();
    for i in 0..10 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let s = Store::connect(&url).await.unwrap();
            s.lease_settler(net, key2, &format!("h{i}"), soon)
                .await
                .unwrap()
        }));
    }
    let mut winners = 0;
    for t in tasks {
        winners += t.await.unwrap() as usize;
    }
    assert_eq!(winners, 1);

    // Queue items.
    let v = verified(9);
    let id = claimed(&store, &v).await;
    store.enqueue(id, &v).await.unwrap();
    assert!(store.take_queued(id, "a", soon).await.unwrap());
    if store.backend() == Backend::Postgres {
        // (SQLite has one instance per file: its restarted self takes what it held before.)
        assert!(!store.take_queued(id, "b", soon).await.unwrap());
    }
    assert!(
        store.take_queued(id, "a", soon).await.unwrap(),
        "its holder again"
    );
    assert!(store.take_queued(id, "a", now() as i64 - 1).await.unwrap());
    assert!(
        store.take_queued(id, "b", soon).await.unwrap(),
        "after the lease"
    );
    store
        .queue_finish(id, QueueStatus::Done, None)
        .await
        .unwrap();
    assert!(
        !store.take_queued(id, "b", soon).await.unwrap(),
        "done items are never taken"
    );
}

/// API routes: a per-tenant limit that holds under concurrent inserts, writes scoped to a tenant,
/// every change moving the version, and namespaces upserted.
async fn api_routes_and_namespaces(url: String) {
    use x402_gate::store::{Namespace, RouteWrite};
    let store = Store::connect(&url).await.unwrap();
    let v0 = store.route_version().await.unwrap();
    let spec = |p: &str| serde_json::json!({"path": p, "upstream": "https://example.com", "price": "$0.01"});
    // Twenty concurrent inserts against a limit of 5: exactly 5 land.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let url = url.clone();
        let spec = spec(&format!("/r{i}"));
        tasks.push(tokio::spawn(async move {
            let store = Store::connect(&url).await.unwrap();
            store
                .insert_api_route(&format!("r_{i:016x}"), "acme", &spec, 5)
                .await
                .unwrap()
        }));
    }
    let mut done = 0;
    for t in tasks {
        match t.await.unwrap() {
            RouteWrite::Done => done += 1,
            RouteWrite::LimitReached => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(done, 5);
    let routes = store.api_routes(Some("acme")).await.unwrap();
    assert_eq!(routes.len(), 5);
    assert!(store.api_routes(Some("other")).await.unwrap().is_empty());
    let id = routes[0].id.clone();
    assert!(store.route_version().await.unwrap() > v0);

    // Another tenant can neither change nor delete it; its own tenant and the operator can.
    let v1 = store.route_version().await.unwrap();
    assert_eq!(
        store
            .update_api_route(&id, Some("other"), &spec("/x"))
            .await
            .unwrap(),
        RouteWrite::NotFound
    );
    assert_eq!(
        store.delete_api_route(&id, Some("other")).await.unwrap(),
        RouteWrite::NotFound
    );
    assert_eq!(
        store
            .update_api_route(&id, Some("acme"), &spec("/changed"))
            .await
            .unwrap(),
        RouteWrite::Done
    );
    assert_eq!(
        store.api_route(&id).await.unwrap().unwrap().spec["path"],
        "/changed"
    );
    assert!(store.route_version().await.unwrap() > v1);
    assert_eq!(
        store.delete_api_route(&id, None).await.unwrap(),
        RouteWrite::Done
    );
    assert!(store.api_route(&id).await.unwrap().is_none());

    assert_eq!(store.namespace("acme").await.unwrap(), Namespace::default());
    let ns = Namespace {
        hosts: vec!["acme.example".into()],
        path_prefix: Some("/acme".into()),
    };
    store.set_namespace("acme", &ns).await.unwrap();
    store.set_namespace("acme", &ns).await.unwrap();
    assert_eq!(store.namespace("acme").await.unwrap(), ns);
    assert_eq!(
        store.namespaces().await.unwrap(),
        vec![("acme".to_string(), ns)]
    );
}

/// Stripe events: once by id, never older than the newest applied, the tenant found by its
/// subscription; x402 periods extend; a billed tenant keeps its tier over the config's.
async fn billing_events_apply_once_and_in_order(store: Store) {
    use x402_gate::store::{BillingStatus, StripeApplied, StripeUpdate};
    assert!(store.create_tenant(&tenant("acme")).await.unwrap());
    let update = |id: &str, created: i64, tier: Option<&str>, who: Option<&str>| StripeUpdate {
        event_id: id.into(),
        event_type: "customer.subscription.updated".into(),
        created,
        tenant: who.map(String::from),
        subscription: Some("sub_1".into()),
        customer: Some("cus_1".into()),
        tier: tier.map(String::from),
        status: BillingStatus::Active,
    };
    let applied = StripeApplied::Applied {
        tenant: "acme".into(),
        tier_changed: true,
    };
    let tier = || async { store.tenant("acme").await.unwrap().unwrap().tier };
    assert_eq!(
        store
            .apply_stripe_event(&update("e1", 100, Some("pro"), Some("acme")))
            .await
            .unwrap(),
        applied
    );
    assert_eq!(
        store
            .apply_stripe_event(&update("e1", 100, Some("pro"), Some("acme")))
            .await
            .unwrap(),
        StripeApplied::Duplicate
    );
    assert_eq!(
        store
            .apply_stripe_event(&update("e0", 50, Some("free"), Some("acme")))
            .await
            .unwrap(),
        StripeApplied::Stale {
            tenant: "acme".into()
        }
    );
    assert_eq!(tier().await, "pro");
    // Found by its subscription alone; the same second as the newest is still applied.
    assert_eq!(
        store
            .apply_stripe_event(&update("e2", 100, Some("starter"), None))
            .await
            .unwrap(),
        applied
    );
    assert_eq!(tier().await, "starter");
    assert_eq!(
        store
            .apply_stripe_event(&update("e3", 200, Some("pro"), Some("nobody")))
            .await
            .unwrap(),
        StripeApplied::UnknownTenant
    );
    assert_eq!(store.billing_event_outcome("e3").await.unwrap(), None);
    let b = store.billing("acme").await.unwrap().unwrap();
    assert_eq!((b.source.as_str(), b.status.as_str()), ("stripe", "active"));
    assert_eq!(b.subscription.as_deref(), Some("sub_1"));

    // x402: a period from now, extended by paying for the same tier again.
    let first = store.apply_x402_plan("acme", "pro", 1000).await.unwrap();
    let second = store.apply_x402_plan("acme", "pro", 1000).await.unwrap();
    assert_eq!(second, first + 1000);
    assert_eq!(tier().await, "pro");
    // The config declares another tier: the billed one stays.
    let mut declared = tenant("acme");
    declared.tier = "free".into();
    store.upsert_config_tenant(&declared).await.unwrap();
    assert_eq!(tier().await, "pro");
}

/// The ends of a deferred settlement are written whole, and a claim left `settling` behind a
/// finished queue item (what a lost write did before they were) is still the reconciler's. A
/// finished claim never takes a transaction again. Found by the chaos suite (`postgres` seeds 6
/// and 30): a deferred claim stuck `settling` for good.
async fn queue_ends_are_atomic_and_nothing_is_orphaned(store: Store) {
    let prepared = |n: u8| PreparedSettlement {
        transaction: settlement(n).transaction,
        raw: "0x02f8".into(),
        settler: String::new(),
        nonce: Some(n as u64),
        replaces: Vec::new(),
    };
    // Failed for good: claim and item together, the month's count given back.
    let v = verified(40);
    let id = store
        .claim(&v, &CTX, Some(10), Synced)
        .await
        .unwrap()
        .id()
        .unwrap();
    store.enqueue(id, &v).await.unwrap();
    store.queue_prepared(id, &prepared(40)).await.unwrap();
    assert_eq!(
        store.claim_status(id).await.unwrap().as_deref(),
        Some("settling")
    );
    let used = store
        .usage(
            "acme",
            &period_of(x402_gate::payments::chain::unix_now() as i64),
        )
        .await
        .unwrap();
    store.queue_fail(id, "reverted").await.unwrap();
    assert_eq!(
        store.claim_status(id).await.unwrap().as_deref(),
        Some("failed")
    );
    assert!(store
        .due(10)
        .await
        .unwrap()
        .iter()
        .all(|q| q.claim_id != id));
    assert_eq!(
        store
            .usage(
                "acme",
                &period_of(x402_gate::payments::chain::unix_now() as i64)
            )
            .await
            .unwrap(),
        used - 1
    );
    // A failed claim never names a transaction again.
    assert!(matches!(
        store.mark_settling(id, &prepared(41)).await,
        Err(StoreError::ClaimFinished(c)) if c == id
    ));
    assert_eq!(
        store.claim_status(id).await.unwrap().as_deref(),
        Some("failed")
    );

    // Landed: ledger row, claim settled and item done together.
    let v = verified(42);
    let id = claimed(&store, &v).await;
    store.enqueue(id, &v).await.unwrap();
    store.queue_prepared(id, &prepared(42)).await.unwrap();
    store
        .queue_settled(id, &v, &settlement(42), &CTX)
        .await
        .unwrap();
    assert_eq!(
        store.claim_status(id).await.unwrap().as_deref(),
        Some("settled")
    );
    assert!(store
        .due(10)
        .await
        .unwrap()
        .iter()
        .all(|q| q.claim_id != id));
    assert!(store
        .ledger(10)
        .await
        .unwrap()
        .iter()
        .any(|l| l.claim_id == id));

    // The state an older version could leave: the item finished, the claim still `settling`.
    // The worker no longer takes it, so the reconciler must.
    let v = verified(43);
    let id = claimed(&store, &v).await;
    store.enqueue(id, &v).await.unwrap();
    store.queue_prepared(id, &prepared(43)).await.unwrap();
    assert!(
        store
            .settling_claims(i64::MAX, 10)
            .await
            .unwrap()
            .iter()
            .all(|c| c.claim_id != id),
        "a queued item is the worker's"
    );
    store
        .queue_finish(id, QueueStatus::Failed, Some("lost"))
        .await
        .unwrap();
    assert!(store
        .settling_claims(i64::MAX, 10)
        .await
        .unwrap()
        .iter()
        .any(|c| c.claim_id == id));
}

/// A batch's writes: all members marked `settling` on its transaction in one database
/// transaction, or none (one finished claim refuses the lot); the reconciler sees each with its
/// own nonce; the landed members' ledger rows in one transaction; the deferred queue's
/// counterparts likewise.
async fn batch_writes_are_all_or_nothing(store: Store) {
    let batch = PreparedSettlement {
        transaction: settlement(60).transaction,
        raw: "0x02f8".into(),
        settler: String::new(),
        nonce: Some(60),
        replaces: Vec::new(),
    };
    let vs: Vec<Verified> = (60..63).map(verified).collect();
    let mut ids = Vec::new();
    for v in &vs {
        ids.push(claimed(&store, v).await);
    }
    // One member released meanwhile: nothing is marked.
    assert!(store.release(ids[1], "origin answered 500").await.unwrap());
    assert!(matches!(
        store.mark_settling_batch(&ids, &batch).await,
        Err(x402_gate::store::StoreError::ClaimFinished(id)) if id == ids[1]
    ));
    for &id in &[ids[0], ids[2]] {
        assert_eq!(
            store.claim_status(id).await.unwrap().as_deref(),
            Some("claimed")
        );
    }
    assert!(store
        .settling_claims(i64::MAX, 10)
        .await
        .unwrap()
        .is_empty());
    // The two open ones: both marked, each seen with its own nonce.
    let members = [ids[0], ids[2]];
    store.mark_settling_batch(&members, &batch).await.unwrap();
    let open = store.settling_claims(i64::MAX, 10).await.unwrap();
    assert_eq!(open.len(), 2);
    for (c, v) in open.iter().zip([&vs[0], &vs[2]]) {
        assert_eq!(c.tx_hash, batch.transaction);
        assert_eq!(c.nonce, v.key.nonce);
    }
    // Both landed: one ledger write, both rows naming the batch's transaction.
    let s = settlement(60);
    store
        .record_settlements(&[(ids[0], &vs[0], &s, CTX), (ids[2], &vs[2], &s, CTX)])
        .await
        .unwrap();
    let ledger = store.ledger(10).await.unwrap();
    assert_eq!(ledger.len(), 2);
    assert!(ledger.iter().all(|r| r.tx_hash == s.transaction));
    assert_eq!(store.count_claims("settled").await.unwrap(), 2);

    // The deferred queue: prepared together, settled together.
    let queued: Vec<Verified> = (63..65).map(verified).collect();
    let mut qids = Vec::new();
    for v in &queued {
        let id = claimed(&store, v).await;
        store.enqueue(id, v).await.unwrap();
        qids.push(id);
    }
    let qbatch = PreparedSettlement {
        transaction: settlement(63).transaction,
        ..batch.clone()
    };
    store.queue_prepared_batch(&qids, &qbatch).await.unwrap();
    let due = store.due(10).await.unwrap();
    assert_eq!(due.len(), 2);
    assert!(due
        .iter()
        .all(|q| q.prepared.as_ref().map(|p| &p.transaction) == Some(&qbatch.transaction)));
    let qs = settlement(63);
    store
        .queue_settled_batch(&[
            (qids[0], &queued[0], &qs, CTX),
            (qids[1], &queued[1], &qs, CTX),
        ])
        .await
        .unwrap();
    assert!(store.due(10).await.unwrap().is_empty());
    assert_eq!(store.count_claims("settled").await.unwrap(), 4);
    assert_eq!(store.ledger(10).await.unwrap().len(), 4);
}

/// Writes made at once keep their own answers, however the store groups them (SQLite's writer
/// makes those waiting together in one transaction, `round.rs`): a batch's settlement record
/// with a finished member refuses that batch only, a lone record of a finished claim only
/// itself; a replay among new claims is refused alone; ledger rows of lone payments and of a
/// batch all land.
async fn writes_made_together_keep_their_own_answers(store: Store) {
    let vs: Vec<Verified> = (100..140).map(verified).collect();
    let mut ids = Vec::new();
    for v in &vs {
        ids.push(claimed(&store, v).await);
    }
    // Two finished before the writes: one in batch A, one among the lone records.
    assert!(store.release(ids[5], "origin answered 500").await.unwrap());
    assert!(store.release(ids[25], "origin answered 500").await.unwrap());
    let prepared = |tx: u8| PreparedSettlement {
        transaction: settlement(tx).transaction,
        raw: "0x02f8".into(),
        settler: String::new(),
        nonce: Some(tx as u64),
        replaces: Vec::new(),
    };
    let (a, b) = (prepared(101), prepared(102));
    let lone: Vec<PreparedSettlement> = (120..130).map(prepared).collect();
    let fresh: Vec<Verified> = (140..150).map(verified).collect();
    let landed = settlement(130);
    let batch_landed = settlement(135);

    // Everything sent before any answer comes back: `join_all` polls each once first.
    let marks_a = store.mark_settling_batch(&ids[0..10], &a);
    let marks_b = store.mark_settling_batch(&ids[10..20], &b);
    let lone_marks = futures_util::future::join_all(
        (20..30).map(|i| store.mark_settling(ids[i], &lone[i - 20])),
    );
    let new_claims =
        futures_util::future::join_all(fresh.iter().map(|v| store.claim(v, &CTX, None, Synced)));
    let replays = futures_util::future::join_all(
        vs[10..15]
            .iter()
            .map(|v| store.claim(v, &CTX, None, Synced)),
    );
    let rows = futures_util::future::join_all(
        (30..35).map(|i| store.record_settlement(ids[i], &vs[i], &landed, &CTX)),
    );
    let batch_rows: Vec<_> = (35..40)
        .map(|i| (ids[i], &vs[i], &batch_landed, CTX))
        .collect();
    let batch_row = store.record_settlements(&batch_rows);
    let (a_done, b_done, lone_done, new_done, replay_done, rows_done, batch_row_done) =
        tokio::join!(marks_a, marks_b, lone_marks, new_claims, replays, rows, batch_row);

    assert!(
        matches!(a_done, Err(StoreError::ClaimFinished(id)) if id == ids[5]),
        "{a_done:?}"
    );
    for (i, &id) in ids[0..10].iter().enumerate() {
        let want = if i == 5 { "released" } else { "claimed" };
        assert_eq!(store.claim_status(id).await.unwrap().as_deref(), Some(want));
    }
    b_done.unwrap();
    for (i, done) in lone_done.into_iter().enumerate() {
        if i == 5 {
            assert!(matches!(done, Err(StoreError::ClaimFinished(id)) if id == ids[25]));
        } else {
            done.unwrap();
        }
    }
    let open = store.settling_claims(i64::MAX, 100).await.unwrap();
    let mut by_tx: std::collections::HashMap<&str, usize> = Default::default();
    for c in &open {
        *by_tx.entry(c.tx_hash.as_str()).or_default() += 1;
    }
    assert_eq!(by_tx.get(b.transaction.as_str()), Some(&10));
    assert_eq!(by_tx.get(a.transaction.as_str()), None);
    assert_eq!(open.len(), 19, "batch B's 10 and 9 lone records");
    for (i, done) in new_done.into_iter().enumerate() {
        assert!(done.unwrap().id().is_some(), "new claim {i}");
    }
    for done in replay_done {
        assert_eq!(done.unwrap(), ClaimOutcome::Duplicate);
    }
    for done in rows_done {
        done.unwrap();
    }
    batch_row_done.unwrap();
    let ledger = store.ledger(100).await.unwrap();
    assert_eq!(ledger.len(), 10);
    assert_eq!(
        ledger
            .iter()
            .filter(|r| r.tx_hash == batch_landed.transaction)
            .count(),
        5
    );
    for &id in &ids[30..40] {
        assert_eq!(
            store.claim_status(id).await.unwrap().as_deref(),
            Some("settled")
        );
    }
}

/// A replacement's record: every claim of the batch moves to it, naming what it replaced, or
/// none does (one finished claim refuses the lot); it only moves claims still on the replaced
/// transaction; the deferred item's stored transaction follows; the reconciler sees every
/// candidate, newest first; a claim given back names none of them any more, nor does it after
/// being marked anew.
async fn replacements_are_recorded_all_or_nothing(store: Store) {
    let prepared = |tx: u8, replaces: &[u8]| PreparedSettlement {
        transaction: settlement(tx).transaction,
        raw: format!("0x02f8{tx:02x}"),
        settler: String::new(),
        nonce: Some(9),
        replaces: replaces
            .iter()
            .map(|t| settlement(*t).transaction)
            .collect(),
    };
    let vs: Vec<Verified> = (70..73).map(verified).collect();
    let mut ids = Vec::new();
    for v in &vs {
        ids.push(claimed(&store, v).await);
    }
    let first = prepared(70, &[]);
    store.mark_settling_batch(&ids, &first).await.unwrap();
    // One member settled meanwhile (the reconciler found what was sent mined): nothing moves.
    let s = settlement(70);
    store
        .record_settlements(&[(ids[1], &vs[1], &s, CTX)])
        .await
        .unwrap();
    let second = prepared(71, &[70]);
    assert!(matches!(
        store
            .record_replacement(&ids, &first.transaction, &second)
            .await,
        Err(x402_gate::store::StoreError::ClaimFinished(_))
    ));
    let open = store.settling_claims(i64::MAX, 10).await.unwrap();
    assert_eq!(open.len(), 2);
    assert!(open
        .iter()
        .all(|c| c.tx_hash == first.transaction && c.tx_replaced.is_empty()));
    // The open two move together, each naming the one replaced.
    let members = [ids[0], ids[2]];
    store
        .record_replacement(&members, &first.transaction, &second)
        .await
        .unwrap();
    // Only claims still on the transaction replaced move: another replacement of the first
    // (a stale one) refuses.
    assert!(store
        .record_replacement(&members, &first.transaction, &prepared(76, &[70]))
        .await
        .is_err());
    let third = prepared(72, &[70, 71]);
    store
        .record_replacement(&members, &second.transaction, &third)
        .await
        .unwrap();
    let open = store.settling_claims(i64::MAX, 10).await.unwrap();
    assert_eq!(open.len(), 2);
    for c in &open {
        assert_eq!(c.tx_hash, third.transaction);
        assert_eq!(c.tx_raw.as_deref(), Some(third.raw.as_str()));
        assert_eq!(c.tx_replaced, third.replaces);
        let candidates: Vec<&str> = c.candidates().collect();
        assert_eq!(
            candidates,
            [
                third.transaction.as_str(),
                second.transaction.as_str(),
                first.transaction.as_str()
            ]
        );
    }
    // Given back (provably never sent, none of them): it names none; marked anew, only its own.
    assert!(store
        .unmark_settling(ids[0], &third.transaction)
        .await
        .unwrap());
    let fresh = prepared(73, &[]);
    store.mark_settling(ids[0], &fresh).await.unwrap();
    let c = store
        .settling_claims(i64::MAX, 10)
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.claim_id == ids[0])
        .unwrap();
    assert_eq!(
        (c.tx_hash.as_str(), c.tx_replaced.len()),
        (fresh.transaction.as_str(), 0)
    );

    // A batch's members retried one by one (the deferred queue): replacing it for one moves
    // every member, so none is left watching only the old transactions.
    let (va, vb) = (verified(77), verified(78));
    let (a, b) = (claimed(&store, &va).await, claimed(&store, &vb).await);
    store.enqueue(a, &va).await.unwrap();
    store.enqueue(b, &vb).await.unwrap();
    let shared = prepared(77, &[]);
    store.queue_prepared_batch(&[a, b], &shared).await.unwrap();
    let moved = prepared(78, &[77]);
    store
        .record_replacement(&[a], &shared.transaction, &moved)
        .await
        .unwrap();
    let due = store.due(10).await.unwrap();
    for id in [a, b] {
        let item = due.iter().find(|q| q.claim_id == id).unwrap();
        assert_eq!(item.prepared.as_ref(), Some(&moved), "claim {id}");
    }
    // The other member's own attempt, still holding the old one, refuses: it moved meanwhile.
    assert!(matches!(
        store
            .record_replacement(&[b], &shared.transaction, &prepared(79, &[77]))
            .await,
        Err(StoreError::ClaimFinished(_))
    ));
    // Its retry may not forget the transaction it holds (the item holds the replacement now),
    // nor may a fresh one be marked over a claim with replacements.
    store
        .queue_retry(b, 1, 0, "nonce taken", true)
        .await
        .unwrap();
    let due = store.due(10).await.unwrap();
    let item = due.iter().find(|q| q.claim_id == b).unwrap();
    assert_eq!(item.prepared.as_ref(), Some(&moved));
    assert!(matches!(
        store.queue_prepared(b, &prepared(80, &[])).await,
        Err(StoreError::ClaimFinished(_))
    ));
    // The node refused a replacement: the claims go back to the one it replaced, the refused
    // one watched.
    let back = prepared(77, &[78]);
    store
        .record_replacement(&[a, b], &moved.transaction, &back)
        .await
        .unwrap();
    let due = store.due(10).await.unwrap();
    for id in [a, b] {
        let item = due.iter().find(|q| q.claim_id == id).unwrap();
        assert_eq!(item.prepared.as_ref(), Some(&back), "claim {id}");
    }

    // Without replacements, a retry forgets the transaction the node refused.
    let v = verified(81);
    let id = claimed(&store, &v).await;
    store.enqueue(id, &v).await.unwrap();
    store.queue_prepared(id, &prepared(81, &[])).await.unwrap();
    store.queue_retry(id, 1, 0, "refused", true).await.unwrap();
    let due = store.due(10).await.unwrap();
    assert!(due.iter().any(|q| q.claim_id == id && q.prepared.is_none()));

    // Two attempts replacing one batch transaction at once, for its two members: never both
    // recorded (both would be sent), and every member names the one that was.
    for round in 0..20u8 {
        let base = 100 + round * 5;
        let (va, vb) = (verified(base), verified(base + 1));
        let (a, b) = (claimed(&store, &va).await, claimed(&store, &vb).await);
        let sent = prepared(base, &[]);
        store.mark_settling_batch(&[a, b], &sent).await.unwrap();
        let (ra, rb) = (prepared(base + 2, &[base]), prepared(base + 3, &[base]));
        let (only_a, only_b) = ([a], [b]);
        let (x, y) = tokio::join!(
            store.record_replacement(&only_a, &sent.transaction, &ra),
            store.record_replacement(&only_b, &sent.transaction, &rb),
        );
        assert!(!(x.is_ok() && y.is_ok()), "round {round}: both recorded");
        let open = store.settling_claims(i64::MAX, 100).await.unwrap();
        let named: Vec<&str> = open
            .iter()
            .filter(|c| c.claim_id == a || c.claim_id == b)
            .map(|c| c.tx_hash.as_str())
            .collect();
        let winner = if x.is_ok() {
            ra.transaction.as_str()
        } else if y.is_ok() {
            rb.transaction.as_str()
        } else {
            sent.transaction.as_str()
        };
        assert_eq!(named, [winner, winner], "round {round}");
        // Settled, so later rounds see only their own.
        let s = settlement(base);
        store
            .record_settlements(&[(a, &va, &s, CTX), (b, &vb, &s, CTX)])
            .await
            .unwrap();
    }

    // A deferred item's stored transaction follows its claim's.
    let v = verified(74);
    let id = claimed(&store, &v).await;
    store.enqueue(id, &v).await.unwrap();
    let queued = prepared(74, &[]);
    store.queue_prepared(id, &queued).await.unwrap();
    let replacement = prepared(75, &[74]);
    store
        .record_replacement(&[id], &queued.transaction, &replacement)
        .await
        .unwrap();
    let due = store.due(10).await.unwrap();
    let item = due.iter().find(|q| q.claim_id == id).unwrap();
    assert_eq!(item.prepared.as_ref(), Some(&replacement));
}

macro_rules! on_both_backends {
    ($($name:ident),*) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                let db = super::fresh("sqlite").await;
                super::run(stringify!($name), db.url.clone()).await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                let db = super::fresh("postgres").await;
                super::run(stringify!($name), db.url.clone()).await;
            })*
        }
    };
}

async fn run(name: &str, url: String) {
    match name {
        "claim_is_once_until_released" => {
            claim_is_once_until_released(Store::connect(&url).await.unwrap()).await
        }
        "expired_open_claims_are_released" => {
            expired_open_claims_are_released(Store::connect(&url).await.unwrap()).await
        }
        "settled_claims_are_never_reclaimed" => {
            settled_claims_are_never_reclaimed(Store::connect(&url).await.unwrap()).await
        }
        "concurrent_claims_admit_exactly_one" => concurrent_claims_admit_exactly_one(url).await,
        "queue_survives_reopening" => queue_survives_reopening(url).await,
        "tenants_keys_and_transactions" => {
            tenants_keys_and_transactions(Store::connect(&url).await.unwrap()).await
        }
        "quota_admits_exactly_the_limit_under_concurrency" => {
            quota_admits_exactly_the_limit_under_concurrency(url).await
        }
        "revenue_and_daily_series" => {
            revenue_and_daily_series(Store::connect(&url).await.unwrap()).await
        }
        "leases_have_one_holder" => leases_have_one_holder(url).await,
        "format_1_queue_rows_are_upgraded_on_read" => {
            format_1_queue_rows_are_upgraded_on_read(url).await
        }
        "api_routes_and_namespaces" => api_routes_and_namespaces(url).await,
        "billing_events_apply_once_and_in_order" => {
            billing_events_apply_once_and_in_order(Store::connect(&url).await.unwrap()).await
        }
        "queue_ends_are_atomic_and_nothing_is_orphaned" => {
            queue_ends_are_atomic_and_nothing_is_orphaned(Store::connect(&url).await.unwrap()).await
        }
        "batch_writes_are_all_or_nothing" => {
            batch_writes_are_all_or_nothing(Store::connect(&url).await.unwrap()).await
        }
        "writes_made_together_keep_their_own_answers" => {
            writes_made_together_keep_their_own_answers(Store::connect(&url).await.unwrap()).await
        }
        "replacements_are_recorded_all_or_nothing" => {
            replacements_are_recorded_all_or_nothing(Store::connect(&url).await.unwrap()).await
        }
        "payer_exposure_stops_at_its_limit" => {
            payer_exposure_stops_at_its_limit(Store::connect(&url).await.unwrap()).await
        }
        other => panic!("unknown test {other}"),
    }
}

on_both_backends!(
    claim_is_once_until_released,
    expired_open_claims_are_released,
    settled_claims_are_never_reclaimed,
    concurrent_claims_admit_exactly_one,
    queue_survives_reopening,
    tenants_keys_and_transactions,
    quota_admits_exactly_the_limit_under_concurrency,
    revenue_and_daily_series,
    leases_have_one_holder,
    format_1_queue_rows_are_upgraded_on_read,
    api_routes_and_namespaces,
    billing_events_apply_once_and_in_order,
    queue_ends_are_atomic_and_nothing_is_orphaned,
    batch_writes_are_all_or_nothing,
    payer_exposure_stops_at_its_limit,
    writes_made_together_keep_their_own_answers,
    replacements_are_recorded_all_or_nothing
);

#[path = "common/faults.rs"]
mod faults;

/// SQLite's relaxed writes (a `before` claim, a ledger row) commit on a connection of their own
/// that is `NORMAL` (the writer's relaxed one, or the relaxed pool's), and no pooled connection
/// nor the writer's synced one ever becomes so: every other commit stays `FULL`, whatever relaxed
/// writes ran, failed or were cancelled before it.
#[tokio::test(flavor = "multi_thread")]
async fn sqlite_relaxes_only_its_own_connection() {
    const FULL: i64 = 2;
    const NORMAL: i64 = 1;
    let db = fresh("sqlite").await;
    let store = Store::connect(&db.url).await.unwrap();
    assert_eq!(
        store.sqlite_synchronous().await.unwrap(),
        Some((FULL, NORMAL))
    );
    // Relaxed claims and ledger writes, some cancelled mid-way, then every pooled connection is
    // read at once (four: the pool's size).
    let mut awaited = Vec::new();
    for i in 0..8u8 {
        let id = store
            .claim(&verified(i), &CTX, None, Durability::Relaxed)
            .await
            .unwrap()
            .id()
            .unwrap();
        let v = verified(i);
        let s = settlement(i);
        let write = store.record_settlement(id, &v, &s, &CTX);
        if i % 2 == 0 {
            write.await.unwrap();
            awaited.push(id);
        } else {
            // Dropped at its first await: the connection goes back wherever it came from.
            let _ = tokio::time::timeout(std::time::Duration::ZERO, write).await;
        }
    }
    let reads: Vec<_> = (0..4).map(|_| store.sqlite_synchronous()).collect();
    for read in futures_util::future::join_all(reads).await {
        assert_eq!(read.unwrap(), Some((FULL, NORMAL)));
    }
    // The writer's own connections (`writer.rs`): its synced one, where every settlement
    // record and every `after` claim commits, is FULL.
    assert_eq!(
        store.sqlite_writer_synchronous().await.unwrap(),
        Some((FULL, NORMAL))
    );
    // The awaited writes are in the ledger (a cancelled one may or may not have landed).
    let ledger = store.ledger(10).await.unwrap();
    assert!(awaited
        .iter()
        .all(|id| ledger.iter().any(|r| r.claim_id == *id)));
}

/// A tenant's standing outlives a database that stops answering: the last one read is served
/// (so unpaid requests still get their 402, not a 503), a tenant never read is still an error,
/// and once the database answers again the standing is read afresh. Postgres behind the fault
/// proxy, which refuses and resets every connection.
#[tokio::test(flavor = "multi_thread")]
async fn tenant_standing_survives_an_unreadable_database() {
    use std::collections::BTreeMap;
    use x402_gate::config::Tier;
    use x402_gate::store::LazyStore;
    use x402_gate::tenants::{TenantDirectory, TenantError};

    let db = fresh("postgres").await;
    let store = Store::connect(&db.url).await.unwrap();
    assert!(store.create_tenant(&tenant("acme")).await.unwrap());
    assert!(store.create_tenant(&tenant("beta")).await.unwrap());

    let proxy = faults::FaultProxy::start("127.0.0.1:5432".parse().unwrap());
    let proxied = db
        .url
        .replacen("127.0.0.1:5432", &proxy.addr.to_string(), 1);
    assert_ne!(
        proxied, db.url,
        "the test database URL names 127.0.0.1:5432"
    );
    let free = Tier {
        name: "free".into(),
        monthly_verifications: Some(100),
        networks: vec!["*".into()],
    };
    let tiers = BTreeMap::from([("free".to_string(), free)]);
    let dir = TenantDirectory::new(Arc::new(LazyStore::new(proxied)), tiers);

    let fresh_read = dir.state("acme").await.unwrap();
    assert!(fresh_read.active);

    proxy.set(faults::Mode::Refuse);
    // Past the one-second cache: the next call goes to the database, which cannot answer.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let stale = dir
        .state("acme")
        .await
        .expect("the last standing is served");
    assert_eq!(*stale, *fresh_read);
    match dir.state("beta").await {
        Err(TenantError::Store(_)) => {}
        other => panic!("a tenant never read has no standing to serve: {other:?}"),
    }

    // The database answers again and the tenant was suspended meanwhile: read afresh.
    assert!(store
        .update_tenant("acme", None, None, Some("suspended"), None)
        .await
        .unwrap());
    proxy.set(faults::Mode::Pass);
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let after = dir.state("acme").await.unwrap();
    assert!(
        !after.active,
        "the standing is read again once the database answers"
    );
}

/// A SQLite database the writer cannot open (an in-memory one: the writer opens the database's
/// file, and a memory database has none) is refused at connect, saying so, instead of failing
/// every payment's write after.
#[tokio::test(flavor = "multi_thread")]
async fn sqlite_a_database_the_writer_cannot_open_is_refused_at_connect() {
    match Store::connect("sqlite::memory:").await {
        Err(e @ StoreError::WriterOpen { .. }) => {
            assert!(e.to_string().contains("SQLite's writer cannot open"), "{e}");
        }
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("an in-memory database was accepted"),
    }
}

/// A SQLite file is in WAL mode once the store opened it: readers do not block the writer, and a
/// commit costs one fsync (with `synchronous` still FULL, as durable as the rollback journal).
#[tokio::test(flavor = "multi_thread")]
async fn sqlite_runs_in_wal_mode_with_full_sync() {
    use sqlx::Row;
    let db = fresh("sqlite").await;
    let _store = Store::connect(&db.url).await.unwrap();
    let raw = sqlx::SqlitePool::connect(&db.url).await.unwrap();
    let mode: String = sqlx::query("PRAGMA journal_mode")
        .fetch_one(&raw)
        .await
        .unwrap()
        .get(0);
    assert_eq!(mode.to_ascii_lowercase(), "wal");
    // 2 is FULL: the switch to WAL did not trade durability for speed.
    let sync: i64 = sqlx::query("PRAGMA synchronous")
        .fetch_one(&raw)
        .await
        .unwrap()
        .get(0);
    assert_eq!(sync, 2);
}

/// SQLite's ledger write (the writer's round: the row, then the claim's move, then `COMMIT`). One
/// that fails half-way (the row written, the claim's update refused) leaves nothing: the row is
/// rolled back, the claim stays as it was, and the connection goes on, with no transaction left
/// open, for the next write and for readers.
#[tokio::test(flavor = "multi_thread")]
async fn sqlite_a_ledger_write_that_fails_half_way_leaves_nothing() {
    let db = fresh("sqlite").await;
    let store = Store::connect(&db.url).await.unwrap();
    let (va, vb) = (verified(90), verified(91));
    let (a, b) = (claimed(&store, &va).await, claimed(&store, &vb).await);
    sqlx::any::install_default_drivers();
    let side = sqlx::AnyPool::connect(&db.url).await.unwrap();
    // The refusal comes after the row's INSERT succeeded: only a rollback undoes that row.
    let trigger = sqlx::AssertSqlSafe(format!(
        "CREATE TRIGGER refuse_settled BEFORE UPDATE ON payment_claims
         WHEN NEW.id = {a} AND NEW.status = 'settled'
         BEGIN SELECT RAISE(ABORT, 'injected refusal'); END"
    ));
    sqlx::query(trigger).execute(&side).await.unwrap();
    let (sa, sb) = (settlement(90), settlement(91));
    for _ in 0..3 {
        assert!(store.record_settlement(a, &va, &sa, &CTX).await.is_err());
    }
    assert!(
        store.ledger(10).await.unwrap().is_empty(),
        "the row was rolled back"
    );
    assert_eq!(
        store.claim_status(a).await.unwrap().as_deref(),
        Some("claimed")
    );
    // The next write on the same connection commits, and another connection sees it at once
    // (a transaction left open would hide it, or refuse the next BEGIN).
    store.record_settlement(b, &vb, &sb, &CTX).await.unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM settlements WHERE claim_id = $1")
        .bind(b)
        .fetch_one(&side)
        .await
        .unwrap();
    assert_eq!(seen, 1);
    assert_eq!(
        store.claim_status(b).await.unwrap().as_deref(),
        Some("settled")
    );
    // The refusal gone, the first write goes through; writing it again is a no-op.
    sqlx::query("DROP TRIGGER refuse_settled")
        .execute(&side)
        .await
        .unwrap();
    store.record_settlement(a, &va, &sa, &CTX).await.unwrap();
    store.record_settlement(a, &va, &sa, &CTX).await.unwrap();
    let ledger = store.ledger(10).await.unwrap();
    assert_eq!(ledger.len(), 2);
    assert!(ledger
        .iter()
        .any(|r| r.claim_id == a && r.tx_hash == sa.transaction));
    assert_eq!(
        store.claim_status(a).await.unwrap().as_deref(),
        Some("settled")
    );
    assert_eq!(store.sqlite_synchronous().await.unwrap(), Some((2, 1)));
}

/// `claim_exposing`: the claim's outcome as `claim`'s, and on SQLite (a claim alone in its group
/// commit, read in the claim's own transaction after its insert) the payer's exposure, equal to
/// `payer_exposure` read after it; on Postgres none (read after the commit by the caller).
async fn claims_read_their_payers_exposure(backend: &str) {
    use x402_gate::store::ExposureQuery;
    let db = fresh(backend).await;
    let store = Store::connect(&db.url).await.unwrap();
    let sqlite = backend == "sqlite";
    let q = ExposureQuery {
        since_ms: 0,
        limit: 65,
    };
    let first = verified(100);
    let (network, asset, payer) = (&first.key.network, &first.key.asset, &first.key.payer);
    let mut ids = Vec::new();
    for (n, durability) in [(100u8, Synced), (101, Durability::Relaxed), (102, Synced)] {
        let (outcome, read) = store
            .claim_exposing(&verified(n), &CTX, None, durability, q)
            .await
            .unwrap();
        ids.push(outcome.id().expect("claimed"));
        let after = store
            .payer_exposure(network, asset, payer, 0, 65)
            .await
            .unwrap();
        // The first is settled once the second is claimed.
        let unsettled = if n == 102 { 2 } else { ids.len() };
        assert_eq!(after.unsettled, unsettled);
        if sqlite {
            assert_eq!(read, Some(after), "payment {n}");
        } else {
            assert_eq!(read, None);
        }
        if n == 101 {
            // A settlement since the time asked about is seen (and one before it is not).
            store
                .record_settlement(ids[0], &first, &settlement(100), &CTX)
                .await
                .unwrap();
        }
    }
    let (_, read) = store
        .claim_exposing(&verified(103), &CTX, None, Synced, q)
        .await
        .unwrap();
    if sqlite {
        let read = read.unwrap();
        assert_eq!((read.unsettled, read.owed), (3, 30_000));
        assert!(read.settled_since);
        let later = ExposureQuery {
            since_ms: i64::MAX,
            ..q
        };
        let (_, read) = store
            .claim_exposing(&verified(104), &CTX, None, Synced, later)
            .await
            .unwrap();
        assert!(!read.unwrap().settled_since);
    }
    // A replay, and a claim past its tenant's limit: no claim, no exposure, nothing left behind.
    let (outcome, read) = store
        .claim_exposing(&verified(102), &CTX, None, Synced, q)
        .await
        .unwrap();
    assert_eq!((outcome, read), (ClaimOutcome::Duplicate, None));
    let before = store.count_claims("claimed").await.unwrap();
    for limit in [0, 1] {
        let (outcome, read) = store
            .claim_exposing(&verified(110), &CTX, Some(limit), Synced, q)
            .await
            .unwrap();
        assert_eq!((outcome, read), (ClaimOutcome::QuotaExceeded, None));
    }
    assert_eq!(store.count_claims("claimed").await.unwrap(), before);
    // Under a limit that still has room the same payment is claimed (nothing of it was kept).
    let (outcome, _) = store
        .claim_exposing(&verified(110), &CTX, Some(1_000), Synced, q)
        .await
        .unwrap();
    assert!(outcome.id().is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_claims_read_their_payers_exposure() {
    claims_read_their_payers_exposure("sqlite").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_claims_read_their_payers_exposure() {
    claims_read_their_payers_exposure("postgres").await;
}

/// Makes SQLite refuse every insert into `table` (trigger `name`, dropped by the caller).
async fn refuse_inserts(side: &sqlx::AnyPool, name: &str, table: &str) {
    let sql = format!(
        "CREATE TRIGGER {name} BEFORE INSERT ON {table}
         BEGIN SELECT RAISE(ABORT, 'injected refusal'); END"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(side)
        .await
        .unwrap();
}

/// SQLite's lone claim (the writer's round: the claim's insert, its count, then `COMMIT` or
/// `ROLLBACK`). One that fails half-way (the claim's row written, its count refused by the
/// database) leaves nothing: the claim is not there, and the connection it ran on (the writer's
/// relaxed one) goes on with no transaction open.
#[tokio::test(flavor = "multi_thread")]
async fn sqlite_a_claim_that_fails_half_way_leaves_nothing() {
    let db = fresh("sqlite").await;
    let store = Store::connect(&db.url).await.unwrap();
    sqlx::any::install_default_drivers();
    let side = sqlx::AnyPool::connect(&db.url).await.unwrap();
    refuse_inserts(&side, "refuse_count", "usage_counters").await;
    let v = verified(120);
    for _ in 0..3 {
        assert!(store
            .claim(&v, &CTX, None, Durability::Relaxed)
            .await
            .is_err());
    }
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payment_claims")
        .fetch_one(&side)
        .await
        .unwrap();
    assert_eq!(rows, 0, "the claim's row was rolled back");
    sqlx::query("DROP TRIGGER refuse_count")
        .execute(&side)
        .await
        .unwrap();
    // The same payment is claimed now (not a duplicate: nothing of it was kept), on the same
    // connection, and another connection sees it at once.
    let id = store
        .claim(&v, &CTX, None, Durability::Relaxed)
        .await
        .unwrap()
        .id()
        .expect("claimed");
    let seen: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payment_claims WHERE id = $1")
        .bind(id)
        .fetch_one(&side)
        .await
        .unwrap();
    assert_eq!(seen, 1);
    assert_eq!(
        store.claim(&v, &CTX, None, Synced).await.unwrap(),
        ClaimOutcome::Duplicate
    );
}

/// A write the database refuses in a round of several (SQLite's writer, `round.rs`; here a
/// trigger refuses every ledger row) is refused alone: the claims and the settlement record
/// made with it are kept and answered as such at once, and every answer matches what the
/// database kept (a claim answered `Claimed` is there; a record answered Ok names its
/// transaction; a refused ledger row left its claim as it was). Then the writer goes on.
#[tokio::test(flavor = "multi_thread")]
async fn sqlite_a_failed_write_among_others_leaves_each_answer_true() {
    let db = fresh("sqlite").await;
    let store = Store::connect(&db.url).await.unwrap();
    sqlx::any::install_default_drivers();
    let side = sqlx::AnyPool::connect(&db.url).await.unwrap();
    let old: Vec<Verified> = (150..160).map(verified).collect();
    let mut ids = Vec::new();
    for v in &old {
        ids.push(claimed(&store, v).await);
    }
    refuse_inserts(&side, "refuse_ledger", "settlements").await;
    let fresh_payments: Vec<Verified> = (160..170).map(verified).collect();
    let batch = PreparedSettlement {
        transaction: settlement(150).transaction,
        raw: "0x02f8".into(),
        settler: String::new(),
        nonce: Some(150),
        replaces: Vec::new(),
    };
    let landed = settlement(151);
    let mut marked = false;
    let mut claimed_before = vec![false; fresh_payments.len()];
    for pass in 0..3 {
        let claims = futures_util::future::join_all(
            fresh_payments
                .iter()
                .map(|v| store.claim(v, &CTX, None, Synced)),
        );
        let mark = store.mark_settling_batch(&ids[0..5], &batch);
        let rows = futures_util::future::join_all(
            (5..10).map(|i| store.record_settlement(ids[i], &old[i], &landed, &CTX)),
        );
        let (claims, mark, rows) = tokio::join!(claims, mark, rows);
        if pass == 0 {
            // Made together with the refused rows (the same rounds, as they came), and kept.
            assert!(
                claims
                    .iter()
                    .all(|c| matches!(c, Ok(ClaimOutcome::Claimed(_)))),
                "{claims:?}"
            );
            assert!(mark.is_ok(), "{mark:?}");
        }
        for ((v, done), before) in fresh_payments.iter().zip(claims).zip(&mut claimed_before) {
            let kept: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM payment_claims WHERE nonce = $1")
                    .bind(&v.key.nonce)
                    .fetch_one(&side)
                    .await
                    .unwrap();
            match done {
                Ok(ClaimOutcome::Claimed(_)) => {
                    assert!(!*before, "claimed twice");
                    assert_eq!(kept, 1);
                    *before = true;
                }
                // A replay of a claim an earlier pass made.
                Ok(ClaimOutcome::Duplicate) => assert!(*before && kept == 1),
                Ok(other) => panic!("{other:?}"),
                // Nothing of this pass's claim was kept: the row is the earlier pass's, if any.
                Err(e) => assert_eq!(kept, i64::from(*before), "a failed claim left its row: {e}"),
            }
        }
        // Marked once, a claim stays marked (a later failed record changes nothing).
        marked |= mark.is_ok();
        let want = if marked { "settling" } else { "claimed" };
        for &id in &ids[0..5] {
            assert_eq!(store.claim_status(id).await.unwrap().as_deref(), Some(want));
        }
        for done in rows {
            assert!(done.is_err(), "the trigger refuses every ledger row");
        }
        for &id in &ids[5..10] {
            assert_eq!(
                store.claim_status(id).await.unwrap().as_deref(),
                Some("claimed")
            );
        }
    }
    assert!(store.ledger(100).await.unwrap().is_empty());
    sqlx::query("DROP TRIGGER refuse_ledger")
        .execute(&side)
        .await
        .unwrap();
    // The writer goes on: the rows land now, and a new claim is made.
    for i in 5..10 {
        store
            .record_settlement(ids[i], &old[i], &landed, &CTX)
            .await
            .unwrap();
    }
    assert_eq!(store.ledger(100).await.unwrap().len(), 5);
    assert!(claimed(&store, &verified(170)).await > 0);
}
