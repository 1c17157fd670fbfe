//! The detached worker's settings (`hacfg settle --worker`): the global
//! settings of the run that starts it, as JSON in one variable of its
//! environment. The environment is readable only by its user, a command
//! line by anyone: the template variables, `--check-cmd` and `--reload-cmd`
//! may hold secrets. The worker gets none of its caller's other `HACFG_*`
//! variables (see `pipeline::worker::spawn`), so these are all it knows.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::args::{ApplyArgs, GlobalArgs};
use crate::pipeline::Worker;

/// The variable that holds the worker's settings.
const SETTINGS: &str = "HACFG_WORKER_SETTINGS";

/// How to start the worker: this binary, `settle --worker`, and `global`
/// in its environment. Its template variables are `vars`, the ones this
/// run resolved (HACFG_VARS and `--var`); it never forces a write.
pub fn worker(global: &GlobalArgs, vars: &BTreeMap<String, String>) -> Result<Worker> {
    let settings = GlobalArgs {
        vars: vars.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        apply: ApplyArgs {
            force: false,
            ..global.apply.clone()
        },
        ..global.clone()
    };
    let json = serde_json::to_string(&settings).context("unable to write the worker's settings")?;
    Ok(Worker {
        exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("hacfg")),
        args: vec!["settle".into(), "--worker".into()],
        env: vec![(SETTINGS.into(), json.into())],
    })
}

/// The settings a worker was started with, if it was (the variable is
/// set); a damaged value is a usage error naming the variable.
pub fn settings() -> Result<Option<GlobalArgs>, clap::Error> {
    let Some(json) = std::env::var_os(SETTINGS).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    settings_from(&json.to_string_lossy()).map(Some)
}

pub(super) fn settings_from(json: &str) -> Result<GlobalArgs, clap::Error> {
    serde_json::from_str(json).map_err(|e| {
        use clap::CommandFactory;
        super::args::Cli::command().error(
            clap::error::ErrorKind::ValueValidation,
            format!("invalid {SETTINGS}: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;
    use std::path::PathBuf;
    use std::time::Duration;

    use super::super::args::{ApplyArg, ApplyArgs, GlobalArgs, WriteModeArg};
    use crate::haproxy::Address;

    /// Every field, none at its default: a field added to the settings
    /// does not compile here until it is given a value and tested.
    fn every_field() -> GlobalArgs {
        let path = |p: &str| PathBuf::from(p);
        GlobalArgs {
            nodes_dir: PathBuf::from(OsString::from_vec(b"/n\xffodes".to_vec())),
            template: Some(path("/t.j2")),
            output: path("/o/haproxy.cfg"),
            default_port: 81,
            vars: vec!["a=b,c".into(), r"back=slash\".into(), "q=\"x\"".into()],
            min_nodes: 2,
            quiet: true,
            verbose: true,
            log_file: Some(path("/l.log")),
            metrics_file: Some(path("/m.prom")),
            lock_timeout: Duration::from_millis(2500),
            apply: ApplyArgs {
                haproxy_bin: Some(path("/usr/sbin/haproxy")),
                check_cmd: Some("check {} --password s3cret".into()),
                no_check: true,
                reload: true,
                force: true,
                reload_cmd: Some("kill -USR2 1".into()),
                pid_file: Some(path("/run/haproxy.pid")),
                master_socket: Some(path("/run/master.sock").as_path().into()),
                reload_timeout: Duration::new(1, 140_000_000),
                apply_mode: ApplyArg::Runtime,
                stats_socket: Some(Address::parse("ipv6@[::1]:9999".as_ref()).unwrap()),
                drain_timeout: Duration::from_nanos(1),
                check_timeout: Duration::new(3599, 999_999_999),
                socket_timeout: Duration::from_millis(290),
                in_place: true,
                write_mode: Some(WriteModeArg::InPlace),
            },
        }
    }

    #[test]
    fn every_setting_survives_the_round_trip() {
        let settings = every_field();
        let json = serde_json::to_string(&settings).unwrap();
        assert_eq!(super::settings_from(&json).unwrap(), settings);
        let unset = GlobalArgs {
            template: None,
            log_file: None,
            ..settings
        };
        let json = serde_json::to_string(&unset).unwrap();
        assert_eq!(super::settings_from(&json).unwrap(), unset);
    }

    #[test]
    fn the_worker_gets_the_resolved_variables_and_no_force() {
        let settings = every_field();
        let vars = [("k".to_string(), "v,w".to_string())].into();
        let worker = super::worker(&settings, &vars).unwrap();
        assert_eq!(worker.args, ["settle", "--worker"]);
        let json = worker.env[0].1.to_str().unwrap();
        let read = super::settings_from(json).unwrap();
        assert_eq!(read.vars, ["k=v,w"]);
        assert!(!read.apply.force);
        let expected = GlobalArgs {
            vars: read.vars.clone(),
            apply: ApplyArgs {
                force: false,
                ..settings.apply.clone()
            },
            ..settings
        };
        assert_eq!(read, expected);
    }

    #[test]
    fn damaged_settings_are_a_usage_error_naming_the_variable() {
        let err = super::settings_from("{\"nodes_dir\": 1}").unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("HACFG_WORKER_SETTINGS"), "{err}");
    }
}
