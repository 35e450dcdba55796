//! A Docker Compose file: a service per service and task (a task does not restart), with
//! `depends_on` conditions, a `healthcheck` from the readiness probe, `restart`, fixed ports,
//! the declared environment, `stop_signal` and `stop_grace_period`. Written as JSON (which
//! Compose reads as YAML), keys in a stable order.
//!
//! What Compose has no word for is said in the notes: `completed` (waited for as
//! `service_completed_successfully`), `log_ready`, `log` probes, liveness probes, `auto` ports,
//! the local `workdir`, targets, templates; an http or tcp healthcheck needs `curl` or `nc` in
//! the image.

use std::collections::BTreeMap;

use corral_config::{Check, Project};
use corral_engine::{Condition, Kind, RestartMode};
use serde_json::{Map, Value, json};

use crate::unit::{argv, auto_port_note, declared_env, duration as dur, fixed_ports, signal_name};
use crate::{Export, File};

pub struct Options {
    pub image: String,
    pub prefix: String,
    pub inherited: BTreeMap<String, String>,
}

/// The file for `project`.
pub fn export(project: &Project, opts: &Options) -> Export {
    let mut notes = Vec::new();
    let mut services = Map::new();
    for (i, def) in project.units.iter().enumerate() {
        let spec = &project.plan.units[i];
        let me = def.name.as_str();
        if def.kind == Kind::Target {
            notes.push(format!("{me}: targets have no Compose object"));
            continue;
        }
        let fixed = fixed_ports(def);
        notes.extend(auto_port_note(def));
        let port = fixed.first().copied();
        let mut s = Map::new();
        s.insert("image".into(), json!(def.image().unwrap_or(&opts.image)));
        if let Some(c) = &def.command {
            s.insert("command".into(), json!(argv(c, port)));
        }
        let mut env = Map::new();
        for (k, v) in declared_env(def, &opts.inherited) {
            // Compose interpolates `$` in the file: doubled, it stays a `$`.
            env.insert(k.clone(), json!(v.replace('$', "$$")));
        }
        if let Some(p) = port {
            env.insert("PORT".into(), json!(p.to_string()));
        }
        if !env.is_empty() {
            s.insert("environment".into(), Value::Object(env));
        }
        if !fixed.is_empty() {
            s.insert(
                "ports".into(),
                json!(fixed.iter().map(|p| format!("{p}:{p}")).collect::<Vec<_>>()),
            );
        }
        let mut deps = Map::new();
        for d in &spec.deps {
            let dep = &project.units[d.unit.0];
            if dep.kind == Kind::Target {
                notes.push(format!(
                    "{me}: depends on target `{}`, which is not exported",
                    dep.name
                ));
                continue;
            }
            let condition = match d.condition {
                Condition::Started => "service_started",
                Condition::Healthy if dep.readiness.is_some() => "service_healthy",
                Condition::Healthy => "service_started",
                Condition::CompletedSuccessfully => "service_completed_successfully",
                Condition::Completed => {
                    notes.push(format!(
                        "{me}: `{} = \"completed\"` waits for a successful end in Compose",
                        dep.name
                    ));
                    "service_completed_successfully"
                }
                Condition::LogReady => {
                    notes.push(format!(
                        "{me}: `{} = \"log_ready\"` becomes service_started",
                        dep.name
                    ));
                    "service_started"
                }
            };
            deps.insert(dep.name.clone(), json!({ "condition": condition }));
        }
        if !deps.is_empty() {
            s.insert("depends_on".into(), Value::Object(deps));
        }
        if let Some(p) = &def.readiness {
            let test = match &p.check {
                Check::Exec { command, .. } => {
                    let mut t = vec!["CMD".to_string()];
                    t.extend(argv(command, port));
                    Some(t)
                }
                Check::Http { url, insecure, .. } => {
                    notes.push(format!(
                        "{me}: its http healthcheck needs curl in the image"
                    ));
                    let url = corral_config::fill_port(url, port).replace("127.0.0.1", "localhost");
                    let mut t = vec!["CMD".to_string(), "curl".into(), "-fsS".into()];
                    if *insecure {
                        t.push("-k".into());
                    }
                    t.extend(["-o".into(), "/dev/null".into(), url]);
                    Some(t)
                }
                Check::Tcp { addr } => {
                    notes.push(format!("{me}: its tcp healthcheck needs nc in the image"));
                    let addr = corral_config::fill_port(addr, port);
                    let p = addr.rsplit_once(':').map_or("", |(_, p)| p).to_string();
                    Some(vec![
                        "CMD-SHELL".into(),
                        format!("nc -z localhost {p} || exit 1"),
                    ])
                }
                Check::Log { .. } => {
                    notes.push(format!("{me}: a `log` probe has no Compose healthcheck"));
                    None
                }
                Check::Notify => {
                    notes.push(format!("{me}: a `notify` probe has no Compose healthcheck"));
                    None
                }
            };
            if let Some(test) = test {
                let t = p.timing;
                s.insert(
                    "healthcheck".into(),
                    json!({
                        "test": test,
                        "interval": dur(t.interval),
                        "timeout": dur(t.timeout),
                        "retries": t.failure_threshold,
                        "start_period": dur(t.start_period),
                    }),
                );
            }
        }
        if def.liveness.is_some() {
            notes.push(format!("{me}: liveness probes have no Compose equivalent"));
        }
        if def.log_ready.is_some() {
            notes.push(format!("{me}: `log_ready` is not exported"));
        }
        if def.workdir != project.root {
            notes.push(format!(
                "{me}: `workdir` is a directory of this machine; set the image's WORKDIR"
            ));
        }
        let restart = if def.kind == Kind::Task {
            "no"
        } else {
            match spec.restart.mode {
                RestartMode::Always => "always",
                RestartMode::OnFailure => "on-failure",
                RestartMode::Never => "no",
            }
        };
        s.insert("restart".into(), json!(restart));
        s.insert("stop_signal".into(), json!(signal_name(spec.stop_signal)));
        s.insert("stop_grace_period".into(), json!(dur(spec.stop_grace)));
        if let Some(id) = &def.identity {
            s.insert("user".into(), json!(format!("{}:{}", id.uid, id.gid)));
        }
        services.insert(def.name.clone(), Value::Object(s));
    }
    if !project.templates.is_empty() {
        notes.push("templates are made into instances at run time: not exported".into());
    }
    let name: String = opts
        .prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    // The project's name is said, not written as `name:` (older Compose files refuse it).
    let doc = json!({ "services": services });
    let text = format!(
        "# {} (from {}), exported by `corral export compose`; run it with `docker compose -p {name} up`.\n{}{}\n",
        opts.prefix,
        project.file.display(),
        crate::note_lines(&notes),
        serde_json::to_string_pretty(&doc).unwrap_or_default()
    );
    Export {
        files: vec![File {
            name: "compose.yaml".into(),
            text,
        }],
        notes,
    }
}
