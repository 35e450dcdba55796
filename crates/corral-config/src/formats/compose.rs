//! A process-compose file, read as process-compose reads it, rewritten into the shape of a
//! corral.toml document — the same [`Node`] tree the TOML reader makes, with the YAML's spans —
//! so the one validator checks it and its errors name YAML lines.
//!
//! What the rewrite does, key by key (process-compose's documented schema):
//! - `${VAR}` / `$VAR` in every value, from `.env` then corral's environment (`$$` is a `$`),
//!   unless `disable_env_expansion: true`; `{{.NAME}}` from `vars` (top level, then the
//!   process's own);
//! - each process becomes a service (process-compose has one kind; one that exits simply
//!   completes, and `process_completed*` conditions work on services); its string command runs
//!   with `bash -c` (process-compose's default; the top-level `shell` changes it), `entrypoint`
//!   replaces the shell; `PC_PROC_NAME` (and `PC_REPLICA_NUM`) are in its environment;
//! - `replicas: N` is corral's `replicas` (`NAME-0` … `NAME-(N-1)`; a dependency on `NAME`
//!   waits for all of them), `PC_REPLICA_NUM` its `{replica}`; `disabled`, `namespace`,
//!   `description`, `shutdown.command`, `exit_on_failure`, `exit_on_end` and `exit_on_skipped`
//!   are corral keys too;
//! - `availability.restart` keeps its meaning (`no` by default); probes, conditions, shutdown
//!   signal and timeout map to corral's keys.
//!
//! Anything corral does not do (yet) is a warning with its line — never silently dropped.

use std::collections::BTreeMap;

use crate::diag::Diagnostic;
use crate::node::{Key, Node, Span, Table, Value, get};

/// The rewritten document, and what could not be carried over.
pub struct Rewritten {
    pub doc: Node,
    pub warnings: Vec<Diagnostic>,
}

const TOP_KEYS: &[&str] = &[
    "version",
    "processes",
    "environment",
    "shell",
    "vars",
    "disable_env_expansion",
    "is_dotenv_disabled",
    "log_location",
    "log_level",
    "log_length",
    "log_configuration",
    "is_strict",
    "env_cmds",
    "ordered_shutdown",
    "is_tui_disabled",
];

/// Rewrite a process-compose document. `dotenv` holds the `.env` values, `inherited` corral's
/// own environment (used for `${VAR}` as process-compose does).
pub fn rewrite(
    doc: &Node,
    dotenv: &BTreeMap<String, String>,
    inherited: &BTreeMap<String, String>,
) -> Result<Rewritten, Vec<Diagnostic>> {
    let mut r = Rewriter {
        diags: Vec::new(),
        warnings: Vec::new(),
    };
    let Value::Table(top) = &doc.value else {
        return Err(vec![Diagnostic::new(
            doc.span.clone(),
            format!(
                "a process-compose file must be a mapping with `processes:`, found {}",
                doc.value.type_str()
            ),
        )]);
    };
    // Values first: environment variables, then `vars`.
    let expand_env = !matches!(
        get(top, "disable_env_expansion").map(|n| &n.value),
        Some(Value::Bool(true))
    );
    let mut vars_env = inherited.clone();
    vars_env.extend(dotenv.iter().map(|(k, v)| (k.clone(), v.clone())));
    let doc = if expand_env {
        r.expand_env(doc, &vars_env)
    } else {
        doc.clone()
    };
    let Value::Table(top) = &doc.value else {
        unreachable!("expansion keeps the shape")
    };
    for (k, _) in top {
        if !TOP_KEYS.contains(&k.name.as_str()) {
            r.warn(
                k.span.clone(),
                format!("unknown top-level key `{}` ignored", k.name),
            );
        }
    }
    for ignored in [
        "log_location",
        "log_level",
        "log_length",
        "log_configuration",
        "env_cmds",
        "ordered_shutdown",
    ] {
        if let Some((k, _)) = top.iter().find(|(k, _)| k.name == ignored) {
            r.warn(
                k.span.clone(),
                format!("`{ignored}` is not supported by corral and is ignored (corral keeps one log per unit in .corral/logs)"),
            );
        }
    }
    let top_vars = string_map(get(top, "vars"));
    let shell = shell(top);
    let mut out: Table = Vec::new();
    if let Some(env) = get(top, "environment") {
        let env = r.environment(env);
        out.push((key("env", Span::TOP), env));
    }
    let Some(processes) = get(top, "processes") else {
        return Err(vec![Diagnostic::new(
            doc.span.clone(),
            "no `processes:` in this process-compose file",
        )]);
    };
    let Value::Table(procs) = &processes.value else {
        return Err(vec![Diagnostic::new(
            processes.span.clone(),
            format!(
                "`processes` must be a mapping of names to processes, found {}",
                processes.value.type_str()
            ),
        )]);
    };
    let mut services: Table = Vec::new();
    for (name, body) in procs {
        let Value::Table(t) = &body.value else {
            r.diags.push(Diagnostic::new(
                body.span.clone(),
                format!(
                    "process `{}` must be a mapping, found {}",
                    name.name,
                    body.value.type_str()
                ),
            ));
            continue;
        };
        let mut vars = top_vars.clone();
        vars.extend(string_map(get(t, "vars")));
        let t = if vars.is_empty() {
            t.clone()
        } else {
            match fill_vars(
                &Node {
                    value: Value::Table(t.clone()),
                    span: body.span.clone(),
                },
                &vars,
            )
            .value
            {
                Value::Table(t) => t,
                _ => unreachable!("filling keeps the shape"),
            }
        };
        let svc = r.process(&name.name, &t, &shell, &body.span);
        services.push((key(&name.name, name.span.clone()), svc));
    }
    out.push((
        key("services", processes.span.clone()),
        Node {
            value: Value::Table(services),
            span: processes.span.clone(),
        },
    ));
    if !r.diags.is_empty() {
        return Err(r.diags);
    }
    Ok(Rewritten {
        doc: Node {
            value: Value::Table(out),
            span: doc.span.clone(),
        },
        warnings: r.warnings,
    })
}

/// `shell: { shell_command, shell_argument }`: how string commands run (bash -c by default).
fn shell(top: &Table) -> Vec<String> {
    let mut sh = vec!["bash".to_string(), "-c".to_string()];
    if let Some(Node {
        value: Value::Table(t),
        ..
    }) = get(top, "shell")
    {
        if let Some(Node {
            value: Value::String(c),
            ..
        }) = get(t, "shell_command")
        {
            sh[0] = c.clone();
        }
        if let Some(Node {
            value: Value::String(a),
            ..
        }) = get(t, "shell_argument")
        {
            sh[1] = a.clone();
        }
    }
    sh
}

fn key(name: &str, span: Span) -> Key {
    Key {
        name: name.to_string(),
        span,
    }
}

fn string(s: impl Into<String>, span: &Span) -> Node {
    Node {
        value: Value::String(s.into()),
        span: span.clone(),
    }
}

fn table(entries: Table, span: &Span) -> Node {
    Node {
        value: Value::Table(entries),
        span: span.clone(),
    }
}

/// Seconds written as a number, as a corral duration ("2s").
fn seconds(v: &Node) -> Option<Node> {
    let text = match &v.value {
        Value::Integer(Some(n)) => format!("{n}s"),
        Value::Float(f) => format!("{}ms", (f * 1000.0).round() as i64),
        _ => return None,
    };
    Some(string(text, &v.span))
}

/// `{NAME: value}` of plain values as strings.
fn string_map(v: Option<&Node>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(Node {
        value: Value::Table(t),
        ..
    }) = v
    {
        for (k, v) in t {
            let s = match &v.value {
                Value::String(s) => s.clone(),
                Value::Integer(Some(i)) => i.to_string(),
                Value::Float(f) => f.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => continue,
            };
            out.insert(k.name.clone(), s);
        }
    }
    out
}

/// Go-template `{{.NAME}}` (with optional spaces) in every string, from `vars`.
fn fill_vars(n: &Node, vars: &BTreeMap<String, String>) -> Node {
    let value = match &n.value {
        Value::String(s) if s.contains("{{") => {
            let mut out = String::with_capacity(s.len());
            let mut rest = s.as_str();
            while let Some(i) = rest.find("{{") {
                out.push_str(&rest[..i]);
                let after = &rest[i + 2..];
                match after.find("}}") {
                    Some(end) => {
                        let inner = after[..end].trim();
                        match inner.strip_prefix('.').and_then(|name| vars.get(name)) {
                            Some(v) => out.push_str(v),
                            None => out.push_str(&rest[i..i + 2 + end + 2]),
                        }
                        rest = &after[end + 2..];
                    }
                    None => {
                        out.push_str(&rest[i..]);
                        rest = "";
                    }
                }
            }
            out.push_str(rest);
            Value::String(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| fill_vars(x, vars)).collect()),
        Value::Table(t) => Value::Table(
            t.iter()
                .map(|(k, v)| (k.clone(), fill_vars(v, vars)))
                .collect(),
        ),
        other => other.clone(),
    };
    Node {
        value,
        span: n.span.clone(),
    }
}

struct Rewriter {
    diags: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

const PROCESS_KEYS: &[&str] = &[
    "command",
    "entrypoint",
    "working_dir",
    "environment",
    "env_file",
    "depends_on",
    "readiness_probe",
    "liveness_probe",
    "ready_log_line",
    "availability",
    "shutdown",
    "replicas",
    "disabled",
    "namespace",
    "is_daemon",
    "description",
    "log_location",
    "vars",
];

impl Rewriter {
    fn warn(&mut self, span: Span, message: impl Into<String>) {
        self.warnings.push(Diagnostic::new(span, message));
    }

    /// `$VAR`, `${VAR}` in every string value (keys stay as written); `$$` is a `$`.
    fn expand_env(&mut self, n: &Node, vars: &BTreeMap<String, String>) -> Node {
        let value = match &n.value {
            Value::String(s) if s.contains('$') => match crate::env::expand(s, vars) {
                Ok(x) => Value::String(x),
                Err(e) => {
                    self.diags.push(Diagnostic::new(n.span.clone(), e));
                    Value::String(s.clone())
                }
            },
            Value::Array(a) => Value::Array(a.iter().map(|x| self.expand_env(x, vars)).collect()),
            Value::Table(t) => Value::Table(
                t.iter()
                    .map(|(k, v)| (k.clone(), self.expand_env(v, vars)))
                    .collect(),
            ),
            other => other.clone(),
        };
        Node {
            value,
            span: n.span.clone(),
        }
    }

    /// `environment: ["K=V", …]` (or a mapping) as corral's `env` table. corral expands `$` in
    /// env values again, so the already-expanded values have theirs doubled.
    fn environment(&mut self, v: &Node) -> Node {
        let mut out: Table = Vec::new();
        let mut put = |k: &str, val: &str, span: &Span| {
            out.push((key(k, span.clone()), string(val.replace('$', "$$"), span)));
        };
        match &v.value {
            Value::Array(items) => {
                for item in items {
                    match &item.value {
                        Value::String(s) => match s.split_once('=') {
                            Some((k, val)) if !k.is_empty() => put(k, val, &item.span),
                            _ => self.diags.push(
                                Diagnostic::new(
                                    item.span.clone(),
                                    format!("`{s}` is not `NAME=value`"),
                                )
                                .with_help("write each variable as \"NAME=value\""),
                            ),
                        },
                        other => self.diags.push(Diagnostic::new(
                            item.span.clone(),
                            format!(
                                "an environment entry must be a \"NAME=value\" string, found {}",
                                other.type_str()
                            ),
                        )),
                    }
                }
            }
            Value::Table(t) => {
                for (k, val) in t {
                    let s = match &val.value {
                        Value::String(s) => s.clone(),
                        Value::Integer(Some(i)) => i.to_string(),
                        Value::Bool(b) => b.to_string(),
                        Value::Float(f) => f.to_string(),
                        _ => String::new(),
                    };
                    put(&k.name, &s, &val.span);
                }
            }
            other => self.diags.push(Diagnostic::new(
                v.span.clone(),
                format!(
                    "`environment` must be a list of \"NAME=value\", found {}",
                    other.type_str()
                ),
            )),
        }
        table(out, &v.span)
    }

    /// One process as a corral service.
    fn process(&mut self, name: &str, t: &Table, shell: &[String], span: &Span) -> Node {
        let mut out: Table = Vec::new();
        for (k, _) in t {
            if !PROCESS_KEYS.contains(&k.name.as_str()) {
                let help = crate::diag::did_you_mean(&k.name, PROCESS_KEYS.iter().copied())
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                self.warn(
                    k.span.clone(),
                    format!("unknown key `{}` in process `{name}` ignored{help}", k.name),
                );
            }
        }
        // The command: a string runs in the shell; `entrypoint` replaces the shell.
        let command = get(t, "command");
        let entrypoint = get(t, "entrypoint");
        let argv: Option<Vec<Node>> = match (entrypoint, command) {
            (
                Some(Node {
                    value: Value::Array(ep),
                    ..
                }),
                cmd,
            ) => {
                let mut argv = ep.clone();
                match cmd.map(|c| &c.value) {
                    Some(Value::String(_)) => {
                        argv.push(cmd.cloned().unwrap_or_else(|| string("", span)))
                    }
                    Some(Value::Array(a)) => argv.extend(a.iter().cloned()),
                    _ => {}
                }
                Some(argv)
            }
            (
                _,
                Some(
                    c @ Node {
                        value: Value::String(_),
                        ..
                    },
                ),
            ) => Some(
                shell
                    .iter()
                    .map(|s| string(s, &c.span))
                    .chain(std::iter::once(c.clone()))
                    .collect(),
            ),
            (
                _,
                Some(
                    c @ Node {
                        value: Value::Array(a),
                        ..
                    },
                ),
            ) => {
                let _ = c;
                Some(a.clone())
            }
            (_, Some(c)) => {
                self.diags.push(Diagnostic::new(
                    c.span.clone(),
                    format!("`command` must be a string, found {}", c.value.type_str()),
                ));
                None
            }
            (_, None) => None,
        };
        match argv {
            Some(argv) => {
                let at = command
                    .or(entrypoint)
                    .map_or(span.clone(), |c| c.span.clone());
                out.push((
                    key("command", at.clone()),
                    Node {
                        value: Value::Array(argv),
                        span: at,
                    },
                ));
            }
            None if command.is_none() => self.diags.push(Diagnostic::new(
                span.clone(),
                format!("process `{name}` has no `command`"),
            )),
            None => {}
        }
        if let Some(w) = get(t, "working_dir") {
            out.push((key("workdir", w.span.clone()), w.clone()));
        }
        if let Some(d) = get(t, "description") {
            out.push((key("description", d.span.clone()), d.clone()));
        }
        // Environment: the process's own, then what process-compose adds.
        let mut env = match get(t, "environment") {
            Some(e) => self.environment(e),
            None => table(Vec::new(), span),
        };
        if let Value::Table(e) = &mut env.value {
            e.push((key("PC_PROC_NAME", span.clone()), string(name, span)));
            // A process without `replicas` is replica 0 (its `{replica}` would stay as written).
            let num = if get(t, "replicas").is_some() {
                "{replica}"
            } else {
                "0"
            };
            e.push((key("PC_REPLICA_NUM", span.clone()), string(num, span)));
        }
        out.push((key("env", env.span.clone()), env));
        if let Some(f) = get(t, "env_file") {
            out.push((key("env_file", f.span.clone()), f.clone()));
        }
        if let Some(d) = get(t, "depends_on") {
            out.push((key("depends_on", d.span.clone()), self.depends_on(d)));
        }
        if let Some(line) = get(t, "ready_log_line") {
            match &line.value {
                Value::String(s) => out.push((
                    key("log_ready", line.span.clone()),
                    string(regex::escape(s), &line.span),
                )),
                other => self.diags.push(Diagnostic::new(
                    line.span.clone(),
                    format!(
                        "`ready_log_line` must be a string, found {}",
                        other.type_str()
                    ),
                )),
            }
        }
        for (pc, corral) in [
            ("readiness_probe", "readiness"),
            ("liveness_probe", "liveness"),
        ] {
            if let Some(p) = get(t, pc)
                && let Some(probe) = self.probe(p, shell)
            {
                out.push((key(corral, p.span.clone()), probe));
            }
        }
        let (restart, rules) = match get(t, "availability") {
            Some(a) => self.availability(a),
            None => (string("never", span), Vec::new()),
        };
        out.push((key("restart", span.clone()), restart));
        for (rule, at) in rules {
            out.push((key(rule, at.span.clone()), at));
        }
        if let Some(s) = get(t, "shutdown") {
            let (stop, command) = self.shutdown(s);
            if let Some(stop) = stop {
                out.push((key("stop", s.span.clone()), stop));
            }
            if let Some(c) = command {
                let argv = match &c.value {
                    Value::String(_) => Node {
                        value: Value::Array(
                            shell
                                .iter()
                                .map(|x| string(x, &c.span))
                                .chain(std::iter::once(c.clone()))
                                .collect(),
                        ),
                        span: c.span.clone(),
                    },
                    _ => c.clone(),
                };
                out.push((key("shutdown_command", c.span.clone()), argv));
            }
        }
        for k in ["replicas", "namespace", "disabled"] {
            if let Some(v) = get(t, k) {
                out.push((key(k, v.span.clone()), v.clone()));
            }
        }
        // One file per process (per replica with `{PC_REPLICA_NUM}`), in corral's log format.
        if let Some(v) = get(t, "log_location") {
            let v = match &v.value {
                Value::String(s) => string(
                    s.replace(
                        "{PC_REPLICA_NUM}",
                        if get(t, "replicas").is_some() {
                            "{replica}"
                        } else {
                            "0"
                        },
                    ),
                    &v.span,
                ),
                _ => v.clone(),
            };
            out.push((key("log_file", v.span.clone()), v));
        }
        if let Some(v) = get(t, "is_daemon") {
            out.push((key("daemon", v.span.clone()), v.clone()));
        }
        table(out, span)
    }

    fn depends_on(&mut self, d: &Node) -> Node {
        let Value::Table(deps) = &d.value else {
            self.diags.push(Diagnostic::new(
                d.span.clone(),
                format!(
                    "`depends_on` must map process names to `condition:`, found {}",
                    d.value.type_str()
                ),
            ));
            return table(Vec::new(), &d.span);
        };
        let mut out: Table = Vec::new();
        for (dep, how) in deps {
            let cond_node = match &how.value {
                Value::Table(h) => get(h, "condition").cloned(),
                Value::Null => None,
                _ => None,
            };
            let cond = match cond_node.as_ref().map(|c| &c.value) {
                None => "started".to_string(),
                Some(Value::String(c)) => match c.as_str() {
                    "process_started" => "started".into(),
                    "process_healthy" => "healthy".into(),
                    "process_completed" => "completed".into(),
                    "process_completed_successfully" => "completed_successfully".into(),
                    "process_log_ready" => "log_ready".into(),
                    other => {
                        self.diags.push(
                            Diagnostic::new(
                                cond_node.as_ref().map_or(how.span.clone(), |c| c.span.clone()),
                                format!("unknown condition `{other}`"),
                            )
                            .with_help("process_started, process_healthy, process_completed, process_completed_successfully or process_log_ready"),
                        );
                        continue;
                    }
                },
                Some(other) => {
                    self.diags.push(Diagnostic::new(
                        how.span.clone(),
                        format!("`condition` must be a string, found {}", other.type_str()),
                    ));
                    continue;
                }
            };
            let span = cond_node.map_or(how.span.clone(), |c| c.span);
            out.push((key(&dep.name, dep.span.clone()), string(cond, &span)));
        }
        table(out, &d.span)
    }

    fn probe(&mut self, p: &Node, shell: &[String]) -> Option<Node> {
        let Value::Table(t) = &p.value else {
            self.diags.push(Diagnostic::new(
                p.span.clone(),
                format!("a probe must be a mapping, found {}", p.value.type_str()),
            ));
            return None;
        };
        let mut out: Table = Vec::new();
        if let Some(Node {
            value: Value::Table(e),
            span,
        }) = get(t, "exec")
        {
            let Some(cmd) = get(e, "command") else {
                self.diags
                    .push(Diagnostic::new(span.clone(), "`exec` has no `command`"));
                return None;
            };
            let argv = match &cmd.value {
                Value::String(_) => Node {
                    value: Value::Array(
                        shell
                            .iter()
                            .map(|s| string(s, &cmd.span))
                            .chain(std::iter::once(cmd.clone()))
                            .collect(),
                    ),
                    span: cmd.span.clone(),
                },
                _ => cmd.clone(),
            };
            out.push((key("exec", cmd.span.clone()), argv));
            if let Some(w) = get(e, "working_dir") {
                self.warn(
                    w.span.clone(),
                    "a probe's `working_dir` is not supported; it runs in the process's directory",
                );
            }
        } else if let Some(Node {
            value: Value::Table(h),
            span,
        }) = get(t, "http_get")
        {
            let text = |k: &str| match get(h, k).map(|n| &n.value) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Integer(Some(i))) => Some(i.to_string()),
                _ => None,
            };
            let host = text("host").unwrap_or_else(|| "127.0.0.1".into());
            let scheme = text("scheme").unwrap_or_else(|| "http".into());
            let path = text("path").unwrap_or_else(|| "/".into());
            let Some(port) = text("port") else {
                self.diags
                    .push(Diagnostic::new(span.clone(), "`http_get` has no `port`"));
                return None;
            };
            let path = if path.starts_with('/') {
                path
            } else {
                format!("/{path}")
            };
            out.push((
                key("http", span.clone()),
                string(format!("{scheme}://{host}:{port}{path}"), span),
            ));
            // Like a Kubernetes probe (which process-compose's follow), an https probe does
            // not verify the certificate: local servers use self-signed ones.
            if scheme == "https" {
                out.push((
                    key("insecure", span.clone()),
                    Node {
                        value: Value::Bool(true),
                        span: span.clone(),
                    },
                ));
            }
            if let Some(s) = get(h, "status_code") {
                out.push((key("status", s.span.clone()), s.clone()));
            }
        } else {
            self.diags.push(
                Diagnostic::new(p.span.clone(), "a probe needs `exec` or `http_get`").with_help(
                    "exec: { command: \"...\" } or http_get: { port: 8080, path: /health }",
                ),
            );
            return None;
        }
        for (pc, corral) in [
            ("initial_delay_seconds", "start_period"),
            ("period_seconds", "interval"),
            ("timeout_seconds", "timeout"),
        ] {
            if let Some(v) = get(t, pc) {
                match seconds(v) {
                    Some(d) => out.push((key(corral, v.span.clone()), d)),
                    None => self.diags.push(Diagnostic::new(
                        v.span.clone(),
                        format!("`{pc}` must be a number of seconds"),
                    )),
                }
            }
        }
        for k in ["success_threshold", "failure_threshold"] {
            if let Some(v) = get(t, k) {
                out.push((key(k, v.span.clone()), v.clone()));
            }
        }
        Some(table(out, &p.span))
    }

    /// `availability` as corral's `restart`, and the stack-ending rules it sets
    /// (`exit_on_failure`, `exit_on_end`, `exit_on_skipped`).
    fn availability(&mut self, a: &Node) -> (Node, Vec<(&'static str, Node)>) {
        let Value::Table(t) = &a.value else {
            self.diags.push(Diagnostic::new(
                a.span.clone(),
                format!(
                    "`availability` must be a mapping, found {}",
                    a.value.type_str()
                ),
            ));
            return (string("never", &a.span), Vec::new());
        };
        let mut rules: Vec<(&'static str, Node)> = Vec::new();
        let mut out: Table = Vec::new();
        let mode = match get(t, "restart") {
            None => "never".to_string(),
            Some(r) => match &r.value {
                Value::String(s) => match s.as_str() {
                    "always" => "always".into(),
                    "on_failure" => "on-failure".into(),
                    "no" => "never".into(),
                    "exit_on_failure" => {
                        let yes = Node {
                            value: Value::Bool(true),
                            span: r.span.clone(),
                        };
                        rules.push(("exit_on_failure", yes));
                        "never".into()
                    }
                    other => {
                        self.diags.push(
                            Diagnostic::new(
                                r.span.clone(),
                                format!("unknown restart policy `{other}`"),
                            )
                            .with_help("always, on_failure, exit_on_failure or no"),
                        );
                        "never".into()
                    }
                },
                // YAML reads a bare `no` as a string here (1.2), but be kind to `false`.
                Value::Bool(false) => "never".into(),
                other => {
                    self.diags.push(Diagnostic::new(
                        r.span.clone(),
                        format!("`restart` must be a string, found {}", other.type_str()),
                    ));
                    "never".into()
                }
            },
        };
        out.push((key("mode", a.span.clone()), string(mode, &a.span)));
        if let Some(v) = get(t, "max_restarts") {
            out.push((key("max_restarts", v.span.clone()), v.clone()));
        }
        if let Some(v) = get(t, "backoff_seconds") {
            // process-compose waits the same time before every restart.
            match seconds(v) {
                Some(d) => {
                    out.push((key("backoff_initial", v.span.clone()), d.clone()));
                    out.push((key("backoff_max", v.span.clone()), d));
                    out.push((
                        key("jitter", v.span.clone()),
                        Node {
                            value: Value::Float(0.0),
                            span: v.span.clone(),
                        },
                    ));
                }
                None => self.diags.push(Diagnostic::new(
                    v.span.clone(),
                    "`backoff_seconds` must be a number of seconds",
                )),
            }
        }
        for k in ["exit_on_end", "exit_on_skipped"] {
            if let Some(v) = get(t, k) {
                rules.push((k, v.clone()));
            }
        }
        (table(out, &a.span), rules)
    }

    /// `shutdown` as corral's `stop`, and its `command`.
    fn shutdown(&mut self, s: &Node) -> (Option<Node>, Option<Node>) {
        let Value::Table(t) = &s.value else {
            self.diags.push(Diagnostic::new(
                s.span.clone(),
                format!("`shutdown` must be a mapping, found {}", s.value.type_str()),
            ));
            return (None, None);
        };
        let mut out: Table = Vec::new();
        if let Some(sig) = get(t, "signal") {
            out.push((key("signal", sig.span.clone()), sig.clone()));
        }
        if let Some(v) = get(t, "timeout_seconds") {
            match seconds(v) {
                Some(d) => out.push((key("timeout", v.span.clone()), d)),
                None => self.diags.push(Diagnostic::new(
                    v.span.clone(),
                    "`timeout_seconds` must be a number of seconds",
                )),
            }
        }
        if let Some(p) = get(t, "parent_only") {
            out.push((key("parent_only", p.span.clone()), p.clone()));
        }
        (
            (!out.is_empty()).then(|| table(out, &s.span)),
            get(t, "command").cloned(),
        )
    }
}
