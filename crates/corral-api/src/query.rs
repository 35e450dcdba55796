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

/// The signal a request asks for: `?signal=` or a JSON body `{"signal": "HUP"}` (a name or a
/// number); TERM when neither says. Anything else in the body — unknown keys, not JSON, two
/// different signals — is refused, never taken as TERM.
pub fn requested_signal(query: Option<&str>, body: &[u8]) -> ApiResult<i32> {
    let map = params(query, &["signal"])?;
    let from_query = map.get("signal").map(|s| parse_signal(s)).transpose()?;
    let from_body = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let v: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad(format!("the body is not JSON: {e}")))?;
        let serde_json::Value::Object(obj) = v else {
            return Err(ApiError::bad(r#"the body must be {"signal": "HUP"}"#));
        };
        if let Some(k) = obj.keys().find(|k| *k != "signal") {
            return Err(ApiError::bad(format!(
                "unknown key `{k}` in the body (it takes: signal)"
            )));
        }
        match obj.get("signal") {
            None => None,
            Some(serde_json::Value::String(s)) => Some(parse_signal(s)?),
            Some(serde_json::Value::Number(n)) => Some(parse_signal(&n.to_string())?),
            Some(_) => return Err(ApiError::bad("`signal` must be a name or a number")),
        }
    };
    match (from_query, from_body) {
        (Some(q), Some(b)) if q != b => Err(ApiError::bad(
            "the query and the body name different signals; give one",
        )),
        (q, b) => Ok(q.or(b).unwrap_or(15)),
    }
}
