//! Token amounts in atomic units, and the conversion of a USD price ("$0.01") into them.
//!
//! Integer arithmetic only: a price goes from its decimal string to atomic units by shifting the
//! digits, never through a float (0.1 + 0.2 is not 0.3 in binary, and money must not round).

use std::fmt;
use std::str::FromStr;

/// An amount in the asset's smallest unit (6-decimal USDC: 1 USDC = 1_000_000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AtomicAmount(pub u128);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("`{0}` is not a decimal amount")]
    NotANumber(String),
    #[error("`{value}` has {given} decimal places but the asset allows {allowed}")]
    TooPrecise {
        value: String,
        given: usize,
        allowed: u8,
    },
    #[error("`{0}` is too large")]
    Overflow(String),
}

impl AtomicAmount {
    /// Converts a decimal number of whole tokens ("0.01") into atomic units for `decimals`.
    /// Refuses more fractional digits than the asset has, rather than rounding.
    pub fn from_decimal(value: &str, decimals: u8) -> Result<Self, AmountError> {
        let not_a_number = || AmountError::NotANumber(value.to_string());
        let (whole, frac) = match value.split_once('.') {
            Some((w, f)) => (w, f),
            None => (value, ""),
        };
        if whole.is_empty() && frac.is_empty() {
            return Err(not_a_number());
        }
        let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if !digits_only(whole) || !digits_only(frac) || (value.contains('.') && frac.is_empty()) {
            return Err(not_a_number());
        }
        let frac = frac.trim_end_matches('0');
        if frac.len() > decimals as usize {
            return Err(AmountError::TooPrecise {
                value: value.to_string(),
                given: frac.len(),
                allowed: decimals,
            });
        }
        let overflow = || AmountError::Overflow(value.to_string());
        let scale = 10u128.checked_pow(decimals as u32).ok_or_else(overflow)?;
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| overflow())?
        };
        let frac_scaled: u128 = if frac.is_empty() {
            0
        } else {
            let f: u128 = frac.parse().map_err(|_| overflow())?;
            f * 10u128.pow((decimals as usize - frac.len()) as u32)
        };
        whole
            .checked_mul(scale)
            .and_then(|w| w.checked_add(frac_scaled))
            .map(AtomicAmount)
            .ok_or_else(overflow)
    }

    /// Parses a USD price string such as "$0.01" into atomic units of a USD stablecoin.
    pub fn from_usd(price: &str, decimals: u8) -> Result<Self, AmountError> {
        let number = price
            .strip_prefix('$')
            .ok_or_else(|| AmountError::NotANumber(price.to_string()))?;
        Self::from_decimal(number.trim(), decimals)
    }
}

impl FromStr for AtomicAmount {
    type Err = AmountError;

    /// Parses the wire form: a plain decimal integer string of atomic units.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AmountError::NotANumber(s.to_string()));
        }
        s.parse()
            .map(AtomicAmount)
            .map_err(|_| AmountError::Overflow(s.to_string()))
    }
}

impl fmt::Display for AtomicAmount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usd_prices_convert_exactly() {
        assert_eq!(AtomicAmount::from_usd("$0.01", 6).unwrap().0, 10_000);
        assert_eq!(AtomicAmount::from_usd("$1", 6).unwrap().0, 1_000_000);
        assert_eq!(AtomicAmount::from_usd("$0.000001", 6).unwrap().0, 1);
        assert_eq!(AtomicAmount::from_usd("$12.50", 6).unwrap().0, 12_500_000);
        assert_eq!(AtomicAmount::from_usd("$.5", 2).unwrap().0, 50);
        // 0.1 + 0.2 style values that floats get wrong.
        assert_eq!(
            AtomicAmount::from_usd("$0.3", 18).unwrap().0,
            300_000_000_000_000_000
        );
    }

    #[test]
    fn refuses_more_precision_than_the_asset() {
        let err = AtomicAmount::from_usd("$0.0000001", 6).unwrap_err();
        assert!(matches!(
            err,
            AmountError::TooPrecise {
                given: 7,
                allowed: 6,
                ..
            }
        ));
        // Trailing zeros are not precision.
        assert_eq!(AtomicAmount::from_usd("$0.0100000", 6).unwrap().0, 10_000);
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "0.01", "$", "$-1", "$1e3", "$1.", "$abc", "$1.2.3", "$ 1,00",
        ] {
            assert!(AtomicAmount::from_usd(bad, 6).is_err(), "{bad}");
        }
        for bad in ["", "-1", "1.5", "0x10", " 1"] {
            assert!(bad.parse::<AtomicAmount>().is_err(), "{bad}");
        }
    }

    #[test]
    fn wire_round_trip() {
        let a: AtomicAmount = "10000".parse().unwrap();
        assert_eq!(a.to_string(), "10000");
        assert!("340282366920938463463374607431768211456"
            .parse::<AtomicAmount>()
            .is_err());
    }
}
