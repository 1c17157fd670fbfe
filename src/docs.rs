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
/// commands, each command's own options (`hacfg serf`'s SERF_EVENT too),
/// and the examples and exit codes that end `--help`.
pub fn man_page() -> Result<Vec<u8>> {
    let cmd = Cli::command();
    let man = clap_mangen::Man::new(cmd.clone());
    let mut out = Vec::new();
    let mut render = || -> std::io::Result<()> {
        man.render_title(&mut out)?;
        man.render_name_section(&mut out)?;
        man.render_synopsis_section(&mut out)?;
        man.render_description_section(&mut out)?;
        man.render_options_section(&mut out)?;
        man.render_subcommands_section(&mut out)?;
        for sub in cmd.get_subcommands() {
            out.extend(command_options(sub)?.into_bytes());
        }
        man.render_extra_section(&mut out)?;
        man.render_version_section(&mut out)
    };
    render().context("unable to render the man page")?;
    Ok(one_preamble(&out))
}

/// What the roff crate puts before every part it renders; once is enough.
const ROFF_PREAMBLE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";

/// `page`, put together from parts, with the parts' preambles after the
/// first one left out.
fn one_preamble(page: &[u8]) -> Vec<u8> {
    let page = String::from_utf8_lossy(page);
    match page.strip_prefix(ROFF_PREAMBLE) {
        Some(rest) => format!("{ROFF_PREAMBLE}{}", rest.replace(ROFF_PREAMBLE, "")).into_bytes(),
        None => page.into_owned().into_bytes(),
    }
}

/// A command's own options (not the global ones) as a section named after
/// it, `SERF OPTIONS`; nothing for a command without any.
fn command_options(sub: &clap::Command) -> std::io::Result<String> {
    let mut out = Vec::new();
    clap_mangen::Man::new(sub.clone().disable_help_flag(true)).render_options_section(&mut out)?;
    let heading = format!(".SH \"{} OPTIONS\"\n", sub.get_name().to_uppercase());
    Ok(String::from_utf8_lossy(&out).replacen(".SH OPTIONS\n", &heading, 1))
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
            "SERF_EVENT",
            "SERF_SELF_NAME",
            "HACFG_ON_FAILED",
            ".SH \"SERF OPTIONS\"",
            "Exit codes",
            "status",
            ".TH hacfg",
        ] {
            assert!(man.contains(needle), "{needle} not in the man page");
        }
    }
}
