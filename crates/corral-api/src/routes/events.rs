//! The live event stream (units, instances, ad-hoc processes) and the stored history.

use std::convert::Infallible;

use axum::extract::{RawQuery, State};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Json, Response};
use corral_proto::wire;
use corral_runtime::{Command, Reply};
use tokio::sync::broadcast::error::RecvError;

use crate::convert;
use crate::error::{ApiError, ApiResult};
use crate::query::{params, sse_json};
use crate::routes::App;

pub(crate) async fn events(State(app): State<App>, RawQuery(q): RawQuery) -> ApiResult<Response> {
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

pub(crate) async fn history(
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
