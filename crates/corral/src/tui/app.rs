//! The terminal UI's state and what each key does to it — no terminal, no I/O, so it is tested
//! directly. The event loop (`mod.rs`) feeds it keys and what the daemon says, and carries out
//! the [`Action`]s it returns.

use std::collections::VecDeque;

use corral_proto::wire;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// Log lines kept for the open log view.
pub const MAX_LINES: usize = 5000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Start,
    Stop,
    Restart,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Start => "start",
            Verb::Stop => "stop",
            Verb::Restart => "restart",
        }
    }
}

/// What the event loop must do after a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    None,
    Quit,
    /// Ask the daemon to start/stop/restart a unit.
    Do(Verb, String),
    /// Follow this unit's log (the previous follow ends).
    Follow(String),
}

#[derive(Default)]
pub struct App {
    pub project: String,
    pub units: Vec<wire::Service>,
    /// Index into [`App::visible`].
    pub selected: usize,
    /// The name filter (`/`); `filtering` while it is being typed.
    pub filter: String,
    pub filtering: bool,
    /// The unit whose log is shown, and its lines (newest last).
    pub log_unit: Option<String>,
    pub lines: VecDeque<wire::Line>,
    /// Lines scrolled up from the bottom; 0 follows.
    pub scroll: usize,
    /// A destructive action waiting for `y`.
    pub confirm: Option<(Verb, String)>,
    pub help: bool,
    /// The last outcome or error, shown above the footer.
    pub status: String,
    /// The daemon's event stream is up.
    pub connected: bool,
    /// Colours (off with NO_COLOR).
    pub color: bool,
    /// Quitting stops the stack (`up --tui`), said in the footer.
    pub owns_stack: bool,
}

impl App {
    /// The units the filter lets through, in the daemon's order.
    pub fn visible(&self) -> Vec<&wire::Service> {
        let f = self.filter.to_lowercase();
        self.units
            .iter()
            .filter(|u| f.is_empty() || u.name.to_lowercase().contains(&f))
            .collect()
    }

    pub fn selected_name(&self) -> Option<String> {
        self.visible().get(self.selected).map(|u| u.name.clone())
    }

    /// New units from the daemon; the selection stays on the same unit where it can.
    pub fn set_units(&mut self, units: Vec<wire::Service>) {
        let keep = self.selected_name();
        self.units = units;
        let visible = self.visible();
        self.selected = keep
            .and_then(|k| visible.iter().position(|u| u.name == k))
            .unwrap_or(self.selected)
            .min(visible.len().saturating_sub(1));
    }

    pub fn push_line(&mut self, line: wire::Line) {
        if self.log_unit.as_deref() != Some(line.unit.as_str()) {
            return;
        }
        self.lines.push_back(line);
        if self.lines.len() > MAX_LINES {
            self.lines.pop_front();
        }
        // Scrolled up: the view stays on the same lines while new ones come.
        if self.scroll > 0 {
            self.scroll = (self.scroll + 1).min(self.lines.len());
        }
    }

    fn move_by(&mut self, delta: isize) {
        let n = self.visible().len();
        if n == 0 {
            self.selected = 0;
            return;
        }
        let next = (self.selected as isize + delta).clamp(0, n as isize - 1);
        self.selected = next as usize;
    }

    /// What a key does.
    pub fn key(&mut self, key: KeyEvent) -> Action {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        if self.help {
            self.help = false;
            return Action::None;
        }
        if let Some((verb, name)) = self.confirm.take() {
            return match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => Action::Do(verb, name),
                _ => {
                    self.status = format!("{} {name}: cancelled", verb.as_str());
                    Action::None
                }
            };
        }
        if self.filtering {
            match key.code {
                KeyCode::Enter => self.filtering = false,
                KeyCode::Esc => {
                    self.filtering = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) => self.filter.push(c),
                _ => {}
            }
            self.selected = 0;
            return Action::None;
        }
        match key.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Char('?') => self.help = true,
            KeyCode::Char('j') | KeyCode::Down => self.move_by(1),
            KeyCode::Char('k') | KeyCode::Up => self.move_by(-1),
            KeyCode::Char('g') | KeyCode::Home => self.selected = 0,
            KeyCode::Char('G') | KeyCode::End => self.move_by(isize::MAX / 2),
            KeyCode::Char('/') => {
                self.filtering = true;
                self.filter.clear();
            }
            KeyCode::Esc => self.filter.clear(),
            KeyCode::PageUp => {
                self.scroll = (self.scroll + 10).min(self.lines.len().saturating_sub(1));
            }
            KeyCode::PageDown => self.scroll = self.scroll.saturating_sub(10),
            KeyCode::Char('f') => self.scroll = 0,
            KeyCode::Enter => {
                if let Some(name) = self.selected_name() {
                    self.log_unit = Some(name.clone());
                    self.lines.clear();
                    self.scroll = 0;
                    return Action::Follow(name);
                }
            }
            KeyCode::Char('S') => {
                if let Some(name) = self.selected_name() {
                    return Action::Do(Verb::Start, name);
                }
            }
            KeyCode::Char(c @ ('r' | 's')) => {
                if let Some(name) = self.selected_name() {
                    let verb = if c == 'r' { Verb::Restart } else { Verb::Stop };
                    self.confirm = Some((verb, name));
                }
            }
            _ => {}
        }
        Action::None
    }
}

/// Every key, for the help overlay and the footer.
pub const KEYS: &[(&str, &str)] = &[
    ("j/k ↑/↓", "move"),
    ("g/G", "top/bottom"),
    ("Enter", "follow the unit's log"),
    ("PgUp/PgDn", "scroll the log (f: follow again)"),
    ("/", "filter by name (Enter keeps, Esc clears)"),
    ("S", "start"),
    ("s", "stop (asks y/n)"),
    ("r", "restart (asks y/n)"),
    ("?", "this help"),
    ("q", "quit"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    pub(crate) fn unit(name: &str, state: wire::UnitState) -> wire::Service {
        wire::Service {
            name: name.into(),
            kind: "service".into(),
            state,
            pid: Some(100),
            ready: true,
            uptime_secs: Some(65.0),
            restarts: 0,
            last_exit: None,
            health: None,
            ports: Vec::new(),
            waiting_on: Vec::new(),
            reason: None,
            backoff_until_ms: None,
            depends_on: Vec::new(),
            held: false,
            adopted: false,
            usage: None,
        }
    }

    #[test]
    fn moving_filtering_and_confirming() {
        let mut a = App::default();
        a.set_units(vec![
            unit("api", wire::UnitState::Running),
            unit("db", wire::UnitState::Running),
            unit("worker", wire::UnitState::Running),
        ]);
        a.key(key(KeyCode::Char('j')));
        a.key(key(KeyCode::Char('j')));
        a.key(key(KeyCode::Char('j')));
        assert_eq!(a.selected_name().as_deref(), Some("worker"));
        a.key(key(KeyCode::Char('g')));
        assert_eq!(a.selected_name().as_deref(), Some("api"));
        // A stop asks first; anything but y cancels.
        assert_eq!(a.key(key(KeyCode::Char('s'))), Action::None);
        assert_eq!(a.key(key(KeyCode::Char('n'))), Action::None);
        assert!(a.status.contains("cancelled"));
        a.key(key(KeyCode::Char('r')));
        assert_eq!(
            a.key(key(KeyCode::Char('y'))),
            Action::Do(Verb::Restart, "api".into())
        );
        // The filter keeps the selection on what is shown.
        a.key(key(KeyCode::Char('/')));
        for c in "wor".chars() {
            a.key(key(KeyCode::Char(c)));
        }
        a.key(key(KeyCode::Enter));
        assert_eq!(a.visible().len(), 1);
        assert_eq!(a.selected_name().as_deref(), Some("worker"));
        assert_eq!(a.key(key(KeyCode::Enter)), Action::Follow("worker".into()));
        a.key(key(KeyCode::Esc));
        assert_eq!(a.visible().len(), 3);
        // A unit that goes away moves the selection back in range.
        a.key(key(KeyCode::Char('G')));
        a.set_units(vec![unit("api", wire::UnitState::Running)]);
        assert_eq!(a.selected_name().as_deref(), Some("api"));
        assert_eq!(a.key(key(KeyCode::Char('q'))), Action::Quit);
    }
}
