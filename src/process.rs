//! Running a helper command (a check, a reload command, `serf members`):
//! one deadline for the whole run, its own process group, bounded output.
//!
//! hacfg returns when the command itself exits, even if a background child
//! of it still holds stdout (`reload.sh` that starts a daemon); at the
//! deadline the whole group is killed, not only `sh`.

use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::OFlags;
use rustix::process::{Pid, PidfdFlags, Signal};

use crate::quote::quote;

/// Output kept per stream; the rest is read and dropped, so the command
/// never blocks on a full pipe.
const DEFAULT_CAP: usize = 1024 * 1024;

/// A command that ran to its end.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// stdout then stderr, trimmed: what to show a person.
    pub fn output(&self) -> String {
        let mut text = String::from_utf8_lossy(&self.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&self.stderr));
        text.trim().to_string()
    }

    /// Itself if it exited 0, else an error with its status and output.
    pub fn succeeded(self, what: &str) -> Result<Finished> {
        if !self.success() {
            let output = self.output();
            bail!("{what} failed ({}): {}", self.status, quote(&output));
        }
        Ok(self)
    }
}

/// A command to run with a deadline.
pub struct Run<'a> {
    cmd: &'a mut Command,
    what: &'a str,
    cap: usize,
    err_cap: usize,
}

impl<'a> Run<'a> {
    /// `what` names the command in messages (`haproxy -c`, `reload command …`).
    pub fn new(cmd: &'a mut Command, what: &'a str) -> Run<'a> {
        Run {
            cmd,
            what,
            cap: DEFAULT_CAP,
            err_cap: DEFAULT_CAP,
        }
    }

    /// Keep up to `cap` bytes of each stream (default 1 MiB).
    #[must_use]
    pub fn cap(mut self, cap: usize) -> Run<'a> {
        self.cap = cap;
        self.err_cap = cap;
        self
    }

    /// Keep up to `cap` bytes of stderr alone: for a command whose answer
    /// is a large stdout and whose stderr is words for people (not `haproxy
    /// -c`, whose answer is its stderr).
    #[must_use]
    pub fn stderr_cap(mut self, cap: usize) -> Run<'a> {
        self.err_cap = cap;
        self
    }

    /// Runs with no stdin until it exits or `timeout` passes; at the
    /// deadline its process group is killed and this is an error.
    pub fn run(self, timeout: Duration) -> Result<Finished> {
        let what = self.what;
        let mut child = self
            .cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .with_context(|| format!("unable to run {what}"))?;
        let caps = (self.cap, self.err_cap);
        let result = collect(&mut child, caps, Instant::now() + timeout);
        match result {
            Ok(Some(finished)) => Ok(finished),
            Ok(None) => {
                kill_group(&mut child);
                bail!(
                    "{what} did not finish within {:.1}s; its process group was killed",
                    timeout.as_secs_f64()
                )
            }
            Err(e) => {
                kill_group(&mut child);
                Err(e).with_context(|| format!("while running {what}"))
            }
        }
    }
}

/// SIGKILL to the child's process group (its id: `process_group(0)`), then reap it.
fn kill_group(child: &mut Child) {
    let group = i32::try_from(child.id()).ok().and_then(Pid::from_raw);
    if let Some(group) = group {
        let _ = rustix::process::kill_process_group(group, Signal::KILL);
    }
    let _ = child.wait();
}

/// Reads both pipes until the child exits; `None` at the deadline.
fn collect(child: &mut Child, caps: (usize, usize), deadline: Instant) -> Result<Option<Finished>> {
    let mut out = Pipe::new(child.stdout.take().map(Source::Out), caps.0)?;
    let mut err = Pipe::new(child.stderr.take().map(Source::Err), caps.1)?;
    // A pidfd becomes readable when the child exits: no polling interval.
    let exit_fd = i32::try_from(child.id())
        .ok()
        .and_then(Pid::from_raw)
        .and_then(|pid| rustix::process::pidfd_open(pid, PidfdFlags::empty()).ok());
    loop {
        out.drain()?;
        err.drain()?;
        if let Some(status) = child.try_wait()? {
            // What the command wrote before it exited is in the pipe now.
            out.drain()?;
            err.drain()?;
            return Ok(Some(Finished {
                status,
                stdout: out.buf,
                stderr: err.buf,
            }));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        let mut fds: Vec<PollFd<'_>> = [out.fd(), err.fd(), exit_fd.as_ref().map(AsFd::as_fd)]
            .into_iter()
            .flatten()
            .map(|fd| PollFd::from_borrowed_fd(fd, PollFlags::IN))
            .collect();
        // Without a pidfd, look at the child every 2 ms.
        let wait = match exit_fd {
            Some(_) => left.min(Duration::from_millis(500)),
            None => left.min(Duration::from_millis(2)),
        };
        // Whole milliseconds, at least one.
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        let timeout = Timespec::try_from(Duration::from_millis(ms)).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        });
        // An error (EINTR) only ends this wait early: the loop looks again.
        let _ = rustix::event::poll(&mut fds, Some(&timeout));
    }
}

enum Source {
    Out(ChildStdout),
    Err(ChildStderr),
}

impl Source {
    fn reader(&mut self) -> &mut dyn Read {
        match self {
            Source::Out(s) => s,
            Source::Err(s) => s,
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Source::Out(s) => s.as_fd(),
            Source::Err(s) => s.as_fd(),
        }
    }
}

/// One non-blocking pipe and what was read from it (up to `cap` bytes).
struct Pipe {
    source: Option<Source>,
    buf: Vec<u8>,
    cap: usize,
}

impl Pipe {
    fn new(source: Option<Source>, cap: usize) -> Result<Pipe> {
        if let Some(s) = &source {
            let fd = s.fd();
            rustix::fs::fcntl_getfl(fd)
                .and_then(|flags| rustix::fs::fcntl_setfl(fd, flags | OFlags::NONBLOCK))
                .map_err(std::io::Error::from)
                .context("unable to set up a pipe")?;
        }
        Ok(Pipe {
            source,
            buf: Vec::new(),
            cap,
        })
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.source.as_ref().map(Source::fd)
    }

    /// Reads what is there now; closes the pipe at its end.
    fn drain(&mut self) -> Result<()> {
        let Some(source) = &mut self.source else {
            return Ok(());
        };
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match source.reader().read(&mut chunk) {
                Ok(0) => {
                    self.source = None;
                    return Ok(());
                }
                Ok(n) => {
                    let room = self.cap.saturating_sub(self.buf.len());
                    self.buf.extend_from_slice(&chunk[..n.min(room)]);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("unable to read a command's output"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, secs: f64) -> Result<Finished> {
        Run::new(Command::new("sh").args(["-c", script]), "x").run(Duration::from_secs_f64(secs))
    }

    #[test]
    fn output_and_status() {
        let done = sh("echo hi; echo err >&2; exit 3", 5.0).unwrap();
        assert!(!done.success());
        assert_eq!(done.output(), "hi\nerr");
        let err = format!("{:#}", done.succeeded("x").err().unwrap());
        assert!(err.contains("exit status: 3"), "{err}");
    }

    #[test]
    fn a_background_child_holding_stdout_does_not_delay_the_return() {
        let started = Instant::now();
        let done = sh("sleep 5 & echo started", 10.0).unwrap();
        assert!(done.success());
        assert_eq!(done.output(), "started");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn the_deadline_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > '{}'; wait", pid_file.display());
        let started = Instant::now();
        let err = format!("{:#}", sh(&script, 0.5).err().unwrap());
        assert!(err.contains("process group was killed"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild is gone (a zombie reaped by init at most).
        std::thread::sleep(Duration::from_millis(100));
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(state.is_empty() || state.contains(") Z"), "{state}");
    }

    #[test]
    fn output_is_capped() {
        let done = Run::new(
            Command::new("sh").args(["-c", "head -c 3000000 /dev/zero"]),
            "x",
        )
        .cap(1000)
        .run(Duration::from_secs(10))
        .unwrap();
        assert!(done.success());
        assert_eq!(done.stdout.len(), 1000);
        let script = "head -c 3000000 /dev/zero >&2; head -c 200000 /dev/zero";
        let done = Run::new(Command::new("sh").args(["-c", script]), "x")
            .cap(1 << 20)
            .stderr_cap(1000)
            .run(Duration::from_secs(10))
            .unwrap();
        assert_eq!((done.stdout.len(), done.stderr.len()), (200_000, 1000));
    }
}
