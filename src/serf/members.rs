//! The local Serf agent asked through its RPC endpoint: `serf members`
//! (for `sync` and `fleet`) and `serf query` (for `fleet`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use std::fmt;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::event::Member;
use crate::node;
use crate::process::Run;

/// Largest `serf members` answer read (about 150 bytes per member).
const MEMBERS_CAP: usize = 256 << 20;

/// `serf members -format=json`, as far as hacfg reads it.
#[derive(Debug, Deserialize)]
struct MembersJson {
    members: Vec<MemberJson>,
}

#[derive(Debug, Deserialize)]
struct MemberJson {
    name: String,
    addr: String,
    #[serde(default, deserialize_with = "node::unique_keys")]
    tags: BTreeMap<String, String>,
    status: String,
}

/// What `serf members` says: the alive members, and the names of the
/// failed ones (not left, not reaped yet).
#[derive(Debug, Default)]
pub struct MemberList {
    pub alive: Vec<Member>,
    pub failed: BTreeSet<String>,
}

/// The member list, from the local agent's RPC endpoint.
pub fn member_list(serf_bin: &Path, rpc_addr: Option<&str>) -> Result<MemberList> {
    let mut cmd = Command::new(serf_bin);
    cmd.args(["members", "-format=json"]);
    if let Some(addr) = rpc_addr {
        cmd.arg(format!("-rpc-addr={addr}"));
    }
    let what = format!("`{} members`", serf_bin.display());
    let done = Run::new(&mut cmd, &what)
        .cap(MEMBERS_CAP)
        .run(Duration::from_secs(10))?
        .succeeded(&what)?;
    let text = String::from_utf8_lossy(&done.stdout);
    parse_members_json(&text).with_context(|| format!("unable to read the member list from {what}"))
}

fn parse_members_json(text: &str) -> Result<MemberList> {
    let list: MembersJson = serde_json::from_str(text)?;
    let failed = list
        .members
        .iter()
        .filter(|m| m.status == "failed")
        .map(|m| m.name.clone())
        .collect();
    let alive = list
        .members
        .into_iter()
        .filter(|m| m.status == "alive")
        .map(|m| {
            // `addr` is `ip:port` (the gossip port, not the service's).
            let address = match node::parse_endpoint(&m.addr) {
                Ok((host, _)) => host,
                Err(_) => m.addr,
            };
            Member {
                name: m.name,
                address,
                role: m.tags.get("role").cloned().unwrap_or_default(),
                tags: m.tags,
                notes: Vec::new(),
            }
        })
        .collect();
    Ok(MemberList { alive, failed })
}

/// Largest `serf query` output read: at most `QUERY_CAP` bytes are held
/// (twice that while the buffer grows), whatever the responders send.
/// Serf caps each response at 1 KiB: 16 MiB is thousands of balancers,
/// even with every byte escaped.
pub const QUERY_CAP: usize = 16 << 20;
/// Longest answer kept: a longer one keeps only its length (a digest is
/// at most `answer::ANSWER_CAP` bytes, so it is malformed anyway).
pub const REPLY_CAP: usize = super::answer::ANSWER_CAP;
/// Longest member name kept from an answer; Serf's own names are far
/// shorter.
const NAME_CAP: usize = 1024;
/// Answers kept from members that are no alive balancer of the role: the
/// rest are counted, not kept, so that a flood of responders costs no
/// memory (and never votes: see `fleet::compare`).
pub const STRANGERS_CAP: usize = 1000;

/// One member's answer as kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// At most `REPLY_CAP` bytes.
    Text(String),
    /// Longer than `REPLY_CAP`: its length alone.
    Long(usize),
}

/// What a query brought back: who received it, and each member's answer.
#[derive(Debug, Default)]
pub struct Answers {
    /// The expected members that acked the query.
    pub acks: Vec<String>,
    pub responses: BTreeMap<String, Reply>,
    /// Answers not kept: from strangers past `STRANGERS_CAP`, or under a
    /// name longer than `NAME_CAP`.
    pub dropped: usize,
}

/// `serf query NAME` through the local agent, to the members whose tags
/// match `tag` (`key=regexp`), waiting `timeout` for their answers (Serf
/// returns at the timeout, answered or not). The answers are read within
/// a memory bound: see `QUERY_CAP`, `REPLY_CAP` and `STRANGERS_CAP`;
/// `expected` are the alive balancers, whose answers are always kept.
pub fn query(
    serf_bin: &Path,
    rpc_addr: Option<&str>,
    (name, tag): (&str, &str),
    timeout: Duration,
    expected: &BTreeSet<String>,
) -> Result<Answers> {
    let mut cmd = Command::new(serf_bin);
    cmd.args(["query", "-format=json", "-tag", tag]);
    cmd.arg(format!("-timeout={}ms", timeout.as_millis().max(1)));
    if let Some(addr) = rpc_addr {
        cmd.arg(format!("-rpc-addr={addr}"));
    }
    cmd.arg(name);
    let what = format!("`{} query {name}`", serf_bin.display());
    // One byte over the cap tells a full buffer from a cut one.
    let done = Run::new(&mut cmd, &what)
        .cap(QUERY_CAP + 1)
        .run(timeout + Duration::from_secs(10))?
        .succeeded(&what)?;
    if done.stdout.len() > QUERY_CAP {
        bail!(
            "{what} printed more than {} MiB: its answers are not read",
            QUERY_CAP >> 20
        );
    }
    parse_answers(&done.stdout, expected)
        .with_context(|| format!("unable to read the answers of {what}"))
}

/// Reads `serf query -format=json` (`{"Acks": [...], "Responses": {...}}`)
/// as hostile input, keeping what `query` says.
fn parse_answers(json: &[u8], expected: &BTreeSet<String>) -> Result<Answers> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let answers = AnswersSeed { expected }.deserialize(&mut de)?;
    de.end()?;
    Ok(answers)
}

/// A string kept only up to `N` bytes; a longer one keeps its length.
struct Capped<const N: usize>(Reply);

impl<'de, const N: usize> Deserialize<'de> for Capped<N> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_str(CappedVisitor::<N>)
    }
}

struct CappedVisitor<const N: usize>;

impl<const N: usize> Visitor<'_> for CappedVisitor<N> {
    type Value = Capped<N>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Capped<N>, E> {
        Ok(Capped(if text.len() <= N {
            Reply::Text(text.to_string())
        } else {
            Reply::Long(text.len())
        }))
    }
}

/// The whole answer: `Acks` (`null` or names) and `Responses`.
struct AnswersSeed<'a> {
    expected: &'a BTreeSet<String>,
}

impl<'de> DeserializeSeed<'de> for AnswersSeed<'_> {
    type Value = Answers;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Answers, D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for AnswersSeed<'_> {
    type Value = Answers;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with `Acks` and `Responses`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Answers, A::Error> {
        let mut answers = Answers::default();
        while let Some(Capped(key)) = map.next_key::<Capped<16>>()? {
            let (expected, out) = (self.expected, &mut answers);
            match key {
                Reply::Text(k) if k == "Acks" => map.next_value_seed(Acks { expected, out })?,
                Reply::Text(k) if k == "Responses" => {
                    map.next_value_seed(Responses { expected, out })?;
                }
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(answers)
    }
}

/// `Acks`: only the expected members' are kept (they tell "no answer"
/// from "query not received").
struct Acks<'a> {
    expected: &'a BTreeSet<String>,
    out: &'a mut Answers,
}

impl<'de> DeserializeSeed<'de> for Acks<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Acks<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("null or a list of names")
    }

    /// Serf writes an empty list of acks as `null`.
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(Capped(name)) = seq.next_element::<Capped<NAME_CAP>>()? {
            match name {
                Reply::Text(name) if self.expected.contains(&name) => self.out.acks.push(name),
                _ => {}
            }
        }
        Ok(())
    }
}

/// `Responses`: every expected member's answer, and at most
/// `STRANGERS_CAP` others'.
struct Responses<'a> {
    expected: &'a BTreeSet<String>,
    out: &'a mut Answers,
}

impl<'de> DeserializeSeed<'de> for Responses<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Responses<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of answers by member name")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut strangers = 0;
        while let Some(Capped(name)) = map.next_key::<Capped<NAME_CAP>>()? {
            let Capped(reply) = map.next_value::<Capped<REPLY_CAP>>()?;
            match name {
                Reply::Text(name) if self.expected.contains(&name) => {
                    self.out.responses.insert(name, reply);
                }
                Reply::Text(name) if strangers < STRANGERS_CAP => {
                    strangers += 1;
                    self.out.responses.insert(name, reply);
                }
                _ => self.out.dropped += 1,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;

    #[test]
    fn members_json() {
        let text = r#"{"members":[
          {"name":"a","addr":"127.0.0.1:7946","port":7946,"tags":{"role":"backend"},"status":"alive"},
          {"name":"b","addr":"127.0.0.2:7946","port":7946,"tags":{},"status":"failed"}]}"#;
        let list = parse_members_json(text).unwrap();
        assert_eq!(list.failed.iter().collect::<Vec<_>>(), ["b"]);
        let members = list.alive;
        assert_eq!(members.len(), 1);
        assert_eq!(
            (members[0].address.as_str(), members[0].role.as_str()),
            ("127.0.0.1", "backend")
        );
        let text = r#"{"members":[{"name":"a","addr":"127.0.0.1:7946","tags":{"port":"1","port":"2"},"status":"alive"}]}"#;
        assert!(parse_members_json(text).is_err());
    }

    #[test]
    fn query_answers() {
        let expected: BTreeSet<String> = ["a".to_string()].into();
        let text = r#"{"Acks": null, "Responses": {"a": "x\n"}, "Other": [1]}"#;
        let answers = parse_answers(text.as_bytes(), &expected).unwrap();
        assert!(answers.acks.is_empty());
        assert_eq!(answers.responses["a"], Reply::Text("x\n".into()));
        let text = r#"{"Acks": ["a", "b"], "Responses": {}}"#;
        assert_eq!(
            parse_answers(text.as_bytes(), &expected).unwrap().acks,
            ["a"]
        );
        for bad in [r#"{"Responses": {"a": 1}}"#, r#"{"Acks": 1}"#, "[]", "{} x"] {
            assert!(parse_answers(bad.as_bytes(), &expected).is_err(), "{bad}");
        }
    }

    #[test]
    fn answers_are_kept_within_their_bounds() {
        let expected: BTreeSet<String> = ["bal-a".to_string()].into();
        // One huge answer (escaped, so serde copies it once) keeps its length.
        let huge = "\\u0041".repeat(1 << 20);
        let mut text = format!(r#"{{"Responses": {{"bal-a": "{huge}""#);
        for i in 0..STRANGERS_CAP + 500 {
            let _ = write!(text, r#","x{i}": "hacfg-digest/1""#);
        }
        let _ = write!(text, r#","{}": "y"}}}}"#, "n".repeat(NAME_CAP + 1));
        let answers = parse_answers(text.as_bytes(), &expected).unwrap();
        assert_eq!(answers.responses["bal-a"], Reply::Long(1 << 20));
        assert_eq!(answers.responses.len(), 1 + STRANGERS_CAP);
        assert_eq!(answers.dropped, 501);
        // The expected balancer's answer is kept even after the flood.
        let text = format!(
            r#"{{"Responses": {{{}, "bal-a": "ok"}}}}"#,
            (0..=STRANGERS_CAP)
                .map(|i| format!(r#""x{i}": """#))
                .collect::<Vec<_>>()
                .join(",")
        );
        let answers = parse_answers(text.as_bytes(), &expected).unwrap();
        assert_eq!(answers.responses["bal-a"], Reply::Text("ok".into()));
        assert_eq!(answers.dropped, 1);
    }
}
