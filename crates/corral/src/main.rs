//! The `corral` command: clap dispatch, one file per command, errors mapped to exit codes.

mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Run, supervise and stop the processes of a project.
#[derive(Parser, Debug)]
#[command(name = "corral", version, about, propagate_version = true)]
struct Cli {
    /// The config file. Default: `corral.toml` in this directory or the nearest parent.
    #[arg(short = 'f', long = "file", global = true, value_name = "FILE")]
    file: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start services in dependency order and supervise them in the foreground. Ctrl-C stops
    /// everything in reverse order; a second Ctrl-C kills at once.
    Up {
        /// Units to start, with everything they depend on. Default: all.
        names: Vec<String>,
        /// Don't show the output of the processes (it still goes to the log files).
        #[arg(short, long)]
        quiet: bool,
    },
    /// Run tasks (and what they depend on) to completion, then print a summary. Exits 0 only if
    /// every required task passed.
    Run {
        /// Tasks to run. Default: every task.
        tasks: Vec<String>,
        /// One task at a time, stopping at the first failure.
        #[arg(long)]
        sequential: bool,
        /// Don't show the output of the processes.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Check the config and report every error at once.
    Validate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate => commands::validate::run(cli.file.as_deref()),
        Command::Up { names, quiet } => commands::up::run(cli.file.as_deref(), names, quiet),
        Command::Run {
            tasks,
            sequential,
            quiet,
        } => commands::run::run(cli.file.as_deref(), tasks, sequential, quiet),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("{err}");
            err.exit_code()
        }
    }
}
