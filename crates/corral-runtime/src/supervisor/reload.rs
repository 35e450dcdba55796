//! Changing the plan while running: reloads of `corral.toml` and services added or removed at
//! run time. Changed and removed units stop first; then the plan is swapped and events of tasks
//! started before the swap are re-addressed by generation number.

use super::*;
use corral_config::Definition;

/// What a reload changes.
pub(super) enum Change {
    /// Read the config file again (`corral reload`).
    ReadFile,
    /// Add or replace a service defined at run time; kept once valid.
    Define(Definition),
    /// Remove a service defined at run time.
    Forget(String),
    /// Read the config file again with a new count for one unit (`corral scale NAME N`): the
    /// formation it was read with, changed. Lasts as long as the daemon.
    Scale(String, usize),
}

/// Whose a stored definition is, for its errors.
pub(super) fn owner(name: &str) -> String {
    format!("service `{name}` (added at run time)")
}

/// The services defined at run time, as stored: JSON (or, from an older corral, TOML text).
/// One that cannot be read is reported and left in the store, untouched.
pub(super) fn stored_definitions(
    store: &Store,
) -> Result<Vec<Definition>, corral_store::StoreError> {
    Ok(store
        .definitions()?
        .into_iter()
        .filter_map(|(name, body)| {
            let def = match serde_json::from_str::<serde_json::Value>(&body) {
                Ok(json) => Some(Definition::from_json(&name, &json, &owner(&name))),
                Err(_) => Definition::from_legacy_toml(&name, &body, &owner(&name)),
            };
            if def.is_none() {
                crate::say!("corral: the stored definition of `{name}` is unreadable; skipping it");
            }
            def
        })
        .collect())
}

/// A reload waiting for the units it replaces to stop.
pub(super) struct PendingReload {
    pub(super) project: Project,
    /// Units whose definition changed or that are gone: stopped before the swap.
    pub(super) replaced: Vec<String>,
    /// Changed units to start again after the swap (they were wanted).
    pub(super) restart: Vec<String>,
    /// Changed units the user had stopped: they stay stopped.
    pub(super) hold: Vec<String>,
    pub(super) added: Vec<String>,
    pub(super) summary: String,
}

/// What decides whether a unit changed: its whole definition, with dependencies by name (ids
/// shift when units are added or removed). `only`: just these units (the rest are known to be
/// unchanged).
pub(super) fn fingerprints(
    project: &Project,
    only: Option<&str>,
) -> std::collections::HashMap<String, String> {
    // With `only`, found by name: not a comparison with every unit's.
    let ids: Vec<UnitId> = match only {
        Some(name) => project.plan.find(name).into_iter().collect(),
        None => project.plan.ids().collect(),
    };
    ids.into_iter()
        .map(|id| (&project.units[id.0], &project.plan.units[id.0]))
        .map(|(def, spec)| {
            let mut spec = corral_engine::UnitSpec::clone(spec);
            let deps: Vec<(String, String)> = spec
                .deps
                .drain(..)
                .map(|d| {
                    (
                        project.plan.get(d.unit).name.clone(),
                        d.condition.to_string(),
                    )
                })
                .collect();
            (def.name.clone(), format!("{def:?}|{spec:?}|{deps:?}"))
        })
        .collect()
}

impl Supervisor {
    /// Load the project again (with `added` as the services added at run time), and change to
    /// it: units whose definition changed, or that are gone, are stopped first (dependents
    /// keep running); once they are down the plan is swapped, the changed ones start again, and
    /// new ones start. Unchanged units keep their processes.
    pub(super) async fn reload_with(
        &mut self,
        mut added: Vec<Definition>,
        change: Change,
    ) -> Result<Reply, CommandError> {
        let invalid = |e: &dyn std::fmt::Display| CommandError::Invalid(e.to_string());
        match &change {
            Change::ReadFile => {}
            Change::Define(def) => {
                added.retain(|d| d.name != def.name);
                added.push(def.clone());
            }
            Change::Forget(name) => added.retain(|d| d.name != *name),
            Change::Scale(..) => {}
        }
        // Only `reload` reads the file; a definition joins what was read before.
        let new = match &change {
            // Read as the project was read (the files over it, a formation).
            Change::ReadFile => corral_config::load_with(
                &self.project.file,
                &std::env::vars().collect(),
                self.project.read_options(),
            )
            .map_err(|e| invalid(&e))?
            .with_definitions(&added),
            Change::Scale(name, n) => {
                let mut options = self.project.read_options().clone();
                options.formation.insert(name.clone(), *n);
                corral_config::load_with(&self.project.file, &std::env::vars().collect(), &options)
                    .map_err(|e| invalid(&e))?
                    .with_definitions(&added)
            }
            _ => self.project.with_definitions(&added),
        }
        .map_err(|e| invalid(&e))?;
        // The definition is kept only once it is known to be valid.
        let stored = match &change {
            Change::Define(def) => self
                .store
                .put_definition(&def.name, &def.to_json().to_string()),
            Change::Forget(name) => self.store.forget(name),
            Change::ReadFile | Change::Scale(..) => Ok(()),
        };
        // What is stored now is `added`: kept as the cache, not read again (dropping it made
        // the next change read and parse every stored definition, work that grew with each
        // instance). After a failed write the store says what is stored.
        match &stored {
            Ok(()) => self.set_added(added.clone()),
            Err(_) => self.added_changed(),
        }
        stored.map_err(|e| invalid(&e))?;
        // A definition added or forgotten changes that unit alone: the others are lowered from
        // the same text, and a dependency is compared by name. Comparing only it keeps creating
        // the 1,000th instance as cheap as the first (all of them were compared each time).
        let only = match &change {
            Change::Define(def) => Some(def.name.as_str()),
            Change::Forget(name) => Some(name.as_str()),
            Change::ReadFile | Change::Scale(..) => None,
        };
        let old = fingerprints(&self.project, only);
        let now = fingerprints(&new, only);
        let changed: Vec<String> = now
            .iter()
            .filter(|(n, f)| old.get(*n).is_some_and(|o| o != *f))
            .map(|(n, _)| n.clone())
            .collect();
        let removed: Vec<String> = match only {
            Some(_) => old
                .keys()
                .filter(|n| !now.contains_key(*n))
                .cloned()
                .collect(),
            None => self
                .project
                .units
                .iter()
                .filter(|u| new.plan.find(&u.name).is_none())
                .map(|u| u.name.clone())
                .collect(),
        };
        let is_new = |name: &str| self.project.plan.find(name).is_none();
        let added_units: Vec<String> = match only {
            Some(name) => [name]
                .into_iter()
                .filter(|n| is_new(n) && new.plan.find(n).is_some())
                .map(str::to_string)
                .collect(),
            None => new
                .units
                .iter()
                .filter(|u| is_new(&u.name))
                .map(|u| u.name.clone())
                .collect(),
        };
        if changed.is_empty() && removed.is_empty() && added_units.is_empty() {
            return Ok(Reply::Done("nothing changed".into()));
        }
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                corral_proto::some_of(v)
            }
        };
        let summary = format!(
            "reloaded: changed {}; added {}; removed {}",
            list(&changed),
            list(&added_units),
            list(&removed)
        );
        let mut restart = Vec::new();
        let mut hold = Vec::new();
        for name in changed.iter().chain(&removed) {
            let Some(id) = self.project.plan.find(name) else {
                continue;
            };
            let u = self.engine.unit(id);
            // A unit now disabled (`disabled = true`, or scaled to 0) stops and stays down.
            let disabled = new
                .plan
                .find(name)
                .is_some_and(|id| new.units[id.0].disabled);
            if changed.contains(name) && !disabled {
                if u.held {
                    hold.push(name.clone());
                } else if u.wanted || u.state.is_live() {
                    restart.push(name.clone());
                }
            }
            self.handle(Event::Stop {
                unit: id,
                dependents: false,
            })
            .await;
        }
        self.reload = Some(PendingReload {
            project: new,
            replaced: changed.iter().chain(&removed).cloned().collect(),
            restart,
            hold,
            added: added_units,
            summary,
        });
        match self.finish_reload().await {
            Some(summary) => Ok(Reply::Done(summary)),
            None => Ok(Reply::Pending),
        }
    }

    /// Finish the pending reload if every unit it replaces is down. Returns its summary then.
    pub(super) async fn finish_reload(&mut self) -> Option<String> {
        let pending = self.reload.as_ref()?;
        let down = pending.replaced.iter().all(|name| {
            self.project
                .plan
                .find(name)
                .is_none_or(|id| !self.engine.state(id).is_live())
        });
        if !down {
            return None;
        }
        let p = self.reload.take()?;
        let carry: Vec<Option<UnitId>> = p
            .project
            .units
            .iter()
            .enumerate()
            .map(|(i, u)| {
                if p.replaced.contains(&u.name) {
                    return None;
                }
                // Most units keep their place (all before one added or removed): found without
                // a lookup.
                match self.project.units.get(i) {
                    Some(old) if old.name == u.name => Some(UnitId(i)),
                    _ => self.project.plan.find(&u.name),
                }
            })
            .collect();
        // Everything indexed by unit moves with its unit.
        let mut held = Vec::with_capacity(carry.len());
        let mut restarts = Vec::with_capacity(carry.len());
        let mut old_to_new: Vec<Option<UnitId>> = vec![None; self.project.units.len()];
        for (i, c) in carry.iter().enumerate() {
            let def = &p.project.units[i];
            match c {
                Some(old) => {
                    old_to_new[old.0] = Some(UnitId(i));
                    held.push(self.held[old.0]);
                    restarts.push(self.restarts[old.0]);
                }
                None => {
                    // Stopping it for the reload marked it held in the store; it starts from a
                    // clean slate (held again below if the user had stopped it).
                    if let Err(e) = self.store.set_held(&def.name, false) {
                        crate::say!("corral: {e}");
                    }
                    held.push(false);
                    restarts.push(0);
                }
            }
        }
        self.moved
            .retain(|_, id| match old_to_new.get(id.0).copied().flatten() {
                Some(new) => {
                    *id = new;
                    true
                }
                None => false,
            });
        for (old, new) in old_to_new.iter().enumerate() {
            let Some(new) = *new else { continue };
            let generation = self.engine.unit(UnitId(old)).generation;
            if old != new.0 && generation != 0 {
                self.moved.insert(generation, new);
            }
        }
        for name in &p.replaced {
            if p.project.plan.find(name).is_none() {
                match self.store.forget(name) {
                    Ok(()) => self.forget_added(name),
                    Err(e) => {
                        crate::say!("corral: {e}");
                        self.added_changed();
                    }
                }
            }
        }
        // A new unit's auto port is the one it had before, if it had one.
        let store = &self.store;
        self.processes.renumber(&carry, |i| {
            let def = &p.project.units[i];
            def.ports
                .contains(&PortDecl::Auto)
                .then(|| store.port(&def.name).ok().flatten())
                .flatten()
        });
        self.engine.replace_plan(p.project.plan.clone(), &carry);
        self.project = p.project;
        self.held = held;
        self.restarts = restarts;
        self.processes.router().plan(self.project.plan.clone());
        self.instances.project(project_view(&self.project));
        crate::spawn::size_pipes_for(self.project.units.len());
        self.watch().await;
        self.schedule_memory();
        self.schedule_tasks();
        self.printer.system(p.summary.clone()).await;
        let ids = |names: &[String]| -> Vec<UnitId> {
            names
                .iter()
                .filter_map(|n| self.project.plan.find(n))
                .collect()
        };
        let (mut added, restart, hold) = (ids(&p.added), ids(&p.restart), ids(&p.hold));
        // A disabled unit starts only when named, as at `up`.
        added.retain(|id| !self.project.units[id.0].disabled);
        self.handle(Event::Up(added)).await;
        for unit in restart {
            self.handle(Event::Start {
                unit,
                dependents: false,
            })
            .await;
        }
        for unit in hold {
            self.handle(Event::Stop {
                unit,
                dependents: false,
            })
            .await;
        }
        Some(p.summary)
    }

    /// An event from a task started before a plan change names the unit's old index; its
    /// generation number says where the unit is now.
    pub(super) fn readdress(&self, mut ev: Event) -> Event {
        if self.moved.is_empty() {
            return ev;
        }
        match &mut ev {
            Event::Exited {
                unit, generation, ..
            }
            | Event::ProbeResult {
                unit, generation, ..
            }
            | Event::LogReady { unit, generation }
            | Event::Watchdog { unit, generation }
            | Event::Timer {
                unit, generation, ..
            } => {
                if let Some(id) = self.moved.get(generation) {
                    *unit = *id;
                }
            }
            _ => {}
        }
        ev
    }

    /// An event about a generation that is no longer current (or a unit a reload removed).
    pub(super) fn is_stale(&self, ev: &Event) -> bool {
        match ev {
            Event::Exited {
                unit, generation, ..
            }
            | Event::ProbeResult {
                unit, generation, ..
            }
            | Event::LogReady { unit, generation }
            | Event::Watchdog { unit, generation }
            | Event::Timer {
                unit, generation, ..
            } => {
                unit.0 >= self.project.units.len()
                    || self.engine.unit(*unit).generation != *generation
            }
            _ => false,
        }
    }
}
