//! hacfg: keep an HAProxy configuration in step with a changing set of nodes.

mod apply;
mod atomic;
mod cli;
mod commands;
mod config;
mod exit;
mod index;
mod log;
mod node;
mod process;
mod reload;
mod render;
mod serf;
mod store;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let result = config::Config::from_cli(cli).and_then(commands::run);
    if let Err(err) = result {
        log::print_error(&err);
        std::process::exit(exit::code_of(&err) as i32);
    }
}
