//! `corral up`: run the stack in the foreground until Ctrl-C, SIGTERM or SIGHUP.

use std::path::Path;
use std::process::ExitCode;

use corral_engine::State;
use corral_runtime::Options;

use super::{CliError, load_project, supervise};

pub fn run(file: Option<&Path>, names: Vec<String>, quiet: bool) -> Result<ExitCode, CliError> {
    let project = load_project(file)?;
    let options = Options {
        names,
        quiet,
        ..Options::default()
    };
    let outcome = supervise(project, options)?;
    // Stopped by the user: success. Ended by itself: success only if nothing failed.
    let failed: Vec<&str> = outcome
        .units
        .iter()
        .filter(|u| u.wanted)
        .filter(|u| match &u.state {
            State::Failed { .. } | State::Skipped { .. } => true,
            State::Exited { status } => !status.success(),
            _ => false,
        })
        .map(|u| u.name.as_str())
        .collect();
    if outcome.interrupted || failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("corral: ended with failures: {}", failed.join(", "));
        Ok(ExitCode::from(1))
    }
}
