//! Rendering: a Jinja template and the sorted node list in, the config text out.
//! Only the template is read; the same nodes always give the same bytes.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;

use minijinja::value::{Enumerator, Object, ObjectRepr};
use minijinja::{
    AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior, Value, syntax::SyntaxConfig,
};

use crate::file;
use crate::node::Node;

/// The built-in template, `templates/haproxy.cfg.j2`, embedded in the binary.
pub const BUILTIN_TEMPLATE: &str = include_str!("../templates/haproxy.cfg.j2");
/// Name shown in errors about the built-in template.
pub const BUILTIN_NAME: &str = "haproxy.cfg.j2 (built-in)";
/// Backend of nodes that carry no `backend` tag (the lab's single backend).
pub const DEFAULT_BACKEND: &str = "nodes";
/// Server ids are positive 31-bit integers, as HAProxy's `id` keyword takes.
const MAX_ID: u32 = i32::MAX as u32;
/// Template instructions a render may run: a fixed budget plus some per
/// node (the built-in template needs about 40 per node), so a runaway loop
/// ends with an error instead of running until memory runs out.
const FUEL_BASE: u64 = 50_000_000;
const FUEL_PER_NODE: u64 = 10_000;
/// Output a render may produce: a fixed budget plus some per node (a
/// built-in server line is under 100 bytes).
const OUTPUT_BASE: usize = 64 << 20;
const OUTPUT_PER_NODE: usize = 16 << 10;

/// The template and what it renders with.
#[derive(Debug, Clone)]
pub struct Renderer {
    /// `None` means the built-in template.
    pub template: Option<PathBuf>,
    /// Port of nodes whose file gives none.
    pub default_port: u16,
    /// `vars` in templates.
    pub vars: BTreeMap<String, String>,
}

impl Renderer {
    /// Renders `nodes`; `size_hint` is the current output's size, and
    /// `output` is named in errors (it is left as it was).
    pub fn render(
        &self,
        nodes: Arc<Vec<Node>>,
        size_hint: usize,
        output: &Path,
    ) -> anyhow::Result<String> {
        let (name, source) = match &self.template {
            None => (BUILTIN_NAME.to_string(), BUILTIN_TEMPLATE.to_string()),
            Some(path) => {
                let context = || format!("unable to read template `{}`", path.display());
                let bytes = file::read_capped_with(path, file::Links::Follow, file::TEMPLATE_CAP)
                    .with_context(context)?
                    .with_context(|| format!("template `{}` does not exist", path.display()))?;
                let text = String::from_utf8(bytes).with_context(context)?;
                (path.display().to_string(), text)
            }
        };
        render_config(
            &name,
            &source,
            nodes,
            self.default_port,
            &self.vars,
            size_hint,
        )
        .with_context(|| {
            let out = output.display();
            format!("unable to render template `{name}`; `{out}` was left as it was")
        })
    }
}

/// The stable server id of a name: FNV-1a (32 bit) of the name, folded into
/// 1..=2^31-1. It depends only on the name, so a server keeps its place on
/// HAProxy's consistent-hashing ring while other nodes come and go.
pub fn stable_id(name: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in name.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % MAX_ID + 1
}

/// Server ids for `nodes` (sorted by name). Ids that collide are resolved
/// by taking the next free id, in name order, so the result is still
/// deterministic for a given node set.
pub fn assign_ids(nodes: &[Node]) -> Vec<u32> {
    let mut taken = HashSet::with_capacity(nodes.len());
    nodes
        .iter()
        .map(|n| {
            let mut id = stable_id(&n.name);
            while !taken.insert(id) {
                id = id % MAX_ID + 1;
            }
            id
        })
        .collect()
}

/// What templates see of each node (the very objects `nodes` holds in a
/// template), for `hacfg list --json`: the two cannot differ.
pub fn views(nodes: Arc<Vec<Node>>, default_port: u16) -> Vec<Value> {
    let count = nodes.len();
    let ids = assign_ids(&nodes);
    let pool = Arc::new(Pool {
        nodes,
        ids,
        default_port,
    });
    (0..count)
        .map(|index| {
            Value::from_object(NodeRef {
                pool: pool.clone(),
                index,
            })
        })
        .collect()
}

/// The nodes as the template engine sees them. Template values are made
/// lazily, field by field, from these: converting 100,000 nodes into
/// engine values up front would cost several times the output's size.
#[derive(Debug)]
struct Pool {
    nodes: Arc<Vec<Node>>,
    ids: Vec<u32>,
    default_port: u16,
}

/// `nodes`, or one backend's members (indexes into the pool).
#[derive(Debug)]
struct NodeList {
    pool: Arc<Pool>,
    members: Option<Vec<usize>>,
}

impl Object for NodeList {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let i = key.as_usize()?;
        let index = match &self.members {
            None => (i < self.pool.nodes.len()).then_some(i)?,
            Some(members) => *members.get(i)?,
        };
        Some(Value::from_object(NodeRef {
            pool: self.pool.clone(),
            index,
        }))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Seq(
            self.members
                .as_ref()
                .map_or(self.pool.nodes.len(), Vec::len),
        )
    }
}

/// One node: `name`, `address`, `port`, `weight`, `tags`, `id`.
#[derive(Debug)]
struct NodeRef {
    pool: Arc<Pool>,
    index: usize,
}

pub const NODE_FIELDS: &[&str] = &[
    "name", "address", "port", "weight", "tags", "id", "endpoint",
];

impl Object for NodeRef {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let node = &self.pool.nodes[self.index];
        Some(match key.as_str()? {
            "name" => Value::from(node.name.as_str()),
            "address" => Value::from(node.address.as_str()),
            "port" => Value::from(node.port_or(self.pool.default_port)),
            "weight" => Value::from(node.weight_or_default()),
            "tags" => Value::from(node.tags.clone()),
            "id" => Value::from(self.pool.ids[self.index]),
            "endpoint" => Value::from(node.endpoint(self.pool.default_port)),
            _ => return None,
        })
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(NODE_FIELDS)
    }
}

/// Renders `source` over `nodes` (sorted by name); `size_hint` is the
/// expected output size (the current file's). Strict undefined (a
/// misspelled variable is an error), no auto-escaping, and Jinja's
/// `trim_blocks`/`lstrip_blocks`.
pub fn render_config(
    name: &str,
    source: &str,
    nodes: Arc<Vec<Node>>,
    default_port: u16,
    vars: &BTreeMap<String, String>,
    size_hint: usize,
) -> Result<String, Error> {
    let env = environment(name, source, nodes.len())?;
    let output_cap = OUTPUT_BASE + OUTPUT_PER_NODE * nodes.len();
    let pool_len = nodes.len();
    let ctx = context(nodes, default_port, vars);
    // Rendering into a buffer sized for the output avoids the doubling
    // reallocations that would briefly hold a large config twice.
    let mut out = Capped {
        buf: Vec::with_capacity((size_hint + size_hint / 8 + 4096).min(output_cap)),
        cap: output_cap,
    };
    let rendered = env.get_template(name)?.render_captured_to(ctx, &mut out);
    if out.buf.len() >= out.cap {
        return Err(Error::new(
            ErrorKind::WriteFailure,
            format!(
                "the output grew past {} MiB, the limit for {} nodes",
                output_cap >> 20,
                pool_len
            ),
        ));
    }
    if let Err(e) = rendered {
        if e.kind() == ErrorKind::OutOfFuel {
            return Err(Error::new(
                ErrorKind::OutOfFuel,
                format!(
                    "the template ran more than {} instructions (a runaway loop?)",
                    FUEL_BASE + FUEL_PER_NODE * pool_len as u64
                ),
            ));
        }
        return Err(e);
    }
    String::from_utf8(out.buf).map_err(|e| Error::new(ErrorKind::BadSerialization, e.to_string()))
}

/// What a template sees: `nodes`, `backends` (each backend's members),
/// `default_backend` and `vars`.
fn context(nodes: Arc<Vec<Node>>, default_port: u16, vars: &BTreeMap<String, String>) -> Value {
    let groups = backend_groups(&nodes);
    let ids = assign_ids(&nodes);
    let pool = Arc::new(Pool {
        nodes,
        ids,
        default_port,
    });
    let backends: BTreeMap<String, Value> = groups
        .into_iter()
        .map(|(backend, members)| {
            let list = NodeList {
                pool: pool.clone(),
                members: Some(members),
            };
            (backend, Value::from_object(list))
        })
        .collect();
    minijinja::context! {
        nodes => Value::from_object(NodeList { pool, members: None }),
        backends => backends,
        default_backend => DEFAULT_BACKEND,
        vars => vars.clone(),
    }
}

/// The engine: strict undefined, no escaping, Jinja's block trimming, and
/// fuel for `count` nodes.
fn environment<'s>(name: &'s str, source: &'s str, count: usize) -> Result<Environment<'s>, Error> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_debug(true);
    env.set_syntax(
        SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build()?,
    );
    env.set_fuel(Some(FUEL_BASE + FUEL_PER_NODE * count as u64));
    env.add_template(name, source)?;
    Ok(env)
}

/// Each backend's members (indexes into `nodes`), the default one first
/// even when empty.
fn backend_groups(nodes: &[Node]) -> Vec<(String, Vec<usize>)> {
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::from([(DEFAULT_BACKEND, Vec::new())]);
    for (i, node) in nodes.iter().enumerate() {
        let backend = node
            .tags
            .get("backend")
            .map_or(DEFAULT_BACKEND, String::as_str);
        groups.entry(backend).or_default().push(i);
    }
    groups
        .into_iter()
        .map(|(b, members)| (b.to_string(), members))
        .collect()
}

/// A buffer that refuses to grow past `cap`.
struct Capped {
    buf: Vec<u8>,
    cap: usize,
}

impl std::io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > self.cap {
            self.buf.resize(self.cap, 0);
            return Err(std::io::Error::other("output too large"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_VARS: BTreeMap<String, String> = BTreeMap::new();

    fn node(name: &str, port: Option<u16>, backend: Option<&str>) -> Node {
        let mut node = Node::named(name);
        node.port = port;
        match backend {
            Some(b) => node.tag("backend", b),
            None => node,
        }
    }

    #[test]
    fn ids_are_stable_and_unique() {
        assert_eq!(stable_id("s1"), stable_id("s1"));
        assert!((1..=MAX_ID).contains(&stable_id("")));
        let nodes: Vec<Node> = (0..5000)
            .map(|i| node(&format!("n{i:05}"), None, None))
            .collect();
        let ids: HashSet<u32> = assign_ids(&nodes).into_iter().collect();
        assert_eq!(ids.len(), nodes.len());
        // A node's id does not depend on its neighbours.
        assert_eq!(assign_ids(&nodes[..1])[0], assign_ids(&nodes)[0]);
    }

    #[test]
    fn colliding_ids_are_resolved_in_name_order() {
        // Brute-force two names whose hashes collide after folding.
        let mut seen = std::collections::HashMap::new();
        let pair = (0u32..)
            .map(|i| format!("c{i}"))
            .find_map(|n| seen.insert(stable_id(&n) % 4096, n.clone()).map(|m| (m, n)))
            .unwrap();
        let mut nodes = vec![node(&pair.0, None, None), node(&pair.1, None, None)];
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let mut taken = HashSet::new();
        for id in assign_ids(&nodes) {
            assert!(taken.insert(id));
        }
    }

    #[test]
    fn strict_and_unescaped() {
        let nodes = [node("a", None, None)];
        let out = render_config(
            "t",
            "{{ nodes[0].name }}<&>\n",
            Arc::new(nodes.to_vec()),
            3000,
            &NO_VARS,
            0,
        )
        .unwrap();
        assert_eq!(out, "a<&>\n");
        let err = render_config(
            "t",
            "{{ nodes[0].nmae }}",
            Arc::new(nodes.to_vec()),
            3000,
            &NO_VARS,
            0,
        )
        .unwrap_err();
        assert_eq!(err.kind(), minijinja::ErrorKind::UndefinedError);
    }

    #[test]
    fn default_port_and_backends() {
        let nodes = [node("a", None, None), node("b", Some(81), Some("api"))];
        let src = "{% for b, ns in backends|items %}{{ b }}:{% for n in ns %} {{ n.name }}={{ n.port }}{% endfor %}\n{% endfor %}";
        let out = render_config("t", src, Arc::new(nodes.to_vec()), 3000, &NO_VARS, 0).unwrap();
        assert_eq!(out, "api: b=81nodes: a=3000"); // trim_blocks eats the newlines
    }

    #[test]
    fn runaway_templates_are_stopped() {
        let nodes = [node("a", None, None)];
        let err = render_config(
            "t",
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            Arc::new(nodes.to_vec()),
            3000,
            &NO_VARS,
            0,
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::OutOfFuel, "{err}");
        let err = render_config(
            "t",
            "{% for i in range(100000) %}{{ 'x' * 10000 }}{% endfor %}",
            Arc::new(nodes.to_vec()),
            3000,
            &NO_VARS,
            0,
        )
        .unwrap_err();
        assert!(err.to_string().contains("grew past"), "{err}");
    }

    #[test]
    fn builtin_is_deterministic() {
        let nodes = [node("a", Some(1), None), node("b", None, Some("api"))];
        let render = || {
            render_config(
                BUILTIN_NAME,
                BUILTIN_TEMPLATE,
                Arc::new(nodes.to_vec()),
                3000,
                &NO_VARS,
                0,
            )
            .unwrap()
        };
        let one = render();
        assert_eq!(one, render());
        assert!(one.contains("server a 10.0.0.1:1 check"), "{one}");
    }
}
