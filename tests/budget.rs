//! No wait without a deadline, on the socket: a run's exchanges share one
//! budget (what does not fit is left to the worker), and the worker never
//! holds the folder lock while it waits for HAProxy. Real master-worker
//! HAProxy, a slow socket of the test's own in front of its master socket.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{TestEnv, wait_until};
use crate::live::Pool;

/// A socket in front of HAProxy's master socket: each answer comes
/// `delay` late, and while the gate is shut every `show stat` is held
/// (for at most 30 s).
struct SlowSocket {
    path: PathBuf,
    /// `show stat` commands held now, and seen so far.
    held: Arc<AtomicUsize>,
    stats_seen: Arc<AtomicUsize>,
    open: Arc<AtomicBool>,
}

impl SlowSocket {
    fn start(env: &TestEnv, upstream: &Path, delay: Duration, open: bool) -> SlowSocket {
        let path = env.path("slow.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let slow = SlowSocket {
            path,
            held: Arc::default(),
            stats_seen: Arc::default(),
            open: Arc::new(AtomicBool::new(open)),
        };
        let (held, seen, gate) = (
            slow.held.clone(),
            slow.stats_seen.clone(),
            slow.open.clone(),
        );
        let upstream = upstream.to_path_buf();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { return };
                let (upstream, held, seen, gate) =
                    (upstream.clone(), held.clone(), seen.clone(), gate.clone());
                std::thread::spawn(move || {
                    let _ = relay(client, &upstream, delay, (&held, &seen, &gate));
                });
            }
        });
        slow
    }

    /// Lets every `show stat` through, those held now and later ones.
    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }

    fn holding(&self) -> bool {
        self.held.load(Ordering::SeqCst) > 0
    }

    fn path(&self) -> String {
        self.path.display().to_string()
    }
}

/// One exchange: the command (hacfg half-closes after it), held or
/// delayed, then sent to HAProxy; its answer back.
fn relay(
    mut client: UnixStream,
    upstream: &Path,
    delay: Duration,
    (held, seen, open): (&AtomicUsize, &AtomicUsize, &AtomicBool),
) -> std::io::Result<()> {
    let mut command = Vec::new();
    client.read_to_end(&mut command)?;
    if String::from_utf8_lossy(&command).contains("show stat") {
        seen.fetch_add(1, Ordering::SeqCst);
        held.fetch_add(1, Ordering::SeqCst);
        let end = Instant::now() + Duration::from_secs(30);
        while !open.load(Ordering::SeqCst) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        held.fetch_sub(1, Ordering::SeqCst);
    }
    std::thread::sleep(delay);
    let mut server = UnixStream::connect(upstream)?;
    server.write_all(&command)?;
    server.shutdown(std::net::Shutdown::Write)?;
    let mut answer = Vec::new();
    server.read_to_end(&mut answer)?;
    client.write_all(&answer)
}

fn member(pool: &Pool, name: &str) -> String {
    format!(
        "{name}\t127.0.0.1\tbackend\trole=backend,port={}\n",
        pool[name].port
    )
}

/// Whether HAProxy runs server `name`.
fn live(pool: &Pool, name: &str) -> bool {
    pool.servers().iter().any(|l| l.name == name)
}

#[test]
fn a_slow_socket_costs_a_handler_its_budget_and_the_worker_finishes_the_rest() {
    let env = TestEnv::new();
    let leaving = ["s1", "s2", "s3", "s4", "s5", "s6"];
    let all = ["s1", "s2", "s3", "s4", "s5", "s6", "s7"];
    let Some(pool) = Pool::backends(&env, &all).nodes(&all).start() else {
        return;
    };
    // Each answer 0.4 s late, within the 1 s --socket-timeout: a run's
    // exchanges start only within 2 s. Six idle servers leave: reading the live
    // servers, draining them, reading their stats and deleting each (one
    // exchange per server) takes 9 exchanges, 3.6 s.
    let slow = SlowSocket::start(&env, &pool.master_socket, Duration::from_millis(400), true);
    let log = pool.hacfg_log.display().to_string();
    let socket = slow.path();
    let mut args = pool.args(&["--reload", "--master-socket", &socket]);
    args.extend(["--log-file", &log, "--socket-timeout", "1", "serf"]);
    let lines: String = leaving.iter().map(|n| member(&pool, n)).collect();
    let done = env
        .call(&args)
        .env("SERF_EVENT", "member-leave")
        .env("SERF_SELF_NAME", "bal")
        .stdin(lines)
        .code(0);
    done.stderr_has("this run's time for");
    // The handler returned with the rest left to the worker, which needs
    // two slow reads before its first command: some servers still run.
    let still: Vec<&str> = leaving.iter().copied().filter(|n| live(&pool, n)).collect();
    assert!(!still.is_empty(), "the handler deleted every server itself");
    assert!(
        env.nodes.join(".hacfg.pending").exists(),
        "nothing recorded"
    );
    // The worker finishes them, through the same slow socket.
    assert!(
        wait_until(30.0, || !env.nodes.join(".hacfg.pending").exists()
            && leaving.iter().all(|n| !live(&pool, n))),
        "left: {still:?}; log:\n{}",
        std::fs::read_to_string(&pool.hacfg_log).unwrap_or_default()
    );
    assert!(live(&pool, "s7"));
    assert!(env.output_text().contains("server s7 "));
    assert!(!env.output_text().contains("server s1 "));
}

#[test]
fn a_handler_does_not_wait_for_the_workers_slow_show_stat() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1", "s2", "s3"])
        .nodes(&["s1", "s2"])
        .start()
    else {
        return;
    };
    // hacfg's drain of a new server s1, checked now, past its deadline: a
    // worker finishes it at once.
    assert!(wait_until(10.0, || pool.stat("s1", "check_status") == "L7OK"));
    pool.command("set server nodes/s1 state drain");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    env.write(
        "nodes/.hacfg.pending",
        &format!(
            r#"[{{"target":{{"backend":"nodes","name":"s1"}},"why":"first-check","since_ms":{},"deadline_ms":{}}}]"#,
            now - 10_000,
            now - 1_000
        ),
    );
    // The worker's `show stat` is held by the socket until the test lets
    // it go.
    let slow = SlowSocket::start(&env, &pool.master_socket, Duration::ZERO, false);
    let log = pool.hacfg_log.display().to_string();
    let socket = slow.path();
    let worker_args = pool.args(&["--master-socket", &socket, "--log-file", &log, "settle"]);
    let worker = env.call(&worker_args).within(60.0).spawn();
    assert!(
        wait_until(10.0, || slow.holding()),
        "the worker read no stats"
    );
    // A join meanwhile, on HAProxy's own socket: it gets the folder lock
    // while the worker's `show stat` is still held.
    let args = pool.runtime_args(&["--lock-timeout", "5", "serf"]);
    env.call(&args)
        .env("SERF_EVENT", "member-join")
        .env("SERF_SELF_NAME", "bal")
        .stdin(member(&pool, "s3"))
        .code(0);
    assert!(
        slow.holding(),
        "the handler waited for the worker's show stat"
    );
    slow.open();
    worker.code(0);
    // The handler's own pass set s1 ready; the worker, finding the record
    // changed under the lock, read again instead of acting on its read.
    assert!(slow.stats_seen.load(Ordering::SeqCst) >= 1);
    assert!(
        wait_until(20.0, || !env.nodes.join(".hacfg.pending").exists()),
        "log:\n{}",
        std::fs::read_to_string(&pool.hacfg_log).unwrap_or_default()
    );
    for name in ["s1", "s3"] {
        assert!(!pool.stat(name, "status").starts_with("DRAIN"), "{name}");
    }
    assert!(env.output_text().contains("server s3 "));
}
