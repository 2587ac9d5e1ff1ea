//! `x402-gate`: a thin, synchronous `main`. pingora owns its runtimes, so there is no
//! `#[tokio::main]` here (one around `run` panics).

use std::process::ExitCode;

use clap::Parser;
use x402_gate::app::{self, RunOptions};
use x402_gate::cli::Cli;
use x402_gate::config::Config;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,pingora_core=warn,pingora_proxy=warn".into()),
        )
        .init();
    let cli = Cli::parse();
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{}: {} error(s)", cli.config.display(), errors.0.len());
            for e in &errors.0 {
                eprintln!("  {e}");
            }
            return ExitCode::from(1);
        }
    };
    if cli.check {
        println!(
            "{}: ok ({} networks, {} tenants, {} routes)",
            cli.config.display(),
            config.networks.len(),
            config.tenants.len(),
            config.routes.len()
        );
        return ExitCode::SUCCESS;
    }
    let options = RunOptions {
        daemon: cli.daemon,
        upgrade: cli.upgrade,
    };
    match app::run(config, options, None) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("x402-gate: {e:#}");
            ExitCode::from(1)
        }
    }
}
