//! Routes for ad-hoc processes: `/v1/procs…`. The records live in the runtime's ad-hoc owner
//! task; these handlers check input and translate.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::StatusCode;
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Json, Response};
use corral_runtime::adhoc::{AdhocCommand, AdhocError, ProcSpec};
use tokio::sync::broadcast::error::RecvError;

use crate::error::{ApiError, ApiResult};
use crate::query::{flag, params, requested_signal, sse_json};
use crate::routes::App;
use corral_proto::wire;

use crate::convert;

/// The longest a `wait` may block.
const MAX_WAIT: Duration = Duration::from_secs(600);
/// The most output kept per process (head and tail each).
const MAX_KEEP: usize = 16 << 20;

impl From<AdhocError> for ApiError {
    fn from(e: AdhocError) -> ApiError {
        let (status, code) = match &e {
            AdhocError::NotFound(..) => (StatusCode::NOT_FOUND, "unknown_process"),
            AdhocError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            AdhocError::Invalid(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            AdhocError::Gone => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            AdhocError::Full(_) => (StatusCode::CONFLICT, "stdin_full"),
        };
        ApiError {
            status,
            code,
            message: e.to_string(),
        }
    }
}

fn duration(field: &str, v: Option<&str>) -> ApiResult<Option<Duration>> {
    let Some(v) = v else { return Ok(None) };
    match humantime::parse_duration(v) {
        Ok(d) if d <= Duration::from_secs(365 * 86_400) => Ok(Some(d)),
        _ => Err(ApiError::bad(format!(
            "`{field}` must be a duration like 30s or 5m (at most a year), not `{v}`"
        ))),
    }
}

/// Check a start request and turn it into a spec.
pub fn spec(body: &[u8]) -> ApiResult<ProcSpec> {
    let req: wire::ProcRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad(format!("the body is not a valid process request: {e}")))?;
    let command =
        match req.command {
            serde_json::Value::String(s) => AdhocCommand::Shell(s),
            serde_json::Value::Array(items) => {
                let argv: Option<Vec<String>> = items
                    .into_iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect();
                AdhocCommand::Argv(argv.ok_or_else(|| {
                    ApiError::bad("`command` must be a string or a list of strings")
                })?)
            }
            _ => {
                return Err(ApiError::bad(
                    "`command` must be a string (run by sh -c) or a list of strings",
                ));
            }
        };
    let mut spec = ProcSpec::new(command);
    spec.workdir = req.cwd.map(Into::into);
    spec.env = req.env.into_iter().collect();
    if let Some((k, _)) = spec
        .env
        .iter()
        .find(|(k, _)| k.is_empty() || k.contains('=') || k.contains('\0'))
    {
        return Err(ApiError::bad(format!(
            "`{k}` is not a valid environment variable name"
        )));
    }
    spec.timeout = duration("timeout", req.timeout.as_deref())?;
    if let Some(g) = duration("grace", req.grace.as_deref())? {
        spec.grace = g;
    }
    if let Some(r) = duration("retain", req.retain.as_deref())? {
        spec.retain = r;
    }
    spec.stdin = req.stdin.map(String::into_bytes);
    spec.close_stdin = req.close_stdin;
    spec.key = req.key;
    for (field, value, slot) in [
        ("head_bytes", req.head_bytes, &mut spec.head_bytes),
        ("tail_bytes", req.tail_bytes, &mut spec.tail_bytes),
    ] {
        if let Some(v) = value {
            if v > MAX_KEEP {
                return Err(ApiError::bad(format!(
                    "`{field}` may be at most {MAX_KEEP}"
                )));
            }
            *slot = v;
        }
    }
    Ok(spec)
}

/// Start a process. With `?follow=true` the answer is its output's event stream (as
/// `…/output`), led by a `proc` event with its record: a client that runs a command and waits
/// for it (`corral exec`) makes one request, not two.
pub(crate) async fn start(
    State(app): State<App>,
    RawQuery(q): RawQuery,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let follow = flag(&params(q.as_deref(), &["follow"])?, "follow")?;
    let spec = spec(&body)?;
    if follow {
        // Subscribed before the start: no chunk of its output can pass unseen.
        let feed = app.control.adhoc.output();
        let (view, _) = app.control.adhoc.spawn(spec).await?;
        let lead = sse_json("proc", &convert::proc(&view));
        return stream_output(&app, feed, view.id, Some(lead)).await;
    }
    let (view, created) = app.control.adhoc.spawn(spec).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(convert::proc(&view))).into_response())
}

pub(crate) async fn list(
    State(app): State<App>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Vec<wire::Proc>>> {
    params(q.as_deref(), &[])?;
    let all = app.control.adhoc.list().await?;
    Ok(Json(all.iter().map(convert::proc).collect()))
}

pub(crate) async fn get(
    State(app): State<App>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<wire::Proc>> {
    Ok(Json(convert::proc(&app.control.adhoc.get(&id).await?)))
}

/// Block until the process ends or `timeout` (default 30s, at most 10m) passes; either way the
/// answer is its record (`state` says which).
pub(crate) async fn wait(
    State(app): State<App>,
    UrlPath(id): UrlPath<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<wire::Proc>> {
    let map = params(q.as_deref(), &["timeout"])?;
    let cap = duration("timeout", map.get("timeout").map(String::as_str))?
        .unwrap_or(Duration::from_secs(30));
    if cap > MAX_WAIT {
        return Err(ApiError::bad(
            "`timeout` may be at most 10m; wait again for longer",
        ));
    }
    Ok(Json(convert::proc(
        &app.control.adhoc.wait(&id, cap).await?,
    )))
}

pub(crate) async fn input(
    State(app): State<App>,
    UrlPath(id): UrlPath<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<wire::Done>> {
    let req: wire::Input = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad(format!(
            "the body must be {{\"data\": \"...\", \"close\": false}}: {e}"
        ))
    })?;
    let n = req.data.len();
    app.control
        .adhoc
        .input(&id, req.data.into_bytes(), req.close)
        .await?;
    Ok(Json(wire::Done {
        message: format!(
            "wrote {n} bytes{}",
            if req.close { "; stdin closed" } else { "" }
        ),
    }))
}

pub(crate) async fn signal(
    State(app): State<App>,
    UrlPath(id): UrlPath<String>,
    RawQuery(q): RawQuery,
    body: axum::body::Bytes,
) -> ApiResult<Json<wire::Proc>> {
    let sig = requested_signal(q.as_deref(), &body)?;
    Ok(Json(convert::proc(
        &app.control.adhoc.signal(&id, sig).await?,
    )))
}

pub(crate) async fn remove(
    State(app): State<App>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<wire::Done>> {
    app.control.adhoc.remove(&id).await?;
    Ok(Json(wire::Done {
        message: format!("removed {id}"),
    }))
}

pub(crate) async fn clear(State(app): State<App>) -> ApiResult<Json<wire::Done>> {
    let n = app.control.adhoc.clear().await?;
    Ok(Json(wire::Done {
        message: format!(
            "removed {n} ended process{}",
            if n == 1 { "" } else { "es" }
        ),
    }))
}

/// Server-sent events: the output kept so far, then new output as it comes, one `line` event
/// per line (`{"stream": "out"|"err", "text": ...}`; an `omitted` event stands where the middle
/// of a long output was dropped), then one `exit` event with the final record, and the end.
pub(crate) async fn output(
    State(app): State<App>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Response> {
    // Subscribe first, then read the record: a chunk is either in the record or in the feed.
    let feed = app.control.adhoc.output();
    stream_output(&app, feed, id, None).await
}

/// The output of process `id` as events, from what its record holds on (`feed` subscribed
/// before the record is read), after `lead` if given.
async fn stream_output(
    app: &App,
    feed: tokio::sync::broadcast::Receiver<std::sync::Arc<corral_runtime::adhoc::ProcChunk>>,
    id: String,
    lead: Option<SseEvent>,
) -> ApiResult<Response> {
    let done = app.control.adhoc.watch(&id).await?;
    let view = app.control.adhoc.get(&id).await?;
    let mut lines = Lines::default();
    let mut first: Vec<SseEvent> = lead.into_iter().collect();
    match &view.output.runs {
        // Whole: by stream, in order.
        Some(runs) => {
            for (stream, text) in runs {
                lines.feed(stream.tag(), text, &mut first);
            }
        }
        None => {
            lines.feed("out", &view.output.head, &mut first);
            lines.flush(&mut first);
            first.push(sse_json(
                "omitted",
                &serde_json::json!({"bytes": view.output.omitted_bytes}),
            ));
            lines.feed("out", &view.output.tail, &mut first);
        }
    }
    let follow = Follow {
        id: id.clone(),
        feed,
        done,
        seen: view.output.original_bytes,
        lines,
        pending: first.into(),
        ending: false,
        adhoc: app.control.adhoc.clone(),
    };
    let live = futures_util::stream::unfold(follow, |mut f| async move {
        let event = f.next().await?;
        Some((Ok::<_, Infallible>(event), f))
    });
    Ok(Sse::new(live)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Cuts a process's output into lines, holding each stream's unfinished line until it ends.
#[derive(Default)]
struct Lines {
    out: String,
    err: String,
}

impl Lines {
    fn feed(&mut self, stream: &str, text: &str, events: &mut Vec<SseEvent>) {
        let carry = if stream == "err" {
            &mut self.err
        } else {
            &mut self.out
        };
        carry.push_str(text);
        while let Some(nl) = carry.find('\n') {
            let line: String = carry.drain(..=nl).collect();
            events.push(line_event(stream, line.trim_end_matches('\n')));
        }
    }

    /// The unfinished lines, as lines.
    fn flush(&mut self, events: &mut Vec<SseEvent>) {
        for (stream, carry) in [("out", &mut self.out), ("err", &mut self.err)] {
            if !carry.is_empty() {
                events.push(line_event(stream, carry));
                carry.clear();
            }
        }
    }
}

fn line_event(stream: &str, text: &str) -> SseEvent {
    sse_json(
        "line",
        &wire::Chunk {
            stream: stream.to_string(),
            text: text.to_string(),
        },
    )
}

type SseEvent = axum::response::sse::Event;

struct Follow {
    id: String,
    feed: tokio::sync::broadcast::Receiver<std::sync::Arc<corral_runtime::adhoc::ProcChunk>>,
    done: tokio::sync::watch::Receiver<bool>,
    /// Output bytes already sent (from the record).
    seen: u64,
    lines: Lines,
    pending: std::collections::VecDeque<SseEvent>,
    ending: bool,
    adhoc: corral_runtime::adhoc::Adhoc,
}

impl Follow {
    fn chunk(&mut self, c: &corral_runtime::adhoc::ProcChunk) {
        if c.id == self.id && c.offset >= self.seen {
            let mut events = Vec::new();
            self.lines.feed(c.stream.tag(), &c.text, &mut events);
            self.pending.extend(events);
        }
    }

    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            if self.ending {
                return None;
            }
            let woke = tokio::select! {
                r = self.feed.recv() => Some(r),
                _ = self.done.wait_for(|d| *d) => None,
            };
            match woke {
                Some(Ok(c)) => self.chunk(&c),
                Some(Err(RecvError::Lagged(n))) => {
                    return Some(sse_json("lagged", &serde_json::json!({"missed_chunks": n})));
                }
                Some(Err(RecvError::Closed)) => self.ending = true,
                None => {
                    // Everything it wrote was sent to the feed before it was marked done.
                    while let Ok(c) = self.feed.try_recv() {
                        self.chunk(&c);
                    }
                    let mut rest = Vec::new();
                    self.lines.flush(&mut rest);
                    self.pending.extend(rest);
                    if let Ok(view) = self.adhoc.get(&self.id).await {
                        self.pending
                            .push_back(sse_json("exit", &convert::proc(&view)));
                    }
                    self.ending = true;
                }
            }
        }
    }
}
