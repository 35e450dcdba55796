//! The JSON shapes of the API, shared by the server and the client. They mirror the runtime's
//! views on purpose rather than serializing them: the JSON is a contract with other programs,
//! the runtime's structs are free to change.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Service {
    pub name: String,
    pub kind: String,
    pub state: String,
    pub pid: Option<u32>,
    pub ready: bool,
    /// Seconds the current process has been running.
    pub uptime_secs: Option<f64>,
    pub restarts: u32,
    pub last_exit: Option<String>,
    pub health: Option<String>,
    pub ports: Vec<u16>,
    pub waiting_on: Vec<String>,
    pub reason: Option<String>,
    pub depends_on: Vec<Dependency>,
    /// Stopped by the user: stays down until started.
    pub held: bool,
    pub adopted: bool,
    /// CPU, memory and process count of its tree (with `?metrics=true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Usage {
    pub cpu_percent: f64,
    pub rss_bytes: u64,
    pub processes: usize,
}

impl From<corral_runtime::metrics::Usage> for Usage {
    fn from(u: corral_runtime::metrics::Usage) -> Usage {
        Usage {
            cpu_percent: u.cpu_percent,
            rss_bytes: u.rss_bytes,
            processes: u.processes,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Dependency {
    pub name: String,
    pub condition: String,
}

impl From<&corral_runtime::UnitView> for Service {
    fn from(u: &corral_runtime::UnitView) -> Service {
        Service {
            name: u.name.clone(),
            kind: u.kind.as_str().to_string(),
            state: u.state.to_string(),
            pid: u.pid,
            ready: u.ready,
            uptime_secs: u.uptime.map(|d| (d.as_secs_f64() * 10.0).round() / 10.0),
            restarts: u.restarts,
            last_exit: u.last_exit.clone(),
            health: u.health.clone(),
            ports: u.ports.clone(),
            waiting_on: u.waiting_on.clone(),
            reason: u.reason.clone(),
            depends_on: u
                .depends_on
                .iter()
                .map(|(name, condition)| Dependency {
                    name: name.clone(),
                    condition: condition.clone(),
                })
                .collect(),
            held: u.held,
            adopted: u.adopted,
            usage: None,
        }
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

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub unit: String,
    pub kind: String,
    pub state: String,
    pub message: String,
}

impl From<&corral_runtime::Notice> for Event {
    fn from(n: &corral_runtime::Notice) -> Event {
        Event {
            time_ms: millis(n.time),
            unit: n.unit.clone(),
            kind: n.kind.to_string(),
            state: n.state.clone(),
            message: n.message.clone(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Line {
    pub unit: String,
    pub time_ms: u64,
    /// `out` or `err`.
    pub stream: String,
    pub text: String,
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

impl From<&corral_runtime::adhoc::ProcView> for Proc {
    fn from(p: &corral_runtime::adhoc::ProcView) -> Proc {
        Proc {
            id: p.id.clone(),
            key: p.key.clone(),
            command: p.command.clone(),
            pid: p.pid,
            state: p.state.to_string(),
            exit_code: p.exit_code,
            signal: p.signal,
            timed_out: p.timed_out,
            started_ms: millis(p.started),
            ended_ms: p.ended.map(millis),
            output: Output {
                head: p.output.head.clone(),
                tail: p.output.tail.clone(),
                original_bytes: p.output.original_bytes,
                retained_bytes: p.output.retained_bytes,
                omitted_bytes: p.output.omitted_bytes,
            },
            usage: None,
        }
    }
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

impl From<&corral_runtime::RunView> for Run {
    fn from(r: &corral_runtime::RunView) -> Run {
        Run {
            id: r.id,
            state: r.state.to_string(),
            sequential: r.sequential,
            started_ms: millis(r.started),
            elapsed_secs: r.elapsed.as_secs_f64(),
            tasks: r
                .tasks
                .iter()
                .map(|t| TaskResult {
                    name: t.name.clone(),
                    verdict: t.verdict.to_string(),
                    detail: t.detail.clone(),
                    duration_secs: t.duration.map(|d| d.as_secs_f64()),
                })
                .collect(),
        }
    }
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
