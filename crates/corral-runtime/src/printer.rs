//! The multiplexed terminal view of `corral up`: `name | line`, one stable colour per unit.
//!
//! Printing runs on its own OS thread behind a bounded queue. A terminal that cannot keep up
//! costs display lines (counted and reported), never a blocked pump: the log files get every
//! line regardless.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use anstyle::{AnsiColor, Style};
use corral_engine::{Plan, UnitId};
use tokio::sync::mpsc;

use crate::logs::Stream;

const QUEUE: usize = 8192;
/// One stable colour per unit, here and in `corral logs`.
pub const PALETTE: [AnsiColor; 6] = [
    AnsiColor::Cyan,
    AnsiColor::Yellow,
    AnsiColor::Green,
    AnsiColor::Magenta,
    AnsiColor::Blue,
    AnsiColor::Red,
];

enum Msg {
    Line {
        unit: UnitId,
        stream: Stream,
        text: Vec<u8>,
    },
    System(String),
    /// The units changed (a reload): names by unit id from now on.
    Names(Arc<Plan>),
}

#[derive(Clone)]
pub struct Printer {
    tx: Option<mpsc::Sender<Msg>>,
    dropped: Arc<AtomicU64>,
}

pub struct PrinterThread {
    handle: JoinHandle<()>,
}

impl Printer {
    /// A printer for the units of `plan` (named by unit id), writing to stdout. `quiet` prints
    /// nothing.
    pub fn start(mut plan: Arc<Plan>, quiet: bool) -> (Printer, Option<PrinterThread>) {
        if quiet {
            return (
                Printer {
                    tx: None,
                    dropped: Arc::default(),
                },
                None,
            );
        }
        let (tx, mut rx) = mpsc::channel::<Msg>(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let dropped2 = dropped.clone();
        let width = plan
            .units
            .iter()
            .map(|u| u.name.len())
            .max()
            .unwrap_or(0)
            .max("corral".len());
        let handle = std::thread::Builder::new()
            .name("corral-printer".into())
            .spawn(move || {
                // Colours are stripped (when stdout is no terminal) before the buffer, not after:
                // so a line is one `write` however many styled pieces it has.
                let stdout = std::io::stdout();
                let choice = anstream::AutoStream::choice(&stdout);
                let buffered: Box<dyn Write> =
                    Box::new(std::io::BufWriter::with_capacity(64 * 1024, stdout.lock()));
                let mut out = anstream::AutoStream::new(buffered, choice);
                let sys = Style::new().bold();
                while let Some(msg) = rx.blocking_recv() {
                    let lost = dropped2.swap(0, Ordering::Relaxed);
                    if lost > 0 {
                        let _ = writeln!(
                            out,
                            "{sys}{:width$}{sys:#} | {lost} lines not shown (the terminal is slower than the output; the log files have them all)",
                            "corral"
                        );
                    }
                    let _ = match msg {
                        Msg::Line { unit, stream, text } => {
                            let style = Style::new().fg_color(Some(PALETTE[unit.0 % PALETTE.len()].into()));
                            let bar = if stream == Stream::Stderr { "!" } else { "|" };
                            let name = plan.units.get(unit.0).map_or("?", |u| u.name.as_str());
                            write!(out, "{style}{name:width$} {bar}{style:#} ")
                                .and_then(|_| out.write_all(&text))
                                .and_then(|_| out.write_all(b"\n"))
                        }
                        Msg::System(text) => writeln!(out, "{sys}{:width$} |{sys:#} {text}", "corral"),
                        Msg::Names(new) => {
                            plan = new;
                            Ok(())
                        }
                    };
                    if rx.is_empty() {
                        let _ = out.flush();
                    }
                }
                let _ = out.flush();
            })
            .expect("spawning the printer thread");
        (
            Printer {
                tx: Some(tx),
                dropped,
            },
            Some(PrinterThread { handle }),
        )
    }

    /// Show a line of a unit's output, unless the queue is full.
    /// Whether units' lines are shown (not `quiet`).
    pub fn shows_lines(&self) -> bool {
        self.tx.is_some()
    }

    pub fn line(&self, unit: UnitId, stream: Stream, text: &[u8]) {
        if let Some(tx) = &self.tx {
            let msg = Msg::Line {
                unit,
                stream,
                text: text.to_vec(),
            };
            if tx.try_send(msg).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Name units as `plan` names them from now on.
    pub async fn rename(&self, plan: Arc<Plan>) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Names(plan)).await;
        }
    }

    /// A message from corral itself. Waits for room: these are few and must not be lost.
    pub async fn system(&self, text: String) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::System(text)).await;
        }
    }
}

impl PrinterThread {
    /// Wait until everything queued is printed. Every `Printer` clone must be dropped first.
    pub fn finish(self) {
        let _ = self.handle.join();
    }
}
