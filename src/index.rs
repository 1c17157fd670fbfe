//! `.hacfg.index`: a snapshot of the nodes folder kept beside it, so a
//! render trusts a node file it has read before by its `stat` alone (the way
//! git's index is checked against the work tree) instead of reading it.
//!
//! An entry is used only when the file's inode, size, mtime and ctime all
//! equal the recorded ones, and when its mtime and ctime were at least
//! `RACY_SLACK` older than the scan that recorded it. Any later write,
//! rename, `touch` or `cp -p` changes the ctime, which no tool can set back,
//! so a changed file never matches; a file changed within the same clock tick
//! as that scan is "racy" and always read again. The index is only a cache:
//! a missing, unreadable or malformed index is ignored and rewritten (the
//! one exception to `pipeline::records`' damage policy: the node files hold
//! everything it says, so nothing is set aside).

use std::collections::BTreeMap;
use std::fs::{self, Metadata};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::atomic;
use crate::file;
use crate::node::Node;
use crate::pipeline::records::INDEX;
use anyhow::{Context, Result, ensure};

const MAGIC: &str = "hacfg-index-v1";
/// Generous against coarse file-system clocks (a tick is 1-10 ms on Linux).
const RACY_SLACK_NS: i64 = 2_000_000_000;

/// What `stat` says of a node file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    ino: u64,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

impl Stamp {
    pub fn of(meta: &Metadata) -> Stamp {
        Stamp {
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        }
    }

    /// Whether content read under this stamp, in a scan that began at
    /// `scan_start`, is sure to be what the file still holds while its stamp
    /// is unchanged.
    fn settled(&self, scan_start: i64) -> bool {
        let limit = scan_start - RACY_SLACK_NS;
        self.mtime_ns < limit && self.ctime_ns < limit
    }
}

/// Now, in nanoseconds since the epoch, on the clock file times use.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The settled entries of a saved index, sorted by name, and which of them
/// a scan of the folder has confirmed.
pub struct Snapshot {
    nodes: Vec<Node>,
    stamps: Vec<Stamp>,
    confirmed: Vec<bool>,
}

impl Snapshot {
    /// Loads the folder's index; any problem gives an empty snapshot.
    /// Like every file in the folder, it may be a link, a FIFO or a device.
    pub fn load(dir: &Path) -> Snapshot {
        let (nodes, stamps) = file::open(&dir.join(INDEX))
            .ok()
            .flatten()
            .map(|(f, _)| parse(BufReader::with_capacity(64 * 1024, f)))
            .and_then(Result::ok)
            .unwrap_or_default();
        let confirmed = vec![false; nodes.len()];
        Snapshot {
            nodes,
            stamps,
            confirmed,
        }
    }

    /// Where `name` is, if the index has it.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.nodes
            .binary_search_by(|n| n.name.as_str().cmp(name))
            .ok()
    }

    /// How many entries the index holds.
    pub fn entries(&self) -> usize {
        self.nodes.len()
    }

    /// The name of entry `at`.
    pub fn name(&self, at: usize) -> &str {
        &self.nodes[at].name
    }

    /// Keeps entry `at`: its file is in the folder and unchanged.
    pub fn keep(&mut self, at: usize) {
        self.confirmed[at] = true;
    }

    /// Which entries' files are still regular files with the recorded stamp.
    /// Checked with `lstat` on two threads (one per core): the check is
    /// mostly kernel time, and it runs beside the caller's folder listing.
    pub fn verify(&self, dir: &Path) -> Vec<bool> {
        let check = |(node, stamp): (&Node, &Stamp)| {
            fs::symlink_metadata(dir.join(&node.name))
                .is_ok_and(|m| m.is_file() && Stamp::of(&m) == *stamp)
        };
        let (nodes, stamps) = (&self.nodes, &self.stamps);
        let mid = nodes.len() / 2;
        if mid < 128 {
            return nodes.iter().zip(stamps).map(check).collect();
        }
        std::thread::scope(|scope| {
            let upper = scope.spawn(|| {
                nodes[mid..]
                    .iter()
                    .zip(&stamps[mid..])
                    .map(check)
                    .collect::<Vec<_>>()
            });
            let mut all: Vec<bool> = nodes[..mid].iter().zip(stamps).map(check).collect();
            // A panicked checker vouches for nothing: those files are read again.
            all.extend(
                upper
                    .join()
                    .unwrap_or_else(|_| vec![false; nodes.len() - mid]),
            );
            all
        })
    }

    /// The folder's nodes and stamps, sorted: the confirmed entries plus the
    /// files read afresh (`fresh`) in a scan that began at `scan_start`.
    /// `changed` tells whether rewriting the index is worth it: an entry
    /// went, or a fresh file is settled (a racy one would not be trusted by
    /// the next load anyway, so a burst does not rewrite the index each time).
    pub fn merge(
        self,
        fresh: Vec<(Node, Stamp)>,
        scan_start: i64,
    ) -> (Vec<Node>, Vec<Stamp>, bool) {
        let Snapshot {
            mut nodes,
            mut stamps,
            confirmed,
        } = self;
        let changed = confirmed.iter().any(|c| !c)
            || fresh.iter().any(|(_, stamp)| stamp.settled(scan_start));
        let mut keep = confirmed.iter();
        nodes.retain(|_| keep.next() == Some(&true));
        let mut keep = confirmed.iter();
        stamps.retain(|_| keep.next() == Some(&true));
        if fresh.len() > nodes.len() / 8 {
            // Many new files (a first run): one sort beats many inserts.
            let mut all: Vec<(Node, Stamp)> = if nodes.is_empty() {
                fresh
            } else {
                nodes.into_iter().zip(stamps).chain(fresh).collect()
            };
            all.sort_unstable_by(|a, b| a.0.name.cmp(&b.0.name));
            let (nodes, stamps) = all.into_iter().unzip();
            return (nodes, stamps, changed);
        }
        for (node, stamp) in fresh {
            let at = nodes.partition_point(|n| n.name < node.name);
            nodes.insert(at, node);
            stamps.insert(at, stamp);
        }
        (nodes, stamps, changed)
    }
}

/// FNV-1a (64 bit), to detect a torn or edited index (and, in `fleet`,
/// to compare server sets across balancers).
pub fn fnv(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
pub const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// Longest index line read: a node's entry is under 25 KiB even with 64
/// tags of the longest kind.
const LINE_CAP: u64 = 64 * 1024;

/// Reads one line of at most `LINE_CAP` bytes; a longer one is an error.
fn read_line(reader: &mut impl BufRead, line: &mut String) -> Result<usize> {
    let n = reader.take(LINE_CAP).read_line(line)?;
    ensure!((n as u64) < LINE_CAP, "index line too long");
    Ok(n)
}

fn parse(mut reader: impl BufRead) -> Result<(Vec<Node>, Vec<Stamp>)> {
    let mut line = String::new();
    read_line(&mut reader, &mut line)?;
    let scan_start: i64 = line
        .trim_end()
        .strip_prefix(MAGIC)
        .and_then(|rest| rest.strip_prefix(' '))
        .context("not a hacfg index")?
        .parse()?;
    let (mut nodes, mut stamps) = (Vec::new(), Vec::new());
    let (mut seen, mut hash) = (0usize, FNV_START);
    loop {
        line.clear();
        ensure!(
            read_line(&mut reader, &mut line)? > 0,
            "index has no trailer (torn write)"
        );
        let text = line
            .strip_suffix('\n')
            .context("index line without newline")?;
        if let Some(trailer) = text.strip_prefix("end ") {
            ensure!(
                trailer == format!("{seen} {hash:016x}"),
                "index checksum mismatch"
            );
            return Ok((nodes, stamps));
        }
        seen += 1;
        hash = fnv(hash, text.as_bytes());
        let (stamp, node) = parse_entry(text)?;
        ensure!(
            nodes.last().is_none_or(|last: &Node| last.name < node.name),
            "index is not sorted"
        );
        if stamp.settled(scan_start) {
            nodes.push(node);
            stamps.push(stamp);
        }
    }
}

/// `name ino size mtime ctime address port weight tags`, tab-separated.
fn parse_entry(text: &str) -> Result<(Stamp, Node)> {
    let mut f = text.split('\t');
    let mut next = || f.next().context("malformed index line");
    let name = next()?;
    let stamp = Stamp {
        ino: next()?.parse()?,
        size: next()?.parse()?,
        mtime_ns: next()?.parse()?,
        ctime_ns: next()?.parse()?,
    };
    let address = next()?;
    let opt =
        |s: &str| -> Result<Option<u16>> { Ok(if s == "-" { None } else { Some(s.parse()?) }) };
    let port = opt(next()?)?;
    let weight = opt(next()?)?;
    let mut tags = BTreeMap::new();
    for pair in next()?.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').context("malformed tag")?;
        tags.insert(k.to_string(), v.to_string());
    }
    ensure!(f.next().is_none(), "malformed index line");
    let node = Node {
        name: name.to_string(),
        address: address.to_string(),
        port,
        weight,
        tags,
    };
    // The index is a file in a folder others write to: trust nothing.
    node.validate()?;
    Ok((stamp, node))
}

/// Writes the index for `nodes` (sorted) as found by a scan that began at
/// `scan_start`. Atomic (temp file and rename); no fsync: it is a cache, and
/// a torn index fails its trailer (entry count and checksum) and is ignored.
pub fn save(dir: &Path, scan_start: i64, nodes: &[Node], stamps: &[Stamp]) -> Result<()> {
    use std::fmt::Write as _;
    let tmp = atomic::temp_file(dir)?;
    let mut w = BufWriter::with_capacity(64 * 1024, tmp.as_file());
    writeln!(w, "{MAGIC} {scan_start}")?;
    let (mut line, mut hash) = (String::with_capacity(128), FNV_START);
    for (n, s) in nodes.iter().zip(stamps) {
        line.clear();
        let opt = |v: Option<u16>| v.map_or("-".to_string(), |v| v.to_string());
        let _ = write!(
            line,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t",
            n.name,
            s.ino,
            s.size,
            s.mtime_ns,
            s.ctime_ns,
            n.address,
            opt(n.port),
            opt(n.weight)
        );
        for (i, (k, v)) in n.tags.iter().enumerate() {
            let _ = write!(line, "{}{k}={v}", if i == 0 { "" } else { "," });
        }
        hash = fnv(hash, line.as_bytes());
        writeln!(w, "{line}")?;
    }
    writeln!(w, "end {} {hash:016x}", nodes.len())?;
    w.flush()?;
    drop(w);
    tmp.persist(dir.join(INDEX)).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Node {
        Node::named(name).port(80).tag("a", "x=y").tag("b", "")
    }

    const OLD: Stamp = Stamp {
        ino: 7,
        size: 30,
        mtime_ns: 1_000,
        ctime_ns: 2_000,
    };

    /// A real file and its stamp, indexed long after it settled.
    fn indexed(dir: &Path, name: &str) -> Stamp {
        std::fs::write(dir.join(name), "10.0.0.1").unwrap();
        Stamp::of(&std::fs::metadata(dir.join(name)).unwrap())
    }

    const LATER: i64 = i64::MAX / 2;

    #[test]
    fn round_trip_keeps_settled_entries_only() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = Stamp {
            ctime_ns: now_ns(),
            ..OLD
        };
        save(dir.path(), now_ns(), &[node("a"), node("b")], &[OLD, fresh]).unwrap();
        let mut snap = Snapshot::load(dir.path());
        assert_eq!(snap.find("b"), None, "a racy entry was kept");
        let at = snap.find("a").unwrap();
        snap.keep(at);
        let (nodes, _, changed) = snap.merge(Vec::new(), now_ns());
        assert_eq!((nodes, changed), (vec![node("a")], false));
    }

    #[test]
    fn verify_sees_every_change() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let names: Vec<String> = (0..300).map(|i| format!("n{i:03}")).collect();
        let stamps: Vec<Stamp> = names.iter().map(|n| indexed(d, n)).collect();
        let nodes: Vec<Node> = names.iter().map(|n| node(n)).collect();
        save(d, LATER, &nodes, &stamps).unwrap();
        assert!(Snapshot::load(d).verify(d).iter().all(|ok| *ok));
        std::fs::write(d.join("n001"), "10.0.0.2").unwrap(); // same size, in place
        std::fs::remove_file(d.join("n150")).unwrap();
        std::fs::remove_file(d.join("n299")).unwrap();
        std::os::unix::fs::symlink(d.join("n000"), d.join("n299")).unwrap();
        let ok = Snapshot::load(d).verify(d);
        let stale: Vec<usize> = (0..ok.len()).filter(|i| !ok[*i]).collect();
        assert_eq!(stale, [1, 150, 299]);
    }

    #[test]
    fn merge_keeps_name_order() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), now_ns(), &[node("b"), node("d")], &[OLD, OLD]).unwrap();
        let mut snap = Snapshot::load(dir.path());
        snap.keep(0);
        snap.keep(1);
        let fresh = vec![(node("e"), OLD), (node("a"), OLD), (node("c"), OLD)];
        let (nodes, stamps, changed) = snap.merge(fresh, now_ns());
        let names: Vec<_> = nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "d", "e"]);
        assert_eq!((stamps.len(), changed), (5, true));
    }

    #[test]
    fn damaged_index_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), now_ns(), &[node("a"), node("b")], &[OLD, OLD]).unwrap();
        let path = dir.path().join(INDEX);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(Snapshot::load(dir.path()).find("a").is_some());
        for bad in [
            text.replace("hacfg-index-v1 ", "hacfg-index-v0 "),
            text.replace("\nend 2 ", "\nend 1 "),
            text.replace("a=x=y", "a=x=z"),
            text.replace("10.0.0.1", "10.0.0.1\nserver evil"),
            text.replace("10.0.0.1", "a b"),
            text[..text.len() - 9].to_string(),
            String::new(),
            text.replace("\nend ", &format!("\n{}\nend ", "x".repeat(200_000))),
        ] {
            std::fs::write(&path, bad).unwrap();
            assert_eq!(Snapshot::load(dir.path()).find("a"), None);
        }
    }
}
