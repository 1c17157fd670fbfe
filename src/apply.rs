//! From the nodes folder to a live HAProxy: render, guard, stage, check,
//! keep the last good config, swap, reload, and put back what this run
//! wrote if the reload fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::config::Config;
use crate::exit::Failure;
use crate::file;
use crate::held::{self, HeldSet};
use crate::log::Log;
use crate::node::Node;
use crate::output::{Output, Replaced, WriteMode};
use crate::plan::{self, Plan};
use crate::process::Run;
use crate::reload::{self, Reload};
use crate::render;
use crate::runtime::{self, Runtime, Waits};
use crate::store::{Exclusive, Lock, Store};

/// How long a check command may take (a 100,000-server check takes seconds).
const CHECK_TIMEOUT: Duration = Duration::from_secs(300);

/// How a candidate config is validated before it goes live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// `<bin> -c -f <staged>`.
    Haproxy(PathBuf),
    /// A shell command with `{}` replaced by the staged path.
    Command(String),
    /// `--no-check`: the operator chose not to check.
    Skip,
    /// Nothing to check with (no `haproxy` found): a warning at each write,
    /// and a refusal with `--reload`.
    Unavailable,
}

impl Check {
    /// Whether there is a command to run.
    pub fn runs(&self) -> bool {
        matches!(self, Check::Haproxy(_) | Check::Command(_))
    }
}

/// Renders `nodes` with the configured template; `size_hint` is the
/// current output's size.
pub fn render_nodes(cfg: &Config, nodes: Arc<Vec<Node>>, size_hint: usize) -> Result<String> {
    let (name, source) = match &cfg.template {
        None => (
            render::BUILTIN_NAME.to_string(),
            render::BUILTIN_TEMPLATE.to_string(),
        ),
        Some(path) => {
            let context = || format!("unable to read template `{}`", path.display());
            let bytes = file::read_capped_with(path, file::Links::Follow, file::TEMPLATE_CAP)
                .with_context(context)?
                .with_context(|| format!("template `{}` does not exist", path.display()))?;
            let text = String::from_utf8(bytes).with_context(context)?;
            (path.display().to_string(), text)
        }
    };
    render::render_config(
        &name,
        &source,
        nodes,
        cfg.default_port,
        &cfg.vars,
        size_hint,
    )
    .with_context(|| {
        let out = cfg.output.display();
        format!("unable to render template `{name}`; `{out}` was left as it was")
    })
}

/// Checks a candidate may take before hacfg stops tracing HAProxy's
/// refusals to nodes (each pass holds back at least one node; HAProxy
/// reports section errors before address errors, so a few are needed).
const MAX_CHECK_PASSES: usize = 8;

/// What a render did about nodes HAProxy refuses.
#[derive(Debug, Default)]
pub struct Applied {
    /// Every node held back now: name and HAProxy's words.
    pub held: Vec<(String, String)>,
    /// The names of those this run found; the others were held before.
    pub newly: Vec<String>,
}

/// Makes the output (and, with `--reload`, HAProxy) match the folder as it
/// is now. The exclusive lock makes this one consistent snapshot, and a
/// burst of queued callers costs few writes and reloads: whoever finds the
/// live config already equal to its render does nothing.
///
/// A node whose line HAProxy refuses is held back (see `held`): the config
/// goes live without it, and the result says so.
pub fn update(
    cfg: &Config,
    store: &Store,
    lock: &Lock<Exclusive>,
    output: &Output,
    log: &mut Log,
) -> Result<Applied> {
    // HAProxy's live servers are fetched while the folder is read and
    // rendered: the two waits overlap.
    let mut live_servers = runtime_path(cfg).map(|rt| {
        let rt = rt.clone();
        std::thread::spawn(move || rt.live())
    });
    output.remove_leftovers(lock);
    let mut held = HeldSet::load(store.dir());
    let before = held.clone();
    let (live, held_back) = held.split(store.load_all(lock)?);
    log.debug(&format!(
        "{} node(s) in `{}`, {} held back",
        live.len() + held_back.len(),
        store.dir().display(),
        held_back.len()
    ));
    let mut live = Arc::new(live);
    let mut newly = Vec::new();
    let mut passes = 0;
    let shown = output.path().display();
    let (rendered, staged) = loop {
        let count = live.len();
        let rendered = render_nodes(cfg, live.clone(), output.size())?;
        if count < cfg.min_nodes {
            save_held(&held, &before, store)?;
            return Err(Failure::TooFewNodes(format!(
                "refusing to write `{shown}` with {count} nodes, fewer than --min-nodes {}; the \
                 live config is unchanged (the nodes folder keeps the change)",
                cfg.min_nodes
            ))
            .into());
        }
        let unchanged = output.same_as(rendered.as_bytes())? == Some(true) && !cfg.force;
        // Before any check has run, try the runtime API: it also repairs
        // drift when the file is unchanged (a server deleted behind our back).
        let runtime = runtime_path(cfg).zip(live_servers.take());
        if let Some((rt, live)) = runtime {
            let done = runtime_first(cfg, rt, live, output, &rendered, unchanged, log)?;
            if done && !unchanged {
                save_held(&held, &before, store)?;
                let _ = output.replace(None, rendered.as_bytes())?;
                log.info(&format!(
                    "wrote `{shown}` ({}), applied through the runtime API without a reload",
                    nodes_text(count)
                ));
                return Ok(applied(&held, newly));
            }
        }
        if unchanged {
            save_held(&held, &before, store)?;
            log.info(&format!("`{shown}` unchanged ({})", nodes_text(count)));
            return Ok(applied(&held, newly));
        }
        // The check reads a candidate beside the output; written in place
        // without a check, there is nothing to stage.
        let staged = match (cfg.check.runs(), cfg.write_mode) {
            (false, WriteMode::InPlace) => None,
            _ => Some(output.stage(rendered.as_bytes())?),
        };
        let Some(candidate) = staged.as_ref().filter(|_| cfg.check.runs()) else {
            if cfg.check == Check::Unavailable {
                log.warn(&format!(
                    "no `haproxy` found on PATH: `{shown}` is written unchecked (set \
                     --haproxy-bin, or --no-check to silence this)"
                ));
            }
            break (rendered, staged);
        };
        log.debug(&format!("checking the candidate with {:?}", cfg.check));
        let Some(rejection) = run_check(&cfg.check, candidate.path(), output.path())? else {
            break (rendered, staged);
        };
        passes += 1;
        let blamed = if passes <= MAX_CHECK_PASSES {
            held::blame(&rejection.output, &rejection.candidate, &rendered, &live)
        } else {
            BTreeMap::new()
        };
        if blamed.is_empty() {
            save_held(&held, &before, store)?;
            return Err(rejection.into_failure(output.path()).into());
        }
        for node in live.iter().filter(|n| blamed.contains_key(&n.name)) {
            held.insert(node.clone(), blamed[&node.name].clone());
            newly.push(node.name.clone());
        }
        live = Arc::new(
            live.iter()
                .filter(|n| !blamed.contains_key(&n.name))
                .cloned()
                .collect(),
        );
    };
    save_held(&held, &before, store)?;
    let replaced = output.replace(staged, rendered.as_bytes())?;
    log.info(&format!("wrote `{shown}` ({})", nodes_text(live.len())));
    if let Some(settings) = &cfg.reload {
        if let Some(rt) = &cfg.runtime {
            save_server_state(rt, &rendered, log);
        }
        reload_or_restore(settings, Some(replaced), log)?;
    }
    Ok(applied(&held, newly))
}

/// How HAProxy takes a change (`--apply`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyMode {
    /// Through the runtime API when the change allows it, else a reload.
    Auto,
    /// Through the runtime API only; a change that needs a reload is refused.
    Runtime,
    /// Always a reload.
    Reload,
}

/// The runtime API to use, if this run reloads and may avoid it
/// (`--force` asks for a reload).
fn runtime_path(cfg: &Config) -> Option<&Runtime> {
    cfg.runtime
        .as_ref()
        .filter(|_| cfg.reload.is_some() && cfg.apply != ApplyMode::Reload && !cfg.force)
}

/// Tries the runtime API before any check: true when HAProxy now runs the
/// desired servers (the file may still need writing), false when the
/// change takes the reload path. It also repairs drift when the file is
/// `unchanged` (a server deleted behind hacfg's back).
fn runtime_first(
    cfg: &Config,
    rt: &Runtime,
    live: std::thread::JoinHandle<Result<Vec<plan::Live>>>,
    output: &Output,
    rendered: &str,
    unchanged: bool,
    log: &mut Log,
) -> Result<bool> {
    let live = live
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the runtime reader panicked")));
    let Some(why) = through_runtime(cfg, rt, live, output, rendered, log)? else {
        return Ok(true);
    };
    if unchanged {
        log.warn(&format!(
            "the live servers differ from `{}` in a way the runtime API cannot repair ({why}); \
             `hacfg --force render` reloads",
            output.path().display()
        ));
    } else if cfg.apply == ApplyMode::Runtime {
        return Err(Failure::NeedsReload(format!(
            "this change needs a reload ({why}), and --apply runtime forbids one; nothing was \
             changed"
        ))
        .into());
    } else {
        log.info(&format!("reloading: {why}"));
    }
    Ok(false)
}

/// Brings HAProxy's servers in line with `rendered` through the runtime
/// API. `None`: it runs them now (or already did); `Some(why)`: it takes a
/// reload. No `haproxy -c` runs here: the rest of the config is
/// byte-identical to the file HAProxy took, and each changed server line
/// was taken by HAProxy's own runtime parser (`add server`).
fn through_runtime(
    cfg: &Config,
    rt: &Runtime,
    live: Result<Vec<plan::Live>>,
    output: &Output,
    rendered: &str,
    log: &mut Log,
) -> Result<Option<String>> {
    let live = match live {
        Ok(live) => live,
        Err(e) if cfg.apply == ApplyMode::Auto => {
            return Ok(Some(format!("the runtime API did not answer: {e:#}")));
        }
        Err(e) => return Err(e),
    };
    let old = output
        .read()?
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    let ops = match plan::plan(old.as_deref(), rendered, &live) {
        Plan::Nothing => {
            log.debug("runtime API: HAProxy already runs the desired servers");
            return Ok(None);
        }
        Plan::Reload(why) => return Ok(Some(why)),
        Plan::Runtime(ops) => ops,
    };
    log.debug(&format!("runtime API: {} operation(s): {ops:?}", ops.len()));
    let waits = Waits {
        drain: cfg.drain_timeout,
        first_check: rt.timeout,
    };
    let done = runtime::execute(rt, &ops, &live, waits)?;
    for line in &done.done {
        log.info(&format!("runtime: {line}"));
    }
    for target in &done.still_draining {
        log.warn(&format!(
            "`{target}` still has requests in flight after --drain-timeout {}s; it stays \
             drained (no new request) and a later run deletes it",
            cfg.drain_timeout.as_secs_f64()
        ));
    }
    for target in &done.still_checking {
        log.warn(&format!(
            "`{target}` had no health check within {}s; it stays drained (no request) until \
             `set server {target} state ready` or the next reload",
            rt.timeout.as_secs_f64()
        ));
    }
    Ok(None)
}

/// Saves the live server state where the new config loads it from
/// (`server-state-file`), so that a server DOWN by its checks, drained or
/// weighted at runtime is still so right after the reload. Servers whose
/// address or port the new config changes are left out. A failure is a
/// warning: the reload matters more.
pub fn save_server_state(rt: &Runtime, rendered: &str, log: &mut Log) {
    let Some(path) = runtime::state_file_of(rendered) else {
        return;
    };
    let desired: Vec<plan::Server> = plan::split(rendered)
        .backends
        .into_values()
        .flat_map(|b| b.servers)
        .collect();
    let saved = rt
        .servers_state()
        .map(|state| runtime::state_to_keep(&state, &desired))
        .and_then(|state| crate::atomic::write_atomic(&path, state.as_bytes()));
    if let Err(e) = saved {
        log.warn(&format!(
            "unable to save the server state to `{}` before the reload: {e:#}",
            path.display()
        ));
    }
}

fn applied(held: &HeldSet, newly: Vec<String>) -> Applied {
    Applied {
        held: held
            .names()
            .into_iter()
            .map(|n| (n.to_string(), held.reason(n).to_string()))
            .collect(),
        newly,
    }
}

fn save_held(held: &HeldSet, before: &HeldSet, store: &Store) -> Result<()> {
    if held == before {
        return Ok(());
    }
    held.save(store.dir()).with_context(|| {
        format!(
            "unable to record the held-back nodes in `{}`",
            store.dir().join(held::HELD_FILE).display()
        )
    })
}

fn nodes_text(count: usize) -> String {
    format!("{count} node{}", if count == 1 { "" } else { "s" })
}

/// Reloads HAProxy. On failure, a config this run wrote (`replaced`) is
/// put back from `.prev`; a run that wrote nothing (`hacfg reload`) leaves
/// the output alone.
pub fn reload_or_restore(
    settings: &Reload,
    replaced: Option<Replaced>,
    log: &mut Log,
) -> Result<()> {
    let err = match reload::reload(settings) {
        Ok(message) => {
            log.info(&message);
            return Ok(());
        }
        Err(err) => err,
    };
    let restored = match replaced {
        Some(replaced) => replaced.restore()?,
        None => "the config was left as it is".to_string(),
    };
    Err(Failure::ReloadFailed(format!("reload failed; {restored}: {err:#}")).into())
}

/// A check that said no: which command, how it exited, what it printed.
struct Rejection {
    what: String,
    status: std::process::ExitStatus,
    output: String,
    /// The candidate's path, as the output names it.
    candidate: String,
}

impl Rejection {
    /// `Failure::Rejected`, carrying HAProxy's own messages.
    fn into_failure(self, output: &Path) -> Failure {
        let output_text = self.output.replace(&self.candidate, "<candidate>");
        let shown = first_lines(&output_text, SHOWN_CHECK_LINES);
        Failure::Rejected(format!(
            "{} rejected the new config ({}); `{}` was not replaced and nothing was \
             reloaded (the nodes folder keeps the change)\n{shown}",
            self.what,
            self.status,
            output.display()
        ))
    }
}

/// Runs the check on the staged candidate; `Some` if it rejected it.
fn run_check(check: &Check, staged: &Path, output: &Path) -> Result<Option<Rejection>> {
    let (mut cmd, what) = match check {
        Check::Haproxy(bin) => {
            let mut cmd = Command::new(bin);
            cmd.arg("-c").arg("-f").arg(staged);
            (cmd, format!("`{} -c`", bin.display()))
        }
        Check::Command(template) => {
            let line = template.replace("{}", &shell_quote(&staged.to_string_lossy()));
            let mut cmd = Command::new("sh");
            cmd.args(["-c", &line]);
            (cmd, format!("check command `{template}`"))
        }
        Check::Skip | Check::Unavailable => return Ok(None),
    };
    let done = Run::new(&mut cmd, &what)
        .run(CHECK_TIMEOUT)
        .with_context(|| format!("`{}` was not replaced", output.display()))?;
    if done.success() {
        return Ok(None);
    }
    Ok(Some(Rejection {
        what,
        status: done.status,
        output: done.output(),
        candidate: staged.to_string_lossy().into_owned(),
    }))
}

/// Lines of a check's output shown; HAProxy prints one per problem, and
/// the first ones name the cause.
const SHOWN_CHECK_LINES: usize = 40;

/// The first `max` lines of `text` (each cut to a readable length), and
/// how many more there were.
fn first_lines(text: &str, max: usize) -> String {
    let mut lines: Vec<String> = text
        .lines()
        .take(max)
        .map(|l| match crate::quote::cut(l, 400) {
            Some(head) => format!("{head}… ({} bytes)", l.len()),
            None => l.to_string(),
        })
        .collect();
    let total = text.lines().count();
    if total > max {
        lines.push(format!("… ({} more lines)", total - max));
    }
    lines.join("\n")
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_check_output_is_cut() {
        let text = (0..100).fold(String::new(), |t, i| t + &format!("[ALERT] line {i}\n"));
        let shown = first_lines(&text, 40);
        assert_eq!(shown.lines().count(), 41);
        assert!(shown.ends_with("… (60 more lines)"), "{shown}");
        assert!(first_lines(&"é".repeat(1000), 40).ends_with("… (2000 bytes)"));
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
