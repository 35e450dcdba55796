//! The one way corral starts a process — services, tasks, ad-hoc processes, instance setup steps,
//! exec probes. Whatever every process must get is done here once:
//! - its own process group (a stop signals the whole group; the terminal's Ctrl-C does not
//!   reach it, corral forwards what it should);
//! - an explicit environment (nothing inherited by accident) plus the marker
//!   (`CORRAL_INSTANCE_ID`) that ties it, and anything it starts, to its owner — even after
//!   `setsid` or re-parenting, so a new daemon or a sweep can find it;
//! - the program resolved on the child's own `PATH` first, so a missing program is a clear
//!   error, not an `exec` failure;
//! - no fork of the (large) daemon: a `CLONE_VM | CLONE_VFORK` child (see [`crate::vfork`]);
//! - registration with the reaper before it can be reaped, so its exit status is ours;
//! - a cgroup of its own when the system gives corral cgroups (see [`crate::cgroup`]), joined
//!   by the child before `exec`, so nothing it starts is ever outside it.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use corral_engine::ExitStatus;
use tokio::sync::oneshot;

use crate::proctable;
use crate::reaper::Reaper;

/// Where one of the child's standard streams goes.
pub enum Io {
    Null,
    /// A pipe; its other end is in [`Spawned::pipes`].
    Piped,
    /// Appended to this file.
    File(File),
    /// This descriptor itself (a listening socket handed over, as inetd does).
    Fd(OwnedFd),
}

impl Io {
    /// The descriptor the child gets (kept open in the parent until the child has exec'd), and
    /// for a pipe, the parent's end. `input`: the child reads it (stdin).
    fn open(self, input: bool) -> std::io::Result<(OwnedFd, Option<File>)> {
        Ok(match self {
            Io::Null => (
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/null")?
                    .into(),
                None,
            ),
            Io::Piped => {
                let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
                let quiet = QUIET_PIPE.load(std::sync::atomic::Ordering::Relaxed);
                if !input && quiet != 0 {
                    // Best effort: a pipe left at the kernel's size only costs its user more.
                    let _ = nix::fcntl::fcntl(&r, nix::fcntl::FcntlArg::F_SETPIPE_SZ(quiet as _));
                }
                if input {
                    (r, Some(File::from(w)))
                } else {
                    (w, Some(File::from(r)))
                }
            }
            Io::File(f) => (f.into(), None),
            Io::Fd(fd) => (fd, None),
        })
    }
}

/// The size output pipes are made with from now on; 0: as the kernel makes them (64 KiB).
static QUIET_PIPE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Make the output pipes of what starts from now on fit `units` units (see
/// [`quiet_pipe_size`]): called as a stack starts and whenever its units change.
pub fn size_pipes_for(units: usize) {
    // Read once: (the user's share in pages, 0 if not charged; the page size).
    static SHARE: std::sync::OnceLock<(usize, usize)> = std::sync::OnceLock::new();
    let (soft, page) = *SHARE.get_or_init(|| {
        let soft = std::fs::read_to_string("/proc/sys/fs/pipe-user-pages-soft")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        // SAFETY: sysconf only reads a configuration value.
        let page = unsafe { nix::libc::sysconf(nix::libc::_SC_PAGESIZE) }.max(4096) as usize;
        (if pipes_are_charged() { soft } else { 0 }, page)
    });
    QUIET_PIPE.store(
        quiet_pipe_size(units, soft, page),
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// Whether the kernel charges this process's pipes to its user: unless it holds
/// `CAP_SYS_RESOURCE` or `CAP_SYS_ADMIN` (as root mostly does).
fn pipes_are_charged() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_SYS_RESOURCE: u32 = 24;
    let effective = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let hex = s.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .unwrap_or(0);
    effective & (1 << CAP_SYS_ADMIN | 1 << CAP_SYS_RESOURCE) == 0
}

/// The size of a unit's output pipe with `units` units, for a user whose pipes may take
/// `soft_pages` pages before the kernel makes every new pipe of that user — of any program
/// of theirs — 8 KiB (`fs.pipe-user-pages-soft`, 16,384 pages: two 64 KiB pipes a unit reach
/// it at 512 units). The pipes of all units keep within half of it (the rest: pipes grown for
/// a flooding stream, and the user's other programs), in powers of two of pages as the
/// kernel sizes them, at least a page; 0 where the kernel's 64 KiB fit (or there is no limit).
/// A stream that fills its small pipe still has it grown (`logs`).
fn quiet_pipe_size(units: usize, soft_pages: usize, page: usize) -> usize {
    const KERNEL_PAGES: usize = 16;
    if soft_pages == 0 {
        return 0;
    }
    let pages = (soft_pages / 2 / (2 * units.max(1))).clamp(1, KERNEL_PAGES);
    let pages = 1 << pages.ilog2();
    if pages == KERNEL_PAGES {
        0
    } else {
        pages * page
    }
}

/// The parent's ends of a started process's pipes (those that were [`Io::Piped`]).
#[derive(Default)]
pub struct Pipes {
    pub stdin: Option<File>,
    pub stdout: Option<File>,
    pub stderr: Option<File>,
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
    /// `argv[0]` is corral itself (`__keeper`, a task's `__wrap`): run through
    /// `/proc/self/exe`, the very binary this daemon runs, also once the file at its path was
    /// removed (`cargo clean`, an uninstall) or replaced by another version (an upgrade).
    pub own_binary: bool,
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
            own_binary: false,
        }
    }
}

/// A started process: its pipes, PID, and its exit status to come (for [`spawn_then`], which
/// hands the status on itself, nothing).
pub struct Spawned<Exit = oneshot::Receiver<ExitStatus>> {
    pub pipes: Pipes,
    pub pid: u32,
    pub exit: Exit,
    /// Its cgroup, for a `daemon`: the caller's to retire once the daemon has ended (the
    /// reaper retires the others' at their exit).
    pub cgroup: Option<std::path::PathBuf>,
    /// It is in a cgroup of its own: whatever it starts is killed with it at its exit (by the
    /// reaper), so nothing needs looking for by marker.
    pub confined: bool,
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
    let (tx, rx) = oneshot::channel();
    let s = spawn_then(reaper, spec, move |status| {
        let _ = tx.send(status);
    })?;
    Ok(Spawned {
        pipes: s.pipes,
        pid: s.pid,
        exit: rx,
        cgroup: s.cgroup,
        confined: s.confined,
    })
}

/// [`spawn`], with `on_exit` called with the exit status when the process is reaped (on the
/// reaper's task: it must not block).
pub fn spawn_then(
    reaper: &Reaper,
    spec: Spec<'_>,
    on_exit: impl FnOnce(ExitStatus) + Send + 'static,
) -> Result<Spawned<()>, SpawnError> {
    prepare(reaper, spec, on_exit)?.launch()
}

/// A process made ready to start by [`prepare`]: its program found, its strings, descriptors
/// and cgroup made. What is left is the clone ([`Ready::launch`]), which may run on another
/// thread: the calling thread waits in it until the child has called `execve`, and units that
/// start together are launched side by side ([`launch_all`]).
pub struct Ready {
    plan: crate::vfork::Plan,
    reaper: Reaper,
    on_exit: crate::reaper::OnExit,
    /// For an error message: the program as given, and where it was to run.
    program: String,
    cwd: std::path::PathBuf,
    /// The child's ends (and the open cgroup), held until it has its copies.
    child_ends: Vec<OwnedFd>,
    pipes: Pipes,
    /// Its cgroup, until launched (a `Ready` dropped unlaunched removes it).
    cgroup: Option<std::path::PathBuf>,
    confined: bool,
    daemon: bool,
}

/// Everything of a spawn but the clone: see [`Ready`].
pub fn prepare(
    reaper: &Reaper,
    spec: Spec<'_>,
    on_exit: impl FnOnce(ExitStatus) + Send + 'static,
) -> Result<Ready, SpawnError> {
    let Some(program0) = spec.argv.first() else {
        return Err(SpawnError::permanent(
            "nothing to run (the command is empty)",
        ));
    };
    let program = match spec.own_binary && runs_as(program0) {
        true => PathBuf::from("/proc/self/exe"),
        false => proctable::resolve_program(program0, spec.env, spec.cwd)
            .ok_or_else(|| SpawnError::permanent(not_found_or_no_dir(program0, spec.cwd)))?,
    };
    let nul = |what: &str| SpawnError::permanent(format!("{what} contains a NUL byte"));
    let argv = spec
        .argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| nul("an argument"))?;
    let marker_var = spec
        .marker
        .map(|m| format!("{}={m}", proctable::MARKER_VAR));
    let env = spec
        .env
        .iter()
        .filter(|(k, _)| spec.marker.is_none() || k != proctable::MARKER_VAR)
        .map(|(k, v)| format!("{k}={v}"))
        .chain(marker_var)
        .map(CString::new)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| nul("an environment variable"))?;
    let cwd = CString::new(spec.cwd.as_os_str().as_bytes()).map_err(|_| nul("the directory"))?;
    let program_c =
        CString::new(program.as_os_str().as_bytes()).map_err(|_| nul("the program's path"))?;
    let io_error = |e: std::io::Error| SpawnError(describe(program0, spec.cwd, e), true);
    let (stdin, stdin_pipe) = spec.stdin.open(true).map_err(io_error)?;
    let (stdout, stdout_pipe) = spec.stdout.open(false).map_err(io_error)?;
    let (stderr, stderr_pipe) = spec.stderr.open(false).map_err(io_error)?;
    let mut plan = crate::vfork::Plan::new(
        program_c,
        argv,
        env,
        cwd,
        [stdin.as_raw_fd(), stdout.as_raw_fd(), stderr.as_raw_fd()],
    );
    let mut child_ends = vec![stdin, stdout, stderr];
    // The child writes itself into its cgroup before anything it runs can fork: a parent that
    // moved it after the spawn would leave a moment in which a fork escapes. A cgroup whose
    // `cgroup.procs` cannot be opened is given up here, so nothing counts on it (the reaper,
    // `confined`): the fallback holds.
    let slot = spec
        .marker
        .and_then(|m| reaper.slot(m, &spec.cgroup_limits));
    let cgroup = match slot {
        Some(slot) => match (slot.open_dir(), slot.open_procs()) {
            (Ok(dir), Ok(procs)) => {
                plan.cgroup = Some((dir.as_raw_fd(), procs.as_raw_fd()));
                child_ends.extend([OwnedFd::from(dir), OwnedFd::from(procs)]);
                Some(slot.dir)
            }
            _ => {
                crate::cgroup::remove(&slot.dir);
                None
            }
        },
        None => None,
    };
    plan.rlimits = spec
        .rlimits
        .iter()
        .map(|(r, v)| (*r as nix::libc::__rlimit_resource_t, *v))
        .collect();
    plan.umask = spec.umask.map(|m| m as nix::libc::mode_t);
    plan.ids = spec.identity.map(|id| (id.groups.clone(), id.gid, id.uid));
    Ok(Ready {
        plan,
        reaper: reaper.clone(),
        on_exit: Box::new(on_exit),
        program: program0.clone(),
        cwd: spec.cwd.to_path_buf(),
        child_ends,
        pipes: Pipes {
            stdin: stdin_pipe,
            stdout: stdout_pipe,
            stderr: stderr_pipe,
        },
        confined: cgroup.is_some(),
        cgroup,
        daemon: spec.daemon,
    })
}

impl Ready {
    /// Start it, registered with the reaper; returns once the child has called `execve`.
    pub fn launch(mut self) -> Result<Spawned<()>, SpawnError> {
        let cgroup = self.cgroup.take();
        let kept = if self.daemon { cgroup.clone() } else { None };
        let on_exit = std::mem::replace(&mut self.on_exit, Box::new(|_| {}));
        let plan = &mut self.plan;
        let pid = self
            .reaper
            .spawn(|| crate::vfork::spawn(plan), cgroup, self.daemon, on_exit)
            .map_err(|e| {
                let retryable = matches!(
                    e.raw_os_error(),
                    Some(
                        nix::libc::EMFILE
                            | nix::libc::ENFILE
                            | nix::libc::EAGAIN
                            | nix::libc::ENOMEM
                    )
                );
                SpawnError(describe(&self.program, &self.cwd, e), retryable)
            })?;
        // The child has its copies (or has failed): ours of its ends close here.
        self.child_ends.clear();
        Ok(Spawned {
            pipes: std::mem::take(&mut self.pipes),
            pid,
            exit: (),
            cgroup: kept,
            confined: self.confined,
        })
    }
}

impl Drop for Ready {
    fn drop(&mut self) {
        // Never launched: nobody else will remove its cgroup.
        if let Some(dir) = self.cgroup.take() {
            crate::cgroup::remove(&dir);
        }
    }
}

/// Launch each of `ready` (in any order), side by side on up to as many threads as the
/// machine has cores (fewer than [`crate::vfork::SLOT_SETS`]); the results in the order given.
/// Why: a thread that starts a process waits until the child has called `execve`, most of the
/// time it takes, and the child's work runs on whichever core is free; one thread starting 200
/// `sleep`s left the second core half idle (here, 200 from one thread: 109-133 ms, from two:
/// 95-108 ms).
pub fn launch_all(ready: Vec<Ready>) -> Vec<Result<Spawned<()>, SpawnError>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(crate::vfork::SLOT_SETS - 1)
        .min(ready.len())
        .max(1);
    if threads == 1 {
        return ready.into_iter().map(Ready::launch).collect();
    }
    let count = ready.len();
    // Taken one at a time by whichever thread is free: launches take unequal times.
    let queue = std::sync::Mutex::new(ready.into_iter().enumerate());
    let launch_some = || {
        let mut done = Vec::new();
        loop {
            let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
            let Some((i, r)) = next else { break done };
            done.push((i, r.launch()));
        }
    };
    let mut results: Vec<Option<Result<Spawned<()>, SpawnError>>> =
        (0..count).map(|_| None).collect();
    std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads)
            .map(|_| {
                std::thread::Builder::new()
                    .name("corral-launch".into())
                    .spawn_scoped(scope, launch_some)
            })
            .collect();
        let mut all = launch_some();
        // A thread that could not be made left its share to this one.
        for helper in helpers.into_iter().flatten() {
            all.extend(helper.join().unwrap_or_default());
        }
        for (i, result) in all {
            results[i] = Some(result);
        }
    });
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(SpawnError("it was not started".into(), true))))
        .collect()
}

/// Every process corral starts costs it two pipes (and a pidfd when adopted), every API client
/// a socket, and the keeper holds as many: the soft limit on open files (often 1024) is raised to
/// the hard one. Children inherit it raised, which is what a service expects of a supervisor
/// (systemd and supervisord do the same). Returns the soft limit now in force.
pub fn raise_open_files_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return u64::MAX;
    };
    if soft >= hard {
        return soft;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => hard,
        Err(e) => {
            crate::say!("corral: cannot raise the open-files limit from {soft} to {hard}: {e}");
            soft
        }
    }
}

/// Whether this process runs the binary at `path` (or did, before the file was removed or
/// replaced: the kernel then names it `PATH (deleted)`). Not so where corral's runtime runs
/// inside another program (the tests' in-process daemon) and starts the corral binary.
fn runs_as(path: &str) -> bool {
    std::fs::read_link("/proc/self/exe").is_ok_and(|own| {
        let own = own.as_os_str().as_encoded_bytes();
        own.strip_suffix(b" (deleted)").unwrap_or(own) == path.as_bytes()
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
    use nix::sys::resource::{Resource, getrlimit};
    let limit = |r| match getrlimit(r) {
        Ok((soft, _)) if soft != nix::sys::resource::RLIM_INFINITY => soft.to_string(),
        _ => "unlimited".to_string(),
    };
    match e.raw_os_error() {
        // The machine's limits, at scale: say which, and what to do; corral tries again later.
        Some(nix::libc::EMFILE) => {
            return format!(
                "cannot start `{program}`: corral has used up its open-file limit ({}; it holds 2 pipe ends for each running process); raise `ulimit -n` (the hard limit) for corral, or run fewer processes — trying again later",
                limit(Resource::RLIMIT_NOFILE)
            );
        }
        Some(nix::libc::ENFILE) => {
            return format!(
                "cannot start `{program}`: the machine has no file descriptors left (`sysctl fs.file-max`) — trying again later"
            );
        }
        Some(nix::libc::EAGAIN) => {
            let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap_or_default();
            return format!(
                "cannot start `{program}`: the process limit is reached (this user's `ulimit -u` is {}, `kernel.pid_max` is {}, or corral's cgroup `pids.max`) — trying again later",
                limit(Resource::RLIMIT_NPROC),
                pid_max.trim()
            );
        }
        Some(nix::libc::ENOMEM) => {
            return format!("cannot start `{program}`: out of memory — trying again later");
        }
        _ => {}
    }
    match e.kind() {
        std::io::ErrorKind::NotFound => not_found_or_no_dir(program, cwd),
        std::io::ErrorKind::PermissionDenied => {
            format!("`{program}` is not executable (permission denied)")
        }
        _ => format!("cannot start `{program}`: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::quiet_pipe_size;

    /// With the kernel's default share (16,384 pages of 4 KiB), pipes keep the kernel's size up
    /// to 256 units, and shrink by powers of two as units grow: two a unit stay within half
    /// the share while they can.
    #[test]
    fn output_pipes_shrink_as_units_grow_within_the_users_share() {
        let soft = 16_384;
        for (units, size) in [
            (1, 0),
            (256, 0),
            (257, 32 << 10),
            (600, 16 << 10),
            (1000, 16 << 10),
            (2000, 8 << 10),
            (5000, 4 << 10),
            (20_000, 4 << 10),
        ] {
            assert_eq!(quiet_pipe_size(units, soft, 4096), size, "{units} units");
        }
        for units in [257, 600, 1000, 2000] {
            let pages = quiet_pipe_size(units, soft, 4096) / 4096;
            assert!(2 * units * pages <= soft / 2, "{units} units");
        }
        // No limit (or not charged): as the kernel makes them.
        assert_eq!(quiet_pipe_size(5000, 0, 4096), 0);
    }
}
