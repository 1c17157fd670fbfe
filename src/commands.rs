//! One function per command: take the lock, change the folder, apply.

use std::fmt::Write as _;

use anyhow::{Result, bail};

use crate::apply;
use crate::config::{Command, Config, RenderMode};
use crate::exit::{Code, Exit};
use crate::log::Log;
use crate::node::Node;
use crate::render;
use crate::serf::{self, Action};
use crate::store::Store;

pub fn run(cfg: Config) -> Result<()> {
    let mut log = Log::new(cfg.quiet, cfg.log_file.as_deref())?;
    let store = Store::new(&cfg.nodes_dir);
    match &cfg.command {
        Command::Add { node, render } => {
            let changed = {
                let _shared = store.lock(false, true)?;
                store.write(node)?
            };
            if changed {
                log.info(&format!("added node {}", describe(node, cfg.default_port)));
            } else {
                log.info(&format!("node `{}` is already up to date", node.name));
            }
            if *render {
                update(&cfg, &store, &mut log)?;
            }
        }
        Command::Remove {
            name,
            strict,
            render,
        } => {
            let removed = {
                let _shared = store.lock(false, true)?;
                store.remove(name)?
            };
            if removed {
                log.info(&format!("removed node `{name}`"));
            } else if *strict {
                bail!(
                    "node `{name}` does not exist in `{}`",
                    store.dir().display()
                );
            } else {
                log.info(&format!("node `{name}` was not there; nothing removed"));
            }
            if *render {
                update(&cfg, &store, &mut log)?;
            }
        }
        Command::List { json } => {
            let _lock = store.lock(false, false)?;
            let nodes = store.load_all()?;
            print!("{}", list_text(&nodes, cfg.default_port, *json)?);
        }
        Command::Render {
            mode: RenderMode::Write,
        } => update(&cfg, &store, &mut log)?,
        Command::Render { mode } => {
            let _lock = store.lock(false, false)?;
            let rendered = apply::render_nodes(&cfg, &store.load_all()?)?;
            if *mode == RenderMode::Stdout {
                print!("{rendered}");
            } else {
                let current = apply::read_output(&cfg.output)?.unwrap_or_default();
                let current = String::from_utf8_lossy(&current);
                let out = cfg.output.display().to_string();
                let diff = similar::TextDiff::from_lines(current.as_ref(), rendered.as_str());
                print!(
                    "{}",
                    diff.unified_diff()
                        .header(&out, &format!("{out} (rendered)"))
                );
            }
        }
        Command::Reload => {
            let _lock = store.lock(true, false)?;
            apply::reload_or_restore(&cfg, &mut log)?;
        }
        Command::Serf { roles, keep_failed } => {
            let event = std::env::var("SERF_EVENT").unwrap_or_default();
            let input = serf::read_stdin()?;
            let action = serf::action_of(&event, *keep_failed)?;
            if action == Action::Ignore {
                log.info(&format!("{event}: ignored"));
                return Ok(());
            }
            let skipped = {
                let _shared = store.lock(false, true)?;
                handle_event(&cfg, &store, &mut log, &event, action, roles, &input)?
            };
            update(&cfg, &store, &mut log)?;
            if skipped > 0 {
                return Err(Exit::new(
                    Code::Skipped,
                    format!("{event}: {skipped} member(s) skipped, the rest applied"),
                )
                .into());
            }
        }
        Command::Sync {
            roles,
            rpc_addr,
            serf_bin,
            dry_run,
        } => {
            let members = serf::alive_members(serf_bin, rpc_addr.as_deref())?;
            // A dry run on a lost folder shows everything as to be added.
            let missing = *dry_run && !store.dir().is_dir();
            let _lock = if missing {
                None
            } else {
                Some(store.lock(!dry_run, !dry_run)?)
            };
            let mut wanted = Vec::new();
            for m in members.iter().filter(|m| roles.contains(&m.role)) {
                match serf::node_of(m, cfg.default_port) {
                    Ok(node) => wanted.push(node),
                    Err(e) => log.warn(&format!("skipped member {:?}: {e:#}", m.name)),
                }
            }
            let current = if missing {
                Vec::new()
            } else {
                store.load_all()?
            };
            let plan = serf::plan_sync(&current, &wanted);
            for node in &plan.upserts {
                log.info(&format!(
                    "sync: add/update {}",
                    describe(node, cfg.default_port)
                ));
            }
            for name in &plan.removals {
                log.info(&format!("sync: remove `{name}`"));
            }
            if *dry_run {
                return Ok(());
            }
            for node in &plan.upserts {
                store.write(node)?;
            }
            for name in &plan.removals {
                store.remove(name)?;
            }
            apply::update(&cfg, &store, &mut log)?;
        }
    }
    Ok(())
}

/// Renders and applies under the exclusive lock. Folder changes are made
/// under the shared lock before it, so when a burst of calls queues here,
/// the first to get the lock renders everyone's nodes and the rest find the
/// live config already equal to their render: few writes, few reloads.
fn update(cfg: &Config, store: &Store, log: &mut Log) -> Result<()> {
    let _lock = store.lock(true, false)?;
    apply::update(cfg, store, log)
}

/// Applies one Serf event's members to the folder; returns how many were skipped.
fn handle_event(
    cfg: &Config,
    store: &Store,
    log: &mut Log,
    event: &str,
    action: Action,
    roles: &[String],
    input: &str,
) -> Result<usize> {
    let self_name = std::env::var("SERF_SELF_NAME").unwrap_or_default();
    let mut skipped = 0;
    for line in input.lines().filter(|l| !l.trim().is_empty()) {
        let member = match serf::parse_member_line(line) {
            Ok(m) => m,
            Err(e) => {
                log.warn(&format!("{event}: skipped: {e:#}"));
                skipped += 1;
                continue;
            }
        };
        if member.name == self_name || !roles.contains(&member.role) {
            continue;
        }
        let result = match action {
            Action::Upsert => serf::node_of(&member, cfg.default_port).and_then(|node| {
                let what = describe(&node, cfg.default_port);
                store.write(&node).map(|changed| match changed {
                    true => format!("{event}: added/updated node {what}"),
                    false => format!("{event}: node `{}` already up to date", node.name),
                })
            }),
            Action::Remove => store.remove(&member.name).map(|removed| match removed {
                true => format!("{event}: removed node `{}`", member.name),
                false => format!("{event}: node `{}` was not there", member.name),
            }),
            Action::Ignore => continue,
        };
        match result {
            Ok(message) => log.info(&message),
            Err(e) => {
                log.warn(&format!("{event}: skipped member {:?}: {e:#}", member.name));
                skipped += 1;
            }
        }
    }
    Ok(skipped)
}

/// `name address:port` for messages.
fn describe(node: &Node, default_port: u16) -> String {
    format!(
        "`{}` {}:{}",
        node.name,
        node.address,
        node.port.unwrap_or(default_port)
    )
}

/// `hacfg list`: an aligned table, or a JSON array of what templates see.
fn list_text(nodes: &[Node], default_port: u16, json: bool) -> Result<String> {
    let views = render::views(nodes, default_port);
    if json {
        return Ok(serde_json::to_string_pretty(&views)? + "\n");
    }
    let rows: Vec<[String; 5]> = views
        .iter()
        .map(|v| {
            let tags: Vec<String> = v.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            [
                v.name.to_string(),
                v.address.to_string(),
                v.port.to_string(),
                v.weight.to_string(),
                tags.join(","),
            ]
        })
        .collect();
    let header = ["NAME", "ADDRESS", "PORT", "WEIGHT", "TAGS"].map(String::from);
    let mut widths = [0; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    Ok(out)
}
