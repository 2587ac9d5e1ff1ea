//! A settlement stuck unmined is replaced: the same transfer, the same settler nonce, higher
//! fees (`replace_after_seconds`). Real anvil with mining under the test's hand: the base fee
//! surges past a settlement's fee cap (anvil then drops it from its pool, as geth does), or the
//! replacement never reaches the node and the transaction it replaced is the one mined. Either
//! way the payment is charged once, by whichever was mined, and recorded with that hash: by
//! the request's own wait, or by the reconciler after a crash.

mod common;

use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use common::chain::*;
use common::*;
use serde_json::Value;
use x402_gate::store::Store;

const PRICE: u64 = 10_000;
const GWEI: u128 = 1_000_000_000;

struct Setup {
    chain: Chain,
    _up: Upstream,
    pay_to: Address,
    payer: PrivateKeySigner,
    /// Replacing after 2 s (time for the test to act on what it sees in the pool before the
    /// gateway does); an RPC call waits at most 2 s (anvil holds a sync send while it does not
    /// mine).
    cfg: String,
    db_url: String,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let chain = Chain::start_bare().await;
    let up = Upstream::start();
    let pay_to = new_signer().address();
    let payer = new_signer();
    chain.mint(payer.address(), 1_000_000).await;
    let cfg = evm_config(
        &up.url(),
        &chain.rpc.url,
        &chain.settler_key,
        &chain.token.to_checksum(None),
        &pay_to.to_checksum(None),
    )
    .replace(
        "settler_key = ",
        "replace_after_seconds = 2\nrpc_timeout_seconds = 2\nsettler_key = ",
    );
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("gate.db").display());
    Setup {
        chain,
        _up: up,
        pay_to,
        payer,
        cfg,
        db_url,
        _dir: dir,
    }
}

/// A paid request for `path` sent in a task of its own: its response, once the settlement is
/// over.
async fn paid_request(
    s: &Setup,
    gw: &Gateway,
    path: &str,
) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    let offer = offer_for(gw, path).await;
    let auth = Authorization::for_offer(&offer, s.payer.address());
    let header = v2_header(&offer, auth.payload(&auth.sign(&s.payer)));
    let req = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
        .get(gw.url(path))
        .header("payment-signature", header);
    tokio::spawn(async move { req.send().await })
}

/// A paid request whose settlement sits in anvil's pool, unmined (mining is off from here): the
/// gateway's database, the request under way, and the settlement's transaction.
struct Stuck {
    gw: Gateway,
    db: Store,
    response: tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
    first: String,
}

async fn stuck_settlement(s: &Setup, path: &str) -> Stuck {
    stuck_on(s, &s.cfg, path).await
}

/// `stuck_settlement` through a gateway on `cfg`.
async fn stuck_on(s: &Setup, cfg: &str, path: &str) -> Stuck {
    let gw = Gateway::start_with_db(cfg, &s.db_url);
    let db = Store::connect(&s.db_url).await.unwrap();
    s.chain.set_automine(false).await;
    let response = paid_request(s, &gw, path).await;
    wait_for(|| async { s.chain.pool_size().await == 1 }).await;
    let (first, replaced) = settling(&db).await.expect("a settling claim");
    assert!(replaced.is_empty());
    Stuck {
        gw,
        db,
        response,
        first,
    }
}

/// The proxy swallows every send from now on (the replacement never reaches the node); returns
/// once a replacement is recorded, with the transactions it replaced.
async fn replacement_lost(s: &Setup, db: &Store, first: &str) -> Vec<String> {
    s.chain
        .rpc
        .set_fault("eth_sendRawTransaction", Fault::Swallow, usize::MAX);
    wait_for(|| async { settling(db).await.is_some_and(|(tx, _)| tx != first) }).await;
    settling(db).await.unwrap().1
}

/// The config with replacement off (`replace_after_seconds = 0`).
fn replacement_off(s: &Setup) -> String {
    s.cfg
        .replace("replace_after_seconds = 2", "replace_after_seconds = 0")
}

/// A paid request for `path` whose settlement a gateway with replacement off sent, left in the
/// pool (mining off from here) when the gateway went down: the database and the settlement's
/// transaction.
async fn sent_before_going_down(s: &Setup, path: &str) -> (Store, String) {
    let Stuck {
        gw,
        db,
        response,
        first,
    } = stuck_on(s, &replacement_off(s), path).await;
    drop(gw);
    let _ = response.await;
    (db, first)
}

/// Every claim as if last touched 600 s earlier: a gateway down longer than the staleness
/// period.
async fn age_claims(s: &Setup) {
    let raw = sqlx::SqlitePool::connect(&s.db_url).await.unwrap();
    sqlx::query("UPDATE payment_claims SET updated_at = updated_at - 600")
        .execute(&raw)
        .await
        .unwrap();
    raw.close().await;
}

/// The settler funded again and the base fee back to a gwei, a gateway started: its
/// reconciler's first pass (which looks at every claim) sends `first` again as it is, and it
/// lands, in the ledger, charged once, with one settler nonce. The gateway, still running.
async fn original_lands_after_restart(s: &Setup, db: &Store, first: &str) -> Gateway {
    let settler: PrivateKeySigner = s.chain.settler_key.parse().unwrap();
    s.chain
        .set_eth_balance(settler.address(), 1_000_000_000 * GWEI)
        .await;
    s.chain.set_next_base_fee(GWEI).await;
    s.chain.mine().await;
    let gw = Gateway::start_with_db(&s.cfg, &s.db_url);
    wait_for(|| async { db.ledger(10).await.unwrap().len() == 1 }).await;
    assert_eq!(db.ledger(10).await.unwrap()[0].tx_hash, first);
    assert_eq!(s.chain.balance(s.pay_to).await, U256::from(PRICE));
    assert_eq!(s.chain.settler_nonce().await, 1);
    gw
}

/// The one claim settling: (its transaction, the ones that replaced... it replaced).
async fn settling(db: &Store) -> Option<(String, Vec<String>)> {
    let claims = db.settling_claims(i64::MAX, 10).await.unwrap();
    assert!(claims.len() <= 1, "{claims:?}");
    claims
        .into_iter()
        .next()
        .map(|c| (c.tx_hash, c.tx_replaced))
}

async fn mined(chain: &Chain, tx: &str) -> bool {
    let hash = tx.parse().unwrap();
    chain
        .provider
        .get_transaction_receipt(hash)
        .await
        .unwrap()
        .is_some()
}

/// The next block's base fee rises to `gwei` and the block is mined: a settlement waiting in the
/// pool with a lower fee cap is dropped by anvil (as geth does).
async fn price_out(chain: &Chain, gwei: u128) {
    chain.set_next_base_fee(gwei * GWEI).await;
    chain.mine().await;
    assert_eq!(
        chain.pool_size().await,
        0,
        "the pool dropped what was priced out"
    );
}

/// The one payment lands by a replacement of `first`: the ledger names it, it is mined and
/// `first` is not, the payer is charged once, and the settler used one nonce.
async fn settled_once_by_a_replacement_of(s: &Setup, db: &Store, first: &str) {
    wait_for(|| async { db.ledger(10).await.unwrap().len() == 1 }).await;
    let tx = db.ledger(10).await.unwrap()[0].tx_hash.clone();
    assert_ne!(tx, first, "settled by the replacement");
    assert!(mined(&s.chain, &tx).await);
    assert!(!mined(&s.chain, first).await);
    assert_eq!(db.count_claims("settled").await.unwrap(), 1);
    assert_eq!(s.chain.balance(s.pay_to).await, U256::from(PRICE));
    assert_eq!(
        s.chain.settler_nonce().await,
        1,
        "one nonce, one transaction"
    );
}

/// The request's client is served (201) with the receipt naming `tx`, which the ledger names
/// too: the payer charged once, with one settler nonce.
async fn served_once_by(
    s: &Setup,
    db: &Store,
    response: tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
    tx: &str,
) {
    let resp = response.await.unwrap().unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(receipt_tx(&resp), tx);
    let ledger = db.ledger(10).await.unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].tx_hash, tx);
    assert_eq!(s.chain.balance(s.pay_to).await, U256::from(PRICE));
    assert_eq!(s.chain.settler_nonce().await, 1);
}

/// How many replacements `gw` signed for stuck settlements (`x402_settlement_replacements_total`;
/// `None`: no such series).
async fn replacements(gw: &Gateway) -> Option<u64> {
    let series = format!("x402_settlement_replacements_total{{network=\"eip155:{CHAIN_ID}\"}} ");
    gw.metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str())?.trim().parse().ok())
}

fn receipt_tx(resp: &reqwest::Response) -> String {
    let r = decode_b64_json(resp.headers()["payment-response"].to_str().unwrap());
    assert_eq!(r["success"], Value::Bool(true), "{r}");
    r["transaction"].as_str().unwrap().to_string()
}

/// The base fee surges past the settlement's fee cap while it waits in the pool: anvil drops
/// it, and sending the same bytes again is refused ("max fee per gas less than block base
/// fee"). Without replacement the client waited 60 s for a 503 and the claim for its expiry.
/// Replaced at the node's fees now, it lands; the client is served, charged once, and the
/// ledger and the receipt name the replacement.
#[tokio::test(flavor = "multi_thread")]
async fn a_settlement_priced_out_by_a_base_fee_surge_is_replaced_and_lands() {
    let s = setup().await;
    let started = std::time::Instant::now();
    let Stuck {
        gw,
        db,
        response,
        first,
    } = stuck_settlement(&s, "/paid/surge").await;
    // 100 gwei: far above the settlement's fee cap (anvil's base fee is about 1 gwei).
    price_out(&s.chain, 100).await;
    s.chain.set_automine(true).await;

    let resp = response.await.unwrap().unwrap();
    assert_eq!(resp.status(), 201);
    let tx = receipt_tx(&resp);
    assert_ne!(tx, first, "served by the replacement");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "served after {:?}",
        started.elapsed()
    );
    assert!(mined(&s.chain, &tx).await);
    assert!(!mined(&s.chain, &first).await);
    assert_eq!(
        replacements(&gw).await,
        Some(1),
        "the operators' metric counts it"
    );
    let ledger = db.ledger(10).await.unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].tx_hash, tx);
    assert_eq!(s.chain.balance(s.pay_to).await, U256::from(PRICE));
    assert_eq!(
        s.chain.settler_nonce().await,
        1,
        "one nonce, one transaction"
    );
    assert_eq!(db.count_claims("settled").await.unwrap(), 1);
    // The next payment is not held behind anything.
    let resp = paid_request(&s, &gw, "/paid/surge").await;
    assert_eq!(resp.await.unwrap().unwrap().status(), 201);
    assert_eq!(s.chain.balance(s.pay_to).await, U256::from(2 * PRICE));
}

/// The replacement never reaches the node (the proxy swallows every send after the first) and
/// the transaction it replaced is mined after all: the request's wait watches both, so the
/// client is served with the hash that was mined, and the ledger names it.
#[tokio::test(flavor = "multi_thread")]
async fn the_replaced_transaction_mined_after_all_settles_the_payment() {
    let s = setup().await;
    let Stuck {
        gw,
        db,
        response,
        first,
    } = stuck_settlement(&s, "/paid/original").await;
    let replaced = replacement_lost(&s, &db, &first).await;
    assert_eq!(replaced, std::slice::from_ref(&first));
    s.chain.mine().await;
    assert!(mined(&s.chain, &first).await);

    served_once_by(&s, &db, response, &first).await;
    drop(gw);
}

/// The gateway goes down after recording a replacement that never reached the node; the
/// transaction it replaced is mined while it is down. After the restart the reconciler looks
/// every transaction of the claim up, not only the last recorded, and records the payment.
#[tokio::test(flavor = "multi_thread")]
async fn the_reconciler_finds_a_replaced_transaction_that_was_mined() {
    let s = setup().await;
    let Stuck {
        gw,
        db,
        response,
        first,
    } = stuck_settlement(&s, "/paid/crash").await;
    let replaced = replacement_lost(&s, &db, &first).await;
    assert_eq!(replaced, std::slice::from_ref(&first));
    drop(gw);
    let _ = response.await;
    s.chain.mine().await;
    assert!(mined(&s.chain, &first).await);
    assert!(
        db.ledger(10).await.unwrap().is_empty(),
        "nothing recorded yet"
    );
    s.chain.rpc.clear_faults();
    s.chain.set_automine(true).await;

    let _gw = Gateway::start_with_db(&s.cfg, &s.db_url);
    wait_for(|| async { db.ledger(10).await.unwrap().len() == 1 }).await;
    assert_eq!(db.ledger(10).await.unwrap()[0].tx_hash, first);
    assert_eq!(db.count_claims("settled").await.unwrap(), 1);
    assert_eq!(s.chain.balance(s.pay_to).await, U256::from(PRICE));
    assert_eq!(s.chain.settler_nonce().await, 1);
}

/// The gateway goes down while its settlement waits unmined (its own wait never replaces here:
/// replacement is off in the first gateway's config), and the base fee surges past the
/// settlement's fee cap while it is down: anvil drops it, and sending the stored bytes again is
/// refused. Once the claim has gone untouched for the staleness period, the restarted gateway's
/// reconciler replaces it at the node's fees, recorded before it is sent, and the payment lands:
/// charged once, with the replacement in the ledger. Before, it waited for its authorization's
/// expiry and every later settlement of the settler behind it.
#[tokio::test(flavor = "multi_thread")]
async fn the_reconciler_replaces_a_settlement_priced_out_while_the_gateway_was_down() {
    let s = setup().await;
    let (db, first) = sent_before_going_down(&s, "/paid/down").await;
    price_out(&s.chain, 100).await;
    s.chain.set_automine(true).await;

    // The gateway was down longer than the staleness period: its claim is that old. Restarted
    // with replacement off, the reconciler only sends the same bytes again, which the node
    // refuses: nothing moves.
    age_claims(&s).await;
    let gw = Gateway::start_with_db(&replacement_off(&s), &s.db_url);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(settling(&db).await.map(|(tx, _)| tx), Some(first.clone()));
    assert_eq!(s.chain.settler_nonce().await, 0);
    // The series is there from the start, at 0, so an alert on its increase sees the first.
    assert_eq!(replacements(&gw).await, Some(0));
    drop(gw);

    // Down again as long.
    age_claims(&s).await;
    let gw = Gateway::start_with_db(&s.cfg, &s.db_url);
    settled_once_by_a_replacement_of(&s, &db, &first).await;
    assert_eq!(
        replacements(&gw).await,
        Some(1),
        "the reconciler's replacement is counted too"
    );
}

/// The reconciler's replacement of a stuck settlement is refused by the node (the settler cannot
/// pay its fee cap): it never left, so the claim goes back to naming the transaction it replaced
/// as the one to send again, the refused one still watched, and nothing is charged. Once the
/// settler is funded and the base fee is down, the next start's pass sends the original again
/// and records it: charged once, with one settler nonce.
#[tokio::test(flavor = "multi_thread")]
async fn a_replacement_the_reconciler_cannot_send_leaves_the_original_to_send_again() {
    let s = setup().await;
    let settler: PrivateKeySigner = s.chain.settler_key.parse().unwrap();
    let (db, first) = sent_before_going_down(&s, "/paid/refused").await;
    // 0.01 ETH: not a replacement's 200k gas at 175 gwei.
    s.chain
        .set_eth_balance(settler.address(), 10_000_000 * GWEI)
        .await;
    price_out(&s.chain, 100).await;
    s.chain.set_automine(true).await;

    // Down past the staleness period: the first pass after the restart replaces (the
    // authorization, valid 60 s from the request, still has the 30 s a replacement needs), and
    // the node refuses the replacement. Waited for until the claims no longer watch the original
    // as one replaced: recorded first, the replacement names it so until the node refuses it.
    age_claims(&s).await;
    let gw = Gateway::start_with_db(&s.cfg, &s.db_url);
    wait_for(|| async {
        settling(&db)
            .await
            .is_some_and(|(_, r)| !r.is_empty() && !r.contains(&first))
    })
    .await;
    let (current, replaced) = settling(&db).await.unwrap();
    assert_eq!(current, first, "the original is the one to send again");
    assert_eq!(
        replaced.len(),
        1,
        "the refused replacement is still watched"
    );
    assert_ne!(replaced[0], first);
    // Past the pass's second look (2 s): nothing landed, nothing charged.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(settling(&db).await, Some((first.clone(), replaced.clone())));
    assert!(!mined(&s.chain, &replaced[0]).await);
    assert_eq!(s.chain.balance(s.pay_to).await, U256::ZERO);
    assert_eq!(s.chain.settler_nonce().await, 0);
    drop(gw);

    // Funded again, the base fee back to a gwei: the restarted gateway's first pass (which
    // looks at every claim) sends the original again as it is, and records it.
    let _gw = original_lands_after_restart(&s, &db, &first).await;
    assert!(!mined(&s.chain, &replaced[0]).await);
    assert_eq!(db.count_claims("settled").await.unwrap(), 1);
}

/// A stalled settlement whose replacement cannot be signed (every fee estimate fails from the
/// stall on) is watched for the rest of the request's wait, not given up: mined a moment later,
/// the client gets its 201 with the success receipt naming it. Before, the wait ended at the
/// stall with a 503 `settlement_pending` although the payment landed (the chaos test's seed 37
/// found it under RPC faults).
#[tokio::test(flavor = "multi_thread")]
async fn a_stall_that_cannot_be_replaced_is_watched_and_its_client_served() {
    let s = setup().await;
    let Stuck {
        gw,
        db,
        response,
        first,
    } = stuck_settlement(&s, "/paid/watch").await;
    s.chain
        .rpc
        .set_fault("eth_feeHistory", Fault::Lose502, usize::MAX);
    // Past the stall (2 s) and the failed replacement: the client still waits.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !response.is_finished(),
        "the client was answered at the stall"
    );
    assert_eq!(settling(&db).await, Some((first.clone(), Vec::new())));
    s.chain.mine().await;

    served_once_by(&s, &db, response, &first).await;
    drop(gw);
}

/// The settler cannot pay the replacement's fee cap (its gas money ran low while the base fee
/// surged): the node refuses the replacement itself. It never left, so the claim goes back to
/// naming the transaction it replaced as the one to send (the refused one still watched), the
/// client is told the settlement is pending, and nothing moves. Once the settler is funded and
/// the base fee is down, the reconciler sends the original again and records it.
#[tokio::test(flavor = "multi_thread")]
async fn a_replacement_the_node_refuses_leaves_the_original_to_send_again() {
    let s = setup().await;
    let settler: PrivateKeySigner = s.chain.settler_key.parse().unwrap();
    let Stuck {
        gw,
        db,
        response,
        first,
    } = stuck_settlement(&s, "/paid/underfunded").await;
    // 0.01 ETH: the original's gas (200k at a few gwei) but not a replacement's at 175 gwei.
    s.chain
        .set_eth_balance(settler.address(), 10_000_000 * GWEI)
        .await;
    price_out(&s.chain, 100).await;

    let resp = response.await.unwrap().unwrap();
    assert_eq!(resp.status(), 503);
    let r = decode_b64_json(resp.headers()["payment-response"].to_str().unwrap());
    assert_eq!(r["success"], Value::Bool(false), "{r}");
    let (current, replaced) = settling(&db).await.expect("still settling");
    assert_eq!(current, first, "the original is the one to send again");
    assert_eq!(
        replaced.len(),
        1,
        "the refused replacement is still watched"
    );
    assert_ne!(replaced[0], first);
    assert!(!mined(&s.chain, &replaced[0]).await);
    assert_eq!(s.chain.balance(s.pay_to).await, U256::ZERO);
    drop(gw);

    // Funded again, the base fee back to a gwei: the reconciler's first pass sends it again.
    s.chain.set_automine(true).await;
    let _gw = original_lands_after_restart(&s, &db, &first).await;
}

/// A deferred settlement (the client served at once) priced out in the pool is replaced by the
/// worker's wait, the replacement recorded on its claim and its queue item first, and lands:
/// charged once, the ledger naming the replacement.
#[tokio::test(flavor = "multi_thread")]
async fn a_deferred_settlement_priced_out_is_replaced_and_lands() {
    let s = setup().await;
    let gw = Gateway::start_with_db(&s.cfg, &s.db_url);
    let db = Store::connect(&s.db_url).await.unwrap();
    s.chain.set_automine(false).await;
    let resp = paid_request(&s, &gw, "/deferred/surge")
        .await
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 201, "served before it is settled");
    wait_for(|| async { s.chain.pool_size().await == 1 }).await;
    let first = s.chain.pool_hashes().await.remove(0);
    price_out(&s.chain, 100).await;
    s.chain.set_automine(true).await;

    settled_once_by_a_replacement_of(&s, &db, &first).await;
}

/// A batch (two payments that waited while the only settlement slot was busy) priced out in
/// the pool is replaced as one: both claims move to the replacement together, and both are
/// served with its hash and charged once.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_priced_out_is_replaced_as_one() {
    let s = setup().await;
    s.chain.install_multicall3().await;
    let cfg = s.cfg.replace(
        "settler_key = ",
        "settlements_in_flight = 1\nsettler_key = ",
    );
    let gw = Gateway::start_with_db(&cfg, &s.db_url);
    let db = Store::connect(&s.db_url).await.unwrap();
    // Grouping is on once the health probe has found Multicall3.
    let payers = [new_signer(), new_signer()];
    for p in &payers {
        s.chain.mint(p.address(), 1_000_000).await;
    }
    let warm = paid_request(&s, &gw, "/paid/warm").await;
    assert_eq!(warm.await.unwrap().unwrap().status(), 201);
    s.chain.set_automine(false).await;

    // The first holds the only slot, stuck in the pool; two more wait behind it.
    let alone = paid_request(&s, &gw, "/paid/alone").await;
    wait_for(|| async { s.chain.pool_size().await == 1 }).await;
    let offer = offer_for(&gw, "/paid/batch").await;
    let batch: Vec<_> = payers
        .iter()
        .map(|p| {
            let auth = Authorization::for_offer(&offer, p.address());
            let req = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap()
                .get(gw.url("/paid/batch"))
                .header(
                    "payment-signature",
                    v2_header(&offer, auth.payload(&auth.sign(p))),
                );
            tokio::spawn(async move { req.send().await })
        })
        .collect();
    // Both claimed and served by the origin (`after`): then they wait for the slot together.
    wait_for(|| async { db.count_claims("claimed").await.unwrap() == 2 && s._up.hits() == 4 })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Mined as it is: the slot frees, and the two go out as one batch.
    s.chain.mine().await;
    assert_eq!(alone.await.unwrap().unwrap().status(), 201);
    wait_for(|| async {
        let open = db.settling_claims(i64::MAX, 10).await.unwrap();
        open.len() == 2 && s.chain.pool_size().await == 1
    })
    .await;
    let first = s.chain.pool_hashes().await.remove(0);
    let open = db.settling_claims(i64::MAX, 10).await.unwrap();
    assert!(
        open.iter().all(|c| c.tx_hash == first),
        "one batch: {open:?}"
    );
    price_out(&s.chain, 1_000).await;
    s.chain.set_automine(true).await;

    let mut hashes = Vec::new();
    for b in batch {
        let resp = b.await.unwrap().unwrap();
        assert_eq!(resp.status(), 201);
        hashes.push(receipt_tx(&resp));
    }
    assert_eq!(hashes[0], hashes[1], "one transaction settled both");
    assert_ne!(hashes[0], first, "the batch's replacement");
    assert!(!mined(&s.chain, &first).await);
    let ledger = db.ledger(10).await.unwrap();
    assert_eq!(ledger.len(), 4);
    assert_eq!(ledger.iter().filter(|r| r.tx_hash == hashes[0]).count(), 2);
    assert_eq!(s.chain.balance(s.pay_to).await, U256::from(4 * PRICE));
    assert_eq!(
        s.chain.settler_nonce().await,
        3,
        "warm-up, the one alone, the batch"
    );
}
