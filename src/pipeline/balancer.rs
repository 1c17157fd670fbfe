//! The one door into the pipeline: a [`Balancer`] is built once per run
//! from the settings, and each command asks it one thing. It alone takes
//! the folder's lock and opens the output, so the rules of when each lock
//! is held live here: folder changes under the shared lock, the render
//! under the exclusive one, and the worker started once it is let go.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use super::quarantine::HeldSet;
use super::records::lock::{self, Job};
use super::verify::{self, Reviewed, Shown};
use super::{Applied, Counts, Pending, Settings, check, reload, worker};
use crate::exit::{Failure, Outcome};
use crate::haproxy::RuntimeApi;
use crate::haproxy::config::Server;
use crate::haproxy::stat::Stat;
use crate::haproxy::state::Live;
use crate::haproxy::target::Target;
use crate::lock::Holder;
use crate::log::Log;
use crate::node::Node;
use crate::output::{OutputFile, WriteMode};
use crate::store::{Exclusive, Loaded, Lock, Mode, Shared, Store, Unreadable};

/// One balancer: its settings, nodes folder, output and log.
pub struct Balancer<'a> {
    place: Place<'a>,
    log: Log,
    /// What this run did, for the command to record (`metrics`).
    counts: Counts,
}

/// Where the balancer's files are, and how it applies them.
struct Place<'a> {
    settings: &'a Settings,
    store: Store,
    output: &'a Path,
    write_mode: WriteMode,
}

impl Place<'_> {
    /// The one place the output is opened.
    fn output(&self) -> Result<OutputFile> {
        OutputFile::new(self.output, self.write_mode)
    }

    /// The config as the folder asks for it now (held-back nodes left
    /// out), written nowhere.
    /// Also the files hacfg cannot read, which it leaves out.
    fn desired(&self, output: &OutputFile) -> Result<(String, Vec<Unreadable>)> {
        let lock = self.store.lock::<Shared>()?;
        let mut held = HeldSet::load(self.store.dir());
        let loaded = self.store.load(&lock)?;
        let (live, _) = held.split(loaded.nodes);
        let text = (self.settings.renderer).render(Arc::new(live), output.size(), output.path())?;
        Ok((text, loaded.unreadable))
    }
}

/// The nodes folder under its lock (`M`), as a change sees it.
pub struct Folder<'a, M: Mode> {
    place: &'a Place<'a>,
    lock: &'a Lock<M>,
}

impl<M: Mode> Folder<'_, M> {
    /// The nodes hacfg can read (a file it cannot is held back, never
    /// fatal: see `Store::load`).
    pub fn load_all(&self) -> Result<Vec<Node>> {
        Ok(self.place.store.load(self.lock)?.nodes)
    }

    /// Writes `node`'s file; whether it changed.
    pub fn write(&self, node: &Node) -> Result<bool> {
        self.place.store.write(self.lock, node)
    }

    /// Removes `name`'s file; whether it was there.
    pub fn remove(&self, name: &str) -> Result<bool> {
        self.place.store.remove(self.lock, name)
    }

    /// Writes a batch, made durable as one; one result per node.
    pub fn write_all(&self, nodes: &[Node]) -> Result<Vec<Result<bool>>> {
        self.place.store.write_all(self.lock, nodes)
    }

    /// Removes a batch, made durable as one; one result per name.
    pub fn remove_all(&self, names: &[String]) -> Result<Vec<Result<bool>>> {
        self.place.store.remove_all(self.lock, names)
    }

    pub fn dir(&self) -> &Path {
        self.place.store.dir()
    }

    /// `name address:port` for messages.
    pub fn describe(&self, node: &Node) -> String {
        describe(node, self.place.settings.renderer.default_port)
    }
}

impl Folder<'_, Exclusive> {
    /// `--on-failed verify`: the `failed` members and the stays that end
    /// (`ended`), judged by HAProxy (see `verify::review`); writes nothing.
    pub fn review(&self, failed: &[String], ended: &[String], log: &mut Log) -> Result<Reviewed> {
        let output = self.place.output()?;
        let (s, store) = (self.place.settings, &self.place.store);
        let judged = (failed, ended);
        Ok(verify::review(s, store, self.lock, &output, judged, log))
    }

    /// Writes the stays a review leaves, once the run goes ahead.
    pub fn record(&self, reviewed: &Reviewed) -> Result<()> {
        reviewed.record(self.dir())
    }

    /// Ends the stays of `names` without asking HAProxy; how many are left.
    pub fn end_stays(&self, names: &[String]) -> Result<usize> {
        verify::end(self.dir(), names)
    }
}

/// What follows a change of the folder.
#[derive(Debug, Clone, Copy)]
pub enum Then<'a> {
    /// Nothing (`--no-render`).
    Stop,
    /// A render; it fails (exit 3) if HAProxy refuses `own`, the node this
    /// run added. `dead`: the nodes of failed members the change removed,
    /// whose servers are drained at once (never kept serving until a
    /// replacement is UP).
    Render {
        own: Option<&'a str>,
        dead: &'a [String],
    },
}

/// What `status` compares: the servers the folder asks for, and HAProxy's.
pub struct Observed {
    pub desired: Vec<Server>,
    pub live: Vec<Live>,
    pub stats: BTreeMap<Target, Stat>,
    pub pending: Pending,
    /// A worker (or `hacfg settle`) is at work on the pending work.
    pub worker: bool,
    /// Node files hacfg cannot read (held back, so in no server).
    pub unreadable: Vec<Unreadable>,
    /// The servers of the failed members that stay (`--on-failed verify`).
    pub stays: Vec<(Target, Shown)>,
}

/// What `render --stdout` and `--diff` show: the render, and the output
/// as it is (empty when there is none).
pub struct Preview {
    pub rendered: String,
    pub current: String,
}

impl<'a> Balancer<'a> {
    pub fn new(
        settings: &'a Settings,
        store: Store,
        (output, write_mode): (&'a Path, WriteMode),
        log: Log,
    ) -> Balancer<'a> {
        let place = Place {
            settings,
            store,
            output,
            write_mode,
        };
        Balancer {
            place,
            log,
            counts: Counts::default(),
        }
    }

    pub fn log(&mut self) -> &mut Log {
        &mut self.log
    }

    /// What this run did to HAProxy so far (even one that failed later).
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    pub fn default_port(&self) -> u16 {
        self.place.settings.renderer.default_port
    }

    /// `name address:port` for messages.
    pub fn describe(&self, node: &Node) -> String {
        describe(node, self.default_port())
    }

    pub fn nodes_dir(&self) -> &Path {
        self.place.store.dir()
    }

    /// The output's path as given (a link not followed).
    pub fn output_path(&self) -> &Path {
        self.place.output
    }

    /// The runtime API, if one is set.
    pub fn runtime(&self) -> Option<&RuntimeApi> {
        self.place.settings.apply.runtime()
    }

    /// The `haproxy` that checks candidates, if one does.
    pub fn haproxy_bin(&self) -> Option<&Path> {
        match &self.place.settings.check {
            check::Check::Haproxy(bin) => Some(bin),
            _ => None,
        }
    }

    /// The nodes HAProxy refused, held back (read without the lock).
    pub fn held(&self) -> HeldSet {
        HeldSet::load(self.place.store.dir())
    }

    /// The runtime work waiting for HAProxy (read without the lock).
    /// A damaged record is an error naming it: `status` must not call a
    /// folder settled when it cannot read what hacfg left pending.
    pub fn pending(&self) -> Result<Pending> {
        super::records::read::<Pending>(self.place.store.dir()).context(
            "unable to tell hacfg's pending work (the next run that renders, `hacfg render` or \
             an event, moves the damaged record aside and goes on from HAProxy's live state)",
        )
    }

    /// Whether `--on-failed verify` left stays to review.
    pub fn stays_recorded(&self) -> bool {
        verify::Stays::recorded(self.place.store.dir())
    }

    /// Checks that the output can be written, before anything is.
    pub fn check_output(&self) -> Result<()> {
        self.place.output().map(drop)
    }

    /// What `hacfg doctor` reads of the folder, under the shared lock (and
    /// its wait): the nodes, the files that are no node, the stray ones.
    /// Under the shared lock a load writes nothing.
    pub fn survey(&self) -> Result<Loaded> {
        let lock = self.place.store.lock::<Shared>()?;
        self.place.store.load(&lock)
    }

    /// Who holds a worker's lock file now (`hacfg doctor`), as
    /// `/proc/locks` tells: the lock itself is not taken, so a worker
    /// starting at that moment is never turned away. `None`: no lock file.
    pub fn worker_holders(&self, job: Job) -> Result<Option<Vec<Holder>>> {
        lock::holders(self.place.store.dir(), job)
    }

    /// Runs `f` on the folder under the shared lock; renders nothing.
    pub fn with_shared<T>(
        &mut self,
        f: impl FnOnce(&Folder<Shared>, &mut Log) -> Result<T>,
    ) -> Result<T> {
        self.under_lock(f)
    }

    /// Runs `f` on the folder under the exclusive lock; renders nothing.
    pub fn with_exclusive<T>(
        &mut self,
        f: impl FnOnce(&Folder<Exclusive>, &mut Log) -> Result<T>,
    ) -> Result<T> {
        self.under_lock(f)
    }

    fn under_lock<M: Mode, T>(
        &mut self,
        f: impl FnOnce(&Folder<M>, &mut Log) -> Result<T>,
    ) -> Result<T> {
        let lock = self.place.store.lock::<M>()?;
        let folder = Folder {
            place: &self.place,
            lock: &lock,
        };
        f(&folder, &mut self.log)
    }

    /// Changes the folder under the shared lock (`edit`; its error changes
    /// nothing more), then, as `then` says, renders and applies under the
    /// exclusive one. Both folders are checked before anything is written.
    pub fn change<T>(
        &mut self,
        then: Then,
        edit: impl FnOnce(&Folder<Shared>, &mut Log) -> Result<T>,
    ) -> Result<(T, Outcome)> {
        let output = match then {
            Then::Render { own, dead } => Some((self.place.output()?, own, dead)),
            Then::Stop => None,
        };
        let done = self.under_lock(edit)?;
        let outcome = match output {
            Some((output, own, dead)) => self.update(&output, own, dead)?,
            None => Outcome::Done,
        };
        Ok((done, outcome))
    }

    /// Changes the folder and applies it under one exclusive lock (`sync`:
    /// nothing changes the folder between the plan `edit` makes from it
    /// and its render). An error of `edit` changes nothing more.
    /// `dead`: members known dead (Serf's failed ones), whose servers are
    /// never kept serving while a replacement waits (make before break).
    pub fn change_whole<T>(
        &mut self,
        dead: &[String],
        edit: impl FnOnce(&Folder<Exclusive>, &mut Log) -> Result<T>,
    ) -> Result<(T, Outcome)> {
        let output = self.place.output()?;
        let lock = self.place.store.lock::<Exclusive>()?;
        let folder = Folder {
            place: &self.place,
            lock: &lock,
        };
        let done = edit(&folder, &mut self.log)?;
        let s = self.place.settings;
        let outcome = self.update_under(s, lock, &output, (None, dead))?;
        Ok((done, outcome))
    }

    /// `hacfg render`: the folder as it is, rendered and applied.
    pub fn render(&mut self) -> Result<Outcome> {
        let output = self.place.output()?;
        self.update(&output, None, &[])
    }

    /// The nodes and those held back (`hacfg list`).
    /// Stray files are one warning.
    pub fn list(&mut self) -> Result<(Loaded, HeldSet)> {
        let loaded = self.with_shared(|folder, _| folder.place.store.load(folder.lock))?;
        if let Some(stray) = loaded.stray_warning(self.nodes_dir()) {
            self.log.warn(&stray);
        }
        Ok((loaded, self.held()))
    }

    /// `render --stdout` and `--diff`: the render, written nowhere.
    pub fn preview(&mut self) -> Result<Preview> {
        let output = self.place.output()?;
        let (rendered, unreadable) = self.place.desired(&output)?;
        for file in &unreadable {
            self.log.warn(&format!("{file}: held back"));
        }
        let current = output.read()?.unwrap_or_default();
        let current = String::from_utf8_lossy(&current).into_owned();
        Ok(Preview { rendered, current })
    }

    /// `hacfg status`: desired servers and live ones, side by side.
    pub fn status(&self) -> Result<Observed> {
        let Some(api) = self.runtime() else {
            bail!("status reads HAProxy's runtime API: set --master-socket or --stats-socket");
        };
        let output = self.place.output()?;
        let (rendered, unreadable) = self.place.desired(&output)?;
        let desired = crate::haproxy::config::servers(&rendered);
        let pending = self.pending()?;
        let staying = self.stays_served(&desired)?;
        let (live, stats) = (api.live()?, api.stats()?);
        let worker = pending.is_waiting() && worker_at_work(self.place.store.dir());
        // Read again when no worker runs: one may have just finished.
        let pending = if worker { pending } else { self.pending()? };
        Ok(Observed {
            desired,
            live,
            stats,
            pending,
            worker,
            unreadable,
            stays: staying,
        })
    }

    /// The failed members that stay (`--on-failed verify`), by name (read
    /// without the lock). A damaged record is an error naming it, as for
    /// `pending`.
    pub fn stays(&self) -> Result<BTreeMap<String, Shown>> {
        let stays = super::records::read::<verify::Stays>(self.place.store.dir())?;
        Ok(stays.shown(self.place.settings.waits.first_check, super::now_ms()))
    }

    /// The stays' servers among `desired`, found as `--on-failed verify`
    /// finds them (see `verify::servers_of`).
    fn stays_served(&self, desired: &[Server]) -> Result<Vec<(Target, Shown)>> {
        let mut served = Vec::new();
        for (name, shown) in self.stays()? {
            let Ok(Some(node)) = self.place.store.read(&name) else {
                continue; // no node file: the next review forgets the stay
            };
            for s in verify::servers_of(&node, self.default_port(), desired) {
                served.push((Target::new(&s.backend, &s.name), shown));
            }
        }
        Ok(served)
    }

    /// Notes how many failed members stay, for the metrics' gauge.
    pub fn count_stays(&mut self, stays: usize) {
        self.counts.stays = Some(stays);
    }

    /// `hacfg reload`: the live state saved, then a reload of the config
    /// as it is, under the exclusive lock.
    pub fn reload(&mut self) -> Result<Outcome> {
        let s = self.place.settings;
        let (api, settings) = (s.apply.runtime(), s.apply.reload());
        crate::haproxy::reload::probe_sockets(api, settings).map_err(Failure::Unusable)?;
        let _lock = self.place.store.lock::<Exclusive>()?;
        if let Some(current) = self.place.output()?.read()? {
            let text = String::from_utf8_lossy(&current);
            let api = crate::haproxy::reload::state_api(api, settings);
            let dir = self.place.store.dir();
            reload::prepare_state(api.as_ref(), dir, &text, &mut self.log)?;
        }
        if let Some(settings) = settings {
            reload::reload_or_restore(settings, None, &mut self.log, &mut self.counts)?;
        }
        Ok(Outcome::Done)
    }

    /// `hacfg settle`: waits for the folder's pending runtime work and
    /// finishes it. As the worker, it first leaves the handler's session,
    /// so that nothing the handler's caller does to its own session
    /// reaches it.
    pub fn settle(&mut self, worker: bool) -> Result<Outcome> {
        let s = self.place.settings;
        let Some(api) = s.apply.runtime() else {
            bail!("settle talks to HAProxy's runtime API: set --master-socket or --stats-socket");
        };
        if worker {
            let _ = rustix::process::setsid();
        }
        let output = self.place.output()?;
        let store = &self.place.store;
        if !worker && let Some(h) = lock::holder(store.dir(), Job::Settle) {
            self.log.info(&format!(
                "settle: worker {h} holds the pending work of `{}` and finishes it",
                store.dir().display()
            ));
            return Ok(Outcome::Done);
        }
        let counts = &mut self.counts;
        worker::work(api, store, &output, s.waits, &mut self.log, counts)?;
        if worker {
            worker::watch(s, store, &output, &mut self.log, counts)?;
        }
        Ok(Outcome::Done)
    }

    /// `hacfg init`: a new balancer's folders, then its first config. The
    /// only command that creates a missing folder: a mistyped path
    /// elsewhere is an error, never a fresh empty pool.
    pub fn init(&mut self) -> Result<Outcome> {
        let dir = crate::atomic::parent_dir(self.place.output);
        if dir.is_dir() {
            let output = self.place.output()?;
            super::refuse_emptier(self.place.settings, &self.place.store, &output)?;
        }
        let store = &self.place.store;
        if !store.dir().is_dir() {
            store.create()?;
            let shown = store.dir().display();
            self.log.info(&format!("created nodes folder `{shown}`"));
        }
        if !dir.is_dir() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("unable to create output folder `{}`", dir.display()))?;
            self.log
                .info(&format!("created output folder `{}`", dir.display()));
        }
        let output = self.place.output()?;
        // Before HAProxy runs (a boot script, the README's master-worker
        // snippet), there is nothing to reload: the first config is written.
        let settings = super::for_init(self.place.settings, &output, &mut self.log);
        let lock = self.place.store.lock::<Exclusive>()?;
        let (store, log) = (&self.place.store, &mut self.log);
        let at = (&lock, &output);
        let updated = super::update(&settings, store, at, &[], log, &mut self.counts);
        let applied = self.after_failure(&settings, updated)?;
        if let Some(text) = output.read()? {
            reload::first_state(&String::from_utf8_lossy(&text), &mut self.log);
        }
        drop(lock);
        super::after(&settings, &applied, &mut self.log);
        report(&applied, None, &mut self.log)
    }

    /// Starts the worker that finishes what waits for HAProxy (call it
    /// once the lock is let go: `change` and `change_whole` have).
    pub fn start_worker(&mut self) {
        worker::spawn(&self.place.settings.worker, &mut self.log);
    }

    /// Renders and applies under the exclusive lock. Folder changes are
    /// made under the shared lock before it, so when a burst of calls
    /// queues here, the first to get the lock renders everyone's nodes and
    /// the rest find the live config already equal to their render: few
    /// writes, few reloads.
    fn update(
        &mut self,
        output: &OutputFile,
        own: Option<&str>,
        dead: &[String],
    ) -> Result<Outcome> {
        let lock = self.place.store.lock::<Exclusive>()?;
        self.update_under(self.place.settings, lock, output, (own, dead))
    }

    /// `update` under a lock already taken; it is let go before the work
    /// after the render (the worker's start, which must not wait for it).
    fn update_under(
        &mut self,
        s: &Settings,
        lock: Lock<Exclusive>,
        output: &OutputFile,
        (own, dead): (Option<&str>, &[String]),
    ) -> Result<Outcome> {
        let (store, log) = (&self.place.store, &mut self.log);
        let at = (&lock, output);
        let updated = super::update(s, store, at, dead, log, &mut self.counts);
        drop(lock);
        let applied = self.after_failure(s, updated)?;
        super::after(s, &applied, &mut self.log);
        report(&applied, own, &mut self.log)
    }

    /// A run that HAProxy's socket failed part-way (no answer, the budget
    /// spent) may have recorded drains before it failed (they are recorded
    /// before they run): the worker still finishes them. A change HAProxy
    /// refused was undone, and changes nothing more.
    fn after_failure(&mut self, s: &Settings, updated: Result<Applied>) -> Result<Applied> {
        let unanswered = updated
            .as_ref()
            .is_err_and(|e| crate::exit::code_of(e) == crate::exit::Code::Error);
        if unanswered
            && s.apply.runtime().is_some()
            && Pending::load(self.place.store.dir()).is_waiting()
        {
            worker::spawn(&s.worker, &mut self.log);
        }
        updated
    }
}

/// Whether a worker holds the folder's pending work. One just started by
/// the run before may not have taken its lock yet: it is given a moment.
fn worker_at_work(dir: &Path) -> bool {
    let start = std::time::Instant::now();
    loop {
        if lock::holder(dir, Job::Settle).is_some() {
            return true;
        }
        if start.elapsed() > WORKER_START {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// How long `status` waits for a worker just started to take its lock.
const WORKER_START: std::time::Duration = std::time::Duration::from_secs(1);

/// `name address:port` for messages.
fn describe(node: &Node, default_port: u16) -> String {
    format!("`{}` {}", node.name, node.endpoint(default_port))
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
    warn_held_before(applied, own, log);
    for file in &applied.unreadable {
        log.warn(&format!(
            "{file}: held back, the rest went live (fix or remove the file: the next run \
             brings the node in)"
        ));
    }
    Ok(match (applied.newly.len(), applied.unreadable.len()) {
        (0, 0) => Outcome::Done,
        (n, 0) => Outcome::Skipped(format!(
            "{n} node(s) refused by HAProxy held back, the rest applied"
        )),
        (0, m) => Outcome::Skipped(format!(
            "{m} node file(s) hacfg cannot read held back, the rest applied"
        )),
        (n, m) => Outcome::Skipped(format!(
            "{n} node(s) refused by HAProxy and {m} node file(s) hacfg cannot read held back, \
             the rest applied"
        )),
    })
}

/// One warning line for the nodes held back by earlier runs.
fn warn_held_before(applied: &Applied, own: Option<&str>, log: &mut Log) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use crate::cli::Config;

    /// A balancer's settings over `dir`: `nodes/` (created), the output
    /// at `output` (relative to `dir`), no check and no reload.
    fn config(dir: &Path, output: &str) -> Config {
        let nodes = dir.join("nodes");
        std::fs::create_dir_all(&nodes).unwrap();
        let (nodes, output) = (nodes.to_str().unwrap(), dir.join(output));
        let args = ["hacfg", "--nodes-dir", nodes, "--output"];
        let args = [
            &args[..],
            &[output.to_str().unwrap(), "--no-check", "render"],
        ]
        .concat();
        Config::from_cli(<Cli as clap::Parser>::try_parse_from(args).unwrap()).unwrap()
    }

    fn door(cfg: &Config) -> Balancer<'_> {
        let log = Log::new(crate::log::Verbosity::Quiet, None);
        let output = (cfg.output.as_path(), cfg.write_mode);
        Balancer::new(&cfg.pipeline, Store::new(&cfg.nodes_dir), output, log)
    }

    fn node(name: &str) -> Node {
        Node::named(name).at("10.0.0.1").port(80).weight(1)
    }

    fn names(b: &mut Balancer) -> Vec<String> {
        let nodes = b.list().unwrap().0;
        nodes.nodes.into_iter().map(|n| n.name).collect()
    }

    #[test]
    fn a_change_that_renders_checks_the_output_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), "missing/haproxy.cfg");
        let b = &mut door(&cfg);
        let render = Then::Render {
            own: None,
            dead: &[],
        };
        let err = b.change(render, |folder, _| folder.write(&node("a")));
        let err = format!("{:#}", err.unwrap_err());
        assert!(err.contains("output folder"), "{err}");
        assert!(names(b).is_empty());
        // Without a render the output is not needed.
        let (written, outcome) = b.change(Then::Stop, |f, _| f.write(&node("a"))).unwrap();
        assert!(written && outcome == Outcome::Done);
        assert_eq!(names(b), ["a"]);
    }

    #[test]
    fn a_change_renders_the_folder_and_a_failed_edit_renders_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), "haproxy.cfg");
        let b = &mut door(&cfg);
        let failed = b.change_whole(&[], |folder, _| -> Result<()> {
            folder.write(&node("a"))?;
            anyhow::bail!("refused")
        });
        assert!(failed.is_err());
        assert!(!cfg.output.exists(), "a refused plan renders nothing");
        let render = Then::Render {
            own: None,
            dead: &[],
        };
        let ((), outcome) = b.change(render, |_, _| Ok(())).unwrap();
        assert_eq!(outcome, Outcome::Done);
        let text = std::fs::read_to_string(&cfg.output).unwrap();
        assert!(text.contains("10.0.0.1:80"), "{text}");
        let ((), _) = b
            .change_whole(&[], |folder, _| folder.remove("a").map(drop))
            .unwrap();
        let text = std::fs::read_to_string(&cfg.output).unwrap();
        assert!(!text.contains("10.0.0.1:80"), "{text}");
        assert_eq!(b.preview().unwrap().current, text);
    }
}
