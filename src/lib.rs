pub mod config;
pub mod x402;
