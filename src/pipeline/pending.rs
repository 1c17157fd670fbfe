//! What hacfg itself put in drain, why, and until when: `.hacfg.pending`
//! in the nodes folder. It tells hacfg's own drains from an operator's, so
//! hacfg finishes its own (sets a new server ready once checked, deletes a
//! removed one once idle) and never undoes one it did not set.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::atomic;
use crate::file;
use crate::haproxy::Target;

/// Name of the record inside the nodes folder (hidden, so never a node).
pub const PENDING_FILE: &str = ".hacfg.pending";
/// The longest wait the options allow (3600 s), in ms.
const MAX_WAIT_MS: u64 = 3_600_000;
/// Largest record read: a few hundred bytes per server.
const PENDING_CAP: u64 = 64 << 20;

/// Why hacfg drained a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Why {
    /// Added: in drain until its first health check has run, then ready.
    FirstCheck,
    /// Removed: in drain until idle, then deleted.
    Removal,
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

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// A deadline `wait` from now.
pub fn deadline(wait: Duration) -> u64 {
    now_ms().saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX))
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

impl Pending {
    /// Loads the record. A missing one holds nothing; a damaged one is an
    /// error that names it (hacfg would lose track of its own drains).
    pub fn load(dir: &Path) -> Result<Pending> {
        let path = dir.join(PENDING_FILE);
        let context = || format!("unable to read hacfg's pending work `{}`", path.display());
        let Some(bytes) = file::read_capped(&path, PENDING_CAP).with_context(context)? else {
            return Ok(Pending::default());
        };
        let mut entries: Vec<Entry> = serde_json::from_slice(&bytes).with_context(context)?;
        // Names go into runtime commands: only what HAProxy's names are made of.
        if let Some(bad) = entries.iter().find(|e| !plain(&e.target)) {
            return Err(anyhow::anyhow!(
                "server {} is no HAProxy name",
                crate::quote::quote(&bad.target.to_string())
            ))
            .with_context(context);
        }
        // Whatever the file or the clock says, no wait outlasts the longest
        // the options allow.
        let now = now_ms();
        for e in &mut entries {
            e.since_ms = e.since_ms.min(now);
            e.deadline_ms = e.deadline_ms.min(e.since_ms.saturating_add(MAX_WAIT_MS));
        }
        entries.sort_by(|a, b| a.target.cmp(&b.target));
        entries.dedup_by(|a, b| a.target == b.target);
        Ok(Pending { entries })
    }

    /// Writes the record (removes it when empty) if it differs from `before`.
    /// The caller holds the exclusive lock.
    pub fn save(&self, dir: &Path, before: &Pending) -> Result<()> {
        if self == before {
            return Ok(());
        }
        let path = dir.join(PENDING_FILE);
        let context = || {
            format!(
                "unable to record hacfg's pending work in `{}`",
                path.display()
            )
        };
        atomic::write_record(&path, &self.entries).with_context(context)
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
        assert_eq!(Pending::load(dir.path()).unwrap(), p);
        assert_eq!(p.waiting(now_ms()).count(), 1);
        assert_eq!(p.waiting(u64::MAX).count(), 0);
        let before = p.clone();
        p.remove(&a);
        p.save(dir.path(), &before).unwrap();
        assert!(!dir.path().join(PENDING_FILE).exists());
        std::fs::write(dir.path().join(PENDING_FILE), "garbage").unwrap();
        let err = Pending::load(dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains(".hacfg.pending"), "{err:#}");
        // A deadline past what the options allow is cut to it.
        let far = format!(
            r#"[{{"target":{{"backend":"nodes","name":"a"}},"why":"removal","since_ms":{},"deadline_ms":{}}}]"#,
            now_ms(),
            u64::MAX
        );
        std::fs::write(dir.path().join(PENDING_FILE), far).unwrap();
        let loaded = Pending::load(dir.path()).unwrap();
        assert!(loaded.entries[0].deadline_ms <= now_ms() + MAX_WAIT_MS);
        let evil = r#"[{"target":{"backend":"nodes; shutdown sessions server nodes/a","name":"a"},
            "why":"removal","since_ms":0,"deadline_ms":0}]"#;
        std::fs::write(dir.path().join(PENDING_FILE), evil).unwrap();
        let err = format!("{:#}", Pending::load(dir.path()).unwrap_err());
        assert!(err.contains("is no HAProxy name"), "{err}");
    }
}
