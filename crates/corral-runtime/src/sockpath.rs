//! Unix socket paths longer than the kernel allows (`sun_path` holds 108 bytes). A project deep
//! in a home directory easily passes that, so a long path is reached through the state dir's
//! descriptor instead: `/proc/self/fd/N/api.sock` names the same file and is short.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Room in `sun_path`, less the terminating NUL.
const MAX: usize = 107;

/// A path usable for `bind`/`connect`; keeps the directory open while the short form is in use.
pub struct SocketPath {
    path: PathBuf,
    _dir: Option<File>,
}

impl SocketPath {
    pub fn new(path: &Path) -> io::Result<SocketPath> {
        if path.as_os_str().len() <= MAX {
            return Ok(SocketPath {
                path: path.to_path_buf(),
                _dir: None,
            });
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = path.file_name().unwrap_or_default();
        let dir = File::open(dir)?;
        let short = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
        Ok(SocketPath {
            path: short,
            _dir: Some(dir),
        })
    }

    pub fn as_path(&self) -> &Path {
        &self.path
    }
}

/// Create a socket with `bind` so that it is born with mode 0600: no other user can connect in
/// the moment before a `chmod` could run. (The umask is per process; it is restored at once.)
pub fn bind_private<T>(bind: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    use nix::sys::stat::{Mode, umask};
    let old = umask(Mode::from_bits_truncate(0o177));
    let result = bind();
    umask(old);
    result
}
