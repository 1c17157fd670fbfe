//! The test environment: a temp dir with `nodes/`, an output path and
//! templates, and the real `hacfg` binary run with `HACFG_*` cleared.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

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
        let out = self.run(args);
        assert!(
            out.status.success(),
            "hacfg {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs and asserts exit `code`; returns stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "hacfg {args:?}:\n{stderr}");
        stderr
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
    /// this map being equal before and after.
    pub fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.insert(path.clone(), fs::read(&path).unwrap_or_default());
                }
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
