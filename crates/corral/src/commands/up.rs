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
    /// The terminal UI instead of the prefixed output; quitting it stops the stack.
    #[arg(long, conflicts_with = "detach")]
    pub tui: bool,
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
                    .filter(|u| u.namespace() == Some(ns.as_str()))
                    .map(|u| u.name.clone()),
            );
            if names.len() == before {
                let mut known: Vec<&str> =
                    project.units.iter().filter_map(|u| u.namespace()).collect();
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
        // The TUI shows the output; the terminal is its.
        quiet: args.quiet || args.daemon_child || args.tui,
        stay: args.daemon_child,
        procs_anywhere: args.procs_anywhere,
        ..Options::default()
    };
    let serve = Serve {
        api: true,
        listen: args.listen,
    };
    let (outcome, tui) = if args.tui {
        tui_beside(project, options, serve, file)?
    } else {
        (supervise(project, options, serve)?, None)
    };
    if let Some(code) = tui {
        return Ok(code);
    }
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
        corral_runtime::say!(
            "corral: ended with failures: {}",
            corral_proto::some_of(&failed)
        );
        Ok(ExitCode::from(1))
    }
}

/// `up --tui`: the stack in this process, the TUI on a thread of its own as a client of it.
/// Quitting the TUI stops the stack (like Ctrl-C without it); a stack that ends by itself ends
/// the TUI. Returns the outcome, and the TUI's exit code when it failed.
fn tui_beside(
    project: corral_config::Project,
    options: Options,
    serve: Serve,
    file: Option<&Path>,
) -> Result<(corral_runtime::Outcome, Option<ExitCode>), CliError> {
    let state_dir = project.state_dir.clone();
    let file = file.map(Path::to_path_buf);
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<()>();
    let ui = std::thread::spawn(move || {
        let c = corral_proto::client::Client::new(&state_dir);
        let rt = super::runtime()?;
        // The API answers once the stack is set up.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while rt
            .block_on(c.call::<serde_json::Value>(corral_proto::client::Method::GET, "/ready"))
            .is_err()
        {
            if std::time::Instant::now() > deadline {
                return Err(CliError::Run("the stack did not come up".into()));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let r = crate::tui::run_with(file.as_deref(), true, Some(ended_rx));
        // Quit: the stack goes too (it may be gone already).
        let _ = rt.block_on(
            c.call::<serde_json::Value>(corral_proto::client::Method::POST, "/v1/shutdown"),
        );
        r
    });
    let outcome = supervise(project, options, serve);
    let _ = ended_tx.send(());
    let ui = ui
        .join()
        .unwrap_or_else(|_| Err(CliError::Run("the terminal UI failed".into())));
    let outcome = outcome?;
    Ok((
        outcome,
        ui.err().map(|e| {
            corral_runtime::say!("{e}");
            ExitCode::from(1)
        }),
    ))
}
