//! Spawning and reaping. corral is a child subreaper, so every process its services leave
//! behind is re-parented to corral and must be reaped by corral. One reaper waits for *all*
//! children (`waitpid(-1)`) on SIGCHLD; the processes we started are registered here and get
//! their exit status over a oneshot channel; anything else is an orphan and is just reaped.
//!
//! That is why nothing in corral may use `tokio::process` or `std::process::Child::wait`: the
//! reaper would steal their exit statuses. Everything spawns through [`Reaper::spawn`].

use std::collections::HashMap;
use std::io;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};

use corral_engine::ExitStatus;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;

#[derive(Clone)]
pub struct Reaper {
    /// Un-reaped processes we started, by PID. A PID is in here exactly while it cannot be
    /// reused, so signalling a PID found here never hits a stranger.
    waiting: Arc<Mutex<HashMap<i32, oneshot::Sender<ExitStatus>>>>,
}

impl Reaper {
    /// Become a child subreaper and start the reaping task. Call once, inside the runtime.
    pub fn start() -> io::Result<Reaper> {
        #[cfg(target_os = "linux")]
        nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)?;
        let mut sigchld = signal(SignalKind::child())?;
        let reaper = Reaper {
            waiting: Arc::default(),
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

    /// Spawn `cmd` and register it. The lock is held across the spawn so that the reaper cannot
    /// collect a very short-lived child before it is registered.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<(Child, oneshot::Receiver<ExitStatus>)> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let child = cmd.spawn()?;
        let (tx, rx) = oneshot::channel();
        waiting.insert(child.id() as i32, tx);
        Ok((child, rx))
    }

    /// Send `sig` to the process group led by `pid`, if `pid` is still one of ours and not yet
    /// reaped. Returns false if it was already gone.
    pub fn signal_group(&self, pid: u32, sig: Signal) -> bool {
        let waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if !waiting.contains_key(&(pid as i32)) {
            return false;
        }
        killpg(Pid::from_raw(pid as i32), sig).is_ok()
    }

    /// PIDs we started that are not reaped yet.
    pub fn registered(&self) -> std::collections::HashSet<i32> {
        let waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        waiting.keys().copied().collect()
    }

    /// Reap every exited child. Called on SIGCHLD (signals coalesce, so loop until none left).
    pub fn reap(&self) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let (pid, status) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, ExitStatus::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, ExitStatus::Signal(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(_) => break,
            };
            if let Some(tx) = waiting.remove(&pid.as_raw()) {
                // The leader is gone: whatever it left in its group goes too, now, while the
                // group id cannot have been reused (its members keep it alive).
                let _ = killpg(pid, Signal::SIGKILL);
                let _ = tx.send(status);
            }
        }
    }
}
