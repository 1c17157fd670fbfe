//! The lock files of the folder's detached workers: at most one of each
//! job runs per nodes folder. Created 0600 (no other user can open one to
//! hold it), never followed as a link, and never blocked on: a link, FIFO
//! or anything but a regular file there is damage, moved aside (under the
//! folder lock) as `NAME.damaged` with one log line, and a new lock file
//! takes its place, so no planted file can stop the workers.

use std::fs::{File, TryLockError};
use std::path::Path;

use anyhow::{Context, Result};

use super::Damage;
use crate::file;
use crate::lock::Holder;
use crate::log::Log;
use crate::store::{Exclusive, Store};

/// A detached worker's job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// Finishes hacfg's pending drains (`hacfg settle --worker`).
    Settle,
    /// Watches the failed members that stay (`--on-failed verify`).
    Watch,
}

impl Job {
    /// Its lock file in the nodes folder.
    pub fn file_name(self) -> &'static str {
        match self {
            Job::Settle => ".hacfg.worker.lock",
            Job::Watch => ".hacfg.watch.lock",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Job::Settle => "the settle worker's lock",
            Job::Watch => "the watch worker's lock",
        }
    }
}

/// Held by the one worker of a job in a folder.
pub struct WorkerLock {
    _file: File,
}

impl WorkerLock {
    /// Takes `job`'s lock; `None` when another worker holds it. The caller
    /// does not hold the folder lock (a damaged lock file is replaced
    /// under it).
    pub fn try_take(store: &Store, job: Job, log: &mut Log) -> Result<Option<WorkerLock>> {
        let path = store.dir().join(job.file_name());
        let file = match file::open_lock(&path, 0o600, job.what()) {
            Ok(file) => file,
            Err(e) if damaged(&path) => {
                let _folder = store.lock::<Exclusive>()?;
                if damaged(&path) {
                    let without = "a new lock file takes its place";
                    Damage::new(path.clone(), job.what(), without, format!("{e:#}")).set_aside(log);
                }
                file::open_lock(&path, 0o600, job.what())?
            }
            Err(e) => return Err(e),
        };
        match file.try_lock() {
            Ok(()) => Ok(Some(WorkerLock { _file: file })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("unable to lock `{}`", path.display()))
            }
        }
    }
}

/// The process that holds `job`'s lock in the nodes folder `dir`, if one
/// does, as `/proc/locks` says. Read only: nothing is created or locked (a
/// lock taken to test it would turn a starting worker away).
pub fn holder(dir: &Path, job: Job) -> Option<Holder> {
    holders(dir, job).ok().flatten()?.into_iter().next()
}

/// Who holds a worker's lock, as `/proc/locks` names them, without taking
/// it; `None` when there is no lock file (a link or a FIFO is an error).
pub fn holders(dir: &Path, job: Job) -> anyhow::Result<Option<Vec<Holder>>> {
    let opened = crate::file::open(&dir.join(job.file_name()))?;
    Ok(opened.map(|(file, _)| crate::lock::holders_of(&file)))
}

/// Whether something other than a regular file (a link, a FIFO, a folder)
/// holds a lock file's name.
fn damaged(path: &Path) -> bool {
    path.symlink_metadata().is_ok_and(|m| !m.is_file())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::log::Verbosity;

    #[test]
    fn a_planted_lock_file_is_moved_aside_and_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path());
        let log_path = tmp.path().join("log");
        let mut log = Log::new(Verbosity::Quiet, Some(&log_path));
        let settle = tmp.path().join(Job::Settle.file_name());
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &settle,
            rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
        )
        .unwrap();
        let watch = tmp.path().join(Job::Watch.file_name());
        std::os::unix::fs::symlink("/dev/null", &watch).unwrap();
        // Neither blocks nor stops the worker: each gets a lock of its own.
        let held = WorkerLock::try_take(&store, Job::Settle, &mut log).unwrap();
        assert!(held.is_some());
        assert!(
            WorkerLock::try_take(&store, Job::Watch, &mut log)
                .unwrap()
                .is_some()
        );
        for path in [&settle, &watch] {
            let meta = path.symlink_metadata().unwrap();
            assert!(meta.is_file());
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        }
        let mut aside = settle.into_os_string();
        aside.push(".damaged");
        assert!(std::path::Path::new(&aside).symlink_metadata().is_ok());
        let logged = std::fs::read_to_string(&log_path).unwrap();
        assert_eq!(logged.lines().count(), 2, "{logged}");
        assert!(
            logged.contains(".hacfg.worker.lock` is damaged"),
            "{logged}"
        );
        assert!(
            logged.contains("a new lock file takes its place"),
            "{logged}"
        );
        // The one worker of a job: a second is told no, and who holds it.
        assert!(
            WorkerLock::try_take(&store, Job::Settle, &mut log)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn the_holder_of_a_workers_lock_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path());
        let mut log = Log::new(Verbosity::Quiet, None);
        assert!(holder(tmp.path(), Job::Settle).is_none(), "no file");
        let held = WorkerLock::try_take(&store, Job::Settle, &mut log).unwrap();
        let pid = holder(tmp.path(), Job::Settle).map(|h| h.pid);
        assert_eq!(pid, Some(std::process::id()));
        drop(held);
        assert!(holder(tmp.path(), Job::Settle).is_none(), "let go");
    }
}
