//! What clients see of the supervisor: the commands they send, the replies and views they get,
//! the event and output broadcasts — and the supervisor's side of answering them.

use super::*;

/// What a client (the API) asks of the supervisor.
#[derive(Clone, Debug)]
pub enum Command {
    Start {
        name: String,
        dependents: bool,
        /// Answer once the outcome is known (see `tickets`), not at once.
        wait: bool,
    },
    Stop {
        name: String,
        dependents: bool,
        /// Answer once the outcome is known (see `tickets`), not at once.
        wait: bool,
    },
    Restart {
        name: String,
        dependents: bool,
        /// Answer once the outcome is known (see `tickets`), not at once.
        wait: bool,
    },
    Signal {
        name: String,
        signal: i32,
    },
    /// Stop everything in reverse order, then end.
    Shutdown,
    /// Every unit's view, or (with a name) that unit's alone.
    Snapshot(Option<String>),
    /// The last N events of the stored history.
    History(usize),
    /// A unit's definition, for people.
    Definition(String),
    /// Read the config file again; restart only the units whose definition changed.
    Reload,
    /// Add a service at run time (`replace`: or change one added before). `body` has the keys
    /// of its `[services.NAME]` table, as JSON. Kept across daemon restarts.
    Define {
        name: String,
        body: serde_json::Value,
        replace: bool,
    },
    /// Remove a service added at run time (stopping it first).
    Remove {
        name: String,
    },
    /// Run `replicas` of a service or task of the config file (0: none), read again.
    Scale {
        name: String,
        replicas: usize,
    },
    /// Run these tasks (all tasks when empty) and the tasks they depend on, again, as one
    /// pipeline; services they need are started. One pipeline at a time.
    RunTasks {
        tasks: Vec<String>,
        sequential: bool,
    },
    /// A pipeline run; with `wait`, answer once it has finished.
    GetRun {
        id: u64,
        wait: bool,
    },
}

#[derive(Debug)]
pub enum Reply {
    Done(String),
    /// Internal: the answer comes later (a reload waiting for stops). Never sent to a client.
    Pending,
    /// Internal: answer when this unit reaches the goal (a completion ticket).
    Ticket(UnitId, Goal),
    Run(RunView),
    Snapshot(Snapshot),
    History(Vec<Notice>),
    Definition(corral_proto::wire::Definition),
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("no unit named `{name}`{}", match .suggestion { Some(s) => format!(" (did you mean `{s}`?)"), None => String::new() })]
    UnknownUnit {
        name: String,
        suggestion: Option<String>,
    },
    #[error("`{0}` has no running process")]
    NotRunning(String),
    #[error("corral is shutting down")]
    ShuttingDown,
    /// A waited-for start or stop did not reach its goal: why.
    #[error("{0}")]
    Unsuccessful(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
}

pub struct Request {
    pub(super) command: Command,
    pub(super) reply: oneshot::Sender<Result<Reply, CommandError>>,
}

/// One unit as clients see it. The state is the engine's own (typed); the API turns it into
/// wire types.
#[derive(Clone, Debug)]
pub struct UnitView {
    pub name: String,
    pub kind: Kind,
    pub state: State,
    pub pid: Option<u32>,
    pub ready: bool,
    pub uptime: Option<Duration>,
    pub restarts: u32,
    pub last_exit: Option<ExitStatus>,
    /// Readiness as people read it: `ready`, `not ready: <last failure>`, or none (no probe).
    pub health: Option<String>,
    pub ports: Vec<u16>,
    /// When a unit in backoff starts again.
    pub backoff_until: Option<SystemTime>,
    pub depends_on: Vec<(String, Condition)>,
    pub held: bool,
    pub wanted: bool,
    pub adopted: bool,
    pub keep_files: u32,
    /// Its own `log_file`, if it names one (see [`Snapshot::log_path`]).
    pub log_file: Option<PathBuf>,
    pub namespace: Option<String>,
    /// What it last said with `STATUS=` on its NOTIFY_SOCKET.
    pub status_text: Option<String>,
    /// Why its log file cannot be written now (a full disk), while that lasts.
    pub log_trouble: Option<String>,
    /// A scheduled task's next run.
    pub next_run: Option<SystemTime>,
    /// Its limits, each saying how it applies (cgroup, rlimit, RSS watch) or why it does not.
    pub limits: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Snapshot {
    pub units: Vec<UnitView>,
    pub templates: Vec<corral_config::Template>,
    pub shutting_down: bool,
    pub pid: u32,
    pub started: SystemTime,
    pub file: PathBuf,
    pub state_dir: PathBuf,
}

impl Snapshot {
    /// A unit's log file (rotated ones are this with `.1` … appended).
    pub fn log_path(&self, u: &UnitView) -> PathBuf {
        corral_config::log_path(&self.state_dir, &u.name, u.log_file.as_deref())
    }
}

/// What kind of thing a [`Notice`] tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoticeKind {
    /// A unit changed state.
    State,
    /// A health check ran.
    Probe,
    /// An instance of a template changed.
    Instance,
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::State => "state",
            NoticeKind::Probe => "probe",
            NoticeKind::Instance => "instance",
        }
    }

    pub fn parse(s: &str) -> Option<NoticeKind> {
        [NoticeKind::State, NoticeKind::Probe, NoticeKind::Instance]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// Something that happened, for the event stream and history.
#[derive(Clone, Debug)]
pub struct Notice {
    pub time: SystemTime,
    pub unit: String,
    pub kind: NoticeKind,
    /// The unit's (or, for instance notices, the instance's) state after it happened, by name:
    /// `running`, `preparing`, …; empty when not known (old history).
    pub state: &'static str,
    pub message: String,
}

/// News that a unit wrote lines to its log (one per chunk the keeper read), for `logs -f`:
/// followers read the file.
#[derive(Clone, Debug)]
pub struct LineNotice {
    pub unit: String,
}

/// A way to ask the supervisor: for clients, and for the owners beside it (instances).
#[derive(Clone)]
pub struct Asker {
    pub(super) tx: UnboundedSender<Msg>,
}

impl Asker {
    /// Ask the supervisor; fails with ShuttingDown if it has already ended.
    pub async fn ask(&self, command: Command) -> Result<Reply, CommandError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Request(Request { command, reply }))
            .map_err(|_| CommandError::ShuttingDown)?;
        rx.await.map_err(|_| CommandError::ShuttingDown)?
    }
}

/// The handle clients hold: send commands, subscribe to events and output.
#[derive(Clone)]
pub struct Control {
    pub(super) asker: Asker,
    /// Ad-hoc processes (their own owner task).
    pub adhoc: crate::adhoc::Adhoc,
    /// Instances of templates (their own owner task).
    pub instances: crate::instances::Instances,
    pub(super) notices: broadcast::Sender<Arc<Notice>>,
    pub(super) lines: broadcast::Sender<Arc<LineNotice>>,
}

impl Control {
    /// Ask the supervisor; fails with ShuttingDown if it has already ended.
    pub async fn ask(&self, command: Command) -> Result<Reply, CommandError> {
        self.asker.ask(command).await
    }

    pub async fn snapshot(&self) -> Result<Snapshot, CommandError> {
        self.snapshot_with(None).await
    }

    /// A snapshot with the unit named `name` alone (none if there is no such unit): asking for
    /// one unit among thousands does not copy them all.
    pub async fn snapshot_of(&self, name: &str) -> Result<Snapshot, CommandError> {
        self.snapshot_with(Some(name.to_string())).await
    }

    async fn snapshot_with(&self, only: Option<String>) -> Result<Snapshot, CommandError> {
        match self.ask(Command::Snapshot(only)).await? {
            Reply::Snapshot(s) => Ok(s),
            _ => Err(CommandError::Invalid("unexpected reply".into())),
        }
    }

    pub fn notices(&self) -> broadcast::Receiver<Arc<Notice>> {
        self.notices.subscribe()
    }

    pub fn lines(&self) -> broadcast::Receiver<Arc<LineNotice>> {
        self.lines.subscribe()
    }
}

impl Supervisor {
    /// The services defined at run time, as stored.
    pub(super) fn added(&self) -> Result<Vec<corral_config::Definition>, CommandError> {
        let mut cache = self.added_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(added) = &*cache {
            return Ok(added.clone());
        }
        let added =
            stored_definitions(&self.store).map_err(|e| CommandError::Invalid(e.to_string()))?;
        *cache = Some(added.clone());
        Ok(added)
    }

    /// The stored definitions are now `added`.
    pub(super) fn set_added(&self, added: Vec<corral_config::Definition>) {
        *self.added_cache.lock().unwrap_or_else(|e| e.into_inner()) = Some(added);
    }

    /// `name`'s stored definition, if it had one, is gone.
    pub(super) fn forget_added(&self, name: &str) {
        if let Some(added) = &mut *self.added_cache.lock().unwrap_or_else(|e| e.into_inner()) {
            added.retain(|d| d.name != name);
        }
    }

    /// The stored definitions changed: [`Supervisor::added`] reads them again.
    pub(super) fn added_changed(&self) {
        *self.added_cache.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The unit named `name`, or an error that suggests a near name.
    pub(super) fn find_unit(&self, name: &str) -> Result<UnitId, CommandError> {
        self.project
            .plan
            .find(name)
            .ok_or_else(|| CommandError::UnknownUnit {
                name: name.to_string(),
                suggestion: corral_config::did_you_mean(
                    name,
                    self.project.units.iter().map(|u| u.name.as_str()),
                )
                .map(str::to_string),
            })
    }

    /// Feed the engine the user's event for `name`, and say where the unit is now — or, with a
    /// goal, hand out a ticket that is answered once the unit reaches it.
    pub(super) async fn act_on(
        &mut self,
        name: &str,
        goal: Option<Goal>,
        event: impl FnOnce(UnitId) -> Event,
    ) -> Result<Reply, CommandError> {
        let unit = self.find_unit(name)?;
        self.handle(event(unit)).await;
        if let Some(goal) = goal {
            return Ok(Reply::Ticket(unit, goal));
        }
        Ok(Reply::Done(format!(
            "{name}: {}",
            self.engine.state(unit).name()
        )))
    }

    /// A unit's definition, and where it came from.
    pub(super) fn definition(&self, name: &str) -> Result<Reply, CommandError> {
        let id = self.find_unit(name)?;
        let added = self.added()?.iter().any(|d| d.name == name);
        let source = if added {
            "added at run time".to_string()
        } else {
            self.project.file.display().to_string()
        };
        Ok(Reply::Definition(super::definition::describe(
            &self.project,
            id,
            source,
        )))
    }

    pub(super) async fn request(&mut self, command: Command) -> Result<Reply, CommandError> {
        let busy = self.engine.is_shutting_down();
        match command {
            Command::Snapshot(only) => Ok(Reply::Snapshot(self.snapshot(only.as_deref()))),
            Command::Definition(name) => self.definition(&name),
            Command::Reload
            | Command::Define { .. }
            | Command::Remove { .. }
            | Command::Scale { .. }
                if busy =>
            {
                Err(CommandError::ShuttingDown)
            }
            Command::Reload
            | Command::Define { .. }
            | Command::Remove { .. }
            | Command::Scale { .. }
                if self.reload.is_some() =>
            {
                Err(CommandError::Conflict(
                    "a reload is still in progress (waiting for changed services to stop)".into(),
                ))
            }
            Command::RunTasks { .. } if busy => Err(CommandError::ShuttingDown),
            Command::RunTasks { tasks, sequential } => self.start_run(tasks, sequential).await,
            Command::GetRun { id, wait } => {
                let run = self
                    .runs
                    .iter()
                    .find(|r| r.id == id)
                    .ok_or_else(|| CommandError::NotFound(format!("no pipeline run {id}")))?;
                if wait && run.result.is_none() {
                    Ok(Reply::Pending)
                } else {
                    Ok(Reply::Run(self.run_view(run)))
                }
            }
            Command::Reload => {
                let added = self.added()?;
                self.reload_with(added, Change::ReadFile).await
            }
            Command::Scale { name, replicas } => {
                let added = self.added()?;
                self.reload_with(added, Change::Scale(name, replicas)).await
            }
            Command::Define {
                name,
                body,
                replace,
            } => {
                if !corral_config::is_valid_name(&name) {
                    return Err(CommandError::Invalid(format!(
                        "`{name}` is not a valid name: {}",
                        corral_config::read::NAME_HELP
                    )));
                }
                let added = self.added()?;
                let exists_added = added.iter().any(|d| d.name == name);
                let in_file = self.project.plan.find(&name).is_some() && !exists_added;
                if in_file {
                    return Err(CommandError::Conflict(format!(
                        "`{name}` is defined in {}; change it there and reload",
                        self.project.file.display()
                    )));
                }
                match (exists_added, replace) {
                    (true, false) => {
                        return Err(CommandError::Conflict(format!(
                            "a service named `{name}` exists already; update it instead"
                        )));
                    }
                    (false, true) => {
                        return Err(CommandError::UnknownUnit {
                            name,
                            suggestion: None,
                        });
                    }
                    _ => {}
                }
                let def = corral_config::Definition::from_json(&name, &body, &owner(&name));
                self.reload_with(added, Change::Define(def)).await
            }
            Command::Remove { name } => {
                let added = self.added()?;
                if !added.iter().any(|d| d.name == name) {
                    return Err(match self.project.plan.find(&name) {
                        Some(_) => CommandError::Conflict(format!(
                            "`{name}` is defined in {}; remove it there and reload",
                            self.project.file.display()
                        )),
                        None => self
                            .find_unit(&name)
                            .err()
                            .unwrap_or(CommandError::NotRunning(name)),
                    });
                }
                self.reload_with(added, Change::Forget(name)).await
            }
            Command::History(n) => {
                let rows = self
                    .store
                    .events(n)
                    .map_err(|e| CommandError::Invalid(e.to_string()))?;
                Ok(Reply::History(
                    rows.into_iter()
                        .map(|r| Notice {
                            time: r.time,
                            state: state_name(&r.state),
                            unit: r.unit,
                            kind: NoticeKind::parse(&r.kind).unwrap_or(NoticeKind::State),
                            message: r.message,
                        })
                        .collect(),
                ))
            }
            Command::Shutdown => {
                if !busy {
                    self.printer
                        .system("stopping (asked through the API)".into())
                        .await;
                    self.handle(Event::Shutdown).await;
                }
                Ok(Reply::Done("stopping".into()))
            }
            Command::Start { .. } | Command::Restart { .. } if busy => {
                Err(CommandError::ShuttingDown)
            }
            Command::Start {
                name,
                dependents,
                wait,
            } => {
                let goal = wait.then_some(Goal::Up);
                self.act_on(&name, goal, |unit| Event::Start { unit, dependents })
                    .await
            }
            Command::Stop {
                name,
                dependents,
                wait,
            } => {
                let goal = wait.then_some(Goal::Down);
                self.act_on(&name, goal, |unit| Event::Stop { unit, dependents })
                    .await
            }
            Command::Restart {
                name,
                dependents,
                wait,
            } => {
                let goal = wait.then_some(Goal::Up);
                self.act_on(&name, goal, |unit| Event::Restart { unit, dependents })
                    .await
            }
            Command::Signal { name, signal } => {
                let unit = self.find_unit(&name)?;
                let sig = Signal::try_from(signal)
                    .map_err(|_| CommandError::Invalid(format!("no signal number {signal}")))?;
                let Some(pid) = self.processes.pid(unit) else {
                    return Err(CommandError::NotRunning(name));
                };
                self.processes.signal_batch(&[(unit, sig)], false);
                Ok(Reply::Done(format!(
                    "sent {} to {name} (pid {pid})",
                    sig.as_str()
                )))
            }
        }
    }

    /// The view of every unit, or of the one named `only` (none if there is no such unit).
    pub(super) fn snapshot(&self, only: Option<&str>) -> Snapshot {
        let now = Instant::now();
        let wall_now = SystemTime::now();
        let ids: Vec<UnitId> = match only {
            Some(name) => self.project.plan.find(name).into_iter().collect(),
            None => self.project.plan.ids().collect(),
        };
        let units = ids
            .into_iter()
            .map(|id| {
                let u = self.engine.unit(id);
                let spec = self.project.plan.get(id);
                let def = &self.project.units[id.0];
                let running = matches!(u.state, State::Running { .. } | State::Stopping { .. });
                let health =
                    spec.readiness
                        .is_some()
                        .then(|| match (&u.state, u.last_probe_error()) {
                            (State::Running { ready: true, .. }, _) => "ready".to_string(),
                            (_, Some(e)) => format!("not ready: {e}"),
                            _ => "not ready".to_string(),
                        });
                UnitView {
                    name: spec.name.clone(),
                    kind: spec.kind,
                    state: u.state.clone(),
                    pid: self.processes.pid(id),
                    ready: matches!(u.state, State::Running { ready: true, .. }),
                    uptime: if running {
                        u.started_at.map(|t| now.saturating_duration_since(t))
                    } else {
                        None
                    },
                    restarts: u.restarts,
                    last_exit: u.last_exit,
                    health,
                    ports: self.processes.port(id).into_iter().collect(),
                    backoff_until: match u.state {
                        State::Backoff { until, .. } => {
                            Some(wall_now + until.saturating_duration_since(now))
                        }
                        _ => None,
                    },
                    depends_on: spec
                        .deps
                        .iter()
                        .map(|d| (self.project.plan.get(d.unit).name.clone(), d.condition))
                        .collect(),
                    held: u.held,
                    wanted: u.wanted,
                    adopted: self.processes.adopted(id),
                    keep_files: def.log.keep_files,
                    // Not its path: joining one for each of thousands of units was a tenth
                    // of a snapshot, and only `logs` asks, for a few.
                    log_file: def.log_file().map(Path::to_path_buf),
                    namespace: def.namespace().map(str::to_string),
                    status_text: self.processes.status(id),
                    log_trouble: self.log_trouble.get(&def.name).cloned(),
                    next_run: def
                        .schedule
                        .as_ref()
                        .and_then(|s| s.next_after(&chrono::Local::now()))
                        .map(SystemTime::from),
                    limits: self.processes.limits(def, spec.max_memory),
                }
            })
            .collect();
        Snapshot {
            units,
            templates: self.project.templates.clone(),
            shutting_down: self.engine.is_shutting_down(),
            pid: std::process::id(),
            started: self.started,
            file: self.project.file.clone(),
            state_dir: self.project.state_dir.clone(),
        }
    }
}

/// A stored state name as the `'static` name the runtime uses (unknown names: empty).
fn state_name(stored: &str) -> &'static str {
    const NAMES: &[&str] = &[
        "inactive",
        "blocked",
        "starting",
        "running",
        "backoff",
        "stopping",
        "exited",
        "failed",
        "skipped",
        "awaiting_upload",
        "preparing",
        "ready",
        "deleted",
    ];
    NAMES.iter().find(|n| **n == stored).copied().unwrap_or("")
}
