//! `hacfg status`: the servers the nodes folder asks for, against the
//! servers HAProxy runs. Two answers from the socket (`show servers state`
//! and `show stat`), so it stays cheap at 10,000 servers.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;

use crate::exit::Outcome;
use crate::haproxy::config::Server;
use crate::haproxy::stat::Stat;
use crate::haproxy::state::Live;
use crate::haproxy::{Target, endpoint, same_addr};
use crate::pipeline::{Balancer, Pending, Shown, Why, now_ms};
use crate::stdout::print_stdout;

/// One server, desired or live or both.
#[derive(Debug, Serialize)]
pub struct Row {
    pub backend: String,
    pub server: String,
    /// In the rendered config.
    pub desired: bool,
    /// Running in HAProxy.
    pub live: bool,
    /// `ADDR:PORT` the config asks for.
    pub address: Option<String>,
    /// `ADDR:PORT` HAProxy uses.
    pub live_address: Option<String>,
    pub weight: Option<u16>,
    pub live_weight: Option<u16>,
    /// `ready`, `drain` or `maint`.
    pub admin: Option<&'static str>,
    /// `down`, `starting`, `up` or `stopping`.
    pub operational: Option<&'static str>,
    /// The last health check (`L7OK`, `L4CON`, `INI`, …).
    pub check: Option<String>,
    /// Work hacfg left waiting on this server (a first check, a drain),
    /// and whether its deadline has passed.
    pub pending: Option<String>,
    /// Its node's member is failed in Serf, but stays (`--on-failed
    /// verify`): HAProxy's checks saw it UP.
    pub stay: Option<Shown>,
    /// What differs, empty when the server is as asked.
    pub drift: Vec<String>,
    /// The address and port the config asks for, and those HAProxy uses,
    /// to compare: `address` and `live_address` are as each side writes them.
    #[serde(skip)]
    wanted_at: Option<(String, u16)>,
    #[serde(skip)]
    live_at: Option<(String, u16)>,
    /// hacfg is taking it out (a removal, or kept serving until then): its
    /// absence from the folder is no drift of its own.
    #[serde(skip)]
    leaving: bool,
}

/// `hacfg status`: the table (or JSON) on stdout; exit 8 on drift.
pub fn run(b: &Balancer, json: bool) -> Result<Outcome> {
    let seen = b.status()?;
    let waits = (&seen.pending, seen.worker);
    let mut rows = compare(&seen.desired, &seen.live, &seen.stats, waits);
    mark_stays(&mut rows, &seen.stays);
    let text = if json {
        serde_json::to_string_pretty(&rows)? + "\n"
    } else {
        table(&rows)
    };
    print_stdout(&text)?;
    let mut stuck: Vec<String> = drift_text(&rows).into_iter().collect();
    stuck.extend(seen.unreadable.iter().map(|u| format!("{u}: held back")));
    Ok(if stuck.is_empty() {
        Outcome::Done
    } else {
        Outcome::Drift(stuck.join("\n"))
    })
}

/// What `status` says on drift, if any row drifts.
fn drift_text(rows: &[Row]) -> Option<String> {
    let servers = rows
        .iter()
        .filter(|r| r.drift.iter().any(|d| d != STAY_DRIFT))
        .count();
    let stays = rows.iter().filter(|r| r.stay.is_some_and(|s| s.overdue));
    let mut parts = Vec::new();
    if servers > 0 {
        parts.push(format!(
            "{servers} server(s) differ from the nodes folder (see their rows): `hacfg --reload \
             render` repairs them, with --force when the file is already as rendered; hacfg's \
             own pending work, `hacfg settle`"
        ));
    }
    match stays.count() {
        0 => {}
        n => parts.push(format!(
            "{n} server(s) of failed members stay past --check-timeout (Serf calls them \
             failed, HAProxy's checks see them UP): look at their Serf agents; `hacfg sync` or \
             their next event judges them again"
        )),
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// The drift of a failed member that stays past `--check-timeout`: no
/// worker watches it any more, and nothing judges it again until a later
/// event or `sync`, while Serf and HAProxy disagree.
const STAY_DRIFT: &str = "failed in Serf, kept past --check-timeout";

/// Marks the servers of failed members that stay; one past
/// `--check-timeout` drifts.
fn mark_stays(rows: &mut [Row], stays: &[(Target, Shown)]) {
    for (target, shown) in stays {
        let mine = |r: &&mut Row| r.backend == target.backend && r.server == target.name;
        if let Some(r) = rows.iter_mut().find(mine) {
            r.stay = Some(*shown);
            if shown.overdue {
                r.drift.push(STAY_DRIFT.to_string());
            }
        }
    }
}

/// The rows by backend and server name.
type Rows = BTreeMap<(String, String), Row>;

/// Compares desired servers with live ones (sorted by backend, server).
pub fn compare(
    desired: &[Server],
    live: &[Live],
    stats: &BTreeMap<Target, Stat>,
    (pending, worker): (&Pending, bool),
) -> Vec<Row> {
    let mut rows = Rows::new();
    for s in desired {
        let r = row(&mut rows, &s.backend, &s.name);
        r.desired = true;
        r.address = Some(endpoint(&s.addr, s.port));
        r.wanted_at = Some((s.addr.clone(), s.port));
        r.weight = Some(s.weight);
    }
    for l in live {
        let r = row(&mut rows, &l.backend, &l.name);
        r.live = true;
        r.live_address = Some(endpoint(&l.addr, l.port));
        r.live_at = Some((l.addr.clone(), l.port));
        r.live_weight = Some(l.weight);
        r.admin = Some(l.admin().as_str());
        r.operational = Some(l.operational());
        r.check = stats
            .get(&l.target())
            .map(|s| s.check.clone())
            .filter(|c| !c.is_empty());
    }
    mark_pending(&mut rows, pending, worker);
    for r in rows.values_mut() {
        r.drift = drift_of(r);
    }
    rows.into_values().collect()
}

/// The row of `backend/server`, new and empty the first time.
fn row<'a>(rows: &'a mut Rows, backend: &str, server: &str) -> &'a mut Row {
    let key = (backend.to_string(), server.to_string());
    rows.entry(key).or_insert_with(|| Row {
        backend: backend.to_string(),
        server: server.to_string(),
        desired: false,
        live: false,
        address: None,
        live_address: None,
        weight: None,
        live_weight: None,
        admin: None,
        operational: None,
        check: None,
        pending: None,
        stay: None,
        drift: Vec::new(),
        wanted_at: None,
        live_at: None,
        leaving: false,
    })
}

/// Marks the live servers hacfg is settling; one past its deadline, or
/// with no worker at work on it (killed), drifts.
fn mark_pending(rows: &mut Rows, pending: &Pending, worker: bool) {
    let now = now_ms();
    for entry in &pending.entries {
        let key = (entry.target.backend.clone(), entry.target.name.clone());
        if let Some(r) = rows.get_mut(&key).filter(|r| r.live) {
            r.leaving = entry.why.leaves();
            let what = match entry.why {
                Why::FirstCheck => "waiting for its first check",
                Why::Removal => "draining until idle",
                Why::KeptServing => "serving until a replacement is UP",
            };
            r.pending = Some(if entry.overdue(now) {
                let by = match entry.why {
                    Why::KeptServing => "kept serving",
                    _ => "drained",
                };
                r.drift
                    .push(format!("{by} by hacfg past its deadline ({what})"));
                format!("{what}, overdue")
            } else if !worker {
                r.drift.push(format!(
                    "no worker at work ({what}): the next hacfg run or `hacfg settle` finishes it"
                ));
                format!("{what}, no worker")
            } else {
                what.to_string()
            });
        }
    }
}

/// What differs between a row's desired and live server (after what
/// `mark_pending` found).
fn drift_of(row: &Row) -> Vec<String> {
    let r = row;
    let mut drift = r.drift.clone();
    match (r.desired, r.live) {
        (true, false) => drift.push("not running".into()),
        (false, true) if r.leaving => {}
        (false, true) => drift.push("not in the nodes folder".into()),
        _ => {
            let same = match (&r.wanted_at, &r.live_at) {
                (Some((wanted, port)), Some((running, live_port))) => {
                    same_addr(wanted, running) && port == live_port
                }
                _ => false,
            };
            if !same {
                drift.push("address".into());
            }
            if r.weight != r.live_weight {
                drift.push("weight".into());
            }
        }
    }
    drift
}

/// An aligned table, one server per line.
pub fn table(rows: &[Row]) -> String {
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                format!("{}/{}", r.backend, r.server),
                dash(r.address.clone()),
                dash(r.live_address.clone()),
                format!(
                    "{}/{}",
                    dash(r.weight.map(|w| w.to_string())),
                    dash(r.live_weight.map(|w| w.to_string()))
                ),
                dash(r.admin.map(str::to_string)),
                dash(r.operational.map(str::to_string)),
                dash(r.check.clone()),
                match (&r.pending, r.drift.is_empty()) {
                    (_, false) => format!("drift: {}", r.drift.join(", ")),
                    (Some(what), true) => format!("pending: {what}"),
                    (None, true) => r
                        .stay
                        .map_or("ok".into(), |s| format!("stays: {}", s.text())),
                },
            ]
        })
        .collect();
    let header = [
        "SERVER", "DESIRED", "LIVE", "WEIGHT", "ADMIN", "STATE", "CHECK", "STATUS",
    ];
    crate::stdout::table(header, &cells)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_is_named() {
        let desired = crate::haproxy::config::servers(
            "backend b\n    server a 10.0.0.1:80 weight 2\n    server c 10.0.0.3:80\n",
        );
        let desired = &desired;
        let live = |name: &str, port: u16, weight: u16| Live {
            backend: "b".into(),
            name: name.into(),
            id: 1,
            addr: "10.0.0.1".into(),
            port,
            weight,
            op_state: 2,
            admin_state: 8,
            unchecked: false,
        };
        let rows = compare(
            desired,
            &[live("a", 81, 2), live("z", 80, 1)],
            &BTreeMap::new(),
            (&Pending::default(), false),
        );
        let drift: Vec<(&str, Vec<String>)> = rows
            .iter()
            .map(|r| (r.server.as_str(), r.drift.clone()))
            .collect();
        assert_eq!(
            drift,
            [
                ("a", vec!["address".to_string()]),
                ("c", vec!["not running".to_string()]),
                ("z", vec!["not in the nodes folder".to_string()]),
            ]
        );
        assert_eq!(rows[0].admin, Some("drain"));
        assert!(table(&rows).contains("drift: address"));
    }

    #[test]
    fn a_failed_member_that_stays_is_shown_and_drifts_past_its_watch() {
        let desired = crate::haproxy::config::servers(
            "backend b\n    server a 10.0.0.1:80\n    server c 10.0.0.3:80\n",
        );
        let live: Vec<Live> = crate::haproxy::state::all_up(
            "backend b\n    server a 10.0.0.1:80\n    server c 10.0.0.3:80\n",
        );
        let mut rows = compare(
            &desired,
            &live,
            &BTreeMap::new(),
            (&Pending::default(), false),
        );
        let watched = Shown {
            since_ms: 1,
            overdue: false,
        };
        let overdue = Shown {
            since_ms: 1,
            overdue: true,
        };
        let stays = [
            (Target::new("b", "a"), watched),
            (Target::new("b", "c"), overdue),
        ];
        mark_stays(&mut rows, &stays);
        assert_eq!(rows[0].drift, Vec::<String>::new());
        assert_eq!(rows[1].drift, [STAY_DRIFT]);
        let table = table(&rows);
        assert!(table.contains("stays: failed in Serf, watched"), "{table}");
        assert!(
            table.contains("drift: failed in Serf, kept past"),
            "{table}"
        );
        let text = drift_text(&rows).unwrap();
        assert!(
            text.starts_with("1 server(s) of failed members stay past"),
            "{text}"
        );
        let json = serde_json::to_value(&rows).unwrap();
        assert_eq!(
            json[0]["stay"],
            serde_json::json!({"since_ms": 1, "overdue": false})
        );
        assert!(json[1]["stay"]["overdue"].as_bool().unwrap());
        // Within its watch, a stay is no drift.
        rows[1].drift.clear();
        rows[1].stay = Some(watched);
        assert_eq!(drift_text(&rows), None);
    }

    #[test]
    fn an_address_haproxy_writes_its_own_way_is_no_drift() {
        let desired = crate::haproxy::config::servers("backend b\n    server a [::7f00:b]:80\n");
        let live = Live {
            backend: "b".into(),
            name: "a".into(),
            id: 1,
            addr: "::127.0.0.11".into(),
            port: 80,
            weight: 1,
            op_state: 2,
            admin_state: 0,
            unchecked: false,
        };
        let pending = (&Pending::default(), false);
        let rows = compare(&desired, &[live], &BTreeMap::new(), pending);
        assert_eq!(rows[0].drift, Vec::<String>::new());
        assert_eq!(rows[0].live_address.as_deref(), Some("[::127.0.0.11]:80"));
    }
}
