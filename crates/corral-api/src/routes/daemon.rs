//! The daemon itself: `/health`, `/ready`, `/openapi.json`, `/v1/project`, `/v1/shutdown`.

use axum::extract::State;
use axum::response::{IntoResponse, Json, Response};
use corral_proto::wire;
use corral_runtime::Command;

use crate::error::ApiResult;
use crate::routes::App;
use crate::routes::units::act;

pub(crate) async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Ready when the supervisor answers.
pub(crate) async fn ready(State(app): State<App>) -> ApiResult<Json<serde_json::Value>> {
    let snap = app.control.snapshot().await?;
    Ok(Json(
        serde_json::json!({"status": "ready", "pid": snap.pid}),
    ))
}

pub(crate) async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        crate::OPENAPI,
    )
        .into_response()
}

pub(crate) async fn project(State(app): State<App>) -> ApiResult<Json<wire::Project>> {
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

pub(crate) async fn shutdown(State(app): State<App>) -> ApiResult<Json<wire::Done>> {
    act(&app, Command::Shutdown).await
}
