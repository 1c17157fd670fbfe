//! From the nodes folder to a live HAProxy: render, guard, stage, check,
//! keep the last good config, swap, reload, and restore it if the reload fails.

use std::fs;
use std::io::{ErrorKind, Read};
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
pub fn render_nodes(cfg: &Config, nodes: Vec<Node>) -> Result<String> {
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
    let size_hint = fs::metadata(&cfg.output).map_or(0, |m| m.len() as usize);
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

/// The current output, `None` if there is none yet.
pub fn read_output(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("unable to read `{}`", path.display())),
    }
}

/// Whether the file at `path` holds exactly `bytes` (`None`: no file).
/// Compared in chunks, so a large config is not held in memory twice.
fn same_as_file(path: &Path, bytes: &[u8]) -> Result<Option<bool>> {
    let context = || format!("unable to read `{}`", path.display());
    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(context),
    };
    if file.metadata().with_context(context)?.len() != bytes.len() as u64 {
        return Ok(Some(false));
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut rest = bytes;
    loop {
        let n = file.read(&mut buf).with_context(context)?;
        if n == 0 {
            return Ok(Some(rest.is_empty()));
        }
        match rest.strip_prefix(&buf[..n]) {
            Some(tail) => rest = tail,
            None => return Ok(Some(false)),
        }
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
    let nodes = store.load_all(true)?;
    let count = nodes.len();
    let rendered = render_nodes(cfg, nodes)?;
    let out = &cfg.output;
    if count < cfg.min_nodes {
        return Err(Exit::new(
            Code::TooFewNodes,
            format!(
                "refusing to write `{}` with {count} nodes, fewer than --min-nodes {}; the \
                 live config is unchanged (the nodes folder keeps the change)",
                out.display(),
                cfg.min_nodes
            ),
        )
        .into());
    }
    let current = same_as_file(out, rendered.as_bytes())?;
    if current == Some(true) && !cfg.force {
        log.info(&format!(
            "`{}` unchanged ({})",
            out.display(),
            nodes_text(count)
        ));
        return Ok(());
    }
    let staged = Staged::new(out, rendered.as_bytes())?;
    if let Some(check) = &cfg.check {
        run_check(check, staged.path(), out)?;
    }
    match (current, cfg.in_place) {
        (None, _) => {}
        // In place, the bytes change under the same inode: copy them.
        (Some(_), true) => atomic::copy_atomic(out, &prev_path(out))?,
        (Some(_), false) => atomic::link_atomic(out, &prev_path(out))?,
    }
    if cfg.in_place {
        atomic::write_in_place(out, rendered.as_bytes())?;
    } else {
        staged.commit()?;
    }
    log.info(&format!(
        "wrote `{}` ({})",
        out.display(),
        nodes_text(count)
    ));
    if cfg.reload.is_some() {
        reload_or_restore(cfg, log)?;
    }
    Ok(())
}

fn nodes_text(count: usize) -> String {
    format!("{count} node{}", if count == 1 { "" } else { "s" })
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
    let done = crate::process::run_with_timeout(&mut cmd, &what, CHECK_TIMEOUT)?;
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
    fn compares_files_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        assert_eq!(same_as_file(&path, b"x").unwrap(), None);
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&path, &big).unwrap();
        assert_eq!(same_as_file(&path, &big).unwrap(), Some(true));
        let mut other = big.clone();
        other[150_000] ^= 1;
        assert_eq!(same_as_file(&path, &other).unwrap(), Some(false));
        assert_eq!(same_as_file(&path, &big[1..]).unwrap(), Some(false));
    }

    #[test]
    fn prev_is_beside_output() {
        assert_eq!(
            prev_path(Path::new("/x/haproxy.cfg")),
            Path::new("/x/haproxy.cfg.prev")
        );
    }
}
