//! Nomad job specifications (HCL): one `service` job with a group per service, each with its
//! task (`raw_exec`, or `docker` when the unit has an `image`), its fixed ports as static ports,
//! a `service` with a `check` from the readiness probe, `restart` from the policy, the stop
//! signal and timeout; a task a service waits for with `completed_successfully` runs in that
//! group as a `prestart` task. Other tasks go to a second, `batch`, job.
//!
//! What Nomad has no word for is said in the notes: dependencies between groups, `log_ready`,
//! `log` and liveness probes beyond the check, `auto` ports, targets, templates.

use std::collections::BTreeMap;

use corral_config::{Check, Project, UnitDef};
use corral_engine::{Kind, RestartMode};

use crate::unit::{argv, auto_port_note, declared_env, duration, fixed_ports, signal_name};
use crate::{Export, File};

pub struct Options {
    pub prefix: String,
    pub datacenter: String,
    pub inherited: BTreeMap<String, String>,
}

/// An HCL string: quotes and backslashes escaped, and the template openers `${` and `%{`
/// doubled so nothing is interpolated.
fn s(v: &str) -> String {
    let e = v
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .replace("${", "$${")
        .replace("%{", "%%{");
    format!("\"{e}\"")
}

fn list(items: &[String]) -> String {
    let v: Vec<String> = items.iter().map(|i| s(i)).collect();
    format!("[{}]", v.join(", "))
}

/// A Nomad name (a job, group, task, service, port label).
fn label(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The `task` block of a unit (`prestart` as a lifecycle hook of its group's main task).
fn task(
    out: &mut String,
    def: &UnitDef,
    spec: &corral_engine::UnitSpec,
    opts: &Options,
    prestart: bool,
    indent: &str,
) {
    let fixed = fixed_ports(def);
    let port = fixed.first().copied();
    let cmd = def
        .command
        .as_ref()
        .map(|c| argv(c, port))
        .unwrap_or_default();
    out.push_str(&format!("{indent}task {} {{\n", s(&label(&def.name))));
    let i2 = format!("{indent}  ");
    if prestart {
        out.push_str(&format!(
            "{i2}lifecycle {{\n{i2}  hook    = \"prestart\"\n{i2}  sidecar = false\n{i2}}}\n"
        ));
    }
    match def.image() {
        Some(image) => {
            out.push_str(&format!("{i2}driver = \"docker\"\n{i2}config {{\n"));
            out.push_str(&format!("{i2}  image = {}\n", s(image)));
        }
        None => {
            out.push_str(&format!("{i2}driver = \"raw_exec\"\n{i2}config {{\n"));
        }
    }
    if let Some((first, rest)) = cmd.split_first() {
        out.push_str(&format!("{i2}  command = {}\n", s(first)));
        out.push_str(&format!("{i2}  args    = {}\n", list(rest)));
    }
    out.push_str(&format!("{i2}}}\n"));
    let env: Vec<(String, String)> = declared_env(def, &opts.inherited)
        .cloned()
        .chain(port.map(|p| ("PORT".to_string(), p.to_string())))
        .collect();
    if !env.is_empty() {
        // The map form: an environment variable's name need not be an HCL identifier.
        out.push_str(&format!("{i2}env = {{\n"));
        for (k, v) in env {
            out.push_str(&format!("{i2}  {} = {}\n", s(&k), s(&v)));
        }
        out.push_str(&format!("{i2}}}\n"));
    }
    out.push_str(&format!(
        "{i2}kill_signal  = {}\n{i2}kill_timeout = {}\n",
        s(&signal_name(spec.stop_signal)),
        s(&duration(spec.stop_grace))
    ));
    if let Some(id) = &def.identity {
        out.push_str(&format!("{i2}user = {}\n", s(&id.user)));
    }
    out.push_str(&format!("{indent}}}\n"));
}

/// The files for `project`.
pub fn export(project: &Project, opts: &Options) -> Export {
    let mut notes = Vec::new();
    // Tasks a service waits on with `completed_successfully` run as its prestart tasks.
    let before = crate::tasks_before(project, "Nomad starts groups independently", &mut notes);
    let (prestart_of, prestart) = (before.of, before.all);
    let header = |kind: &str| {
        format!(
            "# {} ({kind}), exported by `corral export nomad` from {}.\n",
            opts.prefix,
            project.file.display()
        )
    };
    let job_name = label(&opts.prefix);
    let mut svc = header("services");
    svc.push_str(&format!(
        "job {} {{\n  datacenters = [{}]\n  type        = \"service\"\n",
        s(&job_name),
        s(&opts.datacenter)
    ));
    let mut batch_groups = String::new();
    for (i, def) in project.units.iter().enumerate() {
        let spec = &project.plan.units[i];
        let me = def.name.as_str();
        notes.extend(auto_port_note(def));
        if def.log_ready.is_some() {
            notes.push(format!("{me}: `log_ready` is not exported"));
        }
        match def.kind {
            Kind::Target => notes.push(format!("{me}: targets have no Nomad object")),
            Kind::Task if prestart.contains(&i) => {}
            Kind::Task => {
                batch_groups.push_str(&format!("\n  group {} {{\n", s(&label(me))));
                batch_groups.push_str(
                    "    restart {\n      attempts = 0\n      mode     = \"fail\"\n    }\n",
                );
                task(&mut batch_groups, def, spec, opts, false, "    ");
                batch_groups.push_str("  }\n");
            }
            Kind::Service => {
                let fixed = fixed_ports(def);
                svc.push_str(&format!("\n  group {} {{\n    count = 1\n", s(&label(me))));
                if !fixed.is_empty() {
                    svc.push_str("    network {\n");
                    for p in &fixed {
                        svc.push_str(&format!(
                            "      port \"p{p}\" {{\n        static = {p}\n      }}\n"
                        ));
                    }
                    svc.push_str("    }\n");
                }
                let r = &spec.restart;
                let (attempts, mode) = match r.mode {
                    RestartMode::Never => (0, "fail"),
                    _ => (r.max_restarts, "fail"),
                };
                if r.mode == RestartMode::OnFailure {
                    notes.push(format!(
                        "{me}: Nomad restarts a service task however it ends (corral: on-failure)"
                    ));
                }
                svc.push_str(&format!(
                    "    restart {{\n      attempts = {attempts}\n      interval = {}\n      delay    = {}\n      mode     = \"{mode}\"\n    }}\n",
                    s(&duration(r.reset_after.max(std::time::Duration::from_secs(5)))),
                    s(&duration(r.backoff_initial))
                ));
                // The readiness probe as the service's check.
                let port = fixed.first().copied();
                let check = def.readiness.as_ref().and_then(|p| {
                    let t = p.timing;
                    let timing = format!(
                        "        interval = {}\n        timeout  = {}\n",
                        s(&duration(t.interval.max(std::time::Duration::from_secs(1)))),
                        s(&duration(t.timeout.max(std::time::Duration::from_secs(1))))
                    );
                    match &p.check {
                        Check::Tcp { .. } => port.map(|p| {
                            format!("        type = \"tcp\"\n        port = \"p{p}\"\n{timing}")
                        }),
                        Check::Http { url, insecure, .. } => port.map(|p| {
                            let path = url
                                .split_once("://")
                                .and_then(|(_, r)| r.find('/').map(|i| r[i..].to_string()))
                                .unwrap_or_else(|| "/".into());
                            let tls = match (url.starts_with("https://"), insecure) {
                                (false, _) => "",
                                (true, false) => "        protocol = \"https\"\n",
                                (true, true) => "        protocol = \"https\"\n        tls_skip_verify = true\n",
                            };
                            format!(
                                "        type = \"http\"\n        port = \"p{p}\"\n        path = {}\n{tls}{timing}",
                                s(&path)
                            )
                        }),
                        Check::Exec { command, .. } => {
                            let cmd = argv(command, port);
                            let (first, rest) = cmd.split_first()?;
                            Some(format!(
                                "        type    = \"script\"\n        command = {}\n        args    = {}\n        task    = {}\n{timing}",
                                s(first),
                                list(rest),
                                s(&label(me))
                            ))
                        }
                        Check::Log { .. } | Check::Notify => None,
                    }
                });
                if def.readiness.is_some() && check.is_none() {
                    notes.push(format!(
                        "{me}: its readiness probe has no Nomad check (a `log` probe, or no fixed port)"
                    ));
                }
                if def.liveness.is_some() {
                    notes.push(format!("{me}: the liveness probe is not exported"));
                }
                svc.push_str(&format!("    service {{\n      name = {}\n", s(&label(me))));
                if let Some(p) = fixed.first() {
                    svc.push_str(&format!("      port = \"p{p}\"\n"));
                }
                if let Some(c) = check {
                    svc.push_str(&format!("      check {{\n{c}      }}\n"));
                }
                svc.push_str("    }\n");
                for t in prestart_of.get(&i).into_iter().flatten() {
                    task(
                        &mut svc,
                        &project.units[*t],
                        &project.plan.units[*t],
                        opts,
                        true,
                        "    ",
                    );
                }
                task(&mut svc, def, spec, opts, false, "    ");
                svc.push_str("  }\n");
            }
        }
    }
    svc.push_str("}\n");
    if !project.templates.is_empty() {
        notes.push("templates are made into instances at run time: not exported".into());
    }
    // What was lost, under the header of the service job.
    if let Some(end) = svc.find('\n') {
        svc.insert_str(end + 1, &crate::note_lines(&notes));
    }
    let mut files = vec![File {
        name: format!("{job_name}.nomad.hcl"),
        text: svc,
    }];
    if !batch_groups.is_empty() {
        let mut b = header("tasks");
        b.push_str(&format!(
            "job {} {{\n  datacenters = [{}]\n  type        = \"batch\"\n",
            s(&format!("{job_name}-tasks")),
            s(&opts.datacenter)
        ));
        b.push_str(&batch_groups);
        b.push_str("}\n");
        files.push(File {
            name: format!("{job_name}-tasks.nomad.hcl"),
            text: b,
        });
    }
    Export { files, notes }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(text: &str) -> Project {
        let dir = std::env::temp_dir().join(format!("corral-export-nomad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        corral_config::parse_project(&dir.join("corral.toml"), text, &BTreeMap::new())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The export read back as HCL: the job, a group per service with its port, check,
    /// restart and task; the prestart task; the batch job; strings that must not interpolate.
    #[test]
    fn the_jobs_parse_back_with_what_the_config_says() {
        let p = project(
            r#"
env = { TEMPLATE = "$${literal} %{ nor } \"quoted\"" }

[services.db]
command = ["postgres", "-c", "x=1"]
image = "postgres:16"
ports = [5432]
readiness = { tcp = "127.0.0.1:{port}", interval = "2s" }
stop = { signal = "SIGINT", timeout = "30s" }
restart = { mode = "always", max_restarts = 4, backoff_initial = "2s" }

[services.api]
command = "exec ./api"
ports = [8080]
depends_on = { db = "healthy", migrate = "completed_successfully" }
readiness = { http = "/health" }

[tasks.migrate]
command = ["./migrate"]

[tasks.report]
command = ["./report"]
"#,
        );
        let opts = Options {
            prefix: "shop".into(),
            datacenter: "dc1".into(),
            inherited: BTreeMap::new(),
        };
        let e = export(&p, &opts);
        assert_eq!(e.files.len(), 2);
        let jobs: serde_json::Value = hcl::from_str(&e.files[0].text)
            .unwrap_or_else(|err| panic!("{err}\n{}", e.files[0].text));
        let job = &jobs["job"]["shop"];
        assert_eq!(job["type"], "service");
        let db = &job["group"]["db"];
        assert_eq!(db["network"]["port"]["p5432"]["static"], 5432);
        assert_eq!(db["restart"]["attempts"], 4);
        assert_eq!(db["restart"]["delay"], "2s");
        assert_eq!(db["service"]["check"]["type"], "tcp");
        assert_eq!(db["service"]["check"]["interval"], "2s");
        let t = &db["task"]["db"];
        assert_eq!(t["driver"], "docker");
        assert_eq!(t["config"]["image"], "postgres:16");
        assert_eq!(t["config"]["command"], "postgres");
        assert_eq!(t["config"]["args"], serde_json::json!(["-c", "x=1"]));
        assert_eq!(t["kill_signal"], "SIGINT");
        assert_eq!(t["kill_timeout"], "30s");
        assert_eq!(t["env"]["PORT"], "5432");
        // Read back literally: no interpolation, quotes kept.
        assert_eq!(t["env"]["TEMPLATE"], "${literal} %{ nor } \"quoted\"");
        let api = &job["group"]["api"];
        assert_eq!(api["service"]["check"]["type"], "http");
        assert_eq!(api["service"]["check"]["path"], "/health");
        assert_eq!(api["task"]["api"]["driver"], "raw_exec");
        assert_eq!(api["task"]["api"]["config"]["command"], "/bin/sh");
        assert_eq!(api["task"]["migrate"]["lifecycle"]["hook"], "prestart");
        let batch: serde_json::Value = hcl::from_str(&e.files[1].text).unwrap();
        assert_eq!(batch["job"]["shop-tasks"]["type"], "batch");
        assert_eq!(
            batch["job"]["shop-tasks"]["group"]["report"]["task"]["report"]["config"]["command"],
            "./report"
        );
        assert!(
            e.notes
                .iter()
                .any(|n| n.contains("api: waits for db (healthy)")),
            "{:?}",
            e.notes
        );
        // The same input, the same bytes.
        assert_eq!(export(&p, &opts).files, e.files);
    }
}
