//! A unit's definition as it runs, for people (the dashboard's unit panel): the resolved
//! settings in corral.toml's terms, defaults left out, environment values withheld (a
//! read-only viewer must not learn a password from a `DATABASE_URL`).

use corral_config::{Check, Command, PortDecl, Probe, Project};
use corral_engine::{Kind, RestartMode, RestartPolicy, UnitId, UnitSpec, fmt_duration};
use corral_proto::wire::{Definition, DefinitionField};

/// `source`: where the unit comes from (the file, or a definition added at run time).
pub fn describe(project: &Project, id: UnitId, source: String) -> Definition {
    let def = &project.units[id.0];
    let spec = project.plan.get(id);
    let mut f = Fields(Vec::new());
    let shown = |p: &std::path::Path| {
        p.strip_prefix(&project.root)
            .map_or_else(|_| p.display().to_string(), |r| r.display().to_string())
    };
    f.opt("description", def.description().map(str::to_string));
    f.opt("command", def.command.as_ref().map(command));
    if def.workdir != project.root {
        f.add("workdir", shown(&def.workdir));
    }
    if !def.ports.is_empty() {
        let ports: Vec<String> = def
            .ports
            .iter()
            .map(|p| match p {
                PortDecl::Fixed(n) => n.to_string(),
                PortDecl::Auto => "auto".into(),
            })
            .collect();
        f.add("ports", ports.join(", "));
    }
    if def.kill_others {
        f.add("kill_others", "true");
    }
    // What the project sets; what it inherits from corral's own environment unchanged is not
    // a part of its definition.
    let inherited: std::collections::HashMap<String, String> = std::env::vars().collect();
    let names: Vec<&str> = def
        .env
        .iter()
        .filter(|(k, v)| inherited.get(k) != Some(v))
        .map(|(k, _)| k.as_str())
        .collect();
    if !names.is_empty() {
        f.add(
            "env",
            format!(
                "{} (values not shown; and corral's own environment)",
                names.join(", ")
            ),
        );
    }
    if !spec.deps.is_empty() {
        let deps: Vec<String> = spec
            .deps
            .iter()
            .map(|d| format!("{} ({})", project.plan.get(d.unit).name, d.condition))
            .collect();
        f.add("depends_on", deps.join(", "));
    }
    f.opt("readiness", def.readiness.as_deref().map(probe));
    f.opt("liveness", def.liveness.as_deref().map(probe));
    f.opt(
        "log_ready",
        def.log_ready.as_ref().map(|r| r.as_str().to_string()),
    );
    if spec.kind != Kind::Target {
        f.add("restart", restart(spec));
        f.add("stop", stop(spec, def.stop_parent_only));
    }
    f.opt("shutdown_command", def.shutdown_command().map(command));
    if spec.readiness.is_some() {
        f.add(
            "start_timeout",
            fmt_duration(spec.effective_start_timeout()),
        );
    }
    if let Some(id) = &def.identity {
        f.add(
            "user",
            format!("{} (uid {}, gid {})", id.user, id.uid, id.gid),
        );
    }
    f.opt("umask", def.umask.map(|m| format!("{m:03o}")));
    f.opt("namespace", def.namespace().map(str::to_string));
    f.opt("image", def.image().map(str::to_string));
    for (key, on) in [
        ("daemon", def.daemon),
        ("disabled", def.disabled),
        ("allow_failure", spec.allow_failure),
        ("exit_on_failure", spec.exit_on_failure),
        ("exit_on_end", spec.exit_on_end),
        ("exit_on_skipped", spec.exit_on_skipped),
    ] {
        if on {
            f.add(key, "true");
        }
    }
    if spec.kind != Kind::Target {
        f.add(
            "log_file",
            format!(
                "{} (rotated at {} KiB, {} kept)",
                shown(&project.log_path(def)),
                def.log.max_file_bytes / 1024,
                def.log.keep_files
            ),
        );
    }
    Definition {
        name: def.name.clone(),
        kind: spec.kind.as_str().to_string(),
        source,
        fields: f.0,
    }
}

struct Fields(Vec<DefinitionField>);

impl Fields {
    fn add(&mut self, key: &str, value: impl Into<String>) {
        self.0.push(DefinitionField {
            key: key.into(),
            value: value.into(),
        });
    }

    fn opt(&mut self, key: &str, value: Option<String>) {
        if let Some(v) = value {
            self.add(key, v);
        }
    }
}

/// A list as JSON (each word exactly), a shell line as written.
fn command(c: &Command) -> String {
    match c {
        Command::Argv(v) => serde_json::to_string(v).unwrap_or_default(),
        Command::Shell(s) => s.clone(),
    }
}

fn probe(p: &Probe) -> String {
    let check = match &p.check {
        Check::Tcp { addr } => format!("tcp {addr}"),
        Check::Http {
            url,
            status,
            body,
            insecure,
        } => {
            let mut s = format!("GET {url}");
            if let Some(st) = status {
                s += &format!(", status {st}");
            }
            if let Some(b) = body {
                s += &format!(", body has `{b}`");
            }
            if *insecure {
                s += ", any certificate";
            }
            s
        }
        Check::Exec { command: c, output } => {
            let mut s = format!("exec {}", command(c));
            if let Some(o) = output {
                s += &format!(", output has `{o}`");
            }
            s
        }
        Check::Log { pattern } => format!("log line matching `{}`", pattern.as_str()),
        Check::Notify => "READY=1 on NOTIFY_SOCKET".into(),
    };
    let t = &p.timing;
    if t.by_log {
        return check;
    }
    format!(
        "{check}; every {}, timeout {}, {} failures, {} successes{}",
        fmt_duration(t.interval),
        fmt_duration(t.timeout),
        t.failure_threshold,
        t.success_threshold,
        if t.start_period.is_zero() {
            String::new()
        } else {
            format!(", after {}", fmt_duration(t.start_period))
        }
    )
}

fn restart(spec: &UnitSpec) -> String {
    let RestartPolicy {
        mode,
        max_restarts,
        backoff_initial,
        backoff_max,
        ..
    } = &spec.restart;
    match mode {
        RestartMode::Never => "never".into(),
        m => format!(
            "{}, at most {max_restarts} times, backoff {} to {}",
            m.as_str(),
            fmt_duration(*backoff_initial),
            fmt_duration(*backoff_max)
        ),
    }
}

fn stop(spec: &UnitSpec, parent_only: bool) -> String {
    let signal = nix::sys::signal::Signal::try_from(spec.stop_signal)
        .map_or_else(|_| spec.stop_signal.to_string(), |s| s.as_str().to_string());
    format!(
        "{signal} to {}, SIGKILL after {}",
        if parent_only {
            "the main process"
        } else {
            "the process group"
        },
        fmt_duration(spec.stop_grace)
    )
}
