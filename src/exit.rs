//! Exit codes as values: how a run ended, and the failures that carry
//! their own documented code to `main`.

use std::fmt;

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

/// A failure with a meaning of its own (and its own exit code).
#[derive(Debug)]
pub enum Failure {
    /// The check rejected the config: HAProxy's own words.
    Rejected(String),
    /// The reload failed; what this run wrote was put back.
    ReloadFailed(String),
    /// Too few nodes for `--min-nodes`.
    TooFewNodes(String),
    /// `sync` saw no member but its own agent: thin evidence.
    Alone(String),
    /// `--apply runtime`, and the change needs a reload.
    NeedsReload(String),
}

impl Failure {
    pub fn code(&self) -> Code {
        match self {
            Failure::Rejected(_) => Code::Rejected,
            Failure::ReloadFailed(_) => Code::ReloadFailed,
            Failure::TooFewNodes(_) | Failure::Alone(_) => Code::Guarded,
            Failure::NeedsReload(_) => Code::NeedsReload,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Rejected(m)
            | Failure::ReloadFailed(m)
            | Failure::TooFewNodes(m)
            | Failure::Alone(m)
            | Failure::NeedsReload(m) => f.write_str(m),
        }
    }
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
        let err = Err::<(), _>(Failure::Rejected("no".into()))
            .context("while rendering")
            .unwrap_err();
        assert_eq!(code_of(&err), Code::Rejected);
        assert_eq!(code_of(&anyhow::anyhow!("plain")), Code::Error);
        assert_eq!(Code::ReloadFailed as i32, 4);
        assert_eq!(Outcome::Skipped("x".into()).code() as i32, 6);
        assert_eq!(Outcome::Disagree("x".into()).code() as i32, 9);
    }
}
