//! The runtime's views turned into wire types (corral-proto). The JSON is a contract with other
//! programs; the runtime's structs are free to change, so every field is mapped here by hand.

use corral_engine::{FailReason, SkipReason, State};
use corral_proto::wire::{self, millis};
use corral_runtime::instances::{InstanceState, StepState};

pub fn unit_state(s: &State) -> wire::UnitState {
    match s {
        State::Inactive => wire::UnitState::Inactive,
        State::Blocked { .. } => wire::UnitState::Blocked,
        State::Starting => wire::UnitState::Starting,
        State::Running { .. } => wire::UnitState::Running,
        State::Backoff { .. } => wire::UnitState::Backoff,
        State::Stopping { .. } => wire::UnitState::Stopping,
        State::Exited { .. } => wire::UnitState::Exited,
        State::Failed { .. } => wire::UnitState::Failed,
        State::Skipped { .. } => wire::UnitState::Skipped,
    }
}

/// The typed state for a state name the runtime keeps with notices (`running`, …).
pub fn unit_state_named(name: &str) -> Option<wire::UnitState> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
}

pub fn condition(c: corral_engine::Condition) -> wire::Condition {
    use corral_engine::Condition as C;
    match c {
        C::Started => wire::Condition::Started,
        C::Healthy => wire::Condition::Healthy,
        C::Completed => wire::Condition::Completed,
        C::CompletedSuccessfully => wire::Condition::CompletedSuccessfully,
        C::LogReady => wire::Condition::LogReady,
    }
}

pub fn exit_status(e: corral_engine::ExitStatus) -> wire::ExitStatus {
    match e {
        corral_engine::ExitStatus::Code(c) => wire::ExitStatus::Code(c),
        corral_engine::ExitStatus::Signal(s) => wire::ExitStatus::Signal(s),
        corral_engine::ExitStatus::Unknown => wire::ExitStatus::Unknown,
        corral_engine::ExitStatus::NotStarted => wire::ExitStatus::NotStarted,
    }
}

fn reason(s: &State) -> Option<wire::Reason> {
    let kind = match s {
        State::Failed { reason } => match reason {
            FailReason::SpawnFailed(_) => wire::ReasonKind::SpawnFailed,
            FailReason::StartupCrashes { .. } => wire::ReasonKind::StartupCrashes,
            FailReason::RestartBudget { .. } => wire::ReasonKind::RestartBudget,
        },
        State::Skipped { reason } => match reason {
            SkipReason::Dependency { .. } => wire::ReasonKind::Dependency,
            SkipReason::EarlierTaskFailed => wire::ReasonKind::EarlierTaskFailed,
        },
        _ => return None,
    };
    let message = match s {
        State::Failed { reason } => reason.to_string(),
        State::Skipped { reason } => reason.to_string(),
        _ => String::new(),
    };
    Some(wire::Reason { kind, message })
}

/// A unit as the API shows it; its strings are moved, not copied (at 5,000 units making the
/// list was 1.3 ms of the daemon's ~9 ms for a `ps`).
pub fn service(u: corral_runtime::UnitView) -> wire::Service {
    wire::Service {
        state: unit_state(&u.state),
        waiting_on: match &u.state {
            State::Blocked { waiting_on } => waiting_on
                .iter()
                .map(|w| wire::Dependency {
                    name: w.name.clone(),
                    condition: condition(w.condition),
                })
                .collect(),
            _ => Vec::new(),
        },
        reason: reason(&u.state),
        name: u.name,
        kind: u.kind.as_str().to_string(),
        pid: u.pid,
        ready: u.ready,
        uptime_secs: u.uptime.map(|d| (d.as_secs_f64() * 10.0).round() / 10.0),
        restarts: u.restarts,
        last_exit: u.last_exit.map(exit_status),
        health: u.health,
        ports: u.ports,
        backoff_until_ms: u.backoff_until.map(millis),
        depends_on: u
            .depends_on
            .into_iter()
            .map(|(name, c)| wire::Dependency {
                name,
                condition: condition(c),
            })
            .collect(),
        held: u.held,
        adopted: u.adopted,
        namespace: u.namespace,
        status_text: u.status_text,
        log_trouble: u.log_trouble,
        next_run_ms: u.next_run.map(millis),
        limits: u.limits,
        usage: None,
    }
}

pub fn usage(u: corral_runtime::metrics::Usage) -> wire::Usage {
    wire::Usage {
        cpu_percent: u.cpu_percent,
        rss_bytes: u.rss_bytes,
        processes: u.processes,
    }
}

pub fn event(n: &corral_runtime::Notice) -> wire::Event {
    use corral_runtime::NoticeKind;
    let (kind, state, instance) = match n.kind {
        NoticeKind::State => (wire::EventKind::State, unit_state_named(n.state), None),
        NoticeKind::Probe => (wire::EventKind::Probe, unit_state_named(n.state), None),
        NoticeKind::Instance => (
            wire::EventKind::Instance,
            None,
            serde_json::from_value(serde_json::Value::String(n.state.to_string())).ok(),
        ),
    };
    wire::Event {
        time_ms: millis(n.time),
        unit: n.unit.clone(),
        kind,
        state,
        instance,
        proc: None,
        message: n.message.clone(),
    }
}

pub fn proc(p: &corral_runtime::adhoc::ProcView) -> wire::Proc {
    wire::Proc {
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
        output: wire::Output {
            head: p.output.head.clone(),
            tail: p.output.tail.clone(),
            original_bytes: p.output.original_bytes,
            retained_bytes: p.output.retained_bytes,
            omitted_bytes: p.output.omitted_bytes,
        },
        usage: None,
    }
}

pub fn run(r: &corral_runtime::RunView) -> wire::Run {
    wire::Run {
        id: r.id,
        state: r.state.to_string(),
        sequential: r.sequential,
        started_ms: millis(r.started),
        elapsed_secs: r.elapsed.as_secs_f64(),
        tasks: r
            .tasks
            .iter()
            .map(|t| wire::TaskResult {
                name: t.name.clone(),
                verdict: t.verdict.to_string(),
                detail: t.detail.clone(),
                duration_secs: t.duration.map(|d| d.as_secs_f64()),
            })
            .collect(),
    }
}

pub fn instance(i: &corral_runtime::instances::Instance) -> wire::Instance {
    wire::Instance {
        name: i.name.clone(),
        template: i.template.clone(),
        id: i.id.clone(),
        port: i.port,
        params: i.params.clone(),
        workspace: i.workspace.display().to_string(),
        source: i.source.clone(),
        state: match i.state {
            InstanceState::AwaitingUpload => wire::InstanceState::AwaitingUpload,
            InstanceState::Preparing => wire::InstanceState::Preparing,
            InstanceState::Ready => wire::InstanceState::Ready,
            InstanceState::Failed => wire::InstanceState::Failed,
        },
        error: i.error.clone(),
        steps: i
            .steps
            .iter()
            .map(|s| wire::Step {
                name: s.name.clone(),
                state: match s.state {
                    StepState::Pending => wire::StepState::Pending,
                    StepState::Running => wire::StepState::Running,
                    StepState::Done => wire::StepState::Done,
                    StepState::Failed => wire::StepState::Failed,
                },
                detail: s.detail.clone(),
            })
            .collect(),
        created_ms: i.created_ms,
    }
}
