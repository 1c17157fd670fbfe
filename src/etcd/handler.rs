//! `hacfg etcd`, the command of `etcdctl watch --prefix PREFIX -- hacfg
//! etcd`: one event made the same [`Changes`] as a Serf event's, applied
//! through the pipeline's door unless the folder reflects a newer
//! revision, then rendered.

use anyhow::Result;

use super::event::{Change, Vars, Watched, name_of, node_of};
use super::revision;
use crate::exit::Outcome;
use crate::pipeline::Balancer;
use crate::serf::{Changes, apply_changes, partial, warn_planned};

/// One watch event, as etcdctl hands it to its command.
pub struct Event<'a> {
    /// `--etcd-prefix`: the keys under it name the nodes.
    pub prefix: &'a str,
    pub vars: &'a Vars,
}

impl Event<'_> {
    /// Applies the event. Skipped input (a key or value hacfg refuses) and
    /// nodes HAProxy refused are warnings, and the run exits 0: etcdctl
    /// ends its watch when its command exits non-zero.
    pub fn run(&self, b: &mut Balancer) -> Result<Outcome> {
        let event = self.vars.event()?;
        let changes = plan(self.prefix, &event);
        let skipped = warn_planned(&changes, "etcd", b.log());
        b.check_output()?;
        let applied = b.with_exclusive(|folder, log| {
            let recorded = revision::recorded(folder.dir(), log);
            if event.revision < recorded {
                log.info(&format!(
                    "etcd: revision {} is older than the folder's {recorded}: ignored",
                    event.revision
                ));
                return Ok(None);
            }
            let more = apply_changes(folder, &changes, "etcd", log)?;
            revision::record(folder.dir(), event.revision)?;
            Ok(Some(more))
        })?;
        let Some(more) = applied else {
            return Ok(Outcome::Done);
        };
        let outcome = partial("etcd", skipped + more, b.render()?);
        Ok(keep_watching(b, outcome))
    }
}

/// The event's changes: a put's node, a delete's removal, or the reason
/// it is skipped.
pub fn plan(prefix: &str, event: &Watched) -> Changes {
    let mut changes = Changes::default();
    let value = match &event.change {
        Change::Put(value) => Some(value.as_slice()),
        Change::Delete => None,
    };
    plan_key(&mut changes, prefix, &event.key, value);
    changes
}

/// Adds what `key` asks to `changes`: with a `value`, its node (a value
/// refused under a valid name leaves that node untouched); without, its
/// removal; or the reason it is skipped. The one rule of the handler and
/// of `sync`.
pub fn plan_key(changes: &mut Changes, prefix: &str, key: &[u8], value: Option<&[u8]>) {
    let planned = name_of(prefix, key).and_then(|name| {
        let Some(value) = value else {
            changes.removals.push(name);
            return Ok(());
        };
        let node = node_of(&name, value);
        if node.is_err() {
            changes.untouched.insert(name);
        }
        changes.upserts.push(node?);
        Ok(())
    });
    if let Err(e) = planned {
        changes.skipped.push(format!("{e:#}"));
    }
}

/// A partial success said as a warning, and exit 0 (see [`Event::run`]).
fn keep_watching(b: &mut Balancer, outcome: Outcome) -> Outcome {
    match outcome {
        Outcome::Skipped(why) => {
            b.log().warn(&format!("{why} (exit 0: the watch goes on)"));
            Outcome::Done
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(key: &[u8], change: Change) -> Watched {
        Watched {
            revision: 5,
            key: key.to_vec(),
            change,
        }
    }

    #[test]
    fn plans() {
        let p = "/hacfg/nodes/";
        let put = plan(
            p,
            &event(b"/hacfg/nodes/s1", Change::Put(b"10.0.0.1".to_vec())),
        );
        assert_eq!(put.upserts.len(), 1);
        let del = plan(p, &event(b"/hacfg/nodes/s1", Change::Delete));
        assert_eq!(del.removals, ["s1"]);
        let bad = plan(
            p,
            &event(b"/hacfg/nodes/s1", Change::Put(b"x y z".to_vec())),
        );
        assert_eq!((bad.skipped.len(), bad.upserts.len()), (1, 0));
        assert!(bad.untouched.contains("s1"));
        let hostile = plan(p, &event(b"/hacfg/nodes/a%2Fb", Change::Delete));
        assert_eq!((hostile.skipped.len(), hostile.removals.len()), (1, 0));
    }
}
