//! Applying: check, reload, roll back, against a real master-worker HAProxy.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::harness::{TestEnv, wait_until};
use crate::live::{Pool, Traffic};

fn set_of(names: &[&str]) -> std::collections::BTreeSet<String> {
    names.iter().map(std::string::ToString::to_string).collect()
}

/// The built-in template plus a directive HAProxy rejects once there are
/// two nodes or more.
fn breaking_template(env: &TestEnv) -> PathBuf {
    let builtin = include_str!("../templates/haproxy.cfg.j2");
    env.write(
        "breaking.j2",
        &format!(
            "{builtin}{{% if nodes | length > 1 %}}\n    no_such_keyword here\n{{% endif %}}\n"
        ),
    )
}

#[test]
fn master_socket_reload_moves_traffic() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1", "s2"]).start() else {
        return;
    };
    let sock = pool.master_socket.to_str().unwrap().to_string();
    let reload = ["--reload", "--apply", "reload", "--master-socket", &sock];
    let started = Instant::now();
    env.ok(&pool.args(&[&reload[..], &["add", "s1", &pool["s1"].endpoint()]].concat()));
    eprintln!(
        "add + check + reload (master socket): {:?}",
        started.elapsed()
    );
    env.ok(&pool.args(&[&reload[..], &["add", "s2", &pool["s2"].endpoint()]].concat()));
    assert_eq!(pool.reloads(), (2, 0));
    assert_eq!(pool.answering(20), set_of(&["s1", "s2"]));

    env.ok(&pool.args(&[&reload[..], &["remove", "s1"]].concat()));
    let hits = pool["s1"].hits.load(Ordering::SeqCst);
    assert_eq!(pool.answering(20), set_of(&["s2"]));
    assert_eq!(
        pool["s1"].hits.load(Ordering::SeqCst),
        hits,
        "removed node got traffic"
    );
    assert!(env.output.with_extension("cfg.prev").exists());
}

#[test]
fn signal_and_command_strategies_reload() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1", "s2"]).start() else {
        return;
    };
    let pid_file = pool.pid_file.to_str().unwrap().to_string();

    env.ok(&pool.args(&[
        "--reload",
        "--pid-file",
        &pid_file,
        "add",
        "s1",
        &pool["s1"].endpoint(),
    ]));
    assert_eq!(pool.reloads().0, 1);
    assert_eq!(pool.answering(10), set_of(&["s1"]));

    let cmd = format!("kill -USR2 $(cat '{pid_file}')");
    env.ok(&pool.args(&[
        "--reload",
        "--reload-cmd",
        &cmd,
        "add",
        "s2",
        &pool["s2"].endpoint(),
    ]));
    assert!(wait_until(5.0, || pool.reloads().0 == 2));
    assert!(wait_until(5.0, || pool.answering(10) == set_of(&["s1", "s2"])));
}

#[test]
fn rejected_config_changes_nothing_live() {
    let env = TestEnv::new();
    let pool = Pool::backends(&env, &["s1", "s2"]);
    let tmpl = breaking_template(&env);
    let tmpl = tmpl.to_str().unwrap();
    env.ok(&[
        "--template",
        tmpl,
        "add",
        "s1",
        &pool["s1"].endpoint(),
        "--no-render",
    ]);
    let Some(pool) = pool.start() else {
        return;
    };
    let sock = pool.master_socket.to_str().unwrap();
    let live = fs::read(&env.output).unwrap();
    let reloads = pool.reloads();

    let args = [
        "--template",
        tmpl,
        "--reload",
        "--master-socket",
        sock,
        "add",
        "s2",
    ];
    let stderr = env.fails(
        &pool.args(&[&args[..], &[pool["s2"].endpoint().as_str()]].concat()),
        3,
    );
    assert!(
        stderr.contains("no_such_keyword"),
        "HAProxy's own message: {stderr}"
    );
    assert!(stderr.contains("nodes folder keeps the change"), "{stderr}");
    assert_eq!(fs::read(&env.output).unwrap(), live);
    assert_eq!(pool.reloads(), reloads, "a rejected config was reloaded");
    assert_eq!(pool.answering(10), set_of(&["s1"]));
    assert!(env.nodes.join("s2").exists());
}

#[test]
fn failed_reload_restores_prev() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1", "s2"]).nodes(&["s1"]).start() else {
        return;
    };
    let live = fs::read(&env.output).unwrap();

    // The reload command fails.
    let stderr = env.fails(
        &pool.args(&[
            "--reload",
            "--reload-cmd",
            "echo boom >&2; exit 1",
            "add",
            "s2",
            &pool["s2"].endpoint(),
        ]),
        4,
    );
    assert!(
        stderr.contains("boom") && stderr.contains("restored"),
        "{stderr}"
    );
    assert_eq!(fs::read(&env.output).unwrap(), live);
    assert_eq!(pool.answering(10), set_of(&["s1"]));

    // HAProxy itself refuses the config at reload time (no check before).
    let tmpl = breaking_template(&env);
    let sock = pool.master_socket.to_str().unwrap();
    let args = [
        "--no-check",
        "--template",
        tmpl.to_str().unwrap(),
        "--reload",
        "--apply",
        "reload",
        "--master-socket",
        sock,
        "render",
    ];
    let stderr = env.fails(&pool.args(&args), 4);
    assert!(stderr.contains("refused the new config"), "{stderr}");
    // From 2.7 on, the master's own answer says so, with HAProxy's words.
    if pool.version() >= (2, 7) {
        assert!(stderr.contains("answered Success=0"), "{stderr}");
        assert!(stderr.contains("no_such_keyword"), "{stderr}");
    }
    assert_eq!(fs::read(&env.output).unwrap(), live);
    assert_eq!(pool.reloads().1, 1, "the master recorded the failed reload");
    assert_eq!(pool.answering(10), set_of(&["s1"]));

    // A good reload right after the failed one succeeds, although HAProxy
    // then resets its failed counter, and the good config stays.
    let before = pool.reloads();
    let sock = pool.master_socket.to_str().unwrap();
    env.ok(&pool.args(&[
        "--reload",
        "--apply",
        "reload",
        "--master-socket",
        sock,
        "add",
        "s2",
        &pool["s2"].endpoint(),
    ]));
    let after = pool.reloads();
    eprintln!("show proc counters: before {before:?}, after {after:?}");
    assert_eq!(after.0, before.0 + 1);
    assert_eq!(env.servers().len(), 2, "the good config was rolled back");
    assert!(wait_until(5.0, || pool.answering(10) == set_of(&["s1", "s2"])));
    // And a failure after a success is still seen.
    let stderr = env.fails(&pool.args(&args), 4);
    assert!(stderr.contains("refused the new config"), "{stderr}");
    assert_eq!(env.servers().len(), 2);
}

#[test]
fn unchanged_force_and_min_nodes() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1"]).nodes(&["s1"]).start() else {
        return;
    };
    let sock = pool.master_socket.to_str().unwrap();
    let reload = ["--reload", "--apply", "reload", "--master-socket", sock];

    let out = pool.args(&[&reload[..], &["render"]].concat());
    env.call(&out).run().stderr_has("unchanged");
    assert_eq!(pool.reloads(), (0, 0), "unchanged config was reloaded");

    env.ok(&pool.args(&[&reload[..], &["--force", "render"]].concat()));
    assert_eq!(pool.reloads(), (1, 0));

    let live = fs::read(&env.output).unwrap();
    let stderr = env.fails(
        &pool.args(&[&reload[..], &["--min-nodes", "1", "remove", "s1"]].concat()),
        5,
    );
    assert!(stderr.contains("--min-nodes"), "{stderr}");
    assert_eq!(fs::read(&env.output).unwrap(), live);
    assert_eq!(pool.reloads(), (1, 0));
    assert_eq!(pool.answering(5), set_of(&["s1"]));
}

#[test]
fn in_place_write_keeps_the_inode() {
    use std::os::unix::fs::MetadataExt;
    let env = TestEnv::new();
    env.ok(&["add", "s1", "10.0.0.1"]);
    let inode = fs::metadata(&env.output).unwrap().ino();
    env.ok(&["--in-place", "add", "s2", "10.0.0.2"]);
    assert_eq!(fs::metadata(&env.output).unwrap().ino(), inode);
    assert_eq!(env.servers().len(), 2);
    env.call(&["add", "s3", "10.0.0.3"])
        .env("HACFG_WRITE_MODE", "in-place")
        .code(0);
    assert_eq!(fs::metadata(&env.output).unwrap().ino(), inode);
}

#[test]
fn fifty_reload_cycles_under_traffic_fail_no_request() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1", "s2", "s3"])
        .nodes(&["s1", "s2"])
        .start()
    else {
        return;
    };
    let sock = pool.master_socket.to_str().unwrap();

    let traffic = Traffic::start(pool.port);
    let s3 = pool["s3"].endpoint();
    for _ in 0..50 {
        let reload = [
            "-q",
            "--reload",
            "--apply",
            "reload",
            "--master-socket",
            sock,
        ];
        env.ok(&pool.args(&[&reload[..], &["add", "s3", &s3]].concat()));
        env.ok(&pool.args(&[&reload[..], &["remove", "s3"]].concat()));
    }
    let (ok, failed) = traffic.finish();
    eprintln!(
        "50 add/remove cycles: {ok} requests ok, {failed} failed, {:?} reloads",
        pool.reloads()
    );
    assert_eq!(pool.reloads(), (100, 0));
    assert!(ok > 100, "too little traffic to mean anything: {ok}");
    assert_eq!(failed, 0);
    assert!(
        pool["s3"].hits.load(Ordering::SeqCst) > 0,
        "s3 never got traffic"
    );
}

#[test]
fn burst_of_100_adds_coalesces_reloads() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1"]).start() else {
        return;
    };
    let sock = pool.master_socket.to_str().unwrap();
    let names: Vec<String> = (0..100).map(|i| format!("n{i:03}")).collect();
    let endpoint = pool["s1"].endpoint();
    let children: Vec<_> = names
        .iter()
        .map(|n| {
            env.call(&pool.args(&[
                "-q",
                "--reload",
                "--apply",
                "reload",
                "--master-socket",
                sock,
                "add",
                n,
                &endpoint,
            ]))
            // A burst on a small machine: bounded, but not tightly.
            .within(600.0)
            .spawn()
        })
        .collect();
    for c in children {
        c.code(0);
    }
    let (reloads, failed) = pool.reloads();
    eprintln!("100 concurrent `hacfg add --reload`: {reloads} reloads");
    assert_eq!(failed, 0);
    assert!(
        (1..=50).contains(&reloads),
        "{reloads} reloads for a burst of 100"
    );
    assert_eq!(env.servers().len(), 100);
    assert_eq!(pool.answering(5), set_of(&["s1"]));
}
