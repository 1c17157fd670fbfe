//! hacfg: keep an HAProxy configuration in step with a changing set of nodes.

use std::process::ExitCode;

use clap::Parser;
use hacfg::{cli, commands, config, exit, log};

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let verbose = cli.global.verbose;
    match config::Config::from_cli(cli).and_then(|cfg| commands::run(&cfg)) {
        Ok(outcome) => {
            if let exit::Outcome::Skipped(message) | exit::Outcome::Drift(message) = &outcome {
                log::print_warning(message);
            }
            outcome.code().into()
        }
        Err(err) => match err.downcast::<clap::Error>() {
            // A usage problem found after parsing: clap's format, exit 2.
            Ok(usage) => usage.exit(),
            Err(err) => {
                log::print_error(&err, verbose);
                exit::code_of(&err).into()
            }
        },
    }
}
