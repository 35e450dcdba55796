//! `corral up`: run the stack in the foreground until Ctrl-C, SIGTERM or SIGHUP.

use std::path::Path;
use std::process::ExitCode;

use corral_engine::State;
use corral_runtime::Options;

use super::{CliError, Serve, load_project_with, supervise};

/// What `corral up` takes.
#[derive(clap::Args, Debug, Clone)]
pub struct UpArgs {
    /// Units to start, with everything they depend on. Default: all.
    pub names: Vec<String>,
    /// Don't show the output of the processes (it still goes to the log files).
    #[arg(short, long)]
    pub quiet: bool,
    /// Run in the background as a daemon; `corral down` stops it.
    #[arg(short, long)]
    pub detach: bool,
    /// Also serve the API on this loopback TCP address (token required; see .corral/token).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// Let ad-hoc processes (`corral exec`, `POST /v1/procs`) run in any directory; by
    /// default their `cwd` must be inside the project.
    #[arg(long)]
    pub procs_anywhere: bool,
    /// Start the units of this namespace (`namespace = "..."`), with what they depend on.
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// A Procfile's formation: how many of each process type (`web=2,worker=1`).
    #[arg(short = 'm', long, value_name = "TYPE=N,...", value_parser = formation)]
    pub formation: Option<std::collections::BTreeMap<String, usize>>,
    /// Files read over the project file (the second and later `-f`).
    #[arg(skip)]
    pub overrides: Vec<std::path::PathBuf>,
    /// Internal: this process is the daemon `up -d` started (stays up when every unit has
    /// ended, until `corral down`).
    #[arg(long, hide = true)]
    pub daemon_child: bool,
}

fn formation(s: &str) -> Result<std::collections::BTreeMap<String, usize>, String> {
    corral_config::formats::procfile::formation(s)
}

impl UpArgs {
    /// The units named, and those of `--namespace`.
    pub fn units(&self, project: &corral_config::Project) -> Result<Vec<String>, CliError> {
        let mut names = self.names.clone();
        if let Some(ns) = &self.namespace {
            let before = names.len();
            names.extend(
                project
                    .units
                    .iter()
                    .filter(|u| u.namespace.as_deref() == Some(ns.as_str()))
                    .map(|u| u.name.clone()),
            );
            if names.len() == before {
                let mut known: Vec<&str> = project
                    .units
                    .iter()
                    .filter_map(|u| u.namespace.as_deref())
                    .collect();
                known.sort();
                known.dedup();
                return Err(CliError::Run(format!(
                    "no unit has namespace `{ns}`{}",
                    if known.is_empty() {
                        " (no unit has a namespace)".to_string()
                    } else {
                        format!("; namespaces: {}", known.join(", "))
                    }
                )));
            }
        }
        Ok(names)
    }

    /// How to read the project file.
    pub fn read_options(&self) -> corral_config::formats::ReadOptions {
        corral_config::formats::ReadOptions {
            formation: self.formation.clone().unwrap_or_default(),
            overrides: self.overrides.clone(),
        }
    }
}

pub fn run(file: Option<&Path>, args: &UpArgs) -> Result<ExitCode, CliError> {
    let project = load_project_with(file, &args.read_options())?;
    let options = Options {
        names: args.units(&project)?,
        quiet: args.quiet || args.daemon_child,
        stay: args.daemon_child,
        procs_anywhere: args.procs_anywhere,
        ..Options::default()
    };
    let serve = Serve {
        api: true,
        listen: args.listen,
    };
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
