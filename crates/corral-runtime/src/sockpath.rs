//! Sockets born 0600. (Long socket paths are `corral_proto::paths::SocketPath`.)

use std::io;

/// Create a socket with `bind` so that it is born with mode 0600: no other user can connect in
/// the moment before a `chmod` could run. (The umask is per process; it is restored at once.)
pub fn bind_private<T>(bind: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    use nix::sys::stat::{Mode, umask};
    let old = umask(Mode::from_bits_truncate(0o177));
    let result = bind();
    umask(old);
    result
}
