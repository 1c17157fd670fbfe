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

use std::fmt;

pub use address::Address;
pub use api::{RuntimeApi, Socket};
pub use dialect::Dialect;
pub use target::{Target, endpoint, same_addr};

/// What HAProxy itself said no to, or answered in a way hacfg cannot read.
#[derive(Debug)]
pub enum Error {
    /// HAProxy refused a change: its own words.
    Refused(String),
    /// HAProxy refused one runtime command of a batch, about `target`
    /// (`words` quotes the command and HAProxy's answer); what the batch
    /// had changed was undone.
    RefusedChange { target: Target, words: String },
    /// An answer that is not what the command returns.
    Answer(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Refused(m) | Error::Answer(m) => f.write_str(m),
            Error::RefusedChange { words, .. } => write!(
                f,
                "{words}; what this run changed at runtime was undone, and the config file was \
                 not written"
            ),
        }
    }
}

impl std::error::Error for Error {}
