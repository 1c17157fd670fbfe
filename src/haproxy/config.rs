//! The text of an HAProxy config, as hacfg reads it: one line classifier
//! (section header, `server` line, other directive, blank or comment) that
//! every reader shares, the servers of each backend, the state-file
//! directive and the `[file:line]` references of HAProxy's alerts.

use std::net::IpAddr;
use std::path::PathBuf;
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

/// `add server` takes `cookie VALUE` from HAProxy 3.0 on.
pub const COOKIE_SINCE: (u32, u32) = (3, 0);

/// Whether a server line of `config` has a keyword `add server` takes
/// only from some version on (`cookie`), and which version: only then is
/// the running version worth asking before a plan.
pub fn newest_keyword(config: &str) -> Option<(u32, u32)> {
    if !config.contains("cookie") {
        return None;
    }
    lines(config)
        .filter_map(|(kind, line)| match kind {
            Line::Server { backend } => match read_server(backend, line.trim()).refusal {
                Some(Refusal::Since(_, since)) => Some(since),
                _ => None,
            },
            _ => None,
        })
        .max()
}

/// A config's backends and their server lines.
#[derive(Debug, Default)]
pub struct Split {
    pub backends: std::collections::BTreeMap<String, Backend>,
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

/// One line of a config, classified. HAProxy's rule: a keyword in column 0
/// starts a section; a comment or a blank line, wherever it stands, belongs
/// to no one and ends nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    /// A section header (`global`, `defaults`, `backend NAME`, …).
    Section {
        keyword: &'a str,
        name: Option<&'a str>,
    },
    /// A `server` line of this `backend` or `listen` section.
    Server { backend: &'a str },
    /// Any other keyword line, in the section that `section` opened.
    Directive { section: &'a str, keyword: &'a str },
    /// A blank line or a comment.
    Blank,
}

/// Whether a section of this keyword holds servers that `add server` knows.
pub fn has_servers(keyword: &str) -> bool {
    matches!(keyword, "backend" | "listen")
}

/// The lines of `config` (newlines kept), each with its kind.
pub fn lines(config: &str) -> impl Iterator<Item = (Line<'_>, &str)> {
    let mut section: Option<(&str, Option<&str>)> = None;
    config.split_inclusive('\n').map(move |line| {
        let mut words = line.split_whitespace();
        let Some(first) = words.next().filter(|w| !w.starts_with('#')) else {
            return (Line::Blank, line);
        };
        if !line.starts_with([' ', '\t']) {
            let name = words.next();
            section = Some((first, name));
            return (
                Line::Section {
                    keyword: first,
                    name,
                },
                line,
            );
        }
        match section {
            Some((keyword, Some(backend))) if has_servers(keyword) && first == "server" => {
                (Line::Server { backend }, line)
            }
            Some((keyword, _)) => (
                Line::Directive {
                    section: keyword,
                    keyword: first,
                },
                line,
            ),
            None => (
                Line::Directive {
                    section: "",
                    keyword: first,
                },
                line,
            ),
        }
    })
}

/// Whether two configs differ in `server` lines at most (no allocation).
pub fn same_rest(old: &str, new: &str) -> bool {
    let rest = |c| {
        lines(c)
            .filter(|(k, _)| !matches!(k, Line::Server { .. }))
            .map(|(_, l)| l)
    };
    rest(old).eq(rest(new))
}

/// Splits `config` into its backends, their algorithms and servers.
pub fn split(config: &str) -> Split {
    let mut out = Split::default();
    let mut defaults = Algorithm::default();
    let mut algorithm = Algorithm::default();
    let mut current: Option<(&str, Option<&str>)> = None;
    let finish = |current: Option<(&str, Option<&str>)>, algorithm: &Algorithm, out: &mut Split| {
        if let Some((keyword, Some(name))) = current
            && has_servers(keyword)
        {
            out.backends
                .entry(name.to_string())
                .or_default()
                .not_dynamic = algorithm.refusal();
        }
    };
    for (kind, line) in lines(config) {
        match kind {
            Line::Section { keyword, name } => {
                finish(current, &algorithm, &mut out);
                algorithm = if keyword == "defaults" {
                    Algorithm::default()
                } else {
                    defaults.clone()
                };
                current = Some((keyword, name));
            }
            Line::Server { backend } => {
                let server = read_server(backend, line.trim()).to_server();
                let entry = out.backends.entry(backend.to_string()).or_default();
                entry.servers.push(server);
            }
            Line::Directive { section, keyword } => {
                let mut words = line.split_whitespace().skip(1);
                match keyword {
                    "balance" => algorithm.balance = words.next().map(str::to_string),
                    "hash-type" => algorithm.consistent = words.next() == Some("consistent"),
                    _ => {}
                }
                if section == "defaults" {
                    defaults = algorithm.clone();
                }
            }
            Line::Blank => {}
        }
    }
    finish(current, &algorithm, &mut out);
    out
}

/// Every server line of `config`, in order.
pub fn servers(config: &str) -> Vec<Server> {
    lines(config)
        .filter_map(|(kind, line)| match kind {
            Line::Server { backend } => Some(read_server(backend, line.trim()).to_server()),
            _ => None,
        })
        .collect()
}

/// The `server-state-file` a config names in its `global` section
/// (relative to `server-state-base`, if set).
pub fn state_file(config: &str) -> Option<PathBuf> {
    let (mut file, mut base) = (None, None);
    for (kind, line) in lines(config) {
        let Line::Directive {
            section: "global",
            keyword,
        } = kind
        else {
            continue;
        };
        let value = line.split_whitespace().nth(1).map(PathBuf::from);
        match keyword {
            "server-state-file" => file = value,
            "server-state-base" => base = value,
            _ => {}
        }
    }
    let file = file?;
    Some(match base {
        Some(base) if file.is_relative() => base.join(file),
        _ => file,
    })
}

/// The line number in an alert's `[<file>:N]` reference.
pub fn alert_line(alert: &str, file: &str) -> Option<usize> {
    let start = alert.find(&format!("[{file}:"))? + file.len() + 2;
    let rest = &alert[start..];
    rest[..rest.find(']')?].parse().ok()
}

/// The name a `server NAME …` line gives.
pub fn server_name(line: &str) -> &str {
    line.split_whitespace().nth(1).unwrap_or_default()
}

/// A server line as read, borrowing from the config: a plan reads every
/// line of a 10,000-server config and keeps owned copies only of changes.
#[derive(Debug, Clone, Copy)]
pub struct ServerLine<'a> {
    pub backend: &'a str,
    pub name: &'a str,
    pub addr: &'a str,
    pub port: u16,
    pub weight: u16,
    pub id: Option<u32>,
    pub check: bool,
    pub keywords: &'a str,
    pub refusal: Option<Refusal<'a>>,
}

/// Why `add server` cannot take a line.
#[derive(Debug, Clone, Copy)]
pub enum Refusal<'a> {
    NoPort(&'a str),
    NotIp(&'a str),
    Keyword(&'a str),
    Value(&'a str, &'a str),
    /// A keyword `add server` takes only from this version on.
    Since(&'a str, (u32, u32)),
}

impl Refusal<'_> {
    /// Whether the running version takes the line all the same.
    pub fn lifted_by(self, dialect: super::Dialect) -> bool {
        matches!(self, Refusal::Since(_, since) if dialect.takes(since))
    }
}

impl std::fmt::Display for Refusal<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NoPort(e) => write!(f, "no port in `{e}`"),
            Refusal::NotIp(e) => write!(f, "`{e}` is not IP:PORT (the runtime resolves no names)"),
            Refusal::Keyword(k) => write!(f, "keyword `{k}` is not taken by `add server`"),
            Refusal::Value(k, v) => write!(f, "{k} `{v}`"),
            Refusal::Since(k, (major, minor)) => write!(
                f,
                "keyword `{k}` is taken by `add server` only from HAProxy {major}.{minor}"
            ),
        }
    }
}

impl ServerLine<'_> {
    pub fn to_server(self) -> Server {
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

/// Reads `server NAME ADDR:PORT [keywords]` (trimmed).
pub fn read_server<'a>(backend: &'a str, line: &'a str) -> ServerLine<'a> {
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
    server.read_endpoint(endpoint);
    server.read_keywords();
    server
}

impl<'a> ServerLine<'a> {
    /// Keeps the reason to refuse the line at runtime: a keyword of a newer
    /// version never hides one no version takes.
    fn refuse(&mut self, why: Refusal<'a>) {
        match self.refusal {
            None | Some(Refusal::Since(..)) if !matches!(why, Refusal::Since(..)) => {
                self.refusal = Some(why);
            }
            None => self.refusal = Some(why),
            _ => {}
        }
    }

    /// IPv6 is written `[fd00::1]:80` (or `fd00::1:80`: the port follows
    /// the last colon).
    fn read_endpoint(&mut self, endpoint: &'a str) {
        let unbracketed = endpoint
            .strip_prefix('[')
            .and_then(|rest| rest.split_once("]:"));
        match unbracketed.or_else(|| endpoint.rsplit_once(':')) {
            Some((addr, port)) if addr.parse::<IpAddr>().is_ok() => match port.parse() {
                Ok(port) => {
                    self.addr = addr;
                    self.port = port;
                }
                Err(_) => self.refuse(Refusal::NoPort(endpoint)),
            },
            _ => self.refuse(Refusal::NotIp(endpoint)),
        }
    }

    fn read_keywords(&mut self) {
        let mut words = self.keywords.split_whitespace();
        while let Some(word) = words.next() {
            if FLAGS.contains(&word) {
                self.check |= word == "check";
                continue;
            }
            if word == "cookie" {
                words.next();
                self.refuse(Refusal::Since(word, COOKIE_SINCE));
                continue;
            }
            if !WITH_ARG.contains(&word) {
                self.refuse(Refusal::Keyword(word));
                continue;
            }
            let value = words.next().unwrap_or_default();
            match word {
                "weight" => match value.parse() {
                    Ok(w) => self.weight = w,
                    Err(_) => self.refuse(Refusal::Value("weight", value)),
                },
                "id" => match value.parse() {
                    Ok(id) => self.id = Some(id),
                    Err(_) => self.refuse(Refusal::Value("id", value)),
                },
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "global\n    maxconn 10\n\ndefaults\n    mode http\n\nbackend nodes\n    balance roundrobin\n    server a 10.0.0.1:80 check weight 1 id 11\n    server b 10.0.0.2:80 check weight 1 id 12\n";

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
        assert_eq!(servers(BASE), [b.servers[0].clone(), b.servers[1].clone()]);
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

    /// A comment in column 0 ends no section: every reader agrees (the
    /// state-file directive after it is still in `global`).
    #[test]
    fn a_column_0_comment_ends_no_section() {
        let cfg = "global\n# state kept across reloads\n    server-state-base /var/lib\n\n    \
                   server-state-file st\ndefaults\n    balance static-rr\nbackend nodes\n# the pool\n    \
                   server a 10.0.0.1:80\n";
        assert_eq!(state_file(cfg), Some(PathBuf::from("/var/lib/st")));
        assert_eq!(servers(cfg).len(), 1);
        assert!(split(cfg).backends["nodes"].not_dynamic.is_some());
        let kinds: Vec<Line> = lines(cfg).map(|(k, _)| k).collect();
        assert_eq!(kinds[1], Line::Blank);
        assert_eq!(
            kinds[2],
            Line::Directive {
                section: "global",
                keyword: "server-state-base"
            }
        );
    }

    #[test]
    fn state_files_and_alerts() {
        assert_eq!(state_file("global\n    maxconn 1\n"), None);
        assert_eq!(
            state_file("global\n    server-state-file /a/b\n"),
            Some(PathBuf::from("/a/b"))
        );
        let alert = "[ALERT] (1) : config : [/x/c.tmp:4] : 'server nodes/bad' : no.";
        assert_eq!(alert_line(alert, "/x/c.tmp"), Some(4));
        assert_eq!(alert_line(alert, "/y"), None);
        assert_eq!(server_name("server bad 1.2.3.4:80"), "bad");
    }
}
