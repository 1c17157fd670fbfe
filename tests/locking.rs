//! The folder lock has a deadline: whoever holds it (a stranger's `flock`,
//! a stopped run), a run waits at most `--lock-timeout`, then exits 10
//! naming the holder, changes nothing, and the next run after the release
//! converges.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use rustix::process::{Pid, Signal, kill_process_group};

use crate::harness::{TestEnv, wait_until};

/// Whether someone holds the folder's lock (a try that fails at once).
fn locked(dir: &std::path::Path) -> bool {
    let free = Command::new("flock")
        .args(["-n", "-x"])
        .arg(dir)
        .arg("true")
        .status()
        .expect("flock");
    !free.success()
}

#[test]
fn a_strangers_flock_costs_a_run_its_deadline_then_exit_10() {
    let env = TestEnv::new();
    env.ok(&["add", "s1", "10.0.0.1"]);
    // A folder others may open (as one made before `init` made it 0750):
    // any local user can flock it with read access alone.
    for dir in [env.path(""), env.nodes.clone()] {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let stranger = env
        .program("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "flock",
            "-x",
        ])
        .arg(&env.nodes)
        .args(["sleep", "60"])
        .spawn();
    assert!(
        wait_until(10.0, || locked(&env.nodes)),
        "the stranger's lock"
    );
    let done = env
        .call(&["--lock-timeout", "1", "add", "s2", "10.0.0.2"])
        .unchanged()
        .within(10.0)
        .code(10);
    let holder = format!("held by PID {} (\"flock\")", stranger.id());
    assert!(done.stderr.contains(&holder), "{}", done.stderr);
    assert!(
        done.stderr
            .contains("is still held after 1s: this run went no further")
    );
    assert!(done.elapsed.as_secs_f64() < 5.0, "{:?}", done.elapsed);
    // Reading waits too, as long and no longer.
    env.call(&["--lock-timeout", "0.2", "list"])
        .within(10.0)
        .code(10);
    let _ = kill_process_group(Pid::from_raw(stranger.id() as i32).unwrap(), Signal::KILL);
    stranger.wait();
    env.ok(&["add", "s2", "10.0.0.2"]);
    assert_eq!(env.servers(), ["s1 10.0.0.1:3000", "s2 10.0.0.2:3000"]);
}

#[test]
fn a_stopped_run_holding_the_lock_costs_the_next_one_its_deadline() {
    let env = TestEnv::new();
    env.ok(&["add", "s1", "10.0.0.1"]);
    // A render whose check hangs holds the exclusive lock; it is stopped.
    let stuck = env
        .call(&["--check-cmd", "sleep 60; true {}", "--force", "render"])
        .within(120.0)
        .spawn();
    let pid = Pid::from_raw(stuck.id() as i32).unwrap();
    assert!(
        wait_until(10.0, || locked(&env.nodes)),
        "the stuck run's lock"
    );
    kill_process_group(pid, Signal::STOP).unwrap();
    // The log lives outside the temp tree `unchanged` compares.
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("hacfg.log");
    let done = env
        .call(&[
            "--lock-timeout",
            "0.5",
            "--log-file",
            log.to_str().unwrap(),
            "serf",
        ])
        .env("SERF_EVENT", "member-join")
        .stdin("s2\t10.0.0.2\tbackend\trole=backend\n")
        .unchanged()
        .within(10.0)
        .code(10);
    let holder = format!("held by PID {} (\"hacfg\")", stuck.id());
    assert!(done.stderr.contains(&holder), "{}", done.stderr);
    assert!(!env.nodes.join("s2").exists());
    // The log file has the line too (Serf throws stderr away).
    let logged = fs::read_to_string(&log).unwrap();
    assert!(logged.contains(&holder), "{logged}");
    let _ = kill_process_group(pid, Signal::KILL);
    let _ = kill_process_group(pid, Signal::CONT);
    stuck.wait();
    env.call(&["serf"])
        .env("SERF_EVENT", "member-join")
        .stdin("s2\t10.0.0.2\tbackend\trole=backend\n")
        .code(0);
    assert_eq!(env.servers(), ["s1 10.0.0.1:3000", "s2 10.0.0.2:3000"]);
}
