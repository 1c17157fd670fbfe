//! Serf as a membership source: the handler's events (`hacfg serf`), the
//! live member list (`hacfg sync`), and the `hacfg-digest` query that
//! `hacfg fleet` sends and every balancer's handler answers. Members
//! become node-folder changes here; the folder and HAProxy are reached
//! only through the pipeline's door (`pipeline::Balancer`).

mod answer;
mod event;
mod fleet;
mod handler;
mod members;
mod plan;
mod sync;

pub use event::OnFailed;
pub use fleet::{Ask, run as fleet, validate_role};
pub use handler::Event;
pub use members::member_list;
pub use sync::Sync;

// What `etcd/` shares: one batch policy, applied to the folder one way.
pub(crate) use handler::{apply_changes, partial, warn_planned};
pub(crate) use plan::{Changes, plan_sync, shrinks_too_much};
