//! The answer to `fleet`'s Serf query (`hacfg-digest`): each balancer's
//! handler describes its pool in one line ([`Digest`]), read without the
//! folder's lock and within the query's timeout.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Result, bail};
use serde::Serialize;

use crate::haproxy::api::info_version;
use crate::haproxy::config::{self, Server};
use crate::haproxy::state::{self, Live};
use crate::haproxy::{RuntimeApi, endpoint, same_addr};
use crate::index;
use crate::pipeline::{Balancer, Pending};
use crate::process::Run;
use crate::quote::quote;

/// The Serf query `fleet` sends and `hacfg serf` answers; any other query
/// gets no answer.
pub const QUERY_NAME: &str = "hacfg-digest";
/// The digest's first word: the format and its version.
const MAGIC: &str = "hacfg-digest/1";
/// Longest answer built or accepted. Serf drops a response over 1024 bytes
/// (`QueryResponseSizeLimit`), counting its own framing and the node's
/// name (up to 128 bytes): 512 leaves room for both.
pub const ANSWER_CAP: usize = 512;
/// Longest version string kept (hacfg's, HAProxy's).
const VERSION_CAP: usize = 32;
/// Longest wait for HAProxy's socket inside the handler, whatever
/// `--socket-timeout` says: the query's answer is due within its timeout.
const SOCKET_WAIT: Duration = Duration::from_secs(1);
/// Longest wait for `haproxy -v` when no runtime API is set.
const VERSION_WAIT: Duration = Duration::from_secs(1);

/// A hash of a server set, or why there is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Sum {
    /// FNV-1a (64 bits) of the sorted `backend/name addr:port weight` lines:
    /// stable across hosts and builds; a consistency check, not a signature.
    Of(u64),
    /// Nothing to hash: no output file yet.
    None,
    /// Not known: no runtime API is set.
    Unknown,
    /// It could not be read (the output, the socket).
    Error,
}

impl fmt::Display for Sum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sum::Of(h) => write!(f, "{h:016x}"),
            Sum::None => f.write_str("none"),
            Sum::Unknown => f.write_str("unknown"),
            Sum::Error => f.write_str("error"),
        }
    }
}

impl Serialize for Sum {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What one balancer says of its pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Digest {
    /// The servers of the output file.
    pub rendered: Sum,
    /// The servers HAProxy runs (less those hacfg is draining away).
    pub live: Sum,
    /// Node files, held-back nodes, pending runtime work: `None` when the
    /// count could not be read.
    pub nodes: Option<u32>,
    pub held: Option<u32>,
    pub pending: Option<u32>,
    pub hacfg: String,
    pub haproxy: String,
}

/// The digest of this balancer, never an error: what cannot be read is
/// said in the digest. One socket exchange (bounded by `SOCKET_WAIT`) or
/// one `haproxy -v`, and a few small files.
pub fn digest(b: &Balancer) -> Digest {
    // The output is only read and no lock is taken: the handler must not
    // wait for a running apply.
    let rendered = crate::file::read_capped(b.output_path(), OUTPUT_CAP)
        .map(|read| read.map(|bytes| config::servers(&String::from_utf8_lossy(&bytes))));
    let pending = b.pending().ok();
    let (live, haproxy) = match b.runtime() {
        Some(api) => live_and_version(api, rendered.as_ref().ok(), pending.as_ref()),
        None => (Sum::Unknown, b.haproxy_bin().map(haproxy_v)),
    };
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    Digest {
        rendered: match &rendered {
            Ok(Some(servers)) => Sum::Of(hash_lines(servers.iter().map(line_of))),
            Ok(None) => Sum::None,
            Err(_) => Sum::Error,
        },
        live,
        nodes: count_nodes(b.nodes_dir()).map(count),
        held: Some(count(b.held().names().len())),
        pending: pending.map(|p| count(p.entries.len())),
        hacfg: version_text(env!("CARGO_PKG_VERSION")),
        haproxy: version_text(haproxy.as_deref().unwrap_or("unknown")),
    }
}

/// Largest output file read for its servers (the output's own cap).
const OUTPUT_CAP: u64 = 1 << 30;

/// `show servers state` and `show info` in one exchange.
fn live_and_version(
    api: &RuntimeApi,
    rendered: Option<&Option<Vec<Server>>>,
    pending: Option<&Pending>,
) -> (Sum, Option<String>) {
    let api = api.within(SOCKET_WAIT);
    let commands = ["show servers state".to_string(), "show info".to_string()];
    let Some(Ok([servers, info])) = api.batch(&commands).ok().map(<[String; 2]>::try_from) else {
        return (Sum::Error, None);
    };
    let version = info_version(&info).map(str::to_string);
    let Ok(live) = state::parse(servers.trim()) else {
        return (Sum::Error, version);
    };
    let empty = Vec::new();
    let desired = rendered.and_then(Option::as_ref).unwrap_or(&empty);
    (Sum::Of(live_sum(&live, desired, pending)), version)
}

/// The live servers' sum, written as the rendered ones are, so that the two
/// are equal when HAProxy runs what the file says: an address HAProxy
/// writes otherwise (`::1` for `0:0::1`) is taken in the file's words, and
/// a server hacfg is draining away is left out, as `status` does.
fn live_sum(live: &[Live], desired: &[Server], pending: Option<&Pending>) -> u64 {
    let draining = |l: &Live| {
        pending.is_some_and(|p| {
            p.entries
                .iter()
                .any(|e| e.why.leaves() && e.target == l.target())
        })
    };
    let wanted: BTreeMap<(&str, &str), &Server> = desired
        .iter()
        .map(|s| ((s.backend.as_str(), s.name.as_str()), s))
        .collect();
    let lines = live.iter().filter(|l| !draining(l)).map(|l| {
        let addr = match wanted.get(&(l.backend.as_str(), l.name.as_str())) {
            Some(s) if same_addr(&s.addr, &l.addr) => s.addr.as_str(),
            _ => l.addr.as_str(),
        };
        format!(
            "{}/{} {} {}",
            l.backend,
            l.name,
            endpoint(addr, l.port),
            l.weight
        )
    });
    hash_lines(lines)
}

fn line_of(s: &Server) -> String {
    format!(
        "{}/{} {} {}",
        s.backend,
        s.name,
        endpoint(&s.addr, s.port),
        s.weight
    )
}

/// FNV-1a over the sorted lines, each ended by a newline.
fn hash_lines(lines: impl Iterator<Item = String>) -> u64 {
    let mut lines: Vec<String> = lines.collect();
    lines.sort_unstable();
    lines.iter().fold(index::FNV_START, |hash, line| {
        index::fnv(index::fnv(hash, line.as_bytes()), b"\n")
    })
}

/// How many files in the folder could be nodes (by name; none is read, and
/// no lock is taken: the handler must not wait for a running apply).
fn count_nodes(dir: &Path) -> Option<usize> {
    let entries = std::fs::read_dir(dir).ok()?;
    let named = |e: &std::fs::DirEntry| {
        let name = e.file_name();
        let name = name.as_encoded_bytes();
        !crate::node::is_ignored_file_name(name)
            && std::str::from_utf8(name).is_ok_and(|n| crate::node::validate_name(n).is_ok())
    };
    Some(
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()) && named(e))
            .count(),
    )
}

/// The version `haproxy -v` prints (`HAProxy version 2.6.12-1 …`).
fn haproxy_v(bin: &Path) -> String {
    let mut cmd = Command::new(bin);
    cmd.arg("-v");
    let done = Run::new(&mut cmd, "haproxy -v").cap(4096).run(VERSION_WAIT);
    done.ok()
        .and_then(|d| {
            let text = String::from_utf8_lossy(&d.stdout).into_owned();
            let first = text.lines().next()?.to_string();
            first.split_whitespace().nth(2).map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".into())
}

/// A version as the digest carries it: at most `VERSION_CAP` bytes of
/// `[A-Za-z0-9.+~_-]`, anything else as `_`; never empty.
fn version_text(text: &str) -> String {
    let clean: String = text
        .chars()
        .take(VERSION_CAP)
        .map(|c| if version_char(c) { c } else { '_' })
        .collect();
    if clean.is_empty() {
        "unknown".into()
    } else {
        clean
    }
}

fn version_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~' | '_' | '-')
}

impl Digest {
    /// The answer line: `hacfg-digest/1 rendered=… live=… nodes=N held=N
    /// pending=N hacfg=V haproxy=V`, at most `ANSWER_CAP` bytes.
    pub fn to_line(&self) -> String {
        let count = |n: Option<u32>| n.map_or("error".to_string(), |n| n.to_string());
        let mut line = format!(
            "{MAGIC} rendered={} live={} nodes={} held={} pending={}",
            self.rendered,
            self.live,
            count(self.nodes),
            count(self.held),
            count(self.pending)
        );
        let _ = write!(
            line,
            " hacfg={} haproxy={}",
            version_text(&self.hacfg),
            version_text(&self.haproxy)
        );
        line.push('\n');
        line
    }

    /// Reads an answer, as hostile input: one line of at most `ANSWER_CAP`
    /// bytes, the fields in their order, each value checked.
    pub fn parse(answer: &str) -> Result<Digest> {
        if answer.len() > ANSWER_CAP {
            bail!(
                "answer of {} bytes is longer than {ANSWER_CAP}",
                answer.len()
            );
        }
        let line = answer.strip_suffix('\n').unwrap_or(answer);
        if !line.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            bail!("answer {} is not one line of plain text", quote(line));
        }
        let mut words = line.split(' ');
        if words.next() != Some(MAGIC) {
            bail!("answer {} is not a {MAGIC} digest", quote(line));
        }
        let mut field = |key: &str| -> Result<&str> {
            match words.next().and_then(|w| w.split_once('=')) {
                Some((k, v)) if k == key => Ok(v),
                _ => bail!("answer {} lacks `{key}=` in its place", quote(line)),
            }
        };
        let digest = Digest {
            rendered: parse_sum(field("rendered")?)?,
            live: parse_sum(field("live")?)?,
            nodes: parse_count(field("nodes")?)?,
            held: parse_count(field("held")?)?,
            pending: parse_count(field("pending")?)?,
            hacfg: parse_version(field("hacfg")?)?,
            haproxy: parse_version(field("haproxy")?)?,
        };
        if words.next().is_some() {
            bail!("answer {} has more than its fields", quote(line));
        }
        Ok(digest)
    }
}

fn parse_sum(text: &str) -> Result<Sum> {
    Ok(match text {
        "none" => Sum::None,
        "unknown" => Sum::Unknown,
        "error" => Sum::Error,
        hex if hex.len() == 16 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {
            Sum::Of(u64::from_str_radix(hex, 16)?)
        }
        other => bail!("invalid server-set hash {}", quote(other)),
    })
}

fn parse_count(text: &str) -> Result<Option<u32>> {
    if text == "error" {
        return Ok(None);
    }
    // Plain digits, no sign or leading zero; `parse` bounds it to u32.
    let plain = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    match text.parse::<u32>() {
        Ok(n) if plain => Ok(Some(n)),
        _ => bail!("invalid count {}", quote(text)),
    }
}

fn parse_version(text: &str) -> Result<String> {
    if text.is_empty() || text.len() > VERSION_CAP || !text.chars().all(version_char) {
        bail!("invalid version {}", quote(text));
    }
    Ok(text.to_string())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub fn digest(rendered: u64, nodes: u32) -> Digest {
        Digest {
            rendered: Sum::Of(rendered),
            live: Sum::Unknown,
            nodes: Some(nodes),
            held: Some(0),
            pending: Some(0),
            hacfg: "0.1.0".into(),
            haproxy: "2.6.12-1+deb12u4".into(),
        }
    }

    #[test]
    fn a_digest_goes_through_its_line() {
        let d = digest(0xdead_beef, 3);
        let line = d.to_line();
        assert_eq!(
            line,
            "hacfg-digest/1 rendered=00000000deadbeef live=unknown nodes=3 held=0 pending=0 \
             hacfg=0.1.0 haproxy=2.6.12-1+deb12u4\n"
        );
        assert_eq!(Digest::parse(&line).unwrap(), d);
    }

    #[test]
    fn hostile_versions_stay_under_the_limit() {
        let mut d = digest(u64::MAX, u32::MAX);
        d.live = Sum::Of(u64::MAX);
        d.held = Some(u32::MAX);
        d.pending = None;
        d.hacfg = "9".repeat(1 << 20);
        d.haproxy = "2.6 \n evil=1 ünï\u{0}".repeat(1000);
        let line = d.to_line();
        assert!(line.len() <= 300, "{} bytes", line.len());
        let back = Digest::parse(&line).unwrap();
        assert_eq!(back.hacfg.len(), VERSION_CAP);
        assert!(
            back.haproxy.starts_with("2.6___evil_1_"),
            "{}",
            back.haproxy
        );
        assert_eq!((back.nodes, back.pending), (Some(u32::MAX), None));
    }

    #[test]
    fn malformed_answers_are_errors() {
        let good = digest(1, 1).to_line();
        let cases = [
            String::new(),
            "hacfg: query: ignored\n".into(),
            good.replace("rendered=", "rendred="),
            good.replace("nodes=1", "nodes=01"),
            good.replace("nodes=1", "nodes=-1"),
            good.replace("nodes=1", "nodes=99999999999"),
            good.replace("0000000000000001", "000000000000001G"),
            good.replace("0000000000000001", "1"),
            good.replace(" held=0 pending=0", " pending=0 held=0"),
            good.replace('\n', " extra=1\n"),
            good.replace('\n', "\nsecond line\n"),
            good.replace("hacfg=0.1.0", "hacfg="),
            good.replace("hacfg=0.1.0", &format!("hacfg={}", "1".repeat(33))),
            good.replace(' ', "\t"),
            good.replace(' ', "  "),
            format!("{}{good}", " ".repeat(ANSWER_CAP)),
            "x".repeat(10 << 20),
        ];
        for case in &cases {
            let err = Digest::parse(case).unwrap_err().to_string();
            assert!(err.len() < 400, "{err}");
        }
    }

    #[test]
    fn live_equals_rendered_when_haproxy_runs_the_file() {
        let cfg = "backend nodes\n  server a 10.0.0.1:80 weight 2\n  server b [::1]:81
";
        let desired = config::servers(cfg);
        let rendered = hash_lines(desired.iter().map(line_of));
        let live = |name: &str, addr: &str, port: u16| Live {
            backend: "nodes".into(),
            name: name.into(),
            id: 1,
            addr: addr.into(),
            port,
            weight: if name == "a" { 2 } else { 1 },
            op_state: 2,
            admin_state: 0,
            unchecked: false,
        };
        let running = [live("a", "10.0.0.1", 80), live("b", "0:0::1", 81)];
        assert_eq!(live_sum(&running, &desired, None), rendered);
        let moved = [live("a", "10.0.0.9", 80), live("b", "::1", 81)];
        assert_ne!(live_sum(&moved, &desired, None), rendered);
    }
}
