//! The rendered configuration file: where it really is (a symbolic link is
//! followed, and its target is replaced in the target's folder), how it is
//! replaced (atomic rename, or in place for a bind-mounted file), its
//! `.prev`, and putting `.prev` back when what this run wrote must go.

use std::fs::{self, File};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use rustix::fs::FallocateFlags;
use rustix::io::Errno;

use crate::atomic::{self, Staged};
use crate::file;
use crate::store::{Exclusive, Lock};

/// Largest output hacfg reads back (for a diff or a restore); a 100,000-node
/// config is about 7 MB.
const OUTPUT_CAP: u64 = 1 << 30;

/// How the output is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// A temp file renamed over the output: atomic.
    Rename,
    /// The same inode rewritten, for a bind-mounted single file.
    InPlace,
}

/// The output file.
pub struct OutputFile {
    /// The real file: the link's target when the configured path is a link.
    path: PathBuf,
    mode: WriteMode,
}

/// The output as it stands, against a render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Current {
    /// Holds exactly the render.
    Same,
    /// Holds something else.
    Differs,
    /// There is no output yet.
    Missing,
}

/// Proof that this run replaced the output: only such a run may put
/// `.prev` back (`hacfg reload` restores nothing it did not write).
#[must_use]
pub struct Replaced<'a> {
    output: &'a OutputFile,
    /// There was a config before this run's.
    had_previous: bool,
    /// The output held a hand edit, kept as `<output>.edited`.
    edited: Option<HandEdit>,
}

/// An output someone changed since hacfg last wrote it, kept aside before
/// it was replaced (the edit would otherwise live only in `.prev`, until
/// the next write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandEdit {
    pub output: PathBuf,
    pub kept: PathBuf,
    /// Lines that differ between the edited file and what replaced it.
    pub lines: usize,
}

impl std::fmt::Display for HandEdit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` was changed by hand since hacfg last wrote it: the edited file is kept as `{}` \
             ({} line(s) differ from the new config; put lasting changes in the template)",
            self.output.display(),
            self.kept.display(),
            self.lines
        )
    }
}

impl OutputFile {
    /// The output at `path`. A link is followed to its target, which must
    /// exist; anything but a regular file (or nothing yet) is refused.
    pub fn new(path: &Path, mode: WriteMode) -> Result<OutputFile> {
        let path = match fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                fs::canonicalize(path).with_context(|| {
                    format!("output `{}` is a symbolic link to nothing", path.display())
                })?
            }
            _ => path.to_path_buf(),
        };
        if let Ok(meta) = fs::metadata(&path) {
            ensure!(
                meta.is_file(),
                "output `{}` is not a regular file but {}",
                path.display(),
                file::kind_of(&meta)
            );
        } else if !atomic::parent_dir(&path).is_dir() {
            // A mistyped folder must not become a config HAProxy never reads.
            bail!(
                "output folder `{}` does not exist (create it with `hacfg init`, or set \
                 --output or HACFG_OUTPUT)",
                atomic::parent_dir(&path).display()
            );
        }
        Ok(OutputFile { path, mode })
    }

    /// The file that is written (a link's target).
    /// Whether a candidate must be staged beside the output even with no
    /// check to read it (a rename needs it; in place, nothing is staged).
    pub fn in_place(&self) -> bool {
        self.mode == WriteMode::InPlace
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `<output>.prev`: the config that was live before the current one.
    pub fn prev_path(&self) -> PathBuf {
        self.beside(".prev")
    }

    /// `<output><suffix>`, in the output's folder.
    fn beside(&self, suffix: &str) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    }

    /// Its size now (0 if none): a hint for the render buffer.
    pub fn size(&self) -> usize {
        fs::metadata(&self.path).map_or(0, |m| usize::try_from(m.len()).unwrap_or(0))
    }

    /// The current bytes, `None` if there is no output yet.
    pub fn read(&self) -> Result<Option<Vec<u8>>> {
        file::read_capped(&self.path, OUTPUT_CAP)
    }

    /// How the output compares with `bytes`. Compared in chunks, so a
    /// large config is not held in memory twice.
    pub fn compare(&self, bytes: &[u8]) -> Result<Current> {
        let Some((mut file, meta)) = file::open(&self.path)? else {
            return Ok(Current::Missing);
        };
        if meta.len() != bytes.len() as u64 {
            return Ok(Current::Differs);
        }
        let context = || format!("unable to read `{}`", self.path.display());
        let mut buf = vec![0u8; 64 * 1024];
        let mut rest = bytes;
        loop {
            let n = file.read(&mut buf).with_context(context)?;
            if n == 0 {
                return Ok(if rest.is_empty() {
                    Current::Same
                } else {
                    Current::Differs
                });
            }
            match rest.strip_prefix(&buf[..n]) {
                Some(tail) => rest = tail,
                None => return Ok(Current::Differs),
            }
        }
    }

    /// Writes a candidate beside the output, for the check.
    pub fn stage(&self, bytes: &[u8]) -> Result<Staged> {
        Staged::new(&self.path, bytes)
    }

    /// Removes temp files of killed runs beside the output.
    pub fn remove_leftovers(&self, _lock: &Lock<Exclusive>) {
        atomic::remove_leftovers(atomic::parent_dir(&self.path));
    }

    /// Makes `bytes` (staged already, if they were checked) the output; the
    /// current one becomes `.prev` first (a hard link, or a copy when
    /// writing in place).
    pub fn replace(&self, staged: Option<Staged>, bytes: &[u8]) -> Result<Replaced<'_>> {
        let edited = self.keep_hand_edit(bytes)?;
        let prev = self.prev_path();
        let had_previous = match self.mode {
            WriteMode::Rename => {
                let staged = match staged {
                    Some(staged) => staged,
                    None => self.stage(bytes)?,
                };
                let exists = fs::symlink_metadata(&self.path).is_ok();
                if exists && !atomic::link_atomic(&self.path, &prev)? {
                    self.copy_to_prev()?;
                }
                staged.commit()?;
                exists
            }
            WriteMode::InPlace => {
                drop(staged);
                let old = self.read()?;
                if let Some(old) = &old {
                    atomic::write_atomic(&prev, old)?;
                }
                write_in_place(&self.path, bytes, old.as_deref())?;
                old.is_some()
            }
        };
        self.remember(bytes);
        Ok(Replaced {
            output: self,
            had_previous,
            edited,
        })
    }

    /// `<output>.sum`: the FNV-1a hash of the bytes hacfg last wrote, which
    /// tells a hand edit from hacfg's own file.
    fn sum_path(&self) -> PathBuf {
        self.beside(".sum")
    }

    /// Notes that the output now holds `bytes` (best effort: without the
    /// note, the next write just cannot tell a hand edit).
    fn remember(&self, bytes: &[u8]) {
        let sum = format!(
            "{:016x}\n",
            crate::index::fnv(crate::index::FNV_START, bytes)
        );
        let _ = atomic::write_atomic(&self.sum_path(), sum.as_bytes());
    }

    /// Before `new` replaces the output: when the output is not what hacfg
    /// last wrote (by its `.sum`), keeps it as `<output>.edited`.
    fn keep_hand_edit(&self, new: &[u8]) -> Result<Option<HandEdit>> {
        let Ok(Some(sum)) = file::read_capped(&self.sum_path(), 64) else {
            return Ok(None); // no note (first write, or an older hacfg)
        };
        let Some(old) = self.read()? else {
            return Ok(None);
        };
        let written = String::from_utf8_lossy(&sum);
        let now = format!("{:016x}", crate::index::fnv(crate::index::FNV_START, &old));
        if written.trim() == now || old == new {
            return Ok(None);
        }
        let kept = self.beside(".edited");
        atomic::write_atomic(&kept, &old)
            .with_context(|| format!("unable to keep the hand-edited `{}`", self.path.display()))?;
        let (old, new) = (String::from_utf8_lossy(&old), String::from_utf8_lossy(new));
        let lines = similar::TextDiff::from_lines(old.as_ref(), new.as_ref())
            .iter_all_changes()
            .filter(|c| c.tag() == similar::ChangeTag::Delete)
            .count();
        Ok(Some(HandEdit {
            output: self.path.clone(),
            kept,
            lines,
        }))
    }

    fn copy_to_prev(&self) -> Result<()> {
        let old = self.read()?.unwrap_or_default();
        atomic::write_atomic(&self.prev_path(), &old)
    }
}

impl Replaced<'_> {
    /// The hand edit this write replaced (kept as `<output>.edited`), if any.
    pub fn hand_edit(&self) -> Option<&HandEdit> {
        self.edited.as_ref()
    }

    /// Puts `.prev` back over the output; says what it did.
    pub fn restore(self) -> Result<String> {
        let output = self.output;
        let prev = output.prev_path();
        if !self.had_previous {
            return Ok(format!(
                "`{}` had no previous config to restore; the new one stays",
                output.path.display()
            ));
        }
        let bytes = file::read_capped(&prev, OUTPUT_CAP)?
            .with_context(|| format!("`{}` vanished; nothing restored", prev.display()))?;
        match output.mode {
            WriteMode::Rename => atomic::write_atomic(&output.path, &bytes)?,
            WriteMode::InPlace => write_in_place(&output.path, &bytes, None)?,
        }
        output.remember(&bytes);
        Ok(format!(
            "restored `{}` from `{}`",
            output.path.display(),
            prev.display()
        ))
    }
}

/// Overwrites `path` in place (same inode). The space is reserved first, so
/// a full file system refuses before a byte changes; any later write error
/// puts `old` back. A reader may still see a mix for a moment: this mode is
/// for HAProxy, which reads the file only when reloaded, after the write.
fn write_in_place(path: &Path, bytes: &[u8], old: Option<&[u8]>) -> Result<()> {
    let context = || format!("unable to write `{}` in place", path.display());
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .with_context(context)?;
    reserve(&file, bytes.len()).with_context(|| {
        format!(
            "not enough space to write `{}` in place ({} bytes); it was left as it was",
            path.display(),
            bytes.len()
        )
    })?;
    let write = |data: &[u8]| -> std::io::Result<()> {
        file.write_all_at(data, 0)?;
        file.set_len(data.len() as u64)?;
        file.sync_all()
    };
    if let Err(e) = write(bytes) {
        let restored = match old {
            Some(old) if write(old).is_ok() => "the old bytes were put back",
            Some(_) => "putting the old bytes back failed too",
            None => "there were no old bytes to put back",
        };
        return Err(e).with_context(|| format!("{}; {restored}", context()));
    }
    Ok(())
}

/// Reserves `len` bytes of blocks without changing the file's size (a file
/// system without `fallocate` is written unreserved: errors still restore).
fn reserve(file: &File, len: usize) -> std::io::Result<()> {
    // fallocate(2) takes an off_t: no file system holds more.
    let Some(len) = u64::try_from(len)
        .ok()
        .filter(|&l| i64::try_from(l).is_ok())
    else {
        return Err(ErrorKind::FileTooLarge.into());
    };
    if len == 0 {
        return Ok(());
    }
    match rustix::fs::fallocate(file, FallocateFlags::KEEP_SIZE, 0, len) {
        Ok(()) | Err(Errno::OPNOTSUPP | Errno::NOSYS) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn in_place_keeps_inode() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.cfg");
        fs::write(&target, b"old, longer").unwrap();
        let ino = fs::metadata(&target).unwrap().ino();
        write_in_place(&target, b"new", None).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new");
        assert_eq!(fs::metadata(&target).unwrap().ino(), ino);
    }

    #[test]
    fn a_link_is_followed_to_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.cfg");
        fs::write(&real, b"x").unwrap();
        let link = dir.path().join("haproxy.cfg");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let out = OutputFile::new(&link, WriteMode::Rename).unwrap();
        assert_eq!(out.path(), fs::canonicalize(&real).unwrap());
        let staged = out.stage(b"new").unwrap();
        let replaced = out.replace(Some(staged), b"new").unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read(&link).unwrap(), b"new");
        assert!(replaced.restore().unwrap().contains("restored"));
        assert_eq!(fs::read(&link).unwrap(), b"x");
        std::os::unix::fs::symlink(dir.path().join("nothing"), dir.path().join("dangling"))
            .unwrap();
        assert!(OutputFile::new(&dir.path().join("dangling"), WriteMode::Rename).is_err());
        assert!(OutputFile::new(dir.path(), WriteMode::Rename).is_err());
    }

    #[test]
    fn a_hand_edit_is_kept_as_edited_before_it_is_replaced() {
        for mode in [WriteMode::Rename, WriteMode::InPlace] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("haproxy.cfg");
            let out = OutputFile::new(&path, mode).unwrap();
            let first = out.replace(None, b"a\nb\nc\n").unwrap();
            assert_eq!(first.hand_edit(), None);
            let second = out.replace(None, b"a\nb\nc\nd\n").unwrap();
            assert_eq!(second.hand_edit(), None, "hacfg's own file is no edit");
            assert!(!dir.path().join("haproxy.cfg.edited").exists());
            fs::write(&path, b"a\nB\nc\nd\n# mine\n").unwrap();
            let third = out.replace(None, b"a\nb\nc\nd\ne\n").unwrap();
            let edit = third.hand_edit().expect("the edit is seen");
            assert_eq!(edit.lines, 2, "{mode:?}");
            let kept = dir.path().join("haproxy.cfg.edited");
            assert_eq!(edit.kept, kept);
            assert_eq!(fs::read(&kept).unwrap(), b"a\nB\nc\nd\n# mine\n");
            assert_eq!(fs::read(&path).unwrap(), b"a\nb\nc\nd\ne\n");
            assert!(edit.to_string().contains("2 line(s) differ"), "{edit}");
            // Once replaced, the file is hacfg's again.
            assert_eq!(out.replace(None, b"x\n").unwrap().hand_edit(), None);
        }
    }
}
