//! The supervisor loop: one task owns the engine. Everything else — process waiters, output
//! pumps, probe runs, timers, OS signals — sends it events over a channel; the loop feeds each
//! event to the engine and carries out the effects. No state is shared behind locks except the
//! reaper's table of un-reaped PIDs and each unit's log.
//!
//! Where the OS is touched: `spawn` (fork/exec), `signal_batch` (stop signals and SIGKILL to a
//! group and its strays), `sweep` (orphans left by exited instances), `final_sweep` (nothing
//! outlives corral).

use std::collections::{HashSet, VecDeque};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_config::{Check, PortDecl, Project};
use corral_engine::{Effect, Engine, Event, ExitStatus, Kind, State, UnitId};
use nix::sys::signal::Signal;
use tokio::net::unix::pipe;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;

use crate::logs::{Pump, UnitLog, Watch};
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
        "another corral (pid {pid}) is already running this project\n  help: stop it first (Ctrl-C in its terminal, or `kill {pid}`)"
    )]
    Busy { pid: String },
}

/// Holds `.corral/corral.lock` while corral runs a project, so that two corrals never
/// supervise (and write the logs of) the same project at once. The lock is an `flock`, so it
/// goes away with the process however it dies; the file keeps the holder's PID for the message.
fn lock_project(state_dir: &std::path::Path) -> Result<nix::fcntl::Flock<std::fs::File>, RunError> {
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
    /// Look for processes left behind by instances that have exited.
    Sweep,
}

/// A process we started for a unit and have not seen exit yet.
struct Live {
    instance: u64,
    pid: u32,
    marker: String,
}

struct Supervisor {
    project: Project,
    engine: Engine,
    reaper: Reaper,
    printer: Printer,
    tx: UnboundedSender<Msg>,
    logs: Vec<Arc<UnitLog>>,
    /// The first port of each unit, once known (auto ports are chosen once and kept).
    ports: Vec<Option<u16>>,
    live: Vec<Option<Live>>,
    pumps: Vec<JoinHandle<()>>,
    sweep_pending: bool,
}

/// Run the project in the foreground until it is done or interrupted.
pub async fn run(project: Project, options: Options) -> Result<Outcome, RunError> {
    let started = Instant::now();
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
    let log_dir = project.state_dir.join("logs");
    std::fs::create_dir_all(&log_dir).map_err(|source| RunError::StateDir {
        path: log_dir.display().to_string(),
        source,
    })?;
    let _lock = lock_project(&project.state_dir)?;
    let mut logs = Vec::new();
    for u in &project.units {
        let log = UnitLog::open(&log_dir, &u.name, u.log).map_err(|source| RunError::StateDir {
            path: log_dir.join(&u.name).display().to_string(),
            source,
        })?;
        logs.push(Arc::new(log));
    }

    let reaper = Reaper::start().map_err(RunError::Setup)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(RunError::Setup)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(RunError::Setup)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(RunError::Setup)?;

    let names: Vec<String> = project.units.iter().map(|u| u.name.clone()).collect();
    let (printer, printer_thread) = Printer::start(names, options.quiet);
    let seed = options.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let mut engine = Engine::new(project.plan.clone(), seed);
    if options.sequential {
        engine.set_sequential();
    }
    let (tx, mut rx): (UnboundedSender<Msg>, UnboundedReceiver<Msg>) = unbounded_channel();
    let n = project.units.len();
    let mut sup = Supervisor {
        project,
        engine,
        reaper,
        printer,
        tx,
        logs,
        ports: vec![None; n],
        live: (0..n).map(|_| None).collect(),
        pumps: Vec::new(),
        sweep_pending: false,
    };

    let mut interrupted = false;
    let rel_logs = log_dir
        .strip_prefix(&sup.project.root)
        .unwrap_or(&log_dir)
        .display()
        .to_string();
    let what = if options.names.is_empty() {
        plural(wanted.len(), "unit")
    } else {
        format!("`{}` (with what it depends on)", options.names.join("`, `"))
    };
    sup.printer
        .system(format!(
            "starting {what} from {}; logs in {rel_logs}/",
            sup.project.file.display()
        ))
        .await;
    sup.handle(Event::Up(wanted)).await;
    loop {
        if sup.engine.is_shutting_down() {
            if sup.engine.all_down() {
                break;
            }
        } else if (options.exit_when_tasks_done && sup.engine.tasks_settled())
            || sup.engine.settled()
        {
            sup.handle(Event::Shutdown).await;
            continue;
        }
        tokio::select! {
            Some(msg) = rx.recv() => match msg {
                Msg::Event(ev) => sup.handle(ev).await,
                Msg::Sweep => sup.sweep(),
            },
            _ = sigint.recv() => { interrupted = true; sup.interrupt().await; }
            _ = sigterm.recv() => { interrupted = true; sup.interrupt_gently().await; }
            _ = sighup.recv() => { interrupted = true; sup.interrupt_gently().await; }
        }
    }
    sup.final_sweep().await;
    let outcome = sup.outcome(interrupted, started.elapsed());
    let Supervisor { printer, pumps, .. } = sup;
    // Pumps end when the last holder of their pipes is gone, which the final sweep ensured;
    // the deadline is for a process we could not see (another user's, say) holding one open.
    let drain = futures_join(pumps);
    let _ = tokio::time::timeout(Duration::from_secs(3), drain).await;
    drop(printer);
    if let Some(t) = printer_thread {
        t.finish();
    }
    Ok(outcome)
}

fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

async fn futures_join(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
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
            {
                self.live[unit.0] = None;
                self.schedule_sweep();
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

    /// Print a state change.
    async fn report(&self, unit: UnitId, note: Option<String>) {
        let name = &self.project.units[unit.0].name;
        let state = self.engine.state(unit);
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
            (State::Starting, _) | (State::Inactive, None) => return,
            (s, None) => format!("{name}: {}", s.name()),
        };
        self.printer.system(text).await;
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
                PortDecl::Auto => match self.ports[unit.0] {
                    Some(p) => p,
                    None => {
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
        let to_pipe = |fd: Option<std::os::fd::OwnedFd>| {
            fd.and_then(|fd| pipe::Receiver::from_owned_fd(fd).ok())
        };
        let stdout = to_pipe(child.stdout.take().map(Into::into));
        let stderr = to_pipe(child.stderr.take().map(Into::into));
        let watch = Watch {
            log_ready: def.log_ready.clone(),
            readiness: match &def.readiness {
                Some(p) => match &p.check {
                    Check::Log { pattern } => Some(pattern.clone()),
                    _ => None,
                },
                None => None,
            },
        };
        let tx = self.tx.clone();
        let events = Box::new(move |ev| {
            let _ = tx.send(Msg::Event(ev));
        });
        let pump = Pump {
            unit,
            instance,
            log: self.logs[unit.0].clone(),
            printer: self.printer.clone(),
            watch,
            events,
        };
        self.pumps.retain(|h| !h.is_finished());
        self.pumps.push(tokio::spawn(pump.run(stdout, stderr)));
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let status = exit.await.unwrap_or(ExitStatus::Signal(9));
            let _ = tx.send(Msg::Event(Event::Exited {
                unit,
                instance,
                status,
            }));
        });
        self.live[unit.0] = Some(Live {
            instance,
            pid,
            marker,
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
        let live: HashSet<String> = self
            .live
            .iter()
            .flatten()
            .map(|l| l.marker.clone())
            .collect();
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
            let left = procs::Table::read(&HashSet::new()).descendants();
            if left.is_empty() || Instant::now() > deadline {
                if !left.is_empty() {
                    eprintln!("corral: could not end processes {left:?}");
                }
                break;
            }
            procs::signal_all(&left, Signal::SIGKILL);
            tokio::time::sleep(Duration::from_millis(10)).await;
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
