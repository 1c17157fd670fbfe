//! `hacfg fleet`: balancers compared through Serf itself. Each balancer's
//! handler answers the `hacfg-digest` query with a one-line digest of its
//! pool ([`Digest`]); `fleet` asks them all ([`query`]) and marks the ones
//! that differ from the majority or did not answer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use serde::Serialize;

use super::answer::{ANSWER_CAP, Digest, QUERY_NAME, Sum};
use super::members::{Reply, STRANGERS_CAP, member_list, query};
use crate::exit::Outcome;
use crate::log::print_warning;
use crate::quote::{cut, quote};
use crate::stdout::print_stdout;

/// What `fleet` asks, and of whom (its command line, checked).
#[derive(Debug)]
pub struct Ask {
    /// Print a JSON array instead of the table.
    pub json: bool,
    /// The local agent's RPC address (`serf`'s own default if `None`).
    pub rpc_addr: Option<String>,
    pub serf_bin: PathBuf,
    /// The balancers' `role` tag.
    pub role: String,
    /// How long the query waits for answers.
    pub timeout: Duration,
}

/// `hacfg fleet`: every balancer's digest, through a Serf query, against
/// the alive members of `role`; exit 9 when one differs or did not answer.
pub fn run(ask: &Ask) -> Result<Outcome> {
    let (serf_bin, rpc_addr, role) = (&ask.serf_bin, ask.rpc_addr.as_deref(), ask.role.as_str());
    let expected: BTreeSet<String> = member_list(serf_bin, rpc_addr)?
        .alive
        .into_iter()
        .filter(|m| m.role == role)
        .map(|m| m.name)
        .collect();
    let tag = role_filter(role);
    let asked = (QUERY_NAME, tag.as_str());
    let answers = query(serf_bin, rpc_addr, asked, ask.timeout, &expected)?;
    let rows = compare(&expected, &answers.responses, &answers.acks);
    if rows.is_empty() {
        bail!("fleet: no alive Serf member has role `{role}`, and none answered (--balancer-role)");
    }
    if answers.dropped > 0 {
        print_warning(&format!(
            "fleet: {} more answer(s) from members that are no alive balancer of role `{role}` \
             were not read (at most {STRANGERS_CAP} such rows are shown)",
            answers.dropped
        ));
    }
    let text = if ask.json {
        serde_json::to_string_pretty(&rows)? + "\n"
    } else {
        table(&rows)
    };
    print_stdout(&text)?;
    let marked = rows.iter().filter(|r| !r.marks.is_empty()).count();
    Ok(match marked {
        0 => Outcome::Done,
        n => Outcome::Disagree(format!(
            "fleet: {n} of {} balancer(s) differ, drifted or did not answer (see their rows)",
            rows.len()
        )),
    })
}

/// One balancer in `fleet`'s answer.
#[derive(Debug, Serialize)]
pub struct Row {
    pub name: String,
    /// Its digest, if it answered with a valid one.
    pub digest: Option<Digest>,
    /// What is wrong, empty when it agrees: `no answer`, `malformed: …`,
    /// `differs` (from the majority), `drift` (live ≠ rendered), `not
    /// expected` (answered, but not an alive member of the role).
    pub marks: Vec<String>,
}

/// The rows, by name: every expected balancer and every one that answered.
/// What the majority is compared on: the rendered server set and the node
/// and held counts (pending work and versions change in passing, and
/// differ during an upgrade: shown, not compared). Only the expected
/// balancers (alive members of the role) vote and are judged by the vote:
/// any number of other responders cannot make a real balancer differ.
/// With no strict majority (a tie for the largest group) every answering
/// balancer is marked.
pub fn compare(
    expected: &BTreeSet<String>,
    answers: &BTreeMap<String, Reply>,
    acks: &[String],
) -> Vec<Row> {
    let mut rows: BTreeMap<&str, Row> = BTreeMap::new();
    for name in expected.iter().chain(answers.keys()) {
        rows.entry(name).or_insert_with(|| Row {
            name: name.clone(),
            digest: None,
            marks: Vec::new(),
        });
    }
    for row in rows.values_mut() {
        match answers.get(&row.name).map(read_reply) {
            Some(Ok(digest)) => row.digest = Some(digest),
            Some(Err(e)) => row.marks.push(format!("malformed: {e:#}")),
            None if acks.contains(&row.name) => row.marks.push("no answer (query received)".into()),
            None => row.marks.push("no answer".into()),
        }
        if !expected.contains(&row.name) {
            row.marks.push("not expected".into());
        }
    }
    let key = |d: &Digest| (d.rendered, d.nodes, d.held);
    let voters = || {
        let voting = rows.values().filter(|r| expected.contains(&r.name));
        voting.filter_map(|r| r.digest.as_ref())
    };
    let mut groups: BTreeMap<_, usize> = BTreeMap::new();
    for d in voters() {
        *groups.entry(key(d)).or_default() += 1;
    }
    let top = groups.values().copied().max().unwrap_or(0);
    let majority = match groups.iter().filter(|(_, n)| **n == top).count() {
        1 => groups.iter().find(|(_, n)| **n == top).map(|(k, _)| *k),
        _ => None,
    };
    for row in rows.values_mut() {
        let Some(d) = &row.digest else { continue };
        if expected.contains(&row.name) && majority != Some(key(d)) {
            row.marks.push("differs".into());
        }
        if matches!(d.live, Sum::Of(_) | Sum::Error) && d.live != d.rendered {
            row.marks.push("drift".into());
        }
    }
    rows.into_values().collect()
}

/// A kept answer read as a digest; one too long to keep is malformed.
fn read_reply(reply: &Reply) -> Result<Digest> {
    match reply {
        Reply::Text(text) => Digest::parse(text),
        Reply::Long(len) => bail!("answer of {len} bytes is longer than {ANSWER_CAP}"),
    }
}

/// An aligned table, one balancer per line.
pub fn table(rows: &[Row]) -> String {
    let dash = || "-".to_string();
    let count = |n: Option<u32>| n.map_or("error".into(), |n| n.to_string());
    let cells: Vec<[String; 9]> = rows
        .iter()
        .map(|r| {
            let d = r.digest.as_ref();
            [
                shown_name(&r.name),
                d.map_or_else(dash, |d| d.rendered.to_string()),
                d.map_or_else(dash, |d| d.live.to_string()),
                d.map_or_else(dash, |d| count(d.nodes)),
                d.map_or_else(dash, |d| count(d.held)),
                d.map_or_else(dash, |d| count(d.pending)),
                d.map_or_else(dash, |d| d.hacfg.clone()),
                d.map_or_else(dash, |d| d.haproxy.clone()),
                if r.marks.is_empty() {
                    "ok".into()
                } else {
                    r.marks.join(", ")
                },
            ]
        })
        .collect();
    let header = [
        "BALANCER", "RENDERED", "LIVE", "NODES", "HELD", "PENDING", "HACFG", "HAPROXY", "STATE",
    ];
    crate::stdout::table(header, &cells)
}

/// A member's name as the table shows it: as is when plain, else escaped
/// and cut (names come from the network).
fn shown_name(name: &str) -> String {
    let plain = name.len() <= 64 && name.bytes().all(|b| b.is_ascii_graphic());
    if plain {
        name.to_string()
    } else {
        quote(cut(name, 64).unwrap_or(name)).to_string()
    }
}

/// The Serf `-tag` filter for the members of `role`: Serf matches tags as
/// regular expressions, so the role is anchored and its punctuation escaped.
pub fn role_filter(role: &str) -> String {
    let mut pattern = String::from("role=^");
    for c in role.chars() {
        if !c.is_ascii_alphanumeric() {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('$');
    pattern
}

/// A role given on the command line: what a Serf tag value of hacfg's
/// roles is made of.
pub fn validate_role(role: &str) -> Result<()> {
    let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if role.is_empty() || role.len() > 64 || !role.bytes().all(ok) {
        bail!(
            "invalid balancer role {}: use 1 to 64 letters, digits, '-', '_' or '.'",
            quote(role)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serf::answer::tests::digest;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(ToString::to_string).collect()
    }

    fn text(line: String) -> Reply {
        Reply::Text(line)
    }

    #[test]
    fn the_odd_one_out_is_marked() {
        let expected: BTreeSet<String> = names(&["a", "b", "c", "d"]).into_iter().collect();
        let mut answers = BTreeMap::new();
        answers.insert("a".to_string(), text(digest(1, 2).to_line()));
        answers.insert("b".to_string(), text(digest(1, 2).to_line()));
        answers.insert("c".to_string(), text(digest(2, 1).to_line()));
        answers.insert("x".to_string(), text("garbage".to_string()));
        let rows = compare(&expected, &answers, &names(&["d"]));
        let marks: Vec<(&str, String)> = rows
            .iter()
            .map(|r| (r.name.as_str(), r.marks.join(", ")))
            .collect();
        assert_eq!(
            marks,
            [
                ("a", String::new()),
                ("b", String::new()),
                ("c", "differs".into()),
                ("d", "no answer (query received)".into()),
                (
                    "x",
                    "malformed: answer \"garbage\" is not a hacfg-digest/1 digest, not expected"
                        .into()
                ),
            ]
        );
        // A tie has no majority: both sides are marked.
        answers.remove("c");
        answers.insert("c".to_string(), text(digest(2, 1).to_line()));
        answers.insert("d".to_string(), text(digest(2, 1).to_line()));
        let rows = compare(&expected, &answers, &[]);
        assert!(rows[..4].iter().all(|r| r.marks == ["differs"]), "{rows:?}");
        let table = table(&rows);
        assert!(table.starts_with("BALANCER  RENDERED"), "{table}");
        // A name from the network never breaks the table's lines.
        answers.insert("evil\nname".repeat(20), text(digest(2, 1).to_line()));
        let table = super::table(&compare(&expected, &answers, &[]));
        assert_eq!(table.lines().count(), 7, "{table}");
        assert!(table.contains(r#""evil\nnameevil\nname"#), "{table}");
        // An answer too long to keep is malformed.
        answers.insert("d".to_string(), Reply::Long(60 << 20));
        let rows = compare(&expected, &answers, &[]);
        let d = rows.iter().find(|r| r.name == "d").unwrap();
        assert_eq!(
            d.marks,
            ["malformed: answer of 62914560 bytes is longer than 512"]
        );
    }

    /// Only alive balancers of the role vote: 10,000 other responders that
    /// agree with each other make neither real balancer `differs`.
    #[test]
    fn only_the_expected_balancers_vote() {
        let expected: BTreeSet<String> = names(&["a", "b"]).into_iter().collect();
        let mut answers = BTreeMap::new();
        answers.insert("a".to_string(), text(digest(1, 2).to_line()));
        answers.insert("b".to_string(), text(digest(1, 2).to_line()));
        for i in 0..10_000 {
            answers.insert(format!("x{i}"), text(digest(9, 9).to_line()));
        }
        let rows = compare(&expected, &answers, &[]);
        assert_eq!(rows.len(), 10_002);
        let marks = |name: &str| {
            let row = rows.iter().find(|r| r.name == name).unwrap();
            row.marks.join(", ")
        };
        assert_eq!((marks("a"), marks("b")), (String::new(), String::new()));
        assert_eq!(marks("x0"), "not expected");
        // Strangers cannot break a tie either: one against one stays a tie.
        answers.insert("b".to_string(), text(digest(9, 9).to_line()));
        let rows = compare(&expected, &answers, &[]);
        assert_eq!(rows[0].marks, ["differs"]);
        assert_eq!(rows[1].marks, ["differs"]);
        // A stranger alone in the fleet still gets its row, marked.
        let rows = compare(&BTreeSet::new(), &answers, &[]);
        assert!(rows.iter().all(|r| r.marks == ["not expected"]));
    }

    #[test]
    fn roles_are_anchored_literals() {
        assert_eq!(role_filter("balancer"), "role=^balancer$");
        assert_eq!(role_filter("lb.v2"), r"role=^lb\.v2$");
        assert!(validate_role("lb-1").is_ok());
        for bad in ["", "a b", "a|b", "x$", &"a".repeat(65)] {
            assert!(validate_role(bad).is_err(), "{bad:?}");
        }
    }
}
