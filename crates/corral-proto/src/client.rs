//! The API client: HTTP/1.1 over the Unix socket (or loopback TCP with a token) with hyper, one
//! connection per request, JSON answers and server-sent event streams.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
pub use hyper::Method;
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

use crate::{paths, wire};

/// What a request for an event stream got.
pub enum Streamed {
    /// Events, each handed over as it came.
    Events,
    /// An answer that is no event stream: its body.
    Plain(Bytes),
}

#[derive(Debug)]
pub enum ClientError {
    /// Nothing listens: no corral runs for this project.
    NoDaemon,
    /// The connection broke, or the answer was not what the API sends.
    Io(String),
    /// The API refused: its status, stable code and message.
    Api {
        status: u16,
        code: String,
        message: String,
    },
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::NoDaemon => f.write_str("no corral daemon is running for this project"),
            ClientError::Io(e) => write!(f, "talking to the daemon: {e}"),
            ClientError::Api { message, .. } => f.write_str(message),
        }
    }
}

impl std::error::Error for ClientError {}

#[derive(Clone)]
enum Transport {
    Unix(PathBuf),
    Tcp { addr: SocketAddr, token: String },
}

/// A client of one corral; cheap to clone (each request opens its own connection).
#[derive(Clone)]
pub struct Client {
    transport: Transport,
}

type Body = hyper::body::Incoming;

impl Client {
    /// A client of the corral whose state dir is `state_dir`, over its Unix socket.
    pub fn new(state_dir: &Path) -> Client {
        Client {
            transport: Transport::Unix(paths::api_socket(state_dir)),
        }
    }

    /// A client over TCP (`corral up --listen`), sending `token` with every request.
    pub fn tcp(addr: SocketAddr, token: impl Into<String>) -> Client {
        Client {
            transport: Transport::Tcp {
                addr,
                token: token.into(),
            },
        }
    }

    async fn connect(
        &self,
    ) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, ClientError> {
        fn refused(e: std::io::Error) -> ClientError {
            match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    ClientError::NoDaemon
                }
                _ => ClientError::Io(e.to_string()),
            }
        }
        macro_rules! handshake {
            ($stream:expr) => {{
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new($stream))
                    .await
                    .map_err(|e| ClientError::Io(e.to_string()))?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                sender
            }};
        }
        Ok(match &self.transport {
            Transport::Unix(socket) => {
                let short =
                    paths::SocketPath::new(socket).map_err(|e| ClientError::Io(e.to_string()))?;
                let stream = tokio::net::UnixStream::connect(short.as_path())
                    .await
                    .map_err(refused)?;
                handshake!(stream)
            }
            Transport::Tcp { addr, .. } => {
                let stream = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(refused)?;
                handshake!(stream)
            }
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<hyper::Response<Body>, ClientError> {
        let mut sender = self.connect().await?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::CONTENT_TYPE, "application/json");
        req = match &self.transport {
            Transport::Unix(_) => req.header(hyper::header::HOST, "localhost"),
            Transport::Tcp { addr, token } => req
                .header(hyper::header::HOST, addr.to_string())
                .header(hyper::header::AUTHORIZATION, format!("Bearer {token}")),
        };
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::Io(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Io(e.to_string()))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        Err(api_error(status, &read_body(resp).await?))
    }

    /// A request whose answer is JSON.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
    ) -> Result<T, ClientError> {
        self.call_with(method, path, Vec::new()).await
    }

    /// A request with a JSON body whose answer is JSON.
    pub async fn call_with<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<T, ClientError> {
        let body = read_body(self.send(method, path, body).await?).await?;
        decode(&body)
    }

    /// A request whose answer's body is wanted as it came (to read in place with [`decode`]).
    pub async fn fetch(&self, method: Method, path: &str) -> Result<Bytes, ClientError> {
        read_body(self.send(method, path, Vec::new()).await?).await
    }

    /// A server-sent event stream: calls `each(event, data)` until the stream ends or `each`
    /// returns false.
    pub async fn stream(
        &self,
        path: &str,
        each: impl FnMut(&str, &str) -> bool,
    ) -> Result<(), ClientError> {
        self.stream_with(Method::GET, path, Vec::new(), each)
            .await
            .map(|_| ())
    }

    /// A request with a JSON body whose answer is a server-sent event stream (see `stream`).
    /// An answer that is no event stream (a daemon of an earlier version, which does not know
    /// to stream this request) comes back whole, for the caller to read.
    pub async fn stream_with(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        mut each: impl FnMut(&str, &str) -> bool,
    ) -> Result<Streamed, ClientError> {
        let resp = self.send(method, path, body).await?;
        let events = resp
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !events {
            return Ok(Streamed::Plain(read_body(resp).await?));
        }
        let mut body = resp.into_body();
        let mut buf = String::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ClientError::Io(e.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buf.push_str(&String::from_utf8_lossy(&data));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let mut event = "message";
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(e) = line.strip_prefix("event:") {
                        event = e.trim_start();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        if !data.is_empty() {
                            data.push('\n');
                        }
                        data.push_str(d.strip_prefix(' ').unwrap_or(d));
                    }
                }
                if !data.is_empty() && !each(event, &data) {
                    return Ok(Streamed::Events);
                }
            }
        }
        Ok(Streamed::Events)
    }
}

async fn read_body(resp: hyper::Response<Body>) -> Result<Bytes, ClientError> {
    Ok(resp
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Io(e.to_string()))?
        .to_bytes())
}

fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<wire::Error>(body) {
        Ok(e) => ClientError::Api {
            status: status.as_u16(),
            code: e.code,
            message: e.message,
        },
        Err(_) => ClientError::Api {
            status: status.as_u16(),
            code: "http".into(),
            message: format!("the daemon answered {status}"),
        },
    }
}

/// An answer's JSON as `T`, which may borrow from it.
pub fn decode<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|e| ClientError::Io(format!("bad answer: {e}")))
}

/// Percent-encode a query value.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
