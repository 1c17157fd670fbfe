//! What the running HAProxy's version changes for hacfg: the `add server`
//! keywords its runtime takes, and how a new checked server is kept from
//! traffic until its first check. Read from `show info` at most once per
//! run, and only by a run whose change depends on it.

use std::fmt;

use super::execute::SafeAdd;

/// The running version, `(major, minor)`, and what follows from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialect {
    pub version: (u32, u32),
}

impl Dialect {
    /// The oldest HAProxy hacfg supports: what a run assumes when it need
    /// not (or cannot) ask.
    pub const OLDEST: Dialect = Dialect { version: (2, 6) };

    /// Whether a keyword `add server` takes from `since` on is taken.
    pub fn takes(self, since: (u32, u32)) -> bool {
        self.version >= since
    }

    /// How new checked servers wait for their first check.
    pub fn safe_add(self) -> SafeAdd {
        SafeAdd::for_version(self.version)
    }
}

/// `HAProxy 3.0: …`, what `-v` says of the path a run takes.
impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (major, minor) = self.version;
        let cookie = if self.takes(super::config::COOKIE_SINCE) {
            "takes"
        } else {
            "does not take"
        };
        let safe = match self.safe_add() {
            SafeAdd::InitState => "start DOWN until a check passes (init-state)",
            SafeAdd::Drain => "wait in drain for their first check",
        };
        write!(
            f,
            "HAProxy {major}.{minor}: `add server` {cookie} `cookie`; new checked servers {safe}"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_decide() {
        assert!(!Dialect::OLDEST.takes((3, 0)));
        assert!(Dialect { version: (3, 4) }.takes((3, 0)));
        assert_eq!(Dialect { version: (3, 0) }.safe_add(), SafeAdd::Drain);
        assert_eq!(Dialect { version: (3, 1) }.safe_add(), SafeAdd::InitState);
        assert_eq!(
            Dialect { version: (3, 1) }.to_string(),
            "HAProxy 3.1: `add server` takes `cookie`; new checked servers start DOWN until a \
             check passes (init-state)"
        );
    }
}
