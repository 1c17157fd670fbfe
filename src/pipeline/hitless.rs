//! The hitless path: HAProxy's servers brought in line with the render
//! through the runtime API, with no reload and no `haproxy -c` (the rest of
//! the config is byte-identical to the file HAProxy took, and each changed
//! server line is taken by HAProxy's own runtime parser, `add server`).
//!
//! When HAProxy refuses a runtime command, `--apply auto` takes the checked
//! reload path instead (what this run changed at runtime is undone first).
//! `--apply runtime` never reloads: what it cannot take waits for a reload
//! while every other change goes through (see `split`).

use std::cell::OnceCell;
use std::path::Path;
use std::thread::JoinHandle;

use anyhow::Result;

use super::pending::Pending;
use super::plan::{self, Plan};
use super::quarantine::RETRY_AFTER;
use super::settle::{self, Left, Waits};
use super::split::{self, Part, Record, Sorted, Waiting};
use super::{Apply, Counts, Settings};
use crate::exit::Failure;
use crate::haproxy::config::{self, Server};
use crate::haproxy::execute::{self, Executed, Op, SafeAdd};
use crate::haproxy::state::{Admin, FORCED_DRAIN, Live};
use crate::haproxy::{self as hap, Dialect, Named, Runtime, Target, Undo};
use crate::log::Log;
use crate::output::OutputFile;
use crate::store::Store;

/// How the hitless path ended: what differs for the caller.
#[derive(Debug)]
pub enum Ended {
    /// HAProxy runs the render now (the file may still need writing).
    All(Left),
    /// `--apply runtime`: HAProxy runs this part; the rest waits for a
    /// reload.
    Part(Part, Left),
    /// The change takes the checked reload path (the reason was said).
    Reload,
}

/// What a change the runtime API cannot take leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// `--apply auto`: a reload.
    Reload,
    /// `--apply runtime`: none; what needs one waits for a run that may.
    Wait,
}

/// Where one step of the path leads: on, with what it found, or to a
/// reload, for a reason.
enum Step<T> {
    On(T),
    Reload(String),
}

/// What to run at runtime; `part`: what HAProxy then runs, if not the
/// whole render.
struct Decided {
    part: Option<Part>,
    ops: Vec<Op>,
}

/// The live servers, read on a thread of their own, if this run may take
/// the hitless path (and `--force` does not ask for a reload).
pub fn prefetch(s: &Settings) -> Option<JoinHandle<Result<Vec<Live>>>> {
    let Apply::Hitless { runtime, .. } = &s.apply else {
        return None;
    };
    if s.force {
        return None;
    }
    let api = runtime.clone();
    Some(std::thread::spawn(move || api.live()))
}

/// The prefetched live servers.
pub fn join(live: JoinHandle<Result<Vec<Live>>>) -> Result<Vec<Live>> {
    live.join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the runtime reader panicked")))
}

/// A run off the hitless path (a reload, `--force`, nothing to change)
/// still finishes what hacfg left pending, against `rendered`. Problems
/// are warnings: the worker tries again.
pub fn finish_pending(
    s: &Settings,
    store: &Store,
    rendered: &str,
    log: &mut Log,
    counts: &mut Counts,
) -> Left {
    let Some(api) = s.apply.runtime() else {
        return Left::Nothing;
    };
    let dir = store.dir();
    let pending = Pending::load(dir);
    if pending.is_empty() {
        return Left::Nothing;
    }
    let desired = config::servers(rendered);
    let passed = api
        .live()
        .inspect(|live| counts.servers_live = Some(live.len()))
        .and_then(|live| settle::pass(api, dir, &desired, &live, None, s.waits, log));
    match passed {
        Ok(passed) => {
            counts.add(&passed.counts);
            Left::Passed(passed.pending)
        }
        Err(e) => {
            log.warn(&format!("settle: {e:#}; the worker tries again"));
            Left::Failed {
                waiting: pending.is_waiting(),
            }
        }
    }
}

/// The hitless path of one run.
pub struct Hitless<'a> {
    pub api: &'a dyn Runtime,
    pub fallback: Fallback,
    /// The nodes folder, where hacfg keeps its records.
    pub dir: &'a Path,
    pub output: &'a OutputFile,
    pub waits: Waits,
    /// The nodes of failed members this run removes: never kept serving.
    pub dead: &'a [String],
}

impl<'a> Hitless<'a> {
    /// The path `s` takes, if it may take one.
    pub fn of(
        s: &'a Settings,
        dir: &'a Path,
        output: &'a OutputFile,
        dead: &'a [String],
    ) -> Option<Hitless<'a>> {
        let Apply::Hitless {
            runtime, fallback, ..
        } = &s.apply
        else {
            return None;
        };
        Some(Hitless {
            api: runtime,
            fallback: *fallback,
            dir,
            output,
            waits: s.waits,
            dead,
        })
    }
}

impl Hitless<'_> {
    /// Tries the runtime API before any check. It also repairs drift when
    /// the file is `unchanged` (a server deleted behind hacfg's back).
    pub fn apply(
        &self,
        live: Result<Vec<Live>>,
        rendered: &str,
        unchanged: bool,
        log: &mut Log,
        counts: &mut Counts,
    ) -> Result<Ended> {
        // A reload goes through the same HAProxy: one that did not answer
        // is no reason to suggest one.
        let unanswered = live.is_err();
        let why = match self.route(live, (rendered, unchanged), log, counts)? {
            Step::On(ended) => return Ok(ended),
            Step::Reload(why) => why,
        };
        if unchanged && unanswered {
            log.warn(&format!(
                "unable to compare HAProxy's servers with `{}` ({why}); check that HAProxy runs \
                 and that this user may use its socket, then run again",
                self.output.path().display()
            ));
        } else if unchanged {
            log.warn(&format!(
                "the live servers differ from `{}` in a way the runtime API cannot repair \
                 ({why}); `hacfg --force render` reloads",
                self.output.path().display()
            ));
        } else if self.fallback == Fallback::Wait {
            return Err(Failure::NeedsReload {
                reasons: vec![why],
                output: self.output.path().to_path_buf(),
                recorded: false,
            }
            .into());
        } else {
            log.info(&format!("reloading: {why}"));
        }
        Ok(Ended::Reload)
    }

    /// Plans, executes without waiting, and makes a settle pass.
    fn route(
        &self,
        live: Result<Vec<Live>>,
        (rendered, unchanged): (&str, bool),
        log: &mut Log,
        counts: &mut Counts,
    ) -> Result<Step<Ended>> {
        let mut live = match live {
            Ok(live) => live,
            Err(e) if self.fallback == Fallback::Reload => {
                let why = format!("the runtime API did not answer: {e:#}");
                return Ok(Step::Reload(why));
            }
            Err(e) => return Err(e),
        };
        let pending = Pending::load(self.dir);
        let old = self
            .output
            .read()?
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let input = Input {
            live: &live,
            old: old.as_deref(),
            rendered,
            unchanged,
            dialect: OnceCell::new(),
        };
        // A plan that depends on the version (a `cookie`) asks it first.
        if config::newest_keyword(rendered).is_some() {
            input.dialect(self.api, log);
        }
        let (part, executed) = match self.run(&input, &pending, log, counts)? {
            Step::On(ran) => ran,
            Step::Reload(why) => return Ok(Step::Reload(why)),
        };
        let desired = config::servers(part.as_ref().map_or(rendered, |p| &p.config));
        let left = self.settle(&mut live, (&desired, executed.as_ref()), log, counts);
        Ok(Step::On(match part {
            None => Ended::All(left),
            Some(part) => Ended::Part(part, left),
        }))
    }

    /// Logs what `executed` did, then makes a settle pass: what still
    /// waits for HAProxy.
    fn settle(
        &self,
        live: &mut Vec<Live>,
        (desired, executed): (&[Server], Option<&Executed>),
        log: &mut Log,
        counts: &mut Counts,
    ) -> Left {
        if let Some(done) = executed {
            log_done(done, log);
            as_now(live, done, desired);
        }
        // HAProxy runs the desired servers now, and the removed ones that
        // still drain or are kept serving (an idle one was deleted, a new
        // one is there, with init-state too).
        let kept = Pending::load(self.dir);
        let leaving = live.iter().filter(|l| {
            (l.admin_state & FORCED_DRAIN != 0 || kept.kept(&l.target()))
                && !desired.iter().any(|s| s.is(&l.target()))
        });
        counts.servers_live = Some(desired.len() + leaving.count());
        // HAProxy has been told: whatever the pass meets, the file must
        // follow, and the worker (or the next run) makes the pass again.
        match settle::pass(self.api, self.dir, desired, live, executed, self.waits, log) {
            Ok(passed) => {
                counts.add(&passed.counts);
                Left::Passed(passed.pending)
            }
            Err(e) => {
                log.warn(&format!("settle: {e:#}; the worker tries again"));
                Left::Failed { waiting: true }
            }
        }
    }

    /// Decides and executes; again when HAProxy refused again a part tried
    /// again (it waits then, and the rest goes through).
    fn run(
        &self,
        input: &Input,
        pending: &Pending,
        log: &mut Log,
        counts: &mut Counts,
    ) -> Result<Step<(Option<Part>, Option<Executed>)>> {
        let mut undo = Undo::Nothing;
        for _ in 0..MAX_ATTEMPTS {
            let Decided { part, ops } = match self.decide(input)? {
                Step::On(decided) => decided,
                Step::Reload(why) => return Ok(Step::Reload(why)),
            };
            // A server hacfg already drains for its removal is left to drain,
            // one it keeps serving to the settle passes.
            let ops: Vec<Op> = ops
                .into_iter()
                .filter(|op| {
                    !matches!(op, Op::Delete(t)
                        if drains_already(pending, input.live, t) || pending.kept(t))
                })
                .collect();
            match self.execute(input, (&ops, pending), log, counts) {
                Ok(executed) => {
                    if let Some(part) = &part {
                        Record::load(self.dir).save(self.dir, &part.waiting)?;
                    }
                    return Ok(Step::On((part, executed)));
                }
                Err(e) => {
                    undo = refusal(&e).map_or(undo, |(_, _, u)| u.clone());
                    if let Step::Reload(why) = self.refused(e, input)? {
                        return Ok(Step::Reload(why));
                    }
                }
            }
        }
        Err(Failure::RefusedAgain {
            attempts: MAX_ATTEMPTS,
            undo,
        }
        .into())
    }

    /// The runtime operations for the render, or why it takes a reload.
    /// `--apply runtime` takes what it can and leaves the rest waiting
    /// (a run that finds a part no earlier run left waiting changes
    /// nothing: exit 7).
    fn decide(&self, input: &Input) -> Result<Step<Decided>> {
        let waits = self.fallback == Fallback::Wait;
        let all = |ops| Ok(Step::On(Decided { part: None, ops }));
        let planned = plan::plan(input.old, input.rendered, input.live, input.known());
        match (planned, input.old) {
            (Plan::Reload(why), _) if !waits || input.unchanged => Ok(Step::Reload(why)),
            (Plan::Reload(why), None) => Ok(Step::Reload(why)),
            (Plan::Reload(_), Some(old)) => self.part(old, input),
            (_, Some(old)) if waits && !Record::load(self.dir).entries.is_empty() => {
                self.part(old, input)
            }
            (Plan::Nothing, _) => all(Vec::new()),
            (Plan::Runtime(ops), _) => all(ops),
        }
    }

    /// `--apply runtime`: the part of the render the runtime takes now.
    fn part(&self, old: &str, input: &Input) -> Result<Step<Decided>> {
        let record = Record::load(self.dir);
        let part = match split::sort(old, input.rendered, input.live, input.known(), &record) {
            Sorted::Part(part) => part,
            Sorted::Blocked(why) => {
                return Ok(Step::Reload(format!(
                    "HAProxy's live servers differ from the file in a way only a reload \
                     repairs: {why}"
                )));
            }
        };
        let fresh: Vec<String> = part
            .waiting
            .iter()
            .filter(|w| !record.knows(w))
            .map(|w| w.reason.clone())
            .collect();
        if !fresh.is_empty() {
            record.save(self.dir, &part.waiting)?;
            return Err(Failure::NeedsReload {
                reasons: fresh,
                output: self.output.path().to_path_buf(),
                recorded: true,
            }
            .into());
        }
        // Nothing waits (any more): the file becomes the render itself.
        let part = Some(part).filter(|p| !p.waiting.is_empty());
        let config = part.as_ref().map_or(input.rendered, |p| &p.config);
        match plan::plan(Some(old), config, input.live, input.known()) {
            Plan::Nothing => Ok(Step::On(Decided {
                part,
                ops: Vec::new(),
            })),
            Plan::Runtime(ops) => Ok(Step::On(Decided { part, ops })),
            Plan::Reload(why) => Ok(Step::Reload(why)),
        }
    }

    /// After HAProxy refused a runtime command (and this run's runtime
    /// changes were undone, or said not to be): `--apply auto` reloads
    /// instead. `--apply runtime` records the refused part as waiting; a
    /// part refused for the first time fails the run (exit 3), one tried
    /// again (see `split`) is left out and the rest goes through
    /// (`Step::On`: decide once more).
    fn refused(&self, err: anyhow::Error, input: &Input) -> Result<Step<()>> {
        let Some((target, words, undo)) = refusal(&err) else {
            return Err(err);
        };
        if self.fallback == Fallback::Reload {
            return Ok(Step::Reload(format!("{words}; {undo}")));
        }
        let change = input
            .old
            .and_then(|old| split::change_of(old, input.rendered, target));
        let Some(change) = change else {
            return Err(err);
        };
        let record = Record::load(self.dir);
        let refusal = change.refused(words);
        let again = record.knows(&refusal);
        let mut entries: Vec<Waiting> = record
            .entries
            .iter()
            .filter(|w| !refusal.same_part(w))
            .cloned()
            .collect();
        entries.push(refusal);
        record.save(self.dir, &entries)?;
        if again {
            return Ok(Step::On(()));
        }
        Err(Failure::RefusedAtRuntime {
            words: words.to_string(),
            undo: undo.clone(),
            output: self.output.path().to_path_buf(),
            target: change.target,
            retry: RETRY_AFTER,
        }
        .into())
    }

    /// Runs `ops` without waiting, their drains recorded first; `None`
    /// when there is nothing to run.
    fn execute(
        &self,
        input: &Input,
        (ops, pending): (&[Op], &Pending),
        log: &mut Log,
        counts: &mut Counts,
    ) -> Result<Option<Executed>> {
        if ops.is_empty() {
            log.debug("runtime API: HAProxy already runs the desired servers");
            return Ok(None);
        }
        let safe = safe_add(self.api, input, ops, log);
        let kept = settle::keep(ops, input.live, pending, self.dead);
        let ops: Vec<Op> = ops
            .iter()
            .filter(|op| !matches!(op, Op::Delete(t) if kept.contains(t)))
            .cloned()
            .collect();
        settle::intend(self.dir, (&ops, &kept), input.live, safe, self.waits)?;
        log_kept(&kept, log);
        if ops.is_empty() {
            return Ok(None);
        }
        let shown: Vec<String> = ops.iter().map(ToString::to_string).collect();
        log.debug(&format!(
            "runtime API: {} operation(s): {}",
            ops.len(),
            shown.join(", ")
        ));
        let executed = execute::execute(self.api, &ops, input.live, safe)?;
        counts.ran(&ops);
        Ok(Some(executed))
    }
}

/// Executions a run makes at most: each refusal of a part tried again
/// leaves that part out of the next.
const MAX_ATTEMPTS: usize = 8;

/// What one runtime apply works from.
struct Input<'a> {
    live: &'a [Live],
    /// The running version, once asked: at most once per run.
    dialect: OnceCell<Dialect>,
    /// The file HAProxy took, if there is one.
    old: Option<&'a str>,
    rendered: &'a str,
    /// The render is the file.
    unchanged: bool,
}

impl Input<'_> {
    /// The version, if this run asked it; else the oldest one's ways.
    fn known(&self) -> Dialect {
        self.dialect.get().copied().unwrap_or(Dialect::OLDEST)
    }

    /// The running version, asked once (`show info`), and said in `-v`.
    /// An answer hacfg cannot read is a warning: the oldest version's ways
    /// work on every version.
    fn dialect(&self, api: &dyn Runtime, log: &mut Log) -> Dialect {
        *self.dialect.get_or_init(|| match api.version() {
            Ok(version) => {
                let dialect = Dialect { version };
                log.debug(&dialect.to_string());
                dialect
            }
            Err(e) => {
                log.warn(&format!(
                    "unable to read HAProxy's version ({e:#}); taking the ways of HAProxy 2.6, \
                     which every version takes"
                ));
                Dialect::OLDEST
            }
        })
    }
}

/// The server, HAProxy's words and what became of the run's changes, if
/// `err` is HAProxy's refusal of a runtime command.
fn refusal(err: &anyhow::Error) -> Option<(&Target, &str, &Undo)> {
    match err.chain().find_map(|e| e.downcast_ref::<hap::Error>())? {
        hap::Error::RefusedChange {
            target,
            words,
            undo,
        } => Some((target, words.as_str(), undo)),
        _ => None,
    }
}

/// One warning line for the parts a run left waiting (none: no line).
pub fn warn_waiting(part: &Part, log: &mut Log) {
    if part.waiting.is_empty() {
        return;
    }
    let reasons: Vec<&str> = part.waiting.iter().map(|w| w.reason.as_str()).collect();
    log.warn(&format!(
        "{} part(s) of the change waiting for a reload, which --apply runtime forbids (the \
         first run that may reload applies them): {}",
        reasons.len(),
        reasons.join("; ")
    ));
}

/// The live servers as `done` left them (its new servers and its drains in
/// drain), without asking HAProxy again: at 10,000 servers another
/// `show servers state` costs 15-25 ms.
fn as_now(live: &mut Vec<Live>, done: &Executed, desired: &[Server]) {
    for l in live.iter_mut() {
        if done.draining.iter().any(|t| l.is(t)) {
            l.admin_state |= FORCED_DRAIN;
        }
    }
    // In drain until checked, or ready and DOWN until a check passes.
    let drained = done.checking.iter().map(|t| (t, FORCED_DRAIN));
    for (t, admin_state) in drained.chain(done.starting.iter().map(|t| (t, 0))) {
        let Some(s) = desired.iter().find(|s| s.is(t)) else {
            continue;
        };
        live.push(Live {
            backend: s.backend.clone(),
            name: s.name.clone(),
            id: s.id.unwrap_or(0),
            addr: s.addr.clone(),
            port: s.port,
            weight: s.weight,
            op_state: 0,
            admin_state,
            unchecked: true,
        });
    }
}

/// Whether hacfg already drains `target` for its removal: recorded so, and
/// drained in HAProxy (a run that died between the record and the drain
/// left only the record).
fn drains_already(pending: &Pending, live: &[Live], target: &Target) -> bool {
    pending.removing(target)
        && live
            .iter()
            .any(|l| l.is(target) && l.admin() == Admin::Drain)
}

/// How new servers with checks are added: HAProxy's version says (asked
/// only when this run adds such a server).
fn safe_add(api: &dyn Runtime, input: &Input, ops: &[Op], log: &mut Log) -> SafeAdd {
    if !ops.iter().any(|op| matches!(op, Op::Add(s) if s.check)) {
        return SafeAdd::Drain;
    }
    input.dialect(api, log).safe_add()
}

fn log_kept(kept: &[Target], log: &mut Log) {
    for target in kept {
        log.info(&format!(
            "runtime: kept `{target}` serving: its backend has no other server that takes \
             traffic while the servers added to it wait for their first check; it is drained \
             once one of them is UP"
        ));
    }
}

fn log_done(done: &Executed, log: &mut Log) {
    for line in &done.done {
        log.info(&format!("runtime: {line}"));
    }
    for target in &done.draining {
        log.info(&format!(
            "runtime: drained `{target}`: no new request; it is deleted once idle"
        ));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::exit::{Code, code_of};
    use crate::haproxy::fake::Fake;
    use crate::log::Verbosity;
    use crate::output::WriteMode;
    use crate::pipeline::pending::Why;

    const BASE: &str = "global\n    maxconn 10\n\nbackend nodes\n    balance roundrobin\n    server a 10.0.0.1:80 check weight 1 id 11\n    server b 10.0.0.2:80 check weight 1 id 12\n";
    const B: &str = "    server b 10.0.0.2:80 check weight 1 id 12\n";
    const C: &str = "    server c 10.0.0.3:80 check weight 1 id 13\n";

    /// A nodes folder and the config file HAProxy took (`BASE`).
    struct Folder {
        tmp: tempfile::TempDir,
        output: OutputFile,
        log: Log,
    }

    impl Folder {
        fn new() -> Folder {
            let tmp = tempfile::tempdir().unwrap();
            std::fs::create_dir(tmp.path().join("nodes")).unwrap();
            let path = tmp.path().join("haproxy.cfg");
            std::fs::write(&path, BASE).unwrap();
            let output = OutputFile::new(&path, WriteMode::Rename).unwrap();
            let log = Log::new(Verbosity::Quiet, Some(&tmp.path().join("log")));
            Folder { tmp, output, log }
        }

        fn dir(&self) -> std::path::PathBuf {
            self.tmp.path().join("nodes")
        }

        /// Applies `rendered` through `fake`, as a run would.
        fn apply(&mut self, fake: &Fake, fallback: Fallback, rendered: &str) -> Result<Ended> {
            let dir = self.dir();
            let hitless = Hitless {
                api: fake,
                fallback,
                dir: &dir,
                output: &self.output,
                waits: Waits {
                    drain: Duration::from_secs(60),
                    first_check: Duration::from_secs(60),
                },
                dead: &[],
            };
            let unchanged = rendered == BASE;
            let mut counts = Counts::default();
            hitless.apply(fake.live(), rendered, unchanged, &mut self.log, &mut counts)
        }

        fn logged(&self) -> String {
            std::fs::read_to_string(self.tmp.path().join("log")).unwrap_or_default()
        }
    }

    #[test]
    fn server_changes_go_through_the_runtime_and_wait_for_haproxy() {
        let (mut folder, fake) = (Folder::new(), Fake::of(BASE));
        let new = BASE.replace(B, "") + C;
        let Ended::All(left) = folder.apply(&fake, Fallback::Reload, &new).unwrap() else {
            panic!("not applied at runtime");
        };
        // b was idle: drained, then deleted by the same pass; c waits in
        // drain for its first check, and the worker is needed for it.
        assert!(fake.get("nodes/b").is_none());
        assert_eq!(fake.get("nodes/c").unwrap().live.admin(), Admin::Drain);
        let Left::Passed(pending) = &left else {
            panic!("{left:?}");
        };
        assert_eq!(pending.entries.len(), 1);
        assert_eq!(pending.entries[0].why, Why::FirstCheck);
        assert!(left.waiting());
        assert_eq!(Pending::load(&folder.dir()), *pending);
    }

    #[test]
    fn other_lines_take_the_reload_path_and_touch_nothing() {
        let (mut folder, fake) = (Folder::new(), Fake::of(BASE));
        let new = BASE.replace("maxconn 10", "maxconn 20") + C;
        let ended = folder.apply(&fake, Fallback::Reload, &new).unwrap();
        assert!(matches!(ended, Ended::Reload), "{ended:?}");
        assert!(fake.sent().is_empty(), "{:?}", fake.sent());
        assert!(
            folder
                .logged()
                .contains("reloading: lines other than `server` lines changed")
        );
        // `--apply runtime` refuses it whole (exit 7), and records it.
        let err = folder.apply(&fake, Fallback::Wait, &new).unwrap_err();
        assert_eq!(code_of(&err), Code::NeedsReload);
        assert!(
            err.to_string().contains("Later runs with --apply runtime"),
            "{err}"
        );
        assert!(fake.sent().is_empty());
        // The next run applies the rest (c) and leaves the part waiting.
        let Ended::Part(part, _) = folder.apply(&fake, Fallback::Wait, &new).unwrap() else {
            panic!("the rest did not go through");
        };
        assert_eq!(part.waiting.len(), 1);
        assert!(fake.get("nodes/c").is_some());
        assert!(part.config.contains("maxconn 10") && part.config.contains("server c "));
    }

    #[test]
    fn a_refusal_reloads_with_auto_after_the_undo() {
        let (mut folder, fake) = (Folder::new(), Fake::of(BASE).refusing("add server", "nope"));
        let new = BASE.replace("10.0.0.1:80 check weight 1", "10.0.0.1:80 check weight 5") + C;
        let ended = folder.apply(&fake, Fallback::Reload, &new).unwrap();
        assert!(matches!(ended, Ended::Reload));
        assert_eq!(fake.get("nodes/a").unwrap().live.weight, 1, "undone");
        assert!(folder.logged().contains(
            "reloading: HAProxy refused a runtime change: `add server nodes/c 10.0.0.3:80 check \
             weight 1 id 13`: nope; what this run changed at runtime was undone"
        ));
    }

    #[test]
    fn a_refusal_with_runtime_only_fails_once_then_waits() {
        let (mut folder, fake) = (Folder::new(), Fake::of(BASE).refusing("add server", "nope"));
        let new = BASE.replace("10.0.0.1:80 check weight 1", "10.0.0.1:80 check weight 5") + C;
        let err = folder.apply(&fake, Fallback::Wait, &new).unwrap_err();
        assert_eq!(code_of(&err), Code::Rejected);
        assert!(err.to_string().contains("leave `nodes/c` waiting"), "{err}");
        assert_eq!(fake.get("nodes/a").unwrap().live.weight, 1);
        // Tried again at once, refused again: it waits, the weight goes.
        let Ended::Part(part, _) = folder.apply(&fake, Fallback::Wait, &new).unwrap() else {
            panic!("the weight did not go through");
        };
        assert_eq!(part.waiting.len(), 1);
        assert!(part.waiting[0].reason.contains("nope"));
        assert_eq!(fake.get("nodes/a").unwrap().live.weight, 5);
        assert!(fake.get("nodes/c").is_none());
    }

    #[test]
    fn no_answer_reloads_with_auto_and_fails_with_runtime_only() {
        let (mut folder, fake) = (Folder::new(), Fake::of(BASE));
        let new = BASE.to_string() + C;
        fake.answers.set(0);
        assert!(matches!(
            folder.apply(&fake, Fallback::Reload, &new).unwrap(),
            Ended::Reload
        ));
        assert!(folder.logged().contains("the runtime API did not answer"));
        assert!(folder.apply(&fake, Fallback::Wait, &new).is_err());
    }

    #[test]
    fn drift_only_a_reload_repairs_is_a_warning_when_nothing_changed() {
        let (mut folder, fake) = (Folder::new(), Fake::of(BASE));
        fake.set("nodes/a", |s| s.live.id = 99);
        // Even `--apply runtime`: the folder asks for no change.
        let ended = folder.apply(&fake, Fallback::Wait, BASE).unwrap();
        assert!(matches!(ended, Ended::Reload));
        assert!(fake.sent().is_empty());
        // Drift the runtime repairs is repaired: a server deleted by hand.
        let fake = Fake::of(BASE);
        fake.servers.borrow_mut().retain(|s| s.live.name != "b");
        assert!(matches!(
            folder.apply(&fake, Fallback::Wait, BASE).unwrap(),
            Ended::All(_)
        ));
        assert!(fake.get("nodes/b").is_some());
    }

    #[test]
    fn a_removal_already_draining_is_not_drained_again() {
        let (mut folder, fake) = (Folder::new(), Fake::of(BASE));
        let b = Target::new("nodes", "b");
        let mut pending = Pending::default();
        pending.insert(b.clone(), Why::Removal, Duration::from_secs(60));
        pending.save(&folder.dir(), &Pending::default()).unwrap();
        fake.set("nodes/b", |s| {
            s.live.admin_state = FORCED_DRAIN;
            s.sessions = 3;
        });
        let new = BASE.replace(B, "");
        assert!(matches!(
            folder.apply(&fake, Fallback::Reload, &new).unwrap(),
            Ended::All(_)
        ));
        let drained = fake
            .sent()
            .iter()
            .filter(|c| c.contains("nodes/b state drain"))
            .count();
        assert_eq!(drained, 0, "{:?}", fake.sent());
        assert!(Pending::load(&folder.dir()).removing(&b), "still busy");
    }

    /// A pass the worker would make, with nothing new to run.
    fn settle_once(folder: &mut Folder, fake: &Fake, rendered: &str) -> Pending {
        std::fs::write(folder.output.path(), rendered).unwrap();
        match folder.apply(fake, Fallback::Reload, rendered).unwrap() {
            Ended::All(Left::Passed(pending)) => pending,
            ended => panic!("{ended:?}"),
        }
    }

    #[test]
    fn on_3_1_the_only_servers_serve_until_their_init_state_replacement_is_up() {
        let (mut folder, mut fake) = (Folder::new(), Fake::of(BASE));
        fake.version = (3, 1);
        let (a, b) = (Target::new("nodes", "a"), Target::new("nodes", "b"));
        let new = BASE
            .replace(B, "")
            .replace("    server a 10.0.0.1:80 check weight 1 id 11\n", "")
            + C;
        let Ended::All(Left::Passed(pending)) =
            folder.apply(&fake, Fallback::Reload, &new).unwrap()
        else {
            panic!("not applied at runtime");
        };
        // c waits DOWN by init-state, nothing of hacfg's to finish; a and b
        // serve on, waiting for c.
        assert!(fake.sent().iter().any(|c| c.ends_with("init-state down")));
        assert!(pending.get(&Target::new("nodes", "c")).is_none());
        assert!(pending.kept(&a) && pending.kept(&b), "{pending:?}");
        let waits_for: Vec<&str> = pending
            .get(&a)
            .unwrap()
            .replacements
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(waits_for, ["c"]);
        assert!(pending.is_waiting(), "a worker is needed");
        assert_eq!(fake.get("nodes/a").unwrap().live.admin(), Admin::Ready);
        // Still unchecked: nothing changes.
        assert!(settle_once(&mut folder, &fake, &new).kept(&a));
        // c passes its check and is UP: a and b drain, then go once idle.
        fake.set("nodes/c", |s| {
            s.check = "L7OK".into();
            s.live.op_state = 2;
        });
        let pending = settle_once(&mut folder, &fake, &new);
        assert!(pending.removing(&a) && pending.removing(&b), "{pending:?}");
        assert_eq!(fake.get("nodes/a").unwrap().live.admin(), Admin::Drain);
        assert!(settle_once(&mut folder, &fake, &new).is_empty());
        assert!(fake.get("nodes/a").is_none() && fake.get("nodes/b").is_none());
    }

    #[test]
    fn on_3_1_a_removal_after_an_init_state_add_keeps_the_last_server_serving() {
        let (mut folder, mut fake) = (Folder::new(), Fake::of(BASE));
        fake.version = (3, 1);
        let a = Target::new("nodes", "a");
        // One run adds c (a member-join): nothing is recorded.
        let added = BASE.to_string() + C;
        assert!(settle_once(&mut folder, &fake, &added).is_empty());
        // b went DOWN by its checks: a is the only server that serves.
        fake.set("nodes/b", |s| s.live.op_state = 0);
        // The next run removes a (a member-leave) before c's first check.
        let a_line = "    server a 10.0.0.1:80 check weight 1 id 11\n";
        let left = added.replace(a_line, "");
        let pending = settle_once(&mut folder, &fake, &left);
        assert!(pending.kept(&a), "{pending:?}");
        assert!(folder.logged().contains("runtime: kept `nodes/a` serving"));
        assert_eq!(fake.get("nodes/a").unwrap().live.admin(), Admin::Ready);
        // Once c has a result but is DOWN (it failed), a waits on for it.
        fake.set("nodes/c", |s| s.check = "L4CON".into());
        assert!(settle_once(&mut folder, &fake, &left).kept(&a));
        fake.set("nodes/c", |s| {
            s.check = "L7OK".into();
            s.live.op_state = 2;
        });
        assert!(settle_once(&mut folder, &fake, &left).removing(&a));
    }

    #[test]
    fn the_live_state_is_as_a_run_left_it() {
        let desired = config::servers(&(BASE.to_string() + C));
        let mut live = crate::haproxy::state::all_up(BASE);
        let done = Executed {
            done: Vec::new(),
            checking: vec![Target::new("nodes", "c")],
            starting: Vec::new(),
            draining: vec![Target::new("nodes", "b")],
        };
        as_now(&mut live, &done, &desired);
        let admin: Vec<(&str, Admin)> = live.iter().map(|l| (l.name.as_str(), l.admin())).collect();
        assert_eq!(
            admin,
            [
                ("a", Admin::Ready),
                ("b", Admin::Drain),
                ("c", Admin::Drain)
            ]
        );
        assert_eq!(live[2].id, 13);
    }
}
