//! `hacfg sync`: the nodes folder made equal to the alive members of the
//! roles, as the local Serf agent lists them, under one exclusive lock.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use super::event::OnFailed;
use super::handler::{apply_changes, partial, warn_planned};
use super::members::{MemberList, member_list};
use super::plan::{Changes, batch, plan_sync, shrinks_too_much};
use crate::exit::{Failure, Outcome};
use crate::log::Log;
use crate::pipeline::{Balancer, Folder};
use crate::stdout::print_stdout;
use crate::store::Exclusive;

/// What `sync` was asked (its command line, checked).
pub struct Sync<'a> {
    pub roles: &'a [String],
    /// What failed members' nodes become.
    pub on_failed: OnFailed,
    /// The local agent's RPC address (`serf`'s own default if `None`).
    pub rpc_addr: Option<&'a str>,
    pub serf_bin: &'a Path,
    /// Print the plan on stdout (`+ node`, `- node`) instead.
    pub dry_run: bool,
    /// Apply even a list in which the agent sees no other member, or one
    /// that would remove more than half of the nodes.
    pub allow_empty: bool,
}

impl Sync<'_> {
    pub fn run(&self, b: &mut Balancer) -> Result<Outcome> {
        let list = member_list(self.serf_bin, self.rpc_addr)?;
        // A freshly started, lonely or partitioned agent sees only itself:
        // that is no evidence that the pool is empty.
        if list.alive.len() <= 1 && !self.allow_empty {
            return Err(Failure::Alone {
                members: list.alive.len(),
            }
            .into());
        }
        let members = list.alive.iter().cloned().map(Ok);
        let wanted = batch(members, self.roles, "", b.default_port());
        let skipped = warn_planned(&wanted, "sync", b.log());
        if self.dry_run {
            self.show(b, wanted, &list.failed)?;
            return Ok(partial("sync", skipped, Outcome::Done));
        }
        let apply =
            |folder: &Folder<Exclusive>, log: &mut Log| self.apply(folder, wanted, &list, log);
        // Failed members that go are dead: none is kept serving.
        let dead: Vec<String> = list.failed.iter().cloned().collect();
        let ((more, stays), outcome) = b.change_whole(&dead, apply)?;
        b.count_stays(stays);
        if self.on_failed == OnFailed::Verify && stays > 0 {
            b.start_worker();
        }
        Ok(partial("sync", skipped + more, outcome))
    }

    /// Plans from the folder as it is (`wanted` against it), asks HAProxy
    /// about failed members with `--on-failed verify`, and applies the
    /// plan: all under the exclusive lock the render then uses. Every
    /// member the `list` shows alive ends its stay, whether or not its node
    /// file changes: a stay kept from a missed join would otherwise judge
    /// an alive member at the next event. Returns how many were skipped,
    /// and how many failed members stay.
    fn apply(
        &self,
        folder: &Folder<Exclusive>,
        wanted: Changes,
        list: &MemberList,
        log: &mut Log,
    ) -> Result<(usize, usize)> {
        let current = folder.load_all()?;
        let mut changes = plan_sync(&current, wanted);
        let failed = self.failed_removals(&mut changes, &list.failed);
        let alive = list.alive.iter().map(|m| m.name.clone());
        let ended: Vec<String> = changes.names().into_iter().chain(alive).collect();
        let reviewed = if self.on_failed == OnFailed::Verify {
            Some(folder.review(&failed, &ended, log)?)
        } else {
            None
        };
        if let Some(reviewed) = &reviewed {
            changes.removals.extend(reviewed.remove.iter().cloned());
            changes.removals.sort();
            changes.removals.dedup();
        }
        // A refused plan changes nothing, the record of stays included.
        self.guard(current.len(), &changes)?;
        let stays = match &reviewed {
            Some(reviewed) => {
                folder.record(reviewed)?;
                reviewed.count()
            }
            None => folder.end_stays(&ended)?,
        };
        let skipped = apply_changes(folder, &changes, "sync", log)?;
        Ok((skipped, stays))
    }

    /// `--dry-run`: the plan on stdout, nothing changed; refused as the
    /// run would be, counting every failed member as gone (the worst case).
    fn show(&self, b: &mut Balancer, wanted: Changes, failed: &BTreeSet<String>) -> Result<()> {
        let current = b.with_shared(|folder, _| folder.load_all())?;
        let mut changes = plan_sync(&current, wanted);
        let asked = self.failed_removals(&mut changes, failed);
        let mut text = String::new();
        for node in &changes.upserts {
            let _ = writeln!(text, "+ {}", b.describe(node));
        }
        for name in &changes.removals {
            let _ = writeln!(text, "- `{name}`");
        }
        for name in &asked {
            let _ = writeln!(
                text,
                "? `{name}` (failed: goes if HAProxy's checks see it DOWN)"
            );
        }
        print_stdout(&text)?;
        changes.removals.extend(asked);
        self.guard(current.len(), &changes)
    }

    /// The removals of `failed` members, as `--on-failed` says: `remove`
    /// leaves them; `keep` drops them; `verify` takes them out of
    /// `changes` and returns them, for HAProxy to judge.
    fn failed_removals(&self, changes: &mut Changes, failed: &BTreeSet<String>) -> Vec<String> {
        let is_failed = |name: &String| failed.contains(name);
        match self.on_failed {
            OnFailed::Remove => Vec::new(),
            OnFailed::Keep => {
                changes.removals.retain(|name| !is_failed(name));
                Vec::new()
            }
            OnFailed::Verify => {
                let (failed, gone) = std::mem::take(&mut changes.removals)
                    .into_iter()
                    .partition(is_failed);
                changes.removals = gone;
                failed
            }
        }
    }

    /// A partitioned agent that still sees a few members is thin evidence
    /// too: a plan that removes more than half of the `current` nodes
    /// changes nothing (exit 5) unless `--allow-empty`.
    fn guard(&self, current: usize, changes: &Changes) -> Result<()> {
        let removals = changes.removals.len();
        if self.allow_empty || !shrinks_too_much(current, removals) {
            return Ok(());
        }
        Err(Failure::Shrinks { removals, current }.into())
    }
}
