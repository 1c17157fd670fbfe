//! `hacfg sync --source etcd`: the nodes folder made equal to the keys
//! under the prefix at one revision, with `sync`'s guards, and that
//! revision recorded.

use std::fmt::Write as _;

use anyhow::{Result, bail};

use super::get::{Client, Listing};
use super::handler::plan_key;
use super::revision;
use crate::exit::{Failure, Outcome};
use crate::log::Log;
use crate::node::Node;
use crate::pipeline::{Balancer, Folder};
use crate::serf::{Changes, apply_changes, partial, plan_sync, shrinks_too_much, warn_planned};
use crate::stdout::print_stdout;
use crate::store::Exclusive;

/// What `sync --source etcd` was asked.
pub struct Sync<'a> {
    pub client: &'a Client,
    /// Print the plan on stdout (`+ node`, `- node`) instead.
    pub dry_run: bool,
    /// Apply even an empty prefix, or one that removes more than half of
    /// the nodes.
    pub allow_empty: bool,
}

impl Sync<'_> {
    pub fn run(&self, b: &mut Balancer) -> Result<Outcome> {
        let listing = self.client.list()?;
        let wanted = wanted(&self.client.prefix, &listing);
        let skipped = warn_planned(&wanted, "sync", b.log());
        if self.dry_run {
            let current = b.with_shared(|folder, _| {
                not_older(listing.revision, revision::peek(folder.dir()))?;
                folder.load_all()
            })?;
            let changes = plan_sync(&current, wanted);
            show(b, &changes)?;
            self.guard(current.len(), &changes)?;
            return Ok(partial("sync", skipped, Outcome::Done));
        }
        let apply = |folder: &Folder<Exclusive>, log: &mut Log| {
            self.apply(folder, wanted, listing.revision, log)
        };
        let (more, outcome) = b.change_whole(&[], apply)?;
        Ok(partial("sync", skipped + more, outcome))
    }

    /// Plans from the folder as it is and applies the plan, then records
    /// the revision: all under the exclusive lock the render then uses. A
    /// listing older than the folder's revision changes nothing.
    fn apply(
        &self,
        folder: &Folder<Exclusive>,
        wanted: Changes,
        at: u64,
        log: &mut Log,
    ) -> Result<usize> {
        not_older(at, revision::recorded(folder.dir(), log))?;
        let current: Vec<Node> = folder.load_all()?;
        let changes = plan_sync(&current, wanted);
        self.guard(current.len(), &changes)?;
        let skipped = apply_changes(folder, &changes, "sync", log)?;
        revision::record(folder.dir(), at)?;
        log.info(&format!("sync: the folder reflects etcd revision {at}"));
        Ok(skipped)
    }

    /// An empty prefix, or one that removes more than half of the nodes,
    /// changes nothing (exit 5) unless `--allow-empty`: a wrong prefix or
    /// a wiped store looks like a mass leave.
    fn guard(&self, current: usize, changes: &Changes) -> Result<()> {
        let removals = changes.removals.len();
        if self.allow_empty || !shrinks_too_much(current, removals) {
            return Ok(());
        }
        Err(Failure::Shrinks { removals, current }.into())
    }
}

/// A listing older than the folder changes nothing. A cluster rebuilt
/// from scratch starts its revisions again: the error says how to start
/// over from it.
fn not_older(at: u64, recorded: u64) -> Result<()> {
    if at < recorded {
        bail!(
            "sync: etcd answered at revision {at}, older than the folder's {recorded}: nothing \
             changed (if the etcd cluster was rebuilt, its revisions start again: remove \
             `{}` from the nodes folder, then sync)",
            revision::NAME
        );
    }
    Ok(())
}

/// The keys as nodes (the same rules as the handler's): a key that is no
/// node is skipped; a node whose value is refused keeps its file.
fn wanted(prefix: &str, listing: &Listing) -> Changes {
    let mut changes = Changes::default();
    for (key, value) in &listing.kvs {
        plan_key(&mut changes, prefix, key, Some(value));
    }
    changes
}

/// `--dry-run`: the plan on stdout.
fn show(b: &Balancer, changes: &Changes) -> Result<()> {
    let mut text = String::new();
    for node in &changes.upserts {
        let _ = writeln!(text, "+ {}", b.describe(node));
    }
    for name in &changes.removals {
        let _ = writeln!(text, "- `{name}`");
    }
    print_stdout(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_nodes() {
        let listing = Listing {
            revision: 4,
            kvs: vec![
                (b"/p/s1".to_vec(), b"10.0.0.1".to_vec()),
                (b"/p/s2".to_vec(), b"not an address!".to_vec()),
                (b"/p/a/b".to_vec(), b"10.0.0.3".to_vec()),
            ],
        };
        let w = wanted("/p/", &listing);
        assert_eq!(w.upserts.len(), 1);
        assert_eq!(w.skipped.len(), 2, "{:?}", w.skipped);
        assert!(w.untouched.contains("s2"));
    }
}
