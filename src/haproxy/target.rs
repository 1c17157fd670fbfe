//! `backend/server`: how HAProxy's runtime API names one server.

use std::fmt;
use std::net::IpAddr;

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

/// Whether two addresses are the same: compared as IP addresses when both
/// are IP literals (HAProxy writes `::7f00:b` as `::127.0.0.11`), as text
/// otherwise (a host name).
pub fn same_addr(a: &str, b: &str) -> bool {
    match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
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
    fn addresses_are_compared_as_ip_addresses() {
        assert!(same_addr("::7f00:b", "::127.0.0.11"));
        assert!(same_addr("FD00::1", "fd00:0:0::1"));
        assert!(same_addr("10.0.0.1", "10.0.0.1"));
        assert!(!same_addr("10.0.0.1", "10.0.0.2"));
        // Two families are two addresses; a name is compared as text.
        assert!(!same_addr("::ffff:10.0.0.1", "10.0.0.1"));
        assert!(same_addr("web.local", "web.local"));
        assert!(!same_addr("web.local", "WEB.local"));
        assert!(!same_addr("-", "0.0.0.0"));
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
