//! Serving the router: on the Unix socket in the state dir (mode 0600), and on loopback TCP
//! behind the token check ([`crate::auth`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use corral_runtime::Control;

use crate::routes::router;

/// A running server: [`Server::finish`] lets answers in flight (the one to `/v1/shutdown`, say)
/// reach their clients before the process ends.
pub struct Server {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Stop accepting, and wait (bounded: streams never end by themselves) for open requests.
    pub async fn finish(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_millis(300), self.task).await;
    }
}

/// Serve on a Unix socket (mode 0600) until [`Server::finish`].
pub async fn serve_unix(control: Control, path: &Path) -> std::io::Result<Server> {
    use std::os::unix::fs::PermissionsExt;
    let short = corral_proto::paths::SocketPath::new(path)?;
    // We hold the project lock, so a socket file here is a leftover of a dead daemon.
    let _ = std::fs::remove_file(path);
    let listener =
        corral_runtime::sockpath::bind_private(|| tokio::net::UnixListener::bind(short.as_path()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let app = router(control);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _keep = short;
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });
    Ok(Server { stop, task })
}

/// Serve on loopback TCP, every request checked by [`crate::auth`].
pub async fn serve_tcp(
    control: Control,
    addr: std::net::SocketAddr,
    tokens: crate::auth::Tokens,
) -> std::io::Result<std::net::SocketAddr> {
    if !addr.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{addr} is not a loopback address; the TCP API listens on 127.0.0.1 or ::1 only"
            ),
        ));
    }
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = router(control).layer(axum::middleware::from_fn_with_state(
        Arc::new(crate::auth::Guard {
            tokens,
            port: bound.port(),
        }),
        crate::auth::check,
    ));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(bound)
}
