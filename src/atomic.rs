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
        let dir = parent_dir(target);
        fs::create_dir_all(dir)
            .with_context(|| format!("unable to create folder `{}`", dir.display()))?;
        let base = target.file_name().unwrap_or_default().to_string_lossy();
        let mut file = tempfile::Builder::new()
            .prefix(&format!(".{base}."))
            .suffix(".tmp")
            .tempfile_in(dir)
            .with_context(|| format!("unable to create a temp file in `{}`", dir.display()))?;
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
            file.as_file().sync_all()
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
        let target = self.target;
        self.file
            .persist(&target)
            .map_err(|e| e.error)
            .with_context(|| format!("unable to replace `{}`", target.display()))?;
        sync_dir(parent_dir(&target))
    }
}

/// Atomically replaces `target` with `bytes` (temp file, fsync, rename, fsync folder).
pub fn write_atomic(target: &Path, bytes: &[u8]) -> Result<()> {
    Staged::new(target, bytes)?.commit()
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
