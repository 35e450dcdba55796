//! systemd's readiness protocol (sd_notify): a unit with `readiness = { notify = true }` or a
//! `watchdog` gets a datagram socket of its own, named in `NOTIFY_SOCKET`, and says `READY=1`,
//! `STATUS=…`, `WATCHDOG=1`, `STOPPING=1` there (several `KEY=VALUE` lines per datagram).
//!
//! `BARRIER=1` comes with a file descriptor the sender waits on until every copy is closed.
//! Datagrams are read without room for ancillary data, so the kernel closes any descriptor sent
//! at once (unix(7)): a barrier returns immediately, and no sender can make corral hold a file.

use std::io;
use std::path::{Path, PathBuf};

use tokio::task::AbortHandle;

/// The most of one datagram read (systemd's own limit is similar).
const MAX_DATAGRAM: usize = 4096;

/// One unit generation's socket: closed, and its file removed, when dropped.
pub struct Listener {
    path: Option<PathBuf>,
    task: AbortHandle,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Listen for `name`'s notifications; `on_message` gets each datagram's `KEY=VALUE` pairs.
/// Returns the value for `NOTIFY_SOCKET` and the listener. `other_user`: the unit runs as
/// another user, who cannot reach into the state dir (0700): its socket gets an abstract name
/// with a random part instead.
pub fn listen(
    state_dir: &Path,
    name: &str,
    other_user: bool,
    on_message: impl Fn(Vec<(String, String)>) + Send + 'static,
) -> io::Result<(String, Listener)> {
    use std::os::unix::net::UnixDatagram;
    let dir = state_dir.join("notify");
    crate::statedir::ensure_dir(&dir)?;
    let path = dir.join(format!("{name}.sock"));
    let _ = std::fs::remove_file(&path);
    // A path a client can `connect` to fits in `sun_path`; a longer one becomes an abstract
    // name (Linux), which `NOTIFY_SOCKET` writes with a leading `@`.
    let (std_sock, value, kept) = if path.as_os_str().len() <= 107 && !other_user {
        let s = crate::sockpath::bind_private(|| UnixDatagram::bind(&path))?;
        (s, path.display().to_string(), Some(path))
    } else {
        use std::os::linux::net::SocketAddrExt;
        let abstract_name = format!(
            "corral/{}/{name}/{:016x}",
            std::process::id(),
            fastrand::u64(..)
        );
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())?;
        (
            UnixDatagram::bind_addr(&addr)?,
            format!("@{abstract_name}"),
            None,
        )
    };
    std_sock.set_nonblocking(true)?;
    let sock = tokio::net::UnixDatagram::from_std(std_sock)?;
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        while let Ok(n) = sock.recv(&mut buf).await {
            let pairs = parse(&buf[..n]);
            if !pairs.is_empty() {
                on_message(pairs);
            }
        }
    });
    Ok((
        value,
        Listener {
            path: kept,
            task: task.abort_handle(),
        },
    ))
}

/// `KEY=VALUE` lines; anything else is ignored.
pub fn parse(datagram: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(datagram)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            (!k.is_empty() && k.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
                .then(|| (k.to_string(), v.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn lines_are_read_as_key_value_pairs() {
        let got = super::parse(b"READY=1\nSTATUS=warming up: 3/10\n\ngarbage\nlower=x\nMAINPID=42");
        let got: Vec<(&str, &str)> = got.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            got,
            [
                ("READY", "1"),
                ("STATUS", "warming up: 3/10"),
                ("MAINPID", "42")
            ]
        );
    }
}
