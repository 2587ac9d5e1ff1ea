//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the very bodies the
//! cargo-fuzz targets run (`fuzz/targets/`, included below), on stable, in the normal
//! `cargo test`: every input a fuzzer ever kept (the seeds, what it found interesting, and the
//! regression input of every crash it found) must still pass every property, so CI catches a
//! regression without a nightly toolchain or a fuzzing run. See README "Fuzzing".
//!
//! `cargo test --test fuzz_corpus -- --ignored write_seeds` (re)writes the seed inputs
//! (`seed-*`): real headers and payments built by the tests' own client helpers, the shipped
//! configs, real request paths.

mod common;

#[path = "../fuzz/targets/mod.rs"]
#[allow(dead_code)]
mod targets;

use std::path::{Path, PathBuf};
use std::time::Instant;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn replay(target: &str) {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        files.len() >= 5,
        "{}: the corpus is missing ({} files)",
        dir.display(),
        files.len()
    );
    let started = Instant::now();
    let mut failed = Vec::new();
    for file in &files {
        let data = std::fs::read(file).unwrap();
        if std::panic::catch_unwind(|| targets::run(target, &data)).is_err() {
            failed.push(file.display().to_string());
        }
    }
    eprintln!(
        "{target}: {} inputs replayed in {:?}",
        files.len(),
        started.elapsed()
    );
    assert!(failed.is_empty(), "{target} fails on: {failed:#?}");
}

#[test]
fn config_loader_corpus() {
    replay("config_loader");
}

#[test]
fn evm_payload_corpus() {
    replay("evm_payload");
}

#[test]
fn payment_header_corpus() {
    replay("payment_header");
}

#[test]
fn route_match_corpus() {
    replay("route_match");
}

#[test]
fn svm_transaction_corpus() {
    replay("svm_transaction");
}

#[test]
fn every_target_has_a_corpus_and_a_test() {
    for t in targets::TARGETS {
        assert!(corpus_dir(t).is_dir(), "no corpus for {t}");
    }
    assert_eq!(
        targets::TARGETS.len(),
        5,
        "add a replay test for the new target"
    );
}

/// The valid seeds are accepted, so the fuzzer starts from inputs that pass every check and
/// mutates its way into each refusal (a fixture change that broke them would leave it fuzzing
/// only the first one).
#[test]
fn valid_seeds_reach_the_accepting_paths() {
    use x402_gate::payments::{check_payment, PaymentCheck};
    use x402_gate::x402::{PaymentPayloadV1, PaymentProof};
    let seed = |target: &str, name: &str| std::fs::read(corpus_dir(target).join(name)).unwrap();

    for header in [
        "seed-v2-evm",
        "seed-v1-evm",
        "seed-v2-svm",
        "seed-v2-evm-urlsafe",
    ] {
        let data = seed("payment_header", header);
        let offers = targets::payment_header::offers();
        let checked = check_payment(offers, Some(("payment-signature", &data)), 8192);
        assert!(
            matches!(checked, PaymentCheck::Matched { .. }),
            "{header}: {checked:?}"
        );
    }
    for payload in [
        "seed-valid.json",
        "seed-erc2098.json",
        "seed-json-numbers.json",
    ] {
        let proof = PaymentProof::V1(PaymentPayloadV1 {
            x402_version: 1,
            scheme: "exact".into(),
            network: "base-sepolia".into(),
            payload: serde_json::from_slice(&seed("evm_payload", payload)).unwrap(),
        });
        let checked = targets::evm_payload::backend().check_locally(
            targets::evm_payload::offer(),
            &proof,
            targets::NOW,
        );
        assert!(checked.is_ok(), "{payload}: {checked:?}");
    }
    for tx in [
        "seed-v0-spl.bin",
        "seed-v0-token2022.bin",
        "seed-legacy-spl.bin",
    ] {
        let checked = x402_gate::payments::svm::verify::check(
            &seed("svm_transaction", tx),
            targets::svm_transaction::expected(),
        );
        assert!(checked.is_ok(), "{tx}: {checked:?}");
    }
    let routed = [
        (0u8, "/paid/x", "/paid/*"),
        (8, "/v1/forecast/paris", "api.example.com/v1/forecast/*"),
        (0, "/CI/Deep/Path", "/ci/*"),
        (0, "/x/y", "/*"),
    ];
    for (pick, path, label) in routed {
        let host = [None, Some("api.example.com")][usize::from(pick >> 3)];
        let route = targets::fixture_table().find(host, "GET", path).unwrap();
        assert_eq!(route.label, label);
    }
}

/// The seed inputs, built by the tests' own client helpers: run by hand, not in CI.
#[test]
#[ignore = "writes the seed corpus: run by hand"]
fn write_seeds() {
    seeds::write_all();
}

mod seeds {
    use std::path::Path;

    use alloy::primitives::{Address, B256, U256};
    use alloy::signers::local::PrivateKeySigner;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use base64::Engine;
    use serde_json::{json, Value};
    use solana_hash::Hash;
    use solana_keypair::Keypair;
    use solana_pubkey::Pubkey;
    use solana_signer::Signer;
    use x402_gate::payments::evm::EvmAuthorization;

    use super::common::chain::{v1_header, v2_header, Authorization};
    use super::common::svm::{TOKEN_2022_PROGRAM, TOKEN_PROGRAM};
    use super::common::svm_pay::{memo_instruction, SvmPayment, MAX_COMPUTE_UNIT_PRICE};
    use super::{corpus_dir, targets};

    fn write(target: &str, name: &str, data: impl AsRef<[u8]>) {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
    }

    pub fn write_all() {
        configs();
        paths();
        let (evm_offer, svm_offer) = offers();
        let evm = evm_payloads(&evm_offer);
        let svm = svm_payments(&svm_offer);
        headers(&evm_offer, &svm_offer, &evm, &svm);
    }

    /// The `accepts[]` entries of the fixture's `/paid/*` route, EVM then Solana.
    fn offers() -> (Value, Value) {
        let offers = targets::fixture_table()
            .find(None, "GET", "/paid/x")
            .unwrap()
            .offers
            .as_ref()
            .unwrap();
        let of = |network: &str| {
            let o = offers
                .offers
                .iter()
                .find(|o| o.network.to_string() == network)
                .unwrap();
            serde_json::to_value(&o.requirement).unwrap()
        };
        (of(targets::EVM_NETWORK), of(targets::SVM_NETWORK))
    }

    fn configs() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for entry in std::fs::read_dir(root.join("config")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                write("config_loader", &name, std::fs::read(&path).unwrap());
            }
        }
        write(
            "config_loader",
            "fixture.toml",
            targets::fixture_config_text(),
        );
        write("config_loader", "empty.toml", "");
        write(
            "config_loader",
            "env-refs.toml",
            "[admin]\ntoken = \"${X:-a}${Y:-}\"\n[server]\nlisten = \"${UNSET}\"\n",
        );
    }

    fn paths() {
        let paths: &[(u8, &str)] = &[
            (0, "/paid/x"),
            (0, "/paid"),
            (0, "/free/../paid/x?q=1"),
            (0, "/v1/%66orecast/x"),
            (8, "/v1/forecast/paris"),
            (9, "//v1//forecast/./x/"),
            (16, "/v1/forecast/%2e%2e/forecast/"),
            (8, "http://api.example.com/v1/forecast/x"),
            (0, "HTTPS://h/paid/x#frag"),
            (0, "/CI/Deep/Path"),
            (0, "/ci"),
            (0, "/report"),
            (0, "/report/"),
            (0, "/REPORT"),
            (0, "/a%20b/%3f/%7E"),
            (0, "/paid;x/data"),
            (0, "/paid%3B/data"),
            (0, "/v1%2fforecast"),
            (0, "/a%5cb"),
            (0, "/a%zz"),
            (0, "/a%4"),
            (0, "/.."),
            (0, "/a/b/../../.."),
            (0, "paid/x"),
            (0, "*"),
            (4, "/paid/x"),
            (3, "/paid/x"),
            (7, "/x/\u{e9}t\u{e9}/%C3%A9"),
            (24, "/v1/forecast"),
        ];
        for (i, (pick, path)) in paths.iter().enumerate() {
            let mut data = vec![*pick];
            data.extend_from_slice(path.as_bytes());
            write("route_match", &format!("{i:02}"), data);
        }
    }

    /// EIP-3009 payloads for the EVM offer, valid at `targets::NOW`, and broken ones.
    fn evm_payloads(offer: &Value) -> Value {
        let payer: PrivateKeySigner =
            "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
                .parse()
                .unwrap();
        let mut auth = Authorization::for_offer(offer, payer.address());
        auth.valid_after = targets::NOW - 600;
        auth.valid_before = targets::NOW + 300;
        auth.nonce = B256::repeat_byte(0x42);
        let sig = auth.sign(&payer);
        let valid = auth.payload(&sig);
        let t = "evm_payload";
        write(t, "valid.json", valid.to_string());
        // ERC-2098 compact form of the same signature.
        let mut compact = sig[..64].to_vec();
        // `sig` ends with v = 27 + yParity; ERC-2098 moves yParity into the top bit of s.
        if sig[64] == 28 {
            compact[32] |= 0x80;
        }
        let mut p = valid.clone();
        p["signature"] = json!(format!("0x{}", alloy::hex::encode(&compact)));
        write(t, "erc2098.json", p.to_string());
        let mut p = valid.clone();
        p["authorization"]["value"] = json!(10000);
        p["authorization"]["validAfter"] = json!(targets::NOW - 600);
        write(t, "json-numbers.json", p.to_string());
        let mut p = valid.clone();
        p["signature"] = json!(format!("0x{}", "ab".repeat(200)));
        write(t, "erc1271.json", p.to_string());
        let mut p = valid.clone();
        p["signature"] = json!(format!("0x{}{}", "ab".repeat(100), "6492".repeat(16)));
        write(t, "eip6492.json", p.to_string());
        let mut p = valid.clone();
        p["authorization"]["value"] =
            json!("115792089237316195423570985008687907853269984665640564039457584007913129639936");
        write(t, "value-overflow.json", p.to_string());
        let mut p = valid.clone();
        p["authorization"]["validBefore"] = json!(targets::NOW.to_string());
        write(t, "expired.json", p.to_string());
        let mut p = valid.clone();
        p["authorization"]["to"] = json!(format!("{:#x}", Address::repeat_byte(1)));
        write(t, "wrong-to.json", p.to_string());
        write(t, "empty.json", "{}");
        // Stored forms, both layouts.
        let stored = EvmAuthorization {
            chain_id: 84532,
            asset: targets::EVM_ASSET.parse().unwrap(),
            from: payer.address(),
            to: auth.to,
            value: U256::from(10_000),
            valid_after: U256::from(auth.valid_after),
            valid_before: U256::from(auth.valid_before),
            nonce: auth.nonce,
            signature: sig.clone().into(),
        }
        .to_payload();
        write(t, "stored-v1.json", serde_json::to_string(&stored).unwrap());
        let mut v0 = stored.clone();
        v0.v = 0;
        v0.data["value"] = json!("0x2710");
        v0.data["valid_after"] = json!(format!("{:#x}", auth.valid_after));
        v0.data["valid_before"] = json!(format!("{:#x}", auth.valid_before));
        write(t, "stored-v0.json", serde_json::to_string(&v0).unwrap());
        valid
    }

    /// Payments for the Solana offer (v0 and legacy, both token programs), and broken ones.
    fn svm_payments(offer: &Value) -> Value {
        let payer = Keypair::new_from_array([7; 32]);
        let blockhash = Hash::new_from_array([9; 32]);
        let pay = |program: Pubkey| {
            let mut p = SvmPayment::for_offer(offer, &payer.pubkey(), blockhash, program, 6);
            p.memo = Some(b"00112233445566778899aabbccddeeff".to_vec());
            p
        };
        let raw = |p: &SvmPayment| bincode::serialize(&p.sign(&payer)).unwrap();
        let t = "svm_transaction";
        let (spl, t22) = (TOKEN_PROGRAM, TOKEN_2022_PROGRAM);
        write(t, "v0-spl.bin", raw(&pay(spl)));
        write(t, "v0-token2022.bin", raw(&pay(t22)));
        let mut legacy = pay(spl);
        legacy.legacy = true;
        write(t, "legacy-spl.bin", raw(&legacy));
        let mut p = pay(spl);
        p.memo = None;
        write(t, "no-memo.bin", raw(&p));
        let mut p = pay(spl);
        p.compute_unit_price = Some(MAX_COMPUTE_UNIT_PRICE + 1);
        write(t, "price-too-high.bin", raw(&p));
        write(
            t,
            "fee-payer-authority.bin",
            raw(&pay(spl).fee_payer_as_authority()),
        );
        write(
            t,
            "fee-payer-in-memo.bin",
            raw(&pay(spl).fee_payer_in_memo()),
        );
        let mut p = pay(spl);
        p.amount += 1;
        write(t, "wrong-amount.bin", raw(&p));
        let mut p = pay(spl);
        p.extra_instructions
            .push(memo_instruction(b"second memo", &[]));
        write(t, "two-memos.bin", raw(&p));
        let mut trailing = raw(&pay(spl));
        trailing.push(0);
        write(t, "trailing-byte.bin", trailing);
        let payload = pay(spl).payload(&payer);
        write(t, "proof-payload.json", payload.to_string());
        let stored = json!({"chain": "svm", "v": 1, "data": {
            "transaction": payload["transaction"],
            "token_program": spl.to_string(),
        }});
        write(t, "stored-v1.json", stored.to_string());
        payload
    }

    fn headers(evm_offer: &Value, svm_offer: &Value, evm: &Value, svm: &Value) {
        let t = "payment_header";
        let v2 = v2_header(evm_offer, evm.clone());
        write(t, "v2-evm", &v2);
        write(t, "v1-evm", v1_header("base-sepolia", evm.clone()));
        write(t, "v2-svm", v2_header(svm_offer, svm.clone()));
        write(t, "v1-svm", v1_header("solana-devnet", svm.clone()));
        let json = STANDARD.decode(&v2).unwrap();
        write(t, "v2-evm-urlsafe", URL_SAFE_NO_PAD.encode(&json));
        write(t, "v2-evm-spaces", format!("  {v2}\t"));
        let mut lower = evm_offer.clone();
        lower["payTo"] = json!(lower["payTo"].as_str().unwrap().to_lowercase());
        write(t, "v2-evm-lowercase", v2_header(&lower, evm.clone()));
        let mut other = evm_offer.clone();
        other["amount"] = json!("1");
        write(t, "v2-evm-other-amount", v2_header(&other, evm.clone()));
        let mut upto = evm_offer.clone();
        upto["scheme"] = json!("upto");
        write(t, "v2-upto", v2_header(&upto, evm.clone()));
        let b64 = |v: Value| STANDARD.encode(v.to_string());
        write(t, "v3", b64(json!({"x402Version": 3})));
        write(t, "no-version", b64(json!({"scheme": "exact"})));
        write(
            t,
            "bad-shape",
            b64(json!({"x402Version": 2, "payload": {}})),
        );
        write(t, "float-version", b64(json!({"x402Version": 2.0})));
        write(t, "not-json", STANDARD.encode("{not json"));
        write(t, "not-base64", "%%% not base64 !!!");
        write(t, "too-large", "A".repeat(9000));
    }
}
