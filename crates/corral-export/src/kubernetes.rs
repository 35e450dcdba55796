//! Kubernetes manifests: a Deployment per service (one container), a Service for its fixed
//! ports, its declared environment as a ConfigMap, probes mapped (`tcpSocket`, `httpGet`,
//! `exec` with their timings), the stop grace as `terminationGracePeriodSeconds` and a
//! `preStop` where the signal is not TERM. A task becomes a Job, or an init container of the
//! services that wait for it with `completed_successfully`. Written as one YAML stream of JSON
//! documents (JSON is YAML), for `kubectl apply -f`.
//!
//! What Kubernetes has no word for is said in the notes: `log` probes and `log_ready`, `auto`
//! ports, restart modes other than always (a Deployment restarts), the local `workdir`,
//! targets, templates.

use std::collections::BTreeMap;

use corral_config::{Check, Probe, Project};
use corral_engine::{Kind, RestartMode};
use serde_json::{Value, json};

use crate::unit::{argv, auto_port_note, declared_env, fixed_ports, signal_name};
use crate::{Export, File};

pub struct Options {
    /// The image of every container without its own `image`.
    pub image: String,
    pub namespace: Option<String>,
    /// Used in labels (`app.kubernetes.io/part-of`) and the file's name.
    pub prefix: String,
    /// corral's own environment: a unit's environment beyond it is what the project declares.
    pub inherited: BTreeMap<String, String>,
}

/// A DNS-1123 name (what Kubernetes takes for most names).
fn dns(name: &str) -> String {
    let mut s: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    s = s.trim_matches('-').to_string();
    s.truncate(63);
    if s.is_empty() { "unit".into() } else { s }
}

/// `http://host:port/path` → (port, path).
fn url_parts(url: &str, port: Option<u16>) -> Option<(u16, String)> {
    let rest = url.split_once("://")?.1;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let hostport = corral_config::fill_port(hostport, port);
    let p = hostport.rsplit_once(':')?.1.parse().ok()?;
    Some((p, path))
}

fn probe(
    p: &Probe,
    port: Option<u16>,
    liveness: bool,
    me: &str,
    notes: &mut Vec<String>,
) -> Option<Value> {
    let mut v = match &p.check {
        Check::Tcp { addr } => {
            let addr = corral_config::fill_port(addr, port);
            let p: u16 = addr.rsplit_once(':')?.1.parse().ok()?;
            json!({ "tcpSocket": { "port": p } })
        }
        Check::Http { url, .. } => {
            let Some((p, path)) = url_parts(url, port) else {
                notes.push(format!(
                    "{me}: the probe `{url}` has no port Kubernetes can use"
                ));
                return None;
            };
            // The kubelet does not verify an HTTPS probe's certificate: `insecure` is implied.
            let scheme = if url.starts_with("https://") {
                "HTTPS"
            } else {
                "HTTP"
            };
            json!({ "httpGet": { "port": p, "path": path, "scheme": scheme } })
        }
        Check::Exec { command, .. } => json!({ "exec": { "command": argv(command, port) } }),
        Check::Log { .. } => {
            notes.push(format!("{me}: a `log` probe has no Kubernetes equivalent"));
            return None;
        }
        Check::Notify => {
            notes.push(format!(
                "{me}: a `notify` probe has no Kubernetes equivalent"
            ));
            return None;
        }
    };
    let t = p.timing;
    let secs = |d: std::time::Duration| d.as_secs().max(1);
    v["periodSeconds"] = json!(secs(t.interval));
    v["timeoutSeconds"] = json!(secs(t.timeout));
    v["failureThreshold"] = json!(t.failure_threshold.max(1));
    // Kubernetes requires 1 for a liveness probe.
    v["successThreshold"] = json!(if liveness {
        1
    } else {
        t.success_threshold.max(1)
    });
    v["initialDelaySeconds"] = json!(t.start_period.as_secs());
    Some(v)
}

/// The container of a unit (a service's main one, or a task's).
fn container(
    project: &Project,
    i: usize,
    opts: &Options,
    notes: &mut Vec<String>,
) -> (Value, Option<Value>) {
    let def = &project.units[i];
    let spec = &project.plan.units[i];
    let me = def.name.as_str();
    let fixed = fixed_ports(def);
    notes.extend(auto_port_note(def));
    let port = fixed.first().copied();
    let mut c = json!({
        "name": dns(me),
        "image": def.image().unwrap_or(&opts.image),
    });
    if let Some(cmd) = &def.command {
        c["command"] = json!(argv(cmd, port));
    }
    if def.workdir != project.root {
        notes.push(format!(
            "{me}: `workdir` is a directory of this machine; set the image's WORKDIR"
        ));
    }
    // The declared environment, as a ConfigMap the container reads.
    let mut data = serde_json::Map::new();
    for (k, v) in declared_env(def, &opts.inherited) {
        data.insert(k.clone(), json!(v));
    }
    if let Some(p) = port {
        data.insert("PORT".into(), json!(p.to_string()));
    }
    let mut config_map = None;
    if !data.is_empty() {
        let name = format!("{}-env", dns(me));
        c["envFrom"] = json!([{ "configMapRef": { "name": name } }]);
        config_map = Some(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata(&name, me, opts),
            "data": data,
        }));
    }
    if !fixed.is_empty() {
        c["ports"] = json!(
            fixed
                .iter()
                .map(|p| json!({ "containerPort": p }))
                .collect::<Vec<_>>()
        );
    }
    if let Some(p) = def
        .readiness
        .as_ref()
        .and_then(|p| probe(p, port, false, me, notes))
    {
        c["readinessProbe"] = p;
    }
    if let Some(p) = def
        .liveness
        .as_ref()
        .and_then(|p| probe(p, port, true, me, notes))
    {
        c["livenessProbe"] = p;
    }
    if spec.stop_signal != 15 {
        // Kubernetes sends TERM; the unit wants another signal first.
        c["lifecycle"] = json!({ "preStop": { "exec": { "command": [
            "/bin/sh", "-c", format!("kill -{} 1", signal_name(spec.stop_signal).trim_start_matches("SIG"))
        ] } } });
    }
    if let Some(sh) = def.shutdown_command() {
        c["lifecycle"] = json!({ "preStop": { "exec": { "command": argv(sh, port) } } });
    }
    if let Some(id) = &def.identity {
        c["securityContext"] = json!({ "runAsUser": id.uid, "runAsGroup": id.gid });
    }
    if def.log_ready.is_some() {
        notes.push(format!("{me}: `log_ready` is not exported"));
    }
    (c, config_map)
}

fn metadata(name: &str, unit: &str, opts: &Options) -> Value {
    let mut m = json!({
        "name": name,
        "labels": {
            "app.kubernetes.io/name": dns(unit),
            "app.kubernetes.io/part-of": dns(&opts.prefix),
            "app.kubernetes.io/managed-by": "corral-export",
        }
    });
    if let Some(ns) = &opts.namespace {
        m["namespace"] = json!(ns);
    }
    m
}

/// The manifests for `project`.
pub fn export(project: &Project, opts: &Options) -> Export {
    let mut notes = Vec::new();
    let mut docs: Vec<Value> = Vec::new();
    // Tasks a service waits on with `completed_successfully` run as its init containers.
    let before = crate::tasks_before(
        project,
        "Kubernetes starts Deployments independently",
        &mut notes,
    );
    let (init_of, as_init) = (before.of, before.all);
    for (i, def) in project.units.iter().enumerate() {
        let spec = &project.plan.units[i];
        let me = def.name.as_str();
        let name = dns(me);
        match def.kind {
            Kind::Target => notes.push(format!("{me}: targets have no Kubernetes object")),
            Kind::Task if as_init.contains(&i) => {}
            Kind::Task => {
                let (c, cm) = container(project, i, opts, &mut notes);
                docs.extend(cm);
                docs.push(json!({
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "metadata": metadata(&name, me, opts),
                    "spec": {
                        "backoffLimit": 0,
                        "template": {
                            "metadata": { "labels": { "app.kubernetes.io/name": name } },
                            "spec": { "restartPolicy": "Never", "containers": [c] }
                        }
                    }
                }));
            }
            Kind::Service => {
                let (c, cm) = container(project, i, opts, &mut notes);
                docs.extend(cm);
                let mut inits = Vec::new();
                for t in init_of.get(&i).into_iter().flatten() {
                    let (ic, icm) = container(project, *t, opts, &mut notes);
                    if let Some(icm) = icm
                        && !docs.contains(&icm)
                    {
                        docs.push(icm);
                    }
                    inits.push(ic);
                }
                if spec.restart.mode != RestartMode::Always {
                    notes.push(format!(
                        "{me}: a Deployment always restarts its container (corral's `restart` is {})",
                        match spec.restart.mode {
                            RestartMode::OnFailure => "on-failure",
                            _ => "never",
                        }
                    ));
                }
                let mut pod = json!({
                    "containers": [c],
                    "terminationGracePeriodSeconds": spec.stop_grace.as_secs(),
                });
                if !inits.is_empty() {
                    pod["initContainers"] = json!(inits);
                }
                docs.push(json!({
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": metadata(&name, me, opts),
                    "spec": {
                        "replicas": 1,
                        "selector": { "matchLabels": { "app.kubernetes.io/name": name } },
                        "template": {
                            "metadata": { "labels": { "app.kubernetes.io/name": name } },
                            "spec": pod
                        }
                    }
                }));
                let fixed = fixed_ports(def);
                if !fixed.is_empty() {
                    docs.push(json!({
                        "apiVersion": "v1",
                        "kind": "Service",
                        "metadata": metadata(&name, me, opts),
                        "spec": {
                            "selector": { "app.kubernetes.io/name": name },
                            "ports": fixed.iter().map(|p| json!({
                                "name": format!("p{p}"), "port": p, "targetPort": p
                            })).collect::<Vec<_>>()
                        }
                    }));
                }
            }
        }
    }
    if !project.templates.is_empty() {
        notes.push("templates are made into instances at run time: not exported".into());
    }
    let mut text = format!(
        "# {} (from {}), exported by `corral export kubernetes`.\n{}",
        opts.prefix,
        project.file.display(),
        crate::note_lines(&notes)
    );
    for d in &docs {
        text.push_str("---\n");
        text.push_str(&serde_json::to_string_pretty(d).unwrap_or_default());
        text.push('\n');
    }
    Export {
        files: vec![File {
            name: format!("{}.yaml", dns(&opts.prefix)),
            text,
        }],
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_urls() {
        assert_eq!(dns("Web_API.v2"), "web-api-v2");
        assert_eq!(dns("--"), "unit");
        assert_eq!(
            url_parts("http://127.0.0.1:{port}/health", Some(8080)),
            Some((8080, "/health".into()))
        );
        assert_eq!(
            url_parts("http://localhost:9000", None),
            Some((9000, "/".into()))
        );
    }
}
