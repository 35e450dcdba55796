//! # corral-config: `corral.toml` → a validated [`Project`]
//!
//! The pipeline: find the file ([`find_config`]) → parse TOML with spans → walk it, collecting
//! every error with its line and column ([`ConfigError`]) → resolve names into an engine
//! [`corral_engine::Plan`] plus one [`UnitDef`] per unit (command, env, ports, probes) for the
//! runtime. Nothing here starts a process.

mod diag;
mod env;
mod model;
mod parse;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use diag::{ConfigError, Diagnostic, LoadError, did_you_mean, line_col};
pub use env::{expand, parse_dotenv};
pub use model::*;
pub use parse::parse_project;

pub const FILE_NAME: &str = "corral.toml";

/// Walk up from `dir` to the first directory holding a `corral.toml`.
pub fn find_config(dir: &Path) -> Result<PathBuf, LoadError> {
    let mut cur = Some(dir);
    while let Some(d) = cur {
        let candidate = d.join(FILE_NAME);
        if candidate.is_file() {
            return Ok(candidate);
        }
        cur = d.parent();
    }
    Err(LoadError::NotFound(dir.to_path_buf()))
}

/// Read and validate the config at `file`, with corral's own environment as the inherited one.
pub fn load(file: &Path) -> Result<Project, LoadError> {
    load_with(file, &[])
}

/// Like [`load`], with services added at run time: `(name, body)` where `body` is the inside of
/// a `[services.NAME]` table in TOML. They are validated together with the file (names,
/// dependencies, cycles); an error in one is reported at its line after the file's last line.
pub fn load_with(file: &Path, added: &[(String, String)]) -> Result<Project, LoadError> {
    let file = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    let mut text = std::fs::read_to_string(&file).map_err(|source| LoadError::Read {
        path: file.clone(),
        source,
    })?;
    for (name, body) in added {
        if !parse::valid_name(name) {
            return Err(LoadError::BadName(name.clone()));
        }
        text.push_str(&format!(
            "\n# added at run time\n[services.\"{name}\"]\n{body}\n"
        ));
    }
    let inherited: BTreeMap<String, String> = std::env::vars().collect();
    Ok(parse_project(&file, &text, &inherited)?)
}

/// Whether `name` may name a unit (letters, digits, `-`, `_`, `.`; starting with a letter or
/// digit).
pub fn is_valid_name(name: &str) -> bool {
    parse::valid_name(name)
}

#[cfg(test)]
mod tests;
