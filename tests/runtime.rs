//! Hitless apply through HAProxy's runtime API, against a real master-worker
//! HAProxy with real HTTP backends: no reload, no failed request, no request
//! to a server that is not ready or is leaving.

use std::fs;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::harness::{TestEnv, free_port, wait_until};
use crate::live::{Haproxy, Pool, Traffic};

#[track_caller]
fn names(hap: &Haproxy) -> Vec<String> {
    let mut n: Vec<String> = hap.servers().into_iter().map(|l| l.name).collect();
    n.sort();
    n
}

#[test]
fn adds_and_removes_at_runtime_under_traffic_without_a_reload() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1", "s2"]).nodes(&["s1"]).start() else {
        return;
    };
    let traffic = Traffic::start(pool.port);
    let started = Instant::now();
    for _ in 0..50 {
        env.ok(&pool.runtime_args(&["-q", "add", "s2", &pool["s2"].endpoint()]));
        env.ok(&pool.runtime_args(&["-q", "remove", "s2"]));
    }
    let took = started.elapsed();
    let (ok, failed) = traffic.finish();
    eprintln!("100 runtime changes in {took:?}: {ok} requests ok, {failed} failed");
    assert_eq!(pool.reloads(), (0, 0), "a runtime change reloaded");
    assert!(ok > 100, "too little traffic to mean anything: {ok}");
    assert_eq!(failed, 0);
    // Added once more, s2 is put into service by the worker after its
    // first check, with no further hacfg call.
    env.ok(&pool.runtime_args(&["add", "s2", &pool["s2"].endpoint()]));
    assert_eq!(names(&pool), ["s1", "s2"]);
    assert!(
        wait_until(10.0, || pool.answering(10).contains("s2")),
        "s2 never got traffic"
    );
    assert!(pool["s2"].hits.load(Ordering::SeqCst) > 0);
    // The file matches the live servers, nothing pending: `status` says so.
    let mut status = String::new();
    let settled = wait_until(10.0, || {
        status = env.call(&pool.runtime_args(&["status"])).code(0).stdout;
        status.lines().skip(1).all(|l| l.ends_with(" ok"))
    });
    assert!(settled, "{status}");
    assert_eq!(status.lines().count(), 3, "{status}");
}

#[test]
fn a_request_in_flight_to_a_removed_server_completes() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1", "s2"]).nodes(&["s1"]).start() else {
        return;
    };
    // A slow request lands on s1, the only server.
    let slow = pool.slow();
    assert!(wait_until(5.0, || pool["s1"].hits.load(Ordering::SeqCst) == 1));
    env.ok(&pool.runtime_args(&["add", "s2", &pool["s2"].endpoint()]));
    assert!(wait_until(10.0, || pool.stat("s2", "status") == "UP"));
    let hits = pool["s1"].hits.load(Ordering::SeqCst);
    let done = env
        .call(&pool.runtime_args(&["--drain-timeout", "30", "remove", "s1"]))
        .code(0);
    // hacfg did not wait: s1 is still there, drained, its request in flight.
    done.stderr_has("runtime: drained `nodes/s1`");
    assert!(pool.stat("s1", "status").starts_with("DRAIN"));
    assert_eq!(slow.finish(), Ok("s1".to_string()));
    // New requests never reached s1 once hacfg acted; the worker deleted
    // it once idle, with no further hacfg call.
    assert_eq!(pool.answering(20), ["s2".to_string()].into());
    assert_eq!(pool["s1"].hits.load(Ordering::SeqCst), hits);
    assert!(wait_until(10.0, || names(&pool) == ["s2"]));
    assert!(wait_until(5.0, || pool.logged("settle: removed `nodes/s1` (idle)")));
    assert_eq!(pool.reloads(), (0, 0));

    // A short drain deadline leaves a busy server drained, not cut: a later
    // run deletes it.
    env.ok(&pool.runtime_args(&["add", "s1", &pool["s1"].endpoint()]));
    assert!(wait_until(10.0, || pool.stat("s1", "status") == "UP"));
    env.ok(&pool.runtime_args(&["remove", "s2"]));
    let slow = pool.slow();
    assert!(wait_until(5.0, || pool.stat("s1", "scur") == "1"));
    env.call(&pool.runtime_args(&["--drain-timeout", "0.2", "remove", "s1"]))
        .code(0);
    assert!(wait_until(5.0, || pool.logged(
        "settle: `nodes/s1` still had requests in flight at --drain-timeout"
    )));
    // Past its deadline, `status` says so (exit 8).
    env.call(&pool.runtime_args(&["status"]))
        .code(8)
        .stdout_has("drained by hacfg past its deadline");
    assert_eq!(slow.finish(), Ok("s1".to_string()), "a session was cut");
    assert_eq!(names(&pool), ["s1"]);
    env.call(&pool.runtime_args(&["render"]))
        .code(0)
        .stderr_has("settle: removed `nodes/s1` (idle)");
    assert_eq!(names(&pool), Vec::<String>::new());
}

#[test]
fn a_new_server_whose_port_refuses_never_gets_a_request() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1"]).nodes(&["s1"]).start() else {
        return;
    };
    let closed = format!("127.0.0.1:{}", free_port());
    let traffic = Traffic::start(pool.port);
    env.ok(&pool.runtime_args(&["add", "dead", &closed]));
    std::thread::sleep(Duration::from_millis(500));
    let (ok, failed) = traffic.finish();
    assert!(ok > 10, "{ok}");
    assert_eq!(failed, 0);
    assert_eq!(
        pool.stat("dead", "lbtot"),
        "0",
        "the dead server was chosen"
    );
    // Its first check may come a moment later on a loaded machine.
    assert!(
        wait_until(10.0, || pool.stat("dead", "status") == "DOWN"),
        "{}",
        pool.stat("dead", "status")
    );
    assert_eq!(pool.reloads(), (0, 0));
}

#[test]
fn drift_is_reported_and_repaired() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1", "s2"])
        .nodes(&["s1", "s2"])
        .start()
    else {
        return;
    };
    env.call(&pool.runtime_args(&["status"])).code(0);
    // Someone deletes a server and changes a weight behind hacfg's back.
    pool.command("set server nodes/s2 state maint");
    assert!(
        pool.command("del server nodes/s2")
            .contains("Server deleted")
    );
    pool.command("set server nodes/s1 weight 7");
    let done = env.call(&pool.runtime_args(&["status"])).code(8);
    assert!(done.stdout.contains("drift: weight"), "{}", done.stdout);
    assert!(
        done.stdout.contains("drift: not running"),
        "{}",
        done.stdout
    );
    done.stderr_is(
        "hacfg: warning: 2 server(s) differ from the nodes folder (see their rows): `hacfg \
         --reload render` repairs them, with --force when the file is already as rendered; \
         hacfg's own pending work, `hacfg settle`\n",
    );
    let json: serde_json::Value = serde_json::from_str(
        &env.call(&pool.runtime_args(&["status", "--json"]))
            .code(8)
            .stdout,
    )
    .unwrap();
    assert_eq!(json[1]["server"], "s2");
    assert_eq!(json[1]["live"], false);
    // The next run repairs it, though the file itself is unchanged.
    env.call(&pool.runtime_args(&["render"]))
        .code(0)
        .stderr_has("runtime: set `nodes/s1` weight 1")
        .stderr_has("runtime: added `nodes/s2`");
    env.call(&pool.runtime_args(&["status"])).code(0);
    assert_eq!(pool.reloads(), (0, 0), "the repair reloaded");
    // `--force` asks for a reload, runtime API or not.
    env.call(&pool.runtime_args(&["--force", "render"])).code(0);
    assert!(wait_until(5.0, || pool.reloads() == (1, 0)));
    assert!(wait_until(10.0, || pool.answering(20)
        == ["s1".to_string(), "s2".to_string()].into()));
    assert_eq!(pool.reloads(), (1, 0));
}

#[test]
fn weight_and_address_change_at_runtime_and_state_survives_a_reload() {
    let env = TestEnv::new();
    let dead = format!("127.0.0.1:{}", free_port());
    let Some(pool) = Pool::backends(&env, &["s1", "s1-moved"])
        .nodes(&["s1"])
        .node("dead", &dead)
        .start()
    else {
        return;
    };
    // Weight and address: at runtime, no reload.
    env.ok(&pool.runtime_args(&["add", "s1", &pool["s1"].endpoint(), "--weight", "5"]));
    env.ok(&pool.runtime_args(&["add", "s1", &pool["s1-moved"].endpoint(), "--weight", "5"]));
    assert_eq!(pool.reloads(), (0, 0));
    let s1 = pool.servers().into_iter().find(|l| l.name == "s1").unwrap();
    assert_eq!((s1.weight, s1.port), (5, pool["s1-moved"].port));
    assert!(wait_until(5.0, || pool.answering(5).contains("s1-moved")));
    // `dead` is DOWN by its checks; an operator drains s1 for maintenance.
    assert!(wait_until(5.0, || pool.stat("dead", "status") == "DOWN"));
    assert_eq!(pool.command("set server nodes/s1 state drain").trim(), "");
    // A change outside the server lines reloads; the saved state keeps
    // `dead` DOWN right after the reload, before any check could run.
    env.call(&pool.runtime_args(&["--var", "maxconn=5000", "render"]))
        .code(0)
        .stderr_has("reloading: lines other than `server` lines changed");
    assert_eq!(pool.reloads(), (1, 0));
    let after: Vec<(String, u8, u16)> = pool
        .servers()
        .into_iter()
        .map(|l| (l.name, l.op_state, l.weight))
        .collect();
    assert!(after.contains(&("dead".to_string(), 0, 1)), "{after:?}");
    let s1 = pool.servers().into_iter().find(|l| l.name == "s1").unwrap();
    assert_ne!(
        s1.admin_state & 0x08,
        0,
        "s1 is no longer drained after the reload"
    );
    assert_eq!((s1.weight, s1.port), (5, pool["s1-moved"].port));
    assert!(
        fs::read_to_string(env.path("server-state"))
            .unwrap()
            .contains(" dead ")
    );
    // A port that changes in the same reload is not put back from the state.
    env.ok(&[
        "add",
        "s1",
        &pool["s1"].endpoint(),
        "--weight",
        "5",
        "--no-render",
    ]);
    env.ok(&pool.runtime_args(&["--var", "maxconn=6000", "render"]));
    assert_eq!(pool.reloads(), (2, 0));
    let s1 = pool.servers().into_iter().find(|l| l.name == "s1").unwrap();
    assert_eq!(
        s1.port, pool["s1"].port,
        "the old port came back from the state file"
    );
}

#[test]
fn a_runtime_change_haproxy_refuses_changes_nothing() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1", "s2"]).nodes(&["s1"]).start() else {
        return;
    };
    // An intruder added behind hacfg's back holds the id `n2` will want.
    let id = hacfg::testing::stable_id("n2");
    let answer = pool.command(&format!(
        "add server nodes/intruder {} id {id}",
        pool["s2"].endpoint()
    ));
    assert!(answer.contains("New server registered"), "{answer}");
    let file = fs::read(&env.output).unwrap();
    // One batch: a weight change HAProxy takes, then an add it refuses.
    env.ok(&[
        "add",
        "s1",
        &pool["s1"].endpoint(),
        "--weight",
        "9",
        "--no-render",
    ]);
    env.ok(&["add", "n2", &pool["s2"].endpoint(), "--no-render"]);
    // (With `--apply auto`, the default, hacfg would reload instead: see
    // `availability::a_runtime_refusal_reloads_or_waits_without_blocking_later_changes`.)
    env.call(&pool.runtime_args(&["--apply", "runtime", "render"]))
        .code(3)
        .stderr_has("HAProxy refused a runtime change")
        .stderr_has(&format!("custom id {id} already used"));
    assert_eq!(
        fs::read(&env.output).unwrap(),
        file,
        "the file claims a refused change"
    );
    let live: Vec<(String, u16)> = pool
        .servers()
        .into_iter()
        .map(|l| (l.name, l.weight))
        .collect();
    assert_eq!(live, [("s1".to_string(), 1), ("intruder".to_string(), 1)]);
    assert_eq!(pool.reloads(), (0, 0));
    // `--apply runtime` refuses what needs a reload, and changes nothing.
    env.call(&pool.runtime_args(&["--apply", "runtime", "--var", "maxconn=5000", "render"]))
        .code(7)
        .stderr_has("this change needs a reload (lines other than `server` lines changed)");
    assert_eq!(fs::read(&env.output).unwrap(), file);
}

#[test]
fn the_stats_socket_serves_runtime_changes_and_status() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1", "s2"]).nodes(&["s1"]).start() else {
        return;
    };
    let stats = env.path("admin.sock");
    let pid_file = pool.pid_file.to_str().unwrap().to_string();
    let stats_args = |extra: &[&str]| {
        let mut args: Vec<String> = pool.args(&[]).iter().map(|s| (*s).to_string()).collect();
        args.extend(
            [
                "--reload",
                "--pid-file",
                &pid_file,
                "--stats-socket",
                stats.to_str().unwrap(),
            ]
            .map(String::from),
        );
        args.extend(extra.iter().map(|s| (*s).to_string()));
        args
    };
    let add = stats_args(&["add", "s2", &pool["s2"].endpoint()]);
    env.call(&add.iter().map(String::as_str).collect::<Vec<_>>())
        .code(0)
        .stderr_has("applied through the runtime API without a reload");
    assert_eq!(pool.reloads(), (0, 0));
    assert_eq!(names(&pool), ["s1", "s2"]);
    let show = stats_args(&["status", "--json"]);
    let out = env
        .call(&show.iter().map(String::as_str).collect::<Vec<_>>())
        .code(0)
        .stdout;
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.as_array().map(Vec::len), Some(2));
    assert_eq!(rows[1]["live_address"], pool["s2"].endpoint());
}

/// A checked server moved to a new address takes no request there before
/// a check passed at it: moved to a dead port, no client request fails.
#[test]
fn a_moved_server_is_checked_at_its_new_address_before_it_serves() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1", "s2"])
        .nodes(&["s1", "s2"])
        .checks_every("1s")
        .start()
    else {
        return;
    };
    assert!(wait_until(10.0, || pool.answering(10).len() == 2));
    let dead = format!("127.0.0.1:{}", free_port());
    let traffic = Traffic::start(pool.port);
    env.call(&pool.runtime_args(&["add", "s1", &dead]))
        .code(0)
        .stderr_has("DOWN until a health check passes there");
    std::thread::sleep(Duration::from_millis(800));
    let (ok, failed) = traffic.finish();
    assert!(ok > 10, "{ok}");
    assert_eq!(failed, 0, "requests went to the new, dead address");
    assert!(pool.stat("s1", "status").starts_with("DOWN"));
    assert_eq!(pool.reloads(), (0, 0));
}

#[test]
fn a_cookie_is_added_at_runtime_from_3_0_and_by_a_reload_before() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1", "s2"])
        .nodes(&["s1"])
        .server_options("inter 100ms cookie c")
        .start()
    else {
        return;
    };
    let before = pool.reloads().0;
    let s2 = pool["s2"].endpoint();
    let done = env
        .call(&pool.runtime_args(&["-v", "add", "s2", &s2]))
        .code(0);
    assert!(
        wait_until(10.0, || pool.answering(10).contains("s2")),
        "{}",
        done.stderr
    );
    if pool.version() >= (3, 0) {
        assert_eq!(pool.reloads().0, before, "{}", done.stderr);
        done.stderr_has("`add server` takes `cookie`");
    } else {
        assert_eq!(pool.reloads().0, before + 1, "{}", done.stderr);
        done.stderr_has("keyword `cookie` is taken by `add server` only from HAProxy 3.0");
    }
}
