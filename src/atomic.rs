//! Writing files so that a reader sees the old bytes or the new ones, never a mix.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tempfile::{NamedTempFile, TempPath};

/// Temp files hacfg writes are named `.hacfg-XXXXXX.tmp`: hidden (never a
/// node), short whatever the target's name (a 253-byte node name still fits
/// NAME_MAX), and recognisable, so the next run under the exclusive lock
/// removes what a killed run left.
const TEMP_PREFIX: &str = ".hacfg-";
const TEMP_SUFFIX: &str = ".tmp";

/// Whether a file name is a temp file of hacfg's.
pub fn is_leftover(name: &[u8]) -> bool {
    name.starts_with(TEMP_PREFIX.as_bytes())
        && name.ends_with(TEMP_SUFFIX.as_bytes())
        && name.len() > TEMP_PREFIX.len() + TEMP_SUFFIX.len()
}

/// A new, empty temp file in `dir`.
pub fn temp_file(dir: &Path) -> std::io::Result<NamedTempFile> {
    tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .suffix(TEMP_SUFFIX)
        .tempfile_in(dir)
}

/// Removes the temp files killed runs left in `dir`. The caller holds the
/// exclusive lock, so no other hacfg is writing one there now.
pub fn remove_leftovers(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if is_leftover(entry.file_name().as_bytes()) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// A file written next to its target, not yet visible under the target's name.
pub struct Staged {
    file: Held,
    target: PathBuf,
}

/// A staged file: still open (a single write, synced at once), or closed
/// (a batch member: it holds no descriptor until `sync_all` opens it again,
/// so a batch of any size stays within the open-file limit).
enum Held {
    Open(NamedTempFile),
    Closed(TempPath),
}

impl Staged {
    /// Writes `bytes` to a temp file in `target`'s folder, with the current
    /// target's permissions, and fsyncs it.
    pub fn new(target: &Path, bytes: &[u8]) -> Result<Staged> {
        Staged::write(target, bytes, true)
    }

    /// Like `new`, without the fsync, and closed once written: for
    /// batches, which make the data durable with `sync_all` before renaming.
    pub fn unsynced(target: &Path, bytes: &[u8]) -> Result<Staged> {
        let staged = Staged::write(target, bytes, false)?;
        Ok(match staged.file {
            Held::Open(file) => Staged {
                file: Held::Closed(file.into_temp_path()),
                target: staged.target,
            },
            Held::Closed(_) => staged,
        })
    }

    fn write(target: &Path, bytes: &[u8], sync: bool) -> Result<Staged> {
        let dir = parent_dir(target);
        let mut file = temp_file(dir)
            .with_context(|| format!("unable to create a temp file in `{}`", dir.display()))?;
        let write = |file: &mut NamedTempFile| -> std::io::Result<()> {
            file.write_all(bytes)?;
            if let Some(meta) = fs::symlink_metadata(target)
                .ok()
                .filter(std::fs::Metadata::is_file)
            {
                file.as_file().set_permissions(meta.permissions())?;
                // Keeping the owner needs privileges; without them the new
                // file belongs to us, which is all an unprivileged run can do.
                let _ =
                    std::os::unix::fs::fchown(file.as_file(), Some(meta.uid()), Some(meta.gid()));
            } else {
                use std::os::unix::fs::PermissionsExt;
                file.as_file()
                    .set_permissions(fs::Permissions::from_mode(0o644))?;
            }
            if sync {
                file.as_file().sync_all()
            } else {
                Ok(())
            }
        };
        write(&mut file)
            .with_context(|| format!("unable to write temp file `{}`", file.path().display()))?;
        Ok(Staged {
            file: Held::Open(file),
            target: target.to_path_buf(),
        })
    }

    /// Where the staged bytes are, e.g. for `haproxy -c -f`.
    pub fn path(&self) -> &Path {
        match &self.file {
            Held::Open(file) => file.path(),
            Held::Closed(path) => path,
        }
    }

    /// Makes the staged bytes durable. A closed file is opened again for
    /// it (read-only, not following links: the name is ours, in a folder
    /// whose leftovers only an exclusive lock removes); Linux's fsync
    /// flushes the inode's data whichever descriptor asks.
    fn sync(&self) -> Result<()> {
        let synced = match &self.file {
            Held::Open(file) => file.as_file().sync_all(),
            Held::Closed(path) => {
                use std::os::unix::fs::OpenOptionsExt;
                fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(path)
                    .and_then(|f| f.sync_all())
            }
        };
        synced.with_context(|| format!("unable to sync temp file `{}`", self.path().display()))
    }

    /// Renames the staged file over the target and fsyncs the folder.
    pub fn commit(self) -> Result<()> {
        let dir = parent_dir(&self.target).to_path_buf();
        self.rename()?;
        sync_dir(&dir)
    }

    /// Renames the staged file over the target; the caller syncs the folder.
    pub fn rename(self) -> Result<()> {
        let target = self.target;
        let persisted = match self.file {
            Held::Open(file) => file.persist(&target).map(drop).map_err(|e| e.error),
            Held::Closed(path) => path.persist(&target).map_err(|e| e.error),
        };
        persisted.with_context(|| format!("unable to replace `{}`", target.display()))
    }
}

/// Atomically replaces `target` with `bytes` (temp file, fsync, rename, fsync folder).
pub fn write_atomic(target: &Path, bytes: &[u8]) -> Result<()> {
    Staged::new(target, bytes)?.commit()
}

/// Writes a record of hacfg's (see `pipeline::records`) as a JSON list,
/// atomically; an empty one is removed, so that a folder with nothing to
/// record holds no such file. A missing one is found with one `lstat`: no
/// write, so a nodes folder on a read-only mount stays usable.
pub fn write_record<T: serde::Serialize>(target: &Path, entries: &[T]) -> Result<()> {
    if !entries.is_empty() {
        return write_atomic(target, &serde_json::to_vec_pretty(entries)?);
    }
    if fs::symlink_metadata(target).is_err() {
        return Ok(());
    }
    match fs::remove_file(target) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// Makes `target` another name of `source`'s current inode (a hard link,
/// renamed into place): no bytes are copied or synced, and `source` may be
/// renamed over afterwards without changing `target`. The folder is synced
/// by the caller's next `commit`. `false` where the file system has no hard
/// links: the caller copies instead.
pub fn link_atomic(source: &Path, target: &Path) -> Result<bool> {
    let dir = parent_dir(target);
    let tmp = temp_file(dir)
        .with_context(|| format!("unable to create a temp file in `{}`", dir.display()))?
        .into_temp_path();
    // The hard link needs the name free: the temp path is ours alone.
    let _ = fs::remove_file(&tmp);
    if fs::hard_link(source, &tmp).is_err() {
        return Ok(false);
    }
    fs::rename(&tmp, target)
        .with_context(|| format!("unable to replace `{}`", target.display()))?;
    // Renamed away: nothing left for the temp path to remove.
    let _ = tmp.keep();
    Ok(true)
}

/// Makes a rename or unlink in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("unable to sync folder `{}`", dir.display()))
}

/// Fsyncs many staged files. The journal commits concurrent fsyncs as a
/// group, so a few threads make a batch of 1,000 small files durable about
/// three times faster than one after another; `syncfs` would be one call,
/// but its cost depends on every other writer's dirty data. Batch members
/// are closed (see `Staged::unsynced`): at most one descriptor per thread
/// is open here, whatever the batch's size.
pub fn sync_all(staged: &[Staged]) -> Result<()> {
    const THREADS: usize = 8;
    let sync = Staged::sync;
    if staged.len() < 2 {
        return staged.iter().try_for_each(sync);
    }
    let chunk = staged.len().div_ceil(THREADS).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = staged
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().try_for_each(sync)))
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("sync thread panicked")))
        })
    })
}

pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_and_keeps_mode() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.cfg");
        write_atomic(&target, b"one").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"one");
        fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
        write_atomic(&target, b"two").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"two");
        let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temp files are left behind.
        assert_eq!(fs::read_dir(target.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn dropped_stage_leaves_target_alone() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.cfg");
        write_atomic(&target, b"old").unwrap();
        let staged = Staged::new(&target, b"new").unwrap();
        assert_eq!(fs::read(staged.path()).unwrap(), b"new");
        drop(staged);
        assert_eq!(fs::read(&target).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_closed_stage_syncs_renames_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let staged = vec![
            Staged::unsynced(&a, b"one").unwrap(),
            Staged::unsynced(&b, b"two").unwrap(),
        ];
        sync_all(&staged).unwrap();
        let mut staged = staged.into_iter();
        staged.next().unwrap().rename().unwrap();
        drop(staged);
        assert_eq!(fs::read(&a).unwrap(), b"one");
        // The unrenamed one vanished with its stage.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn link_survives_a_rename_over_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let (out, prev) = (dir.path().join("out"), dir.path().join("out.prev"));
        write_atomic(&out, b"one").unwrap();
        assert!(link_atomic(&out, &prev).unwrap());
        write_atomic(&out, b"two").unwrap();
        assert_eq!(fs::read(&prev).unwrap(), b"one");
        assert_eq!(fs::read(&out).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
