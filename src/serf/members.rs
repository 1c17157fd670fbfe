//! The local Serf agent asked through its RPC endpoint: `serf members`
//! (for `sync` and `fleet`) and `serf query` (for `fleet`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;

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

/// Largest `serf query` answer read: Serf caps each response at 1 KiB.
const QUERY_CAP: usize = 64 << 20;

/// What a query brought back: who received it, and each member's answer.
#[derive(Debug, Default, Deserialize)]
pub struct Answers {
    #[serde(rename = "Acks", default, deserialize_with = "null_is_empty")]
    pub acks: Vec<String>,
    #[serde(rename = "Responses", default)]
    pub responses: BTreeMap<String, String>,
}

/// Serf writes an empty list of acks as `null`.
fn null_is_empty<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(de)?.unwrap_or_default())
}

/// `serf query NAME` through the local agent, to the members whose tags
/// match `tag` (`key=regexp`), waiting `timeout` for their answers (Serf
/// returns at the timeout, answered or not).
pub fn query(
    serf_bin: &Path,
    rpc_addr: Option<&str>,
    name: &str,
    tag: &str,
    timeout: Duration,
) -> Result<Answers> {
    let mut cmd = Command::new(serf_bin);
    cmd.args(["query", "-format=json", "-tag", tag]);
    cmd.arg(format!("-timeout={}ms", timeout.as_millis().max(1)));
    if let Some(addr) = rpc_addr {
        cmd.arg(format!("-rpc-addr={addr}"));
    }
    cmd.arg(name);
    let what = format!("`{} query {name}`", serf_bin.display());
    let done = Run::new(&mut cmd, &what)
        .cap(QUERY_CAP)
        .run(timeout + Duration::from_secs(10))?
        .succeeded(&what)?;
    let text = String::from_utf8_lossy(&done.stdout);
    serde_json::from_str(&text).with_context(|| format!("unable to read the answers of {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let text = r#"{"Acks": null, "Responses": {"a": "x\n"}}"#;
        let answers: Answers = serde_json::from_str(text).unwrap();
        assert!(answers.acks.is_empty());
        assert_eq!(answers.responses["a"], "x\n");
        assert!(serde_json::from_str::<Answers>(r#"{"Responses": {"a": 1}}"#).is_err());
    }
}
