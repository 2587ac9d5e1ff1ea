//! `[networks.*]`: RPC URLs, settler and fee-payer keys, assets, floors; and the address
//! formats of each namespace (EIP-55 checksums, base58).

use super::*;

/// Payments per settlement transaction unless `batch_max` says otherwise: enough that a full
/// batch pays the transaction's base cost once for many payments, few enough that its gas limit
/// fits any chain's blocks many times over.
pub const DEFAULT_BATCH_MAX: u64 = 64;
/// The most `batch_max` allows (about 38M gas of limit at 150k per payment).
pub const MAX_BATCH_MAX: u64 = 256;
/// Settlement transactions of one network under way at once unless `settlements_in_flight`
/// says otherwise: enough to keep a chain with slow blocks busy, few enough that payments
/// arriving meanwhile wait and form real batches.
pub const DEFAULT_SETTLEMENTS_IN_FLIGHT: u64 = 4;
pub const MAX_SETTLEMENTS_IN_FLIGHT: u64 = 64;
/// How long a sent EVM settlement may go unmined before it is replaced at higher fees, unless
/// `replace_after_seconds` says otherwise: several blocks on the chains we serve (2 s on Base,
/// 12 s on Ethereum), and four tries within a request's 60 s receipt wait.
pub const DEFAULT_REPLACE_AFTER: std::time::Duration = std::time::Duration::from_secs(15);
/// The most `replace_after_seconds` allows: a replacement must fit in the 60 s receipt wait.
pub const MAX_REPLACE_AFTER_SECONDS: u64 = 30;

/// A native-coin amount written in whole coins (`"0.05"` ETH) -> the smallest unit (wei), with
/// `decimals` digits after the point at most.
pub fn parse_native_amount(text: &str, decimals: u32) -> Result<u128, String> {
    let text = text.trim();
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && frac.is_empty() || !digits(whole) || !digits(frac) {
        return Err(format!(
            "`{text}` is not an amount in whole coins like \"0.01\""
        ));
    }
    if frac.len() > decimals as usize {
        return Err(format!("`{text}` has more than {decimals} decimals"));
    }
    let scale = 10u128.pow(decimals);
    let too_big = || format!("`{text}` is too large");
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| too_big())?
    };
    let frac: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse::<u128>().map_err(|_| too_big())? * 10u128.pow(decimals - frac.len() as u32)
    };
    whole
        .checked_mul(scale)
        .and_then(|w| w.checked_add(frac))
        .ok_or_else(too_big)
}

pub(super) fn networks(
    raw: BTreeMap<String, RawNetwork>,
    e: &mut Errors,
) -> BTreeMap<Network, NetworkConfig> {
    let mut out = BTreeMap::new();
    for (key, net) in raw {
        let path = format!("networks.{}", key_segment(&key));
        let network = match Network::from_str(&key) {
            Ok(n) => n,
            Err(err) => {
                e.push(&path, err.to_string());
                continue;
            }
        };
        let rpc_url = net.rpc_url.unwrap_or_default();
        match url::Url::parse(&rpc_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https" | "ws" | "wss") => {}
            _ => e.push(
                format!("{path}.rpc_url"),
                format!("`{rpc_url}` is not an http(s) or ws(s) URL"),
            ),
        }
        let rpc_timeout_seconds = net
            .rpc_timeout_seconds
            .unwrap_or(DEFAULT_RPC_TIMEOUT_SECONDS);
        if rpc_timeout_seconds == 0 {
            e.push(format!("{path}.rpc_timeout_seconds"), "must be at least 1");
        }
        let min_settler_balance = net.min_settler_balance.and_then(|raw| {
            let key = format!("{path}.min_settler_balance");
            let text = match raw {
                RawCoins::Text(text) => text,
                RawCoins::Number(n) => {
                    // A float cannot say 0.1 exactly; amounts of money are strings.
                    e.push(
                        key,
                        format!("write it as a string of whole coins, e.g. \"{n}\""),
                    );
                    return None;
                }
            };
            // ETH has 18 decimals, SOL 9.
            let decimals = match network.namespace() {
                Namespace::Eip155 => 18,
                Namespace::Solana => 9,
            };
            parse_native_amount(&text, decimals)
                .map_err(|m| e.push(key, m))
                .ok()
        });
        let signer = match network.namespace() {
            Namespace::Eip155 => {
                if net.commitment.is_some() {
                    e.push(
                        format!("{path}.commitment"),
                        "is for Solana networks; EVM networks use confirmations",
                    );
                }
                if net.fee_payer_key.is_some() {
                    e.push(
                        format!("{path}.fee_payer_key"),
                        "is for Solana networks; EVM networks use settler_key",
                    );
                }
                let mut keys: Vec<(String, String)> = Vec::new();
                if let Some(k) = net.settler_key {
                    keys.push((format!("{path}.settler_key"), k));
                }
                for (i, k) in net.settler_keys.unwrap_or_default().into_iter().enumerate() {
                    keys.push((format!("{path}.settler_keys[{i}]"), k));
                }
                if keys.is_empty() {
                    e.push(
                        format!("{path}.settler_key"),
                        "is required (or settler_keys): a 32-byte hex private key",
                    );
                }
                let mut seen = BTreeSet::new();
                for (key_path, key) in &keys {
                    if !is_evm_private_key(key) {
                        e.push(
                            key_path,
                            "must be a 32-byte hex private key (0x followed by 64 hex digits)",
                        );
                    } else if !seen.insert(key.to_ascii_lowercase()) {
                        e.push(key_path, "repeats another settler key of this network");
                    }
                }
                let batch_max = net.batch_max.unwrap_or(DEFAULT_BATCH_MAX);
                if !(1..=MAX_BATCH_MAX).contains(&batch_max) {
                    e.push(
                        format!("{path}.batch_max"),
                        format!("must be from 1 (no batching) to {MAX_BATCH_MAX}"),
                    );
                }
                let in_flight = net
                    .settlements_in_flight
                    .unwrap_or(DEFAULT_SETTLEMENTS_IN_FLIGHT);
                if !(1..=MAX_SETTLEMENTS_IN_FLIGHT).contains(&in_flight) {
                    e.push(
                        format!("{path}.settlements_in_flight"),
                        format!("must be from 1 to {MAX_SETTLEMENTS_IN_FLIGHT}"),
                    );
                }
                let replace_after = match net.replace_after_seconds {
                    None => Some(DEFAULT_REPLACE_AFTER),
                    Some(0) => None,
                    Some(s) if s <= MAX_REPLACE_AFTER_SECONDS => {
                        Some(std::time::Duration::from_secs(s))
                    }
                    Some(_) => {
                        e.push(
                            format!("{path}.replace_after_seconds"),
                            format!("must be from 1 to {MAX_REPLACE_AFTER_SECONDS} (0: never replace a stuck settlement)"),
                        );
                        Some(DEFAULT_REPLACE_AFTER)
                    }
                };
                NetworkSigner::Evm {
                    replace_after,
                    settler_keys: keys.into_iter().map(|(_, k)| Secret::new(k)).collect(),
                    confirmations: net.confirmations.unwrap_or(1).max(1),
                    batch_max: batch_max.clamp(1, MAX_BATCH_MAX) as usize,
                    settlements_in_flight: in_flight.clamp(1, MAX_SETTLEMENTS_IN_FLIGHT) as usize,
                }
            }
            Namespace::Solana => {
                if net.settler_key.is_some() {
                    e.push(
                        format!("{path}.settler_key"),
                        "is for EVM networks; Solana networks use fee_payer_key",
                    );
                }
                for (key, set) in [
                    ("batch_max", net.batch_max.is_some()),
                    ("settlements_in_flight", net.settlements_in_flight.is_some()),
                    ("replace_after_seconds", net.replace_after_seconds.is_some()),
                ] {
                    if set {
                        e.push(
                            format!("{path}.{key}"),
                            "is for EVM networks: Solana payments are each signed by their payer",
                        );
                    }
                }
                if net.confirmations.is_some() {
                    e.push(
                        format!("{path}.confirmations"),
                        "is for EVM networks; Solana networks use commitment (\"confirmed\" or \"finalized\")",
                    );
                }
                let commitment = match net.commitment.as_deref() {
                    None | Some("confirmed") => SolanaCommitment::Confirmed,
                    Some("finalized") => SolanaCommitment::Finalized,
                    Some(other) => {
                        e.push(
                            format!("{path}.commitment"),
                            format!("`{other}` is not one of confirmed, finalized"),
                        );
                        SolanaCommitment::Confirmed
                    }
                };
                let key = net.fee_payer_key.unwrap_or_default();
                let fee_payer = match bs58::decode(&key).into_vec() {
                    Ok(bytes) if bytes.len() == 64 => bs58::encode(&bytes[32..]).into_string(),
                    _ => {
                        e.push(
                            format!("{path}.fee_payer_key"),
                            "must be a base58 64-byte keypair",
                        );
                        String::new()
                    }
                };
                NetworkSigner::Solana {
                    fee_payer_key: Secret::new(key),
                    fee_payer,
                    commitment,
                }
            }
        };
        if net.assets.is_empty() {
            e.push(
                format!("{path}.assets"),
                "a network needs at least one asset",
            );
        }
        let mut symbols = BTreeSet::new();
        let mut assets = Vec::new();
        for (i, raw_asset) in net.assets.into_iter().enumerate() {
            let Some(a) = asset(&network, raw_asset, &format!("{path}.assets[{i}]"), e) else {
                continue;
            };
            if symbols.insert(a.symbol.clone()) {
                assets.push(a);
            } else {
                e.push(
                    format!("{path}.assets[{i}].symbol"),
                    format!("symbol `{}` is listed twice", a.symbol),
                );
            }
        }
        out.insert(
            network.clone(),
            NetworkConfig {
                network,
                rpc_url,
                rpc_timeout: Duration::from_secs(rpc_timeout_seconds.max(1)),
                min_settler_balance,
                signer,
                assets,
            },
        );
    }
    out
}

pub(super) fn asset(
    network: &Network,
    raw: RawAsset,
    path: &str,
    e: &mut Errors,
) -> Option<AssetConfig> {
    let before = e.0.len();
    let symbol = raw.symbol.unwrap_or_default();
    if symbol.is_empty() {
        e.push(format!("{path}.symbol"), "is required");
    }
    let decimals = raw.decimals.unwrap_or_else(|| {
        e.push(format!("{path}.decimals"), "is required");
        0
    });
    if decimals > 30 {
        e.push(format!("{path}.decimals"), "must be at most 30");
    }
    let (address, eip712) = match network.namespace() {
        Namespace::Eip155 => {
            if raw.mint.is_some() {
                e.push(
                    format!("{path}.mint"),
                    "is for Solana assets; EVM assets use address",
                );
            }
            let address = match raw.address.as_deref().map(parse_evm_address) {
                Some(Ok(a)) => a,
                Some(Err(msg)) => {
                    e.push(format!("{path}.address"), msg);
                    String::new()
                }
                None => {
                    e.push(format!("{path}.address"), "is required");
                    String::new()
                }
            };
            // The EIP-712 domain must be the token's own: clients sign over it, and a wrong name
            // ("USDC" vs "USD Coin") makes every signature fail.
            let name = raw.eip712_name.unwrap_or_default();
            let version = raw.eip712_version.unwrap_or_default();
            if name.is_empty() {
                e.push(
                    format!("{path}.eip712_name"),
                    "is required (the token's EIP-712 name(), e.g. \"USD Coin\")",
                );
            }
            if version.is_empty() {
                e.push(
                    format!("{path}.eip712_version"),
                    "is required (the token's EIP-712 version(), e.g. \"2\")",
                );
            }
            (address, Some((name, version)))
        }
        Namespace::Solana => {
            if raw.address.is_some() {
                e.push(
                    format!("{path}.address"),
                    "is for EVM assets; Solana assets use mint",
                );
            }
            if raw.eip712_name.is_some() || raw.eip712_version.is_some() {
                e.push(path, "eip712_name/eip712_version apply to EVM assets only");
            }
            let mint = raw.mint.unwrap_or_default();
            if !is_solana_address(&mint) {
                e.push(
                    format!("{path}.mint"),
                    format!("`{mint}` is not a base58 Solana address"),
                );
            }
            (mint, None)
        }
    };
    (e.0.len() == before).then_some(AssetConfig {
        symbol,
        address,
        decimals,
        eip712,
    })
}

pub(super) fn is_evm_private_key(k: &str) -> bool {
    let hex = k.strip_prefix("0x").unwrap_or(k);
    hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) && hex.bytes().any(|b| b != b'0')
}

/// Parses an EVM address, refusing a mixed-case one whose EIP-55 checksum is wrong (a typo), and
/// returns it checksummed.
pub(super) fn parse_evm_address(a: &str) -> Result<String, String> {
    let body = a.strip_prefix("0x").unwrap_or("");
    if body.len() != 40 || !body.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "`{a}` is not an EVM address (0x followed by 40 hex digits)"
        ));
    }
    let mixed = body.bytes().any(|b| b.is_ascii_lowercase())
        && body.bytes().any(|b| b.is_ascii_uppercase());
    let checksummed = eip55(&body.to_ascii_lowercase());
    if mixed && checksummed[2..] != *body {
        return Err(format!("`{a}` has a wrong EIP-55 checksum (a typo?)"));
    }
    Ok(checksummed)
}

/// The EIP-55 mixed-case form of a lower-case 40-digit hex address: a letter is upper-cased where
/// the matching nibble of the keccak-256 of the lower-case hex is 8 or more.
pub(super) fn eip55(lower: &str) -> String {
    use sha3::{Digest, Keccak256};
    let hash = Keccak256::digest(lower.as_bytes());
    let mut out = String::with_capacity(42);
    out.push_str("0x");
    for (i, c) in lower.chars().enumerate() {
        let nibble = (hash[i / 2] >> if i % 2 == 0 { 4 } else { 0 }) & 0x0f;
        out.push(if nibble >= 8 {
            c.to_ascii_uppercase()
        } else {
            c
        });
    }
    out
}

pub(super) fn is_solana_address(a: &str) -> bool {
    matches!(bs58::decode(a).into_vec(), Ok(b) if b.len() == 32)
}

/// Parses a payout address for its network's namespace (EVM hex, Solana base58).
pub fn parse_address_for(network: &Network, a: &str) -> Result<String, String> {
    match network.namespace() {
        Namespace::Eip155 => parse_evm_address(a),
        Namespace::Solana if is_solana_address(a) => Ok(a.to_string()),
        Namespace::Solana => Err(format!("`{a}` is not a base58 Solana address")),
    }
}

#[cfg(test)]
mod checksum_tests {
    use super::*;

    #[test]
    fn eip55_vectors_from_the_eip() {
        for a in [
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
            "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        ] {
            assert_eq!(eip55(&a[2..].to_ascii_lowercase()), a);
            assert_eq!(parse_evm_address(a).unwrap(), a);
            assert_eq!(parse_evm_address(&a.to_ascii_lowercase()).unwrap(), a);
        }
        assert!(parse_evm_address("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD").is_err());
    }
}
