//! `show stat` (CSV): current sessions, status and last check per server.

use std::collections::BTreeMap;

use super::Error;
use super::target::{Target, plain_name};
use crate::quote::quote;

/// What `show stat` says of one server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stat {
    /// Current sessions (`scur`).
    pub sessions: u64,
    /// `UP`, `DOWN`, `DRAIN`, `MAINT`, … (`status`).
    pub status: String,
    /// The last check's result (`check_status` without its `* `), `INI`
    /// before the first.
    pub check: String,
    /// A check runs now (`check_status` starts with `* `): `* INI` is a
    /// first check that has no result yet, `* L7OK` one after a result.
    pub running: bool,
}

impl Stat {
    /// Whether a health check has a result (passed or failed): a first
    /// check still running has none.
    pub fn checked(&self) -> bool {
        !self.check.is_empty() && !self.check.starts_with("INI")
    }
}

/// `check_status` as HAProxy shows it: the last result, after `* ` while
/// a check runs.
fn check_status(field: &str) -> (String, bool) {
    match field.strip_prefix("* ") {
        Some(result) => (result.trim().to_string(), true),
        None => (field.trim().to_string(), false),
    }
}

/// Parses `show stat` CSV (servers only), by the header's column names. A
/// backend or server name that is no plain HAProxy name is an error: names
/// read here go into runtime commands.
pub fn parse(text: &str) -> Result<BTreeMap<Target, Stat>, Error> {
    let mut header: Vec<&str> = Vec::new();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("# ") {
            header = h.split(',').collect();
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        let col = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .and_then(|i| f.get(i))
                .copied()
                .unwrap_or_default()
        };
        if f.len() < 2 || matches!(f[1], "FRONTEND" | "BACKEND") {
            continue;
        }
        for (what, value) in [("backend", f[0]), ("server", f[1])] {
            if !plain_name(value) {
                return Err(Error::Answer(format!(
                    "invalid {what} name {} in `show stat`: HAProxy names are letters, \
                     digits, `-`, `_`, `.` and `:`",
                    quote(value)
                )));
            }
        }
        let (check, running) = check_status(col("check_status"));
        out.insert(
            Target::new(f[0], f[1]),
            Stat {
                sessions: col("scur").parse().unwrap_or(0),
                status: col("status").to_string(),
                check,
                running,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat() {
        let text = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status\nnodes,a,0,0,3,5,,9,0,0,,0,,0,0,0,0,DRAIN,1,1,0,0,0,1,0,,1,3,1,,9,,2,0,,1,L7OK\nnodes,BACKEND,0,0,3,5,,9\n";
        let stats = parse(text).unwrap();
        let a = &stats[&Target::new("nodes", "a")];
        assert_eq!(
            (a.sessions, a.status.as_str(), a.check.as_str()),
            (3, "DRAIN", "L7OK")
        );
        assert!(a.checked());
        assert_eq!(stats.len(), 1);
        let hostile = text.replace("nodes,a,", "nodes,a;disable,");
        let err = parse(&hostile).unwrap_err().to_string();
        assert!(err.contains("invalid server name \"a;disable\""), "{err}");
    }

    #[test]
    fn a_first_check_still_running_is_no_result() {
        let text = |check: &str| {
            format!("# pxname,svname,scur,status,check_status\nnodes,a,0,DRAIN,{check}\n")
        };
        let read = |check: &str| parse(&text(check)).unwrap()[&Target::new("nodes", "a")].clone();
        for (field, result, running, checked) in [
            ("* INI", "INI", true, false),
            ("INI", "INI", false, false),
            ("", "", false, false),
            ("* ", "", true, false),
            ("* L7OK", "L7OK", true, true),
            ("L4TOUT", "L4TOUT", false, true),
        ] {
            let stat = read(field);
            assert_eq!(
                (stat.check.as_str(), stat.running, stat.checked()),
                (result, running, checked),
                "{field:?}"
            );
        }
    }
}
