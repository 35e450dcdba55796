//! One file per command. Shared here: loading the config and the error type at the edge.

pub mod completions;
pub mod ctl;
pub mod daemon;
pub mod dashboard;
pub mod exec;
pub mod export;
pub mod import;
pub mod instance;
pub mod mcp;
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
    /// No corral runs for this project, for a command that needs one: exit 3 (`ps`, `down`,
    /// `stop` … alike).
    NoDaemon,
}

/// The exit codes, for `--help`.
pub const EXIT_CODES: &str = "Exit codes: 0 done; 1 failed (what was asked could not be done, or a \
stack ended with a failure); 2 a mistake in the project file or the command line; 3 no corral is \
running for this project (for a command that needs one).";

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Config(_) => ExitCode::from(2),
            CliError::Run(_) => ExitCode::from(1),
            CliError::NoDaemon => ExitCode::from(3),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Config(LoadError::Invalid(e)) => write!(f, "{e}"),
            CliError::Config(e) => write!(f, "error: {e}"),
            CliError::Run(e) => write!(f, "error: {e}"),
            CliError::NoDaemon => write!(
                f,
                "error: no corral is running for this project\n  help: start one with `corral up -d` (background) or `corral up` (in this terminal)"
            ),
        }
    }
}

/// The project file: `-f FILE`, or the nearest one (`corral.toml`, `process-compose.yaml`,
/// `Procfile`; see `corral_config::find_config`).
pub fn config_path(file: Option<&Path>) -> Result<std::path::PathBuf, CliError> {
    match file {
        Some(f) => Ok(f.to_path_buf()),
        None => {
            let cwd = std::env::current_dir()
                .map_err(|e| CliError::Run(format!("cannot read the current directory: {e}")))?;
            corral_config::find_config(&cwd).map_err(CliError::Config)
        }
    }
}

/// The project from `-f FILE` (with the files read over it), or from the nearest project file;
/// `options` say how to read it (a Procfile's formation). A file in another
/// format is named, and what corral does not carry out of it is shown as warnings.
pub fn load_project_with(
    file: Option<&Path>,
    options: &corral_config::formats::ReadOptions,
) -> Result<Project, CliError> {
    let inherited: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    let project = corral_config::load_with(&config_path(file)?, &inherited, options)
        .map_err(CliError::Config)?;
    if project.format() != corral_config::formats::Format::Toml {
        eprintln!(
            "corral: reading {} ({})",
            project.file.display(),
            project.format().describe()
        );
    }
    eprint!("{}", project.warnings());
    Ok(project)
}

/// The state dir of the project, without reading the config: a client of a running corral must
/// work while the file is being edited (or is broken).
pub fn state_dir(file: Option<&Path>) -> Result<std::path::PathBuf, CliError> {
    Ok(corral_proto::paths::state_dir(&config_path(file)?))
}

/// The runtime of a client command (a request or two, a stream): one thread, so a command
/// starts no worker threads it would not use (a quarter of a millisecond of `exec`'s round
/// trip).
pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Run(format!("cannot start the async runtime: {e}")))
}

/// The tokio runtime for the daemon and the long-running front ends (TUI, MCP): two workers
/// are enough for these machines, and keep corral's own footprint small.
pub fn runtime_threaded() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::Run(format!("cannot start the async runtime: {e}")))
}

pub use corral_api::daemon::Serve;

/// Run the supervisor in this process until the project is done or told to stop.
pub fn supervise(
    project: Project,
    mut options: corral_runtime::Options,
    serve: Serve,
) -> Result<corral_runtime::Outcome, CliError> {
    options.exe = std::env::current_exe()
        .map_err(|e| CliError::Run(format!("cannot find the corral binary: {e}")))?;
    runtime_threaded()?
        .block_on(corral_api::daemon::run(project, options, serve))
        .map_err(|e| CliError::Run(e.to_string()))
}
