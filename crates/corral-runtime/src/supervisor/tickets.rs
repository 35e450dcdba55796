//! Completion tickets: a client that starts, stops or restarts a unit may wait for the outcome
//! (`?wait=true`, `corral start --wait`). The request is answered once the unit is up (running
//! and ready; a task: exited with code 0) or down (no process), or as soon as that can no longer
//! happen (failed, skipped, exited with an error, stopped by somebody else) with the reason.
//! watchexec-supervisor's tickets are the model: the control returns something to await.
//!
//! Tickets are checked after every message the supervisor handles, so an outcome is seen in the
//! same step that produced it; a ticket whose client went away (its timeout passed) is dropped.

use super::*;
use corral_engine::UnitStatus;

/// What a ticket waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Goal {
    /// Running and ready (a task: completed successfully).
    Up,
    /// No process.
    Down,
}

pub(super) struct Ticket {
    /// By name: a reload may renumber units while a ticket waits.
    pub(super) unit: String,
    pub(super) goal: Goal,
    pub(super) reply: oneshot::Sender<Result<Reply, CommandError>>,
}

/// Where a unit stands against a goal: `None` while it may still get there.
pub(super) fn outcome(
    name: &str,
    kind: Kind,
    u: &UnitStatus,
    goal: Goal,
) -> Option<Result<Reply, CommandError>> {
    let done = |what: String| Some(Ok(Reply::Done(format!("{name}: {what}"))));
    let failed = |why: String| Some(Err(CommandError::Unsuccessful(format!("{name} {why}"))));
    match (goal, &u.state) {
        (Goal::Down, s)
            if !s.is_live() && !matches!(s, State::Blocked { .. } | State::Backoff { .. }) =>
        {
            done(s.name().to_string())
        }
        (Goal::Down, _) => None,
        (Goal::Up, State::Running { ready: true, .. }) if kind != Kind::Task => {
            done("running".into())
        }
        (Goal::Up, State::Exited { status }) if kind == Kind::Task && status.success() => {
            done(format!("completed ({status})"))
        }
        (Goal::Up, State::Exited { status }) => failed(format!("exited ({status})")),
        (Goal::Up, State::Failed { reason }) => failed(format!("failed: {reason}")),
        (Goal::Up, State::Skipped { reason }) => failed(format!("was skipped: {reason}")),
        (Goal::Up, State::Inactive) if !u.wanted || u.held => {
            failed("was stopped before it came up".into())
        }
        (Goal::Up, _) => None,
    }
}

impl Supervisor {
    /// Answer the tickets whose unit has reached (or missed) its goal.
    pub(super) fn check_tickets(&mut self) {
        if self.tickets.is_empty() {
            return;
        }
        let mut open = Vec::with_capacity(self.tickets.len());
        for t in std::mem::take(&mut self.tickets) {
            if t.reply.is_closed() {
                continue;
            }
            let Some(unit) = self.project.plan.find(&t.unit) else {
                let gone = format!("{} was removed", t.unit);
                let _ = t.reply.send(Err(CommandError::Unsuccessful(gone)));
                continue;
            };
            let kind = self.project.plan.get(unit).kind;
            match outcome(&t.unit, kind, self.engine.unit(unit), t.goal) {
                Some(result) => {
                    let _ = t.reply.send(result);
                }
                None => open.push(t),
            }
        }
        self.tickets = open;
    }
}
