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
//! a missing, unreadable or malformed index is ignored and rewritten.

use std::collections::BTreeMap;
use std::fs::{File, Metadata};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use tempfile::NamedTempFile;

use crate::node::Node;

/// Name of the index file inside the nodes folder (hidden, so never a node).
pub const INDEX_FILE: &str = ".hacfg.index";
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
        .map_or(0, |d| d.as_nanos() as i64)
}

/// The settled entries of a saved index, by name.
pub struct Snapshot {
    entries: BTreeMap<String, (Stamp, Node)>,
}

impl Snapshot {
    /// Loads the folder's index; any problem gives an empty snapshot.
    pub fn load(dir: &Path) -> Snapshot {
        let entries = File::open(dir.join(INDEX_FILE))
            .map_err(anyhow::Error::from)
            .and_then(|f| parse(BufReader::with_capacity(64 * 1024, f)))
            .unwrap_or_default();
        Snapshot { entries }
    }

    /// The cached node for `name` if `stamp` proves the file unchanged.
    pub fn take(&mut self, name: &str, stamp: &Stamp) -> Option<Node> {
        match self.entries.remove(name) {
            Some((s, node)) if s == *stamp => Some(node),
            _ => None,
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Entries never taken: files that are gone or changed.
    pub fn leftover(&self) -> usize {
        self.entries.len()
    }
}

/// FNV-1a (64 bit), to detect a torn or edited index.
fn fnv(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

fn parse(reader: impl BufRead) -> Result<BTreeMap<String, (Stamp, Node)>> {
    let mut lines = reader.lines();
    let header = lines.next().context("empty index")??;
    let scan_start: i64 = header
        .strip_prefix(MAGIC)
        .and_then(|rest| rest.strip_prefix(' '))
        .context("not a hacfg index")?
        .parse()?;
    let mut entries = BTreeMap::new();
    let (mut seen, mut hash) = (0usize, FNV_START);
    for line in lines {
        let line = line?;
        if let Some(trailer) = line.strip_prefix("end ") {
            ensure!(
                trailer == format!("{seen} {hash:016x}"),
                "index checksum mismatch"
            );
            return Ok(entries);
        }
        seen += 1;
        hash = fnv(hash, line.as_bytes());
        let f: Vec<&str> = line.split('\t').collect();
        let [name, ino, size, mtime, ctime, address, port, weight, tags] = f[..] else {
            bail!("malformed index line");
        };
        let stamp = Stamp {
            ino: ino.parse()?,
            size: size.parse()?,
            mtime_ns: mtime.parse()?,
            ctime_ns: ctime.parse()?,
        };
        let opt =
            |s: &str| -> Result<Option<u16>> { Ok(if s == "-" { None } else { Some(s.parse()?) }) };
        let mut tag_map = BTreeMap::new();
        for pair in tags.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').context("malformed tag")?;
            tag_map.insert(k.to_string(), v.to_string());
        }
        let node = Node {
            name: name.to_string(),
            address: address.to_string(),
            port: opt(port)?,
            weight: opt(weight)?,
            tags: tag_map,
        };
        // The index is a file in a folder others write to: trust nothing.
        node.validate()?;
        if stamp.settled(scan_start) {
            entries.insert(node.name.clone(), (stamp, node));
        }
    }
    bail!("index has no trailer (torn write)")
}

/// Writes the index for `nodes` (sorted) as found by a scan that began at
/// `scan_start`. Atomic (temp file and rename); no fsync: it is a cache, and
/// a torn index fails its trailer (entry count and checksum) and is ignored.
pub fn save(dir: &Path, scan_start: i64, nodes: &[(Node, Stamp)]) -> Result<()> {
    use std::fmt::Write as _;
    let tmp = NamedTempFile::with_prefix_in(".hacfg.index.", dir)?;
    let mut w = BufWriter::with_capacity(64 * 1024, tmp.as_file());
    writeln!(w, "{MAGIC} {scan_start}")?;
    let (mut line, mut hash) = (String::with_capacity(128), FNV_START);
    for (n, s) in nodes {
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
    tmp.persist(dir.join(INDEX_FILE)).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Node {
        Node {
            name: name.into(),
            address: "10.0.0.1".into(),
            port: Some(80),
            weight: None,
            tags: BTreeMap::from([("a".into(), "x=y".into()), ("b".into(), "".into())]),
        }
    }

    const OLD: Stamp = Stamp {
        ino: 7,
        size: 30,
        mtime_ns: 1_000,
        ctime_ns: 2_000,
    };

    #[test]
    fn round_trip_keeps_settled_entries_only() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = Stamp {
            ctime_ns: now_ns(),
            ..OLD
        };
        save(
            dir.path(),
            now_ns(),
            &[(node("a"), OLD), (node("b"), fresh)],
        )
        .unwrap();
        let mut snap = Snapshot::load(dir.path());
        assert!(!snap.contains("b"), "a racy entry was kept");
        assert_eq!(snap.take("a", &OLD), Some(node("a")));
        assert_eq!(snap.leftover(), 0);
    }

    #[test]
    fn any_stamp_change_misses() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), now_ns(), &[(node("a"), OLD)]).unwrap();
        for changed in [
            Stamp { ino: 8, ..OLD },
            Stamp { size: 31, ..OLD },
            Stamp {
                mtime_ns: 1_001,
                ..OLD
            },
            Stamp {
                ctime_ns: 2_001,
                ..OLD
            },
        ] {
            assert_eq!(Snapshot::load(dir.path()).take("a", &changed), None);
        }
    }

    #[test]
    fn damaged_index_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), now_ns(), &[(node("a"), OLD), (node("b"), OLD)]).unwrap();
        let path = dir.path().join(INDEX_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        for bad in [
            text.replace("hacfg-index-v1 ", "hacfg-index-v0 "),
            text.replace("\nend 2 ", "\nend 1 "),
            text.replace("a=x=y", "a=x=z"),
            text.replace("10.0.0.1", "10.0.0.1\nserver evil"),
            text.replace("10.0.0.1", "a b"),
            text[..text.len() - 9].to_string(),
            String::new(),
        ] {
            std::fs::write(&path, bad).unwrap();
            assert_eq!(Snapshot::load(dir.path()).leftover(), 0);
        }
    }
}
