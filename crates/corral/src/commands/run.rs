//! `corral run`: a task pipeline. Tasks run in parallel waves as their dependencies complete;
//! dependents of a failure are skipped; `allow_failure` tasks never fail the run.

use std::path::Path;
use std::process::ExitCode;

use corral_engine::Kind;
use corral_proto::client::{Client, ClientError, Method};
use corral_proto::fmt_duration;
use corral_proto::wire;
use corral_runtime::Options;

use super::{CliError, Serve, load_project_with, runtime, supervise};

/// One line of the summary.
struct Row {
    verdict: String,
    name: String,
    duration: Option<std::time::Duration>,
    detail: String,
}

pub fn run(
    file: Option<&Path>,
    read: &corral_config::formats::ReadOptions,
    tasks: Vec<String>,
    sequential: bool,
    quiet: bool,
    json: bool,
) -> Result<ExitCode, CliError> {
    // JSON on stdout: the processes' output stays in their logs.
    let quiet = quiet || json;
    let project = load_project_with(file, read)?;
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
    // A corral already runs this project: the pipeline runs there (its services are up).
    let client = Client::new(&project.state_dir);
    let body = serde_json::to_vec(&wire::RunRequest {
        tasks: tasks.clone(),
        sequential,
    })
    .unwrap_or_default();
    match runtime()?.block_on(client.call_with::<wire::Run>(
        Method::POST,
        "/v1/runs?wait=true",
        body,
    )) {
        Ok(run) => {
            let rows = run
                .tasks
                .into_iter()
                .map(|t| Row {
                    verdict: t.verdict,
                    name: t.name,
                    duration: t.duration_secs.map(std::time::Duration::from_secs_f64),
                    detail: t.detail,
                })
                .collect::<Vec<_>>();
            if !quiet {
                println!("corral: ran in the running corral; output: `corral logs TASK`");
            }
            return Ok(summary(
                &rows,
                std::time::Duration::from_secs_f64(run.elapsed_secs),
                false,
                json,
            ));
        }
        Err(ClientError::NoDaemon) => {}
        Err(e) => return Err(CliError::Run(e.to_string())),
    }
    let allowed: Vec<bool> = project.plan.units.iter().map(|u| u.allow_failure).collect();
    let options = Options {
        names: tasks,
        exit_when_tasks_done: true,
        sequential,
        quiet,
        ..Options::default()
    };
    let outcome = supervise(project, options, Serve::default())?;

    let rows: Vec<Row> = outcome
        .units
        .iter()
        .enumerate()
        .filter(|(_, u)| u.kind == Kind::Task && u.wanted)
        .map(|(i, u)| {
            let (verdict, detail) = corral_runtime::verdict(&u.state, allowed[i]);
            Row {
                verdict: verdict.to_string(),
                name: u.name.clone(),
                duration: u.duration,
                detail,
            }
        })
        .collect();
    Ok(summary(&rows, outcome.elapsed, outcome.interrupted, json))
}

/// Print the summary; exit 0 only if nothing failed or was skipped.
fn summary(rows: &[Row], elapsed: std::time::Duration, interrupted: bool, json: bool) -> ExitCode {
    let mut passed = 0;
    let mut failed = 0;
    let mut skipped = 0;
    for r in rows {
        match r.verdict.as_str() {
            "PASS" | "ALLOWED" => passed += 1,
            "SKIP" => skipped += 1,
            _ => failed += 1,
        }
    }
    let ok = failed == 0 && skipped == 0 && !interrupted;
    if json {
        let tasks: Vec<wire::TaskResult> = rows
            .iter()
            .map(|r| wire::TaskResult {
                name: r.name.clone(),
                verdict: r.verdict.clone(),
                detail: r.detail.clone(),
                duration_secs: r.duration.map(|d| d.as_secs_f64()),
            })
            .collect();
        super::ctl::print_json(&serde_json::json!({
            "tasks": tasks,
            "elapsed_secs": elapsed.as_secs_f64(),
            "interrupted": interrupted,
            "passed": passed,
            "failed": failed,
            "skipped": skipped,
        }));
        return if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        };
    }
    println!();
    for r in rows {
        let took = r.duration.map(fmt_duration).unwrap_or_default();
        println!("{:>7}  {:<20} {took:>8}  {}", r.verdict, r.name, r.detail);
    }
    let total = passed + failed + skipped;
    println!(
        "{total} task{}: {passed} passed, {failed} failed, {skipped} skipped in {}{}",
        if total == 1 { "" } else { "s" },
        fmt_duration(elapsed),
        if interrupted { " (interrupted)" } else { "" }
    );
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
