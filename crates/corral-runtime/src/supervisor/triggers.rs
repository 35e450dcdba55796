//! What starts, restarts or informs units from outside the engine's own timers, each the
//! runtime half of a rule the engine keeps: `schedule` (a timer per task), `watch` (the file
//! watcher), `max_memory` (a sample a second while a unit has a limit) and sd_notify messages.

use super::*;

impl Supervisor {
    /// A timer per scheduled task, each sending `ScheduleDue` at the pattern's next time (local
    /// time, computed again after every run, so a clock change is followed).
    pub(super) fn schedule_tasks(&mut self) {
        for h in self.schedules.drain(..) {
            h.abort();
        }
        for (i, def) in self.project.units.iter().enumerate() {
            let Some(schedule) = def.schedule.clone() else {
                continue;
            };
            let tx = self.tx.clone();
            let unit = UnitId(i);
            let task = tokio::spawn(async move {
                loop {
                    let now = chrono::Local::now();
                    let Some(next) = schedule.next_after(&now) else {
                        return;
                    };
                    tokio::time::sleep((next - now).to_std().unwrap_or_default()).await;
                    if tx.send(Msg::Event(Event::ScheduleDue { unit })).is_err() {
                        return;
                    }
                }
            });
            self.schedules.push(task.abort_handle());
        }
    }

    /// Sample again in a second, if any unit has `max_memory`: no unit with a limit, no timer.
    pub(super) fn schedule_memory(&mut self) {
        const EVERY: Duration = Duration::from_secs(1);
        if self.memory_due
            || !self
                .project
                .plan
                .units
                .iter()
                .any(|u| u.max_memory.is_some())
        {
            return;
        }
        self.memory_due = true;
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(EVERY).await;
            let _ = tx.send(Msg::MemoryTick);
        });
    }

    /// One `/proc` pass for the trees of the running units with `max_memory`; the engine decides.
    pub(super) async fn sample_memory(&mut self) {
        self.memory_due = false;
        let ids: Vec<(UnitId, u32)> = self
            .project
            .plan
            .ids()
            .filter(|id| self.project.plan.get(*id).max_memory.is_some())
            .filter_map(|id| Some((id, self.processes.pid(id)?)))
            .collect();
        let roots: Vec<Option<u32>> = ids.iter().map(|(_, pid)| Some(*pid)).collect();
        let usage = self.meter.measure(&roots);
        for ((id, _), u) in ids.into_iter().zip(usage) {
            if let Some(u) = u {
                let generation = self.engine.unit(id).generation;
                self.handle(Event::Memory {
                    unit: id,
                    generation,
                    rss_bytes: u.rss_bytes,
                })
                .await;
            }
        }
        self.schedule_memory();
    }

    /// What a unit said on its NOTIFY_SOCKET: `READY=1` passes a `notify` readiness check,
    /// `WATCHDOG=1` is a heartbeat, `STATUS=` is shown by `ps`/`why`, `STOPPING=1` is printed.
    pub(super) async fn notified(
        &mut self,
        unit: UnitId,
        generation: u64,
        pairs: Vec<(String, String)>,
    ) {
        if unit.0 >= self.project.units.len() || self.engine.unit(unit).generation != generation {
            return;
        }
        let by_notify = self.project.units[unit.0]
            .readiness
            .as_ref()
            .is_some_and(|p| matches!(p.check, corral_config::Check::Notify));
        for (key, value) in pairs {
            match (key.as_str(), value.as_str()) {
                ("READY", "1") if by_notify => {
                    self.handle(Event::ProbeResult {
                        unit,
                        generation,
                        probe: corral_engine::ProbeKind::Readiness,
                        ok: true,
                        detail: "READY=1".into(),
                    })
                    .await
                }
                ("WATCHDOG", "1") => self.handle(Event::Watchdog { unit, generation }).await,
                ("STATUS", text) => {
                    self.processes
                        .set_status(unit, generation, text.to_string());
                }
                ("STOPPING", "1") => {
                    let name = &self.project.units[unit.0].name;
                    self.printer
                        .system(format!("{name}: says it is stopping"))
                        .await;
                }
                _ => {}
            }
        }
    }

    /// (Re)start the file watcher for the current plan: at start and after a reload.
    pub(super) async fn watch(&mut self) {
        self.watcher = None;
        let tx = self.tx.clone();
        let send = move |c: crate::watch::Change| {
            let _ = tx.send(Msg::Event(Event::FilesChanged {
                unit: c.unit,
                path: c.path,
            }));
        };
        match crate::watch::start(&self.project, send) {
            Ok(w) => self.watcher = w,
            Err(e) => {
                self.printer
                    .system(format!("cannot watch files: {e}; `watch` is off"))
                    .await
            }
        }
    }
}
