//! The test environment: a temp dir with `nodes/`, an output path and
//! templates, and the real `hacfg` binary run with `HACFG_*` cleared.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process_group};

pub const HACFG: &str = env!("CARGO_BIN_EXE_hacfg");

pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub nodes: PathBuf,
    pub output: PathBuf,
    /// hacfg (and the `haproxy -c` it runs) resolves names only from a
    /// private `/etc/hosts`, never through this machine's name server.
    offline: bool,
}

impl TestEnv {
    #[track_caller]
    pub fn new() -> TestEnv {
        let dir = tempfile::tempdir().expect("temp dir");
        let nodes = dir.path().join("nodes");
        let output = dir.path().join("etc/haproxy.cfg");
        fs::create_dir_all(&nodes).expect("nodes dir");
        fs::create_dir_all(output.parent().expect("output folder")).expect("output folder");
        TestEnv {
            dir,
            nodes,
            output,
            offline: false,
        }
    }

    /// The same, but every hacfg run resolves names offline: it runs in a
    /// mount namespace of its own (`unshare -m`, root only) whose
    /// `/etc/hosts` knows only localhost and whose `resolv.conf` points at
    /// the loopback, where no name server listens. A test whose nodes have
    /// host names (`web1.invalid`) never makes the machine's resolver look
    /// one up.
    #[track_caller]
    pub fn offline() -> TestEnv {
        let root = rustix::process::geteuid().is_root();
        if !root || !Path::new("/usr/bin/unshare").exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs as root with unshare"
            );
            eprintln!("note: not root or no unshare; names resolve as the machine does");
            return TestEnv::new();
        }
        let mut env = TestEnv::new();
        fs::write(env.path("hosts"), "127.0.0.1 localhost\n::1 localhost\n").unwrap();
        let resolv = "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n";
        fs::write(env.path("resolv.conf"), resolv).unwrap();
        env.offline = true;
        env
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `state_file=…` in the temp dir: `init` creates the state file its
    /// config names, and a reload without a socket empties it, which must
    /// not be the machine's own.
    pub fn state_var(&self) -> String {
        format!("state_file={}", self.path("server-state").display())
    }

    /// `hacfg --nodes-dir … --output … ARGS`: the usual run, just-style:
    /// `env.call(&["add", …]).stdin(…).code(1).stderr_is("…")`.
    pub fn call(&self, args: &[&str]) -> Call<'_> {
        self.hacfg()
            .arg("--nodes-dir")
            .arg(&self.nodes)
            .arg("--output")
            .arg(&self.output)
            .args(args)
    }

    /// `hacfg` without the folder flags, for tests of how it finds its
    /// folders or whom it runs as.
    pub fn hacfg(&self) -> Call<'_> {
        if self.offline {
            let script = r#"/bin/mount --bind "$HOSTS" /etc/hosts || exit 92
                /bin/mount --bind "$RESOLV" /etc/resolv.conf || exit 93
                exec "$HACFG" "$@""#;
            let private = [
                "--mount",
                "--propagation",
                "private",
                "/bin/sh",
                "-c",
                script,
            ];
            return self
                .program("/usr/bin/unshare")
                .args(private)
                .arg("sh")
                .env("HACFG", HACFG)
                .env("HOSTS", self.path("hosts"))
                .env("RESOLV", self.path("resolv.conf"));
        }
        self.program(HACFG)
    }

    /// A run of `program` (hacfg, or a script or tool that calls it): the
    /// one way the tests run anything that runs hacfg.
    pub fn program(&self, program: impl AsRef<OsStr>) -> Call<'_> {
        let mut cmd = clean_command(program);
        // The built-in template's server-state file, which `init` creates
        // and reloads empty, is the temp dir's, never the machine's own
        // (`--var` and a test's own HACFG_VARS win over it).
        cmd.env("HACFG_VARS", self.state_var());
        Call {
            env: self,
            cmd,
            stdin: Vec::new(),
            deadline: Duration::from_secs(60),
            unchanged: false,
            close_stdout_after: None,
        }
    }

    /// Runs and asserts success; returns stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        self.call(args).code(0).stdout
    }

    /// Runs and asserts exit `code`; returns stderr (temp dir as `$TMP`).
    #[track_caller]
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        self.call(args).code(code).stderr
    }

    #[track_caller]
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

/// One run, with a deadline: a regression that hangs fails the test
/// instead of stalling the suite. Its stdout and stderr are captured, never
/// inherited: they show in a failing assertion's message, not in the
/// suite's output.
pub struct Call<'a> {
    env: &'a TestEnv,
    cmd: Command,
    stdin: Vec<u8>,
    deadline: Duration,
    unchanged: bool,
    close_stdout_after: Option<usize>,
}

/// What a finished call printed.
pub struct Done {
    /// The exit code; `None` when a signal ended the run.
    pub code: Option<i32>,
    pub stdout: String,
    /// stderr with the temp dir's path replaced by `$TMP`.
    pub stderr: String,
    pub elapsed: Duration,
}

impl<'a> Call<'a> {
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.cmd.arg(arg);
        self
    }

    pub fn args(mut self, args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> Self {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    /// No environment at all but what is set after this.
    pub fn env_clear(mut self) -> Self {
        self.cmd.env_clear();
        self
    }

    /// Runs as user `uid`, group `gid`.
    pub fn user(mut self, uid: u32, gid: u32) -> Self {
        self.cmd.uid(uid).gid(gid);
        self
    }

    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = bytes.into();
        self
    }

    /// Reads `bytes` of stdout, then closes it, as `| head -c N` would.
    pub fn close_stdout_after(mut self, bytes: usize) -> Self {
        self.close_stdout_after = Some(bytes);
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
    #[track_caller]
    pub fn code(self, code: i32) -> Done {
        self.spawn().code(code)
    }

    /// Runs to the end, asserting only that it ended in time (and, if
    /// asked, changed nothing), whatever its exit.
    #[track_caller]
    pub fn run(self) -> Done {
        self.spawn().wait()
    }

    /// Starts the call in its own process group and returns at once, for
    /// runs side by side or a run to kill; its deadline counts from now.
    #[track_caller]
    pub fn spawn(mut self) -> Running<'a> {
        let before = self.unchanged.then(|| self.env.snapshot());
        let started = Instant::now();
        let mut child = self
            .cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("start the call");
        let mut input = child.stdin.take().expect("stdin");
        let bytes = std::mem::take(&mut self.stdin);
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&bytes);
        });
        let mut stdout = child.stdout.take().expect("stdout");
        let limit = self.close_stdout_after;
        let out = std::thread::spawn(move || {
            let mut s = Vec::new();
            match limit {
                // Dropping the pipe at the end of the thread closes it.
                Some(n) => (&mut stdout).take(n as u64).read_to_end(&mut s),
                None => stdout.read_to_end(&mut s),
            }
            .ok();
            s
        });
        let err = capture(child.stderr.take().expect("stderr"));
        Running {
            env: self.env,
            child,
            started,
            deadline: self.deadline,
            before,
            close_stdout_after: limit,
            writer,
            out,
            err,
        }
    }
}

/// A call under way.
pub struct Running<'a> {
    env: &'a TestEnv,
    child: Child,
    started: Instant,
    deadline: Duration,
    before: Option<BTreeMap<PathBuf, Vec<u8>>>,
    close_stdout_after: Option<usize>,
    writer: JoinHandle<()>,
    out: JoinHandle<Vec<u8>>,
    err: JoinHandle<Vec<u8>>,
}

impl Running<'_> {
    /// The process id, which is also its process group's id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits, asserting the exit code.
    #[track_caller]
    pub fn code(self, code: i32) -> Done {
        let (done, changed) = self.finish();
        assert_eq!(done.code, Some(code), "stderr:\n{}", done.stderr);
        assert_unchanged(&changed, &done);
        done
    }

    /// Waits, whatever the exit.
    #[track_caller]
    pub fn wait(self) -> Done {
        let (done, changed) = self.finish();
        assert_unchanged(&changed, &done);
        done
    }

    /// Waits until the deadline, then kills the process group; asserts the
    /// call ended in time. Also returns the files that changed, if asked.
    #[track_caller]
    fn finish(mut self) -> (Done, Vec<PathBuf>) {
        let left = self.deadline.saturating_sub(self.started.elapsed());
        let finished = wait_until(left.as_secs_f64(), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !finished {
            // SAFETY: kill(2) on the process group this test created.
            let _ = kill_process_group(Pid::from_child(&self.child), Signal::KILL);
        }
        let status = self.child.wait().expect("wait");
        let elapsed = self.started.elapsed();
        let _ = self.writer.join();
        let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
        let stdout = self.out.join().unwrap_or_default();
        let tmp = self.env.dir.path().to_string_lossy().into_owned();
        let stderr = text(self.err.join().unwrap_or_default()).replace(&tmp, "$TMP");
        assert!(finished, "the call hung for {elapsed:?}; stderr:\n{stderr}");
        if let Some(n) = self.close_stdout_after {
            assert_eq!(stdout.len(), n, "stdout ended early; stderr:\n{stderr}");
        }
        let changed = match self.before {
            None => Vec::new(),
            Some(before) => {
                let after = self.env.snapshot();
                before
                    .keys()
                    .chain(after.keys())
                    .filter(|p| before.get(*p) != after.get(*p))
                    .cloned()
                    .collect()
            }
        };
        let done = Done {
            code: status.code(),
            stdout: text(stdout),
            stderr,
            elapsed,
        };
        (done, changed)
    }
}

#[track_caller]
fn assert_unchanged(changed: &[PathBuf], done: &Done) {
    assert!(
        changed.is_empty(),
        "files changed: {changed:?}; stderr:\n{}",
        done.stderr
    );
}

/// Reads `pipe` to its end on a thread of its own.
fn capture(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = pipe.read_to_end(&mut s);
        s
    })
}

impl Done {
    /// stderr is exactly `expected` (with `$TMP` for the temp dir).
    #[track_caller]
    pub fn stderr_is(&self, expected: &str) -> &Self {
        assert_eq!(self.stderr, expected);
        self
    }

    #[track_caller]
    pub fn stdout_has(&self, part: &str) -> &Self {
        assert!(
            self.stdout.contains(part),
            "{part:?} not in stdout:\n{}",
            self.stdout
        );
        self
    }

    #[track_caller]
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
/// `hacfg` under test first on `PATH`. Runs to completion go through
/// [`TestEnv::program`], which builds on this; only daemons that run hacfg
/// (the lab's Serf agents) use it directly.
pub fn clean_command(program: impl AsRef<OsStr>) -> Command {
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
#[track_caller]
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

/// A port that was free a moment ago on 127.0.0.1, for TCP and UDP (Serf
/// binds both). Taken below the kernel's ephemeral range, in turn from a
/// start that differs per process: a port the kernel picked (`bind :0`)
/// may go to an outgoing connection before the test's server binds it,
/// and no test hands out the same port twice.
pub fn free_port() -> u16 {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Read once: (the ephemeral range's first port, this process's start).
    static RANGE: OnceLock<(u32, u32)> = OnceLock::new();
    let &(low, start) = RANGE.get_or_init(|| {
        let ephemeral = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok();
        let low = ephemeral
            .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
            .unwrap_or(32768);
        let span = low.saturating_sub(10_000).max(1);
        (low, std::process::id().wrapping_mul(7919) % span)
    });
    let (first, span) = (10_000, low.saturating_sub(10_000));
    for _ in 0..span {
        let port = first + (start + NEXT.fetch_add(1, Ordering::SeqCst) % span) % span;
        let port = u16::try_from(port).expect("a port below the ephemeral range");
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
        if tcp.is_ok() && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    eprintln!("free_port: no free port below the ephemeral range ({low}); one the kernel picks");
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
