//! The reload path: write the checked config, save the live server state
//! where the new config loads it from, reload, and put back what this run
//! wrote if the reload fails.

use anyhow::Result;

use super::{Settings, nodes_text};
use crate::atomic::{self, Staged};
use crate::exit::Failure;
use crate::haproxy::reload::{self, Reload};
use crate::haproxy::{RuntimeApi, config, state};
use crate::log::Log;
use crate::output::{OutputFile, Replaced};

/// Replaces the output with `rendered` (`staged` beside it, if staged),
/// then reloads if asked. The state file the new config loads is made to
/// hold this run's live state, or nothing, before anything is written.
pub fn write_and_reload(
    s: &Settings,
    output: &OutputFile,
    staged: Option<Staged>,
    rendered: &str,
    count: usize,
    log: &mut Log,
) -> Result<()> {
    if s.reload.is_some() {
        prepare_state(s.runtime.as_ref(), rendered, log)?;
    }
    let replaced = output.replace(staged, rendered.as_bytes())?;
    log.info(&format!(
        "wrote `{}` ({})",
        output.path().display(),
        nodes_text(count)
    ));
    if let Some(settings) = &s.reload {
        reload_or_restore(settings, Some(replaced), log)?;
    }
    Ok(())
}

/// Saves the live server state where the new config loads it from
/// (`server-state-file`), so that a server DOWN by its checks, drained or
/// weighted at runtime is still so right after the reload. Servers whose
/// address or port the new config changes are left out. A failure is a
/// warning: the reload matters more (and the old file is removed, see
/// [`prepare_state`]).
pub fn save_server_state(api: &RuntimeApi, rendered: &str, log: &mut Log) {
    if let Err(e) = prepare_state(Some(api), rendered, log) {
        log.warn(&format!("{e:#}"));
    }
}

/// Only a state file this run saved may be loaded: one left by an earlier
/// run would put servers back into the states they had then (a server in
/// maintenance, say). With a socket (`api`) the live state is saved; without
/// one, or when saving fails, the state file is removed (HAProxy takes a
/// missing one as a warning). Fails only when a stale file cannot be removed.
pub fn prepare_state(api: Option<&RuntimeApi>, rendered: &str, log: &mut Log) -> Result<()> {
    let Some(path) = config::state_file(rendered) else {
        return Ok(());
    };
    let why = match api {
        Some(api) => {
            let desired = config::servers(rendered);
            let saved = api
                .servers_state()
                .map(|text| state::to_keep(&text, &desired))
                .and_then(|text| atomic::write_atomic(&path, text.as_bytes()));
            match saved {
                Ok(()) => return Ok(()),
                Err(e) => format!("unable to save the server state before the reload: {e:#}"),
            }
        }
        None => "no socket to save the live server state from".to_string(),
    };
    match std::fs::remove_file(&path) {
        Ok(()) => {
            log.warn(&format!(
                "{why}; removed the old `{}`, so that the reload does not put servers back into \
                 the states it recorded",
                path.display()
            ));
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            log.debug(&format!(
                "{why}; no server state file at `{}`",
                path.display()
            ));
            Ok(())
        }
        Err(e) => Err(anyhow::anyhow!(
            "{why}, and the old server state `{}` cannot be removed ({e}): refusing to reload \
             with it; nothing was written",
            path.display()
        )),
    }
}

/// Reloads HAProxy. On failure, a config this run wrote (`replaced`) is
/// put back from `.prev`; a run that wrote nothing (`hacfg reload`) leaves
/// the output alone.
pub fn reload_or_restore(
    settings: &Reload,
    replaced: Option<Replaced>,
    log: &mut Log,
) -> Result<()> {
    let err = match reload::reload(settings) {
        Ok(message) => {
            log.info(&message);
            return Ok(());
        }
        Err(err) => err,
    };
    let restored = match replaced {
        Some(replaced) => replaced.restore()?,
        None => "the config was left as it is".to_string(),
    };
    Err(Failure::ReloadFailed(format!("reload failed; {restored}: {err:#}")).into())
}
