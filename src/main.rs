//! The `cronsumer` binary: parses the command line, runs it, and turns any
//! error into one clear line and an exit code (2: configuration or usage,
//! 1: anything else). No panic or backtrace reaches the user.

use std::process::ExitCode;

use clap::Parser;
use cronsumer::registry::Registry;

#[cfg(not(feature = "fault-injection"))]
use cronsumer::consumers::registry as consumers;

/// The fault tests' build: the same modules, which panic on a chosen payload.
#[cfg(feature = "fault-injection")]
fn consumers() -> Vec<Box<dyn cronsumer::consume::handler::Handler>> {
    cronsumer::consume::fault_injection::wrap(cronsumer::consumers::registry())
}

fn main() -> ExitCode {
    cronsumer::cli::install_panic_hook();
    let cli = match cronsumer::cli::Cli::try_parse() {
        Ok(cli) => cli,
        // clap prints help (exit 0) or the usage error (exit 2) itself.
        Err(e) => e.exit(),
    };
    // The user's consumer modules and jobs: the runtime only knows them from here.
    let registry = Registry { consumers, ..cronsumer::registry() };
    match cronsumer::cli::execute(cli, registry) {
        Ok(code) => code,
        Err(err) => {
            let code = cronsumer::cli::exit_code(&err);
            for line in format!("{err:#}").lines() {
                eprintln!("error: {line}");
            }
            ExitCode::from(code)
        }
    }
}
