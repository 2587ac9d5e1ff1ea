//! The local checks on transactions built here (pure: no chain; the end-to-end cases, with a real
//! SVM, are in tests/svm.rs).

use solana_hash::Hash;
use solana_instruction::{AccountMeta, Instruction};
use solana_keypair::Keypair;
use solana_pubkey::Pubkey;
use solana_signer::Signer;

use super::client::{self, PaymentSpec};
use super::verify::{self, Expected, TOKEN_2022_PROGRAM, TOKEN_PROGRAM};
use crate::payments::chain::VerifyError;
use crate::x402::Reason;

struct Case {
    fee_payer: Keypair,
    payer: Keypair,
    spec: PaymentSpec,
}

impl Case {
    fn new(token_program: Pubkey) -> Case {
        let fee_payer = Keypair::new();
        Case {
            spec: PaymentSpec {
                fee_payer: fee_payer.pubkey(),
                mint: Pubkey::new_unique(),
                pay_to: Pubkey::new_unique(),
                amount: 10_000,
                decimals: 6,
                token_program,
            },
            fee_payer,
            payer: Keypair::new(),
        }
    }

    fn expected(&self) -> Expected {
        Expected {
            fee_payer: self.fee_payer.pubkey(),
            mint: self.spec.mint,
            pay_to: self.spec.pay_to,
            amount: 10_000,
            decimals: 6,
        }
    }

    fn instructions(&self) -> Vec<Instruction> {
        client::payment_instructions(&self.spec, &self.payer.pubkey())
    }

    fn bytes(&self, ixs: &[Instruction], legacy: bool) -> Vec<u8> {
        let tx = client::partially_sign(
            ixs,
            &self.fee_payer.pubkey(),
            &[&self.payer],
            Hash::new_unique(),
            legacy,
        );
        bincode::serialize(&tx).unwrap()
    }

    fn check(&self, ixs: &[Instruction]) -> Result<verify::CheckedTransfer, VerifyError> {
        verify::check(&self.bytes(ixs, false), &self.expected())
    }
}

fn reason(r: Result<verify::CheckedTransfer, VerifyError>) -> Reason {
    match r {
        Err(VerifyError::Invalid { reason, .. }) => reason,
        Err(e) => panic!("not an invalid proof: {e}"),
        Ok(_) => panic!("accepted"),
    }
}

#[test]
fn a_client_payment_passes_as_v0_and_as_legacy_under_both_token_programs() {
    for program in [TOKEN_PROGRAM, TOKEN_2022_PROGRAM] {
        let case = Case::new(program);
        for legacy in [false, true] {
            let checked =
                verify::check(&case.bytes(&case.instructions(), legacy), &case.expected())
                    .unwrap_or_else(|e| panic!("legacy={legacy} {program}: {e}"));
            assert_eq!(checked.authority, case.payer.pubkey());
            assert_eq!(checked.amount, 10_000);
            assert_eq!(checked.token_program, program);
            assert_eq!(checked.message_id().len(), 64);
        }
    }
}

#[test]
fn one_message_is_one_payment_whatever_its_signatures() {
    let case = Case::new(TOKEN_PROGRAM);
    let bytes = case.bytes(&case.instructions(), false);
    let a = verify::check(&bytes, &case.expected()).unwrap();
    // The same message with something else in our (empty) signature slot: the same payment.
    let mut tx = a.transaction.clone();
    tx.signatures[0] = case.fee_payer.sign_message(b"anything");
    let b = verify::check(&bincode::serialize(&tx).unwrap(), &case.expected()).unwrap();
    assert_eq!(a.message_id(), b.message_id());
    // Two payments of the same price differ by their memo.
    let c = case.check(&case.instructions()).unwrap();
    assert_ne!(a.message_id(), c.message_id());
}

#[test]
fn the_compute_budget_is_required_and_capped() {
    let case = Case::new(TOKEN_PROGRAM);
    let mut ixs = case.instructions();
    ixs.remove(0);
    assert_eq!(
        reason(case.check(&ixs)),
        Reason::InvalidExactSvmComputeLimit
    );

    let mut ixs = case.instructions();
    ixs[1] = client::compute_unit_price(5_000_001);
    assert_eq!(
        reason(case.check(&ixs)),
        Reason::InvalidExactSvmComputePriceTooHigh
    );
    ixs[1] = client::compute_unit_price(5_000_000);
    assert!(case.check(&ixs).is_ok());

    let mut ixs = case.instructions();
    ixs[0] = client::compute_unit_limit(verify::MAX_COMPUTE_UNITS + 1);
    assert_eq!(
        reason(case.check(&ixs)),
        Reason::InvalidExactSvmComputeLimitTooHigh
    );

    let mut ixs = case.instructions();
    ixs.swap(0, 1);
    assert_eq!(
        reason(case.check(&ixs)),
        Reason::InvalidExactSvmComputeLimit
    );
}

#[test]
fn the_transfer_must_pay_exactly_the_offer() {
    let case = Case::new(TOKEN_PROGRAM);
    let mut want = case.expected();
    want.amount = 10_001;
    let bytes = case.bytes(&case.instructions(), false);
    assert_eq!(
        reason(verify::check(&bytes, &want)),
        Reason::InvalidExactSvmAmountMismatch
    );

    let mut want = case.expected();
    want.decimals = 9;
    assert_eq!(
        reason(verify::check(&bytes, &want)),
        Reason::InvalidExactSvmDecimalsMismatch
    );

    let mut want = case.expected();
    want.mint = Pubkey::new_unique();
    assert_eq!(
        reason(verify::check(&bytes, &want)),
        Reason::InvalidExactSvmMintMismatch
    );

    // Paid to payTo itself rather than to its associated token account.
    let mut spec = case.spec.clone();
    spec.pay_to = Pubkey::new_unique();
    let ixs = client::payment_instructions(&spec, &case.payer.pubkey());
    assert_eq!(
        reason(case.check(&ixs)),
        Reason::InvalidExactSvmRecipientMismatch
    );

    // A plain Transfer (no decimals check) is not a TransferChecked.
    let mut ixs = case.instructions();
    ixs[2].data[0] = 3;
    ixs[2].data.truncate(9);
    ixs[2].accounts.remove(1);
    assert_eq!(reason(case.check(&ixs)), Reason::InvalidExactSvmNoTransfer);
}

#[test]
fn our_fee_payer_may_authorize_nothing() {
    let case = Case::new(TOKEN_PROGRAM);
    // The fee payer as the transfer's owner.
    let spec = case.spec.clone();
    let ixs = client::payment_instructions(&spec, &case.fee_payer.pubkey());
    assert_eq!(
        reason(case.check(&ixs)),
        Reason::InvalidExactSvmFeePayerTransferring
    );

    // The fee payer named in a memo's accounts (a memo "signed" by it).
    let mut ixs = case.instructions();
    ixs[3]
        .accounts
        .push(AccountMeta::new_readonly(case.fee_payer.pubkey(), true));
    assert_eq!(
        reason(case.check(&ixs)),
        Reason::InvalidExactSvmFeePayerInInstruction
    );

    // Another fee payer than ours.
    let other = Keypair::new();
    let tx = client::partially_sign(
        &case.instructions(),
        &other.pubkey(),
        &[&case.payer],
        Hash::new_unique(),
        false,
    );
    assert_eq!(
        reason(verify::check(
            &bincode::serialize(&tx).unwrap(),
            &case.expected()
        )),
        Reason::InvalidExactSvmFeePayerMismatch
    );
}

#[test]
fn only_memo_and_lighthouse_may_follow_the_transfer() {
    let case = Case::new(TOKEN_PROGRAM);
    let mut ixs = case.instructions();
    ixs.insert(
        3,
        Instruction::new_with_bytes(Pubkey::new_unique(), b"x", vec![]),
    );
    assert_eq!(
        reason(case.check(&ixs)),
        Reason::InvalidExactSvmUnknownFourthInstruction
    );

    let mut ixs = case.instructions();
    ixs.push(Instruction::new_with_bytes(
        Pubkey::new_unique(),
        b"x",
        vec![],
    ));
    assert_eq!(
        reason(case.check(&ixs)),
        Reason::InvalidExactSvmUnknownFifthInstruction
    );

    let mut ixs = case.instructions();
    ixs.push(Instruction::new_with_bytes(
        verify::LIGHTHOUSE_PROGRAM,
        b"assert",
        vec![],
    ));
    assert!(case.check(&ixs).is_ok());

    let mut ixs = case.instructions();
    ixs.truncate(2);
    assert_eq!(
        reason(case.check(&ixs)),
        Reason::InvalidExactSvmInstructionsLength
    );
    let mut ixs = case.instructions();
    for _ in 0..4 {
        ixs.push(client::random_memo());
    }
    assert_eq!(
        reason(case.check(&ixs)),
        Reason::InvalidExactSvmInstructionsLength
    );
}

#[test]
fn the_owner_must_have_signed_and_nobody_else() {
    let case = Case::new(TOKEN_PROGRAM);
    // Unsigned: the owner's slot is empty.
    let tx = client::partially_sign(
        &case.instructions(),
        &case.fee_payer.pubkey(),
        &[],
        Hash::new_unique(),
        false,
    );
    assert_eq!(
        reason(verify::check(
            &bincode::serialize(&tx).unwrap(),
            &case.expected()
        )),
        Reason::InvalidExactSvmSignatureInvalid
    );
    // A third signer.
    let third = Keypair::new();
    let mut ixs = case.instructions();
    ixs[3]
        .accounts
        .push(AccountMeta::new_readonly(third.pubkey(), true));
    let tx = client::partially_sign(
        &ixs,
        &case.fee_payer.pubkey(),
        &[&case.payer, &third],
        Hash::new_unique(),
        false,
    );
    assert_eq!(
        reason(verify::check(
            &bincode::serialize(&tx).unwrap(),
            &case.expected()
        )),
        Reason::InvalidExactSvmExcessiveSigners
    );
}

#[test]
fn bytes_that_are_not_one_canonical_transaction_are_refused() {
    let case = Case::new(TOKEN_PROGRAM);
    let mut bytes = case.bytes(&case.instructions(), false);
    bytes.push(0);
    assert_eq!(
        reason(verify::check(&bytes, &case.expected())),
        Reason::InvalidExactSvmCouldNotBeDecoded
    );
    assert_eq!(
        reason(verify::check(b"\x01garbage", &case.expected())),
        Reason::InvalidExactSvmCouldNotBeDecoded
    );
    assert_eq!(
        reason(verify::check(&[0u8; 1233], &case.expected())),
        Reason::InvalidExactSvmTransaction
    );
    assert_eq!(
        reason(verify::check(&[], &case.expected())),
        Reason::InvalidExactSvmCouldNotBeDecoded
    );
}
