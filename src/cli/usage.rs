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
    let retold = retold(usage);
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
    fn a_flag_is_named_by_its_long_name_and_value_name() {
        assert!(super::names_flag(
            "--default-port <DEFAULT_PORT>",
            "default-port"
        ));
        assert!(super::names_flag("--quiet", "quiet"));
        assert!(!super::names_flag("--default-port-x <X>", "default-port"));
    }
}
