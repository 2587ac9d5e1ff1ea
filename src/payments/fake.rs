//! A scripted chain backend for unit tests of the payment pipeline. A FAKE, for tests of the
//! core's own logic only (which step runs, what is claimed, released, counted, recorded): every
//! real chain behaviour is tested against anvil in `tests/`.
//!
//! A proof's payload carries `{"nonce": N}`; `verify` turns it into a payment of 10000 atomic
//! units from one payer with that nonce, unless a verification error is scripted.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::payments::chain::*;
use crate::pricing::Offer;
use crate::x402::PaymentProof;

pub const PAYER: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
pub const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
pub const ASSET: &str = "0x036cbd53842c5426634e7929541ec2318f3dcf7e";
pub const AMOUNT: u128 = 10_000;

/// A 32-byte value with `n` as its last byte, as 0x hex (a nonce or a transaction hash).
fn hex32(n: u8) -> String {
    format!("0x{n:064x}")
}

#[derive(Default)]
pub struct FakeChain {
    /// The next verifications' errors, in order; none left means valid.
    pub verify_errors: Mutex<VecDeque<VerifyError>>,
    /// The next settlements' outcomes, in order; none left means landed.
    pub settle_outcomes: Mutex<VecDeque<Result<(), SettleError>>>,
    /// What `ready_to_settle` answers.
    pub not_ready: Mutex<Option<SettleError>>,
    /// The payer's balance; `None`: unknown.
    pub balance: Mutex<Option<u128>>,
    pub verifications: AtomicU64,
    pub balance_lookups: AtomicU64,
    pub prepared: AtomicU64,
    pub abandoned: AtomicU64,
}

impl FakeChain {
    pub fn verified(nonce: u8) -> Verified {
        Verified {
            key: PaymentKey {
                network: "eip155:84532".into(),
                asset: ASSET.into(),
                payer: PAYER.to_ascii_lowercase(),
                nonce: hex32(nonce),
            },
            payer: PAYER.into(),
            pay_to: PAY_TO.into(),
            amount: AMOUNT.to_string(),
            expires_at: 4_000_000_000,
            // Opaque to the core: nothing but this fake reads it.
            scheme_payload: SchemePayload {
                chain: "fake".into(),
                v: 1,
                data: serde_json::json!({ "nonce": nonce }),
            },
        }
    }
}

#[async_trait]
impl ChainBackend for FakeChain {
    async fn verify(&self, _offer: &Offer, proof: &PaymentProof) -> Result<Verified, VerifyError> {
        self.verifications.fetch_add(1, Ordering::SeqCst);
        if let Some(e) = self.verify_errors.lock().unwrap().pop_front() {
            return Err(e);
        }
        let payload = match proof {
            PaymentProof::V1(p) => &p.payload,
            PaymentProof::V2(p) => &p.payload,
        };
        Ok(Self::verified(payload["nonce"].as_u64().unwrap_or(0) as u8))
    }

    async fn balance_of(&self, _asset: &str, _owner: &str) -> Result<Option<u128>, VerifyError> {
        self.balance_lookups.fetch_add(1, Ordering::SeqCst);
        Ok(*self.balance.lock().unwrap())
    }

    async fn ready_to_settle(&self) -> Result<(), SettleError> {
        match self.not_ready.lock().unwrap().clone() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn prepare(&self, _verified: &Verified) -> Result<PreparedSettlement, SettleError> {
        let n = self.prepared.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(PreparedSettlement {
            transaction: hex32(n as u8),
            raw: "0x00".into(),
            settler: String::new(),
            nonce: Some(n),
            replaces: Vec::new(),
        })
    }

    async fn abandon(&self, _prepared: &PreparedSettlement) {
        self.abandoned.fetch_add(1, Ordering::SeqCst);
    }

    async fn submit(
        &self,
        verified: &Verified,
        prepared: &PreparedSettlement,
        _attempt: Attempt,
    ) -> Result<Settlement, SettleError> {
        let next = self.settle_outcomes.lock().unwrap().pop_front();
        next.unwrap_or(Ok(()))?;
        Ok(Settlement {
            transaction: prepared.transaction.clone(),
            block_number: 1,
            network: verified.key.network.clone(),
            payer: verified.payer.clone(),
        })
    }
}
