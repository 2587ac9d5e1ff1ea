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

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// `atomic` written in whole tokens with exactly `decimals` fractional digits: the
        /// reference the parser is checked against (what a wallet or a dashboard would show).
        fn whole_tokens(atomic: u128, decimals: u8) -> String {
            let digits = format!("{atomic:0>width$}", width = usize::from(decimals) + 1);
            let (whole, frac) = digits.split_at(digits.len() - usize::from(decimals));
            if frac.is_empty() {
                whole.to_string()
            } else {
                format!("{whole}.{frac}")
            }
        }

        /// Small amounts (prices), any u128, and the largest.
        fn atomic() -> impl Strategy<Value = u128> {
            prop_oneof![0u128..1_000_000_000, any::<u128>(), Just(u128::MAX)]
        }

        proptest! {
            /// Formatting an amount in whole tokens and parsing it back gives the same amount,
            /// with or without the trailing zeros, for every decimals a u128 can hold.
            #[test]
            fn whole_tokens_round_trip(decimals in 0u8..=38, atomic in atomic()) {
                let text = whole_tokens(atomic, decimals);
                prop_assert_eq!(AtomicAmount::from_decimal(&text, decimals), Ok(AtomicAmount(atomic)));
                let trimmed = if text.contains('.') {
                    text.trim_end_matches('0').trim_end_matches('.').to_string()
                } else {
                    text.clone()
                };
                prop_assert_eq!(AtomicAmount::from_decimal(&trimmed, decimals), Ok(AtomicAmount(atomic)));
                prop_assert_eq!(AtomicAmount::from_usd(&format!("${text}"), decimals), Ok(AtomicAmount(atomic)));
            }

            /// The wire form (a decimal integer string) round-trips every u128.
            #[test]
            fn wire_form_round_trips(atomic in any::<u128>()) {
                let text = AtomicAmount(atomic).to_string();
                prop_assert_eq!(text.parse::<AtomicAmount>(), Ok(AtomicAmount(atomic)));
            }

            /// Whatever the text and the decimals: a typed error or an amount, never a panic, and
            /// an amount only for plain digits with at most one point, equal to the reference.
            #[test]
            fn any_text_parses_or_errs(text in "[-+$ .0-9eE_,x]{0,60}|[0-9]{30,80}(\\.[0-9]{0,60})?|\\PC{0,40}", decimals in any::<u8>()) {
                match AtomicAmount::from_decimal(&text, decimals) {
                    Ok(AtomicAmount(a)) => {
                        prop_assert!(text.bytes().all(|b| b.is_ascii_digit() || b == b'.'));
                        prop_assert!(text.matches('.').count() <= 1);
                        // Back to whole tokens: the same number (leading and trailing zeros aside).
                        let canonical = |t: &str| {
                            let (w, f) = t.split_once('.').unwrap_or((t, ""));
                            let w = w.trim_start_matches('0');
                            let f = f.trim_end_matches('0');
                            format!("{}.{f}", if w.is_empty() { "0" } else { w })
                        };
                        prop_assert_eq!(canonical(&whole_tokens(a, decimals)), canonical(&text));
                    }
                    Err(AmountError::NotANumber(t) | AmountError::Overflow(t)) => prop_assert_eq!(&t, &text),
                    Err(AmountError::TooPrecise { given, allowed, .. }) => {
                        prop_assert!(given > usize::from(allowed));
                    }
                }
                let stripped = text.trim_start_matches('0');
                match text.parse::<AtomicAmount>() {
                    Ok(AtomicAmount(a)) => {
                        prop_assert_eq!(a.to_string(), if stripped.is_empty() { "0" } else { stripped });
                    }
                    Err(_) => prop_assert!(
                        text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) || stripped.len() >= 39
                    ),
                }
            }

            /// Negative, signed, exponent and separated forms are refused, however large.
            #[test]
            fn signed_and_scientific_forms_are_refused(n in any::<u64>(), decimals in 0u8..=30) {
                for text in [format!("-{n}"), format!("+{n}"), format!("{n}e3"), format!("1_{n}"), format!("{n},5"), format!(" {n}")] {
                    prop_assert!(AtomicAmount::from_decimal(&text, decimals).is_err(), "{}", text);
                    // `from_usd` trims the space after `$` ("$ 5"), and nothing else.
                    if !text.starts_with(' ') {
                        prop_assert!(AtomicAmount::from_usd(&format!("${text}"), decimals).is_err(), "{}", text);
                    }
                    prop_assert!(text.parse::<AtomicAmount>().is_err(), "{}", text);
                }
            }

            /// Huge amounts overflow into a typed error, and the largest representable one does
            /// not: no wrapping, no panic.
            #[test]
            fn huge_amounts_overflow_cleanly(extra in 1u128..1_000_000, decimals in 0u8..=38) {
                let scale = 10u128.pow(u32::from(decimals));
                let max_whole = u128::MAX / scale;
                prop_assert_eq!(
                    AtomicAmount::from_decimal(&max_whole.to_string(), decimals),
                    Ok(AtomicAmount(max_whole * scale))
                );
                let over = match max_whole.checked_add(extra) {
                    Some(v) => v.to_string(),
                    None => format!("{max_whole}{}", extra % 10),
                };
                prop_assert_eq!(
                    AtomicAmount::from_decimal(&over, decimals),
                    Err(AmountError::Overflow(over.clone()))
                );
                let wire = format!("{}{}", u128::MAX, extra);
                prop_assert_eq!(wire.parse::<AtomicAmount>(), Err(AmountError::Overflow(wire.clone())));
            }
        }
    }
}
