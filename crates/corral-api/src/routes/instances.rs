//! Templates and their instances: make one (empty, git, or a ZIP uploaded next), list, get,
//! delete. The instances' owner answers; the supervisor is not involved.

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::Json;

use crate::error::{ApiError, ApiResult};
use crate::routes::App;
use corral_proto::wire;

use crate::convert;

/// The largest workspace ZIP accepted.
pub(crate) const MAX_UPLOAD: usize = 256 << 20;

pub(crate) async fn templates(State(app): State<App>) -> ApiResult<Json<Vec<wire::Template>>> {
    let s = app.control.snapshot().await?;
    Ok(Json(
        s.templates
            .iter()
            .map(|t| wire::Template {
                name: t.name.clone(),
                params: t.params.iter().cloned().collect(),
                setup_steps: t.setup.len(),
                files: t.files.iter().map(|(p, _)| p.clone()).collect(),
                port_range: t.port_range,
            })
            .collect(),
    ))
}

pub(crate) async fn create_instance(
    State(app): State<App>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<wire::Instance>)> {
    let req: wire::InstanceRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad(format!(
            "the body must be {{\"template\": \"NAME\", \"params\": {{}}, \"git\": \"URL\" or \"upload\": true}}: {e}"
        ))
    })?;
    let inst = app
        .control
        .instances
        .create(
            req.template,
            req.params.into_iter().collect(),
            req.git,
            req.upload,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(convert::instance(&inst))))
}

pub(crate) async fn upload_workspace(
    State(app): State<App>,
    UrlPath(name): UrlPath<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<wire::Instance>> {
    let inst = app.control.instances.upload(name, body.to_vec()).await?;
    Ok(Json(convert::instance(&inst)))
}

pub(crate) async fn instances(State(app): State<App>) -> ApiResult<Json<Vec<wire::Instance>>> {
    let list = app.control.instances.list().await?;
    Ok(Json(list.iter().map(convert::instance).collect()))
}

pub(crate) async fn instance(
    State(app): State<App>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<wire::Instance>> {
    let inst = app.control.instances.get(name).await?;
    Ok(Json(convert::instance(&inst)))
}

pub(crate) async fn delete_instance(
    State(app): State<App>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<wire::Done>> {
    let message = app.control.instances.delete(name).await?;
    Ok(Json(wire::Done { message }))
}
