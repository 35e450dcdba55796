//! Ad-hoc processes: commands a client starts over the API (an IDE host running a build, an
//! agent running a shell command) that outlive the request, and whose output is kept for the
//! caller to read later.
//!
//! One task owns every ad-hoc process record; readers, exit waiters and timers send it
//! messages, like the supervisor. Processes are spawned through the [`Reaper`] in their own
//! process group with a marker (`<corral pid>/proc:<id>/0`), so they are reaped, signalled as a
//! group, and swept like services; their records are written to the store's process table, so a
//! later daemon kills whatever a crashed one left (they are not adopted: their output was held in
//! the daemon's memory).
//!
//! Output (stdout and stderr together, in arrival order) is kept as a head and a tail of
//! configurable sizes, with what was dropped in between counted: the start of a build log and
//! its end are what a caller wants, and memory stays bounded however much a process prints.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use corral_engine::ExitStatus;
use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::logs::Stream;
use crate::proctable;
use crate::reaper::Reaper;

/// What to run.
#[derive(Clone, Debug)]
pub enum AdhocCommand {
    Argv(Vec<String>),
    /// Run by `sh -c`.
    Shell(String),
}

/// A request to start an ad-hoc process.
#[derive(Clone, Debug)]
pub struct ProcSpec {
    pub command: AdhocCommand,
    /// Relative to the project root. Default: the root.
    pub workdir: Option<PathBuf>,
    /// Added to (or replacing) corral's own environment.
    pub env: Vec<(String, String)>,
    /// Terminate after this long (SIGTERM to the group, SIGKILL after `grace`).
    pub timeout: Option<Duration>,
    pub grace: Duration,
    /// Written to stdin at start.
    pub stdin: Option<Vec<u8>>,
    /// Close stdin after `stdin` (or at once).
    pub close_stdin: bool,
    /// The same key returns the same process instead of starting another.
    pub key: Option<String>,
    pub head_bytes: usize,
    pub tail_bytes: usize,
    /// How long the record is kept after the process ended.
    pub retain: Duration,
}

impl ProcSpec {
    pub fn new(command: AdhocCommand) -> ProcSpec {
        ProcSpec {
            command,
            workdir: None,
            env: Vec::new(),
            timeout: None,
            grace: Duration::from_secs(5),
            stdin: None,
            close_stdin: false,
            key: None,
            head_bytes: 64 * 1024,
            tail_bytes: 64 * 1024,
            retain: Duration::from_secs(600),
        }
    }
}

/// Output kept as head + tail.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutputView {
    pub head: String,
    pub tail: String,
    /// Bytes the process wrote.
    pub original_bytes: u64,
    /// Bytes kept (head + tail).
    pub retained_bytes: u64,
    /// Bytes dropped between head and tail.
    pub omitted_bytes: u64,
    /// While nothing was dropped: the whole output as runs of one stream each, in order.
    pub runs: Option<Vec<(Stream, String)>>,
}

#[derive(Clone, Debug)]
pub struct ProcView {
    pub id: String,
    pub key: Option<String>,
    pub command: String,
    pub pid: u32,
    /// `running`, `exited`, or `killed` (by a signal, a timeout or the user).
    pub state: &'static str,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub started: SystemTime,
    pub ended: Option<SystemTime>,
    pub output: OutputView,
}

/// A piece of output, for streams. `offset` is where it starts in the process's whole output.
#[derive(Clone, Debug)]
pub struct ProcChunk {
    pub id: String,
    pub offset: u64,
    pub stream: Stream,
    pub text: String,
}

/// Something that happened to an ad-hoc process (`started`, `exited`, `killed`).
#[derive(Clone, Debug)]
pub struct ProcEvent {
    pub id: String,
    pub kind: &'static str,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AdhocError {
    /// The id asked for, and a hint (` (did you mean …?)`, or where to find the ids).
    #[error("no process with id `{0}`{1}")]
    NotFound(String, String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("corral is shutting down")]
    Gone,
    /// Too much input waits for the process to read it.
    #[error("{0}")]
    Full(String),
}

/// Input that may wait for a process to read it; more is refused until it reads.
pub const MAX_PENDING_STDIN: usize = 1 << 20;

struct Capture {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    head_max: usize,
    tail_max: usize,
    total: u64,
    /// Which stream each stretch came from, kept while the output fits in head + tail.
    runs: Option<Vec<(Stream, usize)>>,
}

impl Capture {
    fn new(head_max: usize, tail_max: usize) -> Capture {
        Capture {
            head: Vec::new(),
            tail: VecDeque::new(),
            head_max,
            tail_max,
            total: 0,
            runs: Some(Vec::new()),
        }
    }

    fn push(&mut self, stream: Stream, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        if self.total > (self.head_max + self.tail_max) as u64 {
            self.runs = None;
        } else if let Some(runs) = &mut self.runs {
            match runs.last_mut() {
                Some((s, n)) if *s == stream => *n += bytes.len(),
                _ => runs.push((stream, bytes.len())),
            }
        }
        let room = self.head_max - self.head.len();
        if room > 0 {
            let n = room.min(bytes.len());
            self.head.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
        if self.tail_max == 0 {
            return;
        }
        if bytes.len() >= self.tail_max {
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - self.tail_max..]);
        } else {
            let over = (self.tail.len() + bytes.len()).saturating_sub(self.tail_max);
            self.tail.drain(..over);
            self.tail.extend(bytes);
        }
    }

    fn view(&self) -> OutputView {
        let retained = (self.head.len() + self.tail.len()) as u64;
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        let runs = self.runs.as_ref().map(|runs| {
            let whole: Vec<u8> = self.head.iter().chain(&tail).copied().collect();
            let mut at = 0;
            runs.iter()
                .map(|(stream, n)| {
                    let end = (at + n).min(whole.len());
                    let text = String::from_utf8_lossy(&whole[at..end]).into_owned();
                    at = end;
                    (*stream, text)
                })
                .collect()
        });
        OutputView {
            head: String::from_utf8_lossy(&self.head).into_owned(),
            tail: String::from_utf8_lossy(&tail).into_owned(),
            original_bytes: self.total,
            retained_bytes: retained,
            omitted_bytes: self.total - retained,
            runs,
        }
    }
}

struct Proc {
    id: String,
    key: Option<String>,
    command: String,
    pid: u32,
    marker: String,
    /// In a cgroup of its own (see [`crate::spawn::Spawned::confined`]).
    confined: bool,
    started: SystemTime,
    ended: Option<SystemTime>,
    status: Option<ExitStatus>,
    timed_out: bool,
    output: Capture,
    stdin: Option<mpsc::UnboundedSender<Option<Vec<u8>>>>,
    /// Bytes sent to stdin that the process has not read yet (bounded by
    /// [`MAX_PENDING_STDIN`]).
    stdin_pending: usize,
    /// Set once it has exited and its output is all in: waiters wake then.
    done: watch::Sender<bool>,
    open_pipes: u8,
    grace: Duration,
    retain: Duration,
}

impl Proc {
    fn view(&self) -> ProcView {
        let (exit_code, signal) = match self.status {
            Some(ExitStatus::Code(c)) => (Some(c), None),
            Some(ExitStatus::Signal(s)) => (None, Some(s)),
            _ => (None, None),
        };
        ProcView {
            id: self.id.clone(),
            key: self.key.clone(),
            command: self.command.clone(),
            pid: self.pid,
            state: match self.status {
                None => "running",
                Some(ExitStatus::Code(_)) if !self.timed_out => "exited",
                _ => "killed",
            },
            exit_code,
            signal,
            timed_out: self.timed_out,
            started: self.started,
            ended: self.ended,
            output: self.output.view(),
        }
    }
}

enum Msg {
    Start(
        Box<ProcSpec>,
        oneshot::Sender<Result<(ProcView, bool), AdhocError>>,
    ),
    List(oneshot::Sender<Vec<ProcView>>),
    Get(
        String,
        oneshot::Sender<Result<(ProcView, watch::Receiver<bool>), AdhocError>>,
    ),
    Input {
        id: String,
        data: Vec<u8>,
        close: bool,
        reply: oneshot::Sender<Result<(), AdhocError>>,
    },
    Signal {
        id: String,
        signal: i32,
        reply: oneshot::Sender<Result<ProcView, AdhocError>>,
    },
    Remove(String, oneshot::Sender<Result<(), AdhocError>>),
    Clear(oneshot::Sender<usize>),
    Output {
        id: String,
        stream: Stream,
        bytes: Vec<u8>,
    },
    Exited {
        id: String,
        status: ExitStatus,
    },
    /// One of its output pipes reached end of file.
    Eof(String),
    /// The stdin writer wrote this much (or, with `closed`, stopped: the process went away).
    StdinWritten {
        id: String,
        bytes: usize,
        closed: bool,
    },
    /// It exited a while ago; stop waiting for pipes something else still holds.
    Settle(String),
    Timeout(String),
    Kill(String),
    Expire(String),
}

/// The handle clients hold.
#[derive(Clone)]
pub struct Adhoc {
    tx: mpsc::UnboundedSender<Msg>,
    output: broadcast::Sender<Arc<ProcChunk>>,
    events: broadcast::Sender<Arc<ProcEvent>>,
}

impl Adhoc {
    /// Start the owning task. `root`: the project root (default working dir); `anywhere`: a
    /// process may run outside it.
    pub fn start(
        reaper: Reaper,
        root: PathBuf,
        anywhere: bool,
        store: Option<corral_store::Store>,
    ) -> Adhoc {
        let (tx, rx) = mpsc::unbounded_channel();
        let (output, _) = broadcast::channel(4096);
        let (events, _) = broadcast::channel(1024);
        let owner = Owner {
            procs: HashMap::new(),
            keys: HashMap::new(),
            next: 1,
            reaper,
            root,
            anywhere,
            store,
            tx: tx.clone(),
            output: output.clone(),
            events: events.clone(),
        };
        tokio::spawn(owner.run(rx));
        Adhoc { tx, output, events }
    }

    async fn ask<T>(&self, msg: impl FnOnce(oneshot::Sender<T>) -> Msg) -> Result<T, AdhocError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(msg(reply)).map_err(|_| AdhocError::Gone)?;
        rx.await.map_err(|_| AdhocError::Gone)
    }

    /// Start a process (or, with a known idempotency key, return the one started before:
    /// the flag says whether it is new).
    pub async fn spawn(&self, spec: ProcSpec) -> Result<(ProcView, bool), AdhocError> {
        self.ask(|r| Msg::Start(Box::new(spec), r)).await?
    }

    /// Running ones first, then the newest.
    pub async fn list(&self) -> Result<Vec<ProcView>, AdhocError> {
        self.ask(Msg::List).await
    }

    pub async fn get(&self, id: &str) -> Result<ProcView, AdhocError> {
        Ok(self.ask(|r| Msg::Get(id.to_string(), r)).await??.0)
    }

    /// Wait until the process ends, at most `cap`; returns its record either way.
    pub async fn wait(&self, id: &str, cap: Duration) -> Result<ProcView, AdhocError> {
        let mut done = self.watch(id).await?;
        let _ = tokio::time::timeout(cap, done.wait_for(|d| *d)).await;
        self.get(id).await
    }

    /// Becomes true once the process has exited and all its output is in.
    pub async fn watch(&self, id: &str) -> Result<watch::Receiver<bool>, AdhocError> {
        Ok(self.ask(|r| Msg::Get(id.to_string(), r)).await??.1)
    }

    pub async fn input(&self, id: &str, data: Vec<u8>, close: bool) -> Result<(), AdhocError> {
        self.ask(|reply| Msg::Input {
            id: id.to_string(),
            data,
            close,
            reply,
        })
        .await?
    }

    pub async fn signal(&self, id: &str, signal: i32) -> Result<ProcView, AdhocError> {
        self.ask(|reply| Msg::Signal {
            id: id.to_string(),
            signal,
            reply,
        })
        .await?
    }

    /// Forget an ended process. A running one must be killed first.
    pub async fn remove(&self, id: &str) -> Result<(), AdhocError> {
        self.ask(|r| Msg::Remove(id.to_string(), r)).await?
    }

    /// Forget every ended process; returns how many.
    pub async fn clear(&self) -> Result<usize, AdhocError> {
        self.ask(Msg::Clear).await
    }

    pub fn output(&self) -> broadcast::Receiver<Arc<ProcChunk>> {
        self.output.subscribe()
    }

    pub fn events(&self) -> broadcast::Receiver<Arc<ProcEvent>> {
        self.events.subscribe()
    }
}

struct Owner {
    procs: HashMap<String, Proc>,
    keys: HashMap<String, String>,
    next: u64,
    reaper: Reaper,
    root: PathBuf,
    /// `cwd` may leave the project (`corral up --procs-anywhere`).
    anywhere: bool,
    store: Option<corral_store::Store>,
    tx: mpsc::UnboundedSender<Msg>,
    output: broadcast::Sender<Arc<ProcChunk>>,
    events: broadcast::Sender<Arc<ProcEvent>>,
}

impl Owner {
    /// No process has `id`: say which was likely meant (the id without its `p`, another case,
    /// an idempotency key given for an id, a near miss), or where the ids are listed.
    fn unknown(&self, id: String) -> AdhocError {
        let lower = id.to_ascii_lowercase();
        let prefixed = format!("p{lower}");
        let guess = [lower.as_str(), prefixed.as_str()]
            .into_iter()
            .find(|c| self.procs.contains_key(*c))
            .map(str::to_string)
            .or_else(|| self.keys.get(&id).cloned())
            .or_else(|| {
                corral_config::did_you_mean(&id, self.procs.keys().map(String::as_str))
                    .map(str::to_string)
            });
        let hint = match guess {
            Some(g) => format!(" (did you mean `{g}`?)"),
            None => " (`corral proc ls` lists them)".to_string(),
        };
        AdhocError::NotFound(id, hint)
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        while let Some(msg) = rx.recv().await {
            self.handle(msg);
        }
    }

    fn event(&self, id: &str, kind: &'static str, message: String) {
        let _ = self.events.send(Arc::new(ProcEvent {
            id: id.to_string(),
            kind,
            message,
        }));
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Start(spec, reply) => {
                if let Some(id) = spec.key.as_ref().and_then(|k| self.keys.get(k))
                    && let Some(p) = self.procs.get(id)
                {
                    let _ = reply.send(Ok((p.view(), false)));
                    return;
                }
                let _ = reply.send(self.start(*spec).map(|v| (v, true)));
            }
            Msg::List(reply) => {
                let mut all: Vec<ProcView> = self.procs.values().map(Proc::view).collect();
                all.sort_by(|a, b| {
                    (a.state != "running")
                        .cmp(&(b.state != "running"))
                        .then(b.started.cmp(&a.started))
                        .then(b.id.cmp(&a.id))
                });
                let _ = reply.send(all);
            }
            Msg::Get(id, reply) => {
                let found = match self.procs.get(&id) {
                    Some(p) => Ok((p.view(), p.done.subscribe())),
                    None => Err(self.unknown(id)),
                };
                let _ = reply.send(found);
            }
            Msg::Input {
                id,
                data,
                close,
                reply,
            } => {
                let result = match self.procs.get_mut(&id) {
                    None => Err(self.unknown(id)),
                    Some(p) => match &p.stdin {
                        None => Err(AdhocError::Conflict(format!(
                            "the stdin of `{id}` is closed"
                        ))),
                        Some(_) if p.stdin_pending + data.len() > MAX_PENDING_STDIN => {
                            Err(AdhocError::Full(format!(
                                "`{id}` has not read {} bytes of its input yet; at most {} may wait (send more once it reads)",
                                p.stdin_pending, MAX_PENDING_STDIN
                            )))
                        }
                        Some(tx) => {
                            if !data.is_empty() {
                                p.stdin_pending += data.len();
                                let _ = tx.send(Some(data));
                            }
                            if close {
                                let _ = tx.send(None);
                                p.stdin = None;
                            }
                            Ok(())
                        }
                    },
                };
                let _ = reply.send(result);
            }
            Msg::Signal { id, signal, reply } => {
                let result = match self.procs.get(&id) {
                    None => Err(self.unknown(id)),
                    Some(p) if p.status.is_some() => {
                        Err(AdhocError::Conflict(format!("`{id}` has already ended")))
                    }
                    Some(p) => match Signal::try_from(signal) {
                        Err(_) => Err(AdhocError::Invalid(format!("no signal number {signal}"))),
                        Ok(sig) => {
                            self.reaper.signal_group(p.pid, sig);
                            self.event(&id, "signal", format!("sent {} to {id}", sig.as_str()));
                            Ok(p.view())
                        }
                    },
                };
                let _ = reply.send(result);
            }
            Msg::Remove(id, reply) => {
                let result = match self.procs.get(&id) {
                    None => Err(self.unknown(id)),
                    Some(p) if p.status.is_none() => Err(AdhocError::Conflict(format!(
                        "`{id}` is still running; kill it first"
                    ))),
                    Some(_) => {
                        self.forget(&id);
                        Ok(())
                    }
                };
                let _ = reply.send(result);
            }
            Msg::Clear(reply) => {
                let ended: Vec<String> = self
                    .procs
                    .values()
                    .filter(|p| p.status.is_some())
                    .map(|p| p.id.clone())
                    .collect();
                for id in &ended {
                    self.forget(id);
                }
                let _ = reply.send(ended.len());
            }
            Msg::Output { id, stream, bytes } => {
                if let Some(p) = self.procs.get_mut(&id) {
                    let offset = p.output.total;
                    p.output.push(stream, &bytes);
                    if self.output.receiver_count() > 0 {
                        let _ = self.output.send(Arc::new(ProcChunk {
                            id,
                            offset,
                            stream,
                            text: String::from_utf8_lossy(&bytes).into_owned(),
                        }));
                    }
                }
            }
            Msg::Exited { id, status } => {
                let Some(p) = self.procs.get_mut(&id) else {
                    return;
                };
                p.status = Some(status);
                p.ended = Some(SystemTime::now());
                p.stdin = None;
                if p.open_pipes == 0 {
                    p.done.send_replace(true);
                } else {
                    // A process it left behind may hold the pipes; do not wait for it forever.
                    let (tx, id) = (self.tx.clone(), id.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        let _ = tx.send(Msg::Settle(id));
                    });
                }
                let (marker, retain, timed_out) = (p.marker.clone(), p.retain, p.timed_out);
                // Nothing it started outlives it: its group and cgroup went with it; without a
                // cgroup, what left the group is found by marker (a scan of every process).
                if !p.confined {
                    proctable::signal_all(&proctable::with_marker(&marker), Signal::SIGKILL);
                }
                if let Some(store) = &self.store {
                    let _ = store.remove_process(&format!("proc:{id}"), 0);
                }
                let kind = if matches!(status, ExitStatus::Code(_)) && !timed_out {
                    "exited"
                } else {
                    "killed"
                };
                self.event(&id, kind, format!("{id}: {status}"));
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(retain).await;
                    let _ = tx.send(Msg::Expire(id));
                });
            }
            Msg::StdinWritten { id, bytes, closed } => {
                if let Some(p) = self.procs.get_mut(&id) {
                    p.stdin_pending = p.stdin_pending.saturating_sub(bytes);
                    if closed {
                        p.stdin = None;
                        p.stdin_pending = 0;
                    }
                }
            }
            Msg::Eof(id) => {
                if let Some(p) = self.procs.get_mut(&id) {
                    p.open_pipes = p.open_pipes.saturating_sub(1);
                    if p.open_pipes == 0 && p.status.is_some() {
                        p.done.send_replace(true);
                    }
                }
            }
            Msg::Settle(id) => {
                if let Some(p) = self.procs.get(&id) {
                    p.done.send_replace(true);
                }
            }
            Msg::Timeout(id) => {
                if let Some(p) = self.procs.get_mut(&id)
                    && p.status.is_none()
                {
                    p.timed_out = true;
                    self.reaper.signal_group(p.pid, Signal::SIGTERM);
                    let (grace, tx) = (p.grace, self.tx.clone());
                    self.event(&id, "timeout", format!("{id}: timed out; terminating"));
                    tokio::spawn(async move {
                        tokio::time::sleep(grace).await;
                        let _ = tx.send(Msg::Kill(id));
                    });
                }
            }
            Msg::Kill(id) => {
                if let Some(p) = self.procs.get(&id)
                    && p.status.is_none()
                {
                    self.reaper.signal_group(p.pid, Signal::SIGKILL);
                }
            }
            Msg::Expire(id) => {
                if self.procs.get(&id).is_some_and(|p| p.status.is_some()) {
                    self.forget(&id);
                }
            }
        }
    }

    fn forget(&mut self, id: &str) {
        if let Some(p) = self.procs.remove(id)
            && let Some(k) = p.key
        {
            self.keys.remove(&k);
        }
    }

    fn start(&mut self, spec: ProcSpec) -> Result<ProcView, AdhocError> {
        let (argv, display) = match &spec.command {
            AdhocCommand::Argv(a) if a.is_empty() || a[0].is_empty() => {
                return Err(AdhocError::Invalid("the command is empty".into()));
            }
            AdhocCommand::Argv(a) => (a.clone(), a.join(" ")),
            AdhocCommand::Shell(s) if s.trim().is_empty() => {
                return Err(AdhocError::Invalid("the command is empty".into()));
            }
            AdhocCommand::Shell(s) => (vec!["sh".into(), "-c".into(), s.clone()], s.clone()),
        };
        let workdir = match &spec.workdir {
            Some(d) => self.root.join(d),
            None => self.root.clone(),
        };
        if !workdir.is_dir() {
            return Err(AdhocError::Invalid(format!(
                "working directory `{}` does not exist",
                workdir.display()
            )));
        }
        // One rule, whatever the path looks like (`/`, `../..`, a link inside that leads
        // out): where it really is must be inside the project.
        let inside = match (workdir.canonicalize(), self.root.canonicalize()) {
            (Ok(dir), Ok(root)) => dir.starts_with(root),
            _ => false,
        };
        if !inside && !self.anywhere {
            return Err(AdhocError::Invalid(format!(
                "working directory `{}` is outside the project; start corral with `up --procs-anywhere` to allow that",
                workdir.display()
            )));
        }
        let id = format!("p{}", self.next);
        self.next += 1;
        let marker = proctable::marker(&format!("proc:{id}"), 0);
        let mut env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k != proctable::MARKER_VAR)
            .collect();
        for (k, v) in &spec.env {
            env.retain(|(ek, _)| ek != k);
            env.push((k.clone(), v.clone()));
        }
        let crate::spawn::Spawned {
            mut pipes,
            exit,
            pid,
            confined,
            ..
        } = crate::spawn::spawn(
            &self.reaper,
            crate::spawn::Spec {
                argv: &argv,
                cwd: &workdir,
                env: &env,
                marker: Some(&marker),
                stdin: crate::spawn::Io::Piped,
                stdout: crate::spawn::Io::Piped,
                stderr: crate::spawn::Io::Piped,
                identity: None,
                umask: None,
                rlimits: &[],
                cgroup_limits: Default::default(),
                daemon: false,
                own_binary: false,
            },
        )
        .map_err(|e| AdhocError::Invalid(e.0))?;
        if let (Some(store), Some(start_time)) = (&self.store, proctable::start_time(pid as i32)) {
            let _ = store.put_process(&corral_store::ProcessRecord {
                unit: format!("proc:{id}"),
                generation: 0,
                pid,
                start_time,
                marker: marker.clone(),
            });
        }
        // Readers: both pipes into the owner, in arrival order.
        let to_pipe = |fd: Option<std::os::fd::OwnedFd>| {
            fd.and_then(|fd| pipe::Receiver::from_owned_fd(fd).ok())
        };
        for (stream, pipe) in [
            (Stream::Stdout, to_pipe(pipes.stdout.take().map(Into::into))),
            (Stream::Stderr, to_pipe(pipes.stderr.take().map(Into::into))),
        ] {
            let Some(mut pipe) = pipe else { continue };
            let (tx, id) = (self.tx.clone(), id.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = pipe.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let _ = tx.send(Msg::Output {
                        id: id.clone(),
                        stream,
                        bytes: buf[..n].to_vec(),
                    });
                }
                let _ = tx.send(Msg::Eof(id));
            });
        }
        // Stdin: a writer task, so a process that does not read never blocks the owner.
        let stdin_tx = pipes
            .stdin
            .take()
            .map(Into::<std::os::fd::OwnedFd>::into)
            .and_then(|fd| pipe::Sender::from_owned_fd(fd).ok())
            .map(|mut w| {
                let (tx, mut rx) = mpsc::unbounded_channel::<Option<Vec<u8>>>();
                let (owner, id) = (self.tx.clone(), id.clone());
                tokio::spawn(async move {
                    while let Some(Some(data)) = rx.recv().await {
                        let written = w.write_all(&data).await.is_ok();
                        let _ = owner.send(Msg::StdinWritten {
                            id: id.clone(),
                            bytes: data.len(),
                            closed: !written,
                        });
                        if !written {
                            break;
                        }
                    }
                });
                tx
            });
        let mut stdin = stdin_tx;
        let mut stdin_pending = 0;
        if let Some(tx) = &stdin {
            if let Some(data) = &spec.stdin {
                stdin_pending = data.len();
                let _ = tx.send(Some(data.clone()));
            }
            if spec.close_stdin {
                let _ = tx.send(None);
            }
        }
        if spec.close_stdin {
            stdin = None;
        }
        let tx = self.tx.clone();
        let exit_id = id.clone();
        tokio::spawn(async move {
            let status = exit.await.unwrap_or(ExitStatus::Signal(9));
            let _ = tx.send(Msg::Exited {
                id: exit_id,
                status,
            });
        });
        if let Some(t) = spec.timeout {
            let (tx, id) = (self.tx.clone(), id.clone());
            tokio::spawn(async move {
                tokio::time::sleep(t).await;
                let _ = tx.send(Msg::Timeout(id));
            });
        }
        let (done, _) = watch::channel(false);
        let proc = Proc {
            id: id.clone(),
            key: spec.key.clone(),
            command: display,
            pid,
            marker,
            confined,
            started: SystemTime::now(),
            ended: None,
            status: None,
            timed_out: false,
            output: Capture::new(spec.head_bytes, spec.tail_bytes),
            stdin,
            stdin_pending,
            done,
            open_pipes: 2,
            grace: spec.grace,
            retain: spec.retain,
        };
        let view = proc.view();
        if let Some(k) = &spec.key {
            self.keys.insert(k.clone(), id.clone());
        }
        self.procs.insert(id.clone(), proc);
        self.event(
            &id,
            "started",
            format!("{id}: started `{}` (pid {pid})", view.command),
        );
        Ok(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_keeps_head_and_tail_with_exact_counts() {
        let mut c = Capture::new(4, 3);
        c.push(Stream::Stdout, b"ab");
        c.push(Stream::Stdout, b"cdef");
        c.push(Stream::Stderr, b"ghij");
        c.push(Stream::Stdout, b"k");
        let v = c.view();
        assert_eq!((v.head.as_str(), v.tail.as_str()), ("abcd", "ijk"));
        assert_eq!(
            (v.original_bytes, v.retained_bytes, v.omitted_bytes),
            (11, 7, 4)
        );
        assert_eq!(v.runs, None, "something was dropped");
        let mut small = Capture::new(4, 10);
        small.push(Stream::Stdout, b"hel");
        small.push(Stream::Stdout, b"lo ");
        small.push(Stream::Stderr, b"oops");
        let v = small.view();
        assert_eq!(
            (v.head.as_str(), v.tail.as_str(), v.omitted_bytes),
            ("hell", "o oops", 0)
        );
        assert_eq!(
            v.runs.unwrap(),
            [
                (Stream::Stdout, "hello ".to_string()),
                (Stream::Stderr, "oops".to_string())
            ]
        );
    }
}
