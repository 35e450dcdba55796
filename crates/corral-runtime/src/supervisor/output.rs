//! The keeper link: starting the keeper, connecting to it (what it sends goes to the output
//! router), and what the supervisor hears back from the router.

use super::*;

/// Connect to the keeper of `state_dir` (starting one if none answers); what it sends goes to
/// `router`. `started`: one was just spawned; only wait for it.
pub(super) fn connect_keeper(
    state_dir: &std::path::Path,
    exe: &std::path::Path,
    reaper: &Reaper,
    router: &Router,
    started: bool,
    exit: &KeeperExit,
) -> Result<KeeperLink, StartError> {
    let start = {
        let (state_dir, exe, reaper) = (state_dir.to_path_buf(), exe.to_path_buf(), reaper.clone());
        let exit = exit.clone();
        move || match started {
            true => Ok(()),
            // Mid-life (the keeper died): it binds its socket itself, as binding one privately
            // sets the umask of the whole process for a moment, and other threads of ours may
            // be making files now.
            false => spawn_keeper(&state_dir, &exe, &reaper, false, &exit).map(drop),
        }
    };
    let router = router.clone();
    KeeperLink::connect(state_dir, start, move |m| router.tap(m)).map_err(StartError::Keeper)
}

/// A keeper started for a start-up that then failed: it holds nothing yet, so it goes.
pub(super) struct KeeperGuard(pub(super) Option<u32>);

impl Drop for KeeperGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// The end of the keeper this daemon started, if it started one (a keeper left by an earlier
/// daemon is not our child). Awaited as the daemon ends, once the keeper has been let go:
/// without it the last look for what we leave behind could find the keeper still on its way
/// out, kill it, and wait a timer tick to look again (1–3 ms of a stop).
#[derive(Clone, Default)]
pub(super) struct KeeperExit(Arc<std::sync::Mutex<Option<oneshot::Receiver<ExitStatus>>>>);

impl KeeperExit {
    fn set(&self, exit: oneshot::Receiver<ExitStatus>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(exit);
    }

    /// Wait until our keeper has ended and been reaped, for at most `limit` (it ends by itself
    /// once no daemon is connected and no pipe is open; a pipe still held by a process that
    /// escaped us keeps it going, and the final sweep deals with both).
    pub(super) async fn ended(&self, limit: Duration) {
        let exit = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(exit) = exit {
            let _ = tokio::time::timeout(limit, exit).await;
        }
    }
}

/// Start `corral __keeper STATE_DIR`; returns its PID. With `bind_here` (as the daemon starts,
/// before any thread of ours makes files) its socket is bound here and handed to it as its
/// stdin: we can connect (and queue the first pipes) at once, while it is still starting,
/// instead of trying until it has bound the socket itself.
pub(super) fn spawn_keeper(
    state_dir: &std::path::Path,
    exe: &std::path::Path,
    reaper: &Reaper,
    bind_here: bool,
    exit: &KeeperExit,
) -> std::io::Result<u32> {
    let stdin = if bind_here {
        let path = corral_proto::paths::SocketPath::new(&crate::keeper::socket_path(state_dir))?;
        // What is there is a dead keeper's: no keeper holds the lock (`keeper::running`).
        let _ = std::fs::remove_file(path.as_path());
        let listener = crate::sockpath::bind_private(|| {
            std::os::unix::net::UnixListener::bind(path.as_path())
        })?;
        crate::spawn::Io::Fd(listener.into())
    } else {
        crate::spawn::Io::Null
    };
    let err_path = state_dir.join("keeper.err");
    crate::statedir::write_new(&err_path, b"")?;
    let err = crate::statedir::open_append(&err_path)?;
    let argv = [
        exe.display().to_string(),
        "__keeper".to_string(),
        state_dir.display().to_string(),
    ];
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k != proctable::MARKER_VAR)
        .collect();
    // No marker: the keeper belongs to the project, not to a unit, and must survive sweeps.
    crate::spawn::spawn(
        reaper,
        crate::spawn::Spec {
            argv: &argv,
            cwd: state_dir,
            env: &env,
            marker: None,
            stdin,
            stdout: crate::spawn::Io::Null,
            stderr: crate::spawn::Io::File(err),
            identity: None,
            umask: None,
            rlimits: &[],
            cgroup_limits: Default::default(),
            daemon: false,
            own_binary: true,
        },
    )
    .map(|s| {
        exit.set(s.exit);
        s.pid
    })
    .map_err(|e| std::io::Error::other(e.0))
}

impl Supervisor {
    /// What the output router found: a pattern matched (an event for the engine, addressed
    /// like any other so a stale generation is ignored), or the keeper is gone.
    pub(super) async fn found(&mut self, found: Found) {
        let event = match found {
            Found::LogReady { unit, generation } => {
                let Some(unit) = self.project.plan.find(&unit) else {
                    return;
                };
                Event::LogReady { unit, generation }
            }
            Found::ReadyLine {
                unit,
                generation,
                text,
            } => {
                let Some(unit) = self.project.plan.find(&unit) else {
                    return;
                };
                Event::ProbeResult {
                    unit,
                    generation,
                    probe: corral_engine::ProbeKind::Readiness,
                    ok: true,
                    detail: format!("line matched: {text}"),
                }
            }
            Found::KeeperLost => return self.keeper_lost(),
            // Where it is seen: the terminal of `up`, or the daemon's log (`up -d` prints
            // nothing else there).
            Found::LogTrouble { unit, trouble } => {
                let Some(id) = self.project.plan.find(&unit) else {
                    return;
                };
                let path = self.project.log_path(&self.project.units[id.0]);
                let text = format!("{unit}: {}", trouble.describe(&path));
                // Shown by `ps` (and the API) while it lasts: `up -d`'s log is on the same disk.
                match trouble {
                    crate::logs::LogTrouble::Failing(why) => self.log_trouble.insert(unit, why),
                    crate::logs::LogTrouble::Recovered { .. } => self.log_trouble.remove(&unit),
                };
                if self.printer.shows_lines() {
                    self.printer.system(text).await;
                } else {
                    crate::say!("corral: {text}");
                }
                return;
            }
            Found::Refused { attach } => {
                if let Some(unit) = self.project.plan.find(&attach.unit) {
                    self.processes.read_here(unit, attach);
                }
                return;
            }
            Found::Held {
                attach,
                stdout,
                stderr,
            } => {
                if let Some(unit) = self.project.plan.find(&attach.unit) {
                    self.processes.hold(unit, attach.generation, stdout, stderr);
                }
                return;
            }
        };
        if !self.is_stale(&event) {
            self.handle(event).await;
        }
    }

    fn keeper_lost(&mut self) {
        if !self.engine.is_shutting_down() {
            self.processes
                .reconnect_keeper(&self.project, &self.options.exe);
        }
    }
}
