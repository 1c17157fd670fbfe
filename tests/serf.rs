//! Serf: real agents on loopback, started by the lab example's own s6 run
//! scripts, with `hacfg serf` as the balancer's handler.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{Read, Seek};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use rustix::process::{Pid, Signal, kill_process_group};

use crate::harness::{Call, TestEnv, clean_command, free_port, tool, wait_until};
use crate::live::Pool;

const LAB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/lab");

/// A `serf agent` process group; dropping it kills it.
pub(crate) struct Agent {
    child: Option<Child>,
    pub(crate) name: String,
    pub(crate) rpc: String,
    /// The agent's stdout and stderr (its handlers' too), shown when a test
    /// fails.
    log: File,
}

impl Agent {
    /// Runs one of the lab's `run` scripts with `envs`: a daemon, so not a
    /// [`Call`], but built the same way (no `HACFG_*`/`SERF_*` from the
    /// developer's shell, the `hacfg` under test first on `PATH`).
    #[track_caller]
    fn start(script: &str, name: &str, envs: &[(&str, String)]) -> Agent {
        let rpc = format!("127.0.0.1:{}", free_port());
        let log = tempfile::tempfile().expect("agent log");
        let mut cmd = clean_command(Path::new(LAB).join(script));
        cmd.env("SERF_NODE", name)
            .env("SERF_RPC_ADDR", &rpc)
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("agent log"))
            .stderr(log.try_clone().expect("agent log"))
            .process_group(0);
        let agent = Agent {
            child: Some(cmd.spawn().expect("start serf")),
            name: name.into(),
            rpc,
            log,
        };
        assert!(
            wait_until(10.0, || agent.members().is_some()),
            "agent {name:?} did not start:\n{}",
            agent.log()
        );
        agent
    }

    /// What the agent printed so far.
    fn log(&self) -> String {
        let mut text = String::new();
        let mut log = &self.log;
        let _ = log.rewind();
        let _ = log.read_to_string(&mut text);
        text
    }

    /// A backend agent (the webapp image's script) joining `join`.
    #[track_caller]
    fn backend(name: &str, ip: &str, port: u16, join: &str) -> Agent {
        Agent::start(
            "webapp/services/serf/run",
            name,
            &[
                ("SERF_BIND", format!("{ip}:{}", free_port())),
                ("SERF_JOIN", join.to_string()),
                ("APP_PORT", port.to_string()),
            ],
        )
    }

    pub(crate) fn members(&self) -> Option<String> {
        let out = Command::new("serf")
            .args(["members", "-rpc-addr", &self.rpc])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Stops the agent's process group (SIGSTOP): it answers nothing, and
    /// Serf takes seconds to call it failed. Dropping it still kills it.
    pub(crate) fn pause(&self) {
        if let Some(child) = &self.child {
            let _ = kill_process_group(Pid::from_child(child), Signal::STOP);
        }
    }

    /// Lets a paused agent run again (SIGCONT).
    pub(crate) fn resume(&self) {
        if let Some(child) = &self.child {
            let _ = kill_process_group(Pid::from_child(child), Signal::CONT);
        }
    }

    /// `serf leave`: a graceful leave, then the agent exits.
    fn leave(mut self) {
        let _ = Command::new("serf")
            .args(["leave", "-rpc-addr", &self.rpc])
            .output();
        if let Some(mut child) = self.child.take() {
            wait_until(10.0, || matches!(child.try_wait(), Ok(Some(_))));
            kill_group(&mut child);
        }
    }
}

fn kill_group(child: &mut Child) {
    // SAFETY: kill(2) on the agent's own process group.
    let _ = kill_process_group(Pid::from_child(child), Signal::KILL);
    let _ = child.wait();
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Captured by the test harness: shown with the failure only.
            eprintln!("serf agent {:?}'s output:\n{}", self.name, self.log());
        }
        if let Some(mut child) = self.child.take() {
            kill_group(&mut child);
        }
    }
}

/// The balancer: the ha image's Serf run script, hacfg as its handler.
#[track_caller]
fn balancer(env: &TestEnv, name: &str) -> (Agent, String) {
    balancer_with(env, name, &[])
}

/// The balancer, with more `HACFG_*` settings for its handler.
#[track_caller]
pub(crate) fn balancer_with(
    env: &TestEnv,
    name: &str,
    extra: &[(&str, String)],
) -> (Agent, String) {
    let bind = format!("127.0.0.1:{}", free_port());
    let mut envs = vec![
        ("SERF_BIND", bind.clone()),
        ("SERF_PROFILE", "local".into()),
        ("HACFG_NODES_DIR", env.nodes.display().to_string()),
        ("HACFG_OUTPUT", env.output.display().to_string()),
        ("HACFG_LOG_FILE", env.path("serf.log").display().to_string()),
        // As every run of the harness: the temp dir's state file.
        ("HACFG_VARS", env.state_var()),
    ];
    envs.extend(extra.iter().cloned());
    let agent = Agent::start("ha/services/serf/run", name, &envs);
    (agent, bind)
}

fn sorted_servers(env: &TestEnv) -> Vec<String> {
    let mut s = env.servers();
    s.sort();
    s
}

#[test]
fn joins_leaves_failures_and_updates_reach_the_config() {
    let (Some(_), Some(_)) = (tool("serf"), tool("haproxy")) else {
        return;
    };
    let env = TestEnv::new();
    let (bal, join) = balancer(&env, "bal");
    let web1 = Agent::backend("web1", "127.0.0.2", 3001, &join);
    let web2 = Agent::backend("web2", "127.0.0.3", 3002, &join);
    let web3 = Agent::backend("web3", "127.0.0.4", 3003, &join);
    let all = [
        "web1 127.0.0.2:3001",
        "web2 127.0.0.3:3002",
        "web3 127.0.0.4:3003",
    ];
    assert!(
        wait_until(15.0, || sorted_servers(&env) == all),
        "{:?}",
        env.servers()
    );
    assert!(!env.nodes.join("bal").exists(), "the balancer added itself");

    web1.leave();
    assert!(
        wait_until(15.0, || sorted_servers(&env) == all[1..]),
        "{:?}",
        env.servers()
    );

    drop(web2); // kill -9: Serf declares it failed after its probes time out
    assert!(
        wait_until(30.0, || sorted_servers(&env) == all[2..]),
        "{:?}",
        env.servers()
    );

    let name = web3.name.clone();
    web3.leave();
    assert!(
        wait_until(15.0, || env.servers().is_empty()),
        "{:?}",
        env.servers()
    );
    let _web3 = Agent::backend(&name, "127.0.0.4", 4003, &join);
    assert!(
        wait_until(15.0, || env.servers() == ["web3 127.0.0.4:4003"]),
        "{:?}",
        env.servers()
    );
    let log = fs::read_to_string(env.path("serf.log")).unwrap();
    for needle in [
        "member-join: added/updated node `web1`",
        "member-leave: removed node `web1`",
        "member-failed: removed node `web2`",
    ] {
        assert!(log.contains(needle), "log lacks {needle:?}:\n{log}");
    }
    drop(bal);
}

#[test]
fn sync_restores_an_emptied_folder_and_two_balancers_agree() {
    let (Some(_), Some(_)) = (tool("serf"), tool("haproxy")) else {
        return;
    };
    let (env_a, env_b) = (TestEnv::new(), TestEnv::new());
    let (bal_a, join) = balancer(&env_a, "bal-a");
    // One state-file path for both, so that their configs can be equal.
    let (bal_b, _) = balancer_with(&env_b, "bal-b", &[("HACFG_VARS", env_a.state_var())]);
    let (_w1, _w2, _w3) = (
        Agent::backend("w1", "127.0.0.5", 3001, &join),
        Agent::backend("w2", "127.0.0.6", 3002, &join),
        Agent::backend("w3", "127.0.0.7", 3003, &join),
    );
    // The second balancer joins the cluster the first one started.
    Command::new("serf")
        .args(["join", "-rpc-addr", &bal_b.rpc, &join])
        .output()
        .unwrap();
    assert!(wait_until(15.0, || env_a.servers().len() == 3
        && env_b.servers().len() == 3));
    assert!(wait_until(5.0, || env_a.output_text() == env_b.output_text()));

    let live = env_a.output_text();
    let sync =
        |extra: &[&str]| env_a.call(&[&["sync", "--rpc-addr", &bal_a.rpc][..], extra].concat());
    // A mistyped or vanished folder is an error: nothing is created.
    fs::rename(&env_a.nodes, env_a.path("nodes.away")).unwrap();
    sync(&[]).code(1).stderr_has("hacfg init");
    assert!(!env_a.nodes.exists());
    assert_eq!(env_a.output_text(), live);
    fs::rename(env_a.path("nodes.away"), &env_a.nodes).unwrap();
    // Lose the nodes, as a restarted container without a volume would.
    for entry in fs::read_dir(&env_a.nodes).unwrap() {
        fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let plan = sync(&["--dry-run"]).run().stdout;
    assert!(plan.contains("+ `w1` 127.0.0.5:3001"), "{plan}");
    assert_eq!(
        fs::read_dir(&env_a.nodes).unwrap().count(),
        0,
        "a dry run wrote"
    );
    // The lab image's sync service, run once.
    env_a
        .program(Path::new(LAB).join("ha/services/hacfg-sync/run"))
        .env("SERF_RPC_ADDR", &bal_a.rpc)
        .env("HACFG_SYNC_INTERVAL", "0")
        .env("HACFG_NODES_DIR", &env_a.nodes)
        .env("HACFG_OUTPUT", &env_a.output)
        .code(0);
    let mut names: Vec<String> = fs::read_dir(&env_a.nodes)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    assert_eq!(names, ["w1", "w2", "w3"]);
    assert_eq!(env_a.output_text(), live);
    // A node no member backs is removed by sync.
    env_a.ok(&["add", "stale", "10.9.9.9", "--no-render"]);
    sync(&[]).code(0);
    assert!(!env_a.nodes.join("stale").exists());
    assert_eq!(env_a.output_text(), live);
}

#[test]
fn hostile_agent_names_from_real_serf_are_skipped() {
    let (Some(_), Some(_)) = (tool("serf"), tool("haproxy")) else {
        return;
    };
    let env = TestEnv::new();
    let (_bal, join) = balancer(&env, "bal");
    let _evil = Agent::backend("evil\nserver x 6.6.6.6:80", "127.0.0.12", 3001, &join);
    let _escape = Agent::backend("../../etc/x", "127.0.0.13", 3002, &join);
    let _good = Agent::backend("good1", "127.0.0.14", 3003, &join);
    assert!(
        wait_until(15.0, || env.servers() == ["good1 127.0.0.14:3003"]),
        "{:?}",
        env.servers()
    );
    let log = fs::read_to_string(env.path("serf.log")).unwrap();
    assert!(
        wait_until(10.0, || {
            let log = fs::read_to_string(env.path("serf.log")).unwrap_or_default();
            log.contains(r#"invalid node name "evil\nserver x 6.6.6.6:80""#)
                && log.contains(r#"invalid node name "../../etc/x""#)
        }),
        "{log}"
    );
    assert!(!env.output_text().contains("6.6.6.6"));
    let names: Vec<String> = fs::read_dir(&env.nodes)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(names, ["good1"]);
    assert!(!env.nodes.join("../../etc/x").exists());
}

/// `hacfg serf` as Serf runs it: event in the environment, members on stdin.
fn handle<'e>(env: &'e TestEnv, event: &str, stdin: &str, extra: &[&str]) -> Call<'e> {
    env.call(&[&["--no-check", "serf"][..], extra].concat())
        .env("SERF_EVENT", event)
        .env("SERF_SELF_NAME", "bal")
        .stdin(stdin)
}

#[test]
fn hostile_member_lines_are_skipped_and_the_rest_applied() {
    let env = TestEnv::new();
    let stdin = "good1\t10.0.0.1\tbackend\trole=backend,port=8080\n\
                 evil\\nserver x 6.6.6.6:80\t10.0.0.2\tbackend\trole=backend\n\
                 ../etc\t10.0.0.3\tbackend\t\n\
                 good2\t10.0.0.4\tbackend\tbackend=api,weight=3\n\
                 bad-addr\t10.0.0.5 backup\tbackend\t\n\
                 bad-port\t10.0.0.6\tbackend\tport=0\n\
                 this line has no tabs\n\
                 bal\t10.0.0.7\tbackend\t\n\
                 db1\t10.0.0.8\tdatabase\trole=database\n";
    handle(&env, "member-join", stdin, &[])
        .code(6)
        .stderr_has(r"evil\nserver x");
    assert_eq!(
        sorted_servers(&env),
        ["good1 10.0.0.1:8080", "good2 10.0.0.4:3000"]
    );
    assert!(env.output_text().contains("backend api"));
    assert!(!env.output_text().contains("6.6.6.6"));
    let names: Vec<_> = fs::read_dir(&env.nodes)
        .unwrap()
        .filter_map(std::result::Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(names.len(), 2, "only the two good nodes");
    // Leave and failed events remove; user events and queries do nothing.
    for (event, code) in [("user", 0), ("query", 0), ("member-failed", 0)] {
        handle(
            &env,
            event,
            "good1\t10.0.0.1\tbackend\t\n",
            &["--on-failed", "keep"],
        )
        .code(code);
    }
    assert_eq!(env.servers().len(), 2);
    handle(&env, "member-leave", "good1\t10.0.0.1\tbackend\t\n", &[]).code(0);
    assert_eq!(env.servers(), ["good2 10.0.0.4:3000"]);
    handle(&env, "", "", &[]).code(1);
}

#[test]
fn one_event_with_1000_members_is_one_render() {
    let env = TestEnv::new();
    let mut stdin = String::new();
    for i in 0..1000 {
        let (a, b) = (i / 250, i % 250 + 1);
        let _ = writeln!(
            stdin,
            "m{i:04}\t10.3.{a}.{b}\tbackend\trole=backend,port=3000"
        );
    }
    let started = Instant::now();
    let stderr = handle(&env, "member-join", &stdin, &[]).code(0).stderr;
    eprintln!(
        "1,000-member member-join (debug build): {:?}",
        started.elapsed()
    );
    assert_eq!(stderr.matches("wrote `").count(), 1, "one render");
    assert_eq!(env.servers().len(), 1000);
}

#[test]
fn sync_from_a_lone_agent_changes_nothing() {
    if tool("serf").is_none() {
        return;
    }
    let env = TestEnv::new();
    env.ok(&["--no-check", "add", "w1", "127.0.0.5:3001"]);
    // A balancer that has just started and joined no one sees only itself.
    let (bal, _) = balancer(&env, "bal-lone");
    env.call(&["--no-check", "sync", "--rpc-addr", &bal.rpc])
        .unchanged()
        .code(5)
        .stderr_has("the Serf agent sees 1 alive member(s), so no other member: nothing changed");
    // The lab's sync service lives with that: it says so and tries again later.
    env.program(Path::new(LAB).join("ha/services/hacfg-sync/run"))
        .env("SERF_RPC_ADDR", &bal.rpc)
        .env("HACFG_SYNC_INTERVAL", "0")
        .env("HACFG_NO_CHECK", "true")
        .env("HACFG_NODES_DIR", &env.nodes)
        .env("HACFG_OUTPUT", &env.output)
        .code(0)
        .stderr_has("sync failed (exit 5)");
    assert_eq!(env.servers(), ["w1 127.0.0.5:3001"]);
}

/// A backend agent started directly, with tags of the test's choosing.
#[track_caller]
fn tagged_backend(env: &TestEnv, name: &str, ip: &str, join: &str, tags: &[&str]) -> Agent {
    let mut script = String::from("#!/bin/sh\nexec serf agent -node \"$SERF_NODE\" ");
    let _ = write!(
        script,
        "-bind {ip}:{} -rpc-addr \"$SERF_RPC_ADDR\" -join {join} -tag role=backend",
        free_port()
    );
    for tag in tags {
        let _ = write!(script, " -tag '{tag}'");
    }
    let path = env.write(&format!("{name}.sh"), &(script + "\n"));
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    Agent::start(path.to_str().unwrap(), name, &[])
}

#[test]
fn a_poison_member_is_held_back_and_serf_and_sync_agree_on_tags() {
    let (Some(_), Some(_)) = (tool("serf"), tool("haproxy")) else {
        return;
    };
    let env = TestEnv::new();
    let (bal, join) = balancer(&env, "bal-p");
    // A member whose backend tag collides with the built-in `listen stats`,
    // and one with a cosmetic tag that is not a valid tag value.
    let _poison = tagged_backend(&env, "poison", "127.0.0.8", &join, &["backend=stats"]);
    let _cosmetic = tagged_backend(&env, "cosmetic", "127.0.0.9", &join, &["descr=my web"]);
    let _good = Agent::backend("good", "127.0.0.10", 3005, &join);
    assert!(
        wait_until(15.0, || sorted_servers(&env).len() == 2),
        "{:?}",
        sorted_servers(&env)
    );
    // Give the poison member's event time to have been handled too. Its
    // handler records the held node (`.hacfg.held`) under the lock, before
    // its render, and logs why only once it has let the lock go: when that
    // event comes last, the record shows before the log line does. Wait for
    // the line itself.
    let log = || fs::read_to_string(env.path("serf.log")).unwrap_or_default();
    assert!(
        wait_until(10.0, || env.nodes.join(".hacfg.held").exists()
            && log().contains("HAProxy refused node `poison`")),
        "{}",
        log()
    );
    assert_eq!(
        sorted_servers(&env),
        ["cosmetic 127.0.0.9:3000", "good 127.0.0.10:3005"]
    );
    assert!(!env.output_text().contains("backend stats"));
    assert!(
        log().contains("member `cosmetic`: dropped a tag"),
        "{}",
        log()
    );
    // sync sees the same members the same way: the folder stays as it is,
    // and the held node is reported, as a later event would.
    let live = env.output_text();
    let done = env
        .call(&["sync", "--rpc-addr", &bal.rpc])
        .code(0)
        .stderr_has("member `cosmetic`: dropped a tag")
        .stderr_has("still held back, refused by HAProxy before: `poison`")
        .stderr
        .clone();
    assert!(!done.contains("skipped"), "{done}");
    assert_eq!(env.output_text(), live);
}

/// Servers settle outside the handler: a burst of joins and leaves through
/// a real agent, with checks far slower than Serf's 1 s warning, leaves
/// the live servers equal to the members, and the agent never warns that
/// its handler was slow.
#[test]
fn a_burst_of_joins_and_leaves_never_slows_the_agent() {
    let (Some(_), Some(_)) = (tool("serf"), tool("haproxy")) else {
        return;
    };
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &[]).checks_every("1500ms").start() else {
        return;
    };
    let (bal, join) = balancer_with(
        &env,
        "bal",
        &[
            ("HACFG_RELOAD", "1".into()),
            (
                "HACFG_MASTER_SOCKET",
                pool.master_socket.display().to_string(),
            ),
            ("HACFG_VARS", pool.vars_env()),
        ],
    );
    let agents: Vec<Agent> = (2..6)
        .map(|i| Agent::backend(&format!("web{i}"), &format!("127.0.0.{i}"), 3000 + i, &join))
        .collect();
    let live = || {
        let mut names: Vec<String> = pool.servers().into_iter().map(|l| l.name).collect();
        names.sort();
        names
    };
    let all: Vec<String> = (2..6).map(|i| format!("web{i}")).collect();
    assert!(wait_until(20.0, || live() == all), "{:?}", live());
    let mut agents = agents.into_iter();
    for agent in agents.by_ref().take(2) {
        agent.leave();
    }
    let log = || fs::read_to_string(env.path("serf.log")).unwrap_or_default();
    assert!(wait_until(20.0, || live() == all[2..]), "{:?}", live());
    assert!(wait_until(20.0, || !env
        .nodes
        .join(".hacfg.pending")
        .exists()));
    // The handler writes the file once HAProxy runs it: HAProxy's servers
    // and the pending record may be final a moment before it is written.
    let left = ["web4 127.0.0.4:3004", "web5 127.0.0.5:3005"];
    assert!(
        wait_until(20.0, || sorted_servers(&env) == left),
        "{:?}\n{}",
        sorted_servers(&env),
        log()
    );
    assert_eq!(pool.reloads(), (0, 0), "a member event reloaded");
    let agent_log = bal.log();
    assert!(
        !agent_log.contains("slow, execution exceeding"),
        "{agent_log}"
    );
    let log = log();
    assert!(log.contains("runtime: added `nodes/web4`"), "{log}");
    assert!(
        log.contains("settle: removed `nodes/web2`")
            || log.contains("runtime: drained `nodes/web2`"),
        "{log}"
    );
}

/// A `serf` stand-in, `$TMP/NAME`, whose `members -format=json` lists the
/// balancer and `members` (name, address, tags as JSON object members),
/// all alive.
fn fake_serf(env: &TestEnv, name: &str, members: &[(&str, &str, &str)]) -> String {
    let mut list = vec![
        r#"{"name":"bal","addr":"127.0.0.1:7946","tags":{"role":"balancer"},"status":"alive"}"#
            .to_string(),
    ];
    for (member, addr, tags) in members {
        list.push(format!(
            r#"{{"name":"{member}","addr":"{addr}:7946","tags":{{"role":"backend"{tags}}},"status":"alive"}}"#
        ));
    }
    let json = env.write(
        &format!("{name}.json"),
        &format!("{{\"members\":[{}]}}\n", list.join(",")),
    );
    let fake = env.write(name, &format!("#!/bin/sh\ncat '{}'\n", json.display()));
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    fake.display().to_string()
}

/// A partitioned agent that still sees one other member is thin evidence
/// too: sync refuses to remove more than half of the nodes (exit 5, nothing
/// changed) unless `--allow-empty`; half of them it removes.
#[test]
fn sync_refuses_to_remove_more_than_half_of_the_nodes() {
    let env = TestEnv::new();
    for i in 0..10 {
        env.ok(&[
            "--no-check",
            "add",
            &format!("w{i}"),
            &format!("10.0.0.{}", i + 1),
            "--no-render",
        ]);
    }
    env.ok(&["--no-check", "render"]);
    let fake = fake_serf(&env, "one", &[("w0", "10.0.0.1", "")]);
    let sync = |extra: &[&str]| {
        env.call(&[&["--no-check", "sync", "--serf-bin", &fake][..], extra].concat())
    };
    sync(&[])
        .unchanged()
        .code(5)
        .stderr_has("sync would remove 9 of the 10 nodes (more than half): nothing changed");
    let plan = sync(&["--dry-run"]).unchanged().code(5).stdout;
    assert_eq!(plan.matches("- `w").count(), 9, "{plan}");
    assert_eq!(env.servers().len(), 10);
    // Half of the pool may go: five members back five of the ten nodes.
    let five: Vec<(String, String)> = (0..5)
        .map(|i| (format!("w{i}"), format!("10.0.0.{}", i + 1)))
        .collect();
    let five: Vec<(&str, &str, &str)> = five
        .iter()
        .map(|(n, a)| (n.as_str(), a.as_str(), ""))
        .collect();
    let half = fake_serf(&env, "five", &five);
    env.call(&["--no-check", "sync", "--serf-bin", &half])
        .code(0);
    assert_eq!(env.servers().len(), 5);
    // The operator's word applies a larger shrink.
    sync(&["--allow-empty"]).code(0);
    assert_eq!(env.servers(), ["w0 10.0.0.1:3000"]);
}

/// A member whose weight tag is out of range keeps its place, with the
/// tag dropped and a warning, in `serf` and `sync` alike.
#[test]
fn a_member_with_an_out_of_range_weight_is_kept_by_serf_and_sync() {
    let env = TestEnv::new();
    handle(
        &env,
        "member-join",
        "w1\t10.0.0.1\tbackend\trole=backend,weight=300\nw2\t10.0.0.2\tbackend\trole=backend\n",
        &[],
    )
    .code(0)
    .stderr_has("member `w1`: dropped tag `weight`: invalid weight \"300\"");
    assert_eq!(
        sorted_servers(&env),
        ["w1 10.0.0.1:3000", "w2 10.0.0.2:3000"]
    );
    let fake = fake_serf(
        &env,
        "heavy",
        &[
            ("w1", "10.0.0.1", r#","weight":"300""#),
            ("w2", "10.0.0.2", ""),
        ],
    );
    let done = env
        .call(&["--no-check", "sync", "--serf-bin", &fake])
        .code(0);
    done.stderr_has("member `w1`: dropped tag `weight`: invalid weight \"300\"");
    assert!(!done.stderr.contains("removed node"), "{}", done.stderr);
    assert_eq!(
        sorted_servers(&env),
        ["w1 10.0.0.1:3000", "w2 10.0.0.2:3000"]
    );
    assert!(
        env.output_text()
            .contains("server w1 10.0.0.1:3000 check weight 1 ")
    );
    // Any other member sync skips keeps its node as it is: an alive member
    // backs it.
    let fake = fake_serf(
        &env,
        "portless",
        &[("w1", "10.0.0.1", r#","port":"0""#), ("w2", "10.0.0.2", "")],
    );
    env.call(&["--no-check", "sync", "--serf-bin", &fake])
        .code(6)
        .stderr_has("skipped: member `w1`: invalid port \"0\"");
    assert_eq!(
        sorted_servers(&env),
        ["w1 10.0.0.1:3000", "w2 10.0.0.2:3000"]
    );
}

/// A skipped member is named in its warning, and a member described again
/// and again in one event (20,000 identical lines, then a newer one) is
/// staged once, from its last line, with one note.
#[test]
fn skipped_members_are_named_and_repeated_lines_staged_once() {
    let env = TestEnv::new();
    let mut stdin = "s1\t10.0.0.1\tbackend\trole=backend\n".repeat(20_000);
    stdin.push_str("s1\t10.0.0.2\tbackend\trole=backend\n");
    stdin.push_str("bad-addr\t10.0.0.5 backup\tbackend\t\n");
    let done = handle(&env, "member-join", &stdin, &[])
        .within(30.0)
        .code(6);
    done.stderr_has("member-join: skipped: member `bad-addr`: invalid address \"10.0.0.5 backup\"")
        .stderr_has("member-join: 1 member(s) skipped");
    assert_eq!(
        done.stderr.matches("added/updated node").count(),
        1,
        "{}",
        done.stderr
    );
    assert_eq!(
        done.stderr.matches("repeated").count(),
        1,
        "{}",
        done.stderr
    );
    assert_eq!(env.servers(), ["s1 10.0.0.2:3000"]);
    // A leave repeated is one removal.
    let stdin = "s1\t10.0.0.2\tbackend\t\n".repeat(1000);
    let done = handle(&env, "member-leave", &stdin, &[]).code(0);
    assert_eq!(
        done.stderr.matches("removed node `s1`").count(),
        1,
        "{}",
        done.stderr
    );
    assert!(!done.stderr.contains("was not there"), "{}", done.stderr);
}

#[test]
fn a_failed_member_whose_server_serves_stays_through_events_and_sync() {
    let (Some(_), Some(_)) = (tool("serf"), tool("haproxy")) else {
        return;
    };
    let env = TestEnv::new();
    let Some(mut pool) = Pool::backends(&env, &["v1"]).start() else {
        return;
    };
    let settings = [
        ("HACFG_ON_FAILED", "verify".to_string()),
        ("HACFG_RELOAD", "1".into()),
        (
            "HACFG_MASTER_SOCKET",
            pool.master_socket.display().to_string(),
        ),
        ("HACFG_VARS", pool.vars_env()),
    ];
    let (bal, join) = balancer_with(&env, "bal-v", &settings);
    let port = pool["v1"].port;
    let v1 = Agent::backend("v1", "127.0.0.1", port, &join);
    let serving = |name: &str| {
        pool.servers()
            .iter()
            .any(|s| s.name == name && s.op_state == 2)
    };
    assert!(wait_until(15.0, || serving("v1")), "{}", bal.log());
    let log = || fs::read_to_string(env.path("serf.log")).unwrap_or_default();

    drop(v1); // kill -9: Serf reports it failed, but its HTTP server answers
    assert!(
        wait_until(30.0, || log().contains("node `v1` stays")),
        "{}",
        log()
    );
    assert!(env.nodes.join("v1").exists());
    assert_eq!(pool.answering(5).into_iter().collect::<Vec<_>>(), ["v1"]);
    // `sync` sees a failed member and asks HAProxy too: it stays.
    let sync = env.call(&["sync", "--rpc-addr", &bal.rpc, "--allow-empty"]);
    let mut sync = sync.args(pool.runtime_args(&[]));
    for (key, value) in &settings {
        sync = sync.env(key, value);
    }
    sync.code(0);
    assert!(
        env.nodes.join("v1").exists(),
        "sync removed a member HAProxy sees UP"
    );
    // Its dry run says so, whatever the mode: gone, kept, or HAProxy's call.
    for (mode, line) in [("remove", "- `v1`"), ("verify", "? `v1` (failed: goes if")] {
        let plan = env.call(&["sync", "--rpc-addr", &bal.rpc, "--allow-empty", "--dry-run"]);
        let plan = plan
            .args(pool.runtime_args(&["--on-failed", mode]))
            .code(0)
            .stdout;
        assert!(plan.contains(line), "{mode}: {plan}");
    }
    let plan = env.call(&["sync", "--rpc-addr", &bal.rpc, "--allow-empty", "--dry-run"]);
    let plan = plan.args(["--on-failed", "keep"]).code(0).stdout;
    assert!(!plan.contains("v1"), "keep: {plan}");

    // Its server stops: the handler's worker removes the node.
    pool.stop("v1");
    assert!(
        wait_until(20.0, || !env.nodes.join("v1").exists()),
        "{}",
        log()
    );
    assert!(wait_until(5.0, || !pool
        .servers()
        .iter()
        .any(|s| s.name == "v1")));
    drop(bal);
}

/// A stay kept from a missed join must not judge a member Serf sees alive
/// (issue 23, item 7): `sync` sees s1 alive and ends its stay, although
/// s1's node file does not change; so when s1's app restarts and an
/// unrelated member joins meanwhile, s1 stays in the folder and in HAProxy.
#[test]
fn sync_ends_the_stay_of_a_member_serf_sees_alive() {
    let (Some(_), Some(_)) = (tool("serf"), tool("haproxy")) else {
        return;
    };
    let env = TestEnv::new();
    let Some(mut pool) = Pool::backends(&env, &["s1", "s3"]).start() else {
        return;
    };
    let settings = [
        ("HACFG_ON_FAILED", "verify".to_string()),
        ("HACFG_RELOAD", "1".into()),
        (
            "HACFG_MASTER_SOCKET",
            pool.master_socket.display().to_string(),
        ),
        ("HACFG_VARS", pool.vars_env()),
    ];
    let (bal, join) = balancer_with(&env, "bal-s", &settings);
    let s1 = pool["s1"].port;
    let _s1 = Agent::backend("s1", "127.0.0.1", s1, &join);
    let seen = |pool: &Pool, name: &str, op: u8| {
        pool.servers()
            .iter()
            .any(|s| s.name == name && s.op_state == op)
    };
    assert!(wait_until(15.0, || seen(&pool, "s1", 2)), "{}", bal.log());
    // Serf called s1 failed while HAProxy saw it UP: it stays. Its join
    // back was missed (a handler that failed, a full queue).
    let mut args = pool.runtime_args(&["--check-timeout", "0.1"]);
    args.extend(["serf", "--on-failed", "verify"]);
    env.call(&args)
        .env("SERF_EVENT", "member-failed")
        .env("SERF_SELF_NAME", "bal-s")
        .stdin(format!("s1\t127.0.0.1\tbackend\trole=backend,port={s1}\n"))
        .code(0);
    assert!(env.nodes.join(".hacfg.failed").exists());
    // sync sees s1 alive: its stay ends.
    let sync = ["--check-timeout", "0.1", "sync", "--rpc-addr", &bal.rpc];
    let sync = [
        &pool.runtime_args(&[])[..],
        &sync,
        &["--on-failed", "verify"],
    ]
    .concat();
    env.call(&sync).code(0);
    assert!(
        !env.nodes.join(".hacfg.failed").exists(),
        "sync kept the stay of a member it sees alive"
    );
    // s1's app restarts; meanwhile s3 joins, and its event reviews stays.
    pool.stop("s1");
    assert!(wait_until(10.0, || seen(&pool, "s1", 0)));
    let _s3 = Agent::backend("s3", "127.0.0.1", pool["s3"].port, &join);
    let log = || fs::read_to_string(env.path("serf.log")).unwrap_or_default();
    assert!(
        wait_until(15.0, || env.output_text().contains("server s3 ")),
        "{}",
        log()
    );
    assert!(env.nodes.join("s1").exists(), "s1 was removed:\n{}", log());
    assert!(env.output_text().contains("server s1 "));
    assert!(pool.servers().iter().any(|s| s.name == "s1"));
    drop(bal);
}
