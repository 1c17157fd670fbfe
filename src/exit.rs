//! Exit codes as values: how a run ended, and the failures that carry
//! their own documented code to `main`.

use std::fmt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use crate::haproxy::{Target, Undo};

/// The documented exit codes (README, "Exit codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Ok = 0,
    /// Any other error.
    Error = 1,
    /// Bad command line: clap exits with it itself.
    Usage = 2,
    /// The check command (`haproxy -c`) rejected the rendered config.
    Rejected = 3,
    /// The reload failed or timed out; what this run wrote was restored.
    ReloadFailed = 4,
    /// A guard refused to shrink the pool: `--min-nodes`, or `sync` saw
    /// no other member.
    Guarded = 5,
    /// A batch was applied, but some members were skipped.
    Skipped = 6,
    /// `--apply runtime` refused a change that needs a reload.
    NeedsReload = 7,
    /// `hacfg status`: the live servers differ from the nodes folder.
    Drift = 8,
    /// `hacfg fleet`: balancers disagree, or one did not answer.
    Disagree = 9,
    /// A lock (the nodes folder's) was still held at `--lock-timeout`;
    /// nothing was changed.
    LockTimeout = 10,
}

impl From<Code> for std::process::ExitCode {
    fn from(code: Code) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}

/// How a run that did not fail ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Partial success: applied, but these parts were skipped (a warning,
    /// never an `error:` line; exit 6).
    Skipped(String),
    /// `status` found the live servers differ from the files (exit 8).
    Drift(String),
    /// `fleet` found balancers that differ or did not answer (exit 9).
    Disagree(String),
    /// `render --diff --exit-code`: the output would change (exit 1, git's
    /// convention, and no message: the diff says it).
    Differs,
}

impl Outcome {
    pub fn code(&self) -> Code {
        match self {
            Outcome::Done => Code::Ok,
            Outcome::Skipped(_) => Code::Skipped,
            Outcome::Drift(_) => Code::Drift,
            Outcome::Disagree(_) => Code::Disagree,
            Outcome::Differs => Code::Error,
        }
    }
}

/// A failure with a meaning of its own (and its own exit code). Each
/// variant carries the facts; its message is built from them here, once.
#[derive(Debug)]
pub enum Failure {
    /// The check (`what`: `haproxy -c` or a command) rejected the config
    /// written nowhere; `shown`: the first lines it printed; `most`: why a
    /// refusal that blames most nodes held none back.
    Rejected {
        what: String,
        status: ExitStatus,
        output: PathBuf,
        most: Option<String>,
        shown: String,
    },
    /// HAProxy refused the line of the node this run added: it is held
    /// back, and the rest went live.
    NodeRefused { name: String, reason: String },
    /// `--apply runtime`: HAProxy refused a runtime change about `target`
    /// for the first time (`words`: the command and its answer); it is
    /// tried again every `retry`.
    RefusedAtRuntime {
        words: String,
        undo: Undo,
        output: PathBuf,
        target: Target,
        retry: Duration,
    },
    /// `--apply runtime`: HAProxy refused `attempts` runtime changes in a
    /// row, each one part tried again; `undo`: what became of the last.
    RefusedAgain { attempts: usize, undo: Undo },
    /// The reload failed (`cause`); `restored` says what became of the
    /// config this run wrote.
    ReloadFailed { restored: String, cause: String },
    /// A socket the run would reload or apply through is missing, no
    /// socket, or refuses: found before anything was touched.
    Unusable(crate::haproxy::api::Probed),
    /// A render of `count` nodes, fewer than `--min-nodes` (`min`).
    TooFewNodes {
        output: PathBuf,
        count: usize,
        min: usize,
    },
    /// `init` would replace `output`, which has `current` servers, with a
    /// config of `servers` rendered from the `nodes` of `dir` (`missing`:
    /// the folder does not exist).
    Emptier {
        output: PathBuf,
        current: usize,
        servers: usize,
        dir: PathBuf,
        nodes: usize,
        missing: bool,
    },
    /// `sync` saw no member but its own agent (`members` alive): thin
    /// evidence.
    Alone { members: usize },
    /// `sync` would remove `removals` of the `current` nodes.
    Shrinks { removals: usize, current: usize },
    /// `--apply runtime`, and the change needs a reload, for `reasons`;
    /// `recorded`: they now wait for a later run that may reload.
    NeedsReload {
        reasons: Vec<String>,
        output: PathBuf,
        recorded: bool,
    },
}

impl Failure {
    pub fn code(&self) -> Code {
        match self {
            Failure::Rejected { .. }
            | Failure::NodeRefused { .. }
            | Failure::RefusedAtRuntime { .. } => Code::Rejected,
            Failure::ReloadFailed { .. } | Failure::Unusable(_) => Code::ReloadFailed,
            Failure::RefusedAgain { .. } => Code::Error,
            Failure::TooFewNodes { .. }
            | Failure::Emptier { .. }
            | Failure::Alone { .. }
            | Failure::Shrinks { .. } => Code::Guarded,
            Failure::NeedsReload { .. } => Code::NeedsReload,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Rejected { .. } => self.rejected(f),
            Failure::NodeRefused { name, reason } => write!(
                f,
                "HAProxy refused node `{name}`; it is held back and the rest went live (change \
                 or remove its file to try again)\n{reason}"
            ),
            Failure::RefusedAtRuntime { .. } => self.refused_at_runtime(f),
            Failure::RefusedAgain { attempts, undo } => write!(
                f,
                "HAProxy refused {attempts} runtime changes in a row, each one part tried again; \
                 {undo}"
            ),
            Failure::ReloadFailed { restored, cause } => {
                write!(f, "reload failed; {restored}: {cause}")
            }
            Failure::Unusable(probed) => write!(f, "{probed}"),
            Failure::TooFewNodes { output, count, min } => write!(
                f,
                "refusing to write `{}` with {count} nodes, fewer than --min-nodes {min}; the \
                 live config is unchanged (the nodes folder keeps the change)",
                output.display()
            ),
            Failure::Emptier { .. } => self.emptier(f),
            Failure::Alone { members } => write!(
                f,
                "sync: the Serf agent sees {members} alive member(s), so no other member: \
                 nothing changed (it may be starting or cut off; --allow-empty applies the list \
                 anyway)"
            ),
            Failure::Shrinks { removals, current } => write!(
                f,
                "sync would remove {removals} of the {current} nodes (more than half): nothing \
                 changed (an agent cut off from part of the cluster sees only part of it; \
                 --allow-empty applies the list anyway)"
            ),
            Failure::NeedsReload { .. } => self.needs_reload(f),
        }
    }
}

impl Failure {
    fn rejected(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Failure::Rejected {
            what,
            status,
            output,
            most,
            shown,
        } = self
        else {
            return Ok(());
        };
        let most = most
            .as_ref()
            .map(|m| format!(" and {m}"))
            .unwrap_or_default();
        write!(
            f,
            "{what} rejected the new config ({status}){most}; `{}` was not replaced and nothing \
             was reloaded (the nodes folder keeps the change)\n{shown}",
            output.display()
        )
    }

    fn refused_at_runtime(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Failure::RefusedAtRuntime {
            words,
            undo,
            output,
            target,
            retry,
        } = self
        else {
            return Ok(());
        };
        write!(
            f,
            "{words}; {undo}, and `{}` was not written. --apply runtime forbids the reload that \
             would take it: later runs apply every other change and leave `{target}` waiting \
             (tried again every {}s), and the first run that may reload applies it",
            output.display(),
            retry.as_secs()
        )
    }

    fn emptier(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Failure::Emptier {
            output,
            current,
            servers,
            dir,
            nodes,
            missing,
        } = self
        else {
            return Ok(());
        };
        write!(
            f,
            "init: refusing to replace `{}` ({}) with a config of {} rendered from `{}` ({}): \
             init never empties a config ",
            output.display(),
            counted(*current, "server"),
            counted(*servers, "server"),
            dir.display(),
            counted(*nodes, "node")
        )?;
        // A lost folder is no mistyped one: only the operator can tell.
        if *missing {
            write!(
                f,
                "(the folder does not exist: is --nodes-dir or HACFG_NODES_DIR mistyped? if that \
                 path is right and the folder was lost, create it with `mkdir -p {}` and \
                 `hacfg sync` refills it); nothing was created or changed",
                dir.display()
            )
        } else {
            f.write_str(
                "(is --nodes-dir or HACFG_NODES_DIR mistyped? if the folder is right, `hacfg \
                 render` writes it); nothing was created or changed",
            )
        }
    }

    fn needs_reload(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Failure::NeedsReload {
            reasons,
            output,
            recorded,
        } = self
        else {
            return Ok(());
        };
        write!(
            f,
            "this change needs a reload ({}), and --apply runtime forbids one: HAProxy and `{}` \
             are unchanged, and the nodes folder keeps the change",
            reasons.join("; "),
            output.display()
        )?;
        if *recorded {
            f.write_str(
                " (its node files stay as written). Later runs with --apply runtime apply every \
                 other change and leave this one waiting; the first run that may reload \
                 (--apply auto or reload) applies it",
            )?;
        }
        Ok(())
    }
}

/// `N server(s)`, `1 node`: a count and its noun for messages.
pub fn counted(count: usize, noun: &str) -> String {
    format!("{count} {noun}{}", if count == 1 { "" } else { "s" })
}

impl std::error::Error for Failure {}

/// The exit code for an error: the first `Failure` (or refusal by HAProxy)
/// in its chain, else 1.
pub fn code_of(err: &anyhow::Error) -> Code {
    err.chain()
        .find_map(|e| {
            if let Some(failure) = e.downcast_ref::<Failure>() {
                return Some(failure.code());
            }
            if e.is::<crate::lock::TimedOut>() {
                return Some(Code::LockTimeout);
            }
            match e.downcast_ref::<crate::haproxy::Error>()? {
                crate::haproxy::Error::Refused(_) | crate::haproxy::Error::RefusedChange { .. } => {
                    Some(Code::Rejected)
                }
                crate::haproxy::Error::Answer(_) => None,
            }
        })
        .unwrap_or(Code::Error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn code_survives_context() {
        let err = Err::<(), _>(Failure::Alone { members: 1 })
            .context("while rendering")
            .unwrap_err();
        assert_eq!(code_of(&err), Code::Guarded);
        assert_eq!(code_of(&anyhow::anyhow!("plain")), Code::Error);
        assert_eq!(Code::ReloadFailed as i32, 4);
        assert_eq!(Outcome::Skipped("x".into()).code() as i32, 6);
        assert_eq!(Outcome::Disagree("x".into()).code() as i32, 9);
    }

    #[test]
    fn messages_are_built_from_facts() {
        let needs = |recorded| Failure::NeedsReload {
            reasons: vec!["a".into(), "b".into()],
            output: "/etc/h.cfg".into(),
            recorded,
        };
        let short = needs(false).to_string();
        assert_eq!(
            short,
            "this change needs a reload (a; b), and --apply runtime forbids one: HAProxy and \
             `/etc/h.cfg` are unchanged, and the nodes folder keeps the change"
        );
        // The run that records the parts says the same, then what follows.
        let long = needs(true).to_string();
        assert!(
            long.starts_with(&short) && long.contains("Later runs"),
            "{long}"
        );
        assert_eq!(needs(true).code(), Code::NeedsReload);
        let refused = |undo| Failure::RefusedAtRuntime {
            words: "HAProxy refused a runtime change: `add server nodes/a`: no".into(),
            undo,
            output: "/etc/h.cfg".into(),
            target: Target::new("nodes", "a"),
            retry: Duration::from_secs(30),
        };
        let done = refused(Undo::Done).to_string();
        assert!(done.contains("`: no; what this run changed at runtime was undone, and"));
        let failed = refused(Undo::Failed("timeout".into())).to_string();
        assert!(!failed.contains("was undone") && failed.contains("failed (timeout)"));
        assert_eq!(counted(1, "server"), "1 server");
        assert_eq!(counted(0, "node"), "0 nodes");
    }
}
