//! HAProxy's runtime API: one client for the master CLI (`@1`) and for a
//! worker's stats socket, commands joined by `;` in few exchanges, and the
//! reads the rest of hacfg needs (`show servers state`, `show stat`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::Error;
use super::address::Address;
use super::socket::{self, Unusable};
use super::stat::{self, Stat};
use super::state::{self, Live};
use super::target::Target;
use crate::quote::{SHOWN, cut, quote};

/// The sockets that let a runtime exchange of this process run into its
/// deadline.
static UNANSWERED: Mutex<BTreeSet<Address>> = Mutex::new(BTreeSet::new());

fn unanswered() -> MutexGuard<'static, BTreeSet<Address>> {
    // A set of addresses stays whole whatever panicked while it was held.
    UNANSWERED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Lets a long-lived process (the settle worker) ask `path` again after one
/// of its exchanges ran into its deadline: each poll is a run of its own.
pub fn forget_late(path: &Address) {
    unanswered().remove(path);
}

/// Whether an exchange on `path` already ran into its deadline in this run:
/// then the socket is not asked again (one deadline per socket and run).
pub fn answered_late(path: &Address) -> bool {
    unanswered().contains(path)
}

/// Which socket speaks for HAProxy.
#[derive(Debug, Clone)]
pub enum Socket {
    /// The master CLI: commands go to the current worker with `@1`.
    Master(Address),
    /// An admin-level stats socket of the worker.
    Stats(Address),
}

/// A connection setting for runtime commands. Each exchange has its own
/// deadline (`--socket-timeout`), and a socket that let one pass is not
/// asked again in this run: its later commands fail at once, naming it,
/// instead of waiting out a deadline each. Clones, such as the thread that
/// reads the live servers ahead, share that memory: it is kept per socket
/// path for the process (one hacfg run, or one settle worker).
///
/// All the exchanges of a run draw on one [`Budget`], which clones share
/// too: a socket that answers each command just within its deadline
/// cannot make a run take a deadline per command.
#[derive(Debug, Clone)]
pub struct RuntimeApi {
    pub socket: Socket,
    /// One exchange's deadline (`--socket-timeout`).
    pub timeout: Duration,
    /// What is left of the run's time for its exchanges.
    pub budget: Budget,
}

/// How many exchanges' deadlines a run's budget holds. An exchange starts
/// only while some of it is left, and then gets its whole deadline, so a
/// run spends at most one more deadline than this on its socket. The
/// first exchanges of a change (the live servers, the version, the
/// change itself) always start: two that answered in time took less than
/// two deadlines. What a run only might do (a settle pass) is left to the
/// worker once the budget is spent; HAProxy answers each in milliseconds.
pub const BUDGET_EXCHANGES: u32 = 2;

/// The total time a run's socket exchanges may take together, shared by
/// the clones of one [`RuntimeApi`]. What is spent is the time spent in
/// exchanges, not the time since the run started: waiting for the folder
/// lock has its own deadline (`--lock-timeout`).
#[derive(Debug, Clone)]
pub struct Budget {
    limit: Duration,
    spent: Arc<Mutex<Duration>>,
}

impl Budget {
    pub fn new(limit: Duration) -> Budget {
        Budget {
            limit,
            spent: Arc::new(Mutex::new(Duration::ZERO)),
        }
    }

    /// The budget's size.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    fn spent(&self) -> MutexGuard<'_, Duration> {
        // A duration stays whole whatever panicked while it was held.
        self.spent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What is left of it.
    pub fn left(&self) -> Duration {
        self.limit.saturating_sub(*self.spent())
    }

    fn spend(&self, took: Duration) {
        let mut spent = self.spent();
        *spent = spent.saturating_add(took);
    }

    /// Whole again: a long-lived process (the settle worker) starts each
    /// of its polls as a run of its own.
    pub fn renew(&self) {
        *self.spent() = Duration::ZERO;
    }
}

/// A run's budget was spent before an exchange: it was not sent. What it
/// was for is left to the worker (or the next run).
#[derive(Debug)]
pub struct Spent {
    pub path: Address,
    pub limit: Duration,
    pub line: String,
}

impl std::fmt::Display for Spent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "this run's time for `{}` ({:.1}s, {BUDGET_EXCHANGES} times --socket-timeout) is \
             spent; `{}` was not sent",
            self.path.display(),
            self.limit.as_secs_f64(),
            self.line
        )
    }
}

impl std::error::Error for Spent {}

impl RuntimeApi {
    /// The API on `socket`, each exchange within `timeout`, all of a run's
    /// within [`BUDGET_EXCHANGES`] times that.
    pub fn new(socket: Socket, timeout: Duration) -> RuntimeApi {
        RuntimeApi {
            socket,
            timeout,
            budget: Budget::new(timeout.saturating_mul(BUDGET_EXCHANGES)),
        }
    }

    /// Sends one command; returns HAProxy's answer, trimmed. The answer must
    /// be whole: HAProxy ends every answer with an empty line, so one that
    /// stops before it (a connection cut half-way) is an [`Error::Answer`],
    /// never taken for all there is.
    pub fn command(&self, command: &str) -> Result<String> {
        let line = format!("{}{command}", self.prefix());
        let answer = self.exchange(&line)?;
        match whole(&answer) {
            Some(answer) => Ok(answer.trim().to_string()),
            None => Err(self.cut_short(&line, &answer).into()),
        }
    }

    /// Sends `commands` joined by `;`, a few KiB per exchange (HAProxy reads
    /// one line of at most its buffer size, 16 KiB by default), and returns
    /// one answer per command. HAProxy 2.6 ends each answer with an empty
    /// line, except that of `del server` (see [`split_answers`]): a `del
    /// server` therefore ends its exchange, and its answer runs to the end
    /// of the stream.
    pub fn batch(&self, commands: &[String]) -> Result<Vec<String>> {
        const LINE: usize = 8 * 1024;
        let prefix = self.prefix();
        let mut answers = Vec::with_capacity(commands.len());
        let mut start = 0;
        while start < commands.len() {
            let mut line = String::new();
            let mut end = start;
            while end < commands.len() && (end == start || line.len() + commands[end].len() < LINE)
            {
                if end > start {
                    line.push_str("; ");
                }
                line.push_str(prefix);
                line.push_str(&commands[end]);
                end += 1;
                if ends_unterminated(&commands[end - 1]) {
                    break;
                }
            }
            let text = self.exchange(&line)?;
            let (got, ended) = split_answers(&text);
            if got.len() != end - start {
                return Err(Error::Answer(format!(
                    "`{}` gave {} answers to {} commands: {}",
                    self.path().display(),
                    got.len(),
                    end - start,
                    quote(&text)
                ))
                .into());
            }
            if !ended && !ends_unterminated(&commands[end - 1]) {
                return Err(self.cut_short(&line, &text).into());
            }
            answers.extend(got);
            start = end;
        }
        Ok(answers)
    }

    /// One exchange within `--socket-timeout`, unless this socket already
    /// let one run into its deadline in this run, or the run's budget is
    /// spent. An exchange that starts gets its whole deadline: the budget
    /// only keeps later exchanges from starting. A batch longer than one
    /// line may therefore stop between its lines; what it recorded before
    /// (drains are recorded before they run) the worker finishes.
    fn exchange(&self, line: &str) -> Result<String> {
        let path = self.path();
        if unanswered().contains(path) {
            bail!(
                "`{}` did not answer in time earlier in this run; `{}` was not sent",
                path.display(),
                shown(line)
            );
        }
        if self.budget.left().is_zero() {
            return Err(Spent {
                path: path.clone(),
                limit: self.budget.limit(),
                line: shown(line),
            }
            .into());
        }
        let start = Instant::now();
        let answer = socket::exchange_with(path, line, start + self.timeout);
        self.budget.spend(start.elapsed());
        if let Err(e) = &answer
            && e.is::<socket::Late>()
        {
            unanswered().insert(path.clone());
        }
        answer
    }

    /// An answer that stopped before its closing empty line: its end is
    /// what shows where it was cut.
    fn cut_short(&self, line: &str, answer: &str) -> Error {
        let mut start = answer.len().saturating_sub(SHOWN);
        while !answer.is_char_boundary(start) {
            start += 1;
        }
        let got = match &answer[start..] {
            "" => "nothing".to_string(),
            end if start == 0 => quote(end).to_string(),
            end => format!("{} bytes, ending …{}", answer.len(), quote(end)),
        };
        Error::Answer(format!(
            "`{}` cut its answer to `{}` short (it did not end with an empty line): {got}",
            self.path().display(),
            shown(line),
        ))
    }

    /// What goes before each command: the master CLI forwards `@1` ones
    /// to the current worker.
    fn prefix(&self) -> &'static str {
        match self.socket {
            Socket::Master(_) => "@1 ",
            Socket::Stats(_) => "",
        }
    }

    /// The same API, each exchange's deadline at most `max`: a Serf
    /// query's answer is due within its own timeout, and the state saved
    /// before a reload belongs to the reload's deadline.
    pub fn within(&self, max: Duration) -> RuntimeApi {
        RuntimeApi {
            socket: self.socket.clone(),
            timeout: self.timeout.min(max),
            budget: self.budget.clone(),
        }
    }

    /// The same socket with a budget of its own, `limit`: for an exchange
    /// that another deadline bounds (the state saved before a reload is
    /// part of the reload), so a run that spent its budget still saves it.
    pub fn budgeted(&self, limit: Duration) -> RuntimeApi {
        RuntimeApi {
            socket: self.socket.clone(),
            timeout: self.timeout.min(limit),
            budget: Budget::new(limit),
        }
    }

    /// Starts a run of its own on this API: the run's budget whole again,
    /// and the socket asked again even if it ran late before.
    pub fn begin_run(&self) {
        forget_late(self.path());
        self.budget.renew();
    }

    /// Where the socket listens.
    pub fn path(&self) -> &Address {
        match &self.socket {
            Socket::Master(p) | Socket::Stats(p) => p,
        }
    }

    /// Checks that the socket takes connections, before a run changes
    /// anything; the error names the option and the address.
    pub fn probe(&self) -> Result<(), Probed> {
        let option = match self.socket {
            Socket::Master(_) => "--master-socket",
            Socket::Stats(_) => "--stats-socket",
        };
        probe(option, self.path(), self.timeout)
    }

    /// `show servers state`: every server of every backend.
    pub fn servers_state(&self) -> Result<String> {
        self.command("show servers state").with_context(|| {
            format!(
                "unable to read the live servers from `{}`",
                self.path().display()
            )
        })
    }

    /// The live servers.
    pub fn live(&self) -> Result<Vec<Live>> {
        let text = self.servers_state()?;
        state::parse(&text).with_context(|| {
            format!(
                "unexpected `show servers state` answer from `{}`",
                self.path().display()
            )
        })
    }

    /// The running HAProxy's version, `(major, minor)`, from `show info`.
    pub fn version(&self) -> Result<(u32, u32)> {
        let text = self.command("show info")?;
        let version = info_version(&text).unwrap_or_default();
        let mut parts = version.split(['.', '-']).map(str::parse::<u32>);
        match (parts.next(), parts.next()) {
            (Some(Ok(major)), Some(Ok(minor))) => Ok((major, minor)),
            _ => Err(Error::Answer(format!(
                "`{}` gave no version in `show info`: {}",
                self.path().display(),
                quote(version)
            ))
            .into()),
        }
    }

    /// `show stat`, per `backend/server`: current sessions and check status.
    pub fn stats(&self) -> Result<BTreeMap<Target, Stat>> {
        let text = self.command("show stat -1 4 -1")?;
        self.parse_stat(&text)
    }

    /// `show stat` of these servers only: by id where it is known (one
    /// short answer each, in one exchange), else their whole backend. At
    /// 10,000 servers a whole backend's answer is 3 MB and takes 60-90 ms,
    /// one server's well under a millisecond.
    pub fn stats_of(&self, servers: &[(Target, Option<u32>)]) -> Result<BTreeMap<Target, Stat>> {
        let mut commands: Vec<String> = servers
            .iter()
            .filter_map(|(t, id)| Some(format!("show stat {} 4 {}", t.backend, (*id)?)))
            .collect();
        let whole: BTreeSet<&str> = servers
            .iter()
            .filter(|(_, id)| id.is_none())
            .map(|(t, _)| t.backend.as_str())
            .collect();
        commands.extend(whole.iter().map(|b| format!("show stat {b} 4 -1")));
        let mut stats = BTreeMap::new();
        for answer in self.batch(&commands)? {
            stats.extend(self.parse_stat(&answer)?);
        }
        Ok(stats)
    }

    fn parse_stat(&self, text: &str) -> Result<BTreeMap<Target, Stat>> {
        stat::parse(text).with_context(|| {
            format!(
                "unexpected `show stat` answer from `{}`",
                self.path().display()
            )
        })
    }
}

/// The version in a `show info` answer (its `Version: ` line).
pub fn info_version(info: &str) -> Option<&str> {
    info.lines().find_map(|l| l.strip_prefix("Version: "))
}

/// How long a socket that is missing or refuses is tried again before a
/// run gives up on it (HAProxy's master refuses for a moment as it
/// re-executes itself).
const PROBE_GRACE: Duration = Duration::from_secs(1);

/// A socket that a run checked before changing anything, and found
/// unusable: the option that named it and why.
#[derive(Debug)]
pub struct Probed {
    pub option: &'static str,
    pub why: Unusable,
}

impl std::fmt::Display for Probed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hint = if self.why.absent() {
            " (check the address, and that HAProxy runs)"
        } else {
            ""
        };
        write!(
            f,
            "{} {}{hint}; the config, its server state and HAProxy were left as they are",
            self.option, self.why
        )
    }
}

impl std::error::Error for Probed {}

/// Checks the socket `option` names, retrying within `timeout` (at most
/// [`PROBE_GRACE`]).
pub fn probe(option: &'static str, to: &Address, timeout: Duration) -> Result<(), Probed> {
    let deadline = Instant::now() + timeout.min(PROBE_GRACE);
    socket::probe(to, deadline).map_err(|why| Probed { option, why })
}

/// The real HAProxy, through its socket.
impl super::Runtime for RuntimeApi {
    fn path(&self) -> &Address {
        RuntimeApi::path(self)
    }
    fn live(&self) -> Result<Vec<Live>> {
        RuntimeApi::live(self)
    }
    fn version(&self) -> Result<(u32, u32)> {
        RuntimeApi::version(self)
    }
    fn stats_of(&self, servers: &[(Target, Option<u32>)]) -> Result<BTreeMap<Target, Stat>> {
        RuntimeApi::stats_of(self, servers)
    }
    fn batch(&self, commands: &[String]) -> Result<Vec<String>> {
        RuntimeApi::batch(self, commands)
    }
    fn begin_run(&self) {
        RuntimeApi::begin_run(self);
    }
}

/// A command line in a message: hacfg's own, but a batch may be KiBs long.
fn shown(line: &str) -> String {
    cut(line, SHOWN).map_or_else(|| line.to_string(), |head| format!("{head}…"))
}

/// The answer without its closing empty line (an empty answer is that
/// empty line alone); `None` when it stops before it.
fn whole(answer: &str) -> Option<&str> {
    if answer == "\n" {
        Some("")
    } else {
        answer.strip_suffix("\n\n")
    }
}

/// Whether HAProxy 2.6 ends the answer to `command` without the empty line
/// that ends every other answer: `del server` does, whatever it answers
/// (`Server deleted.`, `No such server.`, …). In a joined line its answer
/// would run into the next one, so it must come last.
fn ends_unterminated(command: &str) -> bool {
    command.starts_with("del server ")
}

/// The answers to `;`-joined commands, and whether the last one ended with
/// its empty line. Each answer is its lines up to an empty line, so that
/// `set server … weight 2; add server …; set server … state maint; del
/// server …` gets `\nNew server registered.\n\n\nServer deleted.\n`: an
/// empty answer, `New server registered.`, an empty answer and, up to the
/// end of the stream, `Server deleted.`.
fn split_answers(text: &str) -> (Vec<String>, bool) {
    let mut answers = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            answers.push(current.join("\n"));
            current.clear();
        } else {
            current.push(line);
        }
    }
    let ended = current.is_empty();
    if !ended {
        answers.push(current.join("\n"));
    }
    (answers, ended)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    #[test]
    fn splits_answers_as_haproxy_2_6_ends_them() {
        // `set server … weight 2; add server …; set server … state maint;
        // del server …`, on a stats socket or through `@1`.
        let (answers, ended) = split_answers("\nNew server registered.\n\n\nServer deleted.\n");
        assert_eq!(
            answers,
            ["", "New server registered.", "", "Server deleted."]
        );
        assert!(!ended);
        assert_eq!(
            split_answers("\n\n"),
            (vec![String::new(), String::new()], true)
        );
        // `maint a; del a; maint b; del b` in one line: `del server` ends
        // its answer with no empty line, so two answers run together.
        let (answers, _) = split_answers("\nServer deleted.\n\nServer deleted.\n");
        assert_eq!(answers.len(), 3);
        // Every other answer ends with an empty line: errors too.
        let (answers, ended) = split_answers("No such server.\n\n\n");
        assert_eq!((answers.len(), ended), (2, true));
    }

    #[test]
    fn a_whole_answer_ends_with_an_empty_line() {
        assert_eq!(whole("\n"), Some(""));
        assert_eq!(whole("1\n# be_id\n\n"), Some("1\n# be_id"));
        assert_eq!(whole("1\n# be_id\n3 nodes 11 a\n"), None);
        assert_eq!(whole("1\n# be_id\n3 nodes 11 a"), None);
        assert_eq!(whole(""), None);
    }

    /// A stats socket that answers each `;`-joined command as HAProxy 2.6
    /// does; records each exchange's line.
    fn haproxy_like(path: &Path) -> Arc<Mutex<Vec<String>>> {
        let listener = UnixListener::bind(path).unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = lines.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let mut conn = conn.unwrap();
                let mut line = String::new();
                conn.read_to_string(&mut line).unwrap();
                let mut answer = String::new();
                for command in line.trim_end().split("; ") {
                    answer.push_str(match command.split_whitespace().next() {
                        Some("del") => "Server deleted.\n",
                        _ => "\n",
                    });
                }
                seen.lock().unwrap().push(line.trim_end().to_string());
                conn.write_all(answer.as_bytes()).unwrap();
            }
        });
        lines
    }

    fn api(path: &Path) -> RuntimeApi {
        RuntimeApi::new(Socket::Stats(path.into()), Duration::from_secs(5))
    }

    #[test]
    fn each_del_server_ends_its_exchange() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let lines = haproxy_like(&path);
        let commands: Vec<String> = ["a", "b", "c"]
            .iter()
            .flat_map(|s| {
                [
                    format!("set server nodes/{s} state maint"),
                    format!("del server nodes/{s}"),
                ]
            })
            .chain(["set server nodes/d weight 2".to_string()])
            .collect();
        let answers = api(&path).batch(&commands).unwrap();
        assert_eq!(
            answers,
            [
                "",
                "Server deleted.",
                "",
                "Server deleted.",
                "",
                "Server deleted.",
                ""
            ]
        );
        assert_eq!(
            *lines.lock().unwrap(),
            [
                "set server nodes/a state maint; del server nodes/a",
                "set server nodes/b state maint; del server nodes/b",
                "set server nodes/c state maint; del server nodes/c",
                "set server nodes/d weight 2",
            ]
        );
    }

    #[test]
    fn a_socket_that_did_not_answer_in_time_is_not_asked_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = UnixListener::bind(&path).unwrap();
        let accepted = Arc::new(Mutex::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            // Holds every connection open, answering nothing.
            let mut held = Vec::new();
            for conn in listener.incoming() {
                *count.lock().unwrap() += 1;
                held.push(conn);
            }
        });
        let silent = RuntimeApi {
            timeout: Duration::from_millis(200),
            ..api(&path)
        };
        let err = format!("{:#}", silent.live().unwrap_err());
        assert!(
            err.contains("did not answer `show servers state` in time"),
            "{err}"
        );
        // Later exchanges of the run, and of its clones, fail at once.
        let started = Instant::now();
        let err = format!("{:#}", silent.clone().stats().unwrap_err());
        assert_eq!(
            err,
            format!(
                "`{}` did not answer in time earlier in this run; `show stat -1 4 -1` was not \
                 sent",
                path.display()
            )
        );
        let commands = ["set server nodes/a state drain".to_string()];
        assert!(silent.batch(&commands).is_err());
        assert!(started.elapsed() < Duration::from_millis(150));
        assert_eq!(*accepted.lock().unwrap(), 1);
        // A socket that only refuses is asked again: it may be back.
        let missing = api(&dir.path().join("missing"));
        for _ in 0..2 {
            let err = format!("{:#}", missing.stats().unwrap_err());
            assert!(err.contains("unable to connect"), "{err}");
        }
    }

    #[test]
    fn a_run_s_exchanges_share_one_budget() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = UnixListener::bind(&path).unwrap();
        let accepted = Arc::new(Mutex::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            // Answers each command just within its deadline.
            for conn in listener.incoming() {
                let mut conn = conn.unwrap();
                *count.lock().unwrap() += 1;
                std::thread::spawn(move || {
                    let mut line = String::new();
                    conn.read_to_string(&mut line).unwrap();
                    std::thread::sleep(Duration::from_millis(150));
                    let _ = conn.write_all(b"\n");
                });
            }
        });
        let slow = RuntimeApi::new(
            Socket::Stats(path.as_path().into()),
            Duration::from_millis(200),
        );
        assert_eq!(slow.budget.limit(), Duration::from_millis(400));
        let commands = ["set server nodes/a weight 2".to_string()];
        // Clones draw on the same budget. The third exchange starts with
        // 100 ms left, and gets its whole deadline.
        let clone = slow.within(Duration::from_secs(1));
        slow.batch(&commands).unwrap();
        clone.batch(&commands).unwrap();
        slow.batch(&commands).unwrap();
        // Spent: the next is not sent.
        let err = slow.batch(&commands).unwrap_err();
        assert!(err.is::<Spent>(), "{err:#}");
        assert_eq!(
            err.to_string(),
            format!(
                "this run's time for `{}` (0.4s, 2 times --socket-timeout) is spent; `set \
                 server nodes/a weight 2` was not sent",
                path.display()
            )
        );
        assert_eq!(*accepted.lock().unwrap(), 3);
        // A worker's next poll is a run of its own.
        slow.begin_run();
        slow.batch(&commands).unwrap();
    }

    #[test]
    fn an_answer_cut_short_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let mut conn = conn.unwrap();
                let mut line = String::new();
                conn.read_to_string(&mut line).unwrap();
                // Whole lines, but no empty line at the end.
                conn.write_all(b"1\n# be_id be_name\n3 nodes 11 a 127.0.0.1\n")
                    .unwrap();
            }
        });
        let err = api(&path).command("show servers state").unwrap_err();
        assert!(
            matches!(err.downcast_ref(), Some(Error::Answer(_))),
            "{err:#}"
        );
        let err = format!("{err:#}");
        assert!(
            err.contains("cut its answer to `show servers state` short"),
            "{err}"
        );
        let err = api(&path)
            .batch(&["set server nodes/a weight 2".to_string()])
            .unwrap_err();
        assert!(
            matches!(err.downcast_ref(), Some(Error::Answer(_))),
            "{err:#}"
        );
    }
}
