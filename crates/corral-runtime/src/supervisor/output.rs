//! The keeper link (starting the keeper, connecting to it) and what arrives on it: output for
//! the terminal and `logs -f`, and the lines `log_ready` and log readiness wait for.

use super::*;

/// Connect to the keeper of `state_dir` (starting one if none answers); what it sends arrives
/// as `Msg::Tap`.
/// `started`: one was just spawned; only wait for it.
pub(super) fn connect_keeper(
    state_dir: &std::path::Path,
    exe: &std::path::Path,
    reaper: &Reaper,
    tx: &UnboundedSender<Msg>,
    started: bool,
) -> Result<KeeperLink, StartError> {
    let start = {
        let (state_dir, exe, reaper) = (state_dir.to_path_buf(), exe.to_path_buf(), reaper.clone());
        move || match started {
            true => Ok(()),
            false => spawn_keeper(&state_dir, &exe, &reaper).map(drop),
        }
    };
    let tap_tx = tx.clone();
    KeeperLink::connect(state_dir, start, move |m| {
        let _ = tap_tx.send(Msg::Tap(m));
    })
    .map_err(StartError::Keeper)
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

/// Start `corral __keeper STATE_DIR`; returns its PID.
pub(super) fn spawn_keeper(
    state_dir: &std::path::Path,
    exe: &std::path::Path,
    reaper: &Reaper,
) -> std::io::Result<u32> {
    let err = std::fs::File::create(state_dir.join("keeper.err"))?;
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
            stdin: crate::spawn::Io::Null,
            stdout: crate::spawn::Io::Null,
            stderr: crate::spawn::Io::File(err),
        },
    )
    .map(|s| s.pid)
    .map_err(|e| std::io::Error::other(e.0))
}

impl Supervisor {
    /// Output from the keeper: to the terminal, to `logs -f` clients, and past the patterns.
    pub(super) fn tap(&mut self, msg: TapMsg) {
        match msg {
            TapMsg::Lines {
                unit,
                generation,
                stream,
                time,
                lines,
            } => {
                let Some(id) = self.project.plan.find(&unit) else {
                    return;
                };
                for line in &lines {
                    self.printer.line(id, stream, line);
                }
                if self.lines.receiver_count() > 0 {
                    for line in &lines {
                        let _ = self.lines.send(Arc::new(LineNotice {
                            unit: unit.clone(),
                            time,
                            stream,
                            text: String::from_utf8_lossy(line).into_owned(),
                        }));
                    }
                }
                self.check_patterns(id, generation, &lines);
            }
            TapMsg::Eof { unit, generation } => {
                self.draining.remove(&(unit, generation));
            }
            TapMsg::Lost => {
                self.draining.clear();
                if self.engine.is_shutting_down() {
                    return;
                }
                // Output of the processes it held is gone with it; new ones get a new keeper.
                match connect_keeper(
                    &self.project.state_dir,
                    &self.options.exe,
                    &self.reaper,
                    &self.tx,
                    false,
                ) {
                    Ok(k) => {
                        eprintln!(
                            "corral: the log keeper died; started a new one for new processes"
                        );
                        self.keeper = Some(k);
                    }
                    Err(e) => eprintln!("corral: the log keeper died and cannot be restarted: {e}"),
                }
            }
        }
    }

    pub(super) fn check_patterns(&mut self, id: UnitId, generation: u64, lines: &[Vec<u8>]) {
        let Some(live) = self.live[id.0]
            .as_mut()
            .filter(|l| l.generation == generation)
        else {
            return;
        };
        let watch = &mut live.watch;
        if watch.log_ready.is_none() && watch.readiness.is_none() {
            return;
        }
        for line in lines {
            let text = String::from_utf8_lossy(line);
            if watch.log_ready.as_ref().is_some_and(|r| r.is_match(&text)) {
                watch.log_ready = None;
                let _ = self.tx.send(Msg::Event(Event::LogReady {
                    unit: id,
                    generation,
                }));
            }
            if watch.readiness.as_ref().is_some_and(|r| r.is_match(&text)) {
                watch.readiness = None;
                let _ = self.tx.send(Msg::Event(Event::ProbeResult {
                    unit: id,
                    generation,
                    probe: corral_engine::ProbeKind::Readiness,
                    ok: true,
                    detail: format!("line matched: {text}"),
                }));
            }
        }
    }

    pub(super) fn watch_for(&self, unit: UnitId) -> Watch {
        let def = &self.project.units[unit.0];
        Watch {
            log_ready: def.log_ready.clone(),
            readiness: match &def.readiness {
                Some(p) => match &p.check {
                    Check::Log { pattern } => Some(pattern.clone()),
                    _ => None,
                },
                None => None,
            },
        }
    }
}
