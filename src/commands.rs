//! One function per command: check the folders, take the lock, change the
//! folder, apply, and say how it ended.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use crate::config::{Command, Config, RenderMode};
use crate::exit::{Failure, Outcome};
use crate::log::{Log, Verbosity, print_stdout};
use crate::node::Node;
use crate::output::OutputFile;
use crate::pipeline::quarantine::HeldSet;
use crate::pipeline::verify;
use crate::pipeline::{self, Applied};
use crate::render;
use crate::serf::{self, Action, Changes, OnFailed};
use crate::store::{Exclusive, Lock, Mode, Shared, Store};

pub fn run(cfg: &Config) -> Result<Outcome> {
    let worker = matches!(cfg.command, Command::Settle { worker: true });
    // The worker's stderr goes nowhere; its log file still gets every action.
    let verbosity = if worker {
        Verbosity::Quiet
    } else {
        cfg.verbosity
    };
    let mut log = Log::new(verbosity, cfg.log_file.as_deref());
    let store = Store::new(&cfg.nodes_dir);
    let log = &mut log;
    match &cfg.command {
        Command::Init => init(cfg, &store, log),
        Command::Completions(shell) => print_bytes(&crate::docs::completions(*shell)),
        Command::Man => print_bytes(&crate::docs::man_page()?),
        Command::Status { json } => status(cfg, &store, *json),
        Command::Settle { worker } => settle(cfg, &store, log, *worker),
        Command::Add { node, render } => add(cfg, &store, log, node, *render),
        Command::Remove {
            name,
            strict,
            render,
        } => remove(cfg, &store, log, name, *strict, *render),
        Command::List { json } => {
            let lock = store.lock::<Shared>()?;
            let nodes = store.load_all(&lock)?;
            let held = HeldSet::load(store.dir());
            let port = cfg.pipeline.renderer.default_port;
            print_stdout(&list_text(&nodes, &held, port, *json)?)?;
            Ok(Outcome::Done)
        }
        Command::Render {
            mode: RenderMode::Write,
        } => {
            let output = OutputFile::new(&cfg.output, cfg.write_mode)?;
            update(cfg, &store, &output, log, None)
        }
        Command::Render { mode } => preview(cfg, &store, *mode),
        Command::Reload => reload(cfg, &store, log),
        Command::Serf {
            roles,
            on_failed,
            event,
            self_name,
            query,
        } => {
            let event = Event {
                name: event,
                self_name,
                query,
                roles,
                on_failed: *on_failed,
            };
            event.run(cfg, &store, log)
        }
        Command::Fleet(ask) => fleet(ask),
        Command::Sync {
            roles,
            on_failed,
            rpc_addr,
            serf_bin,
            dry_run,
            allow_empty,
        } => {
            let list = serf::member_list(serf_bin, rpc_addr.as_deref())?;
            let sync = Sync {
                members: &list.alive,
                failed: &list.failed,
                on_failed: *on_failed,
                roles,
                dry_run: *dry_run,
                allow_empty: *allow_empty,
            };
            sync.run(cfg, &store, log)
        }
    }
}

/// `hacfg add`: one node file, then (unless `--no-render`) a render.
fn add(cfg: &Config, store: &Store, log: &mut Log, node: &Node, render: bool) -> Result<Outcome> {
    // Both folders are checked before anything is written.
    let output = render
        .then(|| OutputFile::new(&cfg.output, cfg.write_mode))
        .transpose()?;
    if let Some((addr, port)) = crate::node::ambiguous_ipv6(&node.address) {
        log.warn(&format!(
            "`{}` is read as one IPv6 address; for address {addr} and port {port}, write \
             [{addr}]:{port}",
            node.address
        ));
    }
    let changed = store.write(&store.lock::<Shared>()?, node)?;
    let port = cfg.pipeline.renderer.default_port;
    log.info(&if changed {
        format!("added node {}", describe(node, port))
    } else {
        format!("node `{}` is already up to date", node.name)
    });
    match output {
        Some(output) => update(cfg, store, &output, log, Some(&node.name)),
        None => Ok(Outcome::Done),
    }
}

/// `hacfg remove`: one node file deleted, then (unless `--no-render`) a render.
fn remove(
    cfg: &Config,
    store: &Store,
    log: &mut Log,
    name: &str,
    strict: bool,
    render: bool,
) -> Result<Outcome> {
    let output = render
        .then(|| OutputFile::new(&cfg.output, cfg.write_mode))
        .transpose()?;
    let removed = store.remove(&store.lock::<Shared>()?, name)?;
    if !removed && strict {
        bail!(
            "node `{name}` does not exist in `{}`",
            store.dir().display()
        );
    }
    log.info(&if removed {
        format!("removed node `{name}`")
    } else {
        format!("node `{name}` was not there; nothing removed")
    });
    match output {
        Some(output) => update(cfg, store, &output, log, None),
        None => Ok(Outcome::Done),
    }
}

/// `hacfg reload`: the live state saved, then a reload of the config as it is.
fn reload(cfg: &Config, store: &Store, log: &mut Log) -> Result<Outcome> {
    let _lock = store.lock::<Exclusive>()?;
    if let Some(current) = OutputFile::new(&cfg.output, cfg.write_mode)?.read()? {
        let api = cfg.pipeline.apply.runtime();
        pipeline::reload::prepare_state(api, &String::from_utf8_lossy(&current), log)?;
    }
    if let Some(settings) = cfg.pipeline.apply.reload() {
        crate::metrics::counted(|c| pipeline::reload::reload_or_restore(settings, None, log, c))?;
    }
    Ok(Outcome::Done)
}

/// `hacfg init`: a new balancer's folders, then its first config. The
/// only command that creates a missing folder: a mistyped path elsewhere
/// is an error, never a fresh empty pool.
fn init(cfg: &Config, store: &Store, log: &mut Log) -> Result<Outcome> {
    let dir = crate::atomic::parent_dir(&cfg.output);
    if dir.is_dir() {
        let output = OutputFile::new(&cfg.output, cfg.write_mode)?;
        pipeline::refuse_emptier(&cfg.pipeline, store, &output)?;
    }
    if !store.dir().is_dir() {
        store.create()?;
        log.info(&format!("created nodes folder `{}`", store.dir().display()));
    }
    if !dir.is_dir() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("unable to create output folder `{}`", dir.display()))?;
        log.info(&format!("created output folder `{}`", dir.display()));
    }
    let output = OutputFile::new(&cfg.output, cfg.write_mode)?;
    // Before HAProxy runs (a boot script, the README's master-worker
    // snippet), there is nothing to reload: the first config is written.
    let settings = pipeline::for_init(&cfg.pipeline, &output, log);
    let lock = store.lock::<Exclusive>()?;
    let applied =
        crate::metrics::counted(|c| pipeline::update(&settings, store, &lock, &output, log, c))?;
    if let Some(text) = output.read()? {
        pipeline::reload::first_state(&String::from_utf8_lossy(&text), log);
    }
    drop(lock);
    pipeline::after(&settings, &applied, log);
    report(&applied, None, log)
}

/// The config as the folder asks for it now (held-back nodes left out),
/// written nowhere.
fn desired(cfg: &Config, store: &Store, output: &OutputFile) -> Result<String> {
    let lock = store.lock::<Shared>()?;
    let mut held = HeldSet::load(store.dir());
    let (live, _) = held.split(store.load_all(&lock)?);
    let renderer = &cfg.pipeline.renderer;
    renderer.render(Arc::new(live), output.size(), output.path())
}

/// `hacfg settle`: waits for the folder's pending runtime work and finishes
/// it. As the worker, it first leaves the handler's session, so that
/// nothing the handler's caller does to its own session reaches it.
fn settle(cfg: &Config, store: &Store, log: &mut Log, worker: bool) -> Result<Outcome> {
    let Some(api) = cfg.pipeline.apply.runtime() else {
        bail!("settle talks to HAProxy's runtime API: set --master-socket or --stats-socket");
    };
    if worker {
        let _ = rustix::process::setsid();
    }
    let output = OutputFile::new(&cfg.output, cfg.write_mode)?;
    let waits = cfg.pipeline.waits;
    crate::metrics::counted(|c| pipeline::worker::work(api, store, &output, waits, log, c))?;
    if worker {
        crate::metrics::counted(|c| {
            pipeline::worker::watch(&cfg.pipeline, store, &output, log, c)
        })?;
    }
    Ok(Outcome::Done)
}

/// `hacfg status`: desired servers against live ones; exit 8 on drift.
fn status(cfg: &Config, store: &Store, json: bool) -> Result<Outcome> {
    let Some(api) = cfg.pipeline.apply.runtime() else {
        bail!("status reads HAProxy's runtime API: set --master-socket or --stats-socket");
    };
    let output = OutputFile::new(&cfg.output, cfg.write_mode)?;
    let rendered = desired(cfg, store, &output)?;
    let desired = crate::haproxy::config::servers(&rendered);
    let pending = pipeline::pending::Pending::load(store.dir())?;
    let rows = crate::status::compare(&desired, &api.live()?, &api.stats()?, &pending);
    let text = if json {
        serde_json::to_string_pretty(&rows)? + "\n"
    } else {
        crate::status::table(&rows)
    };
    print_stdout(&text)?;
    let drifted = rows.iter().filter(|r| !r.drift.is_empty()).count();
    Ok(match drifted {
        0 => Outcome::Done,
        n => Outcome::Drift(format!(
            "{n} server(s) differ from the nodes folder; a run with --reload repairs them"
        )),
    })
}

/// Writes generated text (completions, the man page) to stdout; a closed
/// stdout (`hacfg man | head`) is no error.
fn print_bytes(bytes: &[u8]) -> Result<Outcome> {
    print_stdout(&String::from_utf8_lossy(bytes))?;
    Ok(Outcome::Done)
}

/// `render --stdout` and `render --diff`: show, write nothing.
fn preview(cfg: &Config, store: &Store, mode: RenderMode) -> Result<Outcome> {
    let output = OutputFile::new(&cfg.output, cfg.write_mode)?;
    let rendered = desired(cfg, store, &output)?;
    if mode == RenderMode::Stdout {
        print_stdout(&rendered)?;
        return Ok(Outcome::Done);
    }
    let current = output.read()?.unwrap_or_default();
    let current = String::from_utf8_lossy(&current);
    let out = cfg.output.display().to_string();
    let diff = similar::TextDiff::from_lines(current.as_ref(), rendered.as_str());
    let rendered_name = format!("{out} (rendered)");
    print_stdout(&diff.unified_diff().header(&out, &rendered_name).to_string())?;
    let differs = current != rendered;
    Ok(match mode {
        RenderMode::Diff { exit_code: true } if differs => Outcome::Differs,
        _ => Outcome::Done,
    })
}

/// `hacfg serf`: one event's members applied to the folder as one batch,
/// then one render. Skipped members make a partial success (exit 6).
struct Event<'a> {
    /// SERF_EVENT (`member-join`, ...).
    name: &'a str,
    /// SERF_SELF_NAME: the agent's own member, left alone.
    self_name: &'a str,
    /// SERF_QUERY_NAME, for a `query` event.
    query: &'a str,
    roles: &'a [String],
    /// `--on-failed`.
    on_failed: OnFailed,
}

impl Event<'_> {
    fn run(&self, cfg: &Config, store: &Store, log: &mut Log) -> Result<Outcome> {
        // Always read stdin to its end first: Serf waits for its handler to.
        let lines = serf::read_lines(std::io::stdin().lock())?;
        if self.name == "query" {
            return Ok(self.answer(cfg));
        }
        let action = serf::action_of(self.name, self.on_failed)?;
        if action == Action::Ignore {
            log.info(&format!("{}: ignored", self.name));
            return Ok(Outcome::Done);
        }
        let output = OutputFile::new(&cfg.output, cfg.write_mode)?;
        let port = cfg.pipeline.renderer.default_port;
        let mut changes = serf::plan_event(lines, action, self.roles, self.self_name, port);
        let mut skipped = warn_planned(&changes, self.name, log);
        let modes = (action, self.on_failed);
        let staying = second_opinion(cfg, store, &output, modes, &mut changes, log)?;
        {
            let lock = store.lock::<Shared>()?;
            skipped += apply_changes(store, &lock, &changes, self.name, port, log)?;
        }
        let outcome = update(cfg, store, &output, log, None)?;
        if staying {
            pipeline::worker::spawn(&cfg.pipeline.worker, log);
        }
        Ok(partial(self.name, skipped, outcome))
    }

    /// A query: the digest for `fleet`'s, nothing for any other. Serf sends
    /// the handler's stdout and stderr back as the answer, so nothing goes
    /// to stderr here (the log file still gets its line).
    fn answer(&self, cfg: &Config) -> Outcome {
        if self.query == crate::fleet::QUERY_NAME {
            let local = crate::fleet::Local {
                nodes_dir: &cfg.nodes_dir,
                output: &cfg.output,
                api: cfg.pipeline.apply.runtime(),
                haproxy_bin: match &cfg.pipeline.check {
                    pipeline::check::Check::Haproxy(bin) => Some(bin),
                    _ => None,
                },
            };
            let _ = print_stdout(&crate::fleet::digest(&local).to_line());
        } else {
            let mut quiet = Log::new(Verbosity::Quiet, cfg.log_file.as_deref());
            quiet.info(&format!(
                "query {}: ignored",
                crate::quote::quote(self.query)
            ));
        }
        Outcome::Done
    }
}

/// `hacfg fleet`: every balancer's digest, through a Serf query, against
/// the alive members of `role`; exit 9 when one differs or did not answer.
fn fleet(ask: &crate::fleet::Ask) -> Result<Outcome> {
    let (serf_bin, rpc_addr, role) = (&ask.serf_bin, ask.rpc_addr.as_deref(), ask.role.as_str());
    let expected: Vec<String> = serf::member_list(serf_bin, rpc_addr)?
        .alive
        .into_iter()
        .filter(|m| m.role == role)
        .map(|m| m.name)
        .collect();
    let tag = crate::fleet::role_filter(role);
    let answers = serf::query(
        serf_bin,
        rpc_addr,
        crate::fleet::QUERY_NAME,
        &tag,
        ask.timeout,
    )?;
    let rows = crate::fleet::compare(&expected, &answers.responses, &answers.acks);
    if rows.is_empty() {
        bail!("fleet: no alive Serf member has role `{role}`, and none answered (--balancer-role)");
    }
    let text = if ask.json {
        serde_json::to_string_pretty(&rows)? + "\n"
    } else {
        crate::fleet::table(&rows)
    };
    print_stdout(&text)?;
    let marked = rows.iter().filter(|r| !r.marks.is_empty()).count();
    Ok(match marked {
        0 => Outcome::Done,
        n => Outcome::Disagree(format!(
            "fleet: {n} of {} balancer(s) differ, drifted or did not answer (see their rows)",
            rows.len()
        )),
    })
}

/// `--on-failed verify`: asks HAProxy, when a member is reported failed
/// now or one stays from before, and keeps the removals it agrees with.
/// An event's upserts and removals end their members' stays (in every
/// mode: a stale stay must never judge a member Serf sees alive). Returns
/// whether some member stays.
fn second_opinion(
    cfg: &Config,
    store: &Store,
    output: &OutputFile,
    (action, on_failed): (Action, OnFailed),
    changes: &mut Changes,
    log: &mut Log,
) -> Result<bool> {
    let recorded = verify::Stays::recorded(store.dir());
    if cfg.pipeline.apply.runtime().is_none() || (action != Action::Verify && !recorded) {
        return Ok(false);
    }
    let failed = match action {
        Action::Verify => std::mem::take(&mut changes.removals),
        _ => Vec::new(),
    };
    let ended = changes.names();
    let lock = store.lock::<Exclusive>()?;
    if on_failed != OnFailed::Verify {
        return verify::end(store.dir(), &ended, log).map(|()| false);
    }
    let reviewed = verify::review(&cfg.pipeline, store, &lock, output, (&failed, &ended), log);
    reviewed.record(store.dir())?;
    changes.removals.extend(reviewed.remove.iter().cloned());
    Ok(reviewed.staying())
}

/// `hacfg sync`: the folder made equal to the alive members of `roles`.
struct Sync<'a> {
    members: &'a [serf::Member],
    /// Members Serf reports failed: `on_failed` says what their nodes become.
    failed: &'a BTreeSet<String>,
    on_failed: OnFailed,
    roles: &'a [String],
    /// Print the plan on stdout (`+ node`, `- node`) instead.
    dry_run: bool,
    /// Apply even a list in which the agent sees no other member, or one
    /// that would remove more than half of the nodes.
    allow_empty: bool,
}

impl Sync<'_> {
    fn run(&self, cfg: &Config, store: &Store, log: &mut Log) -> Result<Outcome> {
        // A freshly started, lonely or partitioned agent sees only itself:
        // that is no evidence that the pool is empty.
        if self.members.len() <= 1 && !self.allow_empty {
            return Err(Failure::Alone {
                members: self.members.len(),
            }
            .into());
        }
        let port = cfg.pipeline.renderer.default_port;
        let members = self.members.iter().cloned().map(Ok);
        let wanted = serf::batch(members, self.roles, "", port);
        let mut skipped = warn_planned(&wanted, "sync", log);
        if self.dry_run {
            let current = store.load_all(&store.lock::<Shared>()?)?;
            let mut changes = serf::plan_sync(&current, wanted);
            let asked = self.failed_removals(&mut changes);
            let mut text = String::new();
            for node in &changes.upserts {
                let _ = writeln!(text, "+ {}", describe(node, port));
            }
            for name in &changes.removals {
                let _ = writeln!(text, "- `{name}`");
            }
            for name in &asked {
                let _ = writeln!(
                    text,
                    "? `{name}` (failed: goes if HAProxy's checks see it DOWN)"
                );
            }
            print_stdout(&text)?;
            // The worst case: every failed member goes.
            changes.removals.extend(asked);
            self.guard(current.len(), &changes)?;
            return Ok(partial("sync", skipped, Outcome::Done));
        }
        let output = OutputFile::new(&cfg.output, cfg.write_mode)?;
        // One exclusive lock from reading the folder to applying the render:
        // nothing changes the folder between the plan and its render.
        let lock = store.lock::<Exclusive>()?;
        let current = store.load_all(&lock)?;
        let mut changes = serf::plan_sync(&current, wanted);
        let failed = self.failed_removals(&mut changes);
        let reviewed = (self.on_failed == OnFailed::Verify).then(|| {
            let ended = changes.names();
            verify::review(&cfg.pipeline, store, &lock, &output, (&failed, &ended), log)
        });
        if let Some(reviewed) = &reviewed {
            changes.removals.extend(reviewed.remove.iter().cloned());
            changes.removals.sort();
            changes.removals.dedup();
        }
        // A refused plan changes nothing, the record of stays included.
        self.guard(current.len(), &changes)?;
        if let Some(reviewed) = &reviewed {
            reviewed.record(store.dir())?;
        }
        skipped += apply_changes(store, &lock, &changes, "sync", port, log)?;
        let outcome = update_under(cfg, store, lock, &output, log, None)?;
        if reviewed.is_some_and(|r| r.staying()) {
            pipeline::worker::spawn(&cfg.pipeline.worker, log);
        }
        Ok(partial("sync", skipped, outcome))
    }

    /// The removals of failed members, as `--on-failed` says: `remove`
    /// leaves them; `keep` drops them; `verify` takes them out of
    /// `changes` and returns them, for HAProxy to judge.
    fn failed_removals(&self, changes: &mut Changes) -> Vec<String> {
        let is_failed = |name: &String| self.failed.contains(name);
        match self.on_failed {
            OnFailed::Remove => Vec::new(),
            OnFailed::Keep => {
                changes.removals.retain(|name| !is_failed(name));
                Vec::new()
            }
            OnFailed::Verify => {
                let (failed, gone) = std::mem::take(&mut changes.removals)
                    .into_iter()
                    .partition(is_failed);
                changes.removals = gone;
                failed
            }
        }
    }

    /// A partitioned agent that still sees a few members is thin evidence
    /// too: a plan that removes more than half of the `current` nodes
    /// changes nothing (exit 5) unless `--allow-empty`.
    fn guard(&self, current: usize, changes: &Changes) -> Result<()> {
        let removals = changes.removals.len();
        if self.allow_empty || !serf::shrinks_too_much(current, removals) {
            return Ok(());
        }
        Err(Failure::Shrinks { removals, current }.into())
    }
}

/// Warns of the tags `changes` dropped and the members it skipped (`who`:
/// the event, or `sync`); returns how many were skipped.
fn warn_planned(changes: &Changes, who: &str, log: &mut Log) -> usize {
    for note in &changes.notes {
        log.warn(&format!("{who}: {note}"));
    }
    for reason in &changes.skipped {
        log.warn(&format!("{who}: skipped: {reason}"));
    }
    changes.skipped.len()
}

/// Writes and removes the node files `changes` asks for, one line each. A
/// file that cannot be written or removed is a warning naming the node and
/// the file, and counts as skipped: the rest is applied all the same.
/// Returns how many were skipped; fails only when the batch as a whole
/// could not be made durable.
fn apply_changes<M: Mode>(
    store: &Store,
    lock: &Lock<M>,
    changes: &Changes,
    who: &str,
    default_port: u16,
    log: &mut Log,
) -> Result<usize> {
    let written = store.write_all(lock, &changes.upserts)?;
    let written = changes.upserts.iter().zip(written).map(|(node, result)| {
        let verbs = ["added/updated node", "already up to date:"];
        (describe(node, default_port), result, verbs)
    });
    let removed = store.remove_all(lock, &changes.removals)?;
    let removed = changes.removals.iter().zip(removed).map(|(name, result)| {
        let verbs = ["removed node", "was not there:"];
        (format!("`{name}`"), result, verbs)
    });
    let mut skipped = 0;
    for (label, result, [done, unchanged]) in written.chain(removed) {
        match result {
            Ok(true) => log.info(&format!("{who}: {done} {label}")),
            Ok(false) => log.info(&format!("{who}: {unchanged} {label}")),
            Err(e) => {
                log.warn(&format!("{who}: skipped {label}: {e:#}"));
                skipped += 1;
            }
        }
    }
    Ok(skipped)
}

/// A run that skipped members is a partial success (exit 6), however the
/// rest of it went.
fn partial(who: &str, skipped: usize, outcome: Outcome) -> Outcome {
    match skipped {
        0 => outcome,
        n => Outcome::Skipped(format!("{who}: {n} member(s) skipped, the rest applied")),
    }
}

/// Renders and applies under the exclusive lock. Folder changes are made
/// under the shared lock before it, so when a burst of calls queues here,
/// the first to get the lock renders everyone's nodes and the rest find the
/// live config already equal to their render: few writes, few reloads.
fn update(
    cfg: &Config,
    store: &Store,
    output: &OutputFile,
    log: &mut Log,
    own: Option<&str>,
) -> Result<Outcome> {
    let lock = store.lock::<Exclusive>()?;
    update_under(cfg, store, lock, output, log, own)
}

/// `update` under a lock already taken; it is let go before the work
/// after the render (the worker's start, which must not wait for it).
fn update_under(
    cfg: &Config,
    store: &Store,
    lock: Lock<Exclusive>,
    output: &OutputFile,
    log: &mut Log,
    own: Option<&str>,
) -> Result<Outcome> {
    let applied =
        crate::metrics::counted(|c| pipeline::update(&cfg.pipeline, store, &lock, output, log, c))?;
    drop(lock);
    pipeline::after(&cfg.pipeline, &applied, log);
    report(&applied, own, log)
}

/// How a render that held nodes back ends: the `add` of a node HAProxy
/// refused fails with HAProxy's words (exit 3, the rest went live); a run
/// that found other refused nodes is a partial success (exit 6); nodes held
/// back before are one warning line.
fn report(applied: &Applied, own: Option<&str>, log: &mut Log) -> Result<Outcome> {
    let reason = |name: &str| {
        applied
            .held
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, r)| r.as_str())
    };
    if let Some(own) = own.filter(|o| applied.newly.iter().any(|n| n == o)) {
        return Err(Failure::NodeRefused {
            name: own.to_string(),
            reason: reason(own).to_string(),
        }
        .into());
    }
    for name in &applied.newly {
        log.warn(&format!(
            "HAProxy refused node `{name}`; it is held back and the rest went live:\n{}",
            reason(name)
        ));
    }
    let earlier: Vec<String> = applied
        .held
        .iter()
        .filter(|(n, _)| !applied.newly.contains(n) && Some(n.as_str()) != own)
        .map(|(n, _)| format!("`{n}`"))
        .collect();
    if !earlier.is_empty() {
        log.warn(&format!(
            "{} node(s) still held back, refused by HAProxy before: {} (see `hacfg list`)",
            earlier.len(),
            earlier.join(", ")
        ));
    }
    Ok(match applied.newly.len() {
        0 => Outcome::Done,
        n => Outcome::Skipped(format!(
            "{n} node(s) refused by HAProxy held back, the rest applied"
        )),
    })
}

/// `name address:port` for messages.
fn describe(node: &Node, default_port: u16) -> String {
    format!("`{}` {}", node.name, node.endpoint(default_port))
}

/// `hacfg list`: an aligned table, or a JSON array of what templates see.
/// A node HAProxy refused shows as `rejected` with HAProxy's words (JSON:
/// a `rejected` field).
fn list_text(nodes: &[Node], held: &HeldSet, default_port: u16, json: bool) -> Result<String> {
    let reason = |n: &Node| held.get(n).map(|h| h.reason.as_str());
    if json {
        let views = render::views(Arc::new(nodes.to_vec()), default_port);
        let mut list = Vec::with_capacity(views.len());
        for (view, node) in views.iter().zip(nodes) {
            let mut value = serde_json::to_value(view)?;
            if let (Some(r), Some(map)) = (reason(node), value.as_object_mut()) {
                map.insert("rejected".into(), r.into());
            }
            list.push(value);
        }
        return Ok(serde_json::to_string_pretty(&list)? + "\n");
    }
    let rows: Vec<[String; 6]> = nodes
        .iter()
        .map(|node| {
            let tags: Vec<String> = node.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let status = match reason(node) {
                Some(r) => format!("rejected: {}", r.lines().next().unwrap_or_default()),
                None => "ok".to_string(),
            };
            [
                node.name.clone(),
                node.address.clone(),
                node.port_or(default_port).to_string(),
                node.weight_or_default().to_string(),
                tags.join(","),
                status,
            ]
        })
        .collect();
    let header = ["NAME", "ADDRESS", "PORT", "WEIGHT", "TAGS", "STATUS"];
    Ok(crate::log::table(header, &rows))
}
