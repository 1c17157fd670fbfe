//! The core: node store, rendering, atomic output, and the CLI contract.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use rustix::process::{Pid, Signal, kill_process_group};

use crate::harness::{Done, TestEnv, haproxy_accepts, tool};

#[test]
fn add_list_remove_round_trip() {
    let env = TestEnv::new();
    env.ok(&[
        "add",
        "s2",
        "172.17.0.4",
        "--weight",
        "7",
        "--tag",
        "zone=a",
    ]);
    env.ok(&["add", "s1", "172.17.0.3:8080"]);
    env.ok(&["add", "s3", "[fd00::1]:81"]);
    assert_eq!(
        env.servers(),
        [
            "s1 172.17.0.3:8080",
            "s2 172.17.0.4:3000",
            "s3 [fd00::1]:81"
        ]
    );
    let table = env.ok(&["list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{table}");
    assert!(lines[2].contains("s2") && lines[2].contains("zone=a") && lines[2].contains(" 7 "));
    let json: serde_json::Value = serde_json::from_str(&env.ok(&["list", "--json"])).unwrap();
    assert_eq!(json[1]["name"], "s2");
    assert_eq!(json[1]["weight"], 7);
    assert_eq!(json[1]["tags"]["zone"], "a");
    // The node file is the documented JSON.
    let file: serde_json::Value =
        serde_json::from_slice(&fs::read(env.nodes.join("s1")).unwrap()).unwrap();
    assert_eq!(file["port"], 8080);
    assert_eq!(file["address"], "172.17.0.3");

    env.ok(&["remove", "s2"]);
    assert_eq!(env.servers(), ["s1 172.17.0.3:8080", "s3 [fd00::1]:81"]);
    // An address that reads two ways gets a hint.
    env.call(&["add", "h", "::1:80"]).code(0).stderr_has(
        "`::1:80` is read as one IPv6 address; for address ::1 and port 80, write [::1]:80",
    );
    env.ok(&["remove", "h"]);
    assert!(!env.nodes.join("s2").exists());
    // Leave events repeat: removing a missing node succeeds, unless --strict.
    env.call(&["remove", "s2"])
        .code(0)
        .stderr_has("was not there");
    let before = env.snapshot();
    env.fails(&["remove", "s2", "--strict"], 1);
    assert_eq!(before, env.snapshot());
}

#[test]
fn same_add_twice_changes_nothing() {
    let env = TestEnv::new();
    env.ok(&["add", "s1", "10.0.0.1"]);
    let mtime = fs::metadata(&env.output).unwrap().modified().unwrap();
    let node_mtime = fs::metadata(env.nodes.join("s1"))
        .unwrap()
        .modified()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let stderr = env.call(&["add", "s1", "10.0.0.1"]).code(0).stderr;
    assert!(
        stderr.contains("already up to date") && stderr.contains("unchanged"),
        "{stderr}"
    );
    assert_eq!(
        fs::metadata(&env.output).unwrap().modified().unwrap(),
        mtime
    );
    assert_eq!(
        fs::metadata(env.nodes.join("s1"))
            .unwrap()
            .modified()
            .unwrap(),
        node_mtime
    );
}

#[test]
fn no_render_only_touches_the_folder() {
    let env = TestEnv::new();
    env.ok(&["add", "s1", "10.0.0.1", "--no-render"]);
    assert!(env.nodes.join("s1").exists());
    assert!(!env.output.exists());
    env.ok(&["render"]);
    assert_eq!(env.servers(), ["s1 10.0.0.1:3000"]);
    env.ok(&["remove", "s1", "--no-render"]);
    assert_eq!(env.servers(), ["s1 10.0.0.1:3000"]);
}

#[test]
fn lab_one_line_files_are_read() {
    let env = TestEnv::new();
    env.write("nodes/543a4bed586c", "543a4bed586c 192.168.42.22\n");
    env.write("nodes/s2", "192.168.42.23");
    env.write("nodes/s3", "192.168.42.24:8080\n");
    env.write("nodes/s4", "[fd00::4]:9000\n");
    // Ignored: hidden files, editor backups, hacfg's own temp files.
    env.write("nodes/.s5.swp", "garbage");
    env.write("nodes/s6~", "garbage");
    env.write("nodes/s7.bak", "garbage");
    env.write("nodes/.s8.abc.tmp", "garbage");
    env.ok(&["--default-port", "3001", "render"]);
    assert_eq!(
        env.servers(),
        [
            "543a4bed586c 192.168.42.22:3001",
            "s2 192.168.42.23:3001",
            "s3 192.168.42.24:8080",
            "s4 [fd00::4]:9000"
        ]
    );
    // `ls` of the folder still shows the node names.
    env.ok(&["add", "s9", "10.0.0.9"]);
    assert!(env.nodes.join("s9").is_file());
}

#[test]
fn environment_variables_configure_paths() {
    let env = TestEnv::new();
    env.hacfg()
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HACFG_NODES_DIR", &env.nodes)
        .env("HACFG_OUTPUT", &env.output)
        .env("HACFG_DEFAULT_PORT", "8000")
        .args(["add", "s1", "10.0.0.1"])
        .code(0);
    assert_eq!(env.servers(), ["s1 10.0.0.1:8000"]);
}

#[test]
fn output_is_deterministic() {
    let (a, b) = (TestEnv::new(), TestEnv::new());
    let names: Vec<String> = (0..40).map(|i| format!("n{i:02}")).collect();
    for (i, name) in names.iter().enumerate() {
        a.write(&format!("nodes/{name}"), &format!("10.0.0.{i}"));
    }
    for (i, name) in names.iter().enumerate().rev() {
        b.write(&format!("nodes/{name}"), &format!("10.0.0.{i}"));
    }
    // One state-file path for both (each env's own would differ).
    let state = ["--var", "state_file=/srv/hacfg-state"];
    a.ok(&[&state[..], &["render"]].concat());
    b.ok(&[&state[..], &["render"]].concat());
    let first = a.output_text();
    assert_eq!(first, b.output_text());
    assert_eq!(first, a.ok(&[&state[..], &["render", "--stdout"]].concat()));
    let mut sorted = a.servers();
    sorted.sort();
    assert_eq!(a.servers(), sorted);
}

#[test]
fn haproxy_accepts_builtin_output_for_0_1_1000_nodes() {
    let Some(haproxy) = tool("haproxy") else {
        return;
    };
    let env = TestEnv::new();
    let mut written = 0;
    for count in [0usize, 1, 1000] {
        for i in std::mem::replace(&mut written, count)..count {
            env.write(
                &format!("nodes/web-{i:04}"),
                &format!("10.1.{}.{}", i / 250, i % 250 + 1),
            );
        }
        env.ok(&["--no-check", "render"]);
        assert_eq!(env.servers().len(), count);
        assert!(haproxy_accepts(&haproxy, &env.output), "{count} nodes");
    }
}

#[test]
fn stdout_and_diff_write_nothing() {
    let env = TestEnv::new();
    env.ok(&["add", "s1", "10.0.0.1"]);
    env.write("nodes/s2", "10.0.0.2");
    let before = env.snapshot();
    let stdout = env.ok(&["render", "--stdout"]);
    assert!(stdout.contains("server s2 10.0.0.2:3000"));
    let diff = env.ok(&["render", "--diff"]);
    assert!(
        diff.lines()
            .any(|l| l.starts_with("+    server s2 10.0.0.2:3000")),
        "{diff}"
    );
    assert!(
        !diff.lines().any(|l| l.starts_with("-    server s1")),
        "{diff}"
    );
    assert_eq!(before, env.snapshot());
}

#[test]
fn hostile_input_is_rejected_and_changes_nothing() {
    let env = TestEnv::new();
    env.ok(&["add", "good", "10.0.0.1"]);
    let before = env.snapshot();
    let long = "a".repeat(300);
    let cases: Vec<Vec<&str>> = vec![
        vec!["add", "s1\nserver evil 6.6.6.6:80", "10.0.0.2"],
        vec!["add", "s1\rx", "10.0.0.2"],
        vec!["add", "s1 x", "10.0.0.2"],
        vec!["add", "s1\tx", "10.0.0.2"],
        vec!["add", "s1#x", "10.0.0.2"],
        vec!["add", "../escape", "10.0.0.2"],
        vec!["add", "..", "10.0.0.2"],
        vec!["add", ".", "10.0.0.2"],
        vec!["add", "a/b", "10.0.0.2"],
        vec!["add", "/etc/passwd", "10.0.0.2"],
        vec!["add", ".hidden", "10.0.0.2"],
        vec!["add", "-dash", "10.0.0.2"],
        vec!["add", "", "10.0.0.2"],
        vec!["add", &long, "10.0.0.2"],
        vec!["add", "s1\u{7f}", "10.0.0.2"],
        vec!["add", "naïve", "10.0.0.2"],
        vec!["add", "s1;reboot", "10.0.0.2"],
        vec!["add", "s1$(id)", "10.0.0.2"],
        vec!["add", "s1.bak", "10.0.0.2"],
        vec!["add", "s1", "10.0.0.2\nserver evil 6.6.6.6"],
        vec!["add", "s1", "10.0.0.2 backup"],
        vec!["add", "s1", "10.0.0.256"],
        vec!["add", "s1", "10.0.0.2:0"],
        vec!["add", "s1", "10.0.0.2:65536"],
        vec!["add", "s1", "10.0.0.2:80:90"],
        vec!["add", "s1", "[::1"],
        vec!["add", "s1", "host_name.example"],
        vec!["add", "--", "s1", "-host.example"],
        vec!["add", "s1", "#comment"],
        vec!["add", "s1", ""],
        vec!["add", "s1", "10.0.0.2", "--weight", "257"],
        vec!["add", "s1", "10.0.0.2", "--port", "0"],
        vec!["add", "s1", "10.0.0.2", "--tag", "k=v\nserver evil"],
        vec!["add", "s1", "10.0.0.2", "--tag", "k=a b"],
        vec!["add", "s1", "10.0.0.2", "--tag", "bad key=v"],
        vec!["add", "s1", "10.0.0.2", "--tag", "novalue"],
        vec!["add", "s1", "10.0.0.2", "--tag", "backend=../x"],
        vec!["add", "s1", "10.0.0.2:80", "--port", "81"],
        vec!["remove", "../nodes/good"],
        vec!["remove", "good\nx"],
    ];
    assert!(cases.len() >= 30);
    for args in &cases {
        let Done { code, stderr, .. } = env.call(args).run();
        assert!(
            matches!(code, Some(1 | 2)),
            "{args:?} was accepted: {stderr}"
        );
        assert!(stderr.contains("error"), "{args:?}: {stderr}");
        assert_eq!(before, env.snapshot(), "{args:?} changed files");
    }
    // Errors show the value escaped: no line of them is the attacker's.
    let stderr = env.fails(&["add", "s1\nserver evil 6.6.6.6:80", "10.0.0.2"], 2);
    assert!(
        stderr.contains(r#""s1\nserver evil 6.6.6.6:80""#),
        "{stderr}"
    );
    assert!(
        !stderr.lines().any(|l| l.starts_with("server evil")),
        "{stderr}"
    );
}

#[test]
fn template_error_leaves_output_identical() {
    let env = TestEnv::new();
    env.ok(&["add", "s1", "10.0.0.1"]);
    let tmpl = env.write(
        "bad.j2",
        "backend x\n{% for n in nodes %}\n  server {{ n.nmae }}\n{% endfor %}\n",
    );
    let before = fs::read(&env.output).unwrap();
    let tmpl = tmpl.to_str().unwrap();
    let stderr = env.fails(&["--template", tmpl, "add", "s2", "10.0.0.2"], 1);
    assert!(stderr.contains("bad.j2"), "{stderr}");
    assert!(stderr.contains("undefined"), "{stderr}");
    assert!(
        stderr.contains("n.nmae"),
        "the template line is shown: {stderr}"
    );
    assert!(
        stderr.lines().count() <= 6,
        "a few lines, not a dump: {stderr}"
    );
    // -v shows minijinja's whole debug view, the variables in scope included.
    let verbose = env.fails(&["-v", "--template", tmpl, "add", "s2", "10.0.0.2"], 1);
    assert!(verbose.contains("Referenced variables"), "{verbose}");
    assert_eq!(before, fs::read(&env.output).unwrap());
    // A syntax error, too.
    env.write("bad.j2", "{% for n in nodes %}");
    env.fails(&["--template", tmpl, "render"], 1);
    assert_eq!(before, fs::read(&env.output).unwrap());
    // A typo'd variable in a good template renders nothing silently: strict.
    env.write(
        "ok.j2",
        "{{ vars.x | default('d') }} {{ nodes | length }}\n",
    );
    let ok = env.path("ok.j2");
    let out = env.ok(&[
        "--template",
        ok.to_str().unwrap(),
        "--var",
        "x=1",
        "render",
        "--stdout",
    ]);
    assert_eq!(out, "1 2\n");
}

#[test]
fn a_corrupt_node_file_is_held_back_and_the_output_keeps_the_rest() {
    let env = TestEnv::new();
    env.ok(&["add", "s1", "10.0.0.1"]);
    let before = fs::read(&env.output).unwrap();
    for (name, content) in [
        ("s2", "{\"name\": \"s2\", \"address\": "),
        ("s2", "{\"name\": \"other\", \"address\": \"10.0.0.2\"}"),
        ("s2", "s2 10.0.0.2\nserver evil 6.6.6.6:80"),
        ("s2", "not an address at all"),
        ("s2", ""),
        ("bad name", "10.0.0.2"),
    ] {
        let path = env.write(&format!("nodes/{name}"), content);
        // Held back, never fatal: the rest renders (here, as it was).
        let stderr = env.call(&["render"]).code(6).stderr;
        assert!(
            stderr.contains(&format!("nodes/{name}`")) && stderr.contains("held back"),
            "{content:?}: {stderr}"
        );
        assert!(stderr.contains("1 node file(s) hacfg cannot read held back, the rest applied"));
        assert_eq!(before, fs::read(&env.output).unwrap(), "{content:?}");
        fs::remove_file(path).unwrap();
    }
}

#[test]
fn links_out_of_the_folder_are_refused() {
    let env = TestEnv::new();
    env.ok(&["add", "s1", "10.0.0.1"]);
    env.write("outside", "10.9.9.9");
    std::os::unix::fs::symlink(env.path("outside"), env.nodes.join("s2")).unwrap();
    let stderr = env.call(&["render"]).code(6).stderr;
    assert!(stderr.contains("not a regular file"), "{stderr}");
    assert!(!env.output_text().contains("10.9.9.9"));
}

#[test]
fn output_write_keeps_mode_and_leaves_no_temp_files() {
    let env = TestEnv::new();
    env.ok(&["add", "s1", "10.0.0.1"]);
    fs::set_permissions(&env.output, fs::Permissions::from_mode(0o640)).unwrap();
    env.ok(&["add", "s2", "10.0.0.2"]);
    let mode = fs::metadata(&env.output).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    let files: Vec<_> = fs::read_dir(env.output.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut files = files;
    files.sort();
    assert_eq!(
        files,
        ["haproxy.cfg", "haproxy.cfg.prev", "haproxy.cfg.sum"]
    );
}

#[test]
fn fifty_parallel_adds_lose_no_node() {
    let env = TestEnv::new();
    let children: Vec<_> = (0..50)
        .map(|i| {
            env.call(&["add", &format!("n{i:02}"), &format!("10.2.0.{}", i + 1)])
                .spawn()
        })
        .collect();
    for child in children {
        child.code(0);
    }
    assert_eq!(env.servers().len(), 50);
    assert_eq!(env.ok(&["list", "--json"]).matches("\"name\"").count(), 50);
}

#[test]
fn usage_errors_exit_2() {
    let env = TestEnv::new();
    env.fails(&["frobnicate"], 2);
    env.fails(&["add", "s1"], 2);
    env.fails(&["render", "--stdout", "--diff"], 2);
}

#[test]
fn missing_nodes_folder_is_named() {
    let env = TestEnv::new();
    fs::remove_dir(&env.nodes).unwrap();
    let stderr = env.fails(&["render"], 1);
    assert!(
        stderr.contains("nodes`") && stderr.contains("does not exist"),
        "{stderr}"
    );
    assert!(!env.output.exists());
}

#[test]
fn the_index_never_serves_a_stale_node() {
    use std::os::unix::fs::MetadataExt;
    let env = TestEnv::new();
    for (name, addr) in [
        ("s1", "10.0.0.1"),
        ("s2", "10.0.0.2"),
        ("s3", "10.0.0.3"),
        ("s4", "10.0.0.4"),
    ] {
        env.write(&format!("nodes/{name}"), addr);
    }
    // Files older than the index's racy window are trusted by their stat.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    env.ok(&["--no-check", "render"]);
    env.ok(&["--no-check", "render"]);
    let index = fs::read_to_string(env.nodes.join(".hacfg.index")).unwrap();
    assert!(index.lines().any(|l| l.starts_with("s1\t")), "{index}");

    // Other tools edit behind hacfg's back:
    // in place, same size, same inode;
    fs::write(env.nodes.join("s1"), "10.0.0.9").unwrap();
    // in place, then the old mtime put back (as `cp -p` or `rsync -t` do);
    let s2 = env.nodes.join("s2");
    let meta = fs::metadata(&s2).unwrap();
    fs::write(&s2, "10.0.0.8").unwrap();
    let stamp = format!("@{}.{:09}", meta.mtime(), meta.mtime_nsec());
    let touch = Command::new("touch")
        .args(["-m", "-d", &stamp])
        .arg(&s2)
        .output()
        .unwrap();
    assert!(touch.status.success());
    assert_eq!(fs::metadata(&s2).unwrap().mtime_nsec(), meta.mtime_nsec());
    // replaced by rename; deleted; added.
    env.write("s3.new", "10.0.0.7");
    fs::rename(env.path("s3.new"), env.nodes.join("s3")).unwrap();
    fs::remove_file(env.nodes.join("s4")).unwrap();
    env.write("nodes/s5", "10.0.0.5");
    env.ok(&["--no-check", "render"]);
    let want = [
        "s1 10.0.0.9:3000",
        "s2 10.0.0.8:3000",
        "s3 10.0.0.7:3000",
        "s5 10.0.0.5:3000",
    ];
    assert_eq!(env.servers(), want);

    // A damaged or hostile index is ignored.
    fs::write(
        env.nodes.join(".hacfg.index"),
        "hacfg-index-v1 0\ns1\tgarbage\nend 1 0\n",
    )
    .unwrap();
    env.ok(&["--no-check", "--force", "render"]);
    assert_eq!(env.servers(), want);
    assert_eq!(env.ok(&["render", "--stdout"]), env.output_text());
}

/// hacfg's temp files (`.hacfg-*.tmp`) in `dir`.
fn leftovers(dir: &std::path::Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".hacfg-"))
        .collect()
}

#[test]
fn a_killed_process_releases_the_lock_and_leaves_nothing_behind() {
    let env = TestEnv::new();
    env.ok(&["--no-check", "add", "s1", "10.0.0.1"]);
    // A check that hangs holds the exclusive lock; SIGKILL it mid-render
    // (its whole process group, so the hanging check goes too).
    let stuck = env
        .call(&["--check-cmd", "sleep 30 # {}", "add", "s2", "10.0.0.2"])
        .spawn();
    let exclusive_held = || {
        let lock = fs::File::open(&env.nodes).unwrap();
        matches!(lock.try_lock_shared(), Err(fs::TryLockError::WouldBlock))
    };
    assert!(
        crate::harness::wait_until(10.0, exclusive_held),
        "the check never started"
    );
    let etc = env.output.parent().unwrap();
    assert!(
        crate::harness::wait_until(10.0, || !leftovers(etc).is_empty()),
        "the candidate was never staged"
    );
    // The process group the test just created (every call runs in a group
    // of its own).
    let pgid = Pid::from_raw(i32::try_from(stuck.id()).unwrap()).unwrap();
    let _ = kill_process_group(pgid, Signal::KILL);
    stuck.wait();
    // It left its candidate beside the output; a killed batch leaves staged
    // node files (made here by hand).
    assert_eq!(leftovers(etc).len(), 1);
    for i in 0..3 {
        env.write(&format!("nodes/.hacfg-x{i}y2z3.tmp"), "{\"name\":");
    }
    // The kernel released the lock: the next call goes through at once,
    // and, holding the exclusive lock, removes what the killed runs left.
    env.ok(&["--no-check", "add", "s3", "10.0.0.3"]);
    assert_eq!(
        env.servers(),
        ["s1 10.0.0.1:3000", "s2 10.0.0.2:3000", "s3 10.0.0.3:3000"]
    );
    assert_eq!(leftovers(etc), Vec::<String>::new());
    assert_eq!(leftovers(&env.nodes), Vec::<String>::new());
}

#[test]
fn every_invalid_setting_is_a_usage_error() {
    let env = TestEnv::new();
    env.ok(&["--no-check", "add", "s1", "10.0.0.1"]);
    for (args, var) in [
        (&["add", "s2", "10.0.0.2", "--weight", "300"][..], None),
        (&["serf", "--on-failed", "bogus"], None),
        (&["render"], Some(("HACFG_WRITE_MODE", "inplace"))),
        (&["--var", "bad-key=1", "render"], None),
        (&["--check-cmd", "true", "render"], None),
        (&["--reload", "render"], None),
        (
            &[
                "--apply",
                "runtime",
                "--reload",
                "--reload-cmd",
                "true",
                "render",
            ],
            None,
        ),
    ] {
        let mut call = env.call(args).unchanged();
        if let Some((k, v)) = var {
            call = call.env(k, v);
        }
        let done = call.code(2);
        assert!(
            done.stderr.starts_with("error: "),
            "{args:?}: {}",
            done.stderr
        );
        assert!(
            done.stderr.contains("For more information, try '--help'"),
            "{}",
            done.stderr
        );
    }
    // The real accepted range is named.
    env.call(&["add", "s2", "10.0.0.2", "--weight", "300"])
        .code(2)
        .stderr_has("use 0-256");
}

#[test]
fn diff_exit_code_completions_and_man_page() {
    let env = TestEnv::new();
    env.ok(&["--no-check", "add", "s1", "10.0.0.1"]);
    env.call(&["render", "--diff", "--exit-code"]).code(0);
    env.write("nodes/s2", "10.0.0.2");
    let done = env
        .call(&["render", "--diff", "--exit-code"])
        .unchanged()
        .code(1);
    assert!(
        done.stdout.contains("+    server s2 10.0.0.2:3000"),
        "{}",
        done.stdout
    );
    assert!(!done.stderr.contains("error"), "{}", done.stderr);
    env.call(&["render", "--diff"]).code(0);
    let bash = env.call(&["completions", "bash"]).code(0).stdout;
    assert!(
        bash.contains("complete -F") && bash.contains("--nodes-dir"),
        "{bash}"
    );
    let man = env.call(&["man"]).code(0).stdout;
    assert!(man.contains(".TH hacfg") && man.contains("HACFG_MASTER_SOCKET"));
    assert!(man.contains("Exit codes"));
    let help = env.call(&["--help"]).code(0).stdout;
    assert!(
        help.contains("Examples:") && help.contains("8  status"),
        "{help}"
    );
}

#[test]
fn var_flags_add_to_hacfg_vars_and_keep_commas() {
    let env = TestEnv::new();
    let tmpl = env.write("v.j2", "{{ vars.a }}|{{ vars.b }}|{{ vars.c }}\n");
    let t = tmpl.to_str().unwrap();
    let out = env
        .call(&[
            "--template",
            t,
            "--var",
            "b=flag,with,commas",
            "render",
            "--stdout",
        ])
        .env("HACFG_VARS", r"a=1,b=env,c=x\,y")
        .code(0)
        .stdout;
    assert_eq!(out, "1|flag,with,commas|x,y\n");
    // A key twice in the same place is still an error.
    env.call(&["--template", t, "render", "--stdout"])
        .env("HACFG_VARS", "a=1,a=2")
        .code(2)
        .stderr_has("invalid HACFG_VARS: the key \"a\" is given twice");
}

/// Serf throws a handler's stderr away: every error and every non-zero
/// exit reaches `--log-file` too, as one line with its exit code.
#[test]
fn every_error_and_exit_code_reaches_the_log_file() {
    let env = TestEnv::new();
    let log = env.path("serf.log");
    let log_arg = log.to_str().unwrap();
    let tail = || {
        let text = fs::read_to_string(&log).unwrap_or_default();
        text.lines().last().unwrap_or_default().to_string()
    };
    env.ok(&["--no-check", "add", "s1", "10.0.0.1"]);
    // The check rejects the config (exit 3).
    env.call(&[
        "--log-file",
        log_arg,
        "--check-cmd",
        "echo nope; false {}",
        "add",
        "s2",
        "10.0.0.2",
    ])
    .code(3);
    let line = tail();
    assert!(
        line.contains("hacfg[") && line.contains(": error: "),
        "{line}"
    );
    assert!(line.ends_with("(exit 3)"), "{line}");
    assert!(
        line.contains("nope"),
        "HAProxy's words, on the same line: {line}"
    );
    // A template error (exit 1), its causes on the same line.
    let tmpl = env.write("bad.j2", "{{ nodes | nope }}\n");
    env.call(&[
        "--log-file",
        log_arg,
        "--template",
        tmpl.to_str().unwrap(),
        "render",
    ])
    .code(1);
    let line = tail();
    assert!(
        line.contains("error: ") && line.ends_with("(exit 1)"),
        "{line}"
    );
    assert!(line.contains("bad.j2"), "{line}");
    // A failed reload (exit 4).
    env.call(&[
        "--log-file",
        log_arg,
        "--no-check",
        "--reload",
        "--reload-cmd",
        "exit 1",
        "reload",
    ])
    .code(4);
    let line = tail();
    assert!(
        line.contains("error: reload failed") && line.ends_with("(exit 4)"),
        "{line}"
    );
    // A usage error, even one clap finds in a variable (exit 2).
    env.call(&["--log-file", log_arg, "render"])
        .env("HACFG_MIN_NODES", "x")
        .code(2);
    let line = tail();
    assert!(
        line.contains("error: ") && line.ends_with("(exit 2)"),
        "{line}"
    );
    env.call(&["render"])
        .env("HACFG_LOG_FILE", &log)
        .env("HACFG_QUIET", "yes-please")
        .code(2);
    let line = tail();
    assert!(
        line.contains("yes-please") && line.ends_with("(exit 2)"),
        "{line}"
    );
    // A partial success is a warning, with its code (exit 6).
    env.call(&["--log-file", log_arg, "--no-check", "serf"])
        .env("SERF_EVENT", "member-join")
        .stdin("bad name\t10.0.0.3\tbackend\t\n")
        .code(6);
    let line = tail();
    assert!(
        line.contains("warning: member-join: 1 member(s) skipped"),
        "{line}"
    );
    assert!(line.ends_with("(exit 6)"), "{line}");
    // Every error line is one line: nothing spills onto lines of its own.
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.lines().all(|l| l.contains(" hacfg[")), "{text}");
}

/// Debian installs HAProxy in /usr/sbin, which a user's PATH lacks: hacfg
/// looks there (and in /usr/local/sbin) too, and `-v` says which one runs.
#[test]
fn haproxy_is_found_in_sbin_without_it_on_path() {
    let Some(haproxy) = tool("haproxy") else {
        return;
    };
    let dir = haproxy.parent().unwrap();
    if !["/usr/sbin", "/usr/local/sbin"]
        .iter()
        .any(|d| dir == std::path::Path::new(d))
    {
        eprintln!("note: haproxy is not in an sbin folder; skipping");
        return;
    }
    let env = TestEnv::new();
    let done = env
        .call(&[
            "-v",
            "--reload",
            "--reload-cmd",
            "true",
            "add",
            "s1",
            "10.0.0.1",
        ])
        .env("PATH", "/usr/bin:/bin")
        .code(0);
    done.stderr_has(&format!(
        "checking the candidate with `{} -c`",
        haproxy.display()
    ));
}

/// Editors leave files in a folder they save into: vim's write probe
/// `4913` (empty, for an instant) and swap files are no nodes. An empty
/// file under any other name is still an error that names it.
#[test]
fn editor_probes_and_swap_files_are_ignored() {
    let env = TestEnv::new();
    env.ok(&["add", "s1", "10.0.0.1"]);
    env.write("nodes/4913", "");
    env.write("nodes/s1.swp", "garbage");
    env.write("nodes/s1.swx", "garbage");
    env.call(&["render"]).code(0).stderr_has(
        "skipped 3 file(s) in `$TMP/nodes` that are never nodes (editor, package-manager or lock \
         leftovers, hidden files): \"4913\", \"s1.swp\", \"s1.swx\"",
    );
    assert_eq!(env.servers(), ["s1 10.0.0.1:3000"]);
    env.call(&["add", "4913", "10.0.0.2"])
        .unchanged()
        .code(2)
        .stderr_has("files named like this are ignored");
    env.write("nodes/s2", "");
    env.call(&["render"])
        .code(6)
        .stderr_has("invalid node file `$TMP/nodes/s2`")
        .stderr_has("the file is empty");
}

#[test]
fn a_hand_edit_to_the_output_is_kept_and_said() {
    let env = TestEnv::new();
    env.ok(&["add", "s1", "10.0.0.1"]);
    let edited = env
        .output_text()
        .replace("balance", "# an operator's note\n    balance");
    fs::write(&env.output, &edited).unwrap();
    env.call(&["add", "s2", "10.0.0.2"])
        .code(0)
        .stderr_has("was changed by hand since hacfg last wrote it: the edited file is kept as")
        .stderr_has("1 line(s) differ from the new config");
    let kept = env.output.with_file_name("haproxy.cfg.edited");
    assert_eq!(fs::read_to_string(&kept).unwrap(), edited);
    assert!(env.output_text().contains("server s2 "));
    assert!(!env.output_text().contains("an operator's note"));
    // hacfg's own writes are no edit: the next run keeps nothing new.
    fs::remove_file(&kept).unwrap();
    env.call(&["add", "s3", "10.0.0.3"]).code(0);
    assert!(!kept.exists());
}
