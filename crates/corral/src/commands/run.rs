//! `corral run`: a task pipeline. Tasks run in parallel waves as their dependencies complete;
//! dependents of a failure are skipped; `allow_failure` tasks never fail the run.

use std::path::Path;
use std::process::ExitCode;

use corral_engine::{Kind, State, fmt_duration};
use corral_runtime::{Options, UnitOutcome};

use super::{CliError, Serve, load_project, supervise};

pub fn run(
    file: Option<&Path>,
    tasks: Vec<String>,
    sequential: bool,
    quiet: bool,
) -> Result<ExitCode, CliError> {
    let project = load_project(file)?;
    for name in &tasks {
        if let Some(u) = project.unit(name)
            && u.kind != Kind::Task
        {
            return Err(CliError::Run(format!(
                "`{name}` is a {}, not a task; use `corral up {name}` for it",
                u.kind.as_str()
            )));
        }
    }
    let tasks = if tasks.is_empty() {
        let all: Vec<String> = project
            .units
            .iter()
            .filter(|u| u.kind == Kind::Task)
            .map(|u| u.name.clone())
            .collect();
        if all.is_empty() {
            return Err(CliError::Run(format!(
                "`{}` defines no tasks",
                project.file.display()
            )));
        }
        all
    } else {
        tasks
    };
    let allowed: Vec<bool> = project.plan.units.iter().map(|u| u.allow_failure).collect();
    let options = Options {
        names: tasks,
        exit_when_tasks_done: true,
        sequential,
        quiet,
        ..Options::default()
    };
    let outcome = supervise(project, options, Serve::default())?;

    let mut passed = 0;
    let mut failed = 0;
    let mut skipped = 0;
    println!();
    for (i, u) in outcome.units.iter().enumerate() {
        if u.kind != Kind::Task || !u.wanted {
            continue;
        }
        let (verdict, detail) = verdict(u, allowed[i]);
        match verdict {
            "PASS" => passed += 1,
            "SKIP" => skipped += 1,
            "ALLOWED" => passed += 1,
            _ => failed += 1,
        }
        let took = u.duration.map(fmt_duration).unwrap_or_default();
        println!("{verdict:>7}  {:<20} {took:>8}  {detail}", u.name);
    }
    let total = passed + failed + skipped;
    println!(
        "{total} task{}: {passed} passed, {failed} failed, {skipped} skipped in {}{}",
        if total == 1 { "" } else { "s" },
        fmt_duration(outcome.elapsed),
        if outcome.interrupted {
            " (interrupted)"
        } else {
            ""
        }
    );
    Ok(if failed == 0 && skipped == 0 && !outcome.interrupted {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn verdict(u: &UnitOutcome, allow_failure: bool) -> (&'static str, String) {
    match &u.state {
        State::Exited { status } if status.success() => ("PASS", String::new()),
        State::Exited { status } if allow_failure => {
            ("ALLOWED", format!("{status} (allowed to fail)"))
        }
        State::Exited { status } => ("FAIL", status.to_string()),
        State::Failed { reason } if allow_failure => {
            ("ALLOWED", format!("{reason} (allowed to fail)"))
        }
        State::Failed { reason } => ("FAIL", reason.clone()),
        State::Skipped { reason } => ("SKIP", reason.clone()),
        other => ("FAIL", format!("did not finish ({})", other.name())),
    }
}
