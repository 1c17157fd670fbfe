//! The `vars` the built-in template reads: one table, shown by `render
//! --help` and the man page; tests hold it equal to the template and to the
//! table in docs/node-files-and-templates.md, so none of the three can drift.

/// One `vars.KEY` of the built-in template.
pub struct Var {
    pub name: &'static str,
    /// What the template uses when the variable is not set; `None`: nothing.
    pub default: Option<&'static str>,
    pub meaning: &'static str,
}

/// Every `vars.KEY` of templates/haproxy.cfg.j2, in the order it reads them.
pub const BUILTIN_VARS: &[Var] = &[
    Var {
        name: "maxconn",
        default: Some("4096"),
        meaning: "HAProxy's global maxconn",
    },
    Var {
        name: "log",
        default: Some("stdout format raw local0"),
        meaning: "where HAProxy logs (`/dev/log local0`: syslog)",
    },
    Var {
        name: "stats_socket",
        default: Some("/var/run/haproxy.sock"),
        meaning: "the admin stats socket (the runtime API)",
    },
    Var {
        name: "state_file",
        default: Some("/var/lib/haproxy/server-state"),
        meaning: "the server-state-file: server states kept across reloads",
    },
    Var {
        name: "hard_stop_after",
        default: Some("30s"),
        meaning: "how long an old worker may keep its connections after a reload",
    },
    Var {
        name: "mworker_max_reloads",
        default: Some("50"),
        meaning: "an old worker still there after this many reloads is stopped",
    },
    Var {
        name: "stats_bind",
        default: Some("*:1936"),
        meaning: "the stats page's address",
    },
    Var {
        name: "frontend_bind",
        default: Some("*:80"),
        meaning: "the address the frontend `localnodes` listens on",
    },
    Var {
        name: "server_options",
        default: None,
        meaning: "appended to every server line (`inter 1s rise 2 maxconn 100`)",
    },
];

/// The table as `render --help` shows it.
pub fn help() -> String {
    use std::fmt::Write as _;
    let width = BUILTIN_VARS.iter().map(|v| v.name.len()).max().unwrap_or(0);
    let mut text =
        String::from("Variables of the built-in template (--var KEY=VALUE or HACFG_VARS):\n");
    for var in BUILTIN_VARS {
        let default = var.default.unwrap_or("none");
        let _ = writeln!(
            text,
            "  {:width$}  {}\n  {:width$}  [default: {default}]",
            var.name, var.meaning, ""
        );
    }
    text.pop();
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Every `vars.KEY` the template reads, with its `| default("…")`.
    fn read_by_template() -> BTreeMap<String, Option<String>> {
        let source = crate::render::BUILTIN_TEMPLATE;
        let mut found = BTreeMap::new();
        for (at, _) in source.match_indices("vars.") {
            let rest = &source[at + "vars.".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let after = rest[name.len()..].trim_start();
            let default = after
                .strip_prefix("| default(\"")
                .and_then(|d| d.split_once("\")"))
                .map(|(d, _)| d.to_string());
            let seen = found.entry(name).or_insert(None);
            if default.is_some() {
                *seen = default;
            }
        }
        found
    }

    fn table() -> BTreeMap<String, Option<String>> {
        BUILTIN_VARS
            .iter()
            .map(|v| (v.name.to_string(), v.default.map(String::from)))
            .collect()
    }

    #[test]
    fn the_table_is_what_the_template_reads() {
        let read = read_by_template();
        assert!(read.contains_key("frontend_bind"), "{read:?}");
        assert_eq!(table(), read);
    }

    #[test]
    fn the_docs_list_the_same_variables_and_defaults() {
        let page = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/node-files-and-templates.md"
        ));
        let rows: BTreeMap<String, Option<String>> = page
            .lines()
            .filter_map(|l| l.strip_prefix("| `vars."))
            .map(|row| {
                let cells: Vec<&str> = row.split('|').map(str::trim).collect();
                let name = cells[0].trim_end_matches('`').to_string();
                let default = cells[1].strip_prefix('`').map(|d| d.trim_end_matches('`'));
                (name, default.map(String::from))
            })
            .collect();
        assert_eq!(rows, table());
    }

    #[test]
    fn help_names_every_variable_and_default() {
        let text = help();
        for var in BUILTIN_VARS {
            assert!(text.contains(var.name) && text.contains(var.meaning));
            assert!(text.contains(var.default.unwrap_or("none")));
        }
    }
}
