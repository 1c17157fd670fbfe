//! `show servers state` (format version 1): the live servers, their
//! admin and operational states, and the subset a reload should keep.

use std::collections::HashMap;

use super::Error;
use super::config::Server;
use super::target::{Target, plain_name, same_addr};
use crate::quote::quote;

/// Columns of a server line (0-based), as HAProxy 2.6 to 3.4 write them.
mod col {
    pub const BACKEND: usize = 1;
    pub const ID: usize = 2;
    pub const NAME: usize = 3;
    pub const ADDR: usize = 4;
    pub const OP_STATE: usize = 5;
    pub const ADMIN_STATE: usize = 6;
    pub const WEIGHT: usize = 7;
    pub const CHECK_STATUS: usize = 10;
    pub const CHECK_STATE: usize = 13;
    pub const PORT: usize = 18;
}

/// A server as HAProxy runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    pub backend: String,
    pub name: String,
    pub id: u32,
    pub addr: String,
    pub port: u16,
    /// The weight set at runtime (`srv_uweight`).
    pub weight: u16,
    /// `srv_op_state`: 0 down, 1 starting, 2 up, 3 stopping.
    pub op_state: u8,
    /// `srv_admin_state` bits: 0x1 forced maint, 0x8 forced drain, …
    pub admin_state: u8,
    /// Its health checks run and none has a result yet: what a server
    /// HAProxy keeps DOWN by `init-state` until its first check waits for.
    pub unchecked: bool,
}

/// `srv_check_status` before a check has a result (`HCHK_STATUS_INI`).
const CHECK_INI: u32 = 1;
/// `srv_check_state`'s bit for checks that run (`CHK_ST_ENABLED`).
const CHECK_ENABLED: u32 = 0x04;

/// `srv_admin_state`'s bit for a drain forced through the runtime API.
pub const FORCED_DRAIN: u8 = 0x08;

/// The admin state an operator (or hacfg) set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admin {
    Ready,
    Drain,
    Maint,
}

impl Admin {
    pub fn as_str(self) -> &'static str {
        match self {
            Admin::Ready => "ready",
            Admin::Drain => "drain",
            Admin::Maint => "maint",
        }
    }
}

impl Live {
    pub fn target(&self) -> Target {
        Target::new(&self.backend, &self.name)
    }

    /// Maintenance (forced, inherited or from DNS) wins over drain.
    pub fn admin(&self) -> Admin {
        match self.admin_state {
            a if a & 0x27 != 0 => Admin::Maint,
            a if a & 0x18 != 0 => Admin::Drain,
            _ => Admin::Ready,
        }
    }

    /// `down`, `starting`, `up` or `stopping`.
    pub fn operational(&self) -> &'static str {
        match self.op_state {
            0 => "down",
            1 => "starting",
            2 => "up",
            _ => "stopping",
        }
    }
}

/// Parses `show servers state`.
pub fn parse(text: &str) -> Result<Vec<Live>, Error> {
    let mut lines = text.lines();
    let version = lines.next().unwrap_or_default().trim();
    if version != "1" {
        return Err(Error::Answer(format!(
            "unknown `show servers state` format {}",
            quote(version)
        )));
    }
    lines
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(parse_line)
        .collect()
}

/// One server's line of `show servers state`.
fn parse_line(line: &str) -> Result<Live, Error> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let field = |i: usize| f.get(i).copied().unwrap_or_default();
    let num = |i: usize| field(i).parse::<u32>().ok();
    let (Some(id), Some(op), Some(admin), Some(weight), Some(port)) = (
        num(col::ID),
        num(col::OP_STATE),
        num(col::ADMIN_STATE),
        num(col::WEIGHT),
        num(col::PORT),
    ) else {
        return Err(Error::Answer(format!(
            "malformed `show servers state` line {}",
            quote(line)
        )));
    };
    let (backend, name, addr) = (field(col::BACKEND), field(col::NAME), field(col::ADDR));
    plain_fields(backend, name, addr)?;
    // A number past its range is an error, never read as another value
    // (a weight of 99999 as 0, an op state of 300 as down).
    let at = Target::new(backend, name);
    // Read only to keep a server serving for a while: a column that is
    // missing or no number claims nothing.
    let unchecked = num(col::CHECK_STATUS) == Some(CHECK_INI)
        && num(col::CHECK_STATE).is_some_and(|s| s & CHECK_ENABLED != 0);
    Ok(Live {
        id,
        port: in_range("srv_port", port, u16::MAX.into(), &at)?,
        weight: in_range("srv_uweight", weight, 256, &at)?,
        op_state: in_range("srv_op_state", op, 3, &at)?,
        admin_state: in_range("srv_admin_state", admin, u8::MAX.into(), &at)?,
        backend: at.backend,
        name: at.name,
        addr: addr.to_string(),
        unchecked,
    })
}

/// These go into runtime commands (`set server BACKEND/NAME …`, `… addr
/// ADDR`): a `;` in them would start a second command.
fn plain_fields(backend: &str, name: &str, addr: &str) -> Result<(), Error> {
    for (what, value) in [("backend", backend), ("server", name)] {
        if !plain_name(value) {
            return Err(Error::Answer(format!(
                "invalid {what} name {} in `show servers state`: HAProxy names are \
                 letters, digits, `-`, `_`, `.` and `:`",
                quote(value)
            )));
        }
    }
    // An IP address, or `-` for none.
    if !plain_name(addr) {
        return Err(Error::Answer(format!(
            "invalid address {} of `{backend}/{name}` in `show servers state`",
            quote(addr)
        )));
    }
    Ok(())
}

/// `value` of `column` as a `T`, if it is at most `max` (HAProxy's range).
fn in_range<T: TryFrom<u32>>(column: &str, value: u32, max: u32, at: &Target) -> Result<T, Error> {
    match T::try_from(value) {
        Ok(v) if value <= max => Ok(v),
        _ => Err(Error::Answer(format!(
            "out-of-range {column} {value} of `{at}` in `show servers state`: HAProxy's \
             range is 0-{max}"
        ))),
    }
}

/// The live state to load after a reload: `show servers state`, less the
/// servers whose address or port the new config changes (HAProxy would put
/// the old port back) and those it drops.
pub fn to_keep(state: &str, desired: &[Server]) -> String {
    let wanted: HashMap<(&str, &str), (&str, u16)> = desired
        .iter()
        .map(|s| {
            (
                (s.backend.as_str(), s.name.as_str()),
                (s.addr.as_str(), s.port),
            )
        })
        .collect();
    let mut out = String::with_capacity(state.len());
    for line in state.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let keep = line.starts_with('#')
            || f.len() <= col::PORT
            || f[col::PORT].parse::<u16>().is_ok_and(|port| {
                wanted
                    .get(&(f[col::BACKEND], f[col::NAME]))
                    .is_some_and(|(addr, p)| same_addr(addr, f[col::ADDR]) && *p == port)
            });
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// `state` with the forced drain of `targets` cleared: hacfg's own drains
/// (a new server's, until its first check), which must never come back
/// from the file at a later reload, when nothing waits to undo them.
pub fn without_drain(state: &str, targets: &[Target]) -> String {
    let mut out = String::with_capacity(state.len());
    for line in state.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let ours = !line.starts_with('#')
            && f.len() > col::ADMIN_STATE
            && targets
                .iter()
                .any(|t| t.backend == f[col::BACKEND] && t.name == f[col::NAME]);
        match f[..]
            .get(col::ADMIN_STATE)
            .and_then(|a| a.parse::<u8>().ok())
        {
            Some(admin) if ours => {
                let mut f = f.clone();
                let cleared = (admin & !FORCED_DRAIN).to_string();
                f[col::ADMIN_STATE] = &cleared;
                out.push_str(&f.join(" "));
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The servers of `config` as HAProxy would run them, all up and ready:
/// the live state planners' unit tests start from.
#[cfg(test)]
pub fn all_up(config: &str) -> Vec<Live> {
    super::config::servers(config)
        .into_iter()
        .map(|s| Live {
            backend: s.backend,
            name: s.name,
            id: s.id.unwrap_or(0),
            addr: s.addr,
            port: s.port,
            weight: s.weight,
            op_state: 2,
            admin_state: 0,
            unchecked: false,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const STATE: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n3 nodes 11 a 127.0.0.1 2 8 5 1 1 8 2 0 6 0 0 1 - 18081 - 0 0 - - 0\n3 nodes 12 b 127.0.0.2 0 0 1 1 1 8 2 0 6 0 0 1 - 18082 - 0 0 - - 0\n";

    #[test]
    fn parses_servers_state() {
        let live = parse(STATE).unwrap();
        assert_eq!(live.len(), 2);
        let a = &live[0];
        assert_eq!(
            (a.name.as_str(), a.id, a.port, a.weight, a.admin_state),
            ("a", 11, 18081, 5, 8)
        );
        assert_eq!((a.admin(), a.operational()), (Admin::Drain, "up"));
        assert_eq!(
            (live[1].admin(), live[1].operational()),
            (Admin::Ready, "down")
        );
        assert!(parse("garbage").is_err());
        assert!(parse("1\n3 nodes x\n").is_err());
    }

    #[test]
    fn a_server_whose_checks_have_no_result_yet_is_unchecked() {
        // As HAProxy 3.4 and 2.6 wrote them: `n` added with `init-state
        // down` before its first check; `a` after a failed one; `p` with no
        // `check`; `q` with `check` whose checks were never enabled.
        let head = STATE.lines().take(2).collect::<Vec<_>>().join("\n");
        let text = format!(
            "{head}\n\
             2 nodes 1 a 127.0.0.1 0 0 1 1 4 8 2 0 6 0 0 0 - 1 - 0 0 - - 0\n\
             2 nodes 2 n 127.0.0.1 0 0 1 1 0 1 0 1 6 0 0 0 - 18931 - 0 0 - - 0\n\
             2 nodes 3 p 127.0.0.1 0 1 1 1 0 1 0 0 0 0 0 0 - 18931 - 0 0 - - 0\n\
             2 nodes 4 q 127.0.0.1 0 1 1 1 0 1 0 0 2 0 0 0 - 18931 - 0 0 - - 0\n"
        );
        let unchecked: Vec<bool> = parse(&text).unwrap().iter().map(|l| l.unchecked).collect();
        assert_eq!(unchecked, [false, true, false, false]);
        // Columns cut short or no number: no claim, and still a server.
        let short = format!("{head}\n2 nodes 2 n 127.0.0.1 0 0 1 1 0 x 0 1 y 0 0 0 - 80\n");
        assert!(!parse(&short).unwrap()[0].unchecked);
    }

    #[test]
    fn out_of_range_numbers_are_errors() {
        // op state, admin state, weight, port: each past its range.
        let line = |op: &str, admin: &str, weight: &str, port: &str| {
            format!(
                "1\n3 nodes 11 a 10.0.0.1 {op} {admin} {weight} 1 1 8 2 0 6 0 0 1 - {port} - 0 0 - - 0\n"
            )
        };
        let highest = parse(&line("3", "255", "256", "65535")).unwrap();
        let l = &highest[0];
        assert_eq!(
            (l.op_state, l.admin_state, l.weight, l.port),
            (3, 255, 256, 65535)
        );
        for (state, value) in [
            (line("300", "0", "1", "80"), "srv_op_state 300"),
            (line("4", "0", "1", "80"), "srv_op_state 4"),
            (line("2", "256", "1", "80"), "srv_admin_state 256"),
            (line("2", "0", "99999", "80"), "srv_uweight 99999"),
            (line("2", "0", "257", "80"), "srv_uweight 257"),
            (line("2", "0", "1", "65536"), "srv_port 65536"),
        ] {
            let err = parse(&state).map_or_else(|e| e.to_string(), |l| format!("{l:?}"));
            assert!(err.contains(value), "{err}");
        }
    }

    #[test]
    fn names_that_are_no_haproxy_names_are_refused() {
        let line = |backend: &str, name: &str, addr: &str| {
            format!("1\n3 {backend} 11 {name} {addr} 2 0 1 1 1 8 2 0 6 0 0 1 - 80 - 0 0 - - 0\n")
        };
        assert!(parse(&line("nodes", "a", "::127.0.0.11")).is_ok());
        assert!(parse(&line("nodes", "a", "-")).is_ok());
        for (state, value) in [
            (
                line("nodes", "x;disable", "10.0.0.1"),
                "server name \"x;disable\"",
            ),
            (line("n;odes", "a", "10.0.0.1"), "backend name \"n;odes\""),
            (
                line("nodes", "a", "10.0.0.1;disable"),
                "address \"10.0.0.1;disable\"",
            ),
        ] {
            let err = parse(&state).unwrap_err().to_string();
            assert!(err.contains(value), "{err}");
        }
    }

    #[test]
    fn what_to_keep() {
        let desired = super::super::config::servers(
            "backend nodes\n    server a 127.0.0.1:18081\n    server b 127.0.0.2:9999\n",
        );
        let kept = to_keep(STATE, &desired);
        assert!(kept.contains(" a 127.0.0.1 "), "{kept}");
        assert!(!kept.contains(" b 127.0.0.2 "), "{kept}");
        assert!(kept.starts_with("1\n# be_id"));
        // HAProxy writes `::7f00:b` as `::127.0.0.11`: the same address.
        let desired = super::super::config::servers(
            "backend nodes\n    server a [::7f00:b]:18081\n    server b 127.0.0.2:18082\n",
        );
        let kept = to_keep(&STATE.replace("127.0.0.1", "::127.0.0.11"), &desired);
        assert!(kept.contains(" a ::127.0.0.11 "), "{kept}");
        assert!(kept.contains(" b 127.0.0.2 "), "{kept}");
    }
}
