//! The nodes folder: one file per node, named after it, guarded by a lock on
//! the folder itself.

use std::fs::{self, File, TryLockError};
use std::io::ErrorKind;
use std::marker::PhantomData;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::atomic;
use crate::file;
use crate::index::{self, Stamp};
use crate::node::{self, Node};
use crate::quote::quote_bytes;

/// The nodes folder.
pub struct Store {
    dir: PathBuf,
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
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the folder if it is missing (commands that change nodes).
    pub fn create(&self) -> Result<()> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("unable to create nodes folder `{}`", self.dir.display()))
    }

    /// Takes the folder's lock in mode `M`, waiting for other hacfg processes.
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
        let locked = if M::EXCLUSIVE {
            dir.try_lock()
        } else {
            dir.try_lock_shared()
        };
        let context = || format!("unable to lock nodes folder `{}`", self.dir.display());
        match locked {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => if M::EXCLUSIVE {
                dir.lock()
            } else {
                dir.lock_shared()
            }
            .with_context(context)?,
            Err(TryLockError::Error(e)) => return Err(e).with_context(context),
        }
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

    /// Every node in the folder, sorted by name. Any file that is not a valid
    /// node makes this fail, naming the file: a half-read pool is never rendered.
    /// Files the index (`.hacfg.index`) proves unchanged are not read again.
    /// Under the exclusive lock a stale index is rewritten and temp files of
    /// killed runs are removed; under the shared one nothing is written.
    pub fn load_all<M: Mode>(&self, _lock: &Lock<M>) -> Result<Vec<Node>> {
        let scan_start = index::now_ns();
        let mut snapshot = index::Snapshot::load(&self.dir);
        let mut buf = Vec::with_capacity(256);
        // The index's files are checked on other threads while this one
        // lists the folder and reads the files the index does not know.
        let (unchanged, seen, mut fresh) = std::thread::scope(|scope| {
            let verifier = scope.spawn(|| snapshot.verify(&self.dir));
            let listed = self.list(&snapshot, &mut buf, M::EXCLUSIVE);
            let unchanged = verifier.join().unwrap_or_default();
            listed.map(|l| (unchanged, l.seen, l.fresh))
        })?;
        for (at, seen) in seen.into_iter().enumerate() {
            match (seen, unchanged.get(at)) {
                (false, _) => {} // gone from the folder
                (true, Some(true)) => snapshot.keep(at),
                (true, _) => {
                    let name = snapshot.name(at).to_string();
                    fresh.push(read_node_file(&self.dir.join(&name), &name, &mut buf)?);
                }
            }
        }
        let (nodes, stamps, changed) = snapshot.merge(fresh, scan_start);
        if M::EXCLUSIVE && changed {
            // A cache: a folder we may read but not write still renders.
            let _ = index::save(&self.dir, scan_start, &nodes, &stamps);
        }
        Ok(nodes)
    }

    /// Lists the folder: which index entries have a file (`seen`), and the
    /// nodes of the files the index does not know, read and validated.
    /// `clean` removes temp files left by killed runs (exclusive lock only:
    /// then no other hacfg is writing one).
    fn list(&self, snapshot: &index::Snapshot, buf: &mut Vec<u8>, clean: bool) -> Result<Listing> {
        let folder = || format!("unable to read nodes folder `{}`", self.dir.display());
        let mut seen = vec![false; snapshot.entries()];
        let mut fresh = Vec::new();
        for entry in fs::read_dir(&self.dir).with_context(folder)? {
            let entry = entry.with_context(folder)?;
            let file_name = entry.file_name();
            let bytes = file_name.as_bytes();
            // Ignore rules first: a backup or hidden file never fails a render.
            if node::is_ignored_file_name(bytes) {
                if clean && atomic::is_leftover(bytes) {
                    let _ = fs::remove_file(entry.path());
                }
                continue;
            }
            let path = entry.path();
            let Some(name) = file_name.to_str() else {
                bail!(
                    "invalid node file {} in `{}`: the name is not UTF-8",
                    quote_bytes(bytes),
                    self.dir.display()
                );
            };
            let kind = entry
                .file_type()
                .with_context(|| format!("unable to stat `{}`", path.display()))?;
            if !kind.is_file() {
                bail!(
                    "invalid node file `{}`: not a regular file (links, folders, FIFOs, \
                     sockets and devices are refused)",
                    path.display()
                );
            }
            // A name the index holds was validated when it was indexed.
            if let Some(at) = snapshot.find(name) {
                seen[at] = true;
                continue;
            }
            node::validate_name(name)
                .with_context(|| format!("invalid node file `{}`", path.display()))?;
            fresh.push(read_node_file(&path, name, buf)?);
        }
        Ok(Listing { seen, fresh })
    }
}

/// What listing the folder found (see `Store::list`).
struct Listing {
    /// Per index entry: a file of that name is in the folder.
    seen: Vec<bool>,
    /// Files the index does not know, read.
    fresh: Vec<(Node, Stamp)>,
}

/// Reads one node file; the stamp is taken from the open file before its
/// bytes, so a later change always shows in the stamp. Links, FIFOs and the
/// like are refused even if one replaced the file since the folder was listed.
fn read_node_file(path: &Path, name: &str, buf: &mut Vec<u8>) -> Result<(Node, Stamp)> {
    let context = || format!("invalid node file `{}`", path.display());
    let (file, meta) = file::open(path)
        .with_context(context)?
        .with_context(|| format!("node file `{}` vanished while being read", path.display()))?;
    let stamp = Stamp::of(&meta);
    file::read_into(file, path, file::NODE_FILE_CAP, buf).with_context(context)?;
    let node = node::parse_node_file(name, buf).with_context(context)?;
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
