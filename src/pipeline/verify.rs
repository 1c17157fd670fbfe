//! `--on-failed verify`: a second opinion on Serf's `member-failed`. A
//! member Serf reports failed goes only once HAProxy's own health checks
//! agree: one they see UP stays (a gossip problem is not a dead server),
//! noted in `.hacfg.failed`, until a later event, `sync` or the deferred
//! worker finds it DOWN, or Serf reaps the member. A server without checks
//! gives no second opinion: it goes at once, as with `remove`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::Settings;
use super::records::{self, Kind, clock, now_ms};
use crate::haproxy::config::{self, Server};
use crate::haproxy::state::{Admin, Live};
use crate::haproxy::{Target, same_addr};
use crate::log::Log;
use crate::node::{self, Node};
use crate::output::OutputFile;
use crate::store::{Exclusive, Lock, Store};

/// A failed member whose server HAProxy still saw UP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stay {
    /// The node (and member) name.
    pub name: String,
    /// When Serf first reported it failed (ms since the epoch).
    pub since_ms: u64,
}

/// `.hacfg.failed`, sorted by name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stays {
    pub entries: Vec<Stay>,
}

impl Kind for Stays {
    const NAME: &'static str = records::FAILED;
    /// About 80 bytes per node that stays.
    const CAP: u64 = 16 << 20;
    const WHAT: &'static str = "the record of failed members that stay";
    const WITHOUT: &'static str = "the members it listed stay in the folder (HAProxy's checks \
        keep traffic from a dead server), and `hacfg sync` or their next event judges them \
        again";

    fn parse(bytes: &[u8], now_ms: u64) -> Result<Stays> {
        let mut entries: Vec<Stay> = serde_json::from_slice(bytes)?;
        for s in &mut entries {
            node::validate_name(&s.name)?;
            s.since_ms = clock::trusted_moment(s.since_ms, now_ms);
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        entries.dedup_by(|a, b| a.name == b.name);
        Ok(Stays { entries })
    }
}

impl Stays {
    /// Loads the record; a damaged one holds nothing (see `records`: the
    /// run's sweep says so, and its members stay).
    pub fn load(dir: &Path) -> Stays {
        records::load(dir)
    }

    /// Writes the record (removes it when empty) if it differs from `before`.
    fn save(&self, dir: &Path, before: &Stays) -> Result<()> {
        if self == before {
            return Ok(());
        }
        records::save::<Stays, _>(dir, &self.entries)
    }

    /// Whether the folder has a record at all: one `lstat`, so that an
    /// event with no stay to review costs no read (and no lock).
    pub fn recorded(dir: &Path) -> bool {
        records::present::<Stays>(dir)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.iter().any(|s| s.name == name)
    }

    fn forget(&mut self, name: &str) {
        self.entries.retain(|s| s.name != name);
    }

    /// Each stay by name, as `status`, `list` and the metrics show it at
    /// `now_ms`; `watch` is how long the worker watches one
    /// (`--check-timeout`).
    pub fn shown(&self, watch: Duration, now_ms: u64) -> BTreeMap<String, Shown> {
        let watch_ms = u64::try_from(watch.as_millis()).unwrap_or(u64::MAX);
        let shown = |st: &Stay| Shown {
            since_ms: st.since_ms,
            overdue: now_ms >= st.since_ms.saturating_add(watch_ms),
        };
        self.entries
            .iter()
            .map(|st| (st.name.clone(), shown(st)))
            .collect()
    }
}

/// A failed member that stays, as `status` and `list` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Shown {
    /// When Serf first reported it failed (ms since the epoch; 0 when
    /// the clock was stepped back since).
    pub since_ms: u64,
    /// Past `--check-timeout`: the worker no longer watches it, and only
    /// a later event or `sync` judges it again. `status` calls it drift.
    pub overdue: bool,
}

impl Shown {
    /// The words `status` and `list` show.
    pub fn text(&self) -> &'static str {
        if self.overdue {
            "failed in Serf, past --check-timeout"
        } else {
            "failed in Serf, watched"
        }
    }
}

/// What HAProxy's checks say of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A checked server of it is UP or starting (and not in maintenance): it stays.
    Up(Target),
    /// Nothing of it is seen UP by a check: it goes, for this reason.
    Down(String),
}

/// HAProxy's opinion of `node`: its servers are the `desired` ones (the
/// config hacfg wrote) named after it (or, when none is, at its endpoint),
/// as `live` runs them. A server counts only if its line has `check`.
pub fn verdict(node: &Node, default_port: u16, desired: &[Server], live: &[Live]) -> Verdict {
    let mine = servers_of(node, default_port, desired);
    if mine.is_empty() {
        return Verdict::Down("the config has no server for it".into());
    }
    let checked: Vec<&Server> = mine.into_iter().filter(|s| s.check).collect();
    if checked.is_empty() {
        return Verdict::Down("its server has no health check to ask".into());
    }
    let mut seen = Vec::new();
    for server in checked {
        let target = Target::new(&server.backend, &server.name);
        match live.iter().find(|l| l.target() == target) {
            // UP, or STARTING (its slowstart ramp after a passed check).
            Some(l) if matches!(l.op_state, 1 | 2) && l.admin() != Admin::Maint => {
                return Verdict::Up(target);
            }
            Some(l) => seen.push(format!("`{target}` {}", describe(l))),
            None => seen.push(format!("`{target}` not running")),
        }
    }
    Verdict::Down(format!("HAProxy sees {}", seen.join(", ")))
}

/// `node`'s servers among `desired`: the ones named after it, or, when
/// none is, the ones at its endpoint. By endpoint only then: another node
/// at the same address (a reused IP) must not vouch for this one.
pub fn servers_of<'a>(node: &Node, default_port: u16, desired: &'a [Server]) -> Vec<&'a Server> {
    let named: Vec<&Server> = desired.iter().filter(|s| s.name == node.name).collect();
    if !named.is_empty() {
        return named;
    }
    let port = node.port_or(default_port);
    let at_endpoint = |s: &&Server| s.port == port && same_addr(&s.addr, &node.address);
    desired.iter().filter(at_endpoint).collect()
}

fn describe(live: &Live) -> String {
    match live.admin() {
        Admin::Maint => "in maintenance".to_string(),
        _ => live.operational().to_uppercase(),
    }
}

/// Which nodes a run removes after asking HAProxy, and the stays it
/// leaves: [`Reviewed::record`] writes them, once the run goes ahead.
#[derive(Debug, Default)]
pub struct Reviewed {
    /// Remove these node files now.
    pub remove: Vec<String>,
    stays: Stays,
    before: Stays,
}

impl Reviewed {
    /// How many failed members stay (the metrics' gauge).
    pub fn count(&self) -> usize {
        self.stays.entries.len()
    }

    /// Keeps `name`'s earlier stay after all (its node file could not be
    /// removed): a later review judges it again.
    pub fn keep(&mut self, name: &str) {
        if let Some(stay) = self.before.entries.iter().find(|st| st.name == name) {
            self.stays.entries.push(stay.clone());
            self.stays.entries.sort_by(|a, b| a.name.cmp(&b.name));
        }
    }

    /// Writes `.hacfg.failed` (under the exclusive lock) if it changed.
    pub fn record(&self, dir: &Path) -> Result<()> {
        self.stays.save(dir, &self.before)
    }
}

/// The members Serf reports `failed` now, and the ones whose stays end
/// (`ended`: they joined again, left or were reaped), reviewed with every
/// earlier stay against one read of HAProxy's servers. Without an answer
/// from HAProxy nothing goes: no answer is no second opinion, and HAProxy's
/// own checks already keep traffic from a dead server; the failed members
/// stay (said in a warning) and the next event, the watch or `sync` judges
/// them again. Writes nothing: the caller records the result. Runs under
/// the exclusive lock.
pub fn review(
    s: &Settings,
    store: &Store,
    lock: &Lock<Exclusive>,
    output: &OutputFile,
    (failed, ended): (&[String], &[String]),
    log: &mut Log,
) -> Reviewed {
    records::sweep(store.dir(), lock, log);
    let before = Stays::load(store.dir());
    let mut stays = before.clone();
    for name in ended {
        stays.forget(name);
    }
    if failed.is_empty() && stays.entries.is_empty() {
        return Reviewed {
            remove: Vec::new(),
            stays,
            before,
        };
    }
    let remove = match ask(s, output) {
        Ok((desired, live)) => {
            let seen = (desired.as_slice(), live.as_slice());
            let port = s.renderer.default_port;
            judge_all(store, port, seen, (failed, ended), &mut stays, log)
        }
        Err(e) => {
            keep_unjudged(failed, &mut stays, &e, log);
            Vec::new()
        }
    };
    stays.entries.sort_by(|a, b| a.name.cmp(&b.name));
    Reviewed {
        remove,
        stays,
        before,
    }
}

/// HAProxy did not answer: every `failed` member stays, to be judged again.
fn keep_unjudged(failed: &[String], stays: &mut Stays, err: &anyhow::Error, log: &mut Log) {
    let fresh: Vec<&String> = failed.iter().filter(|n| !stays.contains(n)).collect();
    if failed.is_empty() {
        return;
    }
    log.warn(&format!(
        "--on-failed verify: unable to ask HAProxy ({err:#}); {} failed member(s) stay until \
         HAProxy answers (its own health checks keep traffic from a dead server): the next \
         event, the watch or `hacfg sync` judges them again",
        failed.len()
    ));
    for name in fresh {
        stays.entries.push(Stay {
            name: name.clone(),
            since_ms: now_ms(),
        });
    }
}

/// Ends the stays of `names` (they joined again, left or were reaped),
/// without asking HAProxy: what a run that does not verify still owes the
/// record. Returns how many stays are left. Runs under the exclusive lock.
pub fn end(dir: &Path, names: &[String]) -> Result<usize> {
    let before = Stays::load(dir);
    let mut stays = before.clone();
    for name in names {
        stays.forget(name);
    }
    stays.save(dir, &before)?;
    Ok(stays.entries.len())
}

/// Judges the `failed` members and the earlier stays (less the `alive`
/// ones): returns the names to remove and updates `stays`.
fn judge_all(
    store: &Store,
    port: u16,
    (desired, live): (&[Server], &[Live]),
    (failed, alive): (&[String], &[String]),
    stays: &mut Stays,
    log: &mut Log,
) -> Vec<String> {
    let earlier: Vec<String> = stays.entries.iter().map(|st| st.name.clone()).collect();
    let mut remove: Vec<String> = Vec::new();
    let mut fresh = Vec::new();
    for name in failed.iter().chain(&earlier) {
        if alive.contains(name) || remove.contains(name) {
            continue;
        }
        match judge(store, name, port, desired, live) {
            Ok(Verdict::Up(target)) if !stays.contains(name) => {
                fresh.push(format!(
                    "member-failed: node `{name}` stays: HAProxy's health checks see `{target}` \
                     UP (--on-failed verify); it goes once they see it DOWN or Serf reaps it"
                ));
                stays.entries.push(Stay {
                    name: name.clone(),
                    since_ms: now_ms(),
                });
            }
            Ok(Verdict::Up(_)) => {}
            Ok(Verdict::Down(why)) => {
                log.info(&format!("failed member `{name}` goes: {why}"));
                stays.forget(name);
                remove.push(name.clone());
            }
            Err(gone) => {
                stays.forget(name);
                if failed.contains(name) {
                    log.debug(&format!("failed member `{name}`: {gone:#}"));
                    remove.push(name.clone());
                }
            }
        }
    }
    say_stays(&fresh, log);
    remove
}

/// Says which failed members began to stay: a line each in the log file;
/// on stderr (not with `-q`: a stay is hacfg working as asked) the line
/// itself for one, one line for a batch, rather than 500.
fn say_stays(lines: &[String], log: &mut Log) {
    match lines {
        [] => {}
        [line] => log.warn_unless_quiet(line),
        _ => {
            for line in lines {
                log.warn_to_file(line);
            }
            log.warn_unless_quiet(&format!(
                "member-failed: {} failed members stay: HAProxy's health checks see their \
                 servers UP (--on-failed verify); each goes once they see it DOWN or Serf reaps \
                 it (the log file names them, and so do `hacfg list` and `hacfg status`)",
                lines.len()
            ));
        }
    }
}

/// The config hacfg wrote and the servers HAProxy runs: one socket
/// exchange, bounded by `--socket-timeout`.
fn ask(s: &Settings, output: &OutputFile) -> Result<(Vec<Server>, Vec<Live>)> {
    let api = s
        .apply
        .runtime()
        .context("no runtime API is set (--master-socket or --stats-socket)")?;
    let text = output.read()?.unwrap_or_default();
    let desired = config::servers(&String::from_utf8_lossy(&text));
    Ok((desired, api.live()?))
}

/// `name`'s verdict; an error when it has no node file (any more).
fn judge(
    store: &Store,
    name: &str,
    default_port: u16,
    desired: &[Server],
    live: &[Live],
) -> Result<Verdict> {
    let node = store
        .read(name)?
        .with_context(|| format!("node `{name}` has no file"))?;
    Ok(verdict(&node, default_port, desired, live))
}

/// Whether some of `stays` is no longer seen UP: read without the folder
/// lock, for the worker's polling.
pub fn any_down(s: &Settings, store: &Store, output: &OutputFile, stays: &Stays) -> Result<bool> {
    if stays.entries.is_empty() {
        return Ok(false);
    }
    let (desired, live) = ask(s, output)?;
    let port = s.renderer.default_port;
    Ok(stays.entries.iter().any(|st| {
        !matches!(
            judge(store, &st.name, port, &desired, &live),
            Ok(Verdict::Up(_))
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::haproxy::state::all_up;

    const CONFIG: &str = "backend web\n    server s1 127.0.0.2:3000 check\n    server s2 \
                          127.0.0.3:3000\n";

    /// A stay's start follows the records' clock rule: one written by a
    /// clock since stepped back a day reads as long past, so it is overdue
    /// at once (no worker watches it, `status` calls it drift), however
    /// often it is read; one from now is watched for `--check-timeout`.
    #[test]
    fn a_stay_from_a_clock_stepped_back_is_overdue_at_once() {
        let now = now_ms();
        let ahead = now + 24 * clock::MAX_WAIT_MS;
        let text =
            format!(r#"[{{"name":"s1","since_ms":{ahead}}},{{"name":"s2","since_ms":{now}}}]"#);
        let stays = Stays::parse(text.as_bytes(), now).unwrap();
        let watch = Duration::from_secs(60);
        let shown = stays.shown(watch, now);
        assert_eq!(
            shown["s1"],
            Shown {
                since_ms: 0,
                overdue: true
            }
        );
        assert_eq!(
            shown["s2"],
            Shown {
                since_ms: now,
                overdue: false
            }
        );
        // An hour later the stepped-back one is still past, never "ahead".
        let later = now + clock::MAX_WAIT_MS;
        let again = Stays::parse(text.as_bytes(), later)
            .unwrap()
            .shown(watch, later);
        assert!(again["s1"].overdue && again["s2"].overdue);
    }

    #[test]
    fn only_a_checked_server_seen_up_stays() {
        let desired = config::servers(CONFIG);
        let mut live = all_up(CONFIG);
        let s1 = Node::named("s1").at("127.0.0.2").port(3000);
        assert_eq!(
            verdict(&s1, 3000, &desired, &live),
            Verdict::Up(Target::new("web", "s1"))
        );
        // s2 has no check: HAProxy's UP is no opinion.
        let s2 = Node::named("s2").at("127.0.0.3");
        assert!(
            matches!(verdict(&s2, 3000, &desired, &live), Verdict::Down(w) if w.contains("no health check"))
        );
        // Found by its endpoint when the template names servers otherwise.
        let renamed = Node::named("other").at("127.0.0.2").port(3000);
        assert!(matches!(
            verdict(&renamed, 3000, &desired, &live),
            Verdict::Up(_)
        ));
        live[0].op_state = 0;
        assert!(
            matches!(verdict(&s1, 3000, &desired, &live), Verdict::Down(w) if w.contains("`web/s1` DOWN"))
        );
        live[0].op_state = 2;
        live[0].admin_state = 0x01;
        assert!(
            matches!(verdict(&s1, 3000, &desired, &live), Verdict::Down(w) if w.contains("maintenance"))
        );
        // Another server at the same endpoint vouches for no one named.
        let shared = "backend web\n    server a1 127.0.0.2:3000 check\n    server a2 \
                      127.0.0.2:3000 check\n";
        let mut both = all_up(shared);
        both[1].admin_state = 0x01;
        let a2 = Node::named("a2").at("127.0.0.2").port(3000);
        assert!(matches!(
            verdict(&a2, 3000, &config::servers(shared), &both),
            Verdict::Down(_)
        ));
        both[1].admin_state = 0;
        both[1].op_state = 1;
        assert!(matches!(
            verdict(&a2, 3000, &config::servers(shared), &both),
            Verdict::Up(_)
        ));
        let unknown = Node::named("s9").at("127.0.0.9");
        assert!(
            matches!(verdict(&unknown, 3000, &desired, &[]), Verdict::Down(w) if w.contains("no server"))
        );
    }
}
