//! What it takes to make HAProxy run the desired config: nothing, a few
//! runtime operations, or a reload. Pure: the desired config, the file
//! HAProxy last took and the live servers in; the plan out.
//!
//! The runtime path is taken only when the two configs differ in nothing
//! but `server` lines of backends that exist on both sides, whose algorithm
//! takes dynamic servers, and whose lines use only keywords `add server`
//! accepts, with IP literal addresses. Anything else reloads.

use std::collections::{HashMap, HashSet};

use crate::haproxy::config::{self, Backend, Line, ServerLine};
use crate::haproxy::execute::Op;
use crate::haproxy::state::Live;
use crate::haproxy::{Dialect, Target, same_addr};

/// What it takes.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// HAProxy already runs the desired servers.
    Nothing,
    /// These operations, and no reload.
    Runtime(Vec<Op>),
    /// A reload, for this reason.
    Reload(String),
}

/// The plan that makes HAProxy, which took `old` at its last reload and
/// runs `live` now, run `new`.
pub fn plan(old: Option<&str>, new: &str, live: &[Live], dialect: Dialect) -> Plan {
    let Some(old) = old else {
        return Plan::Reload("there is no config yet".into());
    };
    if !config::same_rest(old, new) {
        return Plan::Reload("lines other than `server` lines changed".into());
    }
    let mut diff = Diff {
        old_keywords: keywords_of(old, live.len()),
        live: live
            .iter()
            .map(|l| ((l.backend.as_str(), l.name.as_str()), l))
            .collect(),
        wanted: HashSet::with_capacity(live.len() + 16),
        touched: HashSet::new(),
        ops: Vec::new(),
        dialect,
    };
    for (kind, line) in config::lines(new) {
        if let Line::Server { backend } = kind
            && let Err(why) = diff.server(config::read_server(backend, line.trim()))
        {
            return Plan::Reload(why);
        }
    }
    // The algorithms are the same on both sides: the rest is identical.
    let backends = config::split(&headers_and_algorithms(new)).backends;
    diff.removals(live, |b| backends.contains_key(b));
    if let Some(why) = diff.touched.iter().find_map(|b| refusal(&backends, b)) {
        return Plan::Reload(why);
    }
    if diff.ops.is_empty() {
        Plan::Nothing
    } else {
        Plan::Runtime(diff.ops)
    }
}

/// The desired servers read so far, against the old keywords and the live
/// servers; borrows from the configs, copies only the changes.
struct Diff<'a> {
    old_keywords: HashMap<(&'a str, &'a str), &'a str>,
    live: HashMap<(&'a str, &'a str), &'a Live>,
    wanted: HashSet<(&'a str, &'a str)>,
    touched: HashSet<&'a str>,
    ops: Vec<Op>,
    /// What the running version's `add server` takes.
    dialect: Dialect,
}

impl<'a> Diff<'a> {
    /// One desired server: the operations it takes, or why it takes a reload.
    fn server(&mut self, server: ServerLine<'a>) -> Result<(), String> {
        let (backend, name) = (server.backend, server.name);
        let target = || Target::new(backend, name);
        let refusal = server.refusal.filter(|r| !r.lifted_by(self.dialect));
        self.wanted.insert((backend, name));
        let Some(live) = self.live.get(&(backend, name)).copied() else {
            if let Some(why) = refusal {
                return Err(format!("server `{backend}/{name}`: {why}"));
            }
            self.ops.push(Op::Add(server.to_server()));
            self.touched.insert(backend);
            return Ok(());
        };
        if server.id.is_some_and(|id| id != live.id) {
            return Err(format!("server `{backend}/{name}` has another id"));
        }
        let old = self.old_keywords.get(&(backend, name));
        if old.is_some_and(|o| {
            *o != server.keywords && without_weight(o) != without_weight(server.keywords)
        }) {
            return Err(format!(
                "server `{backend}/{name}` changed more than its address and weight"
            ));
        }
        if !same_addr(server.addr, &live.addr) || server.port != live.port {
            if let Some(why) = refusal {
                return Err(format!("server `{backend}/{name}`: {why}"));
            }
            self.ops.push(Op::SetAddr {
                target: target(),
                addr: server.addr.to_string(),
                port: server.port,
                check: server.check,
            });
            self.touched.insert(backend);
        }
        if server.weight != live.weight {
            self.ops.push(Op::SetWeight {
                target: target(),
                weight: server.weight,
            });
            self.touched.insert(backend);
        }
        Ok(())
    }

    /// Live servers of the config's backends that it no longer lists.
    fn removals(&mut self, live: &'a [Live], in_config: impl Fn(&str) -> bool) {
        for l in live {
            let gone = !self.wanted.contains(&(l.backend.as_str(), l.name.as_str()));
            if gone && in_config(&l.backend) {
                self.ops.push(Op::Delete(l.target()));
                self.touched.insert(&l.backend);
            }
        }
    }
}

/// Why a touched backend's algorithm takes a reload, if it does.
fn refusal(backends: &std::collections::BTreeMap<String, Backend>, name: &str) -> Option<String> {
    let why = backends.get(name)?.not_dynamic.as_ref()?;
    Some(format!("backend `{name}`: {why}"))
}

/// Of the old config, only each server's keywords matter.
fn keywords_of(old: &str, capacity: usize) -> HashMap<(&str, &str), &str> {
    let mut out = HashMap::with_capacity(capacity + 16);
    for (kind, line) in config::lines(old) {
        if let Line::Server { backend } = kind {
            let mut words = line.trim().splitn(4, char::is_whitespace).skip(1);
            let name = words.next().unwrap_or_default();
            let keywords = words.nth(1).unwrap_or_default().trim();
            out.insert((backend, name), keywords);
        }
    }
    out
}

/// The section headers and algorithm lines of `config`: enough to know each
/// backend's algorithm without reading its servers.
fn headers_and_algorithms(config: &str) -> String {
    let mut out = String::new();
    for (kind, line) in config::lines(config) {
        let keep = match kind {
            Line::Section { .. } => true,
            Line::Directive { keyword, .. } => matches!(keyword, "balance" | "hash-type"),
            Line::Server { .. } | Line::Blank => false,
        };
        if keep {
            out.push_str(line);
        }
    }
    out
}

/// A server line's keywords without `weight N`, which the runtime changes.
fn without_weight(keywords: &str) -> String {
    let mut out = Vec::new();
    let mut words = keywords.split_whitespace();
    while let Some(w) = words.next() {
        if w == "weight" {
            words.next();
        } else {
            out.push(w);
        }
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLDEST: Dialect = Dialect::OLDEST;

    const BASE: &str = "global\n    maxconn 10\n\ndefaults\n    mode http\n\nbackend nodes\n    balance roundrobin\n    server a 10.0.0.1:80 check weight 1 id 11\n    server b 10.0.0.2:80 check weight 1 id 12\n";

    fn live_of(config: &str) -> Vec<Live> {
        crate::haproxy::state::all_up(config)
    }

    #[test]
    fn the_same_config_and_live_state_need_nothing() {
        assert_eq!(
            plan(Some(BASE), BASE, &live_of(BASE), OLDEST),
            Plan::Nothing
        );
    }

    #[test]
    fn server_changes_are_runtime_operations() {
        let new = BASE
            .replace("    server b 10.0.0.2:80 check weight 1 id 12\n", "")
            .replace("10.0.0.1:80 check weight 1", "10.0.0.9:81 check weight 5")
            + "    server c 10.0.0.3:80 check weight 1 id 13\n";
        let Plan::Runtime(ops) = plan(Some(BASE), &new, &live_of(BASE), OLDEST) else {
            panic!("{:?}", plan(Some(BASE), &new, &live_of(BASE), OLDEST));
        };
        assert!(
            matches!(&ops[0], Op::SetAddr { target, addr, port: 81, check: true } if target.name == "a" && addr == "10.0.0.9")
        );
        assert!(matches!(&ops[1], Op::SetWeight { weight: 5, .. }));
        assert!(matches!(&ops[2], Op::Add(s) if s.name == "c" && s.id == Some(13)));
        assert!(matches!(&ops[3], Op::Delete(t) if t.name == "b"));
    }

    #[test]
    fn drift_is_repaired_against_the_live_state() {
        let mut live = live_of(BASE);
        live.retain(|l| l.name != "a");
        live[0].weight = 9;
        let Plan::Runtime(ops) = plan(Some(BASE), BASE, &live, OLDEST) else {
            panic!()
        };
        assert_eq!(ops.len(), 2, "{ops:?}");
    }

    #[test]
    fn an_address_haproxy_writes_its_own_way_is_no_change() {
        let v6 = BASE.replace("10.0.0.1:80", "[::7f00:b]:80");
        let mut live = live_of(&v6);
        live[0].addr = "::127.0.0.11".into();
        assert_eq!(plan(Some(&v6), &v6, &live, OLDEST), Plan::Nothing);
        live[0].addr = "::127.0.0.12".into();
        assert!(
            matches!(plan(Some(&v6), &v6, &live, OLDEST), Plan::Runtime(ops) if ops.len() == 1)
        );
    }

    #[test]
    fn anything_else_reloads() {
        let live = live_of(BASE);
        let reload = |new: &str| matches!(plan(Some(BASE), new, &live, OLDEST), Plan::Reload(_));
        assert!(reload(&BASE.replace("maxconn 10", "maxconn 20")));
        assert!(reload(
            &(BASE.to_string() + "\nbackend other\n    server z 10.0.0.9:80\n")
        ));
        assert!(reload(
            &BASE
                .replace("roundrobin", "static-rr")
                .replace("id 12", "id 12 weight 2")
        ));
        assert!(reload(&(BASE.to_string() + "    server h web.local:80\n")));
        assert!(reload(
            &(BASE.to_string() + "    server e 10.0.0.5:80 enabled\n")
        ));
        assert!(reload(
            &(BASE.to_string() + "    server e 10.0.0.5:80 cookie x\n")
        ));
        assert!(reload(
            &BASE.replace("check weight 1 id 11", "weight 1 id 11")
        ));
        assert!(reload(&BASE.replace("id 11", "id 99")));
        assert!(matches!(plan(None, BASE, &live, OLDEST), Plan::Reload(_)));
        let hashed = BASE.replace("roundrobin", "source");
        assert!(matches!(
            plan(
                Some(&hashed),
                &hashed.replace("id 12\n", "id 12 weight 3\n"),
                &live,
                OLDEST
            ),
            Plan::Reload(_)
        ));
        let consistent =
            hashed.replace("balance source", "balance source\n    hash-type consistent");
        let new = consistent
            .replace("id 12\n", "id 12 weight 3\n")
            .replace("weight 1 id 12", "id 12");
        assert!(matches!(
            plan(Some(&consistent), &new, &live, OLDEST),
            Plan::Runtime(_)
        ));
    }

    #[test]
    fn cookie_is_taken_at_runtime_from_3_0() {
        let live = live_of(BASE);
        let new = BASE.to_string() + "    server e 10.0.0.5:80 check cookie e1 weight 2\n";
        let v3 = Dialect { version: (3, 0) };
        let Plan::Runtime(ops) = plan(Some(BASE), &new, &live, v3) else {
            panic!("{:?}", plan(Some(BASE), &new, &live, v3));
        };
        assert!(
            matches!(&ops[..], [Op::Add(s)] if s.keywords.contains("cookie e1") && s.weight == 2)
        );
        let Plan::Reload(why) = plan(Some(BASE), &new, &live, OLDEST) else {
            panic!("2.6 took a cookie");
        };
        assert!(why.contains("only from HAProxy 3.0"), "{why}");
        // A keyword no version takes still reloads, whatever comes first.
        let both = BASE.to_string() + "    server e 10.0.0.5:80 cookie e1 enabled\n";
        assert!(
            matches!(plan(Some(BASE), &both, &live, v3), Plan::Reload(w) if w.contains("`enabled`"))
        );
        assert_eq!(config::newest_keyword(&new), Some((3, 0)));
        assert_eq!(config::newest_keyword(BASE), None);
        assert_eq!(config::newest_keyword(&both), None);
    }
}
