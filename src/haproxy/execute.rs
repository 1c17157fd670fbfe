//! Runtime operations, carried out without waiting for HAProxy to settle.
//!
//! A new server with `check` is added, its checks enabled, and put in drain:
//! it takes no client request until [`finish`] finds its first check has
//! run and sets it ready (a server that failed that check is DOWN, so
//! `ready` is safe then). A removed server is drained at once (no new
//! request) and deleted by [`finish`] once idle; its requests in flight
//! finish. Whoever calls [`finish`] decides when and how often.

use anyhow::Result;

use super::Error;
use super::api::RuntimeApi;
use super::config::Server;
use super::endpoint;
use super::stat::Stat;
use super::state::Live;
use super::target::Target;

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
pub fn execute(api: &RuntimeApi, ops: &[Op], live: &[Live], safe: SafeAdd) -> Result<Executed> {
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
    api: &RuntimeApi,
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
pub fn set_ready(api: &RuntimeApi, targets: &[Target]) -> Result<()> {
    let commands: Vec<String> = targets
        .iter()
        .map(|t| format!("set server {t} state ready"))
        .collect();
    check_answers(api, &commands, &api.batch(&commands)?)
}

/// Answers that must be empty: HAProxy's words for the first that is not.
fn check_answers(api: &RuntimeApi, commands: &[String], answers: &[String]) -> Result<()> {
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
/// (see [`RuntimeApi::batch`]). A server that still has connections
/// attached is put back in drain (no traffic while it finishes) and left
/// out of the result.
/// Servers deleted, and those whose `del server` was refused (with HAProxy's words).
type Deleted = (Vec<Target>, Vec<(Target, String)>);

fn delete(api: &RuntimeApi, targets: &[Target]) -> Result<Deleted> {
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

/// One runtime apply in progress: what to undo if HAProxy refuses a step.
struct Execution<'a> {
    api: &'a RuntimeApi,
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
        let undo: Vec<String> = self.undo.iter().rev().cloned().collect();
        let _ = self.api.batch(&undo);
        Err(Error::RefusedChange { target, words }.into())
    }

    fn live(&self, target: &Target) -> Option<&Live> {
        self.live
            .iter()
            .find(|l| l.backend == target.backend && l.name == target.name)
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
            if init_state {
                steps.push(Step::quiet(&target, format!("enable health {target}")));
                steps.push(Step::quiet(
                    &target,
                    format!("set server {target} state ready"),
                ));
                self.out.done.push(format!(
                    "added `{target}`, DOWN until its first health check passes (init-state)"
                ));
            } else if s.check {
                steps.push(Step::quiet(&target, format!("enable health {target}")));
                steps.push(Step::quiet(
                    &target,
                    format!("set server {target} state drain"),
                ));
                self.out.done.push(format!(
                    "added `{target}` in drain until its first health check"
                ));
                self.out.checking.push(target);
            } else {
                steps.push(Step::quiet(
                    &target,
                    format!("set server {target} state ready"),
                ));
                self.out.done.push(format!("added `{target}`"));
            }
        }
        self.send(steps)
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
