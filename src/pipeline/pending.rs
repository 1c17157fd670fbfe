//! What hacfg itself put in drain, why, and until when: `.hacfg.pending`
//! in the nodes folder. It tells hacfg's own drains from an operator's, so
//! hacfg finishes its own (sets a new server ready once checked, deletes a
//! removed one once idle) and never undoes one it did not set.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::records::clock::{self, MAX_WAIT_MS};
use super::records::{self, Kind, deadline, now_ms};
use crate::haproxy::Target;

/// Why hacfg drained a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Why {
    /// Added: in drain until its first health check has run, then ready.
    FirstCheck,
    /// Removed: in drain until idle, then deleted.
    Removal,
    /// Removed, but among the last servers of its backend that take
    /// traffic while servers added to it wait for their first check: it
    /// serves on until one of them is UP (or their deadline passes), then
    /// drains as a removal (make before break).
    KeptServing,
}

impl Why {
    /// Whether the server is on its way out of HAProxy.
    pub fn leaves(self) -> bool {
        matches!(self, Why::Removal | Why::KeptServing)
    }
}

/// One server hacfg drained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub target: Target,
    /// Its server id, once known: `show stat` then asks for it alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
    pub why: Why,
    /// When hacfg drained it (ms since the epoch).
    pub since_ms: u64,
    /// Removals only: an operator had drained it before hacfg did, so
    /// hacfg never puts it back into service.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub operator_drained: bool,
    /// Past this, no one waits for it any more: it stays drained (shown by
    /// `status` as drift) and any later run still finishes it when due.
    pub deadline_ms: u64,
    /// Kept serving only: the servers of its backend that may replace it
    /// (one UP ends the wait), as the last pass found them. The worker asks
    /// `show stat` of these alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replacements: Vec<Replacement>,
}

/// A server of the same backend that a server kept serving waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replacement {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
}

impl Entry {
    /// The servers it waits for, as targets with their ids.
    pub fn replacement_targets(&self) -> impl Iterator<Item = (Target, Option<u32>)> + '_ {
        let backend = &self.target.backend;
        self.replacements
            .iter()
            .map(move |r| (Target::new(backend, &r.name), r.id))
    }
}

impl Entry {
    pub fn overdue(&self, now_ms: u64) -> bool {
        now_ms >= self.deadline_ms
    }
}

/// The record of a nodes folder, sorted by target.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pending {
    pub entries: Vec<Entry>,
}

/// Whether a target's backend and server are plain HAProxy names.
fn plain(target: &Target) -> bool {
    let ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    };
    ok(&target.backend) && ok(&target.name)
}

impl Kind for Pending {
    const NAME: &'static str = records::PENDING;
    /// A few hundred bytes per server.
    const CAP: u64 = 64 << 20;
    const WHAT: &'static str = "hacfg's pending work";
    const WITHOUT: &'static str = "the run goes on from HAProxy's live state: servers it \
        listed stay as HAProxy has them (a drain hacfg cannot show is its own is an \
        operator's, never undone), see `hacfg status`";

    fn parse(bytes: &[u8], now_ms: u64) -> Result<Pending> {
        let mut entries: Vec<Entry> = serde_json::from_slice(bytes)?;
        // Names go into runtime commands: only what HAProxy's names are made of.
        let bad = entries
            .iter()
            .flat_map(|e| {
                let replacements = e.replacement_targets().map(|(t, _)| t);
                std::iter::once(e.target.clone()).chain(replacements)
            })
            .find(|t| !plain(t));
        if let Some(bad) = bad {
            anyhow::bail!(
                "server {} is no HAProxy name",
                crate::quote::quote(&bad.to_string())
            );
        }
        // Whatever the file or the clock says, no wait outlasts the longest
        // the options allow.
        for e in &mut entries {
            e.since_ms = clock::trusted_moment(e.since_ms, now_ms);
            let cap = e.since_ms.saturating_add(MAX_WAIT_MS);
            e.deadline_ms = clock::trusted_deadline(e.deadline_ms, now_ms).min(cap);
        }
        entries.sort_by(|a, b| a.target.cmp(&b.target));
        entries.dedup_by(|a, b| a.target == b.target);
        Ok(Pending { entries })
    }
}

impl Pending {
    /// Loads the record; a damaged one holds nothing (see `records`).
    pub fn load(dir: &Path) -> Pending {
        records::load(dir)
    }

    /// Writes the record (removes it when empty) if it differs from `before`.
    /// The caller holds the exclusive lock.
    pub fn save(&self, dir: &Path, before: &Pending) -> Result<()> {
        if self == before {
            return Ok(());
        }
        records::save::<Pending, _>(dir, &self.entries)
    }

    pub fn get(&self, target: &Target) -> Option<&Entry> {
        self.entries.iter().find(|e| e.target == *target)
    }

    /// Records that hacfg drained `target` for `why`. An entry for the same
    /// reason keeps its deadline: a run that drains again does not extend it.
    pub fn insert(&mut self, target: Target, why: Why, wait: Duration) {
        if self.get(&target).is_some_and(|e| e.why == why) {
            return;
        }
        self.remove(&target);
        self.entries.push(Entry {
            target,
            id: None,
            operator_drained: false,
            why,
            since_ms: now_ms(),
            deadline_ms: deadline(wait),
            replacements: Vec::new(),
        });
        self.entries.sort_by(|a, b| a.target.cmp(&b.target));
    }

    /// Records that an operator had drained `target` before hacfg did.
    pub fn mark_operator_drain(&mut self, target: &Target, by_operator: bool) {
        for e in self.entries.iter_mut().filter(|e| e.target == *target) {
            e.operator_drained |= by_operator;
        }
    }

    /// Stops waiting for `target` (its deadline is now): later runs still
    /// finish it, the worker no longer polls for it.
    pub fn expire(&mut self, target: &Target) {
        let now = now_ms();
        for e in self.entries.iter_mut().filter(|e| e.target == *target) {
            e.deadline_ms = e.deadline_ms.min(now);
        }
    }

    pub fn remove(&mut self, target: &Target) {
        self.entries.retain(|e| e.target != *target);
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries whose deadline has not passed: what a worker waits for.
    pub fn waiting(&self, now_ms: u64) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(move |e| !e.overdue(now_ms))
    }

    /// Whether anything waits now: what a worker is for.
    pub fn is_waiting(&self) -> bool {
        self.waiting(now_ms()).next().is_some()
    }

    /// Whether hacfg records `target` as draining for its removal.
    pub fn removing(&self, target: &Target) -> bool {
        self.get(target).is_some_and(|e| e.why == Why::Removal)
    }

    /// Whether hacfg keeps `target` serving until its replacement is UP.
    pub fn kept(&self, target: &Target) -> bool {
        self.get(target).is_some_and(|e| e.why == Why::KeptServing)
    }

    /// Whether a server added to `backend` still waits for its first
    /// check (its deadline ahead).
    pub fn replacing(&self, backend: &str, now_ms: u64) -> bool {
        self.waiting(now_ms)
            .any(|e| e.why == Why::FirstCheck && e.target.backend == backend)
    }

    /// The targets drained for `why`, with their ids.
    pub fn targets(&self, why: Why) -> Vec<(Target, Option<u32>)> {
        self.entries
            .iter()
            .filter(|e| e.why == why)
            .map(|e| (e.target.clone(), e.id))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, since_ms: u64, deadline_ms: u64) -> String {
        format!(
            r#"{{"target":{{"backend":"nodes","name":"{name}"}},"why":"removal","since_ms":{since_ms},"deadline_ms":{deadline_ms}}}"#
        )
    }

    #[test]
    fn entries_round_trip_and_keep_their_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Pending::default();
        let a = Target::new("nodes", "a");
        p.insert(a.clone(), Why::FirstCheck, Duration::from_secs(60));
        let first = p.get(&a).unwrap().deadline_ms;
        std::thread::sleep(Duration::from_millis(5));
        p.insert(a.clone(), Why::FirstCheck, Duration::from_secs(60));
        assert_eq!(p.get(&a).unwrap().deadline_ms, first);
        p.insert(a.clone(), Why::Removal, Duration::from_secs(5));
        assert_eq!(p.get(&a).unwrap().why, Why::Removal);
        assert_eq!(p.entries.len(), 1);
        p.save(dir.path(), &Pending::default()).unwrap();
        assert_eq!(Pending::load(dir.path()), p);
        assert_eq!(p.waiting(now_ms()).count(), 1);
        assert_eq!(p.waiting(u64::MAX).count(), 0);
        let before = p.clone();
        p.remove(&a);
        p.save(dir.path(), &before).unwrap();
        assert!(!dir.path().join(records::PENDING).exists());
    }

    #[test]
    fn names_that_are_no_haproxy_names_are_damage() {
        let evil = format!("[{}]", entry("a; shutdown sessions server nodes/b", 0, 0));
        let err = Pending::parse(evil.as_bytes(), now_ms()).unwrap_err();
        assert!(format!("{err:#}").contains("is no HAProxy name"), "{err:#}");
        let kept = r#"[{"target":{"backend":"nodes","name":"a"},"why":"kept-serving","since_ms":0,"deadline_ms":0,"replacements":[{"name":"b; shutdown sessions"}]}]"#;
        let err = Pending::parse(kept.as_bytes(), now_ms()).unwrap_err();
        assert!(format!("{err:#}").contains("is no HAProxy name"), "{err:#}");
        let shape = Pending::parse(br#"{"entries":[]}"#, now_ms()).unwrap_err();
        assert!(
            format!("{shape:#}").contains("expected a sequence"),
            "{shape:#}"
        );
    }

    #[test]
    fn a_clock_stepped_back_ends_the_wait_and_the_cap_never_slides() {
        let now = 100 * MAX_WAIT_MS;
        let day = 24 * MAX_WAIT_MS;
        // Written a day "later" than now (the clock was stepped back): due.
        let ahead = format!("[{}]", entry("a", now + day, now + day + 5_000));
        let p = Pending::parse(ahead.as_bytes(), now).unwrap();
        assert!(p.entries[0].overdue(now));
        // Read again after a save, an hour later: still due, nothing moved.
        let saved = serde_json::to_vec(&p.entries).unwrap();
        let again = Pending::parse(&saved, now + MAX_WAIT_MS).unwrap();
        assert_eq!(again, p);
        // A small step back keeps the deadline as written, at every load.
        let near = format!("[{}]", entry("b", now + 60_000, now + 65_000));
        let p = Pending::parse(near.as_bytes(), now).unwrap();
        assert_eq!(p.entries[0].deadline_ms, now + 65_000);
        let later = serde_json::to_vec(&p.entries).unwrap();
        assert_eq!(Pending::parse(&later, now + 1_000).unwrap(), p);
        // A deadline past what the options allow after its start is cut to it.
        let far = format!("[{}]", entry("c", now - 10_000, now + MAX_WAIT_MS - 5));
        let p = Pending::parse(far.as_bytes(), now).unwrap();
        assert_eq!(p.entries[0].deadline_ms, now + MAX_WAIT_MS - 10_000);
    }
}
