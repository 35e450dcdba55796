//! A project served: the supervisor and its API, as one library function. The CLI's `corral up`
//! (foreground or `-d`) and `corral run` call [`run`]; tests boot a daemon in-process in a temp
//! dir with it (pueue does the same).

use std::net::SocketAddr;
use std::path::Path;

use corral_config::Project;
use corral_runtime::{Options, Outcome, proctable};

/// What to serve besides running the project.
#[derive(Clone, Debug, Default)]
pub struct Serve {
    /// The API on `.corral/api.sock`, and the PID file `.corral/daemon.pid`.
    pub api: bool,
    /// The API on loopback TCP too (with a token).
    pub listen: Option<SocketAddr>,
}

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Start(#[from] corral_runtime::StartError),
    #[error("cannot serve the API on `{path}`: {source}")]
    Socket {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot create the API token: {0}")]
    Token(std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Run `project` until it is done or told to stop (`/v1/shutdown`, a signal), serving the API
/// as `serve` says. Call inside a tokio runtime. `options.exe` must be the corral binary (the
/// log keeper is `corral __keeper`).
pub async fn run(project: Project, options: Options, serve: Serve) -> Result<Outcome, DaemonError> {
    let state_dir = project.state_dir.clone();
    let (sup, control) = corral_runtime::prepare(project, options)?;
    let socket = corral_proto::paths::api_socket(&state_dir);
    let shared = crate::routes::Shared::new(&state_dir);
    let mut server = None;
    if serve.api {
        let served = crate::serve_unix(control.clone(), &socket, shared.clone()).await;
        server = Some(served.map_err(|source| DaemonError::Socket {
            path: socket.display().to_string(),
            source,
        })?);
        write_pid_file(&state_dir);
    }
    if let Some(addr) = serve.listen {
        let tokens = crate::auth::Tokens::load_or_create(&state_dir).map_err(DaemonError::Token)?;
        let bound = crate::serve_tcp(control.clone(), addr, tokens, shared.clone())
            .await
            .map_err(|source| DaemonError::Listen { addr, source })?;
        *shared.tcp.lock().await = Some(bound);
        corral_runtime::say!(
            "corral: API on http://{bound} (token in {})",
            corral_proto::paths::token_file(&state_dir).display()
        );
    }
    let outcome = sup.run().await;
    if let Some(server) = server {
        server.finish().await;
    }
    if serve.api {
        let _ = std::fs::remove_file(&socket);
        remove_pid_file(&state_dir);
    }
    Ok(outcome?)
}

/// `.corral/daemon.pid`: `PID START_TIME`, so a file whose PID now names a later process is
/// known to be stale.
pub fn write_pid_file(state_dir: &Path) {
    let pid = std::process::id();
    let start = proctable::start_time(pid as i32).unwrap_or(0);
    let path = corral_proto::paths::pid_file(state_dir);
    if let Err(e) =
        corral_runtime::statedir::write_new(&path, format!("{pid} {start}\n").as_bytes())
    {
        corral_runtime::say!("corral: cannot write the PID file: {e}");
    }
}

pub fn remove_pid_file(state_dir: &Path) {
    let _ = std::fs::remove_file(corral_proto::paths::pid_file(state_dir));
}
