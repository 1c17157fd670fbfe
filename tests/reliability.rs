//! What HAProxy's answers really look like, and what a broken or hostile
//! socket answers: several removals in one run, an answer cut short, names
//! that would smuggle a second command in, addresses HAProxy writes its own
//! way, and a socket that stops answering.

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
