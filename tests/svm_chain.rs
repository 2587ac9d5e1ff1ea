//! The test SVM (tests/common/svm.rs) against the clients that will use it: the real
//! `solana_rpc_client` 3.1 (what the gateway is built on) and the reference npm client
//! `@x402/svm` (tools/x402-svm-pay.mjs).

mod common;

use std::time::Duration;

use common::svm::*;
use solana_commitment_config::CommitmentConfig;
use solana_rpc_client::nonblocking::rpc_client::RpcClient;
use solana_rpc_client_api::client_error::ErrorKind;
use solana_rpc_client_api::config::{
    RpcSendTransactionConfig, RpcSimulateTransactionConfig, RpcTransactionConfig,
};
use solana_rpc_client_api::request::{RpcError, RpcResponseErrorData};
use solana_rpc_client_api::response::OptionSerializer;
use solana_signer::Signer;
use solana_transaction::TransactionError;
use solana_transaction_status_client_types::{
    TransactionConfirmationStatus, UiTransactionEncoding,
};

fn client(chain: &SvmChain) -> RpcClient {
    RpcClient::new_with_commitment(chain.rpc_url(), CommitmentConfig::confirmed())
}

/// The JSON-RPC error code of a client error, if it is one.
fn rpc_code(e: &solana_rpc_client_api::client_error::Error) -> Option<i64> {
    match e.kind() {
        ErrorKind::RpcError(RpcError::RpcResponseError { code, .. }) => Some(*code),
        _ => None,
    }
}

fn skip_preflight() -> RpcSendTransactionConfig {
    RpcSendTransactionConfig {
        skip_preflight: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_pays_through_the_facade() {
    let chain = SvmChain::start();
    let rpc = client(&chain);

    // Cluster identity and clock.
    assert_eq!(
        rpc.get_genesis_hash().await.unwrap().to_string(),
        DEVNET_GENESIS_HASH
    );
    assert!(DEVNET.ends_with(&DEVNET_GENESIS_HASH[..32]));
    rpc.get_health().await.unwrap();
    assert_eq!(rpc.get_version().await.unwrap().solana_core, CORE_VERSION);
    let slot = rpc.get_slot().await.unwrap();
    assert!(slot > 0);
    assert!(rpc.get_block_height().await.unwrap() >= slot);
    assert!(rpc.get_epoch_info().await.unwrap().absolute_slot >= slot);
    let (blockhash, last_valid) = rpc
        .get_latest_blockhash_with_commitment(CommitmentConfig::confirmed())
        .await
        .unwrap();
    assert_eq!(blockhash, chain.latest_blockhash());
    assert!(last_valid >= slot + 150);
    assert!(rpc
        .is_blockhash_valid(&blockhash, CommitmentConfig::confirmed())
        .await
        .unwrap());

    // Accounts: both mints, 6 decimals, under their programs.
    for (mint, program) in [
        (chain.mint(), TOKEN_PROGRAM),
        (chain.mint_2022(), TOKEN_2022_PROGRAM),
    ] {
        let acc = rpc.get_account(&mint).await.unwrap();
        assert_eq!(acc.owner, program);
        assert_eq!(acc.data[44], DECIMALS);
    }
    let fee_payer = chain.fee_payer();
    let fee_payer_sol = rpc.get_balance(&fee_payer.pubkey()).await.unwrap();
    assert_eq!(fee_payer_sol, 100_000_000_000);
    assert_eq!(chain.sol_balance(&fee_payer.pubkey()), fee_payer_sol);
    assert!(
        rpc.get_minimum_balance_for_rent_exemption(165)
            .await
            .unwrap()
            > 0
    );

    // A payer with tokens and no SOL; a recipient with its ATA.
    let payer = chain.new_payer(1_000_000);
    let pay_to = chain.new_recipient();
    assert_eq!(chain.sol_balance(&payer.pubkey()), 0);
    assert_eq!(
        chain.token_balance(&payer.pubkey(), &chain.mint()),
        1_000_000
    );
    let payer_ata = ata(&payer.pubkey(), &chain.mint(), &TOKEN_PROGRAM);
    let amount = rpc.get_token_account_balance(&payer_ata).await.unwrap();
    assert_eq!(
        (
            amount.amount.as_str(),
            amount.decimals,
            amount.ui_amount_string.as_str()
        ),
        ("1000000", 6, "1")
    );
    let owned = rpc
        .get_token_accounts_by_owner(
            &payer.pubkey(),
            solana_rpc_client_api::request::TokenAccountsFilter::Mint(chain.mint()),
        )
        .await
        .unwrap();
    assert_eq!(owned.len(), 1);
    assert_eq!(owned[0].pubkey, payer_ata.to_string());

    // The client's partially signed payment: no preflight passes without the fee payer.
    let offer = chain.offer(10_000, &chain.mint(), &pay_to);
    let mut tx = chain.payment(&offer, &payer.pubkey()).sign(&payer);
    assert!(signed_by(&tx, &payer.pubkey()));
    assert!(!signed_by(&tx, &fee_payer.pubkey()));
    let e = rpc.send_transaction(&tx).await.unwrap_err();
    assert_eq!(rpc_code(&e), Some(-32003), "{e}");
    // ... but it simulates without sigVerify, as a facilitator checks it before co-signing.
    let sim = rpc
        .simulate_transaction_with_config(
            &tx,
            RpcSimulateTransactionConfig {
                sig_verify: false,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .value;
    assert_eq!(sim.err, None, "{:?}", sim.logs);
    assert!(sim.units_consumed.unwrap() > 0);
    assert!(sim
        .logs
        .unwrap()
        .iter()
        .any(|l| l.contains(&TOKEN_PROGRAM.to_string())));

    // Co-signed, simulated with sigVerify, sent with preflight, confirmed.
    cosign(&mut tx, &fee_payer);
    let sim = rpc
        .simulate_transaction_with_config(
            &tx,
            RpcSimulateTransactionConfig {
                sig_verify: true,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .value;
    assert_eq!(sim.err, None);
    let sig = rpc.send_transaction(&tx).await.unwrap();
    assert_eq!(sig, tx.signatures[0]);
    let status = rpc.get_signature_statuses(&[sig]).await.unwrap().value[0]
        .clone()
        .expect("landed");
    assert_eq!(status.err, None);
    assert_eq!(
        status.confirmation_status,
        Some(TransactionConfirmationStatus::Finalized)
    );
    assert_eq!(chain.token_balance(&pay_to, &chain.mint()), 10_000);
    assert_eq!(chain.token_balance(&payer.pubkey(), &chain.mint()), 990_000);
    let fee_paid = fee_payer_sol - chain.sol_balance(&fee_payer.pubkey());
    assert_eq!(fee_paid, 10_000 + 1, "2 signatures + 1 lamport of priority");

    // getTransaction: v0 needs maxSupportedTransactionVersion, as on a validator.
    let e = rpc
        .get_transaction(&sig, UiTransactionEncoding::Json)
        .await
        .unwrap_err();
    assert_eq!(rpc_code(&e), Some(-32015), "{e}");
    let got = rpc
        .get_transaction_with_config(
            &sig,
            RpcTransactionConfig {
                encoding: Some(UiTransactionEncoding::Json),
                commitment: Some(CommitmentConfig::confirmed()),
                max_supported_transaction_version: Some(0),
            },
        )
        .await
        .unwrap();
    assert_eq!(got.slot, status.slot);
    assert!(got.block_time.is_some());
    let meta = got.transaction.meta.unwrap();
    assert_eq!(meta.err, None);
    assert_eq!(meta.fee, fee_paid);
    assert_eq!(meta.pre_balances[0] - meta.post_balances[0], fee_paid);
    let (OptionSerializer::Some(pre), OptionSerializer::Some(post)) =
        (meta.pre_token_balances, meta.post_token_balances)
    else {
        panic!("token balances missing")
    };
    let dest_ata = ata(&pay_to, &chain.mint(), &TOKEN_PROGRAM).to_string();
    let keys: Vec<String> = match &got.transaction.transaction {
        solana_rpc_client_api::response::EncodedTransaction::Json(t) => match &t.message {
            solana_transaction_status_client_types::UiMessage::Raw(m) => m.account_keys.clone(),
            _ => panic!("raw message expected"),
        },
        _ => panic!("json expected"),
    };
    assert_eq!(keys[0], fee_payer.pubkey().to_string());
    let balance_of = |list: &[solana_rpc_client_api::response::UiTransactionTokenBalance],
                      key: &str| {
        list.iter()
            .find(|b| keys[b.account_index as usize] == key)
            .map(|b| {
                assert_eq!(b.mint, chain.mint().to_string());
                assert_eq!(b.ui_token_amount.decimals, 6);
                assert_eq!(
                    b.program_id,
                    OptionSerializer::Some(TOKEN_PROGRAM.to_string())
                );
                b.ui_token_amount.amount.parse::<u64>().unwrap()
            })
            .unwrap()
    };
    assert_eq!(balance_of(&pre, &dest_ata), 0);
    assert_eq!(balance_of(&post, &dest_ata), 10_000);
    assert_eq!(balance_of(&post, &payer_ata.to_string()), 990_000);
    let owner_of = post
        .iter()
        .find(|b| keys[b.account_index as usize] == dest_ata)
        .unwrap()
        .owner
        .clone();
    assert_eq!(owner_of, OptionSerializer::Some(pay_to.to_string()));
    let OptionSerializer::Some(logs) = meta.log_messages else {
        panic!("logs missing")
    };
    let invoked = format!("Program {TOKEN_PROGRAM} invoke [1]");
    assert!(logs.contains(&invoked), "{logs:?}");
    // base64 encoding gives the same transaction back.
    let got64 = rpc
        .get_transaction_with_config(
            &sig,
            RpcTransactionConfig {
                encoding: Some(UiTransactionEncoding::Base64),
                commitment: None,
                max_supported_transaction_version: Some(0),
            },
        )
        .await
        .unwrap();
    assert_eq!(got64.transaction.transaction.decode().unwrap(), tx);
    // Unknown signatures are null.
    let unknown = solana_signature::Signature::from([7u8; 64]);
    assert!(rpc.get_signature_statuses(&[unknown]).await.unwrap().value[0].is_none());
    assert!(rpc
        .get_transaction_with_config(
            &unknown,
            RpcTransactionConfig {
                max_supported_transaction_version: Some(0),
                ..Default::default()
            }
        )
        .await
        .is_err());

    // The pitfall: the same transaction again, skipPreflight, is "accepted" with the same
    // signature, and moves nothing. With preflight it is refused as already processed.
    let sends = chain.count("sendTransaction");
    let again = rpc
        .send_transaction_with_config(&tx, skip_preflight())
        .await
        .unwrap();
    assert_eq!(again, sig);
    assert_eq!(chain.count("sendTransaction"), sends + 1);
    assert_eq!(chain.token_balance(&pay_to, &chain.mint()), 10_000);
    assert_eq!(
        chain.sol_balance(&fee_payer.pubkey()),
        fee_payer_sol - fee_paid
    );
    let e = rpc.send_transaction(&tx).await.unwrap_err();
    assert_eq!(rpc_code(&e), Some(-32002), "{e}");
    assert!(e.to_string().contains("already been processed"), "{e}");
    let sim = rpc.simulate_transaction(&tx).await.unwrap().value;
    assert_eq!(
        sim.err.map(TransactionError::from),
        Some(TransactionError::AlreadyProcessed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_2022_payment_and_failures_look_like_a_validator() {
    let chain = SvmChain::start();
    let rpc = client(&chain);
    let fee_payer = chain.fee_payer();
    let pay_to = chain.new_recipient();

    // Token-2022: the same payment, under the other program.
    let payer = chain.new_payer_of(&chain.mint_2022(), 50_000);
    let offer = chain.offer(20_000, &chain.mint_2022(), &pay_to);
    let payment = chain.payment(&offer, &payer.pubkey());
    assert_eq!(payment.token_program, TOKEN_2022_PROGRAM);
    let mut tx = payment.sign(&payer);
    cosign(&mut tx, &fee_payer);
    rpc.send_and_confirm_transaction(&tx).await.unwrap();
    assert_eq!(chain.token_balance(&pay_to, &chain.mint_2022()), 20_000);
    assert_eq!(
        chain.token_balance(&payer.pubkey(), &chain.mint_2022()),
        30_000
    );

    // More than the payer holds: preflight refuses with the validator's error and logs.
    let offer = chain.offer(40_000, &chain.mint_2022(), &pay_to);
    let mut tx = chain.payment(&offer, &payer.pubkey()).sign(&payer);
    cosign(&mut tx, &fee_payer);
    let e = rpc.send_transaction(&tx).await.unwrap_err();
    assert_eq!(rpc_code(&e), Some(-32002), "{e}");
    let ErrorKind::RpcError(RpcError::RpcResponseError { message, data, .. }) = e.kind() else {
        panic!("{e}")
    };
    assert!(
        message.starts_with("Transaction simulation failed: Error processing Instruction 2"),
        "{message}"
    );
    let RpcResponseErrorData::SendTransactionPreflightFailure(result) = data else {
        panic!("{data:?}")
    };
    assert_eq!(
        result.err.clone().map(TransactionError::from),
        Some(TransactionError::InstructionError(
            2,
            solana_transaction::InstructionError::Custom(1)
        ))
    );
    assert!(result
        .logs
        .as_ref()
        .unwrap()
        .iter()
        .any(|l| l.contains("insufficient funds")));
    // With skipPreflight it lands as a failure: fee paid, nothing moved, err in the status.
    let sol = chain.sol_balance(&fee_payer.pubkey());
    let sig = rpc
        .send_transaction_with_config(&tx, skip_preflight())
        .await
        .unwrap();
    let status = rpc.get_signature_statuses(&[sig]).await.unwrap().value[0]
        .clone()
        .unwrap();
    assert!(matches!(
        status.err,
        Some(TransactionError::InstructionError(2, _))
    ));
    assert!(chain.sol_balance(&fee_payer.pubkey()) < sol);
    assert_eq!(chain.token_balance(&pay_to, &chain.mint_2022()), 20_000);

    // An expired blockhash: preflight says so; skipPreflight answers a signature that never lands.
    let offer = chain.offer(1_000, &chain.mint_2022(), &pay_to);
    let mut tx = chain.payment(&offer, &payer.pubkey()).sign(&payer);
    cosign(&mut tx, &fee_payer);
    let (old_hash, old_last_valid) = rpc
        .get_latest_blockhash_with_commitment(CommitmentConfig::confirmed())
        .await
        .unwrap();
    chain.expire_blockhash();
    assert!(!rpc
        .is_blockhash_valid(&old_hash, CommitmentConfig::confirmed())
        .await
        .unwrap());
    assert!(rpc.get_block_height().await.unwrap() > old_last_valid);
    let e = rpc.send_transaction(&tx).await.unwrap_err();
    assert!(e.to_string().contains("Blockhash not found"), "{e}");
    let sig = rpc
        .send_transaction_with_config(&tx, skip_preflight())
        .await
        .unwrap();
    assert!(rpc.get_signature_statuses(&[sig]).await.unwrap().value[0].is_none());
    assert_eq!(chain.landed(&sig), None);
    // replaceRecentBlockhash simulates it against the new one.
    let sim = rpc
        .simulate_transaction_with_config(
            &tx,
            RpcSimulateTransactionConfig {
                replace_recent_blockhash: true,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .value;
    assert_eq!(sim.err, None);
    assert_eq!(
        sim.replacement_blockhash.unwrap().blockhash,
        chain.latest_blockhash().to_string()
    );

    // Unknown method.
    let raw = reqwest::Client::new()
        .post(chain.rpc_url())
        .json(&serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "getNothing"}))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(raw["error"]["code"], -32601);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_stall_and_swallow() {
    let chain = SvmChain::start();
    let rpc = client(&chain);
    let fee_payer = chain.fee_payer();
    let payer = chain.new_payer(100_000);
    let pay_to = chain.new_recipient();

    chain.set_down(true);
    let before = chain.calls();
    assert!(rpc.get_latest_blockhash().await.is_err());
    assert_eq!(chain.calls(), before, "nothing is counted while down");
    chain.set_down(false);
    rpc.get_latest_blockhash().await.unwrap();

    // A swallowed transaction: the signature comes back, nothing lands.
    let offer = chain.offer(1_000, &chain.mint(), &pay_to);
    let mut tx = chain.payment(&offer, &payer.pubkey()).sign(&payer);
    cosign(&mut tx, &fee_payer);
    chain.set_swallow(true);
    let sig = rpc
        .send_transaction_with_config(&tx, skip_preflight())
        .await
        .unwrap();
    assert_eq!(sig, tx.signatures[0]);
    assert_eq!(chain.landed(&sig), None);
    chain.set_swallow(false);

    // A stalled reply: the transaction lands, the answer does not come before the timeout.
    chain.set_stall("sendTransaction", Duration::from_secs(30));
    let impatient = RpcClient::new_with_timeout(chain.rpc_url(), Duration::from_millis(500));
    assert!(impatient
        .send_transaction_with_config(&tx, skip_preflight())
        .await
        .is_err());
    assert_eq!(chain.landed(&sig), Some(Ok(())));
    assert_eq!(chain.token_balance(&pay_to, &chain.mint()), 1_000);
    chain.set_stall("sendTransaction", Duration::ZERO);
    assert_eq!(
        rpc.send_transaction_with_config(&tx, skip_preflight())
            .await
            .unwrap(),
        sig
    );
    assert_eq!(chain.token_balance(&pay_to, &chain.mint()), 1_000);
    assert_eq!(chain.count("sendTransaction"), 3);
}

/// What the tiny paywall below saw and did.
#[derive(Default)]
struct Paywall {
    /// The `PAYMENT-SIGNATURE` (v2) or `X-PAYMENT` (v1) headers it was paid with.
    proofs: Vec<String>,
    /// The signatures of the transactions it settled.
    settled: Vec<solana_signature::Signature>,
}

/// A server that charges for `/v2` and `/v1` as an x402 resource server with a facilitator of its
/// own would: a 402 with the offer, then on the retry the client's transaction, co-signed by the
/// chain's fee payer, sent through the facade and confirmed, and a 200 with the receipt.
fn paywall(
    chain: &SvmChain,
    offer: serde_json::Value,
    v1_offer: serde_json::Value,
) -> (String, std::sync::Arc<std::sync::Mutex<Paywall>>) {
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use base64::Engine;
    let b64 =
        |v: &serde_json::Value| base64::engine::general_purpose::STANDARD.encode(v.to_string());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Paywall::default()));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let fee_payer = std::sync::Arc::new(chain.fee_payer());
    let (rpc_url, state) = (chain.rpc_url(), seen.clone());
    let handler = move |version: u8, headers: HeaderMap| {
        let (offer, v1_offer, state) = (offer.clone(), v1_offer.clone(), state.clone());
        let fee_payer = fee_payer.clone();
        let rpc = RpcClient::new_with_commitment(rpc_url.clone(), CommitmentConfig::confirmed());
        let url = format!("{base}/v{version}", base = "http://paywall.test");
        async move {
            let proof_header = if version == 2 {
                "payment-signature"
            } else {
                "x-payment"
            };
            let Some(proof) = headers.get(proof_header).and_then(|v| v.to_str().ok()) else {
                let required = serde_json::json!({
                    "x402Version": 2,
                    "error": "Payment required",
                    "resource": {"url": url, "description": "test", "mimeType": "text/plain"},
                    "accepts": [offer],
                    "extensions": {},
                });
                let v1_body = serde_json::json!({
                    "x402Version": 1, "error": "X-PAYMENT header is required", "accepts": [v1_offer],
                });
                let mut h = HeaderMap::new();
                h.insert("content-type", "application/json".parse().unwrap());
                if version == 2 {
                    h.insert("payment-required", b64(&required).parse().unwrap());
                    return (StatusCode::PAYMENT_REQUIRED, h, "{}".to_string()).into_response();
                }
                return (StatusCode::PAYMENT_REQUIRED, h, v1_body.to_string()).into_response();
            };
            state.lock().unwrap().proofs.push(proof.to_string());
            let mut tx = tx_of_header(proof);
            cosign(&mut tx, &fee_payer);
            let sig = rpc.send_and_confirm_transaction(&tx).await.unwrap();
            state.lock().unwrap().settled.push(sig);
            let receipt = serde_json::json!({
                "success": true,
                "transaction": sig.to_string(),
                "network": if version == 2 { DEVNET } else { "solana-devnet" },
                "payer": tx.message.static_account_keys()[1].to_string(),
            });
            let name = if version == 2 {
                "payment-response"
            } else {
                "x-payment-response"
            };
            let mut h = HeaderMap::new();
            h.insert(name, b64(&receipt).parse().unwrap());
            (StatusCode::OK, h, "paid content".to_string()).into_response()
        }
    };
    let h2 = handler.clone();
    let app = axum::Router::new()
        .route("/v2", axum::routing::get(move |h: HeaderMap| h2(2, h)))
        .route("/v1", axum::routing::get(move |h: HeaderMap| handler(1, h)));
    tokio::spawn(async move {
        let l = tokio::net::TcpListener::from_std(listener).unwrap();
        axum::serve(l, app).await.unwrap()
    });
    (base, seen)
}

/// Runs tools/x402-svm-pay.mjs against `url`; its JSON output.
async fn npm_pay(url: &str, payer: &solana_keypair::Keypair, rpc_url: &str) -> serde_json::Value {
    let out = tokio::process::Command::new("node")
        .arg(common::repo_path("tools/x402-svm-pay.mjs"))
        .arg(url)
        .arg(payer.to_base58_string())
        .arg(rpc_url)
        .output()
        .await
        .expect("node runs (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "the client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Checks a client's transaction is the section-5 layout for `offer` paid by `payer`: v0, fee payer
/// first and unsigned, compute limit and price, TransferChecked payer ATA -> payTo ATA with the
/// payer as authority, a memo of 32 hex characters; the payer's signature valid.
fn assert_exact_layout(
    tx: &solana_transaction::versioned::VersionedTransaction,
    chain: &SvmChain,
    offer: &serde_json::Value,
    payer: &solana_pubkey::Pubkey,
) {
    let msg = &tx.message;
    assert!(
        matches!(msg, solana_message::VersionedMessage::V0(_)),
        "a v0 message"
    );
    let keys = msg.static_account_keys();
    let fee_payer = chain.fee_payer_pubkey();
    assert_eq!(keys[0], fee_payer);
    assert_eq!(msg.header().num_required_signatures, 2);
    assert_eq!(keys[1], *payer);
    assert_eq!(tx.signatures[0], solana_signature::Signature::default());
    assert!(signed_by(tx, payer));
    let ixs = msg.instructions();
    assert_eq!(ixs.len(), 4, "limit, price, transfer, memo");
    let program = |i: usize| keys[ixs[i].program_id_index as usize];
    let account = |i: usize, j: usize| keys[ixs[i].accounts[j] as usize];
    assert_eq!(program(0), COMPUTE_BUDGET_PROGRAM);
    assert_eq!(ixs[0].data, set_compute_unit_limit(COMPUTE_UNIT_LIMIT).data);
    assert_eq!(program(1), COMPUTE_BUDGET_PROGRAM);
    assert_eq!(ixs[1].data, set_compute_unit_price(COMPUTE_UNIT_PRICE).data);
    let mint: solana_pubkey::Pubkey = offer["asset"].as_str().unwrap().parse().unwrap();
    let pay_to: solana_pubkey::Pubkey = offer["payTo"].as_str().unwrap().parse().unwrap();
    let token = chain.token_program(&mint);
    assert_eq!(program(2), token);
    let amount: u64 = offer["amount"].as_str().unwrap().parse().unwrap();
    let expected = transfer_checked(
        &token,
        &ata(payer, &mint, &token),
        &mint,
        &ata(&pay_to, &mint, &token),
        payer,
        amount,
        DECIMALS,
    );
    assert_eq!(ixs[2].data, expected.data);
    for (j, meta) in expected.accounts.iter().enumerate() {
        assert_eq!(account(2, j), meta.pubkey);
    }
    assert_eq!(program(3), MEMO_PROGRAM);
    assert!(ixs[3].accounts.is_empty());
    assert_eq!(ixs[3].data.len(), 32);
    assert!(ixs[3].data.iter().all(|b| b.is_ascii_hexdigit()));
    // Ours builds the same instructions (the account order in the message may differ).
    let ours = chain.payment(offer, payer).message();
    assert_eq!(ours.static_account_keys().len(), keys.len());
    let resolve = |m: &solana_message::VersionedMessage| -> Vec<_> {
        let k = m.static_account_keys();
        m.instructions()
            .iter()
            .take(3)
            .map(|ix| {
                let accounts: Vec<_> = ix.accounts.iter().map(|a| k[*a as usize]).collect();
                (k[ix.program_id_index as usize], accounts, ix.data.clone())
            })
            .collect()
    };
    assert_eq!(resolve(&ours), resolve(msg));
}

/// The reference npm client (@x402/fetch + @x402/svm 2.27) pays a v2 and a v1 challenge on the
/// test SVM: it reads the mint and the blockhash from the facade, builds the section-5
/// transaction, and the paywall's co-signed send moves the tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_npm_client_pays_on_the_test_svm() {
    let chain = SvmChain::start();
    let payer = chain.new_payer(1_000_000);
    let pay_to = chain.new_recipient();
    let offer = chain.offer(10_000, &chain.mint(), &pay_to);
    let v1_offer = serde_json::json!({
        "scheme": "exact",
        "network": "solana-devnet",
        "maxAmountRequired": "20000",
        "resource": "http://paywall.test/v1",
        "description": "test",
        "mimeType": "text/plain",
        "payTo": pay_to.to_string(),
        "maxTimeoutSeconds": 60,
        "asset": chain.mint_2022().to_string(),
        "extra": {"feePayer": chain.fee_payer_pubkey().to_string()},
    });
    chain.mint_to(&payer.pubkey(), &chain.mint_2022(), 1_000_000);
    let (base, seen) = paywall(&chain, offer.clone(), v1_offer.clone());

    // v2, SPL Token.
    let result = npm_pay(&format!("{base}/v2"), &payer, &chain.rpc_url()).await;
    assert_eq!(result["status"], 200, "{result}");
    assert_eq!(result["body"], "paid content");
    assert_eq!(result["receipt"]["success"], true, "{result}");
    let (proof, sig) = {
        let s = seen.lock().unwrap();
        (s.proofs[0].clone(), s.settled[0])
    };
    assert_eq!(result["receipt"]["transaction"], sig.to_string());
    let envelope = decode_b64_json(&proof);
    assert_eq!(envelope["x402Version"], 2);
    assert_eq!(envelope["accepted"], offer, "the client echoes the offer");
    let tx = tx_of_header(&proof);
    assert_exact_layout(&tx, &chain, &offer, &payer.pubkey());
    assert_eq!(chain.token_balance(&pay_to, &chain.mint()), 10_000);
    assert_eq!(chain.token_balance(&payer.pubkey(), &chain.mint()), 990_000);
    assert_eq!(
        chain.sol_balance(&payer.pubkey()),
        0,
        "the payer paid no fee"
    );
    // What it read from the chain: the mint and a blockhash (plus the paywall's own calls).
    assert!(chain.count("getAccountInfo") >= 1);
    assert!(chain.count("getLatestBlockhash") >= 1);

    // v1, Token-2022.
    let result = npm_pay(&format!("{base}/v1"), &payer, &chain.rpc_url()).await;
    assert_eq!(result["status"], 200, "{result}");
    assert_eq!(result["receipt"]["success"], true, "{result}");
    let proof = seen.lock().unwrap().proofs[1].clone();
    let envelope = decode_b64_json(&proof);
    assert_eq!(envelope["x402Version"], 1);
    assert_eq!(envelope["network"], "solana-devnet");
    let v1_as_v2 = chain.offer(20_000, &chain.mint_2022(), &pay_to);
    assert_exact_layout(&tx_of_header(&proof), &chain, &v1_as_v2, &payer.pubkey());
    assert_eq!(chain.token_balance(&pay_to, &chain.mint_2022()), 20_000);
}

/// The builder's knobs build what they say, and the chain shows why a facilitator must refuse
/// some of them: the fee payer as a Memo account or as the transfer authority lands happily once
/// the fee payer co-signs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_knobs_and_what_the_chain_makes_of_them() {
    let chain = SvmChain::start();
    let rpc = client(&chain);
    let fee_payer = chain.fee_payer();
    let payer = chain.new_payer(100_000);
    let pay_to = chain.new_recipient();
    let offer = chain.offer(1_000, &chain.mint(), &pay_to);
    let base = chain.payment(&offer, &payer.pubkey());
    let n_ixs = |p: &SvmPayment| p.message().instructions().len();
    assert_eq!(n_ixs(&base), 4);

    // The fee a validator would charge: 2 signatures and 20,000 CU at 1 µlamport.
    let solana_message::VersionedMessage::V0(v0) = base.message() else {
        panic!("v0 by default")
    };
    let fee = rpc.get_fee_for_message(&v0).await.unwrap();
    assert_eq!(fee, 10_001);

    let legacy = SvmPayment {
        legacy: true,
        ..base.clone()
    };
    assert!(matches!(
        legacy.message(),
        solana_message::VersionedMessage::Legacy(_)
    ));
    let no_limit = SvmPayment {
        compute_unit_limit: None,
        ..base.clone()
    };
    assert_eq!(n_ixs(&no_limit), 3);
    let pricey = SvmPayment {
        compute_unit_price: Some(MAX_COMPUTE_UNIT_PRICE + 1),
        ..base.clone()
    };
    assert_eq!(
        pricey.message().instructions()[1].data,
        set_compute_unit_price(5_000_001).data
    );
    let extra = base.clone().with_extra(memo_instruction(b"second", &[]));
    assert_eq!(n_ixs(&extra), 5);
    let no_memo = SvmPayment {
        memo: None,
        ..base.clone()
    };
    assert_eq!(n_ixs(&no_memo), 3);
    let wrong = SvmPayment {
        amount: 999,
        decimals: 9,
        ..base.clone()
    };
    let sim = rpc
        .simulate_transaction_with_config(
            &wrong.sign(&payer),
            RpcSimulateTransactionConfig {
                sig_verify: false,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .value;
    assert!(sim.err.is_some(), "wrong decimals fail on chain");
    // A memo the seller set is used verbatim.
    let mut with_memo = offer.clone();
    with_memo["extra"]["memo"] = "order-42".into();
    let p = chain.payment(&with_memo, &payer.pubkey());
    assert_eq!(p.memo.as_deref(), Some(&b"order-42"[..]));
    // Two payments of the same offer differ (the random memo).
    assert_ne!(
        chain.payment(&offer, &payer.pubkey()).sign(&payer).message,
        base.sign(&payer).message
    );

    // The fee payer in the Memo's accounts: lands once co-signed (a Memo that checks a signer
    // needs more than the client's 20,000 CU).
    let sneaky = SvmPayment {
        compute_unit_limit: Some(200_000),
        ..base.clone().fee_payer_in_memo()
    };
    let mut tx = sneaky.sign(&payer);
    let memo_ix = &tx.message.instructions()[3];
    assert_eq!(
        tx.message.static_account_keys()[memo_ix.accounts[0] as usize],
        chain.fee_payer_pubkey()
    );
    cosign(&mut tx, &fee_payer);
    let slot = chain.slot();
    rpc.send_and_confirm_transaction(&tx).await.unwrap();
    assert!(chain.slot() > slot, "a landed transaction moves the slot");

    // The fee payer as transfer authority: it moves the fee payer's own tokens.
    chain.mint_to(&chain.fee_payer_pubkey(), &chain.mint(), 5_000);
    let drain = base.clone().fee_payer_as_authority();
    let mut tx = drain.sign(&payer);
    assert!(
        !signed_by(&tx, &payer.pubkey()),
        "the payer is no signer now"
    );
    assert_eq!(tx.message.header().num_required_signatures, 1);
    cosign(&mut tx, &fee_payer);
    rpc.send_and_confirm_transaction(&tx).await.unwrap();
    assert_eq!(
        chain.token_balance(&chain.fee_payer_pubkey(), &chain.mint()),
        4_000
    );
    assert_eq!(chain.token_balance(&pay_to, &chain.mint()), 2_000);
}
