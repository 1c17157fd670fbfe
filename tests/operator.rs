//! An operator's ordinary day: a typo in one node file or a stray file in
//! the folder never blinds the pool; a real HAProxy, real HTTP.

use std::fs;

use crate::harness::TestEnv;
use crate::harness::wait_until;
use crate::live::Pool;

#[test]
fn a_typo_in_one_node_file_is_held_back_while_every_good_add_goes_live() {
    let env = TestEnv::new();
    let names = ["s1", "s2", "s3", "s4"];
    let Some(pool) = Pool::backends(&env, &names).nodes(&["s1"]).start() else {
        return;
    };
    let typo = r#"{"name":"typo","address":"127.0.0.1","port":9,"wieght":3}"#;
    fs::write(env.nodes.join("typo"), typo).unwrap();
    // A burst of adds beside it: each goes live, each run says the typo.
    let adds: Vec<_> = names[1..]
        .iter()
        .map(|n| {
            let endpoint = pool[*n].endpoint();
            let args = pool.runtime_args(&["add", n, &endpoint]);
            env.call(&args).spawn()
        })
        .collect();
    for add in adds {
        let done = add.code(6);
        assert!(
            done.stderr.contains("unknown field `wieght`"),
            "{}",
            done.stderr
        );
    }
    assert!(
        wait_until(20.0, || pool.answering(40).len() == 4),
        "every good node serves"
    );
    // `list` shows the whole pool, the typo marked; `--json` says why.
    let table = env.ok(&["list"]);
    let row = table
        .lines()
        .find(|l| l.starts_with("typo"))
        .unwrap_or_default();
    assert!(
        row.contains("unreadable: ") && row.contains("wieght"),
        "{table}"
    );
    let json: serde_json::Value = serde_json::from_str(&env.ok(&["list", "--json"])).unwrap();
    let listed = json.as_array().unwrap();
    assert_eq!(listed.len(), 5, "{json}");
    let bad = listed.iter().find(|v| v["file"] == "typo").unwrap();
    assert!(bad["unreadable"].as_str().unwrap().contains("wieght"));
    // `status` answers, names it, and is not "ok".
    let status = env.call(&pool.runtime_args(&["status"])).code(8);
    assert!(status.stdout.contains("s4"), "{}", status.stdout);
    assert!(status.stderr.contains("nodes/typo`"), "{}", status.stderr);
    // Fixed, the node comes in at the next run.
    fs::write(env.nodes.join("typo"), "127.0.0.1:9").unwrap();
    env.call(&pool.runtime_args(&["render"])).code(0);
    assert!(env.output_text().contains("server typo 127.0.0.1:9"));
}

#[test]
fn stray_files_are_never_servers() {
    let env = TestEnv::new();
    env.ok(&["add", "s1", "10.0.0.1"]);
    let stray = [
        "stale.lock",
        "s1~",
        "s1.swp",
        "s1.swx",
        "s1.bak",
        "s1.orig",
        "s1.rej",
        "s1.tmp",
        "s1.dpkg-old",
        "s1.rpmnew",
        "s1.rpmsave",
        "#s1#",
        ".s1",
    ];
    for name in stray {
        fs::write(env.nodes.join(name), "10.0.0.9").unwrap();
    }
    let done = env.call(&["render"]).code(0);
    assert_eq!(env.servers(), ["s1 10.0.0.1:3000"]);
    assert!(!env.output_text().contains("10.0.0.9"));
    // One warning per run, naming them.
    let warnings: Vec<&str> = done
        .stderr
        .lines()
        .filter(|l| l.contains("skipped"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", done.stderr);
    for name in stray {
        assert!(
            warnings[0].contains(&format!("\"{name}\"")),
            "{name}: {}",
            warnings[0]
        );
    }
    // A name `add` refuses can never come from the folder either.
    env.call(&["add", "stale.lock", "10.0.0.9"]).code(2);
}

#[test]
fn a_socket_this_user_may_not_use_is_said_so_with_advice_that_works() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixListener;
    let env = TestEnv::new();
    // Root's socket, mode 0600; hacfg runs as nobody, who owns the folders.
    let socket = env.path("master.sock");
    let _listener = UnixListener::bind(&socket).unwrap();
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(env.path(""), fs::Permissions::from_mode(0o755)).unwrap();
    for dir in [
        env.nodes.clone(),
        env.output.parent().unwrap().to_path_buf(),
    ] {
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    }
    let socket = socket.to_str().unwrap();
    let args = ["--no-check", "--reload", "--master-socket", socket];
    for command in [&["init"][..], &["render"]] {
        let done = env
            .call(&[&args[..], command].concat())
            .user(65534, 65534)
            .code(4);
        assert!(
            done.stderr
                .contains("--master-socket `$TMP/master.sock`: permission denied")
                && done
                    .stderr
                    .contains("run hacfg as a user the socket lets in"),
            "{}",
            done.stderr
        );
        assert!(!done.stderr.contains("--force render"), "{}", done.stderr);
    }
}
