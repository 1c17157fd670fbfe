//! The reload path: write the checked config, save the live server state
//! where the new config loads it from, reload, and put back what this run
//! wrote if the reload fails.

use anyhow::Result;

use std::path::Path;

use super::pending::{Pending, Why};
use super::{Counts, Settings, nodes_text};
use crate::atomic::{self, Staged};
use crate::exit::Failure;
use crate::haproxy::reload::{self, Reload, Strategy};
use crate::haproxy::{RuntimeApi, Target, config, state};
use crate::log::Log;
use crate::output::{OutputFile, Replaced};

/// Replaces the output with `rendered` (`staged` beside it, if staged),
/// then reloads if asked. The state file the new config loads is made to
/// hold this run's live state (less hacfg's own drains, recorded in the
/// nodes folder `dir`), or nothing, before anything is written.
pub fn write_and_reload(
    s: &Settings,
    output: &OutputFile,
    staged: Option<Staged>,
    (dir, rendered, count): (&Path, &str, usize),
    log: &mut Log,
    counts: &mut Counts,
) -> Result<()> {
    let reload = s.apply.reload();
    if reload.is_some() {
        let api = reload::state_api(s.apply.runtime(), reload);
        prepare_state(api.as_ref(), dir, rendered, log)?;
    }
    let replaced = output.replace(staged, rendered.as_bytes())?;
    if let Some(edit) = replaced.hand_edit() {
        log.warn(&edit.to_string());
    }
    log.info(&format!(
        "wrote `{}` ({})",
        output.path().display(),
        nodes_text(count)
    ));
    if let Some(settings) = reload {
        reload_or_restore(settings, Some(replaced), log, counts)?;
    }
    Ok(())
}

/// Saves the live server state where the new config loads it from
/// (`server-state-file`), so that a server DOWN by its checks, drained or
/// weighted at runtime is still so right after the reload; servers whose
/// address or port the new config changes are left out. hacfg's own
/// drains of new servers (`.hacfg.pending` in `dir`) are saved undone: the
/// file outlives this reload, and a later one by anyone else would bring
/// them back drained with nothing left to undo them. After this reload
/// such a server serves as any server a reload brings does, HAProxy's
/// checks taking it out if they fail.
///
/// Only a state file this run saved may be loaded: one left by an earlier
/// run would put servers back into the states they had then (a server in
/// maintenance, say). With a socket (`api`) the live state is saved; without
/// one, or when saving fails, an old file is emptied (its version line
/// alone): HAProxy loads nothing from it, and does not warn of a missing
/// file as it would were the file removed. Fails only when a stale file can
/// be neither emptied nor removed.
pub fn prepare_state(
    api: Option<&RuntimeApi>,
    dir: &Path,
    rendered: &str,
    log: &mut Log,
) -> Result<()> {
    let Some(path) = config::state_file(rendered) else {
        return Ok(());
    };
    let why = match api {
        Some(api) => match save_live(api, dir, rendered, &path) {
            Ok(()) => return Ok(()),
            Err(e) => format!("unable to save the server state before the reload: {e:#}"),
        },
        None => "no socket to save the live server state from".to_string(),
    };
    if path.symlink_metadata().is_err() {
        log.debug(&format!(
            "{why}; no server state file at `{}`",
            path.display()
        ));
        return Ok(());
    }
    match atomic::write_atomic(&path, EMPTY_STATE.as_bytes()) {
        Ok(()) => log.warn(&format!(
            "{why}; emptied the old `{}`, so that the reload does not put servers back into \
             the states it recorded",
            path.display()
        )),
        Err(e) => match std::fs::remove_file(&path) {
            Err(r) if r.kind() != std::io::ErrorKind::NotFound => {
                return Err(anyhow::anyhow!(
                    "{why}, and the old server state `{}` can be neither emptied ({e:#}) nor \
                     removed ({r}): refusing to reload with it; nothing was written",
                    path.display()
                ));
            }
            _ => log.warn(&format!(
                "{why}; removed the old `{}` (it could not be emptied: {e:#})",
                path.display()
            )),
        },
    }
    Ok(())
}

/// Saves the live state at `path`, as the reload of `rendered` must load it.
fn save_live(api: &RuntimeApi, dir: &Path, rendered: &str, path: &Path) -> Result<()> {
    let desired = config::servers(rendered);
    let kept = state::to_keep(&api.servers_state()?, &desired);
    let text = state::without_drain(&kept, &first_checks(dir));
    atomic::write_atomic(path, text.as_bytes())
}

/// The new servers hacfg drains until their first check.
fn first_checks(dir: &Path) -> Vec<Target> {
    let pending = Pending::load(dir);
    let targets = pending.targets(Why::FirstCheck).into_iter();
    targets.map(|(t, _)| t).collect()
}

/// A server-state file with no server in it: HAProxy reads its version
/// line and loads nothing, silently.
pub const EMPTY_STATE: &str = "1\n";

/// A first start's state file: HAProxy warns when the file its config
/// names is missing, so one that is missing (in a folder that exists) is
/// created empty. An existing one is left alone.
pub fn first_state(rendered: &str, log: &mut Log) {
    let Some(path) = config::state_file(rendered) else {
        return;
    };
    if path.symlink_metadata().is_ok() || !atomic::parent_dir(&path).is_dir() {
        return;
    }
    match atomic::write_atomic(&path, EMPTY_STATE.as_bytes()) {
        Ok(()) => log.info(&format!(
            "created an empty server state `{}`",
            path.display()
        )),
        Err(e) => log.warn(&format!(
            "unable to create the server state `{}` (HAProxy warns of a missing one at start): \
             {e:#}",
            path.display()
        )),
    }
}

/// Reloads HAProxy. On failure, a config this run wrote (`replaced`) is
/// put back from `.prev`; a run that wrote nothing (`hacfg reload`) leaves
/// the output alone.
pub fn reload_or_restore(
    settings: &Reload,
    replaced: Option<Replaced>,
    log: &mut Log,
    counts: &mut Counts,
) -> Result<()> {
    let err = match reload::reload(settings) {
        Ok(message) => {
            counts.reloads += 1;
            log.info(&message);
            return Ok(());
        }
        Err(err) => {
            counts.failed_reloads += 1;
            err
        }
    };
    let restored = match replaced {
        Some(replaced) => replaced.restore()?,
        None => "the config was left as it is".to_string(),
    };
    Err(Failure::ReloadFailed {
        restored,
        cause: format!("{err:#}"),
    }
    .into())
}

/// Whether HAProxy runs to take a reload, as far as a strategy can tell.
#[derive(Debug, PartialEq, Eq)]
pub enum Presence {
    Running,
    /// Not running, and why hacfg says so.
    Absent(String),
}

/// Whether HAProxy runs (for `init`, which may come before HAProxy): the
/// master socket is missing or refuses connections, or the pid file is
/// missing or names no process, means it does not. A reload command is
/// always taken for running: hacfg cannot tell, the command decides.
pub fn presence(settings: &Reload) -> Presence {
    match &settings.strategy {
        Strategy::MasterSocket(socket) => match reload::probe_at_once(socket) {
            Err(e) if e.absent() => Presence::Absent(format!("master socket {e}")),
            _ => Presence::Running,
        },
        Strategy::Signal(pid_file) => pid_presence(pid_file),
        Strategy::Command(_) => Presence::Running,
    }
}

/// A pid file that is missing, or names a process that does not exist,
/// means no HAProxy; anything else is left to the reload to judge.
fn pid_presence(pid_file: &std::path::Path) -> Presence {
    let text = match crate::file::read_capped_with(pid_file, crate::file::Links::Follow, 4096) {
        Ok(None) => {
            return Presence::Absent(format!("pid file `{}` does not exist", pid_file.display()));
        }
        Ok(Some(text)) => text,
        Err(_) => return Presence::Running,
    };
    let pid = String::from_utf8_lossy(&text)
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<u32>().ok())
        .filter(|p| *p > 1);
    match pid {
        Some(pid) if !std::path::Path::new(&format!("/proc/{pid}")).exists() => {
            Presence::Absent(format!(
                "process {pid} from pid file `{}` is not running",
                pid_file.display()
            ))
        }
        _ => Presence::Running,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn of(strategy: Strategy) -> Presence {
        presence(&Reload {
            strategy,
            timeout: Duration::from_secs(1),
        })
    }

    #[test]
    fn no_socket_and_no_pid_file_mean_no_haproxy() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        assert!(matches!(
            of(Strategy::MasterSocket(path("master.sock").as_path().into())),
            Presence::Absent(_)
        ));
        // A socket file left behind, that nobody listens on.
        drop(std::os::unix::net::UnixListener::bind(path("stale.sock")).unwrap());
        assert!(matches!(
            of(Strategy::MasterSocket(path("stale.sock").as_path().into())),
            Presence::Absent(_)
        ));
        let _live = std::os::unix::net::UnixListener::bind(path("live.sock")).unwrap();
        assert_eq!(
            of(Strategy::MasterSocket(path("live.sock").as_path().into())),
            Presence::Running
        );
        assert!(matches!(
            of(Strategy::Signal(path("none.pid"))),
            Presence::Absent(_)
        ));
        std::fs::write(path("self.pid"), format!("{}\n", std::process::id())).unwrap();
        assert_eq!(of(Strategy::Signal(path("self.pid"))), Presence::Running);
        std::fs::write(path("gone.pid"), "4194304\n").unwrap();
        assert!(matches!(
            of(Strategy::Signal(path("gone.pid"))),
            Presence::Absent(_)
        ));
        assert_eq!(of(Strategy::Command("true".into())), Presence::Running);
    }
}
