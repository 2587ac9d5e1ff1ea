//! The x402 `exact` payment on Solana as a client builds it (x402-protocol.md section 5): a v0
//! transaction, fee payer = the offer's `extra.feePayer` (its signature slot left empty),
//! SetComputeUnitLimit, SetComputeUnitPrice, TransferChecked from the payer's ATA to the ATA of
//! (`payTo`, mint, token program) with the payer as authority, and a Memo of 16 random bytes in
//! hex; signed by the payer only. Every part is a public field, so tests can build invalid ones.

#![allow(dead_code)]

use base64::Engine;
use serde_json::{json, Value};
use solana_hash::Hash;
use solana_keypair::Keypair;
use solana_message::{AccountMeta, Instruction, VersionedMessage};
use solana_pubkey::Pubkey;
use solana_signature::Signature;
use solana_signer::Signer;
use solana_transaction::versioned::VersionedTransaction;

use super::svm::{ata, token_ix, COMPUTE_BUDGET_PROGRAM, MEMO_PROGRAM, TOKEN_PROGRAM};

#[allow(unused_imports)]
pub use super::chain::{decode_b64_json, v1_header, v2_header};

/// What the TS client uses.
pub const COMPUTE_UNIT_LIMIT: u32 = 20_000;
pub const COMPUTE_UNIT_PRICE: u64 = 1;
/// The highest price a facilitator accepts, in microlamports per compute unit.
pub const MAX_COMPUTE_UNIT_PRICE: u64 = 5_000_000;

#[derive(Debug, Clone)]
pub struct SvmPayment {
    /// The transaction's fee payer (account 0): the offer's `extra.feePayer`.
    pub fee_payer: Pubkey,
    /// The token authority, who signs.
    pub payer: Pubkey,
    pub mint: Pubkey,
    pub pay_to: Pubkey,
    pub amount: u64,
    pub decimals: u8,
    pub token_program: Pubkey,
    pub blockhash: Hash,
    /// A legacy message instead of v0.
    pub legacy: bool,
    /// None leaves the instruction out.
    pub compute_unit_limit: Option<u32>,
    /// None leaves the instruction out.
    pub compute_unit_price: Option<u64>,
    /// The TransferChecked's authority; default `payer`.
    pub authority: Option<Pubkey>,
    /// The TransferChecked's source; default ATA(authority, mint, program).
    pub source: Option<Pubkey>,
    /// The TransferChecked's destination; default ATA(pay_to, mint, program).
    pub destination: Option<Pubkey>,
    /// The memo's bytes; None leaves the Memo out. Default: 16 random bytes as 32 hex chars.
    pub memo: Option<Vec<u8>>,
    /// Accounts listed (as signers, as the Memo program requires) on the Memo instruction.
    pub memo_signers: Vec<Pubkey>,
    /// Appended after the Memo.
    pub extra_instructions: Vec<Instruction>,
}

impl SvmPayment {
    /// The payment an SDK client builds for `offer` (an `accepts[]` entry).
    pub fn for_offer(
        offer: &Value,
        payer: &Pubkey,
        blockhash: Hash,
        token_program: Pubkey,
        decimals: u8,
    ) -> SvmPayment {
        let key = |v: &Value| -> Pubkey { v.as_str().unwrap().parse().unwrap() };
        let memo = match offer["extra"]["memo"].as_str() {
            Some(m) => m.as_bytes().to_vec(),
            None => random_memo(),
        };
        SvmPayment {
            fee_payer: key(&offer["extra"]["feePayer"]),
            payer: *payer,
            mint: key(&offer["asset"]),
            pay_to: key(&offer["payTo"]),
            amount: offer["amount"].as_str().unwrap().parse().unwrap(),
            decimals,
            token_program,
            blockhash,
            legacy: false,
            compute_unit_limit: Some(COMPUTE_UNIT_LIMIT),
            compute_unit_price: Some(COMPUTE_UNIT_PRICE),
            authority: None,
            source: None,
            destination: None,
            memo: Some(memo),
            memo_signers: vec![],
            extra_instructions: vec![],
        }
    }

    /// The fee payer moves the tokens: authority and source are the fee payer's.
    pub fn fee_payer_as_authority(mut self) -> Self {
        self.authority = Some(self.fee_payer);
        self
    }

    /// The fee payer's key in the Memo instruction's accounts (the Memo program accepts it: the
    /// fee payer signs the transaction anyway).
    pub fn fee_payer_in_memo(mut self) -> Self {
        self.memo_signers = vec![self.fee_payer];
        self
    }

    pub fn with_extra(mut self, ix: Instruction) -> Self {
        self.extra_instructions.push(ix);
        self
    }

    pub fn instructions(&self) -> Vec<Instruction> {
        let mut ixs = Vec::new();
        if let Some(units) = self.compute_unit_limit {
            ixs.push(set_compute_unit_limit(units));
        }
        if let Some(price) = self.compute_unit_price {
            ixs.push(set_compute_unit_price(price));
        }
        let authority = self.authority.unwrap_or(self.payer);
        let source = self
            .source
            .unwrap_or_else(|| ata(&authority, &self.mint, &self.token_program));
        let destination = self
            .destination
            .unwrap_or_else(|| ata(&self.pay_to, &self.mint, &self.token_program));
        ixs.push(transfer_checked(
            &self.token_program,
            &source,
            &self.mint,
            &destination,
            &authority,
            self.amount,
            self.decimals,
        ));
        if let Some(memo) = &self.memo {
            ixs.push(memo_instruction(memo, &self.memo_signers));
        }
        ixs.extend(self.extra_instructions.iter().cloned());
        ixs
    }

    pub fn message(&self) -> VersionedMessage {
        let ixs = self.instructions();
        if self.legacy {
            VersionedMessage::Legacy(solana_message::Message::new_with_blockhash(
                &ixs,
                Some(&self.fee_payer),
                &self.blockhash,
            ))
        } else {
            VersionedMessage::V0(
                solana_message::v0::Message::try_compile(
                    &self.fee_payer,
                    &ixs,
                    &[],
                    self.blockhash,
                )
                .unwrap(),
            )
        }
    }

    /// The transaction signed by `signer` (normally the payer) only, if it is a required signer;
    /// other slots left default.
    pub fn sign(&self, signer: &Keypair) -> VersionedTransaction {
        partial_sign(self.message(), &[signer])
    }

    /// base64 of the wire bytes, as `payload.transaction` carries them.
    pub fn base64(&self, signer: &Keypair) -> String {
        encode_tx(&self.sign(signer))
    }

    /// `{"transaction": "<base64>"}`.
    pub fn payload(&self, signer: &Keypair) -> Value {
        json!({"transaction": self.base64(signer)})
    }

    /// The v2 `PAYMENT-SIGNATURE` header paying `offer` with this payment signed by `signer`.
    pub fn header(&self, offer: &Value, signer: &Keypair) -> String {
        v2_header(offer, self.payload(signer))
    }
}

/// 16 random bytes as 32 hex characters, as the TS client's memo nonce.
pub fn random_memo() -> Vec<u8> {
    let b = super::chain::unique_b256("memo");
    b[..16]
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect::<String>()
        .into_bytes()
}

pub fn set_compute_unit_limit(units: u32) -> Instruction {
    let mut data = vec![2u8];
    data.extend_from_slice(&units.to_le_bytes());
    Instruction::new_with_bytes(COMPUTE_BUDGET_PROGRAM, &data, vec![])
}

pub fn set_compute_unit_price(micro_lamports: u64) -> Instruction {
    let mut data = vec![3u8];
    data.extend_from_slice(&micro_lamports.to_le_bytes());
    Instruction::new_with_bytes(COMPUTE_BUDGET_PROGRAM, &data, vec![])
}

/// TransferChecked under `program` (SPL Token or Token-2022).
pub fn transfer_checked(
    program: &Pubkey,
    source: &Pubkey,
    mint: &Pubkey,
    destination: &Pubkey,
    authority: &Pubkey,
    amount: u64,
    decimals: u8,
) -> Instruction {
    token_ix(
        spl_token_interface::instruction::transfer_checked(
            &TOKEN_PROGRAM,
            source,
            mint,
            destination,
            authority,
            &[],
            amount,
            decimals,
        ),
        program,
    )
}

/// A Memo (program MemoSq4g…) of `data`, with `signers` as its (signer) accounts.
pub fn memo_instruction(data: &[u8], signers: &[Pubkey]) -> Instruction {
    let accounts = signers
        .iter()
        .map(|k| AccountMeta::new_readonly(*k, true))
        .collect();
    Instruction::new_with_bytes(MEMO_PROGRAM, data, accounts)
}

/// A transaction of `message` signed by those of `signers` it requires (others are skipped): the
/// other signature slots stay default (all zeros), as a client's partially signed transaction has
/// them.
pub fn partial_sign(message: VersionedMessage, signers: &[&Keypair]) -> VersionedTransaction {
    let n = message.header().num_required_signatures as usize;
    let required = message.static_account_keys()[..n].to_vec();
    let mut tx = VersionedTransaction {
        signatures: vec![Signature::default(); n],
        message,
    };
    for s in signers.iter().filter(|s| required.contains(&s.pubkey())) {
        sign_slot(&mut tx, s);
    }
    tx
}

/// Adds `signer`'s signature in its slot (panics if it is not a required signer).
pub fn sign_slot(tx: &mut VersionedTransaction, signer: &Keypair) {
    let n = tx.message.header().num_required_signatures as usize;
    let keys = tx.message.static_account_keys();
    let i = keys[..n]
        .iter()
        .position(|k| *k == signer.pubkey())
        .unwrap_or_else(|| panic!("{} is not a signer of this transaction", signer.pubkey()));
    tx.signatures[i] = signer.sign_message(&tx.message.serialize());
}

/// What a facilitator does before sending: adds the fee payer's signature.
pub fn cosign(tx: &mut VersionedTransaction, fee_payer: &Keypair) {
    sign_slot(tx, fee_payer);
}

/// Whether `signer`'s slot holds its valid signature.
pub fn signed_by(tx: &VersionedTransaction, signer: &Pubkey) -> bool {
    let keys = tx.message.static_account_keys();
    let n = tx.message.header().num_required_signatures as usize;
    let Some(i) = keys[..n].iter().position(|k| k == signer) else {
        return false;
    };
    tx.signatures[i].verify(signer.as_ref(), &tx.message.serialize())
}

pub fn encode_tx(tx: &VersionedTransaction) -> String {
    base64::engine::general_purpose::STANDARD.encode(bincode::serialize(tx).unwrap())
}

pub fn decode_tx(b64: &str) -> VersionedTransaction {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    bincode::deserialize(&bytes).unwrap()
}

/// The transaction in a v2 `PAYMENT-SIGNATURE` header (or v1 `X-PAYMENT`).
pub fn tx_of_header(header: &str) -> VersionedTransaction {
    let proof = decode_b64_json(header);
    decode_tx(proof["payload"]["transaction"].as_str().unwrap())
}
