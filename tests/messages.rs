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

/// A handler's settings, as an operator's shell may hold them: a reload
/// with no way to reload, a check that cannot work, a mode with no socket.
const HANDLER_SETTINGS: &[&[(&str, &str)]] = &[
    &[
        ("HACFG_RELOAD", "true"),
        ("HACFG_APPLY", "runtime"),
        ("HACFG_CHECK_CMD", "check-without-a-path"),
    ],
    &[
        ("HACFG_RELOAD", "on"),
        ("HACFG_HAPROXY_BIN", "/nonexistent/haproxy"),
    ],
];

/// Read-only commands never fail on apply settings; a run that changes
/// something still refuses them, and changes nothing.
#[test]
fn read_only_commands_never_fail_on_apply_settings() {
    let env = TestEnv::new();
    env.ok(&["--no-check", "add", "s1", "10.0.0.1"]);
    for settings in HANDLER_SETTINGS {
        let call = |args: &[&str]| {
            let call = env.call(args).unchanged();
            settings.iter().fold(call, |call, (k, v)| call.env(k, v))
        };
        let listed = call(&["list"]).code(0).stdout;
        assert!(listed.contains("s1"), "{settings:?}: {listed}");
        call(&["render", "--stdout"])
            .code(0)
            .stdout_has("server s1 10.0.0.1:3000");
        call(&["render", "--diff", "--exit-code"]).code(0);
        call(&["man"]).code(0);
        call(&["completions", "bash"]).code(0);
        let refused = call(&["render", "--force"]).run();
        assert!(
            matches!(refused.code, Some(1 | 2)),
            "{settings:?}: {}",
            refused.stderr
        );
    }
    // `status` too, with HAProxy's stats socket and no reload method.
    let Some(pool) = Pool::backends(&env, &["s1"]).nodes(&["s1"]).start() else {
        return;
    };
    let socket = env.path("admin.sock");
    let status = pool.args(&["--stats-socket", socket.to_str().unwrap(), "status"]);
    for settings in HANDLER_SETTINGS {
        let call = env.call(&status);
        let call = settings.iter().fold(call, |call, (k, v)| call.env(k, v));
        call.code(0).stdout_has("s1");
    }
}

/// An empty variable is unset: its default holds (`HACFG_RELOAD=` was a
/// usage error).
#[test]
fn an_empty_variable_is_unset() {
    let env = TestEnv::new();
    env.write("nodes/s1", "10.0.0.1");
    let mut call = env.call(&["--no-check", "render"]);
    for var in [
        "HACFG_RELOAD",
        "HACFG_QUIET",
        "HACFG_VERBOSE",
        "HACFG_NO_CHECK",
        "HACFG_DEFAULT_PORT",
        "HACFG_MIN_NODES",
        "HACFG_TEMPLATE",
        "HACFG_LOG_FILE",
        "HACFG_METRICS_FILE",
        "HACFG_HAPROXY_BIN",
        "HACFG_CHECK_CMD",
        "HACFG_RELOAD_CMD",
        "HACFG_PID_FILE",
        "HACFG_MASTER_SOCKET",
        "HACFG_STATS_SOCKET",
        "HACFG_RELOAD_TIMEOUT",
        "HACFG_DRAIN_TIMEOUT",
        "HACFG_CHECK_TIMEOUT",
        "HACFG_SOCKET_TIMEOUT",
        "HACFG_APPLY",
        "HACFG_WRITE_MODE",
        "HACFG_NODES_DIR",
        "HACFG_OUTPUT",
    ] {
        call = call.env(var, "");
    }
    call.code(0);
    assert!(env.output_text().contains("server s1 10.0.0.1:3000"));
    env.call(&["sync", "--dry-run", "--serf-bin", "/nonexistent/serf"])
        .env("HACFG_SERF_ROLE", "")
        .env("HACFG_ON_FAILED", "")
        .env("HACFG_SERF_BIN", "")
        .run()
        .stderr_has("/nonexistent/serf");
}

/// Booleans read as people write them, in any case.
#[test]
fn boolean_variables_take_yes_no_on_off_1_0() {
    let env = TestEnv::new();
    let said = |value: &str, name: &str| {
        let done = env
            .call(&["--no-check", "add", name, "10.0.0.1"])
            .env("HACFG_QUIET", value)
            .code(0);
        !done.stderr.is_empty()
    };
    for (i, yes) in ["true", "1", "yes", "on", "YES", "On"].iter().enumerate() {
        assert!(!said(yes, &format!("q{i}")), "HACFG_QUIET={yes}");
    }
    for (i, no) in ["false", "0", "no", "off", "NO", "Off"].iter().enumerate() {
        assert!(said(no, &format!("n{i}")), "HACFG_QUIET={no}");
    }
    // Anything else is refused, saying what is taken.
    env.call(&["list"])
        .env("HACFG_RELOAD", "maybe")
        .unchanged()
        .code(2)
        .stderr_has(
            "invalid value 'maybe' for 'HACFG_RELOAD': use true or false, 1 or 0, yes or no, on \
             or off",
        );
    // A reload that runs only when HACFG_RELOAD says so.
    let marker = env.path("reloaded");
    let reload_cmd = format!("touch {}", marker.display());
    for (value, reloads) in [("off", false), ("0", false), ("on", true)] {
        env.call(&["--reload-cmd", &reload_cmd, "--force", "render"])
            .env("HACFG_RELOAD", value)
            .env("HACFG_NO_CHECK", "yes")
            .code(0);
        assert_eq!(marker.exists(), reloads, "HACFG_RELOAD={value}");
    }
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

/// `-h` is short (a command's own options, one line each), `--help` long
/// (the global options under one heading, the examples, the exit codes).
#[test]
fn short_help_is_short_and_long_help_has_the_global_options() {
    let env = TestEnv::new();
    let commands = [
        "init",
        "add",
        "remove",
        "list",
        "render",
        "reload",
        "serf",
        "sync",
        "status",
        "fleet",
        "settle",
        "doctor",
        "completions",
        "man",
    ];
    for command in commands {
        let short = env.call(&[command, "-h"]).code(0).stdout;
        let lines = short.lines().count();
        assert!(lines <= 25, "`{command} -h` has {lines} lines:\n{short}");
        assert!(!short.contains("--nodes-dir"), "{short}");
        assert!(short.contains("see more with '--help'"), "{short}");
        let long = env.call(&[command, "--help"]).code(0).stdout;
        assert_eq!(long.matches("Global options").count(), 1, "{long}");
        assert!(long.contains("\nGlobal options:\n") && long.contains("--nodes-dir"));
    }
    // One line per command, a few around them, and no global option.
    let short = env.call(&["-h"]).code(0).stdout;
    assert!(short.lines().count() <= 30, "{short}");
    assert!(!short.contains("  --nodes-dir"), "{short}");
    assert!(
        short.contains("--help") && short.contains("man hacfg"),
        "{short}"
    );
    assert!(
        !short.contains("Exit codes") && !short.contains("--nodes-dir <"),
        "{short}"
    );
    let long = env.call(&["--help"]).code(0).stdout;
    assert!(
        long.contains("Exit codes") && long.contains("--lock-timeout"),
        "{long}"
    );
    assert!(long.contains("[env: HACFG_FORCE=]") && long.contains("[env: HACFG_IN_PLACE="));
}

/// A usage error's usage line shows no optional global as if it were
/// required (clap lists what it took, a variable's value too), and a
/// suggestion is a near miss only.
#[test]
fn usage_errors_show_plain_usage_and_near_suggestions() {
    let env = TestEnv::new();
    let nodes = env.path("nodes");
    let done = env
        .call(&["add", "s1"])
        .env("HACFG_NODES_DIR", &nodes)
        .env("HACFG_RELOAD", "yes")
        .code(2);
    done.stderr_has("\nUsage: hacfg add [OPTIONS] <NAME> <ADDRESS>\n");
    assert!(!done.stderr.contains("--nodes-dir"), "{}", done.stderr);
    let done = env.call(&["list", "--format"]).code(2);
    done.stderr_has("unexpected argument '--format'")
        .stderr_has("\nUsage: hacfg list [OPTIONS]\n");
    assert!(!done.stderr.contains("--force"), "{}", done.stderr);
    env.call(&["status", "--jsn"])
        .code(2)
        .stderr_has("a similar argument exists: '--json'");
    env.call(&["list", "--nodes-dr", "x"])
        .code(2)
        .stderr_has("a similar argument exists: '--nodes-dir'");
}
