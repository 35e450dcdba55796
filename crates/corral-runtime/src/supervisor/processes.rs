//! The executor: the processes of the supervisor's units. Where a process is started, a stop
//! signal or SIGKILL is sent, a probe is run, an adopted process is watched, and orphans are
//! swept. The dispatcher (`mod.rs`) decides what happens — it owns the engine — and calls
//! these methods to carry it out; the state here (live processes, their ports, the keeper link)
//! is private to this file.

use std::os::fd::OwnedFd;

use super::*;

/// A process we started (or adopted) for a unit and have not seen exit yet.
struct Live {
    generation: u64,
    pid: u32,
    marker: String,
    /// Adopted from an earlier daemon: not our child, watched through a pidfd.
    adopted: Option<proctable::PidFd>,
    /// Our copy of its output pipes' read ends (the keeper holds the other): while either of
    /// us lives, a write never meets a closed pipe. Handed to a new keeper if this one dies.
    pipes: Option<(Arc<OwnedFd>, Arc<OwnedFd>)>,
    /// The keeper could not take the pipes: we read them ourselves ([`Processes::read_here`]).
    read_here: bool,
    /// Its descendants as last seen (pid, start time), also in the store: one that escapes —
    /// a new session, no marker, its parent gone — is still found by these.
    tree: Vec<(u32, u64)>,
    /// What few processes have, apart: a plain service's entry stays small (there may be
    /// thousands), and these three were half of it.
    rare: Option<Box<Rare>>,
}

#[derive(Default)]
struct Rare {
    /// An adopted process's cgroup (made by the earlier daemon), or a daemon's (outliving its
    /// launcher); the reaper keeps those of our own children.
    cgroup: Option<PathBuf>,
    /// Its `NOTIFY_SOCKET` (closed with it), and the last `STATUS=` it sent there.
    _notify: Option<crate::sdnotify::Listener>,
    status: Option<String>,
    /// Set as an adopted process is stopped: what it leaves in its cgroup as it exits
    /// finishes its own stop within the grace (as the reaper's lingering cgroups do for our
    /// own children) before its exit is reported.
    stopping: Arc<std::sync::atomic::AtomicBool>,
}

impl Rare {
    /// None when there is nothing to keep.
    fn of(cgroup: Option<PathBuf>, notify: Option<crate::sdnotify::Listener>) -> Option<Box<Rare>> {
        (cgroup.is_some() || notify.is_some()).then(|| {
            Box::new(Rare {
                cgroup,
                _notify: notify,
                status: None,
                stopping: Arc::default(),
            })
        })
    }
}

impl Live {
    fn cgroup(&self) -> Option<&std::path::Path> {
        self.rare.as_ref()?.cgroup.as_deref()
    }
}

/// A command run for a unit (`shutdown_command`, `on_ready` …).
pub(super) struct Hook<'a> {
    pub label: &'static str,
    pub command: &'a corral_config::Command,
    pub env: Vec<(String, String)>,
    pub limit: Duration,
}

/// The unit runs as a user other than corral's (who cannot reach into the 0700 state dir).
pub(super) fn other_user(def: &corral_config::UnitDef) -> bool {
    def.identity
        .as_ref()
        .is_some_and(|i| i.uid != nix::unistd::geteuid().as_raw())
}

/// A unit's `limits` as rlimits; one above this user's hard limit is refused here, in words,
/// rather than failing in the child (only root may raise a hard limit).
fn rlimits_of(
    def: &corral_config::UnitDef,
) -> Result<Vec<(nix::sys::resource::Resource, u64)>, crate::spawn::SpawnError> {
    use nix::sys::resource::{Resource, getrlimit};
    let root = nix::unistd::geteuid().is_root();
    def.limits
        .iter()
        .map(|(name, value)| {
            let resource = match name.as_str() {
                "nofile" => Resource::RLIMIT_NOFILE,
                "nproc" => Resource::RLIMIT_NPROC,
                "core" => Resource::RLIMIT_CORE,
                "memlock" => Resource::RLIMIT_MEMLOCK,
                "as" => Resource::RLIMIT_AS,
                "stack" => Resource::RLIMIT_STACK,
                "fsize" => Resource::RLIMIT_FSIZE,
                "cpu" => Resource::RLIMIT_CPU,
                _ => {
                    return Err(crate::spawn::SpawnError::permanent(format!(
                        "unknown limit `{name}`"
                    )));
                }
            };
            let hard = getrlimit(resource).map(|(_, h)| h).unwrap_or(u64::MAX);
            if *value > hard && !root {
                return Err(crate::spawn::SpawnError::permanent(format!(
                    "limits.{name} = {value} is above this user's hard limit ({hard})"
                )));
            }
            Ok((resource, *value))
        })
        .collect()
}

/// How often a daemon's processes are looked for. Only units with `daemon = true` are watched
/// this way (one cgroup file read, or one `/proc` scan without cgroups).
const DAEMON_WATCH: Duration = Duration::from_millis(500);

/// The processes of a daemon (what its launcher left, by cgroup or marker).
fn daemon_pids(marker: &str, cgroup: Option<&std::path::Path>) -> Vec<i32> {
    match cgroup {
        Some(dir) => crate::cgroup::pids(dir),
        None => proctable::with_marker(marker),
    }
}

/// After a daemon's launcher exited 0: say which process is the daemon, then return once none
/// of its processes is left.
async fn daemon_lives(
    tx: &tokio::sync::mpsc::UnboundedSender<Msg>,
    unit: UnitId,
    generation: u64,
    marker: &str,
    cgroup: Option<&std::path::Path>,
) {
    let first = daemon_pids(marker, cgroup);
    let Some(main) = first.iter().min().copied() else {
        return;
    };
    let _ = tx.send(Msg::Daemonized {
        unit,
        generation,
        pid: main as u32,
    });
    loop {
        tokio::time::sleep(DAEMON_WATCH).await;
        if daemon_pids(marker, cgroup).is_empty() {
            return;
        }
    }
}

/// The trees table's name for what belongs to the project but no unit (marker dropped).
const PROJECT: &str = "";

/// After a stop signal, SIGCONT to the same group, as systemd does: a service paused
/// (`corral kill -s STOP`, a debugger's stop) would otherwise hold the signal until SIGKILL ends
/// it at the end of the grace, never having had its graceful stop. To a running process it is
/// nothing (no handler: the kernel drops it at once).
fn continue_stopped(group: i32, sig: Signal) {
    if !matches!(sig, Signal::SIGKILL | Signal::SIGCONT | Signal::SIGSTOP) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(group), Signal::SIGCONT);
    }
}

/// Those of `tree` that are still the processes recorded (same start time).
fn still_alive(tree: &[(u32, u64)]) -> Vec<i32> {
    tree.iter()
        .filter(|(pid, start)| proctable::start_time(*pid as i32) == Some(*start))
        .map(|(pid, _)| *pid as i32)
        .collect()
}

/// End what a recorded tree still has running (a process that could not be adopted).
pub(super) fn end_tree(tree: &[(u32, u64)]) {
    proctable::signal_all(&still_alive(tree), Signal::SIGKILL);
}

pub(super) struct Processes {
    /// Hooks and shutdown commands still running: waited for before corral ends.
    hooks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    reaper: Reaper,
    /// None only while corral ends (dropping it lets the keeper go).
    keeper: Option<KeeperLink>,
    /// The end of the keeper we started (if we did), awaited as corral ends.
    keeper_exit: KeeperExit,
    /// Output after the keeper: terminal, followers, patterns (a task of its own).
    router: Router,
    live: Vec<Option<Live>>,
    /// The first port of each unit, once known (auto ports are chosen once and kept).
    ports: Vec<Option<u16>>,
    sweep_pending: bool,
    census_pending: bool,
    /// Exit statuses, probe results and sweeps come back to the dispatcher here.
    tx: UnboundedSender<Msg>,
    /// The corral binary (tasks run under `corral __wrap`) and the state dir (where the
    /// wrappers record exit statuses).
    exe: PathBuf,
    state_dir: PathBuf,
}

/// What a unit's output is watched for: its `log_ready` pattern, a `log` readiness probe.
pub(super) fn watch_for(project: &Project, unit: UnitId) -> Watch {
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

/// The whole environment of a unit's process: its own, what a login as its `user` would have
/// (systemd's `User=` does the same), and `PORT`.
fn env_of(def: &corral_config::UnitDef, port: Option<u16>) -> Vec<(String, String)> {
    let mut env = def.env.to_vec();
    if let Some(id) = &def.identity {
        env.retain(|(k, _)| !["HOME", "USER", "LOGNAME"].contains(&k.as_str()));
        env.push(("HOME".into(), id.home.display().to_string()));
        env.push(("USER".into(), id.user.clone()));
        env.push(("LOGNAME".into(), id.user.clone()));
    }
    if let Some(p) = port {
        env.retain(|(k, _)| k != "PORT");
        env.push(("PORT".into(), p.to_string()));
    }
    env
}

/// Read what a short-lived helper prints (at most 64 KiB) on a blocking thread.
fn read_capped<R: std::io::Read + Send + 'static>(r: Option<R>) -> tokio::task::JoinHandle<String> {
    tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        if let Some(r) = r {
            let _ = std::io::Read::read_to_string(&mut r.take(64 << 10), &mut text);
        }
        text
    })
}

/// Kill every process carrying `marker` (a process we cannot adopt) and wait, bounded, until
/// they are gone.
pub(super) fn end_marked(marker: &str) {
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

/// A size as people read it: `512MiB`, `1.5GiB`, `4096B`.
fn size(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    if bytes >= 1 << 30 {
        format!(
            "{}GiB",
            (bytes as f64 / (1u64 << 30) as f64 * 100.0).round() / 100.0
        )
    } else if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{}MiB", bytes / MIB)
    } else {
        format!("{bytes}B")
    }
}

/// A unit's process between [`Processes::prepare`] and [`Processes::finish`]: `ready` is
/// taken out to be launched.
pub(super) struct Starting {
    unit: UnitId,
    generation: u64,
    marker: String,
    notify: Option<crate::sdnotify::Listener>,
    launcher_rx: Option<tokio::sync::oneshot::Receiver<ExitStatus>>,
    pub(super) ready: Option<crate::spawn::Ready>,
}

impl Processes {
    /// A unit's limits, each with how it applies (for `why` and the API): cgroup limits
    /// only where corral's cgroup has the controller, else said to be not applied and why.
    pub(super) fn limits(
        &self,
        def: &corral_config::UnitDef,
        max_memory: Option<u64>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        let controllers = self.reaper.cgroups().map(|c| c.controllers());
        let cgroup = |key: &str, value: String, controller: &str, file: &str| match controllers {
            Some(c) if c.contains(&controller) => format!("{key} {value}: cgroup {file}"),
            Some(_) => format!(
                "{key} {value}: not applied (the `{controller}` controller is not delegated to corral's cgroup)"
            ),
            None => format!(
                "{key} {value}: not applied (corral has no cgroup of its own here: cgroup v2 not writable, or CORRAL_CGROUP=off)"
            ),
        };
        if let Some(m) = def.cgroup_limits.memory {
            out.push(cgroup("memory", size(m), "memory", "memory.max"));
        }
        if let Some(c) = def.cgroup_limits.cpus {
            out.push(cgroup("cpus", c.to_string(), "cpu", "cpu.max"));
        }
        if let Some(m) = max_memory {
            out.push(format!(
                "max_memory {}: restarted when its tree's RSS stays over it",
                size(m)
            ));
        }
        for (name, value) in &def.limits {
            let value = if *value == u64::MAX {
                "unlimited".to_string()
            } else {
                value.to_string()
            };
            out.push(format!("{name} {value}: rlimit"));
        }
        out
    }

    pub(super) fn new(
        reaper: Reaper,
        // The link to the keeper, and the keeper's end if we started it.
        (keeper, keeper_exit): (KeeperLink, KeeperExit),
        router: Router,
        ports: Vec<Option<u16>>,
        tx: UnboundedSender<Msg>,
        exe: PathBuf,
        state_dir: PathBuf,
    ) -> Processes {
        Processes {
            reaper,
            keeper: Some(keeper),
            keeper_exit,
            router,
            live: ports.iter().map(|_| None).collect(),
            ports,
            sweep_pending: false,
            census_pending: false,
            hooks: std::sync::Mutex::new(Vec::new()),
            tx,
            exe,
            state_dir,
        }
    }

    pub(super) fn router(&self) -> &Router {
        &self.router
    }

    /// The PID of the unit's live process.
    pub(super) fn pid(&self, unit: UnitId) -> Option<u32> {
        self.live[unit.0].as_ref().map(|l| l.pid)
    }

    /// A daemon's launcher left `pid` running: it is the unit's process from now on, watched
    /// through a pidfd as an adopted one is (signals reach it, its group and its cgroup), and
    /// recorded so that a later daemon adopts it. False if the unit has moved on.
    pub(super) fn daemonized(
        &mut self,
        store: &Store,
        name: &str,
        unit: UnitId,
        generation: u64,
        pid: u32,
    ) -> bool {
        let Some(live) = self.live[unit.0]
            .as_mut()
            .filter(|l| l.generation == generation)
        else {
            return false;
        };
        let (Ok(pidfd), Some(start_time)) = (
            proctable::PidFd::open(pid),
            proctable::start_time(pid as i32),
        ) else {
            return false;
        };
        live.pid = pid;
        live.adopted = Some(pidfd);
        let rec = ProcessRecord {
            unit: name.to_string(),
            generation,
            pid,
            start_time,
            marker: live.marker.clone(),
        };
        if let Err(e) = store.put_process(&rec) {
            crate::say!("corral: {e}");
        }
        true
    }

    /// The unit's `NOTIFY_SOCKET`, its messages sent to the supervisor.
    fn listen(
        &self,
        unit: UnitId,
        generation: u64,
        name: &str,
        other_user: bool,
    ) -> std::io::Result<(String, crate::sdnotify::Listener)> {
        let tx = self.tx.clone();
        crate::sdnotify::listen(&self.state_dir, name, other_user, move |pairs| {
            let _ = tx.send(Msg::Notify {
                unit,
                generation,
                pairs,
            });
        })
    }

    /// What the unit last said with `STATUS=` (this generation).
    pub(super) fn set_status(&mut self, unit: UnitId, generation: u64, text: String) {
        if let Some(l) = self.live[unit.0]
            .as_mut()
            .filter(|l| l.generation == generation)
        {
            l.rare.get_or_insert_default().status = Some(text);
        }
    }

    pub(super) fn status(&self, unit: UnitId) -> Option<String> {
        self.live[unit.0].as_ref()?.rare.as_ref()?.status.clone()
    }

    pub(super) fn adopted(&self, unit: UnitId) -> bool {
        self.live[unit.0]
            .as_ref()
            .is_some_and(|l| l.adopted.is_some())
    }

    /// The unit's first port, once known.
    pub(super) fn port(&self, unit: UnitId) -> Option<u16> {
        self.ports[unit.0]
    }

    /// After a plan change: `carry[i]` is the old index of new unit `i` (or none: new), and
    /// `port` the port a new unit starts with.
    pub(super) fn renumber(
        &mut self,
        carry: &[Option<UnitId>],
        port: impl Fn(usize) -> Option<u16>,
    ) {
        let mut live = Vec::with_capacity(carry.len());
        let mut ports = Vec::with_capacity(carry.len());
        for (i, c) in carry.iter().enumerate() {
            match c {
                Some(old) => {
                    live.push(self.live[old.0].take());
                    ports.push(self.ports[old.0]);
                }
                None => {
                    live.push(None);
                    ports.push(port(i));
                }
            }
        }
        self.live = live;
        self.ports = ports;
    }

    /// Take over a process an earlier daemon started: watch it through a pidfd, with its port
    /// (`fixed`, or the auto port already known). Returns how long it has been running, or None
    /// if it cannot be watched (then it is ended).
    pub(super) fn adopt(
        &mut self,
        store: &Store,
        unit: UnitId,
        rec: &ProcessRecord,
        fixed: Option<u16>,
        // Its NOTIFY_SOCKET, if it has one: whether it runs as another user.
        notify: Option<bool>,
    ) -> Option<Duration> {
        let Ok(check_fd) = proctable::PidFd::open(rec.pid) else {
            end_marked(&rec.marker);
            let _ = store.remove_process(&rec.unit, rec.generation);
            return None;
        };
        let watch_fd = check_fd.clone();
        self.live[unit.0] = Some(Live {
            generation: rec.generation,
            pid: rec.pid,
            marker: rec.marker.clone(),
            adopted: Some(check_fd),
            // Copies come from the keeper once it sees us (`hold`).
            pipes: None,
            read_here: false,
            tree: store.tree(&rec.unit, rec.generation).unwrap_or_default(),
            rare: Rare::of(
                crate::cgroup::of_process(&rec.pid.to_string())
                    .filter(|c| c.parent().is_some_and(crate::cgroup::is_daemon_cgroup)),
                // Its NOTIFY_SOCKET names the same path: bound again, it is heard again.
                notify
                    .and_then(|other| self.listen(unit, rec.generation, &rec.unit, other).ok())
                    .map(|(_, l)| l),
            ),
        });
        if fixed.is_some() {
            self.ports[unit.0] = fixed;
        }
        let tx = self.tx.clone();
        let generation = rec.generation;
        // Not our child: a task's wrapper recorded how it ended; a service's end is unknown.
        let recorded = crate::wrap::status_path(&self.state_dir, &rec.unit, generation);
        let lingering = self.live[unit.0]
            .as_ref()
            .and_then(|l| l.rare.as_ref())
            .and_then(|r| Some((r.cgroup.clone()?, r.stopping.clone())));
        tokio::spawn(async move {
            watch_fd.wait().await;
            if let Some((cgroup, stopping)) = lingering
                && stopping.load(std::sync::atomic::Ordering::Relaxed)
            {
                // Ends when what it left has finished, or is killed at the end of the grace
                // (the SIGKILL reaches its cgroup: `signal_batch`).
                crate::cgroup::emptied(&cgroup).await;
            }
            let status = crate::wrap::read_status(&recorded).unwrap_or(ExitStatus::Unknown);
            let _ = std::fs::remove_file(&recorded);
            let _ = tx.send(Msg::Event(Event::Exited {
                unit,
                generation,
                status,
            }));
        });
        Some(proctable::age(rec.start_time).unwrap_or_default())
    }

    /// The unit's process `generation` has exited: forget it (and its record), and sweep what
    /// it left behind. `task`: it had a wrapper, which left its exit status in a file.
    pub(super) fn exited(
        &mut self,
        store: &Store,
        name: &str,
        task: bool,
        unit: UnitId,
        generation: u64,
    ) {
        if self.live[unit.0]
            .as_ref()
            .is_none_or(|l| l.generation != generation)
        {
            return;
        }
        let Some(live) = self.live[unit.0].take() else {
            return;
        };
        if task {
            let _ =
                std::fs::remove_file(crate::wrap::status_path(&self.state_dir, name, generation));
        }
        if let Err(e) = store.remove_process(name, live.generation) {
            crate::say!("corral: {e}");
        }
        if live.adopted.is_some() && live.cgroup().is_none() {
            // Its orphans went to init, not to us: find them by marker (in a cgroup, the
            // cgroup's kill reaches them; a scan of every process's environment per exit made
            // stopping 5,000 adopted services take minutes).
            proctable::signal_all(&proctable::with_marker(&live.marker), Signal::SIGKILL);
        }
        if let Some(dir) = live.rare.and_then(|r| r.cgroup) {
            self.reaper.retire(dir);
        }
        // Nothing it started outlives it, escaped or not.
        end_tree(&live.tree);
        let _ = store.forget_tree(name, generation);
        self.schedule_sweep();
    }

    /// Look again shortly at what each live process has started (debounced). The `/proc` scan
    /// is made off the supervisor's loop (at thousands of processes it took 30–75 ms, and every
    /// request waited behind it), and its table comes back to be recorded.
    fn schedule_census(&mut self) {
        if self.census_pending {
            return;
        }
        self.census_pending = true;
        let tx = self.tx.clone();
        let reaper = self.reaper.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let table =
                tokio::task::spawn_blocking(move || proctable::Table::read(&reaper.registered()))
                    .await;
            if let Ok(table) = table {
                let _ = tx.send(Msg::Census(table));
            }
        });
    }

    /// Record every live process's descendants (from `table`, one `/proc` scan made a moment
    /// ago), in memory and in the store: the tree of each leader, what left its group, and what
    /// was seen before and still runs. A process started since is looked at by the next census.
    pub(super) fn census(&mut self, project: &Project, store: &Store, table: proctable::Table) {
        self.census_pending = false;
        for (i, live) in self.live.iter_mut().enumerate() {
            let Some(live) = live else { continue };
            let mut pids: HashSet<i32> =
                table.descendants_of(live.pid as i32).into_iter().collect();
            pids.extend(table.strays(Some(live.pid as i32), &live.marker));
            pids.extend(still_alive(&live.tree));
            pids.remove(&(live.pid as i32));
            let tree: Vec<(u32, u64)> = pids
                .into_iter()
                .filter_map(|p| Some((p as u32, proctable::start_time(p)?)))
                .collect();
            if tree != live.tree {
                let name = &project.units[i].name;
                if let Err(e) = store.set_tree(name, live.generation, &tree) {
                    crate::say!("corral: {e}");
                }
                live.tree = tree;
            }
        }
        // Orphans that dropped their marker: ours (we are their subreaper) but no unit's. They
        // go with the stack; recorded so that a daemon after a `kill -9` ends them too.
        let unmarked: Vec<(u32, u64)> = table
            .unmarked_orphans()
            .into_iter()
            .chain(still_alive(&store.tree(PROJECT, 0).unwrap_or_default()))
            .filter_map(|p| Some((p as u32, proctable::start_time(p)?)))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if let Err(e) = store.set_tree(PROJECT, 0, &unmarked) {
            crate::say!("corral: {e}");
        }
    }

    /// Make the process of `unit` (generation `generation`) ready to start: its ports first (a
    /// fixed one must be free, or freed with `kill_others`; an auto port is chosen once and
    /// kept), then what the one spawn path needs. Launched (with the others of the step, see
    /// `Supervisor::spawn_all`), it is taken on by [`Processes::finish`].
    pub(super) fn prepare(
        &mut self,
        project: &Project,
        store: &Store,
        printer: &Printer,
        unit: UnitId,
        generation: u64,
    ) -> Result<Starting, crate::spawn::SpawnError> {
        use crate::spawn::SpawnError;
        let def = &project.units[unit.0];
        let command = def
            .command
            .as_ref()
            .ok_or_else(|| SpawnError::permanent("nothing to run"))?;
        // `kill_filters`: what would clash with it goes first (blocks for at most 3 s).
        let killed = ports::kill_matching(def.kill_filters());
        if !killed.is_empty() {
            let who: Vec<String> = killed
                .iter()
                .map(|(pid, cmd)| format!("pid {pid} (`{cmd}`)"))
                .collect();
            let (printer, text) = (
                printer.clone(),
                format!("{}: kill_filters: killed {}", def.name, who.join(", ")),
            );
            tokio::spawn(async move { printer.system(text).await });
        }
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
                        // Not one another unit has: a port is free until its service binds it,
                        // and the kernel may hand it out again meanwhile (replicas start
                        // together).
                        let mut tries = 0;
                        loop {
                            let p = ports::allocate().map_err(|e| {
                                SpawnError(format!("cannot find a free port: {e}"), true)
                            })?;
                            tries += 1;
                            if !self.ports.contains(&Some(p)) || tries == 32 {
                                break p;
                            }
                        }
                    }
                },
            };
            if !ports::is_free(port) {
                if def.kill_others {
                    // Blocks the loop for at most 3 s: the holder must be gone before we start.
                    let killed = ports::kill_holders(port).map_err(SpawnError::permanent)?;
                    let (printer, text) = (
                        printer.clone(),
                        format!("{}: killed {killed:?} holding port {port}", def.name),
                    );
                    tokio::spawn(async move { printer.system(text).await });
                } else {
                    return Err(SpawnError::permanent(format!(
                        "{}; stop it, choose another port, or set `kill_others = true`",
                        ports::describe_holders(port)
                    )));
                }
            }
            if self.ports[unit.0].is_none() {
                self.ports[unit.0] = Some(port);
                if *decl == PortDecl::Auto
                    && let Err(e) = store.set_port(&def.name, port)
                {
                    crate::say!("corral: {e}");
                }
            }
        }
        let port = self.ports[unit.0];
        let mut argv = command.to_argv(port);
        let marker = proctable::marker(&def.name, generation);
        let mut env = env_of(def, port);
        let notify = if def.notify {
            let (value, listener) = self
                .listen(unit, generation, &def.name, other_user(def))
                .map_err(|e| {
                    SpawnError::permanent(format!("cannot make its NOTIFY_SOCKET: {e}"))
                })?;
            env.push(("NOTIFY_SOCKET".into(), value));
            if let Some(every) = project.plan.get(unit).watchdog {
                env.push(("WATCHDOG_USEC".into(), every.as_micros().to_string()));
            }
            Some(listener)
        } else {
            None
        };
        let is_task = def.kind == corral_engine::Kind::Task;
        if is_task {
            // Its exit status must survive our death: `corral __wrap` records it.
            if proctable::resolve_program(&argv[0], &env, &def.workdir).is_none() {
                return Err(SpawnError::permanent(crate::spawn::not_found_or_no_dir(
                    &argv[0],
                    &def.workdir,
                )));
            }
            let dir = self.state_dir.join("exit");
            crate::statedir::ensure_dir(&dir).map_err(|e| SpawnError::permanent(e.to_string()))?;
            let status = crate::wrap::status_path(&self.state_dir, &def.name, generation);
            let _ = std::fs::remove_file(&status);
            let mut wrapped = vec![
                self.exe.display().to_string(),
                "__wrap".into(),
                status.display().to_string(),
            ];
            wrapped.extend(crate::wrap::RunAs::args(def.identity.as_deref(), def.umask));
            wrapped.push("--".into());
            wrapped.append(&mut argv);
            argv = wrapped;
        }
        let daemon = def.daemon && !is_task;
        let rlimits = rlimits_of(def)?;
        // Its exit goes straight to the supervisor as an event (no task waits for it: at
        // thousands of services those were a third of a KiB each). A daemon's launcher is
        // watched by a task instead: when it succeeds, the daemon it started must end first.
        let (launcher_tx, launcher_rx) = match daemon {
            true => {
                let (t, r) = tokio::sync::oneshot::channel();
                (Some(t), Some(r))
            }
            false => (None, None),
        };
        let on_exit = {
            let tx = self.tx.clone();
            move |status| match launcher_tx {
                Some(launcher) => {
                    let _ = launcher.send(status);
                }
                None => {
                    let _ = tx.send(Msg::Event(Event::Exited {
                        unit,
                        generation,
                        status,
                    }));
                }
            }
        };
        let ready = crate::spawn::prepare(
            &self.reaper,
            crate::spawn::Spec {
                argv: &argv,
                cwd: &def.workdir,
                env: &env,
                marker: Some(&marker),
                stdin: crate::spawn::Io::Null,
                stdout: crate::spawn::Io::Piped,
                stderr: crate::spawn::Io::Piped,
                // A task's wrapper applies them to the command (it stays ours to record the end).
                identity: if is_task {
                    None
                } else {
                    def.identity.as_deref()
                },
                umask: if is_task { None } else { def.umask },
                // Inherited across exec: a task's wrapper passes them on to its command.
                rlimits: &rlimits,
                // The cgroup holds a task's wrapper and its command alike.
                cgroup_limits: def.cgroup_limits,
                daemon,
                // A task runs under our own `__wrap`.
                own_binary: is_task,
            },
            on_exit,
        )?;
        Ok(Starting {
            unit,
            generation,
            marker,
            notify,
            launcher_rx,
            ready: Some(ready),
        })
    }

    /// Take on a process [`Processes::prepare`]d and launched: its pipes to the keeper, its
    /// record, its exit watcher (a daemon's launcher), its place in `live`.
    pub(super) fn finish(
        &mut self,
        project: &Project,
        store: &Store,
        starting: Starting,
        launched: Result<crate::spawn::Spawned<()>, crate::spawn::SpawnError>,
    ) -> Result<u32, crate::spawn::SpawnError> {
        let Starting {
            unit,
            generation,
            marker,
            notify,
            launcher_rx,
            ..
        } = starting;
        let def = &project.units[unit.0];
        let crate::spawn::Spawned {
            mut pipes,
            cgroup,
            pid,
            ..
        } = launched?;
        // The output pipes go to the keeper, which outlives us; we keep no copy.
        let out: Option<std::os::fd::OwnedFd> = pipes.stdout.take().map(Into::into);
        let err: Option<std::os::fd::OwnedFd> = pipes.stderr.take().map(Into::into);
        if let (Some(out), Some(err)) = (&out, &err) {
            let attach = Attach {
                unit: def.name.clone(),
                generation,
                settings: def.log,
                path: project.log_path(def),
            };
            // Before the keeper has the pipes: the router must know the patterns first.
            let lines = self
                .router
                .expect(&def.name, generation, watch_for(project, unit));
            let attached = match &self.keeper {
                Some(k) => k.attach(&attach, out, err, lines),
                None => Err(std::io::Error::other("corral is ending")),
            };
            if let Err(e) = attached {
                crate::say!(
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
        // Ours to keep too (see `Live::pipes`).
        let pipes = out.zip(err).map(|(o, e)| (Arc::new(o), Arc::new(e)));
        if let Some(start_time) = proctable::start_time(pid as i32) {
            let rec = ProcessRecord {
                unit: def.name.clone(),
                generation,
                pid,
                start_time,
                marker: marker.clone(),
            };
            if let Err(e) = store.put_process(&rec) {
                crate::say!("corral: {e}");
            }
        }
        if let Some(exit) = launcher_rx {
            let tx = self.tx.clone();
            let (marker, cgroup) = (marker.clone(), cgroup.clone());
            tokio::spawn(async move {
                let status = exit.await.unwrap_or(ExitStatus::Signal(9));
                if status == ExitStatus::Code(0) {
                    daemon_lives(&tx, unit, generation, &marker, cgroup.as_deref()).await;
                }
                let _ = tx.send(Msg::Event(Event::Exited {
                    unit,
                    generation,
                    status,
                }));
            });
        }
        self.live[unit.0] = Some(Live {
            generation,
            pid,
            marker,
            adopted: None,
            pipes,
            read_here: false,
            tree: Vec::new(),
            // A daemon's cgroup outlives its launcher: ours to retire when the unit ends.
            rare: Rare::of(cgroup, notify),
        });
        // Daemonizing children appear in the first moments: look then.
        self.schedule_census();
        Ok(pid)
    }

    /// Run one probe of `unit` on a task of its own; the result comes back as an event.
    pub(super) fn run_probe(
        &self,
        project: &Project,
        unit: UnitId,
        generation: u64,
        kind: corral_engine::ProbeKind,
    ) {
        let def = &project.units[unit.0];
        let probe = match kind {
            corral_engine::ProbeKind::Readiness => def.readiness.clone(),
            corral_engine::ProbeKind::Liveness => def.liveness.clone(),
        };
        let Some(probe) = probe else { return };
        let port = self.ports[unit.0];
        let reaper = self.reaper.clone();
        let workdir = def.workdir.clone();
        let env = def.env.to_vec();
        let identity = def.identity.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let ctx = ExecContext {
                reaper: &reaper,
                workdir: &workdir,
                env: &env,
                identity: identity.as_deref(),
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

    /// Run the unit's `shutdown_command` (instead of its stop signal) on a task of its own:
    /// its output printed, its exit said if not 0, killed if it outlasts the stop timeout.
    pub(super) fn run_shutdown_command(
        &self,
        project: &Project,
        unit: UnitId,
        generation: u64,
        printer: &Printer,
    ) {
        let def = &project.units[unit.0];
        let Some(command) = def.shutdown_command() else {
            return;
        };
        let grace = project.plan.get(unit).stop_grace;
        self.run_hook(
            project,
            unit,
            generation,
            printer,
            Hook {
                label: "shutdown_command",
                command,
                env: Vec::new(),
                limit: grace,
            },
        );
    }

    /// Run a command for a unit on a task of its own, through the one spawn path, with the
    /// environment its process has (PORT, HOME/USER for a unit with `user`, CORRAL_PID while it
    /// runs) and `hook.env`: its output printed as `NAME: LABEL: line`, an exit other than 0
    /// said, killed (its whole group) if it outlasts `hook.limit`.
    pub(super) fn run_hook(
        &self,
        project: &Project,
        unit: UnitId,
        generation: u64,
        printer: &Printer,
        hook: Hook<'_>,
    ) {
        let def = &project.units[unit.0];
        let argv = hook.command.to_argv(self.ports[unit.0]);
        let (reaper, printer) = (self.reaper.clone(), printer.clone());
        let (workdir, mut env, identity) = (
            def.workdir.clone(),
            env_of(def, self.ports[unit.0]),
            def.identity.clone(),
        );
        if let Some(pid) = self.pid(unit) {
            env.push(("CORRAL_PID".into(), pid.to_string()));
        }
        env.extend(hook.env);
        let name = def.name.clone();
        let (label, limit) = (hook.label, hook.limit);
        let marker = proctable::marker(&format!("{label}:{name}"), generation);
        let handle = tokio::spawn(async move {
            let spawned = crate::spawn::spawn(
                &reaper,
                crate::spawn::Spec {
                    argv: &argv,
                    cwd: &workdir,
                    env: &env,
                    marker: Some(&marker),
                    stdin: crate::spawn::Io::Null,
                    stdout: crate::spawn::Io::Piped,
                    stderr: crate::spawn::Io::Piped,
                    identity: identity.as_deref(),
                    umask: None,
                    rlimits: &[],
                    cgroup_limits: Default::default(),
                    daemon: false,
                    own_binary: false,
                },
            );
            let mut spawned = match spawned {
                Ok(s) => s,
                Err(e) => {
                    printer
                        .system(format!("{name}: {label} cannot start: {e}"))
                        .await;
                    return;
                }
            };
            let (out, err) = (spawned.pipes.stdout.take(), spawned.pipes.stderr.take());
            // Small and short-lived: read on blocking threads, to the end or the kill.
            let (out, err) = (read_capped(out), read_capped(err));
            let status = tokio::time::timeout(limit, spawned.exit).await;
            if status.is_err() {
                reaper.signal_group(spawned.pid, Signal::SIGKILL);
            }
            let text = format!(
                "{}{}",
                out.await.unwrap_or_default(),
                err.await.unwrap_or_default()
            );
            for line in text.lines().filter(|l| !l.is_empty()) {
                printer.system(format!("{name}: {label}: {line}")).await;
            }
            match status {
                Ok(Ok(s)) if s.success() => {}
                Ok(Ok(s)) => {
                    printer
                        .system(format!("{name}: {label} ended with {s}"))
                        .await
                }
                _ => {
                    printer
                        .system(format!(
                            "{name}: {label} took longer than {}; killed",
                            corral_engine::fmt_duration(limit)
                        ))
                        .await
                }
            }
        });
        let mut hooks = self.hooks.lock().unwrap_or_else(|e| e.into_inner());
        hooks.retain(|h| !h.is_finished());
        hooks.push(handle);
    }

    /// Wait for the hooks still running (each ends within its own limit): an `on_exit` of the
    /// last stop runs to its end before corral does.
    pub(super) async fn hooks_done(&self) {
        let running = std::mem::take(&mut *self.hooks.lock().unwrap_or_else(|e| e.into_inner()));
        for h in running {
            let _ = h.await;
        }
    }

    /// `unit` is being stopped: what its process leaves in its cgroup as it exits finishes
    /// its own stop (within the grace) instead of being killed at once.
    pub(super) fn stopping(&self, unit: UnitId) {
        let Some(live) = &self.live[unit.0] else {
            return;
        };
        match (&live.adopted, &live.rare) {
            (None, _) => self.reaper.stopping(live.pid),
            (Some(_), Some(rare)) => rare
                .stopping
                .store(true, std::sync::atomic::Ordering::Relaxed),
            (Some(_), None) => {}
        }
    }

    /// Send a stop signal to a unit's main process only (`stop.parent_only`), and SIGCONT.
    pub(super) fn signal_main(&self, unit: UnitId, sig: Signal) {
        let Some(live) = &self.live[unit.0] else {
            return;
        };
        match &live.adopted {
            // Not our child: the pidfd says whether the PID is still this process.
            Some(pidfd) => {
                if !pidfd.exited() {
                    let pid = nix::unistd::Pid::from_raw(live.pid as i32);
                    let _ = nix::sys::signal::kill(pid, sig);
                    let _ = nix::sys::signal::kill(pid, Signal::SIGCONT);
                }
            }
            None => {
                self.reaper.signal_one(live.pid, sig);
                self.reaper.signal_one(live.pid, Signal::SIGCONT);
            }
        }
    }

    /// Send stop signals or SIGKILL (`stop`; followed by SIGCONT to the group, see
    /// [`continue_stopped`]) or a signal asked for (`corral kill`): to each unit's process
    /// group, and to the strays that left the group (setsid) or lost their parent. One `/proc`
    /// scan serves the whole batch.
    pub(super) fn signal_batch(&self, signals: &[(UnitId, Signal)], stop: bool) {
        if signals.is_empty() {
            return;
        }
        // The scan finds what left a group; a process in its own cgroup cannot leave that, and
        // the reaper signals the cgroup. So the scan is made only for a unit without one — a
        // scan per stop made a chain of 1,000 stop in O(N²) (9 ms per unit).
        let needs_scan = signals.iter().any(|(unit, _)| {
            self.live[unit.0]
                .as_ref()
                .is_some_and(|l| l.adopted.is_some() || !self.reaper.confined(l.pid))
        });
        let table = if needs_scan {
            proctable::Table::read(&self.reaper.registered())
        } else {
            proctable::Table::default()
        };
        // Adopted units outside a cgroup are found by marker: one read of every process's
        // environment for the batch, not one per unit.
        let markers: HashSet<&str> = signals
            .iter()
            .filter_map(|(unit, _)| self.live[unit.0].as_ref())
            .filter(|l| l.adopted.is_some() && l.cgroup().is_none())
            .map(|l| l.marker.as_str())
            .collect();
        let marked = proctable::with_markers(&markers);
        // Our own children's groups (and cgroups), all at once.
        let groups: Vec<(u32, Signal, Option<&str>)> = signals
            .iter()
            .filter_map(|(unit, sig)| {
                let live = self.live[unit.0].as_ref()?;
                let target = (live.pid, *sig, Some(live.marker.as_str()));
                live.adopted.is_none().then_some(target)
            })
            .collect();
        // Each process gets the signal once, however many of the ways below find it.
        let mut signalled = HashSet::new();
        let mut leaders_alive = self
            .reaper
            .signal_groups(&groups, &mut signalled)
            .into_iter();
        for (unit, sig) in signals {
            let Some(live) = &self.live[unit.0] else {
                continue;
            };
            if let Some(pidfd) = &live.adopted {
                // Not our child: the pidfd says whether the PID is still this process.
                let group = (!pidfd.exited()).then_some(live.pid as i32);
                if let Some(group) = group {
                    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(group), *sig);
                    if stop {
                        continue_stopped(group, *sig);
                    }
                    // Its descendants, wherever they went (not our children: found in /proc).
                    let descendants = table.descendants_of(group);
                    proctable::signal_rest(descendants, Some(group), *sig, &mut signalled);
                }
                let found = match live.cgroup() {
                    Some(dir) => crate::cgroup::pids(dir),
                    None => marked.get(&live.marker).cloned().unwrap_or_default(),
                };
                proctable::signal_rest(found, group, *sig, &mut signalled);
                proctable::signal_rest(still_alive(&live.tree), group, *sig, &mut signalled);
                continue;
            }
            let leader = leaders_alive
                .next()
                .unwrap_or(false)
                .then_some(live.pid as i32);
            if let Some(group) = leader.filter(|_| stop) {
                continue_stopped(group, *sig);
            }
            let strays = table.strays(leader, &live.marker);
            proctable::signal_rest(strays, leader, *sig, &mut signalled);
            proctable::signal_rest(still_alive(&live.tree), leader, *sig, &mut signalled);
        }
    }

    pub(super) fn schedule_sweep(&mut self) {
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
    pub(super) fn sweep(&mut self) {
        self.sweep_pending = false;
        let registered = self.reaper.registered();
        // An orphan is re-parented to corral: with no child but those it started, there is none,
        // and every process's `stat` need not be read (at thousands of units that read was a
        // third of the daemon's time while instances were deleted).
        if proctable::own_children().is_some_and(|c| c.iter().all(|p| registered.contains(p))) {
            return;
        }
        let table = proctable::Table::read(&registered);
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
    /// What escaped its unit (marker dropped) while an earlier daemon ran: it went to init,
    /// not to us, so only the record finds it.
    pub(super) fn end_escaped(&self, store: &Store) {
        end_tree(&store.tree(PROJECT, 0).unwrap_or_default());
        let _ = store.forget_tree(PROJECT, 0);
        // And every cgroup, ours and those left by earlier daemons (of adopted processes).
        let left: Vec<String> = store
            .previous_cgroups()
            .unwrap_or_default()
            .into_iter()
            .filter(|dir| !crate::cgroup::end_daemon_cgroup(Path::new(dir), |_| false))
            .collect();
        let _ = store.set_cgroups(&left);
    }

    /// Whether nothing was left in the end.
    pub(super) async fn final_sweep(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        let clean = loop {
            let left = proctable::own_descendants()
                .unwrap_or_else(|| proctable::Table::read(&self.reaper.registered()).descendants());
            if left.is_empty() || Instant::now() > deadline {
                if !left.is_empty() {
                    crate::say!("corral: could not end processes {left:?}");
                }
                break left.is_empty();
            }
            proctable::signal_all(&left, Signal::SIGKILL);
            tokio::time::sleep(Duration::from_millis(1)).await;
            self.reaper.reap();
        };
        self.reaper.reap();
        clean
    }

    /// The keeper's copy of a generation's pipes, for a process of ours that has none (we
    /// adopted it): now both of us hold them.
    pub(super) fn hold(&mut self, unit: UnitId, generation: u64, stdout: OwnedFd, stderr: OwnedFd) {
        if let Some(live) = self.live[unit.0].as_mut()
            && live.generation == generation
            && live.pipes.is_none()
        {
            live.pipes = Some((Arc::new(stdout), Arc::new(stderr)));
        }
    }

    /// The keeper could not take a generation's pipes (it is out of open files): read them
    /// here, with our copies, into the same log file and on to the router as the keeper would
    /// — otherwise nobody reads them and the service blocks once a pipe is full. Its output
    /// would not survive our death, as it would the keeper's, but it is kept and shown.
    pub(super) fn read_here(&mut self, unit: UnitId, attach: Attach) {
        let Some(live) = self.live[unit.0].as_mut() else {
            return;
        };
        let Some((out, err)) = live.pipes.clone() else {
            return;
        };
        if live.generation != attach.generation || live.read_here {
            return;
        }
        live.read_here = true;
        let log_dir = self.state_dir.join("logs");
        let router = self.router.clone();
        tokio::spawn(async move {
            let mut file = match crate::keeper::open_log(&log_dir, &attach) {
                Ok(f) => Some(f),
                Err(e) => {
                    crate::say!("corral: cannot open the log of `{}`: {e}", attach.unit);
                    None
                }
            };
            let (unit, generation) = (attach.unit, attach.generation);
            let sink = |stream: Stream, lines: &[&[u8]]| {
                let now = SystemTime::now();
                if let Some(trouble) = file
                    .as_mut()
                    .and_then(|f| f.write_lines(now, stream, lines))
                {
                    router.tap(crate::keeper::TapMsg::Trouble {
                        unit: unit.clone(),
                        generation,
                        trouble,
                    });
                }
                if let Some(msg) =
                    crate::keeper::TapMsg::lines(&unit, generation, stream, now, lines)
                {
                    router.tap(msg);
                }
            };
            crate::logs::Pump { sink }.run(Some(out), Some(err)).await;
            router.tap(crate::keeper::TapMsg::Eof { unit, generation });
        });
    }

    /// The keeper is gone: start a new one and hand it every pipe we hold, so the services'
    /// output flows on into the same log files.
    pub(super) fn reconnect_keeper(&mut self, project: &Project, exe: &std::path::Path) {
        let keeper = match connect_keeper(
            &project.state_dir,
            exe,
            &self.reaper,
            &self.router,
            false,
            &self.keeper_exit,
        ) {
            Ok(k) => k,
            Err(e) => {
                crate::say!("corral: the log keeper died and cannot be restarted: {e}");
                return;
            }
        };
        let mut handed = 0;
        for (i, live) in self.live.iter().enumerate() {
            // What we read ourselves stays ours: one reader per pipe.
            let Some((out, err)) = live
                .as_ref()
                .filter(|l| !l.read_here)
                .and_then(|l| l.pipes.as_ref())
            else {
                continue;
            };
            let def = &project.units[i];
            let generation = live.as_ref().map_or(0, |l| l.generation);
            let lines = self
                .router
                .expect(&def.name, generation, watch_for(project, UnitId(i)));
            let attach = Attach {
                unit: def.name.clone(),
                generation,
                settings: def.log,
                path: project.log_path(def),
            };
            match keeper.attach(&attach, out, err, lines) {
                Ok(()) => handed += 1,
                Err(e) => crate::say!("corral: cannot hand `{}` to the new keeper: {e}", def.name),
            }
        }
        crate::say!("corral: the log keeper died; a new one took over {handed} processes' output");
        self.keeper = Some(keeper);
    }

    /// corral is ending: let go of the keeper (it ends by itself once its pipes are done) and
    /// of the router (and so of the printer).
    pub(super) async fn close_output(&mut self) {
        self.keeper = None;
        self.router.close().await;
    }

    /// Wait (at most `limit`) for the keeper we started to end, once it has been let go.
    pub(super) async fn keeper_ended(&self, limit: Duration) {
        self.keeper_exit.ended(limit).await;
    }
}
