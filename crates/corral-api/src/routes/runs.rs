//! Pipeline runs: start one (the tasks and what they need, again, in the daemon's engine) and
//! read its verdicts, waiting for the end if asked.

use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Json;
use corral_proto::wire;
use corral_runtime::{Command, Reply};

use crate::convert;
use crate::error::{ApiError, ApiResult};
use crate::query::{flag, params};
use crate::routes::App;

/// Start a pipeline; with `?wait=true` answer when it has finished.
pub(crate) async fn start_run(
    State(app): State<App>,
    RawQuery(q): RawQuery,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<wire::Run>)> {
    let wait = flag(&params(q.as_deref(), &["wait"])?, "wait")?;
    let req: wire::RunRequest = if body.is_empty() {
        wire::RunRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad(format!(
                "the body must be {{\"tasks\": [...], \"sequential\": false}}: {e}"
            ))
        })?
    };
    let run = match app
        .control
        .ask(Command::RunTasks {
            tasks: req.tasks,
            sequential: req.sequential,
        })
        .await?
    {
        Reply::Run(r) => r,
        _ => return Err(ApiError::bad("unexpected reply")),
    };
    if !wait {
        return Ok((StatusCode::CREATED, Json(convert::run(&run))));
    }
    match app
        .control
        .ask(Command::GetRun {
            id: run.id,
            wait: true,
        })
        .await?
    {
        Reply::Run(r) => Ok((StatusCode::CREATED, Json(convert::run(&r)))),
        _ => Err(ApiError::bad("unexpected reply")),
    }
}

pub(crate) async fn get_run(
    State(app): State<App>,
    UrlPath(id): UrlPath<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<wire::Run>> {
    let wait = flag(&params(q.as_deref(), &["wait"])?, "wait")?;
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::not_found(format!("no pipeline run `{id}`")))?;
    match app.control.ask(Command::GetRun { id, wait }).await? {
        Reply::Run(r) => Ok(Json(convert::run(&r))),
        _ => Err(ApiError::bad("unexpected reply")),
    }
}
