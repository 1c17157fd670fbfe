//! Numbers for monitoring (`--metrics-file`): after each run that may change
//! something, a Prometheus text file for node_exporter's textfile collector.
//!
//! The pipeline counts what it does into a `Counts` it is handed; the
//! command adds that to the run's tally (`counted`), which is written once
//! the run's exit code is known. Counters survive runs: a run reads the previous file
//! back (bounded; bad lines are ignored with one warning), adds its own
//! counts and replaces the file atomically, all under an flock on
//! `PATH.lock`, so concurrent runs lose no count. Writing metrics never
//! changes a run's exit code.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::pipeline::Counts;

/// Largest previous file read back (hacfg's own are about 4 KiB).
const FILE_CAP: u64 = 1024 * 1024;
/// Longest wait for another run's hold on the lock: a handler must return.
const LOCK_WAIT: Duration = Duration::from_secs(1);

/// The `command` label: every command that counts (see `cli::metrics_from`).
pub const COMMANDS: [&str; 10] = [
    "init", "add", "remove", "render", "reload", "serf", "etcd", "sync", "settle", "worker",
];

/// Runtime operations, the `kind` label of `hacfg_runtime_operations_total`.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// `add server`.
    Add = 0,
    /// A removal begun: the server drained.
    Drain,
    /// `del server` of an idle drained server.
    Delete,
    SetAddr,
    SetWeight,
    /// A new server set ready after its first check.
    Ready,
    /// hacfg's drain undone: a removed server wanted again.
    Undrain,
}

const KINDS: [&str; 7] = [
    "add",
    "drain",
    "delete",
    "set-addr",
    "set-weight",
    "ready",
    "undrain",
];

/// The gauges a run may know, kept from the previous file when it does not.
#[derive(Debug, Clone, Copy)]
enum Gauge {
    Nodes = 0,
    Held,
    ServersLive,
    PendingFirstCheck,
    PendingRemoval,
    Stays,
    EtcdRevision,
}

const GAUGES: usize = 7;
/// A gauge this run did not learn.
const UNKNOWN: u64 = u64::MAX;

static OPS: [AtomicU64; KINDS.len()] = [const { AtomicU64::new(0) }; KINDS.len()];
/// Reloads that succeeded, and those that failed.
static RELOADS: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
static GAUGE: [AtomicU64; GAUGES] = [const { AtomicU64::new(UNKNOWN) }; GAUGES];

fn set(gauge: Gauge, value: usize) {
    GAUGE[gauge as usize].store(value as u64, Ordering::Relaxed);
}

/// The etcd revision the folder now reflects (`hacfg etcd` and `sync
/// --source etcd` record one).
pub fn etcd_revision(revision: u64) {
    GAUGE[Gauge::EtcdRevision as usize].store(revision, Ordering::Relaxed);
}

/// Adds what the pipeline counted to this run's tally.
pub fn count(c: &Counts) {
    for (kind, n) in [
        (Kind::Add, c.added),
        (Kind::Drain, c.drained),
        (Kind::Delete, c.deleted),
        (Kind::SetAddr, c.set_addr),
        (Kind::SetWeight, c.set_weight),
        (Kind::Ready, c.ready),
        (Kind::Undrain, c.undrained),
    ] {
        OPS[kind as usize].fetch_add(n, Ordering::Relaxed);
    }
    RELOADS[0].fetch_add(c.reloads, Ordering::Relaxed);
    RELOADS[1].fetch_add(c.failed_reloads, Ordering::Relaxed);
    if let Some((nodes, held)) = c.nodes {
        set(Gauge::Nodes, nodes);
        set(Gauge::Held, held);
    }
    if let Some(live) = c.servers_live {
        set(Gauge::ServersLive, live);
    }
    if let Some((first_check, removal)) = c.pending {
        set(Gauge::PendingFirstCheck, first_check);
        set(Gauge::PendingRemoval, removal);
    }
    if let Some(stays) = c.stays {
        set(Gauge::Stays, stays);
    }
}

/// Everything the file carries from run to run.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Carried {
    runs: BTreeMap<String, u64>,
    /// Runs that exited non-zero, by exit code.
    errors: BTreeMap<u8, u64>,
    /// `ok`, `failed`.
    reloads: [u64; 2],
    ops: [u64; KINDS.len()],
    gauges: [Option<u64>; GAUGES],
}

impl Default for Carried {
    fn default() -> Carried {
        Carried {
            runs: COMMANDS.iter().map(|c| ((*c).to_string(), 0)).collect(),
            errors: (1..=8).map(|code| (code, 0)).collect(),
            reloads: [0; 2],
            ops: [0; KINDS.len()],
            gauges: [None; GAUGES],
        }
    }
}

/// How the run that writes the file ended.
struct Last {
    command: &'static str,
    code: u8,
    ended: SystemTime,
    duration: Duration,
}

impl Carried {
    /// Adds this process's tally and the run's outcome.
    fn add_run(&mut self, last: &Last) {
        let runs = self.runs.entry(last.command.to_string()).or_default();
        *runs = runs.saturating_add(1);
        if last.code != 0 {
            let errors = self.errors.entry(last.code).or_default();
            *errors = errors.saturating_add(1);
        }
        for (total, tally) in self.reloads.iter_mut().zip(&RELOADS) {
            *total = total.saturating_add(tally.load(Ordering::Relaxed));
        }
        for (total, tally) in self.ops.iter_mut().zip(&OPS) {
            *total = total.saturating_add(tally.load(Ordering::Relaxed));
        }
        for (gauge, tally) in self.gauges.iter_mut().zip(&GAUGE) {
            let value = tally.load(Ordering::Relaxed);
            if value != UNKNOWN {
                *gauge = Some(value);
            }
        }
    }
}

/// One metric family of the file: name, type, help.
struct Family(&'static str, &'static str, &'static str);

const LAST_TIME: Family = Family(
    "hacfg_last_run_timestamp_seconds",
    "gauge",
    "When the last counted hacfg run ended (Unix time).",
);
const LAST_DURATION: Family = Family(
    "hacfg_last_run_duration_seconds",
    "gauge",
    "How long the last counted hacfg run took.",
);
const LAST_CODE: Family = Family(
    "hacfg_last_run_exit_code",
    "gauge",
    "The exit code of the last counted hacfg run (0 ok; see hacfg's exit codes).",
);
const NODES: Family = Family(
    "hacfg_nodes",
    "gauge",
    "Nodes the last run that rendered read from the nodes folder, less the held-back ones.",
);
const HELD: Family = Family(
    "hacfg_held_nodes",
    "gauge",
    "Nodes held back because HAProxy refused them, as the last run that rendered saw them.",
);
const LIVE: Family = Family(
    "hacfg_servers_live",
    "gauge",
    "Servers HAProxy runs (show servers state), as the last run that read them saw them.",
);
const PENDING: Family = Family(
    "hacfg_pending_servers",
    "gauge",
    "Servers hacfg drained and has not finished with yet, by why, as the last settle pass left them.",
);
const STAYS: Family = Family(
    "hacfg_failed_members_staying",
    "gauge",
    "Members Serf reports failed that stay because HAProxy's checks see them UP (--on-failed verify), as the last run that reviewed them left them.",
);
const ETCD_REVISION: Family = Family(
    "hacfg_etcd_revision",
    "gauge",
    "The etcd revision the nodes folder reflects, as the last hacfg etcd or sync --source etcd recorded it.",
);
const RUNS: Family = Family(
    "hacfg_runs_total",
    "counter",
    "Counted hacfg runs, by command.",
);
const ERRORS: Family = Family(
    "hacfg_errors_total",
    "counter",
    "Counted hacfg runs that exited non-zero, by exit code.",
);
const RELOADS_FAMILY: Family = Family(
    "hacfg_reloads_total",
    "counter",
    "HAProxy reloads hacfg made, by result.",
);
const OPS_FAMILY: Family = Family(
    "hacfg_runtime_operations_total",
    "counter",
    "Changes hacfg made through HAProxy's runtime API, by kind.",
);

/// Gauges in the order they are written, with their `why` label if any.
const GAUGE_LINES: [(&Family, Option<&str>); GAUGES] = [
    (&NODES, None),
    (&HELD, None),
    (&LIVE, None),
    (&PENDING, Some("first-check")),
    (&PENDING, Some("removal")),
    (&STAYS, None),
    (&ETCD_REVISION, None),
];

fn head(out: &mut String, f: &Family) {
    let _ = writeln!(out, "# HELP {} {}\n# TYPE {} {}", f.0, f.2, f.0, f.1);
}

/// The file's text: families in a fixed order, gauges nobody ever learnt
/// left out.
fn render(c: &Carried, last: &Last) -> String {
    let mut out = String::new();
    render_last(&mut out, last);
    render_gauges(&mut out, c);
    let runs = c.runs.iter().map(|(k, v)| (k.clone(), *v)).collect();
    labelled(&mut out, &RUNS, "command", runs);
    let errors = c.errors.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    labelled(&mut out, &ERRORS, "exit_code", errors);
    let reloads = ["ok", "failed"].map(String::from).into_iter();
    labelled(
        &mut out,
        &RELOADS_FAMILY,
        "result",
        reloads.zip(c.reloads).collect(),
    );
    let kinds = KINDS.map(String::from).into_iter();
    labelled(&mut out, &OPS_FAMILY, "kind", kinds.zip(c.ops).collect());
    out
}

/// The last run's lines: when it ended, how long it took, its exit code.
fn render_last(out: &mut String, last: &Last) {
    let secs = last
        .ended
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let plain = [
        (&LAST_TIME, format!("{secs:.3}")),
        (
            &LAST_DURATION,
            format!("{:.6}", last.duration.as_secs_f64()),
        ),
        (&LAST_CODE, last.code.to_string()),
    ];
    for (family, value) in plain {
        head(out, family);
        let _ = writeln!(out, "{} {value}", family.0);
    }
}

/// The gauges some run learnt, each family headed once.
fn render_gauges(out: &mut String, c: &Carried) {
    let mut headed = "";
    for ((family, why), value) in GAUGE_LINES.iter().zip(c.gauges) {
        let Some(value) = value else { continue };
        if headed != family.0 {
            head(out, family);
            headed = family.0;
        }
        let _ = match why {
            Some(why) => writeln!(out, "{}{{why=\"{why}\"}} {value}", family.0),
            None => writeln!(out, "{} {value}", family.0),
        };
    }
}

/// A counter family with one labelled line per row.
fn labelled(out: &mut String, f: &Family, key: &str, rows: Vec<(String, u64)>) {
    head(out, f);
    for (label, value) in rows {
        let _ = writeln!(out, "{}{{{key}=\"{label}\"}} {value}", f.0);
    }
}

/// Reads back what the previous file carries. Lines that are not one of
/// hacfg's samples are ignored; the second value says how many, and the
/// first one's number.
fn parse(text: &str) -> (Carried, Option<(usize, usize)>) {
    let mut carried = Carried::default();
    let (mut bad, mut first) = (0, 0);
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || carried.take(line).is_some() {
            continue;
        }
        bad += 1;
        if first == 0 {
            first = number + 1;
        }
    }
    (carried, (bad > 0).then_some((bad, first)))
}

impl Carried {
    /// Takes one sample line, `name value` or `name{key="value"} value`;
    /// `None` if it is not one of hacfg's.
    fn take(&mut self, line: &str) -> Option<()> {
        let (series, value) = line.split_once(' ')?;
        // The last run's lines are this run's to write: not read back.
        if [LAST_TIME.0, LAST_DURATION.0, LAST_CODE.0].contains(&series) {
            return Some(());
        }
        let value: u64 = value.trim().parse().ok()?;
        let (name, label) = match series.split_once('{') {
            Some((name, rest)) => {
                let (key, value) = rest.strip_suffix("\"}")?.split_once("=\"")?;
                (name, Some((key, value)))
            }
            None => (series, None),
        };
        match (name, label) {
            (n, Some(("command", c))) if n == RUNS.0 && COMMANDS.contains(&c) => {
                self.runs.insert(c.to_string(), value);
            }
            (n, Some(("exit_code", code))) if n == ERRORS.0 => {
                let code = crate::node::parse_number(code).and_then(|c| u8::try_from(c).ok());
                self.errors.insert(code.filter(|c| *c != 0)?, value);
            }
            (n, Some(("result", r))) if n == RELOADS_FAMILY.0 => {
                self.reloads[["ok", "failed"].iter().position(|k| *k == r)?] = value;
            }
            (n, Some(("kind", k))) if n == OPS_FAMILY.0 => {
                self.ops[KINDS.iter().position(|x| *x == k)?] = value;
            }
            (n, label) => {
                let why = match label {
                    None => None,
                    Some(("why", why)) => Some(why),
                    Some(_) => return None,
                };
                let at = GAUGE_LINES
                    .iter()
                    .position(|(f, w)| f.0 == n && *w == why)?;
                self.gauges[at] = Some(value);
            }
        }
        Some(())
    }
}

/// Where a run's metrics go, and the command they count it under.
#[derive(Debug, Clone)]
pub struct Target {
    pub path: PathBuf,
    pub command: &'static str,
}

/// A run's clock, started before anything else.
pub struct Clock(Instant);

impl Clock {
    pub fn start() -> Clock {
        Clock(Instant::now())
    }
}

impl Target {
    /// Adds this run to the file. Problems are warnings (stderr and the log
    /// file), never a changed exit code.
    pub fn record(&self, code: u8, clock: &Clock, log_file: Option<&Path>) {
        let last = Last {
            command: self.command,
            code,
            ended: SystemTime::now(),
            duration: clock.0.elapsed(),
        };
        let mut warnings = Vec::new();
        if let Err(e) = self.write(&last, &mut warnings, LOCK_WAIT) {
            let path = self.path.display();
            warnings.push(format!("unable to write metrics file `{path}`: {e:#}"));
        }
        if !warnings.is_empty() {
            let mut log = crate::log::Log::new(crate::log::Verbosity::Quiet, log_file);
            for warning in &warnings {
                log.warn(warning);
            }
        }
    }

    fn write(&self, last: &Last, warnings: &mut Vec<String>, wait: Duration) -> Result<()> {
        let _lock = lock(&lock_path(&self.path), wait)?;
        let shown = self.path.display();
        let mut carried = match crate::file::read_capped(&self.path, FILE_CAP) {
            Ok(None) => Carried::default(),
            Ok(Some(bytes)) => {
                let (carried, bad) = parse(&String::from_utf8_lossy(&bytes));
                if let Some((bad, first)) = bad {
                    warnings.push(format!(
                        "metrics file `{shown}`: ignored {bad} line(s) that are not hacfg's \
                         (first: line {first}); the rest is kept"
                    ));
                }
                carried
            }
            Err(e) => {
                warnings.push(format!(
                    "metrics file `{shown}` cannot be read back ({e:#}): its counters start \
                     again from 0"
                ));
                Carried::default()
            }
        };
        carried.add_run(last);
        // Renamed into place, not fsynced: the sync would double a handler's
        // time, and a file lost to a crash is a counter reset, which
        // Prometheus handles.
        let text = render(&carried, last);
        crate::atomic::Staged::unsynced(&self.path, text.as_bytes())?.rename()
    }
}

/// `PATH.lock`: the sidecar the writers of `PATH` lock.
fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes an flock on `path`, waiting at most `wait` for another holder. A
/// lock file is never removed: a new one would not exclude the old one's
/// holders. It is 0600 and never a link: beside a shared metrics file, no
/// other user may open it to hold it.
fn lock(path: &Path, wait: Duration) -> Result<File> {
    let file = crate::file::open_lock(path, 0o600, "metrics lock")?;
    crate::lock::take(
        &file,
        crate::lock::Kind::Exclusive,
        wait,
        ("metrics file", path),
    )
    .context("this run is not counted")?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last(code: u8) -> Last {
        Last {
            command: "add",
            code,
            ended: UNIX_EPOCH + Duration::from_millis(1_700_000_000_250),
            duration: Duration::from_micros(4_500),
        }
    }

    #[test]
    fn the_file_reads_back_what_it_wrote() {
        let mut c = Carried::default();
        c.runs.insert("serf".into(), 7);
        c.errors.insert(4, 2);
        c.reloads = [3, 1];
        c.ops[Kind::SetWeight as usize] = 5;
        c.gauges[Gauge::Nodes as usize] = Some(12);
        c.gauges[Gauge::PendingRemoval as usize] = Some(1);
        c.gauges[Gauge::Stays as usize] = Some(500);
        let text = render(&c, &last(4));
        assert_eq!(parse(&text), (c, None), "{text}");
        assert!(text.contains("\nhacfg_failed_members_staying 500\n# HELP hacfg_runs"));
        assert!(text.starts_with(
            "# HELP hacfg_last_run_timestamp_seconds When the last counted hacfg run ended \
             (Unix time).\n# TYPE hacfg_last_run_timestamp_seconds gauge\n\
             hacfg_last_run_timestamp_seconds 1700000000.250\n"
        ));
        assert!(text.contains("\nhacfg_last_run_duration_seconds 0.004500\n"));
        assert!(text.contains("\nhacfg_last_run_exit_code 4\n"));
        assert!(text.contains("\nhacfg_nodes 12\n# HELP hacfg_pending_servers"));
        assert!(text.contains("\nhacfg_pending_servers{why=\"removal\"} 1\n# HELP hacfg_failed"));
        assert!(
            !text.contains("hacfg_servers_live"),
            "never learnt: left out"
        );
        assert!(text.contains("\nhacfg_errors_total{exit_code=\"4\"} 2\n"));
        assert!(text.contains("\nhacfg_runtime_operations_total{kind=\"set-weight\"} 5\n"));
        assert!(text.ends_with("hacfg_runtime_operations_total{kind=\"undrain\"} 0\n"));
    }

    #[test]
    fn a_run_adds_to_the_counters() {
        let (mut c, _) = parse("hacfg_runs_total{command=\"add\"} 41\n");
        c.add_run(&last(3));
        assert_eq!(c.runs["add"], 42);
        assert_eq!(c.errors[&3], 1);
        c.add_run(&last(0));
        assert_eq!((c.runs["add"], c.errors[&3]), (43, 1));
        let (mut c, _) = parse(&format!("hacfg_runs_total{{command=\"add\"}} {}", u64::MAX));
        c.add_run(&last(0));
        assert_eq!(c.runs["add"], u64::MAX);
    }

    #[test]
    fn lines_that_are_not_hacfgs_are_ignored_and_counted() {
        let text = "# a comment\n\
                    hacfg_runs_total{command=\"add\"} 5\n\
                    hacfg_runs_total{command=\"x\\\"} 9\n\
                    hacfg_runs_total{command=\"sync\"} -1\n\
                    hacfg_runs_total{command=\"sync\"} 1e3\n\
                    hacfg_errors_total{exit_code=\"0\"} 3\n\
                    hacfg_errors_total{exit_code=\"300\"} 3\n\
                    hacfg_nodes{why=\"removal\"} 3\n\
                    hacfg_pending_servers{why=\"other\"} 3\n\
                    other_metric 1\n\
                    \u{fffd}\u{0}garbage\n\
                    hacfg_reloads_total{result=\"failed\"} 2\n";
        let (c, bad) = parse(text);
        assert_eq!(bad, Some((9, 3)));
        assert_eq!((c.runs["add"], c.runs["sync"], c.reloads), (5, 0, [0, 2]));
        assert_eq!(c.errors, Carried::default().errors);
        assert_eq!(c.gauges, [None; GAUGES]);
    }

    #[test]
    fn a_held_lock_is_waited_for_only_so_long() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.prom.lock");
        let held = lock(&path, LOCK_WAIT).unwrap();
        let started = Instant::now();
        let err = lock(&path, Duration::from_millis(50)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1));
        let text = format!("{err:#}");
        assert!(text.starts_with("this run is not counted"), "{text}");
        assert!(
            text.contains("is still held after 0.05s") && text.contains("PID"),
            "{text}"
        );
        drop(held);
        assert!(lock(&path, Duration::from_millis(50)).is_ok());
        assert_eq!(
            lock_path(Path::new("/a/b.prom")),
            Path::new("/a/b.prom.lock")
        );
    }
}
