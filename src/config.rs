//! Resolved settings: the only reader of `cli`. Precedence (flag > env >
//! default) is clap's; here values are checked and turned into plain types.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;

use crate::cli::{ApplyArg, ApplyArgs, Cli, CommandArgs, GlobalArgs, OnFailedArg, WriteModeArg};
use crate::haproxy::reload::{Reload, Strategy};
use crate::haproxy::{RuntimeApi, Socket};
use crate::log::Verbosity;
use crate::node::{self, Node};
use crate::output::WriteMode;
use crate::pipeline::check::Check;
use crate::pipeline::settle::Waits;
use crate::pipeline::worker::Worker;
use crate::pipeline::{Apply, ApplyMode, Settings};
use crate::quote::quote;
use crate::render::Renderer;
use crate::serf::OnFailed;

/// Everything a run needs, with no clap types left. Commands read it; the
/// pipeline below them sees only its own `Settings`.
#[derive(Debug)]
pub struct Config {
    /// Folder with one file per node.
    pub nodes_dir: PathBuf,
    /// The rendered configuration file.
    pub output: PathBuf,
    /// How the output is replaced.
    pub write_mode: WriteMode,
    /// What goes to stderr.
    pub verbosity: Verbosity,
    /// File that gets one line per action.
    pub log_file: Option<PathBuf>,
    /// What the pipeline needs.
    pub pipeline: Settings,
    pub command: Command,
}

#[derive(Debug)]
pub enum Command {
    Init,
    Completions(clap_complete::Shell),
    Man,
    Status {
        json: bool,
    },
    Add {
        node: Node,
        render: bool,
    },
    Remove {
        name: String,
        strict: bool,
        render: bool,
    },
    List {
        json: bool,
    },
    Render {
        mode: RenderMode,
    },
    Reload,
    /// `worker`: the detached worker a changing run starts.
    Settle {
        worker: bool,
    },
    /// `event`: SERF_EVENT; `self_name`: SERF_SELF_NAME; `query`:
    /// SERF_QUERY_NAME ("" if unset).
    Serf {
        roles: Vec<String>,
        on_failed: OnFailed,
        event: String,
        self_name: String,
        query: String,
    },
    Fleet(crate::fleet::Ask),
    Sync {
        roles: Vec<String>,
        on_failed: OnFailed,
        rpc_addr: Option<String>,
        serf_bin: PathBuf,
        dry_run: bool,
        allow_empty: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenderMode {
    Write,
    Stdout,
    /// `exit_code`: exit 1 when the output would change.
    Diff {
        exit_code: bool,
    },
}

impl Config {
    pub fn from_cli(cli: Cli) -> Result<Config> {
        let GlobalArgs {
            nodes_dir,
            template,
            output,
            default_port,
            vars,
            min_nodes,
            quiet,
            verbose,
            log_file,
            metrics_file,
            apply,
        } = cli.global;
        let verbosity = verbosity_from(quiet, verbose)?;
        let never_reloads = matches!(
            cli.command,
            CommandArgs::Completions(_) | CommandArgs::Man | CommandArgs::Fleet(_)
        );
        let wants_reload =
            (apply.reload || matches!(cli.command, CommandArgs::Reload)) && !never_reloads;
        let command = command_from(cli.command, default_port)?;
        let runtime = runtime_from(&apply);
        verify_needs_runtime(&command, runtime.is_some())?;
        let apply_mode = apply_mode_from(apply.apply_mode, runtime.is_some())?;
        let check = check_from(&apply, wants_reload)?;
        let renderer = Renderer {
            template,
            default_port,
            vars: vars_from(&vars)?,
        };
        let reload = wants_reload.then(|| reload_from(&apply)).transpose()?;
        let folders = (nodes_dir.as_path(), output.as_path());
        let files = [log_file.as_deref(), metrics_file.as_deref()];
        let worker = worker_from(folders, files, &renderer, min_nodes, &apply);
        let pipeline = Settings {
            renderer,
            min_nodes,
            check,
            apply: Apply::new(reload, runtime, apply_mode),
            force: apply.force,
            waits: Waits {
                drain: apply.drain_timeout,
                first_check: apply.check_timeout,
            },
            worker,
        };
        Ok(Config {
            nodes_dir,
            output,
            write_mode: write_mode_from(&apply),
            verbosity,
            log_file,
            pipeline,
            command,
        })
    }
}

/// `-q` and `-v` (or HACFG_QUIET and HACFG_VERBOSE) contradict each other.
/// Checked here, not with clap's `conflicts_with`: clap counts a variable
/// set to false as given (clap-rs/clap#5591), so `HACFG_QUIET=0 hacfg -v`
/// would be refused.
fn verbosity_from(quiet: bool, verbose: bool) -> Result<Verbosity> {
    match (quiet, verbose) {
        (true, true) => Err(conflict(
            "the argument '--quiet' cannot be used with '--verbose' (nor HACFG_QUIET with \
             HACFG_VERBOSE)",
        )),
        (true, false) => Ok(Verbosity::Quiet),
        (false, true) => Ok(Verbosity::Verbose),
        (false, false) => Ok(Verbosity::Normal),
    }
}

/// Where this run's metrics go, and the command they count it under: only
/// runs that may change something count (not `list`, `status`, `man`,
/// `completions`, `render --stdout`/`--diff`, `sync --dry-run`).
pub fn metrics_from(cli: &Cli) -> Option<crate::metrics::Target> {
    let path = cli.global.metrics_file.clone()?;
    let command = match &cli.command {
        CommandArgs::Init => "init",
        CommandArgs::Add(_) => "add",
        CommandArgs::Remove(_) => "remove",
        CommandArgs::Render(a) if !a.stdout && !a.diff => "render",
        CommandArgs::Reload => "reload",
        // A query changes nothing: `fleet`'s probes must not hide the last event.
        CommandArgs::Serf(a) if a.event.as_deref() == Some("query") => return None,
        CommandArgs::Serf(_) => "serf",
        CommandArgs::Sync(a) if !a.dry_run => "sync",
        CommandArgs::Settle(a) if a.worker => "worker",
        CommandArgs::Settle(_) => "settle",
        _ => return None,
    };
    (!path.as_os_str().is_empty()).then_some(crate::metrics::Target { path, command })
}

fn apply_mode_from(arg: ApplyArg, has_runtime: bool) -> Result<ApplyMode> {
    let mode = match arg {
        ApplyArg::Auto => ApplyMode::Auto,
        ApplyArg::Runtime => ApplyMode::Runtime,
        ApplyArg::Reload => ApplyMode::Reload,
    };
    if mode == ApplyMode::Runtime && !has_runtime {
        return Err(usage(
            "--apply runtime needs --master-socket or --stats-socket",
        ));
    }
    Ok(mode)
}

/// The worker's command line: this binary and everything a run of the
/// pipeline needs (the folder, the output, the template and its variables,
/// the check, the reload, the socket, the waits, the log and the metrics
/// file): it gets no `HACFG_*` of its caller's, and it is quiet (its stderr
/// goes nowhere). It renders and applies when a failed member that stayed
/// (`--on-failed verify`) goes. What may hold a secret (the variables, the
/// check and reload commands) goes in its environment, which only its user
/// can read, not on its command line, which anyone can.
fn worker_from(
    (nodes_dir, output): (&Path, &Path),
    files: [Option<&Path>; 2],
    renderer: &Renderer,
    min_nodes: usize,
    apply: &ApplyArgs,
) -> Worker {
    let mut args: Vec<OsString> = vec!["--nodes-dir".into(), nodes_dir.into()];
    args.extend(["--output".into(), output.into()]);
    let mut flag = |flag: &str, value: Option<OsString>| {
        if let Some(value) = value {
            args.extend([flag.into(), value]);
        }
    };
    let path = |p: Option<&PathBuf>| p.map(OsString::from);
    flag("--template", path(renderer.template.as_ref()));
    flag("--haproxy-bin", path(apply.haproxy_bin.as_ref()));
    flag("--pid-file", path(apply.pid_file.as_ref()));
    match (&apply.master_socket, &apply.stats_socket) {
        (Some(socket), _) => flag("--master-socket", Some(socket.into())),
        (None, socket) => flag("--stats-socket", path(socket.as_ref())),
    }
    for (name, file) in ["--log-file", "--metrics-file"].into_iter().zip(files) {
        flag(name, file.map(OsString::from));
    }
    flag(
        "--default-port",
        Some(renderer.default_port.to_string().into()),
    );
    flag("--min-nodes", Some(min_nodes.to_string().into()));
    let apply_mode = apply.apply_mode.to_possible_value();
    flag("--apply", apply_mode.map(|v| v.get_name().into()));
    for (name, wait) in [
        ("--socket-timeout", apply.socket_timeout),
        ("--check-timeout", apply.check_timeout),
        ("--drain-timeout", apply.drain_timeout),
        ("--reload-timeout", apply.reload_timeout),
    ] {
        flag(name, Some(exact_seconds(wait).into()));
    }
    for (name, set) in [
        ("--no-check", apply.no_check),
        ("--reload", apply.reload),
        ("--in-place", write_mode_from(apply) == WriteMode::InPlace),
    ] {
        if set {
            args.push(name.into());
        }
    }
    let (env, vars) = worker_env(renderer, apply);
    for var in vars {
        args.extend(["--var".into(), var.into()]);
    }
    args.extend(["settle".into(), "--worker".into()]);
    Worker {
        exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("hacfg")),
        args,
        env,
    }
}

/// The worker's secrets as `HACFG_*` variables: HACFG_VARS (`\,` for a
/// comma in a value), HACFG_CHECK_CMD, HACFG_RELOAD_CMD. A value that ends
/// in `\` cannot be written in HACFG_VARS: it comes back as a `--var`.
fn worker_env(renderer: &Renderer, apply: &ApplyArgs) -> (Vec<(OsString, OsString)>, Vec<String>) {
    let (mut listed, mut flags) = (Vec::new(), Vec::new());
    for (key, value) in &renderer.vars {
        if value.ends_with('\\') {
            flags.push(format!("{key}={value}"));
        } else {
            listed.push(format!("{key}={}", value.replace(',', "\\,")));
        }
    }
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    if !listed.is_empty() {
        env.push(("HACFG_VARS".into(), listed.join(",").into()));
    }
    for (name, value) in [
        ("HACFG_CHECK_CMD", &apply.check_cmd),
        ("HACFG_RELOAD_CMD", &apply.reload_cmd),
    ] {
        if let Some(value) = value {
            env.push((name.into(), value.into()));
        }
    }
    (env, flags)
}

/// A duration as the seconds `seconds_arg` reads back exactly: `1.14` as
/// `1.140000000`, never as f64's `1.1400000000000001` (refused).
fn exact_seconds(wait: std::time::Duration) -> String {
    format!("{}.{:09}", wait.as_secs(), wait.subsec_nanos())
}

fn command_from(args: CommandArgs, default_port: u16) -> Result<Command> {
    Ok(match args {
        CommandArgs::Add(a) => {
            let port_in_address = a.address.port;
            if a.port.is_some() && port_in_address.is_some() && a.port != port_in_address {
                return Err(usage(&format!(
                    "the port is given twice, in {} and as --port {}",
                    quote(&a.address.text),
                    a.port.unwrap_or_default()
                )));
            }
            let node = Node {
                name: a.name,
                address: a.address.host,
                port: Some(a.port.or(port_in_address).unwrap_or(default_port)),
                weight: Some(a.weight.unwrap_or(node::DEFAULT_WEIGHT)),
                tags: parse_pairs(&a.tags, "--tag")?,
            };
            // clap checked each value; what is left (too many tags) is
            // as much a usage error.
            node.validate().map_err(|e| usage(&format!("{e:#}")))?;
            Command::Add {
                node,
                render: !a.no_render,
            }
        }
        CommandArgs::Remove(a) => Command::Remove {
            name: a.name,
            strict: a.strict,
            render: !a.no_render,
        },
        CommandArgs::Init => Command::Init,
        CommandArgs::Completions(a) => Command::Completions(a.shell),
        CommandArgs::Man => Command::Man,
        CommandArgs::Status(a) => Command::Status { json: a.json },
        CommandArgs::List(a) => Command::List { json: a.json },
        CommandArgs::Render(a) => Command::Render {
            mode: match (a.stdout, a.diff) {
                (true, _) => RenderMode::Stdout,
                (_, true) => RenderMode::Diff {
                    exit_code: a.exit_code,
                },
                _ => RenderMode::Write,
            },
        },
        CommandArgs::Reload => Command::Reload,
        CommandArgs::Settle(a) => Command::Settle { worker: a.worker },
        CommandArgs::Serf(a) => Command::Serf {
            roles: a.roles.roles,
            on_failed: on_failed_from(a.on_failed.on_failed),
            event: a.event.unwrap_or_default(),
            self_name: a.self_name.unwrap_or_default(),
            query: a.query_name.unwrap_or_default(),
        },
        CommandArgs::Fleet(a) => {
            crate::fleet::validate_role(&a.balancer_role).map_err(|e| usage(&e.to_string()))?;
            Command::Fleet(crate::fleet::Ask {
                json: a.json,
                rpc_addr: a.rpc_addr,
                serf_bin: a.serf_bin,
                role: a.balancer_role,
                timeout: a.query_timeout,
            })
        }
        CommandArgs::Sync(a) => Command::Sync {
            roles: a.roles.roles,
            on_failed: on_failed_from(a.on_failed.on_failed),
            rpc_addr: a.rpc_addr,
            serf_bin: a.serf_bin,
            dry_run: a.dry_run,
            allow_empty: a.allow_empty,
        },
    })
}

fn on_failed_from(arg: OnFailedArg) -> OnFailed {
    match arg {
        OnFailedArg::Remove => OnFailed::Remove,
        OnFailedArg::Keep => OnFailed::Keep,
        OnFailedArg::Verify => OnFailed::Verify,
    }
}

/// `--on-failed verify` asks HAProxy: without its runtime API, it cannot.
fn verify_needs_runtime(command: &Command, has_runtime: bool) -> Result<()> {
    let verify = matches!(
        command,
        Command::Serf {
            on_failed: OnFailed::Verify,
            ..
        } | Command::Sync {
            on_failed: OnFailed::Verify,
            ..
        }
    );
    if verify && !has_runtime {
        return Err(usage(
            "--on-failed verify asks HAProxy's health checks: it needs --master-socket or \
             --stats-socket",
        ));
    }
    Ok(())
}

/// A usage error, reported the way clap reports its own (exit 2).
fn usage(message: &str) -> anyhow::Error {
    clap_error(clap::error::ErrorKind::ValueValidation, message)
}

/// Two settings that cannot go together, reported as clap would (exit 2).
fn conflict(message: &str) -> anyhow::Error {
    clap_error(clap::error::ErrorKind::ArgumentConflict, message)
}

fn clap_error(kind: clap::error::ErrorKind, message: &str) -> anyhow::Error {
    use clap::CommandFactory;
    Cli::command().error(kind, message).into()
}

/// `vars`: HACFG_VARS, then the `--var` flags, which win per key.
fn vars_from(flags: &[String]) -> Result<BTreeMap<String, String>> {
    let env = std::env::var("HACFG_VARS").unwrap_or_default();
    let mut vars = validate_vars(
        parse_pairs(&split_env_list(&env), "HACFG_VARS")?,
        "HACFG_VARS",
    )?;
    vars.extend(validate_vars(parse_pairs(flags, "--var")?, "--var")?);
    Ok(vars)
}

/// Splits a comma-separated variable; `\,` is a comma inside an item.
fn split_env_list(text: &str) -> Vec<String> {
    let (mut items, mut item) = (Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && chars.peek() == Some(&',') {
            item.push(',');
            chars.next();
        } else if c == ',' {
            items.push(std::mem::take(&mut item));
        } else {
            item.push(c);
        }
    }
    items.push(item);
    items.retain(|i| !i.is_empty());
    items
}

/// Parses `KEY=VALUE` items with the one rule hacfg has for them.
fn parse_pairs(items: &[String], flag: &str) -> Result<BTreeMap<String, String>> {
    node::parse_pairs(items.iter().map(String::as_str))
        .map_err(|e| usage(&format!("invalid {flag}: {e}")))
}

/// `source` names where the variables came from: `--var` or HACFG_VARS.
fn validate_vars(vars: BTreeMap<String, String>, source: &str) -> Result<BTreeMap<String, String>> {
    for (k, v) in &vars {
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(usage(&format!(
                "invalid {source} name {}: use letters, digits and '_'",
                quote(k)
            )));
        }
        if v.chars().any(char::is_control) {
            return Err(usage(&format!(
                "invalid {source} {k}: the value {} has control characters",
                quote(v)
            )));
        }
    }
    Ok(vars)
}

/// The check a candidate config gets; a reload needs one (or --no-check).
fn check_from(apply: &ApplyArgs, wants_reload: bool) -> Result<Check> {
    let check = chosen_check(apply)?;
    if wants_reload && check == Check::Unavailable {
        bail!(
            "refusing to reload HAProxy with an unchecked config: no `haproxy` found on \
             PATH, in /usr/local/sbin or in /usr/sbin; set --haproxy-bin PATH (or \
             HACFG_HAPROXY_BIN), or --no-check to reload without a check"
        );
    }
    Ok(check)
}

fn chosen_check(apply: &ApplyArgs) -> Result<Check> {
    if apply.no_check {
        return Ok(Check::Skip);
    }
    if let Some(cmd) = &apply.check_cmd {
        if !cmd.contains("{}") {
            return Err(usage(&format!(
                "{} {} has no `{{}}` for the config path",
                crate::cli::given_as("--check-cmd", "HACFG_CHECK_CMD"),
                quote(cmd)
            )));
        }
        return Ok(Check::Command(cmd.clone()));
    }
    match &apply.haproxy_bin {
        Some(bin) => {
            let found = find_executable(bin).with_context(|| {
                format!(
                    "haproxy binary `{}` not found ({})",
                    bin.display(),
                    crate::cli::given_as("--haproxy-bin", "HACFG_HAPROXY_BIN")
                )
            })?;
            Ok(Check::Haproxy(found))
        }
        None => {
            Ok(find_executable(Path::new("haproxy")).map_or(Check::Unavailable, Check::Haproxy))
        }
    }
}

fn reload_from(apply: &ApplyArgs) -> Result<Reload> {
    let mut strategies = Vec::new();
    if let Some(cmd) = &apply.reload_cmd {
        strategies.push(Strategy::Command(cmd.clone()));
    }
    if let Some(pid_file) = &apply.pid_file {
        strategies.push(Strategy::Signal(pid_file.clone()));
    }
    if let Some(socket) = &apply.master_socket {
        strategies.push(Strategy::MasterSocket(socket.clone()));
    }
    let strategy = match strategies.len() {
        1 => strategies.remove(0),
        0 => {
            return Err(usage(
                "reloading needs one of --reload-cmd, --pid-file or --master-socket",
            ));
        }
        _ => {
            return Err(usage(
                "give only one of --reload-cmd, --pid-file and --master-socket",
            ));
        }
    };
    Ok(Reload {
        strategy,
        timeout: apply.reload_timeout,
    })
}

/// The runtime API's socket: the master CLI (with `@1`) if given, else a
/// stats socket. One exchange may take `--socket-timeout`.
fn runtime_from(apply: &ApplyArgs) -> Option<RuntimeApi> {
    let socket = match (&apply.master_socket, &apply.stats_socket) {
        (Some(m), _) => Socket::Master(m.clone()),
        (None, Some(s)) => Socket::Stats(s.clone()),
        (None, None) => return None,
    };
    Some(RuntimeApi {
        socket,
        timeout: apply.socket_timeout,
    })
}

/// `--in-place` wins over HACFG_WRITE_MODE (`--write-mode`).
fn write_mode_from(apply: &ApplyArgs) -> WriteMode {
    match (apply.in_place, apply.write_mode) {
        (true, _) | (false, Some(WriteModeArg::InPlace)) => WriteMode::InPlace,
        (false, None | Some(WriteModeArg::Rename)) => WriteMode::Rename,
    }
}

/// `bin` itself if it has a slash, else the first match on PATH, then in
/// the sbin folders (`SBIN_DIRS`).
fn find_executable(bin: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if bin.components().count() > 1 {
        return is_exec(bin).then(|| bin.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(bin))
        .find(|p| is_exec(p))
}

/// Where a bare binary name is also looked for after `PATH`: Debian and
/// others install `haproxy` in `/usr/sbin`, which a non-root `PATH` lacks.
const SBIN_DIRS: [&str; 2] = ["/usr/local/sbin", "/usr/sbin"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs() {
        let items = ["a=1".to_string(), "b=x=y".to_string()];
        let map = parse_pairs(&items, "--tag").unwrap();
        assert_eq!(map["b"], "x=y");
        assert!(parse_pairs(&["a".to_string()], "--tag").is_err());
        assert!(parse_pairs(&["a=1".to_string(), "a=2".to_string()], "--tag").is_err());
    }

    #[test]
    fn env_lists_keep_escaped_commas() {
        assert_eq!(split_env_list(r"a=1,b=x\,y,,c="), ["a=1", "b=x,y", "c="]);
        assert!(split_env_list("").is_empty());
    }

    fn cli(args: &[&str]) -> Cli {
        use clap::Parser;
        Cli::try_parse_from([&["hacfg"], args].concat()).unwrap()
    }

    #[test]
    fn the_worker_gets_every_setting_a_render_needs() {
        let template = std::env::temp_dir();
        let parent = Config::from_cli(cli(&[
            "--template",
            template.to_str().unwrap(),
            "--var",
            "a=b,c",
            "--var",
            r"back=slash\\",
            "--var",
            "secret=s3cret",
            "--default-port",
            "81",
            "--min-nodes",
            "2",
            "--check-cmd",
            "check {} --password s3cret",
            "--reload",
            "--master-socket",
            "m.sock",
            "--reload-timeout",
            "1.14",
            "--check-timeout",
            "0.29",
            "--apply",
            "runtime",
            "--in-place",
            "serf",
        ]))
        .unwrap();
        let worker = &parent.pipeline.worker;
        // Secrets stay off the command line (anyone can read /proc/PID/cmdline).
        let line = worker.args.join(std::ffi::OsStr::new(" "));
        assert!(!line.to_string_lossy().contains("s3cret"), "{line:?}");
        let env: BTreeMap<String, String> = worker
            .env
            .iter()
            .map(|(k, v)| (k.to_string_lossy().into(), v.to_string_lossy().into()))
            .collect();
        assert_eq!(env["HACFG_CHECK_CMD"], "check {} --password s3cret");
        let listed = parse_pairs(&split_env_list(&env["HACFG_VARS"]), "HACFG_VARS").unwrap();
        assert_eq!(listed["a"], "b,c");
        assert_eq!(listed["secret"], "s3cret");
        // A value ending in `\` cannot be listed: it is a flag.
        assert!(line.to_string_lossy().contains(r"--var back=slash\\"));
        // The arguments read back as the same settings, waits to the nanosecond.
        let command_line = std::iter::once(OsString::from("hacfg")).chain(worker.args.clone());
        let read = <Cli as clap::Parser>::try_parse_from(command_line).unwrap();
        assert_eq!(read.global.apply.reload_timeout, parent_cli_wait("1.14"));
        assert_eq!(read.global.apply.check_timeout, parent_cli_wait("0.29"));
        let child = Config::from_cli(read).unwrap();
        let (w, p) = (&child.pipeline, &parent.pipeline);
        assert_eq!(w.renderer.template, p.renderer.template);
        assert_eq!(w.renderer.default_port, 81);
        assert_eq!(w.min_nodes, 2);
        assert_eq!(format!("{:?}", w.apply), format!("{:?}", p.apply));
        assert!(matches!(w.apply, Apply::Hitless { .. }));
        assert_eq!(child.write_mode, WriteMode::InPlace);
        assert_eq!(&w.worker.args, &worker.args);
        assert!(matches!(child.command, Command::Settle { worker: true }));
        for text in ["1.14", "0.29", "3599.999", "0.001", "10"] {
            let wait = parent_cli_wait(text);
            assert_eq!(parent_cli_wait(&exact_seconds(wait)), wait, "{text}");
        }
    }

    /// A duration as `--reload-timeout` reads it.
    fn parent_cli_wait(text: &str) -> std::time::Duration {
        cli(&["--reload-timeout", text, "list"])
            .global
            .apply
            .reload_timeout
    }

    #[test]
    fn quiet_and_verbose_together_are_a_usage_error() {
        let err = Config::from_cli(cli(&["-q", "-v", "list"])).unwrap_err();
        let err = err.downcast::<clap::Error>().unwrap();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("'--quiet'"), "{err}");
        assert!(verbosity_from(true, true).is_err());
        assert_eq!(verbosity_from(true, false).unwrap(), Verbosity::Quiet);
        assert_eq!(verbosity_from(false, false).unwrap(), Verbosity::Normal);
        assert_eq!(verbosity_from(false, true).unwrap(), Verbosity::Verbose);
    }

    #[test]
    fn in_place_wins_over_the_write_mode() {
        let mode = |args: &[&str]| write_mode_from(&cli(&[args, &["list"]].concat()).global.apply);
        assert_eq!(mode(&[]), WriteMode::Rename);
        assert_eq!(mode(&["--write-mode", "rename"]), WriteMode::Rename);
        assert_eq!(mode(&["--write-mode", "in-place"]), WriteMode::InPlace);
        assert_eq!(mode(&["--in-place"]), WriteMode::InPlace);
        assert_eq!(
            mode(&["--write-mode", "rename", "--in-place"]),
            WriteMode::InPlace
        );
    }

    #[test]
    fn serf_reads_its_event_from_clap() {
        let command = |args: &[&str]| command_from(cli(args).command, 3000).unwrap();
        let Command::Serf {
            event,
            self_name,
            on_failed,
            ..
        } = command(&[
            "serf",
            "--event",
            "member-join",
            "--self-name",
            "bal",
            "--on-failed",
            "keep",
        ])
        else {
            panic!("not serf");
        };
        assert_eq!(
            (event.as_str(), self_name.as_str(), on_failed),
            ("member-join", "bal", OnFailed::Keep)
        );
    }

    #[test]
    fn executables() {
        assert!(find_executable(Path::new("sh")).is_some());
        assert!(find_executable(Path::new("/nonexistent/haproxy")).is_none());
        assert!(find_executable(Path::new("no-such-binary-hacfg")).is_none());
    }
}
