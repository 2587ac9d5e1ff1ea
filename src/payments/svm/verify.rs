//! The local checks of an `exact` SVM payment (x402-protocol.md section 5), in the TS reference's
//! order, plus the spec's stricter fee-payer rule. Pure: no RPC call, so garbage costs nothing
//! but CPU, and every rule is unit-tested on transactions built in the test.
//!
//! What a payment may look like, and why each rule exists:
//! - one partially signed transaction, legacy or v0, no address lookup tables (every account
//!   must be visible here to be checked), within a packet (1232 bytes), canonically encoded;
//! - account 0 is our fee payer (it pays the fee, so it is ours), and only it and the transfer's
//!   authority sign: any other signer could make our co-signature authorize something else;
//! - instructions: compute-unit limit, compute-unit price (capped: we pay it), one
//!   `TransferChecked` under SPL Token or Token-2022, then only Lighthouse or Memo;
//! - our fee payer appears in no instruction's accounts, so co-signing can never move our SOL or
//!   tokens, nor be the transfer's source or authority;
//! - the transfer moves exactly the price of exactly the offered mint, with the mint's decimals,
//!   into the associated token account of `payTo` for that mint and token program;
//! - every signature but ours is present and valid over the message.

use std::str::FromStr;

use sha2::{Digest, Sha256};
use solana_message::VersionedMessage;
use solana_pubkey::Pubkey;
use solana_transaction::versioned::VersionedTransaction;
use spl_associated_token_account_interface::address::get_associated_token_address_with_program_id;
use spl_token_interface::instruction::TokenInstruction;

use crate::payments::chain::VerifyError;
use crate::x402::Reason;

/// The largest transaction Solana carries (the packet size).
pub const MAX_TRANSACTION_BYTES: usize = 1232;
/// The compute budget program's `SetComputeUnitPrice` cap from the spec: 5 lamports per unit.
pub const MAX_COMPUTE_UNIT_PRICE_MICROLAMPORTS: u64 = 5_000_000;
/// The compute units a payment may ask for. A `TransferChecked` with a memo uses well under
/// 20,000 (the TS client's limit); we pay the priority fee on every unit asked for, so the cap
/// bounds what one payment can cost our fee payer (200,000 × 5 lamports = 0.001 SOL at most).
pub const MAX_COMPUTE_UNITS: u32 = 200_000;

pub const TOKEN_PROGRAM: Pubkey = spl_token_interface::ID;
pub const TOKEN_2022_PROGRAM: Pubkey =
    Pubkey::from_str_const("TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb");
pub const COMPUTE_BUDGET_PROGRAM: Pubkey =
    Pubkey::from_str_const("ComputeBudget111111111111111111111111111111");
pub const MEMO_PROGRAM: Pubkey =
    Pubkey::from_str_const("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr");
pub const LIGHTHOUSE_PROGRAM: Pubkey =
    Pubkey::from_str_const("L2TExMFKdjpN9kozasaurPirfHy9P8sbXoAN1qA3S95");

/// What our offer asks for, parsed.
#[derive(Debug, Clone)]
pub struct Expected {
    pub fee_payer: Pubkey,
    pub mint: Pubkey,
    pub pay_to: Pubkey,
    pub amount: u64,
    pub decimals: u8,
}

/// A payment transaction that passed every local check.
#[derive(Debug, Clone)]
pub struct CheckedTransfer {
    pub transaction: VersionedTransaction,
    /// The serialized message: what every signature signs, and what identifies the payment.
    pub message: Vec<u8>,
    pub token_program: Pubkey,
    pub source: Pubkey,
    pub destination: Pubkey,
    /// The token owner who signed the transfer: the payer.
    pub authority: Pubkey,
    pub amount: u64,
}

impl CheckedTransfer {
    /// The payment's identity for consume-once: the SHA-256 of its message, hex. The message,
    /// not a signature: a signer can make a second valid signature over the same message, and
    /// both would be one transaction on chain (our co-signature is deterministic).
    pub fn message_id(&self) -> String {
        hex_lower(&Sha256::digest(&self.message))
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn invalid(reason: Reason, message: impl Into<String>) -> VerifyError {
    VerifyError::invalid(reason, message)
}

/// Parses a base58 address from our own config or offer.
pub fn pubkey(field: &str, text: &str) -> Result<Pubkey, VerifyError> {
    Pubkey::from_str(text).map_err(|_| {
        invalid(
            Reason::UnexpectedVerifyError,
            format!("{field} `{text}` is not a base58 address (configuration)"),
        )
    })
}

/// Decodes the wire bytes of a transaction: exactly one canonical `VersionedTransaction`.
pub fn decode(bytes: &[u8]) -> Result<VersionedTransaction, VerifyError> {
    if bytes.len() > MAX_TRANSACTION_BYTES {
        return Err(invalid(
            Reason::InvalidExactSvmTransaction,
            format!(
                "the transaction is {} bytes; Solana carries at most {MAX_TRANSACTION_BYTES}",
                bytes.len()
            ),
        ));
    }
    let undecodable = |why: String| invalid(Reason::InvalidExactSvmCouldNotBeDecoded, why);
    let tx: VersionedTransaction = bincode::deserialize(bytes)
        .map_err(|e| undecodable(format!("not a Solana transaction: {e}")))?;
    // Trailing or non-canonical bytes would give one payment several encodings.
    match bincode::serialize(&tx) {
        Ok(again) if again == bytes => {}
        _ => {
            return Err(undecodable(
                "the transaction has trailing or non-canonical bytes".into(),
            ))
        }
    }
    tx.sanitize()
        .map_err(|e| undecodable(format!("the transaction is malformed: {e}")))?;
    Ok(tx)
}

/// Every local check, in order.
pub fn check(bytes: &[u8], want: &Expected) -> Result<CheckedTransfer, VerifyError> {
    let tx = decode(bytes)?;
    let msg = &tx.message;
    if msg
        .address_table_lookups()
        .is_some_and(|lookups| !lookups.is_empty())
    {
        return Err(invalid(
            Reason::InvalidExactSvmTransaction,
            "address lookup tables are not accepted: list every account in the message",
        ));
    }
    let keys = msg.static_account_keys();
    if keys.first() != Some(&want.fee_payer) {
        return Err(invalid(
            Reason::InvalidExactSvmFeePayerMismatch,
            format!(
                "the fee payer (account 0) must be {}, the offer's extra.feePayer",
                want.fee_payer
            ),
        ));
    }
    let signers = usize::from(msg.header().num_required_signatures);
    if signers > 2 {
        return Err(invalid(
            Reason::InvalidExactSvmExcessiveSigners,
            format!("{signers} signers; a payment has two: the fee payer and the token owner"),
        ));
    }
    let ixs = msg.instructions();
    if !(3..=7).contains(&ixs.len()) {
        return Err(invalid(
            Reason::InvalidExactSvmInstructionsLength,
            format!(
                "{} instructions; a payment has 3 to 7: compute limit, compute price, TransferChecked, then Memo or Lighthouse",
                ixs.len()
            ),
        ));
    }
    let program = |i: usize| keys[usize::from(ixs[i].program_id_index)];

    // [0] SetComputeUnitLimit: discriminator 2, then u32 units.
    let data = &ixs[0].data;
    if program(0) != COMPUTE_BUDGET_PROGRAM || data.len() != 5 || data[0] != 2 {
        return Err(invalid(
            Reason::InvalidExactSvmComputeLimit,
            "the first instruction must be ComputeBudget SetComputeUnitLimit",
        ));
    }
    let units = u32::from_le_bytes(data[1..5].try_into().expect("4 bytes"));
    if units > MAX_COMPUTE_UNITS {
        return Err(invalid(
            Reason::InvalidExactSvmComputeLimitTooHigh,
            format!("{units} compute units asked for; at most {MAX_COMPUTE_UNITS}"),
        ));
    }
    // [1] SetComputeUnitPrice: discriminator 3, then u64 micro-lamports.
    let data = &ixs[1].data;
    if program(1) != COMPUTE_BUDGET_PROGRAM || data.len() != 9 || data[0] != 3 {
        return Err(invalid(
            Reason::InvalidExactSvmComputePrice,
            "the second instruction must be ComputeBudget SetComputeUnitPrice",
        ));
    }
    let price = u64::from_le_bytes(data[1..9].try_into().expect("8 bytes"));
    if price > MAX_COMPUTE_UNIT_PRICE_MICROLAMPORTS {
        return Err(invalid(
            Reason::InvalidExactSvmComputePriceTooHigh,
            format!(
                "{price} micro-lamports per unit; at most {MAX_COMPUTE_UNIT_PRICE_MICROLAMPORTS}"
            ),
        ));
    }

    // [2] TransferChecked under SPL Token or Token-2022 (same layout in both).
    let token_program = program(2);
    if token_program != TOKEN_PROGRAM && token_program != TOKEN_2022_PROGRAM {
        return Err(invalid(
            Reason::InvalidExactSvmNoTransfer,
            format!("the third instruction runs {token_program}, not SPL Token or Token-2022"),
        ));
    }
    let (amount, decimals) = match TokenInstruction::unpack(&ixs[2].data) {
        Ok(TokenInstruction::TransferChecked { amount, decimals }) => (amount, decimals),
        _ => {
            return Err(invalid(
                Reason::InvalidExactSvmNoTransfer,
                "the third instruction is not a TransferChecked",
            ))
        }
    };
    let accounts = &ixs[2].accounts;
    if accounts.len() != 4 {
        return Err(invalid(
            Reason::InvalidExactSvmNoTransfer,
            format!(
                "the TransferChecked has {} accounts; a payment has 4 (source, mint, destination, owner): multisig owners are not accepted",
                accounts.len()
            ),
        ));
    }
    let account = |i: usize| keys[usize::from(accounts[i])];
    let (source, mint, destination, authority) = (account(0), account(1), account(2), account(3));
    if authority == want.fee_payer || source == want.fee_payer {
        return Err(invalid(
            Reason::InvalidExactSvmFeePayerTransferring,
            "the fee payer may not be the transfer's source or owner",
        ));
    }
    // The spec's rule (stricter than the TS reference, which checks only the authority): our
    // signature must authorize nothing but paying the fee.
    for (i, ix) in ixs.iter().enumerate() {
        if ix.program_id_index == 0 || ix.accounts.contains(&0) {
            return Err(invalid(
                Reason::InvalidExactSvmFeePayerInInstruction,
                format!("instruction {i} names the fee payer; it may appear in none"),
            ));
        }
    }
    if mint != want.mint {
        return Err(invalid(
            Reason::InvalidExactSvmMintMismatch,
            format!(
                "the transfer is of mint {mint}, this route is paid in {}",
                want.mint
            ),
        ));
    }
    let expected_destination =
        get_associated_token_address_with_program_id(&want.pay_to, &want.mint, &token_program);
    if destination != expected_destination {
        return Err(invalid(
            Reason::InvalidExactSvmRecipientMismatch,
            format!(
                "the transfer goes to {destination}; it must go to {expected_destination}, the associated token account of {} for this mint",
                want.pay_to
            ),
        ));
    }
    if amount != want.amount {
        return Err(invalid(
            Reason::InvalidExactSvmAmountMismatch,
            format!(
                "the transfer is {amount}; the price is exactly {}",
                want.amount
            ),
        ));
    }
    if decimals != want.decimals {
        return Err(invalid(
            Reason::InvalidExactSvmDecimalsMismatch,
            format!(
                "the transfer says {decimals} decimals; the mint has {}",
                want.decimals
            ),
        ));
    }

    // [3..] Only Lighthouse (wallet assertions) or Memo (the client's uniqueness nonce).
    for i in 3..ixs.len() {
        let p = program(i);
        if p != MEMO_PROGRAM && p != LIGHTHOUSE_PROGRAM {
            let reason = match i {
                3 => Reason::InvalidExactSvmUnknownFourthInstruction,
                4 => Reason::InvalidExactSvmUnknownFifthInstruction,
                5 => Reason::InvalidExactSvmUnknownSixthInstruction,
                _ => Reason::InvalidExactSvmUnknownSeventhInstruction,
            };
            return Err(invalid(
                reason,
                format!(
                    "instruction {i} runs {p}; only Memo and Lighthouse may follow the transfer"
                ),
            ));
        }
    }

    // Signatures: the owner's must be there and valid; ours (index 0) is added at settlement.
    let owner_index = keys.iter().position(|k| *k == authority);
    if owner_index.is_none_or(|i| i >= signers) {
        return Err(invalid(
            Reason::InvalidExactSvmSignatureInvalid,
            "the transfer's owner is not a signer of the transaction",
        ));
    }
    let message = msg.serialize();
    for (signature, key) in tx.signatures.iter().zip(keys).take(signers).skip(1) {
        if !signature.verify(key.as_ref(), &message) {
            return Err(invalid(
                Reason::InvalidExactSvmSignatureInvalid,
                format!("the signature of {key} is missing or invalid"),
            ));
        }
    }
    let legacy = matches!(msg, VersionedMessage::Legacy(_));
    tracing::trace!(legacy, units, price, "SVM payment passed the local checks");
    Ok(CheckedTransfer {
        transaction: tx,
        message,
        token_program,
        source,
        destination,
        authority,
        amount,
    })
}
