//! Completion scripts and the man page, generated from the clap definition
//! itself, so they cannot drift from the options hacfg really takes.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use clap::CommandFactory;

use super::args::Cli;
use super::manual;

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "hacfg", &mut out);
    out
}

/// The man page, in roff: the reference. NAME, SYNOPSIS and the options
/// come from the clap definition (every option with its variable), the
/// COMMANDS from each command's own (its synopsis, options, arguments,
/// variables), ENVIRONMENT from every variable clap knows; the rest is
/// written by hand (`manual`), the built-in template's `vars` from their
/// table. No `hacfg-add(1)` pages: nothing would ship them.
pub fn man_page() -> Result<Vec<u8>> {
    // clap_mangen leaves out the help `-h` does not show: the page has all.
    let cmd = Cli::command().mut_args(|arg| arg.hide_short_help(false));
    let man = clap_mangen::Man::new(cmd.clone());
    let mut out = Vec::new();
    let mut render = || -> std::io::Result<()> {
        man.render_title(&mut out)?;
        man.render_name_section(&mut out)?;
        man.render_synopsis_section(&mut out)?;
        out.extend(section("DESCRIPTION", manual::DESCRIPTION).into_bytes());
        out.extend(commands_list(&man)?.into_bytes());
        for sub in cmd.get_subcommands() {
            out.extend(command_section(sub)?.into_bytes());
        }
        man.render_options_section(&mut out)?;
        out.extend(hand_written().into_bytes());
        out.extend(environment(&cmd).into_bytes());
        out.extend(section("EXIT STATUS", manual::EXIT_STATUS).into_bytes());
        out.extend(section("EXAMPLES", manual::EXAMPLES).into_bytes());
        out.extend(section("SEE ALSO", manual::SEE_ALSO).into_bytes());
        man.render_version_section(&mut out)
    };
    render().context("unable to render the man page")?;
    Ok(one_preamble(&out))
}

/// The sections after the options that describe hacfg's files.
fn hand_written() -> String {
    let template = format!("{}{}", manual::TEMPLATE_INTRO, manual::vars_items());
    [
        section("NODE FILES", manual::NODE_FILES),
        section("TEMPLATE", &template),
        section("FILES", manual::FILES),
    ]
    .concat()
}

/// A variable's option, that option's help (its first line), and the
/// commands it belongs to (none: a global option), in the order clap has
/// them.
type Variable = (String, String, Vec<String>);

fn variables(cmd: &clap::Command) -> Vec<(String, Variable)> {
    let mut found: Vec<(String, Variable)> = Vec::new();
    for command in std::iter::once(cmd).chain(cmd.get_subcommands()) {
        for arg in command.get_arguments().filter(|a| !a.is_hide_set()) {
            let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) else {
                continue;
            };
            let env = env.to_string_lossy().into_owned();
            let at = found
                .iter()
                .position(|(e, _)| *e == env)
                .unwrap_or_else(|| {
                    let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                    let help = help.lines().next().unwrap_or_default().to_string();
                    found.push((env, (long.to_string(), help, Vec::new())));
                    found.len() - 1
                });
            if command.get_name() != "hacfg" {
                found[at].1.2.push(command.get_name().to_string());
            }
        }
    }
    found
}

fn section(name: &str, text: &str) -> String {
    format!(".SH \"{name}\"\n{}", manual::roff(text))
}

/// Every variable hacfg reads, once, with the option it stands for (and
/// the command, for a command's own), and the ones no option has.
fn environment(cmd: &clap::Command) -> String {
    let mut text = String::from(
        "HACFG_VARS, SERF_* and the HACFG_* variable of every option \
        but `--var`. A flag wins over its variable; a variable set empty counts as unset; a \
        flag's variable takes `true` or `false`, `1` or `0`, `yes` or `no`, `on` or `off`.",
    );
    text.push_str(
        "\n\n> HACFG_VARS\nTemplate variables, `KEY=VALUE` comma-separated (`\\,` \
        for a comma in a value); `--var` wins per key.",
    );
    for (env, (long, help, commands)) in variables(cmd) {
        let of = match commands.as_slice() {
            [] => String::new(),
            names => format!(" (hacfg {})", names.join(", ")),
        };
        let _ = write!(text, "\n\n> {env}\n`--{long}`{of}: {help}.");
    }
    text.push_str(
        "\n\n> HACFG_WRITE_MODE\n`rename` (the default) or `in-place`; \
        `--in-place` wins.\n\n> HACFG_WORKER_SETTINGS\nSet by hacfg for the detached worker \
        it starts (`settle --worker`); not for people.",
    );
    section("ENVIRONMENT", &text)
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
    let mut list = rendered(|out| man.render_subcommands_section(out))?.replacen(
        ".SH SUBCOMMANDS\n",
        ".SH COMMANDS\n",
        1,
    );
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

/// A command's subsection of COMMANDS, `hacfg add`: its synopsis, what it
/// does, its own options and arguments (not the global ones).
fn command_section(sub: &clap::Command) -> std::io::Result<String> {
    let full = format!("hacfg {}", sub.get_name());
    let sub = sub.clone().bin_name(&full).disable_help_flag(true);
    let man = clap_mangen::Man::new(sub);
    let heading = format!(".SS \"{full}\"\n");
    let synopsis = rendered(|out| man.render_synopsis_section(out))?;
    let mut text = synopsis.replacen(".SH SYNOPSIS\n", &heading, 1);
    let about = rendered(|out| man.render_description_section(out))?;
    text.push_str(&about.replacen(".SH DESCRIPTION\n", ".PP\n", 1));
    let options = rendered(|out| man.render_options_section(out))?;
    text.push_str(&options.replacen(".SH OPTIONS\n", "", 1));
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> String {
        String::from_utf8(man_page().unwrap()).unwrap()
    }

    /// The page as a reader searches it: no roff escapes or fonts.
    fn plain(page: &str) -> String {
        page.replace("\\-", "-")
            .replace("\\fI", "")
            .replace("\\fB", "")
            .replace("\\fR", "")
            .replace("\\e", "\\")
            .replace("\\*(Aq", "'")
    }

    /// The text of section `.SH "NAME"` (or `.SH NAME`), up to the next.
    fn section<'a>(text: &'a str, name: &str) -> &'a str {
        let at = text
            .find(&format!(".SH \"{name}\"\n"))
            .or_else(|| text.find(&format!(".SH {name}\n")))
            .unwrap_or_else(|| panic!("no section {name}"));
        let rest = &text[at + 4..];
        &rest[..rest.find("\n.SH ").unwrap_or(rest.len())]
    }

    #[test]
    fn completions_name_the_commands() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let script = String::from_utf8(completions(shell)).unwrap();
            assert!(
                script.contains("status")
                    && script.contains("nodes-dir")
                    && script.contains("doctor"),
                "{shell}"
            );
        }
    }

    /// The reference's sections, in man(7)'s order.
    #[test]
    fn the_man_page_has_every_section_in_order() {
        let page = page();
        let sections = [
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "COMMANDS",
            "OPTIONS",
            "GLOBAL OPTIONS",
            "NODE FILES",
            "TEMPLATE",
            "FILES",
            "ENVIRONMENT",
            "EXIT STATUS",
            "EXAMPLES",
            "SEE ALSO",
            "VERSION",
        ];
        let at = |name: &str| {
            let quoted = page.find(&format!(".SH \"{name}\"\n"));
            quoted
                .or_else(|| page.find(&format!(".SH {name}\n")))
                .unwrap_or_else(|| panic!("{name}"))
        };
        for pair in sections.windows(2) {
            assert!(at(pair[0]) < at(pair[1]), "{} after {}", pair[0], pair[1]);
        }
        assert!(page.starts_with(ROFF_PREAMBLE) && page.contains(".TH hacfg"));
        assert_eq!(page.matches(ROFF_PREAMBLE).count(), 1);
    }

    #[test]
    fn the_description_has_several_paragraphs() {
        let page = plain(&page());
        let description = section(&page, "DESCRIPTION");
        assert!(description.matches(".PP\n").count() >= 4, "{description}");
        for part in [
            "haproxy -c",
            "--master-socket",
            "hacfg serf",
            "--lock-timeout",
            "doctor",
        ] {
            assert!(description.contains(part), "{part} not in {description}");
        }
    }

    #[test]
    fn template_names_every_variable_and_the_builtin_vars() {
        let page = plain(&page());
        let template = section(&page, "TEMPLATE");
        for name in ["nodes", "backends", "default_backend", "vars"] {
            assert!(template.contains(&format!("\n{name}\n")), "{name}");
        }
        for field in crate::render::NODE_FIELDS {
            assert!(template.contains(&format!("n.{field}")), "n.{field}");
        }
        for var in super::super::vars::BUILTIN_VARS {
            assert!(
                template.contains(&format!("vars.{}\n", var.name)),
                "vars.{}",
                var.name
            );
            if let Some(default) = var.default {
                assert!(
                    template.contains(&format!("[default: {default}]")),
                    "{default}"
                );
            }
        }
        let nodes = section(&page, "NODE FILES");
        for field in ["name", "address", "port", "weight", "tags"] {
            assert!(nodes.contains(&format!("\n{field}\n")), "{field}");
        }
    }

    #[test]
    fn files_exit_status_and_see_also() {
        let page = plain(&page());
        let files = section(&page, "FILES");
        for file in [
            ".hacfg.index",
            ".hacfg.pending",
            ".hacfg.held",
            ".hacfg.failed",
            ".hacfg.waiting",
            ".hacfg.worker.lock",
            ".hacfg.watch.lock",
            ".damaged",
            "OUTPUT.prev",
            "OUTPUT.sum",
            "OUTPUT.edited",
            "flock(2)",
        ] {
            assert!(files.contains(file), "{file}");
        }
        let exit = section(&page, "EXIT STATUS");
        for code in 0..=10 {
            assert!(exit.contains(&format!(".TP\n{code}\n")), "exit {code}");
        }
        assert!(exit.contains("--lock-timeout"));
        let see = section(&page, "SEE ALSO");
        for other in ["haproxy(1)", "serf(1)", "etcdctl(1)"] {
            assert!(see.contains(other), "{other}");
        }
        let examples = section(&page, "EXAMPLES");
        assert!(examples.contains(".nf\n") && examples.contains("install -D"));
    }

    /// Every variable clap reads, in ENVIRONMENT, with its option.
    #[test]
    fn environment_names_every_variable() {
        let page = plain(&page());
        let environment = section(&page, "ENVIRONMENT");
        let cmd = Cli::command();
        let mut checked = 0;
        for command in std::iter::once(&cmd).chain(cmd.get_subcommands()) {
            for arg in command.get_arguments().filter(|a| !a.is_hide_set()) {
                if let Some(env) = arg.get_env() {
                    let env = env.to_string_lossy();
                    assert!(environment.contains(&format!("\n{env}\n")), "{env}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 30, "{checked}");
        for env in [
            "HACFG_VARS",
            "HACFG_FORCE",
            "HACFG_IN_PLACE",
            "HACFG_WRITE_MODE",
        ] {
            assert!(environment.contains(&format!("\n{env}\n")), "{env}");
        }
    }

    /// Every argument of every command, as a reader looks it up: `--port`,
    /// `<ADDRESS>`, `HACFG_SERF_ROLE`, with its help; and no page referred
    /// to that nobody ships. Walks the clap definition, so a new option
    /// cannot be missed.
    #[test]
    fn the_man_page_lists_every_argument_of_every_command() {
        let text = plain(&page());
        let cmd = Cli::command();
        let mut checked = 0;
        for command in std::iter::once(&cmd).chain(cmd.get_subcommands()) {
            let section = match command.get_name() {
                "hacfg" => text.as_str(),
                name => {
                    let heading = format!(".SS \"hacfg {name}\"");
                    let at = text
                        .find(&heading)
                        .unwrap_or_else(|| panic!("no {heading}"));
                    let rest = &text[at + heading.len()..];
                    let end = [rest.find("\n.SS "), rest.find("\n.SH ")];
                    &rest[..end.into_iter().flatten().min().unwrap_or(rest.len())]
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
                if let Some(help) = arg.get_help() {
                    names.push(plain(&manual::escape(&help.to_string())));
                }
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
        assert!(checked > 100, "{checked}");
        for word in text.split_whitespace() {
            assert!(
                !(word.starts_with("hacfg-") && word.contains("(1)")),
                "{word} is not shipped"
            );
        }
    }
}
