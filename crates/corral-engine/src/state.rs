//! The states a unit can be in, and the vocabulary the engine and runtime speak: events in,
//! effects out.

use std::fmt;
use std::time::{Duration, Instant};

use crate::plan::{Condition, UnitId};

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
    /// An adopted process ended: it was not our child, so its status could not be collected.
    Unknown,
    /// The process could not be started (for a reason that may pass: see `SpawnFailed`).
    NotStarted,
}

impl ExitStatus {
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "signal {s}"),
            ExitStatus::Unknown => write!(f, "exit status unknown (adopted process)"),
            ExitStatus::NotStarted => write!(f, "could not start"),
        }
    }
}

/// One unmet dependency of a blocked unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    pub name: String,
    pub condition: Condition,
}

impl fmt::Display for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` ({})", self.name, self.condition)
    }
}

/// Why a unit gave up. `Display` is the English for people.
#[derive(Clone, Debug, PartialEq)]
pub enum FailReason {
    /// The process could not be started (the OS's words).
    SpawnFailed(String),
    /// It crashed more often than `startup_max_restarts` within `startup_grace` of starting.
    StartupCrashes {
        crashes: u32,
        grace: Duration,
        last: ExitStatus,
    },
    /// It was restarted `max_restarts` times and crashed again.
    RestartBudget { restarts: u32, last: ExitStatus },
}

impl FailReason {
    /// A stable name for programs.
    pub fn kind(&self) -> &'static str {
        match self {
            FailReason::SpawnFailed(_) => "spawn_failed",
            FailReason::StartupCrashes { .. } => "startup_crashes",
            FailReason::RestartBudget { .. } => "restart_budget",
        }
    }
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailReason::SpawnFailed(error) => f.write_str(error),
            FailReason::StartupCrashes {
                crashes,
                grace,
                last,
            } => write!(
                f,
                "crashed {crashes} times within {} of starting (last: {last})",
                crate::fmt_duration(*grace)
            ),
            FailReason::RestartBudget { restarts, last } => write!(
                f,
                "restarted {restarts} time{}, giving up (last: {last})",
                if *restarts == 1 { "" } else { "s" }
            ),
        }
    }
}

/// Why a dependency's condition can never hold.
#[derive(Clone, Debug, PartialEq)]
pub enum Never {
    Failed,
    Skipped,
    EndedWith(ExitStatus),
    EndedBeforeLogReady,
}

/// Why a unit will not start. `Display` is the English for people.
#[derive(Clone, Debug, PartialEq)]
pub enum SkipReason {
    /// `unit` can never reach `condition`, because of `never`.
    Dependency {
        unit: String,
        condition: Condition,
        never: Never,
    },
    /// A sequential pipeline stops at its first required failure.
    EarlierTaskFailed,
}

impl SkipReason {
    /// A stable name for programs.
    pub fn kind(&self) -> &'static str {
        match self {
            SkipReason::Dependency { .. } => "dependency",
            SkipReason::EarlierTaskFailed => "earlier_task_failed",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Dependency {
                unit,
                condition,
                never,
            } => {
                write!(f, "needs `{unit}` {condition}, but `{unit}` ")?;
                match never {
                    Never::Failed => f.write_str("failed"),
                    Never::Skipped => f.write_str("was skipped"),
                    Never::EndedWith(status) => write!(f, "ended with {status}"),
                    Never::EndedBeforeLogReady => {
                        f.write_str("ended before its log_ready pattern matched")
                    }
                }
            }
            SkipReason::EarlierTaskFailed => f.write_str("an earlier task failed"),
        }
    }
}

/// The state of one unit.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    /// Not wanted, or stopped.
    Inactive,
    /// Wanted, but dependencies are not met yet.
    Blocked { waiting_on: Vec<Waiting> },
    /// A spawn was asked of the runtime; no PID yet.
    Starting,
    /// The process runs. `ready` is false until the readiness probe passes.
    Running { pid: u32, ready: bool },
    /// Waiting to restart after a crash.
    Backoff { until: Instant, restart: u32 },
    /// The stop signal was sent; SIGKILL follows after the grace period.
    Stopping { pid: u32 },
    /// The process ended and will not be restarted (a task that ran, or a service that ended
    /// under its restart policy).
    Exited { status: ExitStatus },
    /// Given up: spawn failed, or the restart budget is spent.
    Failed { reason: FailReason },
    /// Will not start: a dependency cannot reach the condition this unit waits on.
    Skipped { reason: SkipReason },
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Inactive => "inactive",
            State::Blocked { .. } => "blocked",
            State::Starting => "starting",
            State::Running { ready: true, .. } => "running",
            State::Running { ready: false, .. } => "running (not ready)",
            State::Backoff { .. } => "backoff",
            State::Stopping { .. } => "stopping",
            State::Exited { .. } => "exited",
            State::Failed { .. } => "failed",
            State::Skipped { .. } => "skipped",
        }
    }

    /// The state's name without its details (`running`, whether ready or not): the names the
    /// API's typed state uses.
    pub fn kind_name(&self) -> &'static str {
        match self {
            State::Running { .. } => "running",
            s => s.name(),
        }
    }

    /// A process exists (or is being created) for this unit.
    pub fn is_live(&self) -> bool {
        matches!(
            self,
            State::Starting | State::Running { .. } | State::Stopping { .. }
        )
    }

    /// Nothing more will happen to this unit unless somebody asks.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            State::Exited { .. } | State::Failed { .. } | State::Skipped { .. }
        )
    }
}

/// What a probe checks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Readiness,
    Liveness,
}

/// Why the engine asked for a timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimerKind {
    /// Time to run this probe again.
    Probe(ProbeKind),
    /// The start must be ready by now.
    StartTimeout,
    /// The stop grace period is over: kill.
    StopGrace,
    /// The backoff delay is over: start again.
    Backoff,
    /// Time to check that a `WATCHDOG=1` came.
    Watchdog,
}

/// Something that happened, fed to [`crate::Engine::handle`].
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The user wants these units up (with everything they depend on).
    Up(Vec<UnitId>),
    /// Stop everything, dependents first.
    Shutdown,
    /// Kill everything now (a second Ctrl-C).
    ForceKill,
    /// The user starts a unit (again), with what it depends on; `dependents`: and everything
    /// that depends on it. Failed, exited and skipped units get a fresh restart budget.
    Start { unit: UnitId, dependents: bool },
    /// The user stops a unit (and, with `dependents`, everything that depends on it, first).
    /// It stays down until started again.
    Stop { unit: UnitId, dependents: bool },
    /// Stop, then start again at once (no backoff), dependents too if asked.
    Restart { unit: UnitId, dependents: bool },
    /// A process found running after a daemon restart belongs to this unit: supervise it as
    /// generation `generation`, as if it had just been spawned `running_for` ago.
    Adopt {
        unit: UnitId,
        generation: u64,
        pid: u32,
        running_for: Duration,
    },
    Spawned {
        unit: UnitId,
        generation: u64,
        pid: u32,
    },
    SpawnFailed {
        unit: UnitId,
        generation: u64,
        error: String,
        /// The machine was out of descriptors, processes or memory: a service tries again
        /// through its restart policy instead of failing for good.
        retryable: bool,
    },
    Exited {
        unit: UnitId,
        generation: u64,
        status: ExitStatus,
    },
    ProbeResult {
        unit: UnitId,
        generation: u64,
        probe: ProbeKind,
        ok: bool,
        detail: String,
    },
    /// A line matched the unit's `log_ready` pattern.
    LogReady { unit: UnitId, generation: u64 },
    Timer {
        unit: UnitId,
        generation: u64,
        timer: TimerKind,
    },
    /// A sample of the unit's tree's resident memory (only for units with `max_memory`).
    Memory {
        unit: UnitId,
        generation: u64,
        rss_bytes: u64,
    },
    /// A scheduled run of the task is due (the runtime keeps the calendar).
    ScheduleDue { unit: UnitId },
    /// The unit said `WATCHDOG=1`: it is alive.
    Watchdog { unit: UnitId, generation: u64 },
    /// A file the unit watches changed (`path`, relative to the project).
    FilesChanged { unit: UnitId, path: String },
    /// The debounce after change `seq` is over (see [`Effect::WatchTimer`]).
    WatchSettled { unit: UnitId, seq: u64 },
}

/// Something the runtime must do, returned by [`crate::Engine::handle`].
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Start the unit's process; report `Spawned` or `SpawnFailed` with this generation number.
    Spawn { unit: UnitId, generation: u64 },
    /// Send `signal` to the generation's process group.
    Signal {
        unit: UnitId,
        generation: u64,
        signal: i32,
    },
    /// SIGKILL the generation's process group and everything it started.
    Kill { unit: UnitId, generation: u64 },
    /// Run this probe once, within its timeout, and report `ProbeResult`.
    RunProbe {
        unit: UnitId,
        generation: u64,
        probe: ProbeKind,
    },
    /// Report `Timer` after this long.
    SetTimer {
        unit: UnitId,
        generation: u64,
        timer: TimerKind,
        after: Duration,
    },
    /// The unit changed state; `note` says why, for people.
    Changed { unit: UnitId, note: Option<String> },
    /// Report `WatchSettled` with this `seq` after this long (a later change sets another).
    WatchTimer {
        unit: UnitId,
        seq: u64,
        after: Duration,
    },
}
