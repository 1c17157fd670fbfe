//! Writing files so that a reader sees the old bytes or the new ones, never a mix.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tempfile::NamedTempFile;

/// A file written next to its target, not yet visible under the target's name.
pub struct Staged {
    file: NamedTempFile,
    target: PathBuf,
}

impl Staged {
    /// Writes `bytes` to a hidden temp file in `target`'s folder (created if
    /// missing), with the current target's permissions, and fsyncs it.
    pub fn new(target: &Path, bytes: &[u8]) -> Result<Staged> {
        Staged::write(target, bytes, true)
    }

    /// Like `new`, without the fsync: for batches, which make the data
    /// durable with `sync_all` before renaming.
    pub fn unsynced(target: &Path, bytes: &[u8]) -> Result<Staged> {
        Staged::write(target, bytes, false)
    }

    fn write(target: &Path, bytes: &[u8], sync: bool) -> Result<Staged> {
        let dir = parent_dir(target);
        let base = target.file_name().unwrap_or_default().to_string_lossy();
        let create = || {
            tempfile::Builder::new()
                .prefix(&format!(".{base}."))
                .suffix(".tmp")
                .tempfile_in(dir)
        };
        let file = match create() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(dir)
                    .with_context(|| format!("unable to create folder `{}`", dir.display()))?;
                create()
            }
            other => other,
        };
        let mut file =
            file.with_context(|| format!("unable to create a temp file in `{}`", dir.display()))?;
        let write = |file: &mut NamedTempFile| -> std::io::Result<()> {
            file.write_all(bytes)?;
            if let Ok(meta) = fs::metadata(target) {
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
            file,
            target: target.to_path_buf(),
        })
    }

    /// Where the staged bytes are, e.g. for `haproxy -c -f`.
    pub fn path(&self) -> &Path {
        self.file.path()
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
        self.file
            .persist(&target)
            .map_err(|e| e.error)
            .with_context(|| format!("unable to replace `{}`", target.display()))?;
        Ok(())
    }
}

/// Atomically replaces `target` with `bytes` (temp file, fsync, rename, fsync folder).
pub fn write_atomic(target: &Path, bytes: &[u8]) -> Result<()> {
    Staged::new(target, bytes)?.commit()
}

/// Atomically replaces `target` with a copy of `source`'s bytes.
pub fn copy_atomic(source: &Path, target: &Path) -> Result<()> {
    let mut from =
        File::open(source).with_context(|| format!("unable to read `{}`", source.display()))?;
    let staged = Staged::new(target, b"")?;
    let mut to = staged.file.as_file();
    std::io::copy(&mut from, &mut to)
        .and_then(|_| to.sync_all())
        .with_context(|| {
            format!(
                "unable to copy `{}` to `{}`",
                source.display(),
                target.display()
            )
        })?;
    staged.commit()
}

/// Makes `target` another name of `source`'s current inode (a hard link,
/// renamed into place): no bytes are copied or synced, and `source` may be
/// renamed over afterwards without changing `target`. The folder is synced
/// by the caller's next `commit`. Falls back to `copy_atomic` where the file
/// system has no hard links.
pub fn link_atomic(source: &Path, target: &Path) -> Result<()> {
    let base = target.file_name().unwrap_or_default().to_string_lossy();
    let tmp = parent_dir(target).join(format!(".{base}.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    match fs::hard_link(source, &tmp) {
        Ok(()) => fs::rename(&tmp, target).with_context(|| {
            let _ = fs::remove_file(&tmp);
            format!("unable to replace `{}`", target.display())
        }),
        Err(_) => copy_atomic(source, target),
    }
}

/// Overwrites `target` in place (same inode), for bind-mounted single files
/// where a rename would leave the reader on the old inode. Not atomic.
pub fn write_in_place(target: &Path, bytes: &[u8]) -> Result<()> {
    let write = || -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(target)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    write().with_context(|| format!("unable to write `{}` in place", target.display()))
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
/// but its cost depends on every other writer's dirty data.
pub fn sync_all(staged: &[Staged]) -> Result<()> {
    const THREADS: usize = 8;
    let sync = |s: &Staged| {
        s.file
            .as_file()
            .sync_all()
            .with_context(|| format!("unable to sync temp file `{}`", s.path().display()))
    };
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

fn parent_dir(path: &Path) -> &Path {
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
        let target = dir.path().join("sub/out.cfg");
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
    fn copies_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&a, b"payload").unwrap();
        fs::write(&b, b"old").unwrap();
        copy_atomic(&a, &b).unwrap();
        assert_eq!(fs::read(&b).unwrap(), b"payload");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn link_survives_a_rename_over_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let (out, prev) = (dir.path().join("out"), dir.path().join("out.prev"));
        write_atomic(&out, b"one").unwrap();
        link_atomic(&out, &prev).unwrap();
        write_atomic(&out, b"two").unwrap();
        assert_eq!(fs::read(&prev).unwrap(), b"one");
        assert_eq!(fs::read(&out).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn in_place_keeps_inode() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.cfg");
        fs::write(&target, b"old").unwrap();
        let ino = fs::metadata(&target).unwrap().ino();
        write_in_place(&target, b"new").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new");
        assert_eq!(fs::metadata(&target).unwrap().ino(), ino);
    }
}
