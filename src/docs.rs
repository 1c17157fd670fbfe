//! Completion scripts and the man page, generated from the clap definition
//! itself, so they cannot drift from the options hacfg really takes.

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::Cli;

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "hacfg", &mut out);
    out
}

/// The man page, in roff: options with their `HACFG_*` variables, the
/// commands, and the examples and exit codes that end `--help`.
pub fn man_page() -> Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut out)
        .context("unable to render the man page")?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_and_man_page_name_the_commands() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let script = String::from_utf8(completions(shell)).unwrap();
            assert!(
                script.contains("status") && script.contains("nodes-dir"),
                "{shell}"
            );
        }
        let man = String::from_utf8(man_page().unwrap()).unwrap();
        for needle in [
            "HACFG_NODES_DIR",
            "HACFG_APPLY",
            "Exit codes",
            "status",
            ".TH hacfg",
        ] {
            assert!(man.contains(needle), "{needle} not in the man page");
        }
    }
}
