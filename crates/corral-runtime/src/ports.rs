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

/// `kill_filters`: the processes matching a filter (its name exactly, or the regex over its
/// command line) are killed with their trees before the unit starts — never corral itself, its
/// ancestors (the shell that runs it), or what carries a corral marker (the project's own
/// processes), and only this user's (any user's when corral is root). Blocks for at most 3 s
/// while they go. Returns each killed root with its command line.
pub fn kill_matching(filters: &[corral_config::KillFilter]) -> Vec<(i32, String)> {
    if filters.is_empty() {
        return Vec::new();
    }
    let me = std::process::id() as i32;
    let snapshot = proctable::snapshot();
    let parent: std::collections::HashMap<i32, i32> =
        snapshot.iter().map(|p| (p.pid, p.ppid)).collect();
    let mut spared = std::collections::HashSet::from([me]);
    let mut up = me;
    while let Some(&pp) = parent.get(&up) {
        if pp <= 1 || !spared.insert(pp) {
            break;
        }
        up = pp;
    }
    let uid = nix::unistd::getuid();
    let mine = |pid: i32| {
        use std::os::unix::fs::MetadataExt;
        uid.is_root()
            || std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == uid.as_raw())
    };
    let roots: Vec<(i32, String)> = snapshot
        .iter()
        .filter(|p| !p.zombie && !spared.contains(&p.pid) && mine(p.pid))
        .filter(|p| proctable::env_var(p.pid, proctable::MARKER_VAR).is_none())
        .filter_map(|p| {
            let comm = std::fs::read_to_string(format!("/proc/{}/comm", p.pid)).ok()?;
            let cmdline = proctable::cmdline(p.pid);
            filters
                .iter()
                .any(|f| f.matches(comm.trim_end(), &cmdline))
                .then_some((p.pid, cmdline))
        })
        .collect();
    if roots.is_empty() {
        return roots;
    }
    let children = proctable::children_map(&snapshot);
    let victims: Vec<i32> = roots
        .iter()
        .flat_map(|(pid, _)| proctable::tree(&children, *pid))
        .filter(|pid| !spared.contains(pid))
        .collect();
    proctable::signal_all(&victims, Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && victims.iter().any(|p| proctable::start_time(*p).is_some()) {
        std::thread::sleep(Duration::from_millis(10));
    }
    roots
}
