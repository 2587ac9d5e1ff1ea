//! Verification of an EIP-3009 proof: every local check first (so a bad proof costs no RPC call);
//! then the simulation (`simulate.rs`), and here the diagnosis of its revert into the most
//! precise reason.

use super::*;

impl EvmBackend {
    /// All checks that need no chain access.
    pub fn check_locally(
        &self,
        offer: &Offer,
        proof: &PaymentProof,
        now: u64,
    ) -> Result<EvmAuthorization, VerifyError> {
        let payload: ExactEvmPayload = serde_json::from_value(proof.payload().clone())
            .map_err(|e| bad_payload(format!("not an EIP-3009 payload: {e}")))?;
        let a = &payload.authorization;
        let parse_addr = |field: &str, s: &str| -> Result<Address, VerifyError> {
            s.parse::<Address>()
                .map_err(|_| bad_payload(format!("{field} `{s}` is not an address")))
        };
        let from = parse_addr("from", &a.from)?;
        let to = parse_addr("to", &a.to)?;
        let value = a.value.to_u256("value")?;
        let valid_after = a.valid_after.to_u256("validAfter")?;
        let valid_before = a.valid_before.to_u256("validBefore")?;
        let nonce: B256 = a
            .nonce
            .parse()
            .map_err(|_| bad_payload("nonce is not 32 bytes of hex"))?;
        let signature: Bytes = payload
            .signature
            .parse()
            .map_err(|_| bad_payload("signature is not hex"))?;
        let asset: Address = offer
            .asset
            .address
            .parse()
            .map_err(|_| bad_payload("asset misconfigured"))?;
        let pay_to: Address = offer
            .pay_to
            .parse()
            .map_err(|_| bad_payload("payTo misconfigured"))?;

        if to != pay_to {
            return Err(VerifyError::invalid(
                Reason::InvalidExactEvmRecipientMismatch,
                format!("authorization.to is {to}, this route pays {pay_to}"),
            ));
        }
        let amount = U256::from(offer.amount.0);
        if value != amount {
            return Err(VerifyError::invalid(
                Reason::InvalidExactEvmAuthorizationValue,
                format!("authorization.value is {value}, the price is exactly {amount}"),
            ));
        }
        if valid_before < U256::from(now + VALID_BEFORE_MARGIN) {
            return Err(VerifyError::invalid(
                Reason::InvalidExactEvmValidBefore,
                format!("the authorization expires at {valid_before}; it must be valid until at least {}", now + VALID_BEFORE_MARGIN),
            ));
        }
        if valid_after > U256::from(now) {
            return Err(VerifyError::invalid(
                Reason::InvalidExactEvmValidAfter,
                format!("the authorization is not valid before {valid_after} (now {now})"),
            ));
        }

        let signature = if signature.ends_with(&EIP6492_MAGIC) {
            return Err(VerifyError::invalid(
                Reason::InvalidExactEvmUndeployedSmartWallet,
                "EIP-6492 signatures of undeployed smart wallets are not accepted; deploy the wallet first",
            ));
        } else if signature.len() == 65 || signature.len() == 64 {
            let sig = if signature.len() == 65 {
                Signature::from_raw(&signature)
            } else {
                Ok(Signature::from_erc2098(&signature))
            }
            .map_err(|e| {
                VerifyError::invalid(
                    Reason::InvalidExactEvmSignature,
                    format!("malformed signature: {e}"),
                )
            })?;
            let sig = sig.normalize_s().unwrap_or(sig);
            let message = TransferWithAuthorization {
                from,
                to,
                value,
                validAfter: valid_after,
                validBefore: valid_before,
                nonce,
            };
            let hash = self.signing_hash(offer, asset, &message);
            let signer = sig.recover_address_from_prehash(&hash).ok();
            if signer != Some(from) {
                return Err(VerifyError::invalid(
                    Reason::InvalidExactEvmSignature,
                    format!(
                        "the signature does not recover to {from} over the EIP-712 domain {{name: {:?}, version: {:?}, chainId: {}, verifyingContract: {asset}}}",
                        offer.asset.eip712.as_ref().map(|d| d.0.as_str()).unwrap_or(""),
                        offer.asset.eip712.as_ref().map(|d| d.1.as_str()).unwrap_or(""),
                        self.chain_id
                    ),
                ));
            }
            Bytes::from(sig.as_bytes().to_vec())
        } else {
            // ERC-1271: verified by the token itself during simulation.
            signature
        };
        Ok(EvmAuthorization {
            chain_id: self.chain_id,
            asset,
            from,
            to,
            value,
            valid_after,
            valid_before,
            nonce,
            signature,
        })
    }

    /// Maps a reverted simulation to the most precise reason we can find.
    pub(super) async fn diagnose(
        &self,
        offer: &Offer,
        auth: &EvmAuthorization,
        revert: String,
    ) -> VerifyError {
        let lower = revert.to_ascii_lowercase();
        let reason = if lower.contains("used or canceled") || lower.contains("used or cancelled") {
            Some(Reason::InvalidExactEvmNonceAlreadyUsed)
        } else if lower.contains("not yet valid") {
            Some(Reason::InvalidExactEvmValidAfter)
        } else if lower.contains("expired") {
            Some(Reason::InvalidExactEvmValidBefore)
        } else if lower.contains("exceeds balance") || lower.contains("insufficient") {
            Some(Reason::InvalidExactEvmInsufficientBalance)
        } else {
            None
        };
        if let Some(reason) = reason {
            return VerifyError::invalid(reason, revert);
        }
        // A signature rejected on-chain that verified locally means a wrong EIP-712 domain in our
        // config far more often than a bad client: say which part differs.
        let call = |data: Vec<u8>| {
            let tx = TransactionRequest::default()
                .to(auth.asset)
                .input(Bytes::from(data).into());
            self.provider.call(tx)
        };
        if let Some((want_name, want_version)) = &offer.asset.eip712 {
            if let Ok(raw) = call(IEip3009::nameCall {}.abi_encode()).await {
                if let Ok(name) = IEip3009::nameCall::abi_decode_returns(&raw) {
                    if &name != want_name {
                        return VerifyError::invalid(
                            Reason::InvalidExactEvmTokenNameMismatch,
                            format!(
                                "the token's name() is {name:?}, the config says {want_name:?}"
                            ),
                        );
                    }
                }
            }
            if let Ok(raw) = call(IEip3009::versionCall {}.abi_encode()).await {
                if let Ok(version) = IEip3009::versionCall::abi_decode_returns(&raw) {
                    if &version != want_version {
                        return VerifyError::invalid(
                            Reason::InvalidExactEvmTokenVersionMismatch,
                            format!("the token's version() is {version:?}, the config says {want_version:?}"),
                        );
                    }
                }
            }
        }
        if lower.contains("invalid signature") {
            return VerifyError::invalid(Reason::InvalidExactEvmSignature, revert);
        }
        VerifyError::invalid(Reason::InvalidExactEvmSimulationFailed, revert)
    }
}

#[cfg(test)]
mod tests {
    use super::super::call_failed;
    use alloy::primitives::{keccak256, Address, Signature, U256};

    /// Pure: which `eth_call` error answers are the payment's failure (a 402) and which the
    /// node's (a 503). The texts are what geth, reth, anvil and hosted RPCs answer.
    #[test]
    fn a_revert_is_the_payments_failure_anything_else_the_nodes() {
        for (code, message, failed) in [
            (
                3,
                "execution reverted: FiatTokenV2: invalid signature",
                true,
            ),
            (-32000, "execution reverted", true),
            (
                -32015,
                "VM Exception while processing transaction: revert",
                true,
            ),
            (-32000, "out of gas", true),
            (-32000, "gas required exceeds allowance (30000000)", true),
            (-32000, "invalid opcode: INVALID", true),
            (-32005, "request limit reached", false),
            (429, "Too Many Requests", false),
            (-32000, "header not found", false),
            (
                -32601,
                "the method eth_call does not exist/is not available",
                false,
            ),
            (-32603, "internal error", false),
        ] {
            assert_eq!(call_failed(code, message), failed, "{code} {message}");
        }
    }
    use alloy::signers::local::{PrivateKeySigner, Secp256k1Signer};
    use alloy::signers::SignerSync;

    /// The curve order: an `s` above half of it is the malleable twin of a valid signature.
    fn n() -> U256 {
        "0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141"
            .parse()
            .unwrap()
    }

    fn k256_recovered(sig: &Signature, hash: &alloy::primitives::B256) -> Option<Address> {
        sig.recover_from_prehash(hash)
            .ok()
            .map(|vk| Address::from_public_key(&vk))
    }

    /// `check_locally` recovers payers with libsecp256k1 (`recover_address_from_prehash`, under
    /// alloy's `secp256k1` feature) and the settler signs with it; k256 did both before. The
    /// two agree on every signature, its high-`s` twin and both parities, and refuse the same
    /// malformed ones.
    #[test]
    fn libsecp256k1_recovers_and_signs_exactly_as_k256() {
        for i in 0u64..64 {
            let k256 = PrivateKeySigner::random();
            let secp: Secp256k1Signer = k256.clone().into();
            assert_eq!(secp.address(), k256.address());
            let hash = keccak256(i.to_be_bytes());
            let sig = k256.sign_hash_sync(&hash).unwrap();
            assert_eq!(
                secp.sign_hash_sync(&hash).unwrap(),
                sig,
                "same RFC 6979 signature"
            );
            assert_eq!(
                sig.recover_address_from_prehash(&hash).ok(),
                Some(k256.address())
            );
            let twin = Signature::new(sig.r(), n() - sig.s(), !sig.v());
            assert_eq!(
                twin.recover_address_from_prehash(&hash).ok(),
                Some(k256.address())
            );
            let flipped = sig.with_parity(!sig.v());
            let other = flipped.recover_address_from_prehash(&hash).ok();
            assert_ne!(
                other,
                Some(k256.address()),
                "the wrong parity is another key"
            );
            assert_eq!(other, k256_recovered(&flipped, &hash));
        }
        let hash = keccak256(b"malformed");
        for (r, s) in [
            (U256::ZERO, U256::from(1)),
            (U256::from(1), U256::ZERO),
            (n(), U256::from(1)),
            (U256::from(1), n()),
            (U256::MAX, U256::from(1)),
        ] {
            for parity in [false, true] {
                let sig = Signature::new(r, s, parity);
                assert_eq!(
                    sig.recover_address_from_prehash(&hash).ok(),
                    k256_recovered(&sig, &hash),
                    "r={r} s={s}"
                );
                assert_eq!(sig.recover_address_from_prehash(&hash).ok(), None);
            }
        }
    }
}
