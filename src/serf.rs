//! Serf membership: handler events (`hacfg serf`) and the live member list
//! (`hacfg sync`) turned into node-folder changes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;

use crate::node::{self, Node};

/// One member as Serf describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub name: String,
    pub address: String,
    pub role: String,
    pub tags: BTreeMap<String, String>,
}

/// What an event asks of the nodes folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Add or update the members.
    Upsert,
    /// Remove the members.
    Remove,
    /// Nothing to do (user events, queries, failures with `--on-failed keep`).
    Ignore,
}

/// Maps `SERF_EVENT` to an action.
pub fn action_of(event: &str, keep_failed: bool) -> Result<Action> {
    Ok(match event {
        "member-join" | "member-update" => Action::Upsert,
        "member-leave" | "member-reap" => Action::Remove,
        "member-failed" if keep_failed => Action::Ignore,
        "member-failed" => Action::Remove,
        "user" | "query" => Action::Ignore,
        other => bail!("unknown SERF_EVENT {other:?}: is hacfg serf run by a Serf agent?"),
    })
}

/// Reads all of stdin (Serf waits for its handler to consume it).
pub fn read_stdin() -> Result<String> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .context("unable to read the Serf event from stdin")?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Undoes Serf's escaping of tabs and newlines inside fields.
fn unescape(field: &str) -> String {
    field.replace("\\t", "\t").replace("\\n", "\n")
}

/// Parses one stdin line: `name \t address \t role \t k=v,k=v`.
pub fn parse_member_line(line: &str) -> Result<Member> {
    let fields: Vec<&str> = line.split('\t').collect();
    ensure!(
        (2..=4).contains(&fields.len()),
        "malformed member line {line:?}: expected `name<TAB>address<TAB>role<TAB>tags`"
    );
    let field = |i: usize| fields.get(i).map_or(String::new(), |f| unescape(f));
    let mut tags = BTreeMap::new();
    for pair in field(3).split(',').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("malformed tag {pair:?} in member line {line:?}"))?;
        tags.insert(k.to_string(), v.to_string());
    }
    Ok(Member {
        name: field(0),
        address: field(1),
        role: field(2),
        tags,
    })
}

/// The node for a member: tags `port` and `weight` become fields, the rest
/// (except `role`) stay tags. Hostile values are refused, never cleaned.
pub fn node_of(member: &Member, default_port: u16) -> Result<Node> {
    node::validate_name(&member.name)?;
    let (address, _) = node::parse_endpoint(&member.address)?;
    let mut tags = member.tags.clone();
    tags.remove("role");
    let number = |key: &str, tags: &mut BTreeMap<String, String>| -> Result<Option<u16>> {
        tags.remove(key)
            .map(|v| {
                v.parse::<u16>()
                    .with_context(|| format!("invalid {key} tag {v:?}"))
            })
            .transpose()
    };
    let port = number("port", &mut tags)?.unwrap_or(default_port);
    let weight = number("weight", &mut tags)?.unwrap_or(node::DEFAULT_WEIGHT);
    let node = Node {
        name: member.name.clone(),
        address,
        port: Some(port),
        weight: Some(weight),
        tags,
    };
    node.validate()?;
    Ok(node)
}

/// `serf members -format=json`, as far as hacfg reads it.
#[derive(Debug, Deserialize)]
struct MembersJson {
    members: Vec<MemberJson>,
}

#[derive(Debug, Deserialize)]
struct MemberJson {
    name: String,
    addr: String,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    status: String,
}

/// The alive members, from the local agent's RPC endpoint.
pub fn alive_members(serf_bin: &Path, rpc_addr: Option<&str>) -> Result<Vec<Member>> {
    let mut cmd = Command::new(serf_bin);
    cmd.args(["members", "-format=json"]);
    if let Some(addr) = rpc_addr {
        cmd.arg(format!("-rpc-addr={addr}"));
    }
    let what = format!("`{} members`", serf_bin.display());
    let done = crate::process::run_with_timeout(&mut cmd, &what, Duration::from_secs(10))?;
    ensure!(
        done.success,
        "{what} failed ({}): {}",
        done.status,
        done.output
    );
    parse_members_json(&done.stdout)
        .with_context(|| format!("unable to read the member list from {what}"))
}

fn parse_members_json(text: &str) -> Result<Vec<Member>> {
    let list: MembersJson = serde_json::from_str(text)?;
    Ok(list
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
            }
        })
        .collect())
}

/// The changes that make `current` equal to `wanted` (both keyed by name).
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub upserts: Vec<Node>,
    pub removals: Vec<String>,
}

pub fn plan_sync(current: &[Node], wanted: &[Node]) -> Plan {
    let have: BTreeMap<&str, &Node> = current.iter().map(|n| (n.name.as_str(), n)).collect();
    let want: BTreeSet<&str> = wanted.iter().map(|n| n.name.as_str()).collect();
    Plan {
        upserts: wanted
            .iter()
            .filter(|n| have.get(n.name.as_str()) != Some(n))
            .cloned()
            .collect(),
        removals: current
            .iter()
            .filter(|n| !want.contains(n.name.as_str()))
            .map(|n| n.name.clone())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines() {
        let m = parse_member_line("s1\t10.0.0.1\tbackend\tport=8080,role=backend,w=x=y").unwrap();
        assert_eq!(m.name, "s1");
        assert_eq!(m.tags["w"], "x=y");
        let n = node_of(&m, 3000).unwrap();
        assert_eq!((n.port, n.tags.len()), (Some(8080), 1));
        let empty = parse_member_line("s2\t10.0.0.2\t\t").unwrap();
        assert_eq!((empty.role.as_str(), empty.tags.len()), ("", 0));
        assert_eq!(node_of(&empty, 3000).unwrap().port, Some(3000));
        assert!(parse_member_line("just-a-name").is_err());
    }

    #[test]
    fn escaped_newline_is_refused() {
        let m = parse_member_line("s1\\nserver evil 1.2.3.4\t10.0.0.1\tbackend\t").unwrap();
        assert_eq!(m.name, "s1\nserver evil 1.2.3.4");
        assert!(node_of(&m, 3000).is_err());
        let m = parse_member_line("s1\t10.0.0.1\tbackend\tport=99999").unwrap();
        assert!(node_of(&m, 3000).is_err());
    }

    #[test]
    fn actions() {
        assert_eq!(action_of("member-reap", false).unwrap(), Action::Remove);
        assert_eq!(action_of("member-failed", true).unwrap(), Action::Ignore);
        assert_eq!(action_of("user", false).unwrap(), Action::Ignore);
        assert!(action_of("", false).is_err());
    }

    #[test]
    fn members_json() {
        let text = r#"{"members":[
          {"name":"a","addr":"127.0.0.1:7946","port":7946,"tags":{"role":"backend"},"status":"alive"},
          {"name":"b","addr":"127.0.0.2:7946","port":7946,"tags":{},"status":"failed"}]}"#;
        let members = parse_members_json(text).unwrap();
        assert_eq!(members.len(), 1);
        assert_eq!(
            (members[0].address.as_str(), members[0].role.as_str()),
            ("127.0.0.1", "backend")
        );
    }

    #[test]
    fn sync_plan() {
        let n = |name: &str, addr: &str| Node {
            name: name.into(),
            address: addr.into(),
            port: Some(1),
            weight: Some(1),
            tags: BTreeMap::new(),
        };
        let plan = plan_sync(
            &[n("a", "1.1.1.1"), n("b", "2.2.2.2")],
            &[n("b", "2.2.2.3"), n("c", "3.3.3.3")],
        );
        assert_eq!(plan.removals, ["a"]);
        assert_eq!(plan.upserts, [n("b", "2.2.2.3"), n("c", "3.3.3.3")]);
    }
}
