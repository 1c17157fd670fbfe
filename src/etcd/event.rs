//! One etcd key as hacfg reads it: a watch event's (`ETCD_WATCH_*`, as
//! `etcdctl watch -- CMD` sets them) or a listed key's. The node is
//! named by the key's last segment under the prefix; its value is a node
//! file's content (hacfg's JSON, with or without `name`, or the lab's
//! one-line address).

use anyhow::{Context, Result, bail, ensure};

use super::quoted::unquote;
use crate::node::{self, Node};
use crate::quote::{SHOWN, quote, quote_bytes, shorten};

/// Largest value read: a node is well under 1 KiB; a larger value is
/// skipped, never parsed.
pub const VALUE_CAP: usize = 64 * 1024;

/// What a watch event does to its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `PUT`, with the value.
    Put(Vec<u8>),
    Delete,
}

/// One watch event, its variables checked and unquoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    /// The store's revision etcdctl gives: the watch response's, shared by
    /// the events of one response.
    pub revision: u64,
    pub key: Vec<u8>,
    pub change: Change,
}

/// The watch's variables as etcdctl sets them (`None`: unset).
#[derive(Debug, Clone, Default)]
pub struct Vars {
    pub revision: Option<String>,
    pub event_type: Option<String>,
    pub key: Option<String>,
    pub value: Option<String>,
}

impl Vars {
    /// The event. A missing or malformed revision or type is an error (no
    /// etcdctl watch ran this), and so is a key or value that is no
    /// Go-quoted text (etcdctl quotes every one).
    pub fn event(&self) -> Result<Watched> {
        let revision = self.revision.as_deref().unwrap_or_default();
        let revision = parse_revision(revision)
            .context("ETCD_WATCH_REVISION: is hacfg etcd run by `etcdctl watch`?")?;
        let kind = self.event_type.as_deref().unwrap_or_default();
        let change = match unquote(kind).ok().as_deref() {
            Some(b"PUT") => Change::Put(Vec::new()),
            Some(b"DELETE") => Change::Delete,
            _ => bail!(
                "unknown ETCD_WATCH_EVENT_TYPE {}: is hacfg etcd run by `etcdctl watch`?",
                quote(kind)
            ),
        };
        let key = unquote(self.key.as_deref().unwrap_or_default()).context("ETCD_WATCH_KEY")?;
        let change = match change {
            Change::Put(_) => Change::Put(self.value()?),
            Change::Delete => Change::Delete,
        };
        Ok(Watched {
            revision,
            key,
            change,
        })
    }

    /// ETCD_WATCH_VALUE, refused unread past [`VALUE_CAP`] (quoting at
    /// most quadruples it).
    fn value(&self) -> Result<Vec<u8>> {
        let text = self.value.as_deref().unwrap_or_default();
        ensure!(
            text.len() <= VALUE_CAP * 4 + 2,
            "ETCD_WATCH_VALUE of {} bytes is longer than {} KiB",
            text.len(),
            VALUE_CAP / 1024
        );
        unquote(text).context("ETCD_WATCH_VALUE")
    }
}

/// A revision: decimal digits only, no sign, at least 1.
pub fn parse_revision(text: &str) -> Result<u64> {
    let n = (!text.is_empty() && text.len() <= 20 && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse::<u64>().ok())
        .flatten();
    let n = n.with_context(|| {
        format!(
            "invalid revision {}: expected a positive number",
            quote(text)
        )
    })?;
    check_revision(n)
}

/// etcd's revisions are positive int64s: a larger one, recorded, would
/// make every later event look old and freeze the folder.
pub fn check_revision(n: u64) -> Result<u64> {
    ensure!(
        n > 0 && i64::try_from(n).is_ok(),
        "invalid revision {n}: etcd's revisions run from 1 to {}",
        i64::MAX
    );
    Ok(n)
}

/// The node's name for `key`: its last segment under `prefix`, which
/// must be a valid node name (no `/` in it: deeper keys are not nodes).
pub fn name_of(prefix: &str, key: &[u8]) -> Result<String> {
    let Some(rest) = key.strip_prefix(prefix.as_bytes()) else {
        bail!(
            "key {} is not under the prefix {}",
            quote_bytes(key),
            quote(prefix)
        );
    };
    let name = std::str::from_utf8(rest)
        .map_err(|_| anyhow::anyhow!("key {}: the name is not UTF-8", quote_bytes(key)))?;
    node::validate_name(name).with_context(|| format!("key {}", quote_bytes(key)))?;
    Ok(name.to_string())
}

/// The node `value` describes for `name`: a node file's content. A JSON
/// object may leave `name` out (the key names the node) and give
/// `backend` beside `tags`, as a tag.
pub fn node_of(name: &str, value: &[u8]) -> Result<Node> {
    let node = || {
        ensure!(
            value.len() <= VALUE_CAP,
            "the value of {} bytes is longer than {} KiB",
            value.len(),
            VALUE_CAP / 1024
        );
        if value.trim_ascii_start().starts_with(b"{") {
            node::parse_node_file(name, &named_json(name, value)?)
        } else {
            node::parse_node_file(name, value)
        }
    };
    node().with_context(|| format!("node `{name}`: invalid value"))
}

/// A JSON value whose objects give each field once, at every depth
/// (serde_json's `Map` keeps the last of two, where a node file refuses
/// them).
struct Unique(serde_json::Value);

impl<'de> serde::Deserialize<'de> for Unique {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Unique, D::Error> {
        d.deserialize_any(UniqueVisitor)
    }
}

struct UniqueVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
    type Value = Unique;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Unique, E> {
        Ok(Unique(v.into()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Unique, E> {
        Ok(Unique(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Unique, E> {
        Ok(Unique(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Unique, E> {
        Ok(Unique(v.into()))
    }
    fn visit_str<E>(self, v: &str) -> Result<Unique, E> {
        Ok(Unique(v.into()))
    }
    fn visit_unit<E>(self) -> Result<Unique, E> {
        Ok(Unique(serde_json::Value::Null))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Unique, A::Error> {
        let mut items = Vec::new();
        while let Some(Unique(item)) = a.next_element()? {
            items.push(item);
        }
        Ok(Unique(items.into()))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Unique, A::Error> {
        let mut map = serde_json::Map::new();
        while let Some((key, Unique(value))) = a.next_entry::<String, Unique>()? {
            if map.contains_key(&key) {
                let shown = quote(&key);
                return Err(serde::de::Error::custom(format!("duplicate field {shown}")));
            }
            map.insert(key, value);
        }
        Ok(Unique(map.into()))
    }
}

/// The JSON object with `name` set (when absent) and a top-level
/// `backend` moved into `tags`.
fn named_json(name: &str, value: &[u8]) -> Result<Vec<u8>> {
    let Unique(value) = serde_json::from_slice(value)
        .map_err(|e| anyhow::anyhow!("invalid JSON node: {}", shorten(&e.to_string(), SHOWN)))?;
    let serde_json::Value::Object(mut object) = value else {
        bail!("invalid JSON node: not an object");
    };
    object
        .entry("name")
        .or_insert_with(|| serde_json::Value::String(name.to_string()));
    if let Some(backend) = object.remove("backend") {
        let tags = object
            .entry("tags")
            .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
        let Some(tags) = tags.as_object_mut() else {
            bail!("invalid JSON node: `tags` is no object");
        };
        ensure!(
            tags.insert("backend".into(), backend).is_none(),
            "invalid JSON node: `backend` is given twice"
        );
    }
    Ok(serde_json::to_vec(&object)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(rev: &str, kind: &str, key: &str, value: &str) -> Vars {
        Vars {
            revision: Some(rev.into()),
            event_type: Some(kind.into()),
            key: Some(key.into()),
            value: Some(value.into()),
        }
    }

    #[test]
    fn events() {
        let put = vars("7", "\"PUT\"", "\"/hacfg/nodes/s1\"", "\"10.0.0.1\"");
        let put = put.event().unwrap();
        assert_eq!(put.revision, 7);
        assert_eq!(put.change, Change::Put(b"10.0.0.1".to_vec()));
        let del = vars("8", "\"DELETE\"", "\"/hacfg/nodes/s1\"", "\"\"");
        assert_eq!(del.event().unwrap().change, Change::Delete);
        for bad in [
            vars("", "\"PUT\"", "\"k\"", "\"v\""),
            vars("0", "\"PUT\"", "\"k\"", "\"v\""),
            vars("-1", "\"PUT\"", "\"k\"", "\"v\""),
            vars("1", "PUT", "\"k\"", "\"v\""),
            vars("1", "\"PATCH\"", "\"k\"", "\"v\""),
            vars("1", "\"PUT\"", "k", "\"v\""),
            vars("1", "\"PUT\"", "\"k\"", "v"),
        ] {
            assert!(bad.event().is_err(), "{bad:?}");
        }
        let big = format!("\"{}\"", "x".repeat(VALUE_CAP * 4 + 1));
        let big = vars("1", "\"PUT\"", "\"k\"", &big).event().unwrap_err();
        assert!(format!("{big:#}").contains("longer than"), "{big:#}");
    }

    #[test]
    fn names() {
        let p = "/hacfg/nodes/";
        assert_eq!(name_of(p, b"/hacfg/nodes/s1").unwrap(), "s1");
        for key in [
            &b"/hacfg/nodes/"[..],
            b"/hacfg/nodes/a/b",
            b"/hacfg/nodes/a%2Fb",
            b"/hacfg/nodes/\xff",
            b"/hacfg/nodes/.hacfg.held",
            b"/other/s1",
            b"/hacfg/nodes/s1\nserver evil 1.2.3.4",
        ] {
            assert!(name_of(p, key).is_err(), "{key:?}");
        }
    }

    #[test]
    fn values() {
        let n = node_of(
            "s1",
            br#"{"address":"10.0.0.1","port":8080,"backend":"api"}"#,
        )
        .unwrap();
        assert_eq!((n.name.as_str(), n.port), ("s1", Some(8080)));
        assert_eq!(n.tags["backend"], "api");
        assert_eq!(node_of("s1", b"10.0.0.1:81\n").unwrap().port, Some(81));
        let named = node_of("s1", br#"{"name":"s1","address":"10.0.0.1"}"#).unwrap();
        let tagged = br#"{"address":"10.0.0.1","weight":2,"tags":{"k":"a","j":"b"}}"#;
        let tagged = node_of("s1", tagged).unwrap();
        assert_eq!((tagged.weight, tagged.tags.len()), (Some(2), 2));
        assert_eq!(named.address, "10.0.0.1");
        for bad in [
            &br#"{"name":"s2","address":"10.0.0.1"}"#[..],
            br#"{"address":"10.0.0.1","extra":1}"#,
            br#"{"address":"10.0.0.1","backend":"a","tags":{"backend":"b"}}"#,
            br#"{"address":"10.0.0.1","backend":"a b"}"#,
            br#"{"address":"10.0.0.1","address":"10.0.0.2"}"#,
            br#"{"name":"s2","name":"s1","address":"10.0.0.1"}"#,
            br#"{"address":"10.0.0.1","backend":"a","backend":"b"}"#,
            br#"{"address":"10.0.0.1","tags":{"k":"a","k":"b"}}"#,
            br#"{"address":"10.0.0.1","port":0}"#,
            b"10.0.0.1 x y",
            b"",
            b"\xff",
            b"10.0.0.1\nserver evil",
        ] {
            assert!(node_of("s1", bad).is_err(), "{bad:?}");
        }
        let big = vec![b' '; VALUE_CAP + 1];
        assert!(node_of("s1", &big).is_err());
        // Every refusal names the node, and a parser's words are cut.
        let long = format!(r#"{{"address":"10.0.0.1","{}":1}}"#, "x".repeat(60_000));
        for bad in [&big[..], br#"{"tags":[]}"#, long.as_bytes(), b"{} x"] {
            let e = format!("{:#}", node_of("s1", bad).unwrap_err());
            assert!(e.starts_with("node `s1`: invalid value"), "{e}");
            assert!(e.len() < 1000, "{} bytes", e.len());
        }
        let dup = node_of("s1", br#"{"address":"10.0.0.1","address":"10.0.0.2"}"#);
        assert!(format!("{:#}", dup.unwrap_err()).contains("duplicate field \"address\""));
    }

    #[test]
    fn revisions_are_etcds_int64s() {
        assert_eq!(
            parse_revision("9223372036854775807").unwrap(),
            i64::MAX as u64
        );
        for bad in ["9223372036854775808", "18446744073709551615", "0"] {
            let e = format!("{:#}", parse_revision(bad).unwrap_err());
            assert!(e.contains("invalid revision"), "{e}");
        }
    }
}
