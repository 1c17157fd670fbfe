//! The hitless path: HAProxy's servers brought in line with the render
//! through the runtime API, with no reload and no `haproxy -c` (the rest of
//! the config is byte-identical to the file HAProxy took, and each changed
//! server line is taken by HAProxy's own runtime parser, `add server`).

use std::thread::JoinHandle;

use anyhow::Result;

use super::pending::{self, Pending, Why};
use super::plan::{self, Plan};
use super::{ApplyMode, Settings, settle};
use crate::exit::Failure;
use crate::haproxy::RuntimeApi;
use crate::haproxy::config::{self, Server};
use crate::haproxy::execute::{self, Executed, Op, SafeAdd};
use crate::haproxy::state::{FORCED_DRAIN, Live};
use crate::log::Log;
use crate::output::OutputFile;
use crate::store::Store;

/// How the hitless path ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Hitless {
    /// HAProxy runs the desired servers now (the file may still need
    /// writing); `waiting`: some wait for HAProxy (see `settle`).
    Applied { waiting: bool },
    /// The change takes the reload path.
    Reload,
}

/// Where the runtime API leads.
enum Route {
    Applied { waiting: bool },
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
pub fn waiting(s: &Settings, store: &Store) -> bool {
    s.runtime.is_some()
        && Pending::load(store.dir()).is_ok_and(|p| p.waiting(pending::now_ms()).next().is_some())
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
        let why = match self.route(live, rendered, log)? {
            Route::Applied { waiting } => return Ok(Hitless::Applied { waiting }),
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
                "this change needs a reload ({why}), and --apply runtime forbids one; nothing \
                 was changed"
            ))
            .into());
        } else {
            log.info(&format!("reloading: {why}"));
        }
        Ok(Hitless::Reload)
    }

    /// Plans, executes without waiting, and makes a settle pass.
    fn route(&self, live: Result<Vec<Live>>, rendered: &str, log: &mut Log) -> Result<Route> {
        let Some(api) = &self.s.runtime else {
            return Ok(Route::Reload("no runtime API".into()));
        };
        let mut live = match live {
            Ok(live) => live,
            Err(e) if self.s.apply == ApplyMode::Auto => {
                return Ok(Route::Reload(format!(
                    "the runtime API did not answer: {e:#}"
                )));
            }
            Err(e) => return Err(e),
        };
        // A damaged record stops the run before HAProxy is changed.
        let pending = Pending::load(self.store.dir())?;
        let old = self
            .output
            .read()?
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let ops: Vec<Op> = match plan::plan(old.as_deref(), rendered, &live) {
            Plan::Nothing => Vec::new(),
            Plan::Reload(why) => return Ok(Route::Reload(why)),
            // A server hacfg already drains for its removal is left to drain.
            Plan::Runtime(ops) => ops
                .into_iter()
                .filter(|op| !matches!(op, Op::Delete(t) if pending.get(t).is_some_and(|e| e.why == Why::Removal)))
                .collect(),
        };
        let executed = self.execute(api, &ops, &live, log)?;
        let desired = config::servers(rendered);
        if let Some(done) = &executed {
            log_done(done, log);
            as_now(&mut live, done, &desired);
        }
        let store = self.store.dir();
        let left = settle::pass(
            api,
            store,
            &desired,
            &live,
            executed.as_ref(),
            self.s.waits,
            log,
        )?;
        let waiting = left.waiting(pending::now_ms()).next().is_some();
        Ok(Route::Applied { waiting })
    }
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
    fn execute(
        &self,
        api: &RuntimeApi,
        ops: &[Op],
        live: &[Live],
        log: &mut Log,
    ) -> Result<Option<Executed>> {
        if ops.is_empty() {
            log.debug("runtime API: HAProxy already runs the desired servers");
            return Ok(None);
        }
        log.debug(&format!("runtime API: {} operation(s): {ops:?}", ops.len()));
        let safe = safe_add(api, ops, log)?;
        settle::intend(self.store.dir(), ops, safe, self.s.waits)?;
        Ok(Some(execute::execute(api, ops, live, safe)?))
    }
}

/// How new servers with checks are added: HAProxy's version says (read
/// only when this run adds such a server).
fn safe_add(api: &RuntimeApi, ops: &[Op], log: &mut Log) -> Result<SafeAdd> {
    if !ops.iter().any(|op| matches!(op, Op::Add(s) if s.check)) {
        return Ok(SafeAdd::Drain);
    }
    let (major, minor) = api.version()?;
    let safe = SafeAdd::for_version((major, minor));
    log.debug(&match safe {
        SafeAdd::InitState => format!(
            "HAProxy {major}.{minor}: new servers start DOWN until a check passes (init-state)"
        ),
        SafeAdd::Drain => {
            format!("HAProxy {major}.{minor}: new servers wait in drain for their first check")
        }
    });
    Ok(safe)
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
