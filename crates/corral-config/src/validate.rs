//! Stage 2, validate: each unit's node tree into what the engine and the runtime need (a
//! [`Draft`]: `UnitSpec` + `UnitDef` + dependencies still by name), every key checked here and
//! only here, every mistake collected with its span (never stopping at the first). Templates
//! are checked the same way, as the service an instance of them will be.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use corral_engine::{Condition, Kind, ProbeTiming, RestartMode, RestartPolicy, UnitSpec};
use regex::Regex;

use crate::diag::{Diagnostic, did_you_mean};
use crate::env::{expand, parse_dotenv};
use crate::model::*;
use crate::node::{Key, Node, Span, Table, Value, get};
use crate::read::{self, RawUnit};

/// Durations above this are refused: every sum of durations and every deadline stays far from
/// overflow.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// What a template has besides the keys of a service.
pub(crate) const TEMPLATE_ONLY_KEYS: &[&str] =
    &["params", "setup", "files", "port_range", "setup_timeout"];
pub(crate) const SERVICE_KEYS: &[&str] = &[
    "command",
    "workdir",
    "env",
    "env_file",
    "depends_on",
    "ports",
    "kill_others",
    "kill_filters",
    "limits",
    "readiness",
    "liveness",
    "log_ready",
    "restart",
    "stop",
    "start_timeout",
    "log",
    "description",
    "user",
    "group",
    "umask",
    "disabled",
    "exit_on_failure",
    "exit_on_end",
    "exit_on_skipped",
    "shutdown_command",
    "namespace",
    "shell",
    "image",
    "log_file",
    "daemon",
    "watchdog",
    "max_memory",
    "on_ready",
    "on_failure",
    "on_exit",
    "on_restart",
    "hook_timeout",
    "watch",
    "watch_ignore",
    "watch_debounce",
];
pub(crate) const TASK_KEYS: &[&str] = &[
    "command",
    "workdir",
    "env",
    "env_file",
    "depends_on",
    "allow_failure",
    "log_ready",
    "stop",
    "log",
    "description",
    "user",
    "group",
    "umask",
    "disabled",
    "exit_on_failure",
    "exit_on_end",
    "exit_on_skipped",
    "namespace",
    "shell",
    "image",
    "watch",
    "watch_ignore",
    "watch_debounce",
    "schedule",
    "overlap",
    "limits",
    "log_file",
    "on_ready",
    "on_failure",
    "on_exit",
    "on_restart",
    "hook_timeout",
];
pub(crate) const TARGET_KEYS: &[&str] = &["depends_on", "description", "disabled", "namespace"];
pub(crate) const PROBE_KEYS: &[&str] = &[
    "tcp",
    "http",
    "exec",
    "log",
    "notify",
    "status",
    "body",
    "insecure",
    "output",
    "start_period",
    "interval",
    "timeout",
    "failure_threshold",
    "success_threshold",
];
pub(crate) const RESTART_KEYS: &[&str] = &[
    "mode",
    "max_restarts",
    "startup_max_restarts",
    "startup_grace",
    "backoff_initial",
    "backoff_max",
    "jitter",
    "reset_after",
];
pub(crate) const STOP_KEYS: &[&str] = &["signal", "timeout", "parent_only"];
pub(crate) const LOG_KEYS: &[&str] = &["lines", "max_file_size", "keep_files"];
pub(crate) const LIMIT_KEYS: &[&str] = &[
    "nofile", "nproc", "core", "memlock", "as", "stack", "fsize", "cpu", "memory", "cpus",
];

/// A unit as validated, before names are resolved to ids.
#[derive(Clone, Debug)]
pub struct Draft {
    pub spec: UnitSpec,
    pub def: Arc<UnitDef>,
    /// (dependency name, its span, condition if written)
    pub deps: Vec<(String, Span, Option<Condition>)>,
    /// Where each fixed port was declared: two units cannot both have one.
    pub port_spans: Vec<(u16, Span)>,
    /// Where `log_file` was written: two units cannot share a log file.
    pub log_span: Option<Span>,
}

/// What every unit of a project shares: the project's directory, environment and log defaults.
#[derive(Clone, Debug)]
pub struct Context {
    pub root: PathBuf,
    pub env: BTreeMap<String, String>,
    /// `env` as a unit holds it, made once: a unit with no environment of its own shares it.
    /// (Made per unit, 2,000 copies were a third of a 2,000-service daemon's heap, and freeing
    /// the duplicates afterwards left the heap as large.)
    pub inherited: Arc<[(String, String)]>,
    pub log: LogSettings,
    /// How string commands run: the project's `shell` (default `sh -c`).
    pub shell: Option<Vec<String>>,
}

/// Collects diagnostics while walking nodes.
pub struct Walker<'s> {
    pub diags: Vec<Diagnostic>,
    pub root: &'s Path,
    /// Checking a template as a unit: its placeholders are checked against its params instead.
    pub in_template: bool,
}

impl Walker<'_> {
    fn error(&mut self, span: Span, message: impl Into<String>) {
        self.diags.push(Diagnostic::new(span, message));
    }

    fn error_help(&mut self, span: Span, message: impl Into<String>, help: impl Into<String>) {
        self.diags
            .push(Diagnostic::new(span, message).with_help(help));
    }

    fn check_keys(&mut self, table: &Table, allowed: &[&str], context: &str) {
        read::check_keys(&mut self.diags, table, allowed, context);
    }

    fn table<'a>(&mut self, v: &'a Node, what: &str) -> Option<&'a Table> {
        read::as_table(&mut self.diags, v, what)
    }

    fn string(&mut self, v: &Node, what: &str) -> Option<String> {
        match &v.value {
            Value::String(s) => Some(s.clone()),
            other => {
                self.error(
                    v.span.clone(),
                    format!("{what} must be a string, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn bool(&mut self, v: &Node, what: &str) -> Option<bool> {
        match &v.value {
            Value::Bool(b) => Some(*b),
            other => {
                self.error(
                    v.span.clone(),
                    format!("{what} must be true or false, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn integer(&mut self, v: &Node, what: &str, range: std::ops::Range<i64>) -> Option<i64> {
        let n = match &v.value {
            Value::Integer(i) => *i,
            other => {
                self.error(
                    v.span.clone(),
                    format!("{what} must be a whole number, found {}", other.type_str()),
                );
                return None;
            }
        };
        match n {
            Some(n) if range.contains(&n) => Some(n),
            _ => {
                self.error(
                    v.span.clone(),
                    format!("{what} must be from {} to {}", range.start, range.end - 1),
                );
                None
            }
        }
    }

    fn float(&mut self, v: &Node, what: &str) -> Option<f64> {
        let f = match &v.value {
            Value::Float(f) => Some(*f),
            Value::Integer(i) => i.map(|i| i as f64),
            _ => None,
        };
        match f {
            Some(f) if (0.0..=1.0).contains(&f) => Some(f),
            _ => {
                self.error(
                    v.span.clone(),
                    format!("{what} must be a number from 0 to 1"),
                );
                None
            }
        }
    }

    fn duration(&mut self, v: &Node, what: &str) -> Option<Duration> {
        let Value::String(s) = &v.value else {
            self.error_help(
                v.span.clone(),
                format!(
                    "{what} must be a duration string, found {}",
                    v.value.type_str()
                ),
                "write it like \"500ms\", \"30s\" or \"2m\"",
            );
            return None;
        };
        match humantime::parse_duration(s) {
            Ok(d) if d > MAX_DURATION => {
                self.error(
                    v.span.clone(),
                    format!("{what}: `{s}` is too long (at most 365 days)"),
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.error_help(
                    v.span.clone(),
                    format!("{what}: `{s}` is not a duration ({e})"),
                    "write it like \"500ms\", \"30s\" or \"2m\"",
                );
                None
            }
        }
    }

    fn regex(&mut self, v: &Node, what: &str) -> Option<Regex> {
        let s = self.string(v, what)?;
        match Regex::new(&s) {
            Ok(r) => Some(r),
            Err(e) => {
                let first = e
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or("")
                    .trim()
                    .to_string();
                self.error(
                    v.span.clone(),
                    format!("{what} is not a valid regex: {first}"),
                );
                None
            }
        }
    }

    fn command(&mut self, v: &Node, what: &str) -> Option<Command> {
        match &v.value {
            Value::String(s) if s.trim().is_empty() => {
                self.error(v.span.clone(), format!("{what} is empty"));
                None
            }
            Value::String(s) => Some(Command::Shell(s.clone())),
            Value::Array(items) => {
                if items.is_empty() {
                    self.error(v.span.clone(), format!("{what} is an empty list"));
                    return None;
                }
                // Exactly as long as it is: it is kept for the life of the unit.
                let mut argv = Vec::with_capacity(items.len());
                for item in items {
                    argv.push(self.string(item, &format!("each part of {what}"))?);
                }
                Some(Command::Argv(argv))
            }
            other => {
                self.error_help(
                    v.span.clone(),
                    format!(
                        "{what} must be a string or a list of strings, found {}",
                        other.type_str()
                    ),
                    "a string runs with `sh -c`; a list runs the program directly",
                );
                None
            }
        }
    }

    /// `env_file`: a string or a list of strings, paths relative to the project.
    pub fn env_files(&mut self, v: &Node) -> Vec<(PathBuf, Span)> {
        let items: Vec<&Node> = match &v.value {
            Value::Array(a) => a.iter().collect(),
            _ => vec![v],
        };
        items
            .into_iter()
            .filter_map(|item| {
                let s = self.string(item, "env_file")?;
                Some((self.root.join(s), item.span.clone()))
            })
            .collect()
    }

    pub fn load_env_file(
        &mut self,
        path: &Path,
        span: Span,
        vars: &mut BTreeMap<String, String>,
        required: bool,
    ) {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                self.error(
                    span,
                    format!("cannot read env file `{}`: {e}", path.display()),
                );
                return;
            }
        };
        match parse_dotenv(&text) {
            Ok(lines) => {
                for l in lines {
                    let value = if l.literal {
                        Ok(l.value)
                    } else {
                        expand(&l.value, vars)
                    };
                    match value {
                        Ok(v) => {
                            vars.insert(l.key, v);
                        }
                        Err(e) => self.error(
                            span.clone(),
                            format!("{}:{}: `{}`: {e}", path.display(), l.line, l.key),
                        ),
                    }
                }
            }
            Err(e) => {
                self.error(
                    span,
                    format!("{}:{}:{}: {}", path.display(), e.line, e.column, e.message),
                );
            }
        }
    }

    /// An `env` table: values are strings (numbers and booleans are taken as written),
    /// expanded against what came before.
    pub fn env_table(&mut self, v: &Node, vars: &mut BTreeMap<String, String>) {
        let Some(t) = self.table(v, "env") else {
            return;
        };
        for (k, val) in t {
            // The kernel takes `KEY=VALUE` C strings: these would fail (or split) at spawn.
            if k.name.is_empty() || k.name.contains(['=', '\0']) {
                self.error_help(
                    k.span.clone(),
                    format!(
                        "`{}` cannot name an environment variable",
                        k.name.escape_debug()
                    ),
                    "a name is not empty and holds no `=` and no NUL",
                );
                continue;
            }
            let raw = match &val.value {
                Value::String(s) if s.contains('\0') => {
                    self.error(
                        val.span.clone(),
                        format!(
                            "env `{}` holds a NUL byte, which no process can receive",
                            k.name
                        ),
                    );
                    continue;
                }
                Value::String(s) => s.clone(),
                Value::Integer(Some(i)) => i.to_string(),
                Value::Float(f) => f.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    self.error(
                        val.span.clone(),
                        format!(
                            "env `{}` must be a string, found {}",
                            k.name,
                            other.type_str()
                        ),
                    );
                    continue;
                }
            };
            match expand(&raw, vars) {
                Ok(x) => {
                    vars.insert(k.name.clone(), x);
                }
                Err(e) => self.error(val.span.clone(), format!("env `{}`: {e}", k.name)),
            }
        }
    }

    pub fn log_settings(&mut self, v: &Node, mut s: LogSettings) -> LogSettings {
        let Some(t) = self.table(v, "`log`") else {
            return s;
        };
        self.check_keys(t, LOG_KEYS, "`log`");
        if let Some(v) = get(t, "lines") {
            s.ring_lines = self
                .integer(v, "`log.lines`", 0..10_000_001)
                .map_or(s.ring_lines, |n| n as usize);
        }
        if let Some(v) = get(t, "max_file_size") {
            s.max_file_bytes = match &v.value {
                Value::String(text) => match parse_size(text) {
                    // Smaller, every line would rotate away at once.
                    Some(n) if n < 1024 => {
                        self.error_help(
                            v.span.clone(),
                            format!("`log.max_file_size` `{text}` is too small: the log would keep nothing"),
                            "at least \"1KiB\"; the default is \"10MiB\"",
                        );
                        s.max_file_bytes
                    }
                    Some(n) => n,
                    None => {
                        self.error_help(
                            v.span.clone(),
                            format!("`{text}` is not a size"),
                            "write it like \"10MiB\", \"512KiB\" or a number of bytes",
                        );
                        s.max_file_bytes
                    }
                },
                _ => self
                    .integer(v, "`log.max_file_size`", 1024..i64::MAX)
                    .map_or(s.max_file_bytes, |n| n as u64),
            };
        }
        if let Some(v) = get(t, "keep_files") {
            s.keep_files = self
                .integer(v, "`log.keep_files`", 0..101)
                .map_or(s.keep_files, |n| n as u32);
        }
        s
    }
}

/// `10MiB`, `512KiB`, `1GiB`, `123` (bytes); `MB`/`KB` are read as powers of 1024 too.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..split].parse().ok()?;
    let mult = match s[split..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// A string command under `shell` (the default, `sh -c`, stays a shell command).
fn with_shell(c: Command, shell: Option<&[String]>) -> Command {
    match (c, shell) {
        (Command::Shell(script), Some(sh)) => {
            let mut argv = sh.to_vec();
            argv.push(script);
            Command::Argv(argv)
        }
        (c, _) => c,
    }
}

impl Walker<'_> {
    /// `shell = "bash"` (run as `bash -c`) or `shell = ["bash", "-eu", "-c"]`.
    pub fn shell(&mut self, v: &Node) -> Option<Vec<String>> {
        match &v.value {
            Value::String(s) if !s.trim().is_empty() => Some(vec![s.clone(), "-c".into()]),
            Value::Array(items) if !items.is_empty() => {
                items.iter().map(|i| self.string(i, "`shell`")).collect()
            }
            _ => {
                self.error_help(
                    v.span.clone(),
                    "`shell` must be a program or a non-empty list",
                    "e.g. `shell = \"bash\"` (runs `bash -c COMMAND`) or `shell = [\"bash\", \"-eu\", \"-c\"]`",
                );
                None
            }
        }
    }
}

/// Validate one unit.
pub fn unit(w: &mut Walker<'_>, raw: &RawUnit, ctx: &Context) -> Draft {
    let (kind, name, t) = (raw.kind, raw.name.as_str(), &raw.body);
    let what = format!("{} `{name}`", kind.as_str());
    let allowed = match kind {
        Kind::Service => SERVICE_KEYS,
        Kind::Task => TASK_KEYS,
        Kind::Target => TARGET_KEYS,
    };
    w.check_keys(t, allowed, &what);
    let mut spec = UnitSpec::new(name, kind);
    let mut def = UnitDef {
        name: name.to_string(),
        kind,
        command: None,
        workdir: w.root.to_path_buf(),
        env: Vec::new().into(),
        ports: Vec::new(),
        kill_others: false,
        limits: Vec::new(),
        cgroup_limits: crate::CgroupLimits::default(),
        readiness: None,
        liveness: None,
        log_ready: None,
        log: ctx.log,
        hooks: None,
        schedule: None,
        notify: false,
        watch: None,
        daemon: false,
        stop_parent_only: false,
        identity: None,
        umask: None,
        disabled: false,
        extras: None,
    };
    let shell = match get(t, "shell") {
        Some(v) => w.shell(v),
        None => ctx.shell.clone(),
    };

    if kind != Kind::Target {
        match get(t, "command") {
            Some(v) => {
                def.command = w
                    .command(v, &format!("`command` of {what}"))
                    .map(|c| with_shell(c, shell.as_deref()));
            }
            None => w.error_help(
                raw.name_span.clone(),
                format!("{what} has no `command`"),
                "add `command = \"...\"` (run by sh -c) or `command = [\"prog\", \"arg\"]`",
            ),
        }
    }
    if let Some(v) = get(t, "workdir")
        && let Some(dir) = w.string(v, "`workdir`")
    {
        let dir = w.root.join(dir);
        // In a template, a placeholder (`{workspace}`) is filled when an instance is made, and
        // the instance's service is checked then.
        let later = w.in_template && dir.to_string_lossy().contains('{');
        if !dir.is_dir() && !later {
            w.error(
                v.span.clone(),
                format!("`workdir` `{}` is not a directory", dir.display()),
            );
        }
        def.workdir = dir;
    }

    let env_file = get(t, "env_file");
    let own_env = get(t, "env");
    if env_file.is_none() && own_env.is_none() {
        def.env = ctx.inherited.clone();
    } else {
        let mut env = ctx.env.clone();
        if let Some(v) = env_file {
            for (path, span) in w.env_files(v) {
                w.load_env_file(&path, span, &mut env, true);
            }
        }
        if let Some(v) = own_env {
            w.env_table(v, &mut env);
        }
        def.env = env.into_iter().collect();
    }

    let mut port_spans = Vec::new();
    if let Some(v) = get(t, "ports") {
        match &v.value {
            Value::Array(items) => {
                for item in items {
                    match &item.value {
                        Value::String(s) if s == "auto" => {
                            if def.ports.contains(&PortDecl::Auto) {
                                w.error_help(
                                    item.span.clone(),
                                    "`auto` twice: a unit gets one automatic port",
                                    "declare one `auto` port; it is given as `PORT` and `{port}`",
                                );
                            }
                            def.ports.push(PortDecl::Auto);
                        }
                        Value::Integer(_) => {
                            if let Some(p) = w.integer(item, "a port", 1..65536) {
                                let p = p as u16;
                                if def.ports.contains(&PortDecl::Fixed(p)) {
                                    w.error(
                                        item.span.clone(),
                                        format!("port {p} is declared twice"),
                                    );
                                }
                                def.ports.push(PortDecl::Fixed(p));
                                port_spans.push((p, item.span.clone()));
                            }
                        }
                        _ => w.error(
                            item.span.clone(),
                            "a port must be a number from 1 to 65535 or \"auto\"",
                        ),
                    }
                }
            }
            _ => w.error_help(
                v.span.clone(),
                "`ports` must be a list",
                "write `ports = [8080]` or `ports = [\"auto\"]`",
            ),
        }
    }
    if let Some(v) = get(t, "kill_others") {
        def.kill_others = w.bool(v, "`kill_others`").unwrap_or(false);
        if def.kill_others && def.ports.is_empty() {
            w.error_help(
                v.span.clone(),
                "`kill_others` needs `ports`",
                "declare the ports whose holders should be killed",
            );
        }
    }
    if let Some(v) = get(t, "limits")
        && let Some(lt) = w.table(v, "`limits`")
    {
        w.check_keys(lt, LIMIT_KEYS, "`limits`");
        for (k, lv) in lt {
            if !LIMIT_KEYS.contains(&k.name.as_str()) {
                continue;
            }
            // Cgroup limits (where a cgroup is delegated): a share of CPUs and a memory cap.
            if k.name == "cpus" {
                let cpus = match &lv.value {
                    Value::Float(f) => Some(*f),
                    Value::Integer(i) => i.map(|i| i as f64),
                    _ => None,
                };
                match cpus {
                    Some(c) if (0.01..=1024.0).contains(&c) => def.cgroup_limits.cpus = Some(c),
                    _ => w.error_help(
                        lv.span.clone(),
                        "`limits.cpus` must be a number of CPUs from 0.01 to 1024",
                        "e.g. 0.5 for half of one CPU, 2 for two (a cgroup's cpu.max)",
                    ),
                }
                continue;
            }
            if k.name == "memory" {
                let bytes = match &lv.value {
                    Value::String(s) => parse_size(s),
                    Value::Integer(Some(i)) if *i > 0 => Some(*i as u64),
                    _ => None,
                };
                match bytes {
                    Some(b) if b >= 1 << 20 => def.cgroup_limits.memory = Some(b),
                    _ => w.error_help(
                        lv.span.clone(),
                        "`limits.memory` must be a size of at least 1MiB",
                        "e.g. \"512MiB\" (a cgroup's memory.max; `max_memory` restarts on RSS instead)",
                    ),
                }
                continue;
            }
            if k.name == "cpu" && matches!(lv.value, Value::Float(_)) {
                w.error_help(
                    lv.span.clone(),
                    "`limits.cpu` is CPU time in seconds (an rlimit), a whole number",
                    "for a share of CPUs write `cpus` (e.g. cpus = 0.5)",
                );
                continue;
            }
            let value = match &lv.value {
                Value::String(s) if s == "unlimited" || s == "infinity" => Some(u64::MAX),
                Value::String(s) => parse_size(s).or_else(|| {
                    w.error_help(
                        lv.span.clone(),
                        format!("`limits.{}` `{s}` is not a number or size", k.name),
                        "a number, a size like \"64MiB\", or \"unlimited\"",
                    );
                    None
                }),
                _ => w
                    .integer(lv, &format!("`limits.{}`", k.name), 0..i64::MAX)
                    .map(|n| n as u64),
            };
            if let Some(value) = value {
                def.limits.push((k.name.clone(), value));
            }
        }
    }
    if let Some(v) = get(t, "kill_filters") {
        match &v.value {
            Value::Array(items) if !items.is_empty() => {
                for item in items {
                    if let Some(text) = w.string(item, "a `kill_filters` entry")
                        && let Some(pattern) = w.regex(item, "a `kill_filters` entry")
                    {
                        def.extras_mut()
                            .kill_filters
                            .push(crate::KillFilter { text, pattern });
                    }
                }
            }
            _ => w.error_help(
                v.span.clone(),
                "`kill_filters` must be a non-empty list",
                "e.g. [\"redis-server\"] (a process name) or [\"python3 .*worker\"] (a regex over the command line)",
            ),
        }
    }
    let first_port = def.ports.first().copied();
    if let Some(v) = get(t, "readiness") {
        def.readiness = probe(w, v, "readiness", first_port).map(Box::new);
    }
    if let Some(v) = get(t, "liveness") {
        def.liveness = probe(w, v, "liveness", first_port).map(Box::new);
        if let Some(l) = &def.liveness
            && matches!(l.check, Check::Log { .. } | Check::Notify)
        {
            w.error_help(
                v.span.clone(),
                "a `log` or `notify` check can only be a readiness probe",
                "for heartbeats over NOTIFY_SOCKET, set `watchdog = \"10s\"`",
            );
            def.liveness = None;
        }
    }
    if let Some(v) = get(t, "schedule") {
        def.schedule = w.string(v, "`schedule`").and_then(|pattern| {
            match croner::parser::CronParser::new().parse(&pattern) {
                Ok(cron) => Some(Box::new(crate::Schedule { pattern, cron })),
                Err(e) => {
                    w.error_help(
                        v.span.clone(),
                        format!("`{pattern}` is not a cron schedule: {e}"),
                        "minute hour day-of-month month day-of-week, with an optional seconds field first: \"*/5 * * * *\", \"*/10 * * * * *\"",
                    );
                    None
                }
            }
        });
        let overlap = match get(t, "overlap") {
            None => Some(corral_engine::Overlap::Skip),
            Some(o) => match w.string(o, "`overlap`").as_deref() {
                Some("skip") => Some(corral_engine::Overlap::Skip),
                Some("queue") => Some(corral_engine::Overlap::Queue),
                Some("kill") => Some(corral_engine::Overlap::Kill),
                Some(other) => {
                    w.error_help(
                        o.span.clone(),
                        format!("`overlap` `{other}` is not one of skip, queue, kill"),
                        "what a scheduled run does while the last is still going",
                    );
                    None
                }
                None => None,
            },
        };
        spec.schedule = def.schedule.as_ref().and(overlap);
    } else if let Some(o) = get(t, "overlap") {
        w.error(o.span.clone(), "`overlap` needs `schedule`");
    }
    if let Some(v) = get(t, "max_memory") {
        spec.max_memory = match &v.value {
            Value::String(text) => match parse_size(text) {
                Some(n) if n >= 1 << 20 => Some(n),
                _ => {
                    w.error_help(
                        v.span.clone(),
                        format!("`max_memory` `{text}` is not a size of at least 1MiB"),
                        "e.g. \"512MiB\" or \"2GiB\"",
                    );
                    None
                }
            },
            _ => w
                .integer(v, "`max_memory`", 1 << 20..i64::MAX)
                .map(|n| n as u64),
        };
    }
    if let Some(v) = get(t, "watchdog") {
        spec.watchdog = w.duration(v, "`watchdog`").filter(|d| !d.is_zero());
    }
    def.notify = spec.watchdog.is_some()
        || def
            .readiness
            .as_ref()
            .is_some_and(|p| matches!(p.check, Check::Notify));
    spec.readiness = def.readiness.as_ref().map(|p| Box::new(p.timing));
    spec.liveness = def.liveness.as_ref().map(|p| Box::new(p.timing));
    if let Some(v) = get(t, "log_ready") {
        def.log_ready = w.regex(v, "`log_ready`");
    }
    if let Some(v) = get(t, "restart") {
        spec.restart = restart(w, v, spec.restart);
    }
    if let Some(v) = get(t, "stop")
        && let Some(st) = w.table(v, "`stop`")
    {
        w.check_keys(st, STOP_KEYS, "`stop`");
        if let Some(sv) = get(st, "signal")
            && let Some(sig) = signal(w, sv)
        {
            spec.stop_signal = sig;
        }
        if let Some(tv) = get(st, "timeout") {
            spec.stop_grace = w.duration(tv, "`stop.timeout`").unwrap_or(spec.stop_grace);
        }
        if let Some(v) = get(st, "parent_only") {
            def.stop_parent_only = w.bool(v, "`stop.parent_only`").unwrap_or(false);
            // A task's main process is corral's wrapper, which outlives its command.
            if def.stop_parent_only && kind == Kind::Task {
                w.error_help(
                    v.span.clone(),
                    "`stop.parent_only` applies to services",
                    "a task's stop signal goes to its whole process group",
                );
            }
        }
    }
    if let Some(v) = get(t, "start_timeout") {
        spec.start_timeout = w
            .duration(v, "`start_timeout`")
            .unwrap_or(spec.start_timeout);
    }
    if let Some(v) = get(t, "allow_failure") {
        spec.allow_failure = w.bool(v, "`allow_failure`").unwrap_or(false);
    }
    if let Some(v) = get(t, "log") {
        def.log = w.log_settings(v, def.log);
    }
    if let Some(v) = get(t, "description")
        && let Some(s) = w.string(v, "`description`")
    {
        def.extras_mut().description = Some(s);
    }
    if let Some(v) = get(t, "watch") {
        def.watch = watch(w, v, get(t, "watch_ignore")).map(Box::new);
        let debounce = get(t, "watch_debounce")
            .and_then(|d| w.duration(d, "`watch_debounce`"))
            .unwrap_or(Duration::from_millis(300));
        spec.watch_debounce = def.watch.is_some().then_some(debounce);
    } else if let Some(v) = get(t, "watch_ignore").or(get(t, "watch_debounce")) {
        w.error_help(
            v.span.clone(),
            "`watch_ignore` and `watch_debounce` need `watch`",
            "e.g. `watch = [\"src/**/*.rs\"]`",
        );
    }
    if let Some(v) = get(t, "daemon") {
        def.daemon = w.bool(v, "`daemon`").unwrap_or(false);
    }
    let log_span = get(t, "log_file").map(|v| v.span.clone());
    if let Some(v) = get(t, "log_file")
        && let Some(path) = log_file(w, v)
    {
        def.extras_mut().log_file = Some(path);
    }
    if let Some(v) = get(t, "disabled") {
        def.disabled = w.bool(v, "`disabled`").unwrap_or(false);
    }
    for (key, slot) in [
        ("exit_on_failure", &mut spec.exit_on_failure),
        ("exit_on_end", &mut spec.exit_on_end),
        ("exit_on_skipped", &mut spec.exit_on_skipped),
    ] {
        if let Some(v) = get(t, key) {
            *slot = w.bool(v, &format!("`{key}`")).unwrap_or(false);
        }
    }
    if let Some(v) = get(t, "shutdown_command")
        && let Some(c) = w.command(v, "`shutdown_command`")
    {
        def.extras_mut().shutdown_command = Some(with_shell(c, shell.as_deref()));
    }
    let mut hooks = crate::Hooks::default();
    if let Some(v) = get(t, "hook_timeout")
        && let Some(d) = w.duration(v, "`hook_timeout`")
    {
        hooks.timeout = d;
    }
    for (key, slot) in [
        ("on_ready", &mut hooks.on_ready),
        ("on_failure", &mut hooks.on_failure),
        ("on_exit", &mut hooks.on_exit),
        ("on_restart", &mut hooks.on_restart),
    ] {
        if let Some(v) = get(t, key) {
            *slot = w
                .command(v, &format!("`{key}`"))
                .map(|c| with_shell(c, shell.as_deref()));
        }
    }
    def.hooks = hooks.any().then(|| Box::new(hooks));
    if let Some(v) = get(t, "namespace")
        && let Some(s) = w.string(v, "`namespace`")
    {
        def.extras_mut().namespace = Some(s);
    }
    if let Some(v) = get(t, "image")
        && let Some(s) = w.string(v, "`image`")
    {
        def.extras_mut().image = Some(s);
    }
    def.identity = identity(w, t).map(Box::new);
    if let Some(v) = get(t, "umask") {
        def.umask = match &v.value {
            Value::String(s) => u32::from_str_radix(s.trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o777),
            Value::Integer(Some(i)) => u32::try_from(*i).ok().filter(|m| *m <= 0o777),
            _ => None,
        };
        if def.umask.is_none() {
            w.error_help(
                v.span.clone(),
                "`umask` must be an octal mode from 000 to 777",
                "write it like \"022\" or \"027\"",
            );
        }
    }

    let mut deps = Vec::new();
    if let Some(v) = get(t, "depends_on") {
        match &v.value {
            Value::Array(items) => {
                for item in items {
                    if let Some(n) = w.string(item, "a dependency") {
                        deps.push((n, item.span.clone(), None));
                    }
                }
            }
            Value::Table(dt) => {
                for (dn, cv) in dt {
                    let Some(c) = w.string(cv, "a dependency condition") else {
                        continue;
                    };
                    match Condition::parse(&c) {
                        Some(cond) => deps.push((dn.name.clone(), dn.span.clone(), Some(cond))),
                        None => {
                            let names = Condition::ALL.map(|c| c.as_str());
                            let help = match did_you_mean(&c, names) {
                                Some(s) => format!("did you mean `{s}`?"),
                                None => format!("expected one of: {}", names.join(", ")),
                            };
                            w.error_help(cv.span.clone(), format!("unknown condition `{c}`"), help);
                        }
                    }
                }
            }
            other => w.error_help(
                v.span.clone(),
                format!(
                    "`depends_on` must be a list or a table, found {}",
                    other.type_str()
                ),
                "write `depends_on = [\"db\"]` or `depends_on = { db = \"healthy\" }`",
            ),
        }
    }
    Draft {
        spec,
        def: Arc::new(def),
        deps,
        port_spans,
        log_span,
    }
}

/// `watch` (and `watch_ignore`): glob patterns over paths relative to the project; `*` stays
/// within a directory, `**` crosses them.
fn watch(w: &mut Walker<'_>, v: &Node, ignore: Option<&Node>) -> Option<crate::Watch> {
    let set =
        |w: &mut Walker<'_>, v: &Node, what: &str| -> Option<(Vec<String>, globset::GlobSet)> {
            let Value::Array(items) = &v.value else {
                w.error_help(
                    v.span.clone(),
                    format!("`{what}` must be a list of patterns"),
                    "e.g. [\"src/**/*.rs\", \"Cargo.toml\"]",
                );
                return None;
            };
            let mut b = globset::GlobSetBuilder::new();
            let mut texts = Vec::new();
            for item in items {
                let text = w.string(item, &format!("a `{what}` pattern"))?;
                match globset::GlobBuilder::new(&text).literal_separator(true).build() {
                Ok(g) => {
                    b.add(g);
                    texts.push(text);
                }
                Err(e) => w.error_help(
                    item.span.clone(),
                    format!("`{text}` is not a pattern: {}", e.kind()),
                    "`*` matches within a directory, `**` across directories, `?` one character",
                ),
            }
            }
            Some((texts, b.build().ok()?))
        };
    let (patterns, matcher) = set(w, v, "watch")?;
    if patterns.is_empty() {
        w.error(v.span.clone(), "`watch` names no pattern");
        return None;
    }
    let (ignore_patterns, ignore) = match ignore {
        Some(i) => set(w, i, "watch_ignore")?,
        None => (Vec::new(), globset::GlobSet::empty()),
    };
    Some(crate::Watch {
        patterns,
        ignore_patterns,
        matcher,
        ignore,
    })
}

/// `log_file`: a path relative to the project's directory (`{replica}` filled by then; a unit
/// without replicas is replica 0, as process-compose's `PC_REPLICA_NUM`).
fn log_file(w: &mut Walker<'_>, v: &Node) -> Option<PathBuf> {
    if w.in_template {
        w.error_help(
            v.span.clone(),
            "a template cannot set `log_file`",
            "an instance's log is kept in .corral/logs and removed with the instance",
        );
        return None;
    }
    let text = w.string(v, "`log_file`")?.replace("{replica}", "0");
    if text.is_empty() || text.ends_with('/') {
        w.error_help(
            v.span.clone(),
            "`log_file` must name a file",
            "e.g. \"logs/api.log\" (relative to the project's directory)",
        );
        return None;
    }
    Some(w.root.join(text))
}

fn probe(w: &mut Walker<'_>, v: &Node, what: &str, port: Option<PortDecl>) -> Option<Probe> {
    let t = w.table(v, &format!("`{what}`"))?;
    w.check_keys(t, PROBE_KEYS, &format!("`{what}`"));
    let kinds: Vec<&str> = ["tcp", "http", "exec", "log", "notify"]
        .into_iter()
        .filter(|k| get(t, k).is_some())
        .collect();
    if kinds.len() != 1 {
        w.error_help(
            v.span.clone(),
            format!(
                "`{what}` needs exactly one check, found {}",
                if kinds.is_empty() {
                    "none".to_string()
                } else {
                    kinds.join(" and ")
                }
            ),
            "use one of `tcp = \"127.0.0.1:5432\"`, `http = \"http://127.0.0.1:8080/health\"`, `exec = [\"cmd\"]`, `log = \"regex\"`, `notify = true`",
        );
        return None;
    }
    let needs_port = |w: &mut Walker<'_>, s: &str, span: Span| {
        for name in placeholders(s) {
            if name != "port" && !w.in_template {
                w.error_help(
                    span.clone(),
                    format!("unknown placeholder `{{{name}}}` in `{what}`"),
                    "a unit's probe may use `{port}` (its first port)",
                );
            }
        }
        if s.contains("{port}") && port.is_none() {
            w.error_help(
                span,
                "`{port}` is used but the unit declares no `ports`",
                "add `ports = [\"auto\"]` or a port number",
            );
        }
    };
    let kv = get(t, kinds[0])?;
    let check = match kinds[0] {
        "tcp" => {
            let addr = match &kv.value {
                Value::Integer(_) => w
                    .integer(kv, "`tcp` port", 1..65536)
                    .map(|p| format!("127.0.0.1:{p}"))?,
                _ => w.string(kv, "`tcp`")?,
            };
            needs_port(w, &addr, kv.span.clone());
            Check::Tcp { addr }
        }
        "http" => {
            let mut url = w.string(kv, "`http`")?;
            if url.starts_with('/') {
                url = format!("http://127.0.0.1:{{port}}{url}");
            }
            if !url.starts_with("http://") && !url.starts_with("https://") {
                w.error_help(
                    kv.span.clone(),
                    "`http` must be an `http://` or `https://` URL, or a path",
                    "e.g. \"http://127.0.0.1:8080/health\" or \"/health\" for the unit's own port",
                );
                return None;
            }
            needs_port(w, &url, kv.span.clone());
            let status = get(t, "status")
                .and_then(|s| w.integer(s, "`status`", 100..600))
                .map(|s| s as u16);
            let body = get(t, "body").and_then(|b| w.string(b, "`body`"));
            let insecure = match get(t, "insecure") {
                Some(i) => {
                    let on = w.bool(i, "`insecure`").unwrap_or(false);
                    if on && !url.starts_with("https://") {
                        w.error_help(
                            i.span.clone(),
                            "`insecure` only applies to an `https://` URL",
                            "remove it, or probe `https://…`",
                        );
                    }
                    on
                }
                None => false,
            };
            Check::Http {
                url,
                status,
                body,
                insecure,
            }
        }
        "exec" => Check::Exec {
            command: w.command(kv, "`exec`")?,
            output: get(t, "output").and_then(|o| w.string(o, "`output`")),
        },
        "notify" => {
            if w.bool(kv, "`notify`") != Some(true) {
                w.error(kv.span.clone(), "`notify` can only be `true`");
                return None;
            }
            Check::Notify
        }
        _ => Check::Log {
            pattern: w.regex(kv, "`log`")?,
        },
    };
    let mut timing = ProbeTiming {
        // Passed by what the unit says, not by asking it on an interval.
        by_log: matches!(check, Check::Log { .. } | Check::Notify),
        ..ProbeTiming::default()
    };
    for (key, slot) in [
        ("start_period", &mut timing.start_period),
        ("interval", &mut timing.interval),
        ("timeout", &mut timing.timeout),
    ] {
        if let Some(dv) = get(t, key)
            && let Some(d) = w.duration(dv, &format!("`{what}.{key}`"))
        {
            *slot = d;
        }
    }
    if timing.interval.is_zero() {
        w.error(
            get(t, "interval").map_or(v.span.clone(), |x| x.span.clone()),
            "`interval` must be more than 0",
        );
    }
    for (key, slot) in [
        ("failure_threshold", &mut timing.failure_threshold),
        ("success_threshold", &mut timing.success_threshold),
    ] {
        if let Some(n) = get(t, key).and_then(|x| w.integer(x, &format!("`{key}`"), 1..1001)) {
            *slot = n as u32;
        }
    }
    Some(Probe { check, timing })
}

fn restart(w: &mut Walker<'_>, v: &Node, mut p: RestartPolicy) -> RestartPolicy {
    let mode_of = |w: &mut Walker<'_>, v: &Node| -> Option<RestartMode> {
        let s = w.string(v, "restart mode")?;
        match s.as_str() {
            "on-failure" => Some(RestartMode::OnFailure),
            "always" => Some(RestartMode::Always),
            "never" | "no" => Some(RestartMode::Never),
            _ => {
                w.error_help(
                    v.span.clone(),
                    format!("unknown restart mode `{s}`"),
                    "expected `on-failure`, `always` or `never`",
                );
                None
            }
        }
    };
    // `restart = "always"` is short for `restart = { mode = "always" }`.
    if let Value::String(_) = &v.value {
        p.mode = mode_of(w, v).unwrap_or(p.mode);
        return p;
    }
    let Some(t) = w.table(v, "`restart`") else {
        return p;
    };
    w.check_keys(t, RESTART_KEYS, "`restart`");
    if let Some(m) = get(t, "mode") {
        p.mode = mode_of(w, m).unwrap_or(p.mode);
    }
    for (key, slot) in [
        ("max_restarts", &mut p.max_restarts),
        ("startup_max_restarts", &mut p.startup_max_restarts),
    ] {
        if let Some(n) =
            get(t, key).and_then(|x| w.integer(x, &format!("`restart.{key}`"), 0..1_000_001))
        {
            *slot = n as u32;
        }
    }
    for (key, slot) in [
        ("startup_grace", &mut p.startup_grace),
        ("backoff_initial", &mut p.backoff_initial),
        ("backoff_max", &mut p.backoff_max),
        ("reset_after", &mut p.reset_after),
    ] {
        if let Some(d) = get(t, key).and_then(|x| w.duration(x, &format!("`restart.{key}`"))) {
            *slot = d;
        }
    }
    if let Some(j) = get(t, "jitter").and_then(|x| w.float(x, "`restart.jitter`")) {
        p.jitter = j;
    }
    p
}

fn signal(w: &mut Walker<'_>, v: &Node) -> Option<i32> {
    const SIGNALS: &[(&str, i32)] = &[
        ("HUP", 1),
        ("INT", 2),
        ("QUIT", 3),
        ("KILL", 9),
        ("USR1", 10),
        ("USR2", 12),
        ("TERM", 15),
    ];
    if let Value::Integer(_) = &v.value {
        return w.integer(v, "`stop.signal`", 1..32).map(|n| n as i32);
    }
    let s = w.string(v, "`stop.signal`")?;
    let bare = s.trim_start_matches("SIG");
    match SIGNALS.iter().find(|(n, _)| *n == bare) {
        Some((_, n)) => Some(*n),
        None => {
            w.error_help(
                v.span.clone(),
                format!("unknown signal `{s}`"),
                "expected one of SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGKILL, or a number",
            );
            None
        }
    }
}

/// `[templates.NAME]`: a service shape whose strings may hold `{id}`, `{name}`, `{port}`,
/// `{workspace}` and `{PARAM}`. The service part is checked like a service here (so mistakes
/// are reported at their place); dependencies are checked when an instance is made.
pub fn template(w: &mut Walker<'_>, raw: &RawUnit, ctx: &Context) -> Template {
    let name = raw.name.as_str();
    let what = format!("template `{name}`");
    let service: Table = raw
        .body
        .iter()
        .filter(|(k, _)| !TEMPLATE_ONLY_KEYS.contains(&k.name.as_str()))
        .cloned()
        .collect();
    if let Some((k, _)) = raw.body.iter().find(|(k, _)| k.name == "ports") {
        w.error_help(
            k.span.clone(),
            format!("{what}: an instance gets its port from the template"),
            "remove `ports`; use `port_range = [FROM, TO]` (default: any free port) and `{port}`",
        );
    }
    // Checked as the service an instance will be: with a port.
    let mut checked = raw.clone();
    checked.body = service.clone();
    checked.body.retain(|(k, _)| k.name != "ports");
    checked.body.push((
        Key {
            name: "ports".into(),
            span: raw.span.clone(),
        },
        Node {
            value: Value::Array(vec![Node {
                value: Value::String("auto".into()),
                span: raw.span.clone(),
            }]),
            span: raw.span.clone(),
        },
    ));
    w.in_template = true;
    let _ = unit(w, &checked, ctx);
    w.in_template = false;
    let mut tpl = Template {
        name: name.to_string(),
        body: service
            .into_iter()
            .filter(|(k, _)| k.name != "ports")
            .collect(),
        params: Vec::new(),
        setup: Vec::new(),
        files: Vec::new(),
        port_range: None,
        setup_timeout: Duration::from_secs(600),
    };
    let t = &raw.body;
    // Placeholders must name something an instance has: a typo would reach the process as
    // `{nope}`.
    let mut known: Vec<String> = ["id", "name", "port", "workspace"]
        .map(String::from)
        .to_vec();
    if let Some(Node {
        value: Value::Table(pt),
        ..
    }) = get(t, "params")
    {
        known.extend(pt.iter().map(|(k, _)| k.name.clone()));
    }
    for (k, v) in t {
        if !["params", "port_range", "setup_timeout"].contains(&k.name.as_str()) {
            check_placeholders(w, v, &known, &what);
        }
    }
    if let Some(v) = get(t, "params")
        && let Some(pt) = w.table(v, &format!("`{name}.params`"))
    {
        for (k, v) in pt {
            match &v.value {
                Value::String(s) => tpl.params.push((k.name.clone(), s.clone())),
                _ => w.error(
                    v.span.clone(),
                    format!("param `{}`: the default must be a string", k.name),
                ),
            }
        }
    }
    if let Some(v) = get(t, "setup") {
        match &v.value {
            Value::Array(items) => {
                for item in items {
                    if let Some(c) = w.command(item, &format!("`{name}.setup`")) {
                        tpl.setup.push(c);
                    }
                }
            }
            _ => w.error_help(
                v.span.clone(),
                format!("`{name}.setup` must be a list of commands"),
                r#"setup = ["npm install", ["code-server", "--install-extension", "{ext}"]]"#,
            ),
        }
    }
    if let Some(v) = get(t, "setup_timeout")
        && let Some(d) = w.duration(v, &format!("`{name}.setup_timeout`"))
    {
        tpl.setup_timeout = d;
    }
    if let Some(v) = get(t, "files")
        && let Some(ft) = w.table(v, &format!("`{name}.files`"))
    {
        for (k, v) in ft {
            let path = k.name.as_str();
            let safe = !path.is_empty()
                && Path::new(path)
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !safe {
                w.error_help(
                    k.span.clone(),
                    format!("file `{path}` is not a plain relative path"),
                    "files are written inside the instance's workspace: no `..`, no leading `/`",
                );
                continue;
            }
            match &v.value {
                Value::String(s) => tpl.files.push((path.to_string(), s.clone())),
                _ => w.error(
                    v.span.clone(),
                    format!("file `{path}`: the content must be a string"),
                ),
            }
        }
    }
    if let Some(v) = get(t, "port_range") {
        let range = match &v.value {
            Value::Array(a) if a.len() == 2 => {
                let lo = w.integer(&a[0], "the start of `port_range`", 1..65_536);
                let hi = w.integer(&a[1], "the end of `port_range`", 1..65_536);
                lo.zip(hi)
            }
            _ => {
                w.error(v.span.clone(), "`port_range` must be [FROM, TO]");
                None
            }
        };
        match range {
            Some((lo, hi)) if lo <= hi => tpl.port_range = Some((lo as u16, hi as u16)),
            Some(_) => w.error(v.span.clone(), "`port_range` must go from low to high"),
            None => {}
        }
    }
    tpl
}

/// Report every `{name}` in the strings of `v` that is not in `known`.
fn check_placeholders(w: &mut Walker<'_>, v: &Node, known: &[String], what: &str) {
    match &v.value {
        Value::String(s) => {
            for name in placeholders(s) {
                if known.iter().any(|k| k == name) {
                    continue;
                }
                let help = match did_you_mean(name, known.iter().map(String::as_str)) {
                    Some(s) => format!("did you mean `{{{s}}}`?"),
                    None => format!("{what} has: {}", known.join(", ")),
                };
                w.error_help(
                    v.span.clone(),
                    format!("unknown placeholder `{{{name}}}` in {what}"),
                    help,
                );
            }
        }
        Value::Array(items) => {
            for i in items {
                check_placeholders(w, i, known, what);
            }
        }
        Value::Table(t) => {
            for (_, i) in t {
                check_placeholders(w, i, known, what);
            }
        }
        _ => {}
    }
}

/// `user` (and `group`): who the unit runs as, resolved now. corral must be root to run a unit
/// as another user — said here, with the line, rather than at start.
fn identity(w: &mut Walker<'_>, t: &Table) -> Option<Identity> {
    let user_node = get(t, "user");
    let group_node = get(t, "group");
    if user_node.is_none() && group_node.is_none() {
        return None;
    }
    let user = match user_node {
        Some(v) => Some(w.string(v, "`user`")?),
        None => None,
    };
    let group = match group_node {
        Some(v) => Some(w.string(v, "`group`")?),
        None => None,
    };
    match Identity::lookup(user.as_deref(), group.as_deref()) {
        Ok(id) => Some(id),
        Err(e) => {
            let node = if e.key == "group" {
                group_node.or(user_node)
            } else {
                user_node.or(group_node)
            };
            let span = node.map_or(Span::TOP, |n| n.span.clone());
            w.error_help(span, e.message, e.help);
            None
        }
    }
}
