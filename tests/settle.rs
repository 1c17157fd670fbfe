//! A membership handler never waits for HAProxy: it tells HAProxy and
//! returns, and the detached worker (or any later run) finishes what is
//! due. Real master-worker HAProxy, real HTTP backends, health checks at
//! an interval far longer than a handler takes.

use std::fs;

use std::sync::atomic::Ordering;

use rustix::process::{Pid, Signal, kill_process};

use crate::harness::{TestEnv, free_port, wait_until};
use crate::live::{Pool, Slow};

/// A check interval no handler waits out: a handler that returned while
/// the new server's check is still `INI` did not wait for it.
const INTER: &str = "3s";

fn member(name: &str, endpoint: &str) -> String {
    let (addr, port) = endpoint.rsplit_once(':').expect("endpoint");
    format!("{name}\t{addr}\tbackend\trole=backend,port={port}\n")
}

/// A slow request through HAProxy, in flight on one of `servers`: that
/// server's name, and the request to finish.
fn slow_request(pool: &Pool, servers: &[&str]) -> (String, Slow) {
    let slow = pool.slow();
    let mut busy = None;
    assert!(wait_until(5.0, || {
        busy = servers.iter().find(|s| pool.stat(s, "scur") == "1");
        busy.is_some()
    }));
    (busy.unwrap().to_string(), slow)
}

/// Nothing is left pending and no worker holds the folder.
fn settled(env: &TestEnv) -> bool {
    !env.nodes.join(".hacfg.pending").exists()
}

#[test]
fn a_join_returns_before_the_first_check_and_the_server_then_serves() {
    let env = TestEnv::new();
    let dead = format!("127.0.0.1:{}", free_port());
    let Some(pool) = Pool::backends(&env, &["s1", "s2"])
        .nodes(&["s1"])
        .checks_every(INTER)
        .start()
    else {
        return;
    };
    let stdin = member("s2", &pool["s2"].endpoint()) + &member("dead", &dead);
    let added = if pool.init_state() {
        "runtime: added `nodes/s2`, DOWN until its first health check passes"
    } else {
        "runtime: added `nodes/s2` in drain until its first health check"
    };
    env.call(&pool.runtime_args(&["serf"]))
        .env("SERF_EVENT", "member-join")
        .env("SERF_SELF_NAME", "bal")
        .stdin(stdin)
        .code(0)
        .stderr_has(added);
    // The handler is back; HAProxy has not checked s2 yet, and s2 takes no
    // request until it has: in hacfg's drain (2.6 to 3.0, pending work), or
    // DOWN by HAProxy's init-state (3.1 and later, nothing pending).
    assert_eq!(pool.stat("s2", "check_status"), "INI");
    assert_eq!(pool.stat("s2", "lbtot"), "0");
    if pool.init_state() {
        assert!(pool.stat("s2", "status").starts_with("DOWN"));
        assert!(settled(&env));
    } else {
        assert!(pool.stat("s2", "status").starts_with("DRAIN"));
        env.call(&pool.runtime_args(&["status"]))
            .code(0)
            .stdout_has("pending: waiting for its first check");
    }
    // With no further hacfg call, s2 serves once checked; `dead` failed its
    // check, so it is DOWN and was never chosen.
    assert!(wait_until(30.0, || pool.answering(10).contains("s2")));
    assert!(wait_until(30.0, || settled(&env)), "work is still pending");
    if !pool.init_state() {
        assert!(pool.logged("settle: `nodes/s2` passed its first health check"));
        assert!(pool.logged("settle: added `nodes/dead`, but its first health check failed"));
    }
    assert!(wait_until(30.0, || pool
        .stat("dead", "status")
        .starts_with("DOWN")));
    assert_eq!(
        pool.stat("dead", "lbtot"),
        "0",
        "the dead server was chosen"
    );
    let status = env.call(&pool.runtime_args(&["status"])).code(0).stdout;
    assert!(!status.contains("pending"), "{status}");
    assert_eq!(pool.reloads(), (0, 0));
}

#[test]
fn a_leave_with_a_request_in_flight_returns_at_once_and_the_server_goes_once_idle() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1", "s2"])
        .nodes(&["s1", "s2"])
        .start()
    else {
        return;
    };
    assert!(wait_until(30.0, || pool.answering(10).len() == 2));
    // A slow request on s1, then s1 leaves.
    let before = pool["s1"].hits.load(Ordering::SeqCst);
    let slow = pool.slow();
    assert!(wait_until(5.0, || pool.stat("s1", "scur") == "1"));
    let leave = member("s1", &pool["s1"].endpoint());
    env.call(&pool.runtime_args(&["--drain-timeout", "30", "serf"]))
        .env("SERF_EVENT", "member-leave")
        .env("SERF_SELF_NAME", "bal")
        .stdin(leave)
        .code(0)
        .stderr_has("runtime: drained `nodes/s1`");
    assert!(
        pool.stat("s1", "status").starts_with("DRAIN"),
        "deleted while busy"
    );
    assert_eq!(pool.answering(10), ["s2".to_string()].into());
    assert_eq!(slow.finish(), Ok("s1".to_string()));
    assert_eq!(pool["s1"].hits.load(Ordering::SeqCst), before + 1);
    assert!(wait_until(30.0, || pool
        .servers()
        .iter()
        .all(|l| l.name != "s1")));
    assert!(wait_until(5.0, || pool.logged("settle: removed `nodes/s1` (idle)")));
    assert!(wait_until(5.0, || settled(&env)));
}

#[test]
fn a_re_add_during_a_pending_delete_and_a_remove_during_a_pending_check_end_as_the_files_say() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1", "s2", "s3"])
        .nodes(&["s1", "s2"])
        .checks_every(INTER)
        .start()
    else {
        return;
    };
    assert!(wait_until(30.0, || pool.answering(10).len() == 2));
    // s1 leaves while busy, and comes back before it is idle: hacfg undoes
    // its own drain, and s1 is not deleted when its request ends.
    let (busy, slow) = slow_request(&pool, &["s1", "s2"]);
    let busy = busy.as_str();
    let endpoint = pool[busy].endpoint();
    env.ok(&pool.runtime_args(&["--drain-timeout", "10", "remove", busy]));
    assert!(pool.stat(busy, "status").starts_with("DRAIN"));
    env.ok(&pool.runtime_args(&["add", busy, &endpoint]));
    assert!(pool.logged(&format!(
        "settle: `nodes/{busy}` is in the nodes folder again"
    )));
    assert!(pool.stat(busy, "status").starts_with("UP"));
    assert!(slow.finish().is_ok());
    assert!(wait_until(30.0, || settled(&env)));
    assert!(
        pool.servers().iter().any(|l| l.name == busy),
        "{busy} was deleted"
    );
    // s3 joins and leaves before its first check: it is deleted, never set
    // ready.
    env.ok(&pool.runtime_args(&["add", "s3", &pool["s3"].endpoint()]));
    assert_eq!(pool.stat("s3", "check_status"), "INI");
    env.ok(&pool.runtime_args(&["remove", "s3"]));
    assert!(wait_until(30.0, || pool
        .servers()
        .iter()
        .all(|l| l.name != "s3")));
    assert!(wait_until(30.0, || settled(&env)));
    assert!(!pool.logged("`nodes/s3` passed its first health check"));
    assert_eq!(pool["s3"].hits.load(Ordering::SeqCst), 0);
    env.call(&pool.runtime_args(&["status"])).code(0);
}

#[test]
fn an_operators_maintenance_on_a_settling_server_is_kept() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1", "s2"])
        .nodes(&["s1"])
        .checks_every(INTER)
        .start()
    else {
        return;
    };
    env.ok(&pool.runtime_args(&["add", "s2", &pool["s2"].endpoint()]));
    assert_eq!(pool.stat("s2", "check_status"), "INI");
    // The operator puts s2 in maintenance before hacfg set it ready.
    assert_eq!(pool.command("set server nodes/s2 state maint").trim(), "");
    assert!(wait_until(30.0, || settled(&env)), "work is still pending");
    if !pool.init_state() {
        assert!(pool.logged(
            "settle: `nodes/s2` is in maintenance, set by an operator: hacfg leaves it so"
        ));
    }
    assert!(pool.stat("s2", "status").starts_with("MAINT"));
    // Later runs leave it so too.
    env.ok(&pool.runtime_args(&["render"]));
    assert!(pool.stat("s2", "status").starts_with("MAINT"));
    assert_eq!(pool["s2"].hits.load(Ordering::SeqCst), 0);
}

/// The worker of this test's folder, if one runs: `settle --worker` in
/// its `/proc/*/cmdline`, the folder in its settings (`/proc/*/environ`).
pub(crate) fn worker_of(env: &TestEnv) -> Option<i32> {
    let folder = env.nodes.to_string_lossy().into_owned();
    let words = |path: std::path::PathBuf| -> Option<Vec<String>> {
        let bytes = fs::read(path).ok()?;
        Some(
            bytes
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect(),
        )
    };
    fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
        let args = words(entry.path().join("cmdline"))?;
        let environ = words(entry.path().join("environ"))?;
        let settings = format!("\"nodes_dir\":\"{folder}\"");
        let ours = args.iter().any(|a| a == "--worker")
            && environ
                .iter()
                .any(|v| v.starts_with("HACFG_WORKER_SETTINGS=") && v.contains(&settings));
        ours.then_some(pid)
    })
}

#[test]
fn a_killed_worker_leaves_nothing_the_next_run_cannot_finish() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1", "s2"])
        .nodes(&["s1", "s2"])
        .start()
    else {
        return;
    };
    assert!(wait_until(30.0, || pool.answering(10).len() == 2));
    // A busy server leaves: its worker waits for the request in flight.
    let (busy, slow) = slow_request(&pool, &["s1", "s2"]);
    let busy = busy.as_str();
    env.ok(&pool.runtime_args(&["--drain-timeout", "30", "remove", busy]));
    let mut worker = None;
    assert!(wait_until(5.0, || {
        worker = worker_of(&env);
        worker.is_some()
    }));
    let pid = Pid::from_raw(worker.unwrap()).unwrap();
    kill_process(pid, Signal::KILL).unwrap();
    assert!(wait_until(5.0, || worker_of(&env).is_none()));
    assert!(slow.finish().is_ok());
    // The server stays drained (no request) and recorded as pending.
    assert!(!settled(&env));
    assert!(pool.stat(busy, "status").starts_with("DRAIN"));
    // Any later run finishes it, or starts a worker that does.
    env.ok(&pool.runtime_args(&["render"]));
    assert!(wait_until(30.0, || pool
        .servers()
        .iter()
        .all(|l| l.name != busy)));
    assert!(wait_until(30.0, || settled(&env)));
    env.call(&pool.runtime_args(&["status"])).code(0);
}

/// A server still draining does not hold up later runs, nor is it drained
/// again by each of them: an unrelated idle leave is done by its own run.
#[test]
fn a_still_draining_server_does_not_hold_up_an_unrelated_leave() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1", "s2", "s3"])
        .nodes(&["s1", "s2", "s3"])
        .start()
    else {
        return;
    };
    assert!(wait_until(30.0, || pool.answering(12).len() == 3));
    let (busy, slow) = slow_request(&pool, &["s1", "s2", "s3"]);
    let idle = if busy == "s1" { "s2" } else { "s1" };
    env.ok(&pool.runtime_args(&["--drain-timeout", "30", "remove", &busy]));
    let done = env.call(&pool.runtime_args(&["remove", idle])).code(0);
    done.stderr_has(&format!("settle: removed `nodes/{idle}` (idle)"));
    assert!(
        !done.stderr.contains(&format!("drained `nodes/{busy}`")),
        "{busy} was drained again:\n{}",
        done.stderr
    );
    assert!(pool.stat(&busy, "status").starts_with("DRAIN"));
    assert!(slow.finish().is_ok());
    assert!(wait_until(30.0, || settled(&env)));
    assert_eq!(pool.servers().len(), 1);
}

/// Backends that keep their connections alive leave HAProxy idle
/// connections to a removed server (from 3.3 on, `del server` refuses
/// while they remain): it is still deleted, with no further hacfg call.
#[test]
fn a_server_with_idle_keep_alive_connections_is_still_deleted() {
    let env = TestEnv::new();
    let Some(pool) = Pool::keep_alive_backends(&env, &["s1", "s2"])
        .nodes(&["s1", "s2"])
        .start()
    else {
        return;
    };
    assert!(wait_until(30.0, || pool.answering(20).len() == 2));
    env.ok(&pool.runtime_args(&["--drain-timeout", "30", "remove", "s1"]));
    assert!(
        wait_until(30.0, || pool.servers().iter().all(|l| l.name != "s1")),
        "s1 was never deleted:\n{}",
        fs::read_to_string(&pool.hacfg_log).unwrap_or_default()
    );
    assert!(wait_until(30.0, || settled(&env)));
    assert_eq!(pool.answering(10), ["s2".to_string()].into());
}

/// A `del server` HAProxy refuses for good (another server tracks it)
/// leaves that server drained, not in maintenance, and freezes nothing:
/// later changes still go live.
#[test]
fn a_refused_delete_leaves_the_server_drained_and_freezes_nothing() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1", "s2", "s3"])
        .nodes(&["s1", "s2"])
        .start()
    else {
        return;
    };
    let builtin = include_str!("../templates/haproxy.cfg.j2");
    let template = env.write(
        "tracking.j2",
        &format!("{builtin}\nbackend watch\n    server t1 127.0.0.1:1 track nodes/s2\n"),
    );
    let template = template.to_str().unwrap();
    env.ok(&pool.runtime_args(&["--template", template, "render"]));
    assert!(wait_until(30.0, || pool.answering(10).len() == 2));
    env.call(&pool.runtime_args(&["--template", template, "remove", "s2"]))
        .code(0)
        .stderr_has("HAProxy refused `del server nodes/s2`");
    assert!(
        pool.stat("s2", "status").starts_with("DRAIN"),
        "{}",
        pool.stat("s2", "status")
    );
    assert!(!pool.stat("t1", "status").starts_with("MAINT"));
    env.call(&pool.runtime_args(&["--template", template, "add", "s3", &pool["s3"].endpoint()]))
        .code(0);
    assert!(env.output_text().contains("server s3 "));
    assert!(wait_until(30.0, || pool.answering(20).contains("s3")));
}

/// A server an operator drained before it left is not put back into
/// service when it comes back (hacfg undoes only its own drains).
#[test]
fn an_operators_drain_survives_a_leave_and_a_rejoin() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1", "s2"])
        .nodes(&["s1", "s2"])
        .start()
    else {
        return;
    };
    assert!(wait_until(30.0, || pool.answering(10).len() == 2));
    let (busy, slow) = slow_request(&pool, &["s1", "s2"]);
    let busy = busy.as_str();
    let endpoint = pool[busy].endpoint();
    assert_eq!(
        pool.command(&format!("set server nodes/{busy} state drain"))
            .trim(),
        ""
    );
    env.ok(&pool.runtime_args(&["--drain-timeout", "10", "remove", busy]));
    env.ok(&pool.runtime_args(&["add", busy, &endpoint]));
    assert!(pool.logged("an operator had drained it before it left, so it stays drained"));
    assert!(pool.stat(busy, "status").starts_with("DRAIN"));
    assert!(slow.finish().is_ok());
    assert!(wait_until(30.0, || settled(&env)));
    assert!(pool.stat(busy, "status").starts_with("DRAIN"));
    assert!(pool.servers().iter().any(|l| l.name == busy));
}
