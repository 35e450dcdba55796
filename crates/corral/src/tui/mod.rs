//! `corral tui`: the terminal UI, a client of the running corral's API (through corral-proto,
//! like every client command). It redraws when something happens — a key, a change the daemon
//! reports, a log line — and on a slow tick for uptimes and CPU, never on a fast timer.
//!
//! The terminal is restored however it ends: on `q`, on an error, and on a panic (a hook puts
//! it back before the message is printed).

pub mod app;
pub mod view;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use corral_proto::client::{Client, Method};
use corral_proto::wire;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event as TermEvent, KeyEventKind};
use ratatui::crossterm::{execute, terminal};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

use app::{Action, App};

use crate::commands::ctl::{cli_error, client};
use crate::commands::{CliError, runtime_threaded};

enum Msg {
    Key(event::KeyEvent),
    Mouse(event::MouseEvent),
    Redraw,
    Units(Vec<wire::Service>),
    Others(Vec<wire::Instance>, Vec<wire::Proc>, Vec<wire::Template>),
    ProcOutput(wire::Proc),
    Line(wire::Line),
    /// Something changed: fetch the units (and instances, processes) again.
    Changed,
    /// Time passed: the units' uptimes and CPU.
    Tick,
    Link(bool),
    Status(String),
    /// The stack this TUI runs (`up --tui`) has ended by itself.
    Ended,
}

/// Put the terminal back as it was.
fn restore() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(
        std::io::stdout(),
        terminal::LeaveAlternateScreen,
        ratatui::crossterm::event::DisableMouseCapture,
        ratatui::crossterm::cursor::Show
    );
}

pub fn run(file: Option<&Path>) -> Result<ExitCode, CliError> {
    run_with(file, false, None)
}

/// [`run`], for `up --tui` too: `owns_stack` says (in the footer) that quitting stops the
/// stack, and `ended` ends the TUI when the stack has ended by itself.
pub fn run_with(
    file: Option<&Path>,
    owns_stack: bool,
    ended: Option<tokio::sync::oneshot::Receiver<()>>,
) -> Result<ExitCode, CliError> {
    let c = client(file)?;
    let rt = runtime_threaded()?;
    // With no corral running, say so before touching the terminal.
    let units: Vec<wire::Service> = rt
        .block_on(c.call(Method::GET, "/v1/services?metrics=true"))
        .map_err(cli_error)?;
    let project: wire::Project = rt
        .block_on(c.call(Method::GET, "/v1/project"))
        .map_err(cli_error)?;
    let mut app = App {
        project: project.file,
        owns_stack,
        color: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        ..App::default()
    };
    app.set_units(units);

    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        previous(info);
    }));
    terminal::enable_raw_mode()
        .map_err(|e| CliError::Run(format!("cannot use this terminal: {e}")))?;
    execute!(
        std::io::stdout(),
        terminal::EnterAlternateScreen,
        ratatui::crossterm::event::EnableMouseCapture
    )
    .map_err(|e| CliError::Run(format!("cannot use this terminal: {e}")))?;
    let result = rt.block_on(event_loop(c, app, ended));
    restore();
    let _ = std::io::stdout().flush();
    result
}

async fn event_loop(
    c: Client,
    mut app: App,
    ended: Option<tokio::sync::oneshot::Receiver<()>>,
) -> Result<ExitCode, CliError> {
    let mut term = Terminal::new(CrosstermBackend::new(std::io::stdout()))
        .map_err(|e| CliError::Run(format!("cannot draw: {e}")))?;
    let (tx, mut rx) = unbounded_channel::<Msg>();
    if let Some(ended) = ended {
        let tx = tx.clone();
        tokio::spawn(async move {
            if ended.await.is_ok() {
                let _ = tx.send(Msg::Ended);
            }
        });
    }
    // Keys and resizes, read on a thread of their own (reading blocks).
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            while let Ok(ev) = event::read() {
                let msg = match ev {
                    TermEvent::Key(k) if k.kind != KeyEventKind::Release => Msg::Key(k),
                    TermEvent::Mouse(m) => Msg::Mouse(m),
                    TermEvent::Resize(..) => Msg::Redraw,
                    _ => continue,
                };
                if tx.send(msg).is_err() {
                    break;
                }
            }
        });
    }
    // The daemon's events: each one means "look again"; a lost stream is shown and retried.
    {
        let (c, tx) = (c.clone(), tx.clone());
        tokio::spawn(async move {
            loop {
                let _ = tx.send(Msg::Link(true));
                let t = tx.clone();
                let r = c
                    .stream("/v1/events", |_, _| t.send(Msg::Changed).is_ok())
                    .await;
                if tx.send(Msg::Link(false)).is_err() {
                    return;
                }
                let _ = r;
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = tx.send(Msg::Changed);
            }
        });
    }
    // SIGTERM and SIGHUP (a closed terminal, `kill`): end like `q`, so the terminal is put
    // back (raw mode turns Ctrl-C into a key, handled as `q` too).
    for kind in [
        tokio::signal::unix::SignalKind::terminate(),
        tokio::signal::unix::SignalKind::hangup(),
    ] {
        if let Ok(mut sig) = tokio::signal::unix::signal(kind) {
            let tx = tx.clone();
            tokio::spawn(async move {
                if sig.recv().await.is_some() {
                    let _ = tx.send(Msg::Ended);
                }
            });
        }
    }
    // Uptimes and CPU move without events: a slow tick (the units only).
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                if tx.send(Msg::Tick).is_err() {
                    return;
                }
            }
        });
    }
    let mut fetching = false;
    let mut again = false;
    let mut follow: Option<tokio::task::JoinHandle<()>> = None;
    // What came in since the last frame: all of it is taken in before the next one is drawn,
    // so a burst of log lines is one frame, not one per line.
    let mut pending = std::collections::VecDeque::new();
    let mut frames: Vec<Duration> = Vec::new();
    loop {
        if pending.is_empty() {
            let t = std::time::Instant::now();
            term.draw(|f| view::draw(f, &app))
                .map_err(|e| CliError::Run(format!("cannot draw: {e}")))?;
            frames.push(t.elapsed());
            let Some(msg) = rx.recv().await else { break };
            pending.push_back(msg);
            while pending.len() < 10_000
                && let Ok(m) = rx.try_recv()
            {
                pending.push_back(m);
            }
        }
        let Some(msg) = pending.pop_front() else {
            continue;
        };
        match msg {
            Msg::Key(k) => match app.key(k) {
                Action::Quit => break,
                Action::None => {}
                Action::Follow(name) => {
                    if let Some(f) = follow.take() {
                        f.abort();
                    }
                    let path = format!(
                        "/v1/services/{}/logs?tail=200&follow=true",
                        corral_proto::client::encode(&name)
                    );
                    follow = Some(spawn_follow(&c, &tx, path));
                }
                Action::FollowAll => {
                    if let Some(f) = follow.take() {
                        f.abort();
                    }
                    follow = Some(spawn_follow(
                        &c,
                        &tx,
                        "/v1/logs?tail=200&follow=true".into(),
                    ));
                }
                Action::Copy(text) => copy(&text),
                Action::CreateInstance(template, params) => {
                    let body = serde_json::json!({
                        "template": template,
                        "params": params.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
                    });
                    let (c, tx) = (c.clone(), tx.clone());
                    tokio::spawn(async move {
                        let r = c
                            .call_with::<wire::Instance>(
                                Method::POST,
                                "/v1/instances",
                                body.to_string().into_bytes(),
                            )
                            .await;
                        let text = match r {
                            Ok(i) => format!("instance {} made; preparing", i.name),
                            Err(e) => format!("new instance: {e}"),
                        };
                        let _ = tx.send(Msg::Status(text));
                        let _ = tx.send(Msg::Changed);
                    });
                }
                Action::DeleteInstance(name) => {
                    let path = format!("/v1/instances/{}", corral_proto::client::encode(&name));
                    report(&c, &tx, Method::DELETE, path, format!("delete {name}"));
                }
                Action::RunProc(line) => {
                    let body = serde_json::json!({ "command": line });
                    let (c, tx) = (c.clone(), tx.clone());
                    tokio::spawn(async move {
                        let r = c
                            .call_with::<wire::Proc>(
                                Method::POST,
                                "/v1/procs",
                                body.to_string().into_bytes(),
                            )
                            .await;
                        let text = match r {
                            Ok(p) => {
                                let _ = tx.send(Msg::ProcOutput(p.clone()));
                                format!("process {} started (pid {})", p.id, p.pid)
                            }
                            Err(e) => format!("run: {e}"),
                        };
                        let _ = tx.send(Msg::Status(text));
                        let _ = tx.send(Msg::Changed);
                    });
                }
                Action::ShowProc(id) => {
                    let (c, tx) = (c.clone(), tx.clone());
                    tokio::spawn(async move {
                        let path = format!("/v1/procs/{}", corral_proto::client::encode(&id));
                        match c.call::<wire::Proc>(Method::GET, &path).await {
                            Ok(p) => {
                                let _ = tx.send(Msg::ProcOutput(p));
                            }
                            Err(e) => {
                                let _ = tx.send(Msg::Status(format!("{id}: {e}")));
                            }
                        }
                    });
                }
                Action::Signal(name, sig) => {
                    let path = format!(
                        "/v1/services/{}/signal?signal={sig}",
                        corral_proto::client::encode(&name)
                    );
                    report(&c, &tx, Method::POST, path, format!("signal {name}"));
                }
                Action::Do(verb, name) => {
                    app.status = format!("{} {name}…", verb.as_str());
                    let path = format!(
                        "/v1/services/{}/{}?wait=true",
                        corral_proto::client::encode(&name),
                        verb.as_str()
                    );
                    report(
                        &c,
                        &tx,
                        Method::POST,
                        path,
                        format!("{} {name}", verb.as_str()),
                    );
                }
            },
            Msg::Redraw => {}
            Msg::Mouse(m) => app.mouse(m),
            Msg::Units(u) => {
                fetching = false;
                app.set_units(u);
                if std::mem::take(&mut again) {
                    fetching = true;
                    spawn_fetch(&c, &tx, true);
                }
            }
            Msg::Line(l) => app.push_line(l),
            Msg::Others(i, p, t) => {
                app.instances = i;
                app.procs = p;
                app.templates = t;
                app.selected_instance = app
                    .selected_instance
                    .min(app.instances.len().saturating_sub(1));
                app.selected_proc = app.selected_proc.min(app.procs.len().saturating_sub(1));
                // The process shown: its latest head and tail.
                if let Some(shown) = &app.proc_output
                    && let Some(p) = app.procs.iter().find(|p| p.id == shown.id)
                {
                    app.proc_output = Some(p.clone());
                }
            }
            Msg::ProcOutput(p) => app.proc_output = Some(p),
            Msg::Changed => {
                // Coalesced: a burst of events is one fetch.
                if fetching {
                    again = true;
                } else {
                    fetching = true;
                    spawn_fetch(&c, &tx, true);
                }
            }
            Msg::Tick if !fetching => {
                fetching = true;
                spawn_fetch(&c, &tx, app.tab != app::Tab::Units);
            }
            Msg::Tick => {}
            Msg::Link(up) => app.connected = up,
            Msg::Status(s) => app.status = s,
            Msg::Ended => break,
        }
    }
    if let Some(f) = follow {
        f.abort();
    }
    // For the benchmark: how long frames took (`CORRAL_TUI_STATS=FILE`).
    if let Some(path) = std::env::var_os("CORRAL_TUI_STATS") {
        frames.sort();
        let at = |q: f64| {
            frames
                .get(((frames.len() as f64 - 1.0) * q) as usize)
                .copied()
        };
        let us = |d: Option<Duration>| d.map_or(0, |d| d.as_micros());
        let _ = std::fs::write(
            path,
            format!(
                "frames {} median_us {} p99_us {} max_us {}\n",
                frames.len(),
                us(at(0.5)),
                us(at(0.99)),
                us(frames.last().copied())
            ),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Ask the daemon (an answer `{message}`) on a task of its own; the message, or what went wrong
/// with `what`, becomes the status line, and the lists are fetched again.
fn report(c: &Client, tx: &UnboundedSender<Msg>, method: Method, path: String, what: String) {
    let (c, tx) = (c.clone(), tx.clone());
    tokio::spawn(async move {
        let text = match c.call::<wire::Done>(method, &path).await {
            Ok(d) => d.message,
            Err(e) => format!("{what}: {e}"),
        };
        let _ = tx.send(Msg::Status(text));
        let _ = tx.send(Msg::Changed);
    });
}

/// Fetch the units, and with `others` the instances, processes and templates too.
fn spawn_fetch(c: &Client, tx: &UnboundedSender<Msg>, others: bool) {
    let (c, tx) = (c.clone(), tx.clone());
    tokio::spawn(async move {
        // Instances, processes and templates too (small lists; the tabs show them).
        let wanted = others;
        let others = async {
            Some((
                c.call::<Vec<wire::Instance>>(Method::GET, "/v1/instances")
                    .await
                    .ok()?,
                c.call::<Vec<wire::Proc>>(Method::GET, "/v1/procs")
                    .await
                    .ok()?,
                c.call::<Vec<wire::Template>>(Method::GET, "/v1/templates")
                    .await
                    .ok()?,
            ))
        };
        if wanted && let Some((i, p, t)) = others.await {
            let _ = tx.send(Msg::Others(i, p, t));
        }
        match c
            .call::<Vec<wire::Service>>(Method::GET, "/v1/services?metrics=true")
            .await
        {
            Ok(u) => {
                let _ = tx.send(Msg::Units(u));
            }
            Err(e) => {
                let _ = tx.send(Msg::Status(format!("cannot list the units: {e}")));
                let _ = tx.send(Msg::Units(Vec::new()));
            }
        }
    });
}

/// Put `text` on the clipboard of the terminal we run in (OSC 52: works over ssh, and in tmux
/// with `set-clipboard on`).
fn copy(text: &str) {
    // Base64, which the escape sequence takes; a few lines rather than a crate.
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(text.len() * 4 / 3 + 4);
    for chunk in text.as_bytes().chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    let mut stdout = std::io::stdout();
    let _ = write!(stdout, "\x1b]52;c;{out}\x07");
    let _ = stdout.flush();
}

/// Follow the log stream at `path` (one unit's, or all) into the TUI.
fn spawn_follow(
    c: &Client,
    tx: &UnboundedSender<Msg>,
    path: String,
) -> tokio::task::JoinHandle<()> {
    let (c, tx) = (c.clone(), tx.clone());
    tokio::spawn(async move {
        let _ = c
            .stream(&path, |event, data| {
                if event == "line"
                    && let Ok(l) = serde_json::from_str::<wire::Line>(data)
                {
                    return tx.send(Msg::Line(l)).is_ok();
                }
                true
            })
            .await;
    })
}
