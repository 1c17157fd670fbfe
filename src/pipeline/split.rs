//! `--apply runtime` with a change the runtime API cannot take whole: the
//! parts it can take are applied, the others wait for a reload.
//!
//! A change is cut into parts: one per server line added, changed or
//! removed, and one for the config's other lines. A part waits when the
//! plan says it needs a reload (a host name, a new backend, another id, …)
//! or when HAProxy refused it at runtime. The file then holds what HAProxy
//! runs: the old file with the server lines of the parts it took (a
//! waiting server keeps its old line). The nodes folder keeps the whole
//! change, and the first run that may reload applies the rest.
//!
//! The parts waiting are recorded in `.hacfg.waiting` in the nodes folder,
//! each by its line as the render has it: the run that first meets one
//! changes nothing and says so (exit 7, or 3 for HAProxy's refusal);
//! later runs apply every other part and name the waiting ones in one
//! warning line. A part whose line changes (its node file changed) is
//! judged again, and so is one HAProxy refused at runtime, [`RETRY_AFTER`]
//! later (what HAProxy refused may have gone: a server added by hand).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::plan::{self, Plan};
use super::quarantine::RETRY_AFTER;
use super::records::{self, Kind, clock, now_ms};
use crate::haproxy::config::{self, Line};
use crate::haproxy::state::Live;
use crate::haproxy::{Dialect, Target};
use crate::index::{FNV_START, fnv};

/// One server line that differs between the file HAProxy took and the
/// render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub target: Target,
    /// Its line in the file (newline kept), if there is one.
    old: Option<String>,
    /// Its line in the render (newline kept); none: it is removed.
    new: Option<String>,
}

impl Change {
    /// What identifies this part in the record: its server and its line.
    fn key(&self) -> String {
        let line = self.new.as_deref().map_or("(removed)", str::trim);
        format!("server {} {line}", self.target)
    }

    /// A waiting part for it: `reason` names the server (the plan's
    /// reasons do), or is prefixed with it.
    pub fn waiting(&self, reason: &str) -> Waiting {
        let named = format!("`{}`", self.target);
        let reason = if reason.contains(&named) {
            reason.to_string()
        } else {
            format!("server {named}: {reason}")
        };
        Waiting {
            key: self.key(),
            reason,
            refused_ms: None,
        }
    }

    /// A waiting part for it that HAProxy refused at runtime, just now.
    pub fn refused(&self, words: &str) -> Waiting {
        Waiting {
            refused_ms: Some(now_ms()),
            ..self.waiting(words)
        }
    }
}

/// A part that waits for a reload, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    key: String,
    /// Why it waits, naming it: the plan's reason, or HAProxy's words.
    pub reason: String,
    /// When HAProxy refused it at runtime (ms since the epoch), if it did:
    /// such a part is tried again [`RETRY_AFTER`] later (what the plan
    /// sends to a reload is not: it would go the same way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refused_ms: Option<u64>,
}

impl Waiting {
    /// Whether a run at `now_ms` should try it again.
    fn due(&self, now_ms: u64) -> bool {
        let after = u64::try_from(RETRY_AFTER.as_millis()).unwrap_or(u64::MAX);
        self.refused_ms
            .is_some_and(|t| now_ms.saturating_sub(t) >= after)
    }

    /// Whether `other` is about the same part (the same server and line).
    pub fn same_part(&self, other: &Waiting) -> bool {
        self.key == other.key
    }
}

/// The parts of a folder waiting for a reload.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Record {
    pub entries: Vec<Waiting>,
}

impl Kind for Record {
    const NAME: &'static str = records::WAITING;
    /// One short line per waiting part.
    const CAP: u64 = 64 << 20;
    const WHAT: &'static str = "the record of parts waiting for a reload";
    const WITHOUT: &'static str = "each part is judged again: a run that meets one that \
        needs a reload changes nothing (exit 7) and records it anew";

    fn parse(bytes: &[u8], now_ms: u64) -> Result<Record> {
        let mut entries: Vec<Waiting> = serde_json::from_slice(bytes)?;
        for w in &mut entries {
            // The keys `Change::key` and `rest_part` write, and no other.
            if !(w.key.starts_with("server ") || w.key.starts_with("rest ")) {
                anyhow::bail!("{} is no part of a config", crate::quote::quote(&w.key));
            }
            w.refused_ms = w.refused_ms.map(|t| clock::trusted_moment(t, now_ms));
        }
        Ok(Record { entries })
    }
}

impl Record {
    /// Loads `.hacfg.waiting`; a missing or damaged record knows nothing
    /// (each part is then judged again).
    pub fn load(dir: &Path) -> Record {
        records::load(dir)
    }

    /// Whether `part` was already waiting.
    pub fn knows(&self, part: &Waiting) -> bool {
        self.entries.iter().any(|w| w.key == part.key)
    }

    fn find(&self, key: &str) -> Option<&Waiting> {
        self.entries.iter().find(|w| w.key == key)
    }

    /// Writes the record as `entries` (removes it when empty), if that
    /// changes it. The caller holds the exclusive lock.
    pub fn save(&self, dir: &Path, entries: &[Waiting]) -> Result<()> {
        if entries == self.entries.as_slice() {
            return Ok(());
        }
        records::save::<Record, _>(dir, entries)
    }
}

/// Removes the record: the config HAProxy runs is the whole render. Most
/// runs have none, and find that with one `lstat` (no write, so a nodes
/// folder on a read-only mount stays usable).
pub fn forget(dir: &Path) -> Result<()> {
    records::forget::<Record>(dir)
}

/// The part of a render the runtime API takes now.
#[derive(Debug)]
pub struct Part {
    /// The config HAProxy runs once it is applied: the old file with the
    /// server lines of the parts it takes.
    pub config: String,
    /// The parts that wait for a reload.
    pub waiting: Vec<Waiting>,
}

/// How a render splits.
#[derive(Debug)]
pub enum Sorted {
    Part(Part),
    /// Nothing can change at runtime: HAProxy's live servers differ from
    /// the file in a way only a reload repairs (the plan's reason).
    Blocked(String),
}

/// Splits `new` against `old` (the file HAProxy took) and `live`: what the
/// runtime takes, and what waits. Parts `record` knows wait as before.
pub fn sort(old: &str, new: &str, live: &[Live], dialect: Dialect, record: &Record) -> Sorted {
    if let Plan::Reload(why) = plan::plan(Some(old), old, live, dialect) {
        return Sorted::Blocked(why);
    }
    let sections = backends(old);
    let mut sorter = Sorter {
        old,
        live,
        dialect,
        accepted: Vec::new(),
        waiting: Vec::new(),
    };
    let mut candidates = Vec::new();
    let now = now_ms();
    for change in changes(old, new) {
        let known = record.find(&change.key());
        if let Some(known) = known.filter(|k| !k.due(now)) {
            sorter.waiting.push(known.clone());
        } else if known.is_some() {
            candidates.push(change);
        } else if change.old.is_none() && !sections.contains(change.target.backend.as_str()) {
            let why = format!(
                "its backend `{}` is not in the config HAProxy runs",
                change.target.backend
            );
            sorter.waiting.push(change.waiting(&why));
        } else {
            candidates.push(change);
        }
    }
    sorter.sort(candidates);
    if !config::same_rest(old, new) {
        let rest = rest_part(new);
        sorter
            .waiting
            .push(record.find(&rest.key).cloned().unwrap_or(rest));
    }
    Sorted::Part(Part {
        config: splice(old, &sorter.accepted),
        waiting: sorter.waiting,
    })
}

/// The change of `new` that is about `target`, if any.
pub fn change_of(old: &str, new: &str, target: &Target) -> Option<Change> {
    changes(old, new).into_iter().find(|c| c.target == *target)
}

/// Finds which changes the runtime takes: all of a group, or each half
/// on its own (a few plans for one that waits among many).
struct Sorter<'a> {
    old: &'a str,
    live: &'a [Live],
    dialect: Dialect,
    accepted: Vec<Change>,
    waiting: Vec<Waiting>,
}

impl Sorter<'_> {
    fn sort(&mut self, mut group: Vec<Change>) {
        if group.is_empty() {
            return;
        }
        let mut trial = self.accepted.clone();
        trial.extend(group.iter().cloned());
        let trial_config = splice(self.old, &trial);
        match plan::plan(Some(self.old), &trial_config, self.live, self.dialect) {
            Plan::Reload(why) if group.len() == 1 => self.waiting.push(group[0].waiting(&why)),
            Plan::Reload(_) => {
                let second = group.split_off(group.len() / 2);
                self.sort(group);
                self.sort(second);
            }
            Plan::Nothing | Plan::Runtime(_) => self.accepted = trial,
        }
    }
}

/// The config's other lines, as one part keyed by their hash.
fn rest_part(new: &str) -> Waiting {
    let hash = config::lines(new)
        .filter(|(kind, _)| !matches!(kind, Line::Server { .. }))
        .fold(FNV_START, |hash, (_, line)| fnv(hash, line.as_bytes()));
    Waiting {
        key: format!("rest {hash:016x}"),
        reason: "lines other than `server` lines changed".into(),
        refused_ms: None,
    }
}

/// `(backend, name)` of a server line.
fn key_of<'a>(backend: &'a str, line: &'a str) -> (&'a str, &'a str) {
    (backend, config::server_name(line))
}

/// The server lines that differ between `old` and `new`: those of `new`
/// in its order, then those only `old` has.
fn changes(old: &str, new: &str) -> Vec<Change> {
    let servers = |c| {
        config::lines(c).filter_map(|(kind, line)| match kind {
            Line::Server { backend } => Some((key_of(backend, line), line)),
            _ => None,
        })
    };
    let olds: HashMap<(&str, &str), &str> = servers(old).collect();
    let mut seen = HashSet::with_capacity(olds.len());
    let mut out = Vec::new();
    for ((backend, name), line) in servers(new) {
        seen.insert((backend, name));
        let before = olds.get(&(backend, name)).copied();
        if before.map(str::trim) != Some(line.trim()) {
            out.push(Change {
                target: Target::new(backend, name),
                old: before.map(str::to_string),
                new: Some(line.to_string()),
            });
        }
    }
    for ((backend, name), line) in servers(old) {
        if !seen.contains(&(backend, name)) {
            out.push(Change {
                target: Target::new(backend, name),
                old: Some(line.to_string()),
                new: None,
            });
        }
    }
    out
}

/// The `backend` and `listen` sections of `config`.
fn backends(config: &str) -> HashSet<&str> {
    config::lines(config)
        .filter_map(|(kind, _)| match kind {
            Line::Section { keyword, name } if config::has_servers(keyword) => name,
            _ => None,
        })
        .collect()
}

/// `old` with `changes` made: a changed line replaced, a removed one left
/// out, and a new one after the last line of its section.
fn splice(old: &str, changes: &[Change]) -> String {
    let by_key: HashMap<(&str, &str), &Change> = changes
        .iter()
        .map(|c| ((c.target.backend.as_str(), c.target.name.as_str()), c))
        .collect();
    let mut out = String::with_capacity(old.len() + 256);
    let (mut section, mut end) = (None, 0);
    for (kind, line) in config::lines(old) {
        match kind {
            Line::Section { keyword, name } => {
                insert_new(&mut out, end, section, changes);
                section = name.filter(|_| config::has_servers(keyword));
            }
            Line::Server { backend } => {
                if let Some(change) = by_key.get(&key_of(backend, line)) {
                    out.push_str(change.new.as_deref().unwrap_or_default());
                    end = out.len();
                    continue;
                }
            }
            Line::Blank => {
                out.push_str(line);
                continue;
            }
            Line::Directive { .. } => {}
        }
        out.push_str(line);
        end = out.len();
    }
    insert_new(&mut out, end, section, changes);
    out
}

/// Inserts at `at` the new server lines of `section` (a server section).
fn insert_new(out: &mut String, at: usize, section: Option<&str>, changes: &[Change]) {
    let Some(section) = section else {
        return;
    };
    let mut lines = String::new();
    for change in changes.iter().filter(|c| c.old.is_none()) {
        if let (true, Some(line)) = (change.target.backend == section, &change.new) {
            lines.push_str(line);
            if !line.ends_with('\n') {
                lines.push('\n');
            }
        }
    }
    if at > 0 && !lines.is_empty() && !out[..at].ends_with('\n') {
        lines.insert(0, '\n');
    }
    out.insert_str(at, &lines);
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "global\n    maxconn 10\n\nbackend nodes\n    balance roundrobin\n    server a 10.0.0.1:80 check weight 1 id 11\n    server b 10.0.0.2:80 check weight 1 id 12\n\nbackend empty\n    balance roundrobin\n";

    fn live_of(config: &str) -> Vec<Live> {
        crate::haproxy::state::all_up(config)
    }

    fn part(new: &str, record: &Record) -> Part {
        match sort(OLD, new, &live_of(OLD), Dialect::OLDEST, record) {
            Sorted::Part(part) => part,
            Sorted::Blocked(why) => panic!("blocked: {why}"),
        }
    }

    #[test]
    fn what_the_runtime_takes_goes_and_the_rest_waits() {
        let new = OLD
            .replace("10.0.0.1:80 check weight 1", "10.0.0.1:80 check weight 5")
            .replace("    server b 10.0.0.2:80 check weight 1 id 12\n", "")
            .replace(
                "backend empty\n    balance roundrobin\n",
                "backend empty\n    balance roundrobin\n    server h web.local:80 id 14\n    \
                 server c 10.0.0.3:80 id 13\n",
            )
            + "\nbackend api\n    server d 10.0.0.4:80\n";
        let part = part(&new, &Record::default());
        let why: Vec<&str> = part.waiting.iter().map(|w| w.reason.as_str()).collect();
        assert_eq!(
            why[0],
            "server `api/d`: its backend `api` is not in the config HAProxy runs"
        );
        assert!(why[1].starts_with("server `empty/h`: ") && why[1].contains("not IP:PORT"));
        assert_eq!(why[2], "lines other than `server` lines changed");
        assert_eq!(why.len(), 3);
        // The file: weight changed, b removed, c added, h and d waiting.
        let expected = OLD
            .replace("10.0.0.1:80 check weight 1", "10.0.0.1:80 check weight 5")
            .replace("    server b 10.0.0.2:80 check weight 1 id 12\n", "")
            + "    server c 10.0.0.3:80 id 13\n";
        assert_eq!(part.config, expected);
        assert!(config::same_rest(OLD, &part.config));
        let Plan::Runtime(ops) =
            plan::plan(Some(OLD), &part.config, &live_of(OLD), Dialect::OLDEST)
        else {
            panic!("the part is not a runtime change");
        };
        assert_eq!(ops.len(), 3, "{ops:?}");
        // Known parts wait without a new judgement; a changed line is new.
        let record = Record {
            entries: part.waiting.clone(),
        };
        let again = self::part(&new, &record);
        assert!(again.waiting.iter().all(|w| record.knows(w)));
        let moved = self::part(&new.replace("web.local:80", "web.local:81"), &record);
        assert_eq!(moved.waiting.iter().filter(|w| !record.knows(w)).count(), 1);
    }

    #[test]
    fn a_live_state_only_a_reload_repairs_blocks_everything() {
        let mut live = live_of(OLD);
        live[0].id = 99;
        let new = OLD.replace("weight 1 id 12", "weight 2 id 12");
        assert!(matches!(
            sort(OLD, &new, &live, Dialect::OLDEST, &Record::default()),
            Sorted::Blocked(_)
        ));
    }

    #[test]
    fn the_rest_is_one_part_keyed_by_its_lines() {
        let rest = rest_part(OLD);
        // Server lines are parts of their own: they do not change its key.
        assert_eq!(
            rest_part(&OLD.replace("weight 1 id 12", "weight 3 id 12")),
            rest
        );
        assert_ne!(
            rest_part(&OLD.replace("maxconn 10", "maxconn 11")).key,
            rest.key
        );
        // FNV-1a over the other lines, as the record has always keyed it.
        assert_eq!(rest.key, "rest 6dbc5d09b9ee6d61");
    }

    #[test]
    fn a_new_server_goes_at_the_end_of_its_section() {
        let new = OLD.replace("id 12\n", "id 12\n    server c 10.0.0.3:80\n")
            + "    server d 10.0.0.4:80\n";
        let changes = changes(OLD, &new);
        let added: Vec<String> = changes.iter().map(|c| c.target.to_string()).collect();
        assert_eq!(added, ["nodes/c", "empty/d"]);
        assert_eq!(splice(OLD, &changes), new);
        assert_eq!(
            splice(OLD, &changes[1..]),
            OLD.to_string() + "    server d 10.0.0.4:80\n"
        );
    }

    #[test]
    fn a_change_is_found_by_its_server() {
        let new = OLD.replace("weight 1 id 12", "weight 2 id 12");
        let change = change_of(OLD, &new, &Target::new("nodes", "b")).unwrap();
        assert_eq!(
            change.key(),
            "server nodes/b server b 10.0.0.2:80 check weight 2 id 12"
        );
        assert!(change_of(OLD, &new, &Target::new("nodes", "a")).is_none());
    }
}
