//! Who may use the TCP API. The Unix socket needs nothing more than its file mode; TCP is
//! reachable by every local user and by web pages (through DNS rebinding), so there:
//! - every request carries `Authorization: Bearer <token>`; tokens are 32 random bytes from the
//!   kernel, stored in the state dir with mode 0600, compared in constant time;
//! - the read-only token may only GET;
//! - the Host header must name loopback and our port, so a page that rebinds its own domain to
//!   127.0.0.1 is refused;
//! - no CORS headers are sent at all, so browsers keep other origins out.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

#[derive(Clone, Debug)]
pub struct Tokens {
    pub full: String,
    pub read_only: String,
}

impl Tokens {
    /// Read `token` and `token.read` from the state dir, creating them (mode 0600) if missing.
    pub fn load_or_create(state_dir: &Path) -> std::io::Result<Tokens> {
        Ok(Tokens {
            full: token_file(&state_dir.join("token"))?,
            read_only: token_file(&state_dir.join("token.read"))?,
        })
    }
}

/// The token in `path`, if it is ours and private; otherwise a new one replaces whatever is
/// there (a planted or loose file is never trusted, a link never followed).
fn token_file(path: &Path) -> std::io::Result<String> {
    if let Some(t) = corral_runtime::statedir::read_private(path)?
        && t.trim().len() >= 32
    {
        return Ok(t.trim().to_string());
    }
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    corral_runtime::statedir::write_new(path, token.as_bytes())?;
    Ok(token)
}

/// Compare without an early exit, so timing does not tell how much of a guess was right.
/// (Written here rather than pulling in a crate for eight lines.)
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub struct Guard {
    pub tokens: Tokens,
    /// The address listened on: a Host naming it (or a loopback name with its port) is ours.
    pub addr: std::net::SocketAddr,
}

fn refuse(status: StatusCode, code: &'static str, message: &str) -> Response {
    ApiError {
        status,
        code,
        message: message.to_string(),
    }
    .into_response()
}

pub async fn check(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let port = guard.addr.port();
    let allowed = [
        guard.addr.to_string(),
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ];
    if !allowed.iter().any(|a| a.eq_ignore_ascii_case(host)) {
        return refuse(
            StatusCode::FORBIDDEN,
            "bad_host",
            &format!(
                "the Host header must be {} (or localhost with this port)",
                guard.addr
            ),
        );
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        // The scheme is case-insensitive (RFC 9110): `bearer` is `Bearer`.
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, token)| token.trim())
        .as_bytes();
    let full = constant_time_eq(given, guard.tokens.full.as_bytes());
    let read_only = constant_time_eq(given, guard.tokens.read_only.as_bytes());
    if !full && !read_only {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send `Authorization: Bearer <token>`; the token is in .corral/token (or .corral/token.read for reading)",
        );
    }
    if !full && !matches!(*req.method(), Method::GET | Method::HEAD) {
        return refuse(
            StatusCode::FORBIDDEN,
            "read_only",
            "this token may only read; use the full token for changes",
        );
    }
    next.run(req).await
}
