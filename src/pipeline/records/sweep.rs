//! The damage policy, applied once per locked run to every record.

use std::path::Path;

use super::{Kind, read};
use crate::log::Log;
use crate::pipeline::pending::Pending;
use crate::pipeline::quarantine::HeldSet;
use crate::pipeline::split;
use crate::pipeline::verify::Stays;
use crate::store::{Lock, Mode};

/// Moves every damaged record of the folder aside, each with one log line
/// (see the module's policy). Runs under the folder lock (either mode:
/// records are only written under the exclusive one), before the run reads
/// a record: later reads then find each record sound, or none.
pub fn sweep<M: Mode>(dir: &Path, _lock: &Lock<M>, log: &mut Log) {
    set_aside::<Pending>(dir, log);
    set_aside::<HeldSet>(dir, log);
    set_aside::<Stays>(dir, log);
    set_aside::<split::Record>(dir, log);
}

fn set_aside<R: Kind>(dir: &Path, log: &mut Log) {
    if let Err(damage) = read::<R>(dir) {
        damage.set_aside(log);
    }
}
