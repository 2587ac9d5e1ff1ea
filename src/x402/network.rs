//! CAIP-2 network identifiers (`eip155:84532`, `solana:5eykt…`) and the v1 names that map to them.
//!
//! v2 speaks CAIP-2 only; v1 speaks short names (`base-sepolia`). The mapping is a fixed table taken
//! from the TS reference, because a v1 client validates names against exactly that enum: a name we
//! invented would make the whole 402 unparsable for it.

use std::fmt;
use std::str::FromStr;

/// The chain family a network belongs to; decides address formats and the verifier used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Namespace {
    Eip155,
    Solana,
}

/// A CAIP-2 chain id: `namespace:reference`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Network {
    id: String,
    colon: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    #[error(
        "`{0}` is not a CAIP-2 network id (expected `namespace:reference`, e.g. `eip155:8453`)"
    )]
    Malformed(String),
    #[error("unsupported namespace `{0}` (supported: eip155, solana)")]
    UnsupportedNamespace(String),
    #[error("`{0}`: an eip155 reference must be a decimal chain id")]
    BadChainId(String),
}

impl Network {
    pub fn as_str(&self) -> &str {
        &self.id
    }

    pub fn namespace(&self) -> Namespace {
        match &self.id[..self.colon] {
            "eip155" => Namespace::Eip155,
            _ => Namespace::Solana,
        }
    }

    pub fn reference(&self) -> &str {
        &self.id[self.colon + 1..]
    }

    /// The EVM chain id, for `eip155:*` networks.
    pub fn evm_chain_id(&self) -> Option<u64> {
        match self.namespace() {
            Namespace::Eip155 => self.reference().parse().ok(),
            Namespace::Solana => None,
        }
    }

    /// The v1 name of this network, if the v1 protocol knows it.
    pub fn v1_name(&self) -> Option<&'static str> {
        V1_NAMES
            .iter()
            .find(|(_, caip)| *caip == self.id)
            .map(|(name, _)| *name)
    }

    /// The network a v1 name stands for.
    pub fn from_v1_name(name: &str) -> Option<Network> {
        V1_NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, caip)| caip.parse().ok())
    }

    /// Whether a tier pattern (`eip155:8453`, `solana:*`, `*`) covers this network.
    pub fn matches_pattern(&self, pattern: &str) -> bool {
        match pattern.strip_suffix('*') {
            Some("") => true,
            Some(prefix) => self.id.starts_with(prefix),
            None => self.id == pattern,
        }
    }
}

impl FromStr for Network {
    type Err = NetworkError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let colon = s
            .find(':')
            .ok_or_else(|| NetworkError::Malformed(s.to_string()))?;
        let (ns, reference) = (&s[..colon], &s[colon + 1..]);
        if reference.is_empty() || reference.contains(':') {
            return Err(NetworkError::Malformed(s.to_string()));
        }
        match ns {
            "eip155" => {
                if reference.parse::<u64>().is_err() || reference.starts_with('0') {
                    return Err(NetworkError::BadChainId(s.to_string()));
                }
            }
            "solana" => {
                if !reference.chars().all(|c| c.is_ascii_alphanumeric()) || reference.len() > 32 {
                    return Err(NetworkError::Malformed(s.to_string()));
                }
            }
            other => return Err(NetworkError::UnsupportedNamespace(other.to_string())),
        }
        Ok(Network {
            id: s.to_string(),
            colon,
        })
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

/// v1 network names, copied from the TS reference's map (`@x402/core` 2.27). Only names whose chain
/// id we are sure of are listed: a wrong entry would send a v1 client to the wrong chain.
const V1_NAMES: &[(&str, &str)] = &[
    ("base", "eip155:8453"),
    ("base-sepolia", "eip155:84532"),
    ("ethereum", "eip155:1"),
    ("sepolia", "eip155:11155111"),
    ("polygon", "eip155:137"),
    ("polygon-amoy", "eip155:80002"),
    ("avalanche", "eip155:43114"),
    ("avalanche-fuji", "eip155:43113"),
    ("solana", "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp"),
    ("solana-devnet", "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays_caip2() {
        let n: Network = "eip155:84532".parse().unwrap();
        assert_eq!(n.namespace(), Namespace::Eip155);
        assert_eq!(n.evm_chain_id(), Some(84532));
        assert_eq!(n.to_string(), "eip155:84532");
        let s: Network = "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1".parse().unwrap();
        assert_eq!(s.namespace(), Namespace::Solana);
        assert_eq!(s.evm_chain_id(), None);
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "base",
            "eip155:",
            "eip155:abc",
            "eip155:01",
            "cosmos:hub",
            ":1",
            "a:b:c",
        ] {
            assert!(bad.parse::<Network>().is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn v1_names_round_trip() {
        let n = Network::from_v1_name("base-sepolia").unwrap();
        assert_eq!(n.as_str(), "eip155:84532");
        assert_eq!(n.v1_name(), Some("base-sepolia"));
        let local: Network = "eip155:31337".parse().unwrap();
        assert_eq!(local.v1_name(), None);
        assert!(Network::from_v1_name("not-a-chain").is_none());
    }

    #[test]
    fn patterns() {
        let n: Network = "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp".parse().unwrap();
        assert!(n.matches_pattern("solana:*"));
        assert!(n.matches_pattern("*"));
        assert!(!n.matches_pattern("eip155:*"));
        assert!(!n.matches_pattern("solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1"));
    }
}
