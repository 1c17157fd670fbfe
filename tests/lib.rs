//! End-to-end tests: the real binary, a temp dir, and real HAProxy and Serf
//! where a user would have them. One test binary keeps `cargo test` fast.

mod harness;
mod live;

mod apply;
mod core;
mod hardening;
mod serf;
