//! The hitless path: HAProxy's servers brought in line with the render
//! through the runtime API, with no reload and no `haproxy -c` (the rest of
//! the config is byte-identical to the file HAProxy took, and each changed
//! server line is taken by HAProxy's own runtime parser, `add server`).
//!
//! When HAProxy refuses a runtime command, `--apply auto` takes the checked
//! reload path instead (what this run changed at runtime is undone first).
//! `--apply runtime` never reloads: what it cannot take waits for a reload
//! while every other change goes through (see `partial`).

use std::cell::OnceCell;
use std::thread::JoinHandle;

use anyhow::Result;

use super::partial::{self, Part, Record, Sorted, Waiting};
use super::pending::Pending;
use super::plan::{self, Plan};
use super::quarantine::RETRY_AFTER;
use super::{ApplyMode, Settings, settle};
use crate::exit::Failure;
use crate::haproxy::config::{self, Server};
use crate::haproxy::execute::{self, Executed, Op, SafeAdd};
use crate::haproxy::state::{Admin, FORCED_DRAIN, Live};
use crate::haproxy::{self as hap, Dialect, RuntimeApi, Target};
use crate::log::Log;
use crate::output::OutputFile;
use crate::store::Store;

/// How the hitless path ended.
#[derive(Debug)]
pub enum Hitless {
    /// HAProxy runs what `taken` says now (the file may still need
    /// writing); `waiting`: some servers wait for HAProxy (see `settle`).
    Applied { waiting: bool, taken: Taken },
    /// The change takes the reload path.
    Reload,
}

/// What of the render HAProxy took.
#[derive(Debug)]
pub enum Taken {
    /// All of it: the file is the render.
    All,
    /// `--apply runtime`: this part; the rest waits for a reload.
    Part(Part),
}

/// Where the runtime API leads.
enum Route {
    Applied { waiting: bool, taken: Taken },
    Reload(String),
}

/// What to run at runtime, and what the file then holds.
enum Decision {
    Run { taken: Taken, ops: Vec<Op> },
    Reload(String),
}

/// The live servers, read on a thread of their own, if this run may take
/// the hitless path (it reloads, may avoid it, and `--force` asks for none).
pub fn prefetch(s: &Settings) -> Option<JoinHandle<Result<Vec<Live>>>> {
    let api = s.runtime.as_ref()?;
    if s.reload.is_none() || s.apply == ApplyMode::Reload || s.force {
        return None;
    }
    let api = api.clone();
    Some(std::thread::spawn(move || api.live()))
}

/// Whether the folder has runtime work that waits for HAProxy.
/// A run off the hitless path (a reload, `--force`, nothing to change)
/// still finishes what hacfg left pending, against `rendered`; whether work
/// still waits. Problems are warnings: the worker tries again.
pub fn finish_pending(s: &Settings, store: &Store, rendered: &str, log: &mut Log) -> bool {
    let Some(api) = &s.runtime else {
        return false;
    };
    let pending = Pending::load(store.dir());
    if pending.is_empty() {
        return false;
    }
    let desired = config::servers(rendered);
    let passed = api
        .live()
        .inspect(|live| crate::metrics::servers_live(live.len()))
        .and_then(|live| settle::pass(api, store.dir(), &desired, &live, None, s.waits, log));
    match passed {
        Ok(left) => left.is_waiting(),
        Err(e) => {
            log.warn(&format!("settle: {e:#}; the worker tries again"));
            pending.is_waiting()
        }
    }
}

/// What the hitless path works with.
pub struct Context<'a> {
    pub s: &'a Settings,
    pub store: &'a Store,
    pub output: &'a OutputFile,
}

impl Context<'_> {
    /// Tries the runtime API before any check. It also repairs drift when
    /// the file is `unchanged` (a server deleted behind hacfg's back).
    pub fn apply(
        &self,
        live: JoinHandle<Result<Vec<Live>>>,
        rendered: &str,
        unchanged: bool,
        log: &mut Log,
    ) -> Result<Hitless> {
        let live = live
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the runtime reader panicked")));
        let why = match self.route(live, rendered, unchanged, log)? {
            Route::Applied { waiting, taken } => return Ok(Hitless::Applied { waiting, taken }),
            Route::Reload(why) => why,
        };
        if unchanged {
            log.warn(&format!(
                "the live servers differ from `{}` in a way the runtime API cannot repair \
                 ({why}); `hacfg --force render` reloads",
                self.output.path().display()
            ));
        } else if self.s.apply == ApplyMode::Runtime {
            return Err(Failure::NeedsReload(format!(
                "this change needs a reload ({why}), and --apply runtime forbids one: HAProxy \
                 and `{}` are unchanged, and the nodes folder keeps the change",
                self.output.path().display()
            ))
            .into());
        } else {
            log.info(&format!("reloading: {why}"));
        }
        Ok(Hitless::Reload)
    }

    /// Plans, executes without waiting, and makes a settle pass.
    fn route(
        &self,
        live: Result<Vec<Live>>,
        rendered: &str,
        unchanged: bool,
        log: &mut Log,
    ) -> Result<Route> {
        let Some(api) = &self.s.runtime else {
            return Ok(Route::Reload("no runtime API".into()));
        };
        let mut live = match live {
            Ok(live) => live,
            Err(e) if self.s.apply == ApplyMode::Auto => {
                let why = format!("the runtime API did not answer: {e:#}");
                return Ok(Route::Reload(why));
            }
            Err(e) => return Err(e),
        };
        let pending = Pending::load(self.store.dir());
        let old = self
            .output
            .read()?
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let input = Input {
            api,
            live: &live,
            old: old.as_deref(),
            rendered,
            unchanged,
            dialect: OnceCell::new(),
        };
        // A plan that depends on the version (a `cookie`) asks it first.
        if config::newest_keyword(rendered).is_some() {
            input.dialect(log);
        }
        let (taken, executed) = match self.run(&input, &pending, log)? {
            Ran::Done { taken, executed } => (taken, executed),
            Ran::Reload(why) => return Ok(Route::Reload(why)),
        };
        let desired = config::servers(match &taken {
            Taken::All => rendered,
            Taken::Part(part) => &part.config,
        });
        let waiting = self.settle(api, &mut live, &desired, executed.as_ref(), log);
        Ok(Route::Applied { waiting, taken })
    }

    /// Logs what `executed` did, then makes a settle pass; whether work
    /// still waits for HAProxy.
    fn settle(
        &self,
        api: &RuntimeApi,
        live: &mut Vec<Live>,
        desired: &[Server],
        executed: Option<&Executed>,
        log: &mut Log,
    ) -> bool {
        if let Some(done) = executed {
            log_done(done, log);
            as_now(live, done, desired);
        }
        // HAProxy runs the desired servers now, and the removed ones that
        // still drain (an idle one was deleted, a new one is there, with
        // init-state too).
        let leaving = live.iter().filter(|l| {
            l.admin_state & FORCED_DRAIN != 0
                && !desired
                    .iter()
                    .any(|s| s.backend == l.backend && s.name == l.name)
        });
        crate::metrics::servers_live(desired.len() + leaving.count());
        let dir = self.store.dir();
        // HAProxy has been told: whatever the pass meets, the file must
        // follow, and the worker (or the next run) makes the pass again.
        match settle::pass(api, dir, desired, live, executed, self.s.waits, log) {
            Ok(passed) => passed.is_waiting(),
            Err(e) => {
                log.warn(&format!("settle: {e:#}; the worker tries again"));
                true
            }
        }
    }

    /// Decides and executes; again when HAProxy refused again a part tried
    /// again (it waits then, and the rest goes through).
    fn run(&self, input: &Input, pending: &Pending, log: &mut Log) -> Result<Ran> {
        for _ in 0..MAX_ATTEMPTS {
            let (taken, ops) = match self.decide(input)? {
                Decision::Run { taken, ops } => (taken, ops),
                Decision::Reload(why) => return Ok(Ran::Reload(why)),
            };
            // A server hacfg already drains for its removal is left to drain.
            let ops: Vec<Op> = ops
                .into_iter()
                .filter(|op| !matches!(op, Op::Delete(t) if drains_already(pending, input.live, t)))
                .collect();
            match self.execute(input, &ops, log) {
                Ok(executed) => {
                    if let Taken::Part(part) = &taken {
                        let dir = self.store.dir();
                        Record::load(dir).save(dir, &part.waiting)?;
                    }
                    return Ok(Ran::Done { taken, executed });
                }
                Err(e) => match self.refused(e, input)? {
                    Refused::Reload(why) => return Ok(Ran::Reload(why)),
                    Refused::Again => {}
                },
            }
        }
        Err(anyhow::anyhow!(
            "HAProxy refused {MAX_ATTEMPTS} runtime changes in a row, each one part tried \
             again; what this run changed at runtime was undone"
        ))
    }

    /// The runtime operations for the render, or why it takes a reload.
    /// `--apply runtime` takes what it can and leaves the rest waiting
    /// (a run that finds a part no earlier run left waiting changes
    /// nothing: exit 7).
    fn decide(&self, input: &Input) -> Result<Decision> {
        let runtime_only = self.s.apply == ApplyMode::Runtime;
        let run = |ops| {
            Ok(Decision::Run {
                taken: Taken::All,
                ops,
            })
        };
        let planned = plan::plan(input.old, input.rendered, input.live, input.known());
        match (planned, input.old) {
            (Plan::Reload(why), _) if !runtime_only || input.unchanged => Ok(Decision::Reload(why)),
            (Plan::Reload(why), None) => Ok(Decision::Reload(why)),
            (Plan::Reload(_), Some(old)) => self.part(old, input),
            (_, Some(old))
                if runtime_only && !Record::load(self.store.dir()).entries.is_empty() =>
            {
                self.part(old, input)
            }
            (Plan::Nothing, _) => run(Vec::new()),
            (Plan::Runtime(ops), _) => run(ops),
        }
    }

    /// `--apply runtime`: the part of the render the runtime takes now.
    fn part(&self, old: &str, input: &Input) -> Result<Decision> {
        let dir = self.store.dir();
        let record = Record::load(dir);
        let part = match partial::sort(old, input.rendered, input.live, input.known(), &record) {
            Sorted::Part(part) => part,
            Sorted::Blocked(why) => {
                return Ok(Decision::Reload(format!(
                    "HAProxy's live servers differ from the file in a way only a reload \
                     repairs: {why}"
                )));
            }
        };
        let fresh: Vec<&Waiting> = part.waiting.iter().filter(|w| !record.knows(w)).collect();
        if !fresh.is_empty() {
            record.save(dir, &part.waiting)?;
            return Err(Failure::NeedsReload(first_meeting(&fresh, self.output)).into());
        }
        // Nothing waits (any more): the file becomes the render itself.
        let config = if part.waiting.is_empty() {
            input.rendered
        } else {
            &part.config
        };
        let ops = match plan::plan(Some(old), config, input.live, input.known()) {
            Plan::Nothing => Vec::new(),
            Plan::Runtime(ops) => ops,
            Plan::Reload(why) => return Ok(Decision::Reload(why)),
        };
        let taken = if part.waiting.is_empty() {
            Taken::All
        } else {
            Taken::Part(part)
        };
        Ok(Decision::Run { taken, ops })
    }

    /// After HAProxy refused a runtime command (and this run's runtime
    /// changes were undone): `--apply auto` reloads instead. `--apply
    /// runtime` records the refused part as waiting; a part refused for the
    /// first time fails the run (exit 3), one tried again (see
    /// `partial`) is left out and the rest goes through.
    fn refused(&self, err: anyhow::Error, input: &Input) -> Result<Refused> {
        let Some((target, words)) = refusal(&err) else {
            return Err(err);
        };
        if self.s.apply == ApplyMode::Auto {
            return Ok(Refused::Reload(format!("{words}; this was undone")));
        }
        let change = input
            .old
            .and_then(|old| partial::change_of(old, input.rendered, target));
        let Some(change) = change else {
            return Err(err);
        };
        let dir = self.store.dir();
        let record = Record::load(dir);
        let refusal = change.refused(words);
        let again = record.knows(&refusal);
        let mut entries: Vec<Waiting> = record
            .entries
            .iter()
            .filter(|w| !refusal.same_part(w))
            .cloned()
            .collect();
        entries.push(refusal);
        record.save(dir, &entries)?;
        if again {
            return Ok(Refused::Again);
        }
        Err(Failure::Rejected(format!(
            "{words}; what this run changed at runtime was undone, and `{}` was not written. \
             --apply runtime forbids the reload that would take it: later runs apply every \
             other change and leave `{}` waiting (tried again every {}s), and the first run \
             that may reload applies it",
            self.output.path().display(),
            change.target,
            RETRY_AFTER.as_secs()
        ))
        .into())
    }
}

/// Executions a run makes at most: each refusal of a part tried again
/// leaves that part out of the next.
const MAX_ATTEMPTS: usize = 8;

/// What one runtime apply works from.
struct Input<'a> {
    api: &'a RuntimeApi,
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
    fn dialect(&self, log: &mut Log) -> Dialect {
        *self.dialect.get_or_init(|| match self.api.version() {
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

/// How deciding and executing ended.
enum Ran {
    Done {
        taken: Taken,
        executed: Option<Executed>,
    },
    Reload(String),
}

/// What a refusal at runtime leads to.
enum Refused {
    Reload(String),
    /// A part tried again was refused again: decide once more without it.
    Again,
}

/// The server and HAProxy's words, if `err` is its refusal of a runtime
/// command.
fn refusal(err: &anyhow::Error) -> Option<(&Target, &str)> {
    match err.chain().find_map(|e| e.downcast_ref::<hap::Error>())? {
        hap::Error::RefusedChange { target, words } => Some((target, words.as_str())),
        _ => None,
    }
}

/// What a run that first meets parts needing a reload says: what waits,
/// what did and did not change, and what happens next.
fn first_meeting(fresh: &[&Waiting], output: &OutputFile) -> String {
    let reasons: Vec<&str> = fresh.iter().map(|w| w.reason.as_str()).collect();
    format!(
        "this change needs a reload ({}), and --apply runtime forbids one: HAProxy and `{}` are \
         unchanged, and the nodes folder keeps the change (its node files stay as written). \
         Later runs with --apply runtime apply every other change and leave this one waiting; \
         the first run that may reload (--apply auto or reload) applies it",
        reasons.join("; "),
        output.path().display()
    )
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
        if done
            .draining
            .iter()
            .any(|t| t.backend == l.backend && t.name == l.name)
        {
            l.admin_state |= FORCED_DRAIN;
        }
    }
    for t in &done.checking {
        let Some(s) = desired
            .iter()
            .find(|s| s.backend == t.backend && s.name == t.name)
        else {
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
            admin_state: FORCED_DRAIN,
        });
    }
}

impl Context<'_> {
    /// Runs `ops` without waiting, their drains recorded first; `None`
    /// when there is nothing to run.
    fn execute(&self, input: &Input, ops: &[Op], log: &mut Log) -> Result<Option<Executed>> {
        let (api, live) = (input.api, input.live);
        if ops.is_empty() {
            log.debug("runtime API: HAProxy already runs the desired servers");
            return Ok(None);
        }
        let shown: Vec<String> = ops.iter().map(ToString::to_string).collect();
        log.debug(&format!(
            "runtime API: {} operation(s): {}",
            ops.len(),
            shown.join(", ")
        ));
        let safe = safe_add(input, ops, log);
        settle::intend(self.store.dir(), ops, live, safe, self.s.waits)?;
        let executed = execute::execute(api, ops, live, safe)?;
        crate::metrics::ran(ops);
        Ok(Some(executed))
    }
}

/// Whether hacfg already drains `target` for its removal: recorded so, and
/// drained in HAProxy (a run that died between the record and the drain
/// left only the record).
fn drains_already(pending: &Pending, live: &[Live], target: &Target) -> bool {
    pending.removing(target)
        && live
            .iter()
            .any(|l| l.target() == *target && l.admin() == Admin::Drain)
}

/// How new servers with checks are added: HAProxy's version says (asked
/// only when this run adds such a server).
fn safe_add(input: &Input, ops: &[Op], log: &mut Log) -> SafeAdd {
    if !ops.iter().any(|op| matches!(op, Op::Add(s) if s.check)) {
        return SafeAdd::Drain;
    }
    input.dialect(log).safe_add()
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
