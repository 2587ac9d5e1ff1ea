//! Batched settlement: several EIP-3009 authorizations in one transaction, through Multicall3's
//! `aggregate3` with `allowFailure` on every call, so one authorization that fails (cancelled,
//! spent, its payer's balance gone) never fails the others.
//!
//! Multicall3 sits at one address on nearly every EVM chain (deployed from one account at its
//! first nonce, so the address is the same everywhere), with the same code. The gateway trusts
//! what it finds there only when the code is Multicall3's, by its hash: a simulation grouped
//! through it passes a payment on the contract's word, so other code at that address could pass
//! a payment that would fail, and an origin would serve it unpaid. That is not hypothetical: the
//! deployer account's key is compromised, and other code was deployed at that address on one
//! chain (Ancient8; see github.com/mds1/multicall's README), as it could be on any new chain. A
//! network without Multicall3's code there simulates and settles each payment on its own. Which
//! payments landed is read from the receipt, per payment: the token's own
//! `AuthorizationUsed(from, nonce)` log, and its `Transfer` of exactly the signed amount. The
//! `Transfer` alone cannot tell apart two equal payments of one payer in one batch.

use super::*;

use alloy::primitives::{address, b256, keccak256};
use alloy::rpc::types::TransactionReceipt;

/// Multicall3, at its address on (nearly) every EVM chain.
pub const MULTICALL3: Address = address!("cA11bde05977b3631167028862bE2a173976CA11");

/// keccak256 of Multicall3's runtime code, as its pre-signed deployment transaction
/// (`contracts/multicall3-deploy.tx`, from github.com/mds1/multicall) places it: the code on
/// Ethereum, Base, Optimism, Arbitrum One, Polygon and Avalanche, among others.
pub const MULTICALL3_CODE_HASH: B256 =
    b256!("d5c15df687b16f2ff992fc8d767b4216323184a2bbc6ee2f9c398c318e770891");

/// keccak256 of that code without the metadata solc appends to it (a CBOR map whose length is
/// the code's last two bytes). Surveys of deployed code report another hash at this address on
/// several chains (Linea, Mantle, OP Sepolia among them), as the same code built with other
/// metadata; not checked here. Code that is Multicall3's up to its metadata is trusted, because
/// whatever follows cannot run: the code ends with INVALID on an instruction boundary, every
/// jump goes to a constant inside it, and it never reads its own code (no CODESIZE, CODECOPY,
/// EXTCODE*, PC: the unit test below sweeps for them).
pub const MULTICALL3_EXECUTABLE_HASH: B256 =
    b256!("51abac3e901750a3f73ad94b55bcf66bd323f31f8042408dfd36356373496e53");

/// What a network has at Multicall3's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchContract {
    /// No code: payments are simulated and settled one by one.
    Missing,
    /// Multicall3's code: simulations are grouped, settlements batched.
    Multicall3,
    /// Other code (its hash): not trusted, so as `Missing`.
    Other(B256),
}

impl BatchContract {
    /// Judges the code found at Multicall3's address: Multicall3's when it is Multicall3's code
    /// with whatever metadata after it (its own metadata included).
    pub fn of(code: &[u8]) -> BatchContract {
        if code.is_empty() {
            return BatchContract::Missing;
        }
        if keccak256(executable(code)) == MULTICALL3_EXECUTABLE_HASH {
            return BatchContract::Multicall3;
        }
        BatchContract::Other(keccak256(code))
    }
}

/// `code` without the metadata solc appends, as its last two bytes give its length (`code` as
/// it is when they cannot).
fn executable(code: &[u8]) -> &[u8] {
    let [.., hi, lo] = code else { return code };
    let metadata = u16::from_be_bytes([*hi, *lo]) as usize + 2;
    code.len()
        .checked_sub(metadata)
        .map_or(code, |n| &code[..n])
}

/// Gas for the batch transaction's own work (base cost, the loop, the result array).
const BATCH_BASE_GAS: u64 = 60_000;
/// Gas per payment in a batch: `transferWithAuthorization` costs about 60k inside a batch (no
/// base cost; a fresh payer and nonce slot), an ERC-1271 wallet's check more. Only gas used is
/// paid; a limit too low would fail the last payments of a batch (they then fail, uncharged).
const MEMBER_GAS: u64 = 150_000;

/// The gas limit of one `aggregate3` call carrying `members` payments: a batch settlement's,
/// and a group of simulations' (`simulate.rs`).
pub(super) fn batch_gas(members: usize) -> u64 {
    BATCH_BASE_GAS + MEMBER_GAS * members as u64
}

sol! {
    interface IMulticall3 {
        struct Call3 {
            address target;
            bool allowFailure;
            bytes callData;
        }
        struct Call3Result {
            bool success;
            bytes returnData;
        }
        function aggregate3(Call3[] calldata calls) external payable returns (Call3Result[] memory returnData);
    }

    interface IAuthorizationEvents {
        event AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce);
    }
}

impl EvmBackend {
    /// How many payments one transaction carries: `batch_max` once Multicall3's code is found at
    /// its address, else 1.
    pub(super) async fn batch_capacity_now(&self) -> usize {
        if self.batch_max <= 1 || !self.has_multicall3().await {
            return 1;
        }
        self.batch_max
    }

    /// Whether Multicall3's code is at its address: asked once (by the health probe's first
    /// round, or the first settlement that could batch), and again next time while the node has
    /// not answered. Settlement batches (`batch_max` above 1) and grouped simulations
    /// (`simulate.rs`) need it.
    pub(super) async fn has_multicall3(&self) -> bool {
        let found = self
            .batch_contract
            .get_or_try_init(|| async {
                let code = self.background.get_code_at(MULTICALL3).await?;
                let found = BatchContract::of(&code);
                // A fact about the network, found by the health probe's first round (or a
                // settlement before it): logged as the probe's, never as a request's work.
                match found {
                    BatchContract::Multicall3 => tracing::info!(target: "x402_gate::health", network = %self.network, batch_max = self.batch_max, "Multicall3 found: concurrent simulations are made together, and concurrent payments settled in batches where batch_max allows"),
                    BatchContract::Missing => tracing::info!(target: "x402_gate::health", network = %self.network, "no Multicall3 on this network: every payment is simulated and settled on its own"),
                    BatchContract::Other(hash) => tracing::warn!(target: "x402_gate::health", network = %self.network, address = %MULTICALL3, code_hash = %hash, expected = %MULTICALL3_CODE_HASH, "the code at Multicall3's address is not Multicall3's, so it is not trusted: every payment is simulated and settled on its own"),
                }
                Ok::<_, RpcError<TransportErrorKind>>(found == BatchContract::Multicall3)
            })
            .await;
        matches!(found, Ok(true))
    }

    /// Whether Multicall3 is known to be there, without asking: a verification does not wait
    /// for the lookup (the health probe makes it at start), and simulates alone until it is.
    pub(super) fn multicall3_known(&self) -> bool {
        self.batch_contract.get() == Some(&true)
    }

    /// Signs one `aggregate3` transaction settling every member, taking one settler nonce.
    pub(super) async fn prepare_batch_tx(
        &self,
        members: &[Verified],
    ) -> Result<PreparedSettlement, SettleError> {
        // Every caller asks `batch_capacity` first; this holds should one ever not. Nothing is
        // signed: a request's payments are then settled each alone, a deferred batch later.
        if !self.has_multicall3().await {
            return Err(SettleError::Unavailable(format!(
                "no batch: no Multicall3 (by its code hash) at {MULTICALL3}"
            )));
        }
        let auths = authorizations(members).map_err(|message| SettleError::Failed {
            reason: Reason::InvalidExactEvmPayload,
            message,
            transaction: None,
        })?;
        let calls = auths
            .iter()
            .map(|a| IMulticall3::Call3 {
                target: a.asset,
                allowFailure: true,
                callData: a.calldata(),
            })
            .collect();
        let input = IMulticall3::aggregate3Call { calls }.abi_encode();
        self.sign_settlement(MULTICALL3, input.into(), batch_gas(auths.len()))
            .await
    }

    /// Sends a prepared batch and reads each member's outcome from its receipt.
    pub(super) async fn submit_batch_tx(
        &self,
        members: &[Verified],
        prepared: &PreparedSettlement,
        attempt: Attempt,
    ) -> Result<Vec<Result<Settlement, SettleError>>, SettleError> {
        // `prepare_batch` read these payloads; should one fail now, the signed transaction may be
        // in flight all the same, so the claims are kept.
        let auths = authorizations(members).map_err(|message| SettleError::Pending {
            transaction: prepared.transaction.clone(),
            message,
        })?;
        let (receipt, started) = self.land(prepared, attempt).await?;
        if !receipt.status() {
            // Reverted as a whole (out of gas, say): nothing moved, every authorization is still
            // unused, so the whole transaction's failure is returned and each member is settled
            // alone (see `payments/batch.rs`), not failed.
            return Err(SettleError::Failed {
                reason: Reason::InvalidExactEvmTransactionFailed,
                message: "the batch settlement transaction reverted".into(),
                transaction: Some(receipt.transaction_hash.to_string()),
            });
        }
        let outcomes = self.judge_batch(&auths, &receipt);
        if outcomes.iter().any(Result::is_ok) {
            let block = receipt.block_number.unwrap_or_default();
            self.confirmed(receipt.transaction_hash, block, started)
                .await?;
        }
        Ok(outcomes)
    }

    /// Each member's outcome in a mined batch that did not revert as a whole.
    fn judge_batch(
        &self,
        auths: &[EvmAuthorization],
        receipt: &TransactionReceipt,
    ) -> Vec<Result<Settlement, SettleError>> {
        let tx = receipt.transaction_hash.to_string();
        let failed = |message: &str| SettleError::Failed {
            reason: Reason::InvalidExactEvmTransactionFailed,
            message: message.into(),
            transaction: Some(tx.clone()),
        };
        auths
            .iter()
            .map(|auth| {
                if !landed(receipt, auth.asset, auth.from, auth.nonce, |t| {
                    t.to == auth.to && t.value == auth.value
                }) {
                    return Err(failed(
                        "the payment's authorization failed inside the batch settlement",
                    ));
                }
                Ok(Settlement {
                    transaction: tx.clone(),
                    block_number: receipt.block_number.unwrap_or_default(),
                    network: self.network.clone(),
                    payer: auth.from.to_checksum(None),
                })
            })
            .collect()
    }
}

/// Whether `receipt` used the authorization `(from, nonce)` of `asset` and moved a `Transfer` from
/// `from` that `transfer` accepts: this payment landed, whatever else the transaction did.
pub(super) fn landed(
    receipt: &TransactionReceipt,
    asset: Address,
    from: Address,
    nonce: B256,
    transfer: impl Fn(&IEip3009::Transfer) -> bool,
) -> bool {
    let logs = receipt.inner.logs();
    let used = logs.iter().any(|log| {
        log.address() == asset
            && IAuthorizationEvents::AuthorizationUsed::decode_log_data(log.data())
                .is_ok_and(|e| e.authorizer == from && e.nonce == nonce)
    });
    used && logs.iter().any(|log| {
        log.address() == asset
            && IEip3009::Transfer::decode_log_data(log.data())
                .is_ok_and(|t| t.from == from && transfer(&t))
    })
}

/// The members' authorizations, or why one cannot be read.
fn authorizations(members: &[Verified]) -> Result<Vec<EvmAuthorization>, String> {
    members
        .iter()
        .map(|v| EvmAuthorization::from_payload(&v.scheme_payload).map_err(|e| e.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::consensus::transaction::SignerRecoverable;
    use alloy::consensus::TxEnvelope;
    use alloy::eips::eip2718::Decodable2718;

    /// The hash is of the code Multicall3's pre-signed deployment places at its address: the
    /// transaction is its deployer's first, and its init code's first 32 bytes return the rest
    /// (`CODECOPY(0, 0x20, 0xee0)`, `RETURN(0, 0xee0)`), so the rest is the runtime code.
    /// tests/batch.rs sends the same transaction to anvil and reads the code back.
    #[test]
    fn the_code_hash_is_multicall3s_deployed_code() {
        let raw = include_str!("../../../contracts/multicall3-deploy.tx").trim();
        let raw = alloy::hex::decode(raw).unwrap();
        let tx = TxEnvelope::decode_2718(&mut raw.as_slice()).unwrap();
        let deployer = tx.recover_signer().unwrap();
        assert_eq!(
            deployer,
            address!("05f32B3cC3888453ff71B01135B34FF8e41263F2")
        );
        assert_eq!(alloy::consensus::Transaction::nonce(&tx), 0);
        assert_eq!(deployer.create(0), MULTICALL3);
        let init = alloy::consensus::Transaction::input(&tx);
        // PUSH2 0x0ee0, DUP1, PUSH2 0x0020, PUSH1 0, CODECOPY, PUSH1 0, RETURN
        let copy_out = [
            0x61, 0x0e, 0xe0, 0x80, 0x61, 0x00, 0x20, 0x60, 0x00, 0x39, 0x60, 0x00, 0xf3,
        ];
        assert_eq!(&init[18..31], &copy_out);
        assert_eq!(init.len(), 0x20 + 0xee0);
        let runtime = &init[0x20..];
        assert_eq!(keccak256(runtime), MULTICALL3_CODE_HASH);
        assert_eq!(BatchContract::of(runtime), BatchContract::Multicall3);
        assert_eq!(BatchContract::of(&[]), BatchContract::Missing);

        // The metadata is the last 0x33 bytes and their length: a CBOR map naming the source's
        // IPFS hash and solc 0.8.12, after the code's last instruction (INVALID).
        let metadata = runtime.len() - 0x33 - 2;
        assert_eq!(
            &runtime[metadata - 1..metadata + 8],
            b"\xfe\xa2\x64ipfsX\x22"
        );
        assert_eq!(keccak256(executable(runtime)), MULTICALL3_EXECUTABLE_HASH);
        // The trusted part ends with INVALID on an instruction boundary and never reads its
        // own code, so nothing after it can run (see `MULTICALL3_EXECUTABLE_HASH`).
        let code = executable(runtime);
        let mut at = 0;
        let mut last = 0;
        while at < code.len() {
            let op = code[at];
            assert!(
                ![0x38, 0x39, 0x3b, 0x3c, 0x3f, 0x58].contains(&op),
                "opcode {op:#x} at {at} reads the contract's own code"
            );
            last = at;
            // PUSH1..PUSH32 carry 1..32 bytes.
            at += 1 + if (0x60..=0x7f).contains(&op) {
                (op - 0x5f) as usize
            } else {
                0
            };
        }
        assert_eq!(
            at,
            code.len(),
            "the last instruction's data runs past the code"
        );
        assert_eq!(code[last], 0xfe);
        // Other metadata (another IPFS hash: the digest's first byte) is still Multicall3.
        let mut rebuilt = runtime.to_vec();
        rebuilt[metadata + 12] ^= 1;
        assert_eq!(BatchContract::of(&rebuilt), BatchContract::Multicall3);
        // So is a longer metadata section after the same code.
        let mut longer = executable(runtime).to_vec();
        longer.extend_from_slice(&[0xa1, 0x61, 0x78, 0x43, 1, 2, 3, 0x00, 0x07]);
        assert_eq!(BatchContract::of(&longer), BatchContract::Multicall3);
        // One byte of the code that runs different is other code, whatever its metadata.
        let mut other = runtime.to_vec();
        other[100] ^= 1;
        assert_eq!(
            BatchContract::of(&other),
            BatchContract::Other(keccak256(&other))
        );
        // As is the code without its metadata's length, or too short to hold one.
        let cut = &runtime[..runtime.len() - 2];
        assert_eq!(BatchContract::of(cut), BatchContract::Other(keccak256(cut)));
        assert_eq!(
            BatchContract::of(&[0x00]),
            BatchContract::Other(keccak256([0x00]))
        );
        assert_eq!(
            BatchContract::of(&[0xff, 0xff]),
            BatchContract::Other(keccak256([0xff, 0xff]))
        );
    }
}
