//! `hacfg doctor`: a good setup is all `ok`; each broken part is a `fail`
//! line saying what to do, and the run exits 1. It changes nothing.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use rustix::process::{Pid, Signal, kill_process_group};

use crate::harness::{TestEnv, wait_until};
use crate::live::Pool;

/// Every line of a doctor's report: `ok`, `warn` or `fail`, two spaces,
/// what was checked.
#[track_caller]
fn lines(stdout: &str) -> Vec<&str> {
    let lines: Vec<&str> = stdout.lines().collect();
    for line in &lines {
        assert!(
            ["ok    ", "warn  ", "fail  "]
                .iter()
                .any(|l| line.starts_with(l)),
            "{line:?} in:\n{stdout}"
        );
    }
    lines
}

#[track_caller]
fn has_line(stdout: &str, start: &str, part: &str) {
    assert!(
        lines(stdout)
            .iter()
            .any(|l| l.starts_with(start) && l.contains(part)),
        "no line `{start}…{part}…` in:\n{stdout}"
    );
}

#[test]
fn a_good_setup_is_all_ok() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1"]).nodes(&["s1"]).start() else {
        return;
    };
    // As `hacfg init` makes it.
    fs::set_permissions(&env.nodes, fs::Permissions::from_mode(0o750)).unwrap();
    let admin = env.path("admin.sock").display().to_string();
    let master = pool.master_socket.display().to_string();
    let log = env.path("hacfg.log").display().to_string();
    let args = pool.args(&[
        "--master-socket",
        &master,
        "--stats-socket",
        &admin,
        "--log-file",
        &log,
        "doctor",
    ]);
    let done = env.call(&args).unchanged().code(0);
    let shown = lines(&done.stdout);
    assert!(
        shown.iter().all(|l| l.starts_with("ok ")),
        "{}",
        done.stdout
    );
    for part in [
        "lock free, 1 node",
        "renders the current nodes",
        "`-c` accepts the current output",
        "--master-socket",
        "master CLI: reloads supported (1 worker",
        "--stats-socket",
        "reachable, admin level",
        "state file",
        "log file",
        "worker: no pending runtime work",
    ] {
        has_line(&done.stdout, "ok ", part);
    }
    assert!(done.stderr.is_empty(), "{}", done.stderr);
}

#[test]
fn each_broken_part_is_a_fail_line_saying_what_to_do() {
    let env = TestEnv::new();
    env.ok(&["--no-check", "add", "s1", "10.0.0.1"]);
    // A socket that is not there.
    let nope = env.path("nope.sock").display().to_string();
    let done = env
        .call(&["--master-socket", &nope, "doctor"])
        .unchanged()
        .code(1);
    has_line(
        &done.stdout,
        "fail  --master-socket",
        "no such file; start HAProxy with `-W -S",
    );
    done.stderr_has("hacfg: error: doctor found 1 failure");
    // A template that does not compile.
    let bad = env.write("bad.j2", "{% for n in nodes %}\n");
    let done = env
        .call(&["--template", bad.to_str().unwrap(), "doctor"])
        .unchanged()
        .code(1);
    has_line(&done.stdout, "fail  template: ", "; fix the template");
    // No `haproxy` where the settings say.
    let done = env
        .call(&["--haproxy-bin", "no-such-haproxy", "doctor"])
        .unchanged()
        .code(1);
    has_line(
        &done.stdout,
        "fail  haproxy: ",
        "`no-such-haproxy` not found (--haproxy-bin); install HAProxy, or set --haproxy-bin",
    );
    // No nodes folder.
    let done = env
        .hacfg()
        .args([
            "--nodes-dir",
            &env.path("none").display().to_string(),
            "doctor",
        ])
        .unchanged()
        .code(1);
    has_line(
        &done.stdout,
        "fail  nodes folder",
        "does not exist; create it with `hacfg init`",
    );
}

#[test]
fn a_folder_this_user_cannot_write_is_a_fail_line() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("note: not root; skipping the other-user doctor test");
        return;
    }
    let env = TestEnv::new();
    env.ok(&["--no-check", "add", "s1", "10.0.0.1"]);
    for dir in [env.dir.path(), env.nodes.as_path()] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let done = env.call(&["doctor"]).user(65534, 65534).unchanged().code(1);
    has_line(
        &done.stdout,
        "fail  nodes folder",
        "not writable by this user (uid 65534)",
    );
    has_line(
        &done.stdout,
        "fail  nodes folder",
        "run hacfg as the folder's owner (uid 0)",
    );
    has_line(&done.stdout, "fail  output", "give this user write access");
    // Others may open the folder: a warning, not a failure.
    has_line(
        &done.stdout,
        "warn  nodes folder",
        "others may open it (mode 0755)",
    );
}

/// A held lock is a finding, not a wait of `--lock-timeout` (30 s): the
/// line names the holder, and the template (rendered under that lock) is
/// not tried.
#[test]
fn a_held_lock_is_a_fail_line_naming_the_holder() {
    let env = TestEnv::new();
    env.ok(&["--no-check", "add", "s1", "10.0.0.1"]);
    let holder = env
        .program("flock")
        .arg("-x")
        .arg(&env.nodes)
        .args(["sleep", "60"])
        .spawn();
    let locked = || {
        let free = std::process::Command::new("flock")
            .args(["-n", "-s"])
            .arg(&env.nodes)
            .arg("true")
            .status()
            .expect("flock");
        !free.success()
    };
    assert!(wait_until(10.0, locked), "the holder's lock");
    let done = env.call(&["doctor"]).unchanged().within(20.0).code(1);
    has_line(
        &done.stdout,
        "fail  nodes folder",
        &format!(
            "is still held after 2s: this run went no further (held by PID {} (\"flock\"))",
            holder.id()
        ),
    );
    has_line(
        &done.stdout,
        "fail  nodes folder",
        "find the holder named here",
    );
    assert!(!done.stdout.contains("template"), "{}", done.stdout);
    let _ = kill_process_group(Pid::from_raw(holder.id() as i32).unwrap(), Signal::KILL);
    holder.wait();
    env.call(&["--no-check", "doctor", "--haproxy-bin", "true"])
        .code(0);
}

/// With `--serf`, the agent answers and members carry the role; an agent
/// that does not answer is a fail line saying what to do.
#[test]
fn serf_is_checked_when_asked() {
    let env = TestEnv::new();
    env.ok(&["--no-check", "add", "s1", "10.0.0.1"]);
    let members = r#"{"members":[
      {"name":"bal","addr":"127.0.0.1:7946","tags":{"role":"balancer"},"status":"alive"},
      {"name":"w1","addr":"10.0.0.1:7946","tags":{"role":"backend"},"status":"alive"}]}"#;
    let fake = env.write(
        "fake-serf",
        &format!("#!/bin/sh\ncat <<'EOF'\n{members}\nEOF\n"),
    );
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let fake = fake.to_str().unwrap();
    let done = env.call(&["doctor", "--serf", "--serf-bin", fake]).run();
    has_line(
        &done.stdout,
        "ok    serf agent",
        "2 members alive, 1 with role backend",
    );
    let done = env
        .call(&[
            "doctor",
            "--serf-bin",
            fake,
            "--rpc-addr",
            "127.0.0.1:7373",
            "--role",
            "web",
        ])
        .run();
    has_line(
        &done.stdout,
        "warn  serf agent `127.0.0.1:7373`",
        "0 with role web; tag the backends' agents `-tag role=web`",
    );
    let missing = env.path("no-serf").display().to_string();
    let done = env
        .call(&["doctor", "--serf", "--serf-bin", &missing])
        .code(1);
    has_line(
        &done.stdout,
        "fail  serf agent",
        "start the agent, or set --rpc-addr",
    );
    // Not asked: no line.
    let done = env.call(&["doctor", "--serf-bin", &missing]).run();
    assert!(!done.stdout.contains("serf agent"), "{}", done.stdout);
}
