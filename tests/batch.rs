//! Batched settlement end to end: payments that wait for a settlement slot go out together in
//! one Multicall3 transaction, on a real chain (anvil with our EIP-3009 token and Multicall3
//! deployed at its usual address by its own pre-signed transaction), each judged by its own
//! authorization.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{keccak256, Address, Bytes, B256, U256};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use common::chain::*;
use common::*;
use serde_json::Value;
use x402_gate::payments::chain::{
    Attempt, ChainBackend, PaymentKey, SettleError, TxOutcome, Verified,
};
use x402_gate::payments::evm::{EvmAuthorization, EvmBackend, MULTICALL3, MULTICALL3_CODE_HASH};
use x402_gate::payments::SETTLEMENTS_IN_FLIGHT;
use x402_gate::store::Store;
use x402_gate::x402::Network;

const PRICE: u64 = 10_000;

fn receipt(resp_headers: &reqwest::header::HeaderMap) -> Value {
    decode_b64_json(resp_headers["payment-response"].to_str().unwrap())
}

/// A payment `payer` signs for `value` to `pay_to`, as verification hands it to settlement.
fn verified(chain: &Chain, payer: &PrivateKeySigner, pay_to: Address, value: u64) -> Verified {
    let auth = Authorization {
        from: payer.address(),
        to: pay_to,
        value: U256::from(value),
        valid_after: now() - 600,
        valid_before: now() + 600,
        nonce: unique_b256("batch"),
        chain_id: CHAIN_ID,
        asset: chain.token,
        name: TOKEN_NAME.into(),
        version: TOKEN_VERSION.into(),
    };
    let signature = Bytes::from(auth.sign(payer));
    let evm = EvmAuthorization {
        chain_id: CHAIN_ID,
        asset: auth.asset,
        from: auth.from,
        to: auth.to,
        value: auth.value,
        valid_after: U256::from(auth.valid_after),
        valid_before: U256::from(auth.valid_before),
        nonce: auth.nonce,
        signature,
    };
    Verified {
        key: PaymentKey {
            network: format!("eip155:{CHAIN_ID}"),
            asset: format!("{:#x}", auth.asset),
            payer: format!("{:#x}", auth.from),
            nonce: format!("{:#x}", auth.nonce),
        },
        payer: auth.from.to_checksum(None),
        pay_to: auth.to.to_checksum(None),
        amount: value.to_string(),
        expires_at: auth.valid_before,
        scheme_payload: evm.to_payload(),
    }
}

fn backend(chain: &Chain, batch_max: usize) -> EvmBackend {
    let network: Network = format!("eip155:{CHAIN_ID}").parse().unwrap();
    EvmBackend::new(
        &network,
        &chain.rpc.url,
        &chain.settler_key,
        1,
        Duration::from_secs(10),
    )
    .unwrap()
    .with_batching(batch_max, 4)
}

fn nonce_of(v: &Verified) -> B256 {
    v.key.nonce.parse().unwrap()
}

/// One transaction settles three equal payments of one payer, one of them cancelled before it
/// was sent: the other two land and are charged, the cancelled one fails alone, and looking the
/// transaction up afterwards (the reconciler's way) tells the three apart by their nonces, which
/// the `Transfer` logs alone cannot.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_is_judged_and_looked_up_payment_by_payment() {
    let chain = Chain::start_bare().await;
    let payer = new_signer();
    let pay_to = new_signer().address();
    chain.mint(payer.address(), 1_000_000).await;

    // Without Multicall3 the network cannot batch; nor with other code at its address, even
    // code that answers `aggregate3` honestly, or an attacker's that answers every call as
    // succeeded (neither is trusted); with Multicall3's, deployed by its own transaction, up to
    // `batch_max`.
    assert_eq!(backend(&chain, 8).batch_capacity().await, 1);
    chain
        .place_at_multicall3(&Chain::deployed_code("Multicall3Batch"))
        .await;
    assert_eq!(backend(&chain, 8).batch_capacity().await, 1);
    chain
        .place_at_multicall3(&Chain::deployed_code("LyingMulticall3"))
        .await;
    assert_eq!(backend(&chain, 8).batch_capacity().await, 1);
    // Nor does a batch get signed, should a caller not ask first.
    let one = [verified(&chain, &payer, pay_to, PRICE)];
    assert!(matches!(
        backend(&chain, 8).prepare_batch(&one).await,
        Err(SettleError::Unavailable(_))
    ));
    chain.install_multicall3().await;
    let code = chain.provider.get_code_at(MULTICALL3).await.unwrap();
    assert_eq!(keccak256(&code), MULTICALL3_CODE_HASH);
    let evm = backend(&chain, 8);
    assert_eq!(evm.batch_capacity().await, 8);
    assert_eq!(backend(&chain, 1).batch_capacity().await, 1);

    let members: Vec<Verified> = (0..3)
        .map(|_| verified(&chain, &payer, pay_to, PRICE))
        .collect();
    chain.cancel(&payer, nonce_of(&members[1])).await;

    let prepared = evm.prepare_batch(&members).await.unwrap();
    let outcomes = evm
        .submit_batch(&members, &prepared, Attempt::First)
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 3);
    let landed = outcomes[0].as_ref().unwrap();
    assert_eq!(landed.transaction, prepared.transaction);
    assert_eq!(
        outcomes[2].as_ref().unwrap().transaction,
        prepared.transaction
    );
    match &outcomes[1] {
        Err(SettleError::Failed { transaction, .. }) => {
            assert_eq!(transaction.as_deref(), Some(prepared.transaction.as_str()))
        }
        other => panic!("the cancelled payment: {other:?}"),
    }
    assert_eq!(chain.balance(pay_to).await, U256::from(2 * PRICE));
    assert_eq!(
        chain.balance(payer.address()).await,
        U256::from(1_000_000 - 2 * PRICE)
    );

    for (i, m) in members.iter().enumerate() {
        let outcome = evm
            .settlement_outcome(
                &prepared.transaction,
                &m.key.asset,
                &m.key.payer,
                &m.key.nonce,
                &m.amount,
            )
            .await
            .unwrap();
        match (i, outcome) {
            (1, TxOutcome::Failed(_)) => {}
            (
                0 | 2,
                TxOutcome::Landed {
                    settlement,
                    pay_to: to,
                },
            ) => {
                assert_eq!(settlement.transaction, prepared.transaction);
                assert_eq!(to, pay_to.to_checksum(None));
            }
            (i, o) => panic!("payment {i}: {o:?}"),
        }
    }
    // A payment this transaction never carried is not taken for one it did.
    let stranger = verified(&chain, &payer, pay_to, PRICE);
    assert!(matches!(
        evm.settlement_outcome(
            &prepared.transaction,
            &stranger.key.asset,
            &stranger.key.payer,
            &stranger.key.nonce,
            &stranger.amount,
        )
        .await
        .unwrap(),
        TxOutcome::Failed(_)
    ));

    // Gas: the batch against one payment settled alone, same payer and payee, in the same run.
    let single = verified(&chain, &payer, pay_to, PRICE);
    let alone = evm.prepare(&single).await.unwrap();
    evm.submit(&single, &alone, Attempt::First).await.unwrap();
    let gas = |tx: &str| {
        let hash: B256 = tx.parse().unwrap();
        let provider = chain.provider.clone();
        async move {
            provider
                .get_transaction_receipt(hash)
                .await
                .unwrap()
                .unwrap()
                .gas_used
        }
    };
    let (batch_gas, single_gas) = (
        gas(&prepared.transaction).await,
        gas(&alone.transaction).await,
    );
    eprintln!("gas: batch of 3 (2 landed) {batch_gas}, one payment alone {single_gas}");
    assert!(
        batch_gas < 3 * single_gas,
        "a batch costs less than its payments alone: {batch_gas} vs 3 x {single_gas}"
    );
}

/// Through the gateway: four payments hold every settlement slot (the node is slow to answer
/// their sends), eight more arrive meanwhile and go out as one batch when a slot frees. One of
/// the eight was cancelled by its payer while the origin worked: it alone is refused (naming the
/// batch's transaction); the seven others are served, charged once, and in the ledger under it.
#[tokio::test(flavor = "multi_thread")]
async fn payments_that_wait_are_settled_together_each_by_its_own_authorization() {
    let payer = new_signer();
    let cancel: Arc<std::sync::Mutex<Option<B256>>> = Default::default();
    let chain_slot: Arc<tokio::sync::OnceCell<(String, Address)>> = Default::default();
    let hook: Hook = {
        let (payer, cancel, chain_slot) = (payer.clone(), cancel.clone(), chain_slot.clone());
        Arc::new(move || {
            let payer = payer.clone();
            let nonce = cancel.lock().unwrap().take();
            let chain = chain_slot.get().cloned();
            Box::pin(async move {
                if let (Some(nonce), Some((url, token))) = (nonce, chain) {
                    cancel_via(&url, token, &payer, nonce).await;
                }
            })
        })
    };
    let chain = Chain::start().await;
    chain_slot
        .set((chain.anvil.endpoint(), chain.token))
        .unwrap();
    let up = Upstream::start_with_hook(Some(hook));
    let (gw, pay_to) = gateway_on(&chain, &up);
    chain.mint(payer.address(), 1_000_000).await;
    let offer = offer_for(&gw, "/paid/x").await;
    let sign = || {
        let auth = Authorization::for_offer(&offer, payer.address());
        (
            auth.nonce,
            v2_header(&offer, auth.payload(&auth.sign(&payer))),
        )
    };
    let paid = |path: &str, header: String| {
        let req = client()
            .get(gw.url(path))
            .header("payment-signature", header);
        tokio::spawn(async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.headers().clone())
        })
    };

    // The first four sends are answered 1.5 s late: every slot is busy meanwhile.
    chain.rpc.set_fault(
        "eth_sendRawTransaction",
        Fault::Slow(Duration::from_millis(1500)),
        SETTLEMENTS_IN_FLIGHT,
    );
    // One at a time, so each takes a slot of its own (payments that reach the queue at the
    // same instant may share one transaction even with slots free).
    let mut first = Vec::new();
    for i in 0..SETTLEMENTS_IN_FLIGHT {
        first.push(paid(&format!("/paid/first{i}"), sign().1));
        wait_until(|| chain.rpc.count("eth_sendRawTransaction") > i).await;
    }

    // The first of these to reach the origin cancels the fourth's authorization on chain.
    let signed: Vec<_> = (0..8).map(|_| sign()).collect();
    *cancel.lock().unwrap() = Some(signed[3].0);
    let waiting: Vec<_> = signed
        .into_iter()
        .map(|(_, header)| paid("/paid/hook", header))
        .collect();

    for task in first {
        let (status, headers) = task.await.unwrap();
        assert!((200..300).contains(&status), "{status}");
        assert_eq!(receipt(&headers)["success"], true);
    }
    let mut batch_tx = None;
    let mut refused = 0;
    for (i, task) in waiting.into_iter().enumerate() {
        let (status, headers) = task.await.unwrap();
        let r = receipt(&headers);
        let tx = r["transaction"].as_str().unwrap().to_string();
        if i == 3 {
            assert_eq!(status, 402, "the cancelled payment is refused: {r}");
            assert_eq!(r["errorReason"], "invalid_exact_evm_transaction_failed");
            refused += 1;
        } else {
            assert!((200..300).contains(&status), "payment {i}: {status} {r}");
            assert_eq!(r["success"], true);
        }
        // All eight name one transaction: the batch's.
        assert_eq!(batch_tx.get_or_insert(tx.clone()), &tx, "payment {i}");
    }
    assert_eq!(refused, 1);
    let batch_tx = batch_tx.unwrap();

    // Five transactions for twelve payments: the four alone and the batch.
    assert_eq!(
        chain.rpc.count("eth_sendRawTransaction"),
        SETTLEMENTS_IN_FLIGHT + 1
    );
    assert_eq!(chain.balance(pay_to).await, U256::from(11 * PRICE));
    let db = Store::connect(&gw.database_url).await.unwrap();
    let ledger = db.ledger(100).await.unwrap();
    assert_eq!(ledger.len(), 11);
    let mut per_tx: HashMap<&str, usize> = HashMap::new();
    for row in &ledger {
        *per_tx.entry(row.tx_hash.as_str()).or_default() += 1;
    }
    assert_eq!(per_tx.len(), SETTLEMENTS_IN_FLIGHT + 1, "{per_tx:?}");
    assert_eq!(per_tx[batch_tx.as_str()], 7);
    assert_eq!(db.count_claims("settled").await.unwrap(), 11);
    assert_eq!(db.count_claims("failed").await.unwrap(), 1);
    assert_eq!(up.hits(), 12, "every paid request reached the origin once");
}

/// A gateway on `chain` with the test routes in front of `up`, and the fresh address it pays to.
fn gateway_on(chain: &Chain, up: &Upstream) -> (Gateway, Address) {
    let pay_to = new_signer().address();
    let gw = Gateway::start(&evm_config(
        &up.url(),
        &chain.rpc.url,
        &chain.settler_key,
        &chain.token.to_checksum(None),
        &pay_to.to_checksum(None),
    ));
    (gw, pay_to)
}

async fn wait_until(cond: impl Fn() -> bool) {
    let started = std::time::Instant::now();
    while !cond() {
        assert!(started.elapsed() < Duration::from_secs(20), "timed out");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Deferred payments whose first attempts come due together are settled by one batch: the
/// node's fee estimate fails at first (every item's attempt is put off by the same back-off),
/// then answers, and the worker hands the items due together to one transaction.
#[tokio::test(flavor = "multi_thread")]
async fn deferred_payments_due_together_are_settled_in_one_batch() {
    let chain = Chain::start().await;
    let up = Upstream::start();
    let (gw, pay_to) = gateway_on(&chain, &up);
    let payer = new_signer();
    chain.mint(payer.address(), 1_000_000).await;
    let offer = offer_for(&gw, "/deferred/x").await;
    // No fee estimate until the six are queued: each first attempt fails before signing.
    chain
        .rpc
        .set_fault("eth_feeHistory", Fault::Lose502, usize::MAX);
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let auth = Authorization::for_offer(&offer, payer.address());
            let header = v2_header(&offer, auth.payload(&auth.sign(&payer)));
            let req = client()
                .get(gw.url("/deferred/x"))
                .header("payment-signature", header);
            tokio::spawn(async move { req.send().await.unwrap().status().as_u16() })
        })
        .collect();
    for t in tasks {
        assert!((200..300).contains(&t.await.unwrap()));
    }
    wait_until(|| chain.rpc.count("eth_feeHistory") >= 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    chain.rpc.clear_faults();

    let db = Store::connect(&gw.database_url).await.unwrap();
    let started = std::time::Instant::now();
    while db.ledger(100).await.unwrap().len() < 6 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not all settled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ledger = db.ledger(100).await.unwrap();
    let mut per_tx: HashMap<&str, usize> = HashMap::new();
    for row in &ledger {
        *per_tx.entry(row.tx_hash.as_str()).or_default() += 1;
    }
    // Due in at most two whole seconds: at most two batches, never six transactions.
    assert!(per_tx.len() <= 2, "{per_tx:?}");
    assert!(*per_tx.values().max().unwrap() >= 3, "{per_tx:?}");
    assert_eq!(chain.balance(pay_to).await, U256::from(6 * PRICE));
    assert_eq!(db.count_claims("settled").await.unwrap(), 6);
}

/// A batch whose send is answered with a cut connection (the node took it, the answer was lost)
/// is looked up by its hash, never signed again: every member lands once, in that transaction.
/// (A stalled send goes through the same wait as a single payment's: `tests/evm.rs`.)
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_whose_send_answer_is_lost_is_never_sent_twice() {
    let chain = Chain::start().await;
    let payer = new_signer();
    let pay_to = new_signer().address();
    chain.mint(payer.address(), 1_000_000).await;
    let network: Network = format!("eip155:{CHAIN_ID}").parse().unwrap();
    let evm = EvmBackend::new(
        &network,
        &chain.rpc.url,
        &chain.settler_key,
        1,
        Duration::from_secs(2),
    )
    .unwrap()
    .with_batching(8, 4);
    assert_eq!(evm.batch_capacity().await, 8);

    // Lost answer: looked up, all landed in the one transaction.
    let members: Vec<Verified> = (0..3)
        .map(|_| verified(&chain, &payer, pay_to, PRICE))
        .collect();
    let prepared = evm.prepare_batch(&members).await.unwrap();
    chain
        .rpc
        .set_fault("eth_sendRawTransaction", Fault::LoseReset, 1);
    let outcomes = evm
        .submit_batch(&members, &prepared, Attempt::First)
        .await
        .unwrap();
    for o in &outcomes {
        assert_eq!(o.as_ref().unwrap().transaction, prepared.transaction);
    }
    assert_eq!(chain.balance(pay_to).await, U256::from(3 * PRICE));
    // One transaction sent: the lost send, looked up, not a second one.
    assert_eq!(chain.rpc.count("eth_sendRawTransaction"), 1);
}

/// A batch whose record fails (here a trigger refuses every claim's move to `settling`) is never
/// sent: each member is a 503, charged nothing, its claim given back; the batch's settler nonce
/// goes back too, so the next payment settles at once (no gap for later transactions to queue
/// behind), and every refused proof pays when presented again.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_whose_record_fails_charges_nobody_and_leaves_no_nonce_gap() {
    let chain = Chain::start().await;
    let up = Upstream::start();
    let (gw, pay_to) = gateway_on(&chain, &up);
    let payer = new_signer();
    chain.mint(payer.address(), 1_000_000).await;
    // The settler's transactions so far (the chain's set-up may use its account).
    let settler: PrivateKeySigner = chain.settler_key.parse().unwrap();
    let sent_before = chain
        .provider
        .get_transaction_count(settler.address())
        .await
        .unwrap();
    let offer = offer_for(&gw, "/paid/x").await;
    let sign = || {
        let auth = Authorization::for_offer(&offer, payer.address());
        v2_header(&offer, auth.payload(&auth.sign(&payer)))
    };
    let paid = |header: String| {
        let req = client()
            .get(gw.url("/paid/x"))
            .header("payment-signature", header);
        tokio::spawn(async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap_or_default())
        })
    };

    // Every slot held by a payment whose send the node answers 1.5 s late (each marked
    // `settling` before its send, so before the trigger below).
    chain.rpc.set_fault(
        "eth_sendRawTransaction",
        Fault::Slow(Duration::from_millis(1500)),
        SETTLEMENTS_IN_FLIGHT,
    );
    let mut first = Vec::new();
    for i in 0..SETTLEMENTS_IN_FLIGHT {
        first.push(paid(sign()));
        wait_until(|| chain.rpc.count("eth_sendRawTransaction") > i).await;
    }
    let db = sqlx::SqlitePool::connect(&gw.database_url).await.unwrap();
    refuse_settling(&db).await;
    // Five arrive while every slot is busy: one batch once a slot frees, whose record fails.
    let refused: Vec<String> = (0..5).map(|_| sign()).collect();
    let waiting: Vec<_> = refused.iter().cloned().map(paid).collect();
    for task in first {
        let (status, body) = task.await.unwrap();
        assert!((200..300).contains(&status), "{status} {body}");
    }
    for task in waiting {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 503, "{body}");
    }
    assert_eq!(
        chain.rpc.count("eth_sendRawTransaction"),
        SETTLEMENTS_IN_FLIGHT,
        "the batch was never sent"
    );
    assert_eq!(
        chain.balance(pay_to).await,
        U256::from(SETTLEMENTS_IN_FLIGHT as u64 * PRICE)
    );
    let store = Store::connect(&gw.database_url).await.unwrap();
    assert_eq!(store.count_claims("settling").await.unwrap(), 0);
    assert_eq!(
        store.count_claims("claimed").await.unwrap(),
        0,
        "given back"
    );

    // The database writes again: the next payment settles at once, on the nonce the batch gave
    // back, and the refused proofs pay now, each once.
    allow_settling(&db).await;
    let started = std::time::Instant::now();
    let (status, body) = paid(sign()).await.unwrap();
    assert_eq!(status, 201, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "settled after {:?}",
        started.elapsed()
    );
    for header in refused {
        let (status, body) = paid(header).await.unwrap();
        assert_eq!(status, 201, "{body}");
    }
    let settled = SETTLEMENTS_IN_FLIGHT as u64 + 6;
    assert_eq!(chain.balance(pay_to).await, U256::from(settled * PRICE));
    let used = chain
        .provider
        .get_transaction_count(settler.address())
        .await
        .unwrap();
    assert_eq!(
        used - sent_before,
        settled,
        "one transaction each, no nonce skipped"
    );
    assert_eq!(store.ledger(100).await.unwrap().len() as u64, settled);
    // Under `after` the origin ran for the five before their settlement failed; the clients got
    // a 503 and none of its answer, and paid when they came back.
    assert_eq!(up.hits() as u64, settled + 5);
}
