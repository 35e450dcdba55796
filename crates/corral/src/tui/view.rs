//! Drawing the terminal UI from its state: a header, the units table, the followed log, the
//! status and key line; the help overlay and the y/n question on top. 80×24 is the smallest it
//! is laid out for: narrow terminals lose the less needed columns first.

use corral_proto::wire::{self, UnitState};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Row, Table, Wrap};

use super::app::{App, KEYS, LogSource, Prompt, SIGNALS, Tab};

fn state_color(u: &wire::Service) -> Color {
    match u.state {
        UnitState::Running if u.ready => Color::Green,
        UnitState::Running
        | UnitState::Starting
        | UnitState::Blocked
        | UnitState::Backoff
        | UnitState::Stopping => Color::Yellow,
        UnitState::Failed | UnitState::Skipped => Color::Red,
        UnitState::Inactive | UnitState::Exited => Color::DarkGray,
    }
}

fn duration(secs: Option<f64>) -> String {
    match secs {
        None => String::new(),
        Some(s) => corral_proto::fmt_duration(std::time::Duration::from_secs(s as u64)),
    }
}

fn mem(n: u64) -> String {
    if n >= 1 << 30 {
        format!("{:.1}G", n as f64 / (1u64 << 30) as f64)
    } else if n >= 1 << 20 {
        format!("{:.1}M", n as f64 / (1u64 << 20) as f64)
    } else {
        format!("{}K", n >> 10)
    }
}

/// The instances or processes tab.
fn draw_tab(f: &mut Frame, app: &App, body: Rect) {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let sel = |i: usize, chosen: usize, row: Row<'static>| {
        if i == chosen {
            row.style(Style::default().add_modifier(Modifier::REVERSED))
        } else {
            row
        }
    };
    match app.tab {
        Tab::Instances => {
            let rows: Vec<Row> = app
                .instances
                .iter()
                .enumerate()
                .map(|(i, x)| {
                    let done = x
                        .steps
                        .iter()
                        .filter(|s| s.state == wire::StepState::Done)
                        .count();
                    let state = serde_json::to_value(x.state)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default();
                    let setup = match &x.error {
                        Some(e) => format!("{done}/{} · {e}", x.steps.len()),
                        None => format!("{done}/{}", x.steps.len()),
                    };
                    sel(
                        i,
                        app.selected_instance,
                        Row::new(vec![
                            x.name.clone(),
                            x.template.clone(),
                            state,
                            setup,
                            format!("http://127.0.0.1:{}/", x.port),
                            x.source.clone(),
                        ]),
                    )
                })
                .collect();
            let templates: Vec<&str> = app.templates.iter().map(|t| t.name.as_str()).collect();
            let title = format!(
                " instances {} · templates: {} · n new, d delete, r/s/S ",
                app.instances.len(),
                if templates.is_empty() {
                    "none".to_string()
                } else {
                    templates.join(", ")
                }
            );
            let t = Table::new(
                rows,
                [
                    Constraint::Min(14),
                    Constraint::Length(10),
                    Constraint::Length(16),
                    Constraint::Min(8),
                    Constraint::Length(24),
                    Constraint::Min(8),
                ],
            )
            .header(
                Row::new(vec!["NAME", "TEMPLATE", "STATE", "SETUP", "URL", "SOURCE"]).style(bold),
            )
            .block(Block::default().borders(Borders::TOP).title(title));
            f.render_widget(t, body);
        }
        _ => {
            let [top, bottom] = if app.proc_output.is_some() {
                Layout::vertical([Constraint::Percentage(40), Constraint::Percentage(60)])
                    .areas(body)
            } else {
                [body, Rect::default()]
            };
            let rows: Vec<Row> = app
                .procs
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let exit = match (p.exit_code, p.signal) {
                        (Some(c), _) => format!("exit {c}"),
                        (None, Some(s)) => format!("signal {s}"),
                        _ => String::new(),
                    };
                    sel(
                        i,
                        app.selected_proc,
                        Row::new(vec![
                            p.id.clone(),
                            p.command.clone(),
                            p.state.clone(),
                            exit,
                            format!("{} B", p.output.original_bytes),
                        ]),
                    )
                })
                .collect();
            let t = Table::new(
                rows,
                [
                    Constraint::Length(12),
                    Constraint::Min(20),
                    Constraint::Length(9),
                    Constraint::Length(10),
                    Constraint::Length(12),
                ],
            )
            .header(Row::new(vec!["ID", "COMMAND", "STATE", "EXIT", "OUTPUT"]).style(bold))
            .block(Block::default().borders(Borders::TOP).title(format!(
                " processes {} · n run, Enter output ",
                app.procs.len()
            )));
            f.render_widget(t, top);
            if let Some(p) = &app.proc_output {
                let o = &p.output;
                let mut lines: Vec<Line> =
                    o.head.lines().map(|l| Line::from(l.to_string())).collect();
                if o.omitted_bytes > 0 {
                    lines.push(Line::from(format!("… {} bytes omitted …", o.omitted_bytes)));
                }
                lines.extend(o.tail.lines().map(|l| Line::from(l.to_string())));
                f.render_widget(
                    Paragraph::new(lines).block(Block::default().borders(Borders::TOP).title(
                        format!(
                            " {} · {} · head and tail of {} bytes ",
                            p.id, p.state, o.original_bytes
                        ),
                    )),
                    bottom,
                );
            }
        }
    }
}

/// `text` with each case-insensitive match of `term` marked.
fn highlight(text: &str, term: &str, style: impl Fn(Style) -> Style) -> Vec<Span<'static>> {
    if term.is_empty() {
        return vec![Span::raw(text.to_string())];
    }
    let lower = text.to_lowercase();
    let needle = term.to_lowercase();
    // Lower-casing may change byte lengths (non-ASCII): then the text is shown unmarked.
    if lower.len() != text.len() {
        return vec![Span::raw(text.to_string())];
    }
    let mark =
        style(Style::default().fg(Color::Black).bg(Color::Yellow)).add_modifier(Modifier::REVERSED);
    let mut out = Vec::new();
    let mut last = 0;
    for (i, _) in lower.match_indices(&needle) {
        out.push(Span::raw(text[last..i].to_string()));
        out.push(Span::styled(text[i..i + needle.len()].to_string(), mark));
        last = i + needle.len();
    }
    out.push(Span::raw(text[last..].to_string()));
    out
}

pub fn draw(f: &mut Frame, app: &App) {
    let area = f.area();
    let style = |s: Style| if app.color { s } else { Style::default() };
    let logs_open = app.log.is_some() || app.info;
    let [head, body, status, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let (table_area, log_area) = if logs_open {
        let [t, l] =
            Layout::vertical([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(body);
        (t, Some(l))
    } else {
        (body, None)
    };

    // Header: the project and the link to the daemon.
    let link = if app.connected {
        Span::styled("live", style(Style::default().fg(Color::Green)))
    } else {
        Span::styled(
            "connection lost; retrying",
            style(Style::default().fg(Color::Red)),
        )
    };
    // The link first: on a narrow terminal the project's path is what is cut.
    let mut spans = vec![
        Span::styled("corral ", Style::default().add_modifier(Modifier::BOLD)),
        link,
        Span::raw(" "),
    ];
    for (tab, name) in [
        (Tab::Units, "units"),
        (Tab::Instances, "instances"),
        (Tab::Procs, "processes"),
    ] {
        let s = if app.tab == tab {
            Style::default().add_modifier(Modifier::REVERSED)
        } else {
            Style::default()
        };
        spans.push(Span::styled(format!(" {name} "), s));
    }
    spans.push(Span::raw(format!(" {}", app.project)));
    f.render_widget(Paragraph::new(Line::from(spans)), head);
    if app.tab != Tab::Units {
        draw_tab(f, app, body);
    }

    if app.tab == Tab::Units {
        // The units.
        let wide = table_area.width >= 110;
        let mut header = vec!["NAME", "STATE", "PID", "CPU", "MEM", "UPTIME", "RST"];
        let mut widths = vec![
            Constraint::Min(12),
            Constraint::Length(20),
            Constraint::Length(7),
            Constraint::Length(6),
            Constraint::Length(7),
            Constraint::Length(8),
            Constraint::Length(4),
        ];
        if wide {
            header.insert(1, "KIND");
            widths.insert(1, Constraint::Length(8));
            header.push("HEALTH");
            widths.push(Constraint::Min(16));
            header.push("PORTS");
            widths.push(Constraint::Length(12));
        }
        let visible = app.visible();
        let rows: Vec<Row> = visible
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let mut state = u.state_text().to_string();
                if !u.waiting_on.is_empty() {
                    let w: Vec<String> = u.waiting_on.iter().map(|d| d.name.clone()).collect();
                    state = format!("{state} ({})", w.join(","));
                }
                let mut cells = vec![
                    Span::raw(u.name.clone()),
                    Span::styled(state, style(Style::default().fg(state_color(u)))),
                    Span::raw(u.pid.map(|p| p.to_string()).unwrap_or_default()),
                    Span::raw(
                        u.usage
                            .map(|x| format!("{:.1}%", x.cpu_percent))
                            .unwrap_or_default(),
                    ),
                    Span::raw(u.usage.map(|x| mem(x.rss_bytes)).unwrap_or_default()),
                    Span::raw(duration(u.uptime_secs)),
                    Span::raw(u.restarts.to_string()),
                ];
                if wide {
                    cells.insert(1, Span::raw(u.kind.clone()));
                    cells.push(Span::raw(u.health.clone().unwrap_or_default()));
                    let ports: Vec<String> = u.ports.iter().map(u16::to_string).collect();
                    cells.push(Span::raw(ports.join(",")));
                }
                let mut row = Row::new(cells);
                if i == app.selected {
                    row = row.style(Style::default().add_modifier(Modifier::REVERSED));
                }
                row
            })
            .collect();
        let sorted = if app.sort == super::app::Sort::Order {
            String::new()
        } else {
            format!(" · by {}", app.sort.as_str())
        };
        let title = if app.filtering || !app.filter.is_empty() {
            format!(
                " units {}/{} · filter: {}{} ",
                visible.len(),
                app.units.len(),
                app.filter,
                if app.filtering { "▏" } else { "" }
            ) + &sorted
        } else {
            format!(" units {}{sorted} ", app.units.len())
        };
        let table = Table::new(rows, widths)
            .header(Row::new(header).style(Style::default().add_modifier(Modifier::BOLD)))
            .block(Block::default().borders(Borders::TOP).title(title));
        f.render_widget(table, table_area);
        // Below the block's title line and the header row.
        app.first_row_y.set(table_area.y + 2);

        // The selected unit's why and tree, in place of the log.
        if let (Some(area), true) = (log_area, app.info) {
            app.log_top_y.set(area.y);
            let lines: Vec<Line> = app.explain().into_iter().map(Line::from).collect();
            f.render_widget(
                Paragraph::new(lines).block(
                    Block::default()
                        .borders(Borders::TOP)
                        .title(" why · i closes "),
                ),
                area,
            );
        } else if let (Some(area), Some(source)) = (log_area, &app.log) {
            app.log_top_y.set(area.y);
            let all = *source == LogSource::All;
            let inner = area.height.saturating_sub(1) as usize;
            let end = app.lines.len().saturating_sub(app.scroll);
            let start = end.saturating_sub(inner);
            let lines: Vec<Line> = app
                .lines
                .range(start..end)
                .map(|l| {
                    let mark = if l.stream == "err" { "! " } else { "  " };
                    let s = if l.stream == "err" {
                        style(Style::default().fg(Color::Red))
                    } else {
                        Style::default()
                    };
                    let mut spans = vec![Span::styled(mark, s)];
                    if all {
                        spans.push(Span::styled(
                            format!("{} | ", l.unit),
                            style(Style::default().fg(Color::Cyan)),
                        ));
                    }
                    spans.extend(highlight(&l.text, &app.search, style));
                    Line::from(spans)
                })
                .collect();
            let follow = if app.scroll == 0 {
                "following".to_string()
            } else {
                format!("paused, {} lines up (f follows)", app.scroll)
            };
            let follow = if app.search.is_empty() {
                follow
            } else {
                format!("{follow} · search: {}", app.search)
            };
            let whose = match source {
                LogSource::All => "every unit".to_string(),
                LogSource::Unit(u) => u.clone(),
            };
            let mut p = Paragraph::new(lines).block(
                Block::default()
                    .borders(Borders::TOP)
                    .title(format!(" log of {whose} · {follow} ")),
            );
            if app.wrap {
                p = p.wrap(Wrap { trim: false });
            }
            f.render_widget(p, area);
        }
    }

    // Status, then keys.
    let status_text = match (&app.confirm, &app.signal_menu) {
        (Some((verb, name)), _) => format!("{} {name}? y/n", verb.as_str()),
        (None, Some(name)) => {
            let menu: Vec<String> = SIGNALS.iter().map(|(k, s)| format!("{k} {s}")).collect();
            format!("signal to {name}: {} (other keys cancel)", menu.join(" · "))
        }
        (None, None) if app.prompt.is_some() => match &app.prompt {
            Some(Prompt::Instance(t)) => {
                format!("new instance (TEMPLATE K=V…): {t}▏ (Enter makes it, Esc cancels)")
            }
            Some(Prompt::Command(t)) => {
                format!("run (a shell line): {t}▏ (Enter runs it, Esc cancels)")
            }
            None => String::new(),
        },
        (None, None) if app.confirm_delete.is_some() => format!(
            "delete {} with its workspace and logs? y/n",
            app.confirm_delete.as_deref().unwrap_or_default()
        ),
        (None, None) if app.searching => {
            format!("search the log: {}▏ (Enter finds, Esc clears)", app.search)
        }
        (None, None) => app.status.clone(),
    };
    let st = if app.confirm.is_some() || app.signal_menu.is_some() {
        style(
            Style::default()
                .fg(Color::Yellow)
                .add_modifier(Modifier::BOLD),
        )
    } else {
        Style::default()
    };
    f.render_widget(Paragraph::new(Span::styled(status_text, st)), status);
    let quit = match (app.owns_stack, foot.width >= 110) {
        (true, true) => "q quit (stops the stack)",
        (false, true) => "q quit (the stack keeps running)",
        (true, false) => "q quit+stop",
        (false, false) => "q quit",
    };
    let keys = if foot.width >= 110 {
        "j/k move · Enter log · S start · s stop · r restart · / filter · ? help"
    } else {
        "j/k · ⏎ log · S/s/r start/stop/restart · / filter · ? help"
    };
    f.render_widget(
        Paragraph::new(format!("{keys} · {quit}"))
            .style(style(Style::default().fg(Color::DarkGray))),
        foot,
    );

    if app.help {
        let w = 72.min(area.width.saturating_sub(2));
        let h = (KEYS.len() as u16 + 2).min(area.height);
        let r = Rect {
            x: area.x + (area.width.saturating_sub(w)) / 2,
            y: area.y + (area.height.saturating_sub(h)) / 2,
            width: w,
            height: h,
        };
        let lines: Vec<Line> = KEYS
            .iter()
            .map(|(k, what)| Line::from(format!("{k:>10}  {what}")))
            .collect();
        f.render_widget(Clear, r);
        f.render_widget(
            Paragraph::new(lines).block(
                Block::default()
                    .borders(Borders::ALL)
                    .title(" keys · any key closes this "),
            ),
            r,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use corral_proto::wire::{self, UnitState};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use super::super::app::{App, Verb};

    fn unit(name: &str, state: UnitState, ready: bool) -> wire::Service {
        wire::Service {
            name: name.into(),
            kind: "service".into(),
            state,
            pid: matches!(state, UnitState::Running).then_some(4242),
            ready,
            uptime_secs: matches!(state, UnitState::Running).then_some(3725.0),
            restarts: 1,
            last_exit: None,
            health: (!ready && state == UnitState::Running)
                .then(|| "not ready: GET /health: 503".to_string()),
            ports: vec![8080],
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
            usage: Some(wire::Usage {
                cpu_percent: 1.5,
                rss_bytes: 23 << 20,
                processes: 1,
            }),
        }
    }

    /// A stack as the API would list it: running, not ready, blocked, failed, stopped.
    fn app() -> App {
        let mut blocked = unit("web", UnitState::Blocked, false);
        blocked.waiting_on = vec![wire::Dependency {
            name: "api".into(),
            condition: wire::Condition::Healthy,
        }];
        blocked.depends_on = blocked.waiting_on.clone();
        let mut a = App {
            project: "/srv/shop/corral.toml".into(),
            connected: true,
            color: false,
            ..App::default()
        };
        a.set_units(vec![
            unit("db", UnitState::Running, true),
            unit("api", UnitState::Running, false),
            blocked,
            unit("mailer", UnitState::Failed, false),
            unit("worker", UnitState::Inactive, false),
        ]);
        a
    }

    fn render(app: &App, w: u16, h: u16) -> String {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| super::draw(f, app)).unwrap();
        let buf = t.backend().buffer();
        (0..h)
            .map(|y| {
                let line: String = (0..w)
                    .map(|x| buf.cell((x, y)).map_or(" ", |c| c.symbol()).to_string())
                    .collect();
                line.trim_end().to_string()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_units_view_at_80x24_and_160x40() {
        let a = app();
        insta::assert_snapshot!("units_80x24", render(&a, 80, 24));
        insta::assert_snapshot!("units_160x40", render(&a, 160, 40));
    }

    #[test]
    fn logs_help_and_a_question() {
        let mut a = app();
        a.selected = 1;
        a.log = Some(super::super::app::LogSource::Unit("api".into()));
        a.lines = VecDeque::from(
            (1..=30)
                .map(|i| wire::Line {
                    unit: "api".into(),
                    time_ms: 0,
                    stream: if i % 10 == 0 { "err" } else { "out" }.into(),
                    text: format!("GET /orders/{i} 200"),
                })
                .collect::<Vec<_>>(),
        );
        a.confirm = Some((Verb::Restart, "api".into()));
        insta::assert_snapshot!("logs_80x24", render(&a, 80, 24));
        a.confirm = None;
        a.scroll = 5;
        a.help = true;
        insta::assert_snapshot!("help_160x40", render(&a, 160, 40));
        // Lost: said, not hidden.
        a.help = false;
        a.connected = false;
        assert!(render(&a, 80, 24).contains("connection lost; retrying"));
    }

    #[test]
    fn the_instances_and_processes_tabs() {
        use super::super::app::Tab;
        let mut a = app();
        let step = |name: &str, state| wire::Step {
            name: name.into(),
            state,
            detail: String::new(),
        };
        a.templates = vec![wire::Template {
            name: "ide".into(),
            params: Default::default(),
            setup_steps: 1,
            files: Vec::new(),
            port_range: None,
        }];
        a.instances = vec![
            wire::Instance {
                name: "ide-1a2b3c".into(),
                template: "ide".into(),
                id: "1a2b3c".into(),
                port: 41000,
                params: vec![("theme".into(), "dark".into())],
                workspace: "/w/1".into(),
                source: "empty".into(),
                state: wire::InstanceState::Ready,
                error: None,
                steps: vec![
                    step("workspace", wire::StepState::Done),
                    step("setup 1", wire::StepState::Done),
                ],
                created_ms: 0,
            },
            wire::Instance {
                name: "ide-4d5e6f".into(),
                template: "ide".into(),
                id: "4d5e6f".into(),
                port: 41001,
                params: Vec::new(),
                workspace: "/w/2".into(),
                source: "git https://example.com/r.git".into(),
                state: wire::InstanceState::Preparing,
                error: None,
                steps: vec![
                    step("workspace", wire::StepState::Done),
                    step("setup 1", wire::StepState::Running),
                ],
                created_ms: 0,
            },
        ];
        a.tab = Tab::Instances;
        insta::assert_snapshot!("instances_80x24", render(&a, 80, 24));
        insta::assert_snapshot!("instances_160x40", render(&a, 160, 40));
        let proc_ = wire::Proc {
            id: "p7".into(),
            key: None,
            command: "make test".into(),
            pid: 777,
            state: "exited".into(),
            exit_code: Some(0),
            signal: None,
            timed_out: false,
            started_ms: 0,
            ended_ms: Some(1),
            output: wire::Output {
                head: "first\nsecond\n".into(),
                tail: "last\n".into(),
                original_bytes: 90_000,
                retained_bytes: 20,
                omitted_bytes: 89_980,
            },
            usage: None,
        };
        a.procs = vec![proc_.clone()];
        a.proc_output = Some(proc_);
        a.tab = Tab::Procs;
        insta::assert_snapshot!("procs_80x24", render(&a, 80, 24));
        insta::assert_snapshot!("procs_160x40", render(&a, 160, 40));
        // The why view, on the units tab.
        a.tab = Tab::Units;
        a.selected = 2;
        a.info = true;
        insta::assert_snapshot!("why_80x24", render(&a, 80, 24));
        insta::assert_snapshot!("why_160x40", render(&a, 160, 40));
    }
}
