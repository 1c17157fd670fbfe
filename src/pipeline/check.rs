//! The check a candidate config must pass before it goes live:
//! `haproxy -c`, an operator's command, or none.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use super::Settings;
use super::quarantine::{Blamed, Quarantine};
use crate::atomic::Staged;
use crate::exit::Failure;
use crate::log::Log;
use crate::output::OutputFile;
use crate::process::Run;

/// How long a check command may take (a 100,000-server check takes seconds).
const CHECK_TIMEOUT: Duration = Duration::from_secs(300);

/// How a candidate config is validated before it goes live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// `<bin> -c -f <staged>`.
    Haproxy(PathBuf),
    /// A shell command with `{}` replaced by the staged path.
    Command(String),
    /// `--no-check`: the operator chose not to check.
    Skip,
    /// Nothing to check with (no `haproxy` found): a warning at each write,
    /// and a refusal with `--reload`.
    Unavailable,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Check::Haproxy(bin) => write!(f, "`{} -c`", bin.display()),
            Check::Command(cmd) => write!(f, "check command `{cmd}`"),
            Check::Skip => f.write_str("no check (--no-check)"),
            Check::Unavailable => f.write_str("no check (no `haproxy` found)"),
        }
    }
}

impl Check {
    /// Whether there is a command to run.
    pub fn runs(&self) -> bool {
        matches!(self, Check::Haproxy(_) | Check::Command(_))
    }
}

/// How a candidate fared.
pub enum Checked {
    /// It may go live: staged beside the output, unless written in place
    /// without a check.
    Accepted(Option<Staged>),
    /// HAProxy refused lines of nodes, now held back: render again.
    HeldBack,
}

/// Stages `rendered` and checks it. A refusal that blames nodes holds them
/// back; one that blames none is the config's fault, and one that blames
/// most of them the environment's (exit 3 both, nothing held back).
pub fn candidate(
    s: &Settings,
    output: &OutputFile,
    rendered: &str,
    q: &mut Quarantine,
    log: &mut Log,
) -> Result<Checked> {
    let runs = s.check.runs();
    let staged = match (runs, output.in_place()) {
        (false, true) => None,
        _ => Some(output.stage(rendered.as_bytes())?),
    };
    let Some(candidate) = staged.as_ref().filter(|_| runs) else {
        if s.check == Check::Unavailable {
            log.warn(&format!(
                "no `haproxy` found on PATH, in /usr/local/sbin or in /usr/sbin: `{}` is \
                 written unchecked (set --haproxy-bin, or \
                 --no-check to silence this)",
                output.path().display()
            ));
        }
        return Ok(Checked::Accepted(staged));
    };
    log.debug(&format!("checking the candidate with {}", s.check));
    let Some(rejection) = run(&s.check, candidate.path(), output.path())? else {
        return Ok(Checked::Accepted(staged));
    };
    let said = (rejection.output.as_str(), rejection.candidate.as_str());
    match q.hold_blamed(said, rendered) {
        Blamed::Held => Ok(Checked::HeldBack),
        Blamed::Nobody => Err(rejection.into_failure(output.path(), None).into()),
        Blamed::Most { names, of } => {
            let most = most_text(&names, of);
            Err(rejection.into_failure(output.path(), Some(&most)).into())
        }
    }
}

/// Names shown of the nodes a refusal blames, at most.
const SHOWN_NAMES: usize = 10;

/// Why a refusal that blames most nodes is no node's fault.
fn most_text(names: &[String], of: usize) -> String {
    let mut shown: Vec<String> = names
        .iter()
        .take(SHOWN_NAMES)
        .map(|n| format!("`{n}`"))
        .collect();
    if names.len() > SHOWN_NAMES {
        shown.push(format!("… ({} more)", names.len() - SHOWN_NAMES));
    }
    format!(
        "blames {} of the {of} nodes ({}): more than half of them, which points at the \
         environment (DNS, a resolver, the template or its variables), not at these nodes; \
         nothing was held back",
        names.len(),
        shown.join(", ")
    )
}

/// A check that said no: which command, how it exited, what it printed.
pub struct Rejection {
    what: String,
    status: std::process::ExitStatus,
    pub output: String,
    /// The candidate's path, as the output names it.
    pub candidate: String,
}

impl Rejection {
    /// `Failure::Rejected`, carrying HAProxy's own messages (and, when it
    /// blamed most nodes, `most`: what that means).
    pub fn into_failure(self, output: &Path, most: Option<&str>) -> Failure {
        let output_text = self.output.replace(&self.candidate, "<candidate>");
        Failure::Rejected {
            what: self.what,
            status: self.status,
            output: output.to_path_buf(),
            most: most.map(str::to_string),
            shown: first_lines(&output_text, SHOWN_CHECK_LINES),
        }
    }
}

/// Runs the check on the staged candidate; `Some` if it rejected it.
pub fn run(check: &Check, staged: &Path, output: &Path) -> Result<Option<Rejection>> {
    let (mut cmd, what) = match check {
        Check::Haproxy(bin) => {
            let mut cmd = Command::new(bin);
            cmd.arg("-c").arg("-f").arg(staged);
            (cmd, format!("`{} -c`", bin.display()))
        }
        Check::Command(template) => {
            let line = template.replace("{}", &shell_quote(&staged.to_string_lossy()));
            let mut cmd = Command::new("sh");
            cmd.args(["-c", &line]);
            (cmd, format!("check command `{template}`"))
        }
        Check::Skip | Check::Unavailable => return Ok(None),
    };
    let done = Run::new(&mut cmd, &what)
        .run(CHECK_TIMEOUT)
        .with_context(|| format!("`{}` was not replaced", output.display()))?;
    if done.success() {
        return Ok(None);
    }
    Ok(Some(Rejection {
        what,
        status: done.status,
        output: done.output(),
        candidate: staged.to_string_lossy().into_owned(),
    }))
}

/// Lines of a check's output shown; HAProxy prints one per problem, and
/// the first ones name the cause.
const SHOWN_CHECK_LINES: usize = 40;

/// The first `max` lines of `text` (each cut to a readable length), and
/// how many more there were.
fn first_lines(text: &str, max: usize) -> String {
    let mut lines: Vec<String> = text
        .lines()
        .take(max)
        .map(|l| crate::quote::shorten(l, 400))
        .collect();
    let total = text.lines().count();
    if total > max {
        lines.push(format!("… ({} more lines)", total - max));
    }
    lines.join("\n")
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_check_output_is_cut() {
        let text = (0..100).fold(String::new(), |t, i| t + &format!("[ALERT] line {i}\n"));
        let shown = first_lines(&text, 40);
        assert_eq!(shown.lines().count(), 41);
        assert!(shown.ends_with("… (60 more lines)"), "{shown}");
        assert!(first_lines(&"é".repeat(1000), 40).ends_with("… (2000 bytes)"));
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
