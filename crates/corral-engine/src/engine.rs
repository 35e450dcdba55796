//! The state machine. Every rule about dependencies, health thresholds, restart budgets, backoff
//! and stop order is decided here, in [`Engine::handle`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Dependency;
use crate::plan::{Condition, Kind, Plan, RestartMode, UnitId};
use crate::state::{
    Effect, Event, ExitStatus, FailReason, Never, ProbeKind, SkipReason, State, TimerKind, Waiting,
};

/// What the engine knows about one unit besides its spec.
#[derive(Clone, Debug)]
pub struct UnitStatus {
    pub state: State,
    /// The user asked for this unit (or something that depends on it) to be up.
    pub wanted: bool,
    /// The current (or last) generation. Numbers are unique across all units of an engine, so an
    /// event that names the wrong unit (one that was renumbered by a plan change) is ignored too.
    pub generation: u64,
    pub pid: Option<u32>,
    /// When the current (or last) process was spawned.
    pub started_at: Option<Instant>,
    /// When the last process exited.
    pub ended_at: Option<Instant>,
    /// Restarts since the counters were last reset.
    pub restarts: u32,
    pub last_exit: Option<ExitStatus>,
    /// The `log_ready` pattern matched a line of the current generation.
    pub log_ready: bool,
    startup_failures: u32,
    ever_ready: bool,
    restart_after_stop: bool,
    /// The user asked for this unit to go down (stop, or the first half of a restart).
    down_requested: bool,
    /// Start again as soon as the stop requested by the user is done.
    start_after_stop: bool,
    /// The user stopped it: it stays down, even when something that depends on it is wanted,
    /// until the user starts it again.
    pub held: bool,
    readiness: Streak,
    liveness: Streak,
    /// What few units come to need, apart: a unit's status stays small (there may be
    /// thousands), and these were two fifths of it. Made on first use, kept.
    rare: Option<Box<Rare>>,
}

#[derive(Clone, Debug, Default)]
struct Rare {
    /// The last probe failure, for people.
    last_probe_error: Option<String>,
    /// Why the last start of this unit failed for want of a resource (descriptors, processes,
    /// memory), for the reason it gives if it gives up.
    spawn_error: Option<String>,
    /// The latest watched change (its number, and the file), waiting for the debounce.
    watch: Option<(u64, String)>,
    /// By when the next `WATCHDOG=1` must come (one timer is armed at a time).
    watchdog_due: Option<Instant>,
    /// Memory samples over `max_memory` in a row.
    memory_over: u32,
    /// A scheduled run waits for the one going to end (`overlap = "queue"`).
    queued_run: bool,
}

#[derive(Clone, Copy, Debug, Default)]
struct Streak {
    successes: u32,
    failures: u32,
}

impl UnitStatus {
    fn new() -> UnitStatus {
        UnitStatus {
            state: State::Inactive,
            wanted: false,
            generation: 0,
            pid: None,
            started_at: None,
            ended_at: None,
            restarts: 0,
            last_exit: None,
            log_ready: false,
            startup_failures: 0,
            ever_ready: false,
            restart_after_stop: false,
            down_requested: false,
            start_after_stop: false,
            held: false,
            readiness: Streak::default(),
            liveness: Streak::default(),
            rare: None,
        }
    }

    /// The last probe failure, for people.
    pub fn last_probe_error(&self) -> Option<&str> {
        self.rare.as_ref()?.last_probe_error.as_deref()
    }

    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_default()
    }

    /// Memory samples over `max_memory` start counting again (without making the rare part).
    fn memory_under(&mut self) {
        if let Some(r) = &mut self.rare {
            r.memory_over = 0;
        }
    }
}

/// Whether a dependency condition holds.
enum Holds {
    Yes,
    NotYet,
    Never(Never),
}

/// The supervisor state machine. Pure: no I/O, no clock (`now` is an argument), no threads. Its
/// randomness (backoff jitter) comes from a seeded generator, so a run is reproducible.
pub struct Engine {
    /// Shared with the project it was made from (one copy of every unit's spec).
    plan: Arc<Plan>,
    units: Vec<UnitStatus>,
    dependents: Vec<Vec<UnitId>>,
    rng: fastrand::Rng,
    shutting_down: bool,
    force: bool,
    /// At most this many tasks run at once (`corral run --sequential` sets 1).
    task_limit: Option<usize>,
    /// After a required task fails, the tasks not yet started are skipped.
    fail_fast: bool,
    a_task_failed: bool,
    /// The next generation number (shared by all units).
    next_generation: u64,
    out: Vec<Effect>,
    /// Units whose state changed since the last evaluation.
    touched: Vec<UnitId>,
    /// The shutdown has had its pass over every unit; from then on only units that may act
    /// differently are looked at (see [`Engine::shutdown_pass`]).
    shutdown_pass_done: bool,
    /// Reused by each unit's look at its dependencies in a start pass.
    not_yet: Vec<Dependency>,
    /// Tasks with a process, counted in a start pass when a task limit asks.
    live_tasks: Option<usize>,
}

impl Engine {
    pub fn new(plan: impl Into<Arc<Plan>>, seed: u64) -> Engine {
        let plan = plan.into();
        let mut dependents = vec![Vec::new(); plan.units.len()];
        for (i, u) in plan.units.iter().enumerate() {
            for d in &u.deps {
                dependents[d.unit.0].push(UnitId(i));
            }
        }
        Engine {
            units: vec![UnitStatus::new(); plan.units.len()],
            plan,
            dependents,
            rng: fastrand::Rng::with_seed(seed),
            shutting_down: false,
            force: false,
            task_limit: None,
            fail_fast: false,
            a_task_failed: false,
            next_generation: 1,
            out: Vec::new(),
            touched: Vec::new(),
            shutdown_pass_done: false,
            not_yet: Vec::new(),
            live_tasks: None,
        }
    }

    /// Run tasks one at a time, and skip the rest after the first required failure.
    pub fn set_sequential(&mut self) {
        self.set_task_mode(true);
    }

    /// For a new pipeline run: sequential (one task at a time, stop at the first required
    /// failure) or parallel waves; earlier failures no longer count.
    pub fn set_task_mode(&mut self, sequential: bool) {
        self.task_limit = sequential.then_some(1);
        self.fail_fast = sequential;
        self.a_task_failed = false;
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn unit(&self, id: UnitId) -> &UnitStatus {
        &self.units[id.0]
    }

    pub fn state(&self, id: UnitId) -> &State {
        &self.units[id.0].state
    }

    /// Switch to a changed plan (a reloaded config). `carry[i]` names the old unit whose status
    /// the new unit `i` keeps (same name), or None for a new unit. The caller has stopped every
    /// unit whose definition changed or that is gone; units carried over keep their processes
    /// and generation numbers, so their pending events still apply.
    pub fn replace_plan(&mut self, plan: impl Into<Arc<Plan>>, carry: &[Option<UnitId>]) {
        let plan = plan.into();
        let mut dependents = vec![Vec::new(); plan.units.len()];
        for (i, u) in plan.units.iter().enumerate() {
            for d in &u.deps {
                dependents[d.unit.0].push(UnitId(i));
            }
        }
        // Moved, not copied: each unit is carried once.
        let mut before = std::mem::take(&mut self.units);
        self.units = (0..plan.units.len())
            .map(|i| match carry.get(i).copied().flatten() {
                Some(old) => std::mem::replace(&mut before[old.0], UnitStatus::new()),
                None => UnitStatus::new(),
            })
            .collect();
        self.dependents = dependents;
        // Unit ids changed: what was touched, and the shutdown's pass, were of the old plan.
        self.touched.clear();
        self.shutdown_pass_done = false;
        self.plan = plan;
    }

    /// Carry a restart count over from an earlier life of the daemon.
    pub fn set_restarts(&mut self, id: UnitId, restarts: u32) {
        if let Some(u) = self.units.get_mut(id.0) {
            u.restarts = restarts;
        }
    }

    pub fn dependents(&self, id: UnitId) -> &[UnitId] {
        &self.dependents[id.0]
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// No unit has a process, or is about to get one.
    pub fn all_down(&self) -> bool {
        self.units.iter().all(|u| !u.state.is_live())
    }

    /// Every wanted task has finished (or will never run).
    pub fn tasks_settled(&self) -> bool {
        self.wanted_ended(|kind| kind == Kind::Task)
    }

    /// Nothing runs and nothing will without the user: every wanted unit has ended.
    pub fn settled(&self) -> bool {
        self.all_down() && self.wanted_ended(|_| true)
    }

    fn wanted_ended(&self, counts: impl Fn(Kind) -> bool) -> bool {
        self.plan.ids().all(|id| {
            let u = &self.units[id.0];
            !counts(self.plan.get(id).kind) || !u.wanted || u.state.is_terminal()
        })
    }

    /// Feed one event in; get back what the runtime must do, in order.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Effect> {
        match event {
            Event::Up(ids) => self.want(ids),
            Event::Shutdown => self.shutting_down = true,
            Event::ForceKill => self.force_kill(),
            Event::Start { unit, dependents } => {
                let ids = self.with_dependents(unit, dependents);
                self.start(ids);
            }
            Event::Stop { unit, dependents } => {
                for id in self.with_dependents(unit, dependents) {
                    let u = &mut self.units[id.0];
                    u.wanted = false;
                    u.held = true;
                    u.down_requested = true;
                    u.start_after_stop = false;
                }
            }
            Event::Restart { unit, dependents } => {
                let ids = self.with_dependents(unit, dependents);
                let (live, down): (Vec<UnitId>, Vec<UnitId>) = ids
                    .into_iter()
                    .partition(|id| self.units[id.0].state.is_live());
                for id in live {
                    let u = &mut self.units[id.0];
                    u.down_requested = true;
                    u.start_after_stop = true;
                }
                self.start(down);
            }
            Event::Adopt {
                unit,
                generation,
                pid,
                running_for,
            } => {
                if unit.0 < self.units.len() && !self.units[unit.0].state.is_live() {
                    let u = &mut self.units[unit.0];
                    u.generation = generation;
                    self.next_generation = self.next_generation.max(generation + 1);
                    u.wanted = true;
                    self.spawned(unit, pid, now);
                    let u = &mut self.units[unit.0];
                    u.started_at = Some(now.checked_sub(running_for).unwrap_or(now));
                    self.changed(unit, Some(format!("adopted (pid {pid})")));
                }
            }
            Event::Spawned {
                unit,
                generation,
                pid,
            } => {
                if self.is_current(unit, generation) {
                    self.spawned(unit, pid, now);
                }
            }
            Event::SpawnFailed {
                unit,
                generation,
                error,
                retryable,
            } => {
                let service = self.plan.units.get(unit.0).map(|u| u.kind) == Some(Kind::Service);
                if retryable && service && self.is_current(unit, generation) {
                    let u = &mut self.units[unit.0];
                    u.pid = None;
                    u.ended_at = Some(now);
                    u.last_exit = Some(ExitStatus::NotStarted);
                    u.rare().spawn_error = Some(error.clone());
                    self.changed(unit, Some(format!("could not start: {error}")));
                    self.after_exit(unit, ExitStatus::NotStarted, true, now);
                } else if self.is_current(unit, generation) {
                    let u = &mut self.units[unit.0];
                    u.ended_at = Some(now);
                    self.task_finished(unit, false);
                    self.set(
                        unit,
                        State::Failed {
                            reason: FailReason::SpawnFailed(error),
                        },
                        None,
                    );
                }
            }
            Event::Exited {
                unit,
                generation,
                status,
            } => {
                if self.is_current(unit, generation) {
                    self.exited(unit, status, now);
                    let u = &mut self.units[unit.0];
                    let queued = u.rare.as_ref().is_some_and(|r| r.queued_run);
                    if queued && !u.state.is_live() && !self.shutting_down {
                        u.rare().queued_run = false;
                        self.changed(unit, Some("the queued scheduled run starts".into()));
                        self.start(vec![unit]);
                    }
                }
            }
            Event::ScheduleDue { unit } => self.schedule_due(unit),
            Event::ProbeResult {
                unit,
                generation,
                probe,
                ok,
                detail,
            } => {
                if self.is_current(unit, generation) {
                    self.probe_result(unit, probe, ok, detail);
                }
            }
            Event::LogReady { unit, generation } => {
                if self.is_current(unit, generation)
                    && matches!(self.units[unit.0].state, State::Running { .. })
                    && !self.units[unit.0].log_ready
                {
                    self.units[unit.0].log_ready = true;
                    self.changed(unit, Some("log_ready pattern matched".into()));
                }
            }
            Event::Timer {
                unit,
                generation,
                timer,
            } => {
                if self.is_current(unit, generation) {
                    self.timer_fired(unit, timer, now);
                }
            }
            Event::Watchdog { unit, generation } => {
                if self.is_current(unit, generation)
                    && let Some(every) = self.plan.units[unit.0].watchdog
                {
                    self.units[unit.0].rare().watchdog_due = Some(now + every);
                }
            }
            Event::Memory {
                unit,
                generation,
                rss_bytes,
            } => self.memory(unit, generation, rss_bytes),
            Event::FilesChanged { unit, path } => self.files_changed(unit, path),
            Event::WatchSettled { unit, seq } => self.watch_settled(unit, seq),
        }
        self.evaluate();
        std::mem::take(&mut self.out)
    }

    /// A scheduled run is due: start it, or do what `overlap` says when one is still going. A
    /// task the user stopped is not run by its schedule until started again.
    fn schedule_due(&mut self, unit: UnitId) {
        let Some(overlap) = self.plan.units.get(unit.0).and_then(|s| s.schedule) else {
            return;
        };
        if self.shutting_down || self.units[unit.0].held {
            return;
        }
        let u = &mut self.units[unit.0];
        if !u.state.is_live() {
            self.changed(unit, Some("scheduled run".into()));
            self.start(vec![unit]);
            return;
        }
        let note = match overlap {
            crate::Overlap::Skip => "the last run is still going: this scheduled run is skipped",
            crate::Overlap::Queue => {
                u.rare().queued_run = true;
                "the last run is still going: this scheduled run waits for it"
            }
            crate::Overlap::Kill => {
                u.down_requested = true;
                u.start_after_stop = true;
                "the last run is still going: it is stopped for this scheduled run"
            }
        };
        self.changed(unit, Some(note.into()));
    }

    /// Samples in a row over `max_memory` before a restart: one spike is not enough.
    const MEMORY_SAMPLES: u32 = 2;

    fn memory(&mut self, unit: UnitId, generation: u64, rss: u64) {
        if !self.is_current(unit, generation) || self.shutting_down {
            return;
        }
        let Some(max) = self.plan.units[unit.0].max_memory else {
            return;
        };
        if !matches!(self.units[unit.0].state, State::Running { .. }) {
            return;
        }
        let u = &mut self.units[unit.0];
        if rss <= max {
            u.memory_under();
            return;
        }
        let r = u.rare();
        r.memory_over += 1;
        if r.memory_over >= Self::MEMORY_SAMPLES {
            r.memory_over = 0;
            let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
            let note = format!(
                "memory {:.1} MiB over max_memory {:.1} MiB; restarting",
                mib(rss),
                mib(max)
            );
            self.begin_stop(unit, true, Some(note));
        }
    }

    /// A watched file changed: (re)start the debounce. A unit nobody wants up, or that the user
    /// stopped, is not started by a change.
    fn files_changed(&mut self, unit: UnitId, path: String) {
        let Some(after) = self.plan.units.get(unit.0).and_then(|s| s.watch_debounce) else {
            return;
        };
        let u = &self.units[unit.0];
        if !u.wanted || u.held {
            return;
        }
        // Numbered across all units, like generations: a settle addressed to a unit that a
        // plan change renumbered never matches.
        let seq = self.next_generation;
        self.next_generation += 1;
        self.units[unit.0].rare().watch = Some((seq, path));
        self.out.push(Effect::WatchTimer { unit, seq, after });
    }

    /// No change for the debounce: restart the service (a task: run it again).
    fn watch_settled(&mut self, unit: UnitId, seq: u64) {
        let Some(u) = self.units.get_mut(unit.0) else {
            return;
        };
        let Some((_, path)) = u
            .rare
            .as_mut()
            .and_then(|r| r.watch.take_if(|(s, _)| *s == seq))
        else {
            return;
        };
        if !u.wanted || u.held {
            return;
        }
        let note = Some(format!("`{path}` changed: restarting"));
        if u.state.is_live() {
            u.down_requested = true;
            u.start_after_stop = true;
            self.changed(unit, note);
        } else {
            self.changed(unit, note);
            self.start(vec![unit]);
        }
    }

    fn is_current(&self, unit: UnitId, generation: u64) -> bool {
        self.units
            .get(unit.0)
            .is_some_and(|u| u.generation == generation)
    }

    fn want(&mut self, ids: Vec<UnitId>) {
        let mut stack = ids;
        while let Some(id) = stack.pop() {
            let u = &mut self.units[id.0];
            if u.wanted || u.held {
                continue;
            }
            u.wanted = true;
            stack.extend(self.plan.units[id.0].deps.iter().map(|d| d.unit));
        }
    }

    /// `unit`, and with `dependents` everything that (transitively) depends on it.
    fn with_dependents(&self, unit: UnitId, dependents: bool) -> Vec<UnitId> {
        if unit.0 >= self.units.len() {
            return Vec::new();
        }
        let mut out = vec![unit];
        let mut i = 0;
        while dependents && i < out.len() {
            for d in &self.dependents[out[i].0] {
                if !out.contains(d) {
                    out.push(*d);
                }
            }
            i += 1;
        }
        out
    }

    /// Want these units and their dependencies again. What has ended (failed, skipped, exited)
    /// goes back to the start line with a fresh budget — except a dependency task that already
    /// succeeded: it is not run again for a dependent's sake.
    fn start(&mut self, ids: Vec<UnitId>) {
        let explicit = ids.clone();
        let mut seen = vec![false; self.units.len()];
        let mut stack = ids;
        while let Some(id) = stack.pop() {
            if std::mem::replace(&mut seen[id.0], true) {
                continue;
            }
            let kind = self.plan.units[id.0].kind;
            let u = &mut self.units[id.0];
            u.wanted = true;
            u.held = false;
            u.down_requested = false;
            let done_task = kind == Kind::Task
                && matches!(u.state, State::Exited { status } if status.success());
            let restartable = u.state.is_terminal() || matches!(u.state, State::Backoff { .. });
            if restartable && (!done_task || explicit.contains(&id)) {
                u.restarts = 0;
                u.startup_failures = 0;
                self.set(id, State::Inactive, None);
            }
            stack.extend(self.plan.units[id.0].deps.iter().map(|d| d.unit));
        }
    }

    fn set(&mut self, id: UnitId, state: State, mut note: Option<String>) {
        let spec = &self.plan.units[id.0];
        let rule = match &state {
            State::Failed { .. } if spec.exit_on_failure => Some("exit_on_failure"),
            State::Exited { status } if spec.exit_on_failure && !status.success() => {
                Some("exit_on_failure")
            }
            State::Failed { .. } | State::Exited { .. } if spec.exit_on_end => Some("exit_on_end"),
            State::Skipped { .. } if spec.exit_on_skipped => Some("exit_on_skipped"),
            _ => None,
        };
        if let Some(rule) = rule
            && !self.shutting_down
        {
            // Its end is the stack's: everything stops (the dependents first, as always).
            self.shutting_down = true;
            let why = format!("{rule}: stopping everything");
            note = Some(match note {
                Some(n) => format!("{n}; {why}"),
                None => why,
            });
        }
        self.units[id.0].state = state;
        self.touched.push(id);
        self.changed(id, note);
    }

    fn changed(&mut self, unit: UnitId, note: Option<String>) {
        self.out.push(Effect::Changed { unit, note });
    }

    fn arm(&mut self, unit: UnitId, timer: TimerKind, after: Duration) {
        let generation = self.units[unit.0].generation;
        self.out.push(Effect::SetTimer {
            unit,
            generation,
            timer,
            after,
        });
    }

    fn spawned(&mut self, id: UnitId, pid: u32, now: Instant) {
        let spec = &self.plan.units[id.0];
        let (readiness, liveness, start_timeout) = (
            spec.readiness.as_deref().copied(),
            spec.liveness.as_deref().copied(),
            spec.effective_start_timeout(),
        );
        let u = &mut self.units[id.0];
        u.pid = Some(pid);
        u.started_at = Some(now);
        u.log_ready = false;
        u.restart_after_stop = false;
        u.readiness = Streak::default();
        u.liveness = Streak::default();
        u.memory_under();
        let ready = readiness.is_none();
        u.ever_ready = ready;
        self.set(
            id,
            State::Running { pid, ready },
            Some(format!("started (pid {pid})")),
        );
        if let Some(p) = readiness {
            if !p.by_log {
                self.arm(id, TimerKind::Probe(ProbeKind::Readiness), p.start_period);
            }
            self.arm(id, TimerKind::StartTimeout, start_timeout);
        }
        if let Some(p) = liveness {
            self.arm(id, TimerKind::Probe(ProbeKind::Liveness), p.start_period);
        }
        if let Some(every) = self.plan.units[id.0].watchdog {
            self.units[id.0].rare().watchdog_due = Some(now + every);
            self.arm(id, TimerKind::Watchdog, every);
        }
    }

    fn exited(&mut self, id: UnitId, status: ExitStatus, now: Instant) {
        let kind = self.plan.units[id.0].kind;
        let u = &mut self.units[id.0];
        u.pid = None;
        u.ended_at = Some(now);
        u.last_exit = Some(status);
        // Stopped by a failed probe or start timeout, not by the user: restart it.
        let restart_wanted = std::mem::take(&mut u.restart_after_stop) && !self.shutting_down;
        let stopping = matches!(u.state, State::Stopping { .. });
        let user_stop = std::mem::take(&mut u.down_requested);
        if std::mem::take(&mut u.start_after_stop) && !self.shutting_down {
            u.restarts = 0;
            u.startup_failures = 0;
            u.wanted = true;
            self.set(
                id,
                State::Inactive,
                Some(format!("stopped ({status}); starting again")),
            );
        } else if kind == Kind::Task && !user_stop {
            self.task_finished(id, status.success());
            self.set(id, State::Exited { status }, Some(format!("{status}")));
        } else if (stopping && !restart_wanted) || user_stop {
            self.set(id, State::Inactive, Some(format!("stopped ({status})")));
        } else {
            // A failed probe or start timeout made us stop it: that is a failure whatever the
            // exit code says.
            let failure = restart_wanted || !status.success();
            self.after_exit(id, status, failure, now);
        }
    }

    fn task_finished(&mut self, id: UnitId, success: bool) {
        if self.plan.units[id.0].kind == Kind::Task
            && !success
            && !self.plan.units[id.0].allow_failure
        {
            self.a_task_failed = true;
        }
    }

    /// The restart policy, applied after a service's process ended on its own.
    fn after_exit(&mut self, id: UnitId, status: ExitStatus, failure: bool, now: Instant) {
        let policy = self.plan.units[id.0].restart;
        let restart = !self.shutting_down
            && match policy.mode {
                RestartMode::Always => true,
                RestartMode::OnFailure => failure,
                RestartMode::Never => false,
            };
        // A start that failed for want of a resource is tried again by the restart budget
        // alone (it is not a crash of the program), and giving up says what was missing.
        let spawn_error = match status {
            ExitStatus::NotStarted => self.units[id.0]
                .rare
                .as_mut()
                .and_then(|r| r.spawn_error.take()),
            _ => None,
        };
        if !restart {
            match spawn_error {
                Some(error) => self.set(
                    id,
                    State::Failed {
                        reason: FailReason::SpawnFailed(error),
                    },
                    None,
                ),
                None => self.set(id, State::Exited { status }, Some(format!("{status}"))),
            }
            return;
        }
        let u = &mut self.units[id.0];
        let uptime = u
            .started_at
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        if uptime >= policy.reset_after {
            u.restarts = 0;
            u.startup_failures = 0;
        }
        if spawn_error.is_some() {
            // Not the program's doing: no crash loop.
        } else if uptime < policy.startup_grace {
            u.startup_failures += 1;
        } else {
            u.startup_failures = 0;
        }
        if u.startup_failures > policy.startup_max_restarts {
            let reason = FailReason::StartupCrashes {
                crashes: u.startup_failures,
                grace: policy.startup_grace,
                last: status,
            };
            self.set(id, State::Failed { reason }, None);
            return;
        }
        // Counted only when it happens: giving up is not a restart (`ps` says restarts 2 of
        // `max_restarts = 2`, not 3).
        let restart_no = u.restarts + 1;
        if restart_no > policy.max_restarts {
            let reason = match spawn_error {
                Some(error) => FailReason::SpawnFailed(format!(
                    "{error} (gave up after {} tries)",
                    policy.max_restarts + 1
                )),
                None => FailReason::RestartBudget {
                    restarts: policy.max_restarts,
                    last: status,
                },
            };
            self.set(id, State::Failed { reason }, None);
            return;
        }
        u.restarts = restart_no;
        let base = policy.base_delay(restart_no);
        let spread = (self.rng.f64() * 2.0 - 1.0) * policy.jitter.clamp(0.0, 1.0);
        let delay = base.mul_f64(1.0 + spread).min(policy.backoff_max);
        let note = format!(
            "{status}; restart {restart_no}/{} in {}",
            policy.max_restarts,
            fmt_duration(delay)
        );
        self.set(
            id,
            State::Backoff {
                until: now + delay,
                restart: restart_no,
            },
            Some(note),
        );
        self.arm(id, TimerKind::Backoff, delay);
    }

    fn timer_fired(&mut self, id: UnitId, timer: TimerKind, now: Instant) {
        let spec = &self.plan.units[id.0];
        let (grace, start_timeout) = (spec.stop_grace, spec.effective_start_timeout());
        let state = self.units[id.0].state.clone();
        let generation = self.units[id.0].generation;
        match (timer, state) {
            (TimerKind::Probe(probe), State::Running { .. }) => {
                self.out.push(Effect::RunProbe {
                    unit: id,
                    generation,
                    probe,
                });
            }
            (TimerKind::StartTimeout, State::Running { ready: false, .. })
                if !self.units[id.0].ever_ready =>
            {
                let note = format!("not ready after {}", fmt_duration(start_timeout));
                self.begin_stop(id, true, Some(note));
            }
            (TimerKind::StopGrace, State::Stopping { .. }) => {
                self.out.push(Effect::Kill {
                    unit: id,
                    generation,
                });
                self.changed(
                    id,
                    Some(format!(
                        "still running {} after the stop signal; killed",
                        fmt_duration(grace)
                    )),
                );
            }
            (TimerKind::Backoff, State::Backoff { .. }) => {
                // Back to the start pass, which checks dependencies again.
                self.units[id.0].state = State::Inactive;
                self.touched.push(id);
            }
            (TimerKind::Watchdog, State::Running { .. }) if !self.shutting_down => {
                let Some(due) = self.units[id.0].rare.as_ref().and_then(|r| r.watchdog_due) else {
                    return;
                };
                if now < due {
                    // A heartbeat came since this timer was set: wait for the next one.
                    self.arm(id, TimerKind::Watchdog, due - now);
                } else {
                    let every = self.plan.units[id.0].watchdog.unwrap_or_default();
                    let note = format!("no WATCHDOG=1 within {}; restarting", fmt_duration(every));
                    self.begin_stop(id, true, Some(note));
                }
            }
            _ => {}
        }
    }

    fn probe_result(&mut self, id: UnitId, probe: ProbeKind, ok: bool, detail: String) {
        let State::Running { pid, ready } = self.units[id.0].state else {
            return;
        };
        let spec = &self.plan.units[id.0];
        let Some(timing) = (match probe {
            ProbeKind::Readiness => spec.readiness.as_deref().copied(),
            ProbeKind::Liveness => spec.liveness.as_deref().copied(),
        }) else {
            return;
        };
        let u = &mut self.units[id.0];
        let streak = match probe {
            ProbeKind::Readiness => &mut u.readiness,
            ProbeKind::Liveness => &mut u.liveness,
        };
        if ok {
            streak.successes += 1;
            streak.failures = 0;
        } else {
            streak.failures += 1;
            streak.successes = 0;
        }
        let streak = *streak;
        if !ok {
            u.rare().last_probe_error = Some(detail.clone());
        }
        match probe {
            ProbeKind::Readiness => {
                if ok && !ready && (streak.successes >= timing.success_threshold || timing.by_log) {
                    self.units[id.0].ever_ready = true;
                    self.set(
                        id,
                        State::Running { pid, ready: true },
                        Some("ready".into()),
                    );
                } else if !ok && ready && streak.failures >= timing.failure_threshold {
                    let note = format!("not ready: {detail}");
                    self.set(id, State::Running { pid, ready: false }, Some(note));
                }
            }
            ProbeKind::Liveness => {
                // While shutting down, the unit goes down in reverse order anyway: a restart
                // now would stop it before its dependents.
                if !ok && streak.failures >= timing.failure_threshold && !self.shutting_down {
                    let note = format!(
                        "liveness probe failed {} times ({detail}); restarting",
                        streak.failures
                    );
                    self.begin_stop(id, true, Some(note));
                    return;
                }
            }
        }
        if !timing.by_log {
            self.arm(id, TimerKind::Probe(probe), timing.interval);
        }
    }

    /// Send the stop signal (or SIGKILL when forced) and arm the grace timer.
    fn begin_stop(&mut self, id: UnitId, then_restart: bool, note: Option<String>) {
        let spec = &self.plan.units[id.0];
        let (signal, grace) = (spec.stop_signal, spec.stop_grace);
        let u = &mut self.units[id.0];
        let Some(pid) = u.pid else { return };
        let generation = u.generation;
        u.restart_after_stop = then_restart;
        self.set(id, State::Stopping { pid }, note);
        if self.force {
            self.out.push(Effect::Kill {
                unit: id,
                generation,
            });
        } else {
            self.out.push(Effect::Signal {
                unit: id,
                generation,
                signal,
            });
            self.arm(id, TimerKind::StopGrace, grace);
        }
    }

    fn force_kill(&mut self) {
        self.shutting_down = true;
        self.force = true;
        for i in 0..self.units.len() {
            let id = UnitId(i);
            match self.units[i].state {
                State::Running { .. } => self.begin_stop(id, false, Some("killed".into())),
                State::Stopping { .. } => {
                    let generation = self.units[i].generation;
                    self.out.push(Effect::Kill {
                        unit: id,
                        generation,
                    });
                }
                _ => {}
            }
        }
    }

    fn holds(&self, dep: UnitId, condition: Condition) -> Holds {
        let u = &self.units[dep.0];
        let spec = &self.plan.units[dep.0];
        match &u.state {
            State::Failed { .. } => {
                if spec.allow_failure
                    && matches!(
                        condition,
                        Condition::Completed | Condition::CompletedSuccessfully
                    )
                {
                    Holds::Yes
                } else {
                    Holds::Never(Never::Failed)
                }
            }
            State::Skipped { .. } => Holds::Never(Never::Skipped),
            State::Exited { status } => match condition {
                Condition::Started | Condition::Completed => Holds::Yes,
                Condition::CompletedSuccessfully | Condition::Healthy => {
                    if status.success() || spec.allow_failure {
                        Holds::Yes
                    } else {
                        Holds::Never(Never::EndedWith(*status))
                    }
                }
                Condition::LogReady => {
                    if u.log_ready {
                        Holds::Yes
                    } else {
                        Holds::Never(Never::EndedBeforeLogReady)
                    }
                }
            },
            State::Running { ready, .. } => match condition {
                Condition::Started => Holds::Yes,
                Condition::Healthy if *ready => Holds::Yes,
                Condition::LogReady if u.log_ready => Holds::Yes,
                _ => Holds::NotYet,
            },
            _ => Holds::NotYet,
        }
    }

    fn count_live_tasks(&self) -> usize {
        self.plan
            .ids()
            .filter(|id| self.plan.get(*id).kind == Kind::Task && self.units[id.0].state.is_live())
            .count()
    }

    /// Start what can start, block what cannot, and during shutdown stop what may stop.
    fn evaluate(&mut self) {
        if self.shutting_down {
            self.shutdown_pass();
            return;
        }
        if self.units.iter().any(|u| u.down_requested) {
            let down: Vec<bool> = self.units.iter().map(|u| u.down_requested).collect();
            self.stop_pass(|id| down[id.0]);
        }
        // Starting a target can satisfy others at once, so repeat until nothing moves. Each pass
        // that repeats starts at least one unit, so this ends.
        loop {
            let mut started_any = false;
            // Counted once a pass (not for each task that might start), and kept up as it
            // starts them.
            self.live_tasks = None;
            for i in 0..self.units.len() {
                let id = UnitId(i);
                if self.start_if_possible(id) {
                    started_any = true;
                }
            }
            if !started_any {
                break;
            }
        }
        self.live_tasks = None;
        // A unit whose end ends the stack may have been skipped just now.
        if self.shutting_down {
            self.shutdown_pass();
        }
        self.touched.clear();
    }

    /// Stop what may stop now that everything is stopping. The first pass looks at every
    /// unit; after it, a unit can act differently only when its own state changed or one of its
    /// dependents stopped living, so only the units touched since (and what they depend on) are
    /// looked at, until nothing moves. A pass over every unit for each exit made stopping N
    /// services O(N²).
    fn shutdown_pass(&mut self) {
        if !self.shutdown_pass_done {
            self.shutdown_pass_done = true;
            self.stop_pass(|_| true);
            self.touched.clear();
            return;
        }
        loop {
            let mut look: Vec<usize> = Vec::new();
            for id in std::mem::take(&mut self.touched) {
                look.push(id.0);
                look.extend(self.plan.units[id.0].deps.iter().map(|d| d.unit.0));
            }
            if look.is_empty() {
                return;
            }
            look.sort_unstable();
            look.dedup();
            for i in look {
                self.stop_one(i, &|_| true);
            }
        }
    }

    /// Returns whether the unit moved to a state that may unblock others.
    fn start_if_possible(&mut self, id: UnitId) -> bool {
        let u = &self.units[id.0];
        if !u.wanted || !matches!(u.state, State::Inactive | State::Blocked { .. }) {
            return false;
        }
        let spec = &self.plan.units[id.0];
        // What it still waits for, by unit: names are copied only when that changes. Every unit
        // is looked at after every event, and one far down a chain waits on the same thing for
        // the whole start (no faster to measure, against spawning: an allocation less per look).
        let mut not_yet = std::mem::take(&mut self.not_yet);
        not_yet.clear();
        for dep in &spec.deps {
            match self.holds(dep.unit, dep.condition) {
                Holds::Yes => {}
                Holds::NotYet => not_yet.push(*dep),
                Holds::Never(never) => {
                    self.not_yet = not_yet;
                    let reason = SkipReason::Dependency {
                        unit: self.plan.units[dep.unit.0].name.clone(),
                        condition: dep.condition,
                        never,
                    };
                    self.set(id, State::Skipped { reason }, None);
                    return true;
                }
            }
        }
        self.not_yet = not_yet;
        let kind = spec.kind;
        if kind == Kind::Task && self.fail_fast && self.a_task_failed {
            let reason = SkipReason::EarlierTaskFailed;
            self.set(id, State::Skipped { reason }, None);
            return true;
        }
        let no_slot = kind == Kind::Task
            && self.task_limit.is_some_and(|limit| {
                let live = match self.live_tasks {
                    Some(n) => n,
                    None => self.count_live_tasks(),
                };
                self.live_tasks = Some(live);
                live >= limit
            });
        if !self.not_yet.is_empty() || no_slot {
            let name = |d: &Dependency| &self.plan.units[d.unit.0].name;
            let same = match &self.units[id.0].state {
                State::Blocked { waiting_on } => {
                    waiting_on.len() == self.not_yet.len()
                        && waiting_on
                            .iter()
                            .zip(&self.not_yet)
                            .all(|(w, d)| w.condition == d.condition && w.name == *name(d))
                }
                _ => false,
            };
            if !same {
                let waiting_on = self
                    .not_yet
                    .iter()
                    .map(|d| Waiting {
                        name: name(d).clone(),
                        condition: d.condition,
                    })
                    .collect();
                self.set(id, State::Blocked { waiting_on }, None);
            }
            return false;
        }
        if kind == Kind::Target {
            self.set(
                id,
                State::Running {
                    pid: 0,
                    ready: true,
                },
                None,
            );
            return true;
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        let u = &mut self.units[id.0];
        u.generation = generation;
        if kind == Kind::Task
            && let Some(live) = &mut self.live_tasks
        {
            *live += 1;
        }
        self.set(id, State::Starting, None);
        self.out.push(Effect::Spawn {
            unit: id,
            generation,
        });
        false
    }

    /// Stop the units `stopping` selects, each once none of its dependents that is also being
    /// stopped has a process any more: reverse dependency order.
    fn stop_pass(&mut self, stopping: impl Fn(UnitId) -> bool) {
        loop {
            let mut moved = false;
            for i in 0..self.units.len() {
                moved |= self.stop_one(i, &stopping);
            }
            if !moved {
                break;
            }
        }
    }

    /// One unit's part in a stop pass. Returns whether a target stopped (which may let what it
    /// depends on stop in turn).
    fn stop_one(&mut self, i: usize, stopping: &impl Fn(UnitId) -> bool) -> bool {
        let id = UnitId(i);
        if !stopping(id) {
            return false;
        }
        let dependents_down = self.dependents[i]
            .iter()
            .all(|d| !stopping(*d) || !self.units[d.0].state.is_live());
        match self.units[i].state {
            State::Blocked { .. } | State::Backoff { .. } | State::Inactive => {
                // Nothing runs: a stop is done at once, a restart starts now.
                let u = &mut self.units[i];
                u.down_requested = false;
                if std::mem::take(&mut u.start_after_stop) {
                    u.wanted = true;
                }
                if self.units[i].state != State::Inactive {
                    self.set(id, State::Inactive, None);
                }
            }
            State::Exited { .. } | State::Failed { .. } | State::Skipped { .. } => {
                let u = &mut self.units[i];
                u.down_requested = false;
                u.start_after_stop = false;
            }
            State::Running { .. } if dependents_down => {
                if self.plan.units[i].kind == Kind::Target {
                    let u = &mut self.units[i];
                    u.down_requested = false;
                    if std::mem::take(&mut u.start_after_stop) {
                        u.wanted = true;
                    }
                    self.set(id, State::Inactive, None);
                    return true;
                } else {
                    self.begin_stop(id, false, None);
                }
            }
            _ => {}
        }
        false
    }
}

/// `1.5s`, `500ms`, `2m 3s`: short, for messages.
pub fn fmt_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if d < Duration::from_secs(60) {
        let s = d.as_secs_f64();
        if (s - s.round()).abs() < 0.05 {
            format!("{}s", s.round() as u64)
        } else {
            format!("{s:.1}s")
        }
    } else {
        let s = d.as_secs();
        format!("{}m {}s", s / 60, s % 60)
    }
}
