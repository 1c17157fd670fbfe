//! The nodes folder: one file per node, named after it, guarded by a lock file.

use std::fs::{self, File, TryLockError};
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::atomic;
use crate::index::{self, Stamp};
use crate::node::{self, Node};

/// Name of the lock file inside the nodes folder (hidden, so never a node).
pub const LOCK_FILE: &str = ".hacfg.lock";

/// The nodes folder.
pub struct Store {
    dir: PathBuf,
}

/// Held while the folder is read or changed; the kernel drops the lock when
/// the process exits, however it exits (flock semantics, even on SIGKILL).
///
/// Shared: changing single node files (each write is atomic on its own) and
/// reading. Exclusive: rendering and applying, which must see a folder that
/// no one is changing.
pub struct Lock {
    _file: File,
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

    /// Takes the folder's lock, exclusive for changes and shared for reads,
    /// waiting for other hacfg processes. `create` makes a missing folder.
    pub fn lock(&self, exclusive: bool, create: bool) -> Result<Lock> {
        if create {
            fs::create_dir_all(&self.dir).with_context(|| {
                format!("unable to create nodes folder `{}`", self.dir.display())
            })?;
        } else if !self.dir.is_dir() {
            bail!(
                "nodes folder `{}` does not exist (set --nodes-dir or HACFG_NODES_DIR, \
                 or add a node first)",
                self.dir.display()
            );
        }
        let path = self.dir.join(LOCK_FILE);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("unable to open lock file `{}`", path.display()))?;
        let try_lock = if exclusive {
            file.try_lock()
        } else {
            file.try_lock_shared()
        };
        match try_lock {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                if exclusive {
                    file.lock()
                } else {
                    file.lock_shared()
                }
                .with_context(|| format!("unable to lock `{}`", path.display()))?;
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("unable to lock `{}`", path.display()));
            }
        }
        Ok(Lock { _file: file })
    }

    fn path_of(&self, name: &str) -> Result<PathBuf> {
        // Validation keeps `name` a single plain path component.
        node::validate_name(name)?;
        Ok(self.dir.join(name))
    }

    /// Reads one node; `None` if it has no file.
    pub fn read(&self, name: &str) -> Result<Option<Node>> {
        let path = self.path_of(name)?;
        match fs::read(&path) {
            Ok(bytes) => node::parse_node_file(name, &bytes)
                .map(Some)
                .with_context(|| format!("invalid node file `{}`", path.display())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("unable to read `{}`", path.display())),
        }
    }

    /// Creates or replaces a node file. Returns false when it already held
    /// exactly this node (nothing is written then).
    pub fn write(&self, node: &Node) -> Result<bool> {
        self.write_all(std::slice::from_ref(node))?.remove(0)
    }

    /// Deletes a node file. Returns false when there was none.
    pub fn remove(&self, name: &str) -> Result<bool> {
        self.remove_all(&[name.to_string()])?.remove(0)
    }

    /// Creates or replaces node files, one result per node (true: written,
    /// false: already held this node). Each file is staged and renamed into
    /// place; the batch's data is made durable (in parallel) before any rename.
    /// The outer error is the batch's: its data or folder could not be synced.
    pub fn write_all(&self, nodes: &[Node]) -> Result<Vec<Result<bool>>> {
        let mut staged = Vec::new();
        let mut results: Vec<Result<bool>> =
            nodes
                .iter()
                .map(|node| {
                    node.validate()?;
                    if self.read(&node.name).ok().flatten().as_ref() == Some(node) {
                        return Ok(false);
                    }
                    let path = self.path_of(&node.name)?;
                    let write = atomic::Staged::unsynced(&path, &node.to_file_bytes());
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
    pub fn remove_all(&self, names: &[String]) -> Result<Vec<Result<bool>>> {
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
    /// Files the index (`.hacfg.index`) proves unchanged are not read again;
    /// `refresh_index` (renders under the exclusive lock) rewrites a stale index,
    /// so read-only commands write nothing at all.
    pub fn load_all(&self, refresh_index: bool) -> Result<Vec<Node>> {
        let scan_start = index::now_ns();
        let mut snapshot = index::Snapshot::load(&self.dir);
        let mut buf = Vec::with_capacity(256);
        // The index's files are checked on other threads while this one
        // lists the folder and reads the files the index does not know.
        let (unchanged, seen, mut fresh) = std::thread::scope(|scope| {
            let verifier = scope.spawn(|| snapshot.verify(&self.dir));
            let listed = self.list(&snapshot, &mut buf);
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
        let (nodes, stamps, changed) = snapshot.merge(fresh);
        if refresh_index && changed {
            // A cache: a folder we may read but not write still renders.
            let _ = index::save(&self.dir, scan_start, &nodes, &stamps);
        }
        Ok(nodes)
    }

    /// Lists the folder: which index entries have a file (`seen`), and the
    /// nodes of the files the index does not know, read and validated.
    fn list(&self, snapshot: &index::Snapshot, buf: &mut Vec<u8>) -> Result<Listing> {
        let folder = || format!("unable to read nodes folder `{}`", self.dir.display());
        let mut seen = vec![false; snapshot.len()];
        let mut fresh = Vec::new();
        for entry in fs::read_dir(&self.dir).with_context(folder)? {
            let entry = entry.with_context(folder)?;
            let file_name = entry.file_name();
            let path = entry.path();
            let Some(name) = file_name.to_str() else {
                bail!(
                    "invalid node file `{}`: the name is not UTF-8",
                    path.display()
                );
            };
            if node::is_ignored_file_name(name) {
                continue;
            }
            let kind = entry
                .file_type()
                .with_context(|| format!("unable to stat `{}`", path.display()))?;
            if !kind.is_file() {
                bail!(
                    "invalid node file `{}`: not a regular file (links and folders are refused)",
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
/// bytes, so a later change always shows in the stamp. Links are refused
/// even if one replaced the file since the folder was listed.
fn read_node_file(path: &Path, name: &str, buf: &mut Vec<u8>) -> Result<(Node, Stamp)> {
    use std::os::unix::fs::OpenOptionsExt;
    buf.clear();
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("unable to read node file `{}`", path.display()))?;
    let stamp = file
        .metadata()
        .map(|m| Stamp::of(&m))
        .with_context(|| format!("unable to stat `{}`", path.display()))?;
    file.read_to_end(buf)
        .with_context(|| format!("unable to read node file `{}`", path.display()))?;
    let node = node::parse_node_file(name, buf)
        .with_context(|| format!("invalid node file `{}`", path.display()))?;
    Ok((node, stamp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn node(name: &str, address: &str) -> Node {
        Node {
            name: name.into(),
            address: address.into(),
            port: Some(80),
            weight: Some(1),
            tags: BTreeMap::new(),
        }
    }

    #[test]
    fn write_read_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let _lock = store.lock(true, true).unwrap();
        assert!(store.write(&node("b", "10.0.0.2")).unwrap());
        assert!(store.write(&node("a", "10.0.0.1")).unwrap());
        assert!(!store.write(&node("a", "10.0.0.1")).unwrap());
        fs::write(dir.path().join("c"), "c 10.0.0.3\n").unwrap();
        fs::write(dir.path().join("c~"), "garbage").unwrap();
        fs::write(dir.path().join(".hidden"), "garbage").unwrap();
        let names: Vec<_> = store
            .load_all(false)
            .unwrap()
            .into_iter()
            .map(|n| n.name)
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert!(store.remove("b").unwrap());
        assert!(!store.remove("b").unwrap());
        assert_eq!(store.read("b").unwrap(), None);
        assert!(store.read("../etc").is_err());
    }

    #[test]
    fn bad_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("bad"), "{not json").unwrap();
        let err = format!("{:#}", Store::new(dir.path()).load_all(false).unwrap_err());
        assert!(err.contains("bad`"), "{err}");
        fs::remove_file(dir.path().join("bad")).unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        assert!(Store::new(dir.path()).load_all(false).is_err());
    }
}
