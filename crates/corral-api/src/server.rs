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
pub async fn serve_unix(
    control: Control,
    path: &Path,
    shared: crate::routes::Shared,
) -> std::io::Result<Server> {
    use std::os::unix::fs::PermissionsExt;
    let short = corral_proto::paths::SocketPath::new(path)?;
    // We hold the project lock, so a socket file here is a leftover of a dead daemon.
    let _ = std::fs::remove_file(path);
    let listener =
        corral_runtime::sockpath::bind_private(|| tokio::net::UnixListener::bind(short.as_path()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let app = router(control, shared);
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
    shared: crate::routes::Shared,
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
    let app = router(control, shared).layer(axum::middleware::from_fn_with_state(
        Arc::new(crate::auth::Guard::new(tokens, bound)),
        crate::auth::check,
    ));
    tokio::spawn(accept_capped(listener, app));
    Ok(bound)
}

/// Connections the TCP listener serves at once (event streams included). More are answered
/// 503 and closed: idle or slow clients must not use up the daemon's descriptors.
pub const MAX_TCP_CONNECTIONS: usize = 128;

/// Connections one address may hold at once: one peer cannot take every slot from the others.
pub const MAX_TCP_PER_PEER: usize = MAX_TCP_CONNECTIONS / 2;

/// How long a client may take to send a request's headers (also on a kept-alive connection
/// between requests) before it is dropped.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Open connections by peer address; a [`PeerSlot`] gives its place back when dropped.
type Peers = Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>;

struct PeerSlot(Peers, std::net::IpAddr);

impl PeerSlot {
    fn take(peers: &Peers, ip: std::net::IpAddr) -> Option<PeerSlot> {
        let mut map = peers.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_default();
        if *n >= MAX_TCP_PER_PEER {
            return None;
        }
        *n += 1;
        Some(PeerSlot(peers.clone(), ip))
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.1);
            }
        }
    }
}

/// Answer 503 with `message` (the JSON error shape) and close, on a task of its own.
fn refuse(mut stream: tokio::net::TcpStream, message: &'static str) {
    use tokio::io::AsyncWriteExt;
    tokio::spawn(async move {
        let body = format!(r#"{{"code":"busy","message":"{message}"}}"#);
        let resp = format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        // Answer, then read what the client sent before closing: closing with its request
        // unread would reset the connection and lose the answer.
        let answer = async {
            stream.write_all(resp.as_bytes()).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 4096];
            while tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await? > 0 {}
            Ok::<_, std::io::Error>(())
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), answer).await;
    });
}

/// The TCP accept loop: what `axum::serve` does, plus caps on connections (in all and per
/// peer address) and a time limit for headers — the API is reachable by every local user
/// there, so a few hundred silent connections must not hang `corral ps` for the owner.
async fn accept_capped(listener: tokio::net::TcpListener, app: axum::Router) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_TCP_CONNECTIONS));
    let peers: Peers = Arc::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            // Out of descriptors (or another passing error): let a connection end first.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(peer_slot) = PeerSlot::take(&peers, peer.ip()) else {
            refuse(
                stream,
                "too many connections from your address to the corral API; close some first",
            );
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refuse(
                stream,
                "too many connections to the corral API; try again shortly",
            );
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _slots = (slot, peer_slot);
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}
