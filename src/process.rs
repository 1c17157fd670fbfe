//! Running a helper command (a check, a reload command, `serf members`)
//! with its output collected and a deadline.

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Output of a finished command.
pub struct Finished {
    pub success: bool,
    pub status: String,
    /// stdout alone.
    pub stdout: String,
    /// stdout then stderr, trimmed: what to show a person.
    pub output: String,
}

/// Runs `cmd` with no stdin, collecting its output; kills it after `timeout`.
pub fn run_with_timeout(cmd: &mut Command, what: &str, timeout: Duration) -> Result<Finished> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("unable to run {what}"))?;
    let pipe = |r: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = pipe(child.stdout.take().map(|s| Box::new(s) as _));
    let err = pipe(child.stderr.take().map(|s| Box::new(s) as _));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("waiting for {what}"))?
        {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{what} did not finish within {:.1}s and was killed",
                timeout.as_secs_f64()
            );
        }
        thread::sleep(Duration::from_millis(2));
    };
    let stdout = String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned();
    let output = stdout.clone() + &String::from_utf8_lossy(&err.join().unwrap_or_default());
    Ok(Finished {
        success: status.success(),
        status: status.to_string(),
        stdout,
        output: output.trim().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_timeout_and_failure() {
        let t = Duration::from_millis(200);
        let done =
            run_with_timeout(Command::new("sh").args(["-c", "echo hi; exit 3"]), "x", t).unwrap();
        assert!(!done.success);
        assert_eq!(done.output, "hi");
        assert!(run_with_timeout(Command::new("sleep").arg("5"), "x", t).is_err());
    }
}
