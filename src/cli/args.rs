//! The command line (clap). Nothing outside `cli/` sees these types: `config`
//! resolves them, `worker` serializes the global ones for the worker.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{OsStringValueParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::haproxy::Address;

/// Examples and exit codes, shown after `--help` and in the man page.
const AFTER_HELP: &str = "\
Examples:
  hacfg init                                   create /nodes, write the first config
  hacfg add s1 172.17.0.3:3000 --weight 2      add a node, render, check
  hacfg --reload --master-socket /run/haproxy-master.sock add s2 172.17.0.4
                                               add through HAProxy's runtime API
  hacfg remove s1                              remove a node (it drains first)
  hacfg render --diff --exit-code              show what a render would change
  hacfg --master-socket /run/haproxy-master.sock status
                                               live servers against the folder
  serf agent -event-handler 'hacfg serf'       a complete Serf event handler
  hacfg --master-socket /run/haproxy-master.sock doctor
                                               check the setup, one line per check

Exit codes:
  0  success            1  error (or: render --diff --exit-code found changes)
  2  usage error        3  HAProxy rejected the config, or a node (held back)
  4  reload failed      5  a guard refused to shrink the pool
  6  partial success    7  --apply runtime: the change needs a reload
  8  status: live servers differ from the folder
  9  fleet: balancers disagree, or one did not answer
  10 the nodes folder's lock was still held after --lock-timeout";

/// What `-h` ends with: where the rest is.
const AFTER_SHORT_HELP: &str = "\
Global options (--nodes-dir, --reload, ...), examples, exit codes: --help. All: man hacfg";

/// Keep an HAProxy configuration in step with a changing set of backend nodes.
///
/// One file per node in a folder, a Jinja template, `haproxy -c` before anything goes live,
/// changes through HAProxy's runtime API or a verified reload, and a complete Serf event handler.
#[derive(Debug, Parser)]
#[command(
    name = "hacfg",
    version,
    max_term_width = 100,
    after_help = AFTER_SHORT_HELP,
    after_long_help = AFTER_HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: CommandArgs,
}

/// Global options come after a command's own in its `--help`, under one
/// heading, and not in `-h` (`hide_short_help`, as fd does). The detached worker gets them serialized (see `worker`).
#[derive(Debug, Clone, PartialEq, Args, Serialize, Deserialize)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Folder with one file per node
    #[arg(
        long,
        global = true,
        hide_short_help = true,
        env = "HACFG_NODES_DIR",
        default_value = "/nodes"
    )]
    #[serde(with = "os_path")]
    pub nodes_dir: PathBuf,
    /// Jinja template to render [default: the built-in templates/haproxy.cfg.j2]
    #[arg(long, global = true, hide_short_help = true, env = "HACFG_TEMPLATE")]
    #[serde(with = "os_path::option")]
    pub template: Option<PathBuf>,
    /// The HAProxy configuration file to write
    #[arg(
        long,
        global = true,
        hide_short_help = true,
        env = "HACFG_OUTPUT",
        default_value = "/usr/local/etc/haproxy/haproxy.cfg"
    )]
    #[serde(with = "os_path")]
    pub output: PathBuf,
    /// Port of nodes whose file gives none
    #[arg(long, global = true, hide_short_help = true, env = "HACFG_DEFAULT_PORT", default_value = "3000",
          value_parser = port_arg)]
    pub default_port: u16,
    /// Template variable, `vars.KEY` in the template (repeatable)
    ///
    /// The value is taken whole, commas too. Adds to HACFG_VARS (comma-separated,
    /// `\,` for a comma in a value); a flag wins over the variable per key.
    /// The built-in template's variables: see `hacfg render --help`
    #[arg(
        long = "var",
        global = true,
        hide_short_help = true,
        value_name = "KEY=VALUE"
    )]
    pub vars: Vec<String>,
    /// Refuse to write a config with fewer nodes than this
    #[arg(long, global = true, hide_short_help = true, env = "HACFG_MIN_NODES", default_value = "0",
          value_parser = count_arg)]
    pub min_nodes: usize,
    /// Print only errors (not with --verbose)
    #[arg(short, long, global = true, hide_short_help = true, env = "HACFG_QUIET", value_parser = bool_arg)]
    pub quiet: bool,
    /// Print debug lines too (not with --quiet)
    ///
    /// Which path a change takes, what runs, and a template error's variables.
    #[arg(short, long, global = true, hide_short_help = true, env = "HACFG_VERBOSE", value_parser = bool_arg)]
    pub verbose: bool,
    /// Append one line per action to this file
    #[arg(long, global = true, hide_short_help = true, env = "HACFG_LOG_FILE")]
    #[serde(with = "os_path::option")]
    pub log_file: Option<PathBuf>,
    /// Write Prometheus metrics to this file after each run that may change something
    ///
    /// For node_exporter's textfile collector: name it `*.prom`.
    #[arg(
        long,
        global = true,
        hide_short_help = true,
        env = "HACFG_METRICS_FILE",
        value_name = "PATH"
    )]
    #[serde(with = "os_path::option")]
    pub metrics_file: Option<PathBuf>,
    /// Seconds to wait for the nodes folder's lock, then exit 10 (up to 3600)
    ///
    /// The message names the holder.
    #[arg(long, global = true, hide_short_help = true, env = "HACFG_LOCK_TIMEOUT", default_value = "30",
          value_name = "SECS", value_parser = seconds_arg)]
    pub lock_timeout: Duration,
    #[command(flatten)]
    pub apply: ApplyArgs,
}

/// How a changed config is checked, written and loaded.
#[derive(Debug, Clone, PartialEq, Args, Serialize, Deserialize)]
#[command(next_help_heading = "Global options")]
#[allow(clippy::struct_excessive_bools)] // each is a command-line flag
pub struct ApplyArgs {
    /// HAProxy binary used for `haproxy -c` [default: `haproxy` from PATH, if any]
    #[arg(long, global = true, hide_short_help = true, env = "HACFG_HAPROXY_BIN")]
    #[serde(with = "os_path::option")]
    pub haproxy_bin: Option<PathBuf>,
    /// Command that checks a candidate config; `{}` is its path
    #[arg(
        long,
        global = true,
        hide_short_help = true,
        env = "HACFG_CHECK_CMD",
        conflicts_with = "no_check"
    )]
    pub check_cmd: Option<String>,
    /// Do not check the candidate config before writing it
    #[arg(long, global = true, hide_short_help = true, env = "HACFG_NO_CHECK", value_parser = bool_arg)]
    pub no_check: bool,
    /// Reload HAProxy after the config changed
    #[arg(long, global = true, hide_short_help = true, env = "HACFG_RELOAD", value_parser = bool_arg)]
    pub reload: bool,
    /// Write and reload even when the rendered config is unchanged
    #[arg(long, global = true, hide_short_help = true, env = "HACFG_FORCE", value_parser = bool_arg)]
    pub force: bool,
    /// Reload by running this shell command (e.g. `s6-svc -h /var/run/s6/services/ha`)
    #[arg(long, global = true, hide_short_help = true, env = "HACFG_RELOAD_CMD")]
    pub reload_cmd: Option<String>,
    /// Reload by sending SIGUSR2 to the master process whose pid is in this file
    #[arg(long, global = true, hide_short_help = true, env = "HACFG_PID_FILE")]
    #[serde(with = "os_path::option")]
    pub pid_file: Option<PathBuf>,
    /// Reload through HAProxy's master CLI socket (`haproxy -W -S PATH`, or `ipv4@IP:PORT`) and verify it
    #[arg(long, global = true, hide_short_help = true, env = "HACFG_MASTER_SOCKET", value_parser = socket_arg())]
    #[serde(with = "os_address")]
    pub master_socket: Option<Address>,
    /// Seconds a reload may take, its verification included, before it counts as failed (up to 3600)
    #[arg(
        long,
        global = true, hide_short_help = true,
        env = "HACFG_RELOAD_TIMEOUT",
        default_value = "10",
        value_name = "SECS",
        value_parser = seconds_arg
    )]
    pub reload_timeout: Duration,
    /// How HAProxy takes a change: `auto` (runtime API when it can, else reload), `runtime`, `reload`
    #[arg(
        long = "apply",
        global = true,
        hide_short_help = true,
        env = "HACFG_APPLY",
        default_value = "auto"
    )]
    pub apply_mode: ApplyArg,
    /// An admin-level stats socket (a path, or `ipv4@IP:PORT`) for runtime changes (or use --master-socket)
    #[arg(long, global = true, hide_short_help = true, env = "HACFG_STATS_SOCKET", value_parser = socket_arg())]
    #[serde(with = "os_address")]
    pub stats_socket: Option<Address>,
    /// Seconds a removed server may take to finish its requests (up to 3600)
    ///
    /// Then it is left drained; the wait happens outside the handler.
    #[arg(long, global = true, hide_short_help = true, env = "HACFG_DRAIN_TIMEOUT", default_value = "5",
          value_name = "SECS", value_parser = seconds_arg)]
    pub drain_timeout: Duration,
    /// Seconds a new server may take to pass its first health check (up to 3600)
    ///
    /// Then it is left drained; the wait happens outside the handler.
    #[arg(long, global = true, hide_short_help = true, env = "HACFG_CHECK_TIMEOUT", default_value = "60",
          value_name = "SECS", value_parser = seconds_arg)]
    pub check_timeout: Duration,
    /// Seconds one exchange on HAProxy's socket may take (up to 3600)
    #[arg(long, global = true, hide_short_help = true, env = "HACFG_SOCKET_TIMEOUT", default_value = "5",
          value_name = "SECS", value_parser = seconds_arg)]
    pub socket_timeout: Duration,
    /// Overwrite the output in place instead of renaming over it (bind-mounted files)
    #[arg(long, global = true, hide_short_help = true, env = "HACFG_IN_PLACE", value_parser = bool_arg)]
    pub in_place: bool,
    /// `rename` (atomic, default) or `in-place`; --in-place wins
    #[arg(
        long,
        global = true,
        hide_short_help = true,
        env = "HACFG_WRITE_MODE",
        hide = true
    )]
    pub write_mode: Option<WriteModeArg>,
}

/// `--apply`: how HAProxy takes a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum ApplyArg {
    Auto,
    Runtime,
    Reload,
}

/// `HACFG_WRITE_MODE` (`--write-mode`): how the output is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum WriteModeArg {
    Rename,
    InPlace,
}

/// `--on-failed`: what a `member-failed` event does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnFailedArg {
    Remove,
    Keep,
    Verify,
}

#[derive(Debug, Subcommand)]
pub enum CommandArgs {
    /// Create the nodes folder and the output's folder, then render
    Init,
    /// Create or replace a node, then render
    Add(AddArgs),
    /// Delete a node, then render
    Remove(RemoveArgs),
    /// Show the nodes, sorted by name
    List(ListArgs),
    /// Render the config from the current nodes
    #[command(after_long_help = super::vars::help())]
    Render(RenderArgs),
    /// Reload HAProxy with the current config
    Reload,
    /// Handle a Serf event: SERF_EVENT and member lines on stdin
    Serf(SerfArgs),
    /// Make the nodes folder equal to the alive members of a Serf cluster
    /// (or, with --source etcd, to the keys under an etcd prefix)
    Sync(SyncArgs),
    /// Handle an etcd watch event: `etcdctl watch --prefix PREFIX -- hacfg etcd`
    Etcd(EtcdArgs),
    /// Compare the servers HAProxy runs with the nodes folder
    Status(StatusArgs),
    /// Compare the balancers of a Serf cluster: their pools, through a query
    Fleet(FleetArgs),
    /// Finish pending runtime work (first checks, drains), waiting for it
    Settle(SettleArgs),
    /// Check the setup: folder, template, output, haproxy, sockets, files, Serf, worker
    ///
    /// One line per check: `ok`, `warn` or `fail`, each failure saying what to do. Changes
    /// nothing, and every wait is bounded (the folder's lock: 2 s). Exit 1 when a check
    /// failed; warnings alone exit 0.
    Doctor(DoctorArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions(CompletionsArgs),
    /// Print the man page (roff)
    Man,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct SettleArgs {
    /// Run as the detached worker a changing run starts
    ///
    /// Own session, quiet, at most one per nodes folder.
    #[arg(long, hide = true)]
    pub worker: bool,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Also ask the Serf agent (on by itself when --rpc-addr or SERF_RPC_ADDR is set)
    #[arg(long)]
    pub serf: bool,
    /// Address of the Serf agent's RPC endpoint
    #[arg(long, env = "SERF_RPC_ADDR")]
    pub rpc_addr: Option<String>,
    /// The `serf` binary
    #[arg(long, env = "HACFG_SERF_BIN", default_value = "serf")]
    pub serf_bin: PathBuf,
    #[command(flatten)]
    pub roles: RolesArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print a JSON array
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Node name (also its file name)
    #[arg(value_parser = name_arg)]
    pub name: String,
    /// IP address or host name, optionally with `:PORT` (`[IPV6]:PORT`)
    #[arg(value_parser = address_arg)]
    pub address: AddressArg,
    /// Port [default: from ADDRESS, else --default-port]
    #[arg(long, value_parser = port_arg)]
    pub port: Option<u16>,
    /// Server weight, 0-256 [default: 1]
    #[arg(long, value_parser = weight_arg)]
    pub weight: Option<u16>,
    /// Tag, available to templates as `tags.KEY` (repeatable)
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = tag_arg)]
    pub tags: Vec<String>,
    /// Only change the nodes folder
    #[arg(long)]
    pub no_render: bool,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// Node name
    #[arg(value_parser = name_arg)]
    pub name: String,
    /// Fail when the node does not exist
    #[arg(long)]
    pub strict: bool,
    /// Only change the nodes folder
    #[arg(long)]
    pub no_render: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print a JSON array
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Print the config instead of writing it
    #[arg(long, conflicts_with = "diff")]
    pub stdout: bool,
    /// Show a unified diff against the current output; write nothing
    #[arg(long)]
    pub diff: bool,
    /// With --diff: exit 1 when the output would change, 0 when not (git's convention)
    #[arg(long, requires = "diff")]
    pub exit_code: bool,
}

/// Which Serf members are nodes (shared by `serf` and `sync`).
#[derive(Debug, Args)]
pub struct RolesArgs {
    /// Serf roles whose members are nodes (repeatable, or comma-separated)
    #[arg(
        long = "role",
        env = "HACFG_SERF_ROLE",
        value_delimiter = ',',
        default_value = "backend",
        value_parser = role_arg
    )]
    pub roles: Vec<String>,
}

/// What a failed member's node becomes (shared by `serf` and `sync`).
#[derive(Debug, Args)]
pub struct OnFailedArgs {
    /// What a failed member does to its node: remove, keep or verify
    ///
    /// `remove` it, `keep` it, or `verify` (remove it once HAProxy's health checks see it
    /// DOWN too; needs --master-socket or --stats-socket).
    #[arg(long, env = "HACFG_ON_FAILED", default_value = "remove")]
    pub on_failed: OnFailedArg,
}

#[derive(Debug, Args)]
pub struct SerfArgs {
    #[command(flatten)]
    pub roles: RolesArgs,
    #[command(flatten)]
    pub on_failed: OnFailedArgs,
    /// The event to handle, such as `member-join` (Serf sets it for its handlers)
    #[arg(long, env = "SERF_EVENT", hide_env_values = true, value_name = "EVENT")]
    pub event: Option<String>,
    /// This agent's member name, whose lines are ignored (Serf sets it for its handlers)
    #[arg(
        long,
        env = "SERF_SELF_NAME",
        hide_env_values = true,
        value_name = "NAME"
    )]
    pub self_name: Option<String>,
    /// The query to answer (Serf sets it for a `query` event)
    ///
    /// Only `hacfg-digest` gets an answer.
    #[arg(
        long,
        env = "SERF_QUERY_NAME",
        hide_env_values = true,
        value_name = "NAME"
    )]
    pub query_name: Option<String>,
}

#[derive(Debug, Args)]
pub struct FleetArgs {
    /// Print a JSON array
    #[arg(long)]
    pub json: bool,
    /// Address of the Serf agent's RPC endpoint
    #[arg(long, env = "SERF_RPC_ADDR")]
    pub rpc_addr: Option<String>,
    /// The `serf` binary
    #[arg(long, env = "HACFG_SERF_BIN", default_value = "serf")]
    pub serf_bin: PathBuf,
    /// The Serf role of the balancers (the `role` tag)
    #[arg(long, env = "HACFG_BALANCER_ROLE", default_value = "balancer",
          value_parser = balancer_role_arg)]
    pub balancer_role: String,
    /// Seconds to wait for the balancers' answers (up to 3600)
    #[arg(long, env = "HACFG_QUERY_TIMEOUT", default_value = "3", value_name = "SECS",
          value_parser = seconds_arg)]
    pub query_timeout: Duration,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    pub roles: RolesArgs,
    #[command(flatten)]
    pub on_failed: OnFailedArgs,
    /// Address of the Serf agent's RPC endpoint
    #[arg(long, env = "SERF_RPC_ADDR")]
    pub rpc_addr: Option<String>,
    /// The `serf` binary
    #[arg(long, env = "HACFG_SERF_BIN", default_value = "serf")]
    pub serf_bin: PathBuf,
    /// Show the changes; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Apply the member list even if it looks like a partition
    ///
    /// That is: the agent sees no other member, or the list would remove more than half of
    /// the nodes.
    #[arg(long)]
    pub allow_empty: bool,
    /// Where the members come from: the local Serf agent, or etcd's keys
    #[arg(long, env = "HACFG_SYNC_SOURCE", default_value = "serf")]
    pub source: SourceArg,
    #[command(flatten)]
    pub etcd: EtcdClientArgs,
}

/// `sync --source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceArg {
    Serf,
    Etcd,
}

/// The etcd keys that are nodes (shared by `etcd` and `sync`).
#[derive(Debug, Args)]
pub struct EtcdPrefixArgs {
    /// The etcd prefix whose keys are nodes: a key's last segment under
    /// it is the node's name, its value the node file's content
    #[arg(long, env = "HACFG_ETCD_PREFIX", default_value = crate::etcd::DEFAULT_PREFIX,
          value_parser = prefix_arg)]
    pub etcd_prefix: String,
}

/// How `sync --source etcd` reaches etcd: options passed to etcdctl
/// (etcdctl's own ETCDCTL_* variables, such as ETCDCTL_PASSWORD, pass too).
#[derive(Debug, Args)]
pub struct EtcdClientArgs {
    #[command(flatten)]
    pub prefix: EtcdPrefixArgs,
    /// etcd's client endpoints, comma-separated [default: etcdctl's]
    #[arg(long, env = "HACFG_ETCD_ENDPOINTS", value_name = "HOST:PORT,...")]
    pub etcd_endpoints: Option<String>,
    /// The `etcdctl` binary (etcd API 3)
    #[arg(long, env = "HACFG_ETCDCTL_BIN", default_value = "etcdctl")]
    pub etcdctl_bin: PathBuf,
    /// CA bundle that verifies etcd's TLS certificate (etcdctl --cacert)
    #[arg(long, env = "HACFG_ETCD_CACERT", value_name = "PATH")]
    pub etcd_cacert: Option<PathBuf>,
    /// Client certificate for etcd (etcdctl --cert)
    #[arg(long, env = "HACFG_ETCD_CERT", value_name = "PATH")]
    pub etcd_cert: Option<PathBuf>,
    /// Client key for etcd (etcdctl --key)
    #[arg(long, env = "HACFG_ETCD_KEY", value_name = "PATH")]
    pub etcd_key: Option<PathBuf>,
    /// etcd user, `NAME` or `NAME:PASSWORD` (etcdctl --user; better:
    /// ETCDCTL_PASSWORD in the environment)
    #[arg(long, env = "HACFG_ETCD_USER", value_name = "NAME")]
    pub etcd_user: Option<String>,
    /// Seconds etcdctl may take to connect, and then to answer (up to 3600)
    #[arg(long, env = "HACFG_ETCD_TIMEOUT", default_value = "5", value_name = "SECS",
          value_parser = seconds_arg)]
    pub etcd_timeout: Duration,
}

#[derive(Debug, Args)]
pub struct EtcdArgs {
    #[command(flatten)]
    pub prefix: EtcdPrefixArgs,
    /// The event's revision (etcdctl sets it for its watch's command)
    #[arg(
        long,
        env = "ETCD_WATCH_REVISION",
        hide_env_values = true,
        value_name = "N"
    )]
    pub watch_revision: Option<String>,
    /// `"PUT"` or `"DELETE"`, Go-quoted (etcdctl sets it)
    #[arg(
        long,
        env = "ETCD_WATCH_EVENT_TYPE",
        hide_env_values = true,
        value_name = "TYPE"
    )]
    pub watch_event_type: Option<String>,
    /// The key, Go-quoted (etcdctl sets it)
    #[arg(
        long,
        env = "ETCD_WATCH_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub watch_key: Option<String>,
    /// The value, Go-quoted (etcdctl sets it)
    #[arg(
        long,
        env = "ETCD_WATCH_VALUE",
        hide_env_values = true,
        value_name = "VALUE"
    )]
    pub watch_value: Option<String>,
}

/// `ADDRESS` as given, and what it says: the host and the port, if any.
#[derive(Debug, Clone)]
pub struct AddressArg {
    pub text: String,
    pub host: String,
    pub port: Option<u16>,
}

/// Values on the command line follow the node files' rules, and a value
/// they refuse is a usage error (exit 2) whatever its kind.
fn balancer_role_arg(text: &str) -> Result<String, String> {
    crate::serf::validate_role(text).map_err(|e| format!("{e:#}"))?;
    Ok(text.to_string())
}

/// A prefix names keys: it cannot be empty (every key would be a node).
/// A prefix ends with `/`: `/hacfg/nodes` would make `/hacfg/nodes2` a
/// node named `2`, and every `/hacfg/nodes/x` a key to skip.
fn prefix_arg(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("the etcd prefix cannot be empty".into());
    }
    if !text.ends_with('/') {
        return Err(format!(
            "the etcd prefix {} must end with `/` (a node is the key's last segment under it)",
            crate::quote::quote(text)
        ));
    }
    Ok(text.to_string())
}

/// A role is a tag value: what a member's `role` tag must equal.
fn role_arg(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("a role cannot be empty".into());
    }
    crate::node::validate_tag("role", text).map_err(|e| format!("{e:#}"))?;
    Ok(text.to_string())
}

fn name_arg(text: &str) -> Result<String, String> {
    crate::node::validate_name(text).map_err(|e| format!("{e:#}"))?;
    Ok(text.to_string())
}

fn address_arg(text: &str) -> Result<AddressArg, String> {
    let (host, port) = crate::node::parse_endpoint(text).map_err(|e| format!("{e:#}"))?;
    Ok(AddressArg {
        text: text.to_string(),
        host,
        port,
    })
}

/// One `KEY=VALUE` tag; a key given twice is found once all are parsed.
fn tag_arg(text: &str) -> Result<String, String> {
    let pairs = crate::node::parse_pairs([text]).map_err(|e| format!("{e:#}"))?;
    for (key, value) in &pairs {
        crate::node::validate_tag(key, value).map_err(|e| format!("{e:#}"))?;
        if key == "backend" {
            crate::node::validate_name(value).map_err(|e| format!("invalid backend tag: {e:#}"))?;
        }
    }
    Ok(text.to_string())
}

/// A flag's variable (`HACFG_RELOAD=yes`): what people write for yes and
/// no, in any case (clap's `y`, `n`, `t` and `f` too).
fn bool_arg(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" | "y" | "t" => Ok(true),
        "false" | "0" | "no" | "off" | "n" | "f" => Ok(false),
        _ => Err("use true or false, 1 or 0, yes or no, on or off".into()),
    }
}

/// Numbers on the command line follow the node files' rules: plain digits.
fn port_arg(text: &str) -> Result<u16, String> {
    crate::node::parse_port(text).map_err(|e| e.to_string())
}

fn weight_arg(text: &str) -> Result<u16, String> {
    crate::node::parse_weight(text).map_err(|e| e.to_string())
}

fn count_arg(text: &str) -> Result<usize, String> {
    crate::node::parse_number(text)
        .map(|n| n as usize)
        .ok_or_else(|| format!("invalid count {text:?}: use plain digits"))
}

/// A socket address as HAProxy writes it (see [`Address::parse`]).
fn socket_arg() -> impl TypedValueParser<Value = Address> {
    OsStringValueParser::new().try_map(|text| Address::parse(&text))
}

/// Seconds as plain digits with an optional fraction (`10`, `0.5`), more
/// than 0 and at most an hour: `1e30` or `inf` are mistakes, not waits.
fn seconds_arg(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?}: use seconds such as 10 or 0.5, up to 3600");
    let (whole, fraction) = text.split_once('.').unwrap_or((text, "0"));
    let digits = |s: &str| !s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !digits(fraction) {
        return Err(bad());
    }
    let secs: f64 = text.parse().map_err(|_| bad())?;
    if secs <= 0.0 || secs > 3600.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Paths in the worker's settings: text when they are UTF-8, else their
/// bytes, so that no path a flag took is refused on the way.
/// serde for a socket address in the worker's settings: as its argument
/// form (`Address::to_arg`), which reads back as the same address.
mod os_address {
    use std::path::PathBuf;

    use serde::{Deserializer, Serializer};

    use crate::haproxy::Address;

    #[allow(clippy::ref_option)] // serde's `with` passes the field by reference
    pub fn serialize<S: Serializer>(address: &Option<Address>, s: S) -> Result<S::Ok, S::Error> {
        let arg = address.as_ref().map(|a| PathBuf::from(a.to_arg()));
        super::os_path::option::serialize(&arg, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Address>, D::Error> {
        let Some(arg) = super::os_path::option::deserialize(d)? else {
            return Ok(None);
        };
        Address::parse(arg.as_os_str())
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

mod os_path {
    use std::ffi::OsString;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::path::{Path, PathBuf};

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Text(String),
        Bytes(Vec<u8>),
    }

    impl From<&Path> for Repr {
        fn from(path: &Path) -> Repr {
            match path.to_str() {
                Some(text) => Repr::Text(text.to_string()),
                None => Repr::Bytes(path.as_os_str().as_bytes().to_vec()),
            }
        }
    }

    impl From<Repr> for PathBuf {
        fn from(repr: Repr) -> PathBuf {
            match repr {
                Repr::Text(text) => text.into(),
                Repr::Bytes(bytes) => OsString::from_vec(bytes).into(),
            }
        }
    }

    pub fn serialize<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
        Repr::from(path).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        Repr::deserialize(d).map(PathBuf::from)
    }

    pub mod option {
        use super::{Deserialize, Deserializer, PathBuf, Repr, Serialize, Serializer};

        #[allow(clippy::ref_option)] // serde's `with` passes the field by reference
        pub fn serialize<S: Serializer>(path: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
            path.as_deref().map(Repr::from).serialize(s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
            Option::<Repr>::deserialize(d).map(|repr| repr.map(PathBuf::from))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn boolean_environment_variables() {
        // Safe: this test alone touches HACFG_RELOAD and reads it at once.
        for (value, expected) in [("1", true), ("yes", true), ("false", false), ("off", false)] {
            unsafe { std::env::set_var("HACFG_RELOAD", value) };
            let cli = Cli::try_parse_from(["hacfg", "list"]).unwrap();
            assert_eq!(cli.global.apply.reload, expected, "{value}");
        }
        unsafe { std::env::remove_var("HACFG_RELOAD") };
    }

    #[test]
    fn booleans_are_what_people_write() {
        for yes in ["true", "1", "yes", "on", "ON", "Yes", "y", "T"] {
            assert_eq!(bool_arg(yes), Ok(true), "{yes}");
        }
        for no in ["false", "0", "no", "off", "OFF", "No", "n", "F"] {
            assert_eq!(bool_arg(no), Ok(false), "{no}");
        }
        for bad in ["", "maybe", "2", "yes-please", " on"] {
            assert!(bool_arg(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn numbers_are_plain_digits() {
        for bad in ["+80", "0080", "8e1", " 80", "", "65536", "0"] {
            assert!(port_arg(bad).is_err(), "{bad:?}");
        }
        assert_eq!(port_arg("80"), Ok(80));
        assert!(weight_arg("257").is_err());
        assert_eq!(weight_arg("0"), Ok(0));
        for bad in ["1e30", "inf", "NaN", "-1", "0", "0.0", "3601", ".5", "5."] {
            assert!(seconds_arg(bad).is_err(), "{bad:?}");
        }
        assert_eq!(seconds_arg("0.5"), Ok(Duration::from_millis(500)));
    }

    /// Every global option under one heading, in `--help` only: `-h` shows
    /// a command's own options (`hide_short_help`, as fd does).
    #[test]
    fn global_options_are_under_one_heading_in_long_help_only() {
        let global = GlobalArgs::augment_args(clap::Command::new("g"));
        for arg in global.get_arguments() {
            assert_eq!(
                arg.get_help_heading(),
                Some("Global options"),
                "{}",
                arg.get_id()
            );
            assert!(arg.is_hide_short_help_set(), "{}", arg.get_id());
        }
    }

    /// Every global flag has a variable, `--force` and `--in-place` too.
    #[test]
    fn every_global_option_but_var_has_a_variable() {
        let global = GlobalArgs::augment_args(clap::Command::new("g"));
        for arg in global.get_arguments().filter(|a| a.get_id() != "vars") {
            assert!(arg.get_env().is_some(), "{}", arg.get_id());
        }
        // Safe: this test alone touches HACFG_FORCE and HACFG_IN_PLACE.
        unsafe { std::env::set_var("HACFG_FORCE", "yes") };
        unsafe { std::env::set_var("HACFG_IN_PLACE", "on") };
        let cli = Cli::try_parse_from(["hacfg", "render"]).unwrap();
        unsafe { std::env::remove_var("HACFG_FORCE") };
        unsafe { std::env::remove_var("HACFG_IN_PLACE") };
        assert!(cli.global.apply.force && cli.global.apply.in_place);
    }

    #[test]
    fn global_options_go_before_or_after_the_command() {
        let a = Cli::try_parse_from(["hacfg", "--nodes-dir", "n", "list"]).unwrap();
        let b = Cli::try_parse_from(["hacfg", "list", "--nodes-dir", "n"]).unwrap();
        assert_eq!(a.global.nodes_dir, b.global.nodes_dir);
    }
}
