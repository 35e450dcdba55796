//! The terminal UI's state and what each key does to it — no terminal, no I/O, so it is tested
//! directly. The event loop (`mod.rs`) feeds it keys and what the daemon says, and carries out
//! the [`Action`]s it returns.

use std::collections::VecDeque;

use corral_proto::wire;
use ratatui::crossterm::event::{
    KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};

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
    /// Follow every unit's log, interleaved.
    FollowAll,
    /// Send a signal (its name) to a unit.
    Signal(String, &'static str),
    /// Put this text on the terminal's clipboard (OSC 52).
    Copy(String),
    /// Make an instance of a template with parameters.
    CreateInstance(String, Vec<(String, String)>),
    DeleteInstance(String),
    /// Run a shell line as an ad-hoc process.
    RunProc(String),
    /// Show a process's head and tail.
    ShowProc(String),
}

/// The views `tab` switches between.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tab {
    #[default]
    Units,
    Instances,
    Procs,
}

/// A line being typed at the bottom: a new instance or a command to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prompt {
    /// `TEMPLATE [K=V …]`
    Instance(String),
    /// A shell line.
    Command(String),
}

/// The signals the `x` menu offers, by key.
pub const SIGNALS: &[(char, &str)] = &[
    ('1', "HUP"),
    ('2', "INT"),
    ('3', "TERM"),
    ('4', "KILL"),
    ('5', "USR1"),
    ('6', "USR2"),
];

/// What the units table is sorted by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sort {
    /// As the daemon lists them (dependency order).
    #[default]
    Order,
    Name,
    State,
    Cpu,
    Memory,
    Restarts,
}

impl Sort {
    pub fn next(self) -> Sort {
        match self {
            Sort::Order => Sort::Name,
            Sort::Name => Sort::State,
            Sort::State => Sort::Cpu,
            Sort::Cpu => Sort::Memory,
            Sort::Memory => Sort::Restarts,
            Sort::Restarts => Sort::Order,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Sort::Order => "order",
            Sort::Name => "name",
            Sort::State => "state",
            Sort::Cpu => "cpu",
            Sort::Memory => "memory",
            Sort::Restarts => "restarts",
        }
    }
}

/// Whose log is shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogSource {
    Unit(String),
    /// Every unit's, interleaved (each line says whose).
    All,
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
    /// Whose log is shown, and its lines (newest last).
    pub log: Option<LogSource>,
    pub lines: VecDeque<wire::Line>,
    /// Lines scrolled up from the bottom; 0 follows.
    pub scroll: usize,
    /// A destructive action waiting for `y`.
    pub confirm: Option<(Verb, String)>,
    /// An instance waiting for `y` to be deleted.
    pub confirm_delete: Option<String>,
    /// The signal menu (`x`) is open for this unit.
    pub signal_menu: Option<String>,
    /// Long log lines wrap (`w`) instead of being cut.
    pub wrap: bool,
    /// The selected unit's `why` and dependency tree (`i`) instead of the log.
    pub info: bool,
    /// The column the table is sorted by (`o` cycles).
    pub sort: Sort,
    pub tab: Tab,
    pub instances: Vec<wire::Instance>,
    pub templates: Vec<wire::Template>,
    pub procs: Vec<wire::Proc>,
    /// The selected row of the instances and processes tabs.
    pub selected_instance: usize,
    pub selected_proc: usize,
    /// The process whose head and tail are shown, as fetched.
    pub proc_output: Option<wire::Proc>,
    pub prompt: Option<Prompt>,
    /// The log search (`l`): its text, while typed, and the line a `n`/`N` jumped to.
    pub search: String,
    pub searching: bool,
    /// Where the view drew the first unit row and the log (for mouse clicks and the wheel):
    /// set while drawing.
    pub first_row_y: std::cell::Cell<u16>,
    pub log_top_y: std::cell::Cell<u16>,
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
    /// The units the filter lets through, sorted as asked (the daemon's order by default).
    pub fn visible(&self) -> Vec<&wire::Service> {
        let f = self.filter.to_lowercase();
        let mut v: Vec<&wire::Service> = self
            .units
            .iter()
            .filter(|u| f.is_empty() || u.name.to_lowercase().contains(&f))
            .collect();
        let cpu = |u: &wire::Service| u.usage.map_or(0.0, |x| x.cpu_percent);
        let mem = |u: &wire::Service| u.usage.map_or(0, |x| x.rss_bytes);
        match self.sort {
            Sort::Order => {}
            Sort::Name => v.sort_by(|a, b| a.name.cmp(&b.name)),
            Sort::State => v.sort_by_key(|u| u.state_text()),
            Sort::Cpu => v.sort_by(|a, b| cpu(b).total_cmp(&cpu(a))),
            Sort::Memory => v.sort_by_key(|u| std::cmp::Reverse(mem(u))),
            Sort::Restarts => v.sort_by_key(|u| std::cmp::Reverse(u.restarts)),
        }
        v
    }

    /// `why` for the selected unit, and what it depends on, as a tree.
    pub fn explain(&self) -> Vec<String> {
        let Some(name) = self.selected_name() else {
            return Vec::new();
        };
        let find = |n: &str| self.units.iter().find(|u| u.name == n);
        let Some(u) = find(&name) else {
            return Vec::new();
        };
        let mut out = vec![format!("{} is {}", u.name, u.state_text())];
        if let Some(r) = &u.reason {
            out.push(format!("  because: {}", r.message));
        }
        if !u.waiting_on.is_empty() {
            let w: Vec<String> = u.waiting_on.iter().map(|d| d.to_string()).collect();
            out.push(format!("  waits on {}", w.join(", ")));
        }
        if u.held {
            out.push("  stopped by the user; S starts it again".into());
        }
        out.push(String::new());
        out.push("depends on:".into());
        // The tree of what it needs, each with its state now (a unit seen before is not
        // followed again).
        let mut seen = std::collections::HashSet::new();
        fn walk(
            app: &App,
            name: &str,
            depth: usize,
            seen: &mut std::collections::HashSet<String>,
            out: &mut Vec<String>,
        ) {
            let Some(u) = app.units.iter().find(|u| u.name == name) else {
                return;
            };
            for d in &u.depends_on {
                let state = app
                    .units
                    .iter()
                    .find(|x| x.name == d.name)
                    .map_or("unknown", |x| x.state_text());
                out.push(format!(
                    "{}└ {} ({}): {state}",
                    "  ".repeat(depth),
                    d.name,
                    d.condition
                ));
                if seen.insert(d.name.clone()) {
                    walk(app, &d.name, depth + 1, seen, out);
                }
            }
        }
        walk(self, &u.name, 0, &mut seen, &mut out);
        if out.last().is_some_and(|l| l == "depends on:") {
            out.push("  nothing".into());
        }
        out
    }

    /// Lines of the log matching the search, by index.
    fn matches(&self) -> Vec<usize> {
        if self.search.is_empty() {
            return Vec::new();
        }
        let s = self.search.to_lowercase();
        self.lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.text.to_lowercase().contains(&s))
            .map(|(i, _)| i)
            .collect()
    }

    /// Scroll so that the next (`forward`) or previous match from the bottom line shown is the
    /// bottom line.
    fn jump(&mut self, forward: bool) {
        let m = self.matches();
        let n = self.lines.len();
        if m.is_empty() || n == 0 {
            self.status = format!("no line has `{}`", self.search);
            return;
        }
        let bottom = n.saturating_sub(self.scroll).saturating_sub(1);
        let target = if forward {
            m.iter()
                .copied()
                .find(|&i| i > bottom)
                .or(m.first().copied())
        } else {
            m.iter()
                .rev()
                .copied()
                .find(|&i| i < bottom)
                .or(m.last().copied())
        };
        if let Some(t) = target {
            self.scroll = n - 1 - t;
            let k = m.iter().position(|&i| i == t).unwrap_or(0) + 1;
            self.status = format!("`{}`: match {k} of {}", self.search, m.len());
        }
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
        let wanted = match &self.log {
            Some(LogSource::All) => true,
            Some(LogSource::Unit(u)) => *u == line.unit,
            None => false,
        };
        if !wanted {
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

    /// Keys on the instances and processes tabs.
    fn key_in_tab(&mut self, key: KeyEvent) -> Action {
        let (n, sel) = match self.tab {
            Tab::Instances => (self.instances.len(), &mut self.selected_instance),
            _ => (self.procs.len(), &mut self.selected_proc),
        };
        match key.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Char('?') => self.help = true,
            KeyCode::Char('j') | KeyCode::Down => *sel = (*sel + 1).min(n.saturating_sub(1)),
            KeyCode::Char('k') | KeyCode::Up => *sel = sel.saturating_sub(1),
            KeyCode::Char('g') => *sel = 0,
            KeyCode::Char('G') => *sel = n.saturating_sub(1),
            KeyCode::Char('n') => {
                self.prompt = Some(match self.tab {
                    Tab::Instances => Prompt::Instance(
                        self.templates
                            .first()
                            .map(|t| format!("{} ", t.name))
                            .unwrap_or_default(),
                    ),
                    _ => Prompt::Command(String::new()),
                })
            }
            _ => {}
        }
        let sel = *sel;
        match (self.tab, key.code) {
            (Tab::Instances, KeyCode::Char('d')) => {
                if let Some(i) = self.instances.get(sel) {
                    self.confirm_delete = Some(i.name.clone());
                }
            }
            (Tab::Instances, KeyCode::Char(c @ ('r' | 's' | 'S'))) => {
                if let Some(i) = self.instances.get(sel) {
                    let verb = match c {
                        'r' => Verb::Restart,
                        's' => Verb::Stop,
                        _ => Verb::Start,
                    };
                    if verb == Verb::Start {
                        return Action::Do(verb, i.name.clone());
                    }
                    self.confirm = Some((verb, i.name.clone()));
                }
            }
            (Tab::Procs, KeyCode::Enter) => {
                if let Some(p) = self.procs.get(sel) {
                    return Action::ShowProc(p.id.clone());
                }
            }
            _ => {}
        }
        Action::None
    }

    /// What the mouse does: a click on a unit's row selects it, the wheel scrolls the log
    /// (over the log) or moves the selection.
    pub fn mouse(&mut self, m: MouseEvent) {
        let over_log = self.log.is_some() && m.row >= self.log_top_y.get();
        match m.kind {
            MouseEventKind::Down(MouseButton::Left) if !over_log => {
                let first = self.first_row_y.get();
                if m.row >= first {
                    let i = (m.row - first) as usize;
                    if i < self.visible().len() {
                        self.selected = i;
                    }
                }
            }
            MouseEventKind::ScrollUp if over_log => {
                self.scroll = (self.scroll + 3).min(self.lines.len().saturating_sub(1));
            }
            MouseEventKind::ScrollDown if over_log => self.scroll = self.scroll.saturating_sub(3),
            MouseEventKind::ScrollUp => self.move_by(-1),
            MouseEventKind::ScrollDown => self.move_by(1),
            _ => {}
        }
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
        if let Some(name) = self.signal_menu.take() {
            return match key.code {
                KeyCode::Char(c) => match SIGNALS.iter().find(|(k, _)| *k == c) {
                    Some((_, sig)) => Action::Signal(name, sig),
                    None => Action::None,
                },
                _ => Action::None,
            };
        }
        if let Some(name) = self.confirm_delete.take() {
            return match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => Action::DeleteInstance(name),
                _ => {
                    self.status = format!("delete {name}: cancelled");
                    Action::None
                }
            };
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
        if let Some(p) = self.prompt.as_mut() {
            let text = match p {
                Prompt::Instance(t) | Prompt::Command(t) => t,
            };
            match key.code {
                KeyCode::Esc => self.prompt = None,
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Char(c) => text.push(c),
                KeyCode::Enter => {
                    let p = self.prompt.take();
                    return match p {
                        Some(Prompt::Command(t)) if !t.trim().is_empty() => Action::RunProc(t),
                        Some(Prompt::Instance(t)) => {
                            let mut words = t.split_whitespace();
                            let Some(template) = words.next() else {
                                return Action::None;
                            };
                            let mut params = Vec::new();
                            for w in words {
                                match w.split_once('=') {
                                    Some((k, v)) => params.push((k.to_string(), v.to_string())),
                                    None => {
                                        self.status =
                                            format!("`{w}` is not NAME=VALUE; nothing made");
                                        return Action::None;
                                    }
                                }
                            }
                            Action::CreateInstance(template.to_string(), params)
                        }
                        _ => Action::None,
                    };
                }
                _ => {}
            }
            return Action::None;
        }
        if key.code == KeyCode::Tab {
            self.tab = match self.tab {
                Tab::Units => Tab::Instances,
                Tab::Instances => Tab::Procs,
                Tab::Procs => Tab::Units,
            };
            return Action::None;
        }
        if self.tab != Tab::Units {
            return self.key_in_tab(key);
        }
        if self.searching {
            match key.code {
                KeyCode::Enter => {
                    self.searching = false;
                    self.jump(false);
                }
                KeyCode::Esc => {
                    self.searching = false;
                    self.search.clear();
                }
                KeyCode::Backspace => {
                    self.search.pop();
                }
                KeyCode::Char(c) => self.search.push(c),
                _ => {}
            }
            return Action::None;
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
                    self.log = Some(LogSource::Unit(name.clone()));
                    self.lines.clear();
                    self.scroll = 0;
                    return Action::Follow(name);
                }
            }
            KeyCode::Char('a') => {
                self.log = Some(LogSource::All);
                self.lines.clear();
                self.scroll = 0;
                return Action::FollowAll;
            }
            KeyCode::Char('w') => self.wrap = !self.wrap,
            KeyCode::Char('i') => self.info = !self.info,
            KeyCode::Char('o') => {
                self.sort = self.sort.next();
                self.selected = 0;
                self.status = format!("sorted by {}", self.sort.as_str());
            }
            KeyCode::Char('l') if self.log.is_some() => {
                self.searching = true;
                self.search.clear();
            }
            KeyCode::Char('n') if !self.search.is_empty() => self.jump(true),
            KeyCode::Char('N') if !self.search.is_empty() => self.jump(false),
            KeyCode::Char('x') => self.signal_menu = self.selected_name(),
            KeyCode::Char('c') => {
                // What the log shows now (up to a screenful), as plain text.
                let end = self.lines.len().saturating_sub(self.scroll);
                let start = end.saturating_sub(50);
                let text: Vec<&str> = self
                    .lines
                    .range(start..end)
                    .map(|l| l.text.as_str())
                    .collect();
                if !text.is_empty() {
                    self.status = format!("copied {} lines", text.len());
                    return Action::Copy(text.join("\n"));
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
    ("a", "follow every unit's log, interleaved"),
    ("l, n/N", "search the log, next/previous match"),
    ("i", "why, and the dependency tree"),
    ("o", "sort by order, name, state, cpu, memory, restarts"),
    ("w", "wrap long log lines"),
    ("c", "copy the log lines shown (OSC 52)"),
    ("x", "send a signal (a menu)"),
    ("mouse", "click selects, the wheel scrolls"),
    ("S", "start"),
    ("s", "stop (asks y/n)"),
    ("r", "restart (asks y/n)"),
    ("?", "this help"),
    ("tab", "units, instances, processes"),
    (
        "n",
        "(instances) new: TEMPLATE K=V…; (processes) run a shell line",
    ),
    ("d", "(instances) delete (asks y/n)"),
    ("Enter", "(processes) head and tail of the output"),
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
            namespace: None,
            status_text: None,
            log_trouble: None,
            next_run_ms: None,
            limits: Vec::new(),
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

    #[test]
    fn signals_all_logs_copy_and_the_mouse() {
        let mut a = App::default();
        a.set_units(vec![
            unit("api", wire::UnitState::Running),
            unit("db", wire::UnitState::Running),
        ]);
        // The signal menu: a number sends, anything else cancels.
        a.key(key(KeyCode::Char('x')));
        assert_eq!(a.signal_menu.as_deref(), Some("api"));
        assert_eq!(
            a.key(key(KeyCode::Char('1'))),
            Action::Signal("api".into(), "HUP")
        );
        a.key(key(KeyCode::Char('x')));
        assert_eq!(a.key(key(KeyCode::Char('z'))), Action::None);
        assert!(a.signal_menu.is_none());
        // Every unit's log: lines of any unit are kept.
        assert_eq!(a.key(key(KeyCode::Char('a'))), Action::FollowAll);
        for (u, t) in [("api", "one"), ("db", "two")] {
            a.push_line(wire::Line {
                unit: u.into(),
                time_ms: 0,
                stream: "out".into(),
                text: t.into(),
            });
        }
        assert_eq!(a.lines.len(), 2);
        assert_eq!(
            a.key(key(KeyCode::Char('c'))),
            Action::Copy("one\ntwo".into())
        );
        a.key(key(KeyCode::Char('w')));
        assert!(a.wrap);
        // A click on the second row selects it; the wheel over the log scrolls it.
        a.first_row_y.set(3);
        a.log_top_y.set(10);
        let at = |kind, row| MouseEvent {
            kind,
            column: 5,
            row,
            modifiers: KeyModifiers::NONE,
        };
        a.mouse(at(MouseEventKind::Down(MouseButton::Left), 4));
        assert_eq!(a.selected_name().as_deref(), Some("db"));
        a.mouse(at(MouseEventKind::ScrollUp, 12));
        assert_eq!(a.scroll, 1, "scrolled up, within the two lines");
        a.mouse(at(MouseEventKind::ScrollUp, 4));
        assert_eq!(a.selected_name().as_deref(), Some("api"));
    }

    #[test]
    fn search_why_and_sort() {
        let mut a = App::default();
        let mut web = unit("web", wire::UnitState::Blocked);
        web.depends_on = vec![wire::Dependency {
            name: "api".into(),
            condition: wire::Condition::Healthy,
        }];
        web.waiting_on = web.depends_on.clone();
        let mut api = unit("api", wire::UnitState::Running);
        api.ready = false;
        api.restarts = 3;
        api.depends_on = vec![wire::Dependency {
            name: "db".into(),
            condition: wire::Condition::Started,
        }];
        a.set_units(vec![unit("db", wire::UnitState::Running), api, web]);
        // Why, with the tree of what it needs.
        a.key(key(KeyCode::Char('G')));
        a.key(key(KeyCode::Char('i')));
        assert!(a.info);
        let why = a.explain().join("\n");
        assert!(why.starts_with("web is blocked"), "{why}");
        assert!(why.contains("waits on api (healthy)"), "{why}");
        assert!(
            why.contains("└ api (healthy): running (not ready)"),
            "{why}"
        );
        assert!(why.contains("  └ db (started): running"), "{why}");
        // Sorting by restarts puts api first.
        for _ in 0..5 {
            a.key(key(KeyCode::Char('o')));
        }
        assert_eq!(a.sort, Sort::Restarts);
        assert_eq!(a.visible()[0].name, "api");
        // Search: n jumps to the previous/next match and says which.
        a.key(key(KeyCode::Char('a')));
        for i in 0..20 {
            a.push_line(wire::Line {
                unit: "db".into(),
                time_ms: 0,
                stream: "out".into(),
                text: if i % 5 == 0 {
                    format!("ERROR {i}")
                } else {
                    format!("ok {i}")
                },
            });
        }
        a.key(key(KeyCode::Char('l')));
        for c in "error".chars() {
            a.key(key(KeyCode::Char(c)));
        }
        a.key(key(KeyCode::Enter));
        // The last match (line 15) is the bottom line now.
        assert_eq!(a.scroll, 4);
        assert!(a.status.contains("match 4 of 4"), "{}", a.status);
        a.key(key(KeyCode::Char('N')));
        assert_eq!(a.scroll, 9);
        a.key(key(KeyCode::Char('n')));
        assert_eq!(a.scroll, 4);
    }
}
