//! One file per command. Shared here: loading the config and the error type at the edge.

pub mod run;
pub mod up;
pub mod validate;

use std::fmt;
use std::path::Path;
use std::process::ExitCode;

use corral_config::{LoadError, Project};

/// Everything that can end a command early, with its exit code.
pub enum CliError {
    /// The config is missing or invalid: exit 2.
    Config(LoadError),
    /// corral could not do what was asked: exit 1.
    Run(String),
}

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Config(_) => ExitCode::from(2),
            CliError::Run(_) => ExitCode::from(1),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Config(LoadError::Invalid(e)) => write!(f, "{e}"),
            CliError::Config(e) => write!(f, "error: {e}"),
            CliError::Run(e) => write!(f, "error: {e}"),
        }
    }
}

/// The project from `-f FILE`, or from the nearest `corral.toml`.
pub fn load_project(file: Option<&Path>) -> Result<Project, CliError> {
    let path = match file {
        Some(f) => f.to_path_buf(),
        None => {
            let cwd = std::env::current_dir()
                .map_err(|e| CliError::Run(format!("cannot read the current directory: {e}")))?;
            corral_config::find_config(&cwd).map_err(CliError::Config)?
        }
    };
    corral_config::load(&path).map_err(CliError::Config)
}

/// Run the supervisor in the foreground on a tokio runtime with two workers: enough for these
/// machines, and it keeps corral's own footprint small.
pub fn supervise(
    project: Project,
    options: corral_runtime::Options,
) -> Result<corral_runtime::Outcome, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::Run(format!("cannot start the async runtime: {e}")))?
        .block_on(corral_runtime::run(project, options))
        .map_err(|e| CliError::Run(e.to_string()))
}
