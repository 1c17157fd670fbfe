//! Doctor's findings: one line each, a level and what was checked.

use std::fmt;

/// How a check went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    /// Works, but should be looked at.
    Warn,
    /// A run would fail on it; the line says what to do.
    Fail,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "fail",
        })
    }
}

/// One finding: `fail  output `/etc/haproxy.cfg`: …; what to do`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub level: Level,
    pub subject: String,
    pub text: String,
}

/// Every finding, in order.
#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<Line>,
}

impl Report {
    pub fn ok(&mut self, subject: &str, text: &str) {
        self.push(Level::Ok, subject, text);
    }

    pub fn warn(&mut self, subject: &str, text: &str) {
        self.push(Level::Warn, subject, text);
    }

    /// `text` ends with what to do.
    pub fn fail(&mut self, subject: &str, text: &str) {
        self.push(Level::Fail, subject, text);
    }

    /// One line each: a finding's text is made one line (an error chain
    /// may hold HAProxy's lines).
    fn push(&mut self, level: Level, subject: &str, text: &str) {
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        self.lines.push(Line {
            level,
            subject: subject.to_string(),
            text,
        });
    }

    pub fn count(&self, level: Level) -> usize {
        self.lines.iter().filter(|l| l.level == level).count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.lines {
            writeln!(f, "{:<4}  {}: {}", line.level, line.subject, line.text)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_finding() {
        let mut report = Report::default();
        report.ok("template", "renders");
        report.fail("haproxy", "rejects:\n[ALERT] line 3\n;  fix it");
        assert_eq!(
            report.to_string(),
            "ok    template: renders\nfail  haproxy: rejects: [ALERT] line 3 ; fix it\n"
        );
        assert_eq!(report.count(Level::Fail), 1);
        assert_eq!(report.count(Level::Warn), 0);
    }
}
