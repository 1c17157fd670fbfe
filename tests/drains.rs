//! hacfg's own drains, under real HTTP through a real master-worker
//! HAProxy: a removal never empties a backend while its new servers wait
//! for their first check (make before break), a first-check drain never
//! outlives hacfg in the server-state file, and a dead worker's work is
//! shown as drift and finished by the next run.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process};

use crate::harness::{TestEnv, free_port, wait_until};
use crate::live::{Pool, Traffic};
use crate::settle::worker_of;

/// Checks slow enough that a new server waits for its first one well
/// after the handler that added it returned.
const INTER: &str = "3s";

fn member(name: &str, endpoint: &str) -> String {
    let (addr, port) = endpoint.rsplit_once(':').expect("endpoint");
    format!("{name}\t{addr}\tbackend\trole=backend,port={port}\n")
}

/// Whether HAProxy still runs `name`.
fn runs(pool: &Pool, name: &str) -> bool {
    pool.servers().iter().any(|l| l.name == name)
}

/// The process holding the folder's worker lock, by `/proc/locks`: the
/// worker at work (one just started may not hold it yet, and one that
/// finds it held gives way).
fn lock_holder(env: &TestEnv) -> Option<i32> {
    use std::os::unix::fs::MetadataExt;
    let inode = fs::metadata(env.nodes.join(".hacfg.worker.lock"))
        .ok()?
        .ino();
    let locks = fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let at = f.iter().position(|w| w.matches(':').count() == 2)?;
        let ours = f[at].rsplit(':').next()?.parse::<u64>().ok()? == inode;
        ours.then(|| f.get(at - 1)?.parse().ok()).flatten()
    })
}

/// Kills every worker of the folder until none is left (the one at work,
/// and one started later that would take over from it).
fn kill_workers(env: &TestEnv) -> bool {
    wait_until(5.0, || match worker_of(env) {
        Some(pid) => {
            let _ = kill_process(Pid::from_raw(pid).unwrap(), Signal::KILL);
            false
        }
        None => true,
    })
}

/// A rolling deploy of the only server: the new member joins, the old one
/// leaves at once. The old one serves until the new one is UP: no request
/// fails, although the new one waits for its first check.
#[test]
fn replacing_the_only_server_under_traffic_fails_no_request() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["old", "new"])
        .nodes(&["old"])
        .checks_every(INTER)
        .start()
    else {
        return;
    };
    assert!(wait_until(30.0, || pool.answering(5).contains("old")));
    let traffic = Traffic::start(pool.port);
    std::thread::sleep(Duration::from_millis(200));
    env.ok(&pool.runtime_args(&["add", "new", &pool["new"].endpoint()]));
    env.call(&pool.runtime_args(&["remove", "old"]))
        .code(0)
        .stderr_has("runtime: kept `nodes/old` serving");
    // The new server has not been checked yet: the old one serves on, and
    // `status` says so without calling it drift.
    assert_eq!(pool.stat("new", "check_status"), "INI");
    assert!(pool.stat("old", "status").starts_with("UP"));
    env.call(&pool.runtime_args(&["status"]))
        .code(0)
        .stdout_has("pending: serving until a replacement is UP");
    // Once the new one is UP, the old one drains and goes, with no call.
    assert!(wait_until(30.0, || !runs(&pool, "old")), "old never left");
    std::thread::sleep(Duration::from_millis(300));
    let (ok, failed) = traffic.finish();
    assert!(ok > 20, "too little traffic to mean anything: {ok}");
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    assert!(pool["new"].hits.load(Ordering::SeqCst) > 0);
    assert!(pool.logged("settle: drained `nodes/old`, kept serving until now"));
    assert!(wait_until(30.0, || !env
        .nodes
        .join(".hacfg.pending")
        .exists()));
    env.call(&pool.runtime_args(&["status"])).code(0);
}

/// An HTTP server answering `late` on `port`, started after the node that
/// names it (an app that starts after its member joined); stopped when
/// dropped.
struct Late {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Late {
    fn start(port: u16) -> Late {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the late app");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let mut buf = [0u8; 4096];
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let n = conn.read(&mut buf).unwrap_or(0);
                let body = if buf[..n].starts_with(b"HEAD") {
                    ""
                } else {
                    "late"
                };
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\n{body}"
                );
                let _ = conn.write_all(reply.as_bytes());
            }
        });
        Late { port, stop }
    }
}

impl Drop for Late {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// A rolling deploy whose new app starts after its first check: the new
/// server is DOWN, and the old one serves until the new one comes UP.
#[test]
fn the_old_server_serves_until_a_late_replacement_comes_up() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["old"])
        .nodes(&["old"])
        .checks_every("500ms")
        .start()
    else {
        return;
    };
    assert!(wait_until(30.0, || pool.answering(5).contains("old")));
    let port = free_port();
    let traffic = Traffic::start(pool.port);
    env.ok(&pool.runtime_args(&["add", "new", &format!("127.0.0.1:{port}")]));
    env.ok(&pool.runtime_args(&["remove", "old"]));
    // Its first check failed: DOWN, and the old one still serves.
    assert!(wait_until(30.0, || pool
        .stat("new", "status")
        .starts_with("DOWN")
        && pool.stat("new", "check_status").starts_with("L4")));
    std::thread::sleep(Duration::from_millis(1200));
    assert!(pool.stat("old", "status").starts_with("UP"));
    let _late = Late::start(port);
    assert!(wait_until(30.0, || !runs(&pool, "old")), "old never left");
    std::thread::sleep(Duration::from_millis(300));
    let (ok, failed) = traffic.finish();
    assert!(ok > 20, "too little traffic to mean anything: {ok}");
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    assert_eq!(pool.answering(5), ["late".to_string()].into());
}

/// Three of five servers replaced at once by Serf events (three joins,
/// then three leaves): the two that stay serve, and no request fails.
#[test]
fn replacing_three_of_five_servers_at_once_fails_no_request() {
    let env = TestEnv::new();
    let (olds, news) = (["o1", "o2", "o3", "o4", "o5"], ["n1", "n2", "n3"]);
    let all: Vec<&str> = olds.iter().chain(&news).copied().collect();
    let Some(pool) = Pool::backends(&env, &all)
        .nodes(&olds)
        .checks_every(INTER)
        .start()
    else {
        return;
    };
    assert!(wait_until(30.0, || pool.answering(20).len() == 5));
    let traffic = Traffic::start(pool.port);
    std::thread::sleep(Duration::from_millis(200));
    let event = |name: &str, members: String| {
        env.call(&pool.runtime_args(&["serf"]))
            .env("SERF_EVENT", name)
            .env("SERF_SELF_NAME", "bal")
            .stdin(members)
            .code(0);
    };
    let joins: String = news
        .iter()
        .map(|n| member(n, &pool[n].endpoint()))
        .collect();
    event("member-join", joins);
    let leaves: String = olds[..3]
        .iter()
        .map(|n| member(n, &pool[n].endpoint()))
        .collect();
    event("member-leave", leaves);
    assert!(wait_until(30.0, || olds[..3]
        .iter()
        .all(|n| !runs(&pool, n))));
    assert!(wait_until(30.0, || pool.answering(30).len() == 5));
    let (ok, failed) = traffic.finish();
    assert!(ok > 20, "too little traffic to mean anything: {ok}");
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
}

/// A failed member is dead: its server is drained at once even while its
/// replacement waits for its first check (nothing would answer there).
#[test]
fn a_failed_member_is_never_kept_serving() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["old", "new"])
        .nodes(&["old"])
        .checks_every("3s")
        .start()
    else {
        return;
    };
    env.ok(&pool.runtime_args(&["add", "new", &pool["new"].endpoint()]));
    let done = env
        .call(&pool.runtime_args(&["serf", "--on-failed", "remove"]))
        .env("SERF_EVENT", "member-failed")
        .env("SERF_SELF_NAME", "bal")
        .stdin(member("old", &pool["old"].endpoint()))
        .code(0);
    assert!(!done.stderr.contains("kept"), "{}", done.stderr);
    assert!(!runs(&pool, "old") || pool.stat("old", "status").starts_with("DRAIN"));
}

/// The server-state file a reload saves never holds hacfg's drain of a
/// server waiting for its first check: an outside reload later (anyone's
/// `systemctl reload`) leaves that server serving once it was checked.
#[test]
fn an_outside_reload_after_a_first_check_leaves_the_server_serving() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1", "s2"])
        .nodes(&["s1"])
        .checks_every("3s")
        .start()
    else {
        return;
    };
    if pool.init_state() {
        // 3.1 and later: HAProxy keeps a new server DOWN by `init-state`;
        // hacfg sets no drain that a reload could save.
        return;
    }
    env.ok(&pool.runtime_args(&["add", "s2", &pool["s2"].endpoint()]));
    assert!(pool.stat("s2", "status").starts_with("DRAIN"));
    // A reload while s2 waits for its first check saves the live state.
    env.ok(&pool.runtime_args(&["--force", "render"]));
    let state = fs::read_to_string(env.path("server-state")).unwrap();
    let s2: Vec<&str> = state
        .lines()
        .find(|l| l.split_whitespace().nth(3) == Some("s2"))
        .expect("s2 in the state file")
        .split_whitespace()
        .collect();
    assert_eq!(s2[6], "0", "hacfg's drain saved as state: {state}");
    assert!(wait_until(30.0, || pool.answering(10).contains("s2")));
    // Anyone's reload: the master is told to reload, hacfg is not run.
    let master: i32 = fs::read_to_string(&pool.pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let reloads = pool.reloads().0;
    kill_process(Pid::from_raw(master).unwrap(), Signal::USR2).unwrap();
    assert!(wait_until(30.0, || pool.reloads().0 > reloads));
    assert!(
        wait_until(30.0, || pool.answering(10).contains("s2")),
        "s2 came back drained: {}",
        pool.stat("s2", "status")
    );
    env.call(&pool.runtime_args(&["status"])).code(0);
}

/// A worker killed while a new server waits leaves it drained: `status`
/// calls that drift (exit 8) once no worker is at work, and the next run
/// finishes the due work at once.
#[test]
fn a_killed_workers_due_work_is_drift_and_the_next_run_finishes_it() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1", "s2"])
        .nodes(&["s1"])
        .checks_every(INTER)
        .start()
    else {
        return;
    };
    if pool.init_state() {
        // 3.1 and later: an add leaves HAProxy's init-state, no work and no
        // worker (a kept server's worker is killed in the test below).
        return;
    }
    env.ok(&pool.runtime_args(&["--check-timeout", "60", "add", "s2", &pool["s2"].endpoint()]));
    let mut worker = None;
    assert!(wait_until(5.0, || {
        worker = worker_of(&env);
        worker.is_some()
    }));
    kill_process(Pid::from_raw(worker.unwrap()).unwrap(), Signal::KILL).unwrap();
    assert!(wait_until(5.0, || worker_of(&env).is_none()));
    assert!(wait_until(30.0, || pool.stat("s2", "check_status") == "L7OK"));
    assert!(pool.stat("s2", "status").starts_with("DRAIN"));
    env.call(&pool.runtime_args(&["status"]))
        .code(8)
        .stdout_has("no worker at work");
    // By hand, `settle` finishes it at once: its check has run.
    env.call(&pool.runtime_args(&["settle"]))
        .code(0)
        .stderr_has("settle: `nodes/s2` passed its first health check (L7OK): it serves");
    assert!(pool.stat("s2", "status").starts_with("UP"));
    env.call(&pool.runtime_args(&["status"])).code(0);
}

/// A worker killed while it keeps the only server serving: `status` calls
/// that drift once no worker is at work, and `hacfg settle` drains the old
/// server once its replacement is UP. On every version: the replacement
/// waits in hacfg's drain (2.6 to 3.0) or DOWN by HAProxy's `init-state`
/// (3.1 and later).
#[test]
fn a_killed_workers_kept_server_is_drift_and_settle_drains_it() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["old", "new"])
        .nodes(&["old"])
        .checks_every("3s")
        .start()
    else {
        return;
    };
    assert!(wait_until(30.0, || pool.answering(5).contains("old")));
    env.ok(&pool.runtime_args(&["add", "new", &pool["new"].endpoint()]));
    env.call(&pool.runtime_args(&["remove", "old"]))
        .code(0)
        .stderr_has("runtime: kept `nodes/old` serving");
    assert!(wait_until(5.0, || lock_holder(&env).is_some()));
    assert!(kill_workers(&env), "a worker outlived SIGKILL");
    assert!(wait_until(30.0, || pool.stat("new", "check_status") == "L7OK"));
    // No one drained it: the old server still serves.
    assert!(pool.stat("old", "status").starts_with("UP"));
    env.call(&pool.runtime_args(&["status"]))
        .code(8)
        .stdout_has("no worker at work");
    env.call(&pool.runtime_args(&["settle"]))
        .code(0)
        .stderr_has("settle: drained `nodes/old`, kept serving until now");
    assert!(wait_until(30.0, || !runs(&pool, "old")), "old never left");
    assert_eq!(pool.answering(5), ["new".to_string()].into());
    env.call(&pool.runtime_args(&["status"])).code(0);
}

/// `hacfg settle` by hand while a worker holds the work says so, naming it.
#[test]
fn settle_by_hand_names_the_worker_at_work() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1", "s2"])
        .nodes(&["s1"])
        .checks_every("3s")
        .start()
    else {
        return;
    };
    if pool.init_state() {
        // 3.1 and later: an add leaves no work, so no worker to name.
        return;
    }
    env.ok(&pool.runtime_args(&["add", "s2", &pool["s2"].endpoint()]));
    let mut worker = None;
    assert!(wait_until(5.0, || {
        worker = lock_holder(&env);
        worker.is_some()
    }));
    let said = format!("settle: worker PID {} ", worker.unwrap());
    env.call(&pool.runtime_args(&["settle"]))
        .code(0)
        .stderr_has(&said)
        .stderr_has("holds the pending work");
}

/// A server waiting for its first check, moved to a new address: the
/// worker waits for the check there (no pass until it has a result), and
/// a check that passes is no failure.
#[test]
fn a_waiting_server_moved_to_a_new_address_is_waited_for_quietly() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1", "s2", "s3"])
        .nodes(&["s1"])
        .checks_every(INTER)
        .start()
    else {
        return;
    };
    env.ok(&pool.runtime_args(&["add", "s2", &pool["s2"].endpoint()]));
    env.ok(&pool.runtime_args(&["-v", "add", "s2", &pool["s3"].endpoint()]));
    assert!(wait_until(30.0, || pool.answering(10).contains("s3")));
    let log = fs::read_to_string(&pool.hacfg_log).unwrap_or_default();
    assert!(!log.contains("first health check failed"), "{log}");
}
