//! Who may use the TCP API. The Unix socket needs nothing more than its file mode; TCP is
//! reachable by every local user and by web pages (through DNS rebinding), so there:
//! - every request carries `Authorization: Bearer <token>`; tokens are 32 random bytes from the
//!   kernel, stored in the state dir with mode 0600, compared in constant time;
//! - the read-only token may only GET;
//! - the Host header must name loopback and our port, so a page that rebinds its own domain to
//!   127.0.0.1 is refused;
//! - no CORS headers are sent at all, so browsers keep other origins out;
//! - the dashboard: `GET /login?token=…` (the link `corral dashboard` prints) trades a token for
//!   a session cookie (HttpOnly, SameSite=Strict, named after the port: cookies are shared by
//!   every port of a host) and redirects to `/`, so the token leaves the address bar. A request
//!   with only the cookie that changes something must come with our own `Origin` (CSRF). The
//!   page's assets need nothing (they hold no data); `/` without a session says how to get in.

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
    /// Dashboard sessions: cookie value → what its token was.
    pub sessions: std::sync::Mutex<std::collections::HashMap<String, Role>>,
}

/// Sessions kept at most; past it the oldest are forgotten (their browsers sign in again).
const MAX_SESSIONS: usize = 256;

impl Guard {
    pub fn new(tokens: Tokens, addr: std::net::SocketAddr) -> Guard {
        Guard {
            tokens,
            addr,
            sessions: Default::default(),
        }
    }

    fn cookie_name(&self) -> String {
        format!("corral_session_{}", self.addr.port())
    }

    /// The role a token gives, if it is one of ours.
    fn role_of(&self, given: &[u8]) -> Option<Role> {
        if constant_time_eq(given, self.tokens.full.as_bytes()) {
            Some(Role::Full)
        } else if constant_time_eq(given, self.tokens.read_only.as_bytes()) {
            Some(Role::ReadOnly)
        } else {
            None
        }
    }

    /// The session the request's cookie names, if any.
    fn session(&self, req: &Request) -> Option<Role> {
        let name = self.cookie_name();
        let value = req
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|h| h.to_str().ok())
            .flat_map(|h| h.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())?;
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        // Looked up by the whole value; a guess is as good as guessing the token.
        sessions
            .iter()
            .find(|(k, _)| constant_time_eq(k.as_bytes(), value.as_bytes()))
            .map(|(_, r)| *r)
    }

    /// `GET /login?token=…`: a session for a good token, and off to `/`.
    fn login(&self, req: &Request) -> Response {
        let token = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "token")
            .map_or("", |(_, v)| v);
        let Some(role) = self.role_of(token.as_bytes()) else {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this link's token is not this corral's; run `corral dashboard` again for a new link",
            );
        };
        let mut bytes = [0u8; 32];
        if std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .is_err()
        {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "cannot make a session now; try again",
            );
        }
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        {
            let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            if sessions.len() >= MAX_SESSIONS {
                sessions.clear();
            }
            sessions.insert(id.clone(), role);
        }
        let cookie = format!(
            "{}={id}; HttpOnly; SameSite=Strict; Path=/",
            self.cookie_name()
        );
        (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, "/".to_string()),
                (header::SET_COOKIE, cookie),
                (header::CACHE_CONTROL, "no-store".to_string()),
                (header::REFERRER_POLICY, "no-referrer".to_string()),
            ],
        )
            .into_response()
    }
}

pub use crate::routes::Role;

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
    let is_get = matches!(*req.method(), Method::GET | Method::HEAD);
    let path = req.uri().path();
    // The dashboard's script and style hold no data.
    if is_get && path.starts_with("/assets/") {
        return next.run(req).await;
    }
    if is_get && path == "/login" {
        return guard.login(&req);
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
    let (role, by_cookie) = match guard.role_of(given) {
        Some(r) => (r, false),
        None => match guard.session(&req) {
            Some(r) => (r, true),
            None if is_get && path == "/" => return crate::routes::dashboard::login_page(),
            None => {
                return refuse(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "send `Authorization: Bearer <token>`; the token is in .corral/token (or .corral/token.read for reading)",
                );
            }
        },
    };
    // A browser sends the cookie with a request another site makes it send; it also says which
    // site that is. Changes through the cookie must come from our own page.
    if by_cookie && !is_get {
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let ours = origin
            .strip_prefix("http://")
            .is_some_and(|h| allowed.iter().any(|a| a.eq_ignore_ascii_case(h)));
        if !ours {
            return refuse(
                StatusCode::FORBIDDEN,
                "bad_origin",
                "a change through the dashboard's session must come from the dashboard's own page",
            );
        }
    }
    if role == Role::ReadOnly && !is_get {
        return refuse(
            StatusCode::FORBIDDEN,
            "read_only",
            "this token may only read; use the full token for changes",
        );
    }
    let mut req = req;
    req.extensions_mut().insert(role);
    next.run(req).await
}
