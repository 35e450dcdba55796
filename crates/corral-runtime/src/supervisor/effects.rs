//! The effect interpreter: an event goes through the engine, and what the engine answers is
//! carried out — a spawn, a signal, a probe, a timer — and told: the terminal line and the event
//! for the stream and the history, in words (`report`).

use super::*;

/// How long a step runs before the queries waiting for it are answered (see
/// [`Supervisor::answer_queries`]).
const QUERY_INTERVAL: Duration = Duration::from_millis(20);

impl Supervisor {
    pub(super) async fn interrupt(&mut self) {
        if self.engine.is_shutting_down() {
            self.printer
                .system("second interrupt: killing everything now".into())
                .await;
            self.handle(Event::ForceKill).await;
        } else {
            self.printer
                .system("stopping (press Ctrl-C again to kill at once)".into())
                .await;
            self.handle(Event::Shutdown).await;
        }
    }

    /// `on_ready`, `on_failure`, `on_exit`, `on_restart`, from what one event did to a unit.
    fn run_hooks(
        &mut self,
        unit: UnitId,
        generation: u64,
        before: &State,
        exit: Option<corral_engine::ExitStatus>,
        spawned: bool,
    ) {
        let after = self.engine.state(unit).clone();
        let def = &self.project.units[unit.0];
        let Some(hooks) = def.hooks.as_deref() else {
            return;
        };
        let ready = |s: &State| matches!(s, State::Running { ready: true, .. });
        let mut due: Vec<(&'static str, &corral_config::Command)> = Vec::new();
        if let Some(c) = &hooks.on_ready
            && ready(&after)
            && !ready(before)
        {
            due.push(("on_ready", c));
        }
        if let Some(status) = exit {
            if let Some(c) = &hooks.on_exit {
                due.push(("on_exit", c));
            }
            // A stop corral was asked for is not a failure.
            if let Some(c) = &hooks.on_failure
                && !status.success()
                && !matches!(before, State::Stopping { .. })
            {
                due.push(("on_failure", c));
            }
        }
        if spawned {
            let first = self.ran.insert(def.name.clone());
            if let Some(c) = &hooks.on_restart
                && !first
            {
                due.push(("on_restart", c));
            }
        }
        for (label, command) in due {
            let mut env = vec![
                ("CORRAL_UNIT".to_string(), def.name.clone()),
                ("CORRAL_STATE".to_string(), after.name().to_string()),
                ("CORRAL_HOOK".to_string(), label.to_string()),
            ];
            if let Some(status) = exit {
                env.push(("CORRAL_EXIT".to_string(), status.to_string()));
            }
            self.processes.run_hook(
                &self.project,
                unit,
                generation,
                &self.printer,
                super::processes::Hook {
                    label,
                    command,
                    env,
                    limit: hooks.timeout,
                },
            );
        }
    }

    pub(super) async fn interrupt_gently(&mut self) {
        if !self.engine.is_shutting_down() {
            self.printer.system("stopping".into()).await;
            self.handle(Event::Shutdown).await;
        }
    }

    /// Feed one event (and the events its effects produce at once) through the engine.
    pub(super) async fn handle(&mut self, first: Event) {
        let mut queue = VecDeque::from([first]);
        let mut signals: Vec<(UnitId, Signal)> = Vec::new();
        let mut spawns: Vec<(UnitId, u64)> = Vec::new();
        let mut answered = Instant::now();
        while let Some(event) = queue.pop_front() {
            if let Event::Exited {
                unit, generation, ..
            } = &event
            {
                let def = &self.project.units[unit.0];
                let task = def.kind == corral_engine::Kind::Task;
                self.processes
                    .exited(&self.store, &def.name, task, *unit, *generation);
            }
            if let Event::ProbeResult {
                unit, ok, detail, ..
            } = &event
                && self.notices.receiver_count() > 0
            {
                let _ = self.notices.send(Arc::new(Notice {
                    time: SystemTime::now(),
                    unit: self.project.units[unit.0].name.clone(),
                    kind: NoticeKind::Probe,
                    state: self.engine.state(*unit).kind_name(),
                    message: format!("{}: {detail}", if *ok { "ok" } else { "failed" }),
                }));
            }
            // What the hooks need: the unit's state before, and how its process ended.
            let hook_unit = match &event {
                Event::Exited {
                    unit, generation, ..
                }
                | Event::Spawned {
                    unit, generation, ..
                }
                | Event::ProbeResult {
                    unit, generation, ..
                }
                | Event::LogReady { unit, generation }
                | Event::Timer {
                    unit, generation, ..
                } if self.engine.unit(*unit).generation == *generation
                    && self.project.units[unit.0].hooks.is_some() =>
                {
                    Some((*unit, *generation))
                }
                _ => None,
            };
            let before = hook_unit.map(|(u, _)| self.engine.state(u).clone());
            let exit = match &event {
                Event::Exited { status, .. } => Some(*status),
                _ => None,
            };
            let spawned = matches!(event, Event::Spawned { .. });
            let effects = self.engine.handle(event, Instant::now());
            if let (Some((unit, generation)), Some(before)) = (hook_unit, before) {
                self.run_hooks(unit, generation, &before, exit, spawned);
            }
            for effect in effects {
                match effect {
                    Effect::Spawn { unit, generation } => spawns.push((unit, generation)),
                    Effect::Signal {
                        unit,
                        generation,
                        signal,
                    } => {
                        // `shutdown_command` is run instead of the stop signal; SIGKILL still
                        // follows the grace period.
                        self.processes.stopping(unit);
                        if self.project.units[unit.0].shutdown_command().is_some() {
                            self.processes.run_shutdown_command(
                                &self.project,
                                unit,
                                generation,
                                &self.printer,
                            );
                        } else {
                            let sig = Signal::try_from(signal).unwrap_or(Signal::SIGTERM);
                            if self.project.units[unit.0].stop_parent_only {
                                self.processes.signal_main(unit, sig);
                            } else {
                                signals.push((unit, sig));
                            }
                        }
                    }
                    Effect::Kill { unit, .. } => signals.push((unit, Signal::SIGKILL)),
                    Effect::RunProbe {
                        unit,
                        generation,
                        probe,
                    } => self
                        .processes
                        .run_probe(&self.project, unit, generation, probe),
                    Effect::WatchTimer { unit, seq, after } => {
                        let tx = self.tx.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(after).await;
                            let _ = tx.send(Msg::Event(Event::WatchSettled { unit, seq }));
                        });
                    }
                    Effect::SetTimer {
                        unit,
                        generation,
                        timer,
                        after,
                    } => {
                        let tx = self.tx.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(after).await;
                            let _ = tx.send(Msg::Event(Event::Timer {
                                unit,
                                generation,
                                timer,
                            }));
                        });
                    }
                    Effect::Changed { unit, note } => self.report(unit, note).await,
                }
            }
            // Their events go on the queue in the order the engine asked for them, as each
            // would have had it been started where it was asked for.
            self.spawn_all(std::mem::take(&mut spawns), &mut queue, &mut answered);
        }
        self.processes.signal_batch(&signals, true);
    }

    /// Answer the queries (snapshots, definitions) waiting on the channel now, in the middle of
    /// a step; anything else taken off it waits in `deferred`, in order, for the step to end.
    /// A query answered here sees the engine as the step has left it so far — which it is.
    fn answer_queries(&mut self) {
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Msg::Request(r)
                    if matches!(r.command, Command::Snapshot(_) | Command::Definition(_)) =>
                {
                    let reply = match &r.command {
                        Command::Definition(name) => self.definition(name),
                        Command::Snapshot(only) => {
                            Ok(Reply::Snapshot(self.snapshot(only.as_deref())))
                        }
                        _ => Err(CommandError::Invalid("not a query".into())),
                    };
                    let _ = r.reply.send(reply);
                }
                other => self.deferred.push_back(other),
            }
        }
    }

    /// Print a state change, and tell the event stream and history.
    async fn report(&mut self, unit: UnitId, note: Option<String>) {
        let name = &self.project.units[unit.0].name;
        let state = self.engine.state(unit);
        // Too routine for the terminal; still an event.
        let routine = matches!(
            (state, &note),
            (State::Starting, _) | (State::Inactive, None)
        );
        // The engine says when this end ends the stack (`exit_on_failure` and the like).
        let ends_stack = note
            .as_deref()
            .and_then(|n| n.split("; ").find(|p| p.ends_with("stopping everything")))
            .map(|p| format!("; {p}"))
            .unwrap_or_default();
        let text = match (state, note) {
            (State::Running { .. }, Some(n)) | (State::Stopping { .. }, Some(n)) => {
                format!("{name}: {n}")
            }
            (State::Blocked { waiting_on }, _) if waiting_on.is_empty() => {
                format!("{name}: waiting for its turn")
            }
            (State::Blocked { waiting_on }, _) => {
                let w: Vec<String> = waiting_on.iter().map(|w| w.to_string()).collect();
                format!("{name}: waiting for {}", w.join(", "))
            }
            (State::Failed { reason }, _) => format!("{name}: failed: {reason}{ends_stack}"),
            (State::Skipped { reason }, _) => format!("{name}: skipped: {reason}{ends_stack}"),
            (State::Exited { status }, _) => format!("{name}: exited ({status}){ends_stack}"),
            (State::Backoff { .. }, Some(n)) => format!("{name}: {n}"),
            (State::Inactive, Some(n)) => format!("{name}: {n}"),
            (State::Starting, _) | (State::Inactive, None) => format!("{name}: {}", state.name()),
            (s, None) => format!("{name}: {}", s.name()),
        };
        let notice = Arc::new(Notice {
            time: SystemTime::now(),
            unit: name.clone(),
            kind: NoticeKind::State,
            state: state.kind_name(),
            message: text.clone(),
        });
        let _ = self.notices.send(notice.clone());
        self.pending_notices.push(notice);
        if !routine {
            self.printer.system(text).await;
        }
    }

    /// Start the processes of `units`, a chunk at a time: each prepared here, launched side by
    /// side (`spawn::launch_all`: a launch mostly waits for its child to reach `exec`), then
    /// taken on here in order. Their `Spawned` or `SpawnFailed` events go on `queue` in order.
    fn spawn_all(
        &mut self,
        units: Vec<(UnitId, u64)>,
        queue: &mut VecDeque<Event>,
        answered: &mut Instant,
    ) {
        // Small enough that a chunk's descriptors (six a process until launched) stay few and
        // clients asking how things stand wait little (`ps` while 5,000 start, median: 32 a
        // chunk 63-67 ms, 16 55-58 ms; one at a time, with a core left free, 45 ms); large
        // enough to keep the cores busy.
        const CHUNK: usize = 16;
        for chunk in units.chunks(CHUNK) {
            let mut starting: Vec<_> = chunk
                .iter()
                .map(|&(unit, generation)| {
                    let prepared = self.processes.prepare(
                        &self.project,
                        &self.store,
                        &self.printer,
                        unit,
                        generation,
                    );
                    (unit, generation, prepared)
                })
                .collect();
            let ready = starting
                .iter_mut()
                .filter_map(|(_, _, s)| s.as_mut().ok()?.ready.take())
                .collect();
            let mut launched = crate::spawn::launch_all(ready).into_iter();
            for (unit, generation, prepared) in starting {
                let spawned = prepared.and_then(|s| {
                    let launched = launched.next().unwrap_or_else(|| {
                        Err(crate::spawn::SpawnError("it was not started".into(), true))
                    });
                    self.processes
                        .finish(&self.project, &self.store, s, launched)
                });
                queue.push_back(match spawned {
                    Ok(pid) => Event::Spawned {
                        unit,
                        generation,
                        pid,
                    },
                    Err(crate::spawn::SpawnError(error, retryable)) => Event::SpawnFailed {
                        unit,
                        generation,
                        error,
                        retryable,
                    },
                });
            }
            // A step can be long (10,000 units to start): clients asking how things stand
            // are answered along the way rather than after it.
            if answered.elapsed() > QUERY_INTERVAL {
                self.answer_queries();
                *answered = Instant::now();
            }
        }
    }
}
