//! The web dashboard: a page and its script and style, hand-written and embedded in the binary
//! (no build step, nothing fetched from elsewhere). It is a client of the same JSON API and
//! event stream as the CLI. The script and style are served under names that carry a hash of
//! their content, cached for good; the page itself is never cached, so a new binary's assets
//! are picked up at the next load.
//!
//! Who may see it is the TCP guard's business ([`crate::auth`]): without a session, `/` is the
//! page saying how to get in (`corral dashboard` prints a login link), with no project data.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");
/// Shown at `/` without a session.
pub(crate) const LOGIN: &str = include_str!("login.html");

/// FNV-1a of the content: a cache key, not a security measure (written here rather than
/// pulling in a hash crate for five lines).
fn hash(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

struct Assets {
    index: String,
    js_name: String,
    css_name: String,
}

fn assets() -> &'static Assets {
    static A: OnceLock<Assets> = OnceLock::new();
    A.get_or_init(|| {
        let js_name = format!("app-{}.js", hash(APP_JS));
        let css_name = format!("app-{}.css", hash(APP_CSS));
        let index = INDEX
            .replace("{{APP_JS}}", &format!("/assets/{js_name}"))
            .replace("{{APP_CSS}}", &format!("/assets/{css_name}"));
        Assets {
            index,
            js_name,
            css_name,
        }
    })
}

/// Headers every dashboard document gets: no framing by other sites, no guessing of types, no
/// script or style from anywhere but here.
fn page(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
            ),
        ],
        body,
    )
        .into_response()
}

pub(crate) async fn index() -> Response {
    page(assets().index.clone())
}

/// The page without a session.
pub(crate) fn login_page() -> Response {
    page(LOGIN.replace("{{APP_CSS}}", &format!("/assets/{}", assets().css_name)))
}

pub(crate) async fn asset(Path(file): Path<String>) -> Response {
    let a = assets();
    let (body, kind) = if file == a.js_name {
        (APP_JS, "text/javascript; charset=utf-8")
    } else if file == a.css_name {
        (APP_CSS, "text/css; charset=utf-8")
    } else {
        return crate::error::ApiError::not_found(format!("no asset `{file}`")).into_response();
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, kind),
            // The name changes with the content: cached for good.
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}
