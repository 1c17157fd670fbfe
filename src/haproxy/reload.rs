//! Making HAProxy load the new config, and checking that it did.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};

use super::address::Address;
use super::api::{Probed, RuntimeApi, probe};
use super::socket;
use crate::file;
use crate::process::Run;
use crate::quote::quote_bytes;

/// How and within what time HAProxy is made to load a new config.
#[derive(Debug, Clone)]
pub struct Reload {
    pub strategy: Strategy,
    /// One deadline for the whole reload, its verification included.
    pub timeout: Duration,
}

/// The ways to make HAProxy load a new config (see README, "Applying and reloading").
#[derive(Debug, Clone)]
pub enum Strategy {
    /// A shell command, e.g. `s6-svc -h /var/run/s6/services/ha`.
    Command(String),
    /// SIGUSR2 to the master process whose pid is in this file.
    Signal(PathBuf),
    /// `reload` on the master CLI socket, verified through `show proc`.
    MasterSocket(Address),
}

/// Checks, before a run that may reload changes anything, every socket it
/// will talk to: the runtime API's (the state saved before a reload,
/// runtime changes) and the master socket a reload goes through. A run
/// that does not reload (`reload` is `None`) touches no socket it could
/// break things with, and is not checked.
pub fn probe_sockets(runtime: Option<&RuntimeApi>, reload: Option<&Reload>) -> Result<(), Probed> {
    let Some(reload) = reload else {
        return Ok(());
    };
    if let Some(api) = runtime {
        api.probe()?;
    }
    match &reload.strategy {
        Strategy::MasterSocket(socket) if runtime.is_none_or(|api| api.path() != socket) => {
            probe("--master-socket", socket, reload.timeout)
        }
        _ => Ok(()),
    }
}

/// Whether a master socket takes connections now (one try).
pub fn probe_at_once(socket: &Address) -> Result<(), socket::Unusable> {
    socket::probe_once(socket, Instant::now() + Duration::from_secs(1))
}

/// The runtime API for the state saved before a reload: its exchange is
/// part of the reload, and ends within `--reload-timeout` too, whatever the
/// run spent before (a spent budget would empty the state file).
pub fn state_api(runtime: Option<&RuntimeApi>, reload: Option<&Reload>) -> Option<RuntimeApi> {
    let api = runtime?;
    Some(match reload {
        Some(reload) => api.budgeted(reload.timeout),
        None => api.clone(),
    })
}

/// Reloads HAProxy with the configured strategy; an error means it failed.
pub fn reload(reload: &Reload) -> Result<String> {
    let deadline = Instant::now() + reload.timeout;
    match &reload.strategy {
        Strategy::Command(cmd) => {
            let what = format!("reload command `{cmd}`");
            Run::new(Command::new("sh").args(["-c", cmd]), &what)
                .run(reload.timeout)?
                .succeeded(&what)?;
            Ok(format!("reloaded with `{cmd}`"))
        }
        Strategy::Signal(pid_file) => signal_master(pid_file, deadline, reload.timeout),
        Strategy::MasterSocket(socket) => master_cli_reload(socket, deadline, reload.timeout),
    }
}

/// Sends SIGUSR2 to the master, then waits for a worker it did not have
/// before. The pid must be an HAProxy master (checked through `/proc`), and
/// the signal goes through a pidfd taken before the check, so a pid that
/// is reused meanwhile cannot receive it. A master still starting an
/// earlier reload ignores SIGUSR2 (the signal would be lost, and no reload
/// follow): the signal waits until the master handles it again.
fn signal_master(pid_file: &Path, deadline: Instant, timeout: Duration) -> Result<String> {
    let pid = read_pid_file(pid_file)?;
    let pidfd = Pid::from_raw(pid)
        .context("no such pid")
        .and_then(|p| Ok(pidfd_open(p, PidfdFlags::empty())?))
        .with_context(|| format!("no process {pid} (from `{}`)", pid_file.display()))?;
    ensure_haproxy_master(pid).with_context(|| {
        format!(
            "refusing to signal process {pid} from `{}`; nothing was sent",
            pid_file.display()
        )
    })?;
    wait_until_ready(pid, deadline, timeout)?;
    let before = children(pid);
    // The current worker is the youngest: older ones are still draining
    // from earlier reloads, and may exit whenever their clients leave.
    let current = before
        .iter()
        .filter_map(|c| Some((start_time(*c)?, *c)))
        .max()
        .and_then(|(_, c)| Some((c, worker_state(c)?.1)));
    pidfd_send_signal(&pidfd, Signal::USR2).with_context(|| {
        format!(
            "unable to signal HAProxy master {pid} (from `{}`)",
            pid_file.display()
        )
    })?;
    wait_for_new_worker(pid, (&before, current), deadline, timeout)
}

/// The pid in a pid file: one decimal number on its first line.
fn read_pid_file(pid_file: &Path) -> Result<i32> {
    let text = file::read_capped_with(pid_file, file::Links::Follow, 4096)
        .with_context(|| format!("unable to read pid file `{}`", pid_file.display()))?
        .with_context(|| format!("pid file `{}` does not exist", pid_file.display()))?;
    std::str::from_utf8(&text)
        .ok()
        .and_then(|t| t.lines().next())
        .and_then(|l| plain_number(l.trim()))
        .and_then(|p| i32::try_from(p).ok())
        .filter(|p| *p > 1)
        .with_context(|| {
            format!(
                "pid file `{}` holds no pid: {}",
                pid_file.display(),
                quote_bytes(&text)
            )
        })
}

/// Waits until the master handles SIGUSR2. From the moment it re-executes
/// itself for a reload until its main loop runs (the new worker is already
/// forked by then), HAProxy ignores the signal.
fn wait_until_ready(pid: i32, deadline: Instant, timeout: Duration) -> Result<()> {
    while !handles_usr2(pid) {
        ensure!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "HAProxy master {pid} exited before it could be signalled"
        );
        ensure!(
            Instant::now() < deadline,
            "HAProxy master {pid} was still busy with an earlier reload after {:.1}s (it \
             does not handle SIGUSR2 yet); no signal was sent",
            timeout.as_secs_f64()
        );
        thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// After SIGUSR2: success is a child the master did not have `before`. A
/// master that re-executed itself (it stopped handling SIGUSR2 for a
/// while) and handles it again without a new worker refused the config.
fn wait_for_new_worker(
    pid: i32,
    (before, current): (&BTreeSet<i32>, Option<(i32, u32)>),
    deadline: Instant,
    timeout: Duration,
) -> Result<String> {
    let mut reexecuted = false;
    loop {
        thread::sleep(Duration::from_millis(10));
        ensure!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "HAProxy master {pid} exited after SIGUSR2"
        );
        // Read before the children: a master that handles the signal again
        // has forked its new worker already.
        let ready = handles_usr2(pid);
        if let Some(child) = children(pid).into_iter().find(|c| !before.contains(c)) {
            return confirm_loaded(pid, child, current, deadline);
        }
        ensure!(
            !(reexecuted && ready),
            "HAProxy master {pid} refused the new config at reload time: it reloaded and \
             started no new worker, and the old workers keep serving (see its log)"
        );
        reexecuted |= !ready;
        ensure!(
            Instant::now() < deadline,
            "HAProxy master {pid} started no new worker within {:.1}s of SIGUSR2 ({})",
            timeout.as_secs_f64(),
            if reexecuted {
                "it is still loading the new config: a larger --reload-timeout may help"
            } else {
                "it never began the reload: see its log"
            }
        );
    }
}

/// How long a new worker that gives no sign of having loaded may live
/// before it counts as loaded: one that refuses its config exits as soon
/// as it has read it.
const QUIET_WORKER_GRACE: Duration = Duration::from_secs(2);

/// A new worker proves nothing yet from HAProxy 3.1 on: the master forks
/// it *before* it reads the config. It has loaded once it starts its
/// threads, or once the master soft-stops the `current` worker (which
/// loses threads or exits); it refused the config when it exits first. A
/// single-threaded worker beside a current one busy with connections gives
/// no sign: alive after [`QUIET_WORKER_GRACE`], it counts as loaded. (Up to
/// 3.0 the master reads the config first, and the new worker shows its
/// threads at once.)
fn confirm_loaded(
    master: i32,
    child: i32,
    current: Option<(i32, u32)>,
    deadline: Instant,
) -> Result<String> {
    let appeared = Instant::now();
    let loaded = || format!("reloaded HAProxy master {master} with SIGUSR2");
    loop {
        match worker_state(child) {
            Some((true, threads)) if threads > 1 => return Ok(loaded()),
            Some((true, _)) => {}
            _ => bail!(
                "HAProxy master {master} refused the new config at reload time: its new worker \
                 {child} exited, and the old workers keep serving (see its log)"
            ),
        }
        let soft_stopped = |(old, threads): (i32, u32)| {
            worker_state(old).is_none_or(|(running, now)| !running || now < threads)
        };
        if current.is_some_and(soft_stopped) {
            return Ok(loaded());
        }
        if appeared.elapsed() >= QUIET_WORKER_GRACE || Instant::now() >= deadline {
            return Ok(format!(
                "{} (its new worker {child} runs one thread beside busy old workers, so it gave \
                 no sign of having loaded; --master-socket verifies)",
                loaded()
            ));
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// When process `pid` started (clock ticks since boot, `/proc/PID/stat`'s
/// 22nd field).
fn start_time(pid: i32) -> Option<u64> {
    stat_field(pid, START_TIME)
}

/// `/proc/PID/stat`'s fields `ppid` (4th) and `starttime` (22nd), counted
/// from the state (3rd), the first after `(comm)`.
const PPID: usize = 1;
const START_TIME: usize = 19;

/// One field of `/proc/PID/stat`: "pid (comm) state ppid …", where comm may
/// hold anything, so fields are counted after its last `)`.
fn stat_field<T: std::str::FromStr>(pid: i32, after_comm: usize) -> Option<T> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(after_comm)?.parse().ok()
}

/// Whether a process runs (is no zombie) and how many threads it has, from
/// `/proc/PID/status`; `None` once it is gone.
fn worker_state(pid: i32) -> Option<(bool, u32)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let running = !field("State:").is_some_and(|s| s.starts_with('Z'));
    let threads = field("Threads:").and_then(|t| t.parse().ok()).unwrap_or(1);
    Some((running, threads))
}

/// SIGUSR2's bit in the signal masks of `/proc/PID/status`.
const USR2_MASK: u64 = 1 << (libc::SIGUSR2 - 1);

/// Whether process `pid` has a handler for SIGUSR2 now (`SigCgt`).
fn handles_usr2(pid: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    caught_mask(&status).is_some_and(|mask| mask & USR2_MASK != 0)
}

/// The `SigCgt` mask of a `/proc/PID/status` text.
fn caught_mask(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// Checks that `pid` runs an `haproxy` executable and is a master: its
/// parent is not an HAProxy process (a worker's parent is its master).
fn ensure_haproxy_master(pid: i32) -> Result<()> {
    let is_haproxy = |pid: i32| {
        std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .and_then(|exe| exe.file_name().map(|n| n.to_string_lossy().into_owned()))
            .is_some_and(|name| name.starts_with("haproxy"))
    };
    ensure!(
        is_haproxy(pid),
        "process {pid} is not an haproxy executable"
    );
    let parent: i32 = stat_field(pid, PPID)
        .with_context(|| format!("unable to read the parent of process {pid}"))?;
    if parent > 1 && is_haproxy(parent) {
        bail!("process {pid} is an HAProxy worker, not the master (its master is {parent})");
    }
    Ok(())
}

/// Child pids of `pid` (Linux `/proc`); empty if unknown.
fn children(pid: i32) -> BTreeSet<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Startup log lines shown when a reload is refused.
const SHOWN_LOG_LINES: usize = 20;

/// What `show proc` on the master CLI says.
#[derive(Debug, PartialEq)]
pub struct ProcState {
    /// The master's reload counter.
    pub reloads: u64,
    /// Failed reloads since the last good one (a good reload resets it).
    pub failed: u64,
    /// The current workers' pids (not the old ones still draining).
    pub workers: BTreeSet<u32>,
}

/// Parses `show proc`; `None` if there is no master line.
pub fn parse_show_proc(text: &str) -> Option<ProcState> {
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

/// `reload` on the master CLI, confirmed by `show proc`: HAProxy 2.6's
/// `reload` answers nothing, so success is a higher reload counter and a
/// current worker that was not there before; a failure is a higher failed
/// counter. (A successful reload resets the failed counter, so a lower one
/// after an earlier failure is no failure.)
fn master_cli_reload(socket: &Address, deadline: Instant, timeout: Duration) -> Result<String> {
    if super::api::answered_late(socket) {
        bail!("`{socket}` did not answer in time earlier in this run; `reload` was not sent");
    }
    let before = show_proc(socket, deadline)?;
    let answer = socket::exchange_with(socket, "reload", deadline)
        .with_context(|| format!("unable to send `reload` to `{socket}`"))?;
    refused_at_once(socket, &answer)?;
    loop {
        thread::sleep(Duration::from_millis(10));
        // The master re-executes itself: the socket refuses us for a moment.
        let now = show_proc(socket, deadline).ok();
        if let Some(now) = now.filter(|n| n.reloads > before.reloads) {
            ensure!(
                now.failed <= before.failed,
                "HAProxy refused the new config at reload time (master reports \
                 {} failed reloads, was {}); the old workers keep serving",
                now.failed,
                before.failed
            );
            if now.workers.iter().any(|w| !before.workers.contains(w)) {
                return Ok(format!("reloaded HAProxy through `{socket}`"));
            }
        }
        ensure!(
            Instant::now() < deadline,
            "no new HAProxy worker appeared on `{socket}` within {:.1}s of `reload`",
            timeout.as_secs_f64()
        );
    }
}

/// `show proc` on the master CLI, before `deadline`.
fn show_proc(socket: &Address, deadline: Instant) -> Result<ProcState> {
    let text = socket::exchange_with(socket, "show proc", deadline)
        .with_context(|| format!("unable to query master socket `{socket}`"))?;
    parse_show_proc(&text).with_context(|| {
        format!(
            "unexpected `show proc` answer: {}",
            quote_bytes(text.as_bytes())
        )
    })
}

/// From 2.7 on, the master answers `reload` once the new worker is up or
/// has failed: `Success=1` or `Success=0`, then the startup log (2.6 says
/// nothing). A refusal is known at once, with HAProxy's own words.
fn refused_at_once(socket: &Address, answer: &str) -> Result<()> {
    if !answer.lines().any(|l| l.trim() == "Success=0") {
        return Ok(());
    }
    let log: Vec<&str> = answer
        .lines()
        .filter(|l| l.contains("[ALERT]") || l.contains("[WARNING]"))
        .take(SHOWN_LOG_LINES)
        .collect();
    bail!(
        "HAProxy refused the new config at reload time (`reload` on `{socket}` answered \
         Success=0); the old workers keep serving\n{}",
        log.join("\n")
    )
}

/// A pid as a pid file holds it: plain digits, no sign, no leading zero.
fn plain_number(text: &str) -> Option<u32> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    (digits && !text.starts_with('0')).then(|| text.parse().ok())?
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
    fn reads_the_caught_signals() {
        let status = "Name:\thaproxy\nSigBlk:\t0000000000000000\nSigCgt:\t0000000000014a07\n";
        assert_eq!(caught_mask(status), Some(0x14a07));
        assert_ne!(caught_mask(status).unwrap_or(0) & USR2_MASK, 0);
        assert_eq!(caught_mask("garbage"), None);
    }

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

    #[test]
    fn a_run_that_reloads_checks_each_socket_and_names_its_option() {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str| Address::Unix(dir.path().join(name));
        let master = |name: &str| Reload {
            strategy: Strategy::MasterSocket(at(name)),
            timeout: Duration::from_millis(50),
        };
        let stats = |name: &str| {
            RuntimeApi::new(
                super::super::Socket::Stats(at(name)),
                Duration::from_millis(50),
            )
        };
        // No reload: nothing is checked.
        assert!(probe_sockets(Some(&stats("typo")), None).is_ok());
        let err = probe_sockets(None, Some(&master("typo"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "--master-socket `{}`: no such file (check the address, and that HAProxy \
                 runs); the config, its server state and HAProxy were left as they are",
                dir.path().join("typo").display()
            )
        );
        let _live = std::os::unix::net::UnixListener::bind(dir.path().join("live")).unwrap();
        let err = probe_sockets(Some(&stats("typo")), Some(&master("live"))).unwrap_err();
        assert!(err.to_string().starts_with("--stats-socket `"), "{err}");
        assert!(probe_sockets(Some(&stats("live")), Some(&master("live"))).is_ok());
    }
}
