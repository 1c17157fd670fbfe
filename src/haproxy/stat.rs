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
    /// The last check's result (`check_status`), `INI` before the first.
    pub check: String,
}

impl Stat {
    /// Whether the first health check has run (passed or failed).
    pub fn checked(&self) -> bool {
        !self.check.is_empty() && !self.check.starts_with("INI")
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
        out.insert(
            Target::new(f[0], f[1]),
            Stat {
                sessions: col("scur").parse().unwrap_or(0),
                status: col("status").to_string(),
                check: col("check_status").to_string(),
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
}
