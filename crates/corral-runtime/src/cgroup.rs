//! Confinement in cgroups, where the system lets corral make them.
//!
//! With a writable cgroup v2 hierarchy that has `cgroup.kill` (Linux ≥ 5.14), every marked
//! process corral starts — a unit's process, an ad-hoc process, an instance's setup step — goes
//! into a cgroup of its own, made for it under one cgroup for the daemon:
//!
//! ```text
//! <cgroup2 mount>/<corral's own cgroup>/corral-<daemon pid>/<marker with '/' as '@'>
//! ```
//!
//! The child moves itself there before `exec`, so nothing it starts is ever outside it; a
//! process cannot leave a cgroup by `setsid`, double-forking, closing its fds or dropping its
//! environment. Ending it all is one write to `cgroup.kill`, which the kernel applies to every
//! process in it, including one being forked at that moment.
//!
//! The daemon's cgroup is recorded in the store: a daemon that follows a dead one ends whatever
//! is left in the old cgroups except what it adopts, and so does `corral down` when it finds the
//! daemon gone. Where no cgroup can be made (cgroup v1 only, v2 not delegated to this user, an
//! old kernel), corral falls back to what it does anyway: the marker, the process group and the
//! recorded tree of descendants (see `proctable` and the supervisor's census).
//!
//! `CORRAL_CGROUP=off` turns confinement off (the fallback is then what runs; tests use it).

use std::io;
use std::path::{Path, PathBuf};

/// The daemon's cgroup, under which each started process gets one of its own.
#[derive(Debug, Clone)]
pub struct Cgroups {
    base: PathBuf,
    /// Of `cpu` and `memory`, those enabled for the cgroups below the daemon's: a unit's
    /// `limits.cpus`/`limits.memory` apply only where its controller is here.
    controllers: Vec<&'static str>,
}

/// One process's cgroup, ready for the child to join.
#[derive(Debug)]
pub struct Slot {
    pub dir: PathBuf,
}

impl Slot {
    /// Its directory, open, for a child to be born in (`CLONE_INTO_CGROUP`).
    pub fn open_dir(&self) -> io::Result<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_DIRECTORY)
            .open(&self.dir)
    }

    /// Its `cgroup.procs`, open for the child to write itself into (`"0"`) before `exec`.
    pub fn open_procs(&self) -> io::Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join("cgroup.procs"))
    }
}

/// Where the cgroup v2 hierarchy is mounted (from `/proc/self/mountinfo`, read once: asked
/// for each process adopted, reading it each time was a tenth of adopting thousands).
fn cgroup2_mount() -> Option<PathBuf> {
    static MOUNT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    MOUNT.get_or_init(read_cgroup2_mount).clone()
}

fn read_cgroup2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|line| {
        // `id parent dev root mountpoint options [optional…] - fstype source superoptions`
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mut fields = left.split_whitespace();
        let root = fields.nth(3)?;
        let mountpoint = fields.next()?;
        // A mount point with escaped characters (`\040`) or of a sub-tree is not ours to guess.
        (fstype == "cgroup2" && root == "/" && !mountpoint.contains('\\'))
            .then(|| PathBuf::from(mountpoint))
    })
}

/// The cgroup v2 directory that process `pid` is in (`self` for corral).
pub fn of_process(pid: &str) -> Option<PathBuf> {
    let mount = cgroup2_mount()?;
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(mount.join(rel.trim_start_matches('/')))
}

impl Cgroups {
    /// Make the daemon's cgroup, if this system and user allow it; `None` means the fallback.
    pub fn create() -> Option<Cgroups> {
        if std::env::var_os("CORRAL_CGROUP").is_some_and(|v| v == "off") {
            return None;
        }
        let own = of_process("self")?;
        remove_abandoned(&own);
        let base = own.join(format!("corral-{}", std::process::id()));
        match std::fs::create_dir(&base) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(_) => return None,
        }
        // Without `cgroup.kill` (before Linux 5.14) a cgroup cannot be ended in one step.
        if !base.join("cgroup.kill").exists() {
            let _ = std::fs::remove_dir(&base);
            return None;
        }
        let controllers = enable_controllers(&base);
        Some(Cgroups { base, controllers })
    }

    /// Which of `cpu` and `memory` the cgroups of units can be limited by.
    pub fn controllers(&self) -> &[&'static str] {
        &self.controllers
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    /// A new cgroup for the process carrying `marker`, with `limits` written in before the
    /// process joins.
    pub fn slot(&self, marker: &str, limits: &corral_config::CgroupLimits) -> io::Result<Slot> {
        let dir = self.base.join(marker.replace('/', "@"));
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        if !limits.is_empty()
            && let Err(e) = write_limits(&dir, limits, &self.controllers)
        {
            crate::say!("corral: cgroup limits of {marker} not applied: {e}");
        }
        Ok(Slot { dir })
    }
}

/// Enable `cpu` and `memory` for the cgroups below `base`, as far as they are delegated to it
/// (listed in its `cgroup.controllers`, which its parent decides); returns those enabled.
/// `base` holds no process itself, so the kernel's no-internal-process rule does not stand in
/// the way.
fn enable_controllers(base: &Path) -> Vec<&'static str> {
    let available = std::fs::read_to_string(base.join("cgroup.controllers")).unwrap_or_default();
    ["cpu", "memory"]
        .into_iter()
        .filter(|c| available.split_whitespace().any(|a| a == *c))
        .filter(|c| std::fs::write(base.join("cgroup.subtree_control"), format!("+{c}")).is_ok())
        .collect()
}

/// Write a unit's cgroup limits into its (new, still empty) cgroup at `dir`: `memory.max` in
/// bytes, `cpu.max` as a quota per 100 ms period. Only those whose controller is enabled;
/// a write the kernel refuses is reported, not fatal (the process still runs, unlimited).
pub fn write_limits(
    dir: &Path,
    limits: &corral_config::CgroupLimits,
    controllers: &[&str],
) -> io::Result<()> {
    if let Some(bytes) = limits.memory
        && controllers.contains(&"memory")
    {
        std::fs::write(dir.join("memory.max"), bytes.to_string())?;
    }
    if let Some(cpus) = limits.cpus
        && controllers.contains(&"cpu")
    {
        std::fs::write(dir.join("cpu.max"), cpu_max(cpus))?;
    }
    Ok(())
}

/// `cpu.max` for a share of CPUs: the quota (µs) per period of 100,000 µs; the kernel's
/// smallest quota is 1,000 µs.
pub fn cpu_max(cpus: f64) -> String {
    const PERIOD: u64 = 100_000;
    let quota = ((cpus * PERIOD as f64).round() as u64).max(1_000);
    format!("{quota} {PERIOD}")
}

/// Remove the empty cgroups of corral daemons that are gone (one killed with `kill -9` and
/// never followed by another for its project leaves one). An empty cgroup costs little, but
/// they would pile up; one with processes in it is left to its project's next daemon.
fn remove_abandoned(parent: &Path) {
    for dir in children(parent) {
        let pid = dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("corral-"))
            .and_then(|p| p.parse::<i32>().ok());
        let Some(pid) = pid else { continue };
        let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            == Err(nix::errno::Errno::ESRCH);
        if gone && is_daemon_cgroup(&dir) && !populated(&dir) {
            remove(&dir);
        }
    }
}

/// Kill every process in the cgroup at `dir` (and in cgroups below it). False if there is no
/// such cgroup.
pub fn kill(dir: &Path) -> bool {
    std::fs::write(dir.join("cgroup.kill"), b"1").is_ok()
}

/// The processes in the cgroup at `dir` (not those below it).
pub fn pids(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Whether any process is in the cgroup at `dir` or below it.
pub fn populated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events"))
        .map(|t| t.lines().any(|l| l == "populated 1"))
        .unwrap_or(false)
}

/// Until nothing is in the cgroup at `dir`: looked at a few milliseconds apart, then at most
/// every 50 ms (what waits here — a stopped unit's leftovers finishing their own stop within
/// the grace — is rare, and nothing is polled while nothing waits).
pub async fn emptied(dir: &Path) {
    let mut pause = std::time::Duration::from_millis(2);
    while populated(dir) {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(50));
    }
}

/// Remove the (empty) cgroup at `dir` and the empty ones below it. False if something is still
/// in one (the kernel refuses: EBUSY), so the caller tries again later.
pub fn remove(dir: &Path) -> bool {
    // Most have no cgroups below them: one rmdir, no listing (listing a cgroup's ~30 files
    // for each unit was an eighth of a 2,000-service stop).
    match std::fs::remove_dir(dir) {
        Ok(()) => return true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return true,
        Err(_) => {}
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove(&e.path());
            }
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => true,
        Err(e) => e.kind() == io::ErrorKind::NotFound,
    }
}

/// The cgroups directly below `dir`.
pub fn children(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `dir` looks like a cgroup corral made for a daemon (`…/corral-<pid>`): the only
/// kind of path taken from the store and written to.
pub fn is_daemon_cgroup(dir: &Path) -> bool {
    dir.is_absolute()
        && dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("corral-"))
            .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        && dir.join("cgroup.kill").exists()
}

/// End an earlier daemon's cgroup: kill every process in it except those in the cgroups
/// `keep` names (adopted ones), and remove what is empty. Returns whether the whole cgroup is
/// gone.
pub fn end_daemon_cgroup(dir: &Path, keep: impl Fn(&Path) -> bool) -> bool {
    if !is_daemon_cgroup(dir) {
        return true;
    }
    let (kept, ended): (Vec<PathBuf>, Vec<PathBuf>) =
        children(dir).into_iter().partition(|c| keep(c));
    // All killed first, then one bounded wait for them together (not 2 s each in turn).
    for child in &ended {
        kill(child);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut all_gone = kept.is_empty();
    for child in &ended {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if !wait_empty(child, left) || !remove(child) {
            all_gone = false;
        }
    }
    all_gone && remove(dir)
}

/// Wait, bounded, until nothing is in the cgroup at `dir`.
pub fn wait_empty(dir: &Path, limit: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if !populated(dir) {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_max_is_a_quota_per_100ms() {
        assert_eq!(super::cpu_max(1.5), "150000 100000");
        assert_eq!(super::cpu_max(0.25), "25000 100000");
        // The kernel refuses a quota under 1 ms.
        assert_eq!(super::cpu_max(0.001), "1000 100000");
    }
}
