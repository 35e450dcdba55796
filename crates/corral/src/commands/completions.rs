//! `corral completions SHELL` and `corral man`: the shell's completion of commands, flags and —
//! asked of the running corral as you type — unit, template and instance names; and man pages.
//!
//! Completion is clap_complete's environment-activated kind: the script a shell sources calls
//! `COMPLETE=SHELL corral -- WORDS…` back on each TAB, so names come from the live daemon, and
//! the script never goes stale against the binary.

use std::ffi::OsStr;
use std::io::Write;
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::engine::CompletionCandidate;
use corral_proto::client::Method;

use super::CliError;

/// The variable the completion scripts set to ask for candidates.
pub const VAR: &str = "COMPLETE";

/// The shells with a completion script.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
    Elvish,
    Powershell,
}

/// Print the script that registers corral's completion in `shell`.
pub fn print(shell: Shell) -> Result<ExitCode, CliError> {
    let name = format!("{shell:?}").to_lowercase();
    let shells = clap_complete::env::Shells::builtins();
    let completer = shells
        .completer(&name)
        .ok_or_else(|| CliError::Run(format!("no completion for {name}")))?;
    // The binary itself answers: the script works whether or not `corral` is on PATH.
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.to_str().map(str::to_string))
        .unwrap_or_else(|| "corral".into());
    let mut out = std::io::stdout().lock();
    completer
        .write_registration(VAR, "corral", "corral", &exe, &mut out)
        .and_then(|()| out.flush())
        .map_err(|e| CliError::Run(e.to_string()))?;
    Ok(ExitCode::SUCCESS)
}

/// Print the man page of corral, or of one of its commands (`corral man stop`).
pub fn man<C: CommandFactory>(sub: &[String]) -> Result<ExitCode, CliError> {
    let mut cmd = C::command();
    cmd.build();
    let mut name = "corral".to_string();
    for s in sub {
        cmd = cmd
            .find_subcommand(s)
            .cloned()
            .ok_or_else(|| CliError::Run(format!("`{name}` has no command `{s}`")))?;
        name = format!("{name}-{s}");
    }
    let cmd = cmd.name(name);
    let mut out = std::io::stdout().lock();
    clap_mangen::Man::new(cmd)
        .render(&mut out)
        .and_then(|()| out.flush())
        .map_err(|e| CliError::Run(e.to_string()))?;
    Ok(ExitCode::SUCCESS)
}

/// Names from the running corral that start with what is typed; none when no corral runs (a
/// completion must not print errors into the shell).
fn names(current: &OsStr, path: &str, field: &str) -> Vec<CompletionCandidate> {
    let typed = current.to_string_lossy();
    let Ok(list) = super::ctl::call::<Vec<serde_json::Value>>(None, Method::GET, path) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|v| v[field].as_str())
        .filter(|n| n.starts_with(typed.as_ref()))
        .map(|n| CompletionCandidate::new(n.to_string()))
        .collect()
}

pub fn units(current: &OsStr) -> Vec<CompletionCandidate> {
    names(current, "/v1/services", "name")
}

pub fn templates(current: &OsStr) -> Vec<CompletionCandidate> {
    names(current, "/v1/templates", "name")
}

pub fn instances(current: &OsStr) -> Vec<CompletionCandidate> {
    names(current, "/v1/instances", "name")
}

pub fn procs(current: &OsStr) -> Vec<CompletionCandidate> {
    names(current, "/v1/procs", "id")
}
