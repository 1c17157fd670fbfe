//! hacfg: keep an HAProxy configuration in step with a changing set of nodes.
//!
//! A library so that the binary stays thin and the end-to-end tests reuse
//! the parsers instead of copying them.

pub mod apply;
pub mod atomic;
pub mod cli;
pub mod commands;
pub mod config;
pub mod docs;
pub mod exit;
pub mod file;
pub mod held;
pub mod index;
pub mod log;
pub mod node;
pub mod output;
pub mod plan;
pub mod process;
pub mod quote;
pub mod reload;
pub mod render;
pub mod runtime;
pub mod serf;
pub mod socket;
pub mod status;
pub mod store;
