//! HAProxy's runtime API: one client for the master CLI (`@1`) and for a
//! worker's stats socket, commands joined by `;` in few exchanges, and the
//! reads the rest of hacfg needs (`show servers state`, `show stat`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::Error;
use super::socket;
use super::stat::{self, Stat};
use super::state::{self, Live};
use super::target::Target;
use crate::quote::quote;

/// Which socket speaks for HAProxy.
#[derive(Debug, Clone)]
pub enum Socket {
    /// The master CLI: commands go to the current worker with `@1`.
    Master(PathBuf),
    /// An admin-level stats socket of the worker.
    Stats(PathBuf),
}

/// A connection setting for runtime commands.
#[derive(Debug, Clone)]
pub struct RuntimeApi {
    pub socket: Socket,
    /// One exchange's deadline (`--socket-timeout`).
    pub timeout: Duration,
}

impl RuntimeApi {
    /// Sends one command; returns HAProxy's answer, trimmed.
    pub fn command(&self, command: &str) -> Result<String> {
        let line = format!("{}{command}", self.prefix());
        let answer = socket::exchange(self.path(), &line, Instant::now() + self.timeout)?;
        Ok(answer.trim().to_string())
    }

    /// Sends `commands` joined by `;`, a few KiB per exchange (HAProxy reads
    /// one line of at most its buffer size, 16 KiB by default), and returns
    /// one answer per command: HAProxy ends each answer with an empty line.
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
            }
            let text = socket::exchange(self.path(), &line, Instant::now() + self.timeout)?;
            let got = split_answers(&text);
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
            answers.extend(got);
            start = end;
        }
        Ok(answers)
    }

    /// What goes before each command: the master CLI forwards `@1` ones
    /// to the current worker.
    fn prefix(&self) -> &'static str {
        match self.socket {
            Socket::Master(_) => "@1 ",
            Socket::Stats(_) => "",
        }
    }

    pub fn path(&self) -> &Path {
        match &self.socket {
            Socket::Master(p) | Socket::Stats(p) => p,
        }
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
        let version = text
            .lines()
            .find_map(|l| l.strip_prefix("Version: "))
            .unwrap_or_default();
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
        Ok(stat::parse(&text))
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
            stats.extend(stat::parse(&answer));
        }
        Ok(stats)
    }
}

/// The answers to `;`-joined commands: each ends with an empty line (the
/// last one may end with the stream instead).
fn split_answers(text: &str) -> Vec<String> {
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
    if !current.is_empty() {
        answers.push(current.join("\n"));
    }
    answers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_answers_to_joined_commands() {
        // Answers as HAProxy 2.6 gives them to `a; b; c; d; e; f`.
        let text = "\nNo such server.\n\nNew server registered.\n\n\n\nServer deleted.\n";
        assert_eq!(
            split_answers(text),
            [
                "",
                "No such server.",
                "New server registered.",
                "",
                "",
                "Server deleted."
            ]
        );
    }
}
