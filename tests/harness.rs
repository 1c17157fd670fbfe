//! The test environment: a temp dir with `nodes/`, an output path and
//! templates, and the real `hacfg` binary run with `HACFG_*` cleared.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process_group};

pub const HACFG: &str = env!("CARGO_BIN_EXE_hacfg");

pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub nodes: PathBuf,
    pub output: PathBuf,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        let dir = tempfile::tempdir().expect("temp dir");
        let nodes = dir.path().join("nodes");
        let output = dir.path().join("etc/haproxy.cfg");
        fs::create_dir_all(&nodes).expect("nodes dir");
        fs::create_dir_all(output.parent().expect("output folder")).expect("output folder");
        TestEnv { dir, nodes, output }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `hacfg --nodes-dir … --output … ARGS`, with no `HACFG_*`/`SERF_*`
    /// from the developer's shell and no haproxy check unless asked for.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = clean_command(HACFG);
        cmd.arg("--nodes-dir").arg(&self.nodes);
        cmd.arg("--output").arg(&self.output);
        cmd.args(args);
        cmd.stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run hacfg")
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.call(args).code(0).stdout
    }

    /// Runs and asserts exit `code`; returns stderr (temp dir as `$TMP`).
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        self.call(args).code(code).stderr
    }

    pub fn write(&self, rel: &str, content: &str) -> PathBuf {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(&path, content).expect("write");
        path
    }

    pub fn output_text(&self) -> String {
        fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// Every file under the temp dir with its bytes: "nothing changed" is
    /// this map being equal before and after. Links, FIFOs and sockets are
    /// recorded by kind (and a link by its target), never opened. The
    /// index is left out: a cache, rewritten while its entries are young.
    pub fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if entry.file_name() == ".hacfg.index" {
                    continue;
                }
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                let content = if kind.is_dir() {
                    walk(&path, out);
                    continue;
                } else if kind.is_symlink() {
                    let target = fs::read_link(&path).unwrap_or_default();
                    format!("link to {}", target.display()).into_bytes()
                } else if kind.is_file() {
                    fs::read(&path).unwrap_or_default()
                } else {
                    format!("{kind:?}").into_bytes()
                };
                out.insert(path, content);
            }
        }
        let mut map = BTreeMap::new();
        walk(self.dir.path(), &mut map);
        map
    }

    /// Server lines of the output, `name address:port`.
    pub fn servers(&self) -> Vec<String> {
        self.output_text()
            .lines()
            .filter_map(|l| l.trim().strip_prefix("server "))
            .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
            .collect()
    }
}

impl TestEnv {
    /// A run of hacfg to set up and check, just-style:
    /// `env.call(&["add", …]).stdin(…).code(1).stderr_is("…")`.
    pub fn call(&self, args: &[&str]) -> Call<'_> {
        Call {
            env: self,
            cmd: self.cmd(args),
            stdin: Vec::new(),
            deadline: Duration::from_secs(60),
            unchanged: false,
        }
    }
}

/// One run of the real binary, with a deadline: a regression that hangs
/// fails the test instead of stalling the suite.
pub struct Call<'a> {
    env: &'a TestEnv,
    cmd: Command,
    stdin: Vec<u8>,
    deadline: Duration,
    unchanged: bool,
}

/// What a finished call printed.
pub struct Done {
    pub stdout: String,
    /// stderr with the temp dir's path replaced by `$TMP`.
    pub stderr: String,
    pub elapsed: Duration,
}

impl Call<'_> {
    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = bytes.into();
        self
    }

    /// Fail the test if the call takes longer than `secs`.
    pub fn within(mut self, secs: f64) -> Self {
        self.deadline = Duration::from_secs_f64(secs);
        self
    }

    /// Also assert that no file under the temp dir changed.
    pub fn unchanged(mut self) -> Self {
        self.unchanged = true;
        self
    }

    /// Runs, asserting the exit code; kills the call at its deadline.
    pub fn code(mut self, code: i32) -> Done {
        let before = self.unchanged.then(|| self.env.snapshot());
        let started = Instant::now();
        let mut child = self
            .cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("run hacfg");
        let mut input = child.stdin.take().expect("stdin");
        let bytes = std::mem::take(&mut self.stdin);
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&bytes);
        });
        let mut stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let out = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = stdout.read_to_end(&mut s);
            s
        });
        let err = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = stderr.read_to_end(&mut s);
            s
        });
        let finished = wait_until(self.deadline.as_secs_f64(), || {
            matches!(child.try_wait(), Ok(Some(_)))
        });
        if !finished {
            // The process group this test created.
            let _ = kill_process_group(Pid::from_child(&child), Signal::KILL);
        }
        let status = child.wait().expect("wait");
        let elapsed = started.elapsed();
        let _ = writer.join();
        let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
        let stdout = text(out.join().unwrap_or_default());
        let tmp = self.env.dir.path().to_string_lossy().into_owned();
        let stderr = text(err.join().unwrap_or_default()).replace(&tmp, "$TMP");
        assert!(finished, "hacfg hung for {elapsed:?}; stderr:\n{stderr}");
        assert_eq!(status.code(), Some(code), "stderr:\n{stderr}");
        if let Some(before) = before {
            let after = self.env.snapshot();
            let changed: Vec<&PathBuf> = before
                .keys()
                .chain(after.keys())
                .filter(|p| before.get(*p) != after.get(*p))
                .collect();
            assert!(
                changed.is_empty(),
                "files changed: {changed:?}; stderr:\n{stderr}"
            );
        }
        Done {
            stdout,
            stderr,
            elapsed,
        }
    }
}

impl Done {
    /// stderr is exactly `expected` (with `$TMP` for the temp dir).
    pub fn stderr_is(&self, expected: &str) -> &Self {
        assert_eq!(self.stderr, expected);
        self
    }

    pub fn stderr_has(&self, part: &str) -> &Self {
        assert!(
            self.stderr.contains(part),
            "{part:?} not in stderr:\n{}",
            self.stderr
        );
        self
    }
}

/// A command for `program` (hacfg, or a script that calls it) that sees
/// none of the developer's `HACFG_*`/`SERF_*` variables and finds the
/// `hacfg` under test first on `PATH`.
pub fn clean_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("HACFG_") || key.starts_with("SERF_") {
            cmd.env_remove(key.as_ref());
        }
    }
    let hacfg_dir = Path::new(HACFG)
        .parent()
        .expect("binary folder")
        .to_path_buf();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::iter::once(hacfg_dir).chain(std::env::split_paths(&path));
    cmd.env("PATH", std::env::join_paths(dirs).expect("PATH"));
    cmd
}

/// Finds a tool the tests need. In CI (`CI` set) a missing tool fails the
/// test; elsewhere the test is skipped with a note, so `cargo test` works on
/// a machine with only Rust.
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "`{name}` is not installed, and CI needs it (apt-get install {name})"
        );
        eprintln!("note: `{name}` not installed; skipping this test");
    }
    found
}

/// `haproxy -c -f path` succeeded.
pub fn haproxy_accepts(haproxy: &Path, config: &Path) -> bool {
    let out = Command::new(haproxy)
        .args(["-c", "-f"])
        .arg(config)
        .output()
        .expect("run haproxy -c");
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    }
    out.status.success()
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Polls `f` every 20 ms until it is true or `secs` pass.
pub fn wait_until(secs: f64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs_f64(secs);
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    f()
}
