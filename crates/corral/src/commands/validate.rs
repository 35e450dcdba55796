//! `corral validate`: load the config, report every error, or say what it defines.

use std::path::Path;
use std::process::ExitCode;

use corral_engine::Kind;

use super::{CliError, load_project_with};

pub fn run(
    file: Option<&Path>,
    read: &corral_config::formats::ReadOptions,
) -> Result<ExitCode, CliError> {
    let project = load_project_with(file, read)?;
    let count = |k: Kind| project.units.iter().filter(|u| u.kind == k).count();
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let templates = match project.templates.len() {
        0 => String::new(),
        n => format!(", {}", plural(n, "template")),
    };
    println!(
        "{}: ok ({}, {}, {}{templates})",
        project.file.display(),
        plural(count(Kind::Service), "service"),
        plural(count(Kind::Task), "task"),
        plural(count(Kind::Target), "target"),
    );
    Ok(ExitCode::SUCCESS)
}
