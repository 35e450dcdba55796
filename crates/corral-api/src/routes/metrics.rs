//! `GET /metrics`: Prometheus text, measured when scraped.

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use crate::error::ApiResult;
use crate::routes::App;

/// Prometheus text format: per service up, CPU, memory, uptime and restarts; per ad-hoc process
/// CPU and memory.
pub(crate) async fn metrics(State(app): State<App>) -> ApiResult<Response> {
    use std::fmt::Write;
    let snap = app.control.snapshot().await?;
    let procs = app.control.adhoc.list().await.unwrap_or_default();
    let (mut keys, mut roots): (Vec<String>, Vec<Option<u32>>) = snap
        .units
        .iter()
        .filter_map(|u| Some((u.name.clone(), Some(u.pid?))))
        .unzip();
    for p in procs.iter().filter(|p| p.state == "running") {
        keys.push(format!("proc:{}", p.id));
        roots.push(Some(p.pid));
    }
    let meter = app.meter.clone();
    let measured = tokio::task::spawn_blocking(move || meter.measure(&roots))
        .await
        .unwrap_or_default();
    let usage: Vec<(String, corral_runtime::metrics::Usage)> = keys
        .into_iter()
        .zip(measured)
        .filter_map(|(k, u)| Some((k, u?)))
        .collect();
    let mut out = String::new();
    let mut family = |name: &str, help: &str, kind: &str, rows: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in rows {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    };
    let svc = |u: &corral_runtime::UnitView| {
        format!("service=\"{}\",kind=\"{}\"", u.name, u.kind.as_str())
    };
    let units: Vec<&corral_runtime::UnitView> = snap
        .units
        .iter()
        .filter(|u| u.kind != corral_engine::Kind::Target)
        .collect();
    family(
        "corral_service_up",
        "1 when the service has a running process.",
        "gauge",
        units
            .iter()
            .map(|u| (svc(u), u8::from(u.pid.is_some()).to_string()))
            .collect(),
    );
    family(
        "corral_service_ready",
        "1 when the service is running and its readiness check passes.",
        "gauge",
        units
            .iter()
            .map(|u| (svc(u), u8::from(u.ready).to_string()))
            .collect(),
    );
    family(
        "corral_service_restarts",
        "Restarts since the counters were last reset.",
        "gauge",
        units
            .iter()
            .map(|u| (svc(u), u.restarts.to_string()))
            .collect(),
    );
    family(
        "corral_service_uptime_seconds",
        "How long the current process has run.",
        "gauge",
        units
            .iter()
            .filter_map(|u| Some((svc(u), format!("{:.3}", u.uptime?.as_secs_f64()))))
            .collect(),
    );
    let measured =
        |prefix: &str, f: fn(&corral_runtime::metrics::Usage) -> String| -> Vec<(String, String)> {
            let mut rows: Vec<(String, String)> = usage
                .iter()
                .filter_map(|(k, u)| {
                    let label = match k.strip_prefix("proc:") {
                        Some(id) if prefix == "proc" => format!("proc=\"{id}\""),
                        None if prefix == "service" => format!("service=\"{k}\""),
                        _ => return None,
                    };
                    Some((label, f(u)))
                })
                .collect();
            rows.sort();
            rows
        };
    for prefix in ["service", "proc"] {
        family(
            &format!("corral_{prefix}_cpu_percent"),
            "CPU use of the process tree, percent of one core since the last scrape.",
            "gauge",
            measured(prefix, |u| format!("{:.1}", u.cpu_percent)),
        );
        family(
            &format!("corral_{prefix}_rss_bytes"),
            "Resident memory of the process tree.",
            "gauge",
            measured(prefix, |u| u.rss_bytes.to_string()),
        );
        family(
            &format!("corral_{prefix}_processes"),
            "Processes in the tree.",
            "gauge",
            measured(prefix, |u| u.processes.to_string()),
        );
    }
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}
