//! Dispatch: one arm per command. The folder and HAProxy are reached
//! through one [`Balancer`], built here once; the Serf commands live in
//! `serf/`.

use anyhow::{Result, bail};

use crate::cli::{Command, Config, RenderMode};
use crate::etcd;
use crate::exit::Outcome;
use crate::log::{Log, Verbosity};
use crate::node::Node;
use crate::pipeline::{Balancer, Then};
use crate::serf;
use crate::stdout::print_stdout;
use crate::store::Store;

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
        Command::List { json } => crate::list::run(b, *json),
        Command::Render {
            mode: RenderMode::Write,
        } => b.render(),
        Command::Render { mode } => preview(b, cfg, *mode),
        Command::Reload => b.reload(),
        Command::Serf { .. } | Command::Sync { .. } => serf_run(b, cfg),
        Command::Fleet(ask) => serf::fleet(ask),
        Command::Doctor(setup) => crate::doctor::run(b, setup),
        Command::Etcd { prefix, vars } => etcd::Event { prefix, vars }.run(b),
        Command::SyncEtcd {
            client,
            dry_run,
            allow_empty,
        } => etcd::Sync {
            client,
            dry_run: *dry_run,
            allow_empty: *allow_empty,
        }
        .run(b),
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
    // Doctor checks the log file; opening it would create it.
    let log_file = match cfg.command {
        Command::Doctor(_) => None,
        _ => cfg.log_file.as_deref(),
    };
    let log = Log::new(verbosity, log_file);
    let output = (cfg.output.as_path(), cfg.write_mode);
    let lock_wait = match cfg.command {
        Command::Doctor(_) => cfg.lock_wait.min(crate::doctor::LOCK_WAIT),
        _ => cfg.lock_wait,
    };
    let store = Store::new(&cfg.nodes_dir).with_lock_wait(lock_wait);
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
