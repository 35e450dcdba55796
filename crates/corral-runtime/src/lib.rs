//! # corral-runtime: where corral touches the OS
//!
//! ## Theory of operation
//!
//! [`supervisor::prepare`] sets up a [`Supervisor`] (lock, store, keeper, reaper, adoption) and a
//! [`Control`] handle for the API; [`Supervisor::run`] owns the pure [`corral_engine::Engine`] on
//! one task and turns its effects into system calls. Each piece of state has one owner, a task
//! with its own queue; no lock is shared between owners:
//! - the supervisor: the engine, live processes, the store's unit records, tickets, pipelines;
//! - the output [`router`]: what happens to output after the keeper;
//! - [`adhoc`]: ad-hoc processes; [`instances`]: instances of templates (a client of the
//!   supervisor);
//! - the [`keeper`] process: the output pipes and log files.
//!
//! The modules:
//! - [`spawn`]: the one way a process is started (group, environment, marker, cgroup, reaper);
//! - [`cgroup`]: a cgroup v2 per started process, where the system allows it.
//! - [`wrap`]: tasks run under `corral __wrap`, which records their exit status.
//! - [`reaper`]: corral is a child subreaper; one reaper collects every child (ours and the
//!   orphans re-parented to us), so there are no zombies and no PID is signalled after reuse.
//! - [`proctable`]: `/proc` reading — process trees, the `CORRAL_INSTANCE_ID` marker that ties a
//!   process to its unit even after `setsid`, and port holders.
//! - [`keeper`]: the separate process that holds every process's output pipes and writes the
//!   log files, so the daemon can die without losing a line; it streams lines back ("the tap").
//!   The daemon holds copies of the pipes too, so the keeper can die as well.
//! - [`logs`]: line splitting, the log file format and rotation, and log queries.
//! - [`router`]: the output router, a task of its own: lines to the terminal, to `logs -f`
//!   followers, and past the `log_ready`/`log` patterns; only matches reach the engine.
//! - [`printer`]: the `name | line` terminal view on its own thread; it may drop display lines
//!   when the terminal is slow, the log files never do.
//! - [`probe`]: one TCP / HTTP / exec health check.
//! - [`ports`]: free-port checks, `auto` ports, `kill_others`.
//! - [`adhoc`]: commands started over the API for a caller, with head + tail output; their own
//!   owner task.
//! - [`instances`]: instances of templates, their own owner task — workspace (ZIP unpacked
//!   safely, or `git clone`) and setup steps; a client of the supervisor, which it asks to
//!   define (and remove) each instance's service.
//! - [`metrics`]: CPU and memory of process trees, measured when asked.
//! - [`holder`]: who runs a project, known even when its `.corral/` was removed.
//! - [`sockpath`]: sockets born 0600; [`statedir`]: `.corral/` 0700 and its files 0600,
//!   no symlink followed, nothing loose trusted.
//!
//! How a stop works: the engine asks for the stop signal; the supervisor sends it to the unit's
//! process group and to every stray (descendants outside the group, orphans carrying the unit's
//! marker). After the grace period the engine asks for SIGKILL, sent the same way. When the
//! group leader is reaped, the rest of its group is SIGKILLed at once — but for a leader that
//! was being stopped in a cgroup, whose leftovers may finish their own stop within the grace
//! ([`reaper`]'s lingering cgroups) — and a sweep shortly after kills orphans of exited
//! generations. Before corral exits, every remaining descendant is killed
//! and reaped. Where corral can make cgroups ([`cgroup`]), each process has one and all of this
//! is exact (`cgroup.kill`); the rest stays as the fallback.

/// A line on stderr for whoever runs corral. Unlike `eprintln!` it never panics: std's panics
/// when the write fails, and the daemon's and the keeper's stderr is a file in `.corral/` (a
/// full disk: ENOSPC) or a terminal that may have gone (EIO) — neither may take them down, with
/// every service's output behind them. One `write` per line (O_APPEND keeps lines whole).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let mut line = ::std::format!($($arg)*);
        line.push('\n');
        let _ = ::std::io::stderr().write_all(line.as_bytes());
    }};
}

pub mod adhoc;
pub mod cgroup;
pub mod heap;
pub mod holder;
pub mod instances;
pub mod keeper;
pub mod logs;
pub mod metrics;
pub mod ports;
pub mod printer;
pub mod probe;
pub mod proctable;
pub mod reaper;
pub mod router;
pub mod sdnotify;
pub mod sockpath;
pub mod spawn;
pub mod statedir;
pub mod supervisor;
mod vfork;
pub mod watch;
pub mod wrap;

pub use supervisor::{
    Command, CommandError, Control, Goal, LineNotice, Notice, NoticeKind, Options, Outcome, Reply,
    RunView, Snapshot, StartError, Supervisor, TaskResult, UnitOutcome, UnitView, prepare, run,
    verdict,
};
