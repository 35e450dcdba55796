//! Who runs a project, known even when its `.corral/` is gone.
//!
//! The lock file, the API socket and the PID file live in `.corral/`, and a `git clean -fdx`
//! or an `rm -rf .corral` while a stack runs takes them all: the daemon and its services run
//! on, out of reach, and a second `corral up` found no lock and started every service again
//! beside them. So the daemon also holds a name no file removal can take: an abstract Unix
//! socket (Linux) named after the project's state dir, bound for its whole life and never
//! listened on. A second daemon cannot bind it; `corral down` finds its holder through it.
//!
//! Any local user may bind an abstract name, so a holder counts only when it is found and runs
//! as this user: a name squatted by another user is ignored, not obeyed.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};

/// The abstract name for `state_dir`: its canonical path where that fits (readable in
/// `ss -xl`), else a hash of it. The state dir itself may be gone, so its parent (the project
/// directory) is what is made canonical.
fn name(state_dir: &Path) -> Vec<u8> {
    let canonical = match (state_dir.parent(), state_dir.file_name()) {
        (Some(parent), Some(leaf)) => std::fs::canonicalize(parent)
            .map(|p| p.join(leaf))
            .unwrap_or_else(|_| state_dir.to_path_buf()),
        _ => state_dir.to_path_buf(),
    };
    let path = canonical.as_os_str().as_encoded_bytes();
    // 108 bytes in all, one of them the leading NUL.
    let mut name = b"corral:".to_vec();
    if name.len() + path.len() <= 100 {
        name.extend_from_slice(path);
    } else {
        // FNV-1a: stable across builds and versions (std's hasher is not promised to be).
        let hash = path.iter().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
        });
        name.extend_from_slice(format!("#{hash:016x}").as_bytes());
    }
    name
}

/// Hold the name of `state_dir` for as long as the returned socket lives. `Ok(None)`: another
/// process holds it, but not one found to be ours (see the module's text): go on without.
/// `Err` with the holder's PID: a corral of this user runs the project.
pub fn hold(state_dir: &Path) -> Result<Option<UnixDatagram>, u32> {
    let addr = match SocketAddr::from_abstract_name(name(state_dir)) {
        Ok(addr) => addr,
        Err(_) => return Ok(None),
    };
    match UnixDatagram::bind_addr(&addr) {
        Ok(socket) => Ok(Some(socket)),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => match holder(state_dir) {
            Some(pid) => Err(pid),
            None => Ok(None),
        },
        Err(_) => Ok(None),
    }
}

/// The PID of the process of this user holding the name of `state_dir`, if one does.
pub fn holder(state_dir: &Path) -> Option<u32> {
    let mut want = b" @".to_vec();
    want.extend_from_slice(&name(state_dir));
    // `Num RefCount Protocol Flags Type St Inode Path`: the path last (`@` and the name for an
    // abstract one; it may hold spaces), the inode the seventh field.
    let table = std::fs::read("/proc/net/unix").ok()?;
    let inode = table.split(|b| *b == b'\n').skip(1).find_map(|line| {
        if !line.ends_with(&want) {
            return None;
        }
        let inode = line
            .split(|b| *b == b' ')
            .filter(|f| !f.is_empty())
            .nth(6)?;
        std::str::from_utf8(inode).ok()?.parse::<u64>().ok()
    })?;
    let socket = PathBuf::from(format!("socket:[{inode}]"));
    let me = nix::unistd::geteuid().as_raw();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == socket))
        {
            use std::os::unix::fs::MetadataExt;
            let uid = std::fs::metadata(format!("/proc/{pid}")).ok()?.uid();
            return (uid == me).then_some(pid);
        }
    }
    None
}
