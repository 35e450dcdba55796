//! Reading the process table from `/proc`: trees, groups, the environment marker that ties a
//! process to the unit that started it, and who holds a TCP port. Linux only; elsewhere these
//! return nothing and corral falls back to process-group signals alone.
//!
//! We read `/proc` directly rather than through sysinfo/procfs crates: we need four fields of
//! `stat` and one variable of `environ`, and the scan must be cheap enough to run on every stop.

use std::collections::{HashMap, HashSet};
use std::fs;

/// The environment variable every spawned process carries: `<corral pid>/<unit>/<generation>`.
/// Children inherit it, so it survives re-parenting and `setsid`, which is how we find the
/// processes a unit left behind.
pub const MARKER_VAR: &str = "CORRAL_INSTANCE_ID";

pub fn marker(unit: &str, generation: u64) -> String {
    format!("{}/{unit}/{generation}", std::process::id())
}

/// Whether a marker belongs to an owner other than the supervisor: an ad-hoc process
/// (`proc:ID`) or an instance's setup step (`setup:NAME`). Unit names cannot hold `:`.
pub fn owned_elsewhere(marker: &str) -> bool {
    marker
        .split('/')
        .nth(1)
        .is_some_and(|unit| unit.contains(':'))
}

#[derive(Clone, Copy, Debug)]
pub struct ProcInfo {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    /// Zombies count as dead: they only wait to be reaped.
    pub zombie: bool,
}

/// The longest `/proc/PID/stat` line: a 16-byte name and 52 fields of at most 20 digits.
pub const STAT_MAX: usize = 1280;

/// The fields of `/proc/PID/stat` after the command name (`state` first, space-separated), in
/// one read into `buf`, with no allocation. `fs::read_to_string` asks the file's size (0 for
/// `/proc`) and grows its buffer from 32 bytes: eight system calls per process, most of a `ps`
/// sample's time at 5,000 processes; this is three. The name may hold spaces, parentheses and
/// bytes that are not UTF-8, so the fields are found after the last `)`.
pub fn stat_fields(pid: i32, buf: &mut [u8; STAT_MAX]) -> Option<&str> {
    use std::io::{Read, Write};
    let mut path = [0u8; 32];
    let free = {
        let mut w = &mut path[..];
        write!(w, "/proc/{pid}/stat").ok()?;
        w.len()
    };
    let path = std::str::from_utf8(&path[..32 - free]).ok()?;
    let n = fs::File::open(path).ok()?.read(buf).ok()?;
    let text = &buf[..n];
    let rest = text.get(text.iter().rposition(|&b| b == b')')? + 2..)?;
    std::str::from_utf8(rest).ok()
}

/// Parse `/proc/PID/stat`.
pub fn read_stat(pid: i32) -> Option<ProcInfo> {
    let mut buf = [0u8; STAT_MAX];
    let mut f = stat_fields(pid, &mut buf)?.split(' ');
    let state = f.next()?;
    let ppid = f.next()?.parse().ok()?;
    let pgid = f.next()?.parse().ok()?;
    Some(ProcInfo {
        pid,
        ppid,
        pgid,
        zombie: state == "Z",
    })
}

/// When the process started, in clock ticks since boot (field 22 of `stat`). With the PID it
/// names one process for good: a reused PID has a later start time.
pub fn start_time(pid: i32) -> Option<u64> {
    let mut buf = [0u8; STAT_MAX];
    let rest = stat_fields(pid, &mut buf)?;
    if rest.starts_with('Z') {
        return None;
    }
    rest.split(' ').nth(19)?.parse().ok()
}

/// How long ago a process with this start time started.
pub fn age(start_time: u64) -> Option<std::time::Duration> {
    Some(age_at(start_time, uptime()?))
}

/// Seconds since the machine booted (the clock of a process's start time).
pub fn uptime() -> Option<f64> {
    fs::read_to_string("/proc/uptime")
        .ok()?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

/// [`age`] against an uptime read once, for many processes.
pub fn age_at(start_time: u64, uptime: f64) -> std::time::Duration {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) }.max(1) as f64;
    std::time::Duration::from_secs_f64((uptime - start_time as f64 / ticks).max(0.0))
}

/// Live processes anywhere on the machine (that we may read) carrying `marker`, with their
/// descendants. Used for instances we did not start in this life of the daemon: their orphans
/// were re-parented to init, not to us.
pub fn with_marker(marker: &str) -> Vec<i32> {
    with_marker_matching(|m| m == marker)
}

/// The unit part of a marker (`<pid>/<unit>/<generation>`).
pub fn marker_unit(marker: &str) -> Option<&str> {
    marker.split('/').nth(1)
}

/// Live processes whose marker satisfies `pred`, with their descendants.
pub fn with_marker_matching(pred: impl Fn(&str) -> bool) -> Vec<i32> {
    let mut all: Vec<i32> = marked_trees(|m| pred(m).then_some(()))
        .into_values()
        .flatten()
        .collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// Live processes carrying each of `markers`, with their descendants: one scan for all of
/// them (none when there are none). Every marker asked for is a key.
pub fn with_markers(markers: &HashSet<&str>) -> HashMap<String, Vec<i32>> {
    let mut found = if markers.is_empty() {
        HashMap::new()
    } else {
        marked_trees(|m| markers.contains(m).then(|| m.to_string()))
    };
    for m in markers {
        found.entry(m.to_string()).or_default();
    }
    found
}

/// The live processes whose marker `group` puts in a group, with their descendants, by group:
/// one scan of `/proc`, and one read of the environment of each process not already in a tree
/// found (the dearest read there is).
fn marked_trees<K: Eq + std::hash::Hash>(
    group: impl Fn(&str) -> Option<K>,
) -> HashMap<K, Vec<i32>> {
    let all = snapshot();
    let children = children_map(&all);
    let alive: HashSet<i32> = all.iter().filter(|p| !p.zombie).map(|p| p.pid).collect();
    let mut covered: HashSet<i32> = HashSet::new();
    let mut found: HashMap<K, Vec<i32>> = HashMap::new();
    for p in all.iter().filter(|p| !p.zombie) {
        if covered.contains(&p.pid) {
            continue;
        }
        let Some(key) = env_var(p.pid, MARKER_VAR).and_then(|m| group(&m)) else {
            continue;
        };
        let tree: Vec<i32> = tree(&children, p.pid)
            .into_iter()
            .filter(|c| alive.contains(c))
            .collect();
        covered.extend(&tree);
        found.entry(key).or_default().extend(tree);
    }
    for pids in found.values_mut() {
        pids.sort_unstable();
        pids.dedup();
    }
    found
}

/// Every process we can see.
pub fn snapshot() -> Vec<ProcInfo> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_stat)
        .collect()
}

/// Children of each PID.
pub fn children_map(procs: &[ProcInfo]) -> HashMap<i32, Vec<i32>> {
    let mut m: HashMap<i32, Vec<i32>> = HashMap::new();
    for p in procs {
        m.entry(p.ppid).or_default().push(p.pid);
    }
    m
}

/// `root` and all its descendants, parents before children.
pub fn tree(children: &HashMap<i32, Vec<i32>>, root: i32) -> Vec<i32> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(c) = children.get(&out[i]) {
            out.extend(c);
        }
        i += 1;
    }
    out
}

/// Whether the kernel lists each thread's children (`CONFIG_PROC_CHILDREN`).
pub fn children_listed() -> bool {
    static LISTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *LISTED.get_or_init(|| {
        let me = std::process::id();
        fs::metadata(format!("/proc/{me}/task/{me}/children")).is_ok()
    })
}

/// The children of `pid` (of each of its threads): one small read per thread, not a look at
/// every process. None if `pid` is gone.
pub fn children_of(pid: i32) -> Option<Vec<i32>> {
    let mut out = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(task) = task else { continue };
        let mut path = task.path();
        path.push("children");
        // Gone meanwhile, or an exiting thread: nothing to add.
        let Ok(text) = fs::read_to_string(path) else {
            continue;
        };
        out.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    Some(out)
}

/// corral's own children (zombies too), if the kernel lists children (`CONFIG_PROC_CHILDREN`).
pub fn own_children() -> Option<Vec<i32>> {
    if !children_listed() {
        return None;
    }
    children_of(std::process::id() as i32)
}

/// Live descendants of corral, found through the kernel's lists of each thread's children
/// (`/proc/<pid>/task/<tid>/children`): a few reads for a small tree, where a scan reads a file
/// per process on the machine. None where the kernel keeps no such lists.
pub fn own_descendants() -> Option<Vec<i32>> {
    let mut found = own_children()?;
    let mut i = 0;
    while i < found.len() {
        let more = children_of(found[i]).unwrap_or_default();
        found.extend(more);
        i += 1;
    }
    found.retain(|&pid| read_stat(pid).is_some_and(|p| !p.zombie));
    Some(found)
}

/// The value of `var` in a process's environment as it started.
pub fn env_var(pid: i32, var: &str) -> Option<String> {
    let data = fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{var}=");
    data.split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The command line of a process, for messages.
pub fn cmdline(pid: i32) -> String {
    let data = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let parts: Vec<String> = data
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    parts.join(" ")
}

/// The process table prepared for finding what belongs to which generation. Built once per
/// batch of signals: one `/proc` scan, and `environ` read only for corral's own children that
/// are not leaders it started (orphans), however many units are signalled.
#[derive(Default)]
pub struct Table {
    procs: HashMap<i32, ProcInfo>,
    children: HashMap<i32, Vec<i32>>,
    /// Orphans re-parented to corral, with the marker they carry.
    orphans: Vec<(i32, Option<String>)>,
}

impl Table {
    /// `registered`: PIDs corral started and has not reaped (they are not orphans).
    pub fn read(registered: &HashSet<i32>) -> Table {
        let all = snapshot();
        let children = children_map(&all);
        let me = std::process::id() as i32;
        let orphans = children
            .get(&me)
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .filter(|pid| !registered.contains(pid))
            .map(|&pid| (pid, env_var(pid, MARKER_VAR)))
            .collect();
        Table {
            procs: all.into_iter().map(|p| (p.pid, p)).collect(),
            children,
            orphans,
        }
    }

    fn alive(&self, pid: i32) -> bool {
        self.procs.get(&pid).is_some_and(|p| !p.zombie)
    }

    /// Live processes of a generation that left its group or lost their parent: descendants of
    /// `leader` outside its group, and orphans carrying `marker`, with their descendants. The
    /// group itself is reached by `killpg`.
    pub fn strays(&self, leader: Option<i32>, marker: &str) -> Vec<i32> {
        let mut found: HashSet<i32> = HashSet::new();
        if let Some(leader) = leader {
            for pid in tree(&self.children, leader) {
                if self
                    .procs
                    .get(&pid)
                    .is_some_and(|p| p.pgid != leader && !p.zombie)
                {
                    found.insert(pid);
                }
            }
        }
        for (orphan, m) in &self.orphans {
            if m.as_deref() == Some(marker) {
                found.extend(
                    tree(&self.children, *orphan)
                        .into_iter()
                        .filter(|p| self.alive(*p)),
                );
            }
        }
        found.into_iter().collect()
    }

    /// Orphans whose marker is not to be kept, with their descendants: left behind by a unit
    /// whose leader is gone. Orphans of running generations belong to them and are spared.
    pub fn abandoned(&self, keep: impl Fn(&str) -> bool) -> Vec<i32> {
        let mut out = Vec::new();
        for (orphan, m) in &self.orphans {
            if m.as_deref().is_some_and(&keep) {
                continue;
            }
            out.extend(
                tree(&self.children, *orphan)
                    .into_iter()
                    .filter(|p| self.alive(*p)),
            );
        }
        out
    }

    /// Orphans re-parented to corral that carry no marker (they dropped their environment),
    /// with their descendants: corral started them, but no unit can be told.
    pub fn unmarked_orphans(&self) -> Vec<i32> {
        self.orphans
            .iter()
            .filter(|(_, m)| m.is_none())
            .flat_map(|(pid, _)| tree(&self.children, *pid))
            .filter(|p| self.alive(*p))
            .collect()
    }

    /// The live descendants of `pid` (not `pid` itself).
    pub fn descendants_of(&self, pid: i32) -> Vec<i32> {
        tree(&self.children, pid)
            .into_iter()
            .filter(|p| *p != pid && self.alive(*p))
            .collect()
    }

    /// All live descendants of corral, for the last sweep before corral exits.
    pub fn descendants(&self) -> Vec<i32> {
        let me = std::process::id() as i32;
        tree(&self.children, me)
            .into_iter()
            .filter(|p| *p != me && self.alive(*p))
            .collect()
    }
}

/// PIDs of processes with a listening TCP socket on `port` (IPv4 or IPv6).
pub fn port_holders(port: u16) -> Vec<i32> {
    let mut inodes = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is "HEXIP:HEXPORT"; state 0A is LISTEN; inode is field 9.
            if f.len() > 9 && f[3] == "0A" {
                let local_port = f[1]
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok());
                if local_port == Some(port) {
                    inodes.insert(format!("socket:[{}]", f[9]));
                }
            }
        }
    }
    if inodes.is_empty() {
        return Vec::new();
    }
    let mut pids = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return pids;
    };
    for pid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let holds = fds.filter_map(|fd| fd.ok()).any(|fd| {
            fs::read_link(fd.path())
                .ok()
                .is_some_and(|l| inodes.contains(l.to_string_lossy().as_ref()))
        });
        if holds {
            pids.push(pid);
        }
    }
    pids
}

/// Send `sig` to each PID (best effort: some may be gone already).
pub fn signal_all(pids: &[i32], sig: nix::sys::signal::Signal) {
    for &pid in pids {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    }
}

/// Send `sig` to each of `pids` that has not had it yet: not one already in `signalled` (which
/// records it), and not one in process `group` (signalled as a whole just before). Found
/// several ways (a cgroup, a recorded tree, a scan), a process would otherwise get a stop
/// signal twice — and many programs take a second SIGTERM or SIGINT as "stop now" (a second
/// Ctrl-C forcing the exit), cutting their graceful stop short.
pub fn signal_rest(
    pids: impl IntoIterator<Item = i32>,
    group: Option<i32>,
    sig: nix::sys::signal::Signal,
    signalled: &mut std::collections::HashSet<i32>,
) {
    use nix::unistd::{Pid, getpgid};
    for pid in pids {
        if group.is_some_and(|g| getpgid(Some(Pid::from_raw(pid))).is_ok_and(|p| p.as_raw() == g))
            || !signalled.insert(pid)
        {
            continue;
        }
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
    }
}

/// Find `program` the way `execvp` would, on the `PATH` the child will have. Resolving it here
/// (instead of letting exec search) gives a clear "not found" error, and leaves the child (see
/// `vfork.rs`) one `execve` of a known path: nothing to search with the parent's memory.
pub fn resolve_program(
    program: &str,
    env: &[(String, String)],
    workdir: &std::path::Path,
) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &std::path::Path| {
        fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = workdir.join(program);
        return p.exists().then_some(p);
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or("/usr/local/bin:/usr/bin:/bin", |(_, v)| v.as_str());
    path.split(':')
        .map(|dir| {
            if dir.is_empty() {
                workdir.to_path_buf()
            } else {
                workdir.join(dir)
            }
        })
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
}

/// A process watched through a pidfd: it cannot be confused with a later process that gets the
/// same PID, and it becomes readable when the process ends. Linux 5.3+. Clones share the
/// descriptor (an adopted unit is checked and waited for through one: at 5,000 adopted units
/// a second descriptor each ran the daemon out of its open files).
#[derive(Clone)]
pub struct PidFd(std::sync::Arc<std::os::fd::OwnedFd>);

/// A descriptor that others hold too, for an `AsyncFd` to watch without a copy of its own.
pub(crate) struct SharedFd(pub std::sync::Arc<std::os::fd::OwnedFd>);

impl std::os::fd::AsRawFd for SharedFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

impl PidFd {
    pub fn open(pid: u32) -> std::io::Result<PidFd> {
        use std::os::fd::FromRawFd;
        // SAFETY: pidfd_open takes a PID and flags and returns a new descriptor or -1.
        let fd =
            unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid as nix::libc::pid_t, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the descriptor was just created and is owned by nobody else.
        Ok(PidFd(std::sync::Arc::new(unsafe {
            std::os::fd::OwnedFd::from_raw_fd(fd as i32)
        })))
    }

    /// Whether the process has ended (poll with zero timeout).
    pub fn exited(&self) -> bool {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    }

    /// Wait until the process ends.
    pub async fn wait(self) {
        // SAFETY: the AsyncFd holds the descriptor open (a share of it) while it is registered.
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(
                SharedFd(self.0),
                tokio::io::Interest::READABLE,
            )
        };
        match fd {
            Ok(fd) => {
                let _ = fd.readable().await;
            }
            Err(_) => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_process_named_in_bytes_that_are_not_utf8_is_still_read() {
        use std::io::BufRead;
        // The program renames itself (`prctl(PR_SET_NAME)`) to bytes that are not UTF-8, then
        // says so and waits.
        let mut child = std::process::Command::new("python3")
            .args([
                "-c",
                "import ctypes, sys, time\n\
                 ctypes.CDLL(None).prctl(15, b'\\xffname', 0, 0, 0)\n\
                 print('renamed', flush=True)\n\
                 time.sleep(30)",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let pid = child.id() as i32;
        let raw = fs::read(format!("/proc/{pid}/stat")).unwrap();
        let (info, started) = (read_stat(pid), start_time(pid));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(line.trim(), "renamed");
        assert!(std::str::from_utf8(&raw).is_err(), "the name is not UTF-8");
        assert_eq!(info.map(|i| i.pid), Some(pid));
        assert!(started.is_some());
    }

    #[test]
    fn own_descendants_reach_grandchildren_and_skip_zombies() {
        let mut sh = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30 & wait"])
            .spawn()
            .unwrap();
        let mut done = std::process::Command::new("true").spawn().unwrap();
        let (sh_pid, done_pid) = (sh.id() as i32, done.id() as i32);
        let deadline = Instant::now() + Duration::from_secs(10);
        // Asked once the tree is complete (asked before, it could miss a sleep the shell
        // started in between — that made this test flaky).
        let found = loop {
            let grandchildren = tree(&children_map(&snapshot()), sh_pid).len() - 1;
            let done_is_zombie = read_stat(done_pid).is_some_and(|p| p.zombie);
            if grandchildren == 2 && done_is_zombie {
                break own_descendants().expect("this kernel lists children");
            }
            assert!(
                Instant::now() < deadline,
                "the shell did not start its sleeps"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        let sleeps: Vec<i32> = tree(&children_map(&snapshot()), sh_pid)[1..].to_vec();
        for pid in sleeps.iter().chain([&sh_pid]) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        sh.wait().unwrap();
        done.wait().unwrap();
        assert!(found.contains(&sh_pid), "{found:?}");
        for pid in &sleeps {
            assert!(found.contains(pid), "grandchild {pid} not in {found:?}");
        }
        assert!(
            !found.contains(&done_pid),
            "a zombie counts as gone: {found:?}"
        );
    }

    #[test]
    fn with_markers_finds_each_markers_trees_in_one_scan() {
        let me = std::process::id();
        let (m1, m2, m3) = (
            format!("test-{me}/a/1"),
            format!("test-{me}/b/1"),
            format!("test-{me}/c/1"),
        );
        let spawn = |marker: &str, script: &str| {
            std::process::Command::new("sh")
                .args(["-c", script])
                .env(MARKER_VAR, marker)
                .spawn()
                .unwrap()
        };
        let mut a = spawn(&m1, "sleep 30 & wait");
        let mut b = spawn(&m2, "exec sleep 30");
        let mut c = spawn(&m3, "exec sleep 30");
        let asked: HashSet<&str> = [m1.as_str(), m2.as_str(), "nobody/x/1"].into();
        let deadline = Instant::now() + Duration::from_secs(10);
        let found = loop {
            let found = with_markers(&asked);
            // `a` is the shell and its sleep (which inherits the marker too).
            if found[&m1].len() == 2 && found[&m2].len() == 1 {
                break found;
            }
            assert!(Instant::now() < deadline, "not found: {found:?}");
            std::thread::sleep(Duration::from_millis(5));
        };
        for pid in found[&m1]
            .iter()
            .chain(&found[&m2])
            .chain([&(c.id() as i32)])
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for child in [&mut a, &mut b, &mut c] {
            child.wait().unwrap();
        }
        assert!(found[&m1].contains(&(a.id() as i32)), "{found:?}");
        assert_eq!(found[&m2], [b.id() as i32]);
        assert!(found["nobody/x/1"].is_empty());
        assert!(!found.contains_key(&m3), "only what was asked: {found:?}");
    }
}
