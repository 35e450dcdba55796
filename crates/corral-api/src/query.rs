//! What handlers read from a request besides its body: query parameters (unknown ones are
//! refused, not ignored), flags, signal names; and the server-sent event helper.

use std::collections::HashMap;

use axum::response::sse::Event as SseEvent;

use crate::error::{ApiError, ApiResult};

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

pub(crate) fn sse_json(event: &str, value: &impl serde::Serialize) -> SseEvent {
    SseEvent::default()
        .event(event)
        .data(serde_json::to_string(value).unwrap_or_default())
}
