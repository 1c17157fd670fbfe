//! Exit codes, and the error type that carries one to `main`.

use std::fmt;

/// The documented exit codes (README, "Exit codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Any other error.
    Error = 1,
    /// Bad command line: clap exits with it itself, listed for the docs.
    #[allow(dead_code)]
    Usage = 2,
    /// The check command (`haproxy -c`) rejected the rendered config.
    Rejected = 3,
    /// The reload failed or timed out; the previous config was restored.
    ReloadFailed = 4,
    /// `--min-nodes` refused a config with too few nodes.
    TooFewNodes = 5,
    /// A Serf event was applied, but some members were skipped.
    Skipped = 6,
}

/// An error that ends the run with a specific exit code.
#[derive(Debug)]
pub struct Exit {
    pub code: Code,
    pub message: String,
}

impl Exit {
    pub fn new(code: Code, message: impl Into<String>) -> Exit {
        Exit {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// The exit code for an error: the first `Exit` in its chain, else 1.
pub fn code_of(err: &anyhow::Error) -> Code {
    err.chain()
        .find_map(|e| e.downcast_ref::<Exit>())
        .map_or(Code::Error, |e| e.code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn code_survives_context() {
        let err = Err::<(), _>(Exit::new(Code::Rejected, "no"))
            .context("while rendering")
            .unwrap_err();
        assert_eq!(code_of(&err), Code::Rejected);
        assert_eq!(code_of(&anyhow::anyhow!("plain")), Code::Error);
        assert_eq!(Code::ReloadFailed as i32, 4);
    }
}
