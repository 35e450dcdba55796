//! An instance's workspace: a ZIP unpacked safely (every entry checked before anything is
//! written), and setup steps (or `git clone`) run to completion through the one spawn path, with
//! a marker and a time limit.

use std::io::Read;
use std::path::{Component, Path};

use crate::reaper::Reaper;

/// The largest workspace a ZIP may unpack to.
pub const MAX_UNPACKED: u64 = 1 << 30;
/// The most entries a ZIP may have.
pub const MAX_ENTRIES: usize = 100_000;

/// One setup step (or `git clone`) to run with [`run_step`].
pub struct SetupCommand<'a> {
    pub argv: &'a [String],
    pub cwd: &'a Path,
    pub env: &'a [(String, String)],
    /// Its output is appended here.
    pub log: &'a Path,
    /// Ties it and what it starts to the instance (see `proctable::marker`).
    pub marker: &'a str,
    pub timeout: std::time::Duration,
    /// Run as the template's user (corral is root); None: as corral.
    pub identity: Option<&'a corral_config::Identity>,
}

/// Unpack `zip` into `dest` (an empty directory). Every entry is checked before anything is
/// written: a name that is absolute or climbs out with `..`, a symlink, too many entries or too
/// many bytes refuse the whole archive. Sizes are counted as bytes are written too, since an
/// archive may lie about them.
pub fn extract_zip(zip: &[u8], dest: &Path) -> Result<u64, String> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip))
        .map_err(|e| format!("not a ZIP archive: {e}"))?;
    if archive.len() > MAX_ENTRIES {
        return Err(format!("the archive has more than {MAX_ENTRIES} entries"));
    }
    let mut declared = 0u64;
    let mut plan = Vec::new();
    for i in 0..archive.len() {
        let entry = archive
            .by_index(i)
            .map_err(|e| format!("entry {i} is unreadable: {e}"))?;
        let raw = entry.name().to_string();
        let safe = !raw.starts_with('/')
            && !raw.contains('\\')
            && Path::new(&raw)
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        let Some(rel) = entry.enclosed_name().filter(|_| safe) else {
            return Err(format!("entry `{raw}` points outside the workspace"));
        };
        if entry.is_symlink() {
            return Err(format!(
                "entry `{raw}` is a symbolic link; links are not unpacked"
            ));
        }
        declared = declared.saturating_add(entry.size());
        if declared > MAX_UNPACKED {
            return Err(format!(
                "the archive unpacks to more than {MAX_UNPACKED} bytes"
            ));
        }
        // Permission bits as archived (an executable stays executable), never setuid,
        // setgid or sticky; none recorded: the usual 0644.
        let mode = entry.unix_mode().map_or(0o644, |m| m & 0o777);
        plan.push((i, rel, entry.is_dir(), mode));
    }
    let mut written = 0u64;
    for (i, rel, is_dir, mode) in plan {
        let path = dest.join(&rel);
        if is_dir {
            std::fs::create_dir_all(&path).map_err(|e| format!("`{}`: {e}", rel.display()))?;
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("`{}`: {e}", rel.display()))?;
        }
        let entry = archive
            .by_index(i)
            .map_err(|e| format!("entry {i} is unreadable: {e}"))?;
        let mut out = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .open(&path)
                .map_err(|e| format!("`{}`: {e}", rel.display()))?
        };
        let left = MAX_UNPACKED - written;
        let n = std::io::copy(&mut entry.take(left + 1), &mut out)
            .map_err(|e| format!("`{}`: {e}", rel.display()))?;
        written += n;
        if written > MAX_UNPACKED {
            return Err(format!(
                "the archive unpacks to more than {MAX_UNPACKED} bytes"
            ));
        }
    }
    Ok(written)
}

/// Run one command to completion in `cwd`, its output appended to `log`, within `timeout`.
/// It carries `marker`, so whatever it leaves running (or everything, when it takes too long)
/// is found and killed — also by a later daemon if this one dies meanwhile. Returns a reason on
/// failure (with the last lines of its output).
pub async fn run_step(reaper: &Reaper, step: SetupCommand<'_>) -> Result<(), String> {
    let SetupCommand {
        argv,
        cwd,
        env,
        log,
        marker,
        timeout,
        identity,
    } = step;
    let file = crate::statedir::open_append(log)
        .map_err(|e| format!("cannot open `{}`: {e}", log.display()))?;
    let err = file.try_clone().map_err(|e| e.to_string())?;
    let spawned = crate::spawn::spawn(
        reaper,
        crate::spawn::Spec {
            argv,
            cwd,
            env,
            marker: Some(marker),
            stdin: crate::spawn::Io::Null,
            stdout: crate::spawn::Io::File(file),
            stderr: crate::spawn::Io::File(err),
            identity,
            umask: None,
            rlimits: &[],
            cgroup_limits: Default::default(),
            daemon: false,
            own_binary: false,
        },
    )
    .map_err(|e| e.0)?;
    let (pid, exit, confined) = (spawned.pid, spawned.exit, spawned.confined);
    // Whatever the step leaves behind goes with it, however it ends: its group and cgroup
    // with the step; what left the group, found by marker when there is no cgroup.
    let leftovers = || {
        reaper.signal_group(pid, nix::sys::signal::Signal::SIGKILL);
        if confined {
            return;
        }
        crate::proctable::signal_all(
            &crate::proctable::with_marker(marker),
            nix::sys::signal::Signal::SIGKILL,
        );
    };
    let status = match tokio::time::timeout(timeout, exit).await {
        Ok(status) => {
            leftovers();
            status.map_err(|_| "lost its exit status".to_string())?
        }
        Err(_) => {
            leftovers();
            return Err(format!(
                "`{}` took longer than {} (the template's `setup_timeout`)",
                argv.join(" "),
                corral_engine::fmt_duration(timeout)
            ));
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut text = String::new();
    let _ = std::fs::File::open(log).and_then(|mut f| f.read_to_string(&mut text));
    let tail: Vec<&str> = text
        .lines()
        .rev()
        .take(5)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    Err(format!(
        "`{}` ended with {status}: {}",
        argv.join(" "),
        tail.join(" / ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::path::PathBuf;

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut buf = std::io::Cursor::new(Vec::new());
        let mut w = zip::ZipWriter::new(&mut buf);
        for (name, data) in entries {
            w.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap();
        buf.into_inner()
    }

    #[test]
    fn a_plain_archive_unpacks() {
        let dir = tempfile_dir("plain");
        let z = zip_of(&[("a.txt", b"hello"), ("sub/b.txt", b"world")]);
        assert_eq!(extract_zip(&z, &dir).unwrap(), 10);
        assert_eq!(
            std::fs::read_to_string(dir.join("sub/b.txt")).unwrap(),
            "world"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn permission_bits_are_kept_but_not_setuid() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile_dir("modes");
        let mut buf = std::io::Cursor::new(Vec::new());
        let mut w = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default();
        w.start_file("run.sh", opts.unix_permissions(0o755))
            .unwrap();
        w.write_all(b"#!/bin/sh\necho hi\n").unwrap();
        w.start_file("suid", opts.unix_permissions(0o4755)).unwrap();
        w.write_all(b"x").unwrap();
        w.finish().unwrap();
        extract_zip(&buf.into_inner(), &dir).unwrap();
        let mode = |f: &str| std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(
            mode("run.sh") & 0o111,
            0o111 & !umask_bits(),
            "still executable"
        );
        assert_eq!(mode("suid") & 0o7000, 0, "no setuid");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The process's umask, read without changing it for long.
    fn umask_bits() -> u32 {
        use nix::sys::stat::{Mode, umask};
        let old = umask(Mode::from_bits_truncate(0o022));
        umask(old);
        old.bits()
    }

    #[test]
    fn escapes_are_refused_and_nothing_is_written() {
        for bad in ["../evil.txt", "/etc/evil.txt", "ok/../../evil.txt"] {
            let dir = tempfile_dir("bad");
            let z = zip_of(&[("fine.txt", b"x"), (bad, b"evil")]);
            let err = extract_zip(&z, &dir).unwrap_err();
            assert!(err.contains("outside the workspace"), "{bad}: {err}");
            assert!(
                std::fs::read_dir(&dir).unwrap().next().is_none(),
                "{bad}: something was written"
            );
            let _ = std::fs::remove_dir_all(&dir);
        }
        let dir = tempfile_dir("link");
        let mut buf = std::io::Cursor::new(Vec::new());
        let mut w = zip::ZipWriter::new(&mut buf);
        w.add_symlink("link", "/etc", zip::write::SimpleFileOptions::default())
            .unwrap();
        w.finish().unwrap();
        let err = extract_zip(&buf.into_inner(), &dir).unwrap_err();
        assert!(err.contains("symbolic link"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            extract_zip(b"not a zip", &tempfile_dir("junk"))
                .unwrap_err()
                .contains("not a ZIP")
        );
    }

    fn tempfile_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("corral-zip-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
