//! The one batch policy of `hacfg serf` and `hacfg sync`: members made
//! nodes ([`node_of`]), and the [`Changes`] an event ([`plan_event`]) or
//! the member list ([`plan_sync`]) asks of the nodes folder.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Result, anyhow};

use super::event::{Action, Member, USED_TAGS, parse_member_line};
use crate::node::{self, Node};

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
    let weight = weight_of(tags.remove("weight").as_deref(), &mut notes);
    keep_tags(&mut tags, &mut notes);
    let node = Node {
        name: member.name.clone(),
        address,
        port: Some(port.unwrap_or(default_port)),
        weight: Some(weight),
        tags,
    };
    node.validate()?;
    Ok((node, notes))
}

/// The `weight` tag's value; a bad one is dropped, with a note, for the
/// default weight (it only tunes the node).
fn weight_of(tag: Option<&str>, notes: &mut Vec<String>) -> u16 {
    match tag.map(node::parse_weight) {
        Some(Err(e)) => {
            notes.push(format!(
                "dropped tag `weight`: {e}; the node gets the default weight {}",
                node::DEFAULT_WEIGHT
            ));
            node::DEFAULT_WEIGHT
        }
        Some(Ok(weight)) => weight,
        None => node::DEFAULT_WEIGHT,
    }
}

/// Drops, with a note each, the tags hacfg does not use that fail
/// validation or exceed the node's tag limit; the used ones stay (they
/// are checked where they are read).
fn keep_tags(tags: &mut BTreeMap<String, String>, notes: &mut Vec<String>) {
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
    /// The names this plan writes or removes, and the members it skipped
    /// with a valid name: members Serf says are alive (they joined or
    /// changed), left or were reaped. Their stays under `--on-failed
    /// verify` end: a stale stay must never judge a member Serf sees alive.
    pub fn names(&self) -> Vec<String> {
        let upserts = self.upserts.iter().map(|n| n.name.clone());
        let untouched = self.untouched.iter().cloned();
        let removals = self.removals.iter().cloned();
        upserts.chain(untouched).chain(removals).collect()
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
    fn every_member_a_join_names_ends_its_stay() {
        let roles = ["backend".to_string()];
        let lines = ["s1\t10.0.0.1\tbackend\t", "s2\t10.0.0.2\tbackend\tport=0"];
        let lines = lines.into_iter().map(|l| Ok(l.to_string())).collect();
        let plan = plan_event(lines, Action::Upsert, &roles, "", 1);
        // s2 is skipped for its port, but Serf says it is alive all the same.
        assert_eq!(plan.names(), ["s1", "s2"]);
    }

    #[test]
    fn shrink_guard() {
        assert!(!shrinks_too_much(0, 0));
        assert!(!shrinks_too_much(10, 5));
        assert!(shrinks_too_much(10, 6));
        assert!(shrinks_too_much(1, 1));
        assert!(!shrinks_too_much(2, 1));
    }

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
}
