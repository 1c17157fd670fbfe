//! A refused command line, told the way clap tells it (exit 2), with the
//! value escaped and the variable named when a value came from one, and
//! logged first: Serf throws a handler's stderr away.

use std::path::Path;

use clap::CommandFactory;
use clap::error::{ContextKind, ContextValue, ErrorKind};

use super::args::Cli;
use super::argv;

/// Exits as clap does (`--help` and `--version` too); a usage error is
/// logged first, as its first line (`error: …`).
pub fn usage_exit(usage: &clap::Error, log_file: Option<&Path>) -> ! {
    let retold = retold(usage).or_else(|| plain(usage));
    let usage = retold.as_ref().unwrap_or(usage);
    if usage.use_stderr() {
        let text = usage.render().to_string();
        let first = text.lines().next().unwrap_or("error: usage error");
        let code = u8::try_from(usage.exit_code()).unwrap_or(2);
        crate::log::log_exit(log_file, first, code);
    }
    usage.exit()
}

/// A refused value told hacfg's way, or `None` when clap's own words are
/// right: the value escaped and cut (it may come off the network, and
/// clap prints it raw), and the variable named when the value came from
/// one (clap names the flag, which nobody typed).
fn retold(err: &clap::Error) -> Option<clap::Error> {
    let kind = err.kind();
    if !matches!(kind, ErrorKind::InvalidValue | ErrorKind::ValueValidation) {
        return None;
    }
    let (Some(ContextValue::String(shown)), Some(ContextValue::String(value))) = (
        err.get(ContextKind::InvalidArg),
        err.get(ContextKind::InvalidValue),
    ) else {
        return None;
    };
    let cmd = Cli::command();
    let env = env_source(&cmd, shown);
    let escaped = crate::quote::quote(value).to_string();
    let plain = escaped == format!("\"{value}\"");
    if plain && env.is_none() {
        return None;
    }
    let value = if plain { format!("'{value}'") } else { escaped };
    let mut message = format!("invalid value {value} for '{}'", env.unwrap_or(shown));
    if let Some(source) = std::error::Error::source(err) {
        message = format!("{message}: {source}");
    }
    if let Some(ContextValue::Strings(valid)) = err.get(ContextKind::ValidValue) {
        message = format!("{message}\n  [possible values: {}]", valid.join(", "));
    }
    Some(cmd.clone().error(kind, message))
}

/// clap's error with a plain usage line (`Usage: hacfg add [OPTIONS] <NAME>
/// <ADDRESS>`), and without a suggestion that is no near miss, or `None`
/// when it has no usage line. clap lists the options it took, a variable's
/// too, so a set HACFG_NODES_DIR read `hacfg add --nodes-dir <NODES_DIR> …`
/// as if the option were required; and it offers any global option that
/// looks alike (`list --format`: `--force`).
fn plain(err: &clap::Error) -> Option<clap::Error> {
    let Some(ContextValue::StyledStr(usage)) = err.get(ContextKind::Usage) else {
        return None;
    };
    let mut cmd = Cli::command();
    cmd.build();
    let named = usage
        .to_string()
        .split_whitespace()
        .nth(2)
        .map(str::to_string);
    let usage = match named.and_then(|name| cmd.find_subcommand_mut(&name)) {
        Some(sub) => sub.render_usage(),
        None => cmd.render_usage(),
    };
    let typed = match err.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => arg.clone(),
        _ => String::new(),
    };
    let mut told = clap::Error::new(err.kind()).with_cmd(&cmd);
    for (kind, value) in err.context() {
        let value = match (kind, value) {
            (ContextKind::Usage, _) => ContextValue::StyledStr(usage.clone()),
            (ContextKind::SuggestedArg, ContextValue::String(s)) if !near_miss(&typed, s) => {
                continue;
            }
            _ => value.clone(),
        };
        told.insert(kind, value);
    }
    Some(told)
}

/// Whether `suggested` is what someone who typed `typed` likely meant: one
/// slip (a letter added, dropped, changed, or two swapped), two in a long
/// name.
fn near_miss(typed: &str, suggested: &str) -> bool {
    let a: Vec<char> = typed.trim_start_matches('-').chars().collect();
    let b: Vec<char> = suggested.trim_start_matches('-').chars().collect();
    let distance = slips(&a, &b);
    distance <= 1 || (distance == 2 && a.len().min(b.len()) >= 6)
}

/// The optimal string alignment distance: edits and swaps of neighbours.
fn slips(a: &[char], b: &[char]) -> usize {
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The variable a refused value came from: the option clap names
/// (`--default-port <DEFAULT_PORT>`) has one, it is set, and the flag is
/// not on the command line.
fn env_source<'a>(cmd: &'a clap::Command, shown: &str) -> Option<&'a str> {
    let arg = std::iter::once(cmd)
        .chain(cmd.get_subcommands())
        .flat_map(clap::Command::get_arguments)
        .find(|a| a.get_long().is_some_and(|l| names_flag(shown, l)))?;
    let env = arg.get_env()?.to_str()?;
    (is_set(env) && !argv::flag_given(arg.get_long()?)).then_some(env)
}

/// Whether clap's `--long <VALUE>` (or `--long`) is the flag `long`.
fn names_flag(shown: &str, long: &str) -> bool {
    shown
        .strip_prefix("--")
        .and_then(|s| s.strip_prefix(long))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
}

/// How a message names an option's value: the variable it came from when
/// the flag is not on the command line.
pub fn given_as<'a>(long: &'a str, env: &'a str) -> &'a str {
    if !argv::flag_given(long.trim_start_matches('-')) && is_set(env) {
        env
    } else {
        long
    }
}

/// Whether a variable is set: an empty one means unset.
pub fn is_set(env: &str) -> bool {
    std::env::var_os(env).is_some_and(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_near_misses_are_suggested() {
        for (typed, suggested) in [
            ("--jsn", "--json"),
            ("--relaod", "--reload"),
            ("--nodes-dr", "--nodes-dir"),
            ("--dryrun", "--dry-run"),
            ("--lock-timout", "--lock-timeout"),
        ] {
            assert!(super::near_miss(typed, suggested), "{typed}");
        }
        for (typed, suggested) in [
            ("--format", "--force"),
            ("--port", "--json"),
            ("--x", "--var"),
        ] {
            assert!(!super::near_miss(typed, suggested), "{typed}");
        }
    }

    #[test]
    fn a_flag_is_named_by_its_long_name_and_value_name() {
        assert!(super::names_flag(
            "--default-port <DEFAULT_PORT>",
            "default-port"
        ));
        assert!(super::names_flag("--quiet", "quiet"));
        assert!(!super::names_flag("--default-port-x <X>", "default-port"));
    }
}
