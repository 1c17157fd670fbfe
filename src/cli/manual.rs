//! The man page's hand-written sections, in a small markup turned into
//! roff by [`roff`]: blocks split by blank lines; `> TERM` starts an item
//! (`.TP`), `$ ` lines are an example kept as written, anything else a
//! paragraph; `` `code` `` is bold. The rest of the page is generated from
//! the clap definition (`docs`).

use std::fmt::Write as _;

use super::vars::BUILTIN_VARS;

pub const DESCRIPTION: &str = "\
hacfg keeps an HAProxy configuration in step with a changing set of backend nodes. Each node \
is one file in the nodes folder (`--nodes-dir`, `/nodes`), named after the node. A Jinja \
template (the built-in one, or `--template`) renders the folder into HAProxy's configuration \
(`--output`). The output is the same, byte for byte, for the same set of nodes.

Nothing goes live unchecked. The candidate is checked with `haproxy -c` (or `--check-cmd`), \
written beside the output and renamed over it, and the config it replaces is kept as \
`OUTPUT.prev`. With `--reload` HAProxy is reloaded (`--master-socket`, `--pid-file` or \
`--reload-cmd`) and the reload is verified; a reload that fails puts `.prev` back. A node \
HAProxy refuses is held back, and the rest goes live.

With HAProxy's runtime API (`--master-socket` or `--stats-socket`), a change that allows it \
is applied without a reload (`--apply auto`): servers are added, drained, removed and \
re-weighted over the socket, and the file is written for the next reload. A new server takes \
traffic once its first health check passed, and a removed one is deleted once its requests \
ended; a detached worker (`hacfg settle`) does that waiting, so that a Serf handler returns at \
once. Server states are saved before each reload and read back after it.

As a Serf event handler (`serf agent -event-handler \"hacfg serf\"`), hacfg makes every alive \
member with the role tag (`--role`, `backend`) a node, and removes a member that left or \
failed (`--on-failed`). `hacfg sync` repairs what missed events left behind, and `hacfg fleet` \
compares the balancers of a cluster.

Runs are serialized by a lock on the nodes folder, waited for at most `--lock-timeout` \
seconds. Every input has a bound and every wait a deadline; a broken or hostile node file, \
record, socket answer or Serf line is refused with a one-line error naming it. `hacfg doctor` \
checks a setup before an incident does.";

pub const NODE_FILES: &str = "\
One JSON object per file, on one line; the file name is the node's name:

$ {\"name\":\"s1\",\"address\":\"172.17.0.3\",\"port\":3000,\"weight\":1,\"tags\":{\"zone\":\"a\"}}

> name
Required; equals the file name. Letters, digits, `-`, `_`, `.` and `:`, at most 253 bytes, \
not starting with `-` or `.`.

> address
Required: an IPv4 or IPv6 literal (kept in canonical form) or an RFC 1123 host name.

> port
1-65535; missing: `--default-port` at render time.

> weight
0-256 (HAProxy's range); missing: 1.

> tags
A map of strings. Keys use `[A-Za-z0-9_.-]`; values those and `:/@+=`. The tag `backend` \
puts the node in that HAProxy backend.

Unknown fields, keys given twice and numbers that are not plain digits are errors. The lab's \
one-line formats are read too: `NAME IP`, `IP`, `IP:PORT`. Hidden files, editor and package \
leftovers (`*~`, `*.swp`, `*.bak`, `*.dpkg-*`, ...) are skipped; anything else must be a \
regular file of at most 64 KiB. A file that is no node is held back with an error naming it.";

pub const TEMPLATE_INTRO: &str = "\
Templates are minijinja (Jinja2 syntax), with strict undefined values (a misspelled variable \
is an error), no HTML escaping, and `trim_blocks` and `lstrip_blocks` on. A template error \
names the template, the line and its text; `-v` shows every variable in scope. A render may \
run 50 million instructions plus 10,000 per node and write 64 MiB plus 16 KiB per node.

> nodes
Every node, sorted by name.

> n.name, n.address, n.port, n.weight
A node's name (the HAProxy server name), address, port (or `--default-port`) and weight \
(default 1). `n.endpoint` is `address:port`, IPv6 in brackets.

> n.tags
Its tags (`n.tags.zone`); Serf's `role`, `port` and `weight` tags are not repeated here.

> n.id
A stable server id: the FNV-1a hash of the name in 1..2^31-1, the next free id on a \
collision.

> backends
A map from backend name to its nodes: nodes with a `backend` tag go to that backend, the \
others to `nodes`, which is always there.

> default_backend
`nodes`.

> vars
The `--var KEY=VALUE` flags and `HACFG_VARS`; `vars.x | default(\"...\")` for optional ones.

The built-in template (templates/haproxy.cfg.j2) gives the lab's config: a stats socket, \
`mode http`, a stats page, `frontend localnodes`, and `backend nodes` with a health check and \
one `server` line per node; nodes tagged `backend=api` get `backend api` for paths under \
`/api/`. Its `vars`:";

pub const FILES: &str = "\
> NODES_DIR/NAME
One node each (NODE FILES).

> NODES_DIR/.hacfg.index
A cache of the node files; safe to delete.

> NODES_DIR/.hacfg.pending
hacfg's own drains: new servers waiting for a first check, removed ones waiting to be idle.

> NODES_DIR/.hacfg.held
Nodes HAProxy refused, with its words.

> NODES_DIR/.hacfg.failed
Failed members that stay (`--on-failed verify`).

> NODES_DIR/.hacfg.waiting
Parts `--apply runtime` left for a reload.

> NODES_DIR/.hacfg.worker.lock, NODES_DIR/.hacfg.watch.lock
The detached workers' locks (mode 0600). The nodes folder itself is locked with flock(2): \
shared while node files change, exclusive while a render is applied.

> NAME.damaged
A record (or a worker's lock file) that could not be trusted, moved aside by the next run \
that renders, with one log line naming it.

> NODES_DIR/.hacfg-XXXXXX.tmp
A run's temp files; the next run removes a killed run's.

> OUTPUT.prev
The config that was live before the current one; put back when a reload fails.

> OUTPUT.sum
The checksum of the config hacfg last wrote: an output edited by hand since is noticed.

> OUTPUT.edited
A hand-edited output, kept before hacfg replaces it.

> /usr/local/etc/haproxy/haproxy.cfg
The default output (`--output`).

> /var/lib/haproxy/server-state
The built-in template's server-state file (`vars.state_file`), written before each reload.";

pub const EXIT_STATUS: &str = "\
Exit codes, the same for every command (the end of `hacfg --help` lists them too):

> 0
Success, including \"unchanged\" and \"node was not there\".

> 1
An error (bad input, a template error, I/O), `render --diff --exit-code` found changes, or \
`doctor` found a failure.

> 2
A usage error: an unknown flag, a missing argument, or a value on the command line or in a \
variable that is refused.

> 3
The check (`haproxy -c`) rejected the config: nothing written, nothing reloaded. Also a node \
HAProxy refuses (held back), or a runtime change it refuses.

> 4
The reload failed or timed out (a config this run wrote was restored from `.prev`), or a \
socket needed for it was unusable before anything changed.

> 5
A guard refused to shrink the pool: `--min-nodes`, or `sync` saw no other member or would \
remove more than half of the nodes.

> 6
Partial success: some members were skipped, or nodes HAProxy refused were held back.

> 7
`--apply runtime` met a change that needs a reload; HAProxy and the file are unchanged.

> 8
`status`: the live servers differ from the nodes folder.

> 9
`fleet`: balancers disagree, or one did not answer.

> 10
The nodes folder's lock was still held after `--lock-timeout`; nothing was changed. The \
message names the holder.";

pub const EXAMPLES: &str = "\
Create the nodes folder and write the first config:

$ hacfg init

Add a node, render and check, and remove it (it drains first):

$ hacfg add s1 172.17.0.3:3000 --weight 2
$ hacfg remove s1

Add a node through HAProxy's runtime API (HAProxy started with `-W -S`):

$ hacfg --reload --master-socket /run/haproxy-master.sock add s2 172.17.0.4

Show what a render would change, and exit 1 if it would:

$ hacfg render --diff --exit-code

Compare the servers HAProxy runs with the folder:

$ hacfg --master-socket /run/haproxy-master.sock status

Be a complete Serf event handler, and repair what missed events left every minute:

$ serf agent -tag role=balancer -event-handler 'hacfg serf'
$ hacfg sync

Check a setup before an incident does:

$ hacfg --master-socket /run/haproxy-master.sock doctor

Install this page on Debian:

$ hacfg man | gzip | sudo install -D -m 644 /dev/stdin /usr/local/share/man/man1/hacfg.1.gz";

pub const SEE_ALSO: &str = "\
haproxy(1), serf(1) (`serf agent`, `serf members`, `serf query`), systemd.timer(5) for the \
periodic `hacfg sync` (packaging/systemd), and etcdctl(1) or consul-template(1) for a \
membership kept in a store rather than in Serf: hacfg renders whatever writes the nodes \
folder. The guide: /usr/share/doc/hacfg/docs/ (docs/ in the source).";

/// The built-in template's `vars`, one item each.
pub fn vars_items() -> String {
    let mut text = String::new();
    for var in BUILTIN_VARS {
        let default = var
            .default
            .map_or(String::new(), |d| format!(" [default: `{d}`]"));
        let _ = write!(text, "\n\n> vars.{}\n{}.{default}", var.name, var.meaning);
    }
    text
}

/// The markup as roff.
pub fn roff(text: &str) -> String {
    let mut out = String::new();
    for block in text.split("\n\n") {
        if let Some(item) = block.strip_prefix("> ") {
            let (term, body) = item.split_once('\n').unwrap_or((item, ""));
            let _ = write!(out, ".TP\n\\fB{}\\fR\n{}\n", escape(term), inline(body));
        } else if block.starts_with("$ ") {
            out.push_str(".PP\n.nf\n.RS 4\n");
            for line in block.lines() {
                let _ = writeln!(out, "{}", escape(line.strip_prefix("$ ").unwrap_or(line)));
            }
            out.push_str(".RE\n.fi\n");
        } else {
            let _ = write!(out, ".PP\n{}\n", inline(block));
        }
    }
    out
}

/// A paragraph: escaped, `code` in bold, no line starting with a dot.
fn inline(text: &str) -> String {
    let escaped = escape(text);
    let mut out = String::with_capacity(escaped.len());
    for (i, part) in escaped.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "\\fB{part}\\fR");
        } else {
            out.push_str(part);
        }
    }
    out
}

/// Backslashes and hyphens escaped, and a line's leading `.` or `'` made
/// text (`\&`).
pub fn escape(text: &str) -> String {
    text.replace('\\', "\\e")
        .replace('-', "\\-")
        .lines()
        .map(|l| {
            if l.starts_with(['.', '\'']) {
                format!("\\&{l}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_becomes_roff() {
        let text = roff("A `--flag` here.\n\n> term-x\nits text\n\n$ hacfg init\n$ .x");
        assert_eq!(
            text,
            ".PP\nA \\fB\\-\\-flag\\fR here.\n.TP\n\\fBterm\\-x\\fR\nits text\n\
             .PP\n.nf\n.RS 4\nhacfg init\n\\&.x\n.RE\n.fi\n"
        );
    }
}
