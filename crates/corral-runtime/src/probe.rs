//! Running one health check: TCP connect, HTTP GET, or a command. The engine decides when and
//! what the results mean; this only answers "did it pass, and if not, why".

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use corral_config::{Check, fill_port};
use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::reaper::Reaper;

/// The most of a response or of command output we read.
const MAX_READ: usize = 64 * 1024;

/// Where and how an exec probe runs.
pub struct ExecContext<'a> {
    pub reaper: &'a Reaper,
    pub workdir: &'a Path,
    pub env: &'a [(String, String)],
    /// An exec check runs as its unit does.
    pub identity: Option<&'a corral_config::Identity>,
}

/// Run `check` once within `timeout`. `Ok` carries a short note, `Err` the reason it failed.
pub async fn run(
    check: &Check,
    port: Option<u16>,
    timeout: Duration,
    ctx: ExecContext<'_>,
) -> Result<String, String> {
    match check {
        Check::Tcp { addr } => {
            let addr = fill_port(addr, port);
            match tokio::time::timeout(timeout, TcpStream::connect(&addr)).await {
                Ok(Ok(_)) => Ok(format!("connected to {addr}")),
                Ok(Err(e)) => Err(format!("tcp {addr}: {e}")),
                Err(_) => Err(format!(
                    "tcp {addr}: no answer within {}",
                    corral_engine::fmt_duration(timeout)
                )),
            }
        }
        Check::Http { url, status, body } => {
            let url = fill_port(url, port);
            match tokio::time::timeout(timeout, http_get(&url)).await {
                Ok(Ok((code, text))) => {
                    let status_ok = match status {
                        Some(want) => code == *want,
                        None => (200..400).contains(&code),
                    };
                    if !status_ok {
                        return Err(format!("GET {url}: status {code}"));
                    }
                    match body {
                        Some(want) if !text.contains(want.as_str()) => {
                            Err(format!("GET {url}: status {code}, body lacks `{want}`"))
                        }
                        _ => Ok(format!("GET {url}: {code}")),
                    }
                }
                Ok(Err(e)) => Err(format!("GET {url}: {e}")),
                Err(_) => Err(format!(
                    "GET {url}: no answer within {}",
                    corral_engine::fmt_duration(timeout)
                )),
            }
        }
        Check::Exec { command, output } => {
            exec(command.to_argv(port), output.as_deref(), timeout, ctx).await
        }
        Check::Log { .. } => Err("log checks are matched by the output pump".into()),
    }
}

/// A minimal HTTP/1.1 GET: status and up to 64 KiB of body. Hand-written because a probe needs
/// no more than this, and an HTTP client crate would double the runtime's build time.
async fn http_get(url: &str) -> Result<(u16, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are supported")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let mut stream = TcpStream::connect(&addr).await.map_err(|e| e.to_string())?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: corral\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 || buf.len() >= MAX_READ {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let status_line = text.lines().next().unwrap_or("");
    let code = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            format!(
                "not an HTTP response: `{}`",
                status_line.chars().take(60).collect::<String>()
            )
        })?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((code, body))
}

async fn exec(
    argv: Vec<String>,
    want: Option<&str>,
    timeout: Duration,
    ctx: ExecContext<'_>,
) -> Result<String, String> {
    let crate::spawn::Spawned {
        mut child, exit, ..
    } = crate::spawn::spawn(
        ctx.reaper,
        crate::spawn::Spec {
            argv: &argv,
            cwd: ctx.workdir,
            env: ctx.env,
            // Killed with its group at the timeout; nothing of it outlives the check.
            marker: None,
            stdin: crate::spawn::Io::Null,
            stdout: crate::spawn::Io::Piped,
            stderr: crate::spawn::Io::Null,
            identity: ctx.identity,
            umask: None,
        },
    )
    .map_err(|e| e.0)?;
    let pid = child.id();
    let stdout = child.stdout.take();
    // Reading a small pipe to its end on a blocking thread keeps this simple; the timeout
    // below kills the group, which closes the pipe and ends the read.
    let reader = tokio::task::spawn_blocking(move || {
        let mut text = Vec::new();
        if let Some(out) = stdout {
            let _ = out.take(MAX_READ as u64).read_to_end(&mut text);
        }
        String::from_utf8_lossy(&text).into_owned()
    });
    let done = async {
        let status = exit.await.map_err(|_| "lost the exit status".to_string())?;
        let text = reader.await.unwrap_or_default();
        Ok::<_, String>((status, text))
    };
    match tokio::time::timeout(timeout, done).await {
        Ok(Ok((status, text))) => {
            if !status.success() {
                return Err(format!("`{}` ended with {status}", argv.join(" ")));
            }
            match want {
                Some(w) if !text.contains(w) => {
                    Err(format!("`{}` output lacks `{w}`", argv.join(" ")))
                }
                _ => Ok(format!("`{}` passed", argv.join(" "))),
            }
        }
        Ok(Err(e)) => Err(e),
        Err(_) => {
            ctx.reaper.signal_group(pid, Signal::SIGKILL);
            Err(format!(
                "`{}` took longer than {}",
                argv.join(" "),
                corral_engine::fmt_duration(timeout)
            ))
        }
    }
}
