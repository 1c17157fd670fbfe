//! Decides how the nodes folder reaches HAProxy, top-down:
//! **change → store → render → plan → execute → settle**.
//!
//! The caller has changed the folder (`commands`) and holds its exclusive
//! lock. [`update`] loads the nodes (less those held back, `quarantine`),
//! renders them, and then takes one of two paths: the hitless one
//! (`hitless`: plan the runtime operations, execute them, record and
//! finish what is due, `settle`; with `--apply runtime`, what the runtime
//! cannot take waits for a reload, `partial`), or the checked one
//! (`check`, holding back the nodes HAProxy refuses, then write and
//! `reload`). What must wait
//! for HAProxy is left to the detached `worker`, started by [`after`] once
//! the lock is released.

mod balancer;
mod check;
mod hitless;
mod partial;
/// Public for `metrics` alone, which the pipeline itself reaches: through
/// the `pub use` below, that would be an import circle.
pub mod pending;
mod plan;
mod quarantine;
pub mod records;
mod reload;
mod settle;
mod verify;
mod worker;

pub use balancer::{Balancer, Folder, Then};
pub use check::Check;
pub use pending::{Pending, Why};
pub use quarantine::HeldSet;
pub use records::now_ms;
pub use settle::Waits;
pub use worker::Worker;

use std::sync::Arc;

use anyhow::Result;

use crate::exit::Failure;
use crate::haproxy::RuntimeApi;
use crate::haproxy::reload::Reload;
use crate::log::Log;
use crate::output::{Current, OutputFile};
use crate::render::Renderer;
use crate::store::{Exclusive, Lock, Shared, Store};
use check::Checked;
use hitless::{Hitless, Taken};
use quarantine::{Quarantine, Retry};

/// How HAProxy takes a change (`--apply`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyMode {
    /// Through the runtime API when the change allows it, else a reload.
    Auto,
    /// Through the runtime API only; a change that needs a reload is refused.
    Runtime,
    /// Always a reload.
    Reload,
}

/// What the pipeline needs, built once from the command line (`config`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub renderer: Renderer,
    /// Refuse configs with fewer nodes than this.
    pub min_nodes: usize,
    /// How candidates are checked.
    pub check: Check,
    /// How HAProxy is reloaded; `None` when `--reload` was not given.
    pub reload: Option<Reload>,
    /// Write and reload even when nothing changed.
    pub force: bool,
    /// How HAProxy takes a change (with `--reload`).
    pub apply: ApplyMode,
    /// The socket for runtime changes and `status`, if any.
    pub runtime: Option<RuntimeApi>,
    /// How long hacfg waits for its own drains.
    pub waits: settle::Waits,
    /// How to start the worker that finishes pending work.
    pub worker: worker::Worker,
}

/// What a render did about nodes HAProxy refuses, and what it left to wait.
#[derive(Debug, Default)]
pub struct Applied {
    /// Every node held back now: name and HAProxy's words.
    pub held: Vec<(String, String)>,
    /// The names of those this run found; the others were held before.
    pub newly: Vec<String>,
    /// Runtime work waits for HAProxy (a first check, a drain): [`after`]
    /// starts the worker.
    pub waiting: bool,
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
    lock: &Lock<Exclusive>,
    output: &OutputFile,
    log: &mut Log,
) -> Result<Applied> {
    crate::haproxy::reload::probe_sockets(s.runtime.as_ref(), s.reload.as_ref())
        .map_err(|e| Failure::ReloadFailed(e.to_string()))?;
    // HAProxy's live servers are read while the folder is read and rendered.
    let mut prefetched = hitless::prefetch(s);
    output.remove_leftovers(lock);
    records::sweep(store.dir(), lock, log);
    let mut q = Quarantine::load(store, lock, retry(s))?;
    log.debug(&loaded_text(&q, store));
    crate::metrics::nodes(q.nodes().len(), q.held());
    loop {
        let rendered = render_guarded(s, &q, output)?;
        let unchanged = output.compare(rendered.as_bytes())? == Current::Same && !s.force;
        let ctx = hitless::Context { s, store, output };
        // Nodes tried again were refused by `haproxy -c`: only it judges them.
        if !q.is_retrying()
            && let Some(live) = prefetched.take()
            && let Hitless::Applied { waiting, taken } =
                ctx.apply(live, &rendered, unchanged, log)?
        {
            q.save()?;
            let written = Written {
                rendered: &rendered,
                unchanged,
                count: q.nodes().len(),
            };
            written.write(store, output, taken, log)?;
            return Ok(applied(&q, waiting));
        }
        if unchanged {
            return keep_unchanged(s, store, &mut q, output, &rendered, log);
        }
        if let Checked::Accepted(staged) = check::candidate(s, output, &rendered, &mut q, log)? {
            q.save()?;
            partial::forget(store.dir())?;
            reload::write_and_reload(s, output, staged, &rendered, q.nodes().len(), log)?;
            return Ok(applied(
                &q,
                hitless::finish_pending(s, store, &rendered, log),
            ));
        }
    }
}

/// A render equal to the file: nothing is written or reloaded; what hacfg
/// left pending is still finished.
fn keep_unchanged(
    s: &Settings,
    store: &Store,
    q: &mut Quarantine,
    output: &OutputFile,
    rendered: &str,
    log: &mut Log,
) -> Result<Applied> {
    q.save()?;
    partial::forget(store.dir())?;
    let shown = output.path().display();
    log.info(&format!(
        "`{shown}` unchanged ({})",
        nodes_text(q.nodes().len())
    ));
    let waiting = hitless::finish_pending(s, store, rendered, log);
    Ok(applied(q, waiting))
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
    fn write(&self, store: &Store, output: &OutputFile, taken: Taken, log: &mut Log) -> Result<()> {
        let part = match taken {
            Taken::All => {
                partial::forget(store.dir())?;
                if !self.unchanged {
                    write_applied(output, self.rendered, &nodes_text(self.count), log)?;
                }
                return Ok(());
            }
            Taken::Part(part) => part,
        };
        if output.compare(part.config.as_bytes())? != Current::Same {
            let servers = crate::haproxy::config::servers(&part.config).len();
            let what = format!("{servers} server(s), the part HAProxy took");
            write_applied(output, &part.config, &what, log)?;
        }
        hitless::warn_waiting(&part, log);
        Ok(())
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
    if applied.waiting {
        worker::spawn(&s.worker, log);
    }
}

/// Whether this run tries held nodes again: only one that checks its
/// candidate and may take the checked path (not `--apply runtime`).
fn retry(s: &Settings) -> Retry {
    let runtime_only = s.reload.is_some() && s.runtime.is_some() && s.apply == ApplyMode::Runtime;
    if s.check.runs() && !runtime_only {
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
        return Err(Failure::TooFewNodes(format!(
            "refusing to write `{}` with {count} nodes, fewer than --min-nodes {}; the live \
             config is unchanged (the nodes folder keeps the change)",
            output.path().display(),
            s.min_nodes
        ))
        .into());
    }
    Ok(rendered)
}

fn applied(q: &Quarantine, waiting: bool) -> Applied {
    let (held, newly) = q.outcome();
    Applied {
        held,
        newly,
        waiting,
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
            .split(store.load_all(&lock)?)
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
    Err(Failure::TooFewNodes(format!(
        "init: refusing to replace `{}` ({}) with a config of {} rendered from `{}` ({}): init \
         never empties a config (is --nodes-dir or HACFG_NODES_DIR mistyped? if the folder is \
         right, `hacfg render` writes it); nothing was created or changed",
        output.path().display(),
        servers_text(current),
        servers_text(servers),
        store.dir().display(),
        nodes_text(count)
    ))
    .into())
}

/// The settings `init` applies with: no reload when HAProxy does not run
/// yet (see `reload::presence`), with an info line that says so.
pub fn for_init(s: &Settings, output: &OutputFile, log: &mut Log) -> Settings {
    let mut settings = s.clone();
    if let Some(reload) = &s.reload
        && let reload::Presence::Absent(why) = reload::presence(reload)
    {
        log.info(&format!(
            "HAProxy is not running ({why}): `{}` is written without a reload",
            output.path().display()
        ));
        settings.reload = None;
    }
    settings
}

/// `N server(s)` for messages.
fn servers_text(count: usize) -> String {
    format!("{count} server{}", if count == 1 { "" } else { "s" })
}

/// `N node(s)` for messages.
pub fn nodes_text(count: usize) -> String {
    format!("{count} node{}", if count == 1 { "" } else { "s" })
}
