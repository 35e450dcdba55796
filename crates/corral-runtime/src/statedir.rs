//! The state dir (`.corral/`) and the files corral creates in it: the directory is 0700, every
//! file is born 0600 (never `chmod`-ed after), and nothing there is trusted just for being
//! there — a symlink is never followed, and a file or directory that someone else owns or
//! could have written is refused (or, for a secret, replaced).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

fn refused(path: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "`{}` {why}; corral does not trust it\n  help: remove it (corral makes a new one)",
            path.display()
        ),
    )
}

/// Whether metadata (of the thing itself, not a link's target) may be trusted: ours, and
/// nobody else may write it.
fn check(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    if meta.file_type().is_symlink() {
        return Err(refused(path, "is a symbolic link"));
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(refused(path, "belongs to another user"));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(refused(path, "may be written by other users"));
    }
    Ok(())
}

/// `dir` exists as a directory of ours, mode 0700: created so, or an existing one checked (and
/// narrowed to 0700 if it was only readable by others).
pub fn ensure_dir(dir: &Path) -> io::Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(meta) => {
            check(dir, &meta)?;
            if !meta.is_dir() {
                return Err(refused(dir, "is not a directory"));
            }
            if meta.mode() & 0o077 != 0 {
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                fs::create_dir_all(parent)?;
            }
            match fs::DirBuilder::new().mode(0o700).create(dir) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => ensure_dir(dir),
                other => other,
            }
        }
        Err(e) => Err(e),
    }
}

fn options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC);
    o
}

/// A file of the state dir opened for appending (logs): created 0600; an existing one must be
/// ours and not writable by others; a symlink is refused, never followed.
pub fn open_append(path: &Path) -> io::Result<File> {
    let file = options()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| link_refused(path, e))?;
    check(path, &file.metadata()?)?;
    Ok(file)
}

/// A file of the state dir opened to read and write (locks, the database): as
/// [`open_append`].
pub fn open_rw(path: &Path) -> io::Result<File> {
    let file = options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| link_refused(path, e))?;
    check(path, &file.metadata()?)?;
    Ok(file)
}

/// Replace whatever is at `path` (a file, a planted link) with a new file holding `contents`,
/// created exclusively with mode 0600.
///
/// Not synced to disk: what is written this way (a PID file, a task's exit status, the API
/// token) means nothing after the machine went down, or is made again when found short (the
/// token); a sync made every daemon start wait for the disk twice.
pub fn write_new(path: &Path, contents: &[u8]) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = options().write(true).create_new(true).open(path)?;
    f.write_all(contents)
}

/// Write this process's PID into a lock file it holds, over what was there. Cut only when the
/// old one was longer: a truncation is a write to the file system's journal (a quarter of a
/// millisecond here, twice on every start: the daemon's lock and the keeper's).
pub fn write_pid(file: &mut fs::File) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let pid = std::process::id().to_string();
    file.write_all_at(pid.as_bytes(), 0)?;
    if file.metadata()?.len() > pid.len() as u64 {
        file.set_len(pid.len() as u64)?;
    }
    Ok(())
}

/// A secret's contents, if the file is ours, private (no permission for anyone else) and not a
/// link; None if it is missing or not to be trusted (the caller makes a new one).
pub fn read_private(path: &Path) -> io::Result<Option<String>> {
    let mut file = match options().read(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        // ELOOP: a symlink.
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if meta.uid() != nix::unistd::geteuid().as_raw() || meta.mode() & 0o077 != 0 {
        return Ok(None);
    }
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok(Some(text))
}

fn link_refused(path: &Path, e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(nix::libc::ELOOP) {
        refused(path, "is a symbolic link")
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lock file's PID: the new one, whole, whether the old one was longer or not.
    #[test]
    fn a_pid_is_written_over_what_was_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        for old in ["1234567890123", "1", ""] {
            fs::write(&path, old).unwrap();
            let mut f = open_rw(&path).unwrap();
            write_pid(&mut f).unwrap();
            assert_eq!(
                fs::read_to_string(&path).unwrap(),
                std::process::id().to_string()
            );
        }
    }

    #[test]
    fn files_are_private_and_links_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(".corral");
        ensure_dir(&state).unwrap();
        assert_eq!(fs::metadata(&state).unwrap().mode() & 0o777, 0o700);
        let log = state.join("a.log");
        open_append(&log).unwrap();
        assert_eq!(fs::metadata(&log).unwrap().mode() & 0o777, 0o600);
        // A planted link is neither followed nor trusted.
        let target = dir.path().join("elsewhere");
        fs::write(&target, "x").unwrap();
        let link = state.join("b.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = open_append(&link).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(read_private(&link).unwrap(), None);
        write_new(&link, b"secret").unwrap();
        assert_eq!(
            fs::read_to_string(&target).unwrap(),
            "x",
            "the target is untouched"
        );
        assert_eq!(read_private(&link).unwrap().as_deref(), Some("secret"));
        // Loose permissions: a secret is not trusted, a state dir is refused.
        let loose = state.join("token");
        fs::write(&loose, "planted").unwrap();
        fs::set_permissions(&loose, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_private(&loose).unwrap(), None);
        fs::set_permissions(&state, fs::Permissions::from_mode(0o777)).unwrap();
        let e = ensure_dir(&state).unwrap_err();
        assert!(e.to_string().contains("written by other users"), "{e}");
    }
}
