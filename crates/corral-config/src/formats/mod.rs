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
}

/// `text` (in `format`) as a corral.toml document, with warnings about what it could not carry.
/// `root` is the project's directory (its `.env`), `inherited` corral's environment.
pub fn document(
    format: Format,
    text: &str,
    root: &Path,
    inherited: &BTreeMap<String, String>,
    options: &ReadOptions,
) -> Result<(Node, Vec<Diagnostic>), Vec<Diagnostic>> {
    match format {
        Format::Toml => crate::read::toml(text).map(|d| (d, Vec::new())),
        Format::ProcessCompose => {
            let doc = yaml::read(text)?;
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
            let base = inherited
                .get("PORT")
                .and_then(|p| p.parse().ok())
                .unwrap_or(5000);
            procfile::rewrite(text, base, &options.formation).map(|d| (d, Vec::new()))
        }
    }
}
