//! Where a project's corral keeps its state, as clients need to find it: the state dir beside
//! the config file, the API socket and the token files in it. Found without reading the config,
//! so a client works while the file is being edited (or is broken).
//!
//! Also: Unix socket paths longer than the kernel allows (`sun_path` holds 108 bytes). A project
//! deep in a home directory easily passes that, so a long path is reached through the state
//! dir's descriptor instead: `/proc/self/fd/N/api.sock` names the same file and is short.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The state dir of the project whose config file is `config`: `.corral/` beside it.
pub fn state_dir(config: &Path) -> PathBuf {
    let config = std::path::absolute(config).unwrap_or_else(|_| config.to_path_buf());
    config.parent().unwrap_or(Path::new(".")).join(".corral")
}

/// The API's Unix socket (mode 0600).
pub fn api_socket(state_dir: &Path) -> PathBuf {
    state_dir.join("api.sock")
}

/// The full token for the TCP listener.
pub fn token_file(state_dir: &Path) -> PathBuf {
    state_dir.join("token")
}

/// The read-only token (GET only).
pub fn read_token_file(state_dir: &Path) -> PathBuf {
    state_dir.join("token.read")
}

/// The daemon's PID file: `PID START_TIME`.
pub fn pid_file(state_dir: &Path) -> PathBuf {
    state_dir.join("daemon.pid")
}

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
