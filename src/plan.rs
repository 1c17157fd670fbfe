//! What it takes to make HAProxy run the desired config: nothing, a few
//! runtime operations, or a reload. Pure: the desired config, the file
//! HAProxy last took and the live servers in; the plan out.
//!
//! The runtime path is taken only when the two configs differ in nothing
//! but `server` lines of backends that exist on both sides, whose algorithm
//! takes dynamic servers, and whose lines use only keywords `add server`
//! accepts, with IP literal addresses. Anything else reloads.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

/// One `server` line of a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub backend: String,
    pub name: String,
    pub addr: String,
    pub port: u16,
    /// `weight N`, or HAProxy's default 1.
    pub weight: u16,
    pub id: Option<u32>,
    /// The line has `check`: health checks decide when it takes traffic.
    pub check: bool,
    /// Everything after `ADDR:PORT`, as written.
    pub keywords: String,
    /// Why `add server` cannot take this line, if it cannot.
    pub not_dynamic: Option<String>,
}

/// Keywords `add server` accepts on HAProxy 2.6 (see RUNTIME.md): those
/// without an argument, then those with one. `enabled` is left out on
/// purpose: it is broken for dynamic servers on 2.6.12.
const FLAGS: &[&str] = &[
    "check",
    "backup",
    "ssl",
    "send-proxy",
    "send-proxy-v2",
    "check-ssl",
];
const WITH_ARG: &[&str] = &[
    "weight",
    "id",
    "maxconn",
    "inter",
    "fastinter",
    "downinter",
    "rise",
    "fall",
    "slowstart",
    "port",
    "track",
    "maxqueue",
    "minconn",
];

/// A config's backends and their server lines.
#[derive(Debug, Default)]
pub struct Split {
    pub backends: BTreeMap<String, Backend>,
}

/// A `backend` or `listen` section.
#[derive(Debug, Default, Clone)]
pub struct Backend {
    /// Why its algorithm takes no dynamic servers, if it does not.
    pub not_dynamic: Option<String>,
    pub servers: Vec<Server>,
}

/// The algorithm settings in force in a section.
#[derive(Debug, Default, Clone)]
struct Algorithm {
    balance: Option<String>,
    consistent: bool,
}

impl Algorithm {
    /// Why `add server` refuses this algorithm, if it does.
    fn refusal(&self) -> Option<String> {
        let balance = self.balance.as_deref().unwrap_or("roundrobin");
        match balance {
            "roundrobin" | "leastconn" | "first" | "random" => None,
            "static-rr" => Some("`balance static-rr` takes no dynamic servers".into()),
            _ if self.consistent => None,
            other => Some(format!(
                "`balance {other}` without `hash-type consistent` takes no dynamic servers"
            )),
        }
    }
}

/// One line of a config, classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind<'a> {
    /// A `server` line of this `backend` or `listen` section.
    Server(&'a str),
    /// Any other line, section headers included.
    Other,
}

/// The lines of `config` (newlines kept), each with its kind.
fn classify(config: &str) -> impl Iterator<Item = (Kind<'_>, &str)> {
    let mut backend: Option<&str> = None;
    config.split_inclusive('\n').map(move |line| {
        let trimmed = line.trim_start();
        let first = trimmed.split_whitespace().next().unwrap_or_default();
        if !line.starts_with([' ', '\t']) && !trimmed.is_empty() && !first.starts_with('#') {
            let mut words = trimmed.split_whitespace();
            backend = match (words.next(), words.next()) {
                (Some("backend" | "listen"), Some(name)) => Some(name),
                _ => None,
            };
            return (Kind::Other, line);
        }
        match (backend, first) {
            (Some(b), "server") => (Kind::Server(b), line),
            _ => (Kind::Other, line),
        }
    })
}

/// Whether two configs differ in `server` lines at most (no allocation).
fn same_rest(old: &str, new: &str) -> bool {
    let rest = |c| {
        classify(c)
            .filter(|(k, _)| *k == Kind::Other)
            .map(|(_, l)| l)
    };
    rest(old).eq(rest(new))
}

/// Splits `config` into server lines and the rest.
pub fn split(config: &str) -> Split {
    let mut out = Split::default();
    let mut defaults = Algorithm::default();
    let mut section: Option<(String, String)> = None;
    let mut algorithm = Algorithm::default();
    let finish = |section: &Option<(String, String)>, algorithm: &Algorithm, out: &mut Split| {
        if let Some((kind, name)) = section
            && (kind == "backend" || kind == "listen")
        {
            out.backends.entry(name.clone()).or_default().not_dynamic = algorithm.refusal();
        }
    };
    for line in config.split_inclusive('\n') {
        let trimmed = line.trim();
        let mut words = trimmed.split_whitespace();
        let first = words.next().unwrap_or_default();
        let is_header =
            !line.starts_with([' ', '\t']) && !trimmed.is_empty() && !first.starts_with('#');
        if is_header {
            finish(&section, &algorithm, &mut out);
            let name = words.next().unwrap_or_default().to_string();
            if first == "defaults" {
                algorithm = Algorithm::default();
            } else {
                algorithm = defaults.clone();
            }
            section = Some((first.to_string(), name));
            continue;
        }
        let in_defaults = section.as_ref().is_some_and(|(k, _)| k == "defaults");
        match first {
            "balance" => algorithm.balance = words.next().map(str::to_string),
            "hash-type" => algorithm.consistent = words.next() == Some("consistent"),
            _ => {}
        }
        if in_defaults {
            defaults = algorithm.clone();
        }
        if let (Some((kind, backend)), "server") = (&section, first)
            && (kind == "backend" || kind == "listen")
        {
            let server = parse_server(backend, trimmed);
            out.backends
                .entry(backend.clone())
                .or_default()
                .servers
                .push(server);
        }
    }
    finish(&section, &algorithm, &mut out);
    out
}

/// Parses `server NAME ADDR:PORT [keywords]` (a line `split` found).
fn parse_server(backend: &str, line: &str) -> Server {
    read_server(backend, line).to_server()
}

/// A server line as read, borrowing from the config: a plan reads every
/// line of a 10,000-server config and keeps owned copies only of changes.
#[derive(Debug, Clone, Copy)]
struct ServerLine<'a> {
    backend: &'a str,
    name: &'a str,
    addr: &'a str,
    port: u16,
    weight: u16,
    id: Option<u32>,
    check: bool,
    keywords: &'a str,
    refusal: Option<Refusal<'a>>,
}

/// Why `add server` cannot take a line.
#[derive(Debug, Clone, Copy)]
enum Refusal<'a> {
    NoPort(&'a str),
    NotIp(&'a str),
    Keyword(&'a str),
    Value(&'a str, &'a str),
}

impl std::fmt::Display for Refusal<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NoPort(e) => write!(f, "no port in `{e}`"),
            Refusal::NotIp(e) => write!(f, "`{e}` is not IP:PORT (the runtime resolves no names)"),
            Refusal::Keyword(k) => write!(f, "keyword `{k}` is not taken by `add server`"),
            Refusal::Value(k, v) => write!(f, "{k} `{v}`"),
        }
    }
}

impl ServerLine<'_> {
    fn to_server(self) -> Server {
        Server {
            backend: self.backend.to_string(),
            name: self.name.to_string(),
            addr: self.addr.to_string(),
            port: self.port,
            weight: self.weight,
            id: self.id,
            check: self.check,
            keywords: self.keywords.to_string(),
            not_dynamic: self.refusal.map(|r| r.to_string()),
        }
    }
}

fn read_server<'a>(backend: &'a str, line: &'a str) -> ServerLine<'a> {
    let mut words = line.split_whitespace().skip(1);
    let name = words.next().unwrap_or_default();
    let endpoint = words.next().unwrap_or_default();
    let keywords = line
        .splitn(4, char::is_whitespace)
        .nth(3)
        .unwrap_or_default()
        .trim();
    let mut server = ServerLine {
        backend,
        name,
        addr: "",
        port: 0,
        weight: 1,
        id: None,
        check: false,
        keywords,
        refusal: None,
    };
    let mut refuse = |why| {
        server.refusal.get_or_insert(why);
    };
    // IPv6 is written `[fd00::1]:80` (or `fd00::1:80`: the port follows
    // the last colon).
    let unbracketed = endpoint
        .strip_prefix('[')
        .and_then(|rest| rest.split_once("]:"));
    match unbracketed.or_else(|| endpoint.rsplit_once(':')) {
        Some((addr, port)) if addr.parse::<IpAddr>().is_ok() => match port.parse() {
            Ok(port) => {
                server.addr = addr;
                server.port = port;
            }
            Err(_) => refuse(Refusal::NoPort(endpoint)),
        },
        _ => refuse(Refusal::NotIp(endpoint)),
    }
    let mut words = keywords.split_whitespace();
    while let Some(word) = words.next() {
        if FLAGS.contains(&word) {
            server.check |= word == "check";
            continue;
        }
        if !WITH_ARG.contains(&word) {
            refuse(Refusal::Keyword(word));
            continue;
        }
        let value = words.next().unwrap_or_default();
        match word {
            "weight" => match value.parse() {
                Ok(w) => server.weight = w,
                Err(_) => refuse(Refusal::Value("weight", value)),
            },
            "id" => match value.parse() {
                Ok(id) => server.id = Some(id),
                Err(_) => refuse(Refusal::Value("id", value)),
            },
            _ => {}
        }
    }
    server
}

/// A server as HAProxy runs it (`show servers state`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    pub backend: String,
    pub name: String,
    pub id: u32,
    pub addr: String,
    pub port: u16,
    /// The weight set at runtime (`srv_uweight`).
    pub weight: u16,
    /// `srv_op_state`: 0 down, 1 starting, 2 up, 3 stopping.
    pub op_state: u8,
    /// `srv_admin_state` bits: 0x1 forced maint, 0x8 forced drain, …
    pub admin_state: u8,
}

/// One change made through the runtime API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `add server`, then safely into service (see `runtime`).
    Add(Server),
    /// Drain, wait until idle, then `del server`.
    Delete { backend: String, name: String },
    SetAddr {
        backend: String,
        name: String,
        addr: String,
        port: u16,
    },
    SetWeight {
        backend: String,
        name: String,
        weight: u16,
    },
}

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
pub fn plan(old: Option<&str>, new: &str, live: &[Live]) -> Plan {
    let Some(old) = old else {
        return Plan::Reload("there is no config yet".into());
    };
    if !same_rest(old, new) {
        return Plan::Reload("lines other than `server` lines changed".into());
    }
    // Of the old config, only each server's keywords matter.
    let mut old_keywords: HashMap<(&str, &str), &str> = HashMap::with_capacity(live.len() + 16);
    for (kind, line) in classify(old) {
        if let Kind::Server(backend) = kind {
            let mut words = line.trim().splitn(4, char::is_whitespace).skip(1);
            let name = words.next().unwrap_or_default();
            let keywords = words.nth(1).unwrap_or_default().trim();
            old_keywords.insert((backend, name), keywords);
        }
    }
    let live_by: HashMap<(&str, &str), &Live> = live
        .iter()
        .map(|l| ((l.backend.as_str(), l.name.as_str()), l))
        .collect();
    // The algorithms are the same on both sides: the rest is identical.
    let backends: HashMap<String, Backend> = split_algorithms(new);
    let mut wanted: HashSet<(&str, &str)> = HashSet::with_capacity(live.len() + 16);
    let mut touched: HashSet<&str> = HashSet::new();
    let mut ops = Vec::new();
    for (kind, line) in classify(new) {
        let Kind::Server(backend) = kind else {
            continue;
        };
        let server = read_server(backend, line.trim());
        let name = server.name;
        wanted.insert((backend, name));
        let Some(live) = live_by.get(&(backend, name)) else {
            if let Some(why) = server.refusal {
                return Plan::Reload(format!("server `{backend}/{name}`: {why}"));
            }
            ops.push(Op::Add(server.to_server()));
            touched.insert(backend);
            continue;
        };
        if server.id.is_some_and(|id| id != live.id) {
            return Plan::Reload(format!("server `{backend}/{name}` has another id"));
        }
        let old = old_keywords.get(&(backend, name));
        if old.is_some_and(|o| {
            *o != server.keywords && without_weight(o) != without_weight(server.keywords)
        }) {
            return Plan::Reload(format!(
                "server `{backend}/{name}` changed more than its address and weight"
            ));
        }
        if (server.addr, server.port) != (live.addr.as_str(), live.port) {
            if let Some(why) = server.refusal {
                return Plan::Reload(format!("server `{backend}/{name}`: {why}"));
            }
            ops.push(Op::SetAddr {
                backend: backend.to_string(),
                name: name.to_string(),
                addr: server.addr.to_string(),
                port: server.port,
            });
            touched.insert(backend);
        }
        if server.weight != live.weight {
            ops.push(Op::SetWeight {
                backend: backend.to_string(),
                name: name.to_string(),
                weight: server.weight,
            });
            touched.insert(backend);
        }
    }
    for l in live {
        let gone = !wanted.contains(&(l.backend.as_str(), l.name.as_str()));
        if gone && backends.contains_key(&l.backend) {
            ops.push(Op::Delete {
                backend: l.backend.clone(),
                name: l.name.clone(),
            });
            touched.insert(&l.backend);
        }
    }
    for backend in touched {
        if let Some(why) = backends.get(backend).and_then(|b| b.not_dynamic.as_ref()) {
            return Plan::Reload(format!("backend `{backend}`: {why}"));
        }
    }
    if ops.is_empty() {
        Plan::Nothing
    } else {
        Plan::Runtime(ops)
    }
}

/// The backends of `config` and their algorithms, without their servers.
fn split_algorithms(config: &str) -> HashMap<String, Backend> {
    let headers_and_balance = config
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            !l.starts_with([' ', '\t']) || t.starts_with("balance") || t.starts_with("hash-type")
        })
        .fold(String::new(), |mut acc, l| {
            acc.push_str(l);
            acc.push('\n');
            acc
        });
    split(&headers_and_balance).backends.into_iter().collect()
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

    const BASE: &str = "global\n    maxconn 10\n\ndefaults\n    mode http\n\nbackend nodes\n    balance roundrobin\n    server a 10.0.0.1:80 check weight 1 id 11\n    server b 10.0.0.2:80 check weight 1 id 12\n";

    fn live_of(config: &str) -> Vec<Live> {
        split(config)
            .backends
            .into_values()
            .flat_map(|b| b.servers)
            .map(|s| Live {
                backend: s.backend,
                name: s.name,
                id: s.id.unwrap_or(0),
                addr: s.addr,
                port: s.port,
                weight: s.weight,
                op_state: 2,
                admin_state: 0,
            })
            .collect()
    }

    #[test]
    fn splits_server_lines_from_the_rest() {
        let s = split(BASE);
        assert!(same_rest(BASE, &BASE.replace("10.0.0.1:80", "10.0.0.7:81")));
        assert!(!same_rest(BASE, &BASE.replace("maxconn 10", "maxconn 11")));
        // A peers section's `server` lines are not backend servers.
        let peers = "peers p\n    server a 10.0.0.1:1024\n";
        assert!(!same_rest(peers, &peers.replace("1024", "1025")));
        let b = &s.backends["nodes"];
        assert_eq!(b.not_dynamic, None);
        assert_eq!(b.servers[1].name, "b");
        assert_eq!(
            (b.servers[1].port, b.servers[1].id, b.servers[1].check),
            (80, Some(12), true)
        );
        for line in [
            "server s fd00::1:81 weight 3",
            "server s [fd00::1]:81 weight 3",
        ] {
            let v6 = split(&format!("backend x\n    {line}\n"));
            let s = &v6.backends["x"].servers[0];
            assert_eq!(
                (s.addr.as_str(), s.port, s.weight),
                ("fd00::1", 81, 3),
                "{line}"
            );
            assert_eq!(s.not_dynamic, None);
        }
    }

    #[test]
    fn the_same_config_and_live_state_need_nothing() {
        assert_eq!(plan(Some(BASE), BASE, &live_of(BASE)), Plan::Nothing);
    }

    #[test]
    fn server_changes_are_runtime_operations() {
        let new = BASE
            .replace("    server b 10.0.0.2:80 check weight 1 id 12\n", "")
            .replace("10.0.0.1:80 check weight 1", "10.0.0.9:81 check weight 5")
            + "    server c 10.0.0.3:80 check weight 1 id 13\n";
        let Plan::Runtime(ops) = plan(Some(BASE), &new, &live_of(BASE)) else {
            panic!("{:?}", plan(Some(BASE), &new, &live_of(BASE)));
        };
        assert!(
            matches!(&ops[0], Op::SetAddr { name, addr, port: 81, .. } if name == "a" && addr == "10.0.0.9")
        );
        assert!(matches!(&ops[1], Op::SetWeight { weight: 5, .. }));
        assert!(matches!(&ops[2], Op::Add(s) if s.name == "c" && s.id == Some(13)));
        assert!(matches!(&ops[3], Op::Delete { name, .. } if name == "b"));
    }

    #[test]
    fn drift_is_repaired_against_the_live_state() {
        let mut live = live_of(BASE);
        live.retain(|l| l.name != "a");
        live[0].weight = 9;
        let Plan::Runtime(ops) = plan(Some(BASE), BASE, &live) else {
            panic!()
        };
        assert_eq!(ops.len(), 2, "{ops:?}");
    }

    #[test]
    fn anything_else_reloads() {
        let live = live_of(BASE);
        let reload = |new: &str| matches!(plan(Some(BASE), new, &live), Plan::Reload(_));
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
        assert!(matches!(plan(None, BASE, &live), Plan::Reload(_)));
        let hashed = BASE.replace("roundrobin", "source");
        assert!(matches!(
            plan(
                Some(&hashed),
                &hashed.replace("id 12\n", "id 12 weight 3\n"),
                &live
            ),
            Plan::Reload(_)
        ));
        let consistent =
            hashed.replace("balance source", "balance source\n    hash-type consistent");
        let new = consistent
            .replace("id 12\n", "id 12 weight 3\n")
            .replace("weight 1 id 12", "id 12");
        assert!(matches!(
            plan(Some(&consistent), &new, &live),
            Plan::Runtime(_)
        ));
    }
}
