//! Waiting for an `flock` with a deadline, and naming who holds it.
//!
//! `flock(2)` has no timeout, and anyone who may open a file (or the nodes
//! folder, which is world-readable) may hold its lock for ever. So every
//! wait here polls `try_lock` until a deadline, and a wait that runs out
//! names the holders the kernel knows (`/proc/locks`): PID and command.

use std::fmt;
use std::fs::{File, TryLockError};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The longest pause between two tries: a lock let go is seen within it.
const MAX_PAUSE: Duration = Duration::from_millis(20);
/// Largest `/proc/locks` read: one line per lock on the whole machine.
const PROC_LOCKS_CAP: u64 = 4 * 1024 * 1024;

/// What the nodes folder's lock is called in messages.
pub const FOLDER: &str = "nodes folder";

/// How an `flock` is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Shared,
    Exclusive,
}

/// A lock still held by someone else when the deadline came.
#[derive(Debug)]
pub struct TimedOut {
    /// What the lock guards, for the message (`nodes folder`).
    pub what: &'static str,
    pub path: PathBuf,
    pub waited: Duration,
    /// Holders the kernel names; empty when it names none we can see.
    pub holders: Vec<Holder>,
}

/// One process holding the lock, as `/proc/locks` and `/proc/PID` tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// Its command (`/proc/PID/comm`), escaped and cut; empty if unknown.
    pub command: String,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the lock on {} `{}` is still held after {}s: this run went no further",
            self.what,
            self.path.display(),
            seconds(self.waited)
        )?;
        match self.holders.as_slice() {
            [] => f.write_str(" (its holder is not visible here; see /proc/locks)"),
            holders => {
                let shown: Vec<String> = holders.iter().map(Holder::to_string).collect();
                write!(f, " (held by {})", shown.join(", "))
            }
        }?;
        if self.what == FOLDER {
            f.write_str("; --lock-timeout sets the wait")?;
        }
        Ok(())
    }
}

impl std::error::Error for TimedOut {}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.command.as_str() {
            "" => write!(f, "PID {}", self.pid),
            command => write!(f, "PID {} ({command})", self.pid),
        }
    }
}

/// `1.5` or `30`, never `30.0` or `1.5000001`.
fn seconds(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        (ms / 1000).to_string()
    } else {
        format!("{:.3}", d.as_secs_f64())
            .trim_end_matches('0')
            .to_string()
    }
}

/// Takes `file`'s lock, trying again until `wait` has passed. `what` and
/// `path` name it in the error. An error other than "held" is returned at
/// once.
pub fn take(
    file: &File,
    kind: Kind,
    wait: Duration,
    (what, path): (&'static str, &Path),
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        let tried = match kind {
            Kind::Shared => file.try_lock_shared(),
            Kind::Exclusive => file.try_lock(),
        };
        match tried {
            Ok(()) => return Ok(()),
            Err(TryLockError::Error(e)) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("unable to lock {what} `{}`", path.display())));
            }
            Err(TryLockError::WouldBlock) => {}
        }
        let waited = start.elapsed();
        if waited >= wait {
            let holders = holders_of(file);
            let path = path.to_path_buf();
            return Err(TimedOut {
                what,
                path,
                waited: wait,
                holders,
            }
            .into());
        }
        std::thread::sleep(pause.min(wait.saturating_sub(waited)));
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// The processes `/proc/locks` says hold a lock on `file`'s inode (not the
/// ones waiting for it); empty when it cannot be read.
pub fn holders_of(file: &File) -> Vec<Holder> {
    let Ok(meta) = file.metadata() else {
        return Vec::new();
    };
    let Ok(Some(text)) = crate::file::read_capped_with(
        Path::new("/proc/locks"),
        crate::file::Links::Follow,
        PROC_LOCKS_CAP,
    )
    .map(|b| b.map(|b| String::from_utf8_lossy(&b).into_owned())) else {
        return Vec::new();
    };
    let id = inode_id(meta.dev(), meta.ino());
    let mut pids: Vec<u32> = text.lines().filter_map(|l| holder_pid(l, &id)).collect();
    pids.sort_unstable();
    pids.dedup();
    pids.into_iter()
        .map(|pid| Holder {
            pid,
            command: command_of(pid),
        })
        .collect()
}

/// The inode as `/proc/locks` writes it: `MAJOR:MINOR:INODE`, the device
/// numbers in two-digit hex.
fn inode_id(dev: u64, ino: u64) -> String {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    format!("{major:02x}:{minor:02x}:{ino}")
}

/// The PID of one `/proc/locks` line that holds (not waits for, `->`) a
/// lock on inode `id`. A line: `1: FLOCK  ADVISORY  WRITE 1234 00:2e:567 0 EOF`.
fn holder_pid(line: &str, id: &str) -> Option<u32> {
    let mut fields = line.split_whitespace().skip(1);
    let class = fields.next()?;
    if class == "->" {
        return None;
    }
    let mut rest = fields.skip(2);
    let pid = rest.next()?.parse().ok().filter(|p| *p > 0)?;
    (rest.next()? == id).then_some(pid)
}

/// `/proc/PID/comm`, shown escaped and cut; empty if it cannot be read.
fn command_of(pid: u32) -> String {
    let path = PathBuf::from(format!("/proc/{pid}/comm"));
    match crate::file::read_capped_with(&path, crate::file::Links::Follow, 256) {
        Ok(Some(bytes)) => {
            let text = String::from_utf8_lossy(&bytes);
            crate::quote::quote(text.trim_end_matches('\n')).to_string()
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_locks_lines_name_holders_not_waiters() {
        let id = "00:2e:5678";
        let held = "1: FLOCK  ADVISORY  WRITE 1234 00:2e:5678 0 EOF";
        let shared = "2: FLOCK  ADVISORY  READ  99 00:2e:5678 0 EOF";
        let waiting = "1: -> FLOCK  ADVISORY  WRITE 77 00:2e:5678 0 EOF";
        let other = "3: POSIX  ADVISORY  WRITE 55 00:2e:9999 0 EOF";
        let hidden = "4: FLOCK  ADVISORY  WRITE -1 00:2e:5678 0 EOF";
        assert_eq!(holder_pid(held, id), Some(1234));
        assert_eq!(holder_pid(shared, id), Some(99));
        assert_eq!(holder_pid(waiting, id), None);
        assert_eq!(holder_pid(other, id), None);
        assert_eq!(holder_pid(hidden, id), None);
        assert_eq!(holder_pid("garbage", id), None);
    }

    #[test]
    fn a_held_lock_times_out_and_names_this_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l");
        let holder = File::create(&path).unwrap();
        holder.lock().unwrap();
        let waiter = File::open(&path).unwrap();
        let wait = Duration::from_millis(50);
        let err = take(&waiter, Kind::Shared, wait, ("test lock", &path)).unwrap_err();
        let timed_out = err.downcast_ref::<TimedOut>().unwrap();
        assert_eq!(timed_out.waited, wait);
        let me = std::process::id();
        assert!(timed_out.holders.iter().any(|h| h.pid == me), "{timed_out}");
        let text = timed_out.to_string();
        assert!(text.contains(&format!("PID {me}")), "{text}");
        assert!(
            text.contains("after 0.05s: this run went no further"),
            "{text}"
        );
        drop(holder);
        take(&waiter, Kind::Exclusive, wait, ("test lock", &path)).unwrap();
    }

    #[test]
    fn seconds_read_as_people_write_them() {
        assert_eq!(seconds(Duration::from_secs(30)), "30");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5");
        assert_eq!(seconds(Duration::from_millis(250)), "0.25");
    }
}
