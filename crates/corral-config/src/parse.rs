//! From TOML text to a [`Project`]. We walk toml's spanned document by hand instead of deriving
//! `Deserialize`: serde stops at the first error, and we want every error at once, each at its
//! own line and column, with a did-you-mean for unknown keys and names.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use corral_engine::{
    Condition, Dependency, Kind, Plan, ProbeTiming, RestartMode, RestartPolicy, UnitId, UnitSpec,
};
use regex::Regex;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diag::{ConfigError, Diagnostic, did_you_mean};
use crate::env::{expand, parse_dotenv};
use crate::model::*;

type Value<'i> = Spanned<DeValue<'i>>;

const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

const TOP_KEYS: &[&str] = &[
    "services",
    "tasks",
    "targets",
    "templates",
    "env",
    "env_file",
    "log",
];
/// What a template has besides the keys of a service.
const TEMPLATE_ONLY_KEYS: &[&str] = &["params", "setup", "files", "port_range", "setup_timeout"];
const SERVICE_KEYS: &[&str] = &[
    "command",
    "workdir",
    "env",
    "env_file",
    "depends_on",
    "ports",
    "kill_others",
    "readiness",
    "liveness",
    "log_ready",
    "restart",
    "stop",
    "start_timeout",
    "log",
    "description",
];
const TASK_KEYS: &[&str] = &[
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
];
const TARGET_KEYS: &[&str] = &["depends_on", "description"];
const PROBE_KEYS: &[&str] = &[
    "tcp",
    "http",
    "exec",
    "log",
    "status",
    "body",
    "output",
    "start_period",
    "interval",
    "timeout",
    "failure_threshold",
    "success_threshold",
];
const RESTART_KEYS: &[&str] = &[
    "mode",
    "max_restarts",
    "startup_max_restarts",
    "startup_grace",
    "backoff_initial",
    "backoff_max",
    "jitter",
    "reset_after",
];
const STOP_KEYS: &[&str] = &["signal", "timeout"];
const LOG_KEYS: &[&str] = &["lines", "max_file_size", "keep_files"];

/// Collects diagnostics while walking the document.
struct Walker<'s> {
    diags: Vec<Diagnostic>,
    root: &'s Path,
}

impl Walker<'_> {
    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.diags.push(Diagnostic {
            span,
            message: message.into(),
            help: None,
        });
    }

    fn error_help(
        &mut self,
        span: Range<usize>,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.diags.push(Diagnostic {
            span,
            message: message.into(),
            help: Some(help.into()),
        });
    }

    /// Report keys that are not in `allowed`, with a suggestion.
    fn check_keys(&mut self, table: &DeTable<'_>, allowed: &[&str], context: &str) {
        for (key, _) in table.iter() {
            let k: &str = key.get_ref();
            if !allowed.contains(&k) {
                let msg = format!("unknown key `{k}` in {context}");
                match did_you_mean(k, allowed.iter().copied()) {
                    Some(s) => self.error_help(key.span(), msg, format!("did you mean `{s}`?")),
                    None => self.error_help(
                        key.span(),
                        msg,
                        format!("expected one of: {}", allowed.join(", ")),
                    ),
                }
            }
        }
    }

    fn table<'a, 'i>(&mut self, v: &'a Value<'i>, what: &str) -> Option<&'a DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                self.error(
                    v.span(),
                    format!("{what} must be a table, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn string(&mut self, v: &Value<'_>, what: &str) -> Option<String> {
        match v.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            other => {
                self.error(
                    v.span(),
                    format!("{what} must be a string, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn bool(&mut self, v: &Value<'_>, what: &str) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                self.error(
                    v.span(),
                    format!("{what} must be true or false, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn integer(&mut self, v: &Value<'_>, what: &str, range: Range<i64>) -> Option<i64> {
        let n = match v.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).ok(),
            other => {
                self.error(
                    v.span(),
                    format!("{what} must be a whole number, found {}", other.type_str()),
                );
                return None;
            }
        };
        match n {
            Some(n) if range.contains(&n) => Some(n),
            _ => {
                self.error(
                    v.span(),
                    format!("{what} must be from {} to {}", range.start, range.end - 1),
                );
                None
            }
        }
    }

    fn float(&mut self, v: &Value<'_>, what: &str) -> Option<f64> {
        let f = match v.get_ref() {
            DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
            DeValue::Integer(i) => i.as_str().parse::<f64>().ok(),
            _ => None,
        };
        match f {
            Some(f) if (0.0..=1.0).contains(&f) => Some(f),
            _ => {
                self.error(v.span(), format!("{what} must be a number from 0 to 1"));
                None
            }
        }
    }

    fn duration(&mut self, v: &Value<'_>, what: &str) -> Option<Duration> {
        let DeValue::String(s) = v.get_ref() else {
            self.error_help(
                v.span(),
                format!(
                    "{what} must be a duration string, found {}",
                    v.get_ref().type_str()
                ),
                "write it like \"500ms\", \"30s\" or \"2m\"",
            );
            return None;
        };
        match humantime::parse_duration(s) {
            // A bound keeps every sum of durations and every deadline far from overflow.
            Ok(d) if d > MAX_DURATION => {
                self.error(
                    v.span(),
                    format!("{what}: `{s}` is too long (at most 365 days)"),
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.error_help(
                    v.span(),
                    format!("{what}: `{s}` is not a duration ({e})"),
                    "write it like \"500ms\", \"30s\" or \"2m\"",
                );
                None
            }
        }
    }

    fn regex(&mut self, v: &Value<'_>, what: &str) -> Option<Regex> {
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
                self.error(v.span(), format!("{what} is not a valid regex: {first}"));
                None
            }
        }
    }

    fn command(&mut self, v: &Value<'_>, what: &str) -> Option<Command> {
        match v.get_ref() {
            DeValue::String(s) if s.trim().is_empty() => {
                self.error(v.span(), format!("{what} is empty"));
                None
            }
            DeValue::String(s) => Some(Command::Shell(s.to_string())),
            DeValue::Array(items) => {
                if items.is_empty() {
                    self.error(v.span(), format!("{what} is an empty list"));
                    return None;
                }
                let mut argv = Vec::new();
                for item in items.iter() {
                    argv.push(self.string(item, &format!("each part of {what}"))?);
                }
                Some(Command::Argv(argv))
            }
            other => {
                self.error_help(
                    v.span(),
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
    fn env_files(&mut self, v: &Value<'_>) -> Vec<(PathBuf, Range<usize>)> {
        let items: Vec<&Value<'_>> = match v.get_ref() {
            DeValue::Array(a) => a.iter().collect(),
            _ => vec![v],
        };
        items
            .into_iter()
            .filter_map(|item| {
                let s = self.string(item, "env_file")?;
                Some((self.root.join(s), item.span()))
            })
            .collect()
    }

    fn load_env_file(
        &mut self,
        path: &Path,
        span: Range<usize>,
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
                            format!("`{}` line {}: {e}", path.display(), l.line),
                        ),
                    }
                }
            }
            Err((line, e)) => {
                self.error(span, format!("`{}` line {line}: {e}", path.display()));
            }
        }
    }

    /// An `env` table: values are strings (numbers and booleans are taken as written),
    /// expanded against what came before.
    fn env_table(&mut self, v: &Value<'_>, vars: &mut BTreeMap<String, String>) {
        let Some(t) = self.table(v, "env") else {
            return;
        };
        for (k, val) in t.iter() {
            let raw = match val.get_ref() {
                DeValue::String(s) => s.to_string(),
                DeValue::Integer(i) => i.to_string(),
                DeValue::Float(f) => f.to_string(),
                DeValue::Boolean(b) => b.to_string(),
                other => {
                    self.error(
                        val.span(),
                        format!(
                            "env `{}` must be a string, found {}",
                            k.get_ref(),
                            other.type_str()
                        ),
                    );
                    continue;
                }
            };
            match expand(&raw, vars) {
                Ok(x) => {
                    vars.insert(k.get_ref().to_string(), x);
                }
                Err(e) => self.error(val.span(), format!("env `{}`: {e}", k.get_ref())),
            }
        }
    }
}

fn get<'a, 'i>(t: &'a DeTable<'i>, key: &str) -> Option<&'a Value<'i>> {
    t.iter().find(|(k, _)| k.get_ref() == key).map(|(_, v)| v)
}

pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !name.starts_with('.')
}

/// A unit as read, before names are resolved to ids.
struct Draft {
    spec: UnitSpec,
    def: UnitDef,
    /// (dependency name, its span, condition, whether it was written explicitly)
    deps: Vec<(String, Range<usize>, Option<Condition>)>,
}

/// Parse and validate `text` as the config file at `file`. `inherited` is the environment the
/// processes inherit (normally corral's own).
pub fn parse_project(
    file: &Path,
    text: &str,
    inherited: &BTreeMap<String, String>,
) -> Result<Project, ConfigError> {
    let root = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut w = Walker {
        diags: Vec::new(),
        root: &root,
    };
    let (doc, errors) = DeTable::parse_recoverable(text);
    for e in &errors {
        w.error(e.span().unwrap_or(0..0), e.message().trim().to_string());
    }
    if !errors.is_empty() {
        return Err(ConfigError {
            file: file.to_path_buf(),
            source_text: text.to_string(),
            diagnostics: w.diags,
        });
    }
    let doc = doc.into_inner();
    w.check_keys(&doc, TOP_KEYS, "the top level");

    // Project-wide environment: inherited, then `.env` if present, then `env_file`, then `env`.
    let mut base_env = inherited.clone();
    w.load_env_file(&root.join(".env"), 0..0, &mut base_env, false);
    if let Some(v) = get(&doc, "env_file") {
        for (path, span) in w.env_files(v) {
            w.load_env_file(&path, span, &mut base_env, true);
        }
    }
    if let Some(v) = get(&doc, "env") {
        w.env_table(v, &mut base_env);
    }
    let mut default_log = LogSettings::default();
    if let Some(v) = get(&doc, "log") {
        default_log = log_settings(&mut w, v, default_log);
    }

    let mut drafts: Vec<Draft> = Vec::new();
    for (section, kind) in [
        ("services", Kind::Service),
        ("tasks", Kind::Task),
        ("targets", Kind::Target),
    ] {
        let Some(v) = get(&doc, section) else {
            continue;
        };
        let Some(t) = w.table(v, &format!("`{section}`")) else {
            continue;
        };
        for (name, body) in t.iter() {
            let name_str: &str = name.get_ref();
            if !valid_name(name_str) {
                w.error_help(
                    name.span(),
                    format!("`{name_str}` is not a valid name"),
                    "use letters, digits, `-`, `_` and `.` (at most 64, not starting with `.`)",
                );
                continue;
            }
            if let Some(other) = drafts.iter().find(|d| d.spec.name == name_str) {
                w.error(
                    name.span(),
                    format!(
                        "`{name_str}` is defined twice (already a {})",
                        other.spec.kind.as_str()
                    ),
                );
                continue;
            }
            let Some(body_t) = w.table(body, &format!("{} `{name_str}`", kind.as_str())) else {
                continue;
            };
            let draft = unit(
                &mut w,
                kind,
                name_str,
                name.span(),
                body_t,
                &base_env,
                default_log,
            );
            drafts.push(draft);
        }
    }

    resolve_dependencies(&mut w, &mut drafts);
    let templates = match get(&doc, "templates") {
        Some(v) => templates(&mut w, v, &base_env, default_log),
        None => Vec::new(),
    };

    if !w.diags.is_empty() {
        w.diags.sort_by_key(|d| d.span.start);
        return Err(ConfigError {
            file: file.to_path_buf(),
            source_text: text.to_string(),
            diagnostics: w.diags,
        });
    }
    let (units, defs): (Vec<UnitSpec>, Vec<UnitDef>) =
        drafts.into_iter().map(|d| (d.spec, d.def)).unzip();
    Ok(Project {
        file: file.to_path_buf(),
        state_dir: root.join(".corral"),
        root,
        units: defs,
        plan: Plan { units },
        templates,
    })
}

/// `[templates.NAME]`: a service shape whose strings may hold `{id}`, `{name}`, `{port}`,
/// `{workspace}` and `{PARAM}`. The service part is checked like a service here (so mistakes
/// are reported at their place in the file); dependencies are checked when an instance is made.
fn templates(
    w: &mut Walker<'_>,
    v: &Value<'_>,
    base_env: &BTreeMap<String, String>,
    default_log: LogSettings,
) -> Vec<Template> {
    let Some(t) = w.table(v, "`templates`") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, body) in t.iter() {
        let name_str: &str = name.get_ref();
        if !valid_name(name_str) {
            w.error(name.span(), format!("`{name_str}` is not a valid name"));
            continue;
        }
        let what = format!("template `{name_str}`");
        let Some(body_t) = w.table(body, &what) else {
            continue;
        };
        let service: DeTable<'_> = body_t
            .iter()
            .filter(|(k, _)| !TEMPLATE_ONLY_KEYS.contains(&k.get_ref().as_ref()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some((k, _)) = body_t.iter().find(|(k, _)| k.get_ref() == "ports") {
            w.error_help(
                k.span(),
                format!("{what}: an instance gets its port from the template"),
                "remove `ports`; use `port_range = [FROM, TO]` (default: any free port) and `{port}`",
            );
        }
        // Checked as the service an instance will be: with a port.
        let mut checked = service.clone();
        if let Ok(ports) = DeTable::parse("ports = [\"auto\"]") {
            for (k, v) in ports.into_inner() {
                checked.insert(k, v);
            }
        }
        let _ = unit(
            w,
            Kind::Service,
            name_str,
            name.span(),
            &checked,
            base_env,
            default_log,
        );
        let mut tpl = Template {
            name: name_str.to_string(),
            body: service
                .iter()
                .filter(|(k, _)| k.get_ref() != "ports")
                .map(|(k, v)| (k.get_ref().to_string(), plain(v.get_ref())))
                .collect(),
            params: Vec::new(),
            setup: Vec::new(),
            files: Vec::new(),
            port_range: None,
            setup_timeout: std::time::Duration::from_secs(600),
        };
        if let Some(v) = get(body_t, "setup_timeout")
            && let Some(d) = w.duration(v, &format!("`{name_str}.setup_timeout`"))
        {
            tpl.setup_timeout = d;
        }
        if let Some(v) = get(body_t, "params")
            && let Some(pt) = w.table(v, &format!("`{name_str}.params`"))
        {
            for (k, v) in pt.iter() {
                match v.get_ref() {
                    DeValue::String(s) => tpl.params.push((k.get_ref().to_string(), s.to_string())),
                    _ => w.error(
                        v.span(),
                        format!("param `{}`: the default must be a string", k.get_ref()),
                    ),
                }
            }
        }
        if let Some(v) = get(body_t, "setup") {
            match v.get_ref() {
                DeValue::Array(items) => {
                    for item in items.iter() {
                        if let Some(c) = w.command(item, &format!("`{name_str}.setup`")) {
                            tpl.setup.push(c);
                        }
                    }
                }
                _ => w.error_help(
                    v.span(),
                    format!("`{name_str}.setup` must be a list of commands"),
                    r#"setup = ["npm install", ["code-server", "--install-extension", "{ext}"]]"#,
                ),
            }
        }
        if let Some(v) = get(body_t, "files")
            && let Some(ft) = w.table(v, &format!("`{name_str}.files`"))
        {
            for (k, v) in ft.iter() {
                let path: &str = k.get_ref();
                let safe = !path.is_empty()
                    && std::path::Path::new(path)
                        .components()
                        .all(|c| matches!(c, std::path::Component::Normal(_)));
                if !safe {
                    w.error_help(
                        k.span(),
                        format!("file `{path}` is not a plain relative path"),
                        "files are written inside the instance's workspace: no `..`, no leading `/`",
                    );
                    continue;
                }
                match v.get_ref() {
                    DeValue::String(s) => tpl.files.push((path.to_string(), s.to_string())),
                    _ => w.error(
                        v.span(),
                        format!("file `{path}`: the content must be a string"),
                    ),
                }
            }
        }
        if let Some(v) = get(body_t, "port_range") {
            let range = match v.get_ref() {
                DeValue::Array(a) if a.len() == 2 => {
                    let lo = w.integer(&a[0], "the start of `port_range`", 1..65_536);
                    let hi = w.integer(&a[1], "the end of `port_range`", 1..65_536);
                    lo.zip(hi)
                }
                _ => {
                    w.error(v.span(), "`port_range` must be [FROM, TO]".to_string());
                    None
                }
            };
            match range {
                Some((lo, hi)) if lo <= hi => tpl.port_range = Some((lo as u16, hi as u16)),
                Some(_) => w.error(
                    v.span(),
                    "`port_range` must go from low to high".to_string(),
                ),
                None => {}
            }
        }
        out.push(tpl);
    }
    out
}

/// A TOML value as owned data, for templates to render later.
fn plain(v: &DeValue<'_>) -> TemplateValue {
    match v {
        DeValue::String(s) => TemplateValue::String(s.to_string()),
        DeValue::Integer(i) => TemplateValue::Literal(i.to_string()),
        DeValue::Float(f) => TemplateValue::Literal(f.to_string()),
        DeValue::Boolean(b) => TemplateValue::Literal(b.to_string()),
        DeValue::Datetime(d) => TemplateValue::Literal(d.to_string()),
        DeValue::Array(a) => TemplateValue::Array(a.iter().map(|v| plain(v.get_ref())).collect()),
        DeValue::Table(t) => TemplateValue::Table(
            t.iter()
                .map(|(k, v)| (k.get_ref().to_string(), plain(v.get_ref())))
                .collect(),
        ),
    }
}

fn log_settings(w: &mut Walker<'_>, v: &Value<'_>, mut s: LogSettings) -> LogSettings {
    let Some(t) = w.table(v, "`log`") else {
        return s;
    };
    w.check_keys(t, LOG_KEYS, "`log`");
    if let Some(v) = get(t, "lines") {
        s.ring_lines = w
            .integer(v, "`log.lines`", 0..10_000_001)
            .map_or(s.ring_lines, |n| n as usize);
    }
    if let Some(v) = get(t, "max_file_size") {
        s.max_file_bytes = match v.get_ref() {
            DeValue::String(text) => match parse_size(text) {
                Some(n) => n,
                None => {
                    w.error_help(
                        v.span(),
                        format!("`{text}` is not a size"),
                        "write it like \"10MiB\", \"512KiB\" or a number of bytes",
                    );
                    s.max_file_bytes
                }
            },
            _ => w
                .integer(v, "`log.max_file_size`", 1024..i64::MAX)
                .map_or(s.max_file_bytes, |n| n as u64),
        };
    }
    if let Some(v) = get(t, "keep_files") {
        s.keep_files = w
            .integer(v, "`log.keep_files`", 0..101)
            .map_or(s.keep_files, |n| n as u32);
    }
    s
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

fn unit(
    w: &mut Walker<'_>,
    kind: Kind,
    name: &str,
    name_span: Range<usize>,
    t: &DeTable<'_>,
    base_env: &BTreeMap<String, String>,
    default_log: LogSettings,
) -> Draft {
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
        env: Vec::new(),
        ports: Vec::new(),
        kill_others: false,
        readiness: None,
        liveness: None,
        log_ready: None,
        log: default_log,
    };

    if kind != Kind::Target {
        match get(t, "command") {
            Some(v) => def.command = w.command(v, &format!("`command` of {what}")),
            None => w.error_help(
                name_span,
                format!("{what} has no `command`"),
                "add `command = \"...\"` (run by sh -c) or `command = [\"prog\", \"arg\"]`",
            ),
        }
    }
    if let Some(v) = get(t, "workdir")
        && let Some(dir) = w.string(v, "`workdir`")
    {
        let dir = w.root.join(dir);
        if !dir.is_dir() {
            w.error(
                v.span(),
                format!("`workdir` `{}` is not a directory", dir.display()),
            );
        }
        def.workdir = dir;
    }

    let mut env = base_env.clone();
    if let Some(v) = get(t, "env_file") {
        for (path, span) in w.env_files(v) {
            w.load_env_file(&path, span, &mut env, true);
        }
    }
    if let Some(v) = get(t, "env") {
        w.env_table(v, &mut env);
    }
    def.env = env.into_iter().collect();

    if let Some(v) = get(t, "ports") {
        match v.get_ref() {
            DeValue::Array(items) => {
                for item in items.iter() {
                    match item.get_ref() {
                        DeValue::String(s) if s == "auto" => def.ports.push(PortDecl::Auto),
                        DeValue::Integer(_) => {
                            if let Some(p) = w.integer(item, "a port", 1..65536) {
                                def.ports.push(PortDecl::Fixed(p as u16));
                            }
                        }
                        _ => w.error(
                            item.span(),
                            "a port must be a number from 1 to 65535 or \"auto\"",
                        ),
                    }
                }
            }
            _ => w.error_help(
                v.span(),
                "`ports` must be a list",
                "write `ports = [8080]` or `ports = [\"auto\"]`",
            ),
        }
    }
    if let Some(v) = get(t, "kill_others") {
        def.kill_others = w.bool(v, "`kill_others`").unwrap_or(false);
        if def.kill_others && def.ports.is_empty() {
            w.error_help(
                v.span(),
                "`kill_others` needs `ports`",
                "declare the ports whose holders should be killed",
            );
        }
    }
    let first_port = def.ports.first().copied();
    for (key, kind_) in [("readiness", "readiness"), ("liveness", "liveness")] {
        if let Some(v) = get(t, key) {
            let p = probe(w, v, kind_, first_port);
            if key == "readiness" {
                def.readiness = p;
            } else {
                def.liveness = p;
            }
        }
    }
    if let Some(l) = &def.liveness
        && matches!(l.check, Check::Log { .. })
    {
        w.error(
            get(t, "liveness").unwrap().span(),
            "a `log` check can only be a readiness probe",
        );
        def.liveness = None;
    }
    spec.readiness = def.readiness.as_ref().map(|p| p.timing);
    spec.liveness = def.liveness.as_ref().map(|p| p.timing);
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
        def.log = log_settings(w, v, def.log);
    }
    if let Some(v) = get(t, "description") {
        w.string(v, "`description`");
    }

    let mut deps = Vec::new();
    if let Some(v) = get(t, "depends_on") {
        match v.get_ref() {
            DeValue::Array(items) => {
                for item in items.iter() {
                    if let Some(n) = w.string(item, "a dependency") {
                        deps.push((n, item.span(), None));
                    }
                }
            }
            DeValue::Table(dt) => {
                for (dn, cv) in dt.iter() {
                    let Some(c) = w.string(cv, "a dependency condition") else {
                        continue;
                    };
                    match Condition::parse(&c) {
                        Some(cond) => deps.push((dn.get_ref().to_string(), dn.span(), Some(cond))),
                        None => {
                            let names = Condition::ALL.map(|c| c.as_str());
                            let help = match did_you_mean(&c, names) {
                                Some(s) => format!("did you mean `{s}`?"),
                                None => format!("expected one of: {}", names.join(", ")),
                            };
                            w.error_help(cv.span(), format!("unknown condition `{c}`"), help);
                        }
                    }
                }
            }
            other => w.error_help(
                v.span(),
                format!(
                    "`depends_on` must be a list or a table, found {}",
                    other.type_str()
                ),
                "write `depends_on = [\"db\"]` or `depends_on = { db = \"healthy\" }`",
            ),
        }
    }
    Draft { spec, def, deps }
}

fn probe(w: &mut Walker<'_>, v: &Value<'_>, what: &str, port: Option<PortDecl>) -> Option<Probe> {
    let t = w.table(v, &format!("`{what}`"))?;
    w.check_keys(t, PROBE_KEYS, &format!("`{what}`"));
    let kinds: Vec<&str> = ["tcp", "http", "exec", "log"]
        .into_iter()
        .filter(|k| get(t, k).is_some())
        .collect();
    if kinds.len() != 1 {
        w.error_help(
            v.span(),
            format!("`{what}` needs exactly one check, found {}", if kinds.is_empty() { "none".to_string() } else { kinds.join(" and ") }),
            "use one of `tcp = \"127.0.0.1:5432\"`, `http = \"http://127.0.0.1:8080/health\"`, `exec = [\"cmd\"]`, `log = \"regex\"`",
        );
        return None;
    }
    let needs_port = |w: &mut Walker<'_>, s: &str, span: Range<usize>| {
        if s.contains("{port}") && port.is_none() {
            w.error_help(
                span,
                "`{port}` is used but the unit declares no `ports`",
                "add `ports = [\"auto\"]` or a port number",
            );
        }
    };
    let kv = get(t, kinds[0]).unwrap();
    let check = match kinds[0] {
        "tcp" => {
            let addr = match kv.get_ref() {
                DeValue::Integer(_) => w
                    .integer(kv, "`tcp` port", 1..65536)
                    .map(|p| format!("127.0.0.1:{p}"))?,
                _ => w.string(kv, "`tcp`")?,
            };
            needs_port(w, &addr, kv.span());
            Check::Tcp { addr }
        }
        "http" => {
            let mut url = w.string(kv, "`http`")?;
            if url.starts_with('/') {
                url = format!("http://127.0.0.1:{{port}}{url}");
            }
            if !url.starts_with("http://") {
                w.error_help(
                    kv.span(),
                    "`http` must be an `http://` URL or a path",
                    "e.g. \"http://127.0.0.1:8080/health\" or \"/health\" for the unit's own port",
                );
                return None;
            }
            needs_port(w, &url, kv.span());
            let status = get(t, "status")
                .and_then(|s| w.integer(s, "`status`", 100..600))
                .map(|s| s as u16);
            let body = get(t, "body").and_then(|b| w.string(b, "`body`"));
            Check::Http { url, status, body }
        }
        "exec" => Check::Exec {
            command: w.command(kv, "`exec`")?,
            output: get(t, "output").and_then(|o| w.string(o, "`output`")),
        },
        _ => Check::Log {
            pattern: w.regex(kv, "`log`")?,
        },
    };
    let mut timing = ProbeTiming {
        by_log: matches!(check, Check::Log { .. }),
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
            get(t, "interval").map_or(v.span(), |x| x.span()),
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

fn restart(w: &mut Walker<'_>, v: &Value<'_>, mut p: RestartPolicy) -> RestartPolicy {
    let mode_of = |w: &mut Walker<'_>, v: &Value<'_>| -> Option<RestartMode> {
        let s = w.string(v, "restart mode")?;
        match s.as_str() {
            "on-failure" => Some(RestartMode::OnFailure),
            "always" => Some(RestartMode::Always),
            "never" | "no" => Some(RestartMode::Never),
            _ => {
                w.error_help(
                    v.span(),
                    format!("unknown restart mode `{s}`"),
                    "expected `on-failure`, `always` or `never`",
                );
                None
            }
        }
    };
    // `restart = "always"` is short for `restart = { mode = "always" }`.
    if let DeValue::String(_) = v.get_ref() {
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

fn signal(w: &mut Walker<'_>, v: &Value<'_>) -> Option<i32> {
    const SIGNALS: &[(&str, i32)] = &[
        ("HUP", 1),
        ("INT", 2),
        ("QUIT", 3),
        ("KILL", 9),
        ("USR1", 10),
        ("USR2", 12),
        ("TERM", 15),
    ];
    if let DeValue::Integer(_) = v.get_ref() {
        return w.integer(v, "`stop.signal`", 1..32).map(|n| n as i32);
    }
    let s = w.string(v, "`stop.signal`")?;
    let bare = s.trim_start_matches("SIG");
    match SIGNALS.iter().find(|(n, _)| *n == bare) {
        Some((_, n)) => Some(*n),
        None => {
            w.error_help(v.span(), format!("unknown signal `{s}`"), "expected one of SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGKILL, or a number");
            None
        }
    }
}

/// Turn dependency names into ids, check conditions make sense, and reject cycles.
fn resolve_dependencies(w: &mut Walker<'_>, drafts: &mut [Draft]) {
    let index: HashMap<String, usize> = drafts
        .iter()
        .enumerate()
        .map(|(i, d)| (d.spec.name.clone(), i))
        .collect();
    let names: Vec<String> = drafts.iter().map(|d| d.spec.name.clone()).collect();
    let mut edges: Vec<Vec<(usize, Range<usize>)>> = vec![Vec::new(); drafts.len()];
    for i in 0..drafts.len() {
        let deps = std::mem::take(&mut drafts[i].deps);
        let me = drafts[i].spec.name.clone();
        let my_kind = drafts[i].spec.kind;
        for (dn, span, cond) in deps {
            let Some(&j) = index.get(&dn) else {
                let msg = format!("{} `{me}` depends on unknown unit `{dn}`", my_kind.as_str());
                match did_you_mean(&dn, names.iter().map(String::as_str)) {
                    Some(s) => w.error_help(span, msg, format!("did you mean `{s}`?")),
                    None => w.error_help(span, msg, format!("defined units: {}", names.join(", "))),
                }
                continue;
            };
            if j == i {
                w.error(span, format!("`{me}` depends on itself"));
                continue;
            }
            let dep_kind = drafts[j].spec.kind;
            // A list entry means `started`, except on a task, where it means "ran and passed".
            let condition = cond.unwrap_or(if dep_kind == Kind::Task {
                Condition::CompletedSuccessfully
            } else {
                Condition::Started
            });
            match condition {
                Condition::Completed | Condition::CompletedSuccessfully
                    if dep_kind == Kind::Target =>
                {
                    w.error(
                        span.clone(),
                        format!("target `{dn}` has no process, so it never completes"),
                    );
                }
                Condition::LogReady if drafts[j].def.log_ready.is_none() => {
                    w.error_help(
                        span.clone(),
                        format!("`{dn}` has no `log_ready` pattern"),
                        format!("add `log_ready = \"regex\"` to `{dn}`"),
                    );
                }
                _ => {}
            }
            edges[i].push((j, span));
            drafts[i].spec.deps.push(Dependency {
                unit: UnitId(j),
                condition,
            });
        }
    }
    if let Some(cycle) = find_cycle(&edges) {
        let path: Vec<&str> = cycle.iter().map(|&(u, _)| names[u].as_str()).collect();
        let span = cycle[0].1.clone();
        w.error_help(
            span,
            format!("dependency cycle: {} → {}", path.join(" → "), path[0]),
            "remove one of these dependencies",
        );
    }
}

/// A cycle as (unit, span of its edge to the next unit), if there is one.
fn find_cycle(edges: &[Vec<(usize, Range<usize>)>]) -> Option<Vec<(usize, Range<usize>)>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut mark = vec![Mark::New; edges.len()];
    for start in 0..edges.len() {
        if mark[start] != Mark::New {
            continue;
        }
        // Iterative DFS: stack of (node, next edge index); `path` mirrors it with edge spans.
        let mut stack = vec![(start, 0usize)];
        mark[start] = Mark::Open;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some((to, _)) = edges[node].get(*next) {
                let to = *to;
                *next += 1;
                match mark[to] {
                    Mark::New => {
                        mark[to] = Mark::Open;
                        stack.push((to, 0));
                    }
                    Mark::Open => {
                        let from = stack.iter().position(|(n, _)| *n == to).unwrap();
                        return Some(
                            stack[from..]
                                .iter()
                                .map(|&(n, k)| (n, edges[n][k - 1].1.clone()))
                                .collect(),
                        );
                    }
                    Mark::Done => {}
                }
            } else {
                mark[node] = Mark::Done;
                stack.pop();
            }
        }
    }
    None
}
