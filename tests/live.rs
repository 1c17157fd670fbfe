//! Live components for tests: a pool of tiny HTTP backends behind a
//! master-worker HAProxy, on free 127.0.0.1 ports. Dropping them stops
//! them, even when a test fails.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::ops::{Deref, Index};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process_group};

use crate::harness::{TestEnv, free_port, tool, wait_until};

/// The live fixture: named HTTP backends, nodes for some of them in the
/// env's folder, and a master-worker HAProxy serving what hacfg rendered.
/// Each test's opening says what runs before HAProxy starts:
///
/// ```ignore
/// let Some(pool) = Pool::backends(&env, &["s1", "s2"]).nodes(&["s1"]).start() else {
///     return; // no haproxy here
/// };
/// ```
///
/// It derefs to its [`Haproxy`]; `pool["s2"]` is the backend named `s2`.
pub struct Pool {
    // Declared first, so dropped first: HAProxy stops before its backends.
    hap: Haproxy,
    backends: Vec<Backend>,
}

/// A pool before HAProxy starts: its backends run, and the test puts nodes
/// in the folder.
pub struct PoolSetup<'e> {
    env: &'e TestEnv,
    backends: Vec<Backend>,
    /// The built-in template's `server_options`.
    server_options: String,
}

impl Pool {
    /// Starts one HTTP backend for each of `names`, each answering with
    /// its name; nothing is in the folder yet.
    pub fn backends<'e>(env: &'e TestEnv, names: &[&str]) -> PoolSetup<'e> {
        Pool::start_backends(env, names, false)
    }

    /// [`Pool::backends`] that keep their connections alive (HTTP/1.1's
    /// default), so HAProxy holds idle connections to them.
    pub fn keep_alive_backends<'e>(env: &'e TestEnv, names: &[&str]) -> PoolSetup<'e> {
        Pool::start_backends(env, names, true)
    }

    fn start_backends<'e>(env: &'e TestEnv, names: &[&str], keep_alive: bool) -> PoolSetup<'e> {
        PoolSetup {
            env,
            backends: names
                .iter()
                .map(|name| Backend::start(name, keep_alive))
                .collect(),
            // Short checks, so that servers settle quickly.
            server_options: "inter 100ms".into(),
        }
    }
}

impl PoolSetup<'_> {
    /// `hacfg add NAME ENDPOINT --no-render` for each of the named
    /// backends.
    #[track_caller]
    pub fn nodes(self, names: &[&str]) -> Self {
        for name in names {
            let endpoint = self[*name].endpoint();
            self.env.ok(&["add", name, &endpoint, "--no-render"]);
        }
        self
    }

    /// `hacfg add NAME ENDPOINT --no-render` for a node no backend of the
    /// pool serves.
    #[track_caller]
    pub fn node(self, name: &str, endpoint: &str) -> Self {
        self.env.ok(&["add", name, endpoint, "--no-render"]);
        self
    }

    /// Health checks every `inter` (HAProxy's syntax, e.g. `2s`).
    pub fn checks_every(mut self, inter: &str) -> Self {
        self.server_options = format!("inter {inter}");
        self
    }

    /// The built-in template's `server_options`, whole (`inter 100ms` by
    /// default).
    pub fn server_options(mut self, options: &str) -> Self {
        self.server_options = options.to_string();
        self
    }

    /// Renders the folder with the built-in template and starts HAProxy on
    /// it; `None` (the test is skipped) where haproxy is not installed.
    #[track_caller]
    pub fn start(self) -> Option<Pool> {
        let haproxy = tool("haproxy")?;
        Some(Pool {
            hap: Haproxy::start(&haproxy, self.env, &self.server_options),
            backends: self.backends,
        })
    }
}

#[track_caller]
fn named<'b>(backends: &'b [Backend], name: &str) -> &'b Backend {
    match backends.iter().find(|b| b.name == name) {
        Some(backend) => backend,
        None => panic!("no backend {name:?} in the pool"),
    }
}

impl Index<&str> for PoolSetup<'_> {
    type Output = Backend;

    #[track_caller]
    fn index(&self, name: &str) -> &Backend {
        named(&self.backends, name)
    }
}

/// A `GET /slow?ID` through HAProxy, in flight until [`Slow::finish`] (or
/// its drop) lets the backend answer it. Ids are unique in the process, so
/// finishing one never lets another test's request answer.
pub struct Slow {
    id: usize,
    request: Option<thread::JoinHandle<Result<String, String>>>,
}

/// The ids of the `Slow` requests let go.
static SLOW_RELEASED: Mutex<BTreeSet<usize>> = Mutex::new(BTreeSet::new());

impl Slow {
    /// Lets the request answer; the answering backend's name, or an error.
    pub fn finish(mut self) -> Result<String, String> {
        self.release();
        let request = self.request.take().expect("a request not yet finished");
        request.join().expect("the request's thread")
    }

    fn release(&self) {
        SLOW_RELEASED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(self.id);
    }

    fn released(id: usize) -> bool {
        SLOW_RELEASED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&id)
    }
}

impl Drop for Slow {
    fn drop(&mut self) {
        self.release();
    }
}

impl Pool {
    /// Starts a `GET /slow` through HAProxy: it stays in flight on the
    /// backend it reached until the test finishes it.
    pub fn slow(&self) -> Slow {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let (port, id) = (self.port, NEXT.fetch_add(1, Ordering::SeqCst));
        Slow {
            id,
            request: Some(thread::spawn(move || {
                get_path(port, &format!("/slow?{id}"))
            })),
        }
    }

    /// Stops the backend `name`: its port refuses connections, so
    /// HAProxy's checks soon see it DOWN.
    #[track_caller]
    pub fn stop(&mut self, name: &str) {
        let at = self.backends.iter().position(|b| b.name == name);
        drop(self.backends.remove(at.expect("a backend of the pool")));
    }
}

impl Index<&str> for Pool {
    type Output = Backend;

    #[track_caller]
    fn index(&self, name: &str) -> &Backend {
        named(&self.backends, name)
    }
}

impl Deref for Pool {
    type Target = Haproxy;

    fn deref(&self) -> &Haproxy {
        &self.hap
    }
}

/// An HTTP server on 127.0.0.1 that answers every request with its name.
pub struct Backend {
    pub name: String,
    pub port: u16,
    pub hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Backend {
    fn start(name: &str, keep_alive: bool) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(AtomicUsize::new(0));
        let (stop2, hits2, body) = (stop.clone(), hits.clone(), name.to_string());
        let thread = thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (hits, body) = (hits2.clone(), body.clone());
                thread::spawn(move || serve(conn, &body, &hits, keep_alive));
            }
        });
        Backend {
            name: name.to_string(),
            port,
            hits,
            stop,
            thread: Some(thread),
        }
    }

    /// `hacfg add` arguments for this backend.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// Answers requests on `conn`: one, or (`keep_alive`) as many as come
/// until the peer closes or is idle for 5 s, as a real HTTP/1.1 server does.
fn serve(mut conn: TcpStream, body: &str, hits: &AtomicUsize, keep_alive: bool) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    while answer(&mut conn, body, hits, keep_alive) && keep_alive {}
    let _ = conn.shutdown(Shutdown::Both);
}

/// Reads one request and answers it; false when there was none.
fn answer(conn: &mut TcpStream, body: &str, hits: &AtomicUsize, keep_alive: bool) -> bool {
    let mut buf = [0u8; 4096];
    let mut req = Vec::new();
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let head = req.starts_with(b"HEAD");
    if !head {
        hits.fetch_add(1, Ordering::SeqCst);
    }
    // A request in flight until the test lets it answer (30 s at most), as
    // a slow client download would be: never a fixed time a loaded machine
    // could outlast.
    if let Some(id) = slow_id(&req) {
        let since = Instant::now();
        while !Slow::released(id) && since.elapsed() < SLOW_CAP {
            thread::sleep(Duration::from_millis(10));
        }
    }
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{}\r\n{}",
        body.len(),
        if keep_alive {
            ""
        } else {
            "Connection: close\r\n"
        },
        if head { "" } else { body }
    );
    conn.write_all(reply.as_bytes()).is_ok()
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One `GET /` through HAProxy: the answering backend's name, or an error.
pub fn get(port: u16) -> Result<String, String> {
    get_path(port, "/")
}

/// Longest a `/slow` request waits for [`Slow::finish`].
const SLOW_CAP: Duration = Duration::from_secs(30);

/// The id of a `GET /slow?ID` request.
fn slow_id(req: &[u8]) -> Option<usize> {
    let rest = req.strip_prefix(b"GET /slow?")?;
    let end = rest.iter().position(|&b| b == b' ')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// One `GET path` through HAProxy (see [`Pool::slow`] for `/slow`): 5 s
/// for an answer, a `/slow` one as long as it may be held.
fn get_path(port: u16, path: &str) -> Result<String, String> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let wait = if path.starts_with("/slow") {
        SLOW_CAP + Duration::from_secs(5)
    } else {
        Duration::from_secs(5)
    };
    conn.set_read_timeout(Some(wait))
        .map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut resp = String::new();
    conn.read_to_string(&mut resp).map_err(|e| e.to_string())?;
    match resp.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
        _ => Err(format!("bad response: {resp:?}")),
    }
}

/// Continuous GETs through HAProxy on two threads, bounded in time, until
/// `finish`.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Traffic {
    pub fn start(port: u16) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let threads = (0..2)
            .map(|_| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                std::thread::spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(180);
                    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                        match get(port) {
                            Ok(_) => ok.fetch_add(1, Ordering::SeqCst),
                            Err(e) => {
                                eprintln!("request failed: {e}");
                                failed.fetch_add(1, Ordering::SeqCst)
                            }
                        };
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            ok,
            failed,
            threads,
        }
    }

    /// Stops; returns (ok, failed).
    pub fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

/// HAProxy in master-worker mode with a master CLI socket and a pid file,
/// serving the env's output, with the built-in template's `vars` pointing
/// at free loopback ports.
pub struct Haproxy {
    child: Child,
    /// HAProxy's stdout and stderr, shown when a test fails.
    log: File,
    pub port: u16,
    pub master_socket: PathBuf,
    pub pid_file: PathBuf,
    /// `--var` arguments for hacfg, so the built-in template binds here.
    pub vars: Vec<String>,
    /// hacfg's `--log-file` in runtime runs ([`Haproxy::runtime_args`]):
    /// the settle worker's only output.
    pub hacfg_log: PathBuf,
    /// `--reload --master-socket … --log-file …`.
    runtime: Vec<String>,
}

impl Haproxy {
    /// Renders the env's current nodes with the built-in template, then
    /// starts HAProxy on the result.
    #[track_caller]
    fn start(haproxy: &Path, env: &TestEnv, server_options: &str) -> Haproxy {
        let port = free_port();
        let vars = vec![
            "--var".into(),
            format!("frontend_bind=127.0.0.1:{port}"),
            "--var".into(),
            format!("stats_bind=127.0.0.1:{}", free_port()),
            "--var".into(),
            format!("stats_socket={}", env.path("admin.sock").display()),
            "--var".into(),
            format!("state_file={}", env.path("server-state").display()),
            "--var".into(),
            format!("server_options={server_options}"),
        ];
        let mut args: Vec<&str> = vars.iter().map(String::as_str).collect();
        args.extend(["--force", "render"]);
        env.ok(&args);
        let master_socket = env.path("master.sock");
        let pid_file = env.path("haproxy.pid");
        // Not in the env's folder, which tests snapshot: a file of its own.
        let log = tempfile::tempfile().expect("haproxy log");
        let child = Command::new(haproxy)
            .arg("-W")
            .arg("-S")
            .arg(&master_socket)
            .arg("-p")
            .arg(&pid_file)
            .arg("-f")
            .arg(&env.output)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("haproxy log"))
            .stderr(log.try_clone().expect("haproxy log"))
            .process_group(0)
            .spawn()
            .expect("start haproxy");
        let hacfg_log = env.path("hacfg.log");
        let runtime = vec![
            "--reload".into(),
            "--master-socket".into(),
            master_socket.display().to_string(),
            "--log-file".into(),
            hacfg_log.display().to_string(),
        ];
        let hap = Haproxy {
            child,
            log,
            port,
            master_socket,
            pid_file,
            vars,
            hacfg_log,
            runtime,
        };
        assert!(
            wait_until(10.0, || hap.show_proc().is_some() && hap.pid_file.exists()),
            "haproxy did not start:\n{}",
            hap.log()
        );
        assert!(
            wait_until(10.0, || TcpStream::connect(("127.0.0.1", port)).is_ok()),
            "haproxy does not listen on {port}:\n{}",
            hap.log()
        );
        hap
    }

    /// What HAProxy printed so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        let mut log = &self.log;
        let _ = log.rewind();
        let _ = log.read_to_string(&mut text);
        text
    }

    /// `show proc` from the master CLI.
    pub fn show_proc(&self) -> Option<String> {
        let out = self.exchange("show proc").ok()?;
        out.contains("master").then_some(out)
    }

    /// One command on the master socket, through hacfg's own client.
    fn exchange(&self, command: &str) -> anyhow::Result<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        hacfg::testing::exchange(&self.master_socket, command, deadline)
    }

    /// The master's (reloads, failed reloads) counters.
    #[track_caller]
    pub fn reloads(&self) -> (u64, u64) {
        // Right after a reload the master re-executes: retry for a moment.
        let mut text = None;
        wait_until(5.0, || {
            text = self.show_proc();
            text.is_some()
        });
        let state = hacfg::testing::parse_show_proc(&text.expect("show proc"));
        let state = state.expect("a master line");
        (state.reloads, state.failed)
    }

    /// A runtime command on the master socket (`@1 …`), as an operator
    /// would type it.
    #[track_caller]
    pub fn command(&self, command: &str) -> String {
        self.exchange(&format!("@1 {command}"))
            .expect("master socket")
    }

    /// The running version, `(major, minor)`.
    #[track_caller]
    pub fn version(&self) -> (u32, u32) {
        let info = self.command("show info");
        let version = info
            .lines()
            .find_map(|l| l.strip_prefix("Version: "))
            .expect("a version");
        let mut parts = version
            .split(['.', '-'])
            .map(|p| p.parse().expect("a number"));
        (parts.next().expect("major"), parts.next().expect("minor"))
    }

    /// Whether new servers start DOWN by HAProxy's own `init-state` (3.1
    /// and later) rather than in hacfg's drain.
    pub fn init_state(&self) -> bool {
        self.version() >= (3, 1)
    }

    /// The live servers, through hacfg's own parser.
    #[track_caller]
    pub fn servers(&self) -> Vec<hacfg::testing::Live> {
        hacfg::testing::parse_servers_state(&self.command("show servers state")).expect("state")
    }

    /// A `show stat` column of one server (`lbtot`, `scur`, …).
    #[track_caller]
    pub fn stat(&self, server: &str, column: &str) -> String {
        let text = self.command("show stat -1 4 -1");
        let header: Vec<&str> = text
            .lines()
            .next()
            .and_then(|h| h.strip_prefix("# "))
            .unwrap_or_default()
            .split(',')
            .collect();
        let at = header.iter().position(|h| *h == column).expect("column");
        text.lines()
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|f| f.get(1) == Some(&server))
            .and_then(|f| f.get(at).map(|v| (*v).to_string()))
            .unwrap_or_default()
    }

    /// The vars as HACFG_VARS (`KEY=VALUE,…`), as the lab passes them.
    pub fn vars_env(&self) -> String {
        let vars: Vec<&str> = self
            .vars
            .iter()
            .skip(1)
            .step_by(2)
            .map(String::as_str)
            .collect();
        vars.join(",")
    }

    /// hacfg arguments: the vars, then `extra`.
    pub fn args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args: Vec<&str> = self.vars.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        args
    }

    /// hacfg arguments for a runtime apply through the master socket, with
    /// `hacfg_log` as the log file: the vars, the socket, then `extra`.
    pub fn runtime_args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = self.args(&[]);
        args.extend(self.runtime.iter().map(String::as_str));
        args.extend_from_slice(extra);
        args
    }

    /// Whether hacfg's log file (`hacfg_log`) holds `part`.
    pub fn logged(&self, part: &str) -> bool {
        std::fs::read_to_string(&self.hacfg_log)
            .unwrap_or_default()
            .contains(part)
    }

    /// Which backends answer `n` requests.
    pub fn answering(&self, n: usize) -> std::collections::BTreeSet<String> {
        (0..n).filter_map(|_| get(self.port).ok()).collect()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if thread::panicking() {
            // Captured by the test harness: shown with the failure only.
            eprintln!("haproxy's output:\n{}", self.log());
        }
        let pgid = Pid::from_child(&self.child);
        let _ = kill_process_group(pgid, Signal::TERM);
        if !wait_until(5.0, || matches!(self.child.try_wait(), Ok(Some(_)))) {
            let _ = kill_process_group(pgid, Signal::KILL);
            let _ = self.child.wait();
        }
    }
}
