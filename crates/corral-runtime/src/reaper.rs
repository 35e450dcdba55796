//! Spawning and reaping. corral is a child subreaper, so every process its services leave
//! behind is re-parented to corral and must be reaped by corral. One reaper waits for *all*
//! children (`waitpid(-1)`) on SIGCHLD; the processes we started are registered here and their
//! exit status goes where they said ([`OnExit`]); anything else is an orphan and is just reaped.
//!
//! That is why nothing in corral may use `tokio::process` or `std::process::Child::wait`: the
//! reaper would steal their exit statuses. Everything spawns through [`Reaper::spawn`].
//!
//! Where cgroups can be made ([`crate::cgroup`]), each registered process has one, and what is
//! done to its process group is done to its cgroup too: a signal reaches the processes that left
//! the group, and when the leader is reaped everything left in its cgroup is killed and the
//! cgroup removed.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex};

use std::path::PathBuf;

use corral_engine::ExitStatus;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Clone)]
pub struct Reaper {
    /// Un-reaped processes we started, by PID, with their cgroups. A PID is in here exactly
    /// while it cannot be reused, so signalling a PID found here never hits a stranger.
    waiting: Arc<Mutex<Waiting>>,
    /// Where each marked process gets a cgroup; none when the system gives us none.
    cgroups: Option<Arc<crate::cgroup::Cgroups>>,
    /// The runtime, for the watch of a lingering cgroup (reaps run on other threads too).
    runtime: tokio::runtime::Handle,
}

/// What is done with a process's exit status when it is reaped (on the reaper's task, without
/// the reaper's lock): send it on a channel, or hand it straight on — a supervised service has
/// no task waiting for its exit, which at thousands of services was a third of a KiB each.
pub type OnExit = Box<dyn FnOnce(ExitStatus) + Send>;

/// One process we started and have not reaped.
struct Registered {
    exit: OnExit,
    cgroup: Option<PathBuf>,
    /// A daemon's launcher: when it exits 0, what it started is left alone (the supervisor
    /// watches and ends it).
    daemon: bool,
    /// Its unit is being stopped (the stop signal was sent): at its exit, what it leaves in
    /// its cgroup is not killed at once but finishes its own stop (see [`Lingering`]).
    stopping: bool,
}

/// A process that exited during its unit's stop, leaving others in its cgroup (children still
/// finishing their own stop: a worker draining, a server closing connections). They get the
/// rest of the stop's grace, as the whole group got the stop signal: the exit is handed on
/// when the cgroup is empty, and the supervisor's SIGKILL at the end of the grace reaches the
/// cgroup. Killing them at the leader's exit cut their stop short. Only with a cgroup: without
/// one, nothing pins down what the leader left (its group id can be taken by another process
/// once the leader is reaped), and it is killed at once as before.
struct Lingering {
    exit: OnExit,
    status: ExitStatus,
    cgroup: PathBuf,
}

#[derive(Default)]
struct Waiting {
    by_pid: HashMap<i32, Registered>,
    /// Cgroups killed whose processes had not all died yet: removed at a later reap.
    retired: Vec<PathBuf>,
    /// By the PID of the process that exited.
    lingering: HashMap<i32, Lingering>,
    /// Processes being started now (see [`Reaper::spawn`]): no reaping meanwhile.
    starting: usize,
    /// A reap was asked for while processes were being started: the last start does it.
    reap_deferred: bool,
}

impl Reaper {
    /// Become a child subreaper and start the reaping task. Call once, inside the runtime.
    pub fn start(cgroups: Option<crate::cgroup::Cgroups>) -> io::Result<Reaper> {
        #[cfg(target_os = "linux")]
        nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)?;
        let mut sigchld = signal(SignalKind::child())?;
        let reaper = Reaper {
            waiting: Arc::default(),
            cgroups: cgroups.map(Arc::new),
            runtime: tokio::runtime::Handle::current(),
        };
        let r = reaper.clone();
        tokio::spawn(async move {
            loop {
                r.reap();
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(reaper)
    }

    /// The daemon's cgroup, when processes are confined.
    pub fn cgroups(&self) -> Option<&crate::cgroup::Cgroups> {
        self.cgroups.as_deref()
    }

    /// A cgroup for the process that will carry `marker` (none without confinement, or when
    /// this one cannot be made: the fallback still holds).
    pub fn slot(
        &self,
        marker: &str,
        limits: &corral_config::CgroupLimits,
    ) -> Option<crate::cgroup::Slot> {
        self.cgroups.as_ref()?.slot(marker, limits).ok()
    }

    /// Start a process with `start` (which returns its PID) and register it (with its cgroup,
    /// which the child joins before `exec`); `on_exit` gets its exit status. Several threads
    /// may be starting processes at once ([`crate::spawn::launch_all`]): while any is, nothing
    /// is reaped (a very short-lived child must not be collected before it is registered, and
    /// a child that failed before `exec` is collected by `start` itself); the last to finish
    /// reaps what exited meanwhile.
    pub fn spawn(
        &self,
        start: impl FnOnce() -> io::Result<u32>,
        mut cgroup: Option<PathBuf>,
        daemon: bool,
        on_exit: OnExit,
    ) -> io::Result<u32> {
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .starting += 1;
        let started = start();
        let reap_now = {
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            waiting.starting -= 1;
            if let Ok(pid) = started {
                waiting.by_pid.insert(
                    pid as i32,
                    Registered {
                        exit: on_exit,
                        cgroup: cgroup.take(),
                        daemon,
                        stopping: false,
                    },
                );
            }
            waiting.starting == 0 && std::mem::take(&mut waiting.reap_deferred)
        };
        if let Some(dir) = cgroup {
            // Not started: its cgroup is nobody's.
            crate::cgroup::remove(&dir);
        }
        if reap_now {
            self.reap();
        }
        started
    }

    /// Send `sig` to the process group led by `pid`, if `pid` is still one of ours and not yet
    /// reaped, and to whatever left that group but not its cgroup. Returns false if it was
    /// already gone.
    pub fn signal_group(&self, pid: u32, sig: Signal) -> bool {
        self.signal_groups(&[(pid, sig, None)], &mut HashSet::new())[0]
    }

    /// [`Reaper::signal_group`] for each of `targets`: every group first, then what left the
    /// groups but not their cgroups (each once: recorded in `signalled`, for the caller's own
    /// passes). Stopping thousands, the signals all land at once and the processes die (and
    /// are reaped) while the cgroups are read, a file each; one at a time, the last group was
    /// signalled only after every cgroup before it had been read.
    ///
    /// A target's marker, where given, must be the one its process was started with (its
    /// cgroup is named after it): a PID is not taken for another unit's process meanwhile. A
    /// target whose process has exited but whose cgroup is [`Lingering`] has that cgroup
    /// signalled (false: the process itself is gone).
    pub fn signal_groups(
        &self,
        targets: &[(u32, Signal, Option<&str>)],
        signalled: &mut HashSet<i32>,
    ) -> Vec<bool> {
        // The groups are signalled under the lock (a group's id cannot be reused while its
        // leader is registered); the cgroups' file work after it, so the reaper is not kept
        // waiting.
        let mut cgroups = Vec::new();
        let sent = {
            let waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            targets
                .iter()
                .map(
                    |&(pid, sig, marker)| match waiting.by_pid.get(&(pid as i32)) {
                        Some(r) if started_as(r.cgroup.as_deref(), marker) => {
                            if let Some(dir) = &r.cgroup {
                                cgroups.push((dir.clone(), Some(pid as i32), sig));
                            }
                            killpg(Pid::from_raw(pid as i32), sig).is_ok()
                        }
                        _ => {
                            if let Some(l) = waiting.lingering.get(&(pid as i32))
                                && started_as(Some(&l.cgroup), marker)
                            {
                                cgroups.push((l.cgroup.clone(), None, sig));
                            }
                            false
                        }
                    },
                )
                .collect()
        };
        for (dir, group, sig) in &cgroups {
            if *sig == Signal::SIGKILL {
                crate::cgroup::kill(dir);
            } else {
                let pids = crate::cgroup::pids(dir);
                crate::proctable::signal_rest(pids, *group, *sig, signalled);
            }
        }
        sent
    }

    /// The stop signal is being sent to `pid`'s unit: what it leaves at its exit lingers
    /// (see [`Lingering`]).
    pub fn stopping(&self, pid: u32) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = waiting.by_pid.get_mut(&(pid as i32)) {
            r.stopping = true;
        }
    }

    /// Send `sig` to `pid` alone, if it is still one of ours and not yet reaped (a stop with
    /// `parent_only`: the process tells its children itself).
    pub fn signal_one(&self, pid: u32, sig: Signal) -> bool {
        let waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        waiting.by_pid.contains_key(&(pid as i32))
            && nix::sys::signal::kill(Pid::from_raw(pid as i32), sig).is_ok()
    }

    /// Whether `pid` is one of ours, not yet reaped, in a cgroup of its own (so signalling its
    /// group reaches everything it started).
    pub fn confined(&self, pid: u32) -> bool {
        let waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        waiting
            .by_pid
            .get(&(pid as i32))
            .is_some_and(|r| r.cgroup.is_some())
    }

    /// PIDs we started that are not reaped yet.
    pub fn registered(&self) -> std::collections::HashSet<i32> {
        let waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        waiting.by_pid.keys().copied().collect()
    }

    /// Kill what is in the cgroup at `dir` and remove it (now, or at a later reap when its
    /// processes have not all died yet). For cgroups of processes we did not start (adopted).
    pub fn retire(&self, dir: PathBuf) {
        crate::cgroup::kill(&dir);
        if !crate::cgroup::remove(&dir) {
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            waiting.retired.push(dir);
        }
    }

    /// Reap every exited child. Called on SIGCHLD (signals coalesce, so loop until none left).
    /// The lock is held only for what needs it (the wait, the table, the group kill while the
    /// group id cannot be reused); the cgroup work (a write and an rmdir per process, on a
    /// 2,000-service stop a tenth of a second) is done after, so spawns and signals of the
    /// supervisor do not wait for it.
    pub fn reap(&self) {
        let mut ended = Vec::new();
        let mut retired = {
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            if waiting.starting > 0 {
                waiting.reap_deferred = true;
                return;
            }
            loop {
                let (pid, status) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(pid, code)) => (pid, ExitStatus::Code(code)),
                    Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, ExitStatus::Signal(sig as i32)),
                    Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                    Ok(_) | Err(Errno::EINTR) => continue,
                    Err(_) => break,
                };
                if let Some(r) = waiting.by_pid.remove(&pid.as_raw()) {
                    // A daemon's launcher that succeeded leaves the daemon it started.
                    let launched = r.daemon && status == ExitStatus::Code(0);
                    // Stopped, in a cgroup: what it leaves there finishes its own stop.
                    let lingers = r.stopping && r.cgroup.is_some();
                    if !launched && !lingers {
                        // The leader is gone: whatever it left in its group goes too, now,
                        // while the group id cannot have been reused (its members keep it
                        // alive, and no spawn can take the PID while we hold the lock: a spawn
                        // counts itself in `starting` under it before it clones).
                        let _ = killpg(pid, Signal::SIGKILL);
                    }
                    ended.push((pid.as_raw(), r, status, launched, lingers));
                }
            }
            std::mem::take(&mut waiting.retired)
        };
        let mut lingering = Vec::new();
        for (pid, r, status, launched, lingers) in ended {
            // And whatever it left in its cgroup, wherever it went; most leave nothing, and
            // an empty cgroup is simply removed.
            if !launched
                && let Some(dir) = r.cgroup
                && !crate::cgroup::remove(&dir)
            {
                if lingers {
                    let (exit, cgroup) = (r.exit, dir);
                    lingering.push((
                        pid,
                        Lingering {
                            exit,
                            status,
                            cgroup,
                        },
                    ));
                    continue;
                }
                crate::cgroup::kill(&dir);
                retired.push(dir);
            }
            (r.exit)(status);
        }
        if !lingering.is_empty() {
            let pids: Vec<i32> = lingering.iter().map(|(pid, _)| *pid).collect();
            self.waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .lingering
                .extend(lingering);
            for pid in pids {
                self.watch_lingering(pid);
            }
        }
        // The processes of a killed cgroup die a moment later (and are reaped here, being our
        // descendants): it is removed once it is empty.
        retired.retain(|dir| !crate::cgroup::remove(dir));
        if !retired.is_empty() {
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            waiting.retired.append(&mut retired);
        }
    }
}

impl Reaper {
    /// Hand on a lingering process's exit once its cgroup is empty.
    fn watch_lingering(&self, pid: i32) {
        let cgroup = {
            let waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            waiting.lingering.get(&pid).map(|l| l.cgroup.clone())
        };
        let Some(cgroup) = cgroup else {
            return;
        };
        let reaper = self.clone();
        self.runtime.spawn(async move {
            crate::cgroup::emptied(&cgroup).await;
            let ended = reaper
                .waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .lingering
                .remove(&pid);
            if let Some(l) = ended {
                if !crate::cgroup::remove(&l.cgroup) {
                    reaper.retire(l.cgroup);
                }
                (l.exit)(l.status);
            }
        });
    }
}

/// Whether a process registered with `cgroup` is the one started as `marker` (its cgroup is
/// named after its marker); without either there is nothing to tell them apart by.
fn started_as(cgroup: Option<&std::path::Path>, marker: Option<&str>) -> bool {
    match (cgroup.and_then(|d| d.file_name()), marker) {
        (Some(name), Some(marker)) => {
            let name = name.as_encoded_bytes();
            name.len() == marker.len()
                && name
                    .iter()
                    .zip(marker.bytes())
                    .all(|(&a, b)| a == if b == b'/' { b'@' } else { b })
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A child that exits while it is still being started (before it is registered) is not
    /// collected by a reap meanwhile (its status would be lost), and its exit is not left
    /// waiting for a SIGCHLD that already came: the start, as it ends, reaps it and hands its
    /// status on.
    #[test]
    fn an_exit_during_its_start_reaches_its_owner_as_the_start_ends() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let reaper = Reaper::start(None).unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            let pid = reaper
                .spawn(
                    || {
                        let child = std::process::Command::new("sh")
                            .args(["-c", "exit 3"])
                            .spawn()?;
                        let pid = child.id();
                        // Not waited for by `child`: the reaper is the one to collect it.
                        drop(child);
                        let deadline = Instant::now() + Duration::from_secs(10);
                        while !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                            s.rsplit(')').next().is_some_and(|r| r.starts_with(" Z"))
                        }) {
                            assert!(Instant::now() < deadline, "the child did not exit");
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        // Its SIGCHLD, handled while the start is still going on.
                        reaper.reap();
                        assert!(
                            std::fs::metadata(format!("/proc/{pid}")).is_ok(),
                            "reaped before it was registered"
                        );
                        Ok(pid)
                    },
                    None,
                    false,
                    Box::new(move |status| {
                        let _ = tx.send(status);
                    }),
                )
                .unwrap();
            assert_eq!(rx.try_recv(), Ok(ExitStatus::Code(3)), "pid {pid}");
            assert!(std::fs::metadata(format!("/proc/{pid}")).is_err());
        });
    }
}
