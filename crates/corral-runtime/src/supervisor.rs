//! The supervisor loop: one task owns the engine. Everything else — process waiters, the
//! keeper's tap, probe runs, timers, OS signals, API requests — sends it messages over a
//! channel; the loop feeds each event to the engine and carries out the effects. No state is
//! shared behind locks except the reaper's table of un-reaped PIDs.
//!
//! What must outlive the daemon goes to the store inside the same step: instance records
//! (PID + start time + marker) when a process starts and when it ends, held units, auto ports,
//! restart counters, and the event history — one transaction per message handled.
//!
//! On start, instance records left by an earlier daemon are checked: a process that is still
//! the same process (PID and start time match, and it carries the recorded marker) is adopted —
//! watched through a pidfd, its output still flowing through the keeper — and anything else
//! that carries the marker is killed before the unit is started afresh. So there is never a
//! second instance, and never an orphan.
//!
//! Where the OS is touched: `spawn` (fork/exec), `signal_batch` (stop signals and SIGKILL to a
//! group and its strays), `sweep` (orphans left by exited instances), `final_sweep` (nothing
//! outlives corral).

use std::collections::{HashSet, VecDeque};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use corral_config::{Check, PortDecl, Project};
use corral_engine::{Effect, Engine, Event, ExitStatus, Kind, State, UnitId};
use corral_store::{InstanceRecord, Store};
use nix::sys::signal::Signal;
use regex::Regex;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::{broadcast, oneshot};

use crate::keeper::{Attach, KeeperLink, TapMsg};
use crate::logs::Stream;
use crate::printer::Printer;
use crate::probe::{self, ExecContext};
use crate::reaper::Reaper;
use crate::{ports, procs};

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
pub enum RunError {
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
) -> Result<nix::fcntl::Flock<std::fs::File>, RunError> {
    use std::io::{Read, Seek, Write};
    let path = state_dir.join("corral.lock");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| RunError::StateDir {
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
            Err(RunError::Busy {
                pid: pid.trim().to_string(),
            })
        }
    }
}

enum Msg {
    Event(Event),
    /// An instance's preparation moved on (a step started or ended).
    InstanceProgress(Box<crate::instances::Instance>),
    /// An instance's workspace is ready: add its service.
    InstanceReady(Box<crate::instances::Instance>),
    /// Look for processes left behind by instances that have exited.
    Sweep,
    Tap(TapMsg),
    Request(Request),
}

/// What a client (the API) asks of the supervisor.
#[derive(Clone, Debug)]
pub enum Command {
    Start {
        name: String,
        dependents: bool,
    },
    Stop {
        name: String,
        dependents: bool,
    },
    Restart {
        name: String,
        dependents: bool,
    },
    Signal {
        name: String,
        signal: i32,
    },
    /// Stop everything in reverse order, then end.
    Shutdown,
    Snapshot,
    /// The last N events of the stored history.
    History(usize),
    /// Read the config file again; restart only the units whose definition changed.
    Reload,
    /// Add a service at run time (`replace`: or change one added before). `body` is the inside
    /// of its `[services.NAME]` table, in TOML. Kept across daemon restarts.
    Define {
        name: String,
        body: String,
        replace: bool,
    },
    /// Remove a service added at run time (stopping it first).
    Remove {
        name: String,
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
    /// Make an instance of a template (its workspace empty, cloned, or uploaded next).
    CreateInstance {
        template: String,
        params: Vec<(String, String)>,
        git: Option<String>,
        upload: bool,
    },
    /// The ZIP for an instance created with `upload`.
    UploadWorkspace {
        name: String,
        zip: Vec<u8>,
    },
    ListInstances,
    GetInstance {
        name: String,
    },
    /// Stop an instance and delete it with its workspace and logs.
    DeleteInstance {
        name: String,
    },
}

#[derive(Debug)]
pub enum Reply {
    Done(String),
    /// Internal: the answer comes later (a reload waiting for stops). Never sent to a client.
    Pending,
    Run(RunView),
    Instance(Box<crate::instances::Instance>),
    Instances(Vec<crate::instances::Instance>),
    Snapshot(Snapshot),
    History(Vec<Notice>),
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
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
}

pub struct Request {
    command: Command,
    reply: oneshot::Sender<Result<Reply, CommandError>>,
}

/// One unit as clients see it.
#[derive(Clone, Debug)]
pub struct UnitView {
    pub name: String,
    pub kind: Kind,
    pub state: &'static str,
    pub pid: Option<u32>,
    pub ready: bool,
    pub uptime: Option<Duration>,
    pub restarts: u32,
    pub last_exit: Option<String>,
    /// Readiness as people read it: `ready`, `not ready: <last failure>`, or none (no probe).
    pub health: Option<String>,
    pub ports: Vec<u16>,
    /// What a blocked unit waits on, as `name (condition)`.
    pub waiting_on: Vec<String>,
    /// Why a unit failed or was skipped.
    pub reason: Option<String>,
    pub depends_on: Vec<(String, String)>,
    pub held: bool,
    pub wanted: bool,
    pub adopted: bool,
    pub keep_files: u32,
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

/// A pipeline run started through the API.
#[derive(Clone, Debug)]
pub struct RunView {
    pub id: u64,
    /// `running`, `passed` or `failed`.
    pub state: &'static str,
    pub sequential: bool,
    pub started: SystemTime,
    pub elapsed: Duration,
    pub tasks: Vec<TaskResult>,
}

#[derive(Clone, Debug)]
pub struct TaskResult {
    pub name: String,
    /// `PASS`, `FAIL`, `SKIP`, `ALLOWED` (failed, allowed to), or `RUNNING` / `PENDING`.
    pub verdict: &'static str,
    pub detail: String,
    pub duration: Option<Duration>,
}

/// How a task ended, for summaries: the verdict and what to say about it.
pub fn verdict(state: &State, allow_failure: bool) -> (&'static str, String) {
    match state {
        State::Exited { status } if status.success() => ("PASS", String::new()),
        State::Exited { status } if allow_failure => {
            ("ALLOWED", format!("{status} (allowed to fail)"))
        }
        State::Exited { status } => ("FAIL", status.to_string()),
        State::Failed { reason } if allow_failure => {
            ("ALLOWED", format!("{reason} (allowed to fail)"))
        }
        State::Failed { reason } => ("FAIL", reason.clone()),
        State::Skipped { reason } => ("SKIP", reason.clone()),
        State::Starting | State::Running { .. } | State::Stopping { .. } => {
            ("RUNNING", String::new())
        }
        State::Inactive | State::Blocked { .. } | State::Backoff { .. } => {
            ("PENDING", String::new())
        }
    }
}

/// The pipeline being run, and the ones before it.
struct Run {
    id: u64,
    tasks: Vec<UnitId>,
    sequential: bool,
    started: SystemTime,
    began: Instant,
    /// Set when it has finished.
    result: Option<RunView>,
}

/// Something that happened, for the event stream and history.
#[derive(Clone, Debug)]
pub struct Notice {
    pub time: SystemTime,
    pub unit: String,
    /// `state` (a state change), `probe` (a health check result).
    pub kind: &'static str,
    /// The unit's state after it happened.
    pub state: String,
    pub message: String,
}

/// One line of output, for `logs -f`.
#[derive(Clone, Debug)]
pub struct LineNotice {
    pub unit: String,
    pub time: SystemTime,
    pub stream: Stream,
    pub text: String,
}

/// The handle clients hold: send commands, subscribe to events and output.
#[derive(Clone)]
pub struct Control {
    tx: UnboundedSender<Msg>,
    /// Ad-hoc processes (their own owner task).
    pub adhoc: crate::adhoc::Adhoc,
    notices: broadcast::Sender<Arc<Notice>>,
    lines: broadcast::Sender<Arc<LineNotice>>,
    pub log_dir: PathBuf,
}

impl Control {
    /// Ask the supervisor; fails with ShuttingDown if it has already ended.
    pub async fn ask(&self, command: Command) -> Result<Reply, CommandError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Request(Request { command, reply }))
            .map_err(|_| CommandError::ShuttingDown)?;
        rx.await.map_err(|_| CommandError::ShuttingDown)?
    }

    pub async fn snapshot(&self) -> Result<Snapshot, CommandError> {
        match self.ask(Command::Snapshot).await? {
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

/// What the supervisor watches an instance's output for.
#[derive(Clone, Default)]
struct Watch {
    /// Report `Event::LogReady` on the first match.
    log_ready: Option<Regex>,
    /// Report a passing readiness probe on the first match.
    readiness: Option<Regex>,
}

/// A process we started (or adopted) for a unit and have not seen exit yet.
struct Live {
    instance: u64,
    pid: u32,
    marker: String,
    /// Adopted from an earlier daemon: not our child, watched through a pidfd.
    adopted: Option<procs::PidFd>,
    watch: Watch,
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
    lines: broadcast::Sender<Arc<LineNotice>>,
    /// The first port of each unit, once known (auto ports are chosen once and kept).
    ports: Vec<Option<u16>>,
    live: Vec<Option<Live>>,
    /// Instances whose output the keeper has not finished yet.
    draining: HashSet<(String, u64)>,
    /// Stored held flags and restart counts, to write only what changed.
    held: Vec<bool>,
    restarts: Vec<u32>,
    adopt: Vec<(UnitId, InstanceRecord)>,
    wanted: Vec<UnitId>,
    pending_notices: Vec<Arc<Notice>>,
    adhoc: crate::adhoc::Adhoc,
    /// A reload waiting for its changed units to stop.
    reload: Option<PendingReload>,
    /// Instances of templates, by name.
    instances: std::collections::BTreeMap<String, crate::instances::Instance>,
    /// Instances to delete from disk once the running reload has stopped them.
    cleanup_after_reload: Vec<String>,
    /// Pipeline runs, newest last (a few are kept); the last may still be running.
    runs: Vec<Run>,
    /// Who waits for the running pipeline.
    run_waiters: Vec<oneshot::Sender<Result<Reply, CommandError>>>,
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
pub fn prepare(project: Project, options: Options) -> Result<(Supervisor, Control), RunError> {
    let log_dir = project.state_dir.join("logs");
    std::fs::create_dir_all(&log_dir).map_err(|source| RunError::StateDir {
        path: log_dir.display().to_string(),
        source,
    })?;
    let lock = lock_project(&project.state_dir)?;
    let reaper = Reaper::start().map_err(RunError::Setup)?;
    // A keeper starting while the store opens: the two take a few milliseconds each.
    let mut early_keeper = KeeperGuard(None);
    if !crate::keeper::running(&project.state_dir) {
        early_keeper.0 = spawn_keeper(&project.state_dir, &options.exe, &reaper).ok();
    }
    let store = Store::open(&project.state_dir)?;
    // Services added at run time are part of the project.
    let added = store.definitions()?;
    let project = if added.is_empty() {
        project
    } else {
        corral_config::load_with(&project.file, &added)
            .map_err(|e| RunError::Config(e.to_string()))?
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
                return Err(RunError::UnknownUnit {
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

    let keeper = connect_keeper(
        &project.state_dir,
        &options.exe,
        &reaper,
        &tx,
        early_keeper.0.is_some(),
    )?;
    early_keeper.0 = None;

    // What an earlier daemon left running: adopt what is still the same process; end the rest.
    let mut adopt = Vec::new();
    for rec in store.instances()? {
        let id = project.plan.find(&rec.unit);
        let same = procs::start_time(rec.pid as i32) == Some(rec.start_time)
            && procs::env_var(rec.pid as i32, procs::MARKER_VAR).as_deref() == Some(&rec.marker);
        match id {
            Some(id) if same => adopt.push((id, rec)),
            _ => {
                end_marked(&rec.marker);
                store.remove_instance(&rec.unit, rec.instance)?;
            }
        }
    }

    let names: Vec<String> = project.units.iter().map(|u| u.name.clone()).collect();
    let (printer, printer_thread) = Printer::start(names, options.quiet);
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
    let mut instances = std::collections::BTreeMap::new();
    for (name, record) in store.template_instances()? {
        let Ok(mut inst) = serde_json::from_str::<crate::instances::Instance>(&record) else {
            eprintln!("corral: the record of instance `{name}` is unreadable; ignoring it");
            continue;
        };
        if inst.state == "preparing" {
            inst.state = "failed".into();
            inst.error = Some("corral stopped while it was being prepared".into());
        }
        instances.insert(name, inst);
    }
    let (notices, _) = broadcast::channel(1024);
    let (lines, _) = broadcast::channel(4096);
    let adhoc = crate::adhoc::Adhoc::start(
        reaper.clone(),
        project.root.clone(),
        Store::open(&project.state_dir).ok(),
    );
    let control = Control {
        adhoc: adhoc.clone(),
        tx: tx.clone(),
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
        lines,
        ports,
        live: (0..n).map(|_| None).collect(),
        draining: HashSet::new(),
        held: vec![false; n],
        restarts,
        adopt,
        wanted,
        pending_notices: Vec::new(),
        adhoc,
        reload: None,
        instances,
        cleanup_after_reload: Vec::new(),
        runs: Vec::new(),
        run_waiters: Vec::new(),
        reload_reply: None,
        moved: std::collections::HashMap::new(),
        sweep_pending: false,
        started: SystemTime::now(),
        _lock: lock,
    };
    Ok((sup, control))
}

/// A short random id for an instance.
fn fastrand_id() -> u32 {
    fastrand::u32(..0x100_0000)
}

/// A reload waiting for the units it replaces to stop.
struct PendingReload {
    project: Project,
    /// Units whose definition changed or that are gone: stopped before the swap.
    replaced: Vec<String>,
    /// Changed units to start again after the swap (they were wanted).
    restart: Vec<String>,
    /// Changed units the user had stopped: they stay stopped.
    hold: Vec<String>,
    added: Vec<String>,
    summary: String,
}

/// What decides whether a unit changed: its whole definition, with dependencies by name (ids
/// shift when units are added or removed).
fn fingerprints(project: &Project) -> std::collections::HashMap<String, String> {
    project
        .units
        .iter()
        .zip(&project.plan.units)
        .map(|(def, spec)| {
            let mut spec = spec.clone();
            let deps: Vec<(String, String)> = spec
                .deps
                .drain(..)
                .map(|d| {
                    (
                        project.plan.get(d.unit).name.clone(),
                        d.condition.to_string(),
                    )
                })
                .collect();
            (def.name.clone(), format!("{def:?}|{spec:?}|{deps:?}"))
        })
        .collect()
}

/// Connect to the keeper of `state_dir` (starting one if none answers); what it sends arrives
/// as `Msg::Tap`.
/// `started`: one was just spawned; only wait for it.
fn connect_keeper(
    state_dir: &std::path::Path,
    exe: &std::path::Path,
    reaper: &Reaper,
    tx: &UnboundedSender<Msg>,
    started: bool,
) -> Result<KeeperLink, RunError> {
    let start = {
        let (state_dir, exe, reaper) = (state_dir.to_path_buf(), exe.to_path_buf(), reaper.clone());
        move || match started {
            true => Ok(()),
            false => spawn_keeper(&state_dir, &exe, &reaper).map(drop),
        }
    };
    let tap_tx = tx.clone();
    KeeperLink::connect(state_dir, start, move |m| {
        let _ = tap_tx.send(Msg::Tap(m));
    })
    .map_err(RunError::Keeper)
}

/// A keeper started for a start-up that then failed: it holds nothing yet, so it goes.
struct KeeperGuard(Option<u32>);

impl Drop for KeeperGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// Start `corral __keeper STATE_DIR`; returns its PID.
fn spawn_keeper(
    state_dir: &std::path::Path,
    exe: &std::path::Path,
    reaper: &Reaper,
) -> std::io::Result<u32> {
    let err = std::fs::File::create(state_dir.join("keeper.err"))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("__keeper")
        .arg(state_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .process_group(0);
    reaper.spawn(&mut cmd).map(|(child, _)| child.id())
}

/// Kill every process carrying `marker` (an instance we cannot adopt) and wait, bounded, until
/// they are gone.
fn end_marked(marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = procs::with_marker(marker);
        if left.is_empty() || Instant::now() > deadline {
            return;
        }
        procs::signal_all(&left, Signal::SIGKILL);
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Run the project in the foreground until it is done or interrupted (no API).
pub async fn run(project: Project, options: Options) -> Result<Outcome, RunError> {
    let (sup, _control) = prepare(project, options)?;
    sup.run().await
}

impl Supervisor {
    /// Supervise until done (or told to stop), then make sure nothing is left behind.
    pub async fn run(mut self) -> Result<Outcome, RunError> {
        let started = Instant::now();
        let mut sigint = signal(SignalKind::interrupt()).map_err(RunError::Setup)?;
        let mut sigterm = signal(SignalKind::terminate()).map_err(RunError::Setup)?;
        let mut sighup = signal(SignalKind::hangup()).map_err(RunError::Setup)?;
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
                Some(msg) = self.rx.recv() => match msg {
                    // Output changes nothing that is stored: no transaction on this hot path.
                    Msg::Tap(m) => self.tap(m),
                    msg => {
                        self.begin();
                        self.dispatch(msg).await;
                        self.commit();
                    }
                },
                _ = sigint.recv() => { interrupted = true; self.interrupt().await; }
                _ = sigterm.recv() => { interrupted = true; self.interrupt_gently().await; }
                _ = sighup.recv() => { interrupted = true; self.interrupt_gently().await; }
            }
        }
        self.commit();
        // Every line the keeper read must reach the terminal before we end; the deadline is for
        // a pipe held open by a process we could not see (another user's, say).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while !self.draining.is_empty() {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(Msg::Tap(m))) => self.tap(m),
                Ok(Some(Msg::Request(r))) => {
                    let _ = r.reply.send(Err(CommandError::ShuttingDown));
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        // Without a daemon connected and with no pipe left, the keeper ends by itself.
        self.keeper = None;
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
            if n.kind == "state" {
                result = result.and(self.store.add_event(&n.unit, n.kind, &n.message));
            }
        }
        if let Err(e) = result.and(self.store.commit()) {
            eprintln!("corral: {e}");
        }
    }

    /// An event from a task started before a plan change names the unit's old index; its
    /// instance number says where the unit is now.
    fn readdress(&self, mut ev: Event) -> Event {
        if self.moved.is_empty() {
            return ev;
        }
        match &mut ev {
            Event::Exited { unit, instance, .. }
            | Event::ProbeResult { unit, instance, .. }
            | Event::LogReady { unit, instance }
            | Event::Timer { unit, instance, .. } => {
                if let Some(id) = self.moved.get(instance) {
                    *unit = *id;
                }
            }
            _ => {}
        }
        ev
    }

    /// An event about an instance that is no longer current (or a unit a reload removed).
    fn is_stale(&self, ev: &Event) -> bool {
        match ev {
            Event::Exited { unit, instance, .. }
            | Event::ProbeResult { unit, instance, .. }
            | Event::LogReady { unit, instance }
            | Event::Timer { unit, instance, .. } => {
                unit.0 >= self.project.units.len() || self.engine.unit(*unit).instance != *instance
            }
            _ => false,
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
            Msg::Tap(m) => self.tap(m),
            Msg::InstanceProgress(inst) => self.save_instance(*inst),
            Msg::InstanceReady(inst) => self.instance_ready(*inst).await,
            Msg::Request(r) => {
                // Pending answers: a pipeline's waiters, or the reload's.
                let is_run = matches!(r.command, Command::GetRun { .. });
                match self.request(r.command).await {
                    Ok(Reply::Pending) if is_run => self.run_waiters.push(r.reply),
                    Ok(Reply::Pending) => self.reload_reply = Some(r.reply),
                    result => {
                        let _ = r.reply.send(result);
                    }
                }
            }
        }
        self.check_run();
        if self.reload.is_some()
            && let Some(summary) = self.finish_reload().await
            && let Some(reply) = self.reload_reply.take()
        {
            let _ = reply.send(Ok(Reply::Done(summary)));
        }
    }

    /// The unit named `name`, or an error that suggests a near name.
    fn find_unit(&self, name: &str) -> Result<UnitId, CommandError> {
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

    /// Feed the engine the user's event for `name`, and say where the unit is now.
    async fn act_on(
        &mut self,
        name: &str,
        event: impl FnOnce(UnitId) -> Event,
    ) -> Result<Reply, CommandError> {
        let unit = self.find_unit(name)?;
        self.handle(event(unit)).await;
        Ok(Reply::Done(format!(
            "{name}: {}",
            self.engine.state(unit).name()
        )))
    }

    async fn request(&mut self, command: Command) -> Result<Reply, CommandError> {
        let busy = self.engine.is_shutting_down();
        match command {
            Command::Snapshot => Ok(Reply::Snapshot(self.snapshot())),
            Command::Reload | Command::Define { .. } | Command::Remove { .. } if busy => {
                Err(CommandError::ShuttingDown)
            }
            Command::Reload | Command::Define { .. } | Command::Remove { .. }
                if self.reload.is_some() =>
            {
                Err(CommandError::Conflict(
                    "a reload is still in progress (waiting for changed services to stop)".into(),
                ))
            }
            Command::CreateInstance { .. } | Command::UploadWorkspace { .. } if busy => {
                Err(CommandError::ShuttingDown)
            }
            Command::CreateInstance {
                template,
                params,
                git,
                upload,
            } => self.create_instance(template, params, git, upload),
            Command::UploadWorkspace { name, zip } => {
                let inst = self.instance(&name)?;
                if inst.state != "awaiting_upload" {
                    return Err(CommandError::Conflict(format!(
                        "`{name}` is {}, not waiting for an upload",
                        inst.state
                    )));
                }
                let mut inst = inst.clone();
                inst.state = "preparing".into();
                self.save_instance(inst.clone());
                self.prepare_instance(inst.clone(), crate::instances::Source::Zip(zip));
                Ok(Reply::Instance(Box::new(inst)))
            }
            Command::ListInstances => {
                Ok(Reply::Instances(self.instances.values().cloned().collect()))
            }
            Command::GetInstance { name } => {
                Ok(Reply::Instance(Box::new(self.instance(&name)?.clone())))
            }
            Command::DeleteInstance { name } => {
                let inst = self.instance(&name)?;
                if inst.state == "preparing" {
                    return Err(CommandError::Conflict(format!(
                        "`{name}` is still being prepared; delete it when that has ended"
                    )));
                }
                if self.project.plan.find(&name).is_none() {
                    self.delete_instance_files(&name);
                    return Ok(Reply::Done(format!("deleted {name}")));
                }
                let mut added = self
                    .store
                    .definitions()
                    .map_err(|e| CommandError::Invalid(e.to_string()))?;
                added.retain(|(n, _)| *n != name);
                self.cleanup_after_reload.push(name.clone());
                let reply = self.reload_with(added, Some((name, None))).await?;
                self.run_cleanups();
                Ok(reply)
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
                let added = self
                    .store
                    .definitions()
                    .map_err(|e| CommandError::Invalid(e.to_string()))?;
                self.reload_with(added, None).await
            }
            Command::Define {
                name,
                body,
                replace,
            } => {
                if !corral_config::is_valid_name(&name) {
                    return Err(CommandError::Invalid(format!(
                        "`{name}` is not a valid name: use letters, digits, `-`, `_` and `.`"
                    )));
                }
                let mut added = self
                    .store
                    .definitions()
                    .map_err(|e| CommandError::Invalid(e.to_string()))?;
                let exists_added = added.iter().any(|(n, _)| *n == name);
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
                added.retain(|(n, _)| *n != name);
                added.push((name.clone(), body.clone()));
                self.reload_with(added, Some((name, Some(body)))).await
            }
            Command::Remove { name } => {
                let mut added = self
                    .store
                    .definitions()
                    .map_err(|e| CommandError::Invalid(e.to_string()))?;
                if !added.iter().any(|(n, _)| *n == name) {
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
                added.retain(|(n, _)| *n != name);
                self.reload_with(added, Some((name, None))).await
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
                            state: String::new(),
                            unit: r.unit,
                            kind: "state",
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
            Command::Start { name, dependents } => {
                self.act_on(&name, |unit| Event::Start { unit, dependents })
                    .await
            }
            Command::Stop { name, dependents } => {
                self.act_on(&name, |unit| Event::Stop { unit, dependents })
                    .await
            }
            Command::Restart { name, dependents } => {
                self.act_on(&name, |unit| Event::Restart { unit, dependents })
                    .await
            }
            Command::Signal { name, signal } => {
                let unit = self.find_unit(&name)?;
                let sig = Signal::try_from(signal)
                    .map_err(|_| CommandError::Invalid(format!("no signal number {signal}")))?;
                let Some(live) = &self.live[unit.0] else {
                    return Err(CommandError::NotRunning(name));
                };
                let pid = live.pid;
                self.signal_batch(&[(unit, sig)]);
                Ok(Reply::Done(format!(
                    "sent {} to {name} (pid {pid})",
                    sig.as_str()
                )))
            }
        }
    }

    fn snapshot(&self) -> Snapshot {
        let now = Instant::now();
        let units = self
            .project
            .plan
            .ids()
            .map(|id| {
                let u = self.engine.unit(id);
                let spec = self.project.plan.get(id);
                let def = &self.project.units[id.0];
                let live = self.live[id.0].as_ref();
                let running = matches!(u.state, State::Running { .. } | State::Stopping { .. });
                let health = spec
                    .readiness
                    .map(|_| match (&u.state, &u.last_probe_error) {
                        (State::Running { ready: true, .. }, _) => "ready".to_string(),
                        (_, Some(e)) => format!("not ready: {e}"),
                        _ => "not ready".to_string(),
                    });
                UnitView {
                    name: spec.name.clone(),
                    kind: spec.kind,
                    state: u.state.name(),
                    pid: live.map(|l| l.pid),
                    ready: matches!(u.state, State::Running { ready: true, .. }),
                    uptime: if running {
                        u.started_at.map(|t| now.saturating_duration_since(t))
                    } else {
                        None
                    },
                    restarts: u.restarts,
                    last_exit: u.last_exit.map(|e| e.to_string()),
                    health,
                    ports: self.ports[id.0].into_iter().collect(),
                    waiting_on: match &u.state {
                        State::Blocked { waiting_on } => waiting_on
                            .iter()
                            .map(|w| format!("{} ({})", w.name, w.condition))
                            .collect(),
                        _ => Vec::new(),
                    },
                    reason: match &u.state {
                        State::Failed { reason } | State::Skipped { reason } => {
                            Some(reason.clone())
                        }
                        _ => None,
                    },
                    depends_on: spec
                        .deps
                        .iter()
                        .map(|d| {
                            (
                                self.project.plan.get(d.unit).name.clone(),
                                d.condition.to_string(),
                            )
                        })
                        .collect(),
                    held: u.held,
                    wanted: u.wanted,
                    adopted: live.is_some_and(|l| l.adopted.is_some()),
                    keep_files: def.log.keep_files,
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

    fn instance(&self, name: &str) -> Result<&crate::instances::Instance, CommandError> {
        self.instances
            .get(name)
            .ok_or_else(|| CommandError::NotFound(format!("no instance named `{name}`")))
    }

    /// Keep an instance's record (memory and store).
    fn save_instance(&mut self, inst: crate::instances::Instance) {
        match serde_json::to_string(&inst) {
            Ok(json) => {
                if let Err(e) = self.store.put_template_instance(&inst.name, &json) {
                    eprintln!("corral: {e}");
                }
            }
            Err(e) => eprintln!("corral: cannot record instance `{}`: {e}", inst.name),
        }
        let note = format!(
            "instance {}: {}{}",
            inst.name,
            inst.state,
            inst.steps
                .iter()
                .rev()
                .find(|s| s.state != "pending")
                .map_or(String::new(), |s| format!(" ({} {})", s.name, s.state))
        );
        let _ = self.notices.send(Arc::new(Notice {
            time: SystemTime::now(),
            unit: inst.name.clone(),
            kind: "instance",
            state: inst.state.clone(),
            message: note,
        }));
        self.instances.insert(inst.name.clone(), inst);
    }

    fn create_instance(
        &mut self,
        template: String,
        params: Vec<(String, String)>,
        git: Option<String>,
        upload: bool,
    ) -> Result<Reply, CommandError> {
        use crate::instances::{Instance, Source, Step};
        let tpl = self
            .project
            .templates
            .iter()
            .find(|t| t.name == template)
            .cloned()
            .ok_or_else(|| {
                let names: Vec<&str> = self
                    .project
                    .templates
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect();
                CommandError::NotFound(
                    match corral_config::did_you_mean(&template, names.iter().copied()) {
                        Some(s) => format!("no template named `{template}` (did you mean `{s}`?)"),
                        None if names.is_empty() => {
                            format!("no template named `{template}`: corral.toml defines none")
                        }
                        None => format!(
                            "no template named `{template}` (there are: {})",
                            names.join(", ")
                        ),
                    },
                )
            })?;
        if git.is_some() && upload {
            return Err(CommandError::Invalid(
                "choose one of `git` and `upload`".into(),
            ));
        }
        let mut merged = tpl.params.clone();
        for (k, v) in params {
            match merged.iter_mut().find(|(name, _)| *name == k) {
                Some(slot) => slot.1 = v,
                None => {
                    let known: Vec<&str> = tpl.params.iter().map(|(n, _)| n.as_str()).collect();
                    return Err(CommandError::Invalid(format!(
                        "template `{template}` has no parameter `{k}` (it has: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    )));
                }
            }
        }
        if let Some(url) = &git
            && (url.is_empty() || url.starts_with('-'))
        {
            return Err(CommandError::Invalid(format!(
                "`{url}` is not a repository URL"
            )));
        }
        let id = loop {
            let id = format!("{:06x}", fastrand_id());
            let name = format!("{template}-{id}");
            if self.project.plan.find(&name).is_none() && !self.instances.contains_key(&name) {
                break id;
            }
        };
        let name = format!("{template}-{id}");
        let used: HashSet<u16> = self.instances.values().map(|i| i.port).collect();
        let port = match tpl.port_range {
            Some((lo, hi)) => (lo..=hi)
                .find(|p| !used.contains(p) && ports::is_free(*p))
                .ok_or_else(|| {
                    CommandError::Conflict(format!(
                        "no free port left in {lo}-{hi} for template `{template}`"
                    ))
                })?,
            None => loop {
                let p = ports::allocate()
                    .map_err(|e| CommandError::Invalid(format!("cannot find a free port: {e}")))?;
                if !used.contains(&p) {
                    break p;
                }
            },
        };
        let workspace = self
            .project
            .state_dir
            .join("instances")
            .join(&name)
            .join("workspace");
        let source = match (&git, upload) {
            (Some(url), _) => format!("git {url}"),
            (None, true) => "upload".to_string(),
            (None, false) => "empty".to_string(),
        };
        let mut inst = Instance {
            name: name.clone(),
            template: template.clone(),
            id,
            port,
            params: merged,
            workspace,
            source: source.clone(),
            state: if upload {
                "awaiting_upload"
            } else {
                "preparing"
            }
            .into(),
            error: None,
            steps: Vec::new(),
            created_ms: SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        let vars = inst.vars();
        let step = |name: String| Step {
            name,
            state: "pending".into(),
            detail: String::new(),
        };
        inst.steps.push(step(format!("workspace ({source})")));
        if !tpl.files.is_empty() {
            inst.steps.push(step("files".into()));
        }
        for c in &tpl.setup {
            let argv: Vec<String> = c
                .to_argv(Some(port))
                .iter()
                .map(|a| corral_config::fill(a, &vars))
                .collect();
            inst.steps.push(step(argv.join(" ")));
        }
        self.save_instance(inst.clone());
        if !upload {
            let source = match git {
                Some(url) => Source::Git(url),
                None => Source::Empty,
            };
            self.prepare_instance(inst.clone(), source);
        }
        Ok(Reply::Instance(Box::new(inst)))
    }

    /// Prepare the workspace on a task of its own; progress and the end come back as messages.
    fn prepare_instance(
        &self,
        mut inst: crate::instances::Instance,
        source: crate::instances::Source,
    ) {
        use crate::instances::{Source, extract_zip, run_step};
        let Some(tpl) = self
            .project
            .templates
            .iter()
            .find(|t| t.name == inst.template)
            .cloned()
        else {
            return;
        };
        let (tx, reaper) = (self.tx.clone(), self.reaper.clone());
        tokio::spawn(async move {
            let vars = inst.vars();
            let dir = inst.workspace.clone();
            let home = dir
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| dir.clone());
            let log = home.join("setup.log");
            let mut env: Vec<(String, String)> = std::env::vars()
                .filter(|(k, _)| k != procs::MARKER_VAR)
                .collect();
            env.push(("PORT".into(), inst.port.to_string()));
            let report = |inst: &crate::instances::Instance| {
                let _ = tx.send(Msg::InstanceProgress(Box::new(inst.clone())));
            };
            let fail = |mut inst: crate::instances::Instance, i: usize, why: String| {
                inst.set_step(i, "failed", why.clone());
                inst.state = "failed".into();
                inst.error = Some(why);
                // No half-made workspace is left behind.
                let _ = std::fs::remove_dir_all(&inst.workspace);
                let _ = tx.send(Msg::InstanceProgress(Box::new(inst)));
            };
            inst.set_step(0, "running", "");
            report(&inst);
            if let Err(e) = std::fs::create_dir_all(&dir) {
                return fail(inst, 0, format!("cannot create `{}`: {e}", dir.display()));
            }
            let made = match source {
                Source::Empty => Ok(()),
                Source::Zip(bytes) => {
                    let d = dir.clone();
                    match tokio::task::spawn_blocking(move || extract_zip(&bytes, &d)).await {
                        Ok(r) => r.map(drop),
                        Err(e) => Err(e.to_string()),
                    }
                }
                Source::Git(url) => {
                    let argv = vec![
                        "git".to_string(),
                        "clone".into(),
                        "--quiet".into(),
                        "--".into(),
                        url,
                        dir.display().to_string(),
                    ];
                    run_step(&reaper, &argv, &home, &env, &log).await
                }
            };
            if let Err(e) = made {
                return fail(inst, 0, e);
            }
            inst.set_step(0, "done", "");
            let mut i = 1;
            if !tpl.files.is_empty() {
                for (rel, content) in &tpl.files {
                    let path = dir.join(rel);
                    let written = path
                        .parent()
                        .map_or(Ok(()), std::fs::create_dir_all)
                        .and_then(|_| std::fs::write(&path, corral_config::fill(content, &vars)));
                    if let Err(e) = written {
                        return fail(inst, i, format!("cannot write `{rel}`: {e}"));
                    }
                }
                inst.set_step(i, "done", format!("{} written", tpl.files.len()));
                i += 1;
            }
            for c in &tpl.setup {
                inst.set_step(i, "running", "");
                report(&inst);
                let argv: Vec<String> = c
                    .to_argv(Some(inst.port))
                    .iter()
                    .map(|a| corral_config::fill(a, &vars))
                    .collect();
                if let Err(e) = run_step(&reaper, &argv, &dir, &env, &log).await {
                    return fail(inst, i, e);
                }
                inst.set_step(i, "done", "");
                i += 1;
            }
            let _ = tx.send(Msg::InstanceReady(Box::new(inst)));
        });
    }

    /// The workspace is ready: add the instance's service (which starts it).
    async fn instance_ready(&mut self, mut inst: crate::instances::Instance) {
        let Some(tpl) = self
            .project
            .templates
            .iter()
            .find(|t| t.name == inst.template)
            .cloned()
        else {
            inst.state = "failed".into();
            inst.error = Some(format!(
                "template `{}` is gone from the config",
                inst.template
            ));
            return self.save_instance(inst);
        };
        let body = tpl.render(&inst.vars(), inst.port);
        let mut added = self.store.definitions().unwrap_or_default();
        added.retain(|(n, _)| *n != inst.name);
        added.push((inst.name.clone(), body.clone()));
        match self
            .reload_with(added, Some((inst.name.clone(), Some(body))))
            .await
        {
            Ok(_) => inst.state = "ready".into(),
            Err(e) => {
                inst.state = "failed".into();
                inst.error = Some(format!("its service is not valid: {e}"));
                let _ = std::fs::remove_dir_all(&inst.workspace);
            }
        }
        self.save_instance(inst);
    }

    /// Delete what the instances the last reload removed left on disk: workspace, logs, record.
    fn run_cleanups(&mut self) {
        if self.reload.is_some() {
            return;
        }
        for name in std::mem::take(&mut self.cleanup_after_reload) {
            self.delete_instance_files(&name);
        }
    }

    fn delete_instance_files(&mut self, name: &str) {
        let _ = std::fs::remove_dir_all(self.project.state_dir.join("instances").join(name));
        let logs = self.project.state_dir.join("logs");
        if let Ok(dir) = std::fs::read_dir(&logs) {
            let prefix = format!("{name}.log");
            for e in dir.flatten() {
                let f = e.file_name();
                let f = f.to_string_lossy();
                if f == prefix
                    || f.strip_prefix(&prefix)
                        .is_some_and(|rest| rest.starts_with('.'))
                {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        if let Err(e) = self.store.remove_template_instance(name) {
            eprintln!("corral: {e}");
        }
        self.instances.remove(name);
        let _ = self.notices.send(Arc::new(Notice {
            time: SystemTime::now(),
            unit: name.to_string(),
            kind: "instance",
            state: "deleted".into(),
            message: format!("instance {name}: deleted"),
        }));
    }

    /// The view of run `run` as it stands.
    fn run_view(&self, run: &Run) -> RunView {
        if let Some(done) = &run.result {
            return done.clone();
        }
        let tasks = run
            .tasks
            .iter()
            .map(|id| {
                let u = self.engine.unit(*id);
                let spec = self.project.plan.get(*id);
                let (verdict, detail) = verdict(&u.state, spec.allow_failure);
                let duration = match (u.started_at, u.ended_at) {
                    (Some(s), Some(e)) if e >= s && u.state.is_terminal() => Some(e - s),
                    _ => None,
                };
                TaskResult {
                    name: spec.name.clone(),
                    verdict,
                    detail,
                    duration,
                }
            })
            .collect::<Vec<_>>();
        let finished = run
            .tasks
            .iter()
            .all(|id| self.engine.state(*id).is_terminal());
        let failed = tasks.iter().any(|t| matches!(t.verdict, "FAIL" | "SKIP"));
        RunView {
            id: run.id,
            state: match (finished, failed) {
                (false, _) => "running",
                (true, false) => "passed",
                (true, true) => "failed",
            },
            sequential: run.sequential,
            started: run.started,
            elapsed: run.began.elapsed(),
            tasks,
        }
    }

    /// Start a pipeline run: the tasks and the tasks they depend on, all run again.
    async fn start_run(
        &mut self,
        names: Vec<String>,
        sequential: bool,
    ) -> Result<Reply, CommandError> {
        if self.runs.last().is_some_and(|r| r.result.is_none()) {
            return Err(CommandError::Conflict(
                "a pipeline is running; wait for it (GET /v1/runs/ID?wait=true)".into(),
            ));
        }
        let mut roots = Vec::new();
        for name in &names {
            let id = self.find_unit(name)?;
            if self.project.plan.get(id).kind != Kind::Task {
                return Err(CommandError::Invalid(format!("`{name}` is not a task")));
            }
            roots.push(id);
        }
        if names.is_empty() {
            roots = self
                .project
                .plan
                .ids()
                .filter(|id| self.project.plan.get(*id).kind == Kind::Task)
                .collect();
        }
        if roots.is_empty() {
            return Err(CommandError::Invalid("the project defines no tasks".into()));
        }
        // The tasks they depend on, transitively, run again too.
        let mut tasks: Vec<UnitId> = Vec::new();
        let mut stack = roots;
        while let Some(id) = stack.pop() {
            if self.project.plan.get(id).kind != Kind::Task || tasks.contains(&id) {
                continue;
            }
            tasks.push(id);
            stack.extend(self.project.plan.get(id).deps.iter().map(|d| d.unit));
        }
        if let Some(live) = tasks.iter().find(|id| self.engine.state(**id).is_live()) {
            return Err(CommandError::Conflict(format!(
                "task `{}` is still running",
                self.project.plan.get(*live).name
            )));
        }
        tasks.sort();
        self.engine.set_task_mode(sequential);
        let id = self.runs.last().map_or(1, |r| r.id + 1);
        self.runs.push(Run {
            id,
            tasks: tasks.clone(),
            sequential,
            started: SystemTime::now(),
            began: Instant::now(),
            result: None,
        });
        if self.runs.len() > 20 {
            self.runs.remove(0);
        }
        for unit in tasks {
            self.handle(Event::Start {
                unit,
                dependents: false,
            })
            .await;
        }
        let run = self.runs.last().expect("just pushed");
        Ok(Reply::Run(self.run_view(run)))
    }

    /// Finish the running pipeline once all its tasks have ended, and answer who waits.
    fn check_run(&mut self) {
        let Some(run) = self.runs.last() else { return };
        if run.result.is_some()
            || !run
                .tasks
                .iter()
                .all(|id| self.engine.state(*id).is_terminal())
        {
            return;
        }
        let view = self.run_view(run);
        if let Some(run) = self.runs.last_mut() {
            run.result = Some(view.clone());
        }
        self.engine.set_task_mode(self.options.sequential);
        for w in self.run_waiters.drain(..) {
            let _ = w.send(Ok(Reply::Run(view.clone())));
        }
    }

    /// Load the project again (with `added` as the services added at run time), and change to
    /// it: units whose definition changed, or that are gone, are stopped first (dependents
    /// keep running); once they are down the plan is swapped, the changed ones start again, and
    /// new ones start. Unchanged units keep their processes.
    async fn reload_with(
        &mut self,
        added: Vec<(String, String)>,
        define: Option<(String, Option<String>)>,
    ) -> Result<Reply, CommandError> {
        let new = corral_config::load_with(&self.project.file, &added)
            .map_err(|e| CommandError::Invalid(e.to_string()))?;
        // The definition is kept only once it is known to be valid.
        let stored = match &define {
            Some((name, Some(body))) => self.store.put_definition(name, body),
            Some((name, None)) => self.store.forget(name),
            None => Ok(()),
        };
        stored.map_err(|e| CommandError::Invalid(e.to_string()))?;
        let old = fingerprints(&self.project);
        let now = fingerprints(&new);
        let changed: Vec<String> = now
            .iter()
            .filter(|(n, f)| old.get(*n).is_some_and(|o| o != *f))
            .map(|(n, _)| n.clone())
            .collect();
        let removed: Vec<String> = old
            .keys()
            .filter(|n| !now.contains_key(*n))
            .cloned()
            .collect();
        let added_units: Vec<String> = new
            .units
            .iter()
            .filter(|u| !old.contains_key(&u.name))
            .map(|u| u.name.clone())
            .collect();
        if changed.is_empty() && removed.is_empty() && added_units.is_empty() {
            return Ok(Reply::Done("nothing changed".into()));
        }
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        let summary = format!(
            "reloaded: changed {}; added {}; removed {}",
            list(&changed),
            list(&added_units),
            list(&removed)
        );
        let mut restart = Vec::new();
        let mut hold = Vec::new();
        for name in changed.iter().chain(&removed) {
            let Some(id) = self.project.plan.find(name) else {
                continue;
            };
            let u = self.engine.unit(id);
            if changed.contains(name) {
                if u.held {
                    hold.push(name.clone());
                } else if u.wanted || u.state.is_live() {
                    restart.push(name.clone());
                }
            }
            self.handle(Event::Stop {
                unit: id,
                dependents: false,
            })
            .await;
        }
        self.reload = Some(PendingReload {
            project: new,
            replaced: changed.iter().chain(&removed).cloned().collect(),
            restart,
            hold,
            added: added_units,
            summary,
        });
        match self.finish_reload().await {
            Some(summary) => Ok(Reply::Done(summary)),
            None => Ok(Reply::Pending),
        }
    }

    /// Finish the pending reload if every unit it replaces is down. Returns its summary then.
    async fn finish_reload(&mut self) -> Option<String> {
        let pending = self.reload.as_ref()?;
        let down = pending.replaced.iter().all(|name| {
            self.project
                .plan
                .find(name)
                .is_none_or(|id| !self.engine.state(id).is_live())
        });
        if !down {
            return None;
        }
        let p = self.reload.take()?;
        let carry: Vec<Option<UnitId>> = p
            .project
            .units
            .iter()
            .map(|u| {
                (!p.replaced.contains(&u.name))
                    .then(|| self.project.plan.find(&u.name))
                    .flatten()
            })
            .collect();
        // Everything indexed by unit moves with its unit.
        let mut live = Vec::new();
        let mut ports = Vec::new();
        let mut held = Vec::new();
        let mut restarts = Vec::new();
        let mut old_to_new = std::collections::HashMap::new();
        for (i, c) in carry.iter().enumerate() {
            let def = &p.project.units[i];
            match c {
                Some(old) => {
                    old_to_new.insert(*old, UnitId(i));
                    live.push(self.live[old.0].take());
                    ports.push(self.ports[old.0]);
                    held.push(self.held[old.0]);
                    restarts.push(self.restarts[old.0]);
                }
                None => {
                    // Stopping it for the reload marked it held in the store; it starts from a
                    // clean slate (held again below if the user had stopped it).
                    if let Err(e) = self.store.set_held(&def.name, false) {
                        eprintln!("corral: {e}");
                    }
                    live.push(None);
                    let port = if def.ports.contains(&PortDecl::Auto) {
                        self.store.port(&def.name).ok().flatten()
                    } else {
                        None
                    };
                    ports.push(port);
                    held.push(false);
                    restarts.push(0);
                }
            }
        }
        self.moved.retain(|_, id| match old_to_new.get(id) {
            Some(new) => {
                *id = *new;
                true
            }
            None => false,
        });
        for (old, new) in &old_to_new {
            let instance = self.engine.unit(*old).instance;
            if old != new && instance != 0 {
                self.moved.insert(instance, *new);
            }
        }
        for name in &p.replaced {
            if p.project.plan.find(name).is_none()
                && let Err(e) = self.store.forget(name)
            {
                eprintln!("corral: {e}");
            }
        }
        self.engine.replace_plan(p.project.plan.clone(), &carry);
        self.project = p.project;
        self.live = live;
        self.ports = ports;
        self.held = held;
        self.restarts = restarts;
        self.printer
            .rename(self.project.units.iter().map(|u| u.name.clone()).collect())
            .await;
        self.printer.system(p.summary.clone()).await;
        let ids = |names: &[String]| -> Vec<UnitId> {
            names
                .iter()
                .filter_map(|n| self.project.plan.find(n))
                .collect()
        };
        let (added, restart, hold) = (ids(&p.added), ids(&p.restart), ids(&p.hold));
        self.handle(Event::Up(added)).await;
        for unit in restart {
            self.handle(Event::Start {
                unit,
                dependents: false,
            })
            .await;
        }
        for unit in hold {
            self.handle(Event::Stop {
                unit,
                dependents: false,
            })
            .await;
        }
        self.run_cleanups();
        Some(p.summary)
    }

    /// Take over a process an earlier daemon started.
    async fn adopt(&mut self, unit: UnitId, rec: InstanceRecord) {
        let (Ok(watch_fd), Ok(check_fd)) =
            (procs::PidFd::open(rec.pid), procs::PidFd::open(rec.pid))
        else {
            end_marked(&rec.marker);
            let _ = self.store.remove_instance(&rec.unit, rec.instance);
            return;
        };
        let running_for = procs::age(rec.start_time).unwrap_or_default();
        self.live[unit.0] = Some(Live {
            instance: rec.instance,
            pid: rec.pid,
            marker: rec.marker.clone(),
            adopted: Some(check_fd),
            watch: self.watch_for(unit),
        });
        self.draining.insert((rec.unit.clone(), rec.instance));
        let tx = self.tx.clone();
        let instance = rec.instance;
        tokio::spawn(async move {
            watch_fd.wait().await;
            let _ = tx.send(Msg::Event(Event::Exited {
                unit,
                instance,
                status: ExitStatus::Unknown,
            }));
        });
        self.handle(Event::Adopt {
            unit,
            instance: rec.instance,
            pid: rec.pid,
            running_for,
        })
        .await;
    }

    /// Output from the keeper: to the terminal, to `logs -f` clients, and past the patterns.
    fn tap(&mut self, msg: TapMsg) {
        match msg {
            TapMsg::Lines {
                unit,
                instance,
                stream,
                time,
                lines,
            } => {
                let Some(id) = self.project.plan.find(&unit) else {
                    return;
                };
                for line in &lines {
                    self.printer.line(id, stream, line);
                }
                if self.lines.receiver_count() > 0 {
                    for line in &lines {
                        let _ = self.lines.send(Arc::new(LineNotice {
                            unit: unit.clone(),
                            time,
                            stream,
                            text: String::from_utf8_lossy(line).into_owned(),
                        }));
                    }
                }
                self.check_patterns(id, instance, &lines);
            }
            TapMsg::Eof { unit, instance } => {
                self.draining.remove(&(unit, instance));
            }
            TapMsg::Lost => {
                self.draining.clear();
                if self.engine.is_shutting_down() {
                    return;
                }
                // Output of the processes it held is gone with it; new ones get a new keeper.
                match connect_keeper(
                    &self.project.state_dir,
                    &self.options.exe,
                    &self.reaper,
                    &self.tx,
                    false,
                ) {
                    Ok(k) => {
                        eprintln!(
                            "corral: the log keeper died; started a new one for new processes"
                        );
                        self.keeper = Some(k);
                    }
                    Err(e) => eprintln!("corral: the log keeper died and cannot be restarted: {e}"),
                }
            }
        }
    }

    fn check_patterns(&mut self, id: UnitId, instance: u64, lines: &[Vec<u8>]) {
        let Some(live) = self.live[id.0].as_mut().filter(|l| l.instance == instance) else {
            return;
        };
        let watch = &mut live.watch;
        if watch.log_ready.is_none() && watch.readiness.is_none() {
            return;
        }
        for line in lines {
            let text = String::from_utf8_lossy(line);
            if watch.log_ready.as_ref().is_some_and(|r| r.is_match(&text)) {
                watch.log_ready = None;
                let _ = self
                    .tx
                    .send(Msg::Event(Event::LogReady { unit: id, instance }));
            }
            if watch.readiness.as_ref().is_some_and(|r| r.is_match(&text)) {
                watch.readiness = None;
                let _ = self.tx.send(Msg::Event(Event::ProbeResult {
                    unit: id,
                    instance,
                    probe: corral_engine::ProbeKind::Readiness,
                    ok: true,
                    detail: format!("line matched: {text}"),
                }));
            }
        }
    }

    fn watch_for(&self, unit: UnitId) -> Watch {
        let def = &self.project.units[unit.0];
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
}

fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

impl Supervisor {
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
            if let Event::Exited { unit, instance, .. } = &event
                && self.live[unit.0]
                    .as_ref()
                    .is_some_and(|l| l.instance == *instance)
                && let Some(live) = self.live[unit.0].take()
            {
                let name = &self.project.units[unit.0].name;
                if let Err(e) = self.store.remove_instance(name, live.instance) {
                    eprintln!("corral: {e}");
                }
                if live.adopted.is_some() {
                    // Its orphans went to init, not to us: find them by marker.
                    procs::signal_all(&procs::with_marker(&live.marker), Signal::SIGKILL);
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
                    kind: "probe",
                    state: self.engine.state(*unit).name().to_string(),
                    message: format!("{}: {detail}", if *ok { "ok" } else { "failed" }),
                }));
            }
            for effect in self.engine.handle(event, Instant::now()) {
                match effect {
                    Effect::Spawn { unit, instance } => queue.push_back(self.spawn(unit, instance)),
                    Effect::Signal { unit, signal, .. } => {
                        let sig = Signal::try_from(signal).unwrap_or(Signal::SIGTERM);
                        signals.push((unit, sig));
                    }
                    Effect::Kill { unit, .. } => signals.push((unit, Signal::SIGKILL)),
                    Effect::RunProbe {
                        unit,
                        instance,
                        probe,
                    } => self.run_probe(unit, instance, probe),
                    Effect::SetTimer {
                        unit,
                        instance,
                        timer,
                        after,
                    } => {
                        let tx = self.tx.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(after).await;
                            let _ = tx.send(Msg::Event(Event::Timer {
                                unit,
                                instance,
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
            kind: "state",
            state: state.name().to_string(),
            message: text.clone(),
        });
        let _ = self.notices.send(notice.clone());
        self.pending_notices.push(notice);
        if !routine {
            self.printer.system(text).await;
        }
    }

    /// Start a unit's process. Returns `Spawned` or `SpawnFailed` for the engine.
    fn spawn(&mut self, unit: UnitId, instance: u64) -> Event {
        match self.try_spawn(unit, instance) {
            Ok(pid) => Event::Spawned {
                unit,
                instance,
                pid,
            },
            Err(error) => Event::SpawnFailed {
                unit,
                instance,
                error,
            },
        }
    }

    fn try_spawn(&mut self, unit: UnitId, instance: u64) -> Result<u32, String> {
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
        let marker = procs::marker(&def.name, instance);
        let program = procs::resolve_program(&argv[0], &def.env, &def.workdir)
            .ok_or_else(|| not_found(&argv[0]))?;
        let mut cmd = std::process::Command::new(program);
        cmd.arg0(&argv[0])
            .args(&argv[1..])
            .current_dir(&def.workdir)
            .env_clear()
            .envs(def.env.iter().map(|(k, v)| (k, v)))
            .env(procs::MARKER_VAR, &marker)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(p) = port {
            cmd.env("PORT", p.to_string());
        }
        let (mut child, exit) = self
            .reaper
            .spawn(&mut cmd)
            .map_err(|e| spawn_error(&argv[0], &def.workdir, e))?;
        let pid = child.id();
        // The output pipes go to the keeper, which outlives us; we keep no copy.
        let out: Option<std::os::fd::OwnedFd> = child.stdout.take().map(Into::into);
        let err: Option<std::os::fd::OwnedFd> = child.stderr.take().map(Into::into);
        if let (Some(out), Some(err)) = (&out, &err) {
            let attach = Attach {
                unit: def.name.clone(),
                instance,
                settings: def.log,
            };
            let attached = match &self.keeper {
                Some(k) => k.attach(&attach, out, err),
                None => Err(std::io::Error::other("corral is ending")),
            };
            match attached {
                Ok(()) => {
                    self.draining.insert((def.name.clone(), instance));
                }
                Err(e) => eprintln!(
                    "corral: cannot hand the output of `{}` to the log keeper: {e}",
                    def.name
                ),
            }
        }
        drop((out, err));
        if let Some(start_time) = procs::start_time(pid as i32) {
            let rec = InstanceRecord {
                unit: def.name.clone(),
                instance,
                pid,
                start_time,
                marker: marker.clone(),
            };
            if let Err(e) = self.store.put_instance(&rec) {
                eprintln!("corral: {e}");
            }
        }
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let status = exit.await.unwrap_or(ExitStatus::Signal(9));
            let _ = tx.send(Msg::Event(Event::Exited {
                unit,
                instance,
                status,
            }));
        });
        let watch = self.watch_for(unit);
        self.live[unit.0] = Some(Live {
            instance,
            pid,
            marker,
            adopted: None,
            watch,
        });
        Ok(pid)
    }

    fn printer_note(&self, text: String) {
        let printer = self.printer.clone();
        tokio::spawn(async move { printer.system(text).await });
    }

    fn run_probe(&self, unit: UnitId, instance: u64, kind: corral_engine::ProbeKind) {
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
                instance,
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
        let table = procs::Table::read(&self.reaper.registered());
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
                procs::signal_all(&procs::with_marker(&live.marker), *sig);
                continue;
            }
            let leader_alive = self.reaper.signal_group(live.pid, *sig);
            let leader = leader_alive.then_some(live.pid as i32);
            procs::signal_all(&table.strays(leader, &live.marker), *sig);
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

    /// Kill orphans whose instance has exited. Orphans of a running instance are left alone:
    /// they are part of it (a daemonizing service) and go when it stops.
    fn sweep(&mut self) {
        self.sweep_pending = false;
        let table = procs::Table::read(&self.reaper.registered());
        let mut live: HashSet<String> = self
            .live
            .iter()
            .flatten()
            .map(|l| l.marker.clone())
            .collect();
        // Orphans of running ad-hoc processes belong to them.
        live.extend(
            self.adhoc
                .markers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned(),
        );
        let orphans = table.abandoned(&live);
        if !orphans.is_empty() {
            procs::signal_all(&orphans, Signal::SIGKILL);
            self.schedule_sweep();
        }
    }

    /// Before corral exits: nothing it started may outlive it. Kill every remaining descendant,
    /// reap them all, and wait (bounded) until none is left.
    async fn final_sweep(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = procs::Table::read(&self.reaper.registered()).descendants();
            if left.is_empty() || Instant::now() > deadline {
                if !left.is_empty() {
                    eprintln!("corral: could not end processes {left:?}");
                }
                break;
            }
            procs::signal_all(&left, Signal::SIGKILL);
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

fn not_found(program: &str) -> String {
    format!("command `{program}` not found (is it installed and on PATH?)")
}

/// A spawn failure a person can act on.
fn spawn_error(program: &str, workdir: &std::path::Path, e: std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound if !workdir.is_dir() => {
            format!("working directory `{}` does not exist", workdir.display())
        }
        std::io::ErrorKind::NotFound => not_found(program),
        std::io::ErrorKind::PermissionDenied => {
            format!("`{program}` is not executable (permission denied)")
        }
        _ => format!("cannot start `{program}`: {e}"),
    }
}
