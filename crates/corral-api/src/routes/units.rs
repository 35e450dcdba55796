//! Services, tasks and targets: list, get, start/stop/restart (with completion tickets),
//! signal, services defined at run time, reload.

use std::time::Duration;

use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Json;
use corral_proto::wire;
use corral_runtime::{Command, Reply, Snapshot};

use crate::convert;
use crate::error::{ApiError, ApiResult};
use crate::query::{flag, params, requested_signal};
use crate::routes::App;

pub(crate) async fn services(
    State(app): State<App>,
    RawQuery(q): RawQuery,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let with_metrics = flag(&params(q.as_deref(), &["metrics"])?, "metrics")?;
    let s = app.control.snapshot().await?;
    let usage = if with_metrics {
        measure_services(&app, &s).await
    } else {
        Vec::new()
    };
    let list: Vec<wire::Service> = s
        .units
        .into_iter()
        .enumerate()
        .map(|(i, u)| wire::Service {
            usage: usage.get(i).copied().flatten().map(convert::usage),
            ..convert::service(u)
        })
        .collect();
    // Written into one buffer sized for the list (a unit is ~300 bytes): axum's `Json` grows
    // its buffer from 128 bytes, copying the 1.5 MB of 5,000 units again at each doubling.
    let mut body = Vec::with_capacity(list.len() * 384 + 2);
    serde_json::to_writer(&mut body, &list).map_err(|e| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        code: "encode",
        message: e.to_string(),
    })?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

/// One `/proc` scan for every running service's tree (off the async workers: it reads files),
/// in the snapshot's order.
pub(crate) async fn measure_services(
    app: &App,
    snap: &Snapshot,
) -> Vec<Option<corral_runtime::metrics::Usage>> {
    let roots: Vec<Option<u32>> = snap.units.iter().map(|u| u.pid).collect();
    let meter = app.meter.clone();
    tokio::task::spawn_blocking(move || meter.measure(&roots))
        .await
        .unwrap_or_default()
}

pub(crate) fn find<'a>(snap: &'a Snapshot, name: &str) -> ApiResult<&'a corral_runtime::UnitView> {
    Ok(&snap.units[position(snap, name)?])
}

pub(crate) fn position(snap: &Snapshot, name: &str) -> ApiResult<usize> {
    snap.units
        .iter()
        .position(|u| u.name == name)
        .ok_or_else(|| ApiError {
            status: StatusCode::NOT_FOUND,
            code: "unknown_service",
            message: format!("no service named `{name}`"),
        })
}

pub(crate) async fn service(
    State(app): State<App>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<wire::Service>> {
    // Its view alone: a copy of every unit's was most of the answer in a stack of thousands.
    // Its usage joins the shared sample (or comes from it).
    let s = app.control.snapshot_of(&name).await?;
    let at = position(&s, &name)?;
    let usage = measure_services(&app, &s).await;
    let mut units = s.units;
    let mut svc = convert::service(units.swap_remove(at));
    svc.usage = usage.get(at).copied().flatten().map(convert::usage);
    Ok(Json(svc))
}

pub(crate) async fn show_definition(
    State(app): State<App>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<wire::Definition>> {
    match app.control.ask(Command::Definition(name)).await? {
        Reply::Definition(d) => Ok(Json(d)),
        _ => Err(ApiError::bad("unexpected reply")),
    }
}

pub(crate) async fn act(app: &App, command: Command) -> ApiResult<Json<wire::Done>> {
    match app.control.ask(command).await? {
        Reply::Done(message) => Ok(Json(wire::Done { message })),
        _ => Err(ApiError::bad("unexpected reply")),
    }
}

/// How long `?wait=true` waits by default, and at most.
const WAIT_DEFAULT: Duration = Duration::from_secs(60);

const WAIT_MAX: Duration = Duration::from_secs(3600);

/// Start, stop or restart: answered at once, or with `?wait=true` once the unit is up (running
/// and ready; a task: completed) or down — a 409 `unsuccessful` saying why when it cannot get
/// there, a 408 `timeout` saying where it is when `timeout` (default 60s) passes first.
pub(crate) async fn user_action(
    app: &App,
    name: String,
    query: Option<&str>,
    command: impl FnOnce(String, bool, bool) -> Command,
) -> ApiResult<Json<wire::Done>> {
    let q = params(query, &["dependents", "wait", "timeout"])?;
    let dependents = flag(&q, "dependents")?;
    let wait = flag(&q, "wait")?;
    let timeout = match q.get("timeout") {
        None => WAIT_DEFAULT,
        Some(t) => humantime::parse_duration(t)
            .ok()
            .filter(|d| *d <= WAIT_MAX)
            .ok_or_else(|| {
                ApiError::bad(format!(
                    "`timeout` must be a duration up to 1h, like `30s` or `5m`, not `{t}`"
                ))
            })?,
    };
    if !wait {
        return act(app, command(name, dependents, false)).await;
    }
    match tokio::time::timeout(timeout, act(app, command(name.clone(), dependents, true))).await {
        Ok(result) => result,
        Err(_) => {
            let s = app.control.snapshot_of(&name).await?;
            let now = find(&s, &name).map(|u| convert::service(u.clone()).state_text());
            Err(ApiError {
                status: StatusCode::REQUEST_TIMEOUT,
                code: "timeout",
                message: format!(
                    "`{name}` did not get there within {}; it is {}",
                    humantime::format_duration(timeout),
                    now.unwrap_or("gone")
                ),
            })
        }
    }
}

pub(crate) async fn start(
    State(app): State<App>,
    UrlPath(name): UrlPath<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<wire::Done>> {
    user_action(&app, name, q.as_deref(), |name, dependents, wait| {
        Command::Start {
            name,
            dependents,
            wait,
        }
    })
    .await
}

pub(crate) async fn stop(
    State(app): State<App>,
    UrlPath(name): UrlPath<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<wire::Done>> {
    user_action(&app, name, q.as_deref(), |name, dependents, wait| {
        Command::Stop {
            name,
            dependents,
            wait,
        }
    })
    .await
}

pub(crate) async fn restart(
    State(app): State<App>,
    UrlPath(name): UrlPath<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<wire::Done>> {
    user_action(&app, name, q.as_deref(), |name, dependents, wait| {
        Command::Restart {
            name,
            dependents,
            wait,
        }
    })
    .await
}

pub(crate) async fn signal(
    State(app): State<App>,
    UrlPath(name): UrlPath<String>,
    RawQuery(q): RawQuery,
    body: axum::body::Bytes,
) -> ApiResult<Json<wire::Done>> {
    let sig = requested_signal(q.as_deref(), &body)?;
    act(&app, Command::Signal { name, signal: sig }).await
}

pub(crate) async fn scale(
    State(app): State<App>,
    UrlPath(name): UrlPath<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<wire::Done>> {
    let map = params(q.as_deref(), &["replicas"])?;
    let replicas = map
        .get("replicas")
        .ok_or_else(|| ApiError::bad("say how many: `?replicas=N`"))?
        .parse::<usize>()
        .ok()
        .filter(|n| *n as i64 <= corral_config::MAX_REPLICAS)
        .ok_or_else(|| {
            ApiError::bad(format!(
                "`replicas` must be a whole number from 0 to {}",
                corral_config::MAX_REPLICAS
            ))
        })?;
    act(&app, Command::Scale { name, replicas }).await
}

pub(crate) async fn reload(
    State(app): State<App>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<wire::Done>> {
    params(q.as_deref(), &[])?;
    act(&app, Command::Reload).await
}

/// A service definition as JSON: the keys of a `[services.NAME]` table of `corral.toml`, and
/// `name`, which is taken out (it comes from the URL or is checked against it). The keys are
/// validated by the config crate, which names the field of any mistake.
pub fn definition(
    body: &[u8],
    name_from_url: Option<&str>,
) -> ApiResult<(String, serde_json::Value)> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad(format!("the body is not JSON: {e}")))?;
    let serde_json::Value::Object(mut map) = value else {
        return Err(ApiError::bad(
            "the body must be a JSON object with the keys of a [services.NAME] table",
        ));
    };
    let name = match (map.remove("name"), name_from_url) {
        (Some(serde_json::Value::String(n)), Some(u)) if n != u => {
            return Err(ApiError::bad(format!(
                "the body names `{n}` but the URL names `{u}`; renaming is remove + add"
            )));
        }
        (Some(serde_json::Value::String(n)), _) => n,
        (None, Some(u)) => u.to_string(),
        (Some(_), _) => return Err(ApiError::bad("`name` must be a string")),
        (None, None) => return Err(ApiError::bad("the body needs a `name`")),
    };
    Ok((name, serde_json::Value::Object(map)))
}

pub(crate) async fn add_service(
    State(app): State<App>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<wire::Done>)> {
    let (name, body) = definition(&body, None)?;
    let done = act(
        &app,
        Command::Define {
            name,
            body,
            replace: false,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, done))
}

pub(crate) async fn update_service(
    State(app): State<App>,
    UrlPath(name): UrlPath<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<wire::Done>> {
    let (name, body) = definition(&body, Some(&name))?;
    act(
        &app,
        Command::Define {
            name,
            body,
            replace: true,
        },
    )
    .await
}

pub(crate) async fn remove_service(
    State(app): State<App>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<wire::Done>> {
    act(&app, Command::Remove { name }).await
}
