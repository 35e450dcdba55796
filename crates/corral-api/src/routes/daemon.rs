//! The daemon itself: `/health`, `/ready`, `/openapi.json`, `/v1/project`, `/v1/shutdown`,
//! `/v1/listen` (start the TCP API for the dashboard), `/v1/session` (who is asking).

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

/// Start the TCP API on a free loopback port, unless it runs already; where it listens.
pub(crate) async fn listen(State(app): State<App>) -> ApiResult<Json<serde_json::Value>> {
    let mut slot = app.shared.tcp.lock().await;
    if let Some(addr) = *slot {
        return Ok(Json(
            serde_json::json!({"addr": addr.to_string(), "started": false}),
        ));
    }
    let tokens = crate::auth::Tokens::load_or_create(&app.shared.state_dir).map_err(|e| {
        crate::error::ApiError::internal(format!("cannot create the API token: {e}"))
    })?;
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let bound = crate::serve_tcp(app.control.clone(), any, tokens, app.shared.clone())
        .await
        .map_err(|e| crate::error::ApiError::internal(format!("cannot listen: {e}")))?;
    *slot = Some(bound);
    Ok(Json(
        serde_json::json!({"addr": bound.to_string(), "started": true}),
    ))
}

/// Who is asking: `full` or `read_only` (the dashboard hides what a read-only session may not
/// do).
pub(crate) async fn session(
    role: Option<axum::Extension<crate::routes::Role>>,
) -> Json<serde_json::Value> {
    let role = match role.map(|r| r.0) {
        Some(crate::routes::Role::ReadOnly) => "read_only",
        _ => "full",
    };
    Json(serde_json::json!({ "role": role }))
}
