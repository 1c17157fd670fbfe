//! The waiting part of a runtime change, out of the handler's way.
//!
//! A run that changes servers only tells HAProxy (see `haproxy::execute`)
//! and records what it drained in `.hacfg.pending`. What is due later — a
//! new server's first check, a removed server going idle — is finished by a
//! [`pass`]: every later run makes one, and the run that left work pending
//! starts one detached worker (see `worker`) that polls HAProxy without
//! the folder lock and makes a pass under it whenever something is due. Each pass re-reads the record, the config file and the live servers,
//! so it acts only on what still matches them.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use super::pending::{Entry, Pending, Why};
use crate::haproxy::config::Server;
use crate::haproxy::execute::{self, Executed, Op, SafeAdd};
use crate::haproxy::state::{Admin, Live};
use crate::haproxy::{Named, Runtime, Target};
use crate::log::Log;

/// How long hacfg waits for its own drains.
#[derive(Debug, Clone, Copy)]
pub struct Waits {
    /// For requests in flight on removed servers (`--drain-timeout`).
    pub drain: Duration,
    /// For a new server's first health check (`--check-timeout`).
    pub first_check: Duration,
}

/// What runtime work a run leaves waiting for HAProxy.
#[derive(Debug, Default)]
pub enum Left {
    /// No pass was made: nothing was recorded (or there is no socket).
    #[default]
    Nothing,
    /// A pass left the record so.
    Passed(Pending),
    /// The pass failed; `waiting`: whether a worker is needed for it.
    Failed { waiting: bool },
}

impl Left {
    /// Whether work waits: what the worker is started for.
    pub fn waiting(&self) -> bool {
        match self {
            Left::Nothing => false,
            Left::Passed(pending) => pending.is_waiting(),
            Left::Failed { waiting } => *waiting,
        }
    }
}

/// Records, before `ops` run, what they will drain: a run that dies or
/// loses its socket half-way leaves its drains known, and the next pass
/// finishes them (an entry whose server never came is simply dropped).
pub fn intend(dir: &Path, ops: &[Op], live: &[Live], safe: SafeAdd, waits: Waits) -> Result<()> {
    let before = Pending::load(dir)?;
    let mut pending = before.clone();
    for op in ops {
        match op {
            Op::Add(s) if s.check && safe == SafeAdd::Drain => {
                let target = Target::new(&s.backend, &s.name);
                pending.insert(target, Why::FirstCheck, waits.first_check);
            }
            Op::Delete(target) => {
                // Drained already, by an operator: never undone by hacfg.
                let by_operator = !pending.removing(target)
                    && live
                        .iter()
                        .any(|l| l.is(target) && l.admin() == Admin::Drain);
                pending.insert(target.clone(), Why::Removal, waits.drain);
                pending.mark_operator_drain(target, by_operator);
            }
            _ => {}
        }
    }
    pending.save(dir, &before)
}

/// One pass under the exclusive lock: records what `executed` drained,
/// drops entries that no longer match the files, HAProxy or the operator,
/// and finishes what is due. Returns the record as it now is.
pub fn pass(
    api: &dyn Runtime,
    dir: &Path,
    desired: &[Server],
    live: &[Live],
    executed: Option<&Executed>,
    waits: Waits,
    log: &mut Log,
) -> Result<Pending> {
    let before = Pending::load(dir)?;
    let mut pending = before.clone();
    if let Some(executed) = executed {
        for t in &executed.checking {
            pending.insert(t.clone(), Why::FirstCheck, waits.first_check);
        }
        for t in &executed.draining {
            pending.insert(t.clone(), Why::Removal, waits.drain);
        }
    }
    if !pending.is_empty() {
        reconcile(api, &mut pending, desired, live, log)?;
        finish_due(api, &mut pending, log)?;
    }
    pending.save(dir, &before)?;
    crate::metrics::pending(&pending);
    Ok(pending)
}

/// What a pass decides for one entry, against HAProxy and the files.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Its server is no longer live: nothing left to do.
    Gone,
    /// An operator put it in maintenance: hacfg leaves it so.
    Maint,
    /// Someone else set it ready: nothing to do.
    Ready,
    /// Wanted again, but an operator had drained it before it left.
    OperatorDrained,
    /// Wanted again: hacfg's drain is undone.
    Undrain,
    /// Still waits, as this entry (its id learnt; a new server no longer
    /// wanted becomes a removal: never set ready, deleted once idle).
    Keep(Entry),
}

/// Judges `entry` by its server in `live` and whether `desired` lists it.
fn judge(entry: Entry, live: &[Live], desired: &[Server]) -> Verdict {
    let Some(l) = live.iter().find(|l| l.is(&entry.target)) else {
        return Verdict::Gone;
    };
    let wanted = desired.iter().any(|s| s.is(&entry.target));
    match (entry.why, l.admin(), wanted) {
        (Why::FirstCheck, Admin::Maint, _) | (Why::Removal, Admin::Maint, true) => Verdict::Maint,
        (_, Admin::Ready, _) => Verdict::Ready,
        (Why::Removal, Admin::Drain, true) if entry.operator_drained => Verdict::OperatorDrained,
        (Why::Removal, Admin::Drain, true) => Verdict::Undrain,
        (Why::FirstCheck, _, false) => Verdict::Keep(Entry {
            why: Why::Removal,
            ..entry
        }),
        _ => Verdict::Keep(Entry {
            id: (l.id != 0).then_some(l.id),
            ..entry
        }),
    }
}

/// Drops the entries whose server is gone, or that an operator or a later
/// change made moot; undoes hacfg's drain of a removed server wanted again.
fn reconcile(
    api: &dyn Runtime,
    pending: &mut Pending,
    desired: &[Server],
    live: &[Live],
    log: &mut Log,
) -> Result<()> {
    let mut again = Vec::new();
    for entry in std::mem::take(&mut pending.entries) {
        let t = entry.target.clone();
        let said = match judge(entry, live, desired) {
            Verdict::Keep(entry) => {
                pending.entries.push(entry);
                continue;
            }
            Verdict::Undrain => {
                again.push(t);
                continue;
            }
            Verdict::Gone => {
                log.debug(&format!("settle: `{t}` is no longer live; nothing left to do"));
                continue;
            }
            Verdict::Maint => "is in maintenance, set by an operator: hacfg leaves it so",
            Verdict::Ready => "was set ready by someone else: nothing to do",
            Verdict::OperatorDrained => {
                "is in the nodes folder again; an operator had drained it before it left, so \
                 it stays drained"
            }
        };
        log.info(&format!("settle: `{t}` {said}"));
    }
    undo_drains(api, &again, log)
}

/// Puts back into service removed servers that are wanted again.
fn undo_drains(api: &dyn Runtime, again: &[Target], log: &mut Log) -> Result<()> {
    if again.is_empty() {
        return Ok(());
    }
    execute::set_ready(api, again)?;
    crate::metrics::undrained(again.len());
    for t in again {
        log.info(&format!(
            "settle: `{t}` is in the nodes folder again: hacfg's drain is undone, it serves"
        ));
    }
    Ok(())
}

/// Sets ready the new servers whose first check has run (and that are
/// still wanted: a removal turns the entry into a `Removal`), deletes the
/// idle removed ones.
fn finish_due(api: &dyn Runtime, pending: &mut Pending, log: &mut Log) -> Result<()> {
    let done = execute::finish(
        api,
        &pending.targets(Why::FirstCheck),
        &pending.targets(Why::Removal),
    )?;
    crate::metrics::finished(&done);
    for (t, stat) in &done.ready {
        pending.remove(t);
        let check = &stat.check;
        if stat.status.starts_with("DOWN") {
            log.warn(&format!(
                "settle: added `{t}`, but its first health check failed ({check}): it is DOWN \
                 and takes no request until its checks pass"
            ));
        } else {
            log.info(&format!(
                "settle: `{t}` passed its first health check ({check}): it serves"
            ));
        }
    }
    for t in &done.deleted {
        pending.remove(t);
        log.info(&format!("settle: removed `{t}` (idle)"));
    }
    for (t, answer) in &done.refused {
        pending.expire(t);
        log.warn(&format!(
            "settle: HAProxy refused `del server {t}`: {answer}; it stays drained (no new \
             request), and later runs try again"
        ));
    }
    Ok(())
}

/// What an overdue entry means, for the log and `status`.
pub fn overdue_text(entry: &Entry) -> String {
    match entry.why {
        Why::FirstCheck => format!(
            "`{}` had no health check by its deadline: it stays drained (no request) and any \
             later hacfg run sets it ready once its first check has run",
            entry.target
        ),
        Why::Removal => format!(
            "`{}` still had requests in flight at --drain-timeout: it stays drained (no new \
             request) and any later hacfg run deletes it once idle",
            entry.target
        ),
    }
}
