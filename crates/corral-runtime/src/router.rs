//! The output router: the one owner of what happens to output after the keeper has written it
//! to the log files — the terminal view (the printer), live followers (`logs -f`), and the
//! patterns readiness waits on (`log_ready`, a `log` readiness probe).
//!
//! It is a task of its own beside the supervisor, not a step of the supervisor's loop: a service
//! flooding its output keeps this task busy, never the engine, so a `restart` is not queued
//! behind 200,000 lines. Only what the engine must know leaves it: a pattern matched, the keeper
//! was lost.
//!
//! Ordering: the supervisor tells the router what to expect of a process ([`Router::expect`])
//! *before* it hands the pipes to the keeper, on the same queue the keeper's lines arrive on, so
//! no line of a process is checked before its patterns are known.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use corral_engine::Plan;
use regex::Regex;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::{broadcast, oneshot};

use crate::keeper::{Lines, TapMsg};
use crate::printer::Printer;
use crate::supervisor::LineNotice;

/// What a process's output is watched for.
#[derive(Clone, Default)]
pub struct Watch {
    /// Report [`Found::LogReady`] on the first match.
    pub log_ready: Option<Regex>,
    /// Report [`Found::ReadyLine`] on the first match.
    pub readiness: Option<Regex>,
}

/// What the router tells the supervisor.
#[derive(Debug)]
pub enum Found {
    LogReady {
        unit: String,
        generation: u64,
    },
    /// A line matched the unit's `log` readiness probe.
    ReadyLine {
        unit: String,
        generation: u64,
        text: String,
    },
    /// The keeper connection is gone.
    KeeperLost,
    /// A unit's log file could not be written, or is written again: for the user.
    LogTrouble {
        unit: String,
        trouble: crate::logs::LogTrouble,
    },
    /// The keeper's copy of a generation's read ends: the supervisor holds it too.
    Held {
        attach: crate::keeper::Attach,
        stdout: std::os::fd::OwnedFd,
        stderr: std::os::fd::OwnedFd,
    },
    /// The keeper could not take a generation's pipes: the supervisor reads them itself.
    Refused {
        attach: crate::keeper::Attach,
    },
}

/// A process: its generation and a hash of its unit's name. The set of processes still
/// draining has an entry per running process, and a copy of each name (a heap block of its
/// own) cost more than the rest of the entry. (Two names of one 64-bit hash with the same
/// generation: not a practical concern.)
type Key = (u64, u64);

enum In {
    Tap(TapMsg),
    Expect {
        unit: String,
        generation: u64,
        watch: Watch,
    },
    Plan(Arc<Plan>),
    Drained(oneshot::Sender<()>),
    Close(oneshot::Sender<()>),
}

/// The handle: cheap to clone; every call only queues a message.
#[derive(Clone)]
pub struct Router {
    tx: UnboundedSender<In>,
    /// The printer shows every unit's lines.
    terminal: bool,
}

struct Owner {
    printer: Printer,
    lines: broadcast::Sender<Arc<LineNotice>>,
    found: Box<dyn Fn(Found) + Send>,
    /// Units by id and their ids by name (the plan, shared with the supervisor and the
    /// printer): for the printer (colour and name). Sharing it, not a list of names and an index
    /// of its own, keeps an instance created among thousands from copying and hashing them all.
    plan: Arc<Plan>,
    watches: HashMap<Key, Watch>,
    /// Processes whose output the keeper has not finished yet.
    draining: HashSet<Key>,
    /// Hashes names into keys.
    hasher: RandomState,
    waiting: Vec<oneshot::Sender<()>>,
}

impl Router {
    /// Start the router for the units of `plan`. `found` is called, on the
    /// router's task, for what the supervisor must hear.
    pub fn start(
        printer: Printer,
        plan: Arc<Plan>,
        lines: broadcast::Sender<Arc<LineNotice>>,
        found: impl Fn(Found) + Send + 'static,
    ) -> Router {
        let (tx, rx) = unbounded_channel();
        let terminal = printer.shows_lines();
        let owner = Owner {
            printer,
            lines,
            found: Box::new(found),
            plan,
            watches: HashMap::new(),
            draining: HashSet::new(),
            hasher: RandomState::new(),
            waiting: Vec::new(),
        };
        tokio::spawn(owner.run(rx));
        Router { tx, terminal }
    }

    /// What the keeper sends.
    pub fn tap(&self, msg: TapMsg) {
        let _ = self.tx.send(In::Tap(msg));
    }

    /// A process's pipes are about to go to the keeper: wait for its end of output, and
    /// watch its lines. Returns whether the lines themselves are wanted (for the terminal or a
    /// pattern), or only news of them (which wakes followers: they read the log file).
    pub fn expect(&self, unit: &str, generation: u64, watch: Watch) -> bool {
        let wanted = self.terminal || watch.log_ready.is_some() || watch.readiness.is_some();
        let _ = self.tx.send(In::Expect {
            unit: unit.to_string(),
            generation,
            watch,
        });
        wanted
    }

    /// The units are now `plan`'s (a reload).
    pub fn plan(&self, plan: Arc<Plan>) {
        let _ = self.tx.send(In::Plan(plan));
    }

    /// End the router (corral is ending): it lets go of the printer, whose thread can then
    /// finish. Handles may outlive it (a keeper link's reader); what they send is dropped.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(In::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Wait (at most `limit`) until every expected process's output has been seen to its end;
    /// false if some has not.
    pub async fn drained(&self, limit: Duration) -> bool {
        let (tx, rx) = oneshot::channel();
        self.tx.send(In::Drained(tx)).is_ok()
            && matches!(tokio::time::timeout(limit, rx).await, Ok(Ok(())))
    }
}

impl Owner {
    async fn run(mut self, mut rx: UnboundedReceiver<In>) {
        let mut closed = None;
        while let Some(msg) = rx.recv().await {
            match msg {
                In::Tap(m) => self.tap(m),
                In::Expect {
                    unit,
                    generation,
                    watch,
                } => {
                    let key = self.key(&unit, generation);
                    if watch.log_ready.is_some() || watch.readiness.is_some() {
                        self.watches.insert(key, watch);
                    }
                    self.draining.insert(key);
                }
                In::Plan(plan) => {
                    self.plan = plan.clone();
                    self.printer.rename(plan).await;
                }
                In::Drained(reply) => self.waiting.push(reply),
                In::Close(reply) => {
                    closed = Some(reply);
                    break;
                }
            }
            if self.draining.is_empty() {
                for w in self.waiting.drain(..) {
                    let _ = w.send(());
                }
            }
        }
        // Let go of the printer before saying so.
        drop(self);
        if let Some(reply) = closed {
            let _ = reply.send(());
        }
    }

    fn tap(&mut self, msg: TapMsg) {
        match msg {
            TapMsg::Lines {
                unit,
                generation,
                stream,
                lines,
                ..
            } => {
                if let Some(id) = self.plan.find(&unit) {
                    for line in lines.iter() {
                        self.printer.line(id, stream, line);
                    }
                }
                self.news(&unit);
                self.check(&unit, generation, &lines);
            }
            TapMsg::News { unit, .. } => self.news(&unit),
            TapMsg::Eof { unit, generation } => {
                let key = self.key(&unit, generation);
                self.watches.remove(&key);
                self.draining.remove(&key);
            }
            TapMsg::Held {
                attach,
                stdout,
                stderr,
            } => (self.found)(Found::Held {
                attach,
                stdout,
                stderr,
            }),
            TapMsg::Refused { attach } => (self.found)(Found::Refused { attach }),
            TapMsg::Trouble { unit, trouble, .. } => {
                (self.found)(Found::LogTrouble { unit, trouble })
            }
            TapMsg::Lost => {
                // What the dead keeper held will not finish.
                self.draining.clear();
                (self.found)(Found::KeeperLost);
            }
        }
    }

    /// Followers read the log files; they only need waking.
    fn news(&self, unit: &str) {
        if self.lines.receiver_count() > 0 {
            let _ = self.lines.send(Arc::new(LineNotice {
                unit: unit.to_string(),
            }));
        }
    }

    fn key(&self, unit: &str, generation: u64) -> Key {
        (generation, self.hasher.hash_one(unit))
    }

    fn check(&mut self, unit: &str, generation: u64, lines: &Lines) {
        let key = self.key(unit, generation);
        let Some(watch) = self.watches.get_mut(&key) else {
            return;
        };
        for line in lines.iter() {
            let text = String::from_utf8_lossy(line);
            if watch.log_ready.as_ref().is_some_and(|r| r.is_match(&text)) {
                watch.log_ready = None;
                (self.found)(Found::LogReady {
                    unit: unit.to_string(),
                    generation,
                });
            }
            if watch.readiness.as_ref().is_some_and(|r| r.is_match(&text)) {
                watch.readiness = None;
                (self.found)(Found::ReadyLine {
                    unit: unit.to_string(),
                    generation,
                    text: text.into_owned(),
                });
            }
        }
        if watch.log_ready.is_none() && watch.readiness.is_none() {
            self.watches.remove(&key);
        }
    }
}
