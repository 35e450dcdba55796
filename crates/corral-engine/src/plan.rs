//! The engine's input: what to run and by which rules. Built by `corral-config` from `corral.toml`;
//! nothing here knows about commands, files or ports — only names, edges, and timings.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Index of a unit in [`Plan::units`]. Stable for the life of an engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnitId(pub usize);

/// What a unit is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A long-running process, kept alive by its restart policy.
    Service,
    /// A one-shot command: runs once, its exit code is its result. Never restarted.
    Task,
    /// A named group with no process: up when all its dependencies hold.
    Target,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Service => "service",
            Kind::Task => "task",
            Kind::Target => "target",
        }
    }
}

/// When a dependency counts as met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// The dependency's process is running (or, for a task, has run).
    Started,
    /// The dependency's readiness probe passed (no probe: as soon as it runs).
    Healthy,
    /// The dependency ran and exited, with any status.
    Completed,
    /// The dependency ran and exited 0 (or failed with `allow_failure`).
    CompletedSuccessfully,
    /// A line of the dependency's output matched its `log_ready` pattern.
    LogReady,
}

impl Condition {
    pub const ALL: [Condition; 5] = [
        Condition::Started,
        Condition::Healthy,
        Condition::Completed,
        Condition::CompletedSuccessfully,
        Condition::LogReady,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Started => "started",
            Condition::Healthy => "healthy",
            Condition::Completed => "completed",
            Condition::CompletedSuccessfully => "completed_successfully",
            Condition::LogReady => "log_ready",
        }
    }

    pub fn parse(s: &str) -> Option<Condition> {
        Condition::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dependency {
    pub unit: UnitId,
    pub condition: Condition,
}

/// When a service is restarted after its process exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartMode {
    /// Restart after a non-zero exit, a signal, or a failed liveness probe. Default.
    OnFailure,
    /// Restart after every exit.
    Always,
    /// Never restart.
    Never,
}

impl RestartMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartMode::OnFailure => "on-failure",
            RestartMode::Always => "always",
            RestartMode::Never => "never",
        }
    }
}

/// Restart budget and backoff. Defaults: 10 restarts, 3 within a 2 s startup grace,
/// 500 ms doubling to 30 s with 10 % jitter, counters reset after 60 s of stable running.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RestartPolicy {
    pub mode: RestartMode,
    /// Restarts allowed before the service is `Failed`. Default 10.
    pub max_restarts: u32,
    /// Crashes allowed within `startup_grace` of a start, in a row. Default 3.
    pub startup_max_restarts: u32,
    /// A run shorter than this counts against the startup budget. Default 2 s.
    pub startup_grace: Duration,
    /// First backoff delay; doubles on each restart. Default 500 ms.
    pub backoff_initial: Duration,
    /// Backoff ceiling. Default 30 s.
    pub backoff_max: Duration,
    /// Random spread of each delay, as a fraction (0.1 = ±10 %). Default 0.1.
    pub jitter: f64,
    /// A run at least this long resets the restart counters. Default 60 s.
    pub reset_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            mode: RestartMode::OnFailure,
            max_restarts: 10,
            startup_max_restarts: 3,
            startup_grace: Duration::from_secs(2),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            jitter: 0.1,
            reset_after: Duration::from_secs(60),
        }
    }
}

impl RestartPolicy {
    /// The delay before restart number `restart` (1-based), before jitter.
    pub fn base_delay(&self, restart: u32) -> Duration {
        let doublings = restart.saturating_sub(1).min(32);
        let delay = self
            .backoff_initial
            .saturating_mul(1u32 << doublings.min(31));
        delay.min(self.backoff_max)
    }
}

/// How a probe is carried out matters only to the runtime; the engine needs its timing, and
/// whether results come from probing on a timer or from watching the output.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProbeTiming {
    /// Wait this long after start before the first probe. Default 0.
    pub start_period: Duration,
    /// Time between probes. Default 1 s.
    pub interval: Duration,
    /// One probe's time limit. Default 1 s.
    pub timeout: Duration,
    /// Consecutive failures that count as failed. Default 3.
    pub failure_threshold: u32,
    /// Consecutive successes that count as passed. Default 1.
    pub success_threshold: u32,
    /// The probe is a log-line pattern: the runtime reports matches, nothing is polled.
    pub by_log: bool,
}

impl Default for ProbeTiming {
    fn default() -> Self {
        ProbeTiming {
            start_period: Duration::ZERO,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            failure_threshold: 3,
            success_threshold: 1,
            by_log: false,
        }
    }
}

impl ProbeTiming {
    /// How long a start may take for this probe to pass, at the least: the start period plus
    /// `failure_threshold` full probe rounds. The start timeout stretches to fit it.
    pub fn time_to_fail(&self) -> Duration {
        self.start_period + (self.interval + self.timeout) * self.failure_threshold
    }
}

/// One unit of the plan.
#[derive(Clone, Debug)]
pub struct UnitSpec {
    pub name: String,
    pub kind: Kind,
    pub deps: Vec<Dependency>,
    pub restart: RestartPolicy,
    /// Gates dependents waiting on `healthy`; while not passed the unit is running, not ready.
    /// (Boxed, as is `liveness`: most units have neither, and inline the two were a third of a
    /// unit's spec — at thousands of units, a third of the plan.)
    pub readiness: Option<Box<ProbeTiming>>,
    /// Failing it stops the process and restarts it through the restart policy.
    pub liveness: Option<Box<ProbeTiming>>,
    /// The signal number sent to stop the unit's process group. Default SIGTERM (15).
    pub stop_signal: i32,
    /// Time between the stop signal and SIGKILL. Default 10 s.
    pub stop_grace: Duration,
    /// Time a start may take to become ready before it counts as a failed start. Stretched to
    /// fit the readiness probe. Default 60 s. Only applies with a readiness probe.
    pub start_timeout: Duration,
    /// Tasks only: a failure does not fail the run and does not skip dependents.
    pub allow_failure: bool,
    /// When it fails for good (a failure it is not restarted from), the whole stack stops.
    pub exit_on_failure: bool,
    /// When it ends for good, however, the whole stack stops.
    pub exit_on_end: bool,
    /// When it is skipped (a dependency's condition can never hold), the whole stack stops.
    pub exit_on_skipped: bool,
    /// It watches files (`watch`): a change restarts it (a task: runs it again) once no other
    /// change came for this long. None: it watches nothing.
    pub watch_debounce: Option<Duration>,
    /// `WATCHDOG=1` must come at least this often while it runs, or it is restarted through
    /// its policy (systemd's `WatchdogSec`).
    pub watchdog: Option<Duration>,
    /// Restart it when its process tree's resident memory stays above this many bytes
    /// (`max_memory`, two samples in a row).
    pub max_memory: Option<u64>,
    /// It runs on a schedule (a task's `schedule`): what a due run does while one is going.
    pub schedule: Option<Overlap>,
}

/// A scheduled run comes due while the previous one is still going.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overlap {
    /// This run is skipped (and said so).
    Skip,
    /// It runs as soon as the one going ends (at most one waits).
    Queue,
    /// The one going is stopped, and this one starts.
    Kill,
}

impl UnitSpec {
    /// A unit with every default, for tests and for building plans by hand.
    pub fn new(name: impl Into<String>, kind: Kind) -> UnitSpec {
        UnitSpec {
            name: name.into(),
            kind,
            deps: Vec::new(),
            restart: RestartPolicy {
                mode: if kind == Kind::Service {
                    RestartMode::OnFailure
                } else {
                    RestartMode::Never
                },
                ..RestartPolicy::default()
            },
            readiness: None,
            liveness: None,
            stop_signal: 15,
            stop_grace: Duration::from_secs(10),
            start_timeout: Duration::from_secs(60),
            allow_failure: false,
            exit_on_failure: false,
            exit_on_end: false,
            exit_on_skipped: false,
            watch_debounce: None,
            watchdog: None,
            max_memory: None,
            schedule: None,
        }
    }

    /// The start timeout after stretching it to fit the readiness probe: a probe that is allowed
    /// to fail `failure_threshold` times must get the time to do so.
    pub fn effective_start_timeout(&self) -> Duration {
        match &self.readiness {
            Some(p) if !p.by_log => self.start_timeout.max(p.time_to_fail()),
            _ => self.start_timeout,
        }
    }
}

/// Everything the engine supervises. Units may come in any order: the engine works from the
/// edges. Validation (unknown names, cycles) happens in `corral-config`.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Read-only once made (the index below is built from it). Each shared: a plan with a unit
    /// more or less (an instance created or deleted) copies pointers, not every spec.
    pub units: Vec<Arc<UnitSpec>>,
    /// Unit ids by name: a lookup by name is O(1) however many units there are (a search of
    /// the list made creating the 1,000th instance O(N) in several places).
    index: crate::NameIndex,
}

impl Plan {
    pub fn new(units: Vec<UnitSpec>) -> Plan {
        Plan::of(units.into_iter().map(Arc::new).collect())
    }

    fn of(units: Vec<Arc<UnitSpec>>) -> Plan {
        let index = crate::NameIndex::new(units.len(), |i| &units[i].name);
        Plan { units, index }
    }

    pub fn find(&self, name: &str) -> Option<UnitId> {
        self.index.find(name, |i| &self.units[i].name).map(UnitId)
    }

    pub fn get(&self, id: UnitId) -> &UnitSpec {
        &self.units[id.0]
    }

    pub fn ids(&self) -> impl Iterator<Item = UnitId> + '_ {
        (0..self.units.len()).map(UnitId)
    }

    /// This plan with `spec` added last: the ids of the others stay, and their index is
    /// extended, not made again. None if a unit of that name is in it.
    pub fn with_unit(&self, spec: UnitSpec) -> Option<Plan> {
        if self.find(&spec.name).is_some() {
            return None;
        }
        let mut units = self.units.clone();
        let mut index = self.index.clone();
        units.push(Arc::new(spec));
        index.insert(units.len() - 1, |i| &units[i].name);
        Some(Plan { units, index })
    }

    /// This plan without `gone`: the units after it move down by one, and dependencies on them
    /// follow. None if another unit depends on `gone`.
    pub fn without_unit(&self, gone: UnitId) -> Option<Plan> {
        let mut units = Vec::with_capacity(self.units.len().saturating_sub(1));
        for (i, u) in self.units.iter().enumerate() {
            if i == gone.0 {
                continue;
            }
            if u.deps.iter().any(|d| d.unit == gone) {
                return None;
            }
            if u.deps.iter().any(|d| d.unit.0 > gone.0) {
                let mut u = UnitSpec::clone(u);
                for d in &mut u.deps {
                    if d.unit.0 > gone.0 {
                        d.unit.0 -= 1;
                    }
                }
                units.push(Arc::new(u));
            } else {
                units.push(u.clone());
            }
        }
        Some(Plan::of(units))
    }
}
