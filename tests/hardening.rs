//! Hostile or broken surroundings: whatever is in the folder, beside the
//! output, on a socket or behind a pid, hacfg answers within its deadline,
//! signals no stranger, and leaves no torn or rolled-back config.

use rustix::fs::Mode;
use std::fmt::Write as _;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{HACFG, TestEnv};

fn mkfifo(path: &Path) {
    rustix::fs::mkfifoat(rustix::fs::CWD, path, Mode::RUSR | Mode::WUSR).unwrap();
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

const NOT_REGULAR: &str =
    "not a regular file (links, folders, FIFOs, sockets and devices are refused)";

#[test]
fn fifos_links_and_sockets_in_the_folder_never_block() {
    let env = TestEnv::new();
    env.ok(&["add", "s1", "10.0.0.1"]);
    let index = env.nodes.join(".hacfg.index");
    // The index is only a cache: a FIFO or a link to an endless device in
    // its place is ignored (and replaced by the next render).
    let _ = fs::remove_file(&index);
    mkfifo(&index);
    env.call(&["list"]).within(10.0).code(0);
    env.call(&["--force", "render"]).within(10.0).code(0);
    let _ = fs::remove_file(&index);
    std::os::unix::fs::symlink("/dev/zero", &index).unwrap();
    env.call(&["--force", "render"]).within(10.0).code(0);
    assert_eq!(env.servers(), ["s1 10.0.0.1:3000"]);

    // A FIFO or a socket named like a node is held back at once, named,
    // and blocks nothing: every read of the folder goes on without it.
    mkfifo(&env.nodes.join("s2"));
    let expected = format!("invalid node file `$TMP/nodes/s2`: {NOT_REGULAR}: held back");
    for (args, code) in [
        (&["render"][..], 6),
        (&["list"], 0),
        (&["render", "--stdout"], 0),
        (&["render", "--diff"], 0),
    ] {
        env.call(args)
            .within(10.0)
            .unchanged()
            .code(code)
            .stderr_has(&expected);
    }
    // `add` of that very name used to hang on its "already up to date"
    // read; it replaces the FIFO with the node file.
    env.call(&["add", "s2", "10.0.0.2"]).within(10.0).code(0);
    assert!(fs::metadata(env.nodes.join("s2")).unwrap().is_file());
    // So does a Serf event.
    mkfifo(&env.nodes.join("s3"));
    env.call(&["serf"])
        .env("SERF_EVENT", "member-join")
        .stdin("s3\t10.0.0.3\tbackend\t\n")
        .within(10.0)
        .code(0);
    assert_eq!(env.servers().len(), 3);

    let _listener = UnixListener::bind(env.nodes.join("sock")).unwrap();
    env.call(&["render"])
        .within(10.0)
        .unchanged()
        .code(6)
        .stderr_has(&format!(
            "invalid node file `$TMP/nodes/sock`: {NOT_REGULAR}: held back"
        ));
}

#[test]
fn a_huge_node_file_is_refused_after_64_kib() {
    let env = TestEnv::new();
    env.ok(&["add", "s1", "10.0.0.1"]);
    let live = env.output_text();
    // 1 GiB, sparse: cheap to make, and read whole it would take seconds
    // and gigabytes.
    fs::File::create(env.nodes.join("big"))
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let done = env.call(&["render"]).within(20.0).code(6);
    done.stderr_has(
        "invalid node file `$TMP/nodes/big`: `$TMP/nodes/big` is larger than 64 KiB, hacfg's \
         limit for this file: held back",
    );
    assert_eq!(env.output_text(), live);
}

#[test]
fn a_huge_member_line_is_cut_in_messages_and_the_log() {
    let env = TestEnv::new();
    let log = env.path("serf.log");
    let mut stdin = vec![b'x'; 1 << 20];
    stdin.extend_from_slice(b"\ngood\t10.0.0.1\tbackend\t\n");
    let done = env
        .call(&["--log-file", log.to_str().unwrap(), "serf"])
        .env("SERF_EVENT", "member-join")
        .stdin(stdin)
        .within(20.0)
        .code(6);
    assert!(
        done.stderr.len() < 2000,
        "{} bytes of stderr",
        done.stderr.len()
    );
    done.stderr_has("member line of 1048577 bytes is longer than 64 KiB")
        .stderr_has("hacfg: warning: member-join: 1 member(s) skipped, the rest applied");
    assert!(!done.stderr.contains("error"), "{}", done.stderr);
    let log = fs::read_to_string(&log).unwrap();
    assert!(log.len() < 2000, "{} bytes of log", log.len());
    assert_eq!(env.servers(), ["good 10.0.0.1:3000"]);
}

#[test]
fn an_unopenable_log_file_loses_no_event() {
    let env = TestEnv::new();
    let log = env.path("no/such/folder/serf.log");
    let done = env
        .call(&["--log-file", log.to_str().unwrap(), "serf"])
        .env("SERF_EVENT", "member-join")
        .stdin("s1\t10.0.0.1\tbackend\t\n")
        .code(0);
    done.stderr_has(
        "hacfg: warning: unable to open log file `$TMP/no/such/folder/serf.log`: No such file \
         or directory (os error 2); logging to stderr only\n",
    );
    assert_eq!(env.servers(), ["s1 10.0.0.1:3000"]);
    // A FIFO as the log file neither blocks nor swallows the event.
    let fifo = env.path("fifo.log");
    mkfifo(&fifo);
    env.call(&["--log-file", fifo.to_str().unwrap(), "serf"])
        .env("SERF_EVENT", "member-join")
        .stdin("s2\t10.0.0.2\tbackend\t\n")
        .within(10.0)
        .code(0);
    assert_eq!(env.servers().len(), 2);
}

#[test]
fn a_user_who_may_only_read_the_folder_can_list() {
    if !is_root() {
        eprintln!("note: not root; skipping the read-only user test");
        return;
    }
    let env = TestEnv::new();
    env.ok(&["add", "s1", "10.0.0.1"]);
    for dir in [env.dir.path(), env.nodes.as_path()] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let done = env
        .hacfg()
        .arg("--nodes-dir")
        .arg(&env.nodes)
        .args(["list", "--json"])
        .user(65534, 65534)
        .code(0);
    assert!(done.stdout.contains("\"s1\""));
}

#[test]
fn sync_skips_a_node_file_it_cannot_write_and_applies_the_rest() {
    if !is_root() {
        eprintln!("note: not root; skipping the unwritable node file test");
        return;
    }
    let env = TestEnv::new();
    env.ok(&["--no-check", "add", "w2", "10.0.0.2"]);
    env.ok(&["--no-check", "add", "old", "10.0.0.9"]);
    let members = r#"{"members":[
      {"name":"bal","addr":"127.0.0.1:7946","tags":{"role":"balancer"},"status":"alive"},
      {"name":"w1","addr":"10.0.0.1:7946","tags":{"role":"backend"},"status":"alive"},
      {"name":"w2","addr":"10.0.0.22:7946","tags":{"role":"backend"},"status":"alive"}]}"#;
    let fake = env.write(
        "fake-serf",
        &format!("#!/bin/sh\ncat <<'EOF'\n{members}\nEOF\n"),
    );
    // A sticky folder: another user may add node files, but may neither
    // replace nor remove root's `w2` and `old`.
    for (path, mode) in [
        (env.dir.path(), 0o755),
        (fake.as_path(), 0o755),
        (env.nodes.as_path(), 0o1777),
        (env.output.parent().unwrap(), 0o777),
    ] {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }
    let done = env
        .call(&["--no-check", "sync", "--serf-bin", fake.to_str().unwrap()])
        .user(65534, 65534)
        .code(6);
    done.stderr_has("hacfg: sync: added/updated node `w1` 10.0.0.1:3000\n")
        .stderr_has(
            "hacfg: warning: sync: skipped `w2` 10.0.0.22:3000: unable to replace \
             `$TMP/nodes/w2`: Operation not permitted",
        )
        .stderr_has(
            "hacfg: warning: sync: skipped `old`: unable to remove `$TMP/nodes/old`: \
             Operation not permitted",
        )
        .stderr_has("hacfg: warning: sync: 2 member(s) skipped, the rest applied\n");
    assert_eq!(
        env.servers(),
        ["old 10.0.0.9:3000", "w1 10.0.0.1:3000", "w2 10.0.0.2:3000"]
    );
}

#[test]
fn reload_commands_with_background_children() {
    let env = TestEnv::new();
    env.ok(&["add", "s1", "10.0.0.1"]);
    // A command that leaves a child holding stdout: hacfg returns when the
    // command exits, not when the child does.
    let done = env
        .call(&[
            "--reload",
            "--reload-cmd",
            "sleep 15 & echo started",
            "--reload-timeout",
            "2",
            "add",
            "s2",
            "10.0.0.2",
        ])
        .within(14.0)
        .code(0);
    // Not the child's 15 s.
    assert!(done.elapsed < Duration::from_secs(12), "{:?}", done.elapsed);

    // A command that hangs is killed with its whole group at the deadline,
    // and the config this run wrote is put back.
    let live = env.output_text();
    let pid_file = env.path("child.pid");
    let cmd = format!("sleep 30 & echo $! > '{}'; wait", pid_file.display());
    let done = env
        .call(&[
            "--reload",
            "--reload-cmd",
            &cmd,
            "--reload-timeout",
            "1",
            "add",
            "s3",
            "10.0.0.3",
        ])
        .within(10.0)
        .code(4);
    done.stderr_has("did not finish within 1.0s; its process group was killed")
        .stderr_has("restored `$TMP/etc/haproxy.cfg` from `$TMP/etc/haproxy.cfg.prev`");
    assert_eq!(env.output_text(), live);
    let pid = fs::read_to_string(&pid_file).unwrap();
    // SIGKILL is delivered at once, but a process takes a moment to die.
    let stat = || fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    assert!(
        crate::harness::wait_until(5.0, || {
            let stat = stat();
            stat.is_empty() || stat.contains(") Z")
        }),
        "the grandchild lives: {}",
        stat()
    );
}

#[test]
fn a_strangers_pid_gets_no_signal() {
    let env = TestEnv::new();
    env.ok(&["add", "s1", "10.0.0.1"]);
    let live = env.output_text();
    let mut stranger = Command::new("sleep")
        .arg("30")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid_file = env.write("stranger.pid", &format!("{}\n", stranger.id()));
    let done = env
        .call(&[
            "--reload",
            "--pid-file",
            pid_file.to_str().unwrap(),
            "add",
            "s2",
            "10.0.0.2",
        ])
        .within(10.0)
        .code(4);
    done.stderr_has(&format!(
        "refusing to signal process {} from `$TMP/stranger.pid`; nothing was sent",
        stranger.id()
    ))
    .stderr_has(&format!(
        "process {} is not an haproxy executable",
        stranger.id()
    ));
    assert!(stranger.try_wait().unwrap().is_none(), "the stranger died");
    assert_eq!(env.output_text(), live, "the config this run wrote stayed");
    let _ = stranger.kill();
    let _ = stranger.wait();

    // A pid file with no pid in it says so, cut to a readable length.
    fs::write(&pid_file, "x".repeat(3000)).unwrap();
    env.call(&[
        "--reload",
        "--pid-file",
        pid_file.to_str().unwrap(),
        "reload",
    ])
    .unchanged()
    .code(4)
    .stderr_has("holds no pid: \"xxxx")
    .stderr_has("… (3000 bytes)");
}

#[test]
fn a_failed_hacfg_reload_restores_nothing_it_did_not_write() {
    let env = TestEnv::new();
    env.ok(&["add", "s1", "10.0.0.1"]);
    env.ok(&["add", "s2", "10.0.0.2"]);
    // `.prev` holds an older generation; `reload` wrote nothing, so it
    // must not bring that back.
    env.call(&["--reload", "--reload-cmd", "exit 1", "reload"])
        .unchanged()
        .code(4)
        .stderr_is(
            "hacfg: error: reload failed; the config was left as it is: reload command \
             `exit 1` failed (exit status: 1): \"\"\n",
        );
}

#[test]
fn a_master_socket_that_drips_or_never_answers_costs_the_timeout() {
    let env = TestEnv::new();
    env.ok(&["add", "s1", "10.0.0.1"]);
    let path = env.path("drip.sock");
    let listener = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                for _ in 0..100 {
                    if conn.write_all(b"#").is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            });
        }
    });
    let socket = path.to_str().unwrap();
    let done = env
        .call(&[
            "--reload",
            "--master-socket",
            socket,
            "--reload-timeout",
            "1",
            "--socket-timeout",
            "1",
            "reload",
        ])
        .within(10.0)
        .unchanged()
        .code(4);
    // Saving the live state first ran into the deadline: one deadline per
    // socket and run, so the reload does not ask it again.
    done.stderr_has("did not answer in time earlier in this run; `reload` was not sent");
    assert!(done.elapsed < Duration::from_secs(4), "{:?}", done.elapsed);
}

#[test]
fn the_longest_valid_name_can_be_written() {
    let env = TestEnv::new();
    let name = "a".repeat(253);
    env.call(&["add", &name, "10.0.0.1"]).code(0);
    assert!(env.nodes.join(&name).is_file());
    env.call(&["remove", &name]).code(0);
}

#[test]
fn a_linked_output_is_followed_and_its_target_replaced() {
    let env = TestEnv::new();
    let real = env.write("real/haproxy.cfg", "old\n");
    fs::create_dir_all(env.output.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&real, &env.output).unwrap();
    env.call(&["add", "s1", "10.0.0.1"])
        .code(0)
        .stderr_has("wrote `$TMP/real/haproxy.cfg` (1 node)");
    assert!(
        fs::symlink_metadata(&env.output)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(env.servers(), ["s1 10.0.0.1:3000"]);
    assert_eq!(
        fs::read_to_string(env.path("real/haproxy.cfg.prev")).unwrap(),
        "old\n"
    );
    // A link to nothing, or an output that is a folder, is refused.
    fs::remove_file(&env.output).unwrap();
    std::os::unix::fs::symlink(env.path("nothing"), &env.output).unwrap();
    env.call(&["render"])
        .unchanged()
        .code(1)
        .stderr_has("output `$TMP/etc/haproxy.cfg` is a symbolic link to nothing");
}

#[test]
fn numbers_are_plain_digits_and_keys_unique_everywhere() {
    let env = TestEnv::new();
    env.ok(&["add", "s1", "10.0.0.1"]);
    for args in [
        &["add", "s2", "10.0.0.2", "--port", "+80"][..],
        &["add", "s2", "10.0.0.2", "--weight", "0080"],
        &["--reload-timeout", "1e30", "render"],
        &["--reload-timeout", "inf", "render"],
        &["--default-port", "08080", "render"],
        &["--min-nodes", "-1", "render"],
    ] {
        env.call(args).unchanged().code(2);
    }
    env.call(&["add", "s2", "10.0.0.2:0080"])
        .unchanged()
        .code(2);
    env.call(&["add", "s2", "10.0.0.2", "--tag", "a=1", "--tag", "a=2"])
        .unchanged()
        .code(2)
        .stderr_has("error: invalid --tag: the key \"a\" is given twice\n");
    env.call(&["serf"])
        .env("SERF_EVENT", "member-join")
        .stdin("s2\t10.0.0.2\tbackend\tport=+80\ns3\t10.0.0.3\tbackend\tport=80,port=81\n")
        .unchanged()
        .code(6)
        .stderr_has("member `s2`: invalid port \"+80\": use 1-65535 in plain digits (tag `port`)")
        .stderr_has("the key \"port\" is given twice");
    env.write(
        "nodes/s4",
        r#"{"name":"s4","address":"10.0.0.4","tags":{"k":"a","k":"b"}}"#,
    );
    env.call(&["render"])
        .code(6)
        .stderr_has("the key \"k\" is given twice");
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let env = TestEnv::new();
    for i in 0..2000 {
        env.write(
            &format!("nodes/n{i:04}"),
            &format!("10.3.{}.{}", i / 250, i % 250 + 1),
        );
    }
    // Its reader goes away after 16 bytes, as `hacfg list --json | head -c 16`.
    env.call(&["list", "--json"])
        .close_stdout_after(16)
        .code(0)
        .stderr_is("");
}

#[test]
fn a_runaway_template_ends_with_a_clear_error() {
    let env = TestEnv::new();
    env.ok(&["add", "s1", "10.0.0.1"]);
    let tmpl = env.write(
        "loop.j2",
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    );
    env.call(&["--template", tmpl.to_str().unwrap(), "render"])
        .within(120.0)
        .unchanged()
        .code(1)
        .stderr_has("the template ran more than 50010000 instructions (a runaway loop?)");
}

#[test]
fn in_place_on_a_full_file_system_never_tears_the_config() {
    if !is_root() || !Path::new("/usr/bin/unshare").exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root with unshare"
        );
        eprintln!("note: not root or no unshare; skipping the full tmpfs test");
        return;
    }
    let env = TestEnv::new();
    // One node first, then a pool whose config needs more room than is left.
    let small = env.path("small");
    fs::create_dir_all(&small).unwrap();
    fs::write(small.join("s1"), "10.0.0.1").unwrap();
    for i in 0..300 {
        env.write(
            &format!("nodes/web-{i:03}"),
            &format!("10.4.{}.{}", i / 250, i % 250 + 1),
        );
    }
    let etc = env.output.parent().unwrap();
    fs::create_dir_all(etc).unwrap();
    // A private mount namespace: the tmpfs vanishes with the script.
    let script = r#"
        set -u
        mount -t tmpfs -o size=64k tmpfs "$ETC" || exit 90
        "$HACFG" --nodes-dir "$SMALL" --output "$ETC/haproxy.cfg" --no-check --in-place render || exit 91
        cp "$ETC/haproxy.cfg" "$DIR/before.cfg"
        dd if=/dev/zero of="$ETC/fill" bs=4096 2>/dev/null
        truncate -s -8K "$ETC/fill"
        "$HACFG" --nodes-dir "$NODES" --output "$ETC/haproxy.cfg" --no-check --in-place render 2> "$DIR/err.txt"
        echo $? > "$DIR/code"
        cp "$ETC/haproxy.cfg" "$DIR/after.cfg"
    "#;
    env.program("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .env("HACFG", HACFG)
        .env("ETC", etc)
        .env("SMALL", &small)
        .env("NODES", &env.nodes)
        .env("DIR", env.dir.path())
        .code(0);
    let code = fs::read_to_string(env.path("code")).unwrap();
    let err = fs::read_to_string(env.path("err.txt")).unwrap();
    assert_eq!(code.trim(), "1", "{err}");
    assert!(err.contains("not enough space to write"), "{err}");
    let before = fs::read(env.path("before.cfg")).unwrap();
    assert!(String::from_utf8_lossy(&before).contains("server s1 10.0.0.1:3000"));
    assert_eq!(
        fs::read(env.path("after.cfg")).unwrap(),
        before,
        "torn config"
    );
}

/// The first lines of a long stderr, for an assertion's message.
fn head(text: &str) -> String {
    text.lines().take(10).collect::<Vec<_>>().join("\n")
}

/// `sh -c 'ulimit -n LIMIT; exec hacfg --nodes-dir … --output … ARGS'`.
fn under_open_file_limit<'e>(
    env: &'e TestEnv,
    limit: u32,
    args: &[&str],
) -> crate::harness::Call<'e> {
    let script = format!("ulimit -n {limit} || exit 90; exec \"$0\" \"$@\"");
    env.program("sh")
        .args(["-c", &script, HACFG, "--nodes-dir"])
        .arg(&env.nodes)
        .arg("--output")
        .arg(&env.output)
        .args(args)
}

/// A batch holds no descriptor per member: a 3,000-member event and a
/// 3,000-member sync are written whole under an open-file limit of 256.
#[test]
fn a_3000_member_batch_stays_within_a_low_open_file_limit() {
    let env = TestEnv::new();
    let address = |i: usize, net: usize| format!("10.{net}.{}.{}", i / 250, i % 250 + 1);
    let mut stdin = String::new();
    for i in 0..3000 {
        let _ = writeln!(stdin, "m{i:04}\t{}\tbackend\trole=backend", address(i, 3));
    }
    let done = under_open_file_limit(&env, 256, &["--no-check", "-q", "serf"])
        .env("SERF_EVENT", "member-join")
        .stdin(stdin)
        .within(120.0)
        .run();
    assert_eq!(done.code, Some(0), "{}", head(&done.stderr));
    assert_eq!(env.servers().len(), 3000);
    // sync shares the batch: every node moves to a new address.
    let members: Vec<String> = (0..3000)
        .map(|i| {
            format!(
                r#"{{"name":"m{i:04}","addr":"{}:7946","tags":{{"role":"backend"}},"status":"alive"}}"#,
                address(i, 4)
            )
        })
        .collect();
    let json = env.write(
        "members.json",
        &format!("{{\"members\":[{}]}}", members.join(",")),
    );
    let fake = env.write(
        "fake-serf",
        &format!("#!/bin/sh\ncat '{}'\n", json.display()),
    );
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let done = under_open_file_limit(
        &env,
        256,
        &[
            "--no-check",
            "-q",
            "sync",
            "--serf-bin",
            fake.to_str().unwrap(),
        ],
    )
    .within(120.0)
    .run();
    assert_eq!(done.code, Some(0), "{}", head(&done.stderr));
    let servers = env.servers();
    assert_eq!(servers.len(), 3000);
    assert!(
        servers.iter().all(|s| s.contains(" 10.4.")),
        "{:?}",
        &servers[..3]
    );
}

/// A master-worker HAProxy started as `haproxy -W -p PIDFILE -f OUTPUT`
/// (no master socket); dropping it stops its process group.
struct Master {
    child: std::process::Child,
    log: fs::File,
}

impl Master {
    #[track_caller]
    fn start(haproxy: &Path, env: &TestEnv, pid_file: &Path) -> Master {
        use std::os::unix::process::CommandExt;
        let log = tempfile::tempfile().unwrap();
        let child = Command::new(haproxy)
            .arg("-W")
            .arg("-p")
            .arg(pid_file)
            .arg("-f")
            .arg(&env.output)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log.try_clone().unwrap())
            .process_group(0)
            .spawn()
            .unwrap();
        let master = Master { child, log };
        let children = format!("/proc/{0}/task/{0}/children", master.child.id());
        assert!(
            crate::harness::wait_until(10.0, || pid_file.exists()
                && !fs::read_to_string(&children)
                    .unwrap_or_default()
                    .trim()
                    .is_empty()),
            "haproxy did not start:\n{}",
            master.log()
        );
        master
    }

    fn log(&self) -> String {
        use std::io::{Read, Seek};
        let (mut text, mut log) = (String::new(), &self.log);
        let _ = log.rewind();
        let _ = log.read_to_string(&mut text);
        text
    }

    /// Workers started: the initial one and one per reload ("New worker
    /// (PID) forked" up to 3.0, "Initializing new worker (PID)" from 3.1).
    fn workers_forked(&self) -> usize {
        let log = self.log();
        log.matches("New worker").count() + log.matches("Initializing new worker").count()
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("haproxy's output:\n{}", self.log());
        }
        let pgid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        let _ = self.child.wait();
    }
}

/// A master still starting the previous reload ignores SIGUSR2 (from its
/// re-exec until its main loop runs, well after the new worker is forked):
/// back-to-back `--pid-file` reloads wait for it, and each one loads. A
/// config HAProxy refuses at reload time is reported as refused, at once.
#[test]
fn back_to_back_pid_file_reloads_all_load() {
    let Some(haproxy) = crate::harness::tool("haproxy") else {
        return;
    };
    let env = TestEnv::new();
    // Many servers (without checks) make each reload's start long enough
    // that the next signal would reach it.
    for i in 0..5000 {
        env.write(
            &format!("nodes/n{i:04}"),
            &format!("127.1.{}.{}:9", i / 250, i % 250 + 1),
        );
    }
    let template = "global\n    maxconn 100\ndefaults\n    mode http\n    timeout connect 1s\n    \
                    timeout client 5s\n    timeout server 5s\nfrontend f\n    bind 127.0.0.1:{{ \
                    vars.port }}\n    default_backend nodes\nbackend nodes\n{% for n in nodes %}\n    \
                    server {{ n.name }} {{ n.address }}:{{ n.port }}\n{% endfor %}\n";
    let good = env.write("good.j2", template);
    let broken = env.write("broken.j2", &format!("{template}    no-such-keyword\n"));
    let port = crate::harness::free_port().to_string();
    let var = format!("port={port}");
    let pid_file = env.path("haproxy.pid");
    let pid = pid_file.to_str().unwrap();
    let args = |template: &Path, extra: &[&str]| -> Vec<String> {
        let mut args = vec!["--template", template.to_str().unwrap(), "--var", &var];
        args.extend(["--reload", "--pid-file", pid, "--reload-timeout", "30"]);
        args.extend_from_slice(extra);
        args.into_iter().map(String::from).collect()
    };
    env.ok(&[
        "--template",
        good.to_str().unwrap(),
        "--var",
        &var,
        "render",
    ]);
    let master = Master::start(&haproxy, &env, &pid_file);
    for i in 0..5 {
        let reload = args(&good, &["reload"]);
        let done = env
            .call(&reload.iter().map(String::as_str).collect::<Vec<_>>())
            .within(20.0)
            .run();
        assert_eq!(done.code, Some(0), "reload {i}: {}", done.stderr);
    }
    assert!(
        crate::harness::wait_until(20.0, || master.workers_forked() == 6),
        "{}",
        master.log()
    );
    // Unchecked, so that HAProxy itself refuses it when it reloads.
    let render = args(&broken, &["--no-check", "render"]);
    let done = env
        .call(&render.iter().map(String::as_str).collect::<Vec<_>>())
        .within(20.0)
        .code(4);
    done.stderr_has("refused the new config at reload time");
    // Told at once, not after waiting out the 30 s reload timeout.
    assert!(done.elapsed < Duration::from_secs(15), "{:?}", done.elapsed);
    assert!(
        !env.output_text().contains("no-such-keyword"),
        "the config was not restored"
    );
}
