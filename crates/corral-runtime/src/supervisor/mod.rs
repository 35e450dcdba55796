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
//! This file is the dispatcher: it owns the engine and decides. `processes.rs` is the executor,
//! the only part that touches processes: `spawn`, `signal_batch` (stop signals and SIGKILL to a
//! group and its strays), `sweep` (orphans left by exited generations), `final_sweep` (nothing
//! outlives corral). The rest by subject: `effects` (the engine's answers carried out, and
//! worded), `control` (what clients ask), `reload` (plan changes), `runs` (pipelines),
//! `tickets` (waiting for outcomes), `output` (the keeper link), `triggers` (schedules, the
//! file watcher, memory samples, sd_notify messages), `definition` (a unit's settings for people).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
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
mod definition;
mod effects;
mod output;
mod processes;
mod reload;
mod runs;
mod tickets;
mod triggers;

pub use control::{
    Asker, Command, CommandError, Control, LineNotice, Notice, NoticeKind, Reply, Request,
    Snapshot, UnitView,
};
use output::{KeeperExit, KeeperGuard, connect_keeper, spawn_keeper};
use processes::{Processes, end_marked, watch_for};
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
    /// Ad-hoc processes may run in any directory (default: inside the project).
    pub procs_anywhere: bool,
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
        "another corral ({}) is already running this project\n  help: talk to it (`corral ps`), or stop it first (`corral down`, or Ctrl-C in its terminal)",
        if pid.is_empty() { "just starting".to_string() } else { format!("pid {pid}") }
    )]
    Busy { pid: String },
    #[error(
        "another corral (pid {pid}) runs this project, but its `.corral/` was removed while it ran (by `git clean -x`?), so it cannot be reached; its services run on\n  help: `corral down` stops it and them; then `corral up` starts afresh"
    )]
    Unreachable { pid: u32 },
    #[error("{0}")]
    Store(#[from] corral_store::StoreError),
    #[error("cannot start the log keeper: {0}")]
    Keeper(std::io::Error),
    #[error("{0}")]
    Config(String),
}

/// The project, held: the lock file (`.corral/corral.lock`, with our PID), and the project's
/// name that no removal of `.corral/` can take ([`crate::holder`]).
pub struct ProjectLock {
    _file: nix::fcntl::Flock<std::fs::File>,
    _name: Option<std::os::unix::net::UnixDatagram>,
}

/// Hold the project while corral runs it, so that two corrals never supervise (and write the
/// logs of) the same project at once — also when the first one's `.corral/` was removed.
pub fn lock_project(state_dir: &std::path::Path) -> Result<ProjectLock, StartError> {
    let file = lock_file(state_dir)?;
    // A daemon that let go of the lock file is ending, or lost the file: one that is ending
    // closes the name a moment later (its descriptors close one by one).
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match crate::holder::hold(state_dir) {
            Ok(name) => {
                return Ok(ProjectLock {
                    _file: file,
                    _name: name,
                });
            }
            Err(pid) if Instant::now() > deadline => return Err(StartError::Unreachable { pid }),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// `.corral/corral.lock`: an `flock`, so it goes away with the process however it dies; the
/// file keeps the holder's PID for the message.
fn lock_file(state_dir: &std::path::Path) -> Result<nix::fcntl::Flock<std::fs::File>, StartError> {
    use std::io::{Read, Seek};
    let path = state_dir.join("corral.lock");
    let file = crate::statedir::open_rw(&path).map_err(|source| StartError::StateDir {
        path: path.display().to_string(),
        source,
    })?;
    // A holder that was just killed keeps the lock until its last thread has finished exiting
    // (one may be in a slow system call), a moment after it shows as a zombie: wait for that.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut file = file;
    loop {
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                let _ = crate::statedir::write_pid(&mut lock);
                return Ok(lock);
            }
            Err((mut held, _)) => {
                let mut pid = String::new();
                let _ = held.rewind();
                let _ = held.read_to_string(&mut pid);
                let pid = pid.trim().to_string();
                let dying = pid
                    .parse::<i32>()
                    .is_ok_and(|p| proctable::start_time(p).is_none());
                if !dying || Instant::now() > deadline {
                    return Err(StartError::Busy { pid });
                }
                std::thread::sleep(Duration::from_millis(10));
                file = held;
            }
        }
    }
}

enum Msg {
    Event(Event),
    /// Look for processes left behind by instances that have exited.
    Sweep,
    /// Record what the live processes have started, from this scan of the process table.
    Census(proctable::Table),
    /// Time to sample the memory of units with `max_memory`.
    MemoryTick,
    /// A unit said something on its NOTIFY_SOCKET.
    Notify {
        unit: UnitId,
        generation: u64,
        pairs: Vec<(String, String)>,
    },
    /// A daemon's launcher exited 0 and left this process running: the unit's process now.
    Daemonized {
        unit: UnitId,
        generation: u64,
        pid: u32,
    },
    /// The output router found what the engine waits for (or lost the keeper).
    Found(Found),
    Request(Request),
}

/// At most this many waiting messages are handled in one step (one store transaction).
const BATCH: usize = 256;

pub struct Supervisor {
    project: Project,
    options: Options,
    engine: Engine,
    /// The executor: live processes, their ports, the keeper link, the output router.
    processes: Processes,
    printer: Printer,
    printer_thread: Option<crate::printer::PrinterThread>,
    tx: UnboundedSender<Msg>,
    rx: UnboundedReceiver<Msg>,
    /// Messages taken off `rx` in the middle of a long step (see [`Supervisor::answer_queries`])
    /// that were not queries: handled, in order, before anything newer.
    deferred: VecDeque<Msg>,
    /// When the store's log was last looked at ([`Supervisor::quiet_moment`]).
    log_checked: Option<Instant>,
    /// The services defined at run time as last read from the store (which owns them): read
    /// again only after a change, not for every instance created or definition shown.
    added_cache: std::sync::Mutex<Option<Vec<corral_config::Definition>>>,
    store: Store,
    notices: broadcast::Sender<Arc<Notice>>,
    /// Stored held flags and restart counts, to write only what changed.
    held: Vec<bool>,
    restarts: Vec<u32>,
    adopt: Vec<(UnitId, ProcessRecord)>,
    wanted: Vec<UnitId>,
    pending_notices: Vec<Arc<Notice>>,
    /// A reload waiting for its changed units to stop.
    reload: Option<PendingReload>,
    /// The project's file watcher (`watch`), while a unit watches something.
    watcher: Option<crate::watch::Watcher>,
    /// Units that have run since this daemon started (a later spawn is a restart: `on_restart`).
    ran: std::collections::HashSet<String>,
    /// The timers of scheduled tasks (`schedule`), one per task, remade with the plan.
    schedules: Vec<tokio::task::AbortHandle>,
    /// `max_memory`: a sample is due (one pending at a time), and the meter that takes it.
    memory_due: bool,
    meter: crate::metrics::Meter,
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
    started: SystemTime,
    _lock: ProjectLock,
    /// Units whose log file cannot be written now (a full disk), and why.
    log_trouble: HashMap<String, String>,
}

/// Set up everything the supervisor needs (state dir, lock, store, keeper, reaper) and decide
/// what to adopt. Call inside the tokio runtime; then serve `Control` and `run` the supervisor.
pub fn prepare(project: Project, options: Options) -> Result<(Supervisor, Control), StartError> {
    let log_dir = project.state_dir.join("logs");
    for dir in [&project.state_dir, &log_dir] {
        crate::statedir::ensure_dir(dir).map_err(|source| StartError::StateDir {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let lock = lock_project(&project.state_dir)?;
    crate::vfork::reserve_low_slots();
    warn_if_too_many_for_open_files(project.units.len());
    crate::spawn::size_pipes_for(project.units.len());
    let reaper = Reaper::start(crate::cgroup::Cgroups::create()).map_err(StartError::Setup)?;
    // A keeper starting while the store opens: the two take a few milliseconds each.
    let mut early_keeper = KeeperGuard(None);
    let keeper_exit = KeeperExit::default();
    if !crate::keeper::running(&project.state_dir) {
        early_keeper.0 = spawn_keeper(
            &project.state_dir,
            &options.exe,
            &reaper,
            true,
            &keeper_exit,
        )
        .ok();
    }
    // Created 0600 by us, so SQLite's journal files (which copy its mode) are private too.
    let db = project.state_dir.join("state.db");
    crate::statedir::open_rw(&db).map_err(|source| StartError::StateDir {
        path: db.display().to_string(),
        source,
    })?;
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
        // A disabled unit starts only when named, or when a unit that is needs it; a scheduled
        // task runs on its schedule.
        wanted = project
            .plan
            .ids()
            .filter(|id| !project.units[id.0].disabled && project.units[id.0].schedule.is_none())
            .collect();
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
                processes::end_tree(&store.tree(&rec.unit, rec.generation)?);
                store.forget_tree(&rec.unit, rec.generation)?;
                store.remove_process(&rec.unit, rec.generation)?;
            }
        }
    }
    // A process an earlier corral started in the moment before it died, before its record was
    // written, is known only by its marker (`<that corral's pid>/…`): ended, or it would run
    // beside the one started now.
    // (That PID may have been reused by the corral of another project: only what works in this
    // project's directory is taken for ours.)
    // One scan for all of them (reading every process's environment is the dearest look at
    // `/proc`), and none after daemons that ended cleanly: they are no longer listed.
    let adopted: HashSet<&str> = adopt.iter().map(|(_, r)| r.marker.as_str()).collect();
    let root = std::fs::canonicalize(&project.root).unwrap_or_else(|_| project.root.clone());
    let prefixes: Vec<String> = store
        .previous_daemons(std::process::id())?
        .iter()
        .map(|prev| format!("{prev}/"))
        .collect();
    if !prefixes.is_empty() {
        let strays: Vec<i32> = proctable::with_marker_matching(|m| {
            prefixes.iter().any(|p| m.starts_with(p.as_str())) && !adopted.contains(m)
        })
        .into_iter()
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|c| c.starts_with(&root))
        })
        .collect();
        proctable::signal_all(&strays, Signal::SIGKILL);
    }
    // The same, exactly, where the earlier daemons had cgroups: all that is in them goes, but
    // the processes adopted now (and whatever they started).
    // Kept: the adopted processes' cgroups and every cgroup above them, looked up by path (a
    // search of every adopted cgroup for each old one was O(N²): a second of 5,000 adopted).
    let kept: std::collections::HashSet<PathBuf> = adopt
        .iter()
        .filter_map(|(_, r)| crate::cgroup::of_process(&r.pid.to_string()))
        .flat_map(|k| k.ancestors().map(Path::to_path_buf).collect::<Vec<_>>())
        .collect();
    let mut cgroups: Vec<String> = store
        .previous_cgroups()?
        .into_iter()
        .filter(|old| !crate::cgroup::end_daemon_cgroup(Path::new(old), |c| kept.contains(c)))
        .collect();
    if let Some(mine) = reaper.cgroups() {
        cgroups.push(mine.base().display().to_string());
    }
    store.set_cgroups(&cgroups)?;

    let (printer, printer_thread) = Printer::start(project.plan.clone(), options.quiet);
    let (lines, _) = broadcast::channel(4096);
    let router = {
        let tx = tx.clone();
        Router::start(
            printer.clone(),
            project.plan.clone(),
            lines.clone(),
            move |f| {
                let _ = tx.send(Msg::Found(f));
            },
        )
    };
    // The adopted processes' output flows as soon as the keeper is connected: their patterns
    // must be known first.
    let mut news_only = Vec::new();
    for (unit, rec) in &adopt {
        if !router.expect(&rec.unit, rec.generation, watch_for(&project, *unit)) {
            news_only.push((&rec.unit, rec.generation));
        }
    }
    let keeper = connect_keeper(
        &project.state_dir,
        &options.exe,
        &reaper,
        &router,
        early_keeper.0.is_some(),
        &keeper_exit,
    )?;
    early_keeper.0 = None;
    for (unit, generation) in news_only {
        if let Err(e) = keeper.want(unit, generation, false) {
            crate::say!("corral: cannot tell the log keeper what `{unit}` needs: {e}");
        }
    }
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
        options.procs_anywhere,
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
    };
    let processes = Processes::new(
        reaper,
        (keeper, keeper_exit),
        router,
        ports,
        tx.clone(),
        options.exe.clone(),
        project.state_dir.clone(),
    );
    let sup = Supervisor {
        project,
        options,
        engine,
        processes,
        printer,
        printer_thread,
        tx,
        rx,
        deferred: VecDeque::new(),
        log_checked: None,
        added_cache: std::sync::Mutex::new(None),
        store,
        notices,
        held: vec![false; n],
        restarts,
        adopt,
        wanted,
        pending_notices: Vec::new(),
        reload: None,
        watcher: None,
        memory_due: false,
        schedules: Vec::new(),
        ran: std::collections::HashSet::new(),
        meter: crate::metrics::Meter::default(),
        instances,
        runs: Vec::new(),
        run_waiters: Vec::new(),
        tickets: Vec::new(),
        reload_reply: None,
        moved: std::collections::HashMap::new(),
        started: SystemTime::now(),
        _lock: lock,
        log_trouble: HashMap::new(),
    };
    Ok((sup, control))
}

/// What the instances' owner needs of the project: its templates and unit names.
fn project_view(project: &Project) -> crate::instances::ProjectView {
    crate::instances::ProjectView {
        templates: project.templates.clone(),
        plan: project.plan.clone(),
    }
}

/// With more units than the open-file limit allows (the keeper holds three descriptors per
/// running unit: two pipes and a log file; the daemon two), that is said before anything starts.
fn warn_if_too_many_for_open_files(units: usize) {
    if let Some(warning) = too_many_for(units, crate::spawn::raise_open_files_limit()) {
        crate::say!("corral: {warning}");
    }
}

/// Descriptors the keeper needs besides its units' (sockets, its lock, the runtime).
const KEEPER_SPARE_FILES: u64 = 64;

/// A warning when `units` running at once need more open files than `limit`.
fn too_many_for(units: usize, limit: u64) -> Option<String> {
    let need = units as u64 * 3 + KEEPER_SPARE_FILES;
    (need > limit).then(|| {
        format!(
            "{units} units need about {need} open files (three per unit: two pipes and a log \
             file), over this user's limit of {limit}: past about {} running at once their \
             output cannot all be kept (and past about {} they fail to start); raise the hard \
             limit (`ulimit -Hn`, or LimitNOFILE= under systemd) to run them all",
            limit.saturating_sub(KEEPER_SPARE_FILES) / 3,
            limit.saturating_sub(KEEPER_SPARE_FILES) / 2
        )
    })
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
        // QUIT: kill the stack now (a terminal's Ctrl-\\). USR1/USR2 would end corral by
        // default, leaving the stack to the sweep: they are taken and ignored.
        let mut sigquit = signal(SignalKind::quit()).map_err(StartError::Setup)?;
        let mut sigusr1 = signal(SignalKind::user_defined1()).map_err(StartError::Setup)?;
        let mut sigusr2 = signal(SignalKind::user_defined2()).map_err(StartError::Setup)?;
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
        self.quiet_moment();
        self.watch().await;
        self.schedule_memory();
        self.schedule_tasks();
        loop {
            if self.engine.is_shutting_down() {
                if self.engine.all_down() {
                    break;
                }
            } else if !self.options.stay
                && self.schedules.is_empty()
                && ((self.options.exit_when_tasks_done && self.engine.tasks_settled())
                    || self.engine.settled())
            {
                self.handle(Event::Shutdown).await;
                continue;
            }
            if let Some(msg) = self.deferred.pop_front() {
                self.begin();
                self.dispatch(msg).await;
                self.commit();
                continue;
            }
            tokio::select! {
                Some(msg) = self.rx.recv() => {
                    self.begin();
                    self.dispatch(msg).await;
                    // What is already waiting joins this step's transaction: 2,000 exits at a
                    // stop are a few commits, not 2,000 (a commit writes the WAL).
                    for _ in 0..BATCH {
                        // Messages deferred by a long step come before anything newer.
                        let next = match self.deferred.pop_front() {
                            Some(msg) => msg,
                            None => match self.rx.try_recv() {
                                Ok(msg) => msg,
                                Err(_) => break,
                            },
                        };
                        self.dispatch(next).await;
                    }
                    self.commit();
                    if self.rx.is_empty() && self.deferred.is_empty() {
                        self.quiet_moment();
                    }
                },
                _ = sigint.recv() => { interrupted = true; self.interrupt().await; }
                _ = sigterm.recv() => { interrupted = true; self.interrupt_gently().await; }
                _ = sighup.recv() => { interrupted = true; self.interrupt_gently().await; }
                _ = sigquit.recv() => {
                    interrupted = true;
                    self.printer.system("quit: killing everything now".into()).await;
                    self.handle(Event::ForceKill).await;
                }
                _ = sigusr1.recv() => {}
                _ = sigusr2.recv() => {}
            }
        }
        self.commit();
        // Every line the keeper read must reach the terminal before we end; the deadline is for
        // a pipe held open by a process we could not see (another user's, say).
        for msg in std::mem::take(&mut self.deferred) {
            if let Msg::Request(r) = msg {
                let _ = r.reply.send(Err(CommandError::ShuttingDown));
            }
        }
        let router = self.processes.router().clone();
        let drained = router.drained(Duration::from_secs(3));
        tokio::pin!(drained);
        let drained = loop {
            tokio::select! {
                drained = &mut drained => break drained,
                Some(msg) = self.rx.recv() => {
                    if let Msg::Request(r) = msg {
                        let _ = r.reply.send(Err(CommandError::ShuttingDown));
                    }
                }
            }
        };
        self.processes.hooks_done().await;
        // Without a daemon connected and with no pipe left, the keeper ends by itself.
        self.processes.close_output().await;
        self.processes.end_escaped(&self.store);
        if drained {
            // No pipe is left open: the keeper we started is on its way out.
            self.processes.keeper_ended(Duration::from_secs(1)).await;
        }
        if self.processes.final_sweep().await {
            // Nothing carries this daemon's marker, or an earlier one's (their strays were
            // ended at the start, what was adopted is stopped): the next start need not look.
            if let Err(e) = self.store.forget_daemons() {
                crate::say!("corral: {e}");
            }
        }
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

    /// Nothing waits: what bursts left behind is put away — the heap's free pages, and the
    /// store's log if it grew long (checked at most every 10 s, and not while stopping: its
    /// syncs are for a moment nobody waits on).
    fn quiet_moment(&mut self) {
        crate::heap::settle();
        if !self.engine.is_shutting_down()
            && self
                .log_checked
                .is_none_or(|at| at.elapsed() >= Duration::from_secs(10))
        {
            self.log_checked = Some(Instant::now());
            if let Err(e) = self.store.shorten_log() {
                crate::say!("corral: {e}");
            }
        }
    }

    fn begin(&self) {
        if let Err(e) = self.store.begin() {
            crate::say!("corral: {e}");
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
            crate::say!("corral: {e}");
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
            Msg::Sweep => self.processes.sweep(),
            Msg::Census(table) => self.processes.census(&self.project, &self.store, table),
            Msg::Notify {
                unit,
                generation,
                pairs,
            } => self.notified(unit, generation, pairs).await,
            Msg::MemoryTick => self.sample_memory().await,
            Msg::Daemonized {
                unit,
                generation,
                pid,
            } => {
                let name = &self.project.units[unit.0].name;
                if self
                    .processes
                    .daemonized(&self.store, name, unit, generation, pid)
                {
                    self.printer
                        .system(format!("{name}: daemon running (pid {pid})"))
                        .await;
                }
            }
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
        // Its port: a fixed one as declared, an auto one as stored (loaded at start).
        let fixed = self.project.units[unit.0]
            .ports
            .first()
            .and_then(|p| match p {
                PortDecl::Fixed(p) => Some(*p),
                PortDecl::Auto => None,
            });
        let Some(running_for) = self.processes.adopt(
            &self.store,
            unit,
            &rec,
            fixed,
            self.project.units[unit.0]
                .notify
                .then(|| processes::other_user(&self.project.units[unit.0])),
        ) else {
            return;
        };
        self.handle(Event::Adopt {
            unit,
            generation: rec.generation,
            pid: rec.pid,
            running_for,
        })
        .await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_units_than_open_files_allow_is_said_with_the_numbers() {
        assert_eq!(too_many_for(5000, 20000), None);
        let said = too_many_for(7000, 20000).expect("over the limit");
        for part in [
            "7000 units",
            "21064 open files",
            "limit of 20000",
            "about 6645",
            "about 9968",
        ] {
            assert!(said.contains(part), "no `{part}` in: {said}");
        }
        assert!(said.contains("ulimit -Hn"), "{said}");
    }
}
