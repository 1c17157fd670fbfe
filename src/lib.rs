//! hacfg: keep an HAProxy configuration in step with a changing set of nodes.
//!
//! A library so that the binary stays thin and the end-to-end tests reuse
//! the parsers instead of copying them. The map, top-down:
//!
//! - `cli/` reads the command line: clap's definition, the checked
//!   settings it resolves to (`Config`; the pipeline's `Settings` are built
//!   there once, and the detached worker's are serialized there), the man
//!   page and completions, the built-in template's variables, and what a
//!   refused line becomes. Then `commands` dispatches to the pipeline's one
//!   door, `Balancer`, and to `serf/`.
//! - The nodes folder: `node` (the model and its defaults), `store` (the
//!   folder and its lock), `index` (the cache of its files), `file`
//!   (opening what others may have put there), `atomic` and `output` (the
//!   rendered file, replaced atomically), `render` (the template).
//! - `pipeline/` decides, behind one door (`Balancer`, which alone takes
//!   the folder's lock and opens the output): render → plan → execute →
//!   settle, the check and the quarantine of refused nodes, the reload
//!   path, the deferred worker.
//! - `haproxy/` speaks HAProxy: the config text, the runtime API and its
//!   answers, runtime operations, reload strategies, the socket.
//! - Around them: `serf/` (events, members, sync, and `fleet`: balancers
//!   compared through a Serf query), `status`, `metrics` (the
//!   `--metrics-file` for monitoring), `log` (stderr and the log file),
//!   `stdout` (what commands print, tables too), `exit`, `process`,
//!   `quote`.

mod atomic;
mod cli;
mod commands;
mod doctor;
mod etcd;
mod exit;
mod file;
mod haproxy;
mod index;
mod list;
mod lock;
mod log;
mod metrics;
mod node;
mod output;
mod pipeline;
mod process;
mod quote;
mod render;
mod serf;
mod status;
mod stdout;
mod store;

use std::process::ExitCode;

/// The whole program: parse, resolve, run, and say how it ended. Every
/// error and every other non-zero exit is also one line in the log file,
/// with its exit code: Serf throws a handler's stderr away. A run that
/// counts then adds itself to the metrics file, whatever its exit code.
pub fn execute() -> ExitCode {
    let clock = metrics::Clock::start();
    let cli = cli::parse();
    let metrics = cli::metrics_from(&cli);
    let log_file = cli.global.log_file.clone();
    let log_file = log_file.as_deref();
    let ended = run(cli, log_file);
    if let Some(metrics) = metrics {
        let code = match &ended {
            Ended::Code(code) => *code as u8,
            Ended::Usage(usage) => u8::try_from(usage.exit_code()).unwrap_or(2),
        };
        metrics.record(code, &clock, log_file);
    }
    match ended {
        Ended::Code(code) => code.into(),
        Ended::Usage(usage) => cli::usage_exit(&usage, log_file),
    }
}

/// How a parsed run ended: with a code, or with a usage error clap prints.
enum Ended {
    Code(exit::Code),
    Usage(clap::Error),
}

fn run(cli: cli::Cli, log_file: Option<&std::path::Path>) -> Ended {
    let verbose = cli.global.verbose;
    match cli::Config::from_cli(cli).and_then(|cfg| commands::run(&cfg)) {
        Ok(outcome) => {
            let code = outcome.code();
            match &outcome {
                exit::Outcome::Skipped(message)
                | exit::Outcome::Drift(message)
                | exit::Outcome::Disagree(message) => {
                    log::print_warning(message);
                    log::log_exit(log_file, &format!("warning: {message}"), code as u8);
                }
                exit::Outcome::Differs => {
                    let message = "render --diff: the output would change";
                    log::log_exit(log_file, message, code as u8);
                }
                exit::Outcome::Done => {}
            }
            Ended::Code(code)
        }
        Err(err) => match err.downcast::<clap::Error>() {
            // A usage problem found after parsing: clap's format, exit 2.
            Ok(usage) => Ended::Usage(usage),
            Err(err) => {
                log::print_error(&err, verbose);
                let code = exit::code_of(&err);
                log::log_exit(log_file, &log::error_text(&err), code as u8);
                Ended::Code(code)
            }
        },
    }
}

/// What the end-to-end tests reuse: hacfg's own socket client and parsers
/// of HAProxy's answers, so the tests hold no copies of them.
pub mod testing {
    pub use crate::haproxy::reload::parse_show_proc;
    pub use crate::haproxy::socket::exchange;
    pub use crate::haproxy::state::{Live, parse as parse_servers_state};
    pub use crate::render::stable_id;
}
