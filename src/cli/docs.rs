//! Completion scripts and the man page, generated from the clap definition
//! itself, so they cannot drift from the options hacfg really takes.

use anyhow::{Context, Result};
use clap::CommandFactory;

use super::args::Cli;

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "hacfg", &mut out);
    out
}

/// The man page, in roff, one page for everything: the global options
/// with their `HACFG_*` variables, then a section per command with its
/// synopsis, its own options, arguments and variables (`hacfg serf`'s
/// SERF_EVENT too), and the examples and exit codes that end `--help`.
/// No `hacfg-add(1)` pages: nothing would ship them.
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
        out.extend(commands_list(&man)?.into_bytes());
        for sub in cmd.get_subcommands() {
            out.extend(command_section(sub)?.into_bytes());
        }
        out.extend(unfilled(&man, "EXAMPLES AND EXIT CODES")?.into_bytes());
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

fn rendered(part: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> std::io::Result<String> {
    let mut out = Vec::new();
    part(&mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// clap_mangen's COMMANDS list, each command named `hacfg add` (the
/// section below) instead of `hacfg-add(1)` (a page nobody ships).
fn commands_list(man: &clap_mangen::Man) -> std::io::Result<String> {
    let mut list = rendered(|out| man.render_subcommands_section(out))?;
    let mut cmd = Cli::command();
    cmd.build(); // clap's own `help` command too
    for sub in cmd.get_subcommands() {
        let name = sub.get_name().replace('-', "\\-");
        list = list.replace(
            &format!("hacfg\\-{name}(1)"),
            &format!("\\fBhacfg {name}\\fR"),
        );
    }
    Ok(list)
}

/// A command's section, `HACFG ADD`: its synopsis, what it does, its own
/// options and arguments (not the global ones) and its after-help text.
fn command_section(sub: &clap::Command) -> std::io::Result<String> {
    let full = format!("hacfg {}", sub.get_name());
    let after_help = sub.get_after_help().is_some();
    let sub = sub.clone().bin_name(&full).disable_help_flag(true);
    let man = clap_mangen::Man::new(sub);
    let heading = format!(".SH \"{}\"\n", full.to_uppercase());
    let synopsis = rendered(|out| man.render_synopsis_section(out))?;
    let mut text = synopsis.replacen(".SH SYNOPSIS\n", &heading, 1);
    let about = rendered(|out| man.render_description_section(out))?;
    text.push_str(&about.replacen(".SH DESCRIPTION\n", ".PP\n", 1));
    let options = rendered(|out| man.render_options_section(out))?;
    text.push_str(&options.replacen(".SH OPTIONS\n", "", 1));
    if after_help {
        text.push_str(&unfilled(&man, "")?);
    }
    Ok(text)
}

/// The after-help text, lines kept as they are (`.nf`): its columns are
/// aligned with spaces. Under `heading`, or in the current section.
fn unfilled(man: &clap_mangen::Man, heading: &str) -> std::io::Result<String> {
    let extra = rendered(|out| man.render_extra_section(out))?;
    let start = match heading {
        "" => ".PP\n.nf\n".to_string(),
        _ => format!(".SH \"{heading}\"\n.nf\n"),
    };
    Ok(format!("{}.fi\n", extra.replacen(".SH EXTRA\n", &start, 1)))
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
            ".SH \"HACFG SERF\"",
            "Exit codes",
            "frontend_bind",
            ".TH hacfg",
        ] {
            assert!(man.contains(needle), "{needle} not in the man page");
        }
    }

    /// Every argument of every command, as a reader looks it up: `--port`,
    /// `<ADDRESS>`, `HACFG_SERF_ROLE`; and no page referred to that nobody
    /// ships. Walks the clap definition, so a new option cannot be missed.
    #[test]
    fn the_man_page_lists_every_argument_of_every_command() {
        let page = String::from_utf8(man_page().unwrap()).unwrap();
        let text = page
            .replace("\\-", "-")
            .replace("\\fI", "")
            .replace("\\fR", "");
        let cmd = Cli::command();
        let mut checked = 0;
        for command in std::iter::once(&cmd).chain(cmd.get_subcommands()) {
            let section = match command.get_name() {
                "hacfg" => text.as_str(),
                name => {
                    let heading = format!(".SH \"HACFG {}\"", name.to_uppercase());
                    let at = text
                        .find(&heading)
                        .unwrap_or_else(|| panic!("no {heading}"));
                    let rest = &text[at + heading.len()..];
                    &rest[..rest.find("\n.SH ").unwrap_or(rest.len())]
                }
            };
            for arg in command.get_arguments().filter(|a| !a.is_hide_set()) {
                let mut names: Vec<String> = arg
                    .get_long()
                    .map(|l| format!("--{l}"))
                    .into_iter()
                    .collect();
                if arg.is_positional() {
                    names.push(format!("<{}>", arg.get_value_names().unwrap()[0]));
                }
                names.extend(arg.get_env().map(|e| e.to_string_lossy().into_owned()));
                assert!(!names.is_empty(), "{:?}", arg.get_id());
                for name in names {
                    assert!(
                        section.contains(&name),
                        "{name} of `{}` not in its section",
                        command.get_name()
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 60, "{checked}");
        for word in text.split_whitespace() {
            assert!(
                !(word.starts_with("hacfg-") && word.contains("(1)")),
                "{word} is not shipped"
            );
        }
    }

    #[test]
    fn the_examples_keep_their_columns() {
        let page = String::from_utf8(man_page().unwrap()).unwrap();
        let examples = page
            .split(".SH \"EXAMPLES AND EXIT CODES\"\n")
            .nth(1)
            .unwrap();
        assert!(examples.starts_with(".nf\n"), "{examples}");
        assert!(examples.contains(".fi\n.SH VERSION"), "{examples}");
    }
}
