//! hacfg's own records in the nodes folder, damaged in every way a folder
//! can damage them (garbage, cut short, a link, a FIFO, huge, another
//! shape, content hacfg never writes): a burst of joins and leaves still
//! reaches HAProxy, the record is moved aside as `NAME.damaged`, and the
//! log names it and why. Real master-worker HAProxy, the real binary, Serf's
//! events on stdin.

use std::fs;
use std::path::Path;

use crate::harness::{TestEnv, free_port, wait_until};
use crate::live::Pool;

/// Every way a record can be damaged, and a part of what the log says.
#[derive(Debug, Clone, Copy)]
enum Damage {
    Garbage,
    Truncated,
    Link,
    Fifo,
    Huge,
    Shape,
    Foreign,
}

const EVERY: [Damage; 7] = [
    Damage::Garbage,
    Damage::Truncated,
    Damage::Link,
    Damage::Fifo,
    Damage::Huge,
    Damage::Shape,
    Damage::Foreign,
];

impl Damage {
    /// Damages the record at `path` (`foreign`: a sound shape with a name
    /// hacfg never writes).
    fn apply(self, path: &Path, foreign: &str) {
        match self {
            Damage::Garbage => fs::write(path, b"\xff\xfe not json").unwrap(),
            Damage::Truncated => fs::write(path, &foreign.as_bytes()[..foreign.len() / 2]).unwrap(),
            Damage::Link => std::os::unix::fs::symlink("/dev/zero", path).unwrap(),
            Damage::Fifo => rustix::fs::mkfifoat(
                rustix::fs::CWD,
                path,
                rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
            )
            .unwrap(),
            // Sparse, past every record's bound: no disk, and never read.
            Damage::Huge => fs::File::create(path)
                .unwrap()
                .set_len((64 << 20) + 1)
                .unwrap(),
            Damage::Shape => fs::write(path, br#"{"entries":[]}"#).unwrap(),
            Damage::Foreign => fs::write(path, foreign).unwrap(),
        }
    }

    /// What the log line says of it.
    fn why(self) -> &'static str {
        match self {
            Damage::Garbage => "expected value",
            Damage::Truncated => "EOF while parsing",
            Damage::Link => "symbolic link",
            Damage::Fifo => "a FIFO",
            Damage::Huge => "larger than",
            Damage::Shape => "expected a sequence",
            Damage::Foreign => "",
        }
    }
}

fn member(name: &str, endpoint: &str) -> String {
    let (addr, port) = endpoint.rsplit_once(':').expect("endpoint");
    format!("{name}\t{addr}\tbackend\trole=backend,port={port}\n")
}

/// The names of HAProxy's live servers.
fn live(pool: &Pool) -> Vec<String> {
    let mut names: Vec<String> = pool.servers().into_iter().map(|l| l.name).collect();
    names.sort();
    names
}

/// One Serf event through the handler (`hacfg … serf` and `extra`), which
/// must succeed.
fn event(env: &TestEnv, pool: &Pool, extra: &[&str], kind: &str, stdin: String) {
    let mut args = vec!["serf"];
    args.extend_from_slice(extra);
    env.call(&pool.runtime_args(&args))
        .env("SERF_EVENT", kind)
        .env("SERF_SELF_NAME", "bal")
        .stdin(stdin)
        .code(0);
}

/// A burst of membership changes: `{tag}a` and `{tag}b` join (at ports no
/// one serves), `{tag}a` leaves again. Each reaches HAProxy.
fn burst(env: &TestEnv, pool: &Pool, extra: &[&str], tag: &str) {
    let (a, b) = (format!("{tag}a"), format!("{tag}b"));
    let at = |_| format!("127.0.0.1:{}", free_port());
    let joins = member(&a, &at(0)) + &member(&b, &at(1));
    event(env, pool, extra, "member-join", joins);
    let names = live(pool);
    assert!(names.contains(&a) && names.contains(&b), "{names:?}");
    let leave = member(&a, &at(2));
    event(env, pool, extra, "member-leave", leave);
    assert!(wait_until(10.0, || !live(pool).contains(&a)), "{a} stayed");
    assert!(live(pool).contains(&b));
}

/// The record `name` was moved aside, and the log named it with `why`.
#[track_caller]
fn assert_set_aside(env: &TestEnv, pool: &Pool, name: &str, why: &str) {
    let aside = env.nodes.join(format!("{name}.damaged"));
    assert!(aside.symlink_metadata().is_ok(), "no {}", aside.display());
    let log = fs::read_to_string(&pool.hacfg_log).unwrap_or_default();
    let line = log
        .lines()
        .rfind(|l| l.contains(&format!("/{name}` is damaged")))
        .unwrap_or_else(|| panic!("no line names {name}:\n{log}"));
    assert!(line.contains(why), "{line}");
    assert!(line.contains("moved aside to"), "{line}");
    fs::remove_file(&aside).unwrap();
}

/// Nothing is pending: the worker, if one ran, has finished.
fn settled(env: &TestEnv) -> bool {
    !env.nodes.join(".hacfg.pending").exists()
}

#[test]
fn a_damaged_pending_record_never_freezes_joins_and_leaves() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1"]).nodes(&["s1"]).start() else {
        return;
    };
    let foreign = r#"[{"target":{"backend":"nodes; shutdown sessions server nodes/s1","name":"x"},"why":"removal","since_ms":0,"deadline_ms":0}]"#;
    for (i, damage) in EVERY.into_iter().enumerate() {
        assert!(wait_until(10.0, || settled(&env)), "work still pending");
        damage.apply(&env.nodes.join(".hacfg.pending"), foreign);
        burst(&env, &pool, &[], &format!("p{i}"));
        let why = match damage {
            Damage::Foreign => "is no HAProxy name",
            other => other.why(),
        };
        assert_set_aside(&env, &pool, ".hacfg.pending", why);
    }
    assert!(live(&pool).contains(&"s1".to_string()));
    assert_eq!(pool.reloads(), (0, 0));
}

#[test]
fn a_damaged_held_record_is_moved_aside_and_changes_go_through() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1"]).nodes(&["s1"]).start() else {
        return;
    };
    let foreign = r#"[{"node":{"name":"../s1","address":"10.0.0.1"},"reason":"x","refused_ms":0}]"#;
    for (i, damage) in [Damage::Truncated, Damage::Foreign, Damage::Fifo]
        .into_iter()
        .enumerate()
    {
        damage.apply(&env.nodes.join(".hacfg.held"), foreign);
        burst(&env, &pool, &[], &format!("h{i}"));
        let why = match damage {
            Damage::Foreign => "node \"../s1\" in it",
            other => other.why(),
        };
        assert_set_aside(&env, &pool, ".hacfg.held", why);
    }
}

#[test]
fn a_damaged_failed_record_keeps_its_members_and_the_next_stay_is_recorded() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1", "s2"])
        .nodes(&["s1", "s2"])
        .start()
    else {
        return;
    };
    assert!(wait_until(10.0, || pool.answering(10).len() == 2));
    let verify = ["--on-failed", "verify"];
    // A link, even to a sound record naming s1, is not followed.
    let elsewhere = env.path("elsewhere");
    fs::write(&elsewhere, r#"[{"name":"s1","since_ms":1}]"#).unwrap();
    std::os::unix::fs::symlink(&elsewhere, env.nodes.join(".hacfg.failed")).unwrap();
    // s2 is reported failed while HAProxy sees it UP: it stays.
    let failed = member("s2", &pool["s2"].endpoint());
    event(&env, &pool, &verify, "member-failed", failed);
    assert_set_aside(&env, &pool, ".hacfg.failed", "symbolic link");
    let record = fs::read_to_string(env.nodes.join(".hacfg.failed")).unwrap();
    assert!(
        record.contains("\"s2\"") && !record.contains("\"s1\""),
        "{record}"
    );
    assert!(elsewhere.exists());
    for (i, damage) in [Damage::Garbage, Damage::Huge].into_iter().enumerate() {
        // In place of s2's stay (the first time) or of nothing.
        let path = env.nodes.join(".hacfg.failed");
        let _ = fs::remove_file(&path);
        damage.apply(&path, "");
        burst(&env, &pool, &verify, &format!("f{i}"));
        assert_set_aside(&env, &pool, ".hacfg.failed", damage.why());
        assert!(pool.logged("stay in the folder"));
    }
    // Nothing was removed for a record that could not be read.
    let names = live(&pool);
    assert!(names.contains(&"s1".into()) && names.contains(&"s2".into()));
    assert!(env.nodes.join("s1").exists() && env.nodes.join("s2").exists());
}

#[test]
fn a_damaged_waiting_record_is_moved_aside_and_runtime_changes_go_through() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1"]).nodes(&["s1"]).start() else {
        return;
    };
    let runtime = ["--apply", "runtime"];
    let foreign = r#"[{"key":"disable server nodes/s1","reason":"x"}]"#;
    for (i, damage) in [Damage::Shape, Damage::Foreign, Damage::Link]
        .into_iter()
        .enumerate()
    {
        damage.apply(&env.nodes.join(".hacfg.waiting"), foreign);
        burst(&env, &pool, &runtime, &format!("w{i}"));
        let why = match damage {
            Damage::Foreign => "is no part of a config",
            other => other.why(),
        };
        assert_set_aside(&env, &pool, ".hacfg.waiting", why);
    }
    assert_eq!(pool.reloads(), (0, 0));
}

#[test]
fn a_planted_worker_lock_never_stops_the_worker() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1", "s2"])
        .nodes(&["s1"])
        .checks_every("500ms")
        .start()
    else {
        return;
    };
    if pool.init_state() {
        // 3.1 and later: a new server starts DOWN by HAProxy's own
        // init-state, and no worker is needed.
        return;
    }
    let lock = env.nodes.join(".hacfg.worker.lock");
    Damage::Fifo.apply(&lock, "");
    let join = member("s2", &pool["s2"].endpoint());
    event(&env, &pool, &[], "member-join", join);
    // Only the worker sets s2 ready once checked: it ran.
    assert!(wait_until(10.0, || pool.answering(10).contains("s2")));
    assert!(wait_until(10.0, || settled(&env)), "work still pending");
    assert!(lock.symlink_metadata().unwrap().is_file());
    let aside = env.nodes.join(".hacfg.worker.lock.damaged");
    assert!(aside.symlink_metadata().is_ok());
    assert!(pool.logged("the settle worker's lock"));
    assert!(pool.logged("a new lock file takes its place"));
}
