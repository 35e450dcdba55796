//! Ports: is it free, who holds it, take it back (`kill_others`), or pick a free one (`auto`).

use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::proctable;

/// Whether nothing listens on `port` on any IPv4 address. std's listener sets SO_REUSEADDR,
/// so sockets in TIME_WAIT do not count as taken.
pub fn is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
}

/// A free port chosen by the kernel. It is given to the process, which binds it itself; the
/// gap between our check and its bind is the usual one for this technique.
pub fn allocate() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// "port 8080 is held by pid 42 (`python3 -m http.server 8080`)", for error messages.
pub fn describe_holders(port: u16) -> String {
    let holders = proctable::port_holders(port);
    if holders.is_empty() {
        return format!("port {port} is already in use (by a process corral cannot see)");
    }
    let who: Vec<String> = holders
        .iter()
        .map(|pid| format!("pid {pid} (`{}`)", proctable::cmdline(*pid)))
        .collect();
    format!("port {port} is already in use by {}", who.join(", "))
}

/// Kill the process trees holding `port` and wait (up to 3 s) for it to come free.
/// Returns what was killed, or an error if the port stays taken.
pub fn kill_holders(port: u16) -> Result<Vec<i32>, String> {
    let me = std::process::id() as i32;
    let holders: Vec<i32> = proctable::port_holders(port)
        .into_iter()
        .filter(|p| *p != me)
        .collect();
    if holders.is_empty() {
        return Err(describe_holders(port));
    }
    let snapshot = proctable::snapshot();
    let children = proctable::children_map(&snapshot);
    let mut victims = Vec::new();
    for h in &holders {
        victims.extend(proctable::tree(&children, *h));
    }
    proctable::signal_all(&victims, Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if is_free(port) {
            return Ok(victims);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!(
        "{} even after killing {victims:?}",
        describe_holders(port)
    ))
}
