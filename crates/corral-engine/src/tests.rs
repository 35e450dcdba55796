//! The engine, tested without processes and without sleeping: a fake world answers its effects,
//! and time is a number we move forward.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::*;

const MS: Duration = Duration::from_millis(1);

/// What a fake process does once spawned.
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    /// Runs until signalled; exits at once on the stop signal.
    Forever,
    /// Exits on its own after this long with this code.
    ExitAfter(Duration, i32),
    /// Ignores the stop signal; only SIGKILL ends it.
    IgnoresTerm,
    /// Exits this long after the stop signal.
    SlowStop(Duration),
    /// Cannot be started: the machine is out of descriptors (a retryable spawn failure).
    OutOfDescriptors,
}

#[derive(Debug)]
enum Pending {
    Engine(UnitId, u64, TimerKind),
    Watch(UnitId, u64),
    Exit(UnitId, u64, ExitStatus),
}

struct World {
    eng: Engine,
    t0: Instant,
    now: Instant,
    queue: Vec<(Instant, u64, Pending)>,
    seq: u64,
    /// unit → live generation
    live: HashMap<UnitId, u64>,
    behaviour: HashMap<UnitId, Behaviour>,
    /// Probe answers: (unit, probe) → ok.
    probe_ok: HashMap<(UnitId, ProbeKind), bool>,
    spawns: Vec<(Instant, UnitId)>,
    signals: Vec<(Instant, UnitId)>,
    kills: Vec<(Instant, UnitId)>,
    exits: HashMap<UnitId, Vec<Instant>>,
    next_pid: u32,
    check_stop_order: bool,
    /// Every entry into backoff: (unit, when, until, restart number, policy then).
    backoffs: Vec<(UnitId, Instant, Instant, u32, RestartPolicy)>,
}

impl World {
    fn new(plan: Plan) -> World {
        let t0 = Instant::now();
        World {
            eng: Engine::new(plan, 7),
            t0,
            now: t0,
            queue: Vec::new(),
            seq: 0,
            live: HashMap::new(),
            behaviour: HashMap::new(),
            probe_ok: HashMap::new(),
            spawns: Vec::new(),
            signals: Vec::new(),
            kills: Vec::new(),
            exits: HashMap::new(),
            next_pid: 100,
            check_stop_order: true,
            backoffs: Vec::new(),
        }
    }

    fn id(&self, name: &str) -> UnitId {
        self.eng.plan().find(name).unwrap()
    }

    fn state(&self, name: &str) -> State {
        self.eng.state(self.id(name)).clone()
    }

    fn schedule(&mut self, after: Duration, p: Pending) {
        self.seq += 1;
        self.queue.push((self.now + after, self.seq, p));
    }

    fn send(&mut self, ev: Event) {
        let trace = std::env::var_os("CORRAL_SIM_TRACE").is_some();
        if trace {
            eprintln!("{:?} <- {ev:?}", self.now - self.t0);
        }
        let effects = self.eng.handle(ev, self.now);
        if trace {
            for e in &effects {
                eprintln!("      -> {e:?}");
            }
        }
        for e in effects {
            self.apply(e);
        }
    }

    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::Spawn { unit, generation } => {
                assert!(
                    !self.live.contains_key(&unit),
                    "two live generations of {unit:?}"
                );
                self.check_deps_hold(unit);
                if let Behaviour::OutOfDescriptors = self.behaviour_of(unit) {
                    self.spawns.push((self.now, unit));
                    self.send(Event::SpawnFailed {
                        unit,
                        generation,
                        error: "out of descriptors".into(),
                        retryable: true,
                    });
                    return;
                }
                self.live.insert(unit, generation);
                self.spawns.push((self.now, unit));
                self.next_pid += 1;
                let pid = self.next_pid;
                if let Behaviour::ExitAfter(d, code) = self.behaviour_of(unit) {
                    self.schedule(d, Pending::Exit(unit, generation, ExitStatus::Code(code)));
                }
                self.send(Event::Spawned {
                    unit,
                    generation,
                    pid,
                });
            }
            Effect::Signal {
                unit, generation, ..
            } => {
                self.check_dependents_down(unit);
                self.signals.push((self.now, unit));
                match self.behaviour_of(unit) {
                    Behaviour::IgnoresTerm => {}
                    Behaviour::SlowStop(d) => {
                        self.schedule(d, Pending::Exit(unit, generation, ExitStatus::Code(0)))
                    }
                    _ => self.schedule(
                        Duration::ZERO,
                        Pending::Exit(unit, generation, ExitStatus::Signal(15)),
                    ),
                }
            }
            Effect::Kill { unit, generation } => {
                self.kills.push((self.now, unit));
                self.schedule(
                    Duration::ZERO,
                    Pending::Exit(unit, generation, ExitStatus::Signal(9)),
                );
            }
            Effect::RunProbe {
                unit,
                generation,
                probe,
            } => {
                let ok = *self.probe_ok.get(&(unit, probe)).unwrap_or(&true);
                self.send(Event::ProbeResult {
                    unit,
                    generation,
                    probe,
                    ok,
                    detail: if ok {
                        "ok".into()
                    } else {
                        "connection refused".into()
                    },
                });
            }
            Effect::SetTimer {
                unit,
                generation,
                timer,
                after,
            } => self.schedule(after, Pending::Engine(unit, generation, timer)),
            Effect::WatchTimer { unit, seq, after } => {
                self.schedule(after, Pending::Watch(unit, seq))
            }
            Effect::Changed { unit, .. } => {
                if let State::Backoff { until, restart } = *self.eng.state(unit) {
                    let policy = self.eng.plan().get(unit).restart;
                    self.backoffs.push((unit, self.now, until, restart, policy));
                }
            }
        }
    }

    fn behaviour_of(&self, unit: UnitId) -> Behaviour {
        *self.behaviour.get(&unit).unwrap_or(&Behaviour::Forever)
    }

    fn check_deps_hold(&self, unit: UnitId) {
        for dep in &self.eng.plan().get(unit).deps {
            let st = self.eng.state(dep.unit);
            let ok = match dep.condition {
                Condition::Started => {
                    self.live.contains_key(&dep.unit)
                        || matches!(st, State::Exited { .. })
                        || (self.eng.plan().get(dep.unit).kind == Kind::Target
                            && matches!(st, State::Running { .. }))
                }
                Condition::Healthy => {
                    matches!(st, State::Running { ready: true, .. })
                        || matches!(st, State::Exited { status } if status.success())
                }
                Condition::Completed => matches!(st, State::Exited { .. }),
                Condition::CompletedSuccessfully => {
                    matches!(st, State::Exited { status } if status.success())
                        || self.eng.plan().get(dep.unit).allow_failure
                }
                Condition::LogReady => self.eng.unit(dep.unit).log_ready,
            };
            assert!(
                ok,
                "{unit:?} started before {:?} was {}",
                dep.unit, dep.condition
            );
        }
    }

    fn check_dependents_down(&self, unit: UnitId) {
        if !self.check_stop_order || !self.eng.is_shutting_down() {
            return;
        }
        for d in self.eng.dependents(unit) {
            assert!(
                !self.live.contains_key(d),
                "{unit:?} signalled while its dependent {d:?} still runs: {:?} / {:?}",
                self.eng.state(unit),
                self.eng.unit(*d)
            );
        }
    }

    /// Deliver everything due up to `until`, in time order.
    fn run_until(&mut self, until: Duration) {
        let deadline = self.t0 + until;
        while let Some(i) = (0..self.queue.len())
            .filter(|&i| self.queue[i].0 <= deadline)
            .min_by_key(|&i| (self.queue[i].0, self.queue[i].1))
        {
            let (at, _, p) = self.queue.swap_remove(i);
            self.now = self.now.max(at);
            match p {
                Pending::Engine(unit, generation, timer) => self.send(Event::Timer {
                    unit,
                    generation,
                    timer,
                }),
                Pending::Watch(unit, seq) => self.send(Event::WatchSettled { unit, seq }),
                Pending::Exit(unit, generation, status) => {
                    if self.live.get(&unit) == Some(&generation) {
                        self.live.remove(&unit);
                        self.exits.entry(unit).or_default().push(self.now);
                        self.send(Event::Exited {
                            unit,
                            generation,
                            status,
                        });
                    }
                }
            }
        }
        self.now = self.now.max(deadline);
    }

    fn up_all(&mut self) {
        let ids = self.eng.plan().ids().collect();
        self.send(Event::Up(ids));
    }

    fn spawn_count(&self, name: &str) -> usize {
        let id = self.id(name);
        self.spawns.iter().filter(|(_, u)| *u == id).count()
    }
}

fn plan(units: Vec<UnitSpec>) -> Plan {
    Plan::new(units)
}

fn dep(plan_names: &[&str], name: &str, condition: Condition) -> Dependency {
    Dependency {
        unit: UnitId(plan_names.iter().position(|n| *n == name).unwrap()),
        condition,
    }
}

fn probe(interval_ms: u64, failure_threshold: u32) -> Box<ProbeTiming> {
    Box::new(ProbeTiming {
        interval: MS * interval_ms as u32,
        timeout: MS * 100,
        failure_threshold,
        ..ProbeTiming::default()
    })
}

#[test]
fn dependent_waits_for_healthy_dependency() {
    let names = ["db", "api"];
    let mut db = UnitSpec::new("db", Kind::Service);
    db.readiness = Some(probe(100, 3));
    let mut api = UnitSpec::new("api", Kind::Service);
    api.deps.push(dep(&names, "db", Condition::Healthy));
    let mut w = World::new(plan(vec![db, api]));
    let db_id = w.id("db");
    w.probe_ok.insert((db_id, ProbeKind::Readiness), false);
    w.up_all();
    assert!(matches!(w.state("db"), State::Running { ready: false, .. }));
    let State::Blocked { waiting_on } = w.state("api") else {
        panic!("api should be blocked, is {:?}", w.state("api"))
    };
    assert_eq!(
        waiting_on,
        vec![Waiting {
            name: "db".into(),
            condition: Condition::Healthy
        }]
    );
    w.run_until(MS * 250);
    assert!(matches!(w.state("api"), State::Blocked { .. }));
    w.probe_ok.insert((db_id, ProbeKind::Readiness), true);
    w.run_until(MS * 350);
    assert!(matches!(w.state("db"), State::Running { ready: true, .. }));
    assert!(matches!(w.state("api"), State::Running { ready: true, .. }));
}

#[test]
fn crash_loop_backs_off_doubling_then_fails() {
    let mut s = UnitSpec::new("flaky", Kind::Service);
    s.restart.jitter = 0.0;
    s.restart.startup_grace = Duration::ZERO; // only the main budget
    let mut w = World::new(plan(vec![s]));
    let id = w.id("flaky");
    w.behaviour.insert(id, Behaviour::ExitAfter(MS * 10, 1));
    w.up_all();
    w.run_until(Duration::from_secs(600));
    let State::Failed { reason } = w.state("flaky") else {
        panic!("{:?}", w.state("flaky"))
    };
    assert!(
        reason.to_string().contains("restarted 10 times"),
        "{reason}"
    );
    assert_eq!(w.spawn_count("flaky"), 11);
    // Each restart waits 500ms · 2^(n-1), capped at 30s.
    let spawns: Vec<Instant> = w.spawns.iter().map(|(t, _)| *t).collect();
    let exits = &w.exits[&id];
    for n in 1..spawns.len() {
        let waited = spawns[n] - exits[n - 1];
        let expect = (MS * 500 * (1 << (n - 1).min(10))).min(Duration::from_secs(30));
        assert_eq!(waited, expect, "restart {n}");
    }
}

#[test]
fn startup_budget_is_smaller() {
    let s = UnitSpec::new("bad", Kind::Service);
    let mut w = World::new(plan(vec![s]));
    let id = w.id("bad");
    w.behaviour.insert(id, Behaviour::ExitAfter(MS * 50, 2));
    w.up_all();
    w.run_until(Duration::from_secs(60));
    let State::Failed { reason } = w.state("bad") else {
        panic!()
    };
    assert!(
        reason
            .to_string()
            .contains("crashed 4 times within 2s of starting"),
        "{reason}"
    );
    assert_eq!(w.spawn_count("bad"), 4, "first start + 3 startup restarts");
}

#[test]
fn stable_run_resets_the_budget() {
    let mut s = UnitSpec::new("s", Kind::Service);
    s.restart.max_restarts = 2;
    s.restart.jitter = 0.0;
    let mut w = World::new(plan(vec![s]));
    let id = w.id("s");
    // Each run lasts 61s: longer than reset_after, so it never runs out of restarts.
    w.behaviour
        .insert(id, Behaviour::ExitAfter(Duration::from_secs(61), 1));
    w.up_all();
    w.run_until(Duration::from_secs(61 * 6));
    assert!(w.spawn_count("s") >= 5);
    assert!(!matches!(w.state("s"), State::Failed { .. }));
    assert_eq!(w.eng.unit(id).restarts, 1);
}

#[test]
fn clean_exit_is_not_restarted_on_failure_mode_but_is_with_always() {
    let mut a = UnitSpec::new("a", Kind::Service);
    a.restart.mode = RestartMode::OnFailure;
    let mut b = UnitSpec::new("b", Kind::Service);
    b.restart.mode = RestartMode::Always;
    b.restart.startup_grace = Duration::ZERO;
    let mut w = World::new(plan(vec![a, b]));
    let (ia, ib) = (w.id("a"), w.id("b"));
    w.behaviour.insert(ia, Behaviour::ExitAfter(MS * 10, 0));
    w.behaviour.insert(ib, Behaviour::ExitAfter(MS * 10, 0));
    w.up_all();
    w.run_until(Duration::from_secs(5));
    assert_eq!(
        w.state("a"),
        State::Exited {
            status: ExitStatus::Code(0)
        }
    );
    assert!(w.spawn_count("b") > 2);
}

#[test]
fn liveness_failure_restarts_through_policy() {
    let mut s = UnitSpec::new("web", Kind::Service);
    s.liveness = Some(probe(100, 2));
    s.restart.jitter = 0.0;
    let mut w = World::new(plan(vec![s]));
    let id = w.id("web");
    w.up_all();
    w.run_until(MS * 50);
    assert_eq!(w.spawn_count("web"), 1);
    w.probe_ok.insert((id, ProbeKind::Liveness), false);
    // probes at 100, 200 fail → stop at 200 → exit → backoff 500ms → start at 700.
    w.run_until(MS * 750);
    assert_eq!(w.signals.len(), 1);
    assert_eq!(w.spawn_count("web"), 2);
    assert_eq!(w.eng.unit(id).restarts, 1);
    assert!(w.eng.unit(id).last_probe_error() == Some("connection refused"));
}

#[test]
fn start_timeout_stretches_to_fit_readiness_and_restarts() {
    let mut s = UnitSpec::new("slow", Kind::Service);
    s.start_timeout = MS * 100; // shorter than the probe needs: stretched
    s.readiness = Some(probe(1000, 3)); // 3 × (1s + 100ms) = 3.3s
    s.restart.jitter = 0.0;
    assert_eq!(s.effective_start_timeout(), MS * 3300);
    let mut w = World::new(plan(vec![s]));
    let id = w.id("slow");
    w.probe_ok.insert((id, ProbeKind::Readiness), false);
    w.up_all();
    w.run_until(MS * 3299);
    assert!(w.signals.is_empty());
    w.run_until(MS * 3301);
    assert_eq!(w.signals.len(), 1);
    w.run_until(MS * 3900);
    assert_eq!(w.spawn_count("slow"), 2);
}

#[test]
fn stop_runs_in_reverse_dependency_order_and_kills_after_grace() {
    let names = ["db", "cache", "api", "web"];
    let db = UnitSpec::new("db", Kind::Service);
    let mut cache = UnitSpec::new("cache", Kind::Service);
    cache.deps.push(dep(&names, "db", Condition::Started));
    let mut api = UnitSpec::new("api", Kind::Service);
    api.deps.push(dep(&names, "db", Condition::Started));
    api.deps.push(dep(&names, "cache", Condition::Started));
    api.stop_grace = MS * 300;
    let mut web = UnitSpec::new("web", Kind::Service);
    web.deps.push(dep(&names, "api", Condition::Started));
    let mut w = World::new(plan(vec![db, cache, api, web]));
    let api_id = w.id("api");
    w.behaviour.insert(api_id, Behaviour::IgnoresTerm);
    let web_id = w.id("web");
    w.behaviour.insert(web_id, Behaviour::SlowStop(MS * 100));
    w.up_all();
    w.run_until(MS * 10);
    w.send(Event::Shutdown);
    w.run_until(Duration::from_secs(2));
    assert!(w.eng.all_down());
    let order: Vec<&str> = w
        .signals
        .iter()
        .map(|(_, u)| w.eng.plan().get(*u).name.as_str())
        .collect();
    assert_eq!(order, ["web", "api", "cache", "db"]);
    assert_eq!(w.kills.len(), 1);
    assert_eq!(w.kills[0].1, api_id);
    assert_eq!(w.kills[0].0 - w.signals[1].0, MS * 300);
    for name in names {
        assert_eq!(w.state(name), State::Inactive, "{name}");
    }
}

#[test]
fn a_shutdown_passes_through_targets_after_its_first_pass() {
    // web → group (a target) → db, listed so that db comes before the target: after the first
    // pass, only what changed is looked at; web's exit must reach the target, and the
    // target's stop must reach db.
    let names = ["db", "web", "group"];
    let db = UnitSpec::new("db", Kind::Service);
    let mut web = UnitSpec::new("web", Kind::Service);
    web.deps.push(dep(&names, "group", Condition::Started));
    let mut group = UnitSpec::new("group", Kind::Target);
    group.deps.push(dep(&names, "db", Condition::Started));
    let mut w = World::new(plan(vec![db, web, group]));
    let web_id = w.id("web");
    w.behaviour.insert(web_id, Behaviour::SlowStop(MS * 100));
    w.up_all();
    w.run_until(MS * 10);
    w.send(Event::Shutdown);
    assert_eq!(signal_order(&w), ["web"]);
    w.run_until(Duration::from_secs(1));
    assert!(w.eng.all_down());
    assert_eq!(signal_order(&w), ["web", "db"]);
    for name in names {
        assert_eq!(w.state(name), State::Inactive, "{name}");
    }
}

#[test]
fn force_kill_kills_everything_at_once() {
    let names = ["a", "b"];
    let a = UnitSpec::new("a", Kind::Service);
    let mut b = UnitSpec::new("b", Kind::Service);
    b.deps.push(dep(&names, "a", Condition::Started));
    let mut w = World::new(plan(vec![a, b]));
    for id in [w.id("a"), w.id("b")] {
        w.behaviour.insert(id, Behaviour::IgnoresTerm);
    }
    w.up_all();
    w.send(Event::Shutdown);
    assert_eq!(w.signals.len(), 1, "b first");
    w.check_stop_order = false;
    w.send(Event::ForceKill);
    w.run_until(MS);
    assert!(w.eng.all_down());
    assert_eq!(w.kills.len(), 2);
}

#[test]
fn pipeline_skips_dependents_of_a_failure_but_not_of_allowed_failures() {
    let names = ["lint", "build", "test", "deploy", "docs"];
    let mut lint = UnitSpec::new("lint", Kind::Task);
    lint.allow_failure = true;
    let build = UnitSpec::new("build", Kind::Task);
    let mut test = UnitSpec::new("test", Kind::Task);
    test.deps
        .push(dep(&names, "build", Condition::CompletedSuccessfully));
    test.deps
        .push(dep(&names, "lint", Condition::CompletedSuccessfully));
    let mut deploy = UnitSpec::new("deploy", Kind::Task);
    deploy
        .deps
        .push(dep(&names, "test", Condition::CompletedSuccessfully));
    let mut docs = UnitSpec::new("docs", Kind::Task);
    docs.deps
        .push(dep(&names, "lint", Condition::CompletedSuccessfully));
    let mut w = World::new(plan(vec![lint, build, test, deploy, docs]));
    w.behaviour
        .insert(w.id("lint"), Behaviour::ExitAfter(MS * 10, 1));
    w.behaviour
        .insert(w.id("build"), Behaviour::ExitAfter(MS * 20, 0));
    w.behaviour
        .insert(w.id("test"), Behaviour::ExitAfter(MS * 20, 3));
    w.behaviour
        .insert(w.id("docs"), Behaviour::ExitAfter(MS * 20, 0));
    w.up_all();
    // First wave: lint and build together.
    assert_eq!(w.spawns.len(), 2);
    w.run_until(Duration::from_secs(1));
    assert!(w.eng.tasks_settled());
    assert_eq!(
        w.state("docs"),
        State::Exited {
            status: ExitStatus::Code(0)
        }
    );
    assert_eq!(
        w.state("test"),
        State::Exited {
            status: ExitStatus::Code(3)
        }
    );
    let State::Skipped { reason } = w.state("deploy") else {
        panic!()
    };
    assert_eq!(
        reason.to_string(),
        "needs `test` completed_successfully, but `test` ended with exit code 3"
    );
}

#[test]
fn sequential_runs_one_task_at_a_time_and_stops_at_first_failure() {
    let a = UnitSpec::new("a", Kind::Task);
    let b = UnitSpec::new("b", Kind::Task);
    let c = UnitSpec::new("c", Kind::Task);
    let mut w = World::new(plan(vec![a, b, c]));
    w.eng.set_sequential();
    w.behaviour
        .insert(w.id("a"), Behaviour::ExitAfter(MS * 10, 0));
    w.behaviour
        .insert(w.id("b"), Behaviour::ExitAfter(MS * 10, 1));
    w.behaviour
        .insert(w.id("c"), Behaviour::ExitAfter(MS * 10, 0));
    w.up_all();
    assert_eq!(w.spawns.len(), 1);
    w.run_until(Duration::from_secs(1));
    assert_eq!(w.spawn_count("c"), 0);
    assert!(matches!(w.state("c"), State::Skipped { .. }));
    assert_eq!(w.spawns[1].0 - w.spawns[0].0, MS * 10);
}

#[test]
fn targets_come_up_with_their_dependencies() {
    let names = ["db", "backend", "app"];
    let db = UnitSpec::new("db", Kind::Service);
    let mut backend = UnitSpec::new("backend", Kind::Target);
    backend.deps.push(dep(&names, "db", Condition::Started));
    let mut app = UnitSpec::new("app", Kind::Service);
    app.deps.push(dep(&names, "backend", Condition::Healthy));
    let mut w = World::new(plan(vec![db, backend, app]));
    let app_id = w.id("app");
    w.send(Event::Up(vec![app_id]));
    assert!(matches!(
        w.state("backend"),
        State::Running {
            pid: 0,
            ready: true
        }
    ));
    assert!(matches!(w.state("app"), State::Running { .. }));
    assert_eq!(w.spawns.len(), 2);
}

#[test]
fn log_ready_gates_dependents() {
    let names = ["q", "worker"];
    let q = UnitSpec::new("q", Kind::Service);
    let mut worker = UnitSpec::new("worker", Kind::Service);
    worker.deps.push(dep(&names, "q", Condition::LogReady));
    let mut w = World::new(plan(vec![q, worker]));
    w.up_all();
    assert!(matches!(w.state("worker"), State::Blocked { .. }));
    let q_id = w.id("q");
    w.send(Event::LogReady {
        unit: q_id,
        generation: 0,
    });
    assert!(
        matches!(w.state("worker"), State::Blocked { .. }),
        "stale generation ignored"
    );
    w.send(Event::LogReady {
        unit: q_id,
        generation: 1,
    });
    assert!(matches!(w.state("worker"), State::Running { .. }));
}

#[test]
fn stale_events_are_ignored() {
    let s = UnitSpec::new("s", Kind::Service);
    let mut w = World::new(plan(vec![s]));
    let id = w.id("s");
    w.up_all();
    let before = w.state("s");
    w.send(Event::Exited {
        unit: id,
        generation: 0,
        status: ExitStatus::Code(1),
    });
    w.send(Event::Timer {
        unit: id,
        generation: 9,
        timer: TimerKind::StopGrace,
    });
    assert_eq!(w.state("s"), before);
    assert!(w.kills.is_empty());
}

#[test]
fn spawn_failure_fails_only_that_unit() {
    let names = ["missing", "dep", "other"];
    let missing = UnitSpec::new("missing", Kind::Service);
    let mut dep_on = UnitSpec::new("dep", Kind::Service);
    dep_on.deps.push(dep(&names, "missing", Condition::Started));
    let other = UnitSpec::new("other", Kind::Service);
    let mut eng = Engine::new(plan(vec![missing, dep_on, other]), 1);
    let now = Instant::now();
    let fx = eng.handle(Event::Up(vec![UnitId(0), UnitId(1), UnitId(2)]), now);
    assert!(fx.contains(&Effect::Spawn {
        unit: UnitId(0),
        generation: 1
    }));
    assert!(fx.contains(&Effect::Spawn {
        unit: UnitId(2),
        generation: 2
    }));
    eng.handle(
        Event::SpawnFailed {
            unit: UnitId(0),
            generation: 1,
            error: "no such file".into(),
            retryable: false,
        },
        now,
    );
    assert_eq!(
        eng.state(UnitId(0)),
        &State::Failed {
            reason: FailReason::SpawnFailed("no such file".into())
        }
    );
    assert!(matches!(eng.state(UnitId(1)), State::Skipped { .. }));
    assert_eq!(eng.state(UnitId(2)), &State::Starting);
}

#[test]
fn a_spawn_out_of_descriptors_is_retried_through_the_restart_policy() {
    let mut s = UnitSpec::new("svc", Kind::Service);
    s.restart.jitter = 0.0;
    let mut w = World::new(plan(vec![s]));
    let id = w.id("svc");
    w.up_all();
    // The first spawn "failed" with EMFILE: the world answers the engine's Spawn itself, so
    // take that generation back and report the failure instead.
    let generation = w.eng.unit(id).generation;
    w.live.remove(&id);
    w.send(Event::SpawnFailed {
        unit: id,
        generation,
        error: "cannot start `svc`: Too many open files".into(),
        retryable: true,
    });
    let State::Backoff { restart, .. } = w.state("svc") else {
        panic!("{:?}", w.state("svc"))
    };
    assert_eq!(restart, 1);
    w.run_until(Duration::from_secs(5));
    assert!(
        matches!(w.state("svc"), State::Running { .. }),
        "{:?}",
        w.state("svc")
    );
    assert_eq!(w.spawn_count("svc"), 2);
}

/// A start that keeps failing for want of descriptors is not a crash loop of the program: it is
/// tried through the whole restart budget, and giving up says what was missing.
#[test]
fn a_resource_shortage_uses_the_restart_budget_not_the_crash_loop_rule() {
    let mut s = UnitSpec::new("svc", Kind::Service);
    s.restart.jitter = 0.0;
    s.restart.max_restarts = 6;
    s.restart.startup_max_restarts = 2;
    let mut w = World::new(plan(vec![s]));
    let id = w.id("svc");
    w.behaviour.insert(id, Behaviour::OutOfDescriptors);
    w.up_all();
    w.run_until(Duration::from_secs(600));
    let State::Failed { reason } = w.state("svc") else {
        panic!("{:?}", w.state("svc"))
    };
    assert_eq!(
        reason,
        FailReason::SpawnFailed("out of descriptors (gave up after 7 tries)".into())
    );
    assert_eq!(w.spawn_count("svc"), 7, "past startup_max_restarts");
}

/// Random plans, random crashes, flapping probes and slow stops, user start/stop/restart,
/// adoption at start and plan replacements while running — with every invariant checked at
/// every step by `World` (one live generation per unit, dependencies hold at spawn, stop order
/// at shutdown) and the restart policy checked here (backoff within its jitter both ways, the
/// budget never passed, nothing restarts a failed unit but the user). 10,000 seeded cases in
/// four tests (nextest runs them in parallel); a failure names its seed, and
/// `CORRAL_SIM_SEED=N cargo test -p corral-engine randomized` replays exactly that one.
macro_rules! simulations {
    ($($name:ident: $range:expr;)*) => {$(
        #[test]
        fn $name() {
            run_simulations($range);
        }
    )*};
}

simulations! {
    randomized_simulation_a: 0..2_500;
    randomized_simulation_b: 2_500..5_000;
    randomized_simulation_c: 5_000..7_500;
    randomized_simulation_d: 7_500..10_000;
}

fn run_simulations(seeds: std::ops::Range<u64>) {
    if let Ok(seed) = std::env::var("CORRAL_SIM_SEED") {
        let seed: u64 = seed.parse().expect("CORRAL_SIM_SEED is a number");
        if seeds.contains(&seed) {
            simulate(seed);
        }
        return;
    }
    for seed in seeds {
        if std::panic::catch_unwind(|| simulate(seed)).is_err() {
            panic!("simulation seed {seed} failed; replay it with CORRAL_SIM_SEED={seed}");
        }
    }
}

fn random_policy(rng: &mut fastrand::Rng, kind: Kind) -> RestartPolicy {
    let mut p = RestartPolicy {
        max_restarts: rng.u32(0..6),
        startup_max_restarts: rng.u32(0..4),
        startup_grace: MS * rng.u32(0..3000),
        backoff_initial: MS * rng.u32(1..800),
        backoff_max: MS * rng.u32(100..20_000),
        jitter: [0.0, 0.1, 0.5, 1.0][rng.usize(0..4)],
        // Sometimes short enough that a stable run resets the budget.
        reset_after: MS * [500, 3_000, 100_000_000][rng.usize(0..3)],
        mode: [
            RestartMode::OnFailure,
            RestartMode::Always,
            RestartMode::Never,
        ][rng.usize(0..3)],
    };
    if kind == Kind::Task {
        p.mode = RestartMode::Never;
    }
    p
}

fn simulate(seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let n = rng.usize(2..10);
    let names: Vec<String> = (0..n).map(|i| format!("u{i}")).collect();
    let mut units = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let kind = match rng.u8(0..10) {
            0 => Kind::Target,
            1 => Kind::Task,
            _ => Kind::Service,
        };
        let mut u = UnitSpec::new(name.clone(), kind);
        u.restart = random_policy(&mut rng, kind);
        u.stop_grace = MS * rng.u32(10..500);
        if kind == Kind::Service && rng.bool() {
            u.readiness = Some(probe(rng.u64(20..300), rng.u32(1..4)));
        }
        if kind == Kind::Service && rng.u8(0..4) == 0 {
            u.liveness = Some(probe(rng.u64(20..300), rng.u32(1..4)));
        }
        // Edges only to earlier units: no cycles.
        for j in 0..i {
            if rng.u8(0..3) == 0 {
                let condition = match rng.u8(0..3) {
                    0 => Condition::Healthy,
                    1 => Condition::Completed,
                    _ => Condition::Started,
                };
                u.deps.push(Dependency {
                    unit: UnitId(j),
                    condition,
                });
            }
        }
        units.push(u);
    }
    let mut w = World::new(plan(units));
    w.eng = Engine::new(w.eng.plan().clone(), seed);
    for i in 0..n {
        let b = match rng.u8(0..5) {
            0 => Behaviour::Forever,
            1 => Behaviour::IgnoresTerm,
            2 => Behaviour::SlowStop(MS * rng.u32(0..800)),
            _ => Behaviour::ExitAfter(MS * rng.u32(1..3000), rng.i32(0..3)),
        };
        w.behaviour.insert(UnitId(i), b);
    }
    // Some services were left running by an earlier daemon: adopted, as the runtime does.
    for i in 0..n {
        let id = UnitId(i);
        if w.eng.plan().get(id).kind == Kind::Service && rng.u8(0..4) == 0 {
            let generation = 1_000_000 + i as u64;
            w.live.insert(id, generation);
            w.next_pid += 1;
            let pid = w.next_pid;
            w.send(Event::Adopt {
                unit: id,
                generation,
                pid,
                running_for: MS * rng.u32(0..100_000),
            });
        }
    }
    w.up_all();
    // When the user last acted on each unit: a spawn right after is the user's, not a restart.
    let mut user_acted: HashMap<UnitId, Instant> = HashMap::new();
    // A reload may lower a budget below the restarts already counted.
    let mut reloaded = false;
    let mut t = Duration::ZERO;
    while t < Duration::from_secs(120) {
        t += MS * rng.u32(1..2000);
        // Flap the probes.
        for i in 0..n {
            for p in [ProbeKind::Readiness, ProbeKind::Liveness] {
                w.probe_ok.insert((UnitId(i), p), rng.u8(0..4) != 0);
            }
        }
        w.run_until(t);
        match rng.u8(0..20) {
            // The user starts, stops or restarts a unit (with its dependents or not).
            0..=2 => {
                let unit = UnitId(rng.usize(0..n));
                let dependents = rng.bool();
                let ev = match rng.u8(0..3) {
                    0 => Event::Start { unit, dependents },
                    1 => Event::Stop { unit, dependents },
                    _ => Event::Restart { unit, dependents },
                };
                let touched: Vec<UnitId> = (0..n).map(UnitId).collect();
                for u in touched {
                    user_acted.insert(u, w.now);
                }
                w.send(ev);
            }
            // A reload that changes policies but not the units (what the runtime swaps in
            // while they keep running).
            3 => {
                let mut new = w.eng.plan().clone();
                for u in &mut new.units {
                    if rng.bool() {
                        let u = std::sync::Arc::make_mut(u);
                        u.restart = random_policy(&mut rng, u.kind);
                        u.stop_grace = MS * rng.u32(10..500);
                    }
                }
                let carry: Vec<Option<UnitId>> = (0..n).map(|i| Some(UnitId(i))).collect();
                w.eng.replace_plan(new, &carry);
                reloaded = true;
            }
            _ => {}
        }
    }
    w.send(Event::Shutdown);
    let longest_grace = w
        .eng
        .plan()
        .units
        .iter()
        .map(|s| s.stop_grace)
        .max()
        .unwrap();
    w.run_until(t + longest_grace * (n as u32 + 1) + Duration::from_secs(1));
    assert!(w.eng.all_down(), "seed {seed}: not all down");
    for id in w.eng.plan().ids() {
        let (spec, u) = (w.eng.plan().get(id), w.eng.unit(id));
        if let State::Failed {
            reason: FailReason::RestartBudget { .. },
        } = &u.state
            && !reloaded
        {
            assert!(
                u.restarts <= spec.restart.max_restarts,
                "seed {seed}: {} counts {} restarts, budget {}",
                spec.name,
                u.restarts,
                spec.restart.max_restarts
            );
        }
    }
    assert!(w.live.is_empty(), "seed {seed}: processes left");

    // The restart policy, both ways: each backoff lies within its jitter of the doubling
    // delay (capped), and never passes the budget.
    for (unit, at, until, restart, policy) in &w.backoffs {
        let name = &w.eng.plan().get(*unit).name;
        assert!(
            *restart >= 1 && *restart <= policy.max_restarts,
            "seed {seed}: {name} restart {restart} of {}",
            policy.max_restarts
        );
        let base = policy.base_delay(*restart);
        let floor = base.mul_f64(1.0 - policy.jitter).min(policy.backoff_max);
        let ceiling = base.mul_f64(1.0 + policy.jitter).min(policy.backoff_max);
        let delay = *until - *at;
        // A microsecond of rounding in the float arithmetic either way.
        let slack = Duration::from_micros(1);
        assert!(
            delay + slack >= floor && delay <= ceiling + slack,
            "seed {seed}: {name} restart {restart}: backoff {delay:?} not in [{floor:?}, {ceiling:?}]"
        );
        // No spawn of it during its backoff, unless the user acted on it.
        let early = w.spawns.iter().any(|(t, u)| {
            u == unit && *t > *at && *t < *until && user_acted.get(u).is_none_or(|acted| acted < at)
        });
        assert!(
            !early,
            "seed {seed}: {name} started again during its backoff"
        );
    }
}

fn chain() -> World {
    // db ← api ← web, and an unrelated `other`.
    let names = ["db", "api", "web", "other"];
    let db = UnitSpec::new("db", Kind::Service);
    let mut api = UnitSpec::new("api", Kind::Service);
    api.deps.push(dep(&names, "db", Condition::Started));
    let mut web = UnitSpec::new("web", Kind::Service);
    web.deps.push(dep(&names, "api", Condition::Started));
    let other = UnitSpec::new("other", Kind::Service);
    let mut w = World::new(plan(vec![db, api, web, other]));
    w.up_all();
    w.run_until(MS * 10);
    w
}

fn signal_order(w: &World) -> Vec<String> {
    w.signals
        .iter()
        .map(|(_, u)| w.eng.plan().get(*u).name.clone())
        .collect()
}

#[test]
fn user_stop_with_dependents_goes_in_reverse_order_and_stays_down() {
    let mut w = chain();
    let db = w.id("db");
    for name in ["db", "api", "web"] {
        w.behaviour.insert(w.id(name), Behaviour::SlowStop(MS * 20));
    }
    w.send(Event::Stop {
        unit: db,
        dependents: true,
    });
    w.run_until(Duration::from_secs(120));
    assert_eq!(signal_order(&w), ["web", "api", "db"]);
    for name in ["db", "api", "web"] {
        assert_eq!(w.state(name), State::Inactive, "{name}");
        assert_eq!(w.spawn_count(name), 1, "{name} must stay down");
    }
    assert!(matches!(w.state("other"), State::Running { .. }));
}

#[test]
fn user_stop_without_dependents_leaves_them_running() {
    let mut w = chain();
    let api = w.id("api");
    w.send(Event::Stop {
        unit: api,
        dependents: false,
    });
    w.run_until(Duration::from_secs(5));
    assert_eq!(signal_order(&w), ["api"]);
    assert_eq!(w.state("api"), State::Inactive);
    assert!(matches!(w.state("web"), State::Running { .. }));
    // Started again, it comes back; its dependency was never stopped.
    w.send(Event::Start {
        unit: api,
        dependents: false,
    });
    assert!(matches!(w.state("api"), State::Running { .. }));
    assert_eq!(w.spawn_count("api"), 2);
    assert_eq!(w.spawn_count("db"), 1);
}

#[test]
fn restart_with_dependents_stops_in_reverse_and_starts_in_order_without_backoff() {
    let mut w = chain();
    let api = w.id("api");
    let before = w.now;
    w.send(Event::Restart {
        unit: api,
        dependents: true,
    });
    w.run_until(MS * 20);
    assert_eq!(signal_order(&w), ["web", "api"]);
    assert_eq!(w.spawn_count("api"), 2);
    assert_eq!(w.spawn_count("web"), 2);
    assert_eq!(w.spawn_count("db"), 1);
    // No backoff: both were back at the moment their stop ended.
    assert!(w.spawns.iter().all(|(t, _)| *t <= before + MS * 10));
    assert_eq!(w.eng.unit(api).restarts, 0);
    assert!(matches!(w.state("web"), State::Running { .. }));
}

#[test]
fn start_gives_a_failed_unit_a_fresh_budget() {
    let mut s = UnitSpec::new("bad", Kind::Service);
    s.restart.max_restarts = 1;
    s.restart.startup_grace = Duration::ZERO;
    let mut w = World::new(plan(vec![s]));
    let id = w.id("bad");
    w.behaviour.insert(id, Behaviour::ExitAfter(MS * 10, 1));
    w.up_all();
    w.run_until(Duration::from_secs(10));
    assert!(matches!(w.state("bad"), State::Failed { .. }));
    assert_eq!(w.spawn_count("bad"), 2);
    w.behaviour.insert(id, Behaviour::Forever);
    w.send(Event::Start {
        unit: id,
        dependents: false,
    });
    assert!(matches!(w.state("bad"), State::Running { .. }));
    assert_eq!(w.spawn_count("bad"), 3);
}

#[test]
fn adopted_units_are_not_spawned_again_and_keep_counting_instances() {
    let names = ["db", "api"];
    let mut db = UnitSpec::new("db", Kind::Service);
    db.readiness = Some(probe(100, 3));
    let mut api = UnitSpec::new("api", Kind::Service);
    api.deps.push(dep(&names, "db", Condition::Healthy));
    let mut w = World::new(plan(vec![db, api]));
    let (db, api) = (w.id("db"), w.id("api"));
    for (unit, generation, pid) in [(db, 7, 4000), (api, 3, 4001)] {
        w.live.insert(unit, generation);
        w.send(Event::Adopt {
            unit,
            generation,
            pid,
            running_for: Duration::from_secs(30),
        });
    }
    w.up_all();
    w.run_until(MS * 500);
    assert_eq!(w.spawns.len(), 0, "adopted units must not be spawned");
    assert_eq!(
        w.state("db"),
        State::Running {
            pid: 4000,
            ready: true
        }
    );
    // Its later exit is noticed and the policy applies, under a new generation number.
    w.send(Event::Exited {
        unit: api,
        generation: 3,
        status: ExitStatus::Code(1),
    });
    w.live.remove(&api);
    w.run_until(Duration::from_secs(2));
    assert_eq!(w.spawn_count("api"), 1);
    assert!(
        w.eng.unit(api).generation > 7,
        "above every adopted generation"
    );
}

#[test]
fn a_stopped_unit_is_held_down_until_started() {
    let names = ["db", "api"];
    let db = UnitSpec::new("db", Kind::Service);
    let mut api = UnitSpec::new("api", Kind::Service);
    api.deps.push(dep(&names, "db", Condition::Started));
    let mut w = World::new(plan(vec![db, api]));
    let db = w.id("db");
    // As after a daemon restart: the stored "stopped" is applied before `up`.
    w.send(Event::Stop {
        unit: db,
        dependents: false,
    });
    w.up_all();
    w.run_until(Duration::from_secs(5));
    assert_eq!(w.spawns.len(), 0);
    assert!(matches!(w.state("api"), State::Blocked { .. }));
    w.send(Event::Start {
        unit: db,
        dependents: false,
    });
    assert!(matches!(w.state("db"), State::Running { .. }));
    assert!(matches!(w.state("api"), State::Running { .. }));
}

#[test]
fn a_plan_change_keeps_carried_units_and_their_pending_events() {
    let names = ["db", "api"];
    let db = UnitSpec::new("db", Kind::Service);
    let mut api = UnitSpec::new("api", Kind::Service);
    api.deps.push(dep(&names, "db", Condition::Started));
    let mut w = World::new(plan(vec![db.clone(), api]));
    w.up_all();
    let db_pid = w.eng.unit(w.id("db")).pid;
    let api_old = w.id("api");
    w.send(Event::Stop {
        unit: api_old,
        dependents: false,
    });
    w.run_until(MS * 10);
    // New plan: `cache` first, then db (unchanged), then api (changed: now needs cache too).
    let names = ["cache", "db", "api"];
    let cache = UnitSpec::new("cache", Kind::Service);
    let mut api = UnitSpec::new("api", Kind::Service);
    api.deps.push(dep(&names, "db", Condition::Started));
    api.deps.push(dep(&names, "cache", Condition::Started));
    let db_old = w.id("db");
    w.eng.replace_plan(
        plan(vec![cache, db, api]),
        &[None, Some(db_old), Some(api_old)],
    );
    let (db_new, api_new) = (w.id("db"), w.id("api"));
    assert_eq!(w.eng.unit(db_new).pid, db_pid, "db keeps its process");
    // db's live generation moved from index 0 to 1 in the fake world too.
    let inst = w.live.remove(&db_old).unwrap();
    w.live.insert(db_new, inst);
    w.send(Event::Start {
        unit: api_new,
        dependents: false,
    });
    assert!(matches!(w.state("cache"), State::Running { .. }));
    assert!(matches!(w.state("api"), State::Running { .. }));
    assert_eq!(w.spawn_count("db"), 1);
    // An event addressed to db's old index (now `cache`) with db's generation is ignored.
    let before = w.state("cache");
    w.send(Event::Exited {
        unit: UnitId(0),
        generation: inst,
        status: ExitStatus::Code(1),
    });
    assert_eq!(w.state("cache"), before);
}

#[test]
fn giving_up_is_not_counted_as_a_restart() {
    let mut s = UnitSpec::new("flaky", Kind::Service);
    s.restart.max_restarts = 2;
    s.restart.jitter = 0.0;
    s.restart.startup_grace = Duration::ZERO;
    let mut w = World::new(plan(vec![s]));
    let id = w.id("flaky");
    w.behaviour.insert(id, Behaviour::ExitAfter(MS * 10, 1));
    w.up_all();
    w.run_until(Duration::from_secs(60));
    let State::Failed { reason } = w.state("flaky") else {
        panic!("{:?}", w.state("flaky"))
    };
    assert_eq!(
        reason.to_string(),
        "restarted 2 times, giving up (last: exit code 1)"
    );
    assert_eq!(w.spawn_count("flaky"), 3);
    assert_eq!(
        w.eng.unit(id).restarts,
        2,
        "restarts: what happened, not what was refused"
    );
}

#[test]
fn exit_on_failure_stops_everything_when_it_fails_for_good() {
    let mut job = UnitSpec::new("job", Kind::Service);
    job.restart.mode = RestartMode::Never;
    job.exit_on_failure = true;
    let web = UnitSpec::new("web", Kind::Service);
    let mut ok = UnitSpec::new("ok", Kind::Service);
    ok.restart.mode = RestartMode::Never;
    ok.exit_on_failure = true;
    let mut w = World::new(plan(vec![job, web, ok]));
    let (ijob, iok) = (w.id("job"), w.id("ok"));
    // A clean exit is not a failure.
    w.behaviour.insert(iok, Behaviour::ExitAfter(MS * 10, 0));
    w.behaviour.insert(ijob, Behaviour::ExitAfter(MS * 100, 3));
    w.up_all();
    w.run_until(MS * 50);
    assert!(!w.eng.is_shutting_down());
    assert!(w.eng.unit(w.id("web")).state.is_live());
    w.run_until(Duration::from_secs(2));
    assert!(w.eng.is_shutting_down());
    assert!(w.eng.all_down(), "{:?}", w.state("web"));
    assert_eq!(w.signals.len(), 1, "web got its stop signal");
}

#[test]
fn exit_on_end_and_exit_on_skipped_stop_everything() {
    // `exit_on_end`: a clean exit ends the stack too.
    let mut once = UnitSpec::new("once", Kind::Service);
    once.restart.mode = RestartMode::Never;
    once.exit_on_end = true;
    let web = UnitSpec::new("web", Kind::Service);
    let mut w = World::new(plan(vec![once, web]));
    let id = w.id("once");
    w.behaviour.insert(id, Behaviour::ExitAfter(MS * 100, 0));
    w.up_all();
    w.run_until(MS * 50);
    assert!(!w.eng.is_shutting_down());
    w.run_until(Duration::from_secs(2));
    assert!(w.eng.is_shutting_down() && w.eng.all_down());

    // `exit_on_skipped`: a dependency that can never hold ends the stack.
    let mut check = UnitSpec::new("check", Kind::Task);
    check.restart.mode = RestartMode::Never;
    let names = ["check", "deploy", "web"];
    let mut deploy = UnitSpec::new("deploy", Kind::Task);
    deploy
        .deps
        .push(dep(&names, "check", Condition::CompletedSuccessfully));
    deploy.exit_on_skipped = true;
    let web = UnitSpec::new("web", Kind::Service);
    let mut w = World::new(plan(vec![check, deploy, web]));
    let id = w.id("check");
    w.behaviour.insert(id, Behaviour::ExitAfter(MS * 100, 1));
    w.up_all();
    w.run_until(MS * 50);
    assert!(!w.eng.is_shutting_down());
    w.run_until(Duration::from_secs(2));
    assert!(matches!(w.state("deploy"), State::Skipped { .. }));
    assert!(w.eng.is_shutting_down() && w.eng.all_down());
}

/// A service and a task that watch files, with a 300 ms debounce.
fn watching() -> World {
    let mut api = UnitSpec::new("api", Kind::Service);
    api.watch_debounce = Some(MS * 300);
    let mut codegen = UnitSpec::new("codegen", Kind::Task);
    codegen.watch_debounce = Some(MS * 300);
    let idle = UnitSpec::new("idle", Kind::Service);
    let mut w = World::new(plan(vec![api, codegen, idle]));
    let codegen_id = w.id("codegen");
    w.behaviour
        .insert(codegen_id, Behaviour::ExitAfter(MS * 5, 0));
    w
}

#[test]
fn a_storm_of_changes_within_the_debounce_is_one_restart() {
    let mut w = watching();
    let api = w.id("api");
    w.up_all();
    w.run_until(MS * 50);
    assert_eq!(w.spawn_count("api"), 1);
    // 1,000 saves, 0.1 ms apart (100 ms in all): one restart, 300 ms after the last.
    for i in 0..1000u32 {
        w.now = w.t0 + MS * 100 + Duration::from_micros(100) * i;
        w.send(Event::FilesChanged {
            unit: api,
            path: format!("src/f{i}.rs"),
        });
        w.run_until(w.now - w.t0);
    }
    let last = w.now;
    w.run_until(Duration::from_secs(5));
    assert_eq!(w.spawn_count("api"), 2, "one restart for the whole storm");
    let restarted = w.spawns.iter().filter(|(_, u)| *u == api).nth(1).unwrap().0;
    assert!(
        restarted >= last + MS * 300,
        "not before the debounce after the last change"
    );
    assert_eq!(
        w.eng.unit(api).restarts,
        0,
        "a watched change is not a crash"
    );
    // Two changes far apart: two restarts.
    for at in [6000, 7000] {
        w.now = w.t0 + MS * at;
        w.send(Event::FilesChanged {
            unit: api,
            path: "a.rs".into(),
        });
        w.run_until(MS * (at + 500));
    }
    assert_eq!(w.spawn_count("api"), 4);
}

#[test]
fn a_watched_task_runs_again_and_a_stopped_or_unwatched_unit_does_not() {
    let mut w = watching();
    let (api, codegen, idle) = (w.id("api"), w.id("codegen"), w.id("idle"));
    w.up_all();
    w.run_until(MS * 50);
    assert!(matches!(w.state("codegen"), State::Exited { .. }));
    w.send(Event::FilesChanged {
        unit: codegen,
        path: "schema.sql".into(),
    });
    w.run_until(MS * 500);
    assert_eq!(w.spawn_count("codegen"), 2, "the task ran again");
    // A unit without `watch` ignores changes; one the user stopped stays stopped.
    w.send(Event::FilesChanged {
        unit: idle,
        path: "x".into(),
    });
    w.send(Event::Stop {
        unit: api,
        dependents: false,
    });
    w.run_until(MS * 600);
    w.send(Event::FilesChanged {
        unit: api,
        path: "x".into(),
    });
    w.run_until(MS * 1500);
    assert_eq!(w.spawn_count("idle"), 1);
    assert_eq!(w.spawn_count("api"), 1);
    assert!(matches!(w.state("api"), State::Inactive));
}

#[test]
fn a_missed_watchdog_restarts_through_the_policy() {
    let mut s = UnitSpec::new("svc", Kind::Service);
    s.watchdog = Some(MS * 100);
    let mut w = World::new(plan(vec![s]));
    let id = w.id("svc");
    w.up_all();
    // Heartbeats every 60 ms for a second: it stays up.
    for i in 1..=16u32 {
        w.run_until(MS * (60 * i));
        let generation = w.eng.unit(id).generation;
        w.send(Event::Watchdog {
            unit: id,
            generation,
        });
    }
    assert_eq!(w.spawn_count("svc"), 1);
    // They stop: restarted once the 100 ms pass, through the restart policy.
    w.run_until(MS * 1200);
    assert_eq!(w.signals.len(), 1);
    assert!(w.signals[0].0 >= w.t0 + MS * (960 + 100));
    w.run_until(MS * 5000);
    assert!(w.spawn_count("svc") >= 2);
    assert!(
        w.eng.unit(id).restarts >= 1,
        "a missed watchdog counts as a failure"
    );
}

#[test]
fn memory_over_the_limit_twice_in_a_row_restarts() {
    let mut s = UnitSpec::new("fat", Kind::Service);
    s.max_memory = Some(32 << 20);
    let mut w = World::new(plan(vec![s]));
    let id = w.id("fat");
    w.up_all();
    w.run_until(MS * 10);
    let sample = |w: &mut World, mib: u64| {
        let generation = w.eng.unit(id).generation;
        w.send(Event::Memory {
            unit: id,
            generation,
            rss_bytes: mib << 20,
        });
    };
    // A spike between normal samples is not enough.
    for mib in [10, 40, 10, 40, 20] {
        sample(&mut w, mib);
    }
    w.run_until(MS * 20);
    assert!(w.signals.is_empty());
    sample(&mut w, 64);
    sample(&mut w, 64);
    w.run_until(MS * 5000);
    assert_eq!(w.signals.len(), 1, "restarted once");
    assert_eq!(w.spawn_count("fat"), 2);
}

/// A task that takes 100 ms, scheduled with each overlap rule.
fn scheduled(overlap: Overlap) -> (World, UnitId) {
    let mut t = UnitSpec::new("job", Kind::Task);
    t.schedule = Some(overlap);
    let mut w = World::new(plan(vec![t]));
    let id = w.id("job");
    w.behaviour.insert(id, Behaviour::ExitAfter(MS * 100, 0));
    (w, id)
}

#[test]
fn scheduled_runs_skip_queue_or_kill_one_still_going() {
    // Due while idle: it runs; due again while it runs: skipped.
    let (mut w, id) = scheduled(Overlap::Skip);
    w.send(Event::ScheduleDue { unit: id });
    w.run_until(MS * 50);
    w.send(Event::ScheduleDue { unit: id });
    w.run_until(MS * 500);
    assert_eq!(w.spawn_count("job"), 1);
    w.send(Event::ScheduleDue { unit: id });
    w.run_until(MS * 1000);
    assert_eq!(w.spawn_count("job"), 2, "due again once idle: it runs");

    // Queue: the second runs once the first has ended (and only one waits).
    let (mut w, id) = scheduled(Overlap::Queue);
    w.send(Event::ScheduleDue { unit: id });
    w.run_until(MS * 20);
    w.send(Event::ScheduleDue { unit: id });
    w.send(Event::ScheduleDue { unit: id });
    w.run_until(MS * 1000);
    assert_eq!(w.spawn_count("job"), 2);
    assert!(w.spawns[1].0 >= w.t0 + MS * 100, "after the first ended");

    // Kill: the one going is stopped, a new one starts.
    let (mut w, id) = scheduled(Overlap::Kill);
    w.send(Event::ScheduleDue { unit: id });
    w.run_until(MS * 20);
    w.send(Event::ScheduleDue { unit: id });
    w.run_until(MS * 1000);
    assert_eq!(w.signals.len(), 1);
    assert_eq!(w.spawn_count("job"), 2);

    // Stopped by the user: its schedule does not run it.
    let (mut w, id) = scheduled(Overlap::Skip);
    w.send(Event::Stop {
        unit: id,
        dependents: false,
    });
    w.send(Event::ScheduleDue { unit: id });
    w.run_until(MS * 500);
    assert_eq!(w.spawn_count("job"), 0);
}
