//! `hacfg serf`, the Serf event handler: one event's members applied to
//! the nodes folder as one batch, then one render; a query answered.

use std::path::Path;

use anyhow::Result;

use super::answer::{QUERY_NAME, digest};
use super::event::{Action, OnFailed, action_of, read_lines};
use super::plan::{Changes, plan_event};
use crate::exit::Outcome;
use crate::log::{Log, Verbosity};
use crate::pipeline::{Balancer, Folder, Then};
use crate::quote::shorten;
use crate::stdout::print_stdout;
use crate::store::Mode;

/// One event, as Serf hands it to its handler. Skipped members make a
/// partial success (exit 6).
pub struct Event<'a> {
    /// SERF_EVENT (`member-join`, ...).
    pub name: &'a str,
    /// SERF_SELF_NAME: the agent's own member, left alone.
    pub self_name: &'a str,
    /// SERF_QUERY_NAME, for a `query` event.
    pub query: &'a str,
    pub roles: &'a [String],
    /// `--on-failed`.
    pub on_failed: OnFailed,
    /// `--log-file`, which still gets a query's line.
    pub log_file: Option<&'a Path>,
}

impl Event<'_> {
    pub fn run(&self, b: &mut Balancer) -> Result<Outcome> {
        // Always read stdin to its end first: Serf waits for its handler to.
        let lines = read_lines(std::io::stdin().lock())?;
        if self.name == "query" {
            return Ok(self.answer(b));
        }
        let action = action_of(self.name, self.on_failed)?;
        if action == Action::Ignore {
            b.log().info(&format!("{}: ignored", self.name));
            return Ok(Outcome::Done);
        }
        b.check_output()?;
        let port = b.default_port();
        let mut changes = plan_event(lines, action, self.roles, self.self_name, port);
        let skipped = warn_planned(&changes, self.name, b.log());
        let modes = (action, self.on_failed);
        let stays = second_opinion(b, modes, &mut changes)?;
        if let Some(n) = stays {
            b.count_stays(n);
        }
        let staying = self.on_failed == OnFailed::Verify && stays.is_some_and(|n| n > 0);
        // A failed member is dead: its server is never kept serving.
        let failed = self.name == "member-failed";
        let dead = if failed {
            changes.removals.clone()
        } else {
            Vec::new()
        };
        let render = Then::Render {
            own: None,
            dead: &dead,
        };
        let (more, outcome) = b.change(render, |folder, log| {
            apply_changes(folder, &changes, self.name, log)
        })?;
        if staying {
            b.start_worker();
        }
        Ok(partial(self.name, skipped + more, outcome))
    }

    /// A query: the digest for `fleet`'s, nothing for any other. Serf sends
    /// the handler's stdout and stderr back as the answer, so nothing goes
    /// to stderr here (the log file still gets its line).
    fn answer(&self, b: &Balancer) -> Outcome {
        if self.query == QUERY_NAME {
            let _ = print_stdout(&digest(b).to_line());
        } else {
            let mut quiet = Log::new(Verbosity::Quiet, self.log_file);
            quiet.info(&format!(
                "query {}: ignored",
                crate::quote::quote(self.query)
            ));
        }
        Outcome::Done
    }
}

/// `--on-failed verify`: asks HAProxy, when a member is reported failed
/// now or one stays from before, and keeps the removals it agrees with.
/// An event's upserts and removals end their members' stays (in every
/// mode: a stale stay must never judge a member Serf sees alive). Returns
/// how many members stay, if the record was read.
fn second_opinion(
    b: &mut Balancer,
    (action, on_failed): (Action, OnFailed),
    changes: &mut Changes,
) -> Result<Option<usize>> {
    let recorded = b.stays_recorded();
    if action != Action::Verify && !recorded {
        return Ok(None);
    }
    let failed = match action {
        Action::Verify => std::mem::take(&mut changes.removals),
        _ => Vec::new(),
    };
    let ended = changes.names();
    b.with_exclusive(|folder, log| {
        if on_failed != OnFailed::Verify {
            return folder.end_stays(&ended).map(Some);
        }
        let reviewed = folder.review(&failed, &ended, log)?;
        folder.record(&reviewed)?;
        changes.removals.extend(reviewed.remove.iter().cloned());
        Ok(Some(reviewed.count()))
    })
}

/// Warns of the tags `changes` dropped and the members it skipped (`who`:
/// the event, or `sync`); returns how many were skipped.
/// Stderr names the first `SHOWN_SKIPS` skipped members (and notes), the
/// log file the first `LOGGED_SKIPS`, each reason cut to `REASON_CAP`
/// bytes; the rest are counted in one line: 100,000 bad keys must not
/// write 100,000 lines.
pub(crate) fn warn_planned(changes: &Changes, who: &str, log: &mut Log) -> usize {
    let notes = changes
        .notes
        .iter()
        .map(|n| format!("{who}: {}", shorten(n, REASON_CAP)));
    let skips = changes.skipped.iter();
    let skips = skips.map(|r| format!("{who}: skipped: {}", shorten(r, REASON_CAP)));
    let notes: Vec<String> = notes.take(LOGGED_SKIPS).collect();
    for lines in [notes, skips.take(LOGGED_SKIPS).collect()] {
        for (i, line) in lines.iter().enumerate() {
            if i < SHOWN_SKIPS {
                log.warn(line);
            } else {
                log.warn_to_file(line);
            }
        }
    }
    let more = |n: usize, cap| n.saturating_sub(cap);
    let (notes, skipped) = (changes.notes.len(), changes.skipped.len());
    let (unshown, unlogged) = (
        more(notes, SHOWN_SKIPS) + more(skipped, SHOWN_SKIPS),
        more(notes, LOGGED_SKIPS) + more(skipped, LOGGED_SKIPS),
    );
    if unshown > 0 {
        log.warn(&format!(
            "{who}: {unshown} more warning(s) like the ones above: {} in the log file, {unlogged} \
             not written anywhere",
            unshown - unlogged
        ));
    }
    changes.skipped.len()
}

/// Skipped members named on stderr and in the log file, and the length
/// their reasons are cut to.
const SHOWN_SKIPS: usize = 20;
const LOGGED_SKIPS: usize = 1000;
const REASON_CAP: usize = 400;

/// Writes and removes the node files `changes` asks for, one line each. A
/// file that cannot be written or removed is a warning naming the node and
/// the file, and counts as skipped: the rest is applied all the same.
/// Returns how many were skipped; fails only when the batch as a whole
/// could not be made durable.
pub(crate) fn apply_changes<M: Mode>(
    folder: &Folder<M>,
    changes: &Changes,
    who: &str,
    log: &mut Log,
) -> Result<usize> {
    let written = folder.write_all(&changes.upserts)?;
    let written = changes.upserts.iter().zip(written).map(|(node, result)| {
        let verbs = ["added/updated node", "already up to date:"];
        (folder.describe(node), result, verbs)
    });
    let removed = folder.remove_all(&changes.removals)?;
    let removed = changes.removals.iter().zip(removed).map(|(name, result)| {
        let verbs = ["removed node", "was not there:"];
        (format!("`{name}`"), result, verbs)
    });
    let mut skipped = 0;
    for (label, result, [done, unchanged]) in written.chain(removed) {
        match result {
            Ok(true) => log.info(&format!("{who}: {done} {label}")),
            Ok(false) => log.info(&format!("{who}: {unchanged} {label}")),
            Err(e) => {
                log.warn(&format!("{who}: skipped {label}: {e:#}"));
                skipped += 1;
            }
        }
    }
    Ok(skipped)
}

/// A run that skipped members is a partial success (exit 6), however the
/// rest of it went.
pub(crate) fn partial(who: &str, skipped: usize, outcome: Outcome) -> Outcome {
    match skipped {
        0 => outcome,
        n => Outcome::Skipped(format!("{who}: {n} member(s) skipped, the rest applied")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_members_past_twenty_are_counted_in_one_line() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("hacfg.log");
        let mut log = Log::new(Verbosity::Quiet, Some(&path));
        let changes = Changes {
            skipped: (0..100_000)
                .map(|i| format!("member `m{i}`: {}", "x".repeat(1000)))
                .collect(),
            ..Changes::default()
        };
        assert_eq!(warn_planned(&changes, "sync", &mut log), 100_000);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), LOGGED_SKIPS + 1);
        assert!(lines[0].contains("member `m0`") && lines[0].contains("(1013 bytes)"));
        assert!(lines[0].len() < REASON_CAP + 200, "{}", lines[0]);
        assert!(lines[LOGGED_SKIPS - 1].contains("member `m999`"));
        let last = lines[LOGGED_SKIPS];
        assert!(last.contains("99980 more warning(s)"), "{last}");
        assert!(
            last.contains("980 in the log file, 99000 not written"),
            "{last}"
        );
    }
}
