//! Decides how the nodes folder reaches HAProxy, top-down:
//! **change → store → render → plan → execute → settle**.
//!
//! The caller has changed the folder (`commands`) and holds its exclusive
//! lock. [`update`] loads the nodes (less those held back, `quarantine`),
//! renders them, and then takes one of two paths: the hitless one
//! (`hitless`: plan the runtime operations, execute them, record and
//! finish what is due, `settle`; with `--apply runtime`, what the runtime
//! cannot take waits for a reload, `split`), or the checked one
//! (`check`, holding back the nodes HAProxy refuses, then write and
//! `reload`). What must wait
//! for HAProxy is left to the detached `worker`, started by [`after`] once
//! the lock is released.

mod balancer;
mod check;
mod hitless;
mod pending;
mod plan;
mod quarantine;
/// hacfg's own files in the nodes folder: the one module the node store's
/// index, `etcd`'s revision and `doctor` share with the pipeline.
pub mod records;
mod reload;
mod settle;
mod split;
mod verify;
mod worker;

pub use balancer::{Balancer, Folder, Then};
pub use check::Check;
pub use pending::{Pending, Why};
pub use quarantine::HeldSet;
pub use records::now_ms;
pub use settle::Waits;
pub use verify::Shown;
pub use worker::Worker;

use std::sync::Arc;

use anyhow::Result;

use crate::exit::Failure;
use crate::haproxy::RuntimeApi;
use crate::haproxy::execute::Op;
use crate::haproxy::reload::Reload;
use crate::log::Log;
use crate::output::{Current, OutputFile};
use crate::render::Renderer;
use crate::store::{Exclusive, Lock, Shared, Store, Unreadable};
use check::Checked;
use hitless::{Ended, Fallback, Hitless};
use quarantine::{Quarantine, Retry};
use settle::Left;

/// `--apply`, as given: [`Apply::new`] turns it into what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyMode {
    /// Through the runtime API when the change allows it, else a reload.
    Auto,
    /// Through the runtime API only; a change that needs a reload is refused.
    Runtime,
    /// Always a reload.
    Reload,
}

/// How HAProxy takes a change: the combinations of `--reload`, `--apply`
/// and a socket that mean something, each with what it needs. Without
/// `--reload`, `--apply` changes nothing; without a socket, everything
/// reloads.
#[derive(Debug, Clone)]
pub enum Apply {
    /// No `--reload`: the file is written. The socket, if any, serves the
    /// settle passes, `status` and `--on-failed verify`.
    Write { runtime: Option<RuntimeApi> },
    /// Every change reloads; the socket, if any, saves the live server
    /// state for it first.
    Reload {
        reload: Reload,
        runtime: Option<RuntimeApi>,
    },
    /// Through the runtime API, falling back to a reload (`--apply auto`),
    /// or with none: what needs one waits (`--apply runtime`).
    Hitless {
        reload: Reload,
        runtime: RuntimeApi,
        fallback: Fallback,
    },
}

impl Apply {
    /// What the settings mean. `--apply runtime` with no socket is refused
    /// before (`config`): here it reloads, as `auto` with no socket does.
    pub fn new(reload: Option<Reload>, runtime: Option<RuntimeApi>, mode: ApplyMode) -> Apply {
        let Some(reload) = reload else {
            return Apply::Write { runtime };
        };
        let fallback = match mode {
            ApplyMode::Auto => Fallback::Reload,
            ApplyMode::Runtime => Fallback::Wait,
            ApplyMode::Reload => return Apply::Reload { reload, runtime },
        };
        match runtime {
            Some(runtime) => Apply::Hitless {
                reload,
                runtime,
                fallback,
            },
            None => Apply::Reload {
                reload,
                runtime: None,
            },
        }
    }

    /// The socket, whatever the mode.
    pub fn runtime(&self) -> Option<&RuntimeApi> {
        match self {
            Apply::Write { runtime } | Apply::Reload { runtime, .. } => runtime.as_ref(),
            Apply::Hitless { runtime, .. } => Some(runtime),
        }
    }

    /// How HAProxy is reloaded, if it is.
    pub fn reload(&self) -> Option<&Reload> {
        match self {
            Apply::Write { .. } => None,
            Apply::Reload { reload, .. } | Apply::Hitless { reload, .. } => Some(reload),
        }
    }

    /// The same, without the reload: the file is only written.
    fn without_reload(&self) -> Apply {
        Apply::Write {
            runtime: self.runtime().cloned(),
        }
    }

    /// Whether runs may go through `haproxy -c` and the reload path:
    /// all but `--apply runtime`.
    fn may_reload(&self) -> bool {
        !matches!(
            self,
            Apply::Hitless {
                fallback: Fallback::Wait,
                ..
            }
        )
    }
}

/// What the pipeline needs, built once from the command line (`config`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub renderer: Renderer,
    /// Refuse configs with fewer nodes than this.
    pub min_nodes: usize,
    /// How candidates are checked.
    pub check: Check,
    /// How HAProxy takes a change.
    pub apply: Apply,
    /// Write and reload even when nothing changed (so never hitless).
    pub force: bool,
    /// How long hacfg waits for its own drains.
    pub waits: settle::Waits,
    /// How to start the worker that finishes pending work.
    pub worker: worker::Worker,
}

/// What a run did that `--metrics-file` counts. The pipeline adds to it
/// as it acts, even on a run that fails later; the command hands it to
/// `metrics` (see `commands::run`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Runtime operations HAProxy took: `add server`, removals begun
    /// (drains), new addresses, new weights.
    pub added: u64,
    pub drained: u64,
    pub set_addr: u64,
    pub set_weight: u64,
    /// Finished by settle passes: new servers set ready after their first
    /// check, removed ones deleted once idle, drains undone.
    pub ready: u64,
    pub deleted: u64,
    pub undrained: u64,
    /// Reloads that succeeded, and those that failed.
    pub reloads: u64,
    pub failed_reloads: u64,
    /// The nodes a render used, and those held back.
    pub nodes: Option<(usize, usize)>,
    /// The servers HAProxy runs, as last read.
    pub servers_live: Option<usize>,
    /// hacfg's drains not finished (first checks, removals), as the last
    /// settle pass left them.
    pub pending: Option<(usize, usize)>,
    /// Failed members that stay (`--on-failed verify`), as the last run
    /// that reviewed them left them.
    pub stays: Option<usize>,
}

impl Counts {
    /// Runtime operations HAProxy took.
    fn ran(&mut self, ops: &[Op]) {
        for op in ops {
            *match op {
                Op::Add(_) => &mut self.added,
                Op::Delete(_) => &mut self.drained,
                Op::SetAddr { .. } => &mut self.set_addr,
                Op::SetWeight { .. } => &mut self.set_weight,
            } += 1;
        }
    }

    /// Adds `other`'s counters; its gauges, where known, replace these.
    pub fn add(&mut self, other: &Counts) {
        for (total, more) in [
            (&mut self.added, other.added),
            (&mut self.drained, other.drained),
            (&mut self.set_addr, other.set_addr),
            (&mut self.set_weight, other.set_weight),
            (&mut self.ready, other.ready),
            (&mut self.deleted, other.deleted),
            (&mut self.undrained, other.undrained),
            (&mut self.reloads, other.reloads),
            (&mut self.failed_reloads, other.failed_reloads),
        ] {
            *total = total.saturating_add(more);
        }
        self.nodes = other.nodes.or(self.nodes);
        self.servers_live = other.servers_live.or(self.servers_live);
        self.pending = other.pending.or(self.pending);
        self.stays = other.stays.or(self.stays);
    }
}

/// What a render did about nodes HAProxy refuses, and what it left to wait.
#[derive(Debug, Default)]
pub struct Applied {
    /// Every node held back now: name and HAProxy's words.
    pub held: Vec<(String, String)>,
    /// The names of those this run found; the others were held before.
    pub newly: Vec<String>,
    /// What runtime work waits for HAProxy (a first check, a drain):
    /// [`after`] starts the worker for it.
    pub left: Left,
    /// Files in the folder that are no node hacfg can read: held back.
    pub unreadable: Vec<Unreadable>,
}

/// Makes the output (and, with `--reload`, HAProxy) match the folder as it
/// is now. The exclusive lock makes this one consistent snapshot, and a
/// burst of queued callers costs few writes and reloads: whoever finds the
/// live config already equal to its render does nothing.
///
/// A node whose line HAProxy refuses is held back (see `quarantine`): the
/// config goes live without it, and the result says so.
pub fn update(
    s: &Settings,
    store: &Store,
    (lock, output): (&Lock<Exclusive>, &OutputFile),
    dead: &[String],
    log: &mut Log,
    counts: &mut Counts,
) -> Result<Applied> {
    let reload = s.apply.reload().filter(|_| s.apply.may_reload());
    crate::haproxy::reload::probe_sockets(s.apply.runtime(), reload).map_err(Failure::Unusable)?;
    // HAProxy's live servers are read while the folder is read and rendered.
    let prefetched = hitless::prefetch(s);
    output.remove_leftovers(lock);
    records::sweep(store.dir(), lock, log);
    let q = Quarantine::load(store, lock, retry(s))?;
    log.debug(&loaded_text(&q, store));
    if let Some(stray) = q.stray() {
        log.warn(stray);
    }
    counts.nodes = Some((q.nodes().len(), q.held() + q.unreadable().len()));
    let loaded = (q, prefetched);
    apply_loaded(s, (store, output, dead), loaded, log, counts)
}

/// The live servers, read on a thread of their own (`hitless::prefetch`).
type Prefetched = Option<std::thread::JoinHandle<Result<Vec<crate::haproxy::state::Live>>>>;

/// The render loop of [`update`]: the hitless path when it can, else the
/// checked one, holding back what HAProxy refuses until a candidate passes.
fn apply_loaded(
    s: &Settings,
    (store, output, dead): (&Store, &OutputFile, &[String]),
    (mut q, mut prefetched): (Quarantine, Prefetched),
    log: &mut Log,
    counts: &mut Counts,
) -> Result<Applied> {
    loop {
        let rendered = render_guarded(s, &q, output)?;
        let unchanged = output.compare(rendered.as_bytes())? == Current::Same && !s.force;
        // Nodes tried again were refused by `haproxy -c`: only it judges them.
        if !q.is_retrying()
            && let Some(live) = prefetched.take()
            && let Some(runtime) = Hitless::of(s, store.dir(), output, dead)
        {
            let live = hitless::join(live);
            let ended = runtime.apply(live, &rendered, unchanged, log, counts)?;
            if !matches!(ended, Ended::Reload) {
                q.save()?;
                let written = Written {
                    rendered: &rendered,
                    unchanged,
                    count: q.nodes().len(),
                };
                let left = written.write(store, output, ended, log)?;
                return Ok(applied(&q, left));
            }
        }
        if unchanged {
            return keep_unchanged(s, (store, output), &mut q, &rendered, log, counts);
        }
        if let Checked::Accepted(staged) = check::candidate(s, output, &rendered, &mut q, log)? {
            q.save()?;
            split::forget(store.dir())?;
            let written = (store.dir(), rendered.as_str(), q.nodes().len());
            reload::write_and_reload(s, output, staged, written, log, counts)?;
            let left = hitless::finish_pending(s, store, &rendered, log, counts);
            return Ok(applied(&q, left));
        }
    }
}

/// A render equal to the file: nothing is written or reloaded; what hacfg
/// left pending is still finished.
fn keep_unchanged(
    s: &Settings,
    (store, output): (&Store, &OutputFile),
    q: &mut Quarantine,
    rendered: &str,
    log: &mut Log,
    counts: &mut Counts,
) -> Result<Applied> {
    q.save()?;
    split::forget(store.dir())?;
    let shown = output.path().display();
    log.info(&format!(
        "`{shown}` unchanged ({})",
        nodes_text(q.nodes().len())
    ));
    let left = hitless::finish_pending(s, store, rendered, log, counts);
    Ok(applied(q, left))
}

/// What a run loaded, for `-v`.
fn loaded_text(q: &Quarantine, store: &Store) -> String {
    let retried = if q.is_retrying() {
        " (some of them tried again)"
    } else {
        ""
    };
    format!(
        "{} node(s) in `{}`, {} held back{retried}",
        q.nodes().len() + q.held(),
        store.dir().display(),
        q.held()
    )
}

/// The render the hitless path applied.
struct Written<'a> {
    rendered: &'a str,
    unchanged: bool,
    /// Its nodes.
    count: usize,
}

impl Written<'_> {
    /// Writes what HAProxy now runs: the render, or (`--apply runtime`)
    /// the part of it HAProxy took, with one line for what waits.
    fn write(
        &self,
        store: &Store,
        output: &OutputFile,
        ended: Ended,
        log: &mut Log,
    ) -> Result<Left> {
        let (part, left) = match ended {
            Ended::Part(part, left) => (part, left),
            // Not applied: the caller takes the reload path.
            Ended::Reload => return Ok(Left::Nothing),
            Ended::All(left) => {
                split::forget(store.dir())?;
                if !self.unchanged {
                    write_applied(output, self.rendered, &nodes_text(self.count), log)?;
                }
                return Ok(left);
            }
        };
        if output.compare(part.config.as_bytes())? != Current::Same {
            let servers = crate::haproxy::config::servers(&part.config).len();
            let what = format!("{servers} server(s), the part HAProxy took");
            write_applied(output, &part.config, &what, log)?;
        }
        hitless::warn_waiting(&part, log);
        Ok(left)
    }
}

/// Writes a config HAProxy already runs (the hitless path applied it).
fn write_applied(output: &OutputFile, config: &str, what: &str, log: &mut Log) -> Result<()> {
    if let Some(edit) = output.replace(None, config.as_bytes())?.hand_edit() {
        log.warn(&edit.to_string());
    }
    log.info(&format!(
        "wrote `{}` ({what}), applied through the runtime API without a reload",
        output.path().display()
    ));
    Ok(())
}

/// After the lock is released: starts the worker if work waits for HAProxy.
pub fn after(s: &Settings, applied: &Applied, log: &mut Log) {
    if applied.left.waiting() {
        worker::spawn(&s.worker, log);
    }
}

/// Whether this run tries held nodes again: only one that checks its
/// candidate and may take the checked path (not `--apply runtime`).
fn retry(s: &Settings) -> Retry {
    if s.check.runs() && s.apply.may_reload() {
        Retry::Due
    } else {
        Retry::Never
    }
}

/// Renders the nodes; refuses fewer than `--min-nodes`, and then records
/// nothing (no held node either: the config that would leave them out is
/// not written).
fn render_guarded(s: &Settings, q: &Quarantine, output: &OutputFile) -> Result<String> {
    let nodes = q.nodes();
    let count = nodes.len();
    let rendered = s.renderer.render(nodes, output.size(), output.path())?;
    if count < s.min_nodes {
        return Err(Failure::TooFewNodes {
            output: output.path().to_path_buf(),
            count,
            min: s.min_nodes,
        }
        .into());
    }
    Ok(rendered)
}

fn applied(q: &Quarantine, left: Left) -> Applied {
    let (held, newly) = q.outcome();
    Applied {
        held,
        newly,
        left,
        unreadable: q.unreadable().to_vec(),
    }
}

/// `init`'s guard: a config that has servers is never replaced by one with
/// fewer (exit 5). A mistyped `--nodes-dir` that `init` would create empty
/// must not empty a running balancer; `hacfg render` writes such a config
/// when the folder is right. Checked before anything is created.
pub fn refuse_emptier(s: &Settings, store: &Store, output: &OutputFile) -> Result<()> {
    let Some(current) = output.read()? else {
        return Ok(());
    };
    let current = crate::haproxy::config::servers(&String::from_utf8_lossy(&current)).len();
    if current == 0 {
        return Ok(());
    }
    let nodes = if store.dir().is_dir() {
        let lock = store.lock::<Shared>()?;
        quarantine::HeldSet::load(store.dir())
            .split(store.load(&lock)?.nodes)
            .0
    } else {
        Vec::new()
    };
    let count = nodes.len();
    let rendered = s
        .renderer
        .render(Arc::new(nodes), output.size(), output.path())?;
    let servers = crate::haproxy::config::servers(&rendered).len();
    if servers >= current {
        return Ok(());
    }
    Err(Failure::Emptier {
        output: output.path().to_path_buf(),
        current,
        servers,
        dir: store.dir().to_path_buf(),
        nodes: count,
        missing: !store.dir().is_dir(),
    }
    .into())
}

/// The settings `init` applies with: no reload when HAProxy does not run
/// yet (see `reload::presence`), with an info line that says so.
pub fn for_init(s: &Settings, output: &OutputFile, log: &mut Log) -> Settings {
    let mut settings = s.clone();
    if let Some(reload) = s.apply.reload()
        && let reload::Presence::Absent(why) = reload::presence(reload)
    {
        log.info(&format!(
            "HAProxy is not running ({why}): `{}` is written without a reload",
            output.path().display()
        ));
        settings.apply = s.apply.without_reload();
    }
    settings
}

/// `N node(s)` for messages.
pub fn nodes_text(count: usize) -> String {
    crate::exit::counted(count, "node")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::haproxy::Socket;
    use crate::haproxy::reload::Strategy;

    fn reload() -> Reload {
        Reload {
            strategy: Strategy::Command("true".into()),
            timeout: Duration::from_secs(1),
        }
    }

    fn socket() -> RuntimeApi {
        RuntimeApi::new(
            Socket::Stats(std::path::Path::new("/run/haproxy.sock").into()),
            Duration::from_secs(1),
        )
    }

    fn settings(apply: Apply, check: Check) -> Settings {
        Settings {
            renderer: Renderer {
                template: None,
                default_port: 80,
                vars: std::collections::BTreeMap::new(),
            },
            min_nodes: 0,
            check,
            apply,
            force: false,
            waits: settle::Waits {
                drain: Duration::from_secs(1),
                first_check: Duration::from_secs(1),
            },
            worker: worker::Worker {
                exe: "hacfg".into(),
                args: Vec::new(),
                env: Vec::new(),
            },
        }
    }

    #[test]
    fn the_apply_mode_means_something_only_with_a_reload_and_a_socket() {
        for mode in [ApplyMode::Auto, ApplyMode::Runtime, ApplyMode::Reload] {
            let write = Apply::new(None, Some(socket()), mode);
            assert!(
                matches!(&write, Apply::Write { runtime: Some(_) }),
                "{mode:?}"
            );
            assert!(write.reload().is_none() && write.runtime().is_some());
        }
        let no_socket = Apply::new(Some(reload()), None, ApplyMode::Auto);
        assert!(matches!(no_socket, Apply::Reload { runtime: None, .. }));
        let always = Apply::new(Some(reload()), Some(socket()), ApplyMode::Reload);
        assert!(matches!(
            always,
            Apply::Reload {
                runtime: Some(_),
                ..
            }
        ));
        let fallback = |mode| match Apply::new(Some(reload()), Some(socket()), mode) {
            Apply::Hitless { fallback, .. } => Some(fallback),
            _ => None,
        };
        assert_eq!(fallback(ApplyMode::Auto), Some(Fallback::Reload));
        assert_eq!(fallback(ApplyMode::Runtime), Some(Fallback::Wait));
    }

    #[test]
    fn counts_add_up_and_the_last_gauge_wins() {
        let target = || crate::haproxy::Target::new("nodes", "a");
        let mut run = Counts::default();
        run.ran(&[
            Op::Delete(target()),
            Op::Delete(target()),
            Op::SetWeight {
                target: target(),
                weight: 2,
            },
        ]);
        assert_eq!((run.drained, run.set_weight, run.added), (2, 1, 0));
        run.nodes = Some((3, 1));
        let pass = Counts {
            ready: 1,
            pending: Some((0, 2)),
            ..Counts::default()
        };
        run.add(&pass);
        run.add(&pass);
        assert_eq!((run.ready, run.drained), (2, 2));
        assert_eq!((run.nodes, run.pending), (Some((3, 1)), Some((0, 2))));
    }

    #[test]
    fn init_without_haproxy_keeps_the_socket_and_drops_the_reload() {
        let hitless = Apply::new(Some(reload()), Some(socket()), ApplyMode::Runtime);
        let write = hitless.without_reload();
        assert!(write.reload().is_none());
        assert_eq!(
            write.runtime().map(RuntimeApi::path),
            hitless.runtime().map(RuntimeApi::path)
        );
        assert!(write.may_reload(), "a written file is no runtime change");
    }

    #[test]
    fn held_nodes_are_tried_again_only_by_a_run_that_checks_and_may_reload() {
        let haproxy = || Check::Haproxy("haproxy".into());
        let auto = Apply::new(Some(reload()), Some(socket()), ApplyMode::Auto);
        let runtime_only = Apply::new(Some(reload()), Some(socket()), ApplyMode::Runtime);
        assert_eq!(retry(&settings(auto.clone(), haproxy())), Retry::Due);
        assert_eq!(retry(&settings(runtime_only, haproxy())), Retry::Never);
        assert_eq!(retry(&settings(auto, Check::Skip)), Retry::Never);
        // Without --reload, --apply runtime writes the file: it checks.
        let written = Apply::new(None, Some(socket()), ApplyMode::Runtime);
        assert_eq!(retry(&settings(written, haproxy())), Retry::Due);
    }

    #[test]
    fn force_and_the_apply_mode_decide_whether_the_live_servers_are_read() {
        let runtime_only = Apply::new(Some(reload()), Some(socket()), ApplyMode::Runtime);
        let mut s = settings(runtime_only, Check::Skip);
        let dir = tempfile::tempdir().unwrap();
        let output =
            OutputFile::new(&dir.path().join("h.cfg"), crate::output::WriteMode::Rename).unwrap();
        assert!(Hitless::of(&s, dir.path(), &output, &[]).is_some());
        s.force = true;
        assert!(hitless::prefetch(&s).is_none(), "--force reloads");
        s.apply = Apply::new(Some(reload()), Some(socket()), ApplyMode::Reload);
        assert!(Hitless::of(&s, dir.path(), &output, &[]).is_none());
    }
}
