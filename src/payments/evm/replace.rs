//! Replacing a settlement that is stuck unmined: the same calls, signed again with the same
//! settler nonce at higher fees.
//!
//! Sending the same bytes again (`send.rs`) helps a node that dropped them. It does not help a
//! transaction whose fee cap the base fee outran (nodes evict it, or keep it unrunnable), nor
//! one a node's pool holds wrongly (anvil's race, foundry #10122, seen in this repo's benchmark:
//! every re-send answered, the nonce never mined). A replacement has a new hash, so the pool
//! takes it as a new transaction; it shares the nonce, so at most one of them is ever mined.
//!
//! The payment core records the replacement on every claim it settles before it is sent
//! (`payments/landing.rs`), naming the ones it replaces, and every wait and the reconciler
//! watch all of them: whichever is mined is the settlement.

use super::*;

/// Most replacements in one receipt wait: with the default `replace_after_seconds` (15) that
/// is the whole wait (60 s); each costs at least 12.5 % more per unit of gas.
pub(super) const MAX_REPLACEMENTS: usize = 3;
/// Most replacements of one settlement over its life (a deferred settlement is retried until its
/// authorization expires, each attempt's wait replacing it again): one stuck for another reason
/// than its fees (a pool holding it wrongly) is not priced ever higher. Six raises of 12.5 % end
/// at about twice what the node's estimates asked for.
pub(super) const MAX_LIFETIME_REPLACEMENTS: usize = 6;

/// The fees of a replacement: at least the node's estimate now, and at least 12.5 % above the
/// replaced transaction's on both the fee cap and the tip (geth, reth, Nethermind and Besu
/// refuse a replacement under 10 % more on either; anvil wants any increase). Not bounded by
/// the estimate: estimates swing tenfold within seconds (an L2's, anvil's after empty blocks),
/// and a transaction signed at a higher one and stuck for another reason must still be
/// replaceable; `MAX_LIFETIME_REPLACEMENTS` bounds the raises instead.
pub(super) fn bumped(old_max: u128, old_tip: u128, est_max: u128, est_tip: u128) -> (u128, u128) {
    let raise = |v: u128| v.saturating_add(v / 8).saturating_add(1);
    let tip = raise(old_tip).max(est_tip);
    let max = raise(old_max).max(est_max).max(tip);
    (max, tip)
}

impl EvmBackend {
    /// How long a wait that made `replaced` replacements so far may go before it replaces again:
    /// `None` once replacements are off, used up, or would not fit in the receipt wait.
    pub(super) fn stall_after(&self, replaced: usize) -> Option<Duration> {
        let after = self.replace_after?;
        let fits = after.saturating_mul(replaced as u32 + 1) < RECEIPT_TIMEOUT;
        (replaced < MAX_REPLACEMENTS && fits).then_some(after)
    }

    /// About how long the waits before a settlement's `replaced`-th replacement took: what is
    /// left of the receipt wait is its own.
    pub(super) fn waited_before(&self, replaced: usize) -> Duration {
        self.replace_after.map_or(Duration::ZERO, |after| {
            after.saturating_mul(replaced as u32)
        })
    }

    /// Signs the replacement of `prepared`: its own transaction (any of its calls: one payment's
    /// or a batch's) with the same nonce at `bumped` fees, naming what it replaces. Not sent.
    pub(super) async fn sign_replacement(
        &self,
        prepared: &PreparedSettlement,
    ) -> Result<PreparedSettlement, SettleError> {
        use alloy::eips::eip2718::Decodable2718;
        let raw: Bytes = prepared
            .raw
            .parse()
            .map_err(|_| SettleError::Unavailable("bad prepared transaction".into()))?;
        let Ok(TxEnvelope::Eip1559(signed)) = TxEnvelope::decode_2718(&mut raw.as_ref()) else {
            return Err(SettleError::Unavailable(
                "the settlement is not an EIP-1559 transaction: not replaced".into(),
            ));
        };
        let old = signed.tx();
        let signer = signed
            .signature()
            .recover_address_from_prehash(&old.signature_hash())
            .map_err(|e| SettleError::Unavailable(format!("the settlement's signer: {e}")))?;
        if signer != self.settler.address() {
            return Err(SettleError::Unavailable(
                "the settlement was signed by another settler key: not replaced".into(),
            ));
        }
        // `replace_after_seconds = 0` turns replacement off for every caller, the reconciler's
        // too (a request's wait never asks then).
        if self.replace_after.is_none() {
            return Err(SettleError::Unavailable(format!(
                "{}: replacement is off (replace_after_seconds = 0)",
                self.network
            )));
        }
        if prepared.replaces.len() >= MAX_LIFETIME_REPLACEMENTS {
            return Err(SettleError::Unavailable(format!(
                "replaced {} times already: not raised further",
                prepared.replaces.len()
            )));
        }
        // The node's fees now, not the cached ones: the cache may hold what got it stuck.
        let (est_max, est_tip) = self.estimate_fees().await?;
        let (max_fee, tip) = bumped(
            old.max_fee_per_gas,
            old.max_priority_fee_per_gas,
            est_max,
            est_tip,
        );
        let mut tx = TxEip1559 {
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: tip,
            ..old.clone()
        };
        let sig = self
            .settler
            .sign_transaction_sync(&mut tx)
            .map_err(|e| SettleError::Unavailable(format!("signing: {e}")))?;
        let signed = tx.into_signed(sig);
        let hash = *signed.hash();
        let raw = TxEnvelope::from(signed).encoded_2718();
        let mut replaces = prepared.replaces.clone();
        replaces.push(prepared.transaction.clone());
        tracing::info!(
            nonce = old.nonce,
            replaces = %prepared.transaction,
            tx = %hash,
            max_fee_per_gas = max_fee,
            "replacing a stuck settlement at higher fees"
        );
        if let Some(observer) = &self.observer {
            observer.settlement_replaced(&self.network);
        }
        Ok(PreparedSettlement {
            transaction: hash.to_string(),
            raw: alloy::hex::encode_prefixed(raw),
            settler: self.settler.address().to_checksum(None),
            nonce: Some(old.nonce),
            replaces,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replacement_pays_an_eighth_more_or_the_estimate() {
        // The estimate is below: 12.5 % (and one wei) over the old fees, on both.
        assert_eq!(bumped(800, 80, 100, 10), (901, 91));
        // The base fee jumped: the estimate wins.
        assert_eq!(bumped(800, 80, 50_000, 2_000), (50_000, 2_000));
        // The cap never falls below the tip.
        assert_eq!(bumped(100, 90, 0, 500), (500, 500));
        // Each is above 10 % of the old: what the strictest pools ask.
        let (max, tip) = bumped(1_000_000_007, 1_000_003, 0, 0);
        assert!(max * 10 > 1_000_000_007 * 11 && tip * 10 > 1_000_003 * 11);
        // The estimate fell far below what it was signed at (anvil after empty blocks): still
        // raised over the old, whatever the estimate says.
        assert_eq!(bumped(8_000, 800, 10, 1), (9_001, 901));
        // A settlement's life of raises while the estimate stays put: about twice.
        let mut fees = (1_000, 100);
        for _ in 0..MAX_LIFETIME_REPLACEMENTS {
            fees = bumped(fees.0, fees.1, 1_000, 100);
        }
        assert_eq!(
            fees,
            (2_032, 209),
            "1000, 1126, 1267, 1426, 1605, 1806, 2032"
        );
        // Nothing overflows.
        assert_eq!(bumped(u128::MAX, u128::MAX, 0, 0), (u128::MAX, u128::MAX));
    }
}
