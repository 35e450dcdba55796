//! The routes, one file per subject. [`router`] builds the axum router through [`Routes`],
//! which records every (method, path) it registers: that record is [`table`], and the test
//! below holds `openapi.json` to it — so a route cannot leave the router, or come in, without
//! the document following.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{MethodRouter, delete, get, post, put};
use corral_runtime::Control;

use crate::error::ApiError;

pub(crate) mod daemon;
pub(crate) mod dashboard;
pub(crate) mod events;
pub(crate) mod instances;
pub(crate) mod logs;
pub(crate) mod metrics;
pub(crate) mod procs;
pub(crate) mod runs;
pub(crate) mod units;

/// What every handler gets: the supervisor's handle, the meter for CPU/memory, and what the
/// daemon's servers share.
#[derive(Clone)]
pub(crate) struct App {
    pub(crate) control: Control,
    pub(crate) meter: corral_runtime::metrics::Meter,
    pub(crate) shared: Shared,
}

/// What the servers of one daemon (the Unix socket, TCP) share: the state dir, and where the
/// TCP API listens once it does (started with `--listen`, or asked for by `corral dashboard`).
#[derive(Clone, Debug)]
pub struct Shared {
    pub(crate) state_dir: std::path::PathBuf,
    pub(crate) tcp: std::sync::Arc<tokio::sync::Mutex<Option<std::net::SocketAddr>>>,
}

impl Shared {
    pub fn new(state_dir: &std::path::Path) -> Shared {
        Shared {
            state_dir: state_dir.to_path_buf(),
            tcp: Default::default(),
        }
    }
}

/// Who a request comes from, as the TCP guard found (the Unix socket's clients are the owner).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Full,
    ReadOnly,
}

/// A router being built, and the list of what it serves.
struct Routes {
    router: Router<App>,
    table: Vec<(&'static str, &'static str)>,
}

impl Routes {
    /// Add `method` on `path` (axum merges the methods of one path).
    fn add(mut self, method: &'static str, path: &'static str, route: MethodRouter<App>) -> Self {
        self.table.push((method, path));
        self.router = self.router.route(path, route);
        self
    }

    /// [`read_whole_body`] for the routes added so far.
    fn read_bodies_first(mut self) -> Self {
        self.router = self
            .router
            .route_layer(axum::middleware::from_fn(read_whole_body));
        self
    }
}

fn routes() -> Routes {
    let r = Routes {
        router: Router::new(),
        table: Vec::new(),
    };
    r.add("get", "/health", get(daemon::health))
        .add("get", "/ready", get(daemon::ready))
        .add("get", "/openapi.json", get(daemon::openapi))
        .add("get", "/v1/project", get(daemon::project))
        .add("post", "/v1/shutdown", post(daemon::shutdown))
        .add("post", "/v1/listen", post(daemon::listen))
        .add("get", "/v1/session", get(daemon::session))
        .add("get", "/", get(dashboard::index))
        .add("get", "/assets/{file}", get(dashboard::asset))
        .add("get", "/metrics", get(metrics::metrics))
        // units
        .add("get", "/v1/services", get(units::services))
        .add("post", "/v1/services", post(units::add_service))
        .add("get", "/v1/services/{name}", get(units::service))
        .add(
            "get",
            "/v1/services/{name}/definition",
            get(units::show_definition),
        )
        .add("put", "/v1/services/{name}", put(units::update_service))
        .add(
            "delete",
            "/v1/services/{name}",
            delete(units::remove_service),
        )
        .add("post", "/v1/services/{name}/start", post(units::start))
        .add("post", "/v1/services/{name}/stop", post(units::stop))
        .add("post", "/v1/services/{name}/restart", post(units::restart))
        .add("post", "/v1/services/{name}/signal", post(units::signal))
        .add("post", "/v1/services/{name}/scale", post(units::scale))
        .add("post", "/v1/reload", post(units::reload))
        // logs and events
        .add("get", "/v1/services/{name}/logs", get(logs::service_logs))
        .add("get", "/v1/logs", get(logs::logs))
        .add("get", "/v1/events", get(events::events))
        .add("get", "/v1/events/history", get(events::history))
        // ad-hoc processes
        .add("get", "/v1/procs", get(procs::list))
        .add("post", "/v1/procs", post(procs::start))
        .add("delete", "/v1/procs", delete(procs::clear))
        .add("get", "/v1/procs/{id}", get(procs::get))
        .add("delete", "/v1/procs/{id}", delete(procs::remove))
        .add("get", "/v1/procs/{id}/wait", get(procs::wait))
        .add("get", "/v1/procs/{id}/output", get(procs::output))
        .add("post", "/v1/procs/{id}/input", post(procs::input))
        .add("post", "/v1/procs/{id}/signal", post(procs::signal))
        // pipelines
        .add("post", "/v1/runs", post(runs::start_run))
        .add("get", "/v1/runs/{id}", get(runs::get_run))
        // templates and instances
        .add("get", "/v1/templates", get(instances::templates))
        .add("get", "/v1/instances", get(instances::instances))
        .add("post", "/v1/instances", post(instances::create_instance))
        .add("get", "/v1/instances/{name}", get(instances::instance))
        .add(
            "delete",
            "/v1/instances/{name}",
            delete(instances::delete_instance),
        )
        // Everything above has its body read before the handler; the upload below streams its
        // own, larger body.
        .read_bodies_first()
        .add(
            "put",
            "/v1/instances/{name}/workspace",
            put(instances::upload_workspace)
                .layer(axum::extract::DefaultBodyLimit::max(instances::MAX_UPLOAD)),
        )
}

/// Every route served, as (method, path).
pub fn table() -> Vec<(&'static str, &'static str)> {
    routes().table
}

pub fn router(control: Control, shared: Shared) -> Router {
    routes()
        .router
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
            meter: corral_runtime::metrics::Meter::sharing(std::time::Duration::from_secs(1)),
            shared,
        })
        .layer(axum::middleware::map_response(json_errors))
        .layer(axum::middleware::map_response(settle_heap))
}

/// An answer is made: what making it freed (a `ps` of thousands of units, a scan of every
/// process for their CPU) goes back to the system if it was much (see `heap::settle`).
async fn settle_heap(resp: axum::response::Response) -> axum::response::Response {
    corral_runtime::heap::settle();
    resp
}

/// The most a request body may be, except a workspace upload (its own limit): axum's default.
const BODY_LIMIT: usize = 2 * 1024 * 1024;

/// Every request body is read in full before its handler runs. A handler that takes no body
/// (shutdown, a GET sent with one) would leave bytes unread, and a socket closed with unread
/// bytes is reset: the client could lose the answer it was sent. The workspace upload streams
/// its own, larger body.
async fn read_whole_body(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = req.into_parts();
    match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(bytes) => {
            let req = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
            next.run(req).await
        }
        Err(e) => {
            let over = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if over {
                ApiError {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    code: "too_large",
                    message: format!("request body over {BODY_LIMIT} bytes"),
                }
                .into_response()
            } else {
                ApiError::bad(format!("could not read the request body: {e}")).into_response()
            }
        }
    }
}

/// Every error answer is JSON `{code, message}` — also those axum makes itself before a handler
/// runs (a body over its limit, a bad path): a client parses one shape.
async fn json_errors(resp: axum::response::Response) -> axum::response::Response {
    use axum::http::header::CONTENT_TYPE;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let text = axum::body::to_bytes(resp.into_body(), 16 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    axum::response::IntoResponse::into_response(ApiError {
        status,
        code,
        message: if text.is_empty() {
            status.canonical_reason().unwrap_or("error").to_string()
        } else {
            text
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut routes: Vec<(String, String)> = table()
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        routes.sort();
        assert_eq!(documented, routes);
    }
}

#[cfg(test)]
mod document {
    /// Every operation documents its error bodies, the bearer scheme is there, and the streams
    /// say they are server-sent events.
    #[test]
    fn openapi_document_describes_errors_security_and_streams() {
        let doc: serde_json::Value = serde_json::from_str(crate::OPENAPI).unwrap();
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                for status in ["400", "401", "403", "404", "503"] {
                    let r = &op["responses"][status]["$ref"];
                    assert!(
                        r.as_str()
                            .is_some_and(|r| r.starts_with("#/components/responses/")),
                        "{method} {path}: no {status} error body"
                    );
                }
            }
        }
        for path in [
            "/v1/events",
            "/v1/logs",
            "/v1/services/{name}/logs",
            "/v1/procs/{id}/output",
        ] {
            let content = &doc["paths"][path]["get"]["responses"]["200"]["content"];
            assert!(
                content["text/event-stream"].is_object(),
                "{path}: {content}"
            );
        }
        for (name, r) in doc["components"]["responses"].as_object().unwrap() {
            assert_eq!(
                r["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/Error",
                "{name}"
            );
        }
    }
}
