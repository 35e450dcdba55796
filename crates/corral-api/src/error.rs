//! The one error type of the API: a status, a stable code, and a message a person can act on,
//! sent as JSON `{"code": "...", "message": "..."}`. Internals stay in the daemon's log.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use corral_proto::wire;
use corral_runtime::CommandError;

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

    /// The daemon cannot do it now (out of ports, descriptors): try again later.
    pub(crate) fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
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
