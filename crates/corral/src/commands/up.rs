//! `corral up`: run the stack in the foreground until Ctrl-C, SIGTERM or SIGHUP.

use std::path::Path;
use std::process::ExitCode;

use corral_engine::State;
use corral_runtime::Options;

use super::{CliError, Serve, load_project, supervise};

/// `daemon`: stay up when every unit has ended, until `corral down`.
pub fn run(
    file: Option<&Path>,
    names: Vec<String>,
    quiet: bool,
    listen: Option<std::net::SocketAddr>,
    daemon: bool,
) -> Result<ExitCode, CliError> {
    let project = load_project(file)?;
    let options = Options {
        names,
        quiet,
        stay: daemon,
        ..Options::default()
    };
    let serve = Serve { api: true, listen };
    let outcome = supervise(project, options, serve)?;
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
