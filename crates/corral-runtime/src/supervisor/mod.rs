//! The supervisor loop: one task owns the engine. Everything else — process waiters, the
//! keeper's tap, probe runs, timers, OS signals, API requests — sends it messages over a
//! channel; the loop feeds each event to the engine and carries out the effects. No state is
//! shared behind locks except the reaper's table of un-reaped PIDs.
//!
//! What must outlive the daemon goes to the store inside the same step: process records
//! (PID + start time + marker) when a process starts and when it ends, held units, auto ports,
//! restart counters, and the event history — one transaction per message handled.
//!
//! On start, process records left by an earlier daemon are checked: a process that is still
//! the same process (PID and start time match, and it carries the recorded marker) is adopted —
//! watched through a pidfd, its output still flowing through the keeper — and anything else
//! that carries the marker is killed before the unit is started afresh. So there is never a
//! second process of a unit, and never an orphan.
//!
//! Where the OS is touched: `spawn` (fork/exec), `signal_batch` (stop signals and SIGKILL to a
//! group and its strays), `sweep` (orphans left by exited instances), `final_sweep` (nothing
//! outlives corral).

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use corral_config::{Check, PortDecl, Project};
use corral_engine::{Condition, Effect, Engine, Event, ExitStatus, Kind, State, UnitId};
use corral_store::{ProcessRecord, Store};
use nix::sys::signal::Signal;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::{broadcast, oneshot};

use crate::keeper::{Attach, KeeperLink};
use crate::logs::Stream;
use crate::printer::Printer;
use crate::probe::{self, ExecContext};
use crate::reaper::Reaper;
use crate::router::{Found, Router, Watch};
use crate::{ports, proctable};

mod control;
mod output;
mod reload;
mod runs;
mod tickets;

pub use control::{
    Asker, Command, CommandError, Control, LineNotice, Notice, NoticeKind, Reply, Request,
    Snapshot, UnitView,
};
use output::{KeeperGuard, connect_keeper, spawn_keeper};
use reload::{Change, PendingReload, owner, stored_definitions};
use runs::Run;
pub use runs::{RunView, TaskResult, verdict};
pub use tickets::Goal;
use tickets::Ticket;

/// What `corral up` / `corral run` asks of the supervisor.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Units to bring up (with their dependencies). Empty: every service, task and target.
    pub names: Vec<String>,
    /// Stop everything once the wanted tasks have all finished (`corral run`).
    pub exit_when_tasks_done: bool,
    /// One task at a time; the rest are skipped after the first failure.
    pub sequential: bool,
    /// Print nothing to the terminal (logs still go to files).
    pub quiet: bool,
    /// Seed for backoff jitter. Default: from the clock.
    pub seed: Option<u64>,
    /// Keep running when every unit has ended (a daemon ends only when told to).
    pub stay: bool,
    /// The corral binary, to start the keeper with (`corral __keeper STATE_DIR`).
    pub exe: PathBuf,
}

/// How each unit ended up.
#[derive(Clone, Debug)]
pub struct UnitOutcome {
    pub name: String,
    pub kind: Kind,
    pub wanted: bool,
    pub state: State,
    /// Run time of the last process (tasks: how long the task took).
    pub duration: Option<Duration>,
}

#[derive(Clone, Debug)]
pub struct Outcome {
    pub units: Vec<UnitOutcome>,
    /// The user interrupted (Ctrl-C, SIGTERM, SIGHUP).
    pub interrupted: bool,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("unknown unit `{name}`{}", match .suggestion { Some(s) => format!(" (did you mean `{s}`?)"), None => String::new() })]
    UnknownUnit {
        name: String,
        suggestion: Option<String>,
    },
    #[error("cannot create `{path}`: {source}")]
    StateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot start the supervisor: {0}")]
    Setup(std::io::Error),
    #[error(
        "another corral (pid {pid}) is already running this project\n  help: talk to it (`corral ps`), or stop it first (`corral down`, or Ctrl-C in its terminal)"
    )]
    Busy { pid: String },
    #[error("{0}")]
    Store(#[from] corral_store::StoreError),
    #[error("cannot start the log keeper: {0}")]
    Keeper(std::io::Error),
    #[error("{0}")]
    Config(String),
}

/// Holds `.corral/corral.lock` while corral runs a project, so that two corrals never
/// supervise (and write the logs of) the same project at once. The lock is an `flock`, so it
/// goes away with the process however it dies; the file keeps the holder's PID for the message.
pub fn lock_project(
    state_dir: &std::path::Path,
) -> Result<nix::fcntl::Flock<std::fs::File>, StartError> {
    use std::io::{Read, Seek, Write};
    let path = state_dir.join("corral.lock");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| StartError::StateDir {
            path: path.display().to_string(),
            source,
        })?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            let _ = lock.set_len(0);
            let _ = lock.rewind();
            let _ = write!(lock, "{}", std::process::id());
            Ok(lock)
        }
        Err((mut file, _)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            Err(StartError::Busy {
                pid: pid.trim().to_string(),
            })
        }
    }
}

enum Msg {
    Event(Event),
    /// Look for processes left behind by instances that have exited.
    Sweep,
    /// The output router found what the engine waits for (or lost the keeper).
    Found(Found),
    Request(Request),
}

/// A process we started (or adopted) for a unit and have not seen exit yet.
struct Live {
    generation: u64,
    pid: u32,
    marker: String,
    /// Adopted from an earlier daemon: not our child, watched through a pidfd.
    adopted: Option<proctable::PidFd>,
}

pub struct Supervisor {
    project: Project,
    options: Options,
    engine: Engine,
    reaper: Reaper,
    printer: Printer,
    printer_thread: Option<crate::printer::PrinterThread>,
    tx: UnboundedSender<Msg>,
    rx: UnboundedReceiver<Msg>,
    /// None only while corral ends (dropping it lets the keeper go).
    keeper: Option<KeeperLink>,
    store: Store,
    notices: broadcast::Sender<Arc<Notice>>,
    /// Output after the keeper: terminal, followers, patterns (a task of its own).
    router: Router,
    /// The first port of each unit, once known (auto ports are chosen once and kept).
    ports: Vec<Option<u16>>,
    live: Vec<Option<Live>>,
    /// Stored held flags and restart counts, to write only what changed.
    held: Vec<bool>,
    restarts: Vec<u32>,
    adopt: Vec<(UnitId, ProcessRecord)>,
    wanted: Vec<UnitId>,
    pending_notices: Vec<Arc<Notice>>,
    /// A reload waiting for its changed units to stop.
    reload: Option<PendingReload>,
    /// The instances' owner, told of templates and unit names after every reload.
    instances: crate::instances::Instances,
    /// Pipeline runs, newest last (a few are kept); the last may still be running.
    runs: Vec<Run>,
    /// Who waits for the running pipeline.
    run_waiters: Vec<oneshot::Sender<Result<Reply, CommandError>>>,
    /// Clients waiting for a unit to come up or go down.
    tickets: Vec<Ticket>,
    /// Where to answer when the pending reload is done.
    reload_reply: Option<oneshot::Sender<Result<Reply, CommandError>>>,
    /// Instances that belong to a different unit index since a plan change: events of tasks
    /// started before it (exit watchers, timers, probes) are re-addressed through this.
    moved: std::collections::HashMap<u64, UnitId>,
    sweep_pending: bool,
    started: SystemTime,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// Set up everything the supervisor needs (state dir, lock, store, keeper, reaper) and decide
/// what to adopt. Call inside the tokio runtime; then serve `Control` and `run` the supervisor.
pub fn prepare(project: Project, options: Options) -> Result<(Supervisor, Control), StartError> {
    let log_dir = project.state_dir.join("logs");
    std::fs::create_dir_all(&log_dir).map_err(|source| StartError::StateDir {
        path: log_dir.display().to_string(),
        source,
    })?;
    let lock = lock_project(&project.state_dir)?;
    let reaper = Reaper::start().map_err(StartError::Setup)?;
    // A keeper starting while the store opens: the two take a few milliseconds each.
    let mut early_keeper = KeeperGuard(None);
    if !crate::keeper::running(&project.state_dir) {
        early_keeper.0 = spawn_keeper(&project.state_dir, &options.exe, &reaper).ok();
    }
    let store = Store::open(&project.state_dir)?;
    // Services added at run time are part of the project.
    let added = reload::stored_definitions(&store)?;
    let project = if added.is_empty() {
        project
    } else {
        project
            .with_definitions(&added)
            .map_err(|e| StartError::Config(e.to_string()))?
    };
    let mut wanted = Vec::new();
    for name in &options.names {
        match project.plan.find(name) {
            Some(id) => wanted.push(id),
            None => {
                let suggestion = corral_config::did_you_mean(
                    name,
                    project.units.iter().map(|u| u.name.as_str()),
                )
                .map(str::to_string);
                return Err(StartError::UnknownUnit {
                    name: name.clone(),
                    suggestion,
                });
            }
        }
    }
    if options.names.is_empty() {
        wanted = project.plan.ids().collect();
    }
    let (tx, rx): (UnboundedSender<Msg>, UnboundedReceiver<Msg>) = unbounded_channel();

    // What an earlier daemon left running: adopt what is still the same process; end the rest.
    let mut adopt = Vec::new();
    for rec in store.processes()? {
        let id = project.plan.find(&rec.unit);
        let same = proctable::start_time(rec.pid as i32) == Some(rec.start_time)
            && proctable::env_var(rec.pid as i32, proctable::MARKER_VAR).as_deref()
                == Some(&rec.marker);
        match id {
            Some(id) if same => adopt.push((id, rec)),
            _ => {
                end_marked(&rec.marker);
                store.remove_process(&rec.unit, rec.generation)?;
            }
        }
    }

    let names: Vec<String> = project.units.iter().map(|u| u.name.clone()).collect();
    let (printer, printer_thread) = Printer::start(names.clone(), options.quiet);
    let (lines, _) = broadcast::channel(4096);
    let router = {
        let tx = tx.clone();
        Router::start(printer.clone(), names, lines.clone(), move |f| {
            let _ = tx.send(Msg::Found(f));
        })
    };
    // The adopted processes' output flows as soon as the keeper is connected: their patterns
    // must be known first.
    for (unit, rec) in &adopt {
        router.expect(&rec.unit, rec.generation, watch_for(&project, *unit));
    }
    let keeper = connect_keeper(
        &project.state_dir,
        &options.exe,
        &reaper,
        &router,
        early_keeper.0.is_some(),
    )?;
    early_keeper.0 = None;
    let seed = options.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let mut engine = Engine::new(project.plan.clone(), seed);
    if options.sequential {
        engine.set_sequential();
    }
    let n = project.units.len();
    let mut ports = vec![None; n];
    let mut restarts = vec![0; n];
    for (i, u) in project.units.iter().enumerate() {
        if u.ports.contains(&PortDecl::Auto) {
            ports[i] = store.port(&u.name)?;
        }
        restarts[i] = store.restarts(&u.name)?;
        engine.set_restarts(UnitId(i), restarts[i]);
    }
    let (notices, _) = broadcast::channel(1024);
    let adhoc = crate::adhoc::Adhoc::start(
        reaper.clone(),
        project.root.clone(),
        Store::open(&project.state_dir).ok(),
    );
    let asker = Asker { tx: tx.clone() };
    let instances = crate::instances::Instances::start(
        project.state_dir.clone(),
        reaper.clone(),
        asker.clone(),
        notices.clone(),
    );
    instances.project(project_view(&project));
    let control = Control {
        asker,
        adhoc,
        instances: instances.clone(),
        notices: notices.clone(),
        lines: lines.clone(),
        log_dir,
    };
    let sup = Supervisor {
        project,
        options,
        engine,
        reaper,
        printer,
        printer_thread,
        tx,
        rx,
        keeper: Some(keeper),
        store,
        notices,
        router,
        ports,
        live: (0..n).map(|_| None).collect(),
        held: vec![false; n],
        restarts,
        adopt,
        wanted,
        pending_notices: Vec::new(),
        reload: None,
        instances,
        runs: Vec::new(),
        run_waiters: Vec::new(),
        tickets: Vec::new(),
        reload_reply: None,
        moved: std::collections::HashMap::new(),
        sweep_pending: false,
        started: SystemTime::now(),
        _lock: lock,
    };
    Ok((sup, control))
}

/// What the instances' owner needs of the project: its templates and unit names.
fn project_view(project: &Project) -> crate::instances::ProjectView {
    crate::instances::ProjectView {
        templates: project.templates.clone(),
        units: project.units.iter().map(|u| u.name.clone()).collect(),
    }
}

/// What a unit's output is watched for: its `log_ready` pattern, a `log` readiness probe.
fn watch_for(project: &Project, unit: UnitId) -> Watch {
    let def = &project.units[unit.0];
    Watch {
        log_ready: def.log_ready.clone(),
        readiness: match &def.readiness {
            Some(p) => match &p.check {
                Check::Log { pattern } => Some(pattern.clone()),
                _ => None,
            },
            None => None,
        },
    }
}

/// Kill every process carrying `marker` (a process we cannot adopt) and wait, bounded, until
/// they are gone.
fn end_marked(marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = proctable::with_marker(marker);
        if left.is_empty() || Instant::now() > deadline {
            return;
        }
        proctable::signal_all(&left, Signal::SIGKILL);
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Run the project in the foreground until it is done or interrupted (no API).
pub async fn run(project: Project, options: Options) -> Result<Outcome, StartError> {
    let (sup, _control) = prepare(project, options)?;
    sup.run().await
}

impl Supervisor {
    /// Supervise until done (or told to stop), then make sure nothing is left behind.
    pub async fn run(mut self) -> Result<Outcome, StartError> {
        let started = Instant::now();
        let mut sigint = signal(SignalKind::interrupt()).map_err(StartError::Setup)?;
        let mut sigterm = signal(SignalKind::terminate()).map_err(StartError::Setup)?;
        let mut sighup = signal(SignalKind::hangup()).map_err(StartError::Setup)?;
        let mut interrupted = false;
        let log_dir = self.project.state_dir.join("logs");
        let rel_logs = log_dir
            .strip_prefix(&self.project.root)
            .unwrap_or(&log_dir)
            .display()
            .to_string();
        let what = if self.options.names.is_empty() {
            plural(self.wanted.len(), "unit")
        } else {
            format!(
                "`{}` (with what it depends on)",
                self.options.names.join("`, `")
            )
        };
        self.printer
            .system(format!(
                "starting {what} from {}; logs in {rel_logs}/",
                self.project.file.display()
            ))
            .await;
        self.begin();
        for (unit, rec) in std::mem::take(&mut self.adopt) {
            self.adopt(unit, rec).await;
        }
        for name in self.store.held()? {
            if let Some(unit) = self.project.plan.find(&name) {
                self.handle(Event::Stop {
                    unit,
                    dependents: false,
                })
                .await;
            }
        }
        let wanted = std::mem::take(&mut self.wanted);
        self.handle(Event::Up(wanted)).await;
        self.commit();
        loop {
            if self.engine.is_shutting_down() {
                if self.engine.all_down() {
                    break;
                }
            } else if !self.options.stay
                && ((self.options.exit_when_tasks_done && self.engine.tasks_settled())
                    || self.engine.settled())
            {
                self.handle(Event::Shutdown).await;
                continue;
            }
            tokio::select! {
                Some(msg) = self.rx.recv() => {
                    self.begin();
                    self.dispatch(msg).await;
                    self.commit();
                },
                _ = sigint.recv() => { interrupted = true; self.interrupt().await; }
                _ = sigterm.recv() => { interrupted = true; self.interrupt_gently().await; }
                _ = sighup.recv() => { interrupted = true; self.interrupt_gently().await; }
            }
        }
        self.commit();
        // Every line the keeper read must reach the terminal before we end; the deadline is for
        // a pipe held open by a process we could not see (another user's, say).
        let router = self.router.clone();
        let drained = router.drained(Duration::from_secs(3));
        tokio::pin!(drained);
        loop {
            tokio::select! {
                _ = &mut drained => break,
                Some(msg) = self.rx.recv() => {
                    if let Msg::Request(r) = msg {
                        let _ = r.reply.send(Err(CommandError::ShuttingDown));
                    }
                }
            }
        }
        // Without a daemon connected and with no pipe left, the keeper ends by itself.
        self.keeper = None;
        self.router.close().await;
        self.final_sweep().await;
        let outcome = self.outcome(interrupted, started.elapsed());
        let Supervisor {
            printer,
            printer_thread,
            ..
        } = self;
        drop(printer);
        if let Some(t) = printer_thread {
            t.finish();
        }
        Ok(outcome)
    }

    fn begin(&self) {
        if let Err(e) = self.store.begin() {
            eprintln!("corral: {e}");
        }
    }

    /// End the step's transaction, after writing what changed in the engine.
    fn commit(&mut self) {
        let mut result = Ok(());
        for id in self.project.plan.ids() {
            let u = self.engine.unit(id);
            let name = &self.project.units[id.0].name;
            if u.held != self.held[id.0] {
                self.held[id.0] = u.held;
                result = result.and(self.store.set_held(name, u.held));
            }
            if u.restarts != self.restarts[id.0] {
                self.restarts[id.0] = u.restarts;
                result = result.and(self.store.set_restarts(name, u.restarts));
            }
        }
        for n in std::mem::take(&mut self.pending_notices) {
            if n.kind == NoticeKind::State {
                result =
                    result.and(
                        self.store
                            .add_event(&n.unit, n.kind.as_str(), n.state, &n.message),
                    );
            }
        }
        if let Err(e) = result.and(self.store.commit()) {
            eprintln!("corral: {e}");
        }
    }

    async fn dispatch(&mut self, msg: Msg) {
        match msg {
            Msg::Event(ev) => {
                let ev = self.readdress(ev);
                if !self.is_stale(&ev) {
                    self.handle(ev).await;
                }
            }
            Msg::Sweep => self.sweep(),
            Msg::Found(f) => self.found(f).await,
            Msg::Request(r) => {
                // Pending answers: a pipeline's waiters, or the reload's.
                let is_run = matches!(r.command, Command::GetRun { .. });
                match self.request(r.command).await {
                    Ok(Reply::Pending) if is_run => self.run_waiters.push(r.reply),
                    Ok(Reply::Ticket(unit, goal)) => self.tickets.push(Ticket {
                        unit: self.project.plan.get(unit).name.clone(),
                        goal,
                        reply: r.reply,
                    }),
                    Ok(Reply::Pending) => self.reload_reply = Some(r.reply),
                    result => {
                        let _ = r.reply.send(result);
                    }
                }
            }
        }
        self.check_run();
        self.check_tickets();
        if self.reload.is_some()
            && let Some(summary) = self.finish_reload().await
            && let Some(reply) = self.reload_reply.take()
        {
            let _ = reply.send(Ok(Reply::Done(summary)));
        }
    }

    /// Take over a process an earlier daemon started.
    async fn adopt(&mut self, unit: UnitId, rec: ProcessRecord) {
        let (Ok(watch_fd), Ok(check_fd)) = (
            proctable::PidFd::open(rec.pid),
            proctable::PidFd::open(rec.pid),
        ) else {
            end_marked(&rec.marker);
            let _ = self.store.remove_process(&rec.unit, rec.generation);
            return;
        };
        let running_for = proctable::age(rec.start_time).unwrap_or_default();
        self.live[unit.0] = Some(Live {
            generation: rec.generation,
            pid: rec.pid,
            marker: rec.marker.clone(),
            adopted: Some(check_fd),
        });
        let tx = self.tx.clone();
        let generation = rec.generation;
        tokio::spawn(async move {
            watch_fd.wait().await;
            let _ = tx.send(Msg::Event(Event::Exited {
                unit,
                generation,
                status: ExitStatus::Unknown,
            }));
        });
        self.handle(Event::Adopt {
            unit,
            generation: rec.generation,
            pid: rec.pid,
            running_for,
        })
        .await;
    }

    async fn interrupt(&mut self) {
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

    async fn interrupt_gently(&mut self) {
        if !self.engine.is_shutting_down() {
            self.printer.system("stopping".into()).await;
            self.handle(Event::Shutdown).await;
        }
    }

    /// Feed one event (and the events its effects produce at once) through the engine.
    async fn handle(&mut self, first: Event) {
        let mut queue = VecDeque::from([first]);
        let mut signals: Vec<(UnitId, Signal)> = Vec::new();
        while let Some(event) = queue.pop_front() {
            if let Event::Exited {
                unit, generation, ..
            } = &event
                && self.live[unit.0]
                    .as_ref()
                    .is_some_and(|l| l.generation == *generation)
                && let Some(live) = self.live[unit.0].take()
            {
                let name = &self.project.units[unit.0].name;
                if let Err(e) = self.store.remove_process(name, live.generation) {
                    eprintln!("corral: {e}");
                }
                if live.adopted.is_some() {
                    // Its orphans went to init, not to us: find them by marker.
                    proctable::signal_all(&proctable::with_marker(&live.marker), Signal::SIGKILL);
                }
                self.schedule_sweep();
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
            for effect in self.engine.handle(event, Instant::now()) {
                match effect {
                    Effect::Spawn { unit, generation } => {
                        queue.push_back(self.spawn(unit, generation))
                    }
                    Effect::Signal { unit, signal, .. } => {
                        let sig = Signal::try_from(signal).unwrap_or(Signal::SIGTERM);
                        signals.push((unit, sig));
                    }
                    Effect::Kill { unit, .. } => signals.push((unit, Signal::SIGKILL)),
                    Effect::RunProbe {
                        unit,
                        generation,
                        probe,
                    } => self.run_probe(unit, generation, probe),
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
        }
        self.signal_batch(&signals);
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
            (State::Failed { reason }, _) => format!("{name}: failed: {reason}"),
            (State::Skipped { reason }, _) => format!("{name}: skipped: {reason}"),
            (State::Exited { status }, _) => format!("{name}: exited ({status})"),
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

    /// Start a unit's process. Returns `Spawned` or `SpawnFailed` for the engine.
    fn spawn(&mut self, unit: UnitId, generation: u64) -> Event {
        match self.try_spawn(unit, generation) {
            Ok(pid) => Event::Spawned {
                unit,
                generation,
                pid,
            },
            Err(error) => Event::SpawnFailed {
                unit,
                generation,
                error,
            },
        }
    }

    fn try_spawn(&mut self, unit: UnitId, generation: u64) -> Result<u32, String> {
        let def = &self.project.units[unit.0];
        let command = def.command.as_ref().ok_or("nothing to run")?;
        // Ports: a fixed port must be free (or freed); an auto port is chosen once, then kept.
        for decl in &def.ports {
            let port = match decl {
                PortDecl::Fixed(p) => *p,
                // The port chosen before (in this life of the daemon or an earlier one) is kept
                // while it is free.
                PortDecl::Auto => match self.ports[unit.0] {
                    Some(p) if ports::is_free(p) => p,
                    _ => {
                        self.ports[unit.0] = None;
                        ports::allocate().map_err(|e| format!("cannot find a free port: {e}"))?
                    }
                },
            };
            if !ports::is_free(port) {
                if def.kill_others {
                    // Blocks the loop for at most 3 s: the holder must be gone before we start.
                    let killed = ports::kill_holders(port)?;
                    self.printer_note(format!(
                        "{}: killed {killed:?} holding port {port}",
                        def.name
                    ));
                } else {
                    return Err(format!(
                        "{}; stop it, choose another port, or set `kill_others = true`",
                        ports::describe_holders(port)
                    ));
                }
            }
            if self.ports[unit.0].is_none() {
                self.ports[unit.0] = Some(port);
                if *decl == PortDecl::Auto
                    && let Err(e) = self.store.set_port(&def.name, port)
                {
                    eprintln!("corral: {e}");
                }
            }
        }
        let port = self.ports[unit.0];
        let argv = command.to_argv(port);
        let marker = proctable::marker(&def.name, generation);
        let mut env = def.env.clone();
        if let Some(p) = port {
            env.retain(|(k, _)| k != "PORT");
            env.push(("PORT".into(), p.to_string()));
        }
        let crate::spawn::Spawned {
            mut child, exit, ..
        } = crate::spawn::spawn(
            &self.reaper,
            crate::spawn::Spec {
                argv: &argv,
                cwd: &def.workdir,
                env: &env,
                marker: Some(&marker),
                stdin: crate::spawn::Io::Null,
                stdout: crate::spawn::Io::Piped,
                stderr: crate::spawn::Io::Piped,
            },
        )
        .map_err(|e| e.0)?;
        let pid = child.id();
        // The output pipes go to the keeper, which outlives us; we keep no copy.
        let out: Option<std::os::fd::OwnedFd> = child.stdout.take().map(Into::into);
        let err: Option<std::os::fd::OwnedFd> = child.stderr.take().map(Into::into);
        if let (Some(out), Some(err)) = (&out, &err) {
            let attach = Attach {
                unit: def.name.clone(),
                generation,
                settings: def.log,
            };
            // Before the keeper has the pipes: the router must know the patterns first.
            self.router
                .expect(&def.name, generation, watch_for(&self.project, unit));
            let attached = match &self.keeper {
                Some(k) => k.attach(&attach, out, err),
                None => Err(std::io::Error::other("corral is ending")),
            };
            if let Err(e) = attached {
                eprintln!(
                    "corral: cannot hand the output of `{}` to the log keeper: {e}",
                    def.name
                );
                // No output will come: nothing to wait for.
                self.router.tap(crate::keeper::TapMsg::Eof {
                    unit: def.name.clone(),
                    generation,
                });
            }
        }
        drop((out, err));
        if let Some(start_time) = proctable::start_time(pid as i32) {
            let rec = ProcessRecord {
                unit: def.name.clone(),
                generation,
                pid,
                start_time,
                marker: marker.clone(),
            };
            if let Err(e) = self.store.put_process(&rec) {
                eprintln!("corral: {e}");
            }
        }
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let status = exit.await.unwrap_or(ExitStatus::Signal(9));
            let _ = tx.send(Msg::Event(Event::Exited {
                unit,
                generation,
                status,
            }));
        });
        self.live[unit.0] = Some(Live {
            generation,
            pid,
            marker,
            adopted: None,
        });
        Ok(pid)
    }

    fn printer_note(&self, text: String) {
        let printer = self.printer.clone();
        tokio::spawn(async move { printer.system(text).await });
    }

    fn run_probe(&self, unit: UnitId, generation: u64, kind: corral_engine::ProbeKind) {
        let def = &self.project.units[unit.0];
        let probe = match kind {
            corral_engine::ProbeKind::Readiness => def.readiness.clone(),
            corral_engine::ProbeKind::Liveness => def.liveness.clone(),
        };
        let Some(probe) = probe else { return };
        let port = self.ports[unit.0];
        let reaper = self.reaper.clone();
        let workdir = def.workdir.clone();
        let env = def.env.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let ctx = ExecContext {
                reaper: &reaper,
                workdir: &workdir,
                env: &env,
            };
            let result = probe::run(&probe.check, port, probe.timing.timeout, ctx).await;
            let (ok, detail) = match result {
                Ok(d) => (true, d),
                Err(d) => (false, d),
            };
            let _ = tx.send(Msg::Event(Event::ProbeResult {
                unit,
                generation,
                probe: kind,
                ok,
                detail,
            }));
        });
    }

    /// Send stop signals or SIGKILL: to each unit's process group, and to the strays that left
    /// the group (setsid) or lost their parent. One `/proc` scan serves the whole batch.
    fn signal_batch(&self, signals: &[(UnitId, Signal)]) {
        if signals.is_empty() {
            return;
        }
        let table = proctable::Table::read(&self.reaper.registered());
        for (unit, sig) in signals {
            let Some(live) = &self.live[unit.0] else {
                continue;
            };
            if let Some(pidfd) = &live.adopted {
                // Not our child: the pidfd says whether the PID is still this process.
                if !pidfd.exited() {
                    let _ =
                        nix::sys::signal::killpg(nix::unistd::Pid::from_raw(live.pid as i32), *sig);
                }
                proctable::signal_all(&proctable::with_marker(&live.marker), *sig);
                continue;
            }
            let leader_alive = self.reaper.signal_group(live.pid, *sig);
            let leader = leader_alive.then_some(live.pid as i32);
            proctable::signal_all(&table.strays(leader, &live.marker), *sig);
        }
    }

    fn schedule_sweep(&mut self) {
        if self.sweep_pending {
            return;
        }
        self.sweep_pending = true;
        let tx = self.tx.clone();
        tokio::spawn(async move {
            // Orphans are re-parented to us once their parent has died; give the group kill at
            // the leader's exit a moment to land.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = tx.send(Msg::Sweep);
        });
    }

    /// Kill orphans whose generation has exited. Orphans of a running generation are left alone:
    /// they are part of it (a daemonizing service) and go when it stops.
    fn sweep(&mut self) {
        self.sweep_pending = false;
        let table = proctable::Table::read(&self.reaper.registered());
        let live: HashSet<String> = self
            .live
            .iter()
            .flatten()
            .map(|l| l.marker.clone())
            .collect();
        // Ad-hoc processes and setup steps are their owners' to clean up (at their exit): the
        // supervisor shares no state with those owners, so it leaves their markers alone.
        let orphans = table.abandoned(|m| live.contains(m) || proctable::owned_elsewhere(m));
        if !orphans.is_empty() {
            proctable::signal_all(&orphans, Signal::SIGKILL);
            self.schedule_sweep();
        }
    }

    /// Before corral exits: nothing it started may outlive it. Kill every remaining descendant,
    /// reap them all, and wait (bounded) until none is left.
    async fn final_sweep(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = proctable::Table::read(&self.reaper.registered()).descendants();
            if left.is_empty() || Instant::now() > deadline {
                if !left.is_empty() {
                    eprintln!("corral: could not end processes {left:?}");
                }
                break;
            }
            proctable::signal_all(&left, Signal::SIGKILL);
            tokio::time::sleep(Duration::from_millis(1)).await;
            self.reaper.reap();
        }
        self.reaper.reap();
    }

    fn outcome(&self, interrupted: bool, elapsed: Duration) -> Outcome {
        let units = self
            .engine
            .plan()
            .ids()
            .map(|id| {
                let u = self.engine.unit(id);
                let duration = match (u.started_at, u.ended_at) {
                    (Some(s), Some(e)) if e >= s => Some(e - s),
                    _ => None,
                };
                UnitOutcome {
                    name: self.engine.plan().get(id).name.clone(),
                    kind: self.engine.plan().get(id).kind,
                    wanted: u.wanted,
                    state: u.state.clone(),
                    duration,
                }
            })
            .collect();
        Outcome {
            units,
            interrupted,
            elapsed,
        }
    }
}

fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}
