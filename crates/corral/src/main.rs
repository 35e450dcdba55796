//! The `corral` command: clap dispatch, one file per command, errors mapped to exit codes.

mod commands;
mod tui;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Run, supervise and stop the processes of a project.
#[derive(Parser, Debug)]
#[command(name = "corral", version, about, propagate_version = true, after_help = commands::EXIT_CODES)]
struct Cli {
    /// The project file. Default: the nearest `corral.toml` (or `process-compose.yaml`,
    /// `Procfile`) here or in a parent. Given again, each later file is read over the ones
    /// before it (its keys override theirs).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Vec<PathBuf>,

    /// Colour: `auto` on a terminal (and not with NO_COLOR set), `always`, or `never`.
    #[arg(long, global = true, value_enum, default_value_t = ColorWhen::Auto)]
    color: ColorWhen,

    #[command(subcommand)]
    command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum ColorWhen {
    Auto,
    Always,
    Never,
}

/// A command's arguments, added to its parser only when that command is the one given (or its
/// help, completions or man page are asked for): clap's derive builds every command's arguments
/// up front, and building all of them was a tenth of a short command's run, in allocations and
/// the page faults of touching their code (`corral ps` with 200 services, `perf stat -r 200`:
/// 2.57-2.66 ms, deferred 2.42-2.48 ms, with no parser at all 2.41-2.49 ms; `exec -- true`
/// 3.04-3.10 → 2.79-2.83 ms). clap's `Command::defer` does it; its derive has no attribute for
/// it yet.
#[derive(Debug)]
struct Deferred<T>(T);

impl<T: clap::FromArgMatches> clap::FromArgMatches for Deferred<T> {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches(matches).map(Deferred)
    }
    fn from_arg_matches_mut(matches: &mut clap::ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches_mut(matches).map(Deferred)
    }
    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(matches)
    }
    fn update_from_arg_matches_mut(
        &mut self,
        matches: &mut clap::ArgMatches,
    ) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches_mut(matches)
    }
}

impl<T: clap::Args> clap::Args for Deferred<T> {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.defer(keeping_about::<T>)
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        cmd.defer(keeping_about_for_update::<T>)
    }
    fn group_id() -> Option<clap::Id> {
        T::group_id()
    }
}

fn keeping_about<T: clap::Args>(cmd: clap::Command) -> clap::Command {
    with_about_kept(cmd, T::augment_args)
}

fn keeping_about_for_update<T: clap::Args>(cmd: clap::Command) -> clap::Command {
    with_about_kept(cmd, T::augment_args_for_update)
}

/// `add`'s arguments added to `cmd`, whose description stays the command's: an arguments
/// struct's doc comment would replace it (added up front, the command's came after).
fn with_about_kept(cmd: clap::Command, add: fn(clap::Command) -> clap::Command) -> clap::Command {
    let (about, long_about) = (cmd.get_about().cloned(), cmd.get_long_about().cloned());
    let cmd = add(cmd);
    let cmd = match about {
        Some(about) => cmd.about(about),
        None => cmd,
    };
    match long_about {
        Some(long_about) => cmd.long_about(long_about),
        None => cmd,
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start services in dependency order and supervise them in the foreground. Ctrl-C stops
    /// everything in reverse order; a second Ctrl-C kills at once.
    Up(Deferred<commands::up::UpArgs>),
    /// Stop the stack in reverse dependency order, then the daemon.
    Down,
    /// List services: state, PID, uptime, restarts, health, ports.
    Ps(Deferred<PsArgs>),
    /// Show logs: the last lines of one or more services, interleaved by time.
    Logs(Deferred<LogsArgs>),
    /// Start a service (and what it needs). It stays up across daemon restarts.
    Start(Deferred<commands::ctl::ActArgs>),
    /// Stop a service. It stays stopped (across daemon restarts too) until started.
    Stop(Deferred<commands::ctl::ActArgs>),
    /// Stop and start a service at once (no backoff).
    Restart(Deferred<commands::ctl::ActArgs>),
    /// Send a signal to a service's process group.
    Kill(Deferred<KillArgs>),
    /// Say why a service is in its state: what it waits on, why it failed.
    Why(Deferred<WhyArgs>),
    /// Show the dependency tree with states.
    Tree(Deferred<TreeArgs>),
    /// `ps` with CPU and memory, refreshed until Ctrl-C.
    Top(Deferred<TopArgs>),
    /// Read corral.toml again: restart only what changed, start what is new, stop what is gone.
    Reload,
    /// Run N replicas of a service or task (`NAME-0` … `NAME-(N-1)`; a Procfile's `NAME.1` …;
    /// 0: none). Lasts until the daemon stops; `replicas` in the file is the lasting way.
    Scale(Deferred<ScaleArgs>),
    /// Print events (state changes, health results) as they happen.
    Events(Deferred<EventsArgs>),
    /// Run a command through corral (an ad-hoc process): its output streams here and corral
    /// exits with its exit code; with `--detach`, print its id and leave it running.
    Exec(Deferred<ExecArgs>),
    /// Ad-hoc processes: list, show, wait, input, kill, remove.
    Proc(Deferred<ProcArgs>),
    /// Instances of templates: create, list, show, delete.
    Instance(Deferred<InstanceArgs>),
    /// Run tasks (and what they depend on) to completion, then print a summary. Exits 0 only if
    /// every required task passed.
    Run(Deferred<RunArgs>),
    /// Check the config and report every error at once.
    Validate(Deferred<ValidateArgs>),
    /// Convert a process-compose file or a Procfile into a corral.toml.
    Import(Deferred<commands::import::ImportArgs>),
    /// Write the project out for another engine (systemd units).
    Export(Deferred<ExportArgs>),
    /// The terminal UI of the running corral: units, logs, actions (`?` lists the keys).
    Tui,
    /// Print the script that gives SHELL completion of corral's commands, flags and the names
    /// of units, templates, instances and processes (asked of the running corral).
    /// Bash: `source <(corral completions bash)` in ~/.bashrc; fish: `corral completions fish
    /// | source`; zsh: `source <(corral completions zsh)`.
    Completions(Deferred<CompletionsArgs>),
    /// A Model Context Protocol server on stdin/stdout for AI assistants: tools to list units,
    /// start/stop/restart them, read logs, run commands and manage instances of the running
    /// corral.
    Mcp,
    /// Print a JSON Schema of corral.toml, for editors: save it and put `#:schema ./corral.schema.json`
    /// on corral.toml's first line (taplo, Even Better TOML).
    Schema,
    /// Print the man page of corral, or of one of its commands (`corral man stop | man -l -`).
    Man(Deferred<ManArgs>),
    /// Print the link that signs a browser in to the web dashboard (and open it where there
    /// is a desktop). The running corral starts listening on a loopback port if it does not yet.
    Dashboard(Deferred<DashboardArgs>),
}

// The arguments of each command, in the order of `Command` (each built only when used: see
// `Deferred`).

#[derive(clap::Args, Debug)]
struct PsArgs {
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct LogsArgs {
    /// Services. Default: all.
    #[arg(add = clap_complete::ArgValueCompleter::new(commands::completions::units))]
    names: Vec<String>,
    /// Keep following new lines.
    #[arg(short, long)]
    follow: bool,
    /// How many lines (of all shown services together).
    #[arg(short = 'n', long = "tail", value_name = "N", default_value_t = 100)]
    tail: usize,
    /// Only lines since a time (RFC 3339) or a duration ago (`10m`).
    #[arg(long)]
    since: Option<String>,
    /// Only lines matching this regular expression.
    #[arg(long)]
    grep: Option<String>,
    /// Only lines before a time (RFC 3339) or a duration ago (`5m`).
    #[arg(long, conflicts_with = "follow")]
    until: Option<String>,
    /// Only what the services wrote to stdout.
    #[arg(long, conflicts_with = "stderr")]
    stdout: bool,
    /// Only what the services wrote to stderr.
    #[arg(long)]
    stderr: bool,
    /// The lines' text only: no time, name or stream mark.
    #[arg(long, conflicts_with = "json")]
    raw: bool,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct KillArgs {
    #[arg(add = clap_complete::ArgValueCompleter::new(commands::completions::units))]
    name: String,
    /// TERM, HUP, INT, KILL, USR1, ... or a number.
    #[arg(short, long, default_value = "TERM")]
    signal: String,
}

#[derive(clap::Args, Debug)]
struct WhyArgs {
    #[arg(add = clap_complete::ArgValueCompleter::new(commands::completions::units))]
    name: String,
    /// The unit as the API gives it (`GET /v1/services/NAME`).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct TreeArgs {
    /// Every unit with what it depends on, as the API gives them.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct TopArgs {
    /// Stop after this many refreshes.
    #[arg(short = 'n', long)]
    iterations: Option<u64>,
    #[arg(long, default_value = "2s")]
    interval: String,
    /// Each refresh as one line of JSON (`ps --json`'s objects, with CPU and memory).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct ScaleArgs {
    #[arg(add = clap_complete::ArgValueCompleter::new(commands::completions::units))]
    name: String,
    #[arg(value_parser = clap::value_parser!(u16).range(0..=1000))]
    replicas: u16,
}

#[derive(clap::Args, Debug)]
struct EventsArgs {
    /// First print this many past events.
    #[arg(short = 'n', long = "history", default_value_t = 0)]
    history: usize,
    /// One JSON object a line, as the API streams them.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct ExecArgs {
    /// Print the process id and return at once.
    #[arg(short, long)]
    detach: bool,
    /// Terminate it after this long (`30s`, `5m`).
    #[arg(long)]
    timeout: Option<String>,
    /// An idempotency key: the same key gives the same process.
    #[arg(long)]
    key: Option<String>,
    /// Working directory, relative to the project root.
    #[arg(long)]
    cwd: Option<String>,
    /// Extra environment, `NAME=VALUE` (repeatable).
    #[arg(short, long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// The command and its arguments (after `--`).
    #[arg(required = true, last = true)]
    command: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct ProcArgs {
    #[command(subcommand)]
    action: ProcAction,
}

#[derive(clap::Args, Debug)]
struct InstanceArgs {
    #[command(subcommand)]
    action: InstanceAction,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Tasks to run. Default: every task.
    tasks: Vec<String>,
    /// One task at a time, stopping at the first failure.
    #[arg(long)]
    sequential: bool,
    /// Don't show the output of the processes.
    #[arg(short, long)]
    quiet: bool,
    /// The summary as JSON (the API's run: `tasks` with `name`, `verdict`, `detail`,
    /// `duration_secs`; `elapsed_secs`), and no process output on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct ValidateArgs {
    /// `{"ok": true, "file", "format", "services", "tasks", "targets", "templates",
    /// "warnings"}`, or `{"ok": false, "file", "errors": [{"file", "line", "column",
    /// "message", "help"}]}` (exit 2).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct ExportArgs {
    #[command(subcommand)]
    target: commands::export::ExportTarget,
}

#[derive(clap::Args, Debug)]
struct CompletionsArgs {
    shell: commands::completions::Shell,
}

#[derive(clap::Args, Debug)]
struct ManArgs {
    command: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct DashboardArgs {
    /// Only print the link.
    #[arg(long)]
    no_open: bool,
    /// A link for a session that may only look.
    #[arg(long)]
    read_only: bool,
}

#[derive(Subcommand, Debug)]
enum InstanceAction {
    /// Make an instance of TEMPLATE; it starts once its workspace is ready.
    Create {
        #[arg(add = clap_complete::ArgValueCompleter::new(commands::completions::templates))]
        template: String,
        /// A parameter, `NAME=VALUE` (repeatable).
        #[arg(short, long = "param", value_name = "NAME=VALUE")]
        param: Vec<String>,
        /// Clone this repository into the workspace.
        #[arg(long, conflicts_with = "zip")]
        git: Option<String>,
        /// Unpack this ZIP into the workspace.
        #[arg(long)]
        zip: Option<PathBuf>,
        /// Wait until it is ready, a line per setup step; exit 1 if its preparation fails.
        #[arg(long)]
        wait: bool,
        /// With `--wait`: give up after this long.
        #[arg(long, default_value = "10m", requires = "wait")]
        timeout: String,
    },
    Ls {
        #[arg(long)]
        json: bool,
    },
    Show {
        #[arg(add = clap_complete::ArgValueCompleter::new(commands::completions::instances))]
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Stop it and delete it with its workspace and logs.
    Rm {
        #[arg(add = clap_complete::ArgValueCompleter::new(commands::completions::instances))]
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum ProcAction {
    /// Running ones first, then the newest.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// One process with its output (head and tail).
    Show {
        #[arg(add = clap_complete::ArgValueCompleter::new(commands::completions::procs))]
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Wait until it ends (at most `--timeout`, default 30s) and show it.
    Wait {
        #[arg(add = clap_complete::ArgValueCompleter::new(commands::completions::procs))]
        id: String,
        #[arg(long, default_value = "30s")]
        timeout: String,
        #[arg(long)]
        json: bool,
    },
    /// Write to its stdin (and with `--close`, close it).
    Input {
        #[arg(add = clap_complete::ArgValueCompleter::new(commands::completions::procs))]
        id: String,
        #[arg(default_value = "")]
        data: String,
        #[arg(long)]
        close: bool,
    },
    /// Send a signal to its process group (default TERM).
    Kill {
        #[arg(add = clap_complete::ArgValueCompleter::new(commands::completions::procs))]
        id: String,
        #[arg(short, long, default_value = "TERM")]
        signal: String,
    },
    /// Forget an ended process.
    Rm {
        #[arg(add = clap_complete::ArgValueCompleter::new(commands::completions::procs))]
        id: String,
    },
    /// Forget every ended process.
    Clear,
}

/// The commands corral runs itself (`__wrap` for every task, `__keeper` once a daemon), read
/// without building the CLI's parser: building it is a quarter of a command's start. None for
/// the others. They keep SIGPIPE ignored, as supervisors do.
fn internal_command() -> Option<ExitCode> {
    let which = std::env::args_os().nth(1)?;
    if which != "__wrap" && which != "__keeper" {
        return None;
    }
    let args: Result<Vec<String>, _> = std::env::args_os()
        .skip(2)
        .map(std::ffi::OsString::into_string)
        .collect();
    let Ok(args) = args else {
        eprintln!(
            "corral {}: an argument is not UTF-8",
            which.to_string_lossy()
        );
        return Some(ExitCode::from(2));
    };
    if which == "__wrap" {
        return Some(match corral_runtime::wrap::parse_args(&args) {
            Ok((status, run_as, command)) => {
                ExitCode::from(corral_runtime::wrap::main(&status, &command, &run_as) as u8)
            }
            Err(e) => {
                eprintln!("corral __wrap: {e}");
                ExitCode::from(127)
            }
        });
    }
    let [state_dir] = args.as_slice() else {
        eprintln!("corral __keeper: usage: corral __keeper STATE_DIR");
        return Some(ExitCode::from(2));
    };
    corral_runtime::spawn::raise_open_files_limit();
    Some(
        match corral_runtime::keeper::main(std::path::Path::new(state_dir)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("corral: keeper: {e}");
                ExitCode::FAILURE
            }
        },
    )
}

fn main() -> ExitCode {
    // Before any thread: how this process uses the heap (a daemon lives long).
    corral_runtime::heap::tune();
    if let Some(code) = internal_command() {
        return code;
    }
    // A shell asking for completions (`COMPLETE=bash corral -- …`) is answered here, and exits.
    clap_complete::CompleteEnv::with_factory(<Cli as clap::CommandFactory>::command)
        .var(commands::completions::VAR)
        .complete();
    let cli = Cli::parse();
    // Every styled line goes through anstream, which follows this (and, on `auto`, NO_COLOR
    // and whether the output is a terminal).
    anstream::ColorChoice::write_global(match cli.color {
        ColorWhen::Auto => anstream::ColorChoice::Auto,
        ColorWhen::Always => anstream::ColorChoice::Always,
        ColorWhen::Never => anstream::ColorChoice::Never,
    });
    // The first `-f` names the project; the others are read over it.
    let file: Option<PathBuf> = cli.file.first().cloned();
    let read = corral_config::formats::ReadOptions {
        overrides: cli.file.iter().skip(1).cloned().collect(),
        ..Default::default()
    };
    if matches!(cli.command, Command::Up { .. } | Command::Run { .. }) {
        corral_runtime::spawn::raise_open_files_limit();
    }
    if !matches!(cli.command, Command::Up { .. } | Command::Run { .. }) {
        // A client printing into a closed pipe (`corral logs | head`) ends quietly, like other
        // Unix tools, instead of failing on the write. Supervisors keep SIGPIPE ignored: a
        // closed terminal must not take the stack down with it.
        // SAFETY: setting the default disposition installs no handler code.
        let _ = unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            )
        };
    }
    let result = match cli.command {
        Command::Validate(Deferred(ValidateArgs { json })) => {
            commands::validate::run(file.as_deref(), &read, json)
        }
        Command::Completions(Deferred(CompletionsArgs { shell })) => {
            commands::completions::print(shell)
        }
        Command::Mcp => commands::mcp::run(file.as_deref()),
        Command::Schema => {
            commands::ctl::print_json(&corral_config::schema::json_schema());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man(Deferred(ManArgs { command })) => commands::completions::man::<Cli>(&command),
        Command::Import(Deferred(args)) => commands::import::run(&args),
        Command::Tui => tui::run(file.as_deref()),
        Command::Export(Deferred(ExportArgs { target })) => {
            commands::export::run(file.as_deref(), &read, &target)
        }
        Command::Dashboard(Deferred(DashboardArgs { no_open, read_only })) => {
            commands::dashboard::run(file.as_deref(), no_open, read_only)
        }
        Command::Up(Deferred(mut args)) => {
            args.overrides = read.overrides.clone();
            if args.detach {
                commands::daemon::start(file.as_deref(), &args)
            } else {
                commands::up::run(file.as_deref(), &args)
            }
        }
        Command::Down => commands::daemon::down(file.as_deref()),
        Command::Ps(Deferred(PsArgs { json })) => commands::ctl::ps(file.as_deref(), json),
        Command::Logs(Deferred(LogsArgs {
            names,
            follow,
            tail,
            since,
            grep,
            until,
            stdout,
            stderr,
            raw,
            json,
        })) => commands::ctl::logs(
            file.as_deref(),
            commands::ctl::LogArgs {
                names,
                follow,
                tail,
                since,
                grep,
                until,
                stream: if stdout {
                    Some("out")
                } else if stderr {
                    Some("err")
                } else {
                    None
                },
                raw,
                json,
            },
        ),
        Command::Start(Deferred(args)) => commands::ctl::act(file.as_deref(), "start", &args),
        Command::Stop(Deferred(args)) => commands::ctl::act(file.as_deref(), "stop", &args),
        Command::Restart(Deferred(args)) => commands::ctl::act(file.as_deref(), "restart", &args),
        Command::Kill(Deferred(KillArgs { name, signal })) => {
            commands::ctl::kill(file.as_deref(), &name, &signal)
        }
        Command::Why(Deferred(WhyArgs { name, json })) => {
            commands::ctl::why(file.as_deref(), &name, json)
        }
        Command::Tree(Deferred(TreeArgs { json })) => commands::ctl::tree(file.as_deref(), json),
        Command::Top(Deferred(TopArgs {
            iterations,
            interval,
            json,
        })) => commands::ctl::top(file.as_deref(), iterations, &interval, json),
        Command::Reload => commands::ctl::reload(file.as_deref()),
        Command::Scale(Deferred(ScaleArgs { name, replicas })) => {
            commands::ctl::scale(file.as_deref(), &name, replicas)
        }
        Command::Events(Deferred(EventsArgs { history, json })) => {
            commands::ctl::events(file.as_deref(), history, json)
        }
        Command::Exec(Deferred(ExecArgs {
            detach,
            timeout,
            key,
            cwd,
            env,
            command,
        })) => commands::exec::run(
            file.as_deref(),
            commands::exec::ExecArgs {
                detach,
                timeout,
                key,
                cwd,
                env,
                command,
            },
        ),
        Command::Proc(Deferred(ProcArgs { action })) => {
            use commands::exec as e;
            let f = file.as_deref();
            match action {
                ProcAction::Ls { json } => e::list(f, json),
                ProcAction::Show { id, json } => e::show(f, &id, json),
                ProcAction::Wait { id, timeout, json } => e::wait(f, &id, &timeout, json),
                ProcAction::Input { id, data, close } => e::input(f, &id, &data, close),
                ProcAction::Kill { id, signal } => e::kill(f, &id, &signal),
                ProcAction::Rm { id } => e::remove(f, &id),
                ProcAction::Clear => e::clear(f),
            }
        }
        Command::Instance(Deferred(InstanceArgs { action })) => {
            use commands::instance as i;
            let f = file.as_deref();
            match action {
                InstanceAction::Create {
                    template,
                    param,
                    git,
                    zip,
                    wait,
                    timeout,
                } => match wait
                    .then(|| humantime::parse_duration(&timeout))
                    .transpose()
                {
                    Ok(limit) => i::create(f, &template, &param, git, zip.as_deref(), limit),
                    Err(e) => Err(commands::CliError::Run(format!(
                        "`--timeout {timeout}` is not a duration: {e}"
                    ))),
                },
                InstanceAction::Ls { json } => i::list(f, json),
                InstanceAction::Show { name, json } => i::show(f, &name, json),
                InstanceAction::Rm { name } => i::remove(f, &name),
            }
        }
        Command::Run(Deferred(RunArgs {
            tasks,
            sequential,
            quiet,
            json,
        })) => commands::run::run(file.as_deref(), &read, tasks, sequential, quiet, json),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            let mut text = err.to_string();
            // No API socket, yet a daemon holds the project: its `.corral/` was removed.
            if matches!(err, commands::CliError::NoDaemon)
                && let Some(pid) = commands::state_dir(file.as_deref())
                    .ok()
                    .and_then(|dir| corral_runtime::holder::holder(&dir))
            {
                text = format!(
                    "error: a corral (pid {pid}) runs this project, but its `.corral/` was removed while it ran, so it cannot be reached\n  help: `corral down` stops it and its services; then `corral up` starts afresh"
                );
            }
            let red = anstyle::Style::new()
                .bold()
                .fg_color(Some(anstyle::AnsiColor::Red.into()));
            match text.strip_prefix("error:") {
                Some(rest) => anstream::eprintln!("{red}error:{red:#}{rest}"),
                None => anstream::eprintln!("{text}"),
            }
            err.exit_code()
        }
    }
}
