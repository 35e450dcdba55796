//! `corral validate`: load the config, report every error, or say what it defines.

use std::path::Path;
use std::process::ExitCode;

use corral_engine::Kind;

use super::{CliError, load_project_with};

pub fn run(
    file: Option<&Path>,
    read: &corral_config::formats::ReadOptions,
    json: bool,
) -> Result<ExitCode, CliError> {
    if json {
        return run_json(file, read);
    }
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

/// `validate --json`: the same check, as one JSON object on stdout (nothing on stderr).
fn run_json(
    file: Option<&Path>,
    read: &corral_config::formats::ReadOptions,
) -> Result<ExitCode, CliError> {
    let path = super::config_path(file)?;
    let inherited: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    let out = match corral_config::load_with(&path, &inherited, read) {
        Ok(project) => {
            let count = |k: Kind| project.units.iter().filter(|u| u.kind == k).count();
            let warnings: Vec<String> = project
                .warnings()
                .lines()
                .filter_map(|l| l.strip_prefix("warning: "))
                .map(str::to_string)
                .collect();
            serde_json::json!({
                "ok": true,
                "file": project.file.display().to_string(),
                "format": project.format().describe(),
                "services": count(Kind::Service),
                "tasks": count(Kind::Task),
                "targets": count(Kind::Target),
                "templates": project.templates.len(),
                "warnings": warnings,
            })
        }
        Err(corral_config::LoadError::Invalid(e)) => {
            let errors: Vec<serde_json::Value> = e
                .placed()
                .into_iter()
                .map(|p| {
                    serde_json::json!({
                        "file": p.file, "line": p.line, "column": p.column,
                        "message": p.message, "help": p.help,
                    })
                })
                .collect();
            super::ctl::print_json(&serde_json::json!({
                "ok": false,
                "file": path.display().to_string(),
                "errors": errors,
            }));
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(CliError::Config(e)),
    };
    super::ctl::print_json(&out);
    Ok(ExitCode::SUCCESS)
}
