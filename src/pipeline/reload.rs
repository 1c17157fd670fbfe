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
/// then reloads if asked.
pub fn write_and_reload(
    s: &Settings,
    output: &OutputFile,
    staged: Option<Staged>,
    rendered: &str,
    count: usize,
    log: &mut Log,
) -> Result<()> {
    let replaced = output.replace(staged, rendered.as_bytes())?;
    log.info(&format!(
        "wrote `{}` ({})",
        output.path().display(),
        nodes_text(count)
    ));
    if let Some(settings) = &s.reload {
        if let Some(api) = &s.runtime {
            save_server_state(api, rendered, log);
        }
        reload_or_restore(settings, Some(replaced), log)?;
    }
    Ok(())
}

/// Saves the live server state where the new config loads it from
/// (`server-state-file`), so that a server DOWN by its checks, drained or
/// weighted at runtime is still so right after the reload. Servers whose
/// address or port the new config changes are left out. A failure is a
/// warning: the reload matters more.
pub fn save_server_state(api: &RuntimeApi, rendered: &str, log: &mut Log) {
    let Some(path) = config::state_file(rendered) else {
        return;
    };
    let desired = config::servers(rendered);
    let saved = api
        .servers_state()
        .map(|text| state::to_keep(&text, &desired))
        .and_then(|text| atomic::write_atomic(&path, text.as_bytes()));
    if let Err(e) = saved {
        log.warn(&format!(
            "unable to save the server state to `{}` before the reload: {e:#}",
            path.display()
        ));
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
