//! `.hacfg.etcd-revision`: the etcd revision the nodes folder reflects,
//! so that a late or replayed event never undoes a newer state, and a
//! restarted watch knows where to resume (`etcdctl watch --rev`).

use std::path::Path;

use anyhow::{Result, ensure};
use serde::{Deserialize, Serialize};

use crate::log::Log;
use crate::pipeline::records::{self, Kind};

/// The record's one entry.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revision {
    pub revision: u64,
}

impl Kind for Revision {
    const NAME: &'static str = ".hacfg.etcd-revision";
    const CAP: u64 = 4096;
    const WHAT: &'static str = "the etcd revision the folder reflects";
    const WITHOUT: &'static str =
        "every event applies until one is recorded again (`hacfg sync --source etcd` repairs)";

    fn parse(bytes: &[u8], _now_ms: u64) -> Result<Revision> {
        let entries: Vec<Revision> = serde_json::from_slice(bytes)?;
        ensure!(entries.len() == 1, "expected one entry");
        super::event::check_revision(entries[0].revision)?;
        Ok(entries[0])
    }
}

/// The record's file name, in the nodes folder.
pub const NAME: &str = Revision::NAME;

/// The recorded revision (0: none). A damaged record is moved aside, with
/// a line in the log, and reads as none. Under the exclusive lock.
pub fn recorded(dir: &Path, log: &mut Log) -> u64 {
    match records::read::<Revision>(dir) {
        Ok(r) => r.revision,
        Err(damage) => {
            damage.set_aside(log);
            0
        }
    }
}

/// The recorded revision for a look that changes nothing (`--dry-run`,
/// under the shared lock): a damaged record reads as none and stays.
pub fn peek(dir: &Path) -> u64 {
    records::read::<Revision>(dir).map_or(0, |r| r.revision)
}

/// Records `revision`, and tells the metrics. Under the exclusive lock.
pub fn record(dir: &Path, revision: u64) -> Result<()> {
    records::save::<Revision, _>(dir, &[Revision { revision }])?;
    crate::metrics::etcd_revision(revision);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Verbosity;

    #[test]
    fn round_trip_and_damage() {
        let tmp = tempfile::tempdir().unwrap();
        let mut log = Log::new(Verbosity::Quiet, None);
        assert_eq!(recorded(tmp.path(), &mut log), 0);
        record(tmp.path(), 42).unwrap();
        assert_eq!(recorded(tmp.path(), &mut log), 42);
        let path = tmp.path().join(Revision::NAME);
        for bad in [
            "[]",
            "[{\"revision\":0}]",
            "{\"revision\":3}",
            "[{\"revision\":-1}]",
            "[{\"revision\":9223372036854775808}]",
        ] {
            std::fs::write(&path, bad).unwrap();
            assert_eq!(recorded(tmp.path(), &mut log), 0, "{bad}");
            assert!(!path.exists(), "{bad}: not moved aside");
        }
    }
}
