//! The file formats a project may be written in, each read into the same document: corral.toml
//! (TOML), a process-compose file (YAML, rewritten by [`compose`]) and a Procfile
//! ([`procfile`]). Which one a file is goes by its name, then by its content.

pub mod compose;
pub mod emit;
pub mod procfile;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::Path;

use crate::diag::Diagnostic;
use crate::node::Node;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Toml,
    ProcessCompose,
    Procfile,
}

impl Format {
    /// What the file at `path` is, by its name; for a name that says nothing, by `text`.
    pub fn of(path: &Path, text: &str) -> Format {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        if ext == "toml" {
            Format::Toml
        } else if ext == "yaml" || ext == "yml" {
            Format::ProcessCompose
        } else if name.starts_with("Procfile") {
            Format::Procfile
        } else if has_processes_key(text) {
            Format::ProcessCompose
        } else if looks_like_procfile(text) {
            Format::Procfile
        } else {
            Format::Toml
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Format::Toml => "corral.toml",
            Format::ProcessCompose => "a process-compose file",
            Format::Procfile => "a Procfile",
        }
    }
}

/// Whether a YAML text has a top-level `processes:` key (process-compose, not docker compose).
pub fn has_processes_key(text: &str) -> bool {
    text.lines().any(|l| {
        l.strip_prefix("processes")
            .is_some_and(|r| r.trim_start().starts_with(':'))
    })
}

/// Every line that is not blank or a comment is `name: command`.
fn looks_like_procfile(text: &str) -> bool {
    let mut any = false;
    for l in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        match l.split_once(':') {
            Some((n, c))
                if !n.is_empty()
                    && !c.trim().is_empty()
                    && n.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
            {
                any = true
            }
            _ => return false,
        }
    }
    any
}

/// How a file is read beyond its text.
#[derive(Clone, Debug, Default)]
pub struct ReadOptions {
    /// A Procfile formation (`web=2`): how many of each process type.
    pub formation: BTreeMap<String, usize>,
    /// Files read over the project file, in order (`-f base.yaml -f override.yaml`): a later
    /// file's keys override an earlier one's (mappings merge key by key; other values are
    /// replaced). Same format as the project file.
    pub overrides: Vec<std::path::PathBuf>,
}

/// `text` in `format` as a node tree, before it is shaped into corral.toml's document (what
/// files are merged at).
pub fn read(format: Format, text: &str) -> Result<Node, Vec<Diagnostic>> {
    match format {
        Format::Toml => crate::read::toml(text),
        Format::ProcessCompose => yaml::read(text),
        // Nothing to merge in a Procfile: shaped straight away (see `shape`).
        Format::Procfile => Ok(Node {
            value: crate::node::Value::String(text.to_string()),
            span: crate::node::Span::File(0..text.len()),
        }),
    }
}

/// A node tree of `format` (from [`read`], perhaps merged) as a corral.toml document, with
/// warnings about what it could not carry. `root` is the project's directory (its `.env`),
/// `inherited` corral's environment.
pub fn shape(
    format: Format,
    doc: Node,
    root: &Path,
    inherited: &BTreeMap<String, String>,
    options: &ReadOptions,
) -> Result<(Node, Vec<Diagnostic>), Vec<Diagnostic>> {
    match format {
        Format::Toml => Ok((doc, Vec::new())),
        Format::ProcessCompose => {
            // process-compose reads `.env` for `${VAR}` in the file (and corral gives it to
            // the processes, as for corral.toml).
            let dotenv: BTreeMap<String, String> = std::fs::read_to_string(root.join(".env"))
                .ok()
                .and_then(|t| crate::env::parse_dotenv(&t).ok())
                .map(|lines| lines.into_iter().map(|l| (l.key, l.value)).collect())
                .unwrap_or_default();
            let r = compose::rewrite(&doc, &dotenv, inherited)?;
            Ok((r.doc, r.warnings))
        }
        Format::Procfile => {
            let crate::node::Value::String(text) = &doc.value else {
                return Err(vec![Diagnostic::new(doc.span, "not a Procfile")]);
            };
            let base = inherited
                .get("PORT")
                .and_then(|p| p.parse().ok())
                .unwrap_or(5000);
            procfile::rewrite(text, base, &options.formation).map(|d| (d, Vec::new()))
        }
    }
}

/// [`read`] then [`shape`]: one file as a corral.toml document.
pub fn document(
    format: Format,
    text: &str,
    root: &Path,
    inherited: &BTreeMap<String, String>,
    options: &ReadOptions,
) -> Result<(Node, Vec<Diagnostic>), Vec<Diagnostic>> {
    shape(format, read(format, text)?, root, inherited, options)
}

/// `over` laid over `base`: mappings merge key by key (recursively), anything else in `over`
/// replaces what `base` has.
pub fn merge(base: Node, over: Node) -> Node {
    use crate::node::Value;
    match (base.value, over.value) {
        (Value::Table(mut b), Value::Table(o)) => {
            for (k, v) in o {
                match b.iter().position(|(bk, _)| bk.name == k.name) {
                    Some(i) => {
                        let (bk, bv) = b.remove(i);
                        b.insert(i, (bk, merge(bv, v)));
                    }
                    None => b.push((k, v)),
                }
            }
            Node {
                value: Value::Table(b),
                span: base.span,
            }
        }
        (_, value) => Node {
            value,
            span: over.span,
        },
    }
}

/// Every span in `n` moved `by` bytes on (a file placed after others in one combined text).
pub fn shift(n: &mut Node, by: usize) {
    use crate::node::{Span, Value};
    if let Span::File(r) = &mut n.span {
        *r = r.start + by..r.end + by;
    }
    match &mut n.value {
        Value::Array(a) => a.iter_mut().for_each(|x| shift(x, by)),
        Value::Table(t) => {
            for (k, v) in t {
                if let Span::File(r) = &mut k.span {
                    *r = r.start + by..r.end + by;
                }
                shift(v, by);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_files_override_key_by_key() {
        let base =
            yaml::read("processes:\n  a:\n    command: x\n    env: [A=1]\n  b:\n    command: y\n")
                .unwrap();
        let over = yaml::read("processes:\n  a:\n    command: z\n  c:\n    command: w\n").unwrap();
        let merged = merge(base, over).to_json();
        assert_eq!(merged["processes"]["a"]["command"], "z");
        assert_eq!(merged["processes"]["a"]["env"][0], "A=1");
        assert_eq!(merged["processes"]["b"]["command"], "y");
        assert_eq!(merged["processes"]["c"]["command"], "w");
    }
}
