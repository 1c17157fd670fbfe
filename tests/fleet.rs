//! `hacfg fleet`: three real balancers (Serf agents with `hacfg serf` as
//! their handler, each with its own folder and output), compared through a
//! real Serf query; one of them runs a real HAProxy with its runtime API.

use serde_json::Value;

use crate::harness::{Done, TestEnv, tool, wait_until};
use crate::live::Pool;
use crate::serf::{Agent, balancer_with};

/// `hacfg serf` as Serf runs it for a query: the name in the environment,
/// the payload on stdin.
fn query<'e>(env: &'e TestEnv, name: &str, extra: &[&str]) -> crate::harness::Call<'e> {
    env.call(&[&["--no-check"][..], extra, &["serf"]].concat())
        .env("SERF_EVENT", "query")
        .env("SERF_QUERY_NAME", name)
        .env("SERF_SELF_NAME", "bal")
        .stdin("some payload\n")
}

/// Serf sends a query handler's stdout and stderr back as its answer: the
/// digest query gets one line on stdout and nothing else; any other query
/// gets nothing at all (before, `hacfg: query: ignored` on stderr was sent
/// back as an answer), and the folder is left as it is.
#[test]
fn the_handler_answers_only_its_query_and_only_on_stdout() {
    let env = TestEnv::new();
    env.ok(&["--no-check", "add", "w1", "10.0.0.1:80"]);
    let done = query(&env, "hacfg-digest", &["-v"]).unchanged().code(0);
    assert_eq!(done.stderr, "");
    let line = done.stdout.as_str();
    assert!(line.starts_with("hacfg-digest/1 rendered="), "{line}");
    assert!(
        line.contains(" live=unknown nodes=1 held=0 pending=0 hacfg="),
        "{line}"
    );
    assert!(line.ends_with('\n') && line.lines().count() == 1, "{line}");
    assert!(line.len() < 512, "{line}");
    for name in ["other", "", "hacfg-digest2"] {
        let done = query(&env, name, &[]).unchanged().code(0);
        assert_eq!((done.stdout.as_str(), done.stderr.as_str()), ("", ""));
    }
}

/// Nothing hacfg has to say about its own settings reaches a query's
/// answer: a log or metrics file that cannot be written, a bad variable.
/// The log file gets what it can, and a query counts as no run.
#[test]
fn a_query_answer_holds_the_digest_alone_whatever_goes_wrong() {
    let env = TestEnv::new();
    env.ok(&["--no-check", "add", "w1", "10.0.0.1:80"]);
    let bad = [
        "--log-file",
        "/nonexistent/log",
        "--metrics-file",
        "/nonexistent/m.prom",
    ];
    let done = query(&env, "hacfg-digest", &bad).unchanged().code(0);
    assert_eq!(done.stderr, "");
    assert!(
        done.stdout.starts_with("hacfg-digest/1 "),
        "{}",
        done.stdout
    );
    let metrics = env.path("m.prom");
    let metrics = metrics.to_str().unwrap();
    query(&env, "hacfg-digest", &["--metrics-file", metrics]).code(0);
    assert!(!env.path("m.prom").exists(), "a query counted as a run");
    let done = query(&env, "other", &[])
        .env("HACFG_DEFAULT_PORT", "abc")
        .unchanged()
        .code(2);
    assert_eq!((done.stdout.as_str(), done.stderr.as_str()), ("", ""));
}

/// The rows of `hacfg fleet --json`, by name: (marks, digest).
fn rows(stdout: &str) -> Vec<(String, Vec<String>, Value)> {
    let list: Vec<Value> = serde_json::from_str(stdout).expect("a JSON array");
    list.into_iter()
        .map(|row| {
            let marks = row["marks"].as_array().expect("marks").iter();
            let marks = marks.map(|m| m.as_str().expect("a mark").to_string());
            let name = row["name"].as_str().expect("a name").to_string();
            (name, marks.collect(), row["digest"].clone())
        })
        .collect()
}

fn marks(rows: &[(String, Vec<String>, Value)]) -> Vec<(&str, String)> {
    rows.iter()
        .map(|(name, marks, _)| (name.as_str(), marks.join(", ")))
        .collect()
}

/// Three balancers in one cluster with the same two nodes; bal-b runs a
/// real HAProxy (its runtime API through the master socket), the other two
/// only render. Fields drop in order: agents, then HAProxy, then folders.
struct Three {
    a: Agent,
    _b: Agent,
    c: Agent,
    pool: Pool,
    /// The nodes' names and endpoints.
    nodes: [(&'static str, String); 2],
    envs: [TestEnv; 3],
}

impl Three {
    #[track_caller]
    fn start() -> Option<Three> {
        let envs = [TestEnv::new(), TestEnv::new(), TestEnv::new()];
        let pool = Pool::backends(&envs[1], &["s1", "s2"])
            .nodes(&["s1", "s2"])
            .start()?;
        let nodes = [("s1", pool["s1"].endpoint()), ("s2", pool["s2"].endpoint())];
        for env in [&envs[0], &envs[2]] {
            for (name, endpoint) in &nodes {
                env.ok(&["--no-check", "add", name, endpoint]);
            }
        }
        let (a, join) = balancer_with(&envs[0], "bal-a", &[]);
        let extra = [
            ("SERF_JOIN", join.clone()),
            (
                "HACFG_MASTER_SOCKET",
                pool.master_socket.display().to_string(),
            ),
            ("HACFG_VARS", pool.vars_env()),
        ];
        let (b, _) = balancer_with(&envs[1], "bal-b", &extra);
        let (c, _) = balancer_with(&envs[2], "bal-c", &[("SERF_JOIN", join)]);
        let alive = || {
            let members = a.members().unwrap_or_default();
            members.lines().filter(|l| l.contains(" alive ")).count()
        };
        assert!(wait_until(15.0, || alive() == 3), "{:?}", a.members());
        Some(Three {
            a,
            _b: b,
            c,
            pool,
            nodes,
            envs,
        })
    }

    /// `hacfg fleet` through bal-a's agent, its table or (`json`) its
    /// rows, with a 1 s query (the default is 3 s).
    fn ask(&self, json: bool) -> Done {
        let mut args = vec!["fleet", "--rpc-addr", &self.a.rpc, "--query-timeout", "1"];
        if json {
            args.push("--json");
        }
        self.envs[0].call(&args).run()
    }

    /// `hacfg fleet` through bal-a's agent: its rows, asserted to carry
    /// `expected` marks and to exit `code`.
    #[track_caller]
    fn fleet(&self, code: i32, expected: &[(&str, &str)]) -> Vec<(String, Vec<String>, Value)> {
        self.fleet_again(code, expected, || ())
    }

    /// [`Three::fleet`], asked again (twice at most, `again` run before
    /// each) when a balancer that should answer was late on a loaded
    /// machine (see [`Three::ask`]). A mark
    /// other than a late "no answer" fails at once.
    #[track_caller]
    fn fleet_again(
        &self,
        code: i32,
        expected: &[(&str, &str)],
        again: impl Fn(),
    ) -> Vec<(String, Vec<String>, Value)> {
        let expected: Vec<(&str, String)> =
            expected.iter().map(|(n, m)| (*n, m.to_string())).collect();
        // Unanswered (whether or not the query was received, acked), or
        // not listed at all (Serf called it failed meanwhile).
        let late = |got: &[(&str, String)]| {
            expected.iter().any(|(name, mark)| {
                got.iter().find(|(n, _)| n == name).is_none_or(|(_, m)| {
                    m.starts_with("no answer") && !mark.starts_with("no answer")
                })
            })
        };
        for attempt in 1.. {
            let done = self.ask(true);
            let rows = rows(&done.stdout);
            let got = marks(&rows);
            if attempt < 3 && late(&got) {
                eprintln!("attempt {attempt}: a balancer was late: {got:?}");
                again();
                continue;
            }
            assert_eq!(got, expected, "stderr:\n{}", done.stderr);
            assert_eq!(done.code, Some(code), "stderr:\n{}", done.stderr);
            return rows;
        }
        unreachable!("the loop returns or fails by its third attempt")
    }

    /// `hacfg fleet`'s table when every balancer agrees, asked again (twice
    /// at most) while one was late.
    #[track_caller]
    fn table(&self) -> String {
        let mut done = self.ask(false);
        for _ in 1..3 {
            if !done.stdout.contains("no answer") {
                break;
            }
            done = self.ask(false);
        }
        assert_eq!(
            done.code,
            Some(0),
            "{}\nstderr:\n{}",
            done.stdout,
            done.stderr
        );
        done.stdout
    }

    /// Waits (a few queries at most) until all three balancers are alive
    /// and answer, agreeing or not: an agent runs its handlers one at a
    /// time, so a query waits behind the join events the balancers' own
    /// start caused.
    fn settle(&self) {
        let answered = || {
            let stdout = self.ask(true).stdout;
            let Ok(Value::Array(rows)) = serde_json::from_str::<Value>(&stdout) else {
                return false;
            };
            let unanswered = |row: &Value| row["marks"].to_string().contains("no answer");
            rows.len() == 3 && !rows.iter().any(unanswered)
        };
        let _ = (0..5).any(|_| answered());
    }
}

#[test]
fn fleet_marks_the_balancer_that_differs_drifted_or_did_not_answer() {
    let (Some(_), Some(_)) = (tool("serf"), tool("haproxy")) else {
        return;
    };
    let Some(three) = Three::start() else {
        return;
    };
    let (envs, pool, nodes) = (&three.envs, &three.pool, &three.nodes);
    let fleet = |code: i32, expected: &[(&str, &str)]| three.fleet(code, expected);
    let bal_a = &three.a;

    // (1) All equal: three rows, none marked; bal-b's HAProxy runs its file.
    three.settle();
    let all = fleet(0, &[("bal-a", ""), ("bal-b", ""), ("bal-c", "")]);
    let (a, b) = (&all[0].2, &all[1].2);
    assert_eq!(
        (a["live"].as_str(), a["nodes"].as_u64()),
        (Some("unknown"), Some(2))
    );
    assert_eq!(b["live"], b["rendered"]);
    assert_eq!(a["rendered"], b["rendered"]);
    let (major, minor) = pool.version();
    let running = format!("{major}.{minor}.");
    assert_eq!(
        b["haproxy"].as_str().map(|v| v.starts_with(&running)),
        Some(true),
        "{b}"
    );
    let table = three.table();
    assert!(table.starts_with("BALANCER  RENDERED  "), "{table}");
    assert_eq!(
        table.lines().filter(|l| l.ends_with("  ok")).count(),
        3,
        "{table}"
    );
    // Any other query gets no answer from any of them.
    let other = std::process::Command::new("serf")
        .args([
            "query",
            "-format=json",
            "-timeout=1s",
            "-rpc-addr",
            &bal_a.rpc,
            "other",
        ])
        .output()
        .expect("serf query");
    let other: Value = serde_json::from_slice(&other.stdout).expect("serf's JSON");
    assert_eq!(other["Responses"], serde_json::json!({}), "{other}");

    // (2) One balancer with a node missing.
    envs[2].ok(&["--no-check", "remove", "s2"]);
    let missing = fleet(9, &[("bal-a", ""), ("bal-b", ""), ("bal-c", "differs")]);
    assert_eq!(missing[2].2["nodes"].as_u64(), Some(1));
    envs[2].ok(&["--no-check", "add", "s2", &nodes[1].1]);

    // (3) bal-b's HAProxy changed behind hacfg's back: live ≠ rendered.
    let backend = pool.servers()[0].backend.clone();
    pool.command(&format!("set server {backend}/s1 addr 127.0.0.99 port 1"));
    let drifted = fleet(9, &[("bal-a", ""), ("bal-b", "drift"), ("bal-c", "")]);
    let b = &drifted[1].2;
    assert_ne!(b["live"], b["rendered"]);
    assert_eq!(b["rendered"], drifted[0].2["rendered"]);

    // (4) bal-c's agent stopped: still an alive member, but no answer.
    // Serf calls a paused member failed within seconds: before asking
    // again, bal-c runs until all three answer, then is paused afresh.
    three.c.pause();
    let expected = [("bal-a", ""), ("bal-b", "drift"), ("bal-c", "no answer")];
    let silent = three.fleet_again(9, &expected, || {
        three.c.resume();
        three.settle();
        three.c.pause();
    });
    assert!(silent[2].2.is_null());
}

/// A role no alive member has is an error, not an empty agreement.
#[test]
fn fleet_without_balancers_is_an_error() {
    if tool("serf").is_none() {
        return;
    }
    let env = TestEnv::new();
    let (bal, _) = balancer_with(&env, "bal-x", &[]);
    env.call(&[
        "fleet",
        "--rpc-addr",
        &bal.rpc,
        "--balancer-role",
        "edge",
        "--query-timeout",
        "0.3",
    ])
    .code(1)
    .stderr_has("fleet: no alive Serf member has role `edge`, and none answered");
    env.call(&["fleet", "--balancer-role", "a|b"])
        .code(2)
        .stderr_has("invalid balancer role \"a|b\"");
    drop::<Agent>(bal);
}

/// A `serf` stand-in for `fleet`: `members` lists bal-a and bal-b alive
/// (role `balancer`); `query` brings bal-a's digest and, from bal-b, an
/// answer of `size` bytes.
fn huge_answer_serf(env: &TestEnv, size: usize) -> String {
    use std::os::unix::fs::PermissionsExt;
    let member = |name: &str| {
        format!(
            r#"{{"name":"{name}","addr":"127.0.0.1:7946","tags":{{"role":"balancer"}},"status":"alive"}}"#
        )
    };
    let members = env.write(
        "members.json",
        &format!(r#"{{"members":[{},{}]}}"#, member("bal-a"), member("bal-b")),
    );
    let digest = "hacfg-digest/1 rendered=0000000000000001 live=unknown nodes=1 held=0 \
                  pending=0 hacfg=0.1.0 haproxy=2.6.12";
    let head = env.write(
        "head.json",
        &format!(r#"{{"Acks":["bal-a","bal-b"],"Responses":{{"bal-a":"{digest}\n","bal-b":""#),
    );
    let script = format!(
        "#!/bin/sh\ncase \"$1\" in\nmembers) cat '{}' ;;\nquery) cat '{}'; head -c {size} \
         /dev/zero | tr '\\0' x; printf '\"}}}}\\n' ;;\nesac\n",
        members.display(),
        head.display()
    );
    let fake = env.write(&format!("serf-{size}"), &script);
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    fake.display().to_string()
}

/// `hacfg fleet --json --serf-bin FAKE`: its exit code, stdout, stderr and
/// peak resident memory in MiB. A small python3 starts it and reports its
/// children's peak: a child's peak counts the memory of whoever forked it
/// (the fork's copy), and the test binary itself is large and grows.
fn fleet_memory(fake: &str) -> (i32, String, String, i64) {
    const MEASURE: &str = "import resource, subprocess, sys\n\
        code = subprocess.run(sys.argv[2:]).returncode\n\
        open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n\
        sys.exit(code)\n";
    let peak = tempfile::NamedTempFile::new().unwrap();
    let done = crate::harness::clean_command("python3")
        .args(["-c", MEASURE])
        .arg(peak.path())
        .arg(crate::harness::HACFG)
        .args([
            "fleet",
            "--json",
            "--serf-bin",
            fake,
            "--query-timeout",
            "1",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("python3");
    let kib: i64 = std::fs::read_to_string(peak.path())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    let code = done.status.code().unwrap_or(-1);
    (code, text(done.stdout), text(done.stderr), kib / 1024)
}

/// Answers are read within a memory bound (issue 23, item 12): one 8 MiB
/// answer is a `malformed` row, one 60 MiB answer makes the output longer
/// than `fleet` reads (an error naming it); neither costs more than a few
/// tens of MiB (before, a 60 MB answer cost 482 MB).
#[test]
fn a_huge_answer_costs_fleet_a_bounded_amount_of_memory() {
    let env = TestEnv::new();
    let (code, stdout, stderr, mib) = fleet_memory(&huge_answer_serf(&env, 8 << 20));
    assert_eq!(code, 9, "{stderr}");
    assert_eq!(
        marks(&rows(&stdout)),
        [
            ("bal-a", String::new()),
            (
                "bal-b",
                "malformed: answer of 8388608 bytes is longer than 512".into()
            )
        ]
    );
    assert!(mib < 64, "fleet used {mib} MiB for an 8 MiB answer");
    let (code, stdout, stderr, mib) = fleet_memory(&huge_answer_serf(&env, 60 << 20));
    assert_eq!((code, stdout.as_str()), (1, ""), "{stderr}");
    assert!(
        stderr.contains("query hacfg-digest` printed more than 16 MiB: its answers are not read"),
        "{stderr}"
    );
    assert!(mib < 64, "fleet used {mib} MiB for a 60 MiB answer");
}
