//! `watch`: one inotify watcher for the whole project, whatever the number of units that watch.
//! A change is matched against each unit's patterns and handed to the engine as
//! `FilesChanged`; the engine owns the debounce and what a change does.
//!
//! Directories are watched one by one (not notify's recursive mode), so `.git`, `target`,
//! `node_modules` and `.corral` are never entered: a build's churn costs nothing, and a big
//! `node_modules` cannot exhaust the inotify watches. A directory created later is added as it
//! appears.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use corral_config::{Project, WATCH_NEVER, Watch};
use corral_engine::UnitId;
use notify::{EventKind, RecursiveMode, Watcher as _};

/// A change to a watched file of a unit.
pub struct Change {
    pub unit: UnitId,
    /// Relative to the project.
    pub path: String,
}

/// Alive while watching; dropping it stops the watcher (and its thread).
pub struct Watcher {
    _inner: Arc<Mutex<notify::RecommendedWatcher>>,
}

/// Watch what the project's units name; `None` when no unit watches anything. `send` is called
/// on the watcher's thread.
pub fn start(
    project: &Project,
    send: impl Fn(Change) + Send + 'static,
) -> notify::Result<Option<Watcher>> {
    let units: Vec<(UnitId, Watch)> = project
        .units
        .iter()
        .enumerate()
        .filter_map(|(i, u)| Some((UnitId(i), u.watch.as_deref()?.clone())))
        .collect();
    if units.is_empty() {
        return Ok(None);
    }
    let root = project.root.clone();
    // notify calls the handler on its own loop, where adding a watch would wait for that very
    // loop: events go to a thread of ours, which matches them and adds watches for new
    // directories.
    let (events, rx) = std::sync::mpsc::channel::<notify::Event>();
    let inner = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            let _ = events.send(ev);
        }
    })?;
    let inner = Arc::new(Mutex::new(inner));
    add_tree(&mut inner.lock().unwrap_or_else(|e| e.into_inner()), &root);
    let weak = Arc::downgrade(&inner);
    // Ends when the watcher is dropped (its handler, holding the sender, goes with it).
    std::thread::Builder::new()
        .name("corral-watch".into())
        .spawn(move || {
            for ev in rx {
                if matches!(ev.kind, EventKind::Access(_) | EventKind::Other) {
                    continue;
                }
                let mut paths = ev.paths;
                let mut i = 0;
                while i < paths.len() {
                    let path = paths[i].clone();
                    i += 1;
                    let Ok(rel) = path.strip_prefix(&root) else {
                        continue;
                    };
                    if never(rel) {
                        continue;
                    }
                    if matches!(ev.kind, EventKind::Create(_))
                        && path.is_dir()
                        && let Some(w) = weak.upgrade()
                    {
                        // What was written in it before its watch was added counts as changed.
                        let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
                        paths.extend(add_tree(&mut w, &path));
                        continue;
                    }
                    for (unit, watch) in &units {
                        if watch.wants(rel) {
                            send(Change {
                                unit: *unit,
                                path: rel.display().to_string(),
                            });
                        }
                    }
                }
            }
        })
        .map_err(notify::Error::io)?;
    Ok(Some(Watcher { _inner: inner }))
}

/// Under a directory that is never watched.
fn never(rel: &Path) -> bool {
    rel.components()
        .any(|c| WATCH_NEVER.iter().any(|n| c.as_os_str() == *n))
}

/// Watch `dir` and every directory below it, except the never-watched ones. Returns the files
/// found.
fn add_tree(w: &mut notify::RecommendedWatcher, dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if w.watch(&d, RecursiveMode::NonRecursive).is_err() {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            // Not followed: a symlinked directory could lead anywhere (or in a circle).
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if is_dir && !WATCH_NEVER.iter().any(|n| e.file_name() == *n) {
                stack.push(e.path());
            } else if !is_dir {
                files.push(e.path());
            }
        }
    }
    files
}
