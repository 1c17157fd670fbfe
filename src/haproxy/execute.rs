//! Runtime operations, carried out without waiting for HAProxy to settle.
//!
//! A new server with `check` is added, its checks enabled, and put in drain:
//! it takes no client request until [`finish`] finds its first check has
//! run and sets it ready (a server that failed that check is DOWN, so
//! `ready` is safe then). A removed server is drained at once (no new
//! request) and deleted by [`finish`] once idle; its requests in flight
//! finish. Whoever calls [`finish`] decides when and how often.

use anyhow::Result;

use super::config::Server;
use super::endpoint;
use super::stat::Stat;
use super::state::Live;
use super::target::Target;
use super::{Error, Named, Runtime, Undo};

/// One change made through the runtime API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `add server`, then into drain until its first check (or ready).
    Add(Server),
    /// Drain, then `del server` once idle.
    Delete(Target),
    /// A new address; with `check`, the server is also set DOWN, so that
    /// it takes no request at the new address before a check passed there.
    SetAddr {
        target: Target,
        addr: String,
        port: u16,
        check: bool,
    },
    SetWeight {
        target: Target,
        weight: u16,
    },
}

/// What `-v` shows of an operation: `add \`nodes/s1\` at [fd00::5]:80`.
impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Add(s) => write!(
                f,
                "add `{}/{}` at {} weight {}",
                s.backend,
                s.name,
                endpoint(&s.addr, s.port),
                s.weight
            ),
            Op::Delete(target) => write!(f, "delete `{target}`"),
            Op::SetAddr {
                target, addr, port, ..
            } => write!(f, "move `{target}` to {}", endpoint(addr, *port)),
            Op::SetWeight { target, weight } => write!(f, "set `{target}` weight {weight}"),
        }
    }
}

/// What [`execute`] did, and what it left to [`finish`].
#[derive(Debug, Default)]
pub struct Executed {
    /// One line per change, for the log.
    pub done: Vec<String>,
    /// New servers in drain until their first check has run.
    pub checking: Vec<Target>,
    /// New servers HAProxy keeps DOWN until a check passes (`init-state`):
    /// nothing to finish, but they wait for their first check too.
    pub starting: Vec<Target>,
    /// Removed servers in drain until they are idle.
    pub draining: Vec<Target>,
}

/// How new servers with checks are kept from traffic until checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SafeAdd {
    /// In drain until [`finish`] sees their first check (HAProxy 2.6-3.0).
    Drain,
    /// `init-state down`: HAProxy keeps them DOWN until a check passes
    /// (3.1 and later); nothing is left to finish.
    InitState,
}

impl SafeAdd {
    /// The way the running HAProxy's version allows.
    pub fn for_version(version: (u32, u32)) -> SafeAdd {
        if version >= (3, 1) {
            SafeAdd::InitState
        } else {
            SafeAdd::Drain
        }
    }
}

/// Applies `ops` without waiting. When HAProxy refuses one, what this run
/// already changed is undone and the error is [`Error::Refused`] with
/// HAProxy's words.
pub fn execute(api: &dyn Runtime, ops: &[Op], live: &[Live], safe: SafeAdd) -> Result<Executed> {
    let mut run = Execution {
        api,
        live,
        safe,
        undo: Vec::new(),
        out: Executed::default(),
    };
    // Address and weight changes first, then adds, then the drains.
    run.settings(ops)?;
    run.adds(ops)?;
    run.drains(ops)?;
    Ok(run.out)
}

/// What one [`finish`] pass did.
#[derive(Debug, Default)]
pub struct Finished {
    /// Set ready after their first check, with what `show stat` said then.
    pub ready: Vec<(Target, Stat)>,
    /// Deleted once idle.
    pub deleted: Vec<Target>,
    /// Idle, but `del server` was refused (a server another one tracks,
    /// say): put back in drain, with HAProxy's words.
    pub refused: Vec<(Target, String)>,
}

/// One pass, no waiting: `checking` servers whose first check has run are
/// set ready, idle `draining` ones deleted; the others are left as they are.
/// Each target comes with its server id, where known (see `stats_of`).
pub fn finish(
    api: &dyn Runtime,
    checking: &[(Target, Option<u32>)],
    draining: &[(Target, Option<u32>)],
) -> Result<Finished> {
    let all: Vec<(Target, Option<u32>)> = checking.iter().chain(draining).cloned().collect();
    if all.is_empty() {
        return Ok(Finished::default());
    }
    let stats = api.stats_of(&all)?;
    let ready: Vec<(Target, Stat)> = checking
        .iter()
        .map(|(t, _)| t)
        .filter_map(|t| {
            // An operator's maint, set since the run read the live state,
            // is left alone: `state ready` would clear it.
            let stat = stats
                .get(t)
                .filter(|s| s.checked() && !s.status.starts_with("MAINT"))?;
            Some((t.clone(), stat.clone()))
        })
        .collect();
    let targets: Vec<Target> = ready.iter().map(|(t, _)| t.clone()).collect();
    set_ready(api, &targets)?;
    let idle: Vec<Target> = draining
        .iter()
        .map(|(t, _)| t)
        .filter(|t| stats.get(*t).is_none_or(|s| s.sessions == 0))
        .cloned()
        .collect();
    let (deleted, refused) = delete(api, &idle)?;
    Ok(Finished {
        ready,
        deleted,
        refused,
    })
}

/// `set server … state ready` for each target, in one batch.
pub fn set_ready(api: &dyn Runtime, targets: &[Target]) -> Result<()> {
    let commands: Vec<String> = targets
        .iter()
        .map(|t| format!("set server {t} state ready"))
        .collect();
    check_answers(api, &commands, &api.batch(&commands)?)
}

/// `set server … state drain` for each target, in one batch: a server
/// kept serving until its replacement was UP, drained now.
pub fn set_drain(api: &dyn Runtime, targets: &[Target]) -> Result<()> {
    if targets.is_empty() {
        return Ok(());
    }
    let commands: Vec<String> = targets
        .iter()
        .map(|t| format!("set server {t} state drain"))
        .collect();
    check_answers(api, &commands, &api.batch(&commands)?)
}

/// Answers that must be empty: HAProxy's words for the first that is not.
fn check_answers(api: &dyn Runtime, commands: &[String], answers: &[String]) -> Result<()> {
    match commands.iter().zip(answers).find(|(_, a)| !a.is_empty()) {
        None => Ok(()),
        Some((command, answer)) => Err(Error::Refused(format!(
            "HAProxy refused `{command}` on `{}`: {answer}",
            api.path().display()
        ))
        .into()),
    }
}

/// `state maint` then `del server` for each target, one exchange per target
/// (see [`Runtime::batch`]). A server that still has connections
/// attached is put back in drain (no traffic while it finishes) and left
/// out of the result.
/// Servers deleted, and those whose `del server` was refused (with HAProxy's words).
type Deleted = (Vec<Target>, Vec<(Target, String)>);

fn delete(api: &dyn Runtime, targets: &[Target]) -> Result<Deleted> {
    let commands: Vec<String> = targets
        .iter()
        .flat_map(|t| {
            [
                format!("set server {t} state maint"),
                format!("del server {t}"),
            ]
        })
        .collect();
    let answers = api.batch(&commands)?;
    let mut deleted = Vec::with_capacity(targets.len());
    let mut refused = Vec::new();
    let mut back = Vec::new();
    for (target, answer) in targets.iter().zip(answers.iter().skip(1).step_by(2)) {
        if answer.contains("Server deleted") || answer.contains("No such server") {
            deleted.push(target.clone());
            continue;
        }
        // Still busy, or refused for good: back in drain either way, so
        // that hacfg's own maint never lingers (nor spreads to trackers).
        back.push(format!("set server {target} state drain"));
        if !answer.contains("connections attached") {
            refused.push((target.clone(), answer.clone()));
        }
    }
    api.batch(&back)?;
    Ok((deleted, refused))
}

/// Whether an undo command's answer says it was done: nothing (a state or
/// weight), `Server deleted.` (or gone already), `IP changed` or `no need
/// to change` (an address).
fn undone(answer: &str) -> bool {
    answer.is_empty()
        || ["Server deleted", "No such server", "changed", "no need"]
            .iter()
            .any(|w| answer.contains(w))
}

/// One runtime apply in progress: what to undo if HAProxy refuses a step.
struct Execution<'a> {
    api: &'a dyn Runtime,
    live: &'a [Live],
    safe: SafeAdd,
    /// Commands that put back what this run changed, in the order run.
    undo: Vec<String>,
    out: Executed,
}

/// A command and what its answer must look like.
struct Step {
    /// The server it changes.
    target: Target,
    command: String,
    ok: fn(&str) -> bool,
    /// Commands that undo it once it succeeded.
    undo: Vec<String>,
}

impl Step {
    /// A command whose success is an empty answer, with nothing to undo.
    fn quiet(target: &Target, command: String) -> Step {
        Step {
            target: target.clone(),
            command,
            ok: str::is_empty,
            undo: Vec::new(),
        }
    }
}

impl Execution<'_> {
    /// Sends `steps` in one batch. Every step that succeeded is recorded
    /// for undoing; if any was refused, all of this run's changes are
    /// undone and the error carries HAProxy's words for the first refusal.
    fn send(&mut self, steps: Vec<Step>) -> Result<()> {
        let commands: Vec<String> = steps.iter().map(|s| s.command.clone()).collect();
        let answers = self.api.batch(&commands)?;
        let mut refused = None;
        for (step, answer) in steps.into_iter().zip(&answers) {
            if (step.ok)(answer) {
                self.undo.extend(step.undo);
            } else if refused.is_none() {
                let words = format!(
                    "HAProxy refused a runtime change: `{}`: {answer}",
                    step.command
                );
                refused = Some((step.target, words));
            }
        }
        let Some((target, words)) = refused else {
            return Ok(());
        };
        let undo = self.undo();
        Err(Error::RefusedChange {
            target,
            words,
            undo,
        }
        .into())
    }

    /// Puts back what this run changed, in reverse order, and says how
    /// that went: a refused or unanswered undo is never taken for done.
    fn undo(&self) -> Undo {
        if self.undo.is_empty() {
            return Undo::Nothing;
        }
        let commands: Vec<String> = self.undo.iter().rev().cloned().collect();
        let answers = match self.api.batch(&commands) {
            Ok(answers) => answers,
            Err(e) => return Undo::Failed(format!("{e:#}")),
        };
        let refused = commands.iter().zip(&answers).find(|(_, a)| !undone(a));
        match refused {
            None => Undo::Done,
            Some((command, answer)) => {
                Undo::Failed(format!("HAProxy refused `{command}`: {answer}"))
            }
        }
    }

    fn live(&self, target: &Target) -> Option<&Live> {
        self.live.iter().find(|l| l.is(target))
    }

    /// `set server … addr` and `… weight`, in one batch.
    fn settings(&mut self, ops: &[Op]) -> Result<()> {
        let mut steps = Vec::new();
        for op in ops {
            let (step, done) = match op {
                Op::SetAddr {
                    target,
                    addr,
                    port,
                    check,
                } => {
                    let undo = self
                        .live(target)
                        .map(|l| format!("set server {target} addr {} port {}", l.addr, l.port));
                    steps.push(Step {
                        target: target.clone(),
                        command: format!("set server {target} addr {addr} port {port}"),
                        ok: |a| a.contains("changed") || a.contains("no need"),
                        undo: undo.into_iter().collect(),
                    });
                    let at = endpoint(addr, *port);
                    if !*check {
                        self.out.done.push(format!("set `{target}` to {at}"));
                        continue;
                    }
                    let down = Step::quiet(target, format!("set server {target} health down"));
                    let done =
                        format!("set `{target}` to {at}, DOWN until a health check passes there");
                    (down, done)
                }
                Op::SetWeight { target, weight } => {
                    let undo = self
                        .live(target)
                        .map(|l| format!("set server {target} weight {}", l.weight));
                    let step = Step {
                        undo: undo.into_iter().collect(),
                        ..Step::quiet(target, format!("set server {target} weight {weight}"))
                    };
                    (step, format!("set `{target}` weight {weight}"))
                }
                Op::Add(_) | Op::Delete(_) => continue,
            };
            steps.push(step);
            self.out.done.push(done);
        }
        self.send(steps)
    }

    /// `add server`, in one batch; a server with checks goes into drain
    /// with its checks on, one without straight into service.
    fn adds(&mut self, ops: &[Op]) -> Result<()> {
        let mut steps = Vec::new();
        for op in ops {
            let Op::Add(s) = op else { continue };
            let target = Target::new(&s.backend, &s.name);
            let init_state = s.check && self.safe == SafeAdd::InitState;
            let add = format!(
                "add server {target} {} {}{}",
                endpoint(&s.addr, s.port),
                s.keywords,
                if init_state { " init-state down" } else { "" }
            );
            steps.push(Step {
                target: target.clone(),
                command: add.trim_end().to_string(),
                ok: |a| a.contains("New server registered"),
                // Undone in reverse: `state maint`, then `del server`.
                undo: vec![
                    format!("del server {target}"),
                    format!("set server {target} state maint"),
                ],
            });
            self.then_serve(&mut steps, target, s.check, init_state);
        }
        self.send(steps)
    }

    /// The steps that follow an `add server`: checks on, then ready
    /// (`init-state`: HAProxy keeps it DOWN until checked), in drain until
    /// its first check, or ready at once without checks.
    fn then_serve(&mut self, steps: &mut Vec<Step>, target: Target, check: bool, init: bool) {
        if check {
            steps.push(Step::quiet(&target, format!("enable health {target}")));
        }
        let (state, done) = match (check, init) {
            (true, true) => (
                "ready",
                format!("added `{target}`, DOWN until its first health check passes (init-state)"),
            ),
            (true, false) => (
                "drain",
                format!("added `{target}` in drain until its first health check"),
            ),
            (false, _) => ("ready", format!("added `{target}`")),
        };
        steps.push(Step::quiet(
            &target,
            format!("set server {target} state {state}"),
        ));
        self.out.done.push(done);
        match (check, init) {
            (true, false) => self.out.checking.push(target),
            (true, true) => self.out.starting.push(target),
            (false, _) => {}
        }
    }

    /// Drains every removed server (no new request); [`finish`] deletes it.
    fn drains(&mut self, ops: &[Op]) -> Result<()> {
        let mut steps = Vec::new();
        for op in ops {
            let Op::Delete(target) = op else { continue };
            steps.push(Step::quiet(
                target,
                format!("set server {target} state drain"),
            ));
            self.out.draining.push(target.clone());
        }
        self.send(steps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::haproxy::config;
    use crate::haproxy::fake::Fake;
    use crate::haproxy::state::{Admin, FORCED_DRAIN};

    const BASE: &str = "backend nodes\n    balance roundrobin\n    server a 10.0.0.1:80 check weight 1 id 11\n    server b 10.0.0.2:80 check weight 1 id 12\n";

    fn server(line: &str) -> Server {
        config::servers(&format!("backend nodes\n    {line}\n")).remove(0)
    }

    fn run(fake: &Fake, ops: &[Op], safe: SafeAdd) -> Result<Executed> {
        let live = fake.live()?;
        execute(fake, ops, &live, safe)
    }

    #[test]
    fn a_checked_server_waits_in_drain_and_a_removed_one_drains() {
        let fake = Fake::of(BASE);
        let ops = [
            Op::Add(server("server c 10.0.0.3:80 check id 13")),
            Op::Add(server("server d 10.0.0.4:80 id 14")),
            Op::Delete(Target::new("nodes", "b")),
        ];
        let done = run(&fake, &ops, SafeAdd::Drain).unwrap();
        assert_eq!(done.checking, [Target::new("nodes", "c")]);
        assert_eq!(done.draining, [Target::new("nodes", "b")]);
        let admin = |t| fake.get(t).unwrap().live.admin();
        assert_eq!(
            admin("nodes/c"),
            Admin::Drain,
            "no traffic before its check"
        );
        assert!(fake.get("nodes/c").unwrap().checks);
        assert_eq!(admin("nodes/d"), Admin::Ready, "no check: serves at once");
        assert_eq!(admin("nodes/b"), Admin::Drain, "deleted only once idle");
        assert_eq!(admin("nodes/a"), Admin::Ready);
    }

    #[test]
    fn init_state_leaves_nothing_to_finish() {
        let fake = Fake::of(BASE);
        let ops = [Op::Add(server("server c 10.0.0.3:80 check id 13"))];
        let done = run(&fake, &ops, SafeAdd::InitState).unwrap();
        assert!(done.checking.is_empty());
        assert_eq!(done.starting, [Target::new("nodes", "c")]);
        let c = fake.live().unwrap().into_iter().find(|l| l.name == "c");
        let c = c.unwrap();
        assert_eq!(
            (c.admin(), c.op_state, c.unchecked),
            (Admin::Ready, 0, true)
        );
        assert!(
            fake.sent()[0].ends_with("init-state down"),
            "{:?}",
            fake.sent()
        );
    }

    #[test]
    fn a_refusal_undoes_what_the_run_changed() {
        let fake = Fake::of(BASE).refusing("add server nodes/d", "Backend was not found.");
        let ops = [
            Op::SetWeight {
                target: Target::new("nodes", "a"),
                weight: 7,
            },
            Op::Add(server("server c 10.0.0.3:80 id 13")),
            Op::Add(server("server d 10.0.0.4:80 id 14")),
        ];
        let err = run(&fake, &ops, SafeAdd::Drain).unwrap_err();
        let Some(Error::RefusedChange { target, undo, .. }) = err.downcast_ref() else {
            panic!("{err:#}");
        };
        assert_eq!((target.name.as_str(), undo), ("d", &Undo::Done));
        assert!(
            fake.get("nodes/c").is_none(),
            "the added server was deleted"
        );
        assert_eq!(fake.get("nodes/a").unwrap().live.weight, 1);
        assert!(
            err.to_string()
                .contains("what this run changed at runtime was undone")
        );
    }

    #[test]
    fn an_undo_that_failed_says_so() {
        // The weight goes through, the add is refused, the undo finds no
        // socket: HAProxy runs weight 7, and the error must not say undone.
        let fake = Fake::of(BASE).refusing("add server", "Backend was not found.");
        fake.answers.set(3); // `show servers state`, the weights, the adds
        let ops = [
            Op::SetWeight {
                target: Target::new("nodes", "a"),
                weight: 7,
            },
            Op::Add(server("server c 10.0.0.3:80 id 13")),
        ];
        let err = run(&fake, &ops, SafeAdd::Drain).unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("was undone"), "{text}");
        assert!(
            text.contains(
                "undoing what this run changed at runtime failed (`fake.sock` did not answer)"
            ),
            "{text}"
        );
        assert_eq!(fake.get("nodes/a").unwrap().live.weight, 7);
        // An undo HAProxy refuses is no undo either.
        let fake = Fake::of(BASE)
            .refusing("add server", "Backend was not found.")
            .refusing("set server nodes/a weight 1", "No such backend.");
        let err = run(&fake, &ops, SafeAdd::Drain).unwrap_err();
        assert!(
            err.to_string()
                .contains("HAProxy refused `set server nodes/a weight 1`: No such backend."),
            "{err}"
        );
        // A first batch refused whole changed nothing, and says so.
        let fake = Fake::of(BASE).refusing("set server nodes/a weight", "No such server.");
        let err = run(&fake, &ops[..1], SafeAdd::Drain).unwrap_err();
        assert!(
            err.to_string()
                .contains("this run had changed nothing at runtime"),
            "{err}"
        );
    }

    #[test]
    fn finish_sets_checked_servers_ready_and_deletes_idle_ones() {
        let fake = Fake::of(&format!(
            "{BASE}    server c 10.0.0.3:80 check id 13\n    server d 10.0.0.4:80 check id 14\n"
        ));
        for t in ["nodes/a", "nodes/b", "nodes/c", "nodes/d"] {
            fake.set(t, |s| {
                s.live.admin_state = FORCED_DRAIN;
            });
        }
        fake.set("nodes/c", |s| s.check = "INI".into());
        fake.set("nodes/b", |s| s.sessions = 2);
        let of = |names: &[&str]| -> Vec<(Target, Option<u32>)> {
            names
                .iter()
                .map(|n| (Target::new("nodes", n), None))
                .collect()
        };
        let done = finish(&fake, &of(&["a", "c"]), &of(&["b", "d"])).unwrap();
        let ready: Vec<&str> = done.ready.iter().map(|(t, _)| t.name.as_str()).collect();
        assert_eq!(ready, ["a"], "c's first check has not run");
        assert_eq!(done.deleted, [Target::new("nodes", "d")]);
        assert!(done.refused.is_empty(), "b is busy, not refused");
        assert_eq!(fake.get("nodes/b").unwrap().live.admin(), Admin::Drain);
        assert!(fake.get("nodes/d").is_none());
    }

    #[test]
    fn a_refused_delete_goes_back_to_drain() {
        let fake = Fake::of(BASE).refusing("del server nodes/b", "Server is tracked by nodes/a.");
        fake.set("nodes/b", |s| {
            s.live.admin_state = FORCED_DRAIN;
        });
        let done = finish(&fake, &[], &[(Target::new("nodes", "b"), Some(12))]).unwrap();
        assert_eq!(done.refused.len(), 1);
        assert_eq!(
            fake.get("nodes/b").unwrap().live.admin(),
            Admin::Drain,
            "never left in maint"
        );
    }
}
