//! Nodes HAProxy refused ("poison nodes"): kept out of the live config until
//! their file changes, so one bad member never freezes the pool.
//!
//! When the check rejects a candidate, HAProxy's alerts name lines
//! (`[file:42]`). A `server NAME …` line belongs to node NAME, and a
//! `backend X` section line to the nodes tagged `backend=X`. Those nodes are
//! held back and the config is rendered and checked again without them. What
//! was held back, with HAProxy's words, is kept in `.hacfg.held` in the nodes
//! folder. A held node whose file still says the same is left out up front;
//! one that changed is tried again, and so is one HAProxy refused more than
//! [`RETRY_AFTER`] ago (by a run that checks, so at most one extra check per
//! interval): a node refused during a DNS outage comes back by itself.
//!
//! A refusal that blames more than half of the nodes is no node's fault
//! (DNS is down, a resolver is missing): nothing is held back then, and the
//! run fails as a rejected config does ([`Blamed::Most`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::records::{self, Kind, clock, now_ms};
use crate::haproxy::config::{self, Line};
use crate::node::Node;
use crate::store::{Exclusive, Lock, Store, Unreadable};

/// How long a held node is left out without a check before a run that
/// checks tries it again.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

/// One node HAProxy refused, as its file was then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub node: Node,
    /// HAProxy's alert lines about it.
    pub reason: String,
    /// When HAProxy last refused it (ms since the epoch; 0 in files written
    /// before this field, which makes them due at once).
    #[serde(default)]
    pub refused_ms: u64,
}

impl Held {
    /// Whether a run at `now_ms` should try it again.
    fn due(&self, now_ms: u64) -> bool {
        let after = u64::try_from(RETRY_AFTER.as_millis()).unwrap_or(u64::MAX);
        now_ms.saturating_sub(self.refused_ms) >= after
    }
}

/// The held-back nodes of a folder, by name.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct HeldSet {
    entries: BTreeMap<String, Held>,
}

impl Kind for HeldSet {
    const NAME: &'static str = records::HELD;
    /// A reason is at most a few lines.
    const CAP: u64 = 64 << 20;
    const WHAT: &'static str = "the record of held-back nodes";
    const WITHOUT: &'static str =
        "its nodes are tried again, and the check holds back any HAProxy still refuses";

    fn parse(bytes: &[u8], now_ms: u64) -> Result<HeldSet> {
        let mut entries = BTreeMap::new();
        for mut held in serde_json::from_slice::<Vec<Held>>(bytes)? {
            let name = &held.node.name;
            held.node
                .validate()
                .with_context(|| format!("node {} in it", crate::quote::quote(name)))?;
            held.refused_ms = clock::trusted_moment(held.refused_ms, now_ms);
            entries.insert(held.node.name.clone(), held);
        }
        Ok(HeldSet { entries })
    }
}

impl HeldSet {
    /// Loads `.hacfg.held`; a missing or damaged one holds nothing back
    /// (the next check finds any bad node again).
    pub fn load(dir: &Path) -> HeldSet {
        records::load(dir)
    }

    /// Writes `.hacfg.held` (or removes it when nothing is held). The
    /// caller holds the exclusive lock.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let list: Vec<&Held> = self.entries.values().collect();
        records::save::<HeldSet, _>(dir, &list)
    }

    /// The entry for `node`, if it is held back as its file is now.
    pub fn get(&self, node: &Node) -> Option<&Held> {
        self.entries.get(&node.name).filter(|h| h.node == *node)
    }

    /// Splits `nodes` into those to render and those still held back;
    /// entries of nodes that changed or are gone are dropped.
    pub fn split(&mut self, nodes: Vec<Node>) -> (Vec<Node>, Vec<Held>) {
        let mut kept = BTreeMap::new();
        let mut live = Vec::with_capacity(nodes.len());
        let mut held = Vec::new();
        for node in nodes {
            match self.entries.remove(&node.name) {
                Some(h) if h.node == node => {
                    held.push(h.clone());
                    kept.insert(node.name.clone(), h);
                }
                _ => live.push(node),
            }
        }
        self.entries = kept;
        (live, held)
    }

    /// Holds `node` back for `reason`, refused now.
    pub fn insert(&mut self, node: Node, reason: String) {
        let refused_ms = now_ms();
        let held = Held {
            node,
            reason,
            refused_ms,
        };
        self.entries.insert(held.node.name.clone(), held);
    }

    /// Lets `name` go (HAProxy took it).
    fn remove(&mut self, name: &str) {
        self.entries.remove(name);
    }

    pub fn names(&self) -> Vec<&str> {
        self.entries.keys().map(String::as_str).collect()
    }

    /// HAProxy's words about a held node (empty if it is not held).
    pub fn reason(&self, name: &str) -> &str {
        self.entries.get(name).map_or("", |h| h.reason.as_str())
    }
}

/// The nodes HAProxy's `output` blames for rejecting `rendered` (checked
/// as the file `candidate`), each with the alert lines about it. Empty when
/// no alert points at a line that belongs to a node: then the config as a
/// whole is at fault.
pub fn blame(
    output: &str,
    candidate: &str,
    rendered: &str,
    nodes: &[Node],
) -> BTreeMap<String, String> {
    let lines: Vec<(Line, &str)> = config::lines(rendered).collect();
    let names: BTreeSet<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    let mut blamed: BTreeMap<String, String> = BTreeMap::new();
    for alert in output.lines() {
        let Some(at) = config::alert_line(alert, candidate) else {
            continue;
        };
        let Some((kind, line)) = at.checked_sub(1).and_then(|i| lines.get(i)) else {
            continue;
        };
        let culprits: Vec<&str> = match kind {
            Line::Server { .. } => Some(config::server_name(line))
                .filter(|n| names.contains(n))
                .into_iter()
                .collect(),
            Line::Section {
                keyword: "backend",
                name: Some(section),
            } => nodes
                .iter()
                .filter(|n| n.tags.get("backend").map(String::as_str) == Some(*section))
                .map(|n| n.name.as_str())
                .collect(),
            _ => Vec::new(),
        };
        let alert = alert.replace(candidate, "<candidate>");
        for name in culprits {
            let reason = blamed.entry(name.to_string()).or_default();
            if !reason.is_empty() {
                reason.push('\n');
            }
            reason.push_str(alert.trim());
        }
    }
    blamed
}

/// Checks a candidate may take before hacfg stops tracing HAProxy's
/// refusals to nodes (each pass holds back at least one node; HAProxy
/// reports section errors before address errors, so a few are needed).
const MAX_CHECK_PASSES: usize = 8;

/// Whether a run tries again the held nodes that are due ([`RETRY_AFTER`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// It checks its candidate and may write (and reload) it: due nodes go
    /// back into the first candidate.
    Due,
    /// It cannot check a node (`--no-check`) or may not reload
    /// (`--apply runtime`): held nodes stay out.
    Never,
}

/// What a refusal's blame did.
#[derive(Debug, PartialEq, Eq)]
pub enum Blamed {
    /// The nodes it blames are held back: render again without them.
    Held,
    /// It blames no node (or the passes are used up): the config is at fault.
    Nobody,
    /// It blames more than half of the nodes this run did not already hold
    /// back: the environment is at fault (DNS, say), and nothing is held.
    Most { names: Vec<String>, of: usize },
}

/// The nodes of a run's render, and those held back, as the run goes.
pub struct Quarantine {
    dir: PathBuf,
    held: HeldSet,
    before: HeldSet,
    nodes: Arc<Vec<Node>>,
    newly: Vec<String>,
    passes: usize,
    /// Held nodes put back into this run's candidate, to be tried again.
    retried: BTreeSet<String>,
    /// How many of them the candidate still holds.
    retrying: usize,
    /// Nodes of the first candidate that were not held back before.
    fresh: usize,
    /// Files in the folder that are no node hacfg can read: held back too.
    unreadable: Vec<Unreadable>,
    /// One warning naming the files skipped by name (`Store::load`).
    stray: Option<String>,
}

impl Quarantine {
    /// The folder's nodes, less those still held back as their file is
    /// (those due for a retry put back, if `retry` says so).
    pub fn load(store: &Store, lock: &Lock<Exclusive>, retry: Retry) -> Result<Quarantine> {
        let mut held = HeldSet::load(store.dir());
        let before = held.clone();
        let loaded = store.load(lock)?;
        let stray = loaded.stray_warning(store.dir());
        let (mut nodes, out) = held.split(loaded.nodes);
        let fresh = nodes.len();
        let now = now_ms();
        let retried: BTreeSet<String> = out
            .into_iter()
            .filter(|h| retry == Retry::Due && h.due(now))
            .map(|h| {
                let name = h.node.name.clone();
                nodes.push(h.node);
                name
            })
            .collect();
        if !retried.is_empty() {
            nodes.sort_by(|a, b| a.name.cmp(&b.name));
        }
        Ok(Quarantine {
            dir: store.dir().to_path_buf(),
            held,
            before,
            nodes: Arc::new(nodes),
            newly: Vec::new(),
            passes: 0,
            retrying: retried.len(),
            retried,
            fresh,
            stray,
            unreadable: loaded.unreadable,
        })
    }

    /// The warning that names the stray files this run skipped, if any.
    pub fn stray(&self) -> Option<&str> {
        self.stray.as_deref()
    }

    /// The files hacfg could not read as nodes, held back this run.
    pub fn unreadable(&self) -> &[Unreadable] {
        &self.unreadable
    }

    /// The nodes to render.
    pub fn nodes(&self) -> Arc<Vec<Node>> {
        self.nodes.clone()
    }

    /// How many nodes are held back (those being tried again included).
    pub fn held(&self) -> usize {
        self.held.names().len()
    }

    /// Whether the candidate holds nodes HAProxy refused before, tried
    /// again: only `haproxy -c` may judge it, not the runtime API.
    pub fn is_retrying(&self) -> bool {
        self.retrying > 0
    }

    /// Holds back the nodes a rejection blames in `rendered` (`said`: the
    /// check's output, which names the candidate by its path), unless it
    /// blames none or most of them (see [`Blamed`]). A node tried again and
    /// blamed again is held as before, not newly.
    pub fn hold_blamed(&mut self, (said, candidate): (&str, &str), rendered: &str) -> Blamed {
        self.passes += 1;
        if self.passes > MAX_CHECK_PASSES {
            return Blamed::Nobody;
        }
        let blamed = blame(said, candidate, rendered, &self.nodes);
        if blamed.is_empty() {
            return Blamed::Nobody;
        }
        let fresh: Vec<&String> = blamed
            .keys()
            .filter(|n| !self.retried.contains(*n))
            .collect();
        if (self.newly.len() + fresh.len()) * 2 > self.fresh {
            let mut names = self.newly.clone();
            names.extend(fresh.into_iter().cloned());
            return Blamed::Most {
                names,
                of: self.fresh,
            };
        }
        let (out, keep): (Vec<Node>, Vec<Node>) = self
            .nodes
            .iter()
            .cloned()
            .partition(|n| blamed.contains_key(&n.name));
        for node in out {
            if self.retried.contains(&node.name) {
                self.retrying -= 1;
            } else {
                self.newly.push(node.name.clone());
            }
            let reason = blamed[&node.name].clone();
            self.held.insert(node, reason);
        }
        self.nodes = Arc::new(keep);
        Blamed::Held
    }

    /// Records the held-back nodes, if this run changed them: those tried
    /// again that the config now holds are let go. Only a run that writes
    /// (or finds the config current) calls this: one that fails or is
    /// refused by a guard records nothing.
    pub fn save(&mut self) -> Result<()> {
        if self.retrying > 0 {
            for node in self.nodes.iter() {
                if self.retried.contains(&node.name) {
                    self.held.remove(&node.name);
                }
            }
            self.retrying = 0;
        }
        if self.held == self.before {
            return Ok(());
        }
        self.held.save(&self.dir)
    }

    /// Every node held back now, with HAProxy's words, and those this run found.
    pub fn outcome(&self) -> (Vec<(String, String)>, Vec<String>) {
        let held = self
            .held
            .names()
            .into_iter()
            .map(|n| (n.to_string(), self.held.reason(n).to_string()))
            .collect();
        (held, self.newly.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, backend: Option<&str>) -> Node {
        let node = Node::named(name).port(80).weight(1);
        match backend {
            Some(b) => node.tag("backend", b),
            None => node,
        }
    }

    const RENDERED: &str = "listen stats\n    bind :1936\nbackend nodes\n    server bad x.invalid:80 check\n    server good 10.0.0.1:80\nbackend stats\n    server st 10.0.0.2:80\n";

    #[test]
    fn alerts_are_traced_to_their_nodes() {
        let nodes = [
            node("bad", None),
            node("good", None),
            node("st", Some("stats")),
        ];
        let out = "[NOTICE]   (1) : haproxy version is 2.6.12\n\
            [ALERT]    (1) : config : [/x/c.tmp:4] : 'server nodes/bad' : could not resolve address 'x.invalid'.\n\
            [ALERT]    (1) : config : Parsing [/x/c.tmp:6]: backend 'stats' has the same name as proxy 'stats' declared at /x/c.tmp:1.\n\
            [ALERT]    (1) : config : Fatal errors found in configuration.";
        let blamed = blame(out, "/x/c.tmp", RENDERED, &nodes);
        assert_eq!(blamed.keys().collect::<Vec<_>>(), ["bad", "st"]);
        assert!(
            blamed["bad"].contains("[<candidate>:4]"),
            "{}",
            blamed["bad"]
        );
        assert!(blamed["st"].contains("same name as proxy 'stats'"));
    }

    #[test]
    fn an_alert_about_the_rest_blames_no_node() {
        let nodes = [node("good", None)];
        let out = "[ALERT] (1) : config : [/x/c.tmp:2] : unknown keyword 'bind:'.";
        assert!(blame(out, "/x/c.tmp", RENDERED, &nodes).is_empty());
        assert!(blame("garbage [/x/c.tmp:999]", "/x/c.tmp", RENDERED, &nodes).is_empty());
    }

    #[test]
    fn held_nodes_are_due_again_after_the_interval() {
        let mut set = HeldSet::default();
        set.insert(node("bad", None), "no".into());
        let held = set.get(&node("bad", None)).unwrap().clone();
        let interval = u64::try_from(RETRY_AFTER.as_millis()).unwrap();
        assert!(!held.due(held.refused_ms + interval - 1));
        assert!(held.due(held.refused_ms + interval));
        // A record written before `refused_ms` existed is due at once.
        let dir = tempfile::tempdir().unwrap();
        set.save(dir.path()).unwrap();
        let path = dir.path().join(records::HELD);
        let text = std::fs::read_to_string(&path).unwrap();
        let old: String = text
            .lines()
            .filter(|l| !l.contains("refused_ms"))
            .collect::<Vec<_>>()
            .join("\n")
            .replace("\"no\",", "\"no\"");
        std::fs::write(&path, old).unwrap();
        let loaded = HeldSet::load(dir.path());
        let held = loaded.get(&node("bad", None)).unwrap();
        assert_eq!(held.refused_ms, 0);
        assert!(held.due(now_ms()));
    }

    #[test]
    fn held_nodes_stay_out_until_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let mut set = HeldSet::default();
        set.insert(node("bad", None), "no".into());
        set.save(dir.path()).unwrap();
        let mut set = HeldSet::load(dir.path());
        let (live, held) = set.split(vec![node("bad", None), node("good", None)]);
        assert_eq!((live.len(), held.len()), (1, 1));
        let mut changed = node("bad", None);
        changed.port = Some(81);
        let (live, held) = set.split(vec![changed, node("good", None)]);
        assert_eq!((live.len(), held.len()), (2, 0));
        assert!(set.names().is_empty());
        set.save(dir.path()).unwrap();
        assert!(!dir.path().join(records::HELD).exists());
    }
}
