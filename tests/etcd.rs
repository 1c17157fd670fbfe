//! etcd: real members from Debian's etcd-server on loopback ports, a real
//! `etcdctl watch --prefix … -- hacfg etcd` in front of a real HAProxy,
//! and `hacfg sync --source etcd`.

use std::fs::File;
use std::io::{Read, Seek};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use rustix::process::{Pid, Signal, kill_process_group};

use crate::harness::{HACFG, TestEnv, clean_command, free_port, tool, wait_until};
use crate::live::Pool;

const PREFIX: &str = "/hacfg/nodes/";

/// One `etcd` member; dropping it kills it.
struct Member {
    child: Option<Child>,
    name: String,
    log: File,
}

impl Member {
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&mut child);
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "etcd member {:?}'s output:\n{}",
                self.name,
                read_all(&self.log)
            );
        }
        self.stop();
    }
}

/// A process's output, captured in a temporary file, from its start.
fn read_all(mut file: &File) -> String {
    let mut text = String::new();
    let _ = file.rewind();
    let _ = file.read_to_string(&mut text);
    text
}

fn kill_group(child: &mut Child) {
    // SAFETY: kill(2) on a process group this test created.
    let _ = kill_process_group(Pid::from_child(child), Signal::KILL);
    let _ = child.wait();
}

/// A cluster of `n` members on free loopback ports, its data in a temp
/// dir of its own (not the env's, which tests snapshot).
struct Cluster {
    members: Vec<Member>,
    endpoints: String,
    etcdctl: PathBuf,
    _data: tempfile::TempDir,
}

impl Cluster {
    /// `None` (the test is skipped) where etcd is not installed.
    #[track_caller]
    fn start(n: usize) -> Option<Cluster> {
        let (etcd, etcdctl) = (tool("etcd")?, tool("etcdctl")?);
        let data = tempfile::tempdir().expect("etcd data");
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let peer = |p: u16| format!("http://127.0.0.1:{p}");
        let initial: Vec<String> = (0..n)
            .map(|i| format!("e{i}={}", peer(ports[i].1)))
            .collect();
        let members = (0..n)
            .map(|i| {
                let (client, peer_port) = ports[i];
                let log = tempfile::tempfile().expect("etcd log");
                let mut cmd = clean_command(&etcd);
                cmd.arg("--name")
                    .arg(format!("e{i}"))
                    .arg("--data-dir")
                    .arg(data.path().join(format!("e{i}")))
                    .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
                    .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
                    .arg(format!("--listen-peer-urls={}", peer(peer_port)))
                    .arg(format!("--initial-advertise-peer-urls={}", peer(peer_port)))
                    .arg(format!("--initial-cluster={}", initial.join(",")))
                    .arg("--initial-cluster-state=new")
                    // The lab's timings: a loaded 2-core machine misses
                    // etcd's default 100 ms heartbeats and holds elections
                    // the tests did not ask for.
                    .arg("--heartbeat-interval=250")
                    .arg("--election-timeout=2500")
                    // The tests kill processes, never the machine: the page
                    // cache keeps what they wrote, and no fsync stalls the
                    // tests that run beside them.
                    .arg("--unsafe-no-fsync")
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().expect("etcd log"))
                    .stderr(log.try_clone().expect("etcd log"))
                    .process_group(0);
                Member {
                    child: Some(cmd.spawn().expect("start etcd")),
                    name: format!("e{i}"),
                    log,
                }
            })
            .collect();
        let endpoints: Vec<String> = ports
            .iter()
            .map(|(c, _)| format!("127.0.0.1:{c}"))
            .collect();
        let cluster = Cluster {
            members,
            endpoints: endpoints.join(","),
            etcdctl,
            _data: data,
        };
        assert!(
            wait_until(30.0, || cluster.try_ctl(&["put", "/ready", "1"]).is_some()),
            "etcd did not start"
        );
        Some(cluster)
    }

    /// `etcdctl --endpoints … ARGS` (etcd API 3).
    fn command(&self) -> Command {
        let mut cmd = clean_command(&self.etcdctl);
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints))
            .arg("--command-timeout=3s")
            .arg("--dial-timeout=2s");
        cmd
    }

    fn try_ctl(&self, args: &[&str]) -> Option<String> {
        let out = self.command().args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    #[track_caller]
    fn ctl(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().expect("run etcdctl");
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The revision a write made (`-w json`'s header).
    #[track_caller]
    fn write(&self, args: &[&str]) -> u64 {
        let mut all = args.to_vec();
        all.extend(["-w", "json"]);
        let out: serde_json::Value = serde_json::from_str(&self.ctl(&all)).expect("json");
        out["header"]["revision"].as_u64().expect("revision")
    }

    /// `hacfg etcd` as the command of a watch of the prefix, with `args`
    /// before `etcd`. It starts from the next revision, so that no write
    /// made once this returns is missed.
    #[track_caller]
    fn watch(&self, env: &TestEnv, args: &[&str]) -> Watch {
        let from = (self.write(&["put", "/ready", "1"]) + 1).to_string();
        let log = tempfile::tempfile().expect("watch log");
        let mut cmd = self.command();
        cmd.args(["watch", "--prefix", PREFIX, "--rev", &from, "--"])
            .arg(HACFG)
            .arg("--nodes-dir")
            .arg(&env.nodes)
            .arg("--output")
            .arg(&env.output)
            .args(args)
            .arg("etcd")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("watch log"))
            .stderr(log.try_clone().expect("watch log"))
            .process_group(0);
        Watch {
            child: cmd.spawn().expect("start etcdctl watch"),
            log,
        }
    }
}

/// A running `etcdctl watch`; dropping it kills it.
struct Watch {
    child: Child,
    log: File,
}

impl Watch {
    fn log(&self) -> String {
        read_all(&self.log)
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("etcdctl watch's output:\n{}", self.log());
        }
        kill_group(&mut self.child);
    }
}

fn key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

fn node_file(env: &TestEnv, name: &str) -> bool {
    env.nodes.join(name).exists()
}

fn recorded(nodes: &Path) -> u64 {
    let text = std::fs::read_to_string(nodes.join(".hacfg.etcd-revision")).unwrap_or_default();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    value[0]["revision"].as_u64().unwrap_or_default()
}

#[test]
fn a_watch_adds_removes_and_expires_servers_and_skips_hostile_keys() {
    let Some(cluster) = Cluster::start(1) else {
        return;
    };
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1", "s2"]).start() else {
        return;
    };
    let mut watch = cluster.watch(&env, &pool.runtime_args(&[]));
    let endpoint = pool["s1"].endpoint();
    let (host, port) = endpoint.rsplit_once(':').expect("host:port");
    let s1 = format!(r#"{{"address":"{host}","port":{port},"weight":2}}"#);
    cluster.ctl(&["put", &key("s1"), &s1]);
    assert!(
        wait_until(20.0, || pool.answering(4).contains("s1")),
        "s1 never served: {:?}\n{}",
        env.servers(),
        watch.log()
    );

    // Hostile keys and values: each skipped, the watch goes on.
    let big = "x".repeat(100 * 1024);
    cluster.ctl(&["put", &key("a%2Fb"), "127.0.0.9"]);
    cluster.ctl(&["put", &key(".hacfg.held"), "127.0.0.9"]);
    cluster.ctl(&["put", &key("deep/er"), "127.0.0.9"]);
    cluster.ctl(&["put", &key("big"), &big]);
    cluster.ctl(&["put", &key("bad"), "127.0.0.9\nserver evil 1.2.3.4:80"]);
    cluster.ctl(&["put", &key("json"), r#"{"address":"127.0.0.9","port":0}"#]);

    // A leased s2: served, then removed once its lease expires.
    // Long enough to be served first behind the hostile keys' runs on a
    // loaded machine, short enough to wait out.
    let lease = cluster.ctl(&["lease", "grant", "8"]);
    let lease = lease
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    cluster.ctl(&["put", "--lease", &lease, &key("s2"), &pool["s2"].endpoint()]);
    assert!(
        wait_until(20.0, || pool.answering(6).contains("s2")),
        "s2 never served: {:?}\n{}",
        env.servers(),
        watch.log()
    );
    assert!(watch.running(), "the watch ended:\n{}", watch.log());
    for name in ["big", "bad", "json", "deep", ".hacfg.held.damaged"] {
        assert!(!node_file(&env, name), "{name} was written");
    }
    assert!(
        wait_until(30.0, || !node_file(&env, "s2")),
        "the expired lease's node stayed\n{}",
        watch.log()
    );
    assert!(
        wait_until(20.0, || pool.answering(6).iter().all(|s| s == "s1")),
        "s2 still served"
    );

    cluster.ctl(&["del", &key("s1")]);
    assert!(
        wait_until(20.0, || !node_file(&env, "s1") && env.servers().is_empty()),
        "s1 stayed: {:?}",
        env.servers()
    );
    assert!(watch.running(), "the watch ended:\n{}", watch.log());
    let log = std::fs::read_to_string(&pool.hacfg_log).unwrap_or_default();
    for part in ["a%2Fb", "longer than 64 KiB", "not allowed"] {
        assert!(log.contains(part), "{part:?} not in the log:\n{log}");
    }
}

#[test]
fn sync_makes_the_folder_equal_to_the_prefix_and_an_older_event_changes_nothing() {
    let Some(cluster) = Cluster::start(1) else {
        return;
    };
    let env = TestEnv::new();
    let sync = |extra: &[&str]| {
        let mut args = vec![
            "--no-check",
            "sync",
            "--source",
            "etcd",
            "--etcd-endpoints",
            &cluster.endpoints,
        ];
        args.extend_from_slice(extra);
        env.call(&args.clone()).within(30.0)
    };
    env.ok(&["--no-check", "add", "gone", "10.0.0.9", "--no-render"]);
    env.ok(&["--no-check", "add", "s2", "10.0.0.8", "--no-render"]);
    cluster.ctl(&["put", &key("s1"), "10.0.0.1:80"]);
    let deleted = cluster.write(&["del", &key("s1")]);
    cluster.ctl(&[
        "put",
        &key("s1"),
        r#"{"address":"10.0.0.1","backend":"api"}"#,
    ]);
    cluster.ctl(&["put", &key("s2"), "10.0.0.2"]);
    let last = cluster.write(&["put", &key("s3"), "10.0.0.3"]);
    sync(&[]).code(0);
    assert!(node_file(&env, "s1") && node_file(&env, "s2") && node_file(&env, "s3"));
    assert!(!node_file(&env, "gone"));
    let s2 = std::fs::read_to_string(env.nodes.join("s2")).expect("s2");
    assert!(s2.contains("10.0.0.2"), "{s2}");
    assert_eq!(recorded(&env.nodes), last);

    // The DELETE of s1, late (a replayed or old watch's event): older than
    // the folder's revision, it changes nothing.
    env.call(&["--no-check", "etcd"])
        .env("ETCD_WATCH_REVISION", deleted.to_string())
        .env("ETCD_WATCH_EVENT_TYPE", "\"DELETE\"")
        .env("ETCD_WATCH_KEY", format!("\"{}\"", key("s1")))
        .env("ETCD_WATCH_VALUE", "\"\"")
        .unchanged()
        .code(0)
        .stderr_has("older than the folder's");

    // A run of the handler counts in the metrics as `etcd`.
    let metrics = env.path("hacfg.prom");
    env.call(&[
        "--no-check",
        "--metrics-file",
        metrics.to_str().expect("path"),
        "etcd",
    ])
    .env("ETCD_WATCH_REVISION", (last + 1).to_string())
    .env("ETCD_WATCH_EVENT_TYPE", "\"PUT\"")
    .env("ETCD_WATCH_KEY", format!("\"{}\"", key("s4")))
    .env("ETCD_WATCH_VALUE", "\"10.0.0.4\"")
    .code(0);
    let text = std::fs::read_to_string(&metrics).expect("metrics");
    assert!(
        text.contains("hacfg_runs_total{command=\"etcd\"} 1\n"),
        "{text}"
    );
    assert_eq!(recorded(&env.nodes), last + 1);

    // (That event, made up, is now in etcd too.)
    cluster.ctl(&["put", &key("s4"), "10.0.0.4"]);
    // etcdctl refuses a flag whose ETCDCTL_ variable is set too: where
    // hacfg passes the flag, its option wins and the variable is dropped.
    sync(&[])
        .env("ETCDCTL_DIAL_TIMEOUT", "3s")
        .env("ETCDCTL_COMMAND_TIMEOUT", "3s")
        .env("ETCDCTL_ENDPOINTS", "127.0.0.1:1")
        .code(0);
    // A prefix that does not end with `/` is a usage error.
    env.call(&["sync", "--source", "etcd", "--etcd-prefix", "/hacfg/nodes"])
        .unchanged()
        .code(2)
        .stderr_has("must end with `/`");
    // A folder ahead of the cluster (a cluster rebuilt from scratch): the
    // refusal says how to start over.
    let record = env.nodes.join(".hacfg.etcd-revision");
    std::fs::write(&record, format!("[{{\"revision\": {}}}]", last + 1000)).expect("record");
    for extra in [&["--dry-run"][..], &[]] {
        sync(extra)
            .unchanged()
            .code(1)
            .stderr_has("older than the folder's")
            .stderr_has("if the etcd cluster was rebuilt");
    }
    // A dry run changes nothing, a damaged record included.
    std::fs::write(&record, "[{\"revision\": 9223372036854775808}]").expect("record");
    sync(&["--dry-run"]).unchanged().code(0);
    std::fs::remove_file(&record).expect("record");

    // An empty prefix is refused (exit 5) unless --allow-empty.
    cluster.ctl(&["del", "--prefix", PREFIX]);
    let before = env.snapshot();
    sync(&[]).code(5);
    assert_eq!(env.snapshot(), before);
    sync(&["--allow-empty"]).code(0);
    assert!(!node_file(&env, "s1"));
}

#[test]
fn sync_without_quorum_fails_in_time_and_changes_nothing() {
    let Some(mut cluster) = Cluster::start(3) else {
        return;
    };
    let env = TestEnv::new();
    cluster.put_retrying(&key("s1"), "10.0.0.1");
    let args = [
        "--no-check",
        "sync",
        "--source",
        "etcd",
        "--etcd-endpoints",
        &cluster.endpoints,
        "--etcd-timeout",
    ];
    let with_quorum = [&args[..], &["10"]].concat();
    env.call(&with_quorum).within(30.0).code(0);
    assert!(node_file(&env, "s1"));
    cluster.members[1].stop();
    cluster.members[2].stop();
    let beside = tempfile::tempdir().expect("a folder for the log");
    let log = beside.path().join("hacfg.log");
    let log_arg = format!("--log-file={}", log.display());
    let mut logged = vec![log_arg.as_str()];
    logged.extend(args);
    logged.push("2");
    // etcdctl's own verdict, not the first of its client's JSON log lines.
    env.call(&logged)
        .within(20.0)
        .unchanged()
        .code(1)
        .stderr_has("etcdctl")
        .stderr_has("\"Error: ")
        .stderr_has("context deadline exceeded");
    let text = std::fs::read_to_string(&log).expect("the log file");
    assert!(text.contains("context deadline exceeded"), "{text}");
    assert!(!text.contains("retrying of unary invoker"), "{text}");
}

/// The node files' names, sorted.
fn node_names(env: &TestEnv) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(&env.nodes)
        .expect("nodes")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

impl Cluster {
    /// The index of the member that leads (`endpoint status`), asked
    /// again while an election is under way.
    #[track_caller]
    fn leader(&self) -> usize {
        let mut leader = None;
        assert!(
            wait_until(20.0, || {
                leader = self.try_leader();
                leader.is_some()
            }),
            "no leader"
        );
        leader.expect("the leader found above")
    }

    fn try_leader(&self) -> Option<usize> {
        let out = self.try_ctl(&["endpoint", "status", "-w", "json"])?;
        let list: Vec<serde_json::Value> = serde_json::from_str(&out).ok()?;
        let at = list
            .iter()
            .position(|s| s["Status"]["header"]["member_id"] == s["Status"]["leader"])?;
        let endpoint = list[at]["Endpoint"].as_str()?;
        let endpoints: Vec<&str> = self.endpoints.split(',').collect();
        endpoints.iter().position(|e| endpoint.ends_with(e))
    }

    /// `etcdctl put`, tried again while the cluster elects a leader.
    #[track_caller]
    fn put_retrying(&self, key: &str, value: &str) {
        assert!(
            wait_until(20.0, || self.try_ctl(&["put", key, value]).is_some()),
            "put {key} never succeeded"
        );
    }
}

#[test]
fn a_transaction_and_a_burst_through_a_leader_kill_end_with_the_folder_equal_to_the_prefix() {
    let Some(mut cluster) = Cluster::start(3) else {
        return;
    };
    let env = TestEnv::new();
    let mut watch = cluster.watch(&env, &["--no-check"]);
    // One transaction (no compare, two puts, no else): two events, one
    // revision (etcdctl gives both the response's); the second must apply
    // as well as the first.
    let mut txn = cluster.command();
    txn.args(["txn"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    let mut child = txn.spawn().expect("etcdctl txn");
    let script = format!(
        "\nput {} 10.0.0.1\nput {} 10.0.0.2\n\n\n",
        key("t1"),
        key("t2")
    );
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), script.as_bytes())
        .expect("txn script");
    assert!(child.wait().expect("txn").success());
    let mut expected = vec!["t1".to_string(), "t2".to_string()];
    for i in 0..30 {
        if i == 10 {
            let leader = cluster.leader();
            cluster.members[leader].stop();
        }
        let name = format!("b{i:02}");
        cluster.put_retrying(&key(&name), &format!("10.0.1.{i}"));
        expected.push(name);
    }
    expected.sort();
    assert!(
        wait_until(30.0, || node_names(&env) == expected),
        "{:?}\n{}",
        node_names(&env),
        watch.log()
    );
    assert!(watch.running(), "the watch ended:\n{}", watch.log());
}

/// `examples/etcd/watch` under a supervisor that starts it again whenever
/// it ends; dropping it kills the lot.
struct Supervised {
    child: Child,
    log: File,
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the supervised watch's output:\n{}", read_all(&self.log));
        }
        kill_group(&mut self.child);
    }
}

#[test]
fn the_example_watch_resumes_after_a_value_etcdctl_cannot_pass_and_repairs_by_sync() {
    let Some(cluster) = Cluster::start(1) else {
        return;
    };
    let env = TestEnv::new();
    cluster.ctl(&["put", &key("s1"), "10.0.0.1"]);
    cluster.ctl(&["put", &key("s2"), "10.0.0.2"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/etcd/watch");
    let log = tempfile::tempfile().expect("log");
    let mut cmd = clean_command("sh");
    cmd.args(["-c", "while :; do sh \"$0\"; sleep 0.2; done", script])
        .env("HACFG_NODES_DIR", &env.nodes)
        .env("HACFG_OUTPUT", &env.output)
        .env("HACFG_NO_CHECK", "true")
        .env("HACFG_VARS", env.state_var())
        .env("HACFG_LOG_FILE", env.path("hacfg.log"))
        .env("ETCDCTL_ENDPOINTS", &cluster.endpoints)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log.try_clone().expect("log"))
        .process_group(0);
    let _watch = Supervised {
        child: cmd.spawn().expect("start the example"),
        log,
    };
    assert!(
        wait_until(20.0, || node_names(&env) == ["s1", "s2"]),
        "{:?}",
        node_names(&env)
    );
    // 200 KB: more than one environment string may hold, so etcdctl cannot
    // run its command and ends the watch; the next start's sync skips it.
    let big = env.write("big", &"x".repeat(200 * 1024));
    let mut put = cluster.command();
    put.args(["put", &key("big")])
        .stdin(File::open(big).expect("big"))
        .stdout(Stdio::null());
    assert!(put.status().expect("put big").success());
    cluster.ctl(&["del", &key("s1")]);
    cluster.ctl(&["put", &key("s3"), "10.0.0.3"]);
    assert!(
        wait_until(20.0, || node_names(&env) == ["s2", "s3"]),
        "{:?}",
        node_names(&env)
    );
    let text = std::fs::read_to_string(env.path("hacfg.log")).unwrap_or_default();
    assert!(text.contains("longer than 64 KiB"), "{text}");
}
