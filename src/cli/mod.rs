//! The command line: clap's definition (`args`), the settings it resolves
//! to (`config`, the only reader of `args`), the man page and completions
//! generated from it (`docs`), and the built-in template's variables shown
//! in `--help` (`vars`). Clap types stop here: the rest of hacfg sees a
//! `Config`.

mod args;
mod config;
mod docs;
mod vars;

pub use args::Cli;
pub use config::{Command, Config, RenderMode, metrics_from};
pub use docs::{completions, man_page};

pub(crate) use args::retold;
