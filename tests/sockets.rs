//! HAProxy's sockets as HAProxy writes them (a path, `ipv4@IP:PORT`,
//! `IP:PORT`), checked before a run touches anything, and the state saved
//! before a reload within `--reload-timeout`.

use std::fs;
use std::net::TcpStream;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use crate::harness::{TestEnv, free_port, wait_until};
use crate::live::{Haproxy, Pool};

/// The pool's `--var`s with HAProxy's stats socket at `socket`.
fn vars_with_stats_socket(hap: &Haproxy, socket: &str) -> Vec<String> {
    hap.vars
        .iter()
        .map(|v| match v.strip_prefix("stats_socket=") {
            Some(_) => format!("stats_socket={socket}"),
            None => v.clone(),
        })
        .collect()
}

fn names(hap: &Haproxy) -> Vec<String> {
    let mut n: Vec<String> = hap.servers().into_iter().map(|l| l.name).collect();
    n.sort();
    n
}

#[test]
fn adds_removes_and_reads_status_through_a_tcp_stats_socket() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1", "s2"]).nodes(&["s1"]).start() else {
        return;
    };
    // HAProxy moves its stats socket to TCP, as the lab's does.
    let port = free_port();
    let vars = vars_with_stats_socket(&pool, &format!("ipv4@127.0.0.1:{port}"));
    let master = pool.master_socket.to_str().unwrap();
    let mut args: Vec<&str> = vars.iter().map(String::as_str).collect();
    args.extend(["--reload", "--master-socket", master, "--force", "render"]);
    env.ok(&args);
    assert!(
        wait_until(10.0, || TcpStream::connect(("127.0.0.1", port)).is_ok()),
        "no stats socket on port {port}:\n{}",
        pool.log()
    );
    let reloads = pool.reloads();
    let pid_file = pool.pid_file.to_str().unwrap();
    let log = pool.hacfg_log.to_str().unwrap();
    let endpoint = pool["s2"].endpoint();
    for socket in [
        format!("ipv4@127.0.0.1:{port}"),
        format!("127.0.0.1:{port}"),
    ] {
        let run = |extra: &[&str]| {
            let mut args: Vec<&str> = vars.iter().map(String::as_str).collect();
            args.extend(["--stats-socket", &socket, "--pid-file", pid_file]);
            args.extend(["--log-file", log, "--reload", "--apply", "runtime"]);
            args.extend_from_slice(extra);
            env.call(&args)
        };
        run(&["add", "s2", &endpoint]).code(0);
        assert_eq!(names(&pool), ["s1", "s2"], "{socket}");
        // The worker, on the same TCP socket, puts s2 into service.
        assert!(
            wait_until(10.0, || pool.answering(10).contains("s2")),
            "s2 never got traffic through {socket}"
        );
        let mut status = String::new();
        let settled = wait_until(10.0, || {
            status = run(&["status"]).run().stdout;
            status.lines().skip(1).all(|l| l.ends_with(" ok")) && status.contains("s2")
        });
        assert!(settled, "{socket}: {status}");
        run(&["remove", "s2"]).code(0);
        assert!(
            wait_until(10.0, || names(&pool) == ["s1"]),
            "{socket}: s2 was never deleted"
        );
        let status = run(&["status"]).code(0).stdout;
        assert!(!status.contains("s2"), "{socket}: {status}");
    }
    assert_eq!(pool.reloads(), reloads, "a runtime change reloaded");
}

/// The output, its `.prev` and the server state file, byte for byte.
fn kept_files(env: &TestEnv) -> Vec<(PathBuf, Vec<u8>)> {
    let prev = PathBuf::from(format!("{}.prev", env.output.display()));
    [env.output.clone(), prev, env.path("server-state")]
        .into_iter()
        .map(|p| {
            let bytes = fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, bytes)
        })
        .collect()
}

#[test]
fn a_mistyped_socket_stops_the_run_before_anything_is_touched() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1", "s2"]).nodes(&["s1"]).start() else {
        return;
    };
    // A reload of hacfg's own: `.prev` and a saved server state exist.
    env.ok(&pool.runtime_args(&["--apply", "reload", "--force", "render"]));
    let before = kept_files(&env);
    let reloads = pool.reloads();
    let closed = format!("127.0.0.1:{}", free_port());
    let output = env.output.to_str().unwrap();
    let pid_file = pool.pid_file.to_str().unwrap();
    for (option, socket, why, command) in [
        (
            "--master-socket",
            "$TMP/typo.sock",
            "no such file",
            "render",
        ),
        (
            "--master-socket",
            "$TMP/typo.sock",
            "no such file",
            "reload",
        ),
        ("--stats-socket", "$TMP/typo.sock", "no such file", "render"),
        ("--stats-socket", output, "not a socket", "render"),
        ("--stats-socket", &closed, "connection refused", "render"),
    ] {
        let tmp = env.dir.path().to_str().unwrap();
        let path = socket.replace("$TMP", tmp);
        let mut args = pool.args(&["--reload", option, &path]);
        if option == "--stats-socket" {
            args.extend(["--pid-file", pid_file]);
        }
        args.extend(["--force", command]);
        let shown = path.replace(tmp, "$TMP");
        env.call(&args)
            .unchanged()
            .code(4)
            .stderr_has(&format!("{option} `{shown}`: {why}"))
            .stderr_has("the config, its server state and HAProxy were left as they are");
        assert_eq!(kept_files(&env), before, "{option} {socket} {command}");
    }
    assert_eq!(
        pool.reloads(),
        reloads,
        "a run with a mistyped socket reloaded"
    );
}

#[test]
fn the_state_saved_before_a_reload_waits_no_longer_than_the_reload() {
    let env = TestEnv::new();
    env.ok(&["add", "s1", "10.0.0.1", "--no-render"]);
    let state = env.state_var();
    env.ok(&["--no-check", "--var", &state, "render"]);
    fs::write(env.path("server-state"), "1\n").unwrap();
    // A master socket that takes connections and never answers.
    let path = env.path("silent.sock");
    let listener = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    let socket = path.to_str().unwrap();
    let args = [
        "--no-check",
        "--var",
        &state,
        "--reload",
        "--master-socket",
        socket,
    ];
    let timeouts = ["--socket-timeout", "5", "--reload-timeout", "1"];
    for command in ["reload", "render"] {
        let mut all = args.to_vec();
        all.extend(timeouts);
        all.extend(["--force", command]);
        env.call(&all)
            .within(20.0)
            .code(4)
            .stderr_has("did not answer `@1 show servers state` in time (1.0s)");
    }
}
