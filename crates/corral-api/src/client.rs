//! The API client used by the CLI: HTTP/1.1 over the Unix socket (hyper), one connection per
//! request, JSON answers and server-sent event streams.

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
pub use hyper::Method;
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

use crate::wire;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no corral daemon is running for this project")]
    NoDaemon,
    #[error("talking to the daemon: {0}")]
    Io(String),
    #[error("{message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
}

pub struct Client {
    socket: PathBuf,
}

type Body = hyper::body::Incoming;

impl Client {
    pub fn new(state_dir: &Path) -> Client {
        Client {
            socket: crate::socket_path(state_dir),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<hyper::Response<Body>, ClientError> {
        let short = corral_runtime::sockpath::SocketPath::new(&self.socket)
            .map_err(|e| ClientError::Io(e.to_string()))?;
        let stream = match tokio::net::UnixStream::connect(short.as_path()).await {
            Ok(s) => s,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Err(ClientError::NoDaemon);
            }
            Err(e) => return Err(ClientError::Io(e.to_string())),
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Io(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "localhost")
            .header(hyper::header::CONTENT_TYPE, "application/json")
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
        serde_json::from_slice(&body).map_err(|e| ClientError::Io(format!("bad answer: {e}")))
    }

    /// A server-sent event stream: calls `each(event, data)` until the stream ends or `each`
    /// returns false.
    pub async fn stream(
        &self,
        path: &str,
        mut each: impl FnMut(&str, &str) -> bool,
    ) -> Result<(), ClientError> {
        let resp = self.send(Method::GET, path, Vec::new()).await?;
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
                    return Ok(());
                }
            }
        }
        Ok(())
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
