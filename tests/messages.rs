//! What a new user reads: one exit code for every refused value, flag or
//! variable, the variable named when it was one, `--help` in order, IPv6
//! endpoints in brackets, and `-v` lines a person reads, not Rust structs.

use crate::harness::{TestEnv, tool};
use crate::live::Pool;

/// Refused values, each named in the first line of the error as `names`.
const FLAG_CASES: &[(&[&str], &str)] = &[
    (&["add", "s2", "10.0.0.2:+80"], "'<ADDRESS>'"),
    (
        &["add", "s2", "10.0.0.2", "--port", "0080"],
        "'--port <PORT>'",
    ),
    (
        &["add", "s2", "10.0.0.2", "--tag", "a=b c"],
        "'--tag <KEY=VALUE>'",
    ),
    (
        &["add", "s2", "10.0.0.2", "--tag", "backend=a/b"],
        "'--tag <KEY=VALUE>'",
    ),
    (
        &["add", "s2", "10.0.0.2", "--weight", "300"],
        "'--weight <WEIGHT>'",
    ),
    (&["add", "4913", "10.0.0.2"], "'<NAME>'"),
    (&["add", "a/b", "10.0.0.2"], "'<NAME>'"),
    (&["remove", "../x"], "'<NAME>'"),
    (
        &["--reload-timeout", "abc", "list"],
        "'--reload-timeout <SECS>'",
    ),
    (&["--apply", "bogus", "list"], "'--apply <APPLY_MODE>'"),
    (&["sync", "--role", "a b"], "'--role <ROLES>'"),
    (&["serf", "--role", ""], "'--role <ROLES>'"),
];

const ENV_CASES: &[(&str, &str, &[&str])] = &[
    ("HACFG_DEFAULT_PORT", "x", &["list"]),
    ("HACFG_RELOAD_TIMEOUT", "abc", &["list"]),
    ("HACFG_MIN_NODES", "-1", &["list"]),
    ("HACFG_APPLY", "bogus", &["list"]),
    ("HACFG_QUIET", "maybe", &["list"]),
    ("HACFG_WRITE_MODE", "inplace", &["render"]),
    ("HACFG_VARS", "no-equals-sign", &["render"]),
    ("HACFG_VARS", "bad-key=1", &["render"]),
    ("HACFG_CHECK_CMD", "true", &["render"]),
    ("HACFG_ON_FAILED", "bogus", &["serf"]),
    ("HACFG_SERF_ROLE", "x;rm", &["sync"]),
    // Empty items: an empty variable is unset, but an empty role is not.
    ("HACFG_SERF_ROLE", ",", &["serf"]),
];

#[track_caller]
fn first_line(stderr: &str) -> &str {
    let line = stderr.lines().next().unwrap_or_default();
    assert!(line.starts_with("error: "), "{stderr}");
    assert!(
        stderr.contains("For more information, try '--help'"),
        "{stderr}"
    );
    line
}

#[test]
fn a_refused_value_exits_2_whatever_its_kind() {
    let env = TestEnv::new();
    env.ok(&["--no-check", "add", "s1", "10.0.0.1"]);
    for (args, names) in FLAG_CASES {
        let done = env.call(args).unchanged().code(2);
        let line = first_line(&done.stderr);
        assert!(line.contains(names), "{args:?}: {line}");
    }
}

#[test]
fn a_refused_variable_is_named() {
    let env = TestEnv::new();
    env.ok(&["--no-check", "add", "s1", "10.0.0.1"]);
    for (var, value, args) in ENV_CASES {
        let done = env.call(args).env(var, value).unchanged().code(2);
        let line = first_line(&done.stderr);
        assert!(line.contains(var), "{var}={value}: {line}");
    }
    // The flag wins over its variable, and it is the flag that is named.
    let done = env
        .call(&["--default-port", "x", "list"])
        .env("HACFG_DEFAULT_PORT", "3000")
        .code(2);
    let line = first_line(&done.stderr);
    assert!(line.contains("'--default-port <DEFAULT_PORT>'"), "{line}");
    assert!(!line.contains("HACFG_DEFAULT_PORT"), "{line}");
}

#[test]
fn a_hostile_value_is_shown_escaped() {
    let env = TestEnv::new();
    let done = env
        .call(&["add", "s1\nserver evil 6.6.6.6:80", "10.0.0.2"])
        .unchanged()
        .code(2);
    let line = first_line(&done.stderr);
    assert!(
        line.starts_with(r#"error: invalid value "s1\nserver evil 6.6.6.6:80" for '<NAME>'"#),
        "{line}"
    );
    assert!(!done.stderr.contains("\nserver evil"), "{}", done.stderr);
    let long = "a".repeat(100_000);
    let done = env.call(&["add", &long, "10.0.0.2"]).unchanged().code(2);
    assert!(done.stderr.len() < 2_000, "{}", done.stderr.len());
    first_line(&done.stderr);
}

#[test]
fn a_commands_help_shows_its_own_options_before_the_global_ones() {
    let env = TestEnv::new();
    let help = env.call(&["add", "--help"]).code(0).stdout;
    let at = |part: &str| {
        help.find(part)
            .unwrap_or_else(|| panic!("{part} not in:\n{help}"))
    };
    assert!(at("<ADDRESS>") < at("--port <PORT>"), "{help}");
    assert!(at("--port <PORT>") < at("\nGlobal options:\n"), "{help}");
    assert!(at("--no-render") < at("\nGlobal options:\n"), "{help}");
    assert!(at("\nGlobal options:\n") < at("--nodes-dir"), "{help}");
    assert!(at("--nodes-dir") < at("--reload-timeout"), "{help}");
    // The built-in template's variables, with their defaults.
    let help = env.call(&["render", "--help"]).code(0).stdout;
    for part in ["frontend_bind", "[default: *:80]", "server_options"] {
        assert!(help.contains(part), "{part} not in:\n{help}");
    }
    let help = env.call(&["--help"]).code(0).stdout;
    assert!(help.contains("hacfg render --help"), "{help}");
}

#[test]
fn ipv6_endpoints_keep_their_brackets() {
    let env = TestEnv::new();
    env.call(&["--no-check", "add", "s6", "::1", "--port", "8080"])
        .code(0)
        .stderr_has("added node `s6` [::1]:8080\n");
    env.call(&["--no-check", "add", "s7", "[::1]:8081"])
        .code(0)
        .stderr_has("added node `s7` [::1]:8081\n");
    assert_eq!(env.servers(), ["s6 [::1]:8080", "s7 [::1]:8081"]);
    // An address that reads two ways is taken one way, and said so.
    env.call(&["--no-check", "add", "s8", "::1:80"])
        .code(0)
        .stderr_has("write [::1]:80")
        .stderr_has("added node `s8` [::1:80]:3000\n");
}

/// What `-v` must never print: Rust's debug view of a value.
#[track_caller]
fn assert_readable(stderr: &str) {
    for debug in [
        "Some(", "None", "(\"", "\")", " { ", "Haproxy(", "Add(", "Server {",
    ] {
        assert!(!stderr.contains(debug), "{debug:?} in:\n{stderr}");
    }
}

#[test]
fn verbose_lines_are_for_people() {
    let Some(haproxy) = tool("haproxy") else {
        return;
    };
    let env = TestEnv::new();
    let bin = haproxy.to_str().unwrap();
    let done = env
        .call(&["-v", "--haproxy-bin", bin, "add", "s1", "127.0.0.1:8080"])
        .code(0);
    done.stderr_has(&format!("checking the candidate with `{bin} -c`"))
        .stderr_has("added node `s1` 127.0.0.1:8080");
    assert_readable(&done.stderr);
}

#[test]
fn verbose_runtime_operations_are_for_people() {
    let env = TestEnv::new();
    let Some(pool) = Pool::backends(&env, &["s1", "s2"]).nodes(&["s1"]).start() else {
        return;
    };
    let endpoint = pool["s2"].endpoint();
    let done = env
        .call(&pool.runtime_args(&["-v", "add", "s2", &endpoint]))
        .code(0);
    done.stderr_has(&format!(
        "runtime API: 1 operation(s): add `nodes/s2` at {endpoint} weight 1\n"
    ));
    assert_readable(&done.stderr);
    let done = env
        .call(&pool.runtime_args(&["-v", "remove", "s2"]))
        .code(0);
    done.stderr_has("runtime API: 1 operation(s): delete `nodes/s2`\n");
    assert_readable(&done.stderr);
}
