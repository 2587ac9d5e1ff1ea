//! The two secp256k1 operations on every paid EVM request, with each library alloy can use, in
//! one run: recovering the payer from an EIP-3009 authorization's signature (`verify.rs`) and
//! signing the settlement transaction (`mod.rs`). The gateway uses libsecp256k1 (C, the
//! `secp256k1` crate, through alloy's `secp256k1` feature); k256 (pure Rust) is the baseline it
//! replaced. Prints time per operation and the ratio; checks on the way that both libraries sign
//! the same bytes and recover the same address, so the figure compares equal work.
//!
//! ```text
//! cargo bench --bench signatures
//! X402_BENCH_ITERATIONS=20000 cargo bench --bench signatures
//! ```

use std::hint::black_box;
use std::time::Instant;

use alloy::primitives::{Address, B256};
use alloy::signers::local::{PrivateKeySigner, Secp256k1Signer};
use alloy::signers::SignerSync;

fn main() {
    let n: usize = std::env::var("X402_BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let k256 = PrivateKeySigner::random();
    let secp: Secp256k1Signer = k256.clone().into();
    // Distinct digests, as distinct payments are.
    let digests: Vec<B256> = (0..n as u64)
        .map(|i| alloy::primitives::keccak256(i.to_be_bytes()))
        .collect();
    let signatures: Vec<_> = digests
        .iter()
        .map(|d| {
            let a = k256.sign_hash_sync(d).unwrap();
            let b = secp.sign_hash_sync(d).unwrap();
            assert_eq!(a, b, "both libraries sign RFC 6979 deterministically");
            a
        })
        .collect();

    let time = |f: &dyn Fn(usize)| {
        // One pass to warm caches and tables, one measured.
        (0..n.min(200)).for_each(f);
        let t = Instant::now();
        (0..n).for_each(f);
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    };
    let recover_k256 = time(&|i| {
        let vk = signatures[i].recover_from_prehash(&digests[i]).unwrap();
        assert_eq!(black_box(Address::from_public_key(&vk)), k256.address());
    });
    // With the `secp256k1` feature on, this is the call `verify.rs` makes.
    let recover_secp = time(&|i| {
        let a = signatures[i].recover_address_from_prehash(&digests[i]);
        assert_eq!(black_box(a.unwrap()), k256.address());
    });
    let sign_k256 = time(&|i| {
        black_box(k256.sign_hash_sync(&digests[i]).unwrap());
    });
    let sign_secp = time(&|i| {
        black_box(secp.sign_hash_sync(&digests[i]).unwrap());
    });
    println!("secp256k1 per operation, {n} iterations each (one run, this machine):");
    println!(
        "  recover the payer (EIP-712):  k256 {recover_k256:6.1} us   libsecp256k1 {recover_secp:6.1} us   {:.2}x faster",
        recover_k256 / recover_secp
    );
    println!(
        "  sign a settlement:            k256 {sign_k256:6.1} us   libsecp256k1 {sign_secp:6.1} us   {:.2}x faster",
        sign_k256 / sign_secp
    );
    println!(
        "  both, per paid request:       k256 {:6.1} us   libsecp256k1 {:6.1} us",
        recover_k256 + sign_k256,
        recover_secp + sign_secp
    );
}
