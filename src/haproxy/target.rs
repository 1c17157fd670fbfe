//! `backend/server`: how HAProxy's runtime API names one server.

use std::fmt;

/// One server of one backend.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Target {
    pub backend: String,
    pub name: String,
}

impl Target {
    pub fn new(backend: &str, name: &str) -> Target {
        Target {
            backend: backend.to_string(),
            name: name.to_string(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.backend, self.name)
    }
}

/// Whether `name` is a plain HAProxy name (of a backend or a server):
/// letters, digits, `-`, `_`, `.` and `:`, nothing else. Such a name can go
/// into a runtime command as it is: no `;` starts a second command.
pub fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// `ADDR:PORT` as HAProxy writes an endpoint: an IPv6 address in brackets.
pub fn endpoint(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_endpoints() {
        assert_eq!(Target::new("nodes", "a").to_string(), "nodes/a");
        assert_eq!(endpoint("fd00::1", 81), "[fd00::1]:81");
        assert_eq!(endpoint("10.0.0.1", 80), "10.0.0.1:80");
    }

    #[test]
    fn plain_names_are_haproxy_names() {
        for name in ["a", "web-1.example:80", "A_b"] {
            assert!(plain_name(name), "{name}");
        }
        for name in ["", "x;disable", "a b", "a/b", "a\\;b", "é", "a\n"] {
            assert!(!plain_name(name), "{name:?}");
        }
    }
}
