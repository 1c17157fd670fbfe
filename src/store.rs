//! The nodes folder: one file per node, named after it, guarded by a lock on
//! the folder itself.

use std::fs::{self, File};
use std::io::ErrorKind;
use std::marker::PhantomData;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::atomic;
use crate::file;
use crate::index::{self, Stamp};
use crate::lock;
use crate::node::{self, Node};
use crate::quote::quote_bytes;

/// How long a run waits for the folder's lock by default (`--lock-timeout`):
/// longer than the slowest legitimate holder (a render checked by HAProxy,
/// then a reload verified for up to `--reload-timeout`, 10 s), short enough
/// that a stuck or hostile holder does not keep Serf's queue of handlers
/// waiting for ever.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(30);

/// The mode `hacfg init` gives a nodes folder it creates (less the umask).
pub const NODES_DIR_MODE: u32 = 0o750;

/// The nodes folder.
pub struct Store {
    dir: PathBuf,
    /// How long [`Store::lock`] waits for another holder.
    lock_wait: Duration,
}

/// How a [`Lock`] holds the folder.
pub trait Mode {
    const EXCLUSIVE: bool;
}

/// Changing single node files (each write is atomic on its own) and reading.
pub enum Shared {}
/// Rendering and applying, which must see a folder no one is changing; also
/// the only mode that may rewrite the index or remove killed runs' temp files.
pub enum Exclusive {}

impl Mode for Shared {
    const EXCLUSIVE: bool = false;
}
impl Mode for Exclusive {
    const EXCLUSIVE: bool = true;
}

/// Held while the folder is read or changed: `flock` on the folder itself,
/// so there is no lock file to replace, link or delete, and a user who may
/// only read the folder can still take it. The kernel drops it when the
/// process exits, however it exits (even on SIGKILL).
pub struct Lock<M: Mode> {
    _dir: File,
    _mode: PhantomData<M>,
}

impl Store {
    pub fn new(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
            lock_wait: DEFAULT_LOCK_WAIT,
        }
    }

    /// The same folder, its lock waited for at most `wait`.
    pub fn with_lock_wait(mut self, wait: Duration) -> Store {
        self.lock_wait = wait;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the folder if it is missing (commands that change nodes).
    /// The folder is made without access for other users (0750): one who
    /// could open it could hold its lock, and node names are the pool's map.
    pub fn create(&self) -> Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(NODES_DIR_MODE)
            .create(&self.dir)
            .with_context(|| format!("unable to create nodes folder `{}`", self.dir.display()))
    }

    /// Takes the folder's lock in mode `M`, waiting for other holders at most
    /// the lock wait (then a [`lock::TimedOut`] error, exit 10).
    pub fn lock<M: Mode>(&self) -> Result<Lock<M>> {
        let dir = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(&self.dir);
        let dir = match dir {
            Ok(dir) => dir,
            Err(e) if e.kind() == ErrorKind::NotFound => bail!(
                "nodes folder `{}` does not exist (create it with `hacfg init`, or set \
                 --nodes-dir or HACFG_NODES_DIR)",
                self.dir.display()
            ),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("unable to open nodes folder `{}`", self.dir.display())
                });
            }
        };
        let kind = if M::EXCLUSIVE {
            lock::Kind::Exclusive
        } else {
            lock::Kind::Shared
        };
        lock::take(&dir, kind, self.lock_wait, (lock::FOLDER, &self.dir))?;
        Ok(Lock {
            _dir: dir,
            _mode: PhantomData,
        })
    }

    fn path_of(&self, name: &str) -> Result<PathBuf> {
        // Validation keeps `name` a single plain path component.
        node::validate_name(name)?;
        Ok(self.dir.join(name))
    }

    /// Reads one node; `None` if it has no file.
    pub fn read(&self, name: &str) -> Result<Option<Node>> {
        let path = self.path_of(name)?;
        let Some(bytes) = file::read_capped(&path, file::NODE_FILE_CAP)? else {
            return Ok(None);
        };
        node::parse_node_file(name, &bytes)
            .map(Some)
            .with_context(|| format!("invalid node file `{}`", path.display()))
    }

    /// Creates or replaces a node file. Returns false when it already held
    /// exactly this node (nothing is written then).
    pub fn write<M: Mode>(&self, lock: &Lock<M>, node: &Node) -> Result<bool> {
        self.write_all(lock, std::slice::from_ref(node))?.remove(0)
    }

    /// Deletes a node file. Returns false when there was none.
    pub fn remove<M: Mode>(&self, lock: &Lock<M>, name: &str) -> Result<bool> {
        self.remove_all(lock, &[name.to_string()])?.remove(0)
    }

    /// Creates or replaces node files, one result per node (true: written,
    /// false: already held this node). Each file is staged and renamed into
    /// place; the batch's data is made durable (in parallel) before any rename.
    /// The outer error is the batch's: its data or folder could not be synced.
    pub fn write_all<M: Mode>(&self, _lock: &Lock<M>, nodes: &[Node]) -> Result<Vec<Result<bool>>> {
        let mut staged = Vec::new();
        let mut results: Vec<Result<bool>> =
            nodes
                .iter()
                .map(|node| {
                    node.validate()?;
                    // Whatever is there (even a FIFO or a broken file) is replaced.
                    if self.read(&node.name).ok().flatten().as_ref() == Some(node) {
                        return Ok(false);
                    }
                    let path = self.path_of(&node.name)?;
                    let write = atomic::Staged::unsynced(&path, &node.to_file_bytes()?);
                    staged.push(write.with_context(|| {
                        format!("unable to write node file `{}`", path.display())
                    })?);
                    Ok(true)
                })
                .collect();
        if staged.is_empty() {
            return Ok(results);
        }
        // On failure nothing was renamed: the staged files vanish when dropped.
        atomic::sync_all(&staged)?;
        let mut renamed = staged.into_iter().map(atomic::Staged::rename);
        for r in results.iter_mut().filter(|r| matches!(r, Ok(true))) {
            if let Some(Err(e)) = renamed.next() {
                *r = Err(e);
            }
        }
        atomic::sync_dir(&self.dir)?;
        Ok(results)
    }

    /// Deletes node files, one result per name (false: there was none); the
    /// folder is synced once.
    pub fn remove_all<M: Mode>(
        &self,
        _lock: &Lock<M>,
        names: &[String],
    ) -> Result<Vec<Result<bool>>> {
        let results: Vec<Result<bool>> = names
            .iter()
            .map(|name| {
                let path = self.path_of(name)?;
                match fs::remove_file(&path) {
                    Ok(()) => Ok(true),
                    Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
                    Err(e) => {
                        Err(e).with_context(|| format!("unable to remove `{}`", path.display()))
                    }
                }
            })
            .collect();
        if results.iter().any(|r| matches!(r, Ok(true))) {
            atomic::sync_dir(&self.dir)?;
        }
        Ok(results)
    }

    /// Every node in the folder, sorted by name, and the files that are no
    /// node hacfg can read (held back: one bad file never blinds the pool).
    /// Files the index (`.hacfg.index`) proves unchanged are not read again.
    /// Under the exclusive lock a stale index is rewritten and temp files of
    /// killed runs are removed; under the shared one nothing is written.
    pub fn load<M: Mode>(&self, _lock: &Lock<M>) -> Result<Loaded> {
        let scan_start = index::now_ns();
        let mut snapshot = index::Snapshot::load(&self.dir);
        let mut buf = Vec::with_capacity(256);
        // The index's files are checked on other threads while this one
        // lists the folder and reads the files the index does not know.
        let (unchanged, listing) = std::thread::scope(|scope| {
            let verifier = scope.spawn(|| snapshot.verify(&self.dir));
            let listed = self.list(&snapshot, &mut buf, M::EXCLUSIVE);
            let unchanged = verifier.join().unwrap_or_default();
            listed.map(|l| (unchanged, l))
        })?;
        let Listing {
            seen,
            mut fresh,
            mut unreadable,
            stray,
        } = listing;
        for (at, seen) in seen.into_iter().enumerate() {
            match (seen, unchanged.get(at)) {
                (false, _) => {} // gone from the folder
                (true, Some(true)) => snapshot.keep(at),
                (true, _) => match self.reread(&snapshot, at, &mut buf) {
                    Ok(read) => fresh.push(read),
                    Err(bad) => {
                        snapshot.keep(at);
                        unreadable.push(bad);
                    }
                },
            }
        }
        let (nodes, stamps, changed) = snapshot.merge(fresh, scan_start);
        if M::EXCLUSIVE && changed {
            // A cache: a folder we may read but not write still renders.
            let _ = index::save(&self.dir, scan_start, &nodes, &stamps);
        }
        unreadable.sort_by(|a, b| a.file.cmp(&b.file));
        Ok(Loaded {
            nodes,
            unreadable,
            stray,
        })
    }

    /// Reads again a file the index knows but whose stamp changed. One
    /// broken since (a typo, a write caught half-way) is held back, and its
    /// node keeps the version read before: one bad edit never drops a
    /// server.
    fn reread(
        &self,
        snapshot: &index::Snapshot,
        at: usize,
        buf: &mut Vec<u8>,
    ) -> std::result::Result<(Node, Stamp), Unreadable> {
        let name = snapshot.name(at);
        let path = self.dir.join(name);
        read_node_file(&path, name, buf).map_err(|e| {
            let mut bad = Unreadable::new(&path, &e);
            bad.kept = true;
            bad
        })
    }

    /// Every node in the folder (see [`Store::load`]); a file that is no
    /// node makes this fail, naming it (the tests' strict view).
    #[cfg(test)]
    pub fn load_all<M: Mode>(&self, lock: &Lock<M>) -> Result<Vec<Node>> {
        let loaded = self.load(lock)?;
        if let Some(bad) = loaded.unreadable.first() {
            bail!("{bad}");
        }
        Ok(loaded.nodes)
    }

    /// Lists the folder: which index entries have a file (`seen`), the
    /// nodes of the files the index does not know (read and validated), the
    /// files that are no readable node, and the stray ones skipped by name.
    /// `clean` removes temp files left by killed runs (exclusive lock only:
    /// then no other hacfg is writing one).
    fn list(&self, snapshot: &index::Snapshot, buf: &mut Vec<u8>, clean: bool) -> Result<Listing> {
        let folder = || format!("unable to read nodes folder `{}`", self.dir.display());
        let mut listing = Listing {
            seen: vec![false; snapshot.entries()],
            ..Listing::default()
        };
        for entry in fs::read_dir(&self.dir).with_context(folder)? {
            let entry = entry.with_context(folder)?;
            let file_name = entry.file_name();
            let bytes = file_name.as_bytes();
            // Ignore rules first: a backup or hidden file never fails a render.
            if node::is_ignored_file_name(bytes) {
                if clean && atomic::is_leftover(bytes) {
                    let _ = fs::remove_file(entry.path());
                } else if !is_own_file(bytes) {
                    listing.stray.push(quote_bytes(bytes));
                }
                continue;
            }
            match Self::entry(&entry, snapshot, buf) {
                Ok(Listed::Indexed(at)) => listing.seen[at] = true,
                Ok(Listed::Read(read)) => listing.fresh.push(*read),
                Err(e) => listing.unreadable.push(Unreadable::new(&entry.path(), &e)),
            }
        }
        listing.stray.sort();
        Ok(listing)
    }

    /// One folder entry that is not ignored by name: a name the index
    /// holds (validated when it was indexed), or a node file read now.
    fn entry(
        entry: &fs::DirEntry,
        snapshot: &index::Snapshot,
        buf: &mut Vec<u8>,
    ) -> Result<Listed> {
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            bail!("the name is not UTF-8");
        };
        let kind = entry
            .file_type()
            .with_context(|| format!("unable to stat `{}`", path.display()))?;
        if !kind.is_file() {
            bail!("not a regular file (links, folders, FIFOs, sockets and devices are refused)");
        }
        if let Some(at) = snapshot.find(&name) {
            return Ok(Listed::Indexed(at));
        }
        node::validate_name(&name)?;
        Ok(Listed::Read(Box::new(read_node_file(&path, &name, buf)?)))
    }
}

/// hacfg's own files in the folder (its index, records and temp files):
/// skipped without a word.
fn is_own_file(name: &[u8]) -> bool {
    name.starts_with(b".hacfg")
}

/// What one folder entry is (see `Store::entry`).
enum Listed {
    Indexed(usize),
    Read(Box<(Node, Stamp)>),
}

/// What listing the folder found (see `Store::list`).
#[derive(Default)]
struct Listing {
    /// Per index entry: a file of that name is in the folder.
    seen: Vec<bool>,
    /// Files the index does not know, read.
    fresh: Vec<(Node, Stamp)>,
    unreadable: Vec<Unreadable>,
    stray: Vec<String>,
}

/// The folder as a run found it.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The nodes, sorted by name.
    pub nodes: Vec<Node>,
    /// Files that are no node hacfg can read: left out, and said.
    pub unreadable: Vec<Unreadable>,
    /// Names skipped as editor, package-manager or lock leftovers (not
    /// hacfg's own files), shown escaped.
    pub stray: Vec<String>,
}

impl Loaded {
    /// The one warning line naming the stray files skipped, if any.
    pub fn stray_warning(&self, dir: &Path) -> Option<String> {
        const SHOWN: usize = 20;
        let (n, names) = (self.stray.len(), &self.stray);
        let more = match n.saturating_sub(SHOWN) {
            0 => String::new(),
            rest => format!(" and {rest} more"),
        };
        (n > 0).then(|| {
            let shown = names[..n.min(SHOWN)].join(", ");
            format!(
                "skipped {n} file(s) in `{}` that are never nodes (editor, package-manager or \
                 lock leftovers, hidden files): {shown}{more}",
                dir.display()
            )
        })
    }
}

/// A file in the nodes folder that hacfg cannot read as a node: it is held
/// back (left out of the render, exit 6) while the rest goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// The file's name in the folder (lossy UTF-8), for a table.
    pub name: String,
    /// The file's path, escaped (and cut) for a message.
    pub file: String,
    /// Why, on one line and cut to a readable length.
    pub reason: String,
    /// Its node was read before (the index has it): it keeps that version
    /// in the render until the file reads again.
    pub kept: bool,
}

impl Unreadable {
    fn new(path: &Path, err: &anyhow::Error) -> Unreadable {
        let reason = format!("{err:#}").replace('\n', " ");
        let reason = match crate::quote::cut(&reason, REASON_MAX) {
            Some(cut) => format!("{cut}…"),
            None => reason,
        };
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        Unreadable {
            name: crate::quote::cut(&name, REASON_MAX)
                .unwrap_or(&name)
                .to_string(),
            file: shown_name(path.as_os_str().as_bytes()),
            reason,
            kept: false,
        }
    }
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid node file {}: {}", self.file, self.reason)?;
        if self.kept {
            f.write_str(" (its node keeps the version read before)")?;
        }
        Ok(())
    }
}

/// The longest reason shown for an unreadable file.
const REASON_MAX: usize = 200;

/// A file name for a message: in backticks when it is plain UTF-8 without
/// control characters, else escaped in quotes.
fn shown_name(name: &[u8]) -> String {
    match std::str::from_utf8(name) {
        Ok(text) if !text.chars().any(char::is_control) && text.len() <= REASON_MAX => {
            format!("`{text}`")
        }
        _ => quote_bytes(name),
    }
}

/// Reads one node file; the stamp is taken from the open file before its
/// bytes, so a later change always shows in the stamp. Links, FIFOs and the
/// like are refused even if one replaced the file since the folder was listed.
fn read_node_file(path: &Path, name: &str, buf: &mut Vec<u8>) -> Result<(Node, Stamp)> {
    let (file, meta) = file::open(path)?.context("it vanished while being read")?;
    let stamp = Stamp::of(&meta);
    file::read_into(file, path, file::NODE_FILE_CAP, buf)?;
    let node = node::parse_node_file(name, buf)?;
    Ok((node, stamp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, address: &str) -> Node {
        Node::named(name).at(address).port(80).weight(1)
    }

    #[test]
    fn write_read_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let lock = store.lock::<Exclusive>().unwrap();
        assert!(store.write(&lock, &node("b", "10.0.0.2")).unwrap());
        assert!(store.write(&lock, &node("a", "10.0.0.1")).unwrap());
        assert!(!store.write(&lock, &node("a", "10.0.0.1")).unwrap());
        fs::write(dir.path().join("c"), "c 10.0.0.3\n").unwrap();
        fs::write(dir.path().join("c~"), "garbage").unwrap();
        fs::write(dir.path().join(".hidden"), "garbage").unwrap();
        fs::write(dir.path().join("c.dpkg-tmp"), "garbage").unwrap();
        let names: Vec<_> = store
            .load_all(&lock)
            .unwrap()
            .into_iter()
            .map(|n| n.name)
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert!(store.remove(&lock, "b").unwrap());
        assert!(!store.remove(&lock, "b").unwrap());
        assert_eq!(store.read("b").unwrap(), None);
        assert!(store.read("../etc").is_err());
    }

    #[test]
    fn ignored_names_are_ignored_before_any_other_check() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        for raw in [&b".\xff-hidden"[..], b"x\xff~", b"\xff.bak"] {
            fs::write(dir.path().join(std::ffi::OsStr::from_bytes(raw)), "junk").unwrap();
        }
        fs::write(dir.path().join("a"), "10.0.0.1").unwrap();
        assert_eq!(
            store
                .load_all(&store.lock::<Shared>().unwrap())
                .unwrap()
                .len(),
            1
        );
        fs::write(
            dir.path().join(std::ffi::OsStr::from_bytes(b"\xff")),
            "junk",
        )
        .unwrap();
        let err = format!(
            "{:#}",
            store
                .load_all(&store.lock::<Shared>().unwrap())
                .unwrap_err()
        );
        assert!(err.contains("not UTF-8"), "{err}");
    }

    #[test]
    fn only_the_exclusive_lock_removes_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let leftover = dir.path().join(".hacfg-a1b2c3.tmp");
        fs::write(&leftover, "half a node").unwrap();
        store.load_all(&store.lock::<Shared>().unwrap()).unwrap();
        assert!(leftover.exists());
        store.load_all(&store.lock::<Exclusive>().unwrap()).unwrap();
        assert!(!leftover.exists());
    }

    #[test]
    fn a_bad_file_is_held_back_and_the_rest_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        fs::write(dir.path().join("good"), "10.0.0.1").unwrap();
        fs::write(
            dir.path().join("typo"),
            r#"{"name":"typo","address":"10.0.0.2","wieght":3}"#,
        )
        .unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).unwrap();
        let lock = store.lock::<Exclusive>().unwrap();
        let loaded = store.load(&lock).unwrap();
        let names: Vec<&str> = loaded.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["good"]);
        let files: Vec<String> = loaded.unreadable.iter().map(|u| u.file.clone()).collect();
        let shown = |name: &str| format!("`{}`", dir.path().join(name).display());
        assert_eq!(files, [shown("link"), shown("sub"), shown("typo")]);
        let typo = &loaded.unreadable[2];
        assert!(typo.reason.contains("unknown field `wieght`"), "{typo}");
        assert!(!typo.reason.contains('\n'), "{typo}");
        assert!(loaded.unreadable[0].reason.contains("not a regular file"));
        // Fixed, it comes in at the next load.
        fs::write(dir.path().join("typo"), "10.0.0.2").unwrap();
        assert_eq!(store.load(&lock).unwrap().nodes.len(), 2);
    }

    #[test]
    fn a_node_read_before_keeps_that_version_while_its_file_is_broken() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        fs::write(dir.path().join("s1"), "10.0.0.1").unwrap();
        // Older than the index's racy window, so the index keeps it.
        std::thread::sleep(std::time::Duration::from_millis(2100));
        let lock = store.lock::<Exclusive>().unwrap();
        assert_eq!(store.load(&lock).unwrap().nodes.len(), 1);
        fs::write(
            dir.path().join("s1"),
            r#"{"name":"s1","address":"10.0.0.9","wieght":1}"#,
        )
        .unwrap();
        let loaded = store.load(&lock).unwrap();
        assert_eq!(loaded.nodes.len(), 1, "the node stays");
        assert_eq!(loaded.nodes[0].address, "10.0.0.1", "as read before");
        assert!(loaded.unreadable[0].kept);
        let said = loaded.unreadable[0].to_string();
        assert!(said.contains("wieght") && said.contains("keeps the version read before"));
        // Still broken at the next load: still kept; fixed: the new version.
        assert_eq!(store.load(&lock).unwrap().nodes[0].address, "10.0.0.1");
        fs::write(dir.path().join("s1"), "10.0.0.2").unwrap();
        let loaded = store.load(&lock).unwrap();
        assert_eq!(loaded.nodes[0].address, "10.0.0.2");
        assert!(loaded.unreadable.is_empty());
    }

    #[test]
    fn stray_files_are_named_and_hacfgs_own_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        for name in [
            "s1~",
            "s1.swp",
            "s1.bak",
            "stale.lock",
            "s1.rpmnew",
            "s1.dpkg-old",
            "#s1#",
            ".hidden",
            ".hacfg.index",
            ".hacfg.pending.damaged",
        ] {
            fs::write(dir.path().join(name), "10.0.0.9").unwrap();
        }
        let loaded = store.load(&store.lock::<Shared>().unwrap()).unwrap();
        assert!(loaded.nodes.is_empty(), "{:?}", loaded.nodes);
        assert!(loaded.unreadable.is_empty(), "{:?}", loaded.unreadable);
        let expected = [
            "\"#s1#\"",
            "\".hidden\"",
            "\"s1.bak\"",
            "\"s1.dpkg-old\"",
            "\"s1.rpmnew\"",
            "\"s1.swp\"",
            "\"s1~\"",
            "\"stale.lock\"",
        ];
        assert_eq!(loaded.stray, expected);
    }

    #[test]
    fn a_held_lock_is_waited_for_until_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path()).with_lock_wait(Duration::from_millis(50));
        let held = store.lock::<Shared>().unwrap();
        // Shared beside shared is no wait; exclusive times out, exit 10.
        let also = store.lock::<Shared>().unwrap();
        let err = store.lock::<Exclusive>().err().unwrap();
        assert_eq!(crate::exit::code_of(&err), crate::exit::Code::LockTimeout);
        let text = format!("{err:#}");
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        drop((held, also));
        store.lock::<Exclusive>().unwrap();
    }

    #[test]
    fn bad_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        fs::write(dir.path().join("bad"), "{not json").unwrap();
        let lock = store.lock::<Shared>().unwrap();
        let err = format!("{:#}", store.load_all(&lock).unwrap_err());
        assert!(err.contains("bad`"), "{err}");
        fs::remove_file(dir.path().join("bad")).unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        assert!(store.load_all(&lock).is_err());
    }
}
