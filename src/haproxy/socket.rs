//! Talking to HAProxy's master CLI or stats socket: one command, one answer,
//! one deadline for the whole exchange (connect, write, read), and a cap on
//! the answer. A socket whose accept backlog is full, or that drips one byte
//! at a time, costs at most the deadline; such an error is [`Late`], so that
//! callers can tell a socket that does not answer from one that refuses.

use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

/// Largest answer read from a socket.
pub const ANSWER_CAP: usize = 64 * 1024 * 1024;

/// Room for a path in a `sockaddr_un`, its closing NUL included.
const SUN_PATH_LEN: usize =
    std::mem::size_of::<libc::sockaddr_un>() - std::mem::offset_of!(libc::sockaddr_un, sun_path);

/// A deadline that passed: the socket did not answer in time (or its
/// backlog stayed full).
#[derive(Debug)]
pub struct Late(String);

impl fmt::Display for Late {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Late {}

/// Sends `command` and returns the whole answer, all before `deadline`.
pub fn exchange(path: &Path, command: &str, deadline: Instant) -> Result<String> {
    let late = || {
        Late(format!(
            "`{}` did not answer `{command}` in time",
            path.display()
        ))
    };
    let mut stream = connect(path, deadline)?;
    let left = |d: Instant| {
        let left = d.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    };
    stream.set_write_timeout(Some(left(deadline).ok_or_else(late)?))?;
    match stream.write_all(format!("{command}\n").as_bytes()) {
        Ok(()) => {}
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            return Err(late().into());
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("unable to send `{command}` to `{}`", path.display()));
        }
    }
    // Half-close: the master CLI answers, then closes once input ends.
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut answer = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // The timeout of each read is what is left of the one deadline.
        stream.set_read_timeout(Some(left(deadline).ok_or_else(late)?))?;
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
                return Err(late().into());
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

/// Connects without blocking past `deadline`: a Unix socket whose backlog
/// is full refuses a non-blocking connect with EAGAIN, so retry until then.
fn connect(path: &Path, deadline: Instant) -> Result<UnixStream> {
    let context = || format!("unable to connect to `{}`", path.display());
    if path.as_os_str().as_bytes().len() >= SUN_PATH_LEN {
        bail!("socket path `{}` is too long", path.display());
    }
    let addr = SocketAddrUnix::new(path)
        .map_err(std::io::Error::from)
        .with_context(context)?;
    loop {
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            None,
        )
        .map_err(std::io::Error::from)
        .with_context(context)?;
        match rustix::net::connect(&fd, &addr) {
            Ok(()) | Err(Errno::INPROGRESS) => {
                let stream = UnixStream::from(fd);
                stream.set_nonblocking(false).with_context(context)?;
                return Ok(stream);
            }
            Err(Errno::AGAIN) => {}
            Err(e) => return Err(std::io::Error::from(e)).with_context(context),
        }
        if Instant::now() >= deadline {
            return Err(Late(format!(
                "`{}` accepted no connection in time (its backlog is full)",
                path.display()
            ))
            .into());
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
        let err = err.unwrap_err();
        assert!(err.is::<Late>(), "{err:#}");
        let err = format!("{err:#}");
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
