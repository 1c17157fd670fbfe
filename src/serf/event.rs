//! One Serf event as the handler gets it: its name (`SERF_EVENT`) made
//! an [`Action`], and its member lines on stdin read and parsed
//! (`name \t address \t role \t tags`).

use std::collections::BTreeMap;
use std::io::{BufRead, Read};

use anyhow::{Context, Result, anyhow, bail, ensure};

use crate::quote::{quote, quote_bytes};

/// Longest member line read (a real one is well under 1 KiB: a name, an
/// address and at most 64 short tags); the rest of a longer line is skipped.
pub const LINE_CAP: usize = 64 * 1024;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
