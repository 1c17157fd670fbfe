//! What hacfg tells people: progress on stderr, one line per action in the
//! optional log file, and errors with their causes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use std::os::unix::fs::OpenOptionsExt;

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
            OpenOptions::new()
                .create(true)
                .append(true)
                // A FIFO or device must not block or swallow the handler.
                .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
                .open(p)
                .and_then(|f| {
                    if f.metadata()?.is_file() {
                        Ok(f)
                    } else {
                        Err(std::io::Error::other("not a regular file"))
                    }
                })
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

    fn append(&mut self, message: &str) {
        if let Some(file) = &mut self.file {
            let line = format!("{} hacfg[{}]: {message}\n", timestamp(), std::process::id());
            // One write per line, so concurrent appenders never interleave
            // within a line; a full disk must not fail the handler itself.
            let _ = file.write_all(line.as_bytes());
        }
    }
}

/// An aligned text table (`list`, `status`): columns two spaces apart,
/// no trailing blanks.
pub fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    use std::fmt::Write as _;
    let header = header.map(String::from);
    let mut widths = [0; N];
    for row in std::iter::once(&header).chain(rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

/// Prints `hacfg: warning: …` on stderr.
pub fn print_warning(message: &str) {
    eprintln!("hacfg: warning: {message}");
}

/// Writes `text` to stdout. A closed pipe (`hacfg list | head -1`) ends
/// the output quietly: the reader has all it wanted.
pub fn print_stdout(text: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("unable to write to stdout")
        }
        _ => Ok(()),
    }
}

/// Prints `hacfg: error: …`, then one `caused by: …` line per cause. For a
/// template error, the template line; with `verbose`, minijinja's whole
/// debug view (the lines around it and every variable in scope).
pub fn print_error(err: &anyhow::Error, verbose: bool) {
    eprintln!("hacfg: error: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("caused by: {cause}");
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
    fn timestamp_shape() {
        let t = super::timestamp();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}
