//! The JSON shapes of the API, shared by the server and the client.

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
