//! # corral-config: a project's config → a validated [`Project`]
//!
//! ## Theory of operation
//!
//! Every source — corral.toml, a service defined over the API (JSON), an instance rendered
//! from a template — is read into one format-neutral model: a tree of [`Node`]s, each value
//! with its [`Span`] (a line and column of the file, or a field of a definition). From there
//! the pipeline is the same for all, one file per stage:
//! 1. [`read`]: text into nodes; the top level into units and templates (names checked);
//! 2. `validate`: each unit's keys into an engine `UnitSpec` and a runtime [`UnitDef`] —
//!    every key is spelled and checked there and nowhere else;
//! 3. `resolve`: dependency names into ids, conditions against kinds, cycles;
//! 4. `lower`: a [`Project`] with its engine [`corral_engine::Plan`].
//!
//! Every error is collected, never the first only, and rendered with its place
//! ([`ConfigError`]). A project keeps what it validated, so services defined at run time
//! ([`Definition`], stored by the daemon as JSON) are added with
//! [`Project::with_definitions`] without reading the file again: only `reload` does that.
//! Nothing here starts a process.

mod diag;
mod env;
pub mod formats;
mod lower;
mod model;
pub mod node;
pub mod read;
mod replicas;
mod resolve;
pub mod schema;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use diag::{ConfigError, Diagnostic, LoadError, Placed, did_you_mean, line_col};
pub use env::{expand, parse_dotenv};
pub use lower::{Base, Definition, parse_project, parse_project_with};
pub use model::*;
pub use node::{Node, Span};
pub use replicas::MAX_REPLICAS;

pub const FILE_NAME: &str = "corral.toml";

/// The project files corral looks for in a directory, in order: its own first, then a
/// process-compose file, then a Procfile.
pub const DISCOVERED: &[&str] = &[
    FILE_NAME,
    "process-compose.yaml",
    "process-compose.yml",
    "compose.yaml",
    "compose.yml",
    "Procfile",
];

/// Walk up from `dir` to the first directory holding a project file (see [`DISCOVERED`]); a
/// `compose.yaml` counts only with a top-level `processes:` (docker compose's files have none).
pub fn find_config(dir: &Path) -> Result<PathBuf, LoadError> {
    let mut cur = Some(dir);
    while let Some(d) = cur {
        for name in DISCOVERED {
            let candidate = d.join(name);
            if !candidate.is_file() {
                continue;
            }
            if name.starts_with("compose.")
                && !std::fs::read_to_string(&candidate)
                    .is_ok_and(|t| formats::has_processes_key(&t))
            {
                continue;
            }
            return Ok(candidate);
        }
        cur = d.parent();
    }
    Err(LoadError::NotFound(dir.to_path_buf()))
}

/// Read and validate the config at `file`, with corral's own environment as the inherited one.
pub fn load(file: &Path) -> Result<Project, LoadError> {
    let inherited: BTreeMap<String, String> = std::env::vars().collect();
    load_inheriting(file, &inherited)
}

/// Read and validate the config at `file` with `inherited` as the environment processes
/// inherit.
pub fn load_inheriting(
    file: &Path,
    inherited: &BTreeMap<String, String>,
) -> Result<Project, LoadError> {
    load_with(file, inherited, &formats::ReadOptions::default())
}

/// [`load_inheriting`], with how to read the file (a Procfile's formation).
pub fn load_with(
    file: &Path,
    inherited: &BTreeMap<String, String>,
    options: &formats::ReadOptions,
) -> Result<Project, LoadError> {
    let file = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    let text = std::fs::read_to_string(&file).map_err(|source| LoadError::Read {
        path: file.clone(),
        source,
    })?;
    Ok(parse_project_with(&file, &text, inherited, options)?)
}

/// Whether `name` may name a unit (letters, digits, `-`, `_`, `.`; starting with a letter or
/// digit).
pub fn is_valid_name(name: &str) -> bool {
    read::valid_name(name)
}

#[cfg(test)]
mod tests;
