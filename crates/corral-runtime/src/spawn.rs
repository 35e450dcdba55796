//! The one way corral starts a process — services, tasks, ad-hoc processes, instance setup steps,
//! exec probes. Whatever every process must get is done here once:
//! - its own process group (a stop signals the whole group; the terminal's Ctrl-C does not
//!   reach it, corral forwards what it should);
//! - an explicit environment (nothing inherited by accident) plus the marker
//!   (`CORRAL_INSTANCE_ID`) that ties it, and anything it starts, to its owner — even after
//!   `setsid` or re-parenting, so a new daemon or a sweep can find it;
//! - the program resolved on the child's own `PATH` first, so std can use `posix_spawn` (no
//!   fork of a large daemon) and a missing program is a clear error, not an `exec` failure;
//! - registration with the reaper before it can be reaped, so its exit status is ours;
//! - a cgroup of its own when the system gives corral cgroups (see [`crate::cgroup`]), joined
//!   by the child before `exec`, so nothing it starts is ever outside it.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};

use corral_engine::ExitStatus;
use tokio::sync::oneshot;

use crate::proctable;
use crate::reaper::Reaper;

/// Where one of the child's standard streams goes.
pub enum Io {
    Null,
    /// A pipe; its other end is in [`Spawned::child`].
    Piped,
    /// Appended to this file.
    File(File),
}

impl Io {
    fn stdio(self) -> Stdio {
        match self {
            Io::Null => Stdio::null(),
            Io::Piped => Stdio::piped(),
            Io::File(f) => Stdio::from(f),
        }
    }
}

/// What to start.
pub struct Spec<'a> {
    /// The command; `argv[0]` is looked up on the `PATH` of `env`.
    pub argv: &'a [String],
    pub cwd: &'a Path,
    /// The whole environment of the child.
    pub env: &'a [(String, String)],
    /// The marker (see [`proctable::marker`]); `None` for short-lived helpers (probes) that
    /// are killed with their group when they time out.
    pub marker: Option<&'a str>,
    pub stdin: Io,
    pub stdout: Io,
    pub stderr: Io,
    /// Run as this user (corral is root): groups, group, user are set in the child before
    /// `exec`.
    pub identity: Option<&'a corral_config::Identity>,
    /// The child's umask.
    pub umask: Option<u32>,
    /// Resource limits set in the child before `exec` (`limits`): soft and hard alike.
    pub rlimits: &'a [(nix::sys::resource::Resource, u64)],
    /// Cgroup limits, written into its cgroup before it joins (where there is one).
    pub cgroup_limits: corral_config::CgroupLimits,
    /// It starts a daemon and exits (`daemon = true`): when it exits 0, what it leaves in its
    /// group and cgroup lives on (see [`Spawned::cgroup`]).
    pub daemon: bool,
}

impl<'a> Spec<'a> {
    /// A spec with corral's own identity and umask.
    pub fn new(argv: &'a [String], cwd: &'a Path, env: &'a [(String, String)]) -> Spec<'a> {
        Spec {
            argv,
            cwd,
            env,
            marker: None,
            stdin: Io::Null,
            stdout: Io::Null,
            stderr: Io::Null,
            identity: None,
            umask: None,
            rlimits: &[],
            cgroup_limits: corral_config::CgroupLimits::default(),
            daemon: false,
        }
    }
}

/// A started process: its handle (for the pipes), PID, and its exit status to come.
pub struct Spawned {
    pub child: Child,
    pub pid: u32,
    pub exit: oneshot::Receiver<ExitStatus>,
    /// Its cgroup, for a `daemon`: the caller's to retire once the daemon has ended (the
    /// reaper retires the others' at their exit).
    pub cgroup: Option<std::path::PathBuf>,
}

/// Why a process could not be started, in words a person can act on (`.0`), and whether
/// trying again later may work (`.1`: the machine was out of descriptors, processes or memory —
/// not a mistake in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnError(pub String, pub bool);

impl SpawnError {
    pub fn permanent(message: impl Into<String>) -> SpawnError {
        SpawnError(message.into(), false)
    }
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SpawnError {}

/// Start `spec` in its own process group, registered with `reaper`.
pub fn spawn(reaper: &Reaper, spec: Spec<'_>) -> Result<Spawned, SpawnError> {
    let Some(program0) = spec.argv.first() else {
        return Err(SpawnError::permanent(
            "nothing to run (the command is empty)",
        ));
    };
    let program = proctable::resolve_program(program0, spec.env, spec.cwd)
        .ok_or_else(|| SpawnError::permanent(not_found_or_no_dir(program0, spec.cwd)))?;
    let mut cmd = std::process::Command::new(program);
    cmd.arg0(program0)
        .args(&spec.argv[1..])
        .current_dir(spec.cwd)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(spec.stdin.stdio())
        .stdout(spec.stdout.stdio())
        .stderr(spec.stderr.stdio())
        .process_group(0);
    if let Some(marker) = spec.marker {
        cmd.env(proctable::MARKER_VAR, marker);
    }
    let slot = spec
        .marker
        .and_then(|m| reaper.slot(m, &spec.cgroup_limits));
    let cgroup = slot.as_ref().map(|s| s.dir.clone());
    if let Some(slot) = slot {
        // The child joins its cgroup itself, before anything it runs can fork: a parent that
        // moved it after the spawn would leave a moment in which a fork escapes. (A pre_exec
        // step makes std fork instead of posix_spawn; the cost is measured by `scripts/bench`.)
        // SAFETY: `join_from_child` only opens, writes and closes, on a path prepared before the
        // fork; it runs before the identity step below, while the child may still write there.
        unsafe {
            cmd.pre_exec(move || {
                // Best effort: a process outside its cgroup is still found the fallback ways
                // (group, marker, recorded tree); it is not a reason to refuse to start it.
                let _ = slot.join_from_child();
                Ok(())
            });
        }
    }
    if !spec.rlimits.is_empty() {
        let limits = spec.rlimits.to_vec();
        // SAFETY: between fork and exec this only calls setrlimit on data prepared before the
        // fork; nothing allocates or locks.
        unsafe {
            cmd.pre_exec(move || {
                for (resource, value) in &limits {
                    nix::sys::resource::setrlimit(*resource, *value, *value)?;
                }
                Ok(())
            });
        }
    }
    if spec.identity.is_some() || spec.umask.is_some() {
        // Only for units that ask: a pre_exec step makes std fork instead of posix_spawn.
        let ids = spec.identity.map(|id| {
            (
                id.groups
                    .iter()
                    .map(|g| nix::unistd::Gid::from_raw(*g))
                    .collect::<Vec<_>>(),
                nix::unistd::Gid::from_raw(id.gid),
                nix::unistd::Uid::from_raw(id.uid),
            )
        });
        let umask = spec.umask;
        // SAFETY: between fork and exec this only makes system calls (umask, setgroups,
        // setgid, setuid) on data prepared before the fork; nothing allocates or locks.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(m) = umask {
                    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(m as _));
                }
                if let Some((groups, gid, uid)) = &ids {
                    nix::unistd::setgroups(groups)?;
                    nix::unistd::setgid(*gid)?;
                    nix::unistd::setuid(*uid)?;
                }
                Ok(())
            });
        }
    }
    let kept = if spec.daemon { cgroup.clone() } else { None };
    let (child, exit) = reaper.spawn(&mut cmd, cgroup, spec.daemon).map_err(|e| {
        let retryable = matches!(
            e.raw_os_error(),
            Some(nix::libc::EMFILE | nix::libc::ENFILE | nix::libc::EAGAIN | nix::libc::ENOMEM)
        );
        SpawnError(describe(program0, spec.cwd, e), retryable)
    })?;
    let pid = child.id();
    Ok(Spawned {
        child,
        pid,
        exit,
        cgroup: kept,
    })
}

pub(crate) fn not_found_or_no_dir(program: &str, cwd: &Path) -> String {
    if !cwd.is_dir() {
        format!("working directory `{}` does not exist", cwd.display())
    } else {
        format!("command `{program}` not found (is it installed and on PATH?)")
    }
}

fn describe(program: &str, cwd: &Path, e: std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => not_found_or_no_dir(program, cwd),
        std::io::ErrorKind::PermissionDenied => {
            format!("`{program}` is not executable (permission denied)")
        }
        _ => format!("cannot start `{program}`: {e}"),
    }
}
