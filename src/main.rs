//! `x402-gate`: a thin, synchronous `main`. pingora owns its runtimes, so there is no
//! `#[tokio::main]` here (one around `run` panics).

use std::process::ExitCode;

use clap::Parser;
use x402_gate::app::{self, RunOptions};
use x402_gate::cli::Cli;
use x402_gate::config::Config;
use x402_gate::{logging, reporting};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The format may come from the file, so logging starts once it is read; until then nothing
    // logs (a refused file is reported on stderr below).
    let config = Config::load(&cli.config);
    let format = cli
        .log_format
        .or_else(|| config.as_ref().ok().map(|c| c.server.log_format))
        .unwrap_or_default();
    let dsn = config
        .as_ref()
        .ok()
        .filter(|_| !cli.check)
        .and_then(|c| reporting::dsn(&c.sentry));
    // Held to the end of `main`: dropping it writes out the lines still queued.
    let _log = logging::init(format, dsn.is_some(), !cli.daemon);
    let config = match config {
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
    // Before any other thread exists (see `reporting::init`). pingora's daemon mode forks later,
    // and the sending thread would not survive the fork: no reporting there.
    let _reporting = match dsn {
        Some(_) if cli.daemon => {
            tracing::warn!("error reporting is off under --daemon; run in the foreground under a supervisor (systemd) to report to Sentry");
            None
        }
        Some(dsn) => match reporting::init(&config, &dsn) {
            Ok(guard) => Some(guard),
            Err(e) => {
                eprintln!("x402-gate: {e}");
                return ExitCode::from(1);
            }
        },
        None => None,
    };
    // Reloads read the same file again; relative to where we started (a daemon changes its
    // working directory).
    let config_file = std::fs::canonicalize(&cli.config).unwrap_or(cli.config.clone());
    let options = RunOptions {
        daemon: cli.daemon,
        upgrade: cli.upgrade,
        config_file: Some(config_file),
        reload_on_sighup: true,
    };
    match app::run(config, options, None) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("x402-gate: {e:#}");
            ExitCode::from(1)
        }
    }
}
