//! Wire reason codes: the stable snake_case strings that go out in `error`, `invalidReason` and
//! `errorReason`. Every internal failure is mapped to one of these in exactly one place (here), so
//! clients that match on them never see a string change by accident.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The header did not decode (not base64, not JSON, wrong shape).
    InvalidPayload,
    /// The payment header is larger than the gateway accepts.
    PayloadTooLarge,
    InvalidX402Version,
    UnsupportedScheme,
    /// The proof does not match any requirement we offered for this route.
    NoMatchingRequirements,
    InvalidNetwork,
    // EVM `exact` (names from the TS reference, `@x402/evm` errors.ts).
    InvalidExactEvmPayload,
    InvalidExactEvmSignature,
    InvalidExactEvmRecipientMismatch,
    InvalidExactEvmAuthorizationValue,
    InvalidExactEvmValidBefore,
    InvalidExactEvmValidAfter,
    InvalidExactEvmNonceAlreadyUsed,
    InvalidExactEvmInsufficientBalance,
    InvalidExactEvmTokenNameMismatch,
    InvalidExactEvmTokenVersionMismatch,
    InvalidExactEvmSimulationFailed,
    InvalidExactEvmTransactionFailed,
    InvalidExactEvmTransferEventMismatch,
    InvalidExactEvmUndeployedSmartWallet,
    // SVM `exact` (names from the TS reference, `@x402/svm` 2.27 facilitator errors).
    /// The offer's `extra.feePayer` is missing from the transaction's echoed requirement.
    InvalidExactSvmMissingFeePayer,
    /// `extra.feePayer` is not our fee payer.
    InvalidExactSvmFeePayerNotManaged,
    /// The transaction's fee payer (account 0) is not our fee payer.
    InvalidExactSvmFeePayerMismatch,
    /// The transaction is not one we can check: too large, lookup tables, trailing bytes.
    InvalidExactSvmTransaction,
    InvalidExactSvmCouldNotBeDecoded,
    InvalidExactSvmSignatureInvalid,
    InvalidExactSvmExcessiveSigners,
    InvalidExactSvmInstructionsLength,
    InvalidExactSvmComputeLimit,
    InvalidExactSvmComputeLimitTooHigh,
    InvalidExactSvmComputePrice,
    InvalidExactSvmComputePriceTooHigh,
    InvalidExactSvmNoTransfer,
    InvalidExactSvmFeePayerTransferring,
    /// The spec's stricter rule: our fee payer may appear in no instruction's accounts.
    InvalidExactSvmFeePayerInInstruction,
    InvalidExactSvmMintMismatch,
    InvalidExactSvmRecipientMismatch,
    InvalidExactSvmAmountMismatch,
    InvalidExactSvmDecimalsMismatch,
    InvalidExactSvmUnknownFourthInstruction,
    InvalidExactSvmUnknownFifthInstruction,
    InvalidExactSvmUnknownSixthInstruction,
    InvalidExactSvmUnknownSeventhInstruction,
    InvalidExactSvmSimulationFailed,
    /// The settlement transaction failed on chain, or its blockhash expired unsent: nothing moved.
    InvalidExactSvmTransactionFailed,
    /// The payer's token account lacks the amount (x402's general code).
    InsufficientFunds,
    /// The same proof was already claimed by another request.
    DuplicateSettlement,
    /// The payer has as many payments awaiting settlement as one payer may: the next waits.
    TooManyUnsettledPayments,
    /// Verification is not available for this network in this build or configuration.
    UnexpectedVerifyError,
    // Verification of an already-mined transaction (the verify API).
    TxNotFound,
    TxFailed,
    NoMatchingTransfer,
    InsufficientAmount,
    InsufficientConfirmations,
    TxAlreadyUsed,
    UnexpectedSettleError,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        use Reason::*;
        match self {
            InvalidPayload => "invalid_payload",
            PayloadTooLarge => "invalid_payload_too_large",
            InvalidX402Version => "invalid_x402_version",
            UnsupportedScheme => "unsupported_scheme",
            NoMatchingRequirements => "no_matching_payment_requirements",
            InvalidNetwork => "invalid_network",
            InvalidExactEvmPayload => "invalid_exact_evm_payload",
            InvalidExactEvmSignature => "invalid_exact_evm_signature",
            InvalidExactEvmRecipientMismatch => "invalid_exact_evm_recipient_mismatch",
            InvalidExactEvmAuthorizationValue => "invalid_exact_evm_authorization_value",
            InvalidExactEvmValidBefore => "invalid_exact_evm_payload_authorization_valid_before",
            InvalidExactEvmValidAfter => "invalid_exact_evm_payload_authorization_valid_after",
            InvalidExactEvmNonceAlreadyUsed => "invalid_exact_evm_nonce_already_used",
            InvalidExactEvmInsufficientBalance => "invalid_exact_evm_insufficient_balance",
            InvalidExactEvmTokenNameMismatch => "invalid_exact_evm_token_name_mismatch",
            InvalidExactEvmTokenVersionMismatch => "invalid_exact_evm_token_version_mismatch",
            InvalidExactEvmSimulationFailed => "invalid_exact_evm_transaction_simulation_failed",
            InvalidExactEvmTransactionFailed => "invalid_exact_evm_transaction_failed",
            InvalidExactEvmTransferEventMismatch => "invalid_exact_evm_transfer_event_mismatch",
            InvalidExactEvmUndeployedSmartWallet => {
                "invalid_exact_evm_payload_undeployed_smart_wallet"
            }
            InvalidExactSvmMissingFeePayer => "invalid_exact_svm_payload_missing_fee_payer",
            InvalidExactSvmFeePayerNotManaged => "invalid_exact_svm_fee_payer_not_managed_by_facilitator",
            InvalidExactSvmFeePayerMismatch => "invalid_exact_svm_fee_payer_mismatch",
            InvalidExactSvmTransaction => "invalid_exact_svm_payload_transaction",
            InvalidExactSvmCouldNotBeDecoded => "invalid_exact_svm_payload_transaction_could_not_be_decoded",
            InvalidExactSvmSignatureInvalid => "invalid_exact_svm_payload_signature_invalid",
            InvalidExactSvmExcessiveSigners => "invalid_exact_svm_payload_excessive_signers",
            InvalidExactSvmInstructionsLength => "invalid_exact_svm_payload_transaction_instructions_length",
            InvalidExactSvmComputeLimit => "invalid_exact_svm_payload_transaction_instructions_compute_limit_instruction",
            InvalidExactSvmComputeLimitTooHigh => "invalid_exact_svm_payload_transaction_instructions_compute_limit_instruction_too_high",
            InvalidExactSvmComputePrice => "invalid_exact_svm_payload_transaction_instructions_compute_price_instruction",
            InvalidExactSvmComputePriceTooHigh => "invalid_exact_svm_payload_transaction_instructions_compute_price_instruction_too_high",
            InvalidExactSvmNoTransfer => "invalid_exact_svm_payload_no_transfer_instruction",
            InvalidExactSvmFeePayerTransferring => "invalid_exact_svm_payload_transaction_fee_payer_transferring_funds",
            InvalidExactSvmFeePayerInInstruction => "invalid_exact_svm_payload_transaction_fee_payer_included_in_instruction_accounts",
            InvalidExactSvmMintMismatch => "invalid_exact_svm_payload_mint_mismatch",
            InvalidExactSvmRecipientMismatch => "invalid_exact_svm_payload_recipient_mismatch",
            InvalidExactSvmAmountMismatch => "invalid_exact_svm_payload_amount_mismatch",
            InvalidExactSvmDecimalsMismatch => "invalid_exact_svm_payload_decimals_mismatch",
            InvalidExactSvmUnknownFourthInstruction => "invalid_exact_svm_payload_unknown_fourth_instruction",
            InvalidExactSvmUnknownFifthInstruction => "invalid_exact_svm_payload_unknown_fifth_instruction",
            InvalidExactSvmUnknownSixthInstruction => "invalid_exact_svm_payload_unknown_sixth_instruction",
            InvalidExactSvmUnknownSeventhInstruction => "invalid_exact_svm_payload_unknown_seventh_instruction",
            InvalidExactSvmSimulationFailed => "invalid_exact_svm_transaction_simulation_failed",
            InvalidExactSvmTransactionFailed => "invalid_exact_svm_transaction_failed",
            InsufficientFunds => "insufficient_funds",
            DuplicateSettlement => "duplicate_settlement",
            TooManyUnsettledPayments => "too_many_unsettled_payments",
            UnexpectedVerifyError => "unexpected_verify_error",
            TxNotFound => "tx_not_found",
            TxFailed => "tx_failed",
            NoMatchingTransfer => "no_matching_transfer",
            InsufficientAmount => "insufficient_amount",
            InsufficientConfirmations => "insufficient_confirmations",
            TxAlreadyUsed => "tx_already_used",
            UnexpectedSettleError => "unexpected_settle_error",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
