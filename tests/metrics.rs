//! `--metrics-file`: the Prometheus text file, read by the real
//! `prometheus_client` parser (PyPI) in a python3 subprocess, across runs of
//! the real binary, against a real HAProxy, with hostile previous files and
//! runs side by side.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::harness::{TestEnv, tool, wait_until};
use crate::live::Pool;

/// Prints every sample as `name{k="v",...}` → value, and every family's type.
const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
samples, types = {}, {}
with open(sys.argv[1], encoding="utf-8") as f:
    text = f.read()
for family in text_string_to_metric_families(text):
    types[family.name] = family.type
    for s in family.samples:
        labels = ",".join('%s="%s"' % kv for kv in sorted(s.labels.items()))
        samples[s.name + ("{%s}" % labels if labels else "")] = s.value
print(json.dumps({"samples": samples, "types": types}))
"#;

/// python3 with `prometheus_client`; `None` (the test is skipped) where
/// either is missing, except in CI.
#[track_caller]
fn parser() -> Option<PathBuf> {
    let python = tool("python3")?;
    let has = Command::new(&python)
        .args(["-c", "import prometheus_client.parser"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 lacks prometheus_client, and CI needs it \
             (python3 -m pip install prometheus_client)"
        );
        eprintln!("note: python3 lacks prometheus_client; skipping this test");
        return None;
    }
    Some(python)
}

/// The file as the real parser reads it.
struct Metrics {
    samples: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
}

impl Metrics {
    #[track_caller]
    fn read(python: &Path, path: &Path) -> Metrics {
        let out = Command::new(python)
            .arg("-c")
            .arg(PARSE)
            .arg(path)
            .output()
            .expect("run python3");
        assert!(
            out.status.success(),
            "prometheus_client refused `{}`:\n{}\n{}",
            path.display(),
            String::from_utf8_lossy(&out.stderr),
            fs::read_to_string(path).unwrap_or_default()
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let map = |key: &str| json[key].as_object().expect("an object").clone();
        Metrics {
            samples: map("samples")
                .into_iter()
                .map(|(k, v)| (k, v.as_f64().expect("a number")))
                .collect(),
            types: map("types")
                .into_iter()
                .map(|(k, v)| (k, v.as_str().expect("a type").to_string()))
                .collect(),
        }
    }

    /// One sample; missing is a failure.
    #[track_caller]
    fn value(&self, key: &str) -> f64 {
        match self.samples.get(key) {
            Some(v) => *v,
            None => panic!("no sample {key} in {:#?}", self.samples),
        }
    }

    /// One sample that must be a whole number (a count, a code).
    #[track_caller]
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    fn get(&self, key: &str) -> u64 {
        let v = self.value(key);
        assert!(v >= 0.0 && v.fract().abs() < f64::EPSILON, "{key} is {v}");
        v as u64
    }

    #[track_caller]
    fn runs(&self, command: &str) -> u64 {
        self.get(&format!("hacfg_runs_total{{command=\"{command}\"}}"))
    }

    #[track_caller]
    fn errors(&self, code: u8) -> u64 {
        self.get(&format!("hacfg_errors_total{{exit_code=\"{code}\"}}"))
    }

    #[track_caller]
    fn ops(&self, kind: &str) -> u64 {
        self.get(&format!(
            "hacfg_runtime_operations_total{{kind=\"{kind}\"}}"
        ))
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn counters_grow_across_runs_and_a_real_parser_reads_them() {
    let env = TestEnv::new();
    let Some(python) = parser() else { return };
    let prom = env.path("hacfg.prom");
    let run = |args: &[&str], code: i32| {
        env.call(args).env("HACFG_METRICS_FILE", &prom).code(code);
    };
    run(&["--no-check", "add", "s1", "127.0.0.2:8080"], 0);
    // The default check: the real `haproxy -c` where it is installed.
    run(&["add", "s2", "127.0.0.3:8080"], 0);
    run(&["render"], 0);
    let first = Metrics::read(&python, &prom);
    assert_eq!((first.runs("add"), first.runs("render")), (2, 1));
    assert_eq!(first.get("hacfg_nodes"), 2);
    assert_eq!(first.get("hacfg_held_nodes"), 0);
    assert_eq!(first.get("hacfg_last_run_exit_code"), 0);
    assert!((now() - first.value("hacfg_last_run_timestamp_seconds")).abs() < 60.0);
    let took = first.value("hacfg_last_run_duration_seconds");
    assert!(took > 0.0 && took < 60.0, "{took}");
    assert_eq!(first.types["hacfg_runs"], "counter");
    assert_eq!(first.types["hacfg_nodes"], "gauge");
    // No runtime API was read: the gauge is left out, not a made-up 0.
    assert!(!first.samples.contains_key("hacfg_servers_live"));
    // Read-only commands leave the file alone.
    let before = fs::read(&prom).unwrap();
    run(&["list"], 0);
    run(&["render", "--diff"], 0);
    run(&["render", "--stdout"], 0);
    assert_eq!(fs::read(&prom).unwrap(), before);
    // Failures count, with their exit codes; the code stays the run's own.
    run(&["--no-check", "remove", "--strict", "nope"], 1);
    run(
        &["--check-cmd", "false {}", "add", "s3", "127.0.0.4:8080"],
        3,
    );
    run(&["-q", "-v", "remove", "s1"], 2);
    let last = Metrics::read(&python, &prom);
    assert_eq!((last.runs("add"), last.runs("remove")), (3, 2));
    assert_eq!(last.runs("render"), 1);
    assert_eq!((last.errors(1), last.errors(2), last.errors(3)), (1, 1, 1));
    assert_eq!(last.errors(4), 0);
    assert_eq!(last.get("hacfg_last_run_exit_code"), 2);
    // The usage error rendered nothing: the nodes of the last render stay.
    assert_eq!(last.get("hacfg_nodes"), 3);
    assert_eq!(last.get("hacfg_reloads_total{result=\"ok\"}"), 0);
    // A Serf event with a member skipped: a partial success, exit 6.
    env.call(&["--no-check", "serf"])
        .env("SERF_EVENT", "member-join")
        .env("HACFG_METRICS_FILE", &prom)
        .stdin("n4\t127.0.0.5\tbackend\t\nbad!\t127.0.0.6\tbackend\t\n")
        .code(6);
    let serf = Metrics::read(&python, &prom);
    assert_eq!((serf.runs("serf"), serf.errors(6)), (1, 1));
    assert_eq!(serf.get("hacfg_nodes"), 4);
    assert_eq!(serf.get("hacfg_last_run_exit_code"), 6);
}

#[test]
fn the_etcd_revision_the_folder_reflects_is_a_gauge_kept_across_runs() {
    let env = TestEnv::new();
    let Some(python) = parser() else { return };
    let prom = env.path("hacfg.prom");
    let event = |revision: u64, name: &str| {
        env.call(&["--no-check", "etcd"])
            .env("HACFG_METRICS_FILE", &prom)
            .env("ETCD_WATCH_REVISION", revision.to_string())
            .env("ETCD_WATCH_EVENT_TYPE", "\"PUT\"")
            .env("ETCD_WATCH_KEY", format!("\"/hacfg/nodes/{name}\""))
            .env("ETCD_WATCH_VALUE", "\"127.0.0.2:8080\"")
            .code(0);
    };
    event(7, "s1");
    let first = Metrics::read(&python, &prom);
    assert_eq!(first.get("hacfg_etcd_revision"), 7);
    assert_eq!(first.types["hacfg_etcd_revision"], "gauge");
    // An older event changes nothing, the gauge included; a run that
    // knows no revision carries it.
    event(5, "s2");
    env.call(&["--no-check", "render"])
        .env("HACFG_METRICS_FILE", &prom)
        .code(0);
    let last = Metrics::read(&python, &prom);
    assert_eq!(last.runs("etcd"), 2);
    assert_eq!(last.get("hacfg_etcd_revision"), 7);
    assert_eq!(last.get("hacfg_nodes"), 1);
}

#[test]
fn runtime_operations_and_reloads_are_counted_by_the_runs_and_the_worker() {
    let env = TestEnv::new();
    let Some(python) = parser() else { return };
    let Some(pool) = Pool::backends(&env, &["s1", "s2"]).nodes(&["s1"]).start() else {
        return;
    };
    let prom = env.path("hacfg.prom");
    let prom_arg = prom.to_str().unwrap();
    let run = |args: &[&str], code: i32| {
        let mut extra = vec!["--metrics-file", prom_arg];
        extra.extend_from_slice(args);
        env.call(&pool.runtime_args(&extra)).code(code);
    };
    let text = || fs::read_to_string(&prom).unwrap_or_default();
    run(&["add", "s2", &pool["s2"].endpoint()], 0);
    let added = Metrics::read(&python, &prom);
    assert_eq!(added.ops("add"), 1);
    assert_eq!(added.get("hacfg_servers_live"), 2);
    assert_eq!(added.get("hacfg_nodes"), 2);
    assert_eq!(added.get("hacfg_reloads_total{result=\"ok\"}"), 0);
    if !pool.init_state() {
        // The worker (which gets the file by argument, not by variable)
        // sets s2 ready after its first check, and counts it.
        let ready = wait_until(10.0, || {
            text().contains("kind=\"ready\"} 1\n") && text().contains("command=\"worker\"} 1\n")
        });
        assert!(ready, "{}", text());
    }
    run(&["remove", "s2"], 0);
    assert!(
        wait_until(10.0, || text().contains("kind=\"delete\"} 1\n")),
        "{}",
        text()
    );
    let removed = Metrics::read(&python, &prom);
    assert_eq!((removed.ops("drain"), removed.ops("delete")), (1, 1));
    assert_eq!(removed.runs("add") + removed.runs("remove"), 2);
    assert_eq!(
        removed.get("hacfg_pending_servers{why=\"removal\"}"),
        0,
        "the worker finished the removal"
    );
    // A reload through the master socket, then one that fails.
    run(&["reload"], 0);
    assert_eq!(pool.reloads(), (1, 0));
    let args = pool.args(&[
        "--metrics-file",
        prom_arg,
        "--reload-cmd",
        "false",
        "reload",
    ]);
    env.call(&args).code(4);
    let reloaded = Metrics::read(&python, &prom);
    assert_eq!(reloaded.get("hacfg_reloads_total{result=\"ok\"}"), 1);
    assert_eq!(reloaded.get("hacfg_reloads_total{result=\"failed\"}"), 1);
    assert_eq!((reloaded.runs("reload"), reloaded.errors(4)), (2, 1));
    assert_eq!(reloaded.get("hacfg_last_run_exit_code"), 4);
}

#[test]
fn hostile_previous_files_neither_crash_nor_block_nor_change_the_exit_code() {
    let env = TestEnv::new();
    let Some(python) = parser() else { return };
    let log = env.path("hacfg.log");
    let run = |prom: &Path| {
        let args = [
            "--no-check",
            "--log-file",
            log.to_str().unwrap(),
            "--metrics-file",
            prom.to_str().unwrap(),
            "add",
            "s1",
            "127.0.0.2",
            "--no-render",
        ];
        env.call(&args).within(10.0).code(0).stderr
    };
    // Larger than the 1 MiB read back: counters start again.
    let huge = env.path("huge.prom");
    let line = "hacfg_runs_total{command=\"add\"} 5\n";
    fs::write(&huge, line.repeat(2 << 20 >> 5)).unwrap();
    let err = run(&huge);
    assert!(err.contains("cannot be read back"), "{err}");
    assert_eq!(Metrics::read(&python, &huge).runs("add"), 1);
    // Binary junk and malformed lines around a valid one: the valid one is
    // kept, the rest ignored with one warning line.
    let junk = env.path("junk.prom");
    let mut bytes: Vec<u8> = (0..=255).collect();
    bytes.extend(b"\nhacfg_runs_total{command=\"add\"} 41\n");
    bytes.extend(b"hacfg_runs_total{command=\"add\\\"} 1e999\nhacfg_reloads_total -3\n\xff\xfe\n");
    fs::write(&junk, &bytes).unwrap();
    let err = run(&junk);
    let warned: Vec<&str> = err.lines().filter(|l| l.contains("junk.prom")).collect();
    assert_eq!(warned.len(), 1, "{err}");
    assert!(warned[0].contains("ignored 5 line(s)"), "{err}");
    let kept = Metrics::read(&python, &junk);
    assert_eq!(kept.runs("add"), 42);
    assert_eq!(kept.get("hacfg_reloads_total{result=\"failed\"}"), 0);
    // A FIFO and a link to an endless device: neither opened for reading.
    let fifo = env.path("fifo.prom");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let to_zero = env.path("link.prom");
    std::os::unix::fs::symlink("/dev/zero", &to_zero).unwrap();
    for path in [&fifo, &to_zero] {
        let err = run(path);
        assert!(err.contains("cannot be read back"), "{err}");
        assert!(fs::symlink_metadata(path).unwrap().is_file());
        assert_eq!(Metrics::read(&python, path).runs("add"), 1);
    }
    // A folder that does not exist: one warning naming the file, in the
    // log file too, and the run's exit code.
    let missing = env.path("no/such/folder/hacfg.prom");
    let err = run(&missing);
    let warning = "unable to write metrics file `$TMP/no/such/folder/hacfg.prom`";
    assert_eq!(err.matches(warning).count(), 1, "{err}");
    let logged = fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("warning: unable to write metrics file"),
        "{logged}"
    );
}

#[test]
fn a_lock_held_elsewhere_is_waited_for_only_briefly() {
    let env = TestEnv::new();
    let prom = env.path("hacfg.prom");
    let lock = fs::File::create(env.path("hacfg.prom.lock")).unwrap();
    lock.lock().unwrap();
    let started = Instant::now();
    let done = env
        .call(&["add", "s1", "127.0.0.2", "--no-render"])
        .env("HACFG_METRICS_FILE", &prom)
        .within(10.0)
        .code(0);
    assert!(started.elapsed() < Duration::from_secs(5));
    // The message names the lock and its holder: this test's process.
    done.stderr_has("this run is not counted")
        .stderr_has("hacfg.prom.lock` is still held after 1s")
        .stderr_has(&format!("held by PID {}", std::process::id()));
    assert!(!prom.exists());
    drop(lock);
    env.call(&["add", "s1", "127.0.0.2", "--no-render"])
        .env("HACFG_METRICS_FILE", &prom)
        .code(0);
    assert!(
        fs::read_to_string(&prom)
            .unwrap()
            .contains("command=\"add\"} 1\n")
    );
}

#[test]
fn runs_side_by_side_lose_no_count() {
    let env = TestEnv::new();
    let Some(python) = parser() else { return };
    let prom = env.path("hacfg.prom");
    let names: Vec<String> = (1..=8).map(|i| format!("n{i}")).collect();
    let mut running = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let address = format!("127.0.0.{}", i + 2);
        let args = ["add", name.as_str(), &address, "--no-render"];
        running.push(env.call(&args).env("HACFG_METRICS_FILE", &prom).spawn());
    }
    for _ in 0..4 {
        let args = ["--no-check", "render"];
        running.push(env.call(&args).env("HACFG_METRICS_FILE", &prom).spawn());
    }
    for run in running {
        run.code(0);
    }
    let m = Metrics::read(&python, &prom);
    assert_eq!((m.runs("add"), m.runs("render")), (8, 4));
    assert_eq!(m.errors(1), 0);
}
