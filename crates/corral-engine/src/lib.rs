//! # corral-engine: the supervisor as a pure state machine
//!
//! ## Theory of operation
//!
//! The engine holds a [`Plan`] (units, dependency edges, policies) and one [`UnitStatus`] per
//! unit. The runtime feeds it [`Event`]s — "the user wants `api` up", "pid 42 exited with code 1",
//! "the readiness probe of `db` passed", "the backoff timer of `web` fired" — together with the
//! current time, and [`Engine::handle`] answers with [`Effect`]s: spawn this, signal that, run
//! this probe, wake me in 500 ms. The engine never sleeps, reads a clock, or touches a process.
//!
//! That is why every rule lives here and nowhere else:
//! - **dependencies**: a wanted unit starts when every dependency's [`Condition`] holds; until
//!   then it is [`State::Blocked`] and lists what it waits on; when a condition can never hold
//!   (the dependency failed), it is [`State::Skipped`] with the reason.
//! - **health**: probe results arrive as events; success and failure streaks are counted against
//!   the thresholds; readiness gates dependents, liveness failure restarts.
//! - **restarts**: the budget, the startup budget, exponential backoff with jitter, the reset
//!   after a stable run — see [`RestartPolicy`].
//! - **stop order**: at shutdown a unit is signalled only once none of its dependents has a
//!   process any more, so stop runs in reverse dependency order.
//!
//! Every spawn gets a new generation number; timers and process events carry it, and anything
//! from an older generation is ignored. So at most one process per unit is ever live.

mod engine;
mod names;
mod plan;
mod state;

pub use engine::{Engine, UnitStatus, fmt_duration};
pub use names::NameIndex;
pub use plan::{
    Condition, Dependency, Kind, Overlap, Plan, ProbeTiming, RestartMode, RestartPolicy, UnitId,
    UnitSpec,
};
pub use state::{
    Effect, Event, ExitStatus, FailReason, Never, ProbeKind, SkipReason, State, TimerKind, Waiting,
};

#[cfg(test)]
mod tests;
