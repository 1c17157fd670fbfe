//! Serf membership: handler events (`hacfg serf`) and the live member list
//! (`hacfg sync`) turned into node-folder changes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Read};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde::Deserialize;

use crate::node::{self, Node};
use crate::process::Run;
use crate::quote::{quote, quote_bytes};

/// Longest member line read (a real one is well under 1 KiB: a name, an
/// address and at most 64 short tags); the rest of a longer line is skipped.
pub const LINE_CAP: usize = 64 * 1024;
/// Largest `serf members` answer read (about 150 bytes per member).
const MEMBERS_CAP: usize = 256 << 20;

/// One member as Serf describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub name: String,
    pub address: String,
    pub role: String,
    pub tags: BTreeMap<String, String>,
    /// What was wrong with tags hacfg does not use (dropped, not fatal).
    pub notes: Vec<String>,
}

/// The tags hacfg reads; any other tag is the operator's, and never costs
/// a member its place in the pool.
pub const USED_TAGS: [&str; 4] = ["role", "port", "weight", "backend"];

/// What an event asks of the nodes folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Add or update the members.
    Upsert,
    /// Remove the members.
    Remove,
    /// Remove the members HAProxy's checks do not see UP (`--on-failed verify`).
    Verify,
    /// Nothing to do (user events, queries, failures with `--on-failed keep`).
    Ignore,
}

/// What a failed member's node becomes (`--on-failed`, for `serf` and `sync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailed {
    /// Removed, as a leave.
    Remove,
    /// Kept: HAProxy's health checks alone decide.
    Keep,
    /// Removed once HAProxy's health checks see it DOWN too.
    Verify,
}

/// Maps `SERF_EVENT` to an action.
#[allow(clippy::match_same_arms)] // one arm per kind of event reads best
pub fn action_of(event: &str, on_failed: OnFailed) -> Result<Action> {
    Ok(match event {
        "member-join" | "member-update" => Action::Upsert,
        "member-leave" | "member-reap" => Action::Remove,
        "member-failed" => match on_failed {
            OnFailed::Remove => Action::Remove,
            OnFailed::Keep => Action::Ignore,
            OnFailed::Verify => Action::Verify,
        },
        "user" | "query" => Action::Ignore,
        other => bail!(
            "unknown SERF_EVENT {}: is hacfg serf run by a Serf agent?",
            quote(other)
        ),
    })
}

/// Reads an event's member lines to the end of `input` (Serf waits for its
/// handler to consume stdin). Blank lines are dropped; a line longer than
/// `LINE_CAP` is read past and comes back as an error.
pub fn read_lines(mut input: impl BufRead) -> Result<Vec<Result<String>>> {
    let context = "unable to read the Serf event from stdin";
    let mut lines = Vec::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = (&mut input)
            .take(LINE_CAP as u64 + 1)
            .read_until(b'\n', &mut buf)
            .context(context)?;
        if n == 0 {
            return Ok(lines);
        }
        if buf.len() > LINE_CAP {
            let shown = quote_bytes(&buf);
            let mut len = buf.len();
            while !buf.ends_with(b"\n") {
                buf.clear();
                let n = (&mut input)
                    .take(LINE_CAP as u64)
                    .read_until(b'\n', &mut buf)
                    .context(context)?;
                if n == 0 {
                    break;
                }
                len += n;
            }
            lines.push(Err(anyhow!(
                "member line of {len} bytes is longer than {} KiB: {}",
                LINE_CAP / 1024,
                shown.split('…').next().unwrap_or_default()
            )));
            continue;
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']);
        if !line.trim().is_empty() {
            lines.push(Ok(line.to_string()));
        }
    }
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
        "malformed member line {}: expected `name<TAB>address<TAB>role<TAB>tags`",
        quote(line)
    );
    let field = |i: usize| fields.get(i).map_or(String::new(), |f| unescape(f));
    let (mut tags, mut notes) = (BTreeMap::<String, String>::new(), Vec::new());
    let mut last: Option<String> = None;
    // Serf joins tags with ',' and does not escape one inside a value: a
    // piece without '=' continues the previous value.
    for piece in field(3).split(',').filter(|p| !p.is_empty()) {
        match (piece.split_once('='), &last) {
            (Some((k, v)), _) if !tags.contains_key(k) => {
                tags.insert(k.to_string(), v.to_string());
                last = Some(k.to_string());
            }
            (Some((k, _)), _) if USED_TAGS.contains(&k) => bail!(
                "malformed tags in member line {}: the key {} is given twice",
                quote(line),
                quote(k)
            ),
            (Some((k, _)), _) => {
                notes.push(format!(
                    "tag {} is given twice; the first is kept",
                    quote(k)
                ));
                last = None;
            }
            (None, Some(k)) => {
                if let Some(v) = tags.get_mut(k) {
                    v.push(',');
                    v.push_str(piece);
                }
            }
            (None, None) => notes.push(format!("dropped {}: not KEY=VALUE", quote(piece))),
        }
    }
    Ok(Member {
        name: field(0),
        address: field(1),
        role: field(2),
        tags,
        notes,
    })
}

/// The node for a member, and notes on the tags it dropped: tags `port`
/// and `weight` become fields, the rest (except `role`) stay tags. A bad
/// name, address, port or backend is an error (hostile values are refused,
/// never cleaned); a bad weight only tunes the node, so it is dropped, with
/// a note, and the node gets the default weight, as is a tag hacfg does not
/// use that fails validation.
pub fn node_of(member: &Member, default_port: u16) -> Result<(Node, Vec<String>)> {
    node::validate_name(&member.name)?;
    let (address, _) = node::parse_endpoint(&member.address)?;
    let mut tags = member.tags.clone();
    tags.remove("role");
    let port = tags
        .remove("port")
        .as_deref()
        .map(node::parse_port)
        .transpose();
    let port = port.map_err(|e| anyhow!("{e} (tag `port`)"))?;
    let mut notes = member.notes.clone();
    let weight = match tags.remove("weight").as_deref().map(node::parse_weight) {
        Some(Err(e)) => {
            notes.push(format!(
                "dropped tag `weight`: {e}; the node gets the default weight {}",
                node::DEFAULT_WEIGHT
            ));
            None
        }
        Some(Ok(weight)) => Some(weight),
        None => None,
    };
    let (port, weight) = (
        port.unwrap_or(default_port),
        weight.unwrap_or(node::DEFAULT_WEIGHT),
    );
    let mut kept = 0;
    tags.retain(|k, v| {
        if USED_TAGS.contains(&k.as_str()) {
            return true;
        }
        if let Err(e) = node::validate_tag(k, v) {
            notes.push(format!("dropped a tag: {e}"));
            return false;
        }
        kept += 1;
        if kept > node::MAX_TAGS - 1 {
            notes.push(format!(
                "dropped tag `{k}`: more than {} tags",
                node::MAX_TAGS
            ));
            return false;
        }
        true
    });
    let node = Node {
        name: member.name.clone(),
        address,
        port: Some(port),
        weight: Some(weight),
        tags,
    };
    node.validate()?;
    Ok((node, notes))
}

/// What a run asks of the nodes folder: the one result of `hacfg serf`
/// (an event) and `hacfg sync` (the member list), applied to the folder
/// the same way.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    /// Nodes to create or replace.
    pub upserts: Vec<Node>,
    /// Nodes to remove, by name.
    pub removals: Vec<String>,
    /// Why members were skipped (a bad name, address, port or backend, or
    /// a malformed line): the run exits 6.
    pub skipped: Vec<String>,
    /// The skipped members that have a valid name: an alive member backs
    /// whatever node of that name the folder has, so `sync` leaves it as
    /// it is, as `serf` does.
    pub untouched: BTreeSet<String>,
    /// Tags dropped from members that were kept: warnings only.
    pub notes: Vec<String>,
}

impl Changes {
    /// The names this plan writes or removes: members Serf says joined
    /// again, left or were reaped (their stays under `--on-failed verify` end).
    pub fn names(&self) -> Vec<String> {
        let upserts = self.upserts.iter().map(|n| n.name.clone());
        upserts.chain(self.removals.iter().cloned()).collect()
    }
}

/// The members of `roles` (but not the agent itself, `self_name`) as
/// nodes to write: the one batch policy of `hacfg serf` and `hacfg sync`.
/// A member given more than once is planned once, from its last line; a
/// skipped member with a valid name is named in its reason.
pub fn batch(
    members: impl IntoIterator<Item = Result<Member>>,
    roles: &[String],
    self_name: &str,
    default_port: u16,
) -> Changes {
    let (members, mut changes) = last_per_name(members);
    for member in members {
        let planned = member.and_then(|m| {
            if m.name == self_name || !roles.contains(&m.role) {
                return Ok(());
            }
            let (node, notes) = node_of(&m, default_port).map_err(|e| {
                if node::validate_name(&m.name).is_err() {
                    return e; // the error shows the name, escaped
                }
                changes.untouched.insert(m.name.clone());
                e.context(format!("member `{}`", m.name))
            })?;
            changes.notes.extend(
                notes
                    .into_iter()
                    .map(|n| format!("member `{}`: {n}", m.name)),
            );
            changes.upserts.push(node);
            Ok(())
        });
        if let Err(e) = planned {
            changes.skipped.push(format!("{e:#}"));
        }
    }
    changes
}

/// The members with the last line of each name (Serf describes a member
/// once per event: a repeated one is a copy or stale), in their order, and
/// changes with one note on how many lines were dropped. Lines that are no
/// member (malformed) are all kept.
fn last_per_name(
    members: impl IntoIterator<Item = Result<Member>>,
) -> (Vec<Result<Member>>, Changes) {
    let members: Vec<Result<Member>> = members.into_iter().collect();
    let mut last = std::collections::HashMap::new();
    for (at, member) in members.iter().enumerate() {
        if let Ok(m) = member {
            last.insert(m.name.as_str(), at);
        }
    }
    let keep: Vec<bool> = members
        .iter()
        .enumerate()
        .map(|(at, m)| {
            m.as_ref()
                .map_or(true, |m| last.get(m.name.as_str()) == Some(&at))
        })
        .collect();
    let dropped = keep.iter().filter(|k| !**k).count();
    let mut keep = keep.into_iter();
    let members = members
        .into_iter()
        .filter(|_| keep.next().unwrap_or(true))
        .collect();
    let mut changes = Changes::default();
    if dropped > 0 {
        changes.notes.push(format!(
            "{dropped} repeated member line(s) dropped: a member given more than once is \
             applied once, from its last line"
        ));
    }
    (members, changes)
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

/// Plans an event's member lines: a join or update with the batch policy
/// (`batch`); a leave needs only a valid name.
pub fn plan_event(
    lines: Vec<Result<String>>,
    action: Action,
    roles: &[String],
    self_name: &str,
    default_port: u16,
) -> Changes {
    let members = lines
        .into_iter()
        .map(|l| l.and_then(|l| parse_member_line(&l)));
    if action == Action::Upsert {
        return batch(members, roles, self_name, default_port);
    }
    let (members, mut changes) = last_per_name(members);
    for member in members {
        let planned = member.and_then(|m| {
            let removes = matches!(action, Action::Remove | Action::Verify);
            if m.name != self_name && roles.contains(&m.role) && removes {
                node::validate_name(&m.name)?;
                changes.removals.push(m.name);
            }
            Ok(())
        });
        if let Err(e) = planned {
            changes.skipped.push(format!("{e:#}"));
        }
    }
    changes
}

/// The changes that make `current` equal to `wanted` (a [`batch`]; both
/// keyed by name): the nodes that differ are written, the nodes no member
/// backs are removed (a member skipped for a bad tag still backs its
/// node). `wanted`'s skips and notes are kept.
pub fn plan_sync(current: &[Node], wanted: Changes) -> Changes {
    let removals = {
        let want: BTreeSet<&str> = wanted.upserts.iter().map(|n| n.name.as_str()).collect();
        current
            .iter()
            .filter(|n| !want.contains(n.name.as_str()) && !wanted.untouched.contains(&n.name))
            .map(|n| n.name.clone())
            .collect()
    };
    let have: BTreeMap<&str, &Node> = current.iter().map(|n| (n.name.as_str(), n)).collect();
    Changes {
        upserts: wanted
            .upserts
            .into_iter()
            .filter(|n| have.get(n.name.as_str()) != Some(&n))
            .collect(),
        removals,
        ..wanted
    }
}

/// Whether removing `removals` of the `current` nodes is too large a
/// shrink for `sync` to take on a member list's word: more than half of
/// them. A partitioned agent sees only part of the cluster, and its list
/// looks like a mass leave.
pub fn shrinks_too_much(current: usize, removals: usize) -> bool {
    removals.saturating_mul(2) > current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines() {
        let m = parse_member_line("s1\t10.0.0.1\tbackend\tport=8080,role=backend,w=x=y").unwrap();
        assert_eq!(m.name, "s1");
        assert_eq!(m.tags["w"], "x=y");
        let (n, _) = node_of(&m, 3000).unwrap();
        assert_eq!((n.port, n.tags.len()), (Some(8080), 1));
        let empty = parse_member_line("s2\t10.0.0.2\t\t").unwrap();
        assert_eq!((empty.role.as_str(), empty.tags.len()), ("", 0));
        assert_eq!(node_of(&empty, 3000).unwrap().0.port, Some(3000));
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
    fn strict_tags() {
        for line in [
            "s1\t10.0.0.1\tbackend\tport=+80",
            "s1\t10.0.0.1\tbackend\tport=0080",
        ] {
            let m = parse_member_line(line).unwrap();
            assert!(node_of(&m, 3000).is_err(), "{line:?}");
        }
        // A bad weight is dropped: the member keeps its place.
        for line in [
            "s1\t10.0.0.1\tbackend\tweight=1e2",
            "s1\t10.0.0.1\tbackend\tweight=300",
        ] {
            let m = parse_member_line(line).unwrap();
            let (node, notes) = node_of(&m, 3000).unwrap();
            assert_eq!(node.weight, Some(node::DEFAULT_WEIGHT), "{line:?}");
            assert!(notes[0].starts_with("dropped tag `weight`"), "{notes:?}");
        }
        assert!(parse_member_line("s1\t10.0.0.1\tbackend\tport=80,port=81").is_err());
        let text = r#"{"members":[{"name":"a","addr":"127.0.0.1:7946","tags":{"port":"1","port":"2"},"status":"alive"}]}"#;
        assert!(parse_members_json(text).is_err());
    }

    #[test]
    fn cosmetic_tags_never_cost_a_member_its_place() {
        // Serf does not escape ',' in a value; a space is not a tag character.
        let m = parse_member_line("s1\t10.0.0.1\tbackend\tdescr=my web, inc,zone=a").unwrap();
        assert_eq!(m.tags["descr"], "my web, inc");
        let (node, notes) = node_of(&m, 3000).unwrap();
        assert_eq!(node.tags.keys().collect::<Vec<_>>(), ["zone"]);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("\"my web, inc\""), "{notes:?}");
        // A tag hacfg uses is still strict.
        let m = parse_member_line("s1\t10.0.0.1\tbackend\tbackend=a b").unwrap();
        assert!(node_of(&m, 3000).is_err());
        // serf and sync apply the same policy to the same member.
        let roles = ["backend".to_string()];
        let line = "s1\t10.0.0.1\tbackend\tdescr=my web,port=3001";
        let event = plan_event(vec![Ok(line.into())], Action::Upsert, &roles, "", 3000);
        let member = parse_member_line(line).unwrap();
        let synced = batch([Ok(member)], &roles, "", 3000);
        assert_eq!(event, synced);
        assert_eq!((event.skipped.len(), event.notes.len()), (0, 1));
    }

    #[test]
    fn long_lines_are_cut_and_the_rest_read() {
        let mut input = vec![b'x'; 3 * LINE_CAP];
        input.extend_from_slice(b"\ns1\t10.0.0.1\tbackend\t\n\n");
        let lines = read_lines(&input[..]).unwrap();
        assert_eq!(lines.len(), 2);
        let err = format!("{:#}", lines[0].as_ref().unwrap_err());
        assert!(
            err.contains(&format!("{} bytes", 3 * LINE_CAP + 1)),
            "{err}"
        );
        assert!(err.len() < 400, "{err}");
        assert_eq!(lines[1].as_ref().unwrap(), "s1\t10.0.0.1\tbackend\t");
    }

    #[test]
    fn actions() {
        assert_eq!(
            action_of("member-reap", OnFailed::Keep).unwrap(),
            Action::Remove
        );
        assert_eq!(
            action_of("member-failed", OnFailed::Keep).unwrap(),
            Action::Ignore
        );
        assert_eq!(
            action_of("member-failed", OnFailed::Verify).unwrap(),
            Action::Verify
        );
        assert_eq!(
            action_of("member-failed", OnFailed::Remove).unwrap(),
            Action::Remove
        );
        assert_eq!(action_of("user", OnFailed::Remove).unwrap(), Action::Ignore);
        assert!(action_of("", OnFailed::Remove).is_err());
    }

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
    }

    #[test]
    fn query_answers() {
        let text = r#"{"Acks": null, "Responses": {"a": "x\n"}}"#;
        let answers: Answers = serde_json::from_str(text).unwrap();
        assert!(answers.acks.is_empty());
        assert_eq!(answers.responses["a"], "x\n");
        assert!(serde_json::from_str::<Answers>(r#"{"Responses": {"a": 1}}"#).is_err());
    }

    #[test]
    fn sync_plan() {
        let n = |name: &str, addr: &str| Node::named(name).at(addr).port(1).weight(1);
        let wanted = Changes {
            upserts: vec![n("b", "2.2.2.3"), n("c", "3.3.3.3"), n("d", "4.4.4.4")],
            skipped: vec!["member `e`: bad".into()],
            ..Changes::default()
        };
        let current = [n("a", "1.1.1.1"), n("b", "2.2.2.2"), n("d", "4.4.4.4")];
        let plan = plan_sync(&current, wanted);
        assert_eq!(plan.removals, ["a"]);
        assert_eq!(plan.upserts, [n("b", "2.2.2.3"), n("c", "3.3.3.3")]);
        assert_eq!(plan.skipped, ["member `e`: bad"]);
        // A member skipped for a bad port still backs its node.
        let roles = ["backend".to_string()];
        let members = ["a\t1.1.1.1\tbackend\tport=0", "b\t2.2.2.2\tbackend\t"];
        let members = members.map(parse_member_line);
        let plan = plan_sync(&current, batch(members, &roles, "", 1));
        assert_eq!(plan.removals, ["d"]);
        assert_eq!(plan.skipped.len(), 1);
    }

    #[test]
    fn repeated_members_are_planned_once_from_their_last_line() {
        let roles = ["backend".to_string()];
        let mut lines: Vec<Result<String>> = (0..100)
            .map(|_| Ok("s1\t10.0.0.1\tbackend\t".to_string()))
            .collect();
        lines.push(Ok("s1\t10.0.0.2\tbackend\t".into()));
        lines.push(Ok("s2\t10.0.0.3 x\tbackend\t".into()));
        let plan = plan_event(lines, Action::Upsert, &roles, "", 1);
        assert_eq!(
            plan.upserts,
            [Node::named("s1").at("10.0.0.2").port(1).weight(1)]
        );
        assert_eq!(plan.notes.len(), 1, "{:?}", plan.notes);
        assert!(
            plan.notes[0].starts_with("100 repeated"),
            "{:?}",
            plan.notes
        );
        assert!(
            plan.skipped[0].starts_with("member `s2`: invalid address"),
            "{:?}",
            plan.skipped
        );
        let leave = vec![
            Ok("s1\t\tbackend\t".to_string()),
            Ok("s1\t\tbackend\t".into()),
        ];
        assert_eq!(
            plan_event(leave, Action::Remove, &roles, "", 1).removals,
            ["s1"]
        );
    }

    #[test]
    fn shrink_guard() {
        assert!(!shrinks_too_much(0, 0));
        assert!(!shrinks_too_much(10, 5));
        assert!(shrinks_too_much(10, 6));
        assert!(shrinks_too_much(1, 1));
        assert!(!shrinks_too_much(2, 1));
    }
}
