//! One function per command: take the lock, change the folder, apply.

use std::fmt::Write as _;

use anyhow::{Result, bail};

use crate::apply;
use crate::config::{Command, Config, RenderMode};
use crate::exit::{Code, Exit};
use crate::log::Log;
use crate::node::{self, Node};
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
            let port = cfg.default_port;
            log.info(&match changed {
                true => format!("added node {}", describe(node, port)),
                false => format!("node `{}` is already up to date", node.name),
            });
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
            if !removed && *strict {
                bail!(
                    "node `{name}` does not exist in `{}`",
                    store.dir().display()
                );
            }
            log.info(&match removed {
                true => format!("removed node `{name}`"),
                false => format!("node `{name}` was not there; nothing removed"),
            });
            if *render {
                update(&cfg, &store, &mut log)?;
            }
        }
        Command::List { json } => {
            let _lock = store.lock(false, false)?;
            let nodes = store.load_all(false)?;
            print!("{}", list_text(&nodes, cfg.default_port, *json)?);
        }
        Command::Render {
            mode: RenderMode::Write,
        } => update(&cfg, &store, &mut log)?,
        Command::Render { mode } => preview(&cfg, &store, *mode)?,
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
                let message = format!("{event}: {skipped} member(s) skipped, the rest applied");
                return Err(Exit::new(Code::Skipped, message).into());
            }
        }
        Command::Sync {
            roles,
            rpc_addr,
            serf_bin,
            dry_run,
        } => {
            let members = serf::alive_members(serf_bin, rpc_addr.as_deref())?;
            sync(&cfg, &store, &mut log, &members, roles, *dry_run)?;
        }
    }
    Ok(())
}

/// `render --stdout` and `render --diff`: show, write nothing.
fn preview(cfg: &Config, store: &Store, mode: RenderMode) -> Result<()> {
    let _lock = store.lock(false, false)?;
    let rendered = apply::render_nodes(cfg, store.load_all(false)?)?;
    if mode == RenderMode::Stdout {
        print!("{rendered}");
        return Ok(());
    }
    let current = apply::read_output(&cfg.output)?.unwrap_or_default();
    let current = String::from_utf8_lossy(&current);
    let out = cfg.output.display().to_string();
    let diff = similar::TextDiff::from_lines(current.as_ref(), rendered.as_str());
    let rendered_name = format!("{out} (rendered)");
    print!("{}", diff.unified_diff().header(&out, &rendered_name));
    Ok(())
}

/// Makes the folder equal to the alive `members` of `roles`, then applies
/// once. A dry run prints the plan on stdout (`+ node`, `- node`) instead.
fn sync(
    cfg: &Config,
    store: &Store,
    log: &mut Log,
    members: &[serf::Member],
    roles: &[String],
    dry_run: bool,
) -> Result<()> {
    let mut wanted = Vec::new();
    for m in members.iter().filter(|m| roles.contains(&m.role)) {
        match serf::node_of(m, cfg.default_port) {
            Ok(node) => wanted.push(node),
            Err(e) => log.warn(&format!("sync: skipped member {:?}: {e:#}", m.name)),
        }
    }
    // A dry run on a lost folder shows everything as to be added.
    let lost = dry_run && !store.dir().is_dir();
    let _lock = match lost {
        true => None,
        false => Some(store.lock(!dry_run, !dry_run)?),
    };
    let current = match lost {
        true => Vec::new(),
        // Not refreshing the index: `apply::update` reads the folder again
        // after the changes and refreshes it then.
        false => store.load_all(false)?,
    };
    let plan = serf::plan_sync(&current, &wanted);
    if dry_run {
        for node in &plan.upserts {
            println!("+ {}", describe(node, cfg.default_port));
        }
        for name in &plan.removals {
            println!("- `{name}`");
        }
        return Ok(());
    }
    let written = store.write_all(&plan.upserts)?;
    let removed = store.remove_all(&plan.removals)?;
    for (node, result) in plan.upserts.iter().zip(written) {
        result?;
        log.info(&format!(
            "sync: added/updated node {}",
            describe(node, cfg.default_port)
        ));
    }
    for (name, result) in plan.removals.iter().zip(removed) {
        result?;
        log.info(&format!("sync: removed node `{name}`"));
    }
    apply::update(cfg, store, log)
}

/// Renders and applies under the exclusive lock. Folder changes are made
/// under the shared lock before it, so when a burst of calls queues here,
/// the first to get the lock renders everyone's nodes and the rest find the
/// live config already equal to their render: few writes, few reloads.
fn update(cfg: &Config, store: &Store, log: &mut Log) -> Result<()> {
    let _lock = store.lock(true, false)?;
    apply::update(cfg, store, log)
}

/// Applies one Serf event's members to the folder as one batch; returns
/// how many members were skipped (malformed, hostile, or not writable).
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
    let mut nodes = Vec::new();
    let mut names = Vec::new();
    for line in input.lines().filter(|l| !l.trim().is_empty()) {
        let member = serf::parse_member_line(line).and_then(|m| {
            if m.name == self_name || !roles.contains(&m.role) {
                return Ok(None);
            }
            match action {
                Action::Upsert => nodes.push(serf::node_of(&m, cfg.default_port)?),
                Action::Remove => {
                    node::validate_name(&m.name)?;
                    names.push(m.name.clone());
                }
                Action::Ignore => {}
            }
            Ok(Some(()))
        });
        if let Err(e) = member {
            log.warn(&format!("{event}: skipped: {e:#}"));
            skipped += 1;
        }
    }
    let (labels, results, verbs): (Vec<String>, _, _) = match action {
        Action::Upsert => (
            nodes
                .iter()
                .map(|n| describe(n, cfg.default_port))
                .collect(),
            store.write_all(&nodes)?,
            ("added/updated node", "already up to date:"),
        ),
        _ => (
            names.iter().map(|n| format!("`{n}`")).collect(),
            store.remove_all(&names)?,
            ("removed node", "was not there:"),
        ),
    };
    for (label, result) in labels.iter().zip(results) {
        match result {
            Ok(true) => log.info(&format!("{event}: {} {label}", verbs.0)),
            Ok(false) => log.info(&format!("{event}: {} {label}", verbs.1)),
            Err(e) => {
                log.warn(&format!("{event}: skipped {label}: {e:#}"));
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
