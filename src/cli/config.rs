//! Resolved settings: what `args` says, checked and turned into plain
//! types. Precedence (flag > env > default) is clap's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::args::{
    AddArgs, ApplyArg, ApplyArgs, Cli, CommandArgs, DoctorArgs, EtcdArgs, EtcdClientArgs,
    GlobalArgs, OnFailedArg, SourceArg, SyncArgs, WriteModeArg,
};
use crate::haproxy::reload::{Reload, Strategy};
use crate::haproxy::{RuntimeApi, Socket};
use crate::log::Verbosity;
use crate::node::{self, Node};
use crate::output::WriteMode;
use crate::pipeline::{Apply, ApplyMode, Check, Settings, Waits, Worker};
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
    /// How long a run waits for the nodes folder's lock (`--lock-timeout`).
    pub lock_wait: std::time::Duration,
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
    Fleet(crate::serf::Ask),
    Doctor(Box<crate::doctor::Setup>),
    Sync {
        roles: Vec<String>,
        on_failed: OnFailed,
        rpc_addr: Option<String>,
        serf_bin: PathBuf,
        dry_run: bool,
        allow_empty: bool,
    },
    /// `etcd`: one watch event (`vars`: ETCD_WATCH_*) for the keys under `prefix`.
    Etcd {
        prefix: String,
        vars: crate::etcd::Vars,
    },
    /// `sync --source etcd`.
    SyncEtcd {
        client: crate::etcd::Client,
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
        let global = cli.global;
        let verbosity = verbosity_from(global.quiet, global.verbose)?;
        let command = command_from(cli.command, &global)?;
        let renderer = Renderer {
            template: global.template.clone(),
            default_port: global.default_port,
            vars: vars_from(&global.vars)?,
        };
        let worker = super::worker::worker(&global, &renderer.vars)?;
        let pipeline = settings_from(&global, &command, renderer, worker)?;
        Ok(Config {
            write_mode: write_mode_from(&global.apply),
            nodes_dir: global.nodes_dir,
            output: global.output,
            verbosity,
            log_file: global.log_file,
            lock_wait: global.lock_timeout,
            pipeline,
            command,
        })
    }
}

impl Command {
    /// Whether the command changes nothing (`list`, `status`, `render
    /// --stdout`/`--diff`, `man`, `completions`, `fleet`, `sync
    /// --dry-run`): it checks, reloads and applies nothing, so the settings
    /// for those never refuse it (an operator's shell may hold a handler's
    /// `HACFG_RELOAD=true` without its reload method).
    fn is_read_only(&self) -> bool {
        matches!(
            self,
            Command::List { .. }
                | Command::Status { .. }
                | Command::Render {
                    mode: RenderMode::Stdout | RenderMode::Diff { .. }
                }
                | Command::Man
                | Command::Completions(_)
                | Command::Fleet(_)
                | Command::Doctor(_)
                | Command::Sync { dry_run: true, .. }
                | Command::SyncEtcd { dry_run: true, .. }
        )
    }
}

/// What the pipeline needs, checked. A read-only command gets no check
/// and no reload, and its apply mode is not checked against the socket.
fn settings_from(
    global: &GlobalArgs,
    command: &Command,
    renderer: Renderer,
    worker: Worker,
) -> Result<Settings> {
    let apply = &global.apply;
    let runtime = runtime_from(apply);
    verify_needs_runtime(command, runtime.is_some())?;
    let read_only = command.is_read_only();
    let wants_reload = (apply.reload || matches!(command, Command::Reload)) && !read_only;
    let (check, apply_mode) = if read_only {
        (Check::Skip, ApplyMode::Auto)
    } else {
        let mode = apply_mode_from(apply.apply_mode, runtime.is_some())?;
        (check_from(apply, wants_reload)?, mode)
    };
    let reload = wants_reload.then(|| reload_from(apply)).transpose()?;
    Ok(Settings {
        renderer,
        min_nodes: global.min_nodes,
        check,
        apply: Apply::new(reload, runtime, apply_mode),
        force: apply.force,
        waits: Waits {
            drain: apply.drain_timeout,
            first_check: apply.check_timeout,
        },
        worker,
    })
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
        CommandArgs::Etcd(_) => "etcd",
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

/// `render`'s flags: `--stdout`, else `--diff` (with `--exit-code`), else
/// a write.
fn render_mode_from(stdout: bool, diff: bool, exit_code: bool) -> RenderMode {
    match (stdout, diff) {
        (true, _) => RenderMode::Stdout,
        (_, true) => RenderMode::Diff { exit_code },
        _ => RenderMode::Write,
    }
}

fn command_from(args: CommandArgs, global: &GlobalArgs) -> Result<Command> {
    let default_port = global.default_port;
    Ok(match args {
        CommandArgs::Doctor(a) => Command::Doctor(Box::new(doctor_from(a, global))),
        CommandArgs::Add(a) => add_from(a, default_port)?,
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
            mode: render_mode_from(a.stdout, a.diff, a.exit_code),
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
        CommandArgs::Fleet(a) => Command::Fleet(crate::serf::Ask {
            json: a.json,
            rpc_addr: a.rpc_addr,
            serf_bin: a.serf_bin,
            role: a.balancer_role,
            timeout: a.query_timeout,
        }),
        CommandArgs::Sync(a) if a.source == SourceArg::Etcd => sync_etcd_from(a),
        CommandArgs::Etcd(a) => etcd_from(a),
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

/// What `hacfg doctor` checks, as given: a setting that would refuse a
/// run (no `haproxy` found) is a finding here, not an error.
fn doctor_from(a: DoctorArgs, global: &GlobalArgs) -> crate::doctor::Setup {
    let apply = &global.apply;
    let bin = apply.haproxy_bin.as_deref().unwrap_or(Path::new("haproxy"));
    let haproxy = find_executable(bin).ok_or_else(|| match &apply.haproxy_bin {
        Some(bin) => format!("`{}` not found (--haproxy-bin)", bin.display()),
        None => "no `haproxy` on PATH, in /usr/local/sbin or in /usr/sbin".to_string(),
    });
    let asked = a.serf || a.rpc_addr.is_some();
    let serf = asked.then_some(crate::doctor::Serf {
        bin: a.serf_bin,
        rpc_addr: a.rpc_addr,
        roles: a.roles.roles,
    });
    crate::doctor::Setup {
        haproxy,
        check_cmd: apply.check_cmd.clone().filter(|_| !apply.no_check),
        master_socket: apply.master_socket.clone(),
        stats_socket: apply.stats_socket.clone(),
        socket_timeout: apply.socket_timeout,
        write_mode: write_mode_from(apply),
        log_file: global.log_file.clone(),
        metrics_file: global
            .metrics_file
            .clone()
            .filter(|p| !p.as_os_str().is_empty()),
        serf,
    }
}

fn add_from(a: AddArgs, default_port: u16) -> Result<Command> {
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
    // clap checked each value; what is left (too many tags) is as much a
    // usage error.
    node.validate().map_err(|e| usage(&format!("{e:#}")))?;
    Ok(Command::Add {
        node,
        render: !a.no_render,
    })
}

fn etcd_from(a: EtcdArgs) -> Command {
    Command::Etcd {
        prefix: a.prefix.etcd_prefix,
        vars: crate::etcd::Vars {
            revision: a.watch_revision,
            event_type: a.watch_event_type,
            key: a.watch_key,
            value: a.watch_value,
        },
    }
}

fn sync_etcd_from(a: SyncArgs) -> Command {
    Command::SyncEtcd {
        client: etcd_client_from(a.etcd),
        dry_run: a.dry_run,
        allow_empty: a.allow_empty,
    }
}

fn etcd_client_from(a: EtcdClientArgs) -> crate::etcd::Client {
    crate::etcd::Client {
        etcdctl_bin: a.etcdctl_bin,
        endpoints: a.etcd_endpoints,
        prefix: a.prefix.etcd_prefix,
        cacert: a.etcd_cacert,
        cert: a.etcd_cert,
        key: a.etcd_key,
        user: a.etcd_user,
        timeout: a.etcd_timeout,
    }
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
            dry_run: false,
            ..
        }
    );
    // A dry run asks HAProxy nothing: it shows `?` for a failed member.
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
                super::usage::given_as("--check-cmd", "HACFG_CHECK_CMD"),
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
                    super::usage::given_as("--haproxy-bin", "HACFG_HAPROXY_BIN")
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
    Some(RuntimeApi::new(socket, apply.socket_timeout))
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
    use std::time::Duration;

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

    /// A run that starts the worker, with a setting of every kind.
    const PARENT: &[&str] = &[
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
        "--log-file",
        "l.log",
        "--metrics-file",
        "m.prom",
        "-v",
        "serf",
    ];

    /// The worker started by a run resolves the same settings as the run:
    /// everything but the command, which is `settle --worker`.
    #[test]
    fn the_worker_resolves_the_settings_of_the_run_that_starts_it() {
        let template = std::env::temp_dir();
        let template = ["--template", template.to_str().unwrap()];
        let parent = Config::from_cli(cli(&[&template[..], PARENT].concat())).unwrap();
        let worker = &parent.pipeline.worker;
        // Secrets stay off the command line (anyone can read /proc/PID/cmdline).
        assert_eq!(worker.args, ["settle", "--worker"]);
        let [(name, json)] = &worker.env[..] else {
            panic!("{:?}", worker.env);
        };
        assert_eq!(name, "HACFG_WORKER_SETTINGS");
        let global = super::super::worker::settings_from(json.to_str().unwrap()).unwrap();
        let child = Config::from_cli(Cli {
            global,
            command: CommandArgs::Settle(super::super::args::SettleArgs { worker: true }),
        })
        .unwrap();
        assert!(matches!(child.command, Command::Settle { worker: true }));
        let (w, p) = (&child.pipeline, &parent.pipeline);
        assert_eq!(format!("{w:?}"), format!("{p:?}"));
        assert_eq!(w.renderer.vars["back"], r"slash\\");
        assert_eq!(w.waits.first_check, Duration::from_millis(290));
        assert!(w.apply.reload().is_some());
        let settings = |c: &Config| {
            let Config {
                nodes_dir,
                output,
                write_mode,
                verbosity,
                log_file,
                lock_wait,
                pipeline: _,
                command: _,
            } = c;
            format!(
                "{nodes_dir:?} {output:?} {write_mode:?} {verbosity:?} {log_file:?} {lock_wait:?}"
            )
        };
        assert_eq!(settings(&child), settings(&parent));
        assert_eq!(child.write_mode, WriteMode::InPlace);
    }

    #[test]
    fn the_worker_never_forces_a_write() {
        // A reload of its own: another test sets HACFG_RELOAD for a moment.
        let args = [
            "--force",
            "--no-check",
            "--reload",
            "--reload-cmd",
            "true",
            "render",
        ];
        let parent = Config::from_cli(cli(&args)).unwrap();
        assert!(parent.pipeline.force);
        let (_, json) = &parent.pipeline.worker.env[0];
        let global = super::super::worker::settings_from(json.to_str().unwrap()).unwrap();
        assert!(!global.apply.force);
    }

    /// Read-only commands never fail on apply settings.
    #[test]
    fn read_only_commands_ignore_the_apply_settings() {
        let bad = ["--reload", "--apply", "runtime", "--check-cmd", "no-braces"];
        for command in [
            &["list"][..],
            &["status"],
            &["render", "--stdout"],
            &["render", "--diff"],
            &["man"],
            &["completions", "bash"],
            &["fleet"],
            &["sync", "--dry-run"],
        ] {
            let cfg = Config::from_cli(cli(&[&bad[..], command].concat()));
            let cfg = cfg.unwrap_or_else(|e| panic!("{command:?}: {e:#}"));
            assert!(cfg.pipeline.apply.reload().is_none(), "{command:?}");
        }
        for command in [&["render"][..], &["add", "s1", "10.0.0.1"], &["reload"]] {
            let err = Config::from_cli(cli(&[&bad[..], command].concat())).unwrap_err();
            assert!(
                err.downcast_ref::<clap::Error>().is_some(),
                "{command:?}: {err:#}"
            );
        }
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
        let command = |args: &[&str]| {
            let cli = cli(args);
            command_from(cli.command, &cli.global).unwrap()
        };
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
