//! Routes and handlers. Every handler is a thin translation between HTTP and a supervisor
//! `Command`; input is checked here and refused with a 4xx and a reason.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use corral_runtime::logs::{Query, query};
use corral_runtime::{Command, CommandError, Control, Reply, Snapshot};
use regex::{Regex, RegexBuilder};
use tokio::sync::broadcast::error::RecvError;

use corral_proto::wire;

use crate::{convert, instances, metrics, procs};

/// An API error: status, a stable code, and a message a person can act on.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: message.into(),
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> ApiError {
        let (status, code) = match &e {
            CommandError::UnknownUnit { .. } => (StatusCode::NOT_FOUND, "unknown_service"),
            CommandError::NotRunning(_) => (StatusCode::CONFLICT, "not_running"),
            CommandError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            CommandError::Invalid(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            CommandError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            CommandError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            CommandError::Unsuccessful(_) => (StatusCode::CONFLICT, "unsuccessful"),
        };
        ApiError {
            status,
            code,
            message: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = wire::Error {
            code: self.code.to_string(),
            message: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

#[derive(Clone)]
pub(crate) struct App {
    pub(crate) control: Control,
    pub(crate) meter: corral_runtime::metrics::Meter,
}

/// Every route, as (method, path): the router below and `openapi.json` must both have exactly
/// these (a test checks the document).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/health"),
    ("get", "/ready"),
    ("get", "/openapi.json"),
    ("get", "/v1/project"),
    ("get", "/v1/services"),
    ("post", "/v1/services"),
    ("get", "/v1/services/{name}"),
    ("put", "/v1/services/{name}"),
    ("delete", "/v1/services/{name}"),
    ("post", "/v1/reload"),
    ("get", "/v1/procs"),
    ("post", "/v1/procs"),
    ("delete", "/v1/procs"),
    ("get", "/v1/procs/{id}"),
    ("delete", "/v1/procs/{id}"),
    ("get", "/v1/procs/{id}/wait"),
    ("get", "/v1/procs/{id}/output"),
    ("post", "/v1/procs/{id}/input"),
    ("post", "/v1/procs/{id}/signal"),
    ("post", "/v1/services/{name}/start"),
    ("post", "/v1/services/{name}/stop"),
    ("post", "/v1/services/{name}/restart"),
    ("post", "/v1/services/{name}/signal"),
    ("get", "/v1/services/{name}/logs"),
    ("get", "/v1/logs"),
    ("get", "/v1/events"),
    ("get", "/v1/events/history"),
    ("post", "/v1/shutdown"),
    ("get", "/metrics"),
    ("post", "/v1/runs"),
    ("get", "/v1/runs/{id}"),
    ("get", "/v1/templates"),
    ("get", "/v1/instances"),
    ("post", "/v1/instances"),
    ("get", "/v1/instances/{name}"),
    ("delete", "/v1/instances/{name}"),
    ("put", "/v1/instances/{name}/workspace"),
];

pub fn router(control: Control) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/openapi.json", get(openapi))
        .route("/v1/project", get(project))
        .route("/v1/services", get(services).post(add_service))
        .route(
            "/v1/services/{name}",
            get(service).put(update_service).delete(remove_service),
        )
        .route("/v1/reload", post(reload))
        .route(
            "/v1/procs",
            get(procs::list).post(procs::start).delete(procs::clear),
        )
        .route("/v1/procs/{id}", get(procs::get).delete(procs::remove))
        .route("/v1/procs/{id}/wait", get(procs::wait))
        .route("/v1/procs/{id}/output", get(procs::output))
        .route("/v1/procs/{id}/input", post(procs::input))
        .route("/v1/procs/{id}/signal", post(procs::signal))
        .route("/v1/services/{name}/start", post(start))
        .route("/v1/services/{name}/stop", post(stop))
        .route("/v1/services/{name}/restart", post(restart))
        .route("/v1/services/{name}/signal", post(signal))
        .route("/v1/services/{name}/logs", get(service_logs))
        .route("/v1/logs", get(logs))
        .route("/v1/events", get(events))
        .route("/v1/events/history", get(history))
        .route("/v1/shutdown", post(shutdown))
        .route("/metrics", get(metrics::metrics))
        .route("/v1/runs", post(instances::start_run))
        .route("/v1/runs/{id}", get(instances::get_run))
        .route("/v1/templates", get(instances::templates))
        .route(
            "/v1/instances",
            get(instances::instances).post(instances::create_instance),
        )
        .route(
            "/v1/instances/{name}",
            get(instances::instance).delete(instances::delete_instance),
        )
        .route(
            "/v1/instances/{name}/workspace",
            axum::routing::put(instances::upload_workspace)
                .layer(axum::extract::DefaultBodyLimit::max(instances::MAX_UPLOAD)),
        )
        .fallback(|| async { ApiError::not_found("no such route; see /openapi.json") })
        .method_not_allowed_fallback(|| async {
            ApiError {
                status: StatusCode::METHOD_NOT_ALLOWED,
                code: "method_not_allowed",
                message: "this route does not take that method; see /openapi.json".into(),
            }
        })
        .with_state(App {
            control,
            meter: Default::default(),
        })
}

/// A running server: [`Server::finish`] lets answers in flight (the one to `/v1/shutdown`, say)
/// reach their clients before the process ends.
pub struct Server {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Stop accepting, and wait (bounded: streams never end by themselves) for open requests.
    pub async fn finish(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_millis(300), self.task).await;
    }
}

/// Serve on a Unix socket (mode 0600) until [`Server::finish`].
pub async fn serve_unix(control: Control, path: &Path) -> std::io::Result<Server> {
    use std::os::unix::fs::PermissionsExt;
    let short = corral_proto::paths::SocketPath::new(path)?;
    // We hold the project lock, so a socket file here is a leftover of a dead daemon.
    let _ = std::fs::remove_file(path);
    let listener =
        corral_runtime::sockpath::bind_private(|| tokio::net::UnixListener::bind(short.as_path()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let app = router(control);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _keep = short;
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });
    Ok(Server { stop, task })
}

/// Serve on loopback TCP, every request checked by [`crate::auth`].
pub async fn serve_tcp(
    control: Control,
    addr: std::net::SocketAddr,
    tokens: crate::auth::Tokens,
) -> std::io::Result<std::net::SocketAddr> {
    if !addr.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{addr} is not a loopback address; the TCP API listens on 127.0.0.1 or ::1 only"
            ),
        ));
    }
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = router(control).layer(axum::middleware::from_fn_with_state(
        Arc::new(crate::auth::Guard {
            tokens,
            port: bound.port(),
        }),
        crate::auth::check,
    ));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(bound)
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Ready when the supervisor answers.
async fn ready(State(app): State<App>) -> ApiResult<Json<serde_json::Value>> {
    let snap = app.control.snapshot().await?;
    Ok(Json(
        serde_json::json!({"status": "ready", "pid": snap.pid}),
    ))
}

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        crate::OPENAPI,
    )
        .into_response()
}

async fn project(State(app): State<App>) -> ApiResult<Json<wire::Project>> {
    let s = app.control.snapshot().await?;
    Ok(Json(wire::Project {
        pid: s.pid,
        file: s.file.display().to_string(),
        state_dir: s.state_dir.display().to_string(),
        uptime_secs: s.started.elapsed().map_or(0.0, |d| d.as_secs_f64()),
        shutting_down: s.shutting_down,
        services: s.units.len(),
    }))
}

async fn services(
    State(app): State<App>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Vec<wire::Service>>> {
    let with_metrics = flag(&params(q.as_deref(), &["metrics"])?, "metrics")?;
    let s = app.control.snapshot().await?;
    let mut list: Vec<wire::Service> = s.units.iter().map(convert::service).collect();
    if with_metrics {
        let usage = measure_services(&app, &s).await;
        for svc in &mut list {
            svc.usage = usage.get(&svc.name).copied().map(convert::usage);
        }
    }
    Ok(Json(list))
}

/// One `/proc` scan for every running service's tree (off the async workers: it reads files).
pub(crate) async fn measure_services(
    app: &App,
    snap: &Snapshot,
) -> HashMap<String, corral_runtime::metrics::Usage> {
    let roots: Vec<(String, u32)> = snap
        .units
        .iter()
        .filter_map(|u| Some((u.name.clone(), u.pid?)))
        .collect();
    let meter = app.meter.clone();
    tokio::task::spawn_blocking(move || meter.measure(&roots))
        .await
        .unwrap_or_default()
}

fn find<'a>(snap: &'a Snapshot, name: &str) -> ApiResult<&'a corral_runtime::UnitView> {
    snap.units
        .iter()
        .find(|u| u.name == name)
        .ok_or_else(|| ApiError {
            status: StatusCode::NOT_FOUND,
            code: "unknown_service",
            message: format!("no service named `{name}`"),
        })
}

async fn service(
    State(app): State<App>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<wire::Service>> {
    let s = app.control.snapshot().await?;
    let mut svc = convert::service(find(&s, &name)?);
    svc.usage = measure_services(&app, &s)
        .await
        .get(&name)
        .copied()
        .map(convert::usage);
    Ok(Json(svc))
}

/// The query string as key → value, refusing keys the route does not know.
pub fn params(raw: Option<&str>, known: &[&str]) -> ApiResult<HashMap<String, String>> {
    let raw = raw.unwrap_or("");
    let uri: axum::http::Uri = format!("/?{raw}")
        .parse()
        .map_err(|_| ApiError::bad("the query string is not valid"))?;
    let axum::extract::Query(map) =
        axum::extract::Query::<HashMap<String, String>>::try_from_uri(&uri)
            .map_err(|e| ApiError::bad(format!("the query string is not valid: {e}")))?;
    if let Some(k) = map.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::bad(format!(
            "unknown query parameter `{k}` (this route takes: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )));
    }
    Ok(map)
}

pub fn flag(map: &HashMap<String, String>, key: &str) -> ApiResult<bool> {
    match map.get(key).map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(v) => Err(ApiError::bad(format!(
            "`{key}` must be true or false, not `{v}`"
        ))),
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
async fn user_action(
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
            let s = app.control.snapshot().await?;
            let now = find(&s, &name).map(|u| convert::service(u).state_text());
            Err(ApiError {
                status: StatusCode::REQUEST_TIMEOUT,
                code: "timeout",
                message: format!(
                    "`{name}` did not get there within {}; it is {}",
                    humantime::format_duration(timeout),
                    now.unwrap_or_else(|_| "gone".into())
                ),
            })
        }
    }
}

async fn start(
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

async fn stop(
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

async fn restart(
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

/// `TERM`, `SIGTERM`, `term` or `15`.
pub fn parse_signal(s: &str) -> ApiResult<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=31).contains(&n) {
            Ok(n)
        } else {
            Err(ApiError::bad(format!(
                "signal number {n} is out of range (1-31)"
            )))
        };
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|sig| sig as i32)
        .map_err(|_| {
            ApiError::bad(format!(
                "unknown signal `{s}` (try TERM, HUP, INT, KILL, USR1 or a number)"
            ))
        })
}

async fn signal(
    State(app): State<App>,
    UrlPath(name): UrlPath<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<wire::Done>> {
    let map = params(q.as_deref(), &["signal"])?;
    let sig = parse_signal(map.get("signal").map_or("TERM", String::as_str))?;
    act(&app, Command::Signal { name, signal: sig }).await
}

/// What a log request asks for.
#[derive(Debug)]
pub struct LogParams {
    pub services: Vec<String>,
    pub query: Query,
    pub follow: bool,
}

/// The longest `tail` we serve in one answer.
const MAX_TAIL: usize = 1_000_000;

pub fn log_params(map: &HashMap<String, String>) -> ApiResult<LogParams> {
    let tail = match map.get("tail") {
        None => None,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n <= MAX_TAIL => Some(n),
            _ => {
                return Err(ApiError::bad(format!(
                    "`tail` must be a number from 0 to {MAX_TAIL}, not `{v}`"
                )));
            }
        },
    };
    let since = match map.get("since") {
        None => None,
        Some(v) => Some(parse_since(v)?),
    };
    let grep = match map.get("grep") {
        None => None,
        Some(v) => Some(compile_grep(v)?),
    };
    let services = map
        .get("services")
        .map(|s| {
            s.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Ok(LogParams {
        services,
        query: Query { tail, since, grep },
        follow: flag(map, "follow")?,
    })
}

/// An RFC 3339 time, or a duration meaning "that long ago" (`5m`, `1h 30m`).
fn parse_since(v: &str) -> ApiResult<SystemTime> {
    if let Ok(t) = humantime::parse_rfc3339_weak(v) {
        return Ok(t);
    }
    match humantime::parse_duration(v) {
        Ok(d) if d <= Duration::from_secs(100 * 365 * 86_400) => Ok(SystemTime::now()
            .checked_sub(d)
            .unwrap_or(SystemTime::UNIX_EPOCH)),
        _ => Err(ApiError::bad(format!(
            "`since` must be a time (2026-01-02T15:04:05Z) or a duration ago (10m, 2h), not `{v}`"
        ))),
    }
}

fn compile_grep(v: &str) -> ApiResult<Regex> {
    RegexBuilder::new(v)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| ApiError::bad(format!("`grep` is not a valid pattern: {e}")))
}

fn read_logs(
    snap: &Snapshot,
    log_dir: &Path,
    names: &[String],
    q: &Query,
) -> ApiResult<Vec<wire::Line>> {
    let mut all = Vec::new();
    for name in names {
        let unit = find(snap, name)?;
        let lines = query(log_dir, name, unit.keep_files, q).map_err(|e| ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "log_read",
            message: format!("cannot read the log of `{name}`: {e}"),
        })?;
        all.extend(lines.into_iter().map(|l| wire::Line {
            unit: name.clone(),
            time_ms: wire::millis(l.time),
            stream: l.stream.tag().to_string(),
            text: l.text,
        }));
    }
    // Several services: interleave by time (stable, so each service keeps its own order).
    all.sort_by_key(|l| l.time_ms);
    if let Some(n) = q.tail {
        let extra = all.len().saturating_sub(n);
        all.drain(..extra);
    }
    Ok(all)
}

async fn service_logs(
    State(app): State<App>,
    UrlPath(name): UrlPath<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let map = params(q.as_deref(), &["tail", "since", "grep", "follow"])?;
    let mut p = log_params(&map)?;
    p.services = vec![name];
    serve_logs(app, p).await
}

async fn logs(State(app): State<App>, RawQuery(q): RawQuery) -> ApiResult<Response> {
    let map = params(
        q.as_deref(),
        &["services", "tail", "since", "grep", "follow"],
    )?;
    serve_logs(app, log_params(&map)?).await
}

async fn serve_logs(app: App, mut p: LogParams) -> ApiResult<Response> {
    let snap = app.control.snapshot().await?;
    if p.services.is_empty() {
        p.services = snap.units.iter().map(|u| u.name.clone()).collect();
    }
    // Subscribe before reading the files, so no line falls between the two.
    let rx = p.follow.then(|| app.control.lines());
    let log_dir = app.control.log_dir.clone();
    let (snap2, names, q) = (snap.clone(), p.services.clone(), p.query.clone());
    let lines = tokio::task::spawn_blocking(move || read_logs(&snap2, &log_dir, &names, &q))
        .await
        .map_err(|_| ApiError::bad("log read failed"))??;
    let Some(rx) = rx else {
        return Ok(Json(lines).into_response());
    };
    // Lines already in the answer from the files are not sent again.
    let follow = Follow {
        rx,
        wanted: p.services.into_iter().collect(),
        last: lines.last().map_or(0, |l| l.time_ms),
        grep: p.query.grep,
    };
    let backlog = futures_util::stream::iter(
        lines
            .into_iter()
            .map(|l| Ok::<_, Infallible>(sse_json("line", &l))),
    );
    let live = futures_util::stream::unfold(follow, |mut f| async move {
        loop {
            match f.rx.recv().await {
                Ok(l) => {
                    let time_ms = wire::millis(l.time);
                    if !f.wanted.contains(&l.unit)
                        || time_ms < f.last
                        || f.grep.as_ref().is_some_and(|g| !g.is_match(&l.text))
                    {
                        continue;
                    }
                    let line = wire::Line {
                        unit: l.unit.clone(),
                        time_ms,
                        stream: l.stream.tag().to_string(),
                        text: l.text.clone(),
                    };
                    return Some((Ok(sse_json("line", &line)), f));
                }
                Err(RecvError::Lagged(n)) => {
                    return Some((Ok(sse_json("lagged", &serde_json::json!({"missed": n}))), f));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    let stream = futures_util::StreamExt::chain(backlog, live);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

struct Follow {
    rx: tokio::sync::broadcast::Receiver<Arc<corral_runtime::LineNotice>>,
    wanted: std::collections::HashSet<String>,
    last: u64,
    grep: Option<Regex>,
}

pub(crate) fn sse_json(event: &str, value: &impl serde::Serialize) -> SseEvent {
    SseEvent::default()
        .event(event)
        .data(serde_json::to_string(value).unwrap_or_default())
}

async fn events(State(app): State<App>, RawQuery(q): RawQuery) -> ApiResult<Response> {
    params(q.as_deref(), &[])?;
    // Units and instances, and ad-hoc processes (started, exited, killed), in one stream.
    let feeds = (app.control.notices(), app.control.adhoc.events());
    let stream = futures_util::stream::unfold(feeds, |(mut units, mut procs)| async move {
        let event = tokio::select! {
            r = units.recv() => match r {
                Ok(n) => sse_json("event", &convert::event(&n)),
                Err(RecvError::Lagged(n)) => sse_json("lagged", &serde_json::json!({"missed": n})),
                Err(RecvError::Closed) => return None,
            },
            r = procs.recv() => match r {
                Ok(e) => sse_json(
                    "event",
                    &wire::Event {
                        time_ms: wire::millis(std::time::SystemTime::now()),
                        unit: format!("proc:{}", e.id),
                        kind: wire::EventKind::Proc,
                        state: None,
                        instance: None,
                        proc: serde_json::from_value(serde_json::Value::String(e.kind.into())).ok(),
                        message: e.message.clone(),
                    },
                ),
                Err(RecvError::Lagged(n)) => sse_json("lagged", &serde_json::json!({"missed": n})),
                Err(RecvError::Closed) => return None,
            },
        };
        Some((Ok::<_, Infallible>(event), (units, procs)))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn history(
    State(app): State<App>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Vec<wire::Event>>> {
    let map = params(q.as_deref(), &["limit"])?;
    let limit = match map.get("limit") {
        None => 100,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= 10_000)
            .ok_or_else(|| {
                ApiError::bad(format!(
                    "`limit` must be a number from 0 to 10000, not `{v}`"
                ))
            })?,
    };
    match app.control.ask(Command::History(limit)).await? {
        Reply::History(h) => Ok(Json(h.iter().map(convert::event).collect())),
        _ => Err(ApiError::bad("unexpected reply")),
    }
}

async fn reload(State(app): State<App>, RawQuery(q): RawQuery) -> ApiResult<Json<wire::Done>> {
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

async fn add_service(
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

async fn update_service(
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

async fn remove_service(
    State(app): State<App>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<wire::Done>> {
    act(&app, Command::Remove { name }).await
}

async fn shutdown(State(app): State<App>) -> ApiResult<Json<wire::Done>> {
    act(&app, Command::Shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn openapi_document_lists_exactly_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(crate::OPENAPI).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        let mut documented: Vec<(String, String)> = paths
            .iter()
            .flat_map(|(p, ops)| {
                ops.as_object()
                    .unwrap()
                    .keys()
                    .map(move |m| (m.clone(), p.clone()))
            })
            .collect();
        documented.sort();
        let mut routes: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        routes.sort();
        assert_eq!(documented, routes);
    }

    #[test]
    fn query_parsing_refuses_with_reasons() {
        let m = params(Some("tail=5&grep=a%20b"), &["tail", "grep"]).unwrap();
        let p = log_params(&m).unwrap();
        assert_eq!(p.query.tail, Some(5));
        assert!(p.query.grep.unwrap().is_match("xa by"));
        let e = params(Some("tial=5"), &["tail"]).unwrap_err();
        assert!(
            e.message.contains("unknown query parameter `tial`"),
            "{}",
            e.message
        );
        assert_eq!(parse_signal("hup").unwrap(), 1);
        assert_eq!(parse_signal("SIGUSR1").unwrap(), 10);
        assert!(parse_signal("0").is_err() && parse_signal("32").is_err());
        let since = log_params(&params(Some("since=10m"), &["since"]).unwrap()).unwrap();
        assert!(since.query.since.unwrap() < SystemTime::now());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever arrives in a query string: an answer or a 400, never a panic.
        #[test]
        fn definitions_never_panic(body in proptest::collection::vec(any::<u8>(), 0..200), text in ".{0,200}") {
            let _ = definition(&body, None);
            let _ = definition(text.as_bytes(), Some("x"));
        }

        #[test]
        fn query_parsing_never_panics(raw in ".{0,200}", key in "(tail|since|grep|follow|services|dependents|signal|limit)", value in ".{0,64}") {
            let _ = params(Some(&raw), &["tail", "since", "grep", "follow", "services"]).and_then(|m| log_params(&m));
            let mut m = HashMap::new();
            m.insert(key.clone(), value.clone());
            if let Err(e) = log_params(&m) {
                prop_assert_eq!(e.status, StatusCode::BAD_REQUEST);
            }
            let _ = flag(&m, &key);
            let _ = parse_signal(&value);
        }
    }
}
