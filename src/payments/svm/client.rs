//! Builds an `exact` SVM payment as a paying client does (x402-protocol.md section 5): the
//! instructions, then a partially signed transaction with our fee payer as account 0. Used by
//! tests and benchmarks; it also documents exactly what the client signs.

use base64::Engine;
use solana_hash::Hash;
use solana_instruction::Instruction;
use solana_keypair::Keypair;
use solana_message::{v0, Message, VersionedMessage};
use solana_pubkey::Pubkey;
use solana_signature::Signature;
use solana_signer::Signer;
use solana_transaction::versioned::VersionedTransaction;
use spl_associated_token_account_interface::address::get_associated_token_address_with_program_id;

use super::verify::{COMPUTE_BUDGET_PROGRAM, MEMO_PROGRAM};

/// What a payment pays: the offer's fields, parsed.
#[derive(Debug, Clone)]
pub struct PaymentSpec {
    pub fee_payer: Pubkey,
    pub mint: Pubkey,
    pub pay_to: Pubkey,
    pub amount: u64,
    pub decimals: u8,
    pub token_program: Pubkey,
}

/// `SetComputeUnitLimit` (discriminator 2, u32 units).
pub fn compute_unit_limit(units: u32) -> Instruction {
    let mut data = vec![2];
    data.extend_from_slice(&units.to_le_bytes());
    Instruction::new_with_bytes(COMPUTE_BUDGET_PROGRAM, &data, vec![])
}

/// `SetComputeUnitPrice` (discriminator 3, u64 micro-lamports per unit).
pub fn compute_unit_price(micro_lamports: u64) -> Instruction {
    let mut data = vec![3];
    data.extend_from_slice(&micro_lamports.to_le_bytes());
    Instruction::new_with_bytes(COMPUTE_BUDGET_PROGRAM, &data, vec![])
}

/// A Memo holding 16 random bytes as hex, so two identical payments are distinct transactions.
pub fn random_memo() -> Instruction {
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).expect("the OS has randomness");
    let text: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    Instruction::new_with_bytes(MEMO_PROGRAM, text.as_bytes(), vec![])
}

/// The instructions of a payment from `payer`'s associated token account, as the TS client
/// builds them: 20,000 units at 1 micro-lamport, `TransferChecked`, a random memo.
pub fn payment_instructions(spec: &PaymentSpec, payer: &Pubkey) -> Vec<Instruction> {
    let source =
        get_associated_token_address_with_program_id(payer, &spec.mint, &spec.token_program);
    let destination =
        get_associated_token_address_with_program_id(&spec.pay_to, &spec.mint, &spec.token_program);
    // Token-2022's TransferChecked is SPL Token's, byte for byte; the interface crate builds
    // only SPL Token's, so the program is swapped in after.
    let mut transfer = spl_token_interface::instruction::transfer_checked(
        &spl_token_interface::ID,
        &source,
        &spec.mint,
        &destination,
        payer,
        &[],
        spec.amount,
        spec.decimals,
    )
    .expect("the SPL Token program id");
    transfer.program_id = spec.token_program;
    vec![
        compute_unit_limit(20_000),
        compute_unit_price(1),
        transfer,
        random_memo(),
    ]
}

/// Compiles `instructions` with `fee_payer` as account 0 (v0, or legacy) and signs with every
/// `signers` key; the fee payer's slot stays empty for the facilitator.
pub fn partially_sign(
    instructions: &[Instruction],
    fee_payer: &Pubkey,
    signers: &[&Keypair],
    blockhash: Hash,
    legacy: bool,
) -> VersionedTransaction {
    let message = if legacy {
        VersionedMessage::Legacy(Message::new_with_blockhash(
            instructions,
            Some(fee_payer),
            &blockhash,
        ))
    } else {
        VersionedMessage::V0(
            v0::Message::try_compile(fee_payer, instructions, &[], blockhash)
                .expect("a payment compiles"),
        )
    };
    let bytes = message.serialize();
    let keys = message.static_account_keys();
    let required = usize::from(message.header().num_required_signatures);
    let signatures = keys[..required]
        .iter()
        .map(|key| {
            signers
                .iter()
                .find(|s| s.pubkey() == *key)
                .map(|s| s.sign_message(&bytes))
                .unwrap_or_default()
        })
        .collect::<Vec<Signature>>();
    VersionedTransaction {
        signatures,
        message,
    }
}

/// The payload's `transaction`: base64 of the wire bytes.
pub fn encode(tx: &VersionedTransaction) -> String {
    base64::engine::general_purpose::STANDARD.encode(bincode::serialize(tx).expect("encodes"))
}
