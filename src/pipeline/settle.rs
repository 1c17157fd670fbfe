//! The waiting part of a runtime change, out of the handler's way.
//!
//! A run that changes servers only tells HAProxy (see `haproxy::execute`)
//! and records what it drained in `.hacfg.pending`. What is due later — a
//! new server's first check, a removed server going idle — is finished by a
//! [`pass`]: every later run makes one, and the run that left work pending
//! starts one detached worker (see `worker`) that polls HAProxy without
//! the folder lock and makes a pass under it whenever something is due.
//! Each pass re-reads the record, the config file and the live servers, so
//! it acts only on what still matches them.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use super::Counts;
use super::pending::{Entry, Pending, Replacement, Why};
use super::records::now_ms;
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
pub fn intend(
    dir: &Path,
    (ops, kept): (&[Op], &[Target]),
    live: &[Live],
    safe: SafeAdd,
    waits: Waits,
) -> Result<()> {
    let before = Pending::load(dir);
    let mut pending = before.clone();
    for target in kept {
        pending.insert(target.clone(), Why::KeptServing, waits.first_check);
    }
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

/// Make before break: the removed servers (`Op::Delete` in `ops`) to keep
/// serving, because they are the last servers of their backend that take
/// traffic while servers added to it wait for their first check: added by
/// `ops`, recorded by an earlier run (in hacfg's drain), or live and kept
/// DOWN by HAProxy's `init-state` until then (3.1 and later, where hacfg
/// records nothing: HAProxy itself says which have no check result). A
/// server whose node is `dead` (a failed member) is never kept.
pub fn keep(ops: &[Op], live: &[Live], pending: &Pending, dead: &[String]) -> Vec<Target> {
    let now = now_ms();
    let removed: Vec<&Target> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Delete(t) => Some(t),
            _ => None,
        })
        .collect();
    let stays = |l: &&Live| !removed.iter().any(|t| l.is(t));
    let added = |backend: &str| {
        ops.iter()
            .any(|op| matches!(op, Op::Add(s) if s.check && s.backend == backend))
    };
    let starting = |backend: &str| {
        live.iter()
            .filter(stays)
            .any(|l| l.backend == backend && starts(l))
    };
    // A backend whose servers that serve now all leave, and gains some.
    let emptied = |backend: &str| {
        !live
            .iter()
            .filter(stays)
            .any(|l| l.backend == backend && serves(l))
            && (added(backend) || pending.replacing(backend, now) || starting(backend))
    };
    removed
        .iter()
        .filter(|t| !dead.contains(&t.name))
        .filter(|t| live.iter().any(|l| l.is(t) && serves(l)))
        .filter(|t| emptied(&t.backend))
        .map(|t| (*t).clone())
        .collect()
}

/// Whether HAProxy sends `l` requests: ready and running.
fn serves(l: &Live) -> bool {
    // 2 is UP, 1 STARTING (slowstart): `show stat` says UP for both.
    l.admin() == Admin::Ready && matches!(l.op_state, 1 | 2)
}

/// Whether `l` takes no request only because its first health check has
/// not run: ready, and DOWN by `init-state` until a check passes.
fn starts(l: &Live) -> bool {
    l.admin() == Admin::Ready && l.op_state == 0 && l.unchecked
}

/// What a pass finished, and the record as it left it.
#[derive(Debug, Default)]
pub struct Passed {
    pub pending: Pending,
    pub counts: Counts,
}

/// One pass under the exclusive lock: records what `executed` drained,
/// drops entries that no longer match the files, HAProxy or the operator,
/// and finishes what is due.
pub fn pass(
    api: &dyn Runtime,
    dir: &Path,
    desired: &[Server],
    live: &[Live],
    executed: Option<&Executed>,
    waits: Waits,
    log: &mut Log,
) -> Result<Passed> {
    let before = Pending::load(dir);
    let mut pending = before.clone();
    let mut counts = Counts::default();
    if let Some(executed) = executed {
        for t in &executed.checking {
            pending.insert(t.clone(), Why::FirstCheck, waits.first_check);
        }
        for t in &executed.draining {
            pending.insert(t.clone(), Why::Removal, waits.drain);
        }
    }
    if !pending.is_empty() {
        counts.undrained = reconcile(api, &mut pending, desired, live, log)?;
        let (ready, deleted) = finish_due(api, &mut pending, log)?;
        (counts.ready, counts.deleted) = (ready.len() as u64, deleted);
        counts.drained = drain_kept(api, &mut pending, (desired, live, &ready), waits, log)?;
    }
    pending.save(dir, &before)?;
    let of = |leaves: bool| {
        let entries = pending.entries.iter();
        entries.filter(|e| e.why.leaves() == leaves).count()
    };
    counts.pending = Some((of(false), of(true)));
    Ok(Passed { pending, counts })
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
    /// Kept serving, and wanted again: it simply serves on.
    KeptWanted,
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
    if entry.why == Why::KeptServing {
        if wanted {
            return Verdict::KeptWanted;
        }
        let id = (l.id != 0).then_some(l.id);
        return Verdict::Keep(Entry { id, ..entry });
    }
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
) -> Result<u64> {
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
                log.debug(&format!(
                    "settle: `{t}` is no longer live; nothing left to do"
                ));
                continue;
            }
            Verdict::Maint => "is in maintenance, set by an operator: hacfg leaves it so",
            Verdict::Ready => "was set ready by someone else: nothing to do",
            Verdict::KeptWanted => "is in the nodes folder again: it serves on",
            Verdict::OperatorDrained => {
                "is in the nodes folder again; an operator had drained it before it left, so \
                 it stays drained"
            }
        };
        log.info(&format!("settle: `{t}` {said}"));
    }
    undo_drains(api, &again, log)
}

/// Puts back into service removed servers that are wanted again; how many.
fn undo_drains(api: &dyn Runtime, again: &[Target], log: &mut Log) -> Result<u64> {
    if again.is_empty() {
        return Ok(0);
    }
    execute::set_ready(api, again)?;
    for t in again {
        log.info(&format!(
            "settle: `{t}` is in the nodes folder again: hacfg's drain is undone, it serves"
        ));
    }
    Ok(again.len() as u64)
}

/// Sets ready the new servers whose first check has run (and that are
/// still wanted: a removal turns the entry into a `Removal`), deletes the
/// idle removed ones; how many of each.
fn finish_due(
    api: &dyn Runtime,
    pending: &mut Pending,
    log: &mut Log,
) -> Result<(Vec<Target>, u64)> {
    let done = execute::finish(
        api,
        &pending.targets(Why::FirstCheck),
        &pending.targets(Why::Removal),
    )?;
    for (t, stat) in &done.ready {
        pending.remove(t);
        let check = &stat.check;
        if stat.status.starts_with("DOWN") && passed(check) {
            // Moved to a new address (set DOWN there): rising, not failed.
            log.info(&format!(
                "settle: `{t}` passed a health check ({check}) and serves once HAProxy's \
                 checks see it UP"
            ));
        } else if stat.status.starts_with("DOWN") {
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
    // Those set ready whose check passed, and that HAProxy does not see
    // DOWN, now serve.
    let serving = done
        .ready
        .iter()
        .filter(|(_, stat)| passed(&stat.check) && !stat.status.starts_with("DOWN"));
    let serving = serving.map(|(t, _)| t.clone()).collect();
    Ok((serving, done.deleted.len() as u64))
}

/// The servers kept serving whose time has come: another server of their
/// backend serves (one set ready by this pass, `ready`, or any other that
/// is wanted and ready), none could (no other server is wanted there), or
/// their deadline has passed. The others learn which servers they wait for
/// (a replacement whose first check failed is DOWN, and may still come UP
/// before the deadline).
fn kept_due(
    pending: &mut Pending,
    (desired, live, ready): (&[Server], &[Live], &[Target]),
) -> Vec<Entry> {
    let now = now_ms();
    let leaving: Vec<Target> = pending
        .entries
        .iter()
        .filter(|e| e.why.leaves())
        .map(|e| e.target.clone())
        .collect();
    let staying = |backend: &str| -> Vec<&Live> {
        let wanted = |l: &Live| desired.iter().any(|s| s.is(&l.target()));
        let leaves = |l: &Live| leaving.iter().any(|t| l.is(t));
        live.iter()
            .filter(|l| l.backend == backend && wanted(l) && !leaves(l))
            .collect()
    };
    let mut due = Vec::new();
    for e in pending
        .entries
        .iter_mut()
        .filter(|e| e.why == Why::KeptServing)
    {
        let stay = staying(&e.target.backend);
        let serving =
            ready.iter().any(|t| t.backend == e.target.backend) || stay.iter().any(|l| serves(l));
        e.replacements = stay
            .iter()
            .filter(|l| l.admin() != Admin::Maint)
            .map(|l| Replacement {
                name: l.name.clone(),
                id: (l.id != 0).then_some(l.id),
            })
            .collect();
        if e.overdue(now) || e.replacements.is_empty() || serving {
            due.push(e.clone());
        }
    }
    due
}

/// Whether a check result is a pass (`L4OK`, `L6OK`, `L7OK`, `L7OKC`).
fn passed(check: &str) -> bool {
    check.starts_with('L') && check.contains("OK")
}

/// Drains the servers kept serving whose time has come (see [`kept_due`]).
/// Each becomes a removal, deleted once idle; one someone else drained or
/// put in maintenance is left so. How many were drained.
fn drain_kept(
    api: &dyn Runtime,
    pending: &mut Pending,
    (desired, live, ready): (&[Server], &[Live], &[Target]),
    waits: Waits,
    log: &mut Log,
) -> Result<u64> {
    let due = kept_due(pending, (desired, live, ready));
    let drain: Vec<Target> = due
        .iter()
        .map(|e| e.target.clone())
        .filter(|t| live.iter().any(|l| l.is(t) && l.admin() == Admin::Ready))
        .collect();
    execute::set_drain(api, &drain)?;
    for e in due {
        let t = e.target;
        pending.remove(&t);
        pending.insert(t.clone(), Why::Removal, waits.drain);
        pending.mark_operator_drain(&t, !drain.contains(&t));
        log.info(&format!(
            "settle: drained `{t}`, kept serving until now: no new request; it is deleted once idle"
        ));
    }
    Ok(drain.len() as u64)
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
        Why::KeptServing => format!(
            "`{}` was kept serving past its deadline for a replacement: any later hacfg run \
             drains and deletes it",
            entry.target
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::haproxy::config;
    use crate::haproxy::fake::Fake;
    use crate::haproxy::state::FORCED_DRAIN;
    use crate::log::Verbosity;

    const CONFIG: &str = "backend nodes\n    server a 10.0.0.1:80 check id 11\n    server b 10.0.0.2:80 check id 12\n";

    fn entry(name: &str, why: Why) -> Entry {
        let mut p = Pending::default();
        p.insert(Target::new("nodes", name), why, Duration::from_secs(60));
        p.entries.remove(0)
    }

    fn live_with(name: &str, admin_state: u8) -> Vec<Live> {
        let mut live = crate::haproxy::state::all_up(CONFIG);
        for l in live.iter_mut().filter(|l| l.name == name) {
            l.admin_state = admin_state;
        }
        live
    }

    #[test]
    fn a_server_gone_or_set_by_someone_else_ends_its_entry() {
        let desired = config::servers(CONFIG);
        let gone = entry("z", Why::Removal);
        assert_eq!(judge(gone, &live_with("a", 0), &desired), Verdict::Gone);
        let a = entry("a", Why::FirstCheck);
        assert_eq!(
            judge(a.clone(), &live_with("a", 0), &desired),
            Verdict::Ready
        );
        assert_eq!(judge(a, &live_with("a", 0x01), &desired), Verdict::Maint);
        // A removal in maintenance that is no longer wanted is still deleted.
        let b = entry("b", Why::Removal);
        let kept = judge(b, &live_with("b", 0x01), &desired[..1]);
        assert!(matches!(kept, Verdict::Keep(e) if e.why == Why::Removal && e.id == Some(12)));
    }

    #[test]
    fn a_removal_wanted_again_is_undrained_unless_an_operator_drained_it() {
        let desired = config::servers(CONFIG);
        let live = live_with("b", FORCED_DRAIN);
        let b = entry("b", Why::Removal);
        assert_eq!(judge(b.clone(), &live, &desired), Verdict::Undrain);
        let by_operator = Entry {
            operator_drained: true,
            ..b
        };
        assert_eq!(
            judge(by_operator, &live, &desired),
            Verdict::OperatorDrained
        );
    }

    #[test]
    fn a_new_server_no_longer_wanted_becomes_a_removal() {
        let live = live_with("b", FORCED_DRAIN);
        let desired = config::servers(CONFIG);
        let Verdict::Keep(e) = judge(entry("b", Why::FirstCheck), &live, &desired[..1]) else {
            panic!("dropped");
        };
        assert_eq!(e.why, Why::Removal, "never set ready, deleted once idle");
        let Verdict::Keep(e) = judge(entry("b", Why::FirstCheck), &live, &desired) else {
            panic!("dropped");
        };
        assert_eq!(e.why, Why::FirstCheck, "still waits for its check");
    }

    #[test]
    fn a_pass_finishes_what_is_due_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::of(CONFIG);
        for t in ["nodes/a", "nodes/b"] {
            fake.set(t, |s| s.live.admin_state = FORCED_DRAIN);
        }
        fake.set("nodes/a", |s| s.check = "INI".into());
        let executed = Executed {
            done: Vec::new(),
            checking: vec![Target::new("nodes", "a")],
            starting: Vec::new(),
            draining: Vec::new(),
        };
        let desired = config::servers(CONFIG);
        let mut log = Log::new(Verbosity::Quiet, None);
        let waits = Waits {
            drain: Duration::from_secs(60),
            first_check: Duration::from_secs(60),
        };
        let pass = |fake: &Fake, executed, log: &mut Log| {
            let live = fake.live().unwrap();
            pass(fake, dir.path(), &desired, &live, executed, waits, log).unwrap()
        };
        let Passed {
            pending: left,
            counts,
        } = pass(&fake, Some(&executed), &mut log);
        assert_eq!((counts.ready, counts.pending), (0, Some((1, 0))));
        assert_eq!(
            left.targets(Why::FirstCheck),
            [(Target::new("nodes", "a"), Some(11))]
        );
        assert!(left.is_waiting());
        // b was drained by someone else, not hacfg: never set ready.
        assert_eq!(fake.get("nodes/b").unwrap().live.admin(), Admin::Drain);
        // Its check has run: the next pass (a worker's) sets it ready.
        fake.set("nodes/a", |s| s.check = "L7OK".into());
        let Passed {
            pending: left,
            counts,
        } = pass(&fake, None, &mut log);
        assert!(left.is_empty());
        assert_eq!((counts.ready, counts.pending), (1, Some((0, 0))));
        assert_eq!(fake.get("nodes/a").unwrap().live.admin(), Admin::Ready);
        assert!(Pending::load(dir.path()).is_empty(), "the record is gone");
    }

    #[test]
    fn intend_tells_an_operators_drain_from_hacfgs() {
        let dir = tempfile::tempdir().unwrap();
        let live = live_with("b", FORCED_DRAIN);
        let waits = Waits {
            drain: Duration::from_secs(60),
            first_check: Duration::from_secs(60),
        };
        let ops = [
            Op::Delete(Target::new("nodes", "a")),
            Op::Delete(Target::new("nodes", "b")),
        ];
        intend(dir.path(), (&ops, &[]), &live, SafeAdd::Drain, waits).unwrap();
        let pending = Pending::load(dir.path());
        let by_operator: Vec<bool> = pending.entries.iter().map(|e| e.operator_drained).collect();
        assert_eq!(by_operator, [false, true]);
        assert!(pending.entries.iter().all(|e| e.why == Why::Removal));
    }

    #[test]
    fn the_last_serving_servers_are_kept_while_their_replacements_wait() {
        let live = crate::haproxy::state::all_up(CONFIG);
        let c = "backend nodes\n    server c 10.0.0.3:80 check id 13\n";
        let add = Op::Add(config::servers(c).remove(0));
        let del = |n| Op::Delete(Target::new("nodes", n));
        let none = Pending::default();
        let both = [add.clone(), del("a"), del("b")];
        assert_eq!(keep(&both, &live, &none, &[]).len(), 2);
        // A failed member's server is dead: never kept.
        let dead = ["a".to_string()];
        let kept = keep(&both, &live, &none, &dead);
        assert_eq!(kept, [Target::new("nodes", "b")]);
        // Another server serves on, or none is added: nothing is kept.
        assert!(keep(&[add, del("a")], &live, &none, &[]).is_empty());
        let leave = [del("a"), del("b")];
        assert!(keep(&leave, &live, &none, &[]).is_empty());
        // Nor a server that takes no traffic (DOWN by its checks).
        let mut down = live.clone();
        down[0].op_state = 0;
        // A server added by an earlier run still waits for its first check.
        let mut earlier = Pending::default();
        let c = Target::new("nodes", "c");
        earlier.insert(c, Why::FirstCheck, Duration::from_secs(60));
        assert_eq!(keep(&leave, &live, &earlier, &[]).len(), 2);
        let kept = keep(&leave, &down, &earlier, &[]);
        assert_eq!(kept, [Target::new("nodes", "b")]);
    }

    #[test]
    fn a_server_down_by_init_state_until_its_first_check_is_a_replacement() {
        // 3.1 and later: c was added by an earlier run, ready and DOWN until
        // a check passes; hacfg recorded nothing.
        let both = "backend nodes\n    server a 10.0.0.1:80 check id 11\n    server c 10.0.0.3:80 check id 13\n";
        let mut live = crate::haproxy::state::all_up(both);
        live[1].op_state = 0;
        live[1].unchecked = true;
        let (none, a) = (Pending::default(), Target::new("nodes", "a"));
        let leave = [Op::Delete(a.clone())];
        assert_eq!(keep(&leave, &live, &none, &[]), std::slice::from_ref(&a));
        assert!(
            keep(&leave, &live, &none, &["a".to_string()]).is_empty(),
            "dead"
        );
        // Leaving too, it replaces nothing.
        let both_leave = [Op::Delete(a.clone()), Op::Delete(Target::new("nodes", "c"))];
        assert!(keep(&both_leave, &live, &none, &[]).is_empty());
        // Its first check has a result (it failed: DOWN): no longer waited
        // for, as a server whose hacfg drain ended is not on 2.6.
        let mut failed = live.clone();
        failed[1].unchecked = false;
        assert!(keep(&leave, &failed, &none, &[]).is_empty());
        // In an operator's drain or maintenance, it is no replacement.
        let mut drained = live.clone();
        drained[1].admin_state = FORCED_DRAIN;
        assert!(keep(&leave, &drained, &none, &[]).is_empty());
    }

    /// Server `a` kept serving for its replacement `c`, which waits for its
    /// first check (`c_is` sets how HAProxy sees it), both recorded.
    struct KeptServing {
        dir: tempfile::TempDir,
        fake: Fake,
        desired: Vec<Server>,
        waits: Waits,
        a: Target,
    }

    impl KeptServing {
        fn new(c_is: impl FnOnce(&mut crate::haproxy::fake::Server)) -> KeptServing {
            let dir = tempfile::tempdir().unwrap();
            let both = "backend nodes\n    server a 10.0.0.1:80 check id 11\n    server c 10.0.0.3:80 check id 13\n";
            let fake = Fake::of(both);
            fake.set("nodes/c", c_is);
            let waits = Waits {
                drain: Duration::from_secs(60),
                first_check: Duration::from_secs(60),
            };
            let (a, c) = (Target::new("nodes", "a"), Target::new("nodes", "c"));
            let mut p = Pending::default();
            p.insert(a.clone(), Why::KeptServing, waits.first_check);
            p.insert(c, Why::FirstCheck, waits.first_check);
            p.save(dir.path(), &Pending::default()).unwrap();
            let desired = config::servers(both).split_off(1);
            KeptServing {
                dir,
                fake,
                desired,
                waits,
                a,
            }
        }

        fn pass(&self, log: &mut Log) -> Passed {
            let live = self.fake.live().unwrap();
            let (dir, desired) = (self.dir.path(), &self.desired);
            pass(&self.fake, dir, desired, &live, None, self.waits, log).unwrap()
        }
    }

    #[test]
    fn a_server_kept_serving_drains_once_its_replacement_is_up() {
        let k = KeptServing::new(|s| {
            s.live.admin_state = FORCED_DRAIN;
            s.check = "INI".into();
        });
        let (fake, a) = (&k.fake, &k.a);
        let mut log = Log::new(Verbosity::Quiet, None);
        let left = k.pass(&mut log).pending;
        assert!(left.kept(a), "c has not been checked: a serves on");
        assert_eq!(fake.get("nodes/a").unwrap().live.admin(), Admin::Ready);
        fake.set("nodes/c", |s| s.check = "L7OK".into());
        let Passed { pending, counts } = k.pass(&mut log);
        assert_eq!(fake.get("nodes/c").unwrap().live.admin(), Admin::Ready);
        assert_eq!((counts.ready, counts.drained), (1, 1));
        // a is drained as any removal; idle, the next pass deletes it.
        assert!(pending.removing(a));
        assert_eq!(fake.get("nodes/a").unwrap().live.admin(), Admin::Drain);
        assert!(k.pass(&mut log).pending.is_empty());
        assert!(fake.get("nodes/a").is_none());
    }

    #[test]
    fn a_server_kept_serving_waits_for_a_replacement_that_failed_its_first_check() {
        let k = KeptServing::new(|s| {
            s.live.admin_state = FORCED_DRAIN;
            s.live.op_state = 0;
            s.check = "L4CON".into();
        });
        let (fake, a) = (&k.fake, &k.a);
        let mut log = Log::new(Verbosity::Quiet, None);
        // c is set ready, DOWN: a serves on, waiting for c alone.
        let left = k.pass(&mut log).pending;
        assert_eq!(fake.get("nodes/c").unwrap().live.admin(), Admin::Ready);
        let kept = left.get(a).unwrap();
        assert_eq!(kept.why, Why::KeptServing);
        let names: Vec<&str> = kept.replacements.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["c"]);
        assert_eq!(Pending::load(k.dir.path()), left, "recorded");
        assert!(k.pass(&mut log).pending.kept(a), "c is still DOWN");
        // c comes UP: a drains.
        fake.set("nodes/c", |s| {
            s.live.op_state = 2;
            s.check = "L7OK".into();
        });
        assert!(k.pass(&mut log).pending.removing(a));
        assert!(k.pass(&mut log).pending.is_empty(), "idle, deleted");
        assert!(fake.get("nodes/a").is_none());
    }

    #[test]
    fn a_server_kept_serving_and_wanted_again_serves_on() {
        let desired = config::servers(CONFIG);
        let kept = entry("a", Why::KeptServing);
        assert_eq!(
            judge(kept, &live_with("a", 0), &desired),
            Verdict::KeptWanted
        );
    }

    #[test]
    fn the_worker_is_needed_only_while_work_waits() {
        assert!(!Left::Nothing.waiting());
        assert!(Left::Failed { waiting: true }.waiting());
        assert!(!Left::Passed(Pending::default()).waiting());
        let mut p = Pending::default();
        p.insert(
            Target::new("nodes", "a"),
            Why::Removal,
            Duration::from_secs(60),
        );
        assert!(Left::Passed(p.clone()).waiting());
        p.expire(&Target::new("nodes", "a"));
        assert!(!Left::Passed(p).waiting(), "overdue: later runs finish it");
    }
}
