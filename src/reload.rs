//! Making HAProxy load the new config, and checking that it did.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use crate::config::{Reload, Strategy};
use crate::process::run_with_timeout;

/// Reloads HAProxy with the configured strategy; an error means it failed.
pub fn reload(reload: &Reload) -> Result<String> {
    match &reload.strategy {
        Strategy::Command(cmd) => {
            let what = format!("reload command `{cmd}`");
            let done =
                run_with_timeout(Command::new("sh").args(["-c", cmd]), &what, reload.timeout)?;
            ensure!(
                done.success,
                "{what} failed ({}): {}",
                done.status,
                done.output
            );
            Ok(format!("reloaded with `{cmd}`"))
        }
        Strategy::Signal(pid_file) => signal_master(pid_file, reload.timeout),
        Strategy::MasterSocket(socket) => master_cli_reload(socket, reload.timeout),
    }
}

/// Sends SIGUSR2 to the master, then waits for a worker it did not have before.
fn signal_master(pid_file: &Path, timeout: Duration) -> Result<String> {
    let text = std::fs::read_to_string(pid_file)
        .with_context(|| format!("unable to read pid file `{}`", pid_file.display()))?;
    let pid: i32 = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .filter(|p| *p > 1)
        .with_context(|| format!("pid file `{}` holds no pid: {text:?}", pid_file.display()))?;
    let before = children(pid);
    // SAFETY: kill(2) takes plain integers and has no memory effects.
    let rc = unsafe { libc::kill(pid, libc::SIGUSR2) };
    ensure!(
        rc == 0,
        "unable to signal HAProxy master {pid} (from `{}`): {}",
        pid_file.display(),
        std::io::Error::last_os_error()
    );
    let deadline = Instant::now() + timeout;
    loop {
        thread::sleep(Duration::from_millis(10));
        ensure!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "HAProxy master {pid} exited after SIGUSR2"
        );
        let now = children(pid);
        if now.iter().any(|c| !before.contains(c)) {
            return Ok(format!("reloaded HAProxy master {pid} with SIGUSR2"));
        }
        ensure!(
            Instant::now() < deadline,
            "HAProxy master {pid} started no new worker within {:.1}s of SIGUSR2 \
             (it may have refused the config: see its log)",
            timeout.as_secs_f64()
        );
    }
}

/// Child pids of `pid` (Linux `/proc`); empty if unknown.
fn children(pid: i32) -> BTreeSet<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// What `show proc` on the master CLI says.
#[derive(Debug, PartialEq)]
struct ProcState {
    reloads: u64,
    failed: u64,
    workers: BTreeSet<u32>,
}

fn parse_show_proc(text: &str) -> Option<ProcState> {
    let mut master = None;
    let mut workers = BTreeSet::new();
    let mut in_old = false;
    for line in text.lines() {
        if line.starts_with('#') {
            in_old = line.contains("old workers");
            continue;
        }
        let mut cols = line.split_whitespace();
        let (Some(pid), Some(kind), Some(reloads)) = (cols.next(), cols.next(), cols.next()) else {
            continue;
        };
        match kind {
            "master" => {
                let failed = line
                    .split_once("[failed:")
                    .and_then(|(_, rest)| rest.split(']').next())
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or(0);
                master = Some((reloads.parse().ok()?, failed));
            }
            "worker" if !in_old => {
                workers.insert(pid.parse().ok()?);
            }
            _ => {}
        }
    }
    let (reloads, failed) = master?;
    Some(ProcState {
        reloads,
        failed,
        workers,
    })
}

fn master_cli(socket: &Path, command: &str, timeout: Duration) -> std::io::Result<String> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(format!("{command}\n").as_bytes())?;
    // Half-close: the master CLI answers, then closes once input ends.
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut out = String::new();
    stream.read_to_string(&mut out)?;
    Ok(out)
}

/// `reload` on the master CLI, confirmed by `show proc`: HAProxy 2.6's
/// `reload` answers nothing, so success is a higher reload counter, no new
/// failure, and a current worker that was not there before.
fn master_cli_reload(socket: &Path, timeout: Duration) -> Result<String> {
    let show = |t| -> Result<ProcState> {
        let text = master_cli(socket, "show proc", t)
            .with_context(|| format!("unable to query master socket `{}`", socket.display()))?;
        parse_show_proc(&text).with_context(|| format!("unexpected `show proc` answer: {text:?}"))
    };
    let before = show(timeout)?;
    master_cli(socket, "reload", timeout)
        .with_context(|| format!("unable to send `reload` to `{}`", socket.display()))?;
    let deadline = Instant::now() + timeout;
    loop {
        thread::sleep(Duration::from_millis(10));
        // The master re-executes itself: the socket refuses us for a moment.
        let now = show(deadline.saturating_duration_since(Instant::now())).ok();
        if let Some(now) = now.filter(|n| n.reloads > before.reloads) {
            ensure!(
                now.failed == before.failed,
                "HAProxy refused the new config at reload time (master reports \
                 {} failed reloads, was {}); the old workers keep serving",
                now.failed,
                before.failed
            );
            if now.workers.iter().any(|w| !before.workers.contains(w)) {
                return Ok(format!("reloaded HAProxy through `{}`", socket.display()));
            }
        }
        ensure!(
            Instant::now() < deadline,
            "no new HAProxy worker appeared on `{}` within {:.1}s of `reload`",
            socket.display(),
            timeout.as_secs_f64()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOW_PROC: &str =
        "#<PID>          <type>          <reloads>       <uptime>        <version>
2268            master          2 [failed: 1]   0d00h00m01s     2.6.12
# workers
2280            worker          1               0d00h00m01s     2.6.12
# old workers
2269            worker          3               0d00h00m43s     2.6.12
# programs
";

    #[test]
    fn parses_show_proc() {
        let state = parse_show_proc(SHOW_PROC).unwrap();
        assert_eq!(
            state,
            ProcState {
                reloads: 2,
                failed: 1,
                workers: BTreeSet::from([2280])
            }
        );
        assert_eq!(parse_show_proc("garbage"), None);
    }
}
