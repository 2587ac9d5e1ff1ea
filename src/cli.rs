//! Command line: `x402-gate --config FILE [--check] [--log-format text|json]`, `--version`, plus the pingora process flags that make
//! sense for an operator (daemonize, zero-downtime upgrade).

use std::path::PathBuf;

use clap::Parser;

use crate::config::LogFormat;

/// `--version`: the crate version and the build (git commit when built from a checkout, target,
/// profile), from `build.rs`.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("X402_GATE_BUILD"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "x402-gate",
    version = VERSION,
    about = "x402 payment gateway: a pingora reverse proxy that charges per request"
)]
pub struct Cli {
    /// The TOML configuration file.
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,

    /// Validate the configuration, print every error with its key path, and exit (0 valid, 1 not).
    #[arg(long)]
    pub check: bool,

    /// Run in the background (pingora daemon mode); the process id goes to `server.pid_file`.
    #[arg(short, long)]
    pub daemon: bool,

    /// Take over the listening sockets of a running instance (pingora graceful upgrade): wait
    /// on `server.upgrade_sock` for them, then send the old process SIGQUIT. Its settler keys
    /// are used only once it has exited (see the README's "Upgrades without downtime").
    #[arg(short, long)]
    pub upgrade: bool,

    /// Log line format: `text` (human-readable) or `json` (one object a line). Overrides
    /// `server.log_format`. `RUST_LOG` sets the levels.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}
