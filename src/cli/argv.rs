//! The command line read again by clap, when its first reading cannot say:
//! the log file of a line it refused, whether a flag is on the line or its
//! value came from a variable; and whether the line answers a Serf query.
//!
//! The second reading knows one option and takes every other word as it
//! comes, one word per positional argument. That is exact for hacfg's
//! definition: none of its options takes a value that starts with `-`,
//! so a `--long` word before `--` is that option wherever it stands, and
//! clap itself splits `--long=VALUE` and reads the variable.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command};

/// The id of the one option the second reading knows.
const KNOWN: &str = "known";

/// `args` (the binary first) read knowing only `--long` (and its variable).
fn reread(args: &[OsString], long: &str, env: Option<&str>) -> ArgMatches {
    let mut known = Arg::new(KNOWN)
        .long(long.to_owned())
        .num_args(0..=1)
        .action(ArgAction::Set)
        .value_parser(clap::value_parser!(OsString));
    if let Some(env) = env {
        known = known.env(env.to_owned());
    }
    let words = (0..args.len()).map(|i| {
        Arg::new(format!("word{i}"))
            .allow_hyphen_values(true)
            .value_parser(clap::value_parser!(OsString))
    });
    Command::new("hacfg")
        .disable_help_flag(true)
        .disable_version_flag(true)
        .ignore_errors(true)
        .args_override_self(true)
        .arg(known)
        .args(words)
        .try_get_matches_from(args)
        .unwrap_or_default()
}

fn args() -> Vec<OsString> {
    std::env::args_os().collect()
}

/// The log file named on a command line clap refused: `--log-file PATH`,
/// `--log-file=PATH` (the last one given), else HACFG_LOG_FILE.
pub fn log_file_of_refused() -> Option<PathBuf> {
    log_file_in(&args())
}

fn log_file_in(args: &[OsString]) -> Option<PathBuf> {
    reread(args, "log-file", Some("HACFG_LOG_FILE"))
        .get_one::<OsString>(KNOWN)
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
}

/// Whether `--long` is on the command line (`--long V` or `--long=V`).
pub fn flag_given(long: &str) -> bool {
    flag_in(&args(), long)
}

fn flag_in(args: &[OsString], long: &str) -> bool {
    reread(args, long, None).contains_id(KNOWN)
}

/// Whether this run is `hacfg serf` handling a Serf query: Serf sends a
/// query handler's stdout *and stderr* back as its answer. Any word
/// `serf` counts, so that a line clap refuses is a query's too.
pub fn answers_a_query() -> bool {
    std::env::var_os("SERF_EVENT").is_some_and(|e| e == "query")
        && args().iter().skip(1).any(|a| a == "serf")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(words: &[&str]) -> Vec<OsString> {
        std::iter::once("hacfg")
            .chain(words.iter().copied())
            .map(OsString::from)
            .collect()
    }

    #[test]
    fn the_log_file_of_a_refused_line_is_read_wherever_it_stands() {
        let log = |words: &[&str]| log_file_in(&line(words)).map(|p| p.display().to_string());
        let some = |p: &str| Some(p.to_string());
        assert_eq!(log(&["--log-file", "L", "add", "bad!", "x"]), some("L"));
        assert_eq!(log(&["--nodes-dri", "n", "add", "--log-file=L"]), some("L"));
        assert_eq!(
            log(&["-qz", "--bogus", "--log-file", "L", "lsit"]),
            some("L")
        );
        assert_eq!(
            log(&["--log-file", "A", "render", "--log-file", "B"]),
            some("B")
        );
        assert_eq!(log(&["add", "-", "--log-file", "L", "-x"]), some("L"));
        // Not the option: a longer name, or after `--`.
        assert_eq!(log(&["render", "--log-filex", "L"]), None);
        assert_eq!(log(&["render", "--", "--log-file", "L"]), None);
        assert_eq!(log(&["render", "--log-file="]), None);
        assert_eq!(log(&["render", "--log-file"]), None);
    }

    /// What makes the second reading exact: no option of hacfg's takes a
    /// value that starts with `-`.
    #[test]
    fn no_option_takes_a_hyphen_value() {
        use clap::CommandFactory;
        let cmd = super::super::Cli::command();
        for sub in std::iter::once(&cmd).chain(cmd.get_subcommands()) {
            for arg in sub.get_arguments() {
                let hyphen =
                    arg.is_allow_hyphen_values_set() || arg.is_allow_negative_numbers_set();
                assert!(!hyphen, "{} {}", sub.get_name(), arg.get_id());
            }
        }
    }

    #[test]
    fn a_flag_is_given_before_the_end_of_the_options() {
        let given = |words: &[&str], long| flag_in(&line(words), long);
        assert!(given(&["--bogus", "render", "--quiet"], "quiet"));
        assert!(given(&["render", "--default-port=80"], "default-port"));
        assert!(given(&["--default-port", "80", "render"], "default-port"));
        assert!(!given(&["render", "--", "--quiet"], "quiet"));
        assert!(!given(&["render", "-q"], "quiet"));
        assert!(!given(&["render"], "quiet"));
    }
}
