//! Talking to HAProxy's master CLI or stats socket, on a Unix socket or
//! over TCP: one command, one answer, one deadline for the whole exchange
//! (connect, write, read), and a cap on the answer. A socket whose accept
//! backlog is full, or that drips one byte at a time, costs at most the
//! deadline; such an error is [`Late`], so that callers can tell a socket
//! that does not answer from one that refuses.

use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use super::address::Address;

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

/// Sends `command` to the Unix socket `path` and returns the whole answer,
/// all before `deadline`.
pub fn exchange(path: &Path, command: &str, deadline: Instant) -> Result<String> {
    exchange_with(&Address::from(path), command, deadline)
}

/// Sends `command` to `to` and returns the whole answer, all before
/// `deadline`. A late answer's error says how long it was given.
pub fn exchange_with(to: &Address, command: &str, deadline: Instant) -> Result<String> {
    let given = deadline.saturating_duration_since(Instant::now());
    let late = || {
        Late(format!(
            "`{to}` did not answer `{command}` in time ({:.1}s)",
            given.as_secs_f64()
        ))
    };
    let mut stream = match kept(to) {
        Some(stream) => stream,
        None => connect(to, deadline)?,
    };
    stream.set_write_timeout(left(deadline).ok_or_else(late)?)?;
    match stream.write_all(format!("{command}\n").as_bytes()) {
        Ok(()) => {}
        Err(e) if timed_out(&e) => return Err(late().into()),
        Err(e) => {
            return Err(e).with_context(|| format!("unable to send `{command}` to `{to}`"));
        }
    }
    // Half-close: the master CLI answers, then closes once input ends.
    stream.shutdown_write()?;
    let answer = receive(&mut stream, (to, command), deadline, late)?;
    String::from_utf8(answer).with_context(|| format!("`{to}` answered with non-UTF-8 bytes"))
}

/// The answer up to the end of the stream, each read's timeout what is
/// left of the one deadline.
fn receive(
    stream: &mut Stream,
    (to, command): (&Address, &str),
    deadline: Instant,
    late: impl Fn() -> Late,
) -> Result<Vec<u8>> {
    let mut answer = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        stream.set_read_timeout(left(deadline).ok_or_else(&late)?)?;
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(answer),
            Ok(n) if answer.len() + n > ANSWER_CAP => bail!(
                "`{to}` answered `{command}` with more than {} MiB",
                ANSWER_CAP >> 20
            ),
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if timed_out(&e) => return Err(late().into()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e).with_context(|| format!("unable to read from `{to}`")),
        }
    }
}

/// What is left until `deadline`; `None` once it passed.
fn left(deadline: Instant) -> Option<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    (!left.is_zero()).then_some(left)
}

/// Whether an I/O error is a timeout running out.
fn timed_out(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// A connected socket of either kind.
enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(Some(timeout)),
            Stream::Tcp(s) => s.set_read_timeout(Some(timeout)),
        }
    }

    fn set_write_timeout(&self, timeout: Duration) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_write_timeout(Some(timeout)),
            Stream::Tcp(s) => s.set_write_timeout(Some(timeout)),
        }
    }

    fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Connects without blocking past `deadline`.
fn connect(to: &Address, deadline: Instant) -> Result<Stream> {
    match to {
        Address::Unix(path) => connect_unix(path, deadline).map(Stream::Unix),
        Address::Tcp(addr) => connect_tcp(addr, deadline).map(Stream::Tcp),
    }
}

/// A TCP connect within what is left of `deadline` (a host that drops the
/// SYN costs no more).
fn connect_tcp(addr: &SocketAddr, deadline: Instant) -> Result<TcpStream> {
    let late = || Late(format!("`{addr}` accepted no connection in time"));
    match TcpStream::connect_timeout(addr, left(deadline).ok_or_else(late)?) {
        Ok(stream) => Ok(stream),
        Err(e) if timed_out(&e) => Err(late().into()),
        Err(e) => Err(e).with_context(|| format!("unable to connect to `{addr}`")),
    }
}

/// A Unix socket whose backlog is full refuses a non-blocking connect with
/// EAGAIN, so retry until `deadline`.
fn connect_unix(path: &Path, deadline: Instant) -> Result<UnixStream> {
    let context = || format!("unable to connect to `{}`", path.display());
    loop {
        match try_unix(path).with_context(context)? {
            Some(stream) => return Ok(stream),
            None if Instant::now() >= deadline => {
                return Err(Late(format!(
                    "`{}` accepted no connection in time (its backlog is full)",
                    path.display()
                ))
                .into());
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// One non-blocking connect to a Unix socket; `None` when its backlog is
/// full.
fn try_unix(path: &Path) -> Result<Option<UnixStream>> {
    if path.as_os_str().as_bytes().len() >= SUN_PATH_LEN {
        bail!("socket path `{}` is too long", path.display());
    }
    let addr = SocketAddrUnix::new(path).map_err(io::Error::from)?;
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )
    .map_err(io::Error::from)?;
    match rustix::net::connect(&fd, &addr) {
        Ok(()) | Err(Errno::INPROGRESS) => {
            let stream = UnixStream::from(fd);
            stream.set_nonblocking(false)?;
            Ok(Some(stream))
        }
        Err(Errno::AGAIN) => Ok(None),
        Err(e) => Err(io::Error::from(e).into()),
    }
}

/// Connections [`probe`] opened: the next exchange on the address takes
/// its own, so that checking a socket costs it no connection of its own.
static KEPT: Mutex<Vec<(Address, Stream, Instant)>> = Mutex::new(Vec::new());

/// How long a probe's connection waits for its exchange: HAProxy closes
/// an idle CLI connection after `stats timeout` (10 s by default).
const KEEP: Duration = Duration::from_secs(1);

fn kept_connections() -> MutexGuard<'static, Vec<(Address, Stream, Instant)>> {
    // Connections are dropped or taken whole whatever panicked.
    KEPT.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The connection a probe of `to` opened a moment ago, if any.
fn kept(to: &Address) -> Option<Stream> {
    let mut kept = kept_connections();
    kept.retain(|(_, _, at)| at.elapsed() < KEEP);
    let at = kept.iter().position(|(a, _, _)| a == to)?;
    Some(kept.swap_remove(at).1)
}

fn keep(to: &Address, stream: Stream) {
    kept_connections().push((to.clone(), stream, Instant::now()));
}

/// Why a socket cannot be talked to at all.
#[derive(Debug)]
pub enum Unusable {
    /// No such file.
    Missing(Address),
    /// A file, but no socket.
    NotSocket(Address),
    /// Nothing listens there.
    Refused(Address),
    /// This user may not connect (the socket's owner, group or mode).
    Denied(Address),
    /// Anything else: permissions, a host that drops the connect.
    Other(Address, String),
}

impl Unusable {
    /// Whether nothing can be there to answer (no file, or nobody
    /// listening), as opposed to a socket hacfg may not reach.
    pub fn absent(&self) -> bool {
        matches!(self, Unusable::Missing(_) | Unusable::Refused(_))
    }
}

impl Unusable {
    /// Where it was looked for.
    pub fn address(&self) -> &Address {
        match self {
            Unusable::Missing(to)
            | Unusable::NotSocket(to)
            | Unusable::Refused(to)
            | Unusable::Denied(to)
            | Unusable::Other(to, _) => to,
        }
    }

    /// Why, without the address.
    pub fn reason(&self) -> String {
        match self {
            Unusable::Missing(_) => "no such file".to_string(),
            Unusable::NotSocket(_) => "not a socket".to_string(),
            Unusable::Refused(_) => "connection refused (nothing listens there)".to_string(),
            Unusable::Denied(_) => "permission denied (run hacfg as a user the socket lets in, \
                                    its owner or root, or open it to a group with HAProxy's \
                                    `stats socket PATH mode 660 group G` or `-S PATH,mode,660,\
                                    group,G`)"
                .to_string(),
            Unusable::Other(_, why) => format!("unable to connect: {why}"),
        }
    }
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.address(), self.reason())
    }
}

impl std::error::Error for Unusable {}

/// Checks that `to` takes connections, before anything is changed: one
/// connection, closed at once. A socket that is missing or refuses is
/// tried again until `deadline`, for HAProxy's master refuses for a moment
/// while it re-executes itself; a full backlog counts as listening. The
/// connection is kept for a moment, for the first exchange.
pub fn probe(to: &Address, deadline: Instant) -> Result<(), Unusable> {
    loop {
        let tried = probe_once(to, deadline);
        match tried {
            Err(e) if e.absent() && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            tried => return tried,
        }
    }
}

/// One try of [`probe`]: a TCP connect may take until `deadline`.
pub fn probe_once(to: &Address, deadline: Instant) -> Result<(), Unusable> {
    let other = |e: &dyn fmt::Display| Unusable::Other(to.clone(), e.to_string());
    let refused = |e: &io::Error| match e.kind() {
        ErrorKind::NotFound => Unusable::Missing(to.clone()),
        ErrorKind::ConnectionRefused => Unusable::Refused(to.clone()),
        ErrorKind::PermissionDenied => Unusable::Denied(to.clone()),
        _ => other(e),
    };
    match to {
        Address::Unix(path) => match std::fs::metadata(path) {
            Err(e) => Err(refused(&e)),
            Ok(meta) if !meta.file_type().is_socket() => Err(Unusable::NotSocket(to.clone())),
            Ok(_) => match try_unix(path) {
                Ok(stream) => {
                    if let Some(stream) = stream {
                        keep(to, Stream::Unix(stream));
                    }
                    Ok(())
                }
                Err(e) => Err(e
                    .downcast_ref::<io::Error>()
                    .map_or_else(|| other(&e), refused)),
            },
        },
        Address::Tcp(addr) => {
            let wait = left(deadline).unwrap_or(Duration::from_millis(1));
            match TcpStream::connect_timeout(addr, wait) {
                Ok(stream) => {
                    keep(to, Stream::Tcp(stream));
                    Ok(())
                }
                Err(e) if timed_out(&e) => Err(other(&"it accepted no connection in time")),
                Err(e) => Err(refused(&e)),
            }
        }
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
            match connect_unix(&path, Instant::now() + Duration::from_millis(300)) {
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

    #[test]
    fn a_tcp_socket_is_talked_to_as_a_unix_one() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let to = Address::Tcp(listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for conn in listener.incoming().take(2) {
                let mut conn = conn.unwrap();
                let mut cmd = String::new();
                conn.read_to_string(&mut cmd).unwrap();
                if cmd.starts_with("show") {
                    conn.write_all(format!("got {cmd}").as_bytes()).unwrap();
                } else {
                    // Holds the connection, answering nothing.
                    std::thread::sleep(Duration::from_secs(3));
                }
            }
        });
        let soon = || Instant::now() + Duration::from_millis(500);
        assert_eq!(
            exchange_with(&to, "show info", soon()).unwrap(),
            "got show info\n"
        );
        let err = exchange_with(&to, "silence", soon()).unwrap_err();
        assert!(err.is::<Late>(), "{err:#}");
        assert!(
            err.to_string()
                .contains("did not answer `silence` in time (0.5s)"),
            "{err}"
        );
    }

    #[test]
    fn a_probe_tells_a_missing_socket_from_a_file_and_a_listener() {
        let dir = tempfile::tempdir().unwrap();
        let soon = || Instant::now() + Duration::from_millis(100);
        let at = |name: &str| Address::Unix(dir.path().join(name));
        let err = probe(&at("missing"), soon()).unwrap_err();
        assert!(matches!(err, Unusable::Missing(_)), "{err}");
        std::fs::write(dir.path().join("file"), "").unwrap();
        let err = probe(&at("file"), soon()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("`{}`: not a socket", dir.path().join("file").display())
        );
        drop(UnixListener::bind(dir.path().join("stale")).unwrap());
        let err = probe(&at("stale"), soon()).unwrap_err();
        assert!(matches!(err, Unusable::Refused(_)), "{err}");
        let _live = UnixListener::bind(dir.path().join("live")).unwrap();
        probe(&at("live"), soon()).unwrap();
        // A port nothing listens on: bound, then let go.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = Address::Tcp(port.local_addr().unwrap());
        drop(port);
        let err = probe(&closed, soon()).unwrap_err();
        assert!(matches!(err, Unusable::Refused(_)), "{err}");
        let open = std::net::TcpListener::bind("[::1]:0").unwrap();
        probe(&Address::Tcp(open.local_addr().unwrap()), soon()).unwrap();
    }

    #[test]
    fn a_probe_connection_is_the_first_exchange() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let to = Address::Tcp(listener.local_addr().unwrap());
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut conn = conn.unwrap();
                let mut cmd = String::new();
                conn.read_to_string(&mut cmd).unwrap();
                conn.write_all(b"ok\n").unwrap();
            }
        });
        let soon = || Instant::now() + Duration::from_secs(5);
        probe(&to, soon()).unwrap();
        assert_eq!(exchange_with(&to, "show info", soon()).unwrap(), "ok\n");
        assert_eq!(exchange_with(&to, "show info", soon()).unwrap(), "ok\n");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
