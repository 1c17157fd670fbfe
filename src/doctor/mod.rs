//! `hacfg doctor`: checks a setup before an incident does. One line per
//! check (`ok`, `warn`, `fail`), each failure saying what to do; exit 1
//! when one failed. It changes nothing: the folder is read under the shared
//! lock (waited for briefly), the output only looked at, HAProxy asked read
//! commands, and every wait is bounded.

mod report;
mod system;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::exit::Outcome;
use crate::haproxy::Address;
use crate::output::WriteMode;
use crate::pipeline::Balancer;
use crate::pipeline::records::lock::Job;
use crate::stdout::print_stdout;
pub use report::{Level, Report};

/// How long doctor waits for the folder's lock: a held lock is a finding,
/// not something to sit out for `--lock-timeout`.
pub const LOCK_WAIT: Duration = Duration::from_secs(2);

/// What doctor looks at beyond the balancer: the settings as given, so
/// that one that would refuse a run is reported, not refused.
#[derive(Debug)]
pub struct Setup {
    /// The `haproxy` found, or why none was (`--haproxy-bin`, PATH).
    pub haproxy: Result<PathBuf, String>,
    /// `--check-cmd`: it checks candidates instead of `haproxy -c`.
    pub check_cmd: Option<String>,
    pub master_socket: Option<Address>,
    pub stats_socket: Option<Address>,
    pub socket_timeout: Duration,
    pub write_mode: WriteMode,
    pub log_file: Option<PathBuf>,
    pub metrics_file: Option<PathBuf>,
    /// The Serf agent to ask, when doctor is to ask one.
    pub serf: Option<Serf>,
}

/// `--serf`, `--rpc-addr`, `--serf-bin`, `--role`.
#[derive(Debug)]
pub struct Serf {
    pub bin: PathBuf,
    pub rpc_addr: Option<String>,
    pub roles: Vec<String>,
}

/// Runs every check, prints one line each, and fails (exit 1) when one
/// failed; warnings alone exit 0.
pub fn run(b: &mut Balancer, setup: &Setup) -> Result<Outcome> {
    let report = checks(b, setup);
    print_stdout(&report.to_string())?;
    let failed = report.count(Level::Fail);
    if failed > 0 {
        bail!(
            "doctor found {} (see the `fail` lines above)",
            crate::exit::counted(failed, "failure")
        );
    }
    Ok(Outcome::Done)
}

/// Every check, in the order a run meets what they check.
pub fn checks(b: &mut Balancer, setup: &Setup) -> Report {
    let mut report = Report::default();
    let folder_ok = system::nodes_folder(b, &mut report);
    // The template renders the folder, under its lock: not when that failed.
    let rendered = if folder_ok && survey(b, &mut report) {
        template(b, &mut report)
    } else {
        None
    };
    system::output(b, setup.write_mode, &mut report);
    system::haproxy(b, setup, &mut report);
    system::sockets(setup, &mut report);
    system::state_file(rendered.as_deref(), &mut report);
    let files = [
        ("log file", &setup.log_file),
        ("metrics file", &setup.metrics_file),
    ];
    for (what, path) in files {
        if let Some(path) = path {
            system::writable_file(what, path, &mut report);
        }
    }
    if let Some(serf) = &setup.serf {
        serf_agent(serf, &mut report);
    }
    if folder_ok {
        worker(b, &mut report);
    }
    report
}

/// The folder's lock and what is in the folder: nodes, files that are no
/// node, stray files. `false`: the folder could not be read.
fn survey(b: &Balancer, report: &mut Report) -> bool {
    let subject = format!("nodes folder `{}`", b.nodes_dir().display());
    let loaded = match b.survey() {
        Ok(loaded) => loaded,
        Err(e) => {
            let what = match e.downcast_ref::<crate::lock::TimedOut>() {
                Some(_) => "find the holder named here and let it finish (or stop it)",
                None => "fix what the error names",
            };
            report.fail(&subject, &format!("{e:#}; {what}"));
            return false;
        }
    };
    report.ok(
        &subject,
        &format!(
            "lock free, {}",
            crate::exit::counted(loaded.nodes.len(), "node")
        ),
    );
    for bad in &loaded.unreadable {
        let todo = "fix or remove it (it is left out of the config)";
        report.warn(
            &subject,
            &format!("`{}` is no node: {}; {todo}", bad.file, bad.reason),
        );
    }
    if !loaded.stray.is_empty() {
        report.warn(
            &subject,
            &format!(
                "stray files (skipped): {}; remove them",
                loaded.stray.join(", ")
            ),
        );
    }
    true
}

/// The template compiles and renders the current nodes: the config.
fn template(b: &mut Balancer, report: &mut Report) -> Option<String> {
    match b.preview() {
        Ok(preview) => {
            let lines = preview.rendered.lines().count();
            report.ok(
                "template",
                &format!("renders the current nodes ({lines} lines)"),
            );
            Some(preview.rendered)
        }
        Err(e) => {
            report.fail(
                "template",
                &format!(
                    "{e:#}; fix the template (`hacfg -v render --stdout` shows its variables)"
                ),
            );
            None
        }
    }
}

/// The settle worker: alive while there is pending work, or the work is
/// stale.
fn worker(b: &Balancer, report: &mut Report) {
    let pending = match b.pending() {
        Ok(pending) => pending,
        Err(e) => {
            let todo = "the next changing run moves it aside; run `hacfg render`";
            return report.warn("worker", &format!("{e:#}; {todo}"));
        }
    };
    let now = crate::pipeline::now_ms();
    let waiting = pending.waiting(now).count();
    let holders = b
        .worker_holders(Job::Settle)
        .ok()
        .flatten()
        .unwrap_or_default();
    let alive = holders.first().map(ToString::to_string);
    match (waiting, alive) {
        _ if pending.is_empty() => report.ok("worker", "no pending runtime work"),
        (_, Some(holder)) => report.ok("worker", &format!("{holder} is finishing pending work")),
        (0, None) => report.ok(
            "worker",
            "none needed: pending work is past its wait (left drained; see `hacfg status`)",
        ),
        (n, None) => report.warn(
            "worker",
            &format!(
                "{} pending and no worker runs (stale records); run `hacfg settle`",
                crate::exit::counted(n, "change")
            ),
        ),
    }
}

/// The Serf agent answers, and members carry the roles hacfg takes.
fn serf_agent(serf: &Serf, report: &mut Report) {
    let subject = match &serf.rpc_addr {
        Some(addr) => format!("serf agent `{addr}`"),
        None => "serf agent".to_string(),
    };
    let list = match crate::serf::member_list(&serf.bin, serf.rpc_addr.as_deref()) {
        Ok(list) => list,
        Err(e) => {
            let todo = "start the agent, or set --rpc-addr (SERF_RPC_ADDR) and --serf-bin";
            return report.fail(&subject, &format!("{e:#}; {todo}"));
        }
    };
    let nodes = list
        .alive
        .iter()
        .filter(|m| serf.roles.contains(&m.role))
        .count();
    let roles = serf.roles.join(",");
    let text = format!(
        "{} alive, {nodes} with role {roles}",
        crate::exit::counted(list.alive.len(), "member")
    );
    if nodes == 0 {
        let todo = format!("tag the backends' agents `-tag role={roles}`, or set --role");
        report.warn(&subject, &format!("{text}; {todo}"));
    } else {
        report.ok(&subject, &text);
    }
}
