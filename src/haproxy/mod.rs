//! Speaks HAProxy, and nothing else: the text of a config, the runtime
//! API and its answers, the runtime operations, the reload strategies and
//! the socket. Nothing here knows hacfg's settings, its exit codes or its
//! nodes folder; errors of HAProxy's own making are an [`Error`], and the
//! callers above decide what they mean.

pub mod address;
pub mod api;
pub mod config;
pub mod dialect;
pub mod execute;
pub mod reload;
pub mod socket;
pub mod stat;
pub mod state;
pub mod target;

#[cfg(test)]
pub mod fake;

use std::collections::BTreeMap;
use std::fmt;

pub use address::Address;
pub use api::{RuntimeApi, Socket};
pub use dialect::Dialect;
pub use target::{Target, endpoint, same_addr};

/// Anything that names one server of one backend: compared with a
/// [`Target`] in one place.
pub trait Named {
    fn backend(&self) -> &str;
    fn name(&self) -> &str;

    /// Whether this is `target`.
    fn is(&self, target: &Target) -> bool {
        self.backend() == target.backend && self.name() == target.name
    }
}

macro_rules! named {
    ($($t:ty),*) => {$(
        impl Named for $t {
            fn backend(&self) -> &str {
                &self.backend
            }
            fn name(&self) -> &str {
                &self.name
            }
        }
    )*};
}

named!(Target, state::Live, config::Server);

/// What hacfg asks a running HAProxy: the one seam between the decisions
/// above and the socket ([`RuntimeApi`]), so that they are tested against
/// a fake HAProxy (`fake`) without one.
pub trait Runtime {
    /// The socket, for messages.
    fn path(&self) -> &Address;
    /// The live servers.
    fn live(&self) -> anyhow::Result<Vec<state::Live>>;
    /// The running version, `(major, minor)`.
    fn version(&self) -> anyhow::Result<(u32, u32)>;
    /// `show stat` of these servers (by id where known).
    fn stats_of(
        &self,
        servers: &[(Target, Option<u32>)],
    ) -> anyhow::Result<BTreeMap<Target, stat::Stat>>;
    /// Runs `commands`, one answer each.
    fn batch(&self, commands: &[String]) -> anyhow::Result<Vec<String>>;
    /// Starts a run of its own (the settle worker, at each poll): the
    /// run's budget for socket exchanges whole again.
    fn begin_run(&self) {}
}

/// What HAProxy itself said no to, or answered in a way hacfg cannot read.
#[derive(Debug)]
pub enum Error {
    /// HAProxy refused a change: its own words.
    Refused(String),
    /// HAProxy refused one runtime command of a batch, about `target`
    /// (`words` quotes the command and HAProxy's answer); `undo` says
    /// whether what the run had changed was put back.
    RefusedChange {
        target: Target,
        words: String,
        undo: Undo,
    },
    /// An answer that is not what the command returns.
    Answer(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Refused(m) | Error::Answer(m) => f.write_str(m),
            Error::RefusedChange { words, undo, .. } => {
                write!(f, "{words}; {undo}, and the config file was not written")
            }
        }
    }
}

/// What became of a run's runtime changes once HAProxy refused one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undo {
    /// Nothing had changed yet.
    Nothing,
    /// Put back as it was.
    Done,
    /// Putting back failed: HAProxy runs part of the change.
    Failed(String),
}

/// `what this run changed at runtime was undone`, or why it was not.
impl fmt::Display for Undo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Undo::Nothing => f.write_str("this run had changed nothing at runtime"),
            Undo::Done => f.write_str("what this run changed at runtime was undone"),
            Undo::Failed(why) => write!(
                f,
                "undoing what this run changed at runtime failed ({why}): HAProxy may run part \
                 of the change until the next run repairs it"
            ),
        }
    }
}

impl std::error::Error for Error {}
