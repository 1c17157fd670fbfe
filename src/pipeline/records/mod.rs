//! hacfg's own files in the nodes folder, and what a damaged one does.
//!
//! Four records, JSON lists hacfg writes and reads back: `.hacfg.pending`
//! (its own drains), `.hacfg.held` (nodes HAProxy refused), `.hacfg.failed`
//! (failed members that stay) and `.hacfg.waiting` (what `--apply runtime`
//! left for a reload). Beside them, the index (a cache of the node files,
//! see the `index` module) and the lock files of the detached workers
//! ([`lock`]). All are hidden, so never a node.
//!
//! **One read** ([`read`]): bounded, never through a link, never blocked by
//! a FIFO, regular files only, then parsed and checked as hacfg writes it
//! ([`Kind::parse`]). **One damage policy**: a record that fails any of
//! this is damaged. It reads as no record, and [`sweep`], which every run
//! that changes the folder calls under the folder lock before it reads a
//! record, moves it aside as `NAME.damaged` (replacing an older one) with
//! one line in the log naming it and why. A membership change never waits
//! for a damaged record, and nothing it said is lost silently: its bytes
//! stay in `.damaged`, and the line says what the run does without it.
//! **One write** ([`save`]): atomic, and an empty record is no file.

pub mod clock;
pub mod lock;
mod sweep;

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::atomic;
use crate::file;
use crate::log::Log;
use crate::quote;

pub use clock::{deadline, now_ms};
pub use sweep::sweep;

/// hacfg's own drains, and why (the `pending` module).
pub const PENDING: &str = ".hacfg.pending";
/// Nodes HAProxy refused (the `quarantine` module).
pub const HELD: &str = ".hacfg.held";
/// Failed members that stay (the `verify` module).
pub const FAILED: &str = ".hacfg.failed";
/// Parts that wait for a reload (the `split` module).
pub const WAITING: &str = ".hacfg.waiting";
/// The cache of the node files (the `index` module): a damaged one is ignored
/// and rewritten, since the node files hold everything it says.
pub const INDEX: &str = ".hacfg.index";
/// Where a damaged record is moved: `NAME` and this.
const DAMAGED: &str = ".damaged";

/// One kind of record: its file, its bound, and how it reads back.
pub trait Kind: Default + Sized {
    /// The file's name in the nodes folder.
    const NAME: &'static str;
    /// The largest file read.
    const CAP: u64;
    /// What it holds, in messages (`hacfg's pending work`).
    const WHAT: &'static str;
    /// What a run does without a damaged one, in its line.
    const WITHOUT: &'static str;

    /// The record as hacfg wrote it; an error for anything it never writes
    /// (another shape, a name that is no name). `now_ms` judges stored times.
    fn parse(bytes: &[u8], now_ms: u64) -> Result<Self>;
}

/// A record that cannot be trusted, and why.
#[derive(Debug)]
pub struct Damage {
    path: PathBuf,
    what: &'static str,
    without: &'static str,
    why: String,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = quote::shorten(&self.why, quote::SHOWN);
        write!(
            f,
            "{} `{}` is damaged ({why})",
            self.what,
            self.path.display()
        )
    }
}

impl std::error::Error for Damage {}

impl Damage {
    /// A damaged file at `path`; `without` says what the run does instead.
    pub fn new(path: PathBuf, what: &'static str, without: &'static str, why: String) -> Damage {
        Damage {
            path,
            what,
            without,
            why,
        }
    }

    /// Moves the file aside as `NAME.damaged` (replacing an older one), and
    /// says so in one log line; a file that cannot be moved is said too,
    /// and the run goes on. Only under the folder lock: records are written
    /// under it, so what is moved is what was read. A file already gone was
    /// moved by another run, which said so.
    pub fn set_aside(&self, log: &mut Log) {
        let aside = aside_path(&self.path);
        match std::fs::rename(&self.path, &aside) {
            Ok(()) => {
                let _ = atomic::sync_dir(atomic::parent_dir(&self.path));
                log.warn(&format!(
                    "{self}: moved aside to `{}`; {}",
                    aside.display(),
                    self.without
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log.warn(&format!(
                "{self}, and it cannot be moved aside to `{}` ({e}); {}",
                aside.display(),
                self.without
            )),
        }
    }
}

/// `PATH.damaged`.
fn aside_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(DAMAGED);
    PathBuf::from(name)
}

/// Reads the folder's record of kind `R`: none if it has no file, a
/// [`Damage`] if it cannot be trusted. No side effect: any caller may read.
pub fn read<R: Kind>(dir: &Path) -> Result<R, Damage> {
    let path = dir.join(R::NAME);
    let parsed = file::read_capped(&path, R::CAP).and_then(|bytes| match bytes {
        None => Ok(R::default()),
        Some(bytes) => R::parse(&bytes, now_ms()),
    });
    parsed.map_err(|e| Damage::new(path, R::WHAT, R::WITHOUT, format!("{e:#}")))
}

/// [`read`], a damaged record read as none (the run's [`sweep`] moves it
/// aside and says so).
pub fn load<R: Kind>(dir: &Path) -> R {
    read(dir).unwrap_or_default()
}

/// Writes the record as `entries`, atomically; none removes it. The caller
/// holds the exclusive lock.
pub fn save<R: Kind, T: serde::Serialize>(dir: &Path, entries: &[T]) -> Result<()> {
    let path = dir.join(R::NAME);
    atomic::write_record(&path, entries)
        .with_context(|| format!("unable to record {} in `{}`", R::WHAT, path.display()))
}

/// Removes the record. The caller holds the exclusive lock.
pub fn forget<R: Kind>(dir: &Path) -> Result<()> {
    save::<R, ()>(dir, &[])
}

/// Whether the folder has a file of kind `R` at all (one `lstat`).
pub fn present<R: Kind>(dir: &Path) -> bool {
    dir.join(R::NAME).symlink_metadata().is_ok()
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::haproxy::Target;
    use crate::log::Verbosity;
    use crate::node::Node;
    use crate::pipeline::pending::{Pending, Why};
    use crate::pipeline::quarantine::HeldSet;
    use crate::pipeline::split;
    use crate::pipeline::verify::{Stay, Stays};
    use crate::store::{Exclusive, Store};

    /// A nodes folder and a log file beside it.
    struct Folder {
        tmp: tempfile::TempDir,
        store: Store,
    }

    impl Folder {
        fn new() -> Folder {
            let tmp = tempfile::tempdir().unwrap();
            fs::create_dir(tmp.path().join("nodes")).unwrap();
            let store = Store::new(&tmp.path().join("nodes"));
            Folder { tmp, store }
        }

        fn dir(&self) -> &Path {
            self.store.dir()
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir().join(name)
        }

        fn write(&self, name: &str, bytes: &[u8]) {
            fs::write(self.path(name), bytes).unwrap();
        }

        /// Sweeps the folder under its lock; the log lines it wrote.
        fn sweep(&self) -> Vec<String> {
            let log_path = self.tmp.path().join("log");
            let _ = fs::remove_file(&log_path);
            let mut log = Log::new(Verbosity::Quiet, Some(&log_path));
            sweep(
                self.dir(),
                &self.store.lock::<Exclusive>().unwrap(),
                &mut log,
            );
            let text = fs::read_to_string(&log_path).unwrap_or_default();
            text.lines().map(str::to_string).collect()
        }

        fn aside(&self, name: &str) -> PathBuf {
            self.path(&format!("{name}.damaged"))
        }
    }

    fn mkfifo(path: &Path) {
        use rustix::fs::{CWD, Mode, mkfifoat};
        mkfifoat(CWD, path, Mode::RUSR | Mode::WUSR).unwrap();
    }

    /// Damage at `name` is moved aside whole, read as none, and named in
    /// exactly one line that says `why`.
    #[track_caller]
    fn assert_set_aside(f: &Folder, name: &str, why: &str) {
        let lines = f.sweep();
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert!(line.contains(&format!("{name}` is damaged")), "{line}");
        assert!(line.contains(why), "{line}");
        assert!(line.contains(&format!("moved aside to `{}", f.aside(name).display())));
        assert!(f.aside(name).symlink_metadata().is_ok());
        assert!(f.path(name).symlink_metadata().is_err());
        // Swept once: the next run has nothing to say.
        assert!(f.sweep().is_empty());
    }

    #[test]
    fn every_record_round_trips_and_a_sound_one_is_left_alone() {
        let f = Folder::new();
        let mut pending = Pending::default();
        let target = Target::new("web", "a");
        pending.insert(target, Why::Removal, std::time::Duration::from_secs(5));
        pending.save(f.dir(), &Pending::default()).unwrap();
        let mut held = HeldSet::default();
        held.insert(Node::named("bad").port(80), "refused".into());
        held.save(f.dir()).unwrap();
        let stays = [Stay {
            name: "s1".into(),
            since_ms: now_ms(),
        }];
        save::<Stays, _>(f.dir(), &stays).unwrap();
        f.write(
            WAITING,
            br#"[{"key":"server web/a server a 10.0.0.1:80","reason":"a host name"}]"#,
        );
        assert!(f.sweep().is_empty());
        assert_eq!(Pending::load(f.dir()), pending);
        assert_eq!(HeldSet::load(f.dir()), held);
        assert_eq!(Stays::load(f.dir()).entries, stays);
        assert_eq!(split::Record::load(f.dir()).entries.len(), 1);
        // None of them is a file once empty; a missing one reads as empty.
        forget::<Stays>(f.dir()).unwrap();
        assert!(!present::<Stays>(f.dir()));
        assert!(read::<Stays>(f.dir()).unwrap().entries.is_empty());
    }

    #[test]
    fn garbage_is_moved_aside_with_one_line_and_its_bytes_kept() {
        let f = Folder::new();
        f.write(PENDING, b"\xff not json at all");
        assert!(Pending::load(f.dir()).is_empty());
        assert_set_aside(&f, PENDING, "expected value at line 1 column 1");
        assert_eq!(fs::read(f.aside(PENDING)).unwrap(), b"\xff not json at all");
        // What the pending record's line says the run does without it.
        let again = f.path(PENDING);
        fs::write(&again, b"[").unwrap();
        let line = f.sweep().remove(0);
        assert!(line.contains("goes on from HAProxy's live state"), "{line}");
        // An older damaged copy was replaced.
        assert_eq!(fs::read(f.aside(PENDING)).unwrap(), b"[");
    }

    #[test]
    fn a_truncated_record_is_damage() {
        let f = Folder::new();
        let mut held = HeldSet::default();
        held.insert(Node::named("bad").port(80), "refused".into());
        held.save(f.dir()).unwrap();
        let whole = fs::read(f.path(HELD)).unwrap();
        f.write(HELD, &whole[..whole.len() / 2]);
        assert!(HeldSet::load(f.dir()).names().is_empty());
        assert_set_aside(&f, HELD, "EOF while parsing");
        assert!(f.sweep().is_empty());
    }

    #[test]
    fn a_link_is_never_followed_even_to_a_sound_record() {
        let f = Folder::new();
        let elsewhere = f.tmp.path().join("elsewhere");
        fs::write(&elsewhere, br#"[{"name":"s1","since_ms":1}]"#).unwrap();
        symlink(&elsewhere, f.path(FAILED)).unwrap();
        assert!(Stays::load(f.dir()).entries.is_empty());
        assert_set_aside(&f, FAILED, "symbolic link");
        // The link itself was moved, not what it points to.
        assert!(f.aside(FAILED).symlink_metadata().unwrap().is_symlink());
        assert!(elsewhere.exists());
    }

    #[test]
    fn a_fifo_never_blocks_a_read() {
        let f = Folder::new();
        mkfifo(&f.path(WAITING));
        assert!(split::Record::load(f.dir()).entries.is_empty());
        assert_set_aside(&f, WAITING, "a FIFO");
    }

    #[test]
    fn a_huge_record_is_refused_before_it_is_read() {
        let f = Folder::new();
        let file = fs::File::create(f.path(PENDING)).unwrap();
        // Sparse: no disk, and nothing of it is read.
        file.set_len(<Pending as Kind>::CAP + 1).unwrap();
        assert_set_aside(&f, PENDING, "larger than 65536 KiB");
    }

    #[test]
    fn another_shape_is_damage_for_every_record() {
        for name in [PENDING, HELD, FAILED, WAITING] {
            let f = Folder::new();
            f.write(name, br#"{"entries":[]}"#);
            assert_set_aside(&f, name, "expected a sequence");
        }
    }

    #[test]
    fn content_hacfg_never_writes_is_damage() {
        let foreign: [(&str, &[u8], &str); 4] = [
            (
                PENDING,
                br#"[{"target":{"backend":"web; shutdown sessions server web/b","name":"a"},
                    "why":"removal","since_ms":0,"deadline_ms":0}]"#,
                "is no HAProxy name",
            ),
            (
                HELD,
                br#"[{"node":{"name":"../etc","address":"10.0.0.1"},"reason":"x"}]"#,
                "node \"../etc\" in it",
            ),
            (
                FAILED,
                br#"[{"name":"s1","since_ms":1},{"name":"a/b","since_ms":1}]"#,
                "a/b",
            ),
            (
                WAITING,
                br#"[{"key":"disable server web/a","reason":"x"}]"#,
                "is no part of a config",
            ),
        ];
        for (name, bytes, why) in foreign {
            let f = Folder::new();
            f.write(name, bytes);
            assert_set_aside(&f, name, why);
        }
    }

    #[test]
    fn a_record_that_cannot_be_moved_is_said_and_reads_as_none() {
        let f = Folder::new();
        f.write(FAILED, b"garbage");
        // A folder full of something holds the `.damaged` name.
        fs::create_dir(f.aside(FAILED)).unwrap();
        fs::write(f.aside(FAILED).join("x"), b"").unwrap();
        let lines = f.sweep();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("cannot be moved aside"), "{}", lines[0]);
        // The failed members it listed stay: nothing is removed for it.
        assert!(lines[0].contains("stay in the folder"), "{}", lines[0]);
        assert!(Stays::load(f.dir()).entries.is_empty());
        assert_eq!(fs::read(f.path(FAILED)).unwrap(), b"garbage");
    }

    #[test]
    fn the_reason_is_cut_to_a_readable_length() {
        let f = Folder::new();
        let long = "x".repeat(100_000);
        let bytes = format!(
            r#"[{{"target":{{"backend":"web","name":"a"}},"why":"{long}","since_ms":0,"deadline_ms":0}}]"#
        );
        f.write(PENDING, bytes.as_bytes());
        let lines = f.sweep();
        assert!(lines[0].contains("unknown variant"), "{}", lines[0]);
        assert!(lines[0].len() < 1_000, "{} bytes", lines[0].len());
    }

    #[test]
    fn times_from_a_clock_stepped_back_are_past_in_every_record() {
        let f = Folder::new();
        let ahead = now_ms() + 24 * clock::MAX_WAIT_MS;
        let held = format!(
            r#"[{{"node":{{"name":"bad","address":"10.0.0.1"}},"reason":"x","refused_ms":{ahead}}}]"#
        );
        f.write(HELD, held.as_bytes());
        let held = HeldSet::load(f.dir());
        assert_eq!(held.get(&Node::named("bad")).unwrap().refused_ms, 0);
        let stays = format!(r#"[{{"name":"s1","since_ms":{ahead}}},{{"name":"s2","since_ms":5}}]"#);
        f.write(FAILED, stays.as_bytes());
        let since: Vec<u64> = Stays::load(f.dir())
            .entries
            .iter()
            .map(|s| s.since_ms)
            .collect();
        assert_eq!(since, [0, 5]);
    }
}
