//! The JSON shapes of the API, shared by the server and the client. They mirror the runtime's
//! views on purpose rather than serializing them: the JSON is a contract with other programs,
//! the runtime's structs are free to change.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The state of a unit. Typed, never English to parse: what a state means in detail is in the
/// fields beside it (`ready`, `waiting_on`, `reason`, `backoff_until_ms`, `last_exit`).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum UnitState {
    /// Not wanted, or stopped.
    Inactive,
    /// Wanted, but waiting for its dependencies (`waiting_on`) or for its turn.
    Blocked,
    /// A spawn was asked for; no PID yet.
    Starting,
    /// The process runs; `ready` says whether its readiness probe passed.
    Running,
    /// Waiting to restart after a crash (until `backoff_until_ms`).
    Backoff,
    /// The stop signal was sent; SIGKILL follows after the grace period.
    Stopping,
    /// Ended and not restarted (`last_exit` says how).
    Exited,
    /// Given up (`reason` says why).
    Failed,
    /// Will not start: a dependency cannot reach its condition (`reason`).
    Skipped,
}

impl UnitState {
    pub fn as_str(self) -> &'static str {
        match self {
            UnitState::Inactive => "inactive",
            UnitState::Blocked => "blocked",
            UnitState::Starting => "starting",
            UnitState::Running => "running",
            UnitState::Backoff => "backoff",
            UnitState::Stopping => "stopping",
            UnitState::Exited => "exited",
            UnitState::Failed => "failed",
            UnitState::Skipped => "skipped",
        }
    }

    /// The state as people read it, given whether the unit is ready: `running (not ready)`
    /// where readiness is still pending.
    pub fn shown(self, ready: bool) -> &'static str {
        if self == UnitState::Running && !ready {
            "running (not ready)"
        } else {
            self.as_str()
        }
    }
}

impl std::fmt::Display for UnitState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a dependent waits for.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    Started,
    Healthy,
    Completed,
    CompletedSuccessfully,
    LogReady,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Started => "started",
            Condition::Healthy => "healthy",
            Condition::Completed => "completed",
            Condition::CompletedSuccessfully => "completed_successfully",
            Condition::LogReady => "log_ready",
        }
    }
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a process ended: `{"code": 1}`, `{"signal": 9}`, or `"unknown"` (an adopted process whose
/// status could not be collected).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
    Unknown,
    /// It could not be started (out of descriptors, processes or memory); it is retried.
    NotStarted,
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "signal {s}"),
            ExitStatus::Unknown => f.write_str("exit status unknown (adopted process)"),
            ExitStatus::NotStarted => f.write_str("could not start"),
        }
    }
}

/// Why a unit failed or was skipped: a stable kind for programs, a message for people.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Reason {
    pub kind: ReasonKind,
    pub message: String,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ReasonKind {
    /// Failed: the process could not be started.
    SpawnFailed,
    /// Failed: it crashed more often than the startup budget allows.
    StartupCrashes,
    /// Failed: the restart budget is spent.
    RestartBudget,
    /// Skipped: a dependency can never reach the condition this unit waits on.
    Dependency,
    /// Skipped: an earlier task of a sequential pipeline failed.
    EarlierTaskFailed,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Service {
    pub name: String,
    /// `service`, `task` or `target`.
    pub kind: String,
    pub state: UnitState,
    pub pid: Option<u32>,
    /// Running and its readiness probe passed (or it has none).
    pub ready: bool,
    /// Seconds the current process has been running.
    pub uptime_secs: Option<f64>,
    pub restarts: u32,
    pub last_exit: Option<ExitStatus>,
    /// Readiness as people read it: `ready`, `not ready: <last failure>`; none without a probe.
    pub health: Option<String>,
    pub ports: Vec<u16>,
    /// What a blocked unit waits on.
    pub waiting_on: Vec<Dependency>,
    /// Why a failed or skipped unit is so.
    pub reason: Option<Reason>,
    /// When a unit in backoff starts again (milliseconds since the Unix epoch).
    pub backoff_until_ms: Option<u64>,
    pub depends_on: Vec<Dependency>,
    /// Stopped by the user: stays down until started.
    pub held: bool,
    pub adopted: bool,
    /// Its `namespace`, if it has one (`up --namespace`, `stop --namespace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// What it last said with `STATUS=` on its NOTIFY_SOCKET (sd_notify).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_text: Option<String>,
    /// Why its log file cannot be written now (a full disk, say), while that lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_trouble: Option<String>,
    /// A scheduled task's next run (milliseconds since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_ms: Option<u64>,
    /// Its limits, each saying how it applies (`memory 512MiB: cgroup memory.max`,
    /// `nofile 4096: rlimit`) or why it does not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<String>,
    /// CPU, memory and process count of its tree (with `?metrics=true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

impl Service {
    /// The state as people read it: `running (not ready)` where readiness is still pending.
    pub fn state_text(&self) -> &'static str {
        self.state.shown(self.ready)
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Usage {
    pub cpu_percent: f64,
    pub rss_bytes: u64,
    pub processes: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Dependency {
    pub name: String,
    pub condition: Condition,
}

impl std::fmt::Display for Dependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, self.condition)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Project {
    pub pid: u32,
    pub file: String,
    pub state_dir: String,
    pub uptime_secs: f64,
    pub shutting_down: bool,
    pub services: usize,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A unit changed state; `state` is its new state.
    State,
    /// A health check ran; `state` is the unit's state after it.
    Probe,
    /// An instance changed; `instance` is its new state.
    Instance,
    /// An ad-hoc process started, exited or was killed.
    Proc,
    /// A slow reader of the stream missed events.
    Lagged,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::State => "state",
            EventKind::Probe => "probe",
            EventKind::Instance => "instance",
            EventKind::Proc => "proc",
            EventKind::Lagged => "lagged",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub unit: String,
    pub kind: EventKind,
    /// The unit's state after the event (state and probe events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<UnitState>,
    /// The instance's state after the event (instance events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<InstanceState>,
    /// What happened to an ad-hoc process (proc events; `unit` is `proc:ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proc: Option<ProcChange>,
    pub message: String,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ProcChange {
    Started,
    Exited,
    Killed,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Line {
    pub unit: String,
    pub time_ms: u64,
    /// `out` or `err`.
    pub stream: String,
    pub text: String,
}

/// A unit's definition as corral runs it, in corral.toml's terms: what `GET
/// /v1/services/NAME/definition` answers (the dashboard's unit panel shows it).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Definition {
    pub name: String,
    pub kind: String,
    /// Where it is defined: the config file, or "added at run time", or its template.
    pub source: String,
    /// Its settings in order, each as `corral.toml` would say it (`key`, value as text); what is
    /// left at its default is left out. Environment values are not sent, only their names.
    pub fields: Vec<DefinitionField>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DefinitionField {
    pub key: String,
    pub value: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Done {
    pub message: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Error {
    pub code: String,
    pub message: String,
}

pub fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// A request to start an ad-hoc process.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct ProcRequest {
    /// An argv list, or a string run by `sh -c`.
    pub command: serde_json::Value,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// A duration: `30s`, `5m`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Between SIGTERM and SIGKILL after a timeout. Default `5s`.
    #[serde(default)]
    pub grace: Option<String>,
    #[serde(default)]
    pub stdin: Option<String>,
    #[serde(default)]
    pub close_stdin: bool,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub head_bytes: Option<usize>,
    #[serde(default)]
    pub tail_bytes: Option<usize>,
    /// How long an ended process is kept. Default `10m`.
    #[serde(default)]
    pub retain: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Output {
    pub head: String,
    pub tail: String,
    pub original_bytes: u64,
    pub retained_bytes: u64,
    pub omitted_bytes: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Proc {
    pub id: String,
    pub key: Option<String>,
    pub command: String,
    pub pid: u32,
    pub state: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub started_ms: u64,
    pub ended_ms: Option<u64>,
    pub output: Output,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// Input for a process's stdin.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Input {
    #[serde(default)]
    pub data: String,
    #[serde(default)]
    pub close: bool,
}

/// A piece of a process's output in a stream.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Chunk {
    pub stream: String,
    pub text: String,
}

/// A request to run a pipeline.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// Tasks to run (with the tasks they depend on). Default: every task.
    #[serde(default)]
    pub tasks: Vec<String>,
    #[serde(default)]
    pub sequential: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TaskResult {
    pub name: String,
    /// PASS, FAIL, SKIP, ALLOWED, RUNNING or PENDING.
    pub verdict: String,
    pub detail: String,
    pub duration_secs: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Run {
    pub id: u64,
    /// running, passed or failed.
    pub state: String,
    pub sequential: bool,
    pub started_ms: u64,
    pub elapsed_secs: f64,
    pub tasks: Vec<TaskResult>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct InstanceRequest {
    pub template: String,
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, String>,
    /// Clone this repository into the workspace.
    #[serde(default)]
    pub git: Option<String>,
    /// The workspace comes as a ZIP: `PUT /v1/instances/{name}/workspace` next.
    #[serde(default)]
    pub upload: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Template {
    pub name: String,
    pub params: std::collections::BTreeMap<String, String>,
    pub setup_steps: usize,
    pub files: Vec<String>,
    pub port_range: Option<(u16, u16)>,
}

/// Where an instance of a template is in its life.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Made with `upload`: waits for `PUT /v1/instances/{name}/workspace`.
    AwaitingUpload,
    /// Its workspace and setup steps are being prepared.
    Preparing,
    /// Prepared: its service exists (and runs unless stopped).
    Ready,
    /// Preparing failed (`error` says why); delete it and make a new one.
    Failed,
    /// Deleted, with its workspace and logs (events only).
    Deleted,
}

/// Where one setup step is.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Pending,
    Running,
    Done,
    Failed,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Step {
    pub name: String,
    pub state: StepState,
    pub detail: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Instance {
    /// The service's name: `TEMPLATE-ID`.
    pub name: String,
    pub template: String,
    pub id: String,
    pub port: u16,
    pub params: Vec<(String, String)>,
    pub workspace: String,
    /// `empty`, `upload` or `git URL`.
    pub source: String,
    pub state: InstanceState,
    pub error: Option<String>,
    pub steps: Vec<Step>,
    pub created_ms: u64,
}
