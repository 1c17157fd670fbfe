//! The user docs hold: every relative link in README.md and docs/*.md
//! resolves inside the repository, and every ```console example in docs/
//! runs against the real binary with the output it shows.
//!
//! A console example is `$ COMMAND` lines, each followed by the output it
//! prints (stdout and stderr together, as in a terminal). Each page runs in a
//! fresh temp dir, its examples in order; `$ export K=V …` sets variables for
//! the page's later commands. In the shown output a line `...` stands for any
//! number of lines and `[..]` for any text within a line. A command must exit
//! 0: an example shows another exit code with `; echo "exit $?"`.
//! Our own runner, not trycmd: the examples need a shell (pipes, `$?`,
//! `export`), and it adds no dependency for five branches to merge.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const HACFG: &str = env!("CARGO_BIN_EXE_hacfg");
/// No example takes more than a second; a hung one fails instead of hanging.
const DEADLINE: Duration = Duration::from_secs(60);

/// README.md and every page in docs/, sorted.
fn pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = fs::read_dir(Path::new(ROOT).join("docs"))
        .expect("docs/ folder")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    assert!(pages.len() >= 8, "docs/ has {} pages", pages.len());
    pages.insert(0, Path::new(ROOT).join("README.md"));
    pages
}

/// The lines outside code fences, with their 1-based numbers.
fn prose(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            out.push((i + 1, line));
        }
    }
    out
}

/// GitHub's anchor for a heading: lowercase, spaces to `-`, punctuation
/// other than `-` and `_` dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    prose(text)
        .into_iter()
        .filter_map(|(_, l)| l.strip_prefix('#'))
        .map(|h| slug(h.trim_start_matches('#')))
        .collect()
}

/// The targets of inline links `[text](target)` outside code, with lines.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in prose(text) {
        // Inline code spans are no links: drop every other backtick piece.
        let plain: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = plain.as_str();
        while let Some(at) = rest.find("](") {
            let tail = &rest[at + 2..];
            let end = tail.find(')').unwrap_or(tail.len());
            out.push((n, tail[..end].to_string()));
            rest = &tail[end..];
        }
    }
    out
}

/// Where a relative link points, or why it does not resolve.
fn check_link(page: &Path, target: &str) -> Result<(), String> {
    let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
    let file = if path.is_empty() {
        page.to_path_buf()
    } else {
        page.parent().expect("page folder").join(path)
    };
    let file = file
        .canonicalize()
        .map_err(|e| format!("`{}`: {e}", file.display()))?;
    let root = Path::new(ROOT).canonicalize().expect("repository root");
    if !file.starts_with(&root) {
        return Err(format!("`{}` is outside the repository", file.display()));
    }
    if anchor.is_empty() {
        return Ok(());
    }
    let text = fs::read_to_string(&file).map_err(|e| format!("`{}`: {e}", file.display()))?;
    if anchors(&text).iter().any(|a| a == anchor) {
        Ok(())
    } else {
        Err(format!("no heading `#{anchor}` in `{}`", file.display()))
    }
}

#[test]
fn every_relative_link_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = fs::read_to_string(&page).expect("page");
        let name = page
            .strip_prefix(ROOT)
            .expect("in the repository")
            .display()
            .to_string();
        for (n, target) in links(&text) {
            if ["http://", "https://", "mailto:"]
                .iter()
                .any(|s| target.starts_with(s))
            {
                continue;
            }
            checked += 1;
            if let Err(why) = check_link(&page, &target) {
                broken.push(format!("{name}:{n}: ({target}): {why}"));
            }
        }
        if text.contains("../shared") {
            broken.push(format!("{name}: names `../shared`, outside the repository"));
        }
    }
    assert!(checked > 50, "only {checked} relative links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_link_checker_finds_a_missing_file_and_a_missing_anchor() {
    let readme = Path::new(ROOT).join("README.md");
    assert!(check_link(&readme, "docs/applying.md").is_ok());
    assert!(check_link(&readme, "docs/no-such-page.md").is_err());
    assert!(check_link(&readme, "docs/applying.md#no-such-heading").is_err());
    assert!(check_link(&readme, "../README.md").is_err());
    assert_eq!(
        slug(" What `--apply runtime` leaves waiting"),
        "what---apply-runtime-leaves-waiting"
    );
}

/// One `$ COMMAND` of a console example and the output it shows.
struct Example {
    line: usize,
    command: String,
    output: Vec<String>,
}

fn examples(text: &str) -> Vec<Example> {
    let mut out: Vec<Example> = Vec::new();
    let mut in_console = false;
    let mut fenced = false;
    // The end marker of a here-document the last command opened.
    let mut heredoc: Option<String> = None;
    // A block in a list item is indented as its fence is.
    let mut indent = 0;
    for (i, raw) in text.lines().enumerate() {
        let unindented = raw.len() - raw.trim_start().len() >= indent;
        let line = if unindented { &raw[indent..] } else { raw };
        if let (Some(end), Some(last)) = (&heredoc, out.last_mut()) {
            last.command.push('\n');
            last.command.push_str(line);
            if line == end {
                heredoc = None;
            }
        } else if line.trim_start().starts_with("```") {
            in_console = !fenced && line.trim() == "```console";
            fenced = !fenced;
            indent = if fenced {
                raw.len() - raw.trim_start().len()
            } else {
                0
            };
        } else if in_console {
            if let Some(command) = line.strip_prefix("$ ") {
                heredoc = heredoc_end(command);
                let output = Vec::new();
                out.push(Example {
                    line: i + 1,
                    command: command.to_string(),
                    output,
                });
            } else if let Some(last) = out.last_mut() {
                last.output.push(line.to_string());
            }
        }
    }
    out
}

/// `cmd <<'EOF'` or `cmd <<EOF`: the here-document's end marker.
fn heredoc_end(command: &str) -> Option<String> {
    let (_, rest) = command.split_once("<<")?;
    let word = rest.split_whitespace().next()?;
    Some(word.trim_matches(|c| c == '\'' || c == '"').to_string())
}

/// Whether `line` matches `pattern`, where `[..]` stands for any text.
fn line_matches(pattern: &str, line: &str) -> bool {
    let mut parts = pattern.split("[..]");
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = line.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// Whether the lines match the shown output, where `...` is any lines.
fn output_matches(expected: &[String], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first == "..." => {
            (0..=actual.len()).any(|skip| output_matches(rest, &actual[skip..]))
        }
        Some((first, rest)) => actual
            .split_first()
            .is_some_and(|(a, more)| line_matches(first, a) && output_matches(rest, more)),
    }
}

fn trim_end(lines: &mut Vec<String>) {
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
}

/// Runs one command in `dir` through `sh`, stderr into stdout: (output, status).
fn run(dir: &Path, env: &BTreeMap<String, String>, command: &str) -> (String, i32) {
    let bin = Path::new(HACFG).parent().expect("binary folder");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("exec 2>&1\n{command}"))
        .current_dir(dir);
    for (key, _) in std::env::vars() {
        if key.starts_with("HACFG_") || key.starts_with("SERF_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("PATH", path)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().expect("sh");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > DEADLINE {
            child.kill().expect("kill");
            panic!("`{command}` ran for more than {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let text = reader.join().expect("reader").expect("output is UTF-8");
    (text, status.code().unwrap_or(-1))
}

/// `export K=V K2=V2`: the variables, or `None` for any other command.
fn exports(command: &str) -> Option<Vec<(String, String)>> {
    let words = command.strip_prefix("export ")?.split_whitespace();
    words
        .map(|w| {
            w.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

#[test]
fn every_console_example_in_docs_runs_as_shown() {
    let mut failures = Vec::new();
    let mut ran = 0;
    for page in pages().into_iter().skip(1) {
        let text = fs::read_to_string(&page).expect("page");
        let name = page
            .strip_prefix(ROOT)
            .expect("in the repository")
            .display()
            .to_string();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut env = BTreeMap::new();
        for mut example in examples(&text) {
            ran += 1;
            let (output, code) = run(dir.path(), &env, &example.command);
            if let Some(vars) = exports(&example.command) {
                env.extend(vars);
            }
            trim_end(&mut example.output);
            let actual: Vec<&str> = output.trim_end().lines().collect();
            if code != 0 || !output_matches(&example.output, &actual) {
                failures.push(format!(
                    "{name}:{}: $ {}\n--- shown\n{}\n--- printed (exit {code})\n{}",
                    example.line,
                    example.command,
                    example.output.join("\n"),
                    output.trim_end()
                ));
            }
        }
    }
    assert!(ran >= 10, "only {ran} console examples in docs/");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_matcher_takes_wildcards_and_refuses_other_output() {
    let shown = |s: &str| s.lines().map(String::from).collect::<Vec<_>>();
    assert!(output_matches(&shown("a\n...\nd"), &["a", "b", "c", "d"]));
    assert!(output_matches(&shown("a\n..."), &["a"]));
    assert!(!output_matches(&shown("a\nd"), &["a", "b", "d"]));
    assert!(line_matches(
        "wrote `[..]` (2 nodes)",
        "wrote `x/haproxy.cfg` (2 nodes)"
    ));
    assert!(!line_matches(
        "wrote `[..]` (2 nodes)",
        "wrote `x` (3 nodes)"
    ));
    assert!(!line_matches("exit 1", "exit 12"));
    let example = "```console\n$ export A=1 B=2\n$ echo $A$B\n12\n```\n```sh\n$ no\n```\n";
    let found = examples(example);
    assert_eq!(found.len(), 2);
    assert_eq!(found[1].output, vec!["12".to_string()]);
    assert_eq!(exports("export A=1 B=2").map(|v| v.len()), Some(2));
    let heredoc = "```console\n$ cat > t <<'EOF'\na\n$ b\nEOF\n$ wc -l < t\n2\n```\n";
    let found = examples(heredoc);
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].command, "cat > t <<'EOF'\na\n$ b\nEOF");
    assert_eq!(found[1].output, vec!["2".to_string()]);
    let indented = examples("1. step\n\n   ```console\n   $ echo a\n   a\n   ```\n");
    assert_eq!(
        (indented[0].command.as_str(), indented[0].output.clone()),
        ("echo a", vec!["a".to_string()])
    );
}
