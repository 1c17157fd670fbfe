//! What HAProxy's answers really look like, and what a broken or hostile
//! socket answers: several removals in one run, an answer cut short, names
//! that would smuggle a second command in, addresses HAProxy writes its own
//! way, and a socket that stops answering.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::TestEnv;
use crate::live::{Haproxy, Pool};

#[track_caller]
fn names(hap: &Haproxy) -> Vec<String> {
    let mut n: Vec<String> = hap.servers().into_iter().map(|l| l.name).collect();
    n.sort();
    n
}

fn member(name: &str, endpoint: &str) -> String {
    let (addr, port) = endpoint.rsplit_once(':').expect("endpoint");
    format!("{name}\t{addr}\tbackend\trole=backend,port={port}\n")
}

/// A fake HAProxy socket: each connection's command is recorded and gets
/// `answer(command)`, then the connection closes.
struct FakeSocket {
    path: PathBuf,
    commands: Arc<Mutex<Vec<String>>>,
}

impl FakeSocket {
    fn start(path: PathBuf, answer: impl Fn(&str) -> String + Send + Sync + 'static) -> FakeSocket {
        let listener = UnixListener::bind(&path).expect("bind the fake socket");
        let commands = Arc::new(Mutex::new(Vec::new()));
        let seen = commands.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                // hacfg half-closes once its command is sent.
                let mut command = String::new();
                let _ = conn.read_to_string(&mut command);
                let command = command.trim_end().to_string();
                let reply = answer(&command);
                seen.lock().expect("commands").push(command);
                let _ = conn.write_all(reply.as_bytes());
            }
        });
        FakeSocket { path, commands }
    }

    fn arg(&self) -> &str {
        self.path.to_str().expect("socket path")
    }

    fn commands(&self) -> Vec<String> {
        self.commands.lock().expect("commands").clone()
    }
}

const STATE_HEADER: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state \
    srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status \
    srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id \
    srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr \
    srv_agent_addr srv_agent_port\n";

/// A `show servers state` line of an UP, ready server that matches what
/// the built-in template renders for node `name` at `addr`, port 3000.
fn state_line(backend: &str, name: &str, addr: &str) -> String {
    let id = hacfg::testing::stable_id(name);
    format!("3 {backend} {id} {name} {addr} 2 0 1 1 5 6 3 4 6 0 0 1 - 3000 - 0 0 - - 0\n")
}

/// hacfg arguments for a run against a fake stats socket: no check, a
/// reload command that leaves a mark, the server state saved in the env.
fn fake_args<'a>(env: &TestEnv, socket: &'a FakeSocket, extra: &[&'a str]) -> Vec<String> {
    let mark = env.path("reloaded");
    let mut args: Vec<String> = [
        "--no-check",
        "--reload",
        "--reload-cmd",
        &format!("touch '{}'", mark.display()),
        "--stats-socket",
        socket.arg(),
        "--var",
        &format!("state_file={}", env.path("server-state").display()),
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|s| (*s).to_string()));
    args
}

/// The first render, with the variables of [`fake_args`].
fn first_render(env: &TestEnv) {
    let state_file = format!("state_file={}", env.path("server-state").display());
    // A state file an earlier run saved: stale once this run cannot save.
    std::fs::write(env.path("server-state"), "1\n").unwrap();
    env.ok(&["--no-check", "--var", &state_file, "render"]);
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[test]
fn two_removals_in_one_run_are_deleted_through_either_socket() {
    let env = TestEnv::new();
    let all = ["s1", "s2", "s3", "s4", "s5"];
    let Some(pool) = Pool::backends(&env, &all).nodes(&all).start() else {
        return;
    };
    // Through the master socket: one member-leave with two members.
    let sock = pool.master_socket.to_str().expect("socket path");
    let leave = member("s2", &pool["s2"].endpoint()) + &member("s3", &pool["s3"].endpoint());
    env.call(&pool.args(&["--reload", "--master-socket", sock, "serf"]))
        .env("SERF_EVENT", "member-leave")
        .env("SERF_SELF_NAME", "bal")
        .stdin(leave)
        .code(0)
        .stderr_has("settle: removed `nodes/s2` (idle)")
        .stderr_has("settle: removed `nodes/s3` (idle)");
    assert_eq!(names(&pool), ["s1", "s4", "s5"]);
    assert_eq!(env.servers().len(), 3, "{:?}", env.servers());

    // Through the stats socket: two removals, then one render.
    env.ok(&["remove", "s4", "--no-render"]);
    env.ok(&["remove", "s5", "--no-render"]);
    let stats = env.path("admin.sock");
    let pid_file = pool.pid_file.to_str().expect("pid file");
    env.call(&pool.args(&[
        "--reload",
        "--pid-file",
        pid_file,
        "--stats-socket",
        stats.to_str().expect("socket path"),
        "render",
    ]))
    .code(0)
    .stderr_has("settle: removed `nodes/s4` (idle)")
    .stderr_has("settle: removed `nodes/s5` (idle)");
    assert_eq!(names(&pool), ["s1"]);
    assert_eq!(env.servers(), [format!("s1 {}", pool["s1"].endpoint())]);
    assert_eq!(pool.reloads(), (0, 0), "a runtime removal reloaded");
    assert!(!env.nodes.join(".hacfg.pending").exists());
}

#[test]
fn a_servers_state_cut_short_is_not_taken_for_the_live_servers() {
    let env = TestEnv::new();
    env.ok(&["add", "a", "10.0.0.1", "--no-render"]);
    env.ok(&["add", "b", "10.0.0.2", "--no-render"]);
    first_render(&env);
    // `b` is live, but the answer stops after `a`'s line, at a line's end,
    // without the empty line that ends every answer.
    let cut = STATE_HEADER.to_string() + &state_line("nodes", "a", "10.0.0.1");
    let socket = FakeSocket::start(env.path("cut.sock"), move |command| {
        if command == "show servers state" {
            cut.clone()
        } else {
            "\n".into()
        }
    });
    env.call(&strs(&fake_args(&env, &socket, &["remove", "b"])))
        .code(0)
        .stderr_has("reloading: the runtime API did not answer")
        .stderr_has("cut its answer to `show servers state` short");
    // Taken for the whole state, it made `b` look gone already: the file
    // lost `b` with no reload, and `b` stayed live for good.
    assert!(env.path("reloaded").exists(), "no reload removed `b`");
    assert_eq!(env.servers(), ["a 10.0.0.1:3000"]);
    let sent = socket.commands();
    assert!(sent.iter().all(|c| c == "show servers state"), "{sent:?}");
}

#[test]
fn hostile_live_names_never_reach_a_runtime_command() {
    let env = TestEnv::new();
    env.ok(&["add", "a", "10.0.0.1", "--no-render"]);
    first_render(&env);
    let file = fs::read(&env.output).expect("output");
    // A live server the file does not list, named so that a command
    // naming it becomes two.
    let state = STATE_HEADER.to_string()
        + &state_line("nodes", "a", "10.0.0.1")
        + &state_line("nodes", "x;disable", "10.0.0.9")
        + "\n";
    let socket = FakeSocket::start(env.path("hostile.sock"), move |command| {
        if command == "show servers state" {
            state.clone()
        } else {
            "\n".into()
        }
    });
    env.call(&strs(&fake_args(&env, &socket, &["render"])))
        .code(0)
        .stderr_has(r#"invalid server name "x;disable""#);
    let sent = socket.commands();
    assert!(
        sent.iter().all(|c| !c.contains("x;disable")),
        "a hostile name went into a command: {sent:?}"
    );
    assert_eq!(fs::read(&env.output).expect("output"), file);

    // `show stat` is read by name too (`status`, the settle worker).
    let state = STATE_HEADER.to_string() + &state_line("nodes", "a", "10.0.0.1") + "\n";
    let stat = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,status,check_status\n\
                nodes,a,0,0,0,0,,0,UP,L4OK\n\
                nodes,b;disable,0,0,0,0,,0,UP,L4OK\n\n";
    let socket = FakeSocket::start(env.path("stat.sock"), move |command| {
        if command == "show servers state" {
            state.clone()
        } else {
            stat.into()
        }
    });
    env.call(&["--stats-socket", socket.arg(), "status"])
        .code(1)
        .stderr_has(r#"invalid server name "b;disable""#);
}

#[test]
fn an_address_haproxy_writes_its_own_way_is_no_drift() {
    let env = TestEnv::new();
    // hacfg stores `::127.0.0.11` as `::7f00:b`; HAProxy writes it back as
    // `::127.0.0.11`. The same address, whichever way it is written.
    let Some(pool) = Pool::backends(&env, &["s1"])
        .nodes(&["s1"])
        .node("v6", "[::127.0.0.11]:3000")
        .start()
    else {
        return;
    };
    assert!(env.servers().contains(&"v6 [::7f00:b]:3000".to_string()));
    let v6 = pool.servers().into_iter().find(|l| l.name == "v6");
    assert_eq!(v6.map(|l| l.addr).as_deref(), Some("::127.0.0.11"));
    let sock = pool.master_socket.to_str().expect("socket path");
    let args = |extra: &[&'static str]| {
        let mut args: Vec<String> = pool
            .args(&["--reload", "--master-socket", sock])
            .iter()
            .map(|s| (*s).to_string())
            .collect();
        args.extend(extra.iter().map(|s| (*s).to_string()));
        args
    };
    for _ in 0..2 {
        let done = env.call(&strs(&args(&["-v", "render"]))).code(0);
        assert!(!done.stderr.contains("runtime: set"), "{}", done.stderr);
        done.stderr_has("HAProxy already runs the desired servers");
    }
    env.call(&strs(&args(&["status"]))).code(0).stdout_has("v6");
    // The state saved before a reload keeps it: its address did not change.
    env.call(&strs(&args(&["--force", "render"]))).code(0);
    let saved = fs::read_to_string(env.path("server-state")).expect("server state");
    assert!(saved.contains(" v6 "), "{saved}");
    assert_eq!(pool.reloads(), (1, 0));
}

/// A socket that accepts every connection and answers one byte every
/// 300 ms, for ever; counts the connections.
fn dripping(path: &Path) -> Arc<AtomicUsize> {
    let listener = UnixListener::bind(path).expect("bind");
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                for _ in 0..100 {
                    if conn.write_all(b"#").is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            });
        }
    });
    connections
}

#[test]
fn a_socket_that_did_not_answer_in_time_is_not_asked_again_in_the_run() {
    let env = TestEnv::new();
    env.ok(&["add", "s1", "10.0.0.1", "--no-render"]);
    env.ok(&["--no-check", "render"]);
    let live = env.output_text();
    let path = env.path("drip.sock");
    let connections = dripping(&path);
    let socket = path.to_str().expect("socket path");
    let state_file = format!("state_file={}", env.path("server-state").display());
    // A state file an earlier run saved: stale once this run cannot save.
    std::fs::write(env.path("server-state"), "1\n# saved by an earlier run\n").unwrap();
    // The live servers time out; the reload path would then ask the same
    // socket for the state to save, which waited out a deadline again.
    let done = env
        .call(&[
            "--no-check",
            "--reload",
            "--master-socket",
            socket,
            "--socket-timeout",
            "1",
            "--reload-timeout",
            "1",
            "--var",
            &state_file,
            "add",
            "s2",
            "10.0.0.2",
        ])
        .within(20.0)
        .code(4);
    done.stderr_has("reloading: the runtime API did not answer: unable to read the live servers")
        .stderr_has("`$TMP/drip.sock` did not answer `@1 show servers state` in time")
        .stderr_has(
            "unable to save the server state before the reload: unable to read the live servers \
             from `$TMP/drip.sock`: `$TMP/drip.sock` did not answer in time earlier in this run; \
             `@1 show servers state` was not sent; emptied the old `$TMP/server-state`",
        )
        // Nor is the reload sent to it: one deadline per socket and run.
        .stderr_has(
            "`$TMP/drip.sock` did not answer in time earlier in this run; `reload` was not sent",
        );
    // The live servers only: neither the state to save nor the reload asked.
    assert_eq!(connections.load(Ordering::SeqCst), 1, "{}", done.stderr);
    assert_eq!(env.output_text(), live, "the config was not restored");
    assert_eq!(
        std::fs::read_to_string(env.path("server-state")).unwrap(),
        "1\n",
        "a stale state file was kept"
    );
}
