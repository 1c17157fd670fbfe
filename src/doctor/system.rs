//! Doctor's checks of what surrounds the folder: permissions, the output
//! and its mount, `haproxy`, HAProxy's sockets, files hacfg writes.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rustix::fs::Access;

use super::{Report, Setup};
use crate::haproxy::{Address, RuntimeApi, Socket};
use crate::output::WriteMode;
use crate::pipeline::Balancer;
use crate::process::Run;

/// How long `haproxy -v` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `haproxy -c` on the current output may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest one socket exchange may take here, whatever
/// `--socket-timeout` says.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(2);

/// The folder exists, this user may change it, others may not open it.
/// `false`: there is no folder to look into.
pub fn nodes_folder(b: &Balancer, report: &mut Report) -> bool {
    let dir = b.nodes_dir();
    let subject = format!("nodes folder `{}`", dir.display());
    let meta = match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => meta,
        Ok(_) => {
            report.fail(
                &subject,
                "is not a folder; set --nodes-dir (HACFG_NODES_DIR) to one",
            );
            return false;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let todo = "create it with `hacfg init`, or set --nodes-dir (HACFG_NODES_DIR)";
            report.fail(&subject, &format!("does not exist; {todo}"));
            return false;
        }
        Err(e) => {
            let todo = "check the path and its parent folders' permissions";
            report.fail(&subject, &format!("unable to look at it: {e}; {todo}"));
            return false;
        }
    };
    let uid = rustix::process::getuid().as_raw();
    match rustix::fs::access(dir, Access::READ_OK | Access::WRITE_OK | Access::EXEC_OK) {
        Ok(()) => report.ok(
            &subject,
            &format!("exists, writable by this user (uid {uid})"),
        ),
        Err(e) => report.fail(
            &subject,
            &format!(
                "not writable by this user (uid {uid}): {e}; run hacfg as the folder's owner \
                 (uid {}), or give this user write access (chown, chmod)",
                meta.uid()
            ),
        ),
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o007 != 0 {
        let why = "any user could hold its lock and read the pool";
        report.warn(
            &subject,
            &format!("others may open it (mode {mode:04o}): {why}; chmod o-rwx"),
        );
    }
    true
}

/// The output: a regular file (or none yet), its folder writable, and a
/// bind-mounted file written in place (a rename over a mount point fails).
pub fn output(b: &Balancer, write_mode: WriteMode, report: &mut Report) {
    let path = b.output_path();
    let subject = format!("output `{}`", path.display());
    if let Err(e) = b.check_output() {
        return report.fail(&subject, &format!("{e:#}; fix the path it names"));
    }
    let folder = parent(path);
    if let Err(e) = rustix::fs::access(folder, Access::WRITE_OK | Access::EXEC_OK) {
        let todo = "create it (`hacfg init`) or give this user write access: the new config and \
                    `.prev` are written beside the output";
        return report.fail(
            &subject,
            &format!("its folder `{}`: {e}; {todo}", folder.display()),
        );
    }
    let mounted = is_mount_point(path);
    match (mounted, write_mode) {
        (true, WriteMode::Rename) => report.fail(
            &subject,
            "is a mount point (a bind-mounted file): renaming over it fails; set --in-place \
             (HACFG_IN_PLACE=1)",
        ),
        (true, WriteMode::InPlace) => report.ok(&subject, "a bind-mounted file, written in place"),
        (false, _) if !path.exists() => {
            report.ok(&subject, "not written yet; its folder is writable");
        }
        (false, _) => report.ok(
            &subject,
            "its folder is writable, on the output's filesystem",
        ),
    }
}

/// Whether `path` is a mount point: on another device than its folder, or
/// named as one in /proc/self/mountinfo (a bind mount from the same one).
fn is_mount_point(path: &Path) -> bool {
    let Ok(canonical) = std::fs::canonicalize(path) else {
        return false;
    };
    let device = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
    if device(&canonical) != device(parent(&canonical)) {
        return true;
    }
    let cap = 4 << 20;
    let links = crate::file::Links::Follow;
    let Ok(Some(info)) =
        crate::file::read_capped_with(Path::new("/proc/self/mountinfo"), links, cap)
    else {
        return false;
    };
    String::from_utf8_lossy(&info)
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|point| Path::new(&unescape_mount(point)) == canonical)
}

/// A mountinfo path: space, tab, newline and backslash are written as
/// octal escapes (`\040`).
fn unescape_mount(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|o| o.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(o)) => {
                out.push(o.iter().fold(0u8, |n, d| n.wrapping_mul(8) + (d - b'0')));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The folder `path` is in (`.` for a bare name).
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// `haproxy`: found, its version, and `-c` on the current output.
pub fn haproxy(b: &Balancer, setup: &Setup, report: &mut Report) {
    let bin = match &setup.haproxy {
        Ok(bin) => bin,
        Err(why) => {
            let todo = "install HAProxy, or set --haproxy-bin (HACFG_HAPROXY_BIN); a Serf \
                        handler's or a unit's PATH may be shorter than your shell's";
            return report.fail("haproxy", &format!("{why}; {todo}"));
        }
    };
    let subject = format!("haproxy `{}`", bin.display());
    let version = match run(Command::new(bin).arg("-v"), "haproxy -v", VERSION_TIMEOUT) {
        Ok((true, text)) => text
            .split_whitespace()
            .nth(2)
            .unwrap_or("unknown")
            .to_string(),
        Ok((false, text)) | Err(text) => {
            let todo = "check that it is HAProxy and that it runs";
            return report.fail(&subject, &format!("`-v` failed: {text}; {todo}"));
        }
    };
    report.ok(&subject, &format!("version {version}"));
    if let Some(cmd) = &setup.check_cmd {
        return report.ok(
            &subject,
            &format!("candidates are checked by `{cmd}` instead"),
        );
    }
    let output = b.output_path();
    if !output.is_file() {
        return;
    }
    let mut check = Command::new(bin);
    check.arg("-c").arg("-f").arg(output);
    match run(&mut check, "haproxy -c", CHECK_TIMEOUT) {
        Ok((true, _)) => report.ok(&subject, "`-c` accepts the current output"),
        Ok((false, text)) | Err(text) => {
            let todo = "fix the template or the node it names, then `hacfg render`";
            let shown: String = text.lines().take(3).collect::<Vec<_>>().join(" ");
            report.fail(
                &subject,
                &format!("`-c` rejects the current output: {shown}; {todo}"),
            );
        }
    }
}

/// Runs `cmd`; whether it succeeded and what it printed, or why it could
/// not run.
fn run(cmd: &mut Command, what: &str, timeout: Duration) -> Result<(bool, String), String> {
    let done = Run::new(cmd, what)
        .run(timeout)
        .map_err(|e| format!("{e:#}"))?;
    Ok((done.success(), done.output()))
}

/// Each configured socket: it takes connections, at the admin level, and
/// the master socket is a master CLI (`show proc`: reloads go through it).
pub fn sockets(setup: &Setup, report: &mut Report) {
    let timeout = setup.socket_timeout.min(SOCKET_TIMEOUT);
    let sockets = [
        ("--master-socket", &setup.master_socket),
        ("--stats-socket", &setup.stats_socket),
    ];
    if sockets.iter().all(|(_, s)| s.is_none()) {
        let text = "no --master-socket or --stats-socket: every change reloads HAProxy, and \
                    `status` cannot run";
        return report.ok("runtime API", text);
    }
    for (option, socket) in sockets {
        let Some(address) = socket else { continue };
        let subject = format!("{option} `{address}`");
        let master = option == "--master-socket";
        if let Err(probed) = crate::haproxy::api::probe(option, address, timeout) {
            let todo = if master {
                format!("start HAProxy with `-W -S {address}`, or fix the address")
            } else {
                format!(
                    "add `stats socket {address} level admin` to the config's global section, \
                     or fix the address"
                )
            };
            report.fail(&subject, &format!("{}; {todo}", probed.why.reason()));
            continue;
        }
        admin_level(address, master, timeout, &subject, report);
        if master {
            master_cli(address, timeout, &subject, report);
        }
    }
}

/// `show cli level` answers `admin`: runtime changes need it.
fn admin_level(address: &Address, master: bool, timeout: Duration, subject: &str, r: &mut Report) {
    let socket = if master {
        Socket::Master(address.clone())
    } else {
        Socket::Stats(address.clone())
    };
    let api = RuntimeApi::new(socket, timeout);
    match api.command("show cli level") {
        Ok(level) if level == "admin" => r.ok(subject, "reachable, admin level"),
        Ok(level) => r.fail(
            subject,
            &format!(
                "reachable, but at level `{}`: runtime changes need admin; add `level admin` \
                 to its `stats socket` line",
                level.lines().next().unwrap_or_default()
            ),
        ),
        Err(e) => r.fail(subject, &format!("{e:#}; check that HAProxy answers on it")),
    }
}

/// The master CLI: `show proc` names the master (a reload goes through it).
fn master_cli(address: &Address, timeout: Duration, subject: &str, report: &mut Report) {
    let deadline = Instant::now() + timeout;
    let answer = crate::haproxy::socket::exchange_with(address, "show proc", deadline);
    match answer.map(|text| crate::haproxy::reload::parse_show_proc(&text)) {
        Ok(Some(proc)) => report.ok(
            subject,
            &format!(
                "master CLI: reloads supported ({}, {} so far)",
                crate::exit::counted(proc.workers.len(), "worker"),
                crate::exit::counted(usize::try_from(proc.reloads).unwrap_or(0), "reload")
            ),
        ),
        Ok(None) => report.fail(
            subject,
            "`show proc` names no master: this is a worker's socket; pass it as --stats-socket, \
             and the master's (`haproxy -W -S PATH`) as --master-socket",
        ),
        Err(e) => report.fail(subject, &format!("`show proc`: {e:#}; check the address")),
    }
}

/// The server-state file the rendered config names: hacfg saves the live
/// states there before a reload.
pub fn state_file(rendered: Option<&str>, report: &mut Report) {
    let Some(rendered) = rendered else { return };
    match crate::haproxy::config::state_file(rendered) {
        Some(path) => writable_file("state file", &path, report),
        None => report.ok(
            "state file",
            "the config names no server-state-file: server states start afresh at each reload",
        ),
    }
}

/// A file hacfg appends to or replaces: writable if it exists, else its
/// folder is (it is created at the first write).
pub fn writable_file(what: &str, path: &Path, report: &mut Report) {
    let subject = format!("{what} `{}`", path.display());
    let rw = Access::WRITE_OK;
    if path.exists() {
        return match rustix::fs::access(path, rw) {
            Ok(()) => report.ok(&subject, "writable"),
            Err(e) => report.fail(
                &subject,
                &format!("{e}; give this user write access to it (chown, chmod)"),
            ),
        };
    }
    let folder: PathBuf = parent(path).to_path_buf();
    match rustix::fs::access(&folder, rw | Access::EXEC_OK) {
        Ok(()) => report.ok(&subject, "not there yet; its folder is writable"),
        Err(e) => report.fail(
            &subject,
            &format!(
                "its folder `{}`: {e}; create it for this user (`install -d -o USER {}`)",
                folder.display(),
                folder.display()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape_mount(r"/srv/my\040cfg/a\134b"), r"/srv/my cfg/a\b");
        assert_eq!(unescape_mount(r"/x\04"), r"/x\04");
    }

    #[test]
    fn a_missing_file_in_a_writable_folder_is_fine() {
        let tmp = tempfile::tempdir().unwrap();
        let mut report = Report::default();
        writable_file("log file", &tmp.path().join("log"), &mut report);
        writable_file("log file", &tmp.path().join("no/such/log"), &mut report);
        let shown = report.to_string();
        assert!(shown.starts_with("ok "), "{shown}");
        assert!(
            shown.contains("fail  log file") && shown.contains("install -d"),
            "{shown}"
        );
    }
}
