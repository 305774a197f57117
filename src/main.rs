//! The `cronsumer` binary: parses the command line, runs it, and turns any
//! error into one clear line and an exit code (2: configuration or usage,
//! 1: anything else). No panic or backtrace reaches the user.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    cronsumer::cli::install_panic_hook();
    let cli = match cronsumer::cli::Cli::try_parse() {
        Ok(cli) => cli,
        // clap prints help (exit 0) or the usage error (exit 2) itself.
        Err(e) => e.exit(),
    };
    match cronsumer::cli::execute(cli) {
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
