//! `--on-failed verify`: a failed member goes only once HAProxy's own
//! health checks see its server DOWN; a real HAProxy, real HTTP backends.

use std::fmt::Write as _;

use crate::harness::{Call, TestEnv, wait_until};
use crate::live::Pool;

/// `hacfg serf --on-failed verify` through the pool's master socket, as
/// Serf runs it: the event in the environment, the member (its name, and
/// its port as a tag) on stdin.
fn event<'e>(
    env: &'e TestEnv,
    pool: &'e Pool,
    event: &str,
    (name, port): (&str, u16),
    extra: &[&str],
) -> Call<'e> {
    let mut args = pool.runtime_args(extra);
    args.extend(["serf", "--on-failed", "verify"]);
    env.call(&args)
        .env("SERF_EVENT", event)
        .env("SERF_SELF_NAME", "bal")
        .stdin(format!(
            "{name}\t127.0.0.1\tbackend\trole=backend,port={port}\n"
        ))
}

/// Whether HAProxy sees `name` with operational state `op` (0 down, 2 up).
fn seen(pool: &Pool, name: &str, op: u8) -> bool {
    pool.servers()
        .iter()
        .any(|s| s.name == name && s.op_state == op)
}

fn runs(pool: &Pool, name: &str) -> bool {
    pool.servers().iter().any(|s| s.name == name)
}

#[test]
fn a_failed_member_haproxy_sees_up_stays_and_serves_until_its_server_goes_down() {
    let env = TestEnv::new();
    let Some(mut pool) = Pool::backends(&env, &["s1", "s2"])
        .nodes(&["s1", "s2"])
        .start()
    else {
        return;
    };
    assert!(wait_until(10.0, || seen(&pool, "s1", 2) && seen(&pool, "s2", 2)));
    event(&env, &pool, "member-failed", ("s1", pool["s1"].port), &[]).code(0);
    assert!(env.nodes.join("s1").exists(), "the node stays");
    assert!(pool.logged("node `s1` stays: HAProxy's health checks see `nodes/s1` UP"));
    assert!(env.nodes.join(".hacfg.failed").exists());
    assert!(env.output_text().contains("server s1 "));
    let answering = pool.answering(20);
    assert!(
        answering.contains("s1") && answering.contains("s2"),
        "{answering:?}"
    );

    // Its server dies: the worker the handler started removes it (the
    // file is written once HAProxy has taken the change).
    pool.stop("s1");
    assert!(
        wait_until(20.0, || !env.nodes.join("s1").exists()
            && !runs(&pool, "s1")
            && !env.output_text().contains("server s1 ")),
        "the stay did not end:\n{}",
        std::fs::read_to_string(&pool.hacfg_log).unwrap_or_default()
    );
    assert!(pool.logged("watch: removed node `s1`"));
    assert!(!env.output_text().contains("server s1 "));
    assert!(!env.nodes.join(".hacfg.failed").exists());
    assert_eq!(pool.answering(10).into_iter().collect::<Vec<_>>(), ["s2"]);
}

#[test]
fn a_failed_member_whose_server_is_down_goes_at_once() {
    let env = TestEnv::new();
    let Some(mut pool) = Pool::backends(&env, &["s1", "s2"])
        .nodes(&["s1", "s2"])
        .start()
    else {
        return;
    };
    let s1 = ("s1", pool["s1"].port);
    pool.stop("s1");
    assert!(wait_until(10.0, || seen(&pool, "s1", 0)));
    event(&env, &pool, "member-failed", s1, &[]).code(0);
    assert!(!env.nodes.join("s1").exists());
    assert!(pool.logged("failed member `s1` goes: HAProxy sees `nodes/s1` DOWN"));
    assert!(!env.output_text().contains("server s1 "));
    assert!(!env.nodes.join(".hacfg.failed").exists());
}

#[test]
fn a_later_event_removes_a_stay_once_haproxy_sees_it_down() {
    let env = TestEnv::new();
    let Some(mut pool) = Pool::backends(&env, &["s1", "s2", "s3"])
        .nodes(&["s1", "s2"])
        .start()
    else {
        return;
    };
    assert!(wait_until(10.0, || seen(&pool, "s1", 2)));
    // A watch this short ends before the server goes down: the worker
    // leaves the stay to later events.
    let short = ["--check-timeout", "0.1"];
    event(
        &env,
        &pool,
        "member-failed",
        ("s1", pool["s1"].port),
        &short,
    )
    .code(0);
    assert!(env.nodes.join("s1").exists());
    pool.stop("s1");
    assert!(wait_until(10.0, || seen(&pool, "s1", 0)));
    assert!(env.nodes.join("s1").exists(), "the worker watched too long");
    // Any later member event reviews the stay: s3 joins, s1 goes.
    event(&env, &pool, "member-join", ("s3", pool["s3"].port), &short).code(0);
    assert!(env.nodes.join("s3").exists());
    assert!(!env.nodes.join("s1").exists());
    assert!(pool.logged("failed member `s1` goes: HAProxy sees `nodes/s1` DOWN"));
    assert!(!env.nodes.join(".hacfg.failed").exists());
}

#[test]
fn a_member_that_joins_again_ends_its_stay() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1", "s2"])
        .nodes(&["s1", "s2"])
        .start()
    else {
        return;
    };
    assert!(wait_until(10.0, || seen(&pool, "s1", 2)));
    let short = ["--check-timeout", "0.1"];
    event(
        &env,
        &pool,
        "member-failed",
        ("s1", pool["s1"].port),
        &short,
    )
    .code(0);
    assert!(env.nodes.join(".hacfg.failed").exists());
    event(&env, &pool, "member-join", ("s1", pool["s1"].port), &short).code(0);
    assert!(env.nodes.join("s1").exists());
    assert!(!env.nodes.join(".hacfg.failed").exists());
}

#[test]
fn verify_needs_the_runtime_api() {
    let env = TestEnv::new();
    let err = env
        .call(&["--no-check", "serf", "--on-failed", "verify"])
        .env("SERF_EVENT", "member-failed")
        .stdin("s1\t127.0.0.1\tbackend\trole=backend\n")
        .code(2)
        .stderr;
    assert!(
        err.contains("--on-failed verify asks HAProxy's health checks"),
        "{err}"
    );
    env.call(&["--no-check", "sync", "--on-failed", "verify"])
        .code(2);
}

/// A socket in front of `upstream` that answers each connection only after
/// `delay`: an HAProxy too busy to answer within `--socket-timeout`.
fn slow_socket(env: &TestEnv, upstream: &std::path::Path, delay: f64) -> std::path::PathBuf {
    use std::os::unix::net::{UnixListener, UnixStream};
    let path = env.path("slow.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let upstream = upstream.to_path_buf();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut client) = conn else { return };
            let upstream = upstream.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_secs_f64(delay));
                let Ok(mut server) = UnixStream::connect(&upstream) else {
                    return;
                };
                let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else {
                    return;
                };
                std::thread::spawn(move || std::io::copy(&mut c2, &mut s2));
                let _ = std::io::copy(&mut server, &mut client);
            });
        }
    });
    path
}

#[test]
fn no_answer_from_haproxy_keeps_every_failed_member() {
    let env = TestEnv::new();
    let names = ["s1", "s2", "s3"];
    let Some(pool) = Pool::backends(&env, &names).nodes(&names).start() else {
        return;
    };
    assert!(wait_until(10.0, || names.iter().all(|n| seen(&pool, n, 2))));
    // HAProxy sees every member UP, but answers in 2 s, past the 1 s
    // --socket-timeout: no second opinion, so no member goes.
    let slow = slow_socket(&env, &pool.master_socket, 2.0);
    let log = pool.hacfg_log.display().to_string();
    let mut args = pool.args(&[]);
    let slow = slow.display().to_string();
    args.extend(["--reload", "--master-socket", &slow, "--log-file", &log]);
    args.extend(["--socket-timeout", "1", "--check-timeout", "0.1"]);
    args.extend(["serf", "--on-failed", "verify"]);
    let lines: Vec<String> = names
        .iter()
        .map(|n| {
            format!(
                "{n}\t127.0.0.1\tbackend\trole=backend,port={}",
                pool[*n].port
            )
        })
        .collect();
    let lines = lines.join("\n") + "\n";
    env.call(&args)
        .env("SERF_EVENT", "member-failed")
        .env("SERF_SELF_NAME", "bal")
        .stdin(lines)
        .code(0)
        .stderr_has("3 failed member(s) stay until HAProxy answers");
    for name in names {
        assert!(env.nodes.join(name).exists(), "{name} was removed");
        assert!(env.output_text().contains(&format!("server {name} ")));
        assert!(runs(&pool, name), "HAProxy lost {name}");
    }
    assert!(pool.logged("3 failed member(s) stay until HAProxy answers"));
    let record = std::fs::read_to_string(env.nodes.join(".hacfg.failed")).unwrap();
    assert!(names.iter().all(|n| record.contains(n)), "{record}");
    assert_eq!(pool.answering(20).len(), 3);
}

/// Failed members that stay are visible (issue 23, item 13): `-q` keeps
/// their warnings off stderr (the log file names each), a batch without it
/// prints one line, and `list`, `status` and the metrics show them;
/// `status` calls a stay past `--check-timeout` drift.
#[test]
fn failed_members_that_stay_are_shown_and_quiet_with_q() {
    let env = TestEnv::new();
    let setup = Pool::backends(&env, &["s1"]).checks_every("500ms");
    let port = setup["s1"].port;
    let lines = |range: std::ops::Range<usize>| -> String {
        let mut text = String::new();
        for i in range {
            let _ = writeln!(
                text,
                "n{i:03}\t127.0.0.1\tbackend\trole=backend,port={port}"
            );
        }
        text
    };
    env.call(&["--no-check", "serf"])
        .env("SERF_EVENT", "member-join")
        .stdin(lines(0..100))
        .code(0);
    let Some(pool) = setup.start() else {
        return;
    };
    let all_up = || (0..100).all(|i| seen(&pool, &format!("n{i:03}"), 2));
    assert!(wait_until(20.0, all_up));
    let metrics = env.path("m.prom").display().to_string();
    let failed = |range, extra: &[&str]| {
        let mut args = pool.runtime_args(&["--check-timeout", "0.1", "--metrics-file"]);
        args.push(&metrics);
        args.extend_from_slice(extra);
        args.extend(["serf", "--on-failed", "verify"]);
        env.call(&args)
            .env("SERF_EVENT", "member-failed")
            .env("SERF_SELF_NAME", "bal")
            .stdin(lines(range))
            .code(0)
    };
    let quiet = failed(0..60, &["-q"]);
    assert_eq!(quiet.stderr, "", "-q printed the stays");
    let loud = failed(60..100, &[]);
    let warnings: Vec<&str> = loud
        .stderr
        .lines()
        .filter(|l| l.contains("warning"))
        .collect();
    assert_eq!(
        warnings,
        [
            "hacfg: warning: member-failed: 40 failed members stay: HAProxy's health checks see \
          their servers UP (--on-failed verify); each goes once they see it DOWN or Serf reaps \
          it (the log file names them, and so do `hacfg list` and `hacfg status`)"
        ]
    );
    assert!(pool.logged("node `n000` stays"));
    assert!(pool.logged("node `n099` stays"));
    // list, list --json, status, status --json and the metrics show all 100.
    let list = env.call(&["list"]).code(0).stdout;
    assert_eq!(list.matches("stays: failed in Serf").count(), 100, "{list}");
    let json = env.call(&["list", "--json"]).code(0).stdout;
    assert_eq!(json.matches("\"stay\": {").count(), 100, "{json}");
    let status = env.call(&pool.runtime_args(&["status"])).code(0).stdout;
    assert_eq!(
        status.matches("stays: failed in Serf, watched").count(),
        100,
        "{status}"
    );
    let json = env.call(&pool.runtime_args(&["status", "--json"]));
    assert_eq!(
        json.code(0).stdout.matches("\"overdue\": false").count(),
        100
    );
    let prom = std::fs::read_to_string(env.path("m.prom")).unwrap();
    assert!(
        prom.contains("\nhacfg_failed_members_staying 100\n"),
        "{prom}"
    );
    // Past --check-timeout, no worker watches them: status says drift.
    let args = pool.runtime_args(&["--check-timeout", "0.1", "status"]);
    let late = env.call(&args).code(8);
    assert!(
        late.stderr
            .contains("100 server(s) of failed members stay past --check-timeout"),
        "{}",
        late.stderr
    );
    assert_eq!(
        late.stdout
            .matches("drift: failed in Serf, kept past --check-timeout")
            .count(),
        100
    );
}
