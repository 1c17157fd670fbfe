//! Nodes HAProxy refused ("poison nodes"): kept out of the live config until
//! their file changes, so one bad member never freezes the pool.
//!
//! When the check rejects a candidate, HAProxy's alerts name lines
//! (`[file:42]`). A `server NAME …` line belongs to node NAME, and a
//! `backend X` section line to the nodes tagged `backend=X`. Those nodes are
//! held back and the config is rendered and checked again without them. What
//! was held back, with HAProxy's words, is kept in `.hacfg.held` in the nodes
//! folder. A held node whose file still says the same is left out up front;
//! one that changed is tried again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::check::Rejection;
use crate::atomic;
use crate::file;
use crate::haproxy::config::{self, Line};
use crate::node::Node;
use crate::store::{Exclusive, Lock, Store};

/// Name of the state file inside the nodes folder (hidden, so never a node).
pub const HELD_FILE: &str = ".hacfg.held";
/// Largest `.hacfg.held` read (a reason is at most a few lines).
const HELD_CAP: u64 = 64 << 20;

/// One node HAProxy refused, as its file was then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub node: Node,
    /// HAProxy's alert lines about it.
    pub reason: String,
}

/// The held-back nodes of a folder, by name.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct HeldSet {
    entries: BTreeMap<String, Held>,
}

impl HeldSet {
    /// Loads `.hacfg.held`; a missing or damaged file holds nothing back
    /// (the next check finds any bad node again).
    pub fn load(dir: &Path) -> HeldSet {
        let bytes = file::read_capped(&dir.join(HELD_FILE), HELD_CAP)
            .ok()
            .flatten()
            .unwrap_or_default();
        let entries = serde_json::from_slice::<Vec<Held>>(&bytes)
            .unwrap_or_default()
            .into_iter()
            .filter(|h| h.node.validate().is_ok())
            .map(|h| (h.node.name.clone(), h))
            .collect();
        HeldSet { entries }
    }

    /// Writes `.hacfg.held` (or removes it when nothing is held). The
    /// caller holds the exclusive lock.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(HELD_FILE);
        if self.entries.is_empty() {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
                _ => Ok(()),
            };
        }
        let list: Vec<&Held> = self.entries.values().collect();
        atomic::write_atomic(&path, &serde_json::to_vec_pretty(&list)?)
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

    /// Holds `node` back for `reason`.
    pub fn insert(&mut self, node: Node, reason: String) {
        self.entries
            .insert(node.name.clone(), Held { node, reason });
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

/// The nodes of a run's render, and those held back, as the run goes.
pub struct Quarantine {
    dir: PathBuf,
    held: HeldSet,
    before: HeldSet,
    nodes: Arc<Vec<Node>>,
    newly: Vec<String>,
    passes: usize,
}

impl Quarantine {
    /// The folder's nodes, less those still held back as their file is.
    pub fn load(store: &Store, lock: &Lock<Exclusive>) -> Result<Quarantine> {
        let mut held = HeldSet::load(store.dir());
        let before = held.clone();
        let (nodes, _) = held.split(store.load_all(lock)?);
        Ok(Quarantine {
            dir: store.dir().to_path_buf(),
            held,
            before,
            nodes: Arc::new(nodes),
            newly: Vec::new(),
            passes: 0,
        })
    }

    /// The nodes to render.
    pub fn nodes(&self) -> Arc<Vec<Node>> {
        self.nodes.clone()
    }

    /// How many nodes are held back.
    pub fn held(&self) -> usize {
        self.held.names().len()
    }

    /// Holds back the nodes `rejection` blames in `rendered`; false when it
    /// blames none (or the passes are used up): the config is at fault.
    pub fn hold_blamed(&mut self, rejection: &Rejection, rendered: &str) -> bool {
        self.passes += 1;
        if self.passes > MAX_CHECK_PASSES {
            return false;
        }
        let blamed = blame(
            &rejection.output,
            &rejection.candidate,
            rendered,
            &self.nodes,
        );
        if blamed.is_empty() {
            return false;
        }
        let (out, keep): (Vec<Node>, Vec<Node>) = self
            .nodes
            .iter()
            .cloned()
            .partition(|n| blamed.contains_key(&n.name));
        for node in out {
            self.newly.push(node.name.clone());
            let reason = blamed[&node.name].clone();
            self.held.insert(node, reason);
        }
        self.nodes = Arc::new(keep);
        true
    }

    /// Records the held-back nodes, if this run changed them.
    pub fn save(&self) -> Result<()> {
        if self.held == self.before {
            return Ok(());
        }
        self.held.save(&self.dir).with_context(|| {
            format!(
                "unable to record the held-back nodes in `{}`",
                self.dir.join(HELD_FILE).display()
            )
        })
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
        assert!(!dir.path().join(HELD_FILE).exists());
    }
}
