//! The whole prefix at one revision: `etcdctl get --prefix -w json`,
//! bounded in time and size like `serf members`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;

use super::event::check_revision;
use crate::quote::{SHOWN, quote, shorten};

/// Largest answer read (a node's key and value are well under 1 KiB,
/// base64 included).
const GET_CAP: usize = 256 << 20;
/// etcdctl's stderr kept: its retries' log lines, then its `Error:` line.
const STDERR_CAP: usize = 1 << 20;

/// How etcdctl reaches the cluster (`--etcd-*` options; etcdctl's own
/// `ETCDCTL_*` variables, such as ETCDCTL_PASSWORD, pass through, but for
/// those of the flags hacfg passes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub etcdctl_bin: PathBuf,
    /// `--endpoints`, comma-separated (etcdctl's default if `None`).
    pub endpoints: Option<String>,
    /// `--etcd-prefix`.
    pub prefix: String,
    pub cacert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// `--user NAME[:PASSWORD]`.
    pub user: Option<String>,
    /// etcdctl's `--dial-timeout` and `--command-timeout`.
    pub timeout: Duration,
}

/// The keys under the prefix, decoded, and the revision they are at.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Listing {
    pub revision: u64,
    pub kvs: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Debug, Deserialize)]
struct GetJson {
    header: Header,
    #[serde(default)]
    kvs: Vec<Kv>,
}

#[derive(Debug, Deserialize)]
struct Header {
    revision: u64,
}

#[derive(Debug, Deserialize)]
struct Kv {
    key: String,
    #[serde(default)]
    value: String,
}

impl Client {
    /// `etcdctl get --prefix PREFIX -w json`: one linearizable read (no
    /// quorum, no answer). Killed past its own timeouts and a margin.
    pub fn list(&self) -> Result<Listing> {
        let mut cmd = Command::new(&self.etcdctl_bin);
        cmd.env("ETCDCTL_API", "3");
        let (args, shadowed) = self.global_args();
        // etcdctl refuses a flag whose ETCDCTL_ variable is also set: the
        // option hacfg passes wins, and the variable is not passed on.
        for var in shadowed {
            cmd.env_remove(var);
        }
        cmd.args(args);
        cmd.args(["get", "--prefix", "-w", "json", "--", &self.prefix]);
        let what = format!(
            "`{} get --prefix {}`",
            self.etcdctl_bin.display(),
            self.prefix
        );
        let done = crate::process::Run::new(&mut cmd, &what)
            .cap(GET_CAP)
            .stderr_cap(STDERR_CAP)
            .run(self.timeout * 2 + Duration::from_secs(5))?;
        if !done.success() {
            let said = reason(&done.stderr).unwrap_or_else(|| done.output());
            bail!("{what} failed ({}): {}", done.status, quote(&said));
        }
        parse_listing(&done.stdout).with_context(|| format!("unable to read the keys from {what}"))
    }

    /// The options every etcdctl command of hacfg gets, and the `ETCDCTL_`
    /// variables they shadow.
    fn global_args(&self) -> (Vec<String>, Vec<&'static str>) {
        let secs = format!("{}s", self.timeout.as_secs().max(1));
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        let given = [
            ("dial-timeout", "ETCDCTL_DIAL_TIMEOUT", Some(secs.clone())),
            ("command-timeout", "ETCDCTL_COMMAND_TIMEOUT", Some(secs)),
            ("endpoints", "ETCDCTL_ENDPOINTS", self.endpoints.clone()),
            ("cacert", "ETCDCTL_CACERT", path(&self.cacert)),
            ("cert", "ETCDCTL_CERT", path(&self.cert)),
            ("key", "ETCDCTL_KEY", path(&self.key)),
            ("user", "ETCDCTL_USER", self.user.clone()),
        ];
        let mut args = Vec::new();
        let mut shadowed = Vec::new();
        for (flag, var, value) in given {
            if let Some(value) = value {
                args.push(format!("--{flag}={value}"));
                shadowed.push(var);
            }
        }
        // `--user NAME:PASSWORD` and ETCDCTL_PASSWORD together would make
        // the whole of it the user name.
        if self.user.as_ref().is_some_and(|u| u.contains(':')) {
            shadowed.push("ETCDCTL_PASSWORD");
        }
        (args, shadowed)
    }
}

/// etcdctl's own verdict (`Error: context deadline exceeded`): its last
/// line that starts with `Error:`, rather than the JSON log lines of its
/// client library's retries before it.
fn reason(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let line = text.lines().rev().find(|l| l.starts_with("Error:"))?;
    Some(line.trim().to_string())
}

fn parse_listing(bytes: &[u8]) -> Result<Listing> {
    // serde's words quote what they refuse whole: cut to a readable length.
    let got: GetJson = serde_json::from_slice(bytes)
        .map_err(|e| anyhow::anyhow!("{}", shorten(&e.to_string(), SHOWN)))?;
    check_revision(got.header.revision).context("the header's revision")?;
    let mut kvs = Vec::with_capacity(got.kvs.len());
    for kv in got.kvs {
        let key = base64(&kv.key).context("a key")?;
        let value = base64(&kv.value).context("a value")?;
        kvs.push((key, value));
    }
    Ok(Listing {
        revision: got.header.revision,
        kvs,
    })
}

/// Standard base64 with padding, as Go's encoding/json writes `[]byte`.
fn base64(text: &str) -> Result<Vec<u8>> {
    let digit = |c: u8| -> Result<u32> {
        Ok(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => bail!("invalid base64 character {:?}", char::from(c)),
        }
        .into())
    };
    let bytes = text.as_bytes();
    ensure!(
        bytes.len().is_multiple_of(4),
        "invalid base64: its length is no multiple of 4"
    );
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (i, chunk) in bytes.chunks(4).enumerate() {
        let last = (i + 1) * 4 == bytes.len();
        let pad = chunk.iter().rev().take_while(|c| **c == b'=').count();
        ensure!(pad <= 2 && (pad == 0 || last), "invalid base64 padding");
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | digit(c)?;
        }
        n <<= 6 * pad;
        let [_, a, b, c] = n.to_be_bytes();
        out.extend_from_slice(&[a, b, c][..3 - pad]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_base64() {
        assert_eq!(base64("").unwrap(), b"");
        assert_eq!(base64("Zg==").unwrap(), b"f");
        assert_eq!(base64("Zm8=").unwrap(), b"fo");
        assert_eq!(base64("Zm9v").unwrap(), b"foo");
        assert_eq!(base64("L2hhY2ZnL25vZGVzL3Mx").unwrap(), b"/hacfg/nodes/s1");
        assert_eq!(base64("/w==").unwrap(), b"\xff");
        for bad in ["Zg", "Zg=a", "Z===", "Zg==Zg==", "Zm9*"] {
            assert!(base64(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn listing() {
        let text = br#"{"header":{"cluster_id":1,"member_id":2,"revision":9,"raft_term":2},
          "kvs":[{"key":"L2hhY2ZnL25vZGVzL3Mx","create_revision":2,"mod_revision":2,"version":1,
          "value":"MTAuMC4wLjE=","lease":7587}],"count":1}"#;
        let got = parse_listing(text).unwrap();
        assert_eq!(got.revision, 9);
        assert_eq!(
            got.kvs,
            [(b"/hacfg/nodes/s1".to_vec(), b"10.0.0.1".to_vec())]
        );
        let empty = parse_listing(br#"{"header":{"revision":3}}"#).unwrap();
        assert!(empty.kvs.is_empty());
        assert!(parse_listing(br#"{"kvs":[]}"#).is_err());
        assert!(parse_listing(br#"{"header":{"revision":18446744073709551615}}"#).is_err());
        let long = format!(r#"{{"header":{{"revision":"{}"}}}}"#, "A".repeat(100_000));
        let e = format!("{:#}", parse_listing(long.as_bytes()).unwrap_err());
        assert!(e.len() < 1000, "{} bytes", e.len());
        assert!(parse_listing(br#"{"header":{"revision":3},"kvs":[{"key":"!"}]}"#).is_err());
    }

    #[test]
    fn a_failure_names_etcdctls_own_error_line() {
        let stderr = br#"{"level":"warn","msg":"retrying of unary invoker failed"}
Error: context deadline exceeded
"#;
        assert_eq!(
            reason(stderr).as_deref(),
            Some("Error: context deadline exceeded")
        );
        assert_eq!(reason(b"{\"level\":\"warn\"}\n"), None);
    }

    #[test]
    fn passes_the_client_options() {
        let client = Client {
            etcdctl_bin: "etcdctl".into(),
            endpoints: Some("127.0.0.1:1,127.0.0.1:2".into()),
            prefix: "/p/".into(),
            cacert: Some("/ca.pem".into()),
            cert: None,
            key: None,
            user: Some("hacfg".into()),
            timeout: Duration::from_secs(3),
        };
        let (args, shadowed) = client.global_args();
        assert_eq!(
            shadowed,
            [
                "ETCDCTL_DIAL_TIMEOUT",
                "ETCDCTL_COMMAND_TIMEOUT",
                "ETCDCTL_ENDPOINTS",
                "ETCDCTL_CACERT",
                "ETCDCTL_USER"
            ]
        );
        assert!(args.contains(&"--endpoints=127.0.0.1:1,127.0.0.1:2".to_string()));
        assert!(args.contains(&"--cacert=/ca.pem".to_string()));
        assert!(args.contains(&"--command-timeout=3s".to_string()));
        assert!(args.contains(&"--user=hacfg".to_string()));
    }
}
