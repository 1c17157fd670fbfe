//! A fake HAProxy for unit tests: the runtime commands hacfg sends,
//! answered as HAProxy 2.6 answers them, against a table of servers.
//! Tests set what HAProxy would refuse, which checks have run and which
//! servers still have sessions, then read the table and the commands back.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::Path;

use super::Address;

use anyhow::{Result, bail};

use super::Named;
use super::Runtime;
use super::stat::Stat;
use super::state::{self, FORCED_DRAIN, Live};
use super::target::Target;

/// `srv_admin_state`'s forced maintenance bit.
const FORCED_MAINT: u8 = 0x01;

/// One server as the fake runs it.
#[derive(Debug, Clone)]
pub struct Server {
    pub live: Live,
    /// Current sessions.
    pub sessions: u64,
    /// The last check's result: `INI` until one ran, `L7OK`, `L4CON`, …
    pub check: String,
    /// Health checks were enabled.
    pub checks: bool,
}

impl Server {
    fn status(&self) -> String {
        let failed = self.check.starts_with("L4") || self.check.contains("STS");
        match self.live.admin_state {
            a if a & FORCED_MAINT != 0 => "MAINT".into(),
            a if a & FORCED_DRAIN != 0 => "DRAIN".into(),
            _ if failed || self.live.op_state == 0 => "DOWN".into(),
            _ => "UP".into(),
        }
    }
}

/// The fake.
pub struct Fake {
    pub servers: RefCell<Vec<Server>>,
    pub version: (u32, u32),
    /// Every command received, in order.
    pub sent: RefCell<Vec<String>>,
    /// Commands starting with the first text are answered with the second,
    /// and change nothing.
    pub refuse: RefCell<Vec<(String, String)>>,
    /// Batches answered before the socket fails (`usize::MAX`: never).
    pub answers: Cell<usize>,
    /// Where it "listens", for messages.
    pub path: Address,
}

impl Fake {
    /// HAProxy 2.6 running `config`'s servers, all up, ready and checked.
    pub fn of(config: &str) -> Fake {
        let servers = state::all_up(config)
            .into_iter()
            .map(|live| Server {
                live,
                sessions: 0,
                check: "L7OK".into(),
                checks: true,
            })
            .collect();
        Fake {
            servers: RefCell::new(servers),
            version: (2, 6),
            sent: RefCell::default(),
            refuse: RefCell::default(),
            answers: Cell::new(usize::MAX),
            path: Address::from(Path::new("fake.sock")),
        }
    }

    /// Refuses commands that start with `prefix`, answering `answer`.
    pub fn refusing(self, prefix: &str, answer: &str) -> Fake {
        self.refuse
            .borrow_mut()
            .push((prefix.to_string(), answer.to_string()));
        self
    }

    /// The server `backend/name`, if it runs.
    pub fn get(&self, target: &str) -> Option<Server> {
        let (backend, name) = target.split_once('/')?;
        let t = Target::new(backend, name);
        self.servers
            .borrow()
            .iter()
            .find(|s| s.live.is(&t))
            .cloned()
    }

    /// Changes the server `backend/name`.
    pub fn set(&self, target: &str, change: impl FnOnce(&mut Server)) {
        let (backend, name) = target.split_once('/').unwrap();
        let t = Target::new(backend, name);
        let mut servers = self.servers.borrow_mut();
        change(servers.iter_mut().find(|s| s.live.is(&t)).unwrap());
    }

    /// The commands received, each as one string.
    pub fn sent(&self) -> Vec<String> {
        self.sent.borrow().clone()
    }

    fn answer(&self, command: &str) -> String {
        self.sent.borrow_mut().push(command.to_string());
        if let Some((_, answer)) = self
            .refuse
            .borrow()
            .iter()
            .find(|(p, _)| command.starts_with(p.as_str()))
        {
            return answer.clone();
        }
        let words: Vec<&str> = command.split_whitespace().collect();
        match words.as_slice() {
            ["add", "server", target, at, rest @ ..] => self.add(target, at, rest),
            ["del", "server", target] => self.delete(target),
            ["enable", "health", target] => self.change(target, |s| s.checks = true),
            ["set", "server", target, "state", state] => self.change(target, |s| {
                let bits = match *state {
                    "maint" => FORCED_MAINT,
                    "drain" => FORCED_DRAIN,
                    _ => 0,
                };
                s.live.admin_state = bits;
            }),
            ["set", "server", target, "weight", w] => {
                let w = w.parse().unwrap_or(0);
                self.change(target, |s| s.live.weight = w)
            }
            ["set", "server", target, "health", "down"] => {
                self.change(target, |s| s.live.op_state = 0)
            }
            ["set", "server", target, "addr", addr, "port", port] => {
                let port = port.parse().unwrap_or(0);
                match self.change(target, |s| {
                    s.live.addr = addr.to_string();
                    s.live.port = port;
                }) {
                    a if a.is_empty() => "IP changed".into(),
                    a => a,
                }
            }
            _ => format!("Unknown command: {command}"),
        }
    }

    fn change(&self, target: &str, change: impl FnOnce(&mut Server)) -> String {
        if self.get(target).is_none() {
            return "No such server.".into();
        }
        self.set(target, change);
        String::new()
    }

    fn add(&self, target: &str, at: &str, rest: &[&str]) -> String {
        if self.get(target).is_some() {
            return "Already exists a server with the same name in backend.".into();
        }
        let (backend, name) = target.split_once('/').unwrap_or_default();
        let (addr, port) = at.rsplit_once(':').unwrap_or_default();
        let word = |k: &str| {
            rest.iter()
                .position(|w| *w == k)
                .and_then(|i| rest.get(i + 1))
                .copied()
        };
        let live = Live {
            backend: backend.into(),
            name: name.into(),
            id: word("id").and_then(|v| v.parse().ok()).unwrap_or(100),
            addr: addr.trim_matches(['[', ']']).into(),
            port: port.parse().unwrap_or(0),
            weight: word("weight").and_then(|v| v.parse().ok()).unwrap_or(1),
            // `init-state down` (3.1 and later): DOWN until a check passes.
            op_state: if word("init-state") == Some("down") {
                0
            } else {
                2
            },
            admin_state: FORCED_MAINT,
            unchecked: false,
        };
        self.servers.borrow_mut().push(Server {
            live,
            sessions: 0,
            check: "INI".into(),
            checks: false,
        });
        "New server registered.".into()
    }

    fn delete(&self, target: &str) -> String {
        let Some(s) = self.get(target) else {
            return "No such server.".into();
        };
        if s.sessions > 0 {
            return "Server still has connections attached to it, cannot remove it.".into();
        }
        if s.live.admin_state & FORCED_MAINT == 0 {
            return "Only servers in maintenance mode can be deleted.".into();
        }
        let gone = s.live.target();
        self.servers.borrow_mut().retain(|x| !x.live.is(&gone));
        "Server deleted.".into()
    }

    fn reachable(&self) -> Result<()> {
        let left = self.answers.get();
        if left == 0 {
            bail!("`fake.sock` did not answer");
        }
        self.answers.set(left.saturating_sub(1));
        Ok(())
    }
}

impl Runtime for Fake {
    fn path(&self) -> &Address {
        &self.path
    }
    fn live(&self) -> Result<Vec<Live>> {
        self.reachable()?;
        Ok(self
            .servers
            .borrow()
            .iter()
            .map(|s| Live {
                unchecked: s.checks && s.check == "INI",
                ..s.live.clone()
            })
            .collect())
    }
    fn version(&self) -> Result<(u32, u32)> {
        Ok(self.version)
    }
    fn stats_of(&self, servers: &[(Target, Option<u32>)]) -> Result<BTreeMap<Target, Stat>> {
        self.reachable()?;
        let all = self.servers.borrow();
        let stats = servers.iter().filter_map(|(t, _)| {
            let s = all.iter().find(|s| s.live.is(t))?;
            let stat = Stat {
                sessions: s.sessions,
                status: s.status(),
                check: if s.checks {
                    s.check.clone()
                } else {
                    String::new()
                },
                running: false,
            };
            Some((t.clone(), stat))
        });
        Ok(stats.collect())
    }
    fn batch(&self, commands: &[String]) -> Result<Vec<String>> {
        self.reachable()?;
        Ok(commands.iter().map(|c| self.answer(c)).collect())
    }
}
