//! Dispatch: one arm per command. The folder and HAProxy are reached
//! through one [`Balancer`], built here once; the Serf commands live in
//! `serf/`.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Result, bail};

use crate::cli::{Command, Config, RenderMode};
use crate::exit::Outcome;
use crate::log::{Log, Verbosity};
use crate::node::Node;
use crate::pipeline::{Balancer, HeldSet, Shown, Then};
use crate::render;
use crate::serf;
use crate::stdout::print_stdout;
use crate::store::{Store, Unreadable};

/// Runs the command, then records in the metrics what the pipeline did
/// (a run that failed part-way did some of it too).
pub fn run(cfg: &Config) -> Result<Outcome> {
    let b = &mut balancer(cfg);
    let ended = dispatch(b, cfg);
    crate::metrics::count(b.counts());
    ended
}

fn dispatch(b: &mut Balancer, cfg: &Config) -> Result<Outcome> {
    match &cfg.command {
        Command::Init => b.init(),
        Command::Completions(shell) => print_bytes(&crate::cli::completions(*shell)),
        Command::Man => print_bytes(&crate::cli::man_page()?),
        Command::Status { json } => crate::status::run(b, *json),
        Command::Settle { worker } => b.settle(*worker),
        Command::Add { node, render } => add(b, node, *render),
        Command::Remove {
            name,
            strict,
            render,
        } => remove(b, name, *strict, *render),
        Command::List { json } => list(b, *json),
        Command::Render {
            mode: RenderMode::Write,
        } => b.render(),
        Command::Render { mode } => preview(b, cfg, *mode),
        Command::Reload => b.reload(),
        Command::Serf { .. } | Command::Sync { .. } => serf_run(b, cfg),
        Command::Fleet(ask) => serf::fleet(ask),
    }
}

/// The door for this run. The worker's stderr goes nowhere; its log file
/// still gets every action.
fn balancer(cfg: &Config) -> Balancer<'_> {
    let worker = matches!(cfg.command, Command::Settle { worker: true });
    let verbosity = if worker {
        Verbosity::Quiet
    } else {
        cfg.verbosity
    };
    let log = Log::new(verbosity, cfg.log_file.as_deref());
    let output = (cfg.output.as_path(), cfg.write_mode);
    let store = Store::new(&cfg.nodes_dir).with_lock_wait(cfg.lock_wait);
    Balancer::new(&cfg.pipeline, store, output, log)
}

/// `hacfg serf` and `hacfg sync`, handed to `serf/`.
fn serf_run(b: &mut Balancer, cfg: &Config) -> Result<Outcome> {
    match &cfg.command {
        Command::Serf {
            roles,
            on_failed,
            event,
            self_name,
            query,
        } => serf::Event {
            name: event,
            self_name,
            query,
            roles,
            on_failed: *on_failed,
            log_file: cfg.log_file.as_deref(),
        }
        .run(b),
        Command::Sync {
            roles,
            on_failed,
            rpc_addr,
            serf_bin,
            dry_run,
            allow_empty,
        } => serf::Sync {
            roles,
            on_failed: *on_failed,
            rpc_addr: rpc_addr.as_deref(),
            serf_bin,
            dry_run: *dry_run,
            allow_empty: *allow_empty,
        }
        .run(b),
        other => bail!("not a Serf command: {other:?}"),
    }
}

/// `hacfg list`: the nodes, those HAProxy refused, and the failed members
/// that stay. A damaged record of stays is a warning: the nodes are still
/// listed.
fn list(b: &mut Balancer, json: bool) -> Result<Outcome> {
    let (loaded, held) = b.list()?;
    for file in &loaded.unreadable {
        b.log().warn(&format!("{file}: held back"));
    }
    let stays = b.stays().unwrap_or_else(|e| {
        b.log().warn(&format!("{e:#}"));
        BTreeMap::new()
    });
    let marks = Marks {
        held: &held,
        stays: &stays,
        unreadable: &loaded.unreadable,
    };
    print_stdout(&list_text(&loaded.nodes, &marks, b.default_port(), json)?)?;
    Ok(Outcome::Done)
}

/// What `list` says of a node besides its fields.
struct Marks<'a> {
    held: &'a HeldSet,
    stays: &'a BTreeMap<String, Shown>,
    unreadable: &'a [Unreadable],
}

/// `hacfg add`: one node file, then (unless `--no-render`) a render.
fn add(b: &mut Balancer, node: &Node, render: bool) -> Result<Outcome> {
    let then = if render {
        Then::Render {
            own: Some(&node.name),
            dead: &[],
        }
    } else {
        Then::Stop
    };
    let ((), outcome) = b.change(then, |folder, log| {
        if let Some((addr, port)) = crate::node::ambiguous_ipv6(&node.address) {
            log.warn(&format!(
                "`{}` is read as one IPv6 address; for address {addr} and port {port}, write \
                 [{addr}]:{port}",
                node.address
            ));
        }
        let described = folder.describe(node);
        log.info(&if folder.write(node)? {
            format!("added node {described}")
        } else {
            format!("node `{}` is already up to date", node.name)
        });
        Ok(())
    })?;
    Ok(outcome)
}

/// `hacfg remove`: one node file deleted, then (unless `--no-render`) a render.
fn remove(b: &mut Balancer, name: &str, strict: bool, render: bool) -> Result<Outcome> {
    let then = if render {
        Then::Render {
            own: None,
            dead: &[],
        }
    } else {
        Then::Stop
    };
    let ((), outcome) = b.change(then, |folder, log| {
        let removed = folder.remove(name)?;
        if !removed && strict {
            bail!(
                "node `{name}` does not exist in `{}`",
                folder.dir().display()
            );
        }
        log.info(&if removed {
            format!("removed node `{name}`")
        } else {
            format!("node `{name}` was not there; nothing removed")
        });
        Ok(())
    })?;
    Ok(outcome)
}

/// Writes generated text (completions, the man page) to stdout; a closed
/// stdout (`hacfg man | head`) is no error.
fn print_bytes(bytes: &[u8]) -> Result<Outcome> {
    print_stdout(&String::from_utf8_lossy(bytes))?;
    Ok(Outcome::Done)
}

/// `render --stdout` and `render --diff`: show, write nothing.
fn preview(b: &mut Balancer, cfg: &Config, mode: RenderMode) -> Result<Outcome> {
    let preview = b.preview()?;
    let rendered = preview.rendered;
    if mode == RenderMode::Stdout {
        print_stdout(&rendered)?;
        return Ok(Outcome::Done);
    }
    let current = preview.current;
    let out = cfg.output.display().to_string();
    let diff = similar::TextDiff::from_lines(current.as_str(), rendered.as_str());
    let rendered_name = format!("{out} (rendered)");
    print_stdout(&diff.unified_diff().header(&out, &rendered_name).to_string())?;
    let differs = current != rendered;
    Ok(match mode {
        RenderMode::Diff { exit_code: true } if differs => Outcome::Differs,
        _ => Outcome::Done,
    })
}

/// `hacfg list`: an aligned table, or a JSON array of what templates see.
/// A node HAProxy refused shows as `rejected` with HAProxy's words (JSON:
/// a `rejected` field); a failed member that stays (`--on-failed verify`)
/// as `stays: …` (JSON: a `stay` field, as `status` has it); a file hacfg
/// cannot read as `unreadable: …` (JSON: `file` and `unreadable`).
fn list_text(nodes: &[Node], marks: &Marks, default_port: u16, json: bool) -> Result<String> {
    let reason = |n: &Node| marks.held.get(n).map(|h| h.reason.as_str());
    let stay = |n: &Node| marks.stays.get(&n.name);
    let unreadable = marks.unreadable;
    if json {
        let views = render::views(Arc::new(nodes.to_vec()), default_port);
        let mut list = Vec::with_capacity(views.len() + unreadable.len());
        for (view, node) in views.iter().zip(nodes) {
            let mut value = serde_json::to_value(view)?;
            if let Some(map) = value.as_object_mut() {
                if let Some(r) = reason(node) {
                    map.insert("rejected".into(), r.into());
                }
                if let Some(st) = stay(node) {
                    map.insert("stay".into(), serde_json::to_value(st)?);
                }
            }
            list.push(value);
        }
        list.extend(
            unreadable
                .iter()
                .map(|u| serde_json::json!({ "file": u.name, "unreadable": u.reason })),
        );
        return Ok(serde_json::to_string_pretty(&list)? + "\n");
    }
    let mut rows: Vec<[String; 6]> = nodes
        .iter()
        .map(|node| {
            let status = match (reason(node), stay(node)) {
                (Some(r), _) => format!("rejected: {}", r.lines().next().unwrap_or_default()),
                (None, Some(st)) => format!("stays: {}", st.text()),
                (None, None) => "ok".to_string(),
            };
            node_row(node, default_port, status)
        })
        .collect();
    rows.extend(unreadable.iter().map(|u| {
        let status = format!("unreadable: {}", u.reason);
        [
            u.name.clone(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            status,
        ]
    }));
    rows.sort_by(|a, b| a[0].cmp(&b[0]));
    let header = ["NAME", "ADDRESS", "PORT", "WEIGHT", "TAGS", "STATUS"];
    Ok(crate::stdout::table(header, &rows))
}

/// One node's row in `list`'s table.
fn node_row(node: &Node, default_port: u16, status: String) -> [String; 6] {
    let tags: Vec<String> = node.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    [
        node.name.clone(),
        node.address.clone(),
        node.port_or(default_port).to_string(),
        node.weight_or_default().to_string(),
        tags.join(","),
        status,
    ]
}
