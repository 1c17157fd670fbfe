//! One bad member never freezes the pool, and no mistake empties it:
//! poison nodes against the real `haproxy -c`, missing folders, and no
//! unchecked reload.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::harness::{Call, TestEnv, tool, wait_until};
use crate::live::{Haproxy, Pool};

#[test]
fn nodes_haproxy_refuses_are_held_back_and_the_rest_goes_live() {
    if tool("haproxy").is_none() {
        return;
    }
    let env = TestEnv::offline();
    env.ok(&["add", "good1", "127.0.0.1"]);

    // An unresolvable host name: that add fails with HAProxy's words...
    env.call(&["add", "bad", "nonexistent.invalid"])
        .code(3)
        .stderr_has("HAProxy refused node `bad`; it is held back and the rest went live")
        .stderr_has("could not resolve address 'nonexistent.invalid'");
    assert_eq!(env.servers(), ["good1 127.0.0.1:3000"]);
    // ...and later changes go live, with one line naming what is held back.
    env.call(&["add", "good2", "127.0.0.2"]).code(0).stderr_has(
        "hacfg: warning: 1 node(s) still held back, refused by HAProxy before: `bad` \
             (see `hacfg list`)\n",
    );
    assert_eq!(
        env.servers(),
        ["good1 127.0.0.1:3000", "good2 127.0.0.2:3000"]
    );

    // A backend tag that collides with the built-in template's `listen stats`.
    env.call(&["add", "st", "127.0.0.3", "--tag", "backend=stats"])
        .code(3)
        .stderr_has("HAProxy refused node `st`")
        .stderr_has("backend 'stats' has the same name as proxy 'stats'");
    assert!(!env.output_text().contains("backend stats"));
    assert_eq!(env.servers().len(), 2);

    // `list` shows both as rejected, with the reason.
    let table = env.ok(&["list"]);
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_default()
            .to_string()
    };
    assert!(row("bad").contains("rejected: ") && row("bad").contains("could not resolve"));
    assert!(row("st").contains("rejected: "), "{table}");
    assert!(row("good1").trim_end().ends_with(" ok"), "{table}");
    let json: serde_json::Value = serde_json::from_str(&env.ok(&["list", "--json"])).unwrap();
    assert!(
        json[0]["rejected"]
            .as_str()
            .unwrap()
            .contains("nonexistent.invalid")
    );
    assert!(json[1].get("rejected").is_none());

    // A removal that touches neither succeeds too.
    env.call(&["remove", "good2"])
        .code(0)
        .stderr_has("2 node(s) still held back, refused by HAProxy before: `bad`, `st`");
    // A held node that changes is tried again, and goes live when good.
    env.call(&["add", "bad", "127.0.0.4"]).code(0);
    assert_eq!(
        env.servers(),
        ["bad 127.0.0.4:3000", "good1 127.0.0.1:3000"]
    );
    env.call(&["remove", "st"]).code(0);
    let done = env.call(&["render"]).code(0);
    assert!(!done.stderr.contains("held back"), "{}", done.stderr);
    assert!(!env.nodes.join(".hacfg.held").exists());
}

#[test]
fn a_server_line_haproxy_refuses_is_held_back() {
    if tool("haproxy").is_none() {
        return;
    }
    let env = TestEnv::new();
    let tmpl = env.write(
        "extra.j2",
        "defaults\n    mode http\n    timeout connect 1s\n    timeout client 1s\n    \
         timeout server 1s\nlisten b\n    bind 127.0.0.1:9\n{% for n in nodes %}\n    server {{ n.name }} \
         {{ n.address }}:{{ n.port }} {{ n.tags.extra | default('') }}\n{% endfor %}\n",
    );
    let t = tmpl.to_str().unwrap();
    env.ok(&["--template", t, "add", "before", "127.0.0.1"]);
    env.call(&[
        "--template",
        t,
        "add",
        "kw",
        "127.0.0.2",
        "--tag",
        "extra=nosuchkeyword",
    ])
    .code(3)
    .stderr_has("unknown keyword 'nosuchkeyword'");
    env.call(&[
        "--template",
        t,
        "add",
        "after",
        "127.0.0.3",
        "--tag",
        "extra=backup",
    ])
    .code(0)
    .stderr_has("`kw`");
    assert_eq!(
        env.servers(),
        ["after 127.0.0.3:3000", "before 127.0.0.1:3000"]
    );
    // A refusal that no node explains still rejects the whole config.
    let broken = env.write("broken.j2", "this is not haproxy\n");
    env.call(&["--template", broken.to_str().unwrap(), "render"])
        .unchanged()
        .code(3)
        .stderr_has("rejected the new config");
}

#[test]
fn a_refusal_found_far_down_the_checks_stderr_still_names_its_node() {
    let env = TestEnv::new();
    for (name, addr) in [("good", "10.0.0.1"), ("bad", "10.0.0.2")] {
        env.ok(&["--no-check", "add", name, addr]);
    }
    // HAProxy's answer is its stderr: 800 warnings (about 100 KiB) before
    // the alert that names the line of `bad`'s server.
    let check = env.write(
        "check.sh",
        "grep -q 'server bad ' \"$1\" || exit 0\n\
         i=0; while [ $i -lt 800 ]; do\n\
         echo \"[WARNING]  (1) : config : a warning that changes nothing, number $i, padded to about \
         a hundred bytes\" >&2; i=$((i + 1)); done\n\
         n=$(grep -n 'server bad ' \"$1\" | cut -d: -f1)\n\
         echo \"[ALERT]    (1) : config : parsing [$1:$n] : 'server bad' : refused.\" >&2\n\
         exit 1\n",
    );
    let cmd = format!("sh {} {{}}", check.display());
    env.call(&["--check-cmd", &cmd, "--force", "render"])
        .code(6)
        .stderr_has("`bad`");
    assert_eq!(env.servers(), ["good 10.0.0.1:3000"]);
}

#[test]
fn a_missing_folder_is_an_error_for_every_command() {
    let env = TestEnv::new();
    env.ok(&["--no-check", "add", "s1", "10.0.0.1"]);
    fs::rename(&env.nodes, env.path("nodes.away")).unwrap();
    let missing = "hacfg: error: nodes folder `$TMP/nodes` does not exist (create it with \
                   `hacfg init`, or set --nodes-dir or HACFG_NODES_DIR)\n";
    for args in [
        &["remove", "s1"][..],
        &["add", "s2", "10.0.0.2"],
        &["render"],
        &["list"],
    ] {
        env.call(args).unchanged().code(1).stderr_is(missing);
    }
    // A leave event into a lost folder: stdin is drained, nothing changes.
    env.call(&["serf"])
        .env("SERF_EVENT", "member-leave")
        .stdin("s1\t10.0.0.1\tbackend\t\n")
        .unchanged()
        .code(1)
        .stderr_is(missing);
    fs::rename(env.path("nodes.away"), &env.nodes).unwrap();

    // A mistyped output folder: refused before the node file is written.
    let etc = env.output.parent().unwrap().to_path_buf();
    fs::rename(&etc, env.path("etc.away")).unwrap();
    env.call(&["add", "s2", "10.0.0.2"])
        .unchanged()
        .code(1)
        .stderr_is(
            "hacfg: error: output folder `$TMP/etc` does not exist (create it with \
             `hacfg init`, or set --output or HACFG_OUTPUT)\n",
        );
    fs::rename(env.path("etc.away"), &etc).unwrap();

    // `init` creates both, for a new balancer, and renders the first config.
    let fresh = TestEnv::new();
    fs::remove_dir(&fresh.nodes).unwrap();
    fs::remove_dir(fresh.output.parent().unwrap()).unwrap();
    let state = fresh.state_var();
    fresh.call(&["--var", &state, "--no-check", "init"]).code(0);
    assert!(fresh.nodes.is_dir());
    assert!(fresh.output_text().contains("backend nodes"));
    fresh
        .call(&["--var", &state, "--no-check", "init"])
        .code(0)
        .stderr_has("unchanged");
}

#[test]
fn no_unchecked_reload() {
    let env = TestEnv::new();
    let Some(call) = without_haproxy(
        &env,
        &["--reload", "--reload-cmd", "true", "add", "s1", "10.0.0.1"],
    ) else {
        return;
    };
    call.unchanged().code(1).stderr_is(
        "hacfg: error: refusing to reload HAProxy with an unchecked config: no `haproxy` found \
         on PATH, in /usr/local/sbin or in /usr/sbin; set --haproxy-bin PATH (or \
         HACFG_HAPROXY_BIN), or --no-check to reload without a check\n",
    );
    // Without --reload: written, with one warning line.
    let done = without_haproxy(&env, &["add", "s1", "10.0.0.1"])
        .unwrap()
        .code(0);
    let warnings: Vec<&str> = done
        .stderr
        .lines()
        .filter(|l| l.contains("warning"))
        .collect();
    assert_eq!(
        warnings,
        [
            "hacfg: warning: no `haproxy` found on PATH, in /usr/local/sbin or in /usr/sbin: \
             `$TMP/etc/haproxy.cfg` is written unchecked (set --haproxy-bin, or --no-check to \
             silence this)"
        ]
    );
    // --no-check says it on purpose: no warning.
    let done = without_haproxy(&env, &["--no-check", "add", "s2", "10.0.0.2"])
        .unwrap()
        .code(0);
    assert!(!done.stderr.contains("warning"), "{}", done.stderr);
}

/// `hacfg ARGS` (with the env's folders) where no haproxy can be found: an
/// empty PATH, and /usr/sbin and /usr/local/sbin hidden under empty tmpfs
/// mounts in a mount namespace of its own (root only; `None` elsewhere).
fn without_haproxy<'e>(env: &'e TestEnv, args: &[&str]) -> Option<Call<'e>> {
    let root = rustix::process::geteuid().is_root();
    if !root || !std::path::Path::new("/usr/bin/unshare").exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root with unshare"
        );
        eprintln!("note: not root or no unshare; skipping the no-haproxy test");
        return None;
    }
    let no_haproxy = env.path("empty-bin");
    fs::create_dir_all(&no_haproxy).unwrap();
    let script = r#"/bin/mount -t tmpfs tmpfs /usr/sbin || exit 90
        /bin/mount -t tmpfs tmpfs /usr/local/sbin || exit 91
        PATH="$NO_HAPROXY" exec "$HACFG" "$@""#;
    let folders = [
        "--nodes-dir".to_string(),
        env.nodes.display().to_string(),
        "--output".to_string(),
        env.output.display().to_string(),
    ];
    let call = env
        .program("/usr/bin/unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "/bin/sh",
            "-c",
            script,
            "sh",
        ])
        .args(folders)
        .args(args)
        .env("HACFG", crate::harness::HACFG)
        .env("NO_HAPROXY", &no_haproxy);
    Some(call)
}

#[test]
fn sync_from_an_empty_list_changes_nothing() {
    let env = TestEnv::offline();
    env.ok(&["--no-check", "add", "w1", "10.0.0.1"]);
    let fake = env.write("fake-serf", "#!/bin/sh\necho '{\"members\":[]}'\n");
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let fake = fake.to_str().unwrap();
    env.call(&["--no-check", "sync", "--serf-bin", fake])
        .unchanged()
        .code(5)
        .stderr_has("the Serf agent sees 0 alive member(s), so no other member: nothing changed");
    env.call(&["--no-check", "sync", "--serf-bin", fake, "--allow-empty"])
        .code(0);
    assert_eq!(env.servers(), Vec::<String>::new());
}

/// The built-in template, with a stand-in for DNS: a node whose address
/// ends in `.invalid` is rendered as 127.0.0.1 ("it resolves"), unless
/// `--var dns=down`, which renders the name itself (`haproxy -c` cannot
/// resolve it: the outage).
fn dns_template(env: &TestEnv) -> String {
    let builtin = include_str!("../templates/haproxy.cfg.j2");
    let resolved = "{% if '.invalid' in n.address and vars.dns | default('up') == 'up' %}\
                    127.0.0.1:{{ n.port }}{% else %}{{ n.endpoint }}{% endif %}";
    assert!(builtin.contains("{{ n.endpoint }}"));
    let path = env.write("dns.j2", &builtin.replace("{{ n.endpoint }}", resolved));
    path.to_str().unwrap().to_string()
}

/// `--template T ARGS`.
fn with_template<'a>(tmpl: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    [&["--template", tmpl][..], args].concat()
}

#[test]
fn an_outage_that_blames_most_nodes_holds_nothing_back() {
    if tool("haproxy").is_none() {
        return;
    }
    let env = TestEnv::offline();
    let tmpl = dns_template(&env);
    let t = tmpl.as_str();
    for (name, addr) in [
        ("web1", "web1.invalid"),
        ("web2", "web2.invalid"),
        ("web3", "web3.invalid"),
        ("a", "127.0.0.11"),
    ] {
        env.ok(&with_template(t, &["add", name, addr]));
    }
    let live = env.output_text();
    assert_eq!(env.servers().len(), 4);

    // DNS is down for one check: HAProxy blames 3 of the 4 nodes. That is
    // the environment, not the nodes: nothing is held back, the config
    // stays, and the run says so with HAProxy's words.
    let done = env
        .call(&with_template(
            t,
            &["--var", "dns=down", "add", "b", "127.0.0.12"],
        ))
        .code(3);
    done.stderr_has("could not resolve address 'web1.invalid'")
        .stderr_has("blames 3 of the 5 nodes")
        .stderr_has("nothing was held back");
    assert_eq!(env.output_text(), live, "the config changed");
    assert!(
        !env.nodes.join(".hacfg.held").exists(),
        "nodes were held back"
    );
    assert!(env.nodes.join("b").exists(), "the node file is kept");

    // DNS is back: the next render takes everything.
    env.call(&with_template(t, &["render"])).code(0);
    assert_eq!(env.servers().len(), 5, "{}", env.output_text());
}

#[test]
fn a_guard_that_refuses_a_write_records_no_held_node() {
    if tool("haproxy").is_none() {
        return;
    }
    // One node of two is blamed (held back, were the write allowed), but
    // --min-nodes 2 refuses a config of one: nothing is recorded.
    let env = TestEnv::offline();
    let tmpl = dns_template(&env);
    let t = tmpl.as_str();
    env.ok(&with_template(t, &["add", "web1", "web1.invalid"]));
    env.ok(&with_template(t, &["add", "a", "127.0.0.11"]));
    let live = env.output_text();
    env.call(&with_template(
        t,
        &["--var", "dns=down", "--min-nodes", "2", "render"],
    ))
    .code(5)
    .stderr_has("--min-nodes 2");
    assert_eq!(env.output_text(), live);
    assert!(
        !env.nodes.join(".hacfg.held").exists(),
        "a refused write recorded held-back nodes"
    );
}

#[test]
fn held_nodes_come_back_by_themselves() {
    if tool("haproxy").is_none() {
        return;
    }
    let env = TestEnv::offline();
    let tmpl = dns_template(&env);
    let t = tmpl.as_str();
    for (name, addr) in [
        ("web1", "web1.invalid"),
        ("web2", "web2.invalid"),
        ("a", "127.0.0.11"),
        ("b", "127.0.0.12"),
    ] {
        env.ok(&with_template(t, &["add", name, addr]));
    }
    // DNS fails for two nodes of five: those two are held back, the rest
    // (the new node among them) goes live.
    env.call(&with_template(
        t,
        &["--var", "dns=down", "add", "c", "127.0.0.13"],
    ))
    .code(6)
    .stderr_has("HAProxy refused node `web1`");
    let names = |env: &TestEnv| -> Vec<String> {
        env.servers()
            .iter()
            .map(|s| s.split(' ').next().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&env), ["a", "b", "c"]);
    // DNS is back. Right after the refusal they are not tried again (a
    // held node costs no check on every run)...
    env.call(&with_template(t, &["render"]))
        .code(0)
        .stderr_has("still held back");
    assert_eq!(names(&env), ["a", "b", "c"]);
    // ...but once the retry interval has passed, the next run tries them,
    // and they come back by themselves.
    let held = env.nodes.join(".hacfg.held");
    let mut list: serde_json::Value = serde_json::from_slice(&fs::read(&held).unwrap()).unwrap();
    for entry in list.as_array_mut().unwrap() {
        entry["refused_ms"] = 0.into();
    }
    fs::write(&held, serde_json::to_vec(&list).unwrap()).unwrap();
    let done = env.call(&with_template(t, &["render"])).code(0);
    assert!(!done.stderr.contains("held back"), "{}", done.stderr);
    assert_eq!(names(&env), ["a", "b", "c", "web1", "web2"]);
    assert!(!held.exists());
}

/// hacfg arguments for runs against the pool's HAProxy through its master
/// socket (`--apply auto` unless `extra` says otherwise).
fn live_args<'a>(hap: &'a Haproxy, extra: &[&'a str]) -> Vec<&'a str> {
    let sock = hap.master_socket.to_str().expect("socket path");
    let mut args = hap.args(&["--reload", "--master-socket", sock]);
    args.extend_from_slice(extra);
    args
}

/// `live_args` with `--apply runtime`, then `extra`.
fn runtime_call<'e>(env: &'e TestEnv, hap: &Haproxy, extra: &[&str]) -> Call<'e> {
    let mut args = live_args(hap, &["--apply", "runtime"]);
    args.extend_from_slice(extra);
    env.call(&args)
}

#[track_caller]
fn live_names(hap: &Haproxy) -> Vec<String> {
    let mut n: Vec<String> = hap.servers().into_iter().map(|l| l.name).collect();
    n.sort();
    n
}

#[test]
fn a_runtime_refusal_reloads_or_waits_without_blocking_later_changes() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1", "s2"]).nodes(&["s1"]).start() else {
        return;
    };
    let s2 = pool["s2"].endpoint();
    // A server added by hand holds the id hacfg's template gives `n2`.
    let intrude = |name: &str, node: &str| {
        let id = hacfg::testing::stable_id(node);
        let answer = pool.command(&format!("add server nodes/{name} {s2} id {id}"));
        assert!(answer.contains("New server registered"), "{answer}");
    };
    intrude("intruder", "n2");
    // --apply auto: HAProxy refuses the runtime add, so hacfg takes the
    // reload path (checked, verified), which the intruder cannot block.
    env.call(&live_args(&pool, &["add", "n2", &s2]))
        .code(0)
        .stderr_has("reloading: HAProxy refused a runtime change")
        .stderr_has("already used");
    assert_eq!(pool.reloads(), (1, 0));
    assert!(wait_until(5.0, || live_names(&pool) == ["n2", "s1"]));

    // --apply runtime: the refusal changes nothing and exits 3...
    intrude("intruder2", "n3");
    let file = fs::read(&env.output).unwrap();
    let runtime = |extra: &[&str]| runtime_call(&env, &pool, extra);
    runtime(&["add", "n3", &s2])
        .code(3)
        .stderr_has("HAProxy refused a runtime change")
        .stderr_has("later runs apply every other change");
    assert_eq!(fs::read(&env.output).unwrap(), file);
    assert_eq!(live_names(&pool), ["intruder2", "n2", "s1"]);
    // ...and does not block the next, unrelated change: it is applied at
    // runtime (the intruder, in no file, is drift and goes), and n3 is
    // named as still waiting for a reload.
    runtime(&["add", "n4", &s2])
        .code(0)
        .stderr_has("runtime: added `nodes/n4`")
        .stderr_has("waiting for a reload")
        .stderr_has("server `nodes/n3`");
    assert!(wait_until(5.0, || live_names(&pool) == ["n2", "n4", "s1"]));
    assert!(env.output_text().contains("server n4 "));
    assert!(!env.output_text().contains("server n3 "));
    // A refused part is tried again once its retry interval has passed: a
    // second refusal leaves it waiting and lets the rest through...
    let backdate = || {
        let path = env.nodes.join(".hacfg.waiting");
        let mut list: serde_json::Value =
            serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        for entry in list.as_array_mut().unwrap() {
            entry["refused_ms"] = 1.into();
        }
        fs::write(&path, serde_json::to_vec(&list).unwrap()).unwrap();
    };
    intrude("intruder3", "n3");
    backdate();
    runtime(&["add", "n5", &s2])
        .code(0)
        .stderr_has("runtime: added `nodes/n5`")
        .stderr_has("server `nodes/n3`");
    assert!(wait_until(5.0, || live_names(&pool) == ["n2", "n4", "n5", "s1"]));
    // ...and once HAProxy takes it, it comes back at runtime by itself.
    backdate();
    let done = runtime(&["render"]).code(0);
    done.stderr_has("runtime: added `nodes/n3`");
    assert!(!done.stderr.contains("waiting"), "{}", done.stderr);
    assert_eq!(live_names(&pool), ["n2", "n3", "n4", "n5", "s1"]);
    assert!(!env.nodes.join(".hacfg.waiting").exists());
    assert_eq!(pool.reloads(), (1, 0), "--apply runtime reloaded");
}

#[test]
fn apply_runtime_leaves_what_needs_a_reload_waiting() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1", "s2", "a1"])
        .nodes(&["s1"])
        .start()
    else {
        return;
    };
    let runtime = |extra: &[&str]| runtime_call(&env, &pool, extra);
    let file = fs::read(&env.output).unwrap();
    // A node in a new backend needs a reload: refused, and the message says
    // exactly what changed (the node file) and what did not.
    let a1 = pool["a1"].endpoint();
    runtime(&["add", "a1", &a1, "--tag", "backend=api"])
        .code(7)
        .stderr_has("needs a reload")
        .stderr_has("HAProxy and `$TMP/etc/haproxy.cfg` are unchanged")
        .stderr_has("the nodes folder keeps the change");
    assert_eq!(fs::read(&env.output).unwrap(), file);
    assert!(env.nodes.join("a1").exists());
    // An unrelated change still goes through at runtime; a1 waits.
    runtime(&["add", "s2", &pool["s2"].endpoint()])
        .code(0)
        .stderr_has("runtime: added `nodes/s2`")
        .stderr_has("waiting for a reload")
        .stderr_has("server `api/a1`");
    assert_eq!(live_names(&pool), ["s1", "s2"]);
    assert!(env.output_text().contains("server s2 "));
    assert!(!env.output_text().contains("backend api"));
    runtime(&["add", "s2", &pool["s2"].endpoint(), "--weight", "3"]).code(0);
    assert_eq!(pool.reloads(), (0, 0));
    // A run that may reload applies what waited.
    env.call(&live_args(&pool, &["render"]))
        .code(0)
        .stderr_has("reloading:");
    assert_eq!(pool.reloads(), (1, 0));
    assert!(wait_until(5.0, || live_names(&pool) == ["a1", "s1", "s2"]));
    assert!(env.output_text().contains("backend api"));
}

#[test]
fn a_stale_state_file_is_never_loaded() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1", "s2", "s3"])
        .nodes(&["s1", "s2"])
        .start()
    else {
        return;
    };
    // An earlier run saved a state in which s1 was in maintenance.
    assert_eq!(pool.command("set server nodes/s1 state maint").trim(), "");
    let stale = pool.command("show servers state");
    assert_eq!(pool.command("set server nodes/s1 state ready").trim(), "");
    fs::write(env.path("server-state"), stale + "\n").unwrap();
    // A reload without a socket saves nothing: the stale file must not be
    // what the new worker loads.
    let warned_at_start = pool.log().matches("server state file").count();
    let pid_file = pool.pid_file.to_str().unwrap();
    env.ok(&pool.args(&[
        "--reload",
        "--pid-file",
        pid_file,
        "add",
        "s3",
        &pool["s3"].endpoint(),
    ]));
    assert!(wait_until(5.0, || pool.reloads().0 == 1));
    let s1 = pool.servers().into_iter().find(|l| l.name == "s1").unwrap();
    assert_eq!(
        s1.admin_state, 0,
        "s1 came back in maintenance from a stale state file"
    );
    // Emptied, not removed: a missing file is a warning at every start.
    assert_eq!(fs::read_to_string(env.path("server-state")).unwrap(), "1\n");
    let warned = |log: String| log.matches("server state file").count();
    assert_eq!(warned(pool.log()), warned_at_start, "{}", pool.log());
}

#[test]
fn a_first_start_has_its_server_state_file() {
    let Some(haproxy) = tool("haproxy") else {
        return;
    };
    let env = TestEnv::new();
    let state = env.path("var/server-state");
    fs::create_dir_all(state.parent().unwrap()).unwrap();
    let var = format!("state_file={}", state.display());
    env.ok(&["--var", &var, "init"]);
    assert_eq!(fs::read_to_string(&state).unwrap(), "1\n");
    let check = std::process::Command::new(&haproxy)
        .args(["-c", "-f"])
        .arg(&env.output)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stderr) + String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{said}");
    assert!(!said.contains("server state file"), "{said}");
    // An existing state is the operator's (or a reload's): left alone.
    fs::write(&state, "1\n# kept\n").unwrap();
    env.ok(&["--var", &var, "init"]);
    assert_eq!(fs::read_to_string(&state).unwrap(), "1\n# kept\n");
}

#[test]
fn init_never_empties_a_config() {
    let env = TestEnv::new();
    for (name, addr) in [("s1", "10.0.0.1"), ("s2", "10.0.0.2")] {
        env.ok(&["--no-check", "add", name, addr]);
    }
    let mistyped = env.path("nodez");
    env.hacfg()
        .arg("--nodes-dir")
        .arg(&mistyped)
        .arg("--output")
        .arg(&env.output)
        .args(["--var", &env.state_var(), "--no-check", "init"])
        .unchanged()
        .code(5)
        .stderr_has("`$TMP/etc/haproxy.cfg` (2 servers)")
        .stderr_has("`$TMP/nodez` (0 nodes)")
        .stderr_has("the folder does not exist")
        .stderr_has("`mkdir -p $TMP/nodez` and `hacfg sync` refills it");
    assert!(!mistyped.exists());
    assert_eq!(env.servers().len(), 2);
    // The right folder: init renders it as usual.
    env.call(&["--var", &env.state_var(), "--no-check", "init"])
        .code(0);
}

#[test]
fn init_skips_the_reload_when_haproxy_is_not_running() {
    if tool("haproxy").is_none() {
        return;
    }
    // The README's master-worker snippet, exported before HAProxy runs.
    let env = TestEnv::new();
    let sock = env.path("master.sock");
    env.call(&["--var", &env.state_var(), "init"])
        .env("HACFG_RELOAD", "true")
        .env("HACFG_MASTER_SOCKET", &sock)
        .code(0)
        .stderr_has("HAProxy is not running");
    assert!(env.output_text().contains("backend nodes"));
    // The signal strategy: no pid file, no HAProxy.
    let env = TestEnv::new();
    let pid_file = env.path("haproxy.pid");
    let pid_file = pid_file.to_str().unwrap();
    env.call(&[
        "--var",
        &env.state_var(),
        "--reload",
        "--pid-file",
        pid_file,
        "init",
    ])
    .code(0)
    .stderr_has("HAProxy is not running");
    assert!(env.output_text().contains("backend nodes"));
}
