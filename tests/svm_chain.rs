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
