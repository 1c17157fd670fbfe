//! Talking to HAProxy's master CLI or stats socket: one command, one answer,
//! one deadline for the whole exchange (connect, write, read), and a cap on
//! the answer. A socket whose accept backlog is full, or that drips one byte
//! at a time, costs at most the deadline.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Largest answer read from a socket.
pub const ANSWER_CAP: usize = 64 * 1024 * 1024;

/// Sends `command` and returns the whole answer, all before `deadline`.
pub fn exchange(path: &Path, command: &str, deadline: Instant) -> Result<String> {
    let late = || format!("`{}` did not answer `{command}` in time", path.display());
    let mut stream = connect(path, deadline)?;
    let left = |d: Instant| {
        let left = d.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    };
    stream.set_write_timeout(Some(left(deadline).with_context(late)?))?;
    stream
        .write_all(format!("{command}\n").as_bytes())
        .with_context(|| format!("unable to send `{command}` to `{}`", path.display()))?;
    // Half-close: the master CLI answers, then closes once input ends.
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut answer = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // The timeout of each read is what is left of the one deadline.
        stream.set_read_timeout(Some(left(deadline).with_context(late)?))?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                if answer.len() + n > ANSWER_CAP {
                    bail!(
                        "`{}` answered `{command}` with more than {} MiB",
                        path.display(),
                        ANSWER_CAP >> 20
                    );
                }
                answer.extend_from_slice(&chunk[..n]);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                bail!(late())
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(e).with_context(|| format!("unable to read from `{}`", path.display()));
            }
        }
    }
    String::from_utf8(answer)
        .with_context(|| format!("`{}` answered with non-UTF-8 bytes", path.display()))
}

// Filling a C `sockaddr_un`: small constants and path bytes.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]
/// Connects without blocking past `deadline`: a Unix socket whose backlog
/// is full refuses a non-blocking connect with EAGAIN, so retry until then.
fn connect(path: &Path, deadline: Instant) -> Result<UnixStream> {
    let context = || format!("unable to connect to `{}`", path.display());
    // SAFETY: sockaddr_un is plain old data; zeroed is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() {
        bail!("socket path `{}` is too long", path.display());
    }
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    loop {
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).with_context(context);
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: `addr` is a valid sockaddr_un of the given length.
        let rc = unsafe {
            libc::connect(
                fd,
                std::ptr::from_ref(&addr).cast(),
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            )
        };
        let err = std::io::Error::last_os_error();
        if rc == 0 || err.raw_os_error() == Some(libc::EINPROGRESS) {
            let stream = UnixStream::from(owned);
            stream.set_nonblocking(false).with_context(context)?;
            return Ok(stream);
        }
        if err.raw_os_error() != Some(libc::EAGAIN) {
            return Err(err).with_context(context);
        }
        if Instant::now() >= deadline {
            bail!(
                "`{}` accepted no connection in time (its backlog is full)",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn a_dripping_socket_costs_at_most_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            for _ in 0..100 {
                if conn.write_all(b"x").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let started = Instant::now();
        let err = exchange(
            &path,
            "show proc",
            Instant::now() + Duration::from_millis(500),
        );
        let err = format!("{:#}", err.unwrap_err());
        assert!(err.contains("did not answer"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_full_backlog_costs_at_most_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = UnixListener::bind(&path).unwrap();
        // Fill the backlog: connections nobody accepts.
        let mut held = Vec::new();
        let started = Instant::now();
        let err = loop {
            match connect(&path, Instant::now() + Duration::from_millis(300)) {
                Ok(s) => held.push(s),
                Err(e) => break format!("{e:#}"),
            }
            assert!(held.len() < 10_000, "the backlog never filled");
        };
        assert!(err.contains("accepted no connection"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(listener);
    }

    #[test]
    fn a_plain_answer_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut cmd = String::new();
            conn.read_to_string(&mut cmd).unwrap();
            conn.write_all(format!("got {cmd}").as_bytes()).unwrap();
        });
        let answer = exchange(&path, "show proc", Instant::now() + Duration::from_secs(5));
        assert_eq!(answer.unwrap(), "got show proc\n");
    }
}
