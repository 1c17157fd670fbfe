//! The detached worker that finishes pending runtime work with no further
//! hacfg call: `hacfg settle --worker`, started by the run that left work
//! pending, at most one per nodes folder. It reads HAProxy without the
//! folder lock and takes it only to act on what it read (see [`Read`]), and
//! exits once nothing waits.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::Counts;
use super::Settings;
use super::pending::{Entry, Pending, Why};
use super::records::lock::{Job, WorkerLock};
use super::records::{self, Kind, now_ms};
use super::settle::{self, Passed, Waits};
use super::verify::{self, Stays};
use crate::haproxy::stat::Stat;
use crate::haproxy::state::Live;
use crate::haproxy::{Address, Runtime, Target, config};
use crate::log::Log;
use crate::output::OutputFile;
use crate::store::{Exclusive, Lock, Store};

/// How often the worker reads HAProxy's `show stat` while it waits.
const POLL: Duration = Duration::from_millis(100);
/// How long HAProxy may fail to answer (a reload makes the master socket
/// refuse for a moment) before the worker leaves the rest to later runs.
const UNANSWERED: Duration = Duration::from_secs(10);
/// Who takes over when the worker gives up, for its last line.
const SETTLE_TAKEN_OVER: (&str, &str) = ("settle", "the next hacfg run finishes the pending work");
const WATCH_TAKEN_OVER: (&str, &str) = (
    "watch",
    "later events and `hacfg sync` review the failed members that stay",
);
/// How often the watch reads HAProxy's servers.
const WATCH_POLL: Duration = Duration::from_millis(250);

/// How to start the worker: this binary, with the settings it needs.
#[derive(Debug, Clone)]
pub struct Worker {
    pub exe: PathBuf,
    pub args: Vec<OsString>,
    /// `HACFG_*` settings that may hold secrets: never on a command line.
    pub env: Vec<(OsString, OsString)>,
}

/// Waits for the folder's pending work and finishes it; returns when
/// nothing waits any more (or another worker already runs).
///
/// The worker never holds the folder lock across a read of HAProxy: it
/// reads what a pass needs ([`Read`]) without the lock, takes the lock,
/// and acts only if the record and the config file are still as it read
/// them; else it reads again. Handlers therefore never wait for a slow
/// `show stat` of the worker's.
pub fn work(
    api: &dyn Runtime,
    store: &Store,
    output: &OutputFile,
    waits: Waits,
    log: &mut Log,
    counts: &mut Counts,
) -> Result<()> {
    let Some(worker_lock) = WorkerLock::try_take(store, Job::Settle, log)? else {
        log.info("settle: another worker holds the pending work and finishes it");
        return Ok(());
    };
    let mut failing: Option<Instant> = None;
    loop {
        // Each poll is a run of its own: a budget of its own, and a socket
        // that ran late is asked again.
        api.begin_run();
        let left = match poll(api, store, output, waits, log) {
            Ok(Polled::Passed(lock, passed, live)) => {
                failing = None;
                counts.add(&passed.counts);
                counts.servers_live = live.or(counts.servers_live);
                Some((lock, passed.pending))
            }
            Err(e) if give_up(&e, &mut failing, SETTLE_TAKEN_OVER, log) => return Ok(()),
            // Nothing waits any more: what is left is said, and the worker ends.
            Err(_) if !Pending::load(store.dir()).is_waiting() => {
                let lock = store.lock::<Exclusive>()?;
                Some((lock, Pending::load(store.dir())))
            }
            Ok(Polled::Wait) => {
                failing = None; // HAProxy answered
                None
            }
            Err(_) => None,
        };
        if let Some((lock, left)) = left
            && !left.is_waiting()
        {
            exit(worker_lock, lock, &left, log);
            return Ok(());
        }
        thread::sleep(POLL);
    }
}

/// What one poll of the worker came to.
enum Polled {
    /// Nothing is due yet, or a run came between the read and the lock.
    Wait,
    /// Under the lock: the pass made (none when nothing was pending), and
    /// how many servers HAProxy ran.
    Passed(Lock<Exclusive>, Passed, Option<usize>),
}

/// Reads HAProxy without the lock; makes a pass under it if something is
/// due and no run came between.
fn poll(
    api: &dyn Runtime,
    store: &Store,
    output: &OutputFile,
    waits: Waits,
    log: &mut Log,
) -> Result<Polled> {
    let dir = store.dir();
    // The bytes the read is later held against come first: a record saved
    // between them and this parse shows as a change, never as a match.
    let record = record_bytes(dir);
    let pending = Pending::load(dir);
    if pending.is_empty() {
        // Read again under the lock: a run may have recorded work since.
        let lock = store.lock::<Exclusive>()?;
        let pending = Pending::load(dir);
        let passed = Passed {
            pending,
            counts: Counts::default(),
        };
        return Ok(Polled::Passed(lock, passed, None));
    }
    let Some(read) = Read::now(api, (record, output), &pending)? else {
        return Ok(Polled::Wait);
    };
    let lock = store.lock::<Exclusive>()?;
    if !read.current(dir, output)? {
        log.debug("settle: a run changed the folder's work since it was read; reading again");
        return Ok(Polled::Wait);
    }
    let desired = config::servers(&String::from_utf8_lossy(&read.config));
    let live = read.live.clone();
    let passed = settle::pass(&read.with(api), dir, &desired, &live, None, waits, log)?;
    Ok(Polled::Passed(lock, passed, Some(live.len())))
}

/// What a worker's pass needs from HAProxy, read without the folder lock,
/// and what it was read against.
///
/// Invariant: every change hacfg makes to HAProxy's servers is made under
/// the folder lock by a run that writes the config file or the pending
/// record (it records its drains before it runs them, and a pass that
/// finishes one saves the record). So when both are byte for byte as they
/// were before the read, no hacfg run came between the read and the lock,
/// and acting on the read under the lock is as sound as reading under it:
/// what HAProxy itself changed meanwhile (a check, a session) the act
/// already tolerates, as it did when the read took its own time under the
/// lock (a server busy again is put back in drain, a server gone is
/// dropped). Only the act (`set server`, `del server`) is sent under it.
struct Read {
    /// The record's bytes, and the config file's, before the read.
    record: Option<Vec<u8>>,
    config: Vec<u8>,
    /// The servers the stats were read for.
    asked: BTreeSet<Target>,
    stats: BTreeMap<Target, Stat>,
    live: Vec<Live>,
}

impl Read {
    /// The pending servers' stats and, if any waiting one is due (or
    /// none waits: the overdue ones are finished once more), the live
    /// servers; `None` when nothing is due yet.
    fn now(
        api: &dyn Runtime,
        (record, output): (Option<Vec<u8>>, &OutputFile),
        pending: &Pending,
    ) -> Result<Option<Read>> {
        let config = output.read()?.unwrap_or_default();
        let targets = stat_targets(pending);
        let stats = api.stats_of(&targets)?;
        let waiting: Vec<&Entry> = pending.waiting(now_ms()).collect();
        if !waiting.is_empty() && !any_due(&waiting, &stats) {
            return Ok(None);
        }
        let live = api.live()?;
        let asked = targets.into_iter().map(|(t, _)| t).collect();
        Ok(Some(Read {
            record,
            config,
            asked,
            stats,
            live,
        }))
    }

    /// Whether the record and the config file are as they were before the
    /// read: then no run came between (see [`Read`]).
    fn current(&self, dir: &Path, output: &OutputFile) -> Result<bool> {
        Ok(record_bytes(dir) == self.record && output.read()?.unwrap_or_default() == self.config)
    }

    /// HAProxy as this read saw it, for a pass: the reads answered from
    /// it, the commands sent to `api`.
    fn with<'a>(&'a self, api: &'a dyn Runtime) -> Seen<'a> {
        Seen { read: self, api }
    }
}

/// The record's bytes as they are now (`None`: no file, or unreadable).
fn record_bytes(dir: &Path) -> Option<Vec<u8>> {
    crate::file::read_capped(&dir.join(records::PENDING), Pending::CAP)
        .ok()
        .flatten()
}

/// A [`Read`] in front of the socket: a pass made under the lock reads
/// what was read before it, and sends only its commands.
struct Seen<'a> {
    read: &'a Read,
    api: &'a dyn Runtime,
}

impl Runtime for Seen<'_> {
    fn path(&self) -> &Address {
        self.api.path()
    }
    fn live(&self) -> Result<Vec<Live>> {
        Ok(self.read.live.clone())
    }
    fn version(&self) -> Result<(u32, u32)> {
        self.api.version()
    }
    fn stats_of(&self, servers: &[(Target, Option<u32>)]) -> Result<BTreeMap<Target, Stat>> {
        if !servers.iter().all(|(t, _)| self.read.asked.contains(t)) {
            return self.api.stats_of(servers);
        }
        let stats = &self.read.stats;
        Ok(servers
            .iter()
            .filter_map(|(t, _)| Some((t.clone(), stats.get(t)?.clone())))
            .collect())
    }
    fn batch(&self, commands: &[String]) -> Result<Vec<String>> {
        self.api.batch(commands)
    }
}

/// After a failed pass: whether to give up, HAProxy having failed to
/// answer for [`UNANSWERED`]; else the failure is timed from its first.
/// `(who, then)`: the job, and who takes over (`the next hacfg run
/// finishes the pending work`).
fn give_up(
    e: &anyhow::Error,
    failing: &mut Option<Instant>,
    (who, then): (&str, &str),
    log: &mut Log,
) -> bool {
    if failing.is_some_and(|since| since.elapsed() > UNANSWERED) {
        log.warn(&format!("{who}: {e:#}; giving up for now: {then}"));
        return true;
    }
    log.debug(&format!("{who}: {e:#}; trying again"));
    failing.get_or_insert_with(Instant::now);
    false
}

/// The worker's second job (`--on-failed verify`): it watches the failed
/// members that stay until HAProxy's checks see them DOWN (then they go:
/// node file removed, the change applied) or `--check-timeout` has passed
/// since they stayed (later events and `sync` review them then). It polls
/// without the folder lock; removing a member is a run like the event it
/// stands for (under the lock, within a run's budget).
pub fn watch(
    s: &Settings,
    store: &Store,
    output: &OutputFile,
    log: &mut Log,
    counts: &mut Counts,
) -> Result<()> {
    let Some(watch_lock) = WorkerLock::try_take(store, Job::Watch, log)? else {
        return Ok(());
    };
    let mut failing: Option<Instant> = None;
    loop {
        // Each poll is a run of its own (see `work`).
        if let Some(api) = s.apply.runtime() {
            api.begin_run();
        }
        let mut stays = Stays::load(store.dir());
        if !watching(s, &stays) {
            // Read again under the folder lock, and let go of the watch lock
            // first: a run that records a stay after this starts a worker
            // that can take it.
            let lock = store.lock::<Exclusive>()?;
            stays = Stays::load(store.dir());
            if !watching(s, &stays) {
                drop(watch_lock);
                drop(lock);
                return Ok(());
            }
        }
        match verify::any_down(s, store, output, &stays) {
            Ok(down) => {
                failing = None;
                if down {
                    remove_down(s, (store, output), log, counts)?;
                }
            }
            Err(e) if give_up(&e, &mut failing, WATCH_TAKEN_OVER, log) => return Ok(()),
            Err(_) => {}
        }
        thread::sleep(WATCH_POLL);
    }
}

/// Whether a stay is young enough to watch: within `--check-timeout` of
/// its start.
fn watching(s: &Settings, stays: &Stays) -> bool {
    let shown = stays.shown(s.waits.first_check, now_ms());
    shown.values().any(|st| !st.overdue)
}

/// Removes the failed members that stayed and HAProxy now sees DOWN, and
/// applies the change, as their own event would have. A node file that
/// cannot be removed keeps its stay, for a later review.
fn remove_down(
    s: &Settings,
    (store, output): (&Store, &OutputFile),
    log: &mut Log,
    counts: &mut Counts,
) -> Result<()> {
    let lock = store.lock::<Exclusive>()?;
    let mut reviewed = verify::review(s, store, &lock, output, (&[], &[]), log);
    let removed = store.remove_all(&lock, &reviewed.remove)?;
    for (name, result) in reviewed.remove.clone().iter().zip(removed) {
        match result {
            Ok(true) => log.info(&format!("watch: removed node `{name}`")),
            Ok(false) => {}
            Err(e) => {
                log.warn(&format!("watch: skipped `{name}`: {e:#}"));
                reviewed.keep(name);
            }
        }
    }
    reviewed.record(store.dir())?;
    counts.stays = Some(reviewed.count());
    // The change is the folder's now: a render that fails is said, and the
    // next run applies it.
    match super::update(s, store, (&lock, output), &[], log, counts) {
        Ok(applied) => {
            drop(lock);
            super::after(s, &applied, log);
        }
        Err(e) => log.warn(&format!("watch: {e:#}")),
    }
    Ok(())
}

/// Says what stays drained past its deadline, then lets go of the worker
/// lock before the folder lock: a run that records new work after this (it
/// needs the folder lock) starts a worker of its own.
fn exit(worker_lock: WorkerLock, lock: Lock<Exclusive>, left: &Pending, log: &mut Log) {
    for entry in &left.entries {
        log.warn(&format!("settle: {}", settle::overdue_text(entry)));
    }
    drop(worker_lock);
    drop(lock);
}

/// Whether any waiting entry is due, by what `show stat` says: its check
/// has run, it is idle, an operator put it in maintenance, its server is no
/// longer there, or it was kept serving and a server it waits for is UP
/// (see [`kept_due`]).
fn any_due(waiting: &[&Entry], stats: &BTreeMap<Target, Stat>) -> bool {
    waiting.iter().any(|e| match e.why {
        Why::KeptServing => kept_due(e, waiting, stats),
        _ => is_due(e, stats.get(&e.target)),
    })
}

/// The servers whose `show stat` decides what is due: the pending ones,
/// and the replacements a server kept serving waits for.
fn stat_targets(pending: &Pending) -> Vec<(Target, Option<u32>)> {
    let mut targets: Vec<(Target, Option<u32>)> = pending
        .entries
        .iter()
        .map(|e| (e.target.clone(), e.id))
        .collect();
    for e in pending.entries.iter().filter(|e| e.why == Why::KeptServing) {
        targets.extend(e.replacement_targets());
    }
    targets
}

/// Whether a server kept serving is due: while servers added to its
/// backend wait in hacfg's drain for a first check, their own entries say
/// when a pass is due; then, once a server it waits for is UP, or none of
/// them is left (a pass finds which servers it waits for). One HAProxy
/// keeps DOWN by `init-state` (3.1 and later) has no entry: it is waited
/// for as a replacement, until it is UP.
fn kept_due(kept: &Entry, waiting: &[&Entry], stats: &BTreeMap<Target, Stat>) -> bool {
    let backend = &kept.target.backend;
    if waiting
        .iter()
        .any(|e| e.why == Why::FirstCheck && e.target.backend == *backend)
    {
        return false;
    }
    let seen: Vec<Option<&Stat>> = kept
        .replacement_targets()
        .map(|(t, _)| stats.get(&t))
        .collect();
    seen.iter().all(Option::is_none) || seen.iter().flatten().any(|s| s.status.starts_with("UP"))
}

/// Whether `entry` is due, by what `show stat` says of its server. A new
/// server is due once its check has a result, or someone set it ready or
/// put it in maintenance; DOWN with no result (moved to a new address, say)
/// it still waits: its check has not run. One kept serving waits for its
/// replacements (see [`kept_due`]).
fn is_due(entry: &Entry, stat: Option<&Stat>) -> bool {
    match (stat, entry.why) {
        (None, _) => true,
        (Some(s), Why::FirstCheck) => {
            s.checked() || ["UP", "MAINT"].iter().any(|w| s.status.starts_with(w))
        }
        (Some(s), Why::Removal) => s.sessions == 0,
        (Some(_), Why::KeptServing) => false,
    }
}

/// Starts the worker, detached, if work is waiting. It gets no standard
/// streams (a handler's stdout and stderr are Serf's pipes, which must close
/// when the handler exits) and none of its caller's `HACFG_*` variables (its
/// arguments and `worker.env` say everything); it starts a session of its own.
pub fn spawn(worker: &Worker, log: &mut Log) {
    let mut cmd = Command::new(&worker.exe);
    cmd.args(&worker.args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HACFG_") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(worker.env.iter().map(|(k, v)| (k, v)));
    match cmd.spawn() {
        Ok(child) => log.debug(&format!("settle: started worker {}", child.id())),
        Err(e) => log.warn(&format!(
            "unable to start `{} settle`: {e}; the next hacfg run finishes the pending work",
            worker.exe.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(why: Why) -> Entry {
        let mut p = Pending::default();
        p.insert(Target::new("nodes", "a"), why, Duration::from_secs(60));
        p.entries.remove(0)
    }

    /// A `show stat` row; `check` as HAProxy writes it (`* INI` while a
    /// first check runs).
    fn stat(status: &str, check: &str, sessions: u64) -> Stat {
        Stat {
            sessions,
            status: status.into(),
            check: check.trim_start_matches("* ").into(),
            running: check.starts_with("* "),
        }
    }

    #[test]
    fn a_new_server_is_due_once_its_first_check_has_a_result() {
        let first = entry(Why::FirstCheck);
        assert!(!is_due(&first, Some(&stat("DRAIN", "INI", 0))));
        assert!(
            !is_due(&first, Some(&stat("DRAIN", "* INI", 0))),
            "running, no result"
        );
        assert!(is_due(&first, Some(&stat("DRAIN", "L7OK", 0))));
        assert!(
            is_due(&first, Some(&stat("DRAIN", "L4CON", 0))),
            "failed is a result"
        );
        // DOWN with no result (moved to a new address, set DOWN there): its
        // check has not run, no pass is due.
        assert!(!is_due(&first, Some(&stat("DOWN", "INI", 0))));
        assert!(!is_due(&first, Some(&stat("DOWN", "* INI", 0))));
        assert!(is_due(&first, Some(&stat("DOWN 1/2", "L7OK", 0))));
        // Set ready or put in maint by someone: the pass says what it sees.
        assert!(is_due(&first, Some(&stat("MAINT", "INI", 0))));
        assert!(is_due(&first, Some(&stat("UP", "INI", 0))));
        assert!(is_due(&first, None), "gone");
    }

    #[test]
    fn a_removed_server_is_due_once_idle() {
        let removal = entry(Why::Removal);
        assert!(!is_due(&removal, Some(&stat("DRAIN", "L7OK", 2))));
        assert!(is_due(&removal, Some(&stat("DRAIN", "L7OK", 0))));
        assert!(is_due(&removal, None));
    }

    /// What a poll decides from one `show stat` of the servers `waiting`
    /// needs (each entry's own, and the replacements kept servers wait for).
    fn due(api: &dyn Runtime, waiting: &[&Entry]) -> bool {
        let pending = Pending {
            entries: waiting.iter().map(|e| (*e).clone()).collect(),
        };
        let stats = api.stats_of(&stat_targets(&pending)).unwrap();
        any_due(waiting, &stats)
    }

    #[test]
    fn a_server_kept_serving_is_due_once_nothing_added_to_its_backend_waits() {
        let fake = crate::haproxy::fake::Fake::of(
            "backend nodes\n    server a 10.0.0.1:80 id 11\n    server n 10.0.0.2:80 check id 12\n",
        );
        fake.set("nodes/n", |s| {
            s.check = "INI".into();
            s.checks = true;
            s.live.admin_state = crate::haproxy::state::FORCED_DRAIN;
        });
        let kept = entry(Why::KeptServing);
        let mut p = Pending::default();
        let n = Target::new("nodes", "n");
        p.insert(n, Why::FirstCheck, Duration::from_secs(60));
        let new = p.entries.remove(0);
        assert!(!due(&fake, &[&kept, &new]), "its replacement waits");
        fake.set("nodes/n", |s| s.check = "L7OK".into());
        assert!(due(&fake, &[&kept, &new]), "the replacement's check ran");
        assert!(due(&fake, &[&kept]), "it waits for no server any more");
        // Its replacement's first check failed: it waits for it to come UP.
        let mut kept = kept;
        kept.replacements = vec![super::super::pending::Replacement {
            name: "n".into(),
            id: Some(12),
        }];
        fake.set("nodes/n", |s| {
            s.check = "L4CON".into();
            s.live.admin_state = 0;
        });
        assert!(!due(&fake, &[&kept]), "DOWN: it may still come UP");
        fake.set("nodes/n", |s| s.check = "L7OK".into());
        assert!(due(&fake, &[&kept]), "UP");
        fake.servers.borrow_mut().retain(|s| s.live.name != "n");
        assert!(due(&fake, &[&kept]), "gone");
    }

    #[test]
    fn a_pass_acts_on_what_was_read_unless_a_run_came_between() {
        const CONFIG: &str = "backend nodes\n    server a 10.0.0.1:80 check id 11\n";
        let dir = tempfile::tempdir().unwrap();
        let output =
            OutputFile::new(&dir.path().join("h.cfg"), crate::output::WriteMode::Rename).unwrap();
        let _ = output.replace(None, CONFIG.as_bytes()).unwrap();
        let fake = crate::haproxy::fake::Fake::of(CONFIG);
        fake.set("nodes/a", |s| {
            s.live.admin_state = crate::haproxy::state::FORCED_DRAIN;
            s.check = "INI".into();
        });
        let mut pending = Pending::default();
        let a = Target::new("nodes", "a");
        pending.insert(a.clone(), Why::FirstCheck, Duration::from_secs(60));
        pending.save(dir.path(), &Pending::default()).unwrap();
        let load = || Pending::load(dir.path());
        // Its check has not run: nothing is due, nothing more is read.
        assert!(
            Read::now(&fake, (record_bytes(dir.path()), &output), &load())
                .unwrap()
                .is_none()
        );
        fake.set("nodes/a", |s| s.check = "L7OK".into());
        let read = Read::now(&fake, (record_bytes(dir.path()), &output), &load())
            .unwrap()
            .unwrap();
        assert!(read.current(dir.path(), &output).unwrap());
        // The pass reads nothing more: only its command goes to HAProxy.
        let sent = fake.sent().len();
        let seen = read.with(&fake);
        assert!(seen.stats_of(&[(a.clone(), Some(11))]).unwrap()[&a].checked());
        crate::haproxy::execute::set_ready(&seen, std::slice::from_ref(&a)).unwrap();
        assert_eq!(fake.sent()[sent..], ["set server nodes/a state ready"]);
        // A run that records other work, or writes the config, in between:
        // the read is stale.
        let mut other = load();
        other.insert(
            Target::new("nodes", "b"),
            Why::Removal,
            Duration::from_secs(60),
        );
        other.save(dir.path(), &load()).unwrap();
        assert!(!read.current(dir.path(), &output).unwrap());
        let read = Read::now(&fake, (record_bytes(dir.path()), &output), &load())
            .unwrap()
            .unwrap();
        let _ = output.replace(None, b"backend nodes\n").unwrap();
        assert!(!read.current(dir.path(), &output).unwrap());
    }

    #[test]
    fn a_server_kept_serving_waits_for_an_init_state_replacement_to_come_up() {
        let fake = crate::haproxy::fake::Fake::of(
            "backend nodes\n    server a 10.0.0.1:80 id 11\n    server n 10.0.0.2:80 check id 12\n",
        );
        // 3.1 and later: ready, DOWN until its first check passes.
        fake.set("nodes/n", |s| {
            s.check = "INI".into();
            s.live.op_state = 0;
        });
        let mut kept = entry(Why::KeptServing);
        kept.replacements = vec![super::super::pending::Replacement {
            name: "n".into(),
            id: Some(12),
        }];
        assert!(!due(&fake, &[&kept]), "not checked yet");
        fake.set("nodes/n", |s| {
            s.check = "L7OK".into();
            s.live.op_state = 2;
        });
        assert!(due(&fake, &[&kept]), "UP");
    }
}
