//! The bodies of the fuzz targets, one module per target, each a plain `run(&[u8])`.
//!
//! Why here and not in the gateway's library: these are test harnesses, not product code, so they
//! stay out of `x402_gate` (no `#[doc(hidden)]` module compiled into every build). They use only
//! the library's public API. Two crates compile this one directory, so the fuzzer and the replay
//! test cannot drift apart:
//! - `fuzz/` (cargo-fuzz, its own workspace) builds it as its library; each
//!   `fuzz/fuzz_targets/<name>.rs` is one line calling `x402_gate_fuzz::<name>::run`;
//! - `tests/fuzz_corpus.rs` (the normal, stable `cargo test`, so CI) includes it with
//!   `#[path = "../fuzz/targets/mod.rs"]` and replays every file of `fuzz/corpus/<name>/`.
//!
//! Every body asserts properties where one is cheap to state, not only "no panic": a panic (an
//! `assert!` included) is what libFuzzer reports as a crash, and what the replay test fails on.

pub mod config_loader;
pub mod evm_payload;
pub mod payment_header;
pub mod route_match;
pub mod svm_transaction;

use std::sync::OnceLock;

use x402_gate::config::Config;
use x402_gate::routes::RouteTable;

/// The target names, as `fuzz/corpus/<name>/` and `cargo fuzz run <name>` know them.
pub const TARGETS: &[&str] = &[
    "config_loader",
    "evm_payload",
    "payment_header",
    "route_match",
    "svm_transaction",
];

/// Runs target `name` on one input (for the replay test).
pub fn run(name: &str, data: &[u8]) {
    match name {
        "config_loader" => config_loader::run(data),
        "evm_payload" => evm_payload::run(data),
        "payment_header" => payment_header::run(data),
        "route_match" => route_match::run(data),
        "svm_transaction" => svm_transaction::run(data),
        other => panic!("no fuzz target `{other}`"),
    }
}

/// The fixed "now" of the EVM target, so a signed seed stays valid forever (Unix seconds).
pub const NOW: u64 = 1_750_000_000;

/// The EVM network, its token and the tenant's payout address on it.
pub const EVM_NETWORK: &str = "eip155:84532";
pub const EVM_ASSET: &str = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";
pub const EVM_PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
/// anvil's first public dev key (the settler: only needed to build the backend).
pub const EVM_SETTLER_KEY: &str =
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
/// The Solana network, its mint and the tenant's payout wallet on it.
pub const SVM_NETWORK: &str = "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1";
pub const SVM_MINT: &str = "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU";
pub const SVM_PAY_TO: &str = "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM";
/// config/example.toml's throwaway fee-payer keypair (validation only, never funded).
pub const SVM_FEE_PAYER_KEY: &str =
    "4Z7cXSyeFR8wNGMVXUE1TwtKn5D5Vu7FzEv69dokLv7KrQk7h6pu4LF8ZRR9yQBhc7uSM6RTTZtU1fmaxiNrxXrs";

/// The gateway configuration every target but `config_loader` runs against: both chain
/// families, and routes of every kind the matcher distinguishes (host, methods, exact, prefix,
/// case-insensitive, free catch-all). Its RPC URLs are never called: the targets are pure.
pub fn fixture_config_text() -> String {
    format!(
        r#"
[networks."{EVM_NETWORK}"]
rpc_url = "http://127.0.0.1:1"
settler_key = "{EVM_SETTLER_KEY}"
assets = [{{ symbol = "USDC", address = "{EVM_ASSET}", decimals = 6, eip712_name = "USDC", eip712_version = "2" }}]

[networks."{SVM_NETWORK}"]
rpc_url = "http://127.0.0.1:1"
fee_payer_key = "{SVM_FEE_PAYER_KEY}"
assets = [{{ symbol = "USDC", mint = "{SVM_MINT}", decimals = 6 }}]

[[tenants]]
id = "acme"
tier = "enterprise"
pay_to = {{ "{EVM_NETWORK}" = "{EVM_PAY_TO}", "{SVM_NETWORK}" = "{SVM_PAY_TO}" }}

[[routes]]
tenant = "acme"
host = "api.example.com"
path = "/v1/forecast/*"
methods = ["GET", "POST"]
upstream = "http://127.0.0.1:1"
price = "$0.25"

[[routes]]
tenant = "acme"
path = "/paid/*"
upstream = "http://127.0.0.1:1"
price = "$0.01"

[[routes]]
tenant = "acme"
path = "/report"
upstream = "http://127.0.0.1:1"
price = "$1"

[[routes]]
tenant = "acme"
path = "/ci/*"
case_insensitive = true
upstream = "http://127.0.0.1:1"
price = "$0.000001"

[[routes]]
tenant = "acme"
path = "/*"
upstream = "http://127.0.0.1:1"
price = "free"
"#
    )
}

/// The fixture, parsed once.
pub fn fixture_config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        Config::from_toml(&fixture_config_text(), &|_| None).expect("the fixture config is valid")
    })
}

/// The fixture's route table, built once.
/// The fixture's offer for `/paid/*` on `network`.
pub fn paid_offer(network: &str) -> &'static x402_gate::pricing::Offer {
    fixture_table()
        .find(None, "GET", "/paid/x")
        .and_then(|r| r.offers.as_ref())
        .and_then(|o| o.offers.iter().find(|o| o.network.to_string() == network))
        .expect("the fixture prices /paid/* on every network")
}

pub fn fixture_table() -> &'static RouteTable {
    static TABLE: OnceLock<RouteTable> = OnceLock::new();
    TABLE.get_or_init(|| RouteTable::build(fixture_config()))
}
