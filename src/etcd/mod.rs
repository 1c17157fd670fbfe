//! etcd as a membership source, a sibling of `serf/`: the command of
//! `etcdctl watch --prefix PREFIX -- hacfg etcd` (`handler`) and `hacfg
//! sync --source etcd` (`sync`, through `etcdctl get`). Keys become the
//! same `Changes` a Serf event makes, applied through the pipeline's door;
//! the revision the folder reflects is recorded beside it (`revision`).

mod event;
mod get;
mod handler;
mod quoted;
mod revision;
mod sync;

pub use event::Vars;
pub use get::Client;
pub use handler::Event;
pub use sync::Sync;

/// The prefix when `--etcd-prefix` is not given.
pub const DEFAULT_PREFIX: &str = "/hacfg/nodes/";
