//! End-to-end tests: the real binary, a temp dir, and real HAProxy and Serf
//! where a user would have them. One test binary keeps `cargo test` fast.

// Pids fit in i32 (Linux caps them at 2^22): `as i32` for kill(2) is exact.
#![allow(clippy::cast_possible_wrap)]

mod harness;
mod live;

mod apply;
mod availability;
mod budget;
mod core;
mod docs;
mod doctor;
mod drains;
mod etcd;
mod fleet;
mod hardening;
mod locking;
mod messages;
mod metrics;
mod operator;
mod records;
mod reliability;
mod runtime;
mod serf;
mod settle;
mod sockets;
mod verify;
