//! `hacfg list`: the nodes as templates see them, and what hacfg knows of
//! each beyond its file (refused by HAProxy, a failed member that stays, a
//! file it cannot read).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Result;

use crate::exit::Outcome;
use crate::node::Node;
use crate::pipeline::{Balancer, HeldSet, Shown};
use crate::render;
use crate::stdout::print_stdout;
use crate::store::Unreadable;

/// `hacfg list`: the nodes, those HAProxy refused, and the failed members
/// that stay. A damaged record of stays is a warning: the nodes are still
/// listed.
pub fn run(b: &mut Balancer, json: bool) -> Result<Outcome> {
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

/// `hacfg list`: an aligned table, or a JSON array of what templates see.
/// A node HAProxy refused shows as `rejected` with HAProxy's words (JSON:
/// a `rejected` field); a failed member that stays (`--on-failed verify`)
/// as `stays: …` (JSON: a `stay` field, as `status` has it); a file hacfg
/// cannot read as `unreadable: …` (JSON: `file` and `unreadable`).
fn list_text(nodes: &[Node], marks: &Marks, default_port: u16, json: bool) -> Result<String> {
    if json {
        return json_text(nodes, marks, default_port);
    }
    let mut rows: Vec<[String; 6]> = nodes
        .iter()
        .map(|node| node_row(node, default_port, marks.status(node)))
        .collect();
    rows.extend(marks.unreadable.iter().map(|u| {
        let mut row: [String; 6] = Default::default();
        row[0].clone_from(&u.name);
        row[5] = format!("unreadable: {}", u.reason);
        row
    }));
    rows.sort_by(|a, b| a[0].cmp(&b[0]));
    let header = ["NAME", "ADDRESS", "PORT", "WEIGHT", "TAGS", "STATUS"];
    Ok(crate::stdout::table(header, &rows))
}

/// `list --json`: what templates see of each node, with `rejected` and
/// `stay` fields, then one `{file, unreadable}` per file hacfg cannot read.
fn json_text(nodes: &[Node], marks: &Marks, default_port: u16) -> Result<String> {
    let views = render::views(Arc::new(nodes.to_vec()), default_port);
    let mut list = Vec::with_capacity(views.len() + marks.unreadable.len());
    for (view, node) in views.iter().zip(nodes) {
        let mut value = serde_json::to_value(view)?;
        if let Some(map) = value.as_object_mut() {
            if let Some(r) = marks.reason(node) {
                map.insert("rejected".into(), r.into());
            }
            if let Some(st) = marks.stays.get(&node.name) {
                map.insert("stay".into(), serde_json::to_value(st)?);
            }
        }
        list.push(value);
    }
    list.extend(
        (marks.unreadable.iter())
            .map(|u| serde_json::json!({ "file": u.name, "unreadable": u.reason })),
    );
    Ok(serde_json::to_string_pretty(&list)? + "\n")
}

impl Marks<'_> {
    /// HAProxy's words, for a node it refused.
    fn reason(&self, node: &Node) -> Option<&str> {
        self.held.get(node).map(|h| h.reason.as_str())
    }

    /// The STATUS column: `rejected: …`, `stays: …` or `ok`.
    fn status(&self, node: &Node) -> String {
        match (self.reason(node), self.stays.get(&node.name)) {
            (Some(r), _) => format!("rejected: {}", r.lines().next().unwrap_or_default()),
            (None, Some(st)) => format!("stays: {}", st.text()),
            (None, None) => "ok".to_string(),
        }
    }
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
