//! Opening files that someone else may have put there: node files, the
//! index, the output and its `.prev`, templates, pid files.
//!
//! Every open refuses a symbolic link (`O_NOFOLLOW`) and cannot block
//! (`O_NONBLOCK`: a FIFO opens at once instead of waiting for a writer);
//! `fstat` on the open file then refuses anything that is not a regular file
//! (FIFOs, sockets, devices), and reads stop at a cap. A hostile folder entry
//! is an error that names it, never a hang or an exhausted memory.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Largest node file hacfg reads (its own are under 1 KiB).
pub const NODE_FILE_CAP: u64 = 64 * 1024;
/// Largest template, pid file answer or similar small input.
pub const TEMPLATE_CAP: u64 = 16 * 1024 * 1024;

/// Whether a symbolic link at the path itself is followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Refused: files in the nodes folder and beside the output, which
    /// anyone who can write there may have put.
    Refuse,
    /// Followed: files the operator names (a template, a pid file), which
    /// are often links (a Kubernetes ConfigMap's files are).
    Follow,
}

/// Opens `path` for reading if it is a regular file; `None` if it does not
/// exist. A link at `path` itself is refused.
pub fn open(path: &Path) -> Result<Option<(File, Metadata)>> {
    open_with(path, Links::Refuse)
}

/// `open`, with links at `path` refused or followed.
pub fn open_with(path: &Path, links: Links) -> Result<Option<(File, Metadata)>> {
    let no_follow = match links {
        Links::Refuse => libc::O_NOFOLLOW,
        Links::Follow => 0,
    };
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(no_follow | libc::O_NONBLOCK)
        .open(path);
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            bail!(
                "`{}` is a symbolic link, which hacfg does not follow here",
                path.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("unable to open `{}`", path.display())),
    };
    let meta = file
        .metadata()
        .with_context(|| format!("unable to stat `{}`", path.display()))?;
    if !meta.is_file() {
        bail!(
            "`{}` is not a regular file but {}",
            path.display(),
            kind_of(&meta)
        );
    }
    Ok(Some((file, meta)))
}

/// Opens (or creates, with `mode`) a lock file: a link or anything but a
/// regular file at `path` is refused, as everywhere here. One of ours
/// with a wider mode (an older hacfg's) is narrowed to `mode`, so that no
/// other user can open it to hold the lock. `what` names it in errors
/// (`the worker lock`).
pub fn open_lock(path: &Path, mode: u32, what: &str) -> Result<File> {
    use std::os::unix::fs::PermissionsExt;
    let context = || format!("unable to open {what} `{}`", path.display());
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .with_context(context)?;
    let meta = file.metadata().with_context(context)?;
    if !meta.is_file() {
        bail!("{what} `{}` is not a regular file", path.display());
    }
    if meta.permissions().mode() & 0o7777 != mode {
        // Another user's file keeps its mode: only its owner may change it.
        let _ = file.set_permissions(std::fs::Permissions::from_mode(mode));
    }
    Ok(file)
}

/// Reads `path` whole, refusing a link at `path` and more than `cap`
/// bytes; `None` if it does not exist.
pub fn read_capped(path: &Path, cap: u64) -> Result<Option<Vec<u8>>> {
    read_capped_with(path, Links::Refuse, cap)
}

/// `read_capped`, with links at `path` refused or followed.
pub fn read_capped_with(path: &Path, links: Links, cap: u64) -> Result<Option<Vec<u8>>> {
    let Some((file, meta)) = open_with(path, links)? else {
        return Ok(None);
    };
    // Refused before a byte is read; the read is capped too (it may grow).
    if meta.len() > cap {
        return Err(too_large(path, cap));
    }
    let mut buf = Vec::with_capacity(usize::try_from(meta.len().min(cap)).unwrap_or(0));
    read_into(file, path, cap, &mut buf)?;
    Ok(Some(buf))
}

/// Reads an opened file into `buf` (cleared first), refusing more than `cap` bytes.
pub fn read_into(file: File, path: &Path, cap: u64, buf: &mut Vec<u8>) -> Result<()> {
    buf.clear();
    file.take(cap + 1)
        .read_to_end(buf)
        .with_context(|| format!("unable to read `{}`", path.display()))?;
    if buf.len() as u64 > cap {
        return Err(too_large(path, cap));
    }
    Ok(())
}

fn too_large(path: &Path, cap: u64) -> anyhow::Error {
    anyhow::anyhow!(
        "`{}` is larger than {} KiB, hacfg's limit for this file",
        path.display(),
        cap / 1024
    )
}

/// What a non-regular file is, for messages.
pub fn kind_of(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a folder"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_could_block_or_mislead() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("ok"), b"hello").unwrap();
        assert_eq!(read_capped(&d.join("ok"), 5).unwrap().unwrap(), b"hello");
        assert!(read_capped(&d.join("missing"), 5).unwrap().is_none());
        let big = format!("{:#}", read_capped(&d.join("ok"), 4).unwrap_err());
        assert!(big.contains("larger than"), "{big}");
        std::os::unix::fs::symlink("/dev/zero", d.join("zero")).unwrap();
        let err = format!("{:#}", read_capped(&d.join("zero"), 4).unwrap_err());
        assert!(err.contains("symbolic link"), "{err}");
        let fifo = d.join("fifo");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
        )
        .unwrap();
        let err = format!("{:#}", read_capped(&fifo, 4).unwrap_err());
        assert!(err.contains("a FIFO"), "{err}");
        let err = format!("{:#}", read_capped(d, 4).unwrap_err());
        assert!(err.contains("a folder"), "{err}");
        // Followed where the operator names the file, still regular only.
        std::os::unix::fs::symlink(d.join("ok"), d.join("link")).unwrap();
        let text = read_capped_with(&d.join("link"), Links::Follow, 5).unwrap();
        assert_eq!(text.unwrap(), b"hello");
        assert!(read_capped_with(&d.join("zero"), Links::Follow, 4).is_err());
    }

    #[test]
    fn a_lock_file_is_ours_alone_and_never_a_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        open_lock(&path, 0o600, "the lock").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        // An older hacfg's, open to everyone, is narrowed.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        open_lock(&path, 0o600, "the lock").unwrap();
        assert_eq!(mode(&path), 0o600);
        let link = dir.path().join("link.lock");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(open_lock(&link, 0o600, "the lock").is_err());
    }
}
