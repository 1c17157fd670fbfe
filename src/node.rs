//! A backend node: its fields, their validation, and the node-file formats.
//!
//! Names and addresses arrive from the network (Serf member lists), so every
//! value is checked against a strict character set before it can reach a file
//! name or the rendered configuration. Nothing is ever sanitized silently.

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::quote::quote;

/// Longest accepted node name (Serf names are hostnames, at most an FQDN).
pub const MAX_NAME_LEN: usize = 253;
/// HAProxy accepts server weights from 0 to 256.
pub const MAX_WEIGHT: u16 = 256;
/// Weight written when none is given (HAProxy's own default).
pub const DEFAULT_WEIGHT: u16 = 1;
pub const MAX_TAGS: usize = 64;
const MAX_TAG_KEY_LEN: usize = 64;
const MAX_TAG_VALUE_LEN: usize = 256;

/// File-name endings of editor backups and package-manager leftovers. Such
/// files in the nodes folder are ignored, and no node may be named like them.
const IGNORED_SUFFIXES: &[&[u8]] = &[
    b".bak", b".orig", b".rej", b".swp", b".swo", b".swx", b".tmp", b".lock",
];
/// rpm's leftovers: the last extension starts with `rpm` (`*.rpmnew`,
/// `*.rpmsave`, `*.rpmorig`, `*.rpm`).
const IGNORED_EXTENSION_START: &[u8] = b"rpm";
/// dpkg's leftovers: `*.dpkg-old`, `*.dpkg-new`, `*.dpkg-tmp`, `*.dpkg-dist`, …
const IGNORED_INFIX: &[u8] = b".dpkg-";
/// Whole names that are no node: vim's probe, the empty file it creates
/// and deletes in a folder it saves into to test that it may write there.
const IGNORED_NAMES: &[&[u8]] = &[b"4913"];

/// One backend node, as written to `<nodes-dir>/<name>` (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub name: String,
    pub address: String,
    /// `None` only for files that gave no port (lab format); filled from the
    /// configured default port when rendering.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub weight: Option<u16>,
    #[serde(default, deserialize_with = "unique_keys")]
    pub tags: BTreeMap<String, String>,
}

impl Node {
    /// The port, or `default` when the file gives none.
    pub fn port_or(&self, default: u16) -> u16 {
        self.port.unwrap_or(default)
    }

    /// The weight, or HAProxy's default when the file gives none.
    pub fn weight_or_default(&self) -> u16 {
        self.weight.unwrap_or(DEFAULT_WEIGHT)
    }

    /// `ADDRESS:PORT` as HAProxy and a reader take it without a doubt: an
    /// IPv6 address in brackets, since `fd00::1:80` reads two ways.
    pub fn endpoint(&self, default_port: u16) -> String {
        crate::haproxy::endpoint(&self.address, self.port_or(default_port))
    }

    /// Checks every field; the error names the field and shows the value escaped.
    pub fn validate(&self) -> Result<()> {
        validate_name(&self.name)?;
        validate_address(&self.address)?;
        if let Some(port) = self.port {
            ensure!(
                port != 0,
                "invalid port 0 for node `{}`: use 1-65535",
                self.name
            );
        }
        if let Some(weight) = self.weight {
            ensure!(
                weight <= MAX_WEIGHT,
                "invalid weight {weight} for node `{}`: use 0-{MAX_WEIGHT}",
                self.name
            );
        }
        ensure!(
            self.tags.len() <= MAX_TAGS,
            "node `{}` has {} tags, at most {MAX_TAGS} are allowed",
            self.name,
            self.tags.len()
        );
        for (key, value) in &self.tags {
            validate_tag(key, value)?;
        }
        if let Some(backend) = self.tags.get("backend") {
            // It becomes an HAProxy section name in the built-in template.
            validate_name(backend)
                .with_context(|| format!("invalid backend tag of node `{}`", self.name))?;
        }
        Ok(())
    }

    /// The node's JSON file content (one line, newline-terminated). An
    /// error, never an empty line, if it could not be serialized.
    pub fn to_file_bytes(&self) -> Result<Vec<u8>> {
        let mut out = serde_json::to_vec(self)
            .with_context(|| format!("unable to serialize node `{}`", self.name))?;
        out.push(b'\n');
        Ok(out)
    }
}

/// Whether a file in the nodes folder is not a node: hidden files (hacfg's
/// own index and temp files among them), editor backups, swap files and
/// vim's write probe `4913`, lock files, and package leftovers. Raw bytes:
/// the rules apply before any other check of the name.
pub fn is_ignored_file_name(name: &[u8]) -> bool {
    IGNORED_NAMES.contains(&name)
        || name.starts_with(b".")
        || name.starts_with(b"#")
        || name.ends_with(b"~")
        || IGNORED_SUFFIXES.iter().any(|s| name.ends_with(s))
        || name
            .rsplit(|b| *b == b'.')
            .next()
            .is_some_and(|ext| ext.len() < name.len() && ext.starts_with(IGNORED_EXTENSION_START))
        || name
            .windows(IGNORED_INFIX.len())
            .any(|w| w == IGNORED_INFIX)
}

/// A number as people and Serf tags write it: plain decimal digits, no
/// sign, no leading zero, no spaces (`80`; not `+80`, `0080` or `8e1`).
pub fn parse_number(text: &str) -> Option<u32> {
    let plain = !text.is_empty()
        && text.len() <= 9
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    plain.then(|| text.parse().ok()).flatten()
}

/// A port: `parse_number` in 1-65535.
pub fn parse_port(text: &str) -> Result<u16> {
    parse_number(text)
        .and_then(|n| u16::try_from(n).ok())
        .filter(|p| *p != 0)
        .with_context(|| format!("invalid port {}: use 1-65535 in plain digits", quote(text)))
}

/// A weight: `parse_number` in 0-256.
pub fn parse_weight(text: &str) -> Result<u16> {
    parse_number(text)
        .and_then(|n| u16::try_from(n).ok())
        .filter(|w| *w <= MAX_WEIGHT)
        .with_context(|| {
            format!(
                "invalid weight {}: use 0-{MAX_WEIGHT} in plain digits",
                quote(text)
            )
        })
}

/// `KEY=VALUE` items (`--tag`, `--var`, Serf's `k=v,k=v`): the value is
/// everything after the first `=`; a key given twice is an error.
pub fn parse_pairs<'a>(
    items: impl IntoIterator<Item = &'a str>,
) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for item in items {
        let (k, v) = item
            .split_once('=')
            .with_context(|| format!("{} is not KEY=VALUE", quote(item)))?;
        ensure!(
            map.insert(k.to_string(), v.to_string()).is_none(),
            "the key {} is given twice",
            quote(k)
        );
    }
    Ok(map)
}

/// Reads a JSON string map, refusing a key given twice (serde's own maps
/// keep the last one silently).
pub fn unique_keys<'de, D>(de: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of strings")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((k, v)) = map.next_entry::<String, String>()? {
                if out.contains_key(&k) {
                    return Err(serde::de::Error::custom(format!(
                        "the key {} is given twice",
                        quote(&k)
                    )));
                }
                out.insert(k, v);
            }
            Ok(out)
        }
    }
    de.deserialize_map(Visitor)
}

/// A name must be usable as an HAProxy server name and as a plain file name.
pub fn validate_name(name: &str) -> Result<()> {
    ensure!(!name.is_empty(), "invalid node name \"\": it is empty");
    let shown = quote(name);
    ensure!(
        name.len() <= MAX_NAME_LEN,
        "invalid node name {shown}: longer than {MAX_NAME_LEN} bytes"
    );
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
    {
        bail!(
            "invalid node name {shown}: character {bad:?} is not allowed \
             (use letters, digits, '-', '_', '.', ':')"
        );
    }
    ensure!(
        !name.starts_with('-') && !name.starts_with('.'),
        "invalid node name {shown}: it must not start with '-' or '.'"
    );
    ensure!(
        !is_ignored_file_name(name.as_bytes()),
        "invalid node name {shown}: files named like this are ignored as backups"
    );
    Ok(())
}

/// An IPv4/IPv6 literal or an RFC 1123 host name.
pub fn validate_address(address: &str) -> Result<()> {
    if address.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let bad = || {
        format!(
            "invalid address {}: not an IP address or a DNS host name",
            quote(address)
        )
    };
    ensure!(!address.is_empty() && address.len() <= 253, bad());
    let host = address.strip_suffix('.').unwrap_or(address);
    for label in host.split('.') {
        ensure!(
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-'),
            bad()
        );
    }
    // "1.2.3.999" is a mistyped IP address, not a host name (RFC 3696 2).
    let last = host.rsplit('.').next().unwrap_or(host);
    ensure!(!last.bytes().all(|b| b.is_ascii_digit()), bad());
    Ok(())
}

pub fn validate_tag(key: &str, value: &str) -> Result<()> {
    ensure!(
        !key.is_empty()
            && key.len() <= MAX_TAG_KEY_LEN
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')),
        "invalid tag key {}: use 1-{MAX_TAG_KEY_LEN} letters, digits, '-', '_', '.'",
        quote(key)
    );
    ensure!(
        value.len() <= MAX_TAG_VALUE_LEN
            && value.bytes().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b'@' | b'+' | b'=')
            }),
        "invalid value {} for tag `{key}`: use at most {MAX_TAG_VALUE_LEN} letters, \
         digits, '-', '_', '.', ':', '/', '@', '+', '='",
        quote(value)
    );
    Ok(())
}

/// For an unbracketed IPv6 address whose last group could be a port
/// (`::1:80`): the address and port a person may have meant.
pub fn ambiguous_ipv6(address: &str) -> Option<(String, u16)> {
    let (head, tail) = address.rsplit_once(':')?;
    let port = parse_port(tail).ok()?;
    let both =
        address.parse::<std::net::Ipv6Addr>().is_ok() && head.parse::<std::net::Ipv6Addr>().is_ok();
    both.then(|| (head.to_string(), port))
}

/// Splits `HOST`, `HOST:PORT`, `IPV6` or `[IPV6]:PORT` and validates both parts.
pub fn parse_endpoint(spec: &str) -> Result<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = spec.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .with_context(|| format!("invalid address {}: missing ']'", quote(spec)))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => bail!(
                    "invalid address {}: expected ':PORT' after ']'",
                    quote(spec)
                ),
            },
        }
    } else {
        match spec.matches(':').count() {
            1 => spec
                .split_once(':')
                .map_or((spec, None), |(h, p)| (h, Some(p))),
            _ => (spec, None),
        }
    };
    validate_address(host)?;
    // Store IP literals in their canonical form so equal nodes compare equal.
    let host = host
        .parse::<IpAddr>()
        .map_or_else(|_| host.to_ascii_lowercase(), |ip| ip.to_string());
    let port = port
        .map(|p| parse_port(p).map_err(|e| anyhow::anyhow!("{e} in address {}", quote(spec))))
        .transpose()?;
    Ok((host, port))
}

/// Parses a node file: hacfg's JSON, or one of the lab's one-line formats
/// (`<name> <ip>`, `<ip>`, `<ip>:<port>`). `file_name` is the node's identity.
pub fn parse_node_file(file_name: &str, content: &[u8]) -> Result<Node> {
    let text = std::str::from_utf8(content).context("the file is not UTF-8 text")?;
    let trimmed = text.trim();
    let node = if trimmed.starts_with('{') {
        // serde's words quote what they refuse (an unknown field's name)
        // whole: cut to a readable length.
        let node: Node = serde_json::from_str(trimmed).map_err(|e| {
            let said = crate::quote::shorten(&e.to_string(), crate::quote::SHOWN);
            anyhow::anyhow!("invalid JSON node: {said}")
        })?;
        ensure!(
            node.name == file_name,
            "the file names node {} but is named `{file_name}`",
            quote(&node.name)
        );
        node
    } else {
        let mut fields = trimmed.split_ascii_whitespace();
        let (name, endpoint) = match (fields.next(), fields.next(), fields.next()) {
            (Some(endpoint), None, None) => (file_name, endpoint),
            (Some(name), Some(endpoint), None) => (name, endpoint),
            (None, _, _) => bail!("the file is empty"),
            _ => bail!("expected `<name> <ip>`, `<ip>`, `<ip>:<port>` or JSON"),
        };
        ensure!(
            name == file_name,
            "the file names node {} but is named `{file_name}`",
            quote(name)
        );
        let (address, port) = parse_endpoint(endpoint)?;
        Node {
            name: name.to_string(),
            address,
            port,
            weight: None,
            tags: BTreeMap::new(),
        }
    };
    node.validate()?;
    Ok(node)
}

/// One way to make a node in unit tests: `Node::named("s1").port(80)`.
#[cfg(test)]
impl Node {
    /// A valid node at `10.0.0.1`, with no port, weight or tags.
    pub fn named(name: &str) -> Node {
        Node {
            name: name.into(),
            address: "10.0.0.1".into(),
            port: None,
            weight: None,
            tags: BTreeMap::new(),
        }
    }

    pub fn at(mut self, address: &str) -> Node {
        self.address = address.into();
        self
    }

    pub fn port(mut self, port: u16) -> Node {
        self.port = Some(port);
        self
    }

    pub fn weight(mut self, weight: u16) -> Node {
        self.weight = Some(weight);
        self
    }

    pub fn tag(mut self, key: &str, value: &str) -> Node {
        self.tags.insert(key.into(), value.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["s1", "543a4bed586c", "web-1.example.com", "a_b:c", "A"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        for bad in [
            "", ".", "..", "../x", "a/b", "-x", ".x", "a b", "a\nb", "a#b", "a~", "x.bak", "é",
            "4913", "x.swx", &long,
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn name_error_shows_value_escaped() {
        let err = validate_name("s1\nserver evil").unwrap_err().to_string();
        assert!(err.contains(r#""s1\nserver evil""#), "{err}");
    }

    #[test]
    fn addresses() {
        for ok in ["10.0.0.1", "::1", "fe80::1", "web.local", "a-b.c", "host."] {
            assert!(validate_address(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1.2.3.256",
            "a..b",
            "-a.b",
            "a b",
            "a:b",
            "h_st",
            "1.2.3.4 x",
        ] {
            assert!(validate_address(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn endpoints() {
        let ep = |s| parse_endpoint(s).unwrap();
        assert_eq!(ep("10.0.0.1"), ("10.0.0.1".into(), None));
        assert_eq!(ep("10.0.0.1:8080"), ("10.0.0.1".into(), Some(8080)));
        assert_eq!(ep("[::1]:80"), ("::1".into(), Some(80)));
        assert_eq!(ep("[::1]"), ("::1".into(), None));
        assert_eq!(ep("fe80:0::1"), ("fe80::1".into(), None));
        assert_eq!(ep("Web.Local:1"), ("web.local".into(), Some(1)));
        for bad in [
            "1.2.3.4:0",
            "1.2.3.4:65536",
            "1.2.3.4:+1",
            "[::1",
            "[::1]x",
            "a:",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ambiguous_ipv6_addresses() {
        assert_eq!(ambiguous_ipv6("::1:80"), Some(("::1".into(), 80)));
        assert_eq!(ambiguous_ipv6("fd00::1:81"), Some(("fd00::1".into(), 81)));
        assert_eq!(ambiguous_ipv6("2001:db8::10"), None);
        assert_eq!(ambiguous_ipv6("10.0.0.1"), None);
    }

    #[test]
    fn lab_formats() {
        let n = parse_node_file("543a4bed586c", b"543a4bed586c 192.168.42.22\n").unwrap();
        assert_eq!((n.address.as_str(), n.port), ("192.168.42.22", None));
        let n = parse_node_file("s1", b"10.0.0.2:8080").unwrap();
        assert_eq!((n.name.as_str(), n.port), ("s1", Some(8080)));
        assert!(parse_node_file("s1", b"s2 10.0.0.2").is_err());
        assert!(parse_node_file("s1", b"").is_err());
        assert!(parse_node_file("s1", b"s1 10.0.0.2 extra").is_err());
    }

    #[test]
    fn json_round_trip_and_identity() {
        let node = Node::named("s1").port(80).weight(5).tag("backend", "api");
        let bytes = node.to_file_bytes().unwrap();
        assert!(bytes.ends_with(b"}\n") && !bytes[..bytes.len() - 1].contains(&b'\n'));
        assert_eq!(parse_node_file("s1", &bytes).unwrap(), node);
        assert!(parse_node_file("s2", &bytes).is_err());
        assert!(parse_node_file("s1", br#"{"name":"s1"}"#).is_err());
        assert!(parse_node_file("s1", br#"{"name":"s1","address":"a b"}"#).is_err());
        assert!(parse_node_file("s1", br#"{"name":"s1","address":"h","wieght":1}"#).is_err());
    }

    #[test]
    fn tags() {
        assert!(validate_tag("backend", "api").is_ok());
        assert!(validate_tag("k", "").is_ok());
        for (k, v) in [
            ("", "x"),
            ("a b", "x"),
            ("k", "a b"),
            ("k", "a\n"),
            ("k", "#x"),
        ] {
            assert!(validate_tag(k, v).is_err(), "{k:?}={v:?}");
        }
    }
}
