//! What hacfg tells people: progress on stderr, one line per action in the
//! optional log file, and errors with their causes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use std::os::unix::fs::OpenOptionsExt;

use crate::quote::shorten;

/// How much goes to stderr (`-q`, `-v`). Warnings and errors always do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// Only warnings and errors.
    Quiet,
    /// One line per action too.
    Normal,
    /// Debug lines too.
    Verbose,
}

/// Progress messages: stderr (as `verbosity` says) and the log file, if any.
pub struct Log {
    verbosity: Verbosity,
    file: Option<File>,
}

impl Log {
    /// A log that also appends to `path`. A log file that cannot be opened
    /// is a warning, never a lost event: the run goes on without it.
    pub fn new(verbosity: Verbosity, path: Option<&Path>) -> Log {
        let file = path.and_then(|p| {
            open(p)
                .map_err(|e| {
                    print_warning(&format!(
                        "unable to open log file `{}`: {e}; logging to stderr only",
                        p.display()
                    ));
                })
                .ok()
        });
        Log { verbosity, file }
    }

    /// Reports a detail, with `-v` only (stderr, not the log file).
    pub fn debug(&mut self, message: &str) {
        if self.verbosity == Verbosity::Verbose {
            eprintln!("hacfg: debug: {message}");
        }
    }

    /// Reports one action.
    pub fn info(&mut self, message: &str) {
        if self.verbosity != Verbosity::Quiet {
            eprintln!("hacfg: {message}");
        }
        self.append(message);
    }

    /// Reports a problem that does not stop the run.
    pub fn warn(&mut self, message: &str) {
        print_warning(message);
        self.append(&format!("warning: {message}"));
    }

    /// Reports a warning that `-q` keeps off stderr: one about hacfg doing
    /// what it was asked (a failed member that stays), of which a batch
    /// may bring hundreds. The log file always gets it.
    pub fn warn_unless_quiet(&mut self, message: &str) {
        if self.verbosity != Verbosity::Quiet {
            print_warning(message);
        }
        self.append(&format!("warning: {message}"));
    }

    /// A warning for the log file alone: one of a batch that stderr gets
    /// as a single summary line.
    pub fn warn_to_file(&mut self, message: &str) {
        self.append(&format!("warning: {message}"));
    }

    fn append(&mut self, message: &str) {
        if let Some(file) = &mut self.file {
            append_line(file, &shorten(message, LINE_CAP));
        }
    }
}

/// Opens the log file for appending. A FIFO or device must not block or
/// swallow the handler, and a link is not followed.
fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
        .and_then(|f| {
            if f.metadata()?.is_file() {
                Ok(f)
            } else {
                Err(std::io::Error::other("not a regular file"))
            }
        })
}

/// Appends `TIMESTAMP hacfg[PID]: message`, in one write, so concurrent
/// appenders never interleave within a line; a full disk must not fail
/// the handler itself.
fn append_line(file: &mut File, message: &str) {
    let line = format!("{} hacfg[{}]: {message}\n", timestamp(), std::process::id());
    let _ = file.write_all(line.as_bytes());
}

/// Longest warning or error line written, on stderr or to the log file
/// (HAProxy's words included); the rest is cut, with its length.
const LINE_CAP: usize = 8 * 1024;
/// Longest error or cause printed on stderr: room for the 40 lines of
/// HAProxy's answer (each cut to 400 bytes) that a refusal shows.
const ERROR_CAP: usize = 64 * 1024;

/// Appends to the log file at `path` (if any) how a run ended: `message`
/// on one line, with the exit code. Serf discards a handler's stderr, so
/// this line is what its operator sees of an error. Quietly: a log file
/// that cannot be opened was already reported, and stderr has the message.
pub fn log_exit(path: Option<&Path>, message: &str, code: u8) {
    let Some(mut file) = path.and_then(|p| open(p).ok()) else {
        return;
    };
    let flat: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let flat = flat.join(" | ");
    let shown = shorten(&flat, LINE_CAP);
    append_line(&mut file, &format!("{shown} (exit {code})"));
}

/// An error and its causes as `log_exit` takes them: `error: what: why`.
pub fn error_text(err: &anyhow::Error) -> String {
    format!("error: {err:#}")
}

/// Prints `hacfg: warning: …` on stderr.
pub fn print_warning(message: &str) {
    eprintln!("hacfg: warning: {}", shorten(message, LINE_CAP));
}

/// Prints `hacfg: error: …`, then one `caused by: …` line per cause. For a
/// template error, the template line; with `verbose`, minijinja's whole
/// debug view (the lines around it and every variable in scope).
pub fn print_error(err: &anyhow::Error, verbose: bool) {
    eprintln!("hacfg: error: {}", shorten(&err.to_string(), ERROR_CAP));
    for cause in err.chain().skip(1) {
        eprintln!("caused by: {}", shorten(&cause.to_string(), ERROR_CAP));
    }
    let tmpl = err
        .chain()
        .find_map(|e| e.downcast_ref::<minijinja::Error>());
    let Some((tmpl, line)) = tmpl.and_then(|t| t.line().map(|l| (t, l))) else {
        return;
    };
    if verbose {
        eprintln!("{}", tmpl.display_debug_info());
    } else if let Some(text) = tmpl.template_source().and_then(|s| s.lines().nth(line - 1)) {
        eprintln!("  --> {}:{line}", tmpl.name().unwrap_or("template"));
        eprintln!(
            "{line:>5} | {}",
            crate::quote::cut(text, 200).unwrap_or(text)
        );
        eprintln!("      (-v shows the variables in scope)");
    }
}

/// UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
fn timestamp() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_exit_is_one_line_however_long() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        super::log_exit(Some(&path), "error: refused\n[ALERT] a\n\n  [ALERT] b\n", 3);
        super::log_exit(Some(&path), &"x".repeat(100_000), 4);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].ends_with(": error: refused | [ALERT] a | [ALERT] b (exit 3)"));
        assert!(
            lines[1].ends_with("… (100000 bytes) (exit 4)"),
            "{}",
            lines[1].len()
        );
        assert!(lines[1].len() < 9000);
    }

    #[test]
    fn timestamp_shape() {
        let t = super::timestamp();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}
