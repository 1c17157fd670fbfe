//! Where HAProxy's master CLI or stats socket listens, written as HAProxy
//! writes it (`stats socket ADDR`, `-S ADDR`): `unix@PATH` or a plain path,
//! `ipv4@HOST:PORT`, `ipv6@[ADDR]:PORT` or `HOST:PORT`. A host is an IP
//! address (or `localhost`): a name would make hacfg wait on the system's
//! resolver, which no deadline of hacfg's bounds.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::quote::quote_bytes;

/// A socket of HAProxy's: a Unix socket's path, or a TCP address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Address {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

/// Which addresses a TCP form takes.
#[derive(Clone, Copy, PartialEq)]
enum Family {
    V4,
    V6,
    Any,
}

/// HAProxy's address prefixes that name no stream socket hacfg can reach.
const OTHER_PREFIXES: &[&str] = &[
    "abns@",
    "fd@",
    "sockpair@",
    "udp@",
    "udp4@",
    "udp6@",
    "quic4@",
    "quic6@",
    "uxdg@",
    "uxst@",
];

impl Address {
    /// Reads an address as HAProxy writes it; the error says why not.
    pub fn parse(text: &OsStr) -> Result<Address, String> {
        let bytes = text.as_bytes();
        let shown = || quote_bytes(bytes);
        let prefixed = |p: &str| bytes.strip_prefix(p.as_bytes());
        if let Some(path) = prefixed("unix@") {
            return match path {
                [] => Err(format!("{}: `unix@` needs a path", shown())),
                path => Ok(Address::Unix(PathBuf::from(OsStr::from_bytes(path)))),
            };
        }
        for (prefix, family) in [
            ("ipv4@", Family::V4),
            ("tcp4@", Family::V4),
            ("ipv6@", Family::V6),
            ("tcp6@", Family::V6),
            ("tcp@", Family::Any),
        ] {
            if let Some(rest) = prefixed(prefix) {
                return tcp(rest, family).ok_or_else(|| {
                    format!("{}: not an IP address and port after `{prefix}`", shown())
                });
            }
        }
        if OTHER_PREFIXES.iter().any(|p| prefixed(p).is_some()) {
            return Err(format!(
                "{}: hacfg talks to HAProxy over `unix@PATH`, `ipv4@HOST:PORT` or \
                 `ipv6@[ADDR]:PORT`",
                shown()
            ));
        }
        match bytes {
            [] => Err("an empty socket address".to_string()),
            [b'/' | b'.', ..] => Ok(Address::Unix(PathBuf::from(text))),
            _ => match tcp(bytes, Family::Any) {
                Some(address) => Ok(address),
                None if names_host(bytes) => Err(format!(
                    "{}: a host name; give its IP address (hacfg does not wait on a resolver), \
                     or write a path as `./PATH` or `unix@PATH`",
                    shown()
                )),
                None => Ok(Address::Unix(PathBuf::from(text))),
            },
        }
    }

    /// For messages, as [`Path::display`].
    pub fn display(&self) -> &Self {
        self
    }

    /// The address as an argument that reads back as the same address.
    pub fn to_arg(&self) -> OsString {
        match self {
            Address::Tcp(addr) => addr.to_string().into(),
            Address::Unix(path) if Address::parse(path.as_os_str()).ok().as_ref() == Some(self) => {
                path.clone().into_os_string()
            }
            Address::Unix(path) => {
                let mut arg = b"unix@".to_vec();
                arg.extend_from_slice(path.as_os_str().as_bytes());
                OsString::from_vec(arg)
            }
        }
    }
}

impl From<&Path> for Address {
    fn from(path: &Path) -> Self {
        Address::Unix(path.to_path_buf())
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(path) => write!(f, "{}", path.display()),
            Address::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

/// `HOST:PORT` (an IPv6 address in brackets, or bare with the port after
/// its last `:`), the host an IP address of `family` or `localhost`.
fn tcp(bytes: &[u8], family: Family) -> Option<Address> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (host, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0 && plain(port))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip = match (host, family) {
        ("localhost", Family::V6) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ("localhost", _) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        (host, Family::V4) => IpAddr::V4(host.parse().ok()?),
        (host, Family::V6) => IpAddr::V6(host.parse().ok()?),
        (host, Family::Any) => host.parse().ok()?,
    };
    Some(Address::Tcp(SocketAddr::new(ip, port)))
}

/// A port as written: digits, no sign, no leading zero.
fn plain(port: &str) -> bool {
    port.bytes().all(|b| b.is_ascii_digit()) && !port.starts_with('0')
}

/// Whether `HOST:PORT` names a host (no `/`, a port of digits), which a
/// relative socket path is not likely to look like.
fn names_host(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    match text.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty() && !host.contains('/') && !port.is_empty() && plain(port)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Address, String> {
        Address::parse(OsStr::new(text))
    }

    fn tcp(text: &str) -> Address {
        Address::Tcp(text.parse().unwrap())
    }

    fn unix(text: &str) -> Address {
        Address::Unix(PathBuf::from(text))
    }

    #[test]
    fn reads_addresses_as_haproxy_writes_them() {
        assert_eq!(parse("ipv4@127.0.0.1:9999"), Ok(tcp("127.0.0.1:9999")));
        assert_eq!(parse("127.0.0.1:9999"), Ok(tcp("127.0.0.1:9999")));
        assert_eq!(parse("ipv4@0.0.0.0:9999"), Ok(tcp("0.0.0.0:9999")));
        assert_eq!(parse("ipv6@[::1]:9999"), Ok(tcp("[::1]:9999")));
        assert_eq!(parse("ipv6@::1:9999"), Ok(tcp("[::1]:9999")));
        assert_eq!(parse("[::1]:9999"), Ok(tcp("[::1]:9999")));
        assert_eq!(parse("tcp@[::1]:80"), Ok(tcp("[::1]:80")));
        assert_eq!(parse("localhost:9999"), Ok(tcp("127.0.0.1:9999")));
        assert_eq!(parse("ipv6@localhost:9999"), Ok(tcp("[::1]:9999")));
        assert_eq!(parse("unix@/run/h.sock"), Ok(unix("/run/h.sock")));
        assert_eq!(parse("unix@127.0.0.1:80"), Ok(unix("127.0.0.1:80")));
        assert_eq!(parse("/run/h.sock"), Ok(unix("/run/h.sock")));
        assert_eq!(parse("/run/a:80"), Ok(unix("/run/a:80")));
        assert_eq!(parse("./a:80"), Ok(unix("./a:80")));
        assert_eq!(parse("m.sock"), Ok(unix("m.sock")));
        assert_eq!(parse("run/m.sock"), Ok(unix("run/m.sock")));
    }

    #[test]
    fn refuses_what_it_cannot_reach_without_a_resolver() {
        for (text, why) in [
            ("ipv4@[::1]:80", "not an IP address and port after `ipv4@`"),
            (
                "ipv6@127.0.0.1:80",
                "not an IP address and port after `ipv6@`",
            ),
            ("ipv4@127.0.0.1", "not an IP address and port"),
            ("ipv4@127.0.0.1:0", "not an IP address and port"),
            ("ipv4@127.0.0.1:65536", "not an IP address and port"),
            ("ipv4@lb.example:80", "not an IP address and port"),
            ("lb.example:9999", "a host name; give its IP address"),
            ("abns@haproxy", "hacfg talks to HAProxy over"),
            ("udp@127.0.0.1:80", "hacfg talks to HAProxy over"),
            ("unix@", "`unix@` needs a path"),
            ("", "an empty socket address"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn an_address_reads_back_from_its_argument() {
        for text in [
            "ipv4@127.0.0.1:9999",
            "ipv6@[::1]:1",
            "unix@127.0.0.1:80",
            "unix@lb:80",
            "m.sock",
            "/run/h.sock",
        ] {
            let address = parse(text).unwrap();
            assert_eq!(Address::parse(&address.to_arg()), Ok(address), "{text}");
        }
        assert_eq!(parse("m.sock").unwrap().to_arg(), "m.sock");
        assert_eq!(tcp("[::1]:9").to_string(), "[::1]:9");
    }
}
