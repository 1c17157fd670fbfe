//! One function per command: take the lock, change the folder, apply.

use std::fmt::Write as _;

use anyhow::{Result, bail};

use crate::apply;
use crate::config::{Command, Config, RenderMode};
use crate::exit::Outcome;
use crate::log::{Log, print_stdout};
use crate::node::Node;
use crate::output::Output;
use crate::render;
use crate::serf::{self, Action};
use crate::store::{Exclusive, Shared, Store};

pub fn run(cfg: &Config) -> Result<Outcome> {
    let mut log = Log::new(cfg.quiet, cfg.log_file.as_deref());
    let store = Store::new(&cfg.nodes_dir);
    match &cfg.command {
        Command::Add { node, render } => {
            store.create()?;
            let changed = store.write(&store.lock::<Shared>()?, node)?;
            log.info(&if changed {
                format!("added node {}", describe(node, cfg.default_port))
            } else {
                format!("node `{}` is already up to date", node.name)
            });
            if *render {
                update(cfg, &store, &mut log)?;
            }
        }
        Command::Remove {
            name,
            strict,
            render,
        } => {
            store.create()?;
            let removed = store.remove(&store.lock::<Shared>()?, name)?;
            if !removed && *strict {
                bail!(
                    "node `{name}` does not exist in `{}`",
                    store.dir().display()
                );
            }
            log.info(&if removed {
                format!("removed node `{name}`")
            } else {
                format!("node `{name}` was not there; nothing removed")
            });
            if *render {
                update(cfg, &store, &mut log)?;
            }
        }
        Command::List { json } => {
            let nodes = store.load_all(&store.lock::<Shared>()?)?;
            print_stdout(&list_text(&nodes, cfg.default_port, *json)?)?;
        }
        Command::Render {
            mode: RenderMode::Write,
        } => update(cfg, &store, &mut log)?,
        Command::Render { mode } => preview(cfg, &store, *mode)?,
        Command::Reload => {
            let _lock = store.lock::<Exclusive>()?;
            if let Some(settings) = &cfg.reload {
                apply::reload_or_restore(settings, None, &mut log)?;
            }
        }
        Command::Serf { roles, keep_failed } => {
            return serf_event(cfg, &store, &mut log, roles, *keep_failed);
        }
        Command::Sync {
            roles,
            rpc_addr,
            serf_bin,
            dry_run,
        } => {
            let members = serf::alive_members(serf_bin, rpc_addr.as_deref())?;
            sync(cfg, &store, &mut log, &members, roles, *dry_run)?;
        }
    }
    Ok(Outcome::Done)
}

/// `render --stdout` and `render --diff`: show, write nothing.
fn preview(cfg: &Config, store: &Store, mode: RenderMode) -> Result<()> {
    let output = Output::new(&cfg.output, cfg.write_mode)?;
    let rendered = {
        let lock = store.lock::<Shared>()?;
        apply::render_nodes(cfg, store.load_all(&lock)?, output.size())?
    };
    if mode == RenderMode::Stdout {
        return print_stdout(&rendered);
    }
    let current = output.read()?.unwrap_or_default();
    let current = String::from_utf8_lossy(&current);
    let out = cfg.output.display().to_string();
    let diff = similar::TextDiff::from_lines(current.as_ref(), rendered.as_str());
    let rendered_name = format!("{out} (rendered)");
    print_stdout(&diff.unified_diff().header(&out, &rendered_name).to_string())
}

/// `hacfg serf`: one event's members applied to the folder as one batch,
/// then one render. Skipped members make a partial success (exit 6).
fn serf_event(
    cfg: &Config,
    store: &Store,
    log: &mut Log,
    roles: &[String],
    keep_failed: bool,
) -> Result<Outcome> {
    let event = std::env::var("SERF_EVENT").unwrap_or_default();
    // Always read stdin to its end first: Serf waits for its handler to.
    let lines = serf::read_lines(std::io::stdin().lock())?;
    let action = serf::action_of(&event, keep_failed)?;
    if action == Action::Ignore {
        log.info(&format!("{event}: ignored"));
        return Ok(Outcome::Done);
    }
    let self_name = std::env::var("SERF_SELF_NAME").unwrap_or_default();
    let plan = serf::plan_event(lines, action, roles, &self_name, cfg.default_port);
    let mut skipped = plan.skipped.len();
    for reason in &plan.skipped {
        log.warn(&format!("{event}: skipped: {reason}"));
    }
    store.create()?;
    {
        let lock = store.lock::<Shared>()?;
        let (labels, results, verbs): (Vec<String>, _, _) = match action {
            Action::Upsert => (
                plan.upserts
                    .iter()
                    .map(|n| describe(n, cfg.default_port))
                    .collect(),
                store.write_all(&lock, &plan.upserts)?,
                ("added/updated node", "already up to date:"),
            ),
            _ => (
                plan.removals.iter().map(|n| format!("`{n}`")).collect(),
                store.remove_all(&lock, &plan.removals)?,
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
    }
    update(cfg, store, log)?;
    Ok(match skipped {
        0 => Outcome::Done,
        n => Outcome::Skipped(format!("{event}: {n} member(s) skipped, the rest applied")),
    })
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
            Err(e) => log.warn(&format!(
                "sync: skipped member {}: {e:#}",
                crate::quote::quote(&m.name)
            )),
        }
    }
    if dry_run {
        // A dry run on a lost folder shows everything as to be added.
        let current = if store.dir().is_dir() {
            store.load_all(&store.lock::<Shared>()?)?
        } else {
            Vec::new()
        };
        let plan = serf::plan_sync(&current, &wanted);
        let mut text = String::new();
        for node in &plan.upserts {
            let _ = writeln!(text, "+ {}", describe(node, cfg.default_port));
        }
        for name in &plan.removals {
            let _ = writeln!(text, "- `{name}`");
        }
        return print_stdout(&text);
    }
    store.create()?;
    let lock = store.lock::<Exclusive>()?;
    let current = store.load_all(&lock)?;
    let plan = serf::plan_sync(&current, &wanted);
    let written = store.write_all(&lock, &plan.upserts)?;
    let removed = store.remove_all(&lock, &plan.removals)?;
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
    apply::update(cfg, store, &lock, log)
}

/// Renders and applies under the exclusive lock. Folder changes are made
/// under the shared lock before it, so when a burst of calls queues here,
/// the first to get the lock renders everyone's nodes and the rest find the
/// live config already equal to their render: few writes, few reloads.
fn update(cfg: &Config, store: &Store, log: &mut Log) -> Result<()> {
    let lock = store.lock::<Exclusive>()?;
    apply::update(cfg, store, &lock, log)
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
