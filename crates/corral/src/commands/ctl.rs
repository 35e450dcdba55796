//! The commands that talk to a running corral (`up` in a terminal, or the daemon) through its
//! API: `ps`, `logs`, `start`, `stop`, `restart`, `kill`, `why`, `tree`, `events`, `reload`.

use std::path::Path;
use std::process::ExitCode;

use corral_proto::client::{Client, ClientError, Method, encode};
use corral_proto::wire;

use super::{CliError, runtime, state_dir};

pub fn client(file: Option<&Path>) -> Result<Client, CliError> {
    Ok(Client::new(&state_dir(file)?))
}

pub fn cli_error(e: ClientError) -> CliError {
    match e {
        ClientError::NoDaemon => CliError::NoDaemon,
        e => CliError::Run(e.to_string()),
    }
}

pub fn call<T: serde::de::DeserializeOwned>(
    file: Option<&Path>,
    method: Method,
    path: &str,
) -> Result<T, CliError> {
    let c = client(file)?;
    runtime()?.block_on(c.call(method, path)).map_err(cli_error)
}

fn services(file: Option<&Path>) -> Result<Vec<wire::Service>, CliError> {
    // Without metrics: `why` and `tree` need no /proc scan.
    call(file, Method::GET, "/v1/services")
}

fn uptime(secs: Option<f64>) -> String {
    match secs {
        None => "-".into(),
        // Whole seconds (the column stays narrow): under one it was `0ms`.
        Some(s) if s < 1.0 => "0s".into(),
        Some(s) => corral_proto::fmt_duration(std::time::Duration::from_secs(s as u64)),
    }
}

pub fn ps(file: Option<&Path>, json: bool) -> Result<ExitCode, CliError> {
    const PATH: &str = "/v1/services?metrics=true";
    if json {
        let list: Vec<wire::Service> = call(file, Method::GET, PATH)?;
        println!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let c = client(file)?;
    let body = runtime()?
        .block_on(c.fetch(Method::GET, PATH))
        .map_err(cli_error)?;
    print_table(&corral_proto::client::decode::<Vec<Row>>(&body).map_err(cli_error)?);
    Ok(ExitCode::SUCCESS)
}

/// What `ps` shows of a service, read in place from the answer: names borrow from it where no
/// escape forces a copy, and what is not shown is skipped, not built. At 5,000 services
/// reading whole `wire::Service`s made `ps` 23–30 ms against 20–21 ms with these.
#[derive(serde::Deserialize)]
struct Row<'a> {
    #[serde(borrow)]
    name: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    kind: std::borrow::Cow<'a, str>,
    state: wire::UnitState,
    pid: Option<u32>,
    ready: bool,
    uptime_secs: Option<f64>,
    restarts: u32,
    health: Option<String>,
    #[serde(default)]
    ports: Vec<u16>,
    held: bool,
    #[serde(default)]
    status_text: Option<String>,
    #[serde(default)]
    log_trouble: Option<String>,
    #[serde(default)]
    next_run_ms: Option<u64>,
    #[serde(default)]
    usage: Option<wire::Usage>,
}

/// `1.5M`, `230K`: memory for people.
fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1}G", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1}M", n as f64 / (1u64 << 20) as f64),
        n => format!("{}K", n >> 10),
    }
}

fn print_table(list: &[Row]) {
    use std::borrow::Cow;
    let now = wire::millis(std::time::SystemTime::now());
    // Cells borrow from the answer where they can, and lines are padded in place: a String
    // per cell, a `format!` to pad it and a `join` per line were a fifth of `ps` at 5,000
    // services.
    let rows: Vec<[Cow<str>; 10]> = list
        .iter()
        .map(|s| {
            [
                Cow::Borrowed(s.name.as_ref()),
                Cow::Borrowed(s.kind.as_ref()),
                if s.held {
                    Cow::Owned(format!("{} (held)", s.state.shown(s.ready)))
                } else {
                    Cow::Borrowed(s.state.shown(s.ready))
                },
                s.pid.map_or(Cow::Borrowed("-"), |p| p.to_string().into()),
                s.usage.map_or(Cow::Borrowed("-"), |u| {
                    format!("{:.1}%", u.cpu_percent).into()
                }),
                s.usage
                    .map_or(Cow::Borrowed("-"), |u| bytes(u.rss_bytes).into()),
                uptime(s.uptime_secs).into(),
                s.restarts.to_string().into(),
                // What it says of itself (sd_notify's STATUS=) after what its probe says; a
                // log file that cannot be written (a full disk) before both.
                match (&s.health, &s.status_text, s.next_run_ms) {
                    _ if s.log_trouble.is_some() => format!(
                        "log not written: {}",
                        s.log_trouble.as_deref().unwrap_or_default()
                    )
                    .into(),
                    (Some(h), Some(t), _) => format!("{h}; {t}").into(),
                    (Some(h), None, _) => Cow::Borrowed(h.as_str()),
                    (None, Some(t), _) => Cow::Borrowed(t.as_str()),
                    (None, None, Some(next)) => format!(
                        "next run in {}",
                        corral_proto::fmt_duration(std::time::Duration::from_millis(
                            next.saturating_sub(now)
                        ))
                    )
                    .into(),
                    (None, None, None) => Cow::Borrowed("-"),
                },
                if s.ports.is_empty() {
                    Cow::Borrowed("-")
                } else {
                    s.ports
                        .iter()
                        .map(u16::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                        .into()
                },
            ]
        })
        .collect();
    let header = [
        "NAME", "KIND", "STATE", "PID", "CPU", "MEM", "UPTIME", "RESTARTS", "HEALTH", "PORTS",
    ];
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    // The state in colour, where colour is shown (a terminal, no NO_COLOR or --color never);
    // elsewhere nothing is styled, so nothing is stripped (stripping was 2 % of `ps` at 200
    // services). Widths are counted on the plain text. The table is written at once: a line
    // at a time (`anstream::println!`) asked whether stdout is a terminal, and wrote, once per
    // unit — a third of `ps` at 2,000 services.
    let stdout = std::io::stdout();
    let choice = anstream::AutoStream::choice(&stdout);
    let colour = choice != anstream::ColorChoice::Never;
    let mut out = String::with_capacity((rows.len() + 1) * (widths.iter().sum::<usize>() + 20));
    let mut line = |cells: [&str; 10], state: Option<&Row>| {
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            let style = state
                .filter(|_| i == 2 && colour)
                .map(|s| state_style(s.state, s.ready));
            if let Some(style) = style {
                let _ = std::fmt::Write::write_fmt(&mut out, format_args!("{style}"));
            }
            out.push_str(c);
            out.extend(std::iter::repeat_n(
                ' ',
                w.saturating_sub(c.chars().count()),
            ));
            if let Some(style) = style {
                let _ = std::fmt::Write::write_fmt(&mut out, format_args!("{style:#}"));
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
    };
    line(header, None);
    for (r, s) in rows.iter().zip(list) {
        line(r.each_ref().map(|c| c.as_ref()), Some(s));
    }
    // Coloured: buffered under anstream (it writes each piece between escapes by itself, and
    // through stdout's line buffering that was a write per line).
    let buffered: Box<dyn std::io::Write> = Box::new(std::io::BufWriter::new(stdout.lock()));
    let mut w: Box<dyn std::io::Write> = if colour {
        Box::new(anstream::AutoStream::new(buffered, choice))
    } else {
        buffered
    };
    let _ = std::io::Write::write_all(&mut w, out.as_bytes());
    let _ = std::io::Write::flush(&mut w);
}

/// A unit's colour in `logs`: the same for a name every time.
fn name_style(name: &str) -> anstyle::Style {
    use corral_runtime::printer::PALETTE;
    let h = name
        .bytes()
        .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
    anstyle::Style::new().fg_color(Some(PALETTE[h % PALETTE.len()].into()))
}

/// Green when up and ready, yellow on the way (or not ready), red when failed.
pub fn state_style(state: wire::UnitState, ready: bool) -> anstyle::Style {
    use wire::UnitState as S;
    let color = match state {
        S::Running if ready => anstyle::AnsiColor::Green,
        S::Running | S::Starting | S::Stopping | S::Backoff | S::Blocked => {
            anstyle::AnsiColor::Yellow
        }
        S::Failed | S::Skipped => anstyle::AnsiColor::Red,
        _ => return anstyle::Style::new().dimmed(),
    };
    anstyle::Style::new().fg_color(Some(color.into()))
}

/// `ps` again and again: CPU is measured over each interval.
pub fn top(
    file: Option<&Path>,
    iterations: Option<u64>,
    interval: &str,
    json: bool,
) -> Result<ExitCode, CliError> {
    let every = humantime::parse_duration(interval)
        .map_err(|e| CliError::Run(format!("`{interval}` is not a duration: {e}")))?;
    let c = client(file)?;
    let rt = runtime()?;
    let mut n = 0u64;
    loop {
        let body = rt
            .block_on(c.fetch(Method::GET, "/v1/services?metrics=true"))
            .map_err(cli_error)?;
        let list: Vec<Row> = corral_proto::client::decode(&body).map_err(cli_error)?;
        if json {
            // The answer as it came: one JSON array a line.
            println!("{}", String::from_utf8_lossy(&body));
        } else {
            // Clear the screen between frames on a terminal only.
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                print!("\x1b[H\x1b[2J");
            }
            print_table(&list);
        }
        n += 1;
        if iterations.is_some_and(|max| n >= max) {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(every);
    }
}

pub struct LogArgs {
    pub names: Vec<String>,
    pub follow: bool,
    pub tail: usize,
    pub since: Option<String>,
    pub grep: Option<String>,
    pub until: Option<String>,
    /// `out` or `err`.
    pub stream: Option<&'static str>,
    pub raw: bool,
    pub json: bool,
}

/// Control characters (but tabs) as visible escapes: `\x1b` instead of an escape sequence the
/// terminal would run.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| c.is_control() && c != '\t';
    if !text.chars().any(bad) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if bad(c) {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

pub fn logs(file: Option<&Path>, args: LogArgs) -> Result<ExitCode, CliError> {
    let c = client(file)?;
    let mut q = format!("tail={}", args.tail);
    if !args.names.is_empty() {
        q.push_str(&format!("&services={}", encode(&args.names.join(","))));
    }
    if let Some(s) = &args.since {
        q.push_str(&format!("&since={}", encode(s)));
    }
    if let Some(g) = &args.grep {
        q.push_str(&format!("&grep={}", encode(g)));
    }
    if let Some(u) = &args.until {
        q.push_str(&format!("&until={}", encode(u)));
    }
    if let Some(st) = args.stream {
        q.push_str(&format!("&stream={st}"));
    }
    // Names padded to the longest of the units shown, as `up` pads them: the names given, or
    // (below) those of the lines read, or for a follow of every unit, all of them.
    let named = args.names.iter().map(String::len).max().unwrap_or(0);
    // A service's output may hold terminal escapes: on a terminal they are shown, not obeyed.
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let colour = !matches!(
        anstream::AutoStream::choice(&std::io::stdout()),
        anstream::ColorChoice::Never
    );
    let show = |l: &wire::Line, width: usize| {
        if args.json {
            println!("{}", serde_json::to_string(l).unwrap_or_default());
        } else if args.raw {
            println!("{}", l.text);
        } else {
            let time = humantime::format_rfc3339_millis(wire::from_millis(l.time_ms));
            let mark = if l.stream == "err" { '!' } else { '|' };
            let text = if tty {
                escape_controls(&l.text)
            } else {
                std::borrow::Cow::Borrowed(l.text.as_str())
            };
            let name = format!("{:<width$}", l.unit, width = width.max(l.unit.len()));
            // Only corral's part is styled: the service's text goes out as it is (through a
            // pipe a script gets its bytes; on a terminal it was escaped above).
            let (style, mark_style) = if colour {
                (
                    name_style(&l.unit),
                    if l.stream == "err" {
                        anstyle::Style::new().fg_color(Some(anstyle::AnsiColor::Red.into()))
                    } else {
                        anstyle::Style::new().dimmed()
                    },
                )
            } else {
                (anstyle::Style::new(), anstyle::Style::new())
            };
            println!("{time} {style}{name}{style:#} {mark_style}{mark}{mark_style:#} {text}");
        }
    };
    let rt = runtime()?;
    if args.follow {
        let width = if args.names.is_empty() {
            services(file)?
                .iter()
                .map(|s| s.name.len())
                .max()
                .unwrap_or(0)
        } else {
            named
        };
        q.push_str("&follow=true");
        rt.block_on(c.stream(&format!("/v1/logs?{q}"), |event, data| {
            match event {
                "line" => {
                    if let Ok(l) = serde_json::from_str::<wire::Line>(data) {
                        show(&l, width);
                    }
                }
                "lagged" => eprintln!("corral: (this view fell behind and skipped lines: {data}; the log files have them)"),
                _ => {}
            }
            true
        }))
        .map_err(cli_error)?;
    } else {
        let lines: Vec<wire::Line> =
            match rt.block_on(c.call(Method::GET, &format!("/v1/logs?{q}"))) {
                Ok(lines) => lines,
                // No corral runs: the log files are read here, as the daemon would.
                Err(ClientError::NoDaemon) => logs_from_files(file, &args)?,
                Err(e) => return Err(cli_error(e)),
            };
        let width = named.max(lines.iter().map(|l| l.unit.len()).max().unwrap_or(0));
        lines.iter().for_each(|l| show(l, width));
    }
    Ok(ExitCode::SUCCESS)
}

/// `logs` with no corral running: the same query over the project's log files (each unit's
/// `log_file` or `.corral/logs/NAME.log`, with its rotated files), several units by time.
fn logs_from_files(file: Option<&Path>, args: &LogArgs) -> Result<Vec<wire::Line>, CliError> {
    use corral_runtime::logs::{Query, UnitLog, query_units};
    let project = super::load_project_with(file, &Default::default())?;
    let when = |flag: &str, v: &Option<String>| {
        let Some(v) = v else { return Ok(None) };
        corral_runtime::logs::parse_when(v).map(Some).ok_or_else(|| {
            CliError::Run(format!(
                "`{flag}` must be a time (2026-01-02T15:04:05Z) or a duration ago (10m), not `{v}`"
            ))
        })
    };
    let since = when("--since", &args.since)?;
    let until = when("--until", &args.until)?;
    let grep = match &args.grep {
        None => None,
        Some(g) => Some(
            regex::Regex::new(g)
                .map_err(|e| CliError::Run(format!("`--grep` is not a valid pattern: {e}")))?,
        ),
    };
    let q = Query {
        tail: Some(args.tail),
        since,
        grep,
        until,
        stream: args.stream.and_then(corral_runtime::logs::Stream::from_tag),
    };
    if let Some(unknown) = args.names.iter().find(|n| project.unit(n).is_none()) {
        return Err(CliError::Run(format!("no unit named `{unknown}`")));
    }
    let defs: Vec<&corral_config::UnitDef> = project
        .units
        .iter()
        .map(|d| &**d)
        .filter(|d| args.names.is_empty() || args.names.contains(&d.name))
        .collect();
    let logs: Vec<UnitLog> = defs
        .iter()
        .map(|d| UnitLog {
            path: project.log_path(d),
            keep_files: d.log.keep_files,
            end: None,
        })
        .collect();
    let lines = query_units(&logs, &q).map_err(|(i, e)| {
        CliError::Run(format!("cannot read the log of `{}`: {e}", defs[i].name))
    })?;
    Ok(lines
        .into_iter()
        .map(|(i, l)| l.into_wire(defs[i].name.clone()))
        .collect())
}

/// What `start`, `stop` and `restart` take.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["names", "all", "namespace"])))]
pub struct ActArgs {
    /// The units (one or more).
    #[arg(add = clap_complete::ArgValueCompleter::new(super::completions::units))]
    pub names: Vec<String>,
    /// Every unit (the daemon keeps running: `down` ends it).
    #[arg(long)]
    pub all: bool,
    /// Every unit of this namespace.
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Also act on everything that depends on it (stop: first; start: after).
    #[arg(long)]
    pub with_dependents: bool,
    /// Wait for the outcome: up (running and ready; a task: completed) or down. Exits non-zero
    /// saying why when it cannot get there.
    #[arg(long)]
    pub wait: bool,
    /// With `--wait`: give up after this long (`30s`, `5m`; at most 1h).
    #[arg(long, default_value = "60s", requires = "wait")]
    pub timeout: String,
}

/// `start`/`stop`/`restart` of each named unit (or all, or a namespace's), in dependency order
/// (stop: dependents first). Every unit is tried; the exit code is 1 if any failed.
pub fn act(file: Option<&Path>, verb: &str, args: &ActArgs) -> Result<ExitCode, CliError> {
    let mut names = args.names.clone();
    if args.all || args.namespace.is_some() {
        // The daemon lists units in dependency order (what a unit needs comes first).
        names = services(file)?
            .into_iter()
            .filter(|s| args.all || s.namespace == args.namespace)
            .map(|s| s.name)
            .collect();
        if names.is_empty() {
            return Err(CliError::Run(match &args.namespace {
                Some(ns) => format!("no unit is in namespace `{ns}`"),
                None => "there are no units".into(),
            }));
        }
        if verb == "stop" {
            names.reverse();
        }
    }
    let mut failed = false;
    for name in &names {
        let mut path = format!(
            "/v1/services/{}/{verb}?dependents={}",
            encode(name),
            args.with_dependents
        );
        if args.wait {
            path.push_str(&format!("&wait=true&timeout={}", encode(&args.timeout)));
        }
        match call::<wire::Done>(file, Method::POST, &path) {
            Ok(done) => println!("{}", done.message),
            // One name: its error is the command's; no corral: none will do better.
            Err(e) if names.len() == 1 || matches!(e, CliError::NoDaemon) => return Err(e),
            Err(e) => {
                eprintln!("{e}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub fn reload(file: Option<&Path>) -> Result<ExitCode, CliError> {
    let done: wire::Done = call(file, Method::POST, "/v1/reload")?;
    println!("{}", done.message);
    Ok(ExitCode::SUCCESS)
}

pub fn scale(file: Option<&Path>, name: &str, replicas: u16) -> Result<ExitCode, CliError> {
    let done: wire::Done = call(
        file,
        Method::POST,
        &format!("/v1/services/{}/scale?replicas={replicas}", encode(name)),
    )?;
    println!("{}", done.message);
    Ok(ExitCode::SUCCESS)
}

pub fn kill(file: Option<&Path>, name: &str, signal: &str) -> Result<ExitCode, CliError> {
    let done: wire::Done = call(
        file,
        Method::POST,
        &format!(
            "/v1/services/{}/signal?signal={}",
            encode(name),
            encode(signal)
        ),
    )?;
    println!("{}", done.message);
    Ok(ExitCode::SUCCESS)
}

/// Whether a dependency in this state still gives what `condition` asked for.
fn still_holds(dep: &wire::Service, condition: wire::Condition) -> bool {
    use wire::{Condition as C, UnitState as S};
    let ended_well = dep.state == S::Exited && dep.last_exit == Some(wire::ExitStatus::Code(0));
    match condition {
        C::Started | C::LogReady => dep.state == S::Running || dep.state == S::Exited,
        C::Healthy => (dep.state == S::Running && dep.ready) || ended_well,
        C::Completed => dep.state == S::Exited,
        C::CompletedSuccessfully => ended_well,
    }
}

/// `--json`: what the API answered, as it answered it (same field names).
pub fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub fn why(file: Option<&Path>, name: &str, json: bool) -> Result<ExitCode, CliError> {
    let s: wire::Service = call(file, Method::GET, &format!("/v1/services/{}", encode(name)))?;
    if json {
        print_json(&s);
        return Ok(ExitCode::SUCCESS);
    }
    let all = services(file)?;
    let mut lines = vec![format!("{} is {}", s.name, s.state_text())];
    if s.held {
        lines.push(format!(
            "  it was stopped by the user; `corral start {}` brings it back",
            s.name
        ));
    }
    if !s.waiting_on.is_empty() {
        let waiting: Vec<String> = s.waiting_on.iter().map(|d| d.to_string()).collect();
        lines.push(format!("  waiting for: {}", waiting.join(", ")));
    }
    if let Some(r) = &s.reason {
        lines.push(format!("  because: {r}"));
    }
    if let Some(h) = &s.health {
        lines.push(format!("  health: {h}"));
    }
    if let Some(t) = &s.status_text {
        lines.push(format!("  status: {t}"));
    }
    if let Some(t) = &s.log_trouble {
        lines.push(format!(
            "  its log file cannot be written: {t} (its lines are not kept meanwhile)"
        ));
    }
    if let Some(next) = s.next_run_ms {
        let now = wire::millis(std::time::SystemTime::now());
        lines.push(format!(
            "  next scheduled run in {}",
            corral_proto::fmt_duration(std::time::Duration::from_millis(next.saturating_sub(now)))
        ));
    }
    if let Some(e) = &s.last_exit {
        lines.push(format!("  last exit: {e}"));
    }
    if s.restarts > 0 {
        lines.push(format!("  restarts: {}", s.restarts));
    }
    for l in &s.limits {
        lines.push(format!("  limit {l}"));
    }
    // What it depends on, and whether that still holds: a unit keeps running when a
    // dependency fails later, degraded.
    let up = matches!(
        s.state,
        wire::UnitState::Running | wire::UnitState::Starting
    );
    for d in &s.depends_on {
        let Some(dep) = all.iter().find(|x| x.name == d.name) else {
            continue;
        };
        lines.push(format!("  needs {d}: {}", dep.state_text()));
        if up && !still_holds(dep, d.condition) {
            lines.push(format!(
                "  degraded: it needs `{}` {}, but `{}` is {}",
                dep.name,
                d.condition,
                dep.name,
                dep.state_text()
            ));
        }
    }
    println!("{}", lines.join("\n"));
    Ok(ExitCode::SUCCESS)
}

pub fn tree(file: Option<&Path>, json: bool) -> Result<ExitCode, CliError> {
    let list = services(file)?;
    if json {
        print_json(&list);
        return Ok(ExitCode::SUCCESS);
    }
    // Roots: what nothing depends on; each shows what it needs below it.
    let needed: std::collections::HashSet<&str> = list
        .iter()
        .flat_map(|s| s.depends_on.iter().map(|d| d.name.as_str()))
        .collect();
    fn show(
        list: &[wire::Service],
        name: &str,
        cond: Option<wire::Condition>,
        depth: usize,
        path: &mut Vec<String>,
    ) {
        let Some(s) = list.iter().find(|s| s.name == name) else {
            return;
        };
        let cond = cond.map_or(String::new(), |c| format!(" ({c})"));
        let style = state_style(s.state, s.ready);
        anstream::println!(
            "{}{}{cond}: {style}{}{style:#}",
            "  ".repeat(depth),
            s.name,
            s.state_text()
        );
        if path.contains(&s.name) {
            return;
        }
        path.push(s.name.clone());
        for d in &s.depends_on {
            show(list, &d.name, Some(d.condition), depth + 1, path);
        }
        path.pop();
    }
    for s in list.iter().filter(|s| !needed.contains(s.name.as_str())) {
        show(&list, &s.name, None, 0, &mut Vec::new());
    }
    Ok(ExitCode::SUCCESS)
}

pub fn events(file: Option<&Path>, history: usize, json: bool) -> Result<ExitCode, CliError> {
    let c = client(file)?;
    let rt = runtime()?;
    let print = |e: &wire::Event| {
        if json {
            println!("{}", serde_json::to_string(e).unwrap_or_default());
            return;
        }
        let time = humantime::format_rfc3339_millis(wire::from_millis(e.time_ms));
        println!("{time} {} {}", e.kind, e.message);
    };
    if history > 0 {
        let past: Vec<wire::Event> = rt
            .block_on(c.call(Method::GET, &format!("/v1/events/history?limit={history}")))
            .map_err(cli_error)?;
        past.iter().for_each(print);
    }
    rt.block_on(c.stream("/v1/events", |event, data| {
        if event == "event"
            && let Ok(e) = serde_json::from_str::<wire::Event>(data)
        {
            print(&e);
        }
        true
    }))
    .map_err(cli_error)?;
    Ok(ExitCode::SUCCESS)
}
