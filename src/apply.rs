//! From the nodes folder to a live HAProxy: render, guard, stage, check,
//! keep the last good config, swap, reload, and put back what this run
//! wrote if the reload fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::config::Config;
use crate::exit::Failure;
use crate::file;
use crate::log::Log;
use crate::node::Node;
use crate::output::{Output, Replaced, WriteMode};
use crate::process::Run;
use crate::reload::{self, Reload};
use crate::render;
use crate::store::{Exclusive, Lock, Store};

/// How long a check command may take (a 100,000-server check takes seconds).
const CHECK_TIMEOUT: Duration = Duration::from_secs(300);

/// The validation command for a staged config.
#[derive(Debug, Clone)]
pub enum Check {
    /// `<bin> -c -f <staged>`.
    Haproxy(PathBuf),
    /// A shell command with `{}` replaced by the staged path.
    Command(String),
}

/// Renders `nodes` with the configured template; `size_hint` is the
/// current output's size.
pub fn render_nodes(cfg: &Config, nodes: Vec<Node>, size_hint: usize) -> Result<String> {
    let (name, source) = match &cfg.template {
        None => (
            render::BUILTIN_NAME.to_string(),
            render::BUILTIN_TEMPLATE.to_string(),
        ),
        Some(path) => {
            let context = || format!("unable to read template `{}`", path.display());
            let bytes = file::read_capped_with(path, file::Links::Follow, file::TEMPLATE_CAP)
                .with_context(context)?
                .with_context(|| format!("template `{}` does not exist", path.display()))?;
            let text = String::from_utf8(bytes).with_context(context)?;
            (path.display().to_string(), text)
        }
    };
    render::render_config(
        &name,
        &source,
        nodes,
        cfg.default_port,
        &cfg.vars,
        size_hint,
    )
    .with_context(|| {
        let out = cfg.output.display();
        format!("unable to render template `{name}`; `{out}` was left as it was")
    })
}

/// Makes the output (and, with `--reload`, HAProxy) match the folder as it
/// is now. The exclusive lock makes this one consistent snapshot, and a
/// burst of queued callers costs few writes and reloads: whoever finds the
/// live config already equal to its render does nothing.
pub fn update(cfg: &Config, store: &Store, lock: &Lock<Exclusive>, log: &mut Log) -> Result<()> {
    let output = Output::new(&cfg.output, cfg.write_mode)?;
    output.remove_leftovers(lock);
    let nodes = store.load_all(lock)?;
    let count = nodes.len();
    let rendered = render_nodes(cfg, nodes, output.size())?;
    let shown = output.path().display();
    if count < cfg.min_nodes {
        return Err(Failure::TooFewNodes(format!(
            "refusing to write `{shown}` with {count} nodes, fewer than --min-nodes {}; the \
             live config is unchanged (the nodes folder keeps the change)",
            cfg.min_nodes
        ))
        .into());
    }
    let current = output.same_as(rendered.as_bytes())?;
    if current == Some(true) && !cfg.force {
        log.info(&format!("`{shown}` unchanged ({})", nodes_text(count)));
        return Ok(());
    }
    // The check reads a candidate beside the output; written in place
    // without a check, there is nothing to stage.
    let staged = match (&cfg.check, cfg.write_mode) {
        (None, WriteMode::InPlace) => None,
        _ => Some(output.stage(rendered.as_bytes())?),
    };
    if let (Some(check), Some(staged)) = (&cfg.check, &staged) {
        run_check(check, staged.path(), output.path())?;
    }
    let replaced = output.replace(staged, rendered.as_bytes())?;
    log.info(&format!("wrote `{shown}` ({})", nodes_text(count)));
    if let Some(settings) = &cfg.reload {
        reload_or_restore(settings, Some(replaced), log)?;
    }
    Ok(())
}

fn nodes_text(count: usize) -> String {
    format!("{count} node{}", if count == 1 { "" } else { "s" })
}

/// Reloads HAProxy. On failure, a config this run wrote (`replaced`) is
/// put back from `.prev`; a run that wrote nothing (`hacfg reload`) leaves
/// the output alone.
pub fn reload_or_restore(
    settings: &Reload,
    replaced: Option<Replaced>,
    log: &mut Log,
) -> Result<()> {
    let err = match reload::reload(settings) {
        Ok(message) => {
            log.info(&message);
            return Ok(());
        }
        Err(err) => err,
    };
    let restored = match replaced {
        Some(replaced) => replaced.restore()?,
        None => "the config was left as it is".to_string(),
    };
    Err(Failure::ReloadFailed(format!("reload failed; {restored}: {err:#}")).into())
}

/// Runs the check on the staged candidate; a rejection is
/// `Failure::Rejected` carrying HAProxy's own messages.
fn run_check(check: &Check, staged: &Path, output: &Path) -> Result<()> {
    let (mut cmd, what) = match check {
        Check::Haproxy(bin) => {
            let mut cmd = Command::new(bin);
            cmd.arg("-c").arg("-f").arg(staged);
            (cmd, format!("`{} -c`", bin.display()))
        }
        Check::Command(template) => {
            let line = template.replace("{}", &shell_quote(&staged.to_string_lossy()));
            let mut cmd = Command::new("sh");
            cmd.args(["-c", &line]);
            (cmd, format!("check command `{template}`"))
        }
    };
    let done = Run::new(&mut cmd, &what)
        .run(CHECK_TIMEOUT)
        .with_context(|| format!("`{}` was not replaced", output.display()))?;
    if done.success() {
        return Ok(());
    }
    let shown = first_lines(
        &done
            .output()
            .replace(&*staged.to_string_lossy(), "<candidate>"),
        SHOWN_CHECK_LINES,
    );
    Err(Failure::Rejected(format!(
        "{what} rejected the new config ({}); `{}` was not replaced and nothing was \
         reloaded (the nodes folder keeps the change)\n{shown}",
        done.status,
        output.display()
    ))
    .into())
}

/// Lines of a check's output shown; HAProxy prints one per problem, and
/// the first ones name the cause.
const SHOWN_CHECK_LINES: usize = 40;

/// The first `max` lines of `text` (each cut to a readable length), and
/// how many more there were.
fn first_lines(text: &str, max: usize) -> String {
    let mut lines: Vec<String> = text
        .lines()
        .take(max)
        .map(|l| match crate::quote::cut(l, 400) {
            Some(head) => format!("{head}… ({} bytes)", l.len()),
            None => l.to_string(),
        })
        .collect();
    let total = text.lines().count();
    if total > max {
        lines.push(format!("… ({} more lines)", total - max));
    }
    lines.join("\n")
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_check_output_is_cut() {
        let text = (0..100).fold(String::new(), |t, i| t + &format!("[ALERT] line {i}\n"));
        let shown = first_lines(&text, 40);
        assert_eq!(shown.lines().count(), 41);
        assert!(shown.ends_with("… (60 more lines)"), "{shown}");
        assert!(first_lines(&"é".repeat(1000), 40).ends_with("… (2000 bytes)"));
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
