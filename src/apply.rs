//! From the nodes folder to a live HAProxy: render, guard, stage, check,
//! keep the last good config, swap, reload, and restore it if the reload fails.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::atomic::{self, Staged};
use crate::config::{Check, Config};
use crate::exit::{Code, Exit};
use crate::log::Log;
use crate::node::Node;
use crate::reload;
use crate::render;
use crate::store::Store;

/// How long a check command may take (a 100,000-server check takes seconds).
const CHECK_TIMEOUT: Duration = Duration::from_secs(300);

/// Renders `nodes` with the configured template.
pub fn render_nodes(cfg: &Config, nodes: &[Node]) -> Result<String> {
    let (name, source) = match &cfg.template {
        None => (
            render::BUILTIN_NAME.to_string(),
            render::BUILTIN_TEMPLATE.to_string(),
        ),
        Some(path) => (
            path.display().to_string(),
            fs::read_to_string(path)
                .with_context(|| format!("unable to read template `{}`", path.display()))?,
        ),
    };
    render::render_config(&name, &source, nodes, cfg.default_port, &cfg.vars)
        .with_context(|| format!("unable to render template `{name}`"))
}

/// The current output, `None` if there is none yet.
pub fn read_output(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("unable to read `{}`", path.display())),
    }
}

/// `<output>.prev`: the last config that was live before the current one.
pub fn prev_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".prev");
    PathBuf::from(name)
}

/// Makes the output (and, with `--reload`, HAProxy) match the folder as it
/// is now. The caller holds the folder's lock, so this is one consistent
/// snapshot, and a burst of queued callers costs few writes and reloads:
/// whoever finds the live config already equal to its render does nothing.
pub fn update(cfg: &Config, store: &Store, log: &mut Log) -> Result<()> {
    let nodes = store.load_all()?;
    let rendered = render_nodes(cfg, &nodes)?;
    let out = &cfg.output;
    if nodes.len() < cfg.min_nodes {
        return Err(Exit::new(
            Code::TooFewNodes,
            format!(
                "refusing to write `{}` with {} nodes, fewer than --min-nodes {}; the live \
                 config is unchanged (the nodes folder keeps the change)",
                out.display(),
                nodes.len(),
                cfg.min_nodes
            ),
        )
        .into());
    }
    let current = read_output(out)?;
    if current.as_deref() == Some(rendered.as_bytes()) && !cfg.force {
        log.info(&format!(
            "`{}` unchanged ({} nodes)",
            out.display(),
            nodes.len()
        ));
        return Ok(());
    }
    let staged = Staged::new(out, rendered.as_bytes())?;
    if let Some(check) = &cfg.check {
        run_check(check, staged.path(), out)?;
    }
    if let Some(current) = &current {
        atomic::write_atomic(&prev_path(out), current)?;
    }
    if cfg.in_place {
        atomic::write_in_place(out, rendered.as_bytes())?;
    } else {
        staged.commit()?;
    }
    log.info(&format!(
        "wrote `{}` ({} nodes)",
        out.display(),
        nodes.len()
    ));
    if cfg.reload.is_some() {
        reload_or_restore(cfg, log)?;
    }
    Ok(())
}

/// Reloads HAProxy; on failure puts `<output>.prev` back over the output.
pub fn reload_or_restore(cfg: &Config, log: &mut Log) -> Result<()> {
    let Some(settings) = &cfg.reload else {
        return Ok(());
    };
    match reload::reload(settings) {
        Ok(message) => {
            log.info(&message);
            Ok(())
        }
        Err(err) => {
            let prev = prev_path(&cfg.output);
            let restored = match read_output(&prev)? {
                Some(bytes) => {
                    write_bytes(cfg, &bytes)?;
                    format!(
                        "restored `{}` from `{}`",
                        cfg.output.display(),
                        prev.display()
                    )
                }
                None => format!("no `{}` to restore", prev.display()),
            };
            Err(Exit::new(
                Code::ReloadFailed,
                format!("reload failed; {restored}: {err:#}"),
            )
            .into())
        }
    }
}

fn write_bytes(cfg: &Config, bytes: &[u8]) -> Result<()> {
    if cfg.in_place {
        atomic::write_in_place(&cfg.output, bytes)
    } else {
        atomic::write_atomic(&cfg.output, bytes)
    }
}

/// Runs the check on the staged candidate; a rejection is `Code::Rejected`
/// carrying HAProxy's own messages.
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
    let done = reload::run_with_timeout(&mut cmd, &what, CHECK_TIMEOUT)?;
    if done.success {
        return Ok(());
    }
    let shown = done
        .output
        .replace(&*staged.to_string_lossy(), "<candidate>");
    Err(Exit::new(
        Code::Rejected,
        format!(
            "{what} rejected the new config ({}); `{}` was not replaced and nothing was \
             reloaded (the nodes folder keeps the change)\n{shown}",
            done.status,
            output.display()
        ),
    )
    .into())
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn prev_is_beside_output() {
        assert_eq!(
            prev_path(Path::new("/x/haproxy.cfg")),
            Path::new("/x/haproxy.cfg.prev")
        );
    }
}
