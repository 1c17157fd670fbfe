//! The command line: clap's definition (`args`), the settings it resolves
//! to (`config`), the man page and completions generated from it (`docs`),
//! the built-in template's variables shown in `--help` (`vars`), the
//! detached worker's settings (`worker`), and what a refused line becomes
//! (`usage`, with `argv`, clap's second reading of it). Clap types stop
//! here: the rest of hacfg sees a `Config`.

mod args;
mod argv;
mod config;
mod docs;
mod manual;
mod usage;
mod vars;
mod worker;

use std::fs::OpenOptions;

use clap::{CommandFactory, FromArgMatches};

pub use args::Cli;
pub use config::{Command, Config, RenderMode, metrics_from};
pub use docs::{completions, man_page};
pub use usage::usage_exit;

/// The command line as clap reads it, or an exit as clap's (`--help` and
/// `--version` too; a usage error is logged first, in the log file the
/// refused line names). A Serf query's handler sends its stderr to
/// /dev/null first.
pub fn parse() -> Cli {
    if argv::answers_a_query() {
        silence_stderr();
    }
    match try_parse() {
        Ok(cli) => cli,
        Err(usage) => usage_exit(&usage, argv::log_file_of_refused().as_deref()),
    }
}

/// The detached worker (`settle --worker`) takes its settings from its
/// environment, not from its command line.
fn try_parse() -> Result<Cli, clap::Error> {
    let mut matches = command().try_get_matches()?;
    let mut cli = Cli::from_arg_matches_mut(&mut matches)?;
    if let args::CommandArgs::Settle(args::SettleArgs { worker: true }) = cli.command
        && let Some(settings) = worker::settings()?
    {
        cli.global = settings;
    }
    Ok(cli)
}

/// Clap's definition, with a variable set empty taken as unset: clap
/// would read `HACFG_RELOAD=` as a value (and refuse it).
fn command() -> clap::Command {
    let unset_if_empty = |arg: clap::Arg| {
        let empty = arg
            .get_env()
            .and_then(std::env::var_os)
            .is_some_and(|value| value.is_empty());
        if empty { arg.env(None) } else { arg }
    };
    Cli::command()
        .mut_args(unset_if_empty)
        .mut_subcommands(move |sub| sub.mut_args(unset_if_empty))
}

/// Sends stderr to /dev/null, so that no warning or error (a log file that
/// cannot be opened, a bad setting) becomes part of a query's answer; the
/// log file still gets them.
fn silence_stderr() {
    if let Ok(null) = OpenOptions::new().write(true).open("/dev/null") {
        let _ = rustix::stdio::dup2_stderr(&null);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_definition_with_empty_variables_unset_is_valid() {
        super::command().debug_assert();
    }
}
