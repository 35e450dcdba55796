//! # corral-store: what survives a restart of the daemon
//!
//! One SQLite database, `.corral/state.db` (WAL), holding what the daemon must not forget when
//! it dies or is restarted:
//! - **held** units: what the user stopped stays stopped;
//! - **processes**: the PID, process start time and marker of every process the daemon
//!   started and has not seen exit — the identity a new daemon checks before adopting it;
//! - **trees**: the descendants seen of each of those (PID + start time), so that one that
//!   escaped (`setsid`, an empty environment, its parent gone) is still found and ended;
//! - **ports**: `auto` ports, so a service keeps its port across restarts;
//! - **restarts**: restart counters, for `ps`;
//! - **definitions**: services added at run time through the API;
//! - **events**: a bounded history of what happened.
//!
//! Every change is one statement or one transaction, so a crash leaves either the old or the new
//! row. Logs are files, not rows (see the runtime's keeper).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};

/// The schema this corral writes. A database with a higher number came from a newer corral.
const SCHEMA_VERSION: i64 = 2;

/// How many events the history keeps.
pub const EVENT_HISTORY: i64 = 10_000;

/// The log a store lets stand before [`Store::shorten_log`] copies it into the database: the
/// next daemon to open the file reads all of the log first (here ~2.7 ms for 1,000 pages; a
/// start and stop of ten services writes ~17), so it is kept to ~64 pages.
const LOG_KEPT: u64 = 64 * 4096;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "`{path}` is not a corral state database ({source})\n  help: move it away (corral will start with a fresh one; held services and auto ports are forgotten)"
    )]
    Corrupt {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "`{path}` was written by a newer corral (schema {found}, this one knows {SCHEMA_VERSION})\n  help: use the newer corral, or move the file away"
    )]
    Newer { path: PathBuf, found: i64 },
    #[error("state database `{path}`: {source}")]
    Sql {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

/// A process the daemon started and has not seen end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessRecord {
    pub unit: String,
    pub generation: u64,
    pub pid: u32,
    /// Start time from `/proc/PID/stat` (clock ticks since boot): with the PID, the identity.
    pub start_time: u64,
    pub marker: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRecord {
    pub id: i64,
    pub time: SystemTime,
    pub unit: String,
    pub kind: String,
    /// The unit's state after the event (`running`, …), or empty.
    pub state: String,
    pub message: String,
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
    inserts: u64,
    /// [`Store::begin`] was called: the first write opens the transaction.
    tx_wanted: std::cell::Cell<bool>,
}

/// Bring a database of schema `version` (0: new) to [`SCHEMA_VERSION`].
fn migrate(conn: &Connection, version: i64) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.execute_batch(
        "BEGIN;
         CREATE TABLE IF NOT EXISTS held (unit TEXT PRIMARY KEY);
         CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS processes (
             unit TEXT PRIMARY KEY, generation INTEGER NOT NULL, pid INTEGER NOT NULL,
             start_time INTEGER NOT NULL, marker TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS ports (unit TEXT PRIMARY KEY, port INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS restarts (unit TEXT PRIMARY KEY, count INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS definitions (unit TEXT PRIMARY KEY, body TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS trees (
             unit TEXT NOT NULL, generation INTEGER NOT NULL, pid INTEGER NOT NULL,
             start_time INTEGER NOT NULL, PRIMARY KEY (unit, generation, pid));
         CREATE TABLE IF NOT EXISTS template_instances (
             name TEXT PRIMARY KEY, record TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS events (
             id INTEGER PRIMARY KEY AUTOINCREMENT, time_ms INTEGER NOT NULL,
             unit TEXT NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL,
             state TEXT NOT NULL DEFAULT '');
         COMMIT;",
    )?;
    if version == 1 {
        // Schema 1 named process records "instances" (a word now kept for template
        // instances) and kept no state with an event.
        conn.execute_batch(
            "BEGIN;
             DROP TABLE processes;
             ALTER TABLE instances RENAME TO processes;
             ALTER TABLE processes RENAME COLUMN instance TO generation;
             ALTER TABLE events ADD COLUMN state TEXT NOT NULL DEFAULT '';
             COMMIT;",
        )?;
    }
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    Ok(())
}

impl Store {
    /// Open (or create) `state_dir/state.db`.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        let path = state_dir.join("state.db");
        let corrupt = |source| StoreError::Corrupt {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(|source| StoreError::Sql {
            path: path.clone(),
            source,
        })?;
        // The first statement is the one that discovers a file that is not a database.
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(corrupt)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Newer {
                path,
                found: version,
            });
        }
        // Per connection.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(corrupt)?;
        // The last connection to close does not copy the log into the database: that was three
        // syncs as every daemon ended, and the next one to write then began a new log, a sync
        // more as it started. Its next write appends to the log instead; the daemon shortens
        // the log at a quiet moment (`shorten_log`), SQLite's automatic checkpoints at 1,000
        // pages.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )
        .map_err(corrupt)?;
        // Long enough for a slow disk under load; a waiter blocks its owner (and that owner's
        // worker thread) meanwhile, so writers keep their transactions short.
        conn.busy_timeout(Duration::from_secs(5)).map_err(corrupt)?;
        // A database of this schema is ready as it is (WAL mode is kept in the file): each of
        // the daemon's owners opens a connection as it starts, and every write is a transaction.
        if version != SCHEMA_VERSION {
            migrate(&conn, version).map_err(corrupt)?;
        }
        Ok(Store {
            conn,
            path,
            inserts: 0,
            tx_wanted: Default::default(),
        })
    }

    fn sql(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sql {
            path: self.path.clone(),
            source,
        }
    }

    /// Group the changes that follow into one transaction (ended by [`Store::commit`]).
    ///
    /// The transaction opens at the first write, with `BEGIN IMMEDIATE`: three owners write
    /// to this file through their own connections, and a deferred transaction that has read
    /// fails at once ("database is locked", no busy wait) when it comes to write after another
    /// connection committed. Opening at the first write also keeps the write lock off steps
    /// that only read.
    pub fn begin(&self) -> Result<(), StoreError> {
        self.tx_wanted.set(true);
        Ok(())
    }

    /// The connection, for a statement that writes: inside a transaction if one is wanted.
    fn writer(&self) -> Result<&Connection, StoreError> {
        if self.tx_wanted.get() && self.conn.is_autocommit() {
            self.conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(|e| self.sql(e))?;
        }
        Ok(&self.conn)
    }

    /// If the log has grown past [`LOG_KEPT`], copy it into the database and empty it
    /// (syncs: for a moment nothing waits on, not a start's or a stop's path). Returns whether
    /// it did. Outside a transaction; another connection's reader can make it give up, harmless.
    pub fn shorten_log(&self) -> Result<bool, StoreError> {
        let log = self.path.with_extension("db-wal");
        if std::fs::metadata(&log).map_or(0, |m| m.len()) < LOG_KEPT {
            return Ok(false);
        }
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(|e| self.sql(e))?;
        Ok(true)
    }

    pub fn commit(&self) -> Result<(), StoreError> {
        self.tx_wanted.set(false);
        if self.conn.is_autocommit() {
            return Ok(());
        }
        self.conn.execute_batch("COMMIT").map_err(|e| self.sql(e))
    }

    pub fn set_held(&self, unit: &str, held: bool) -> Result<(), StoreError> {
        let sql = if held {
            "INSERT OR IGNORE INTO held (unit) VALUES (?1)"
        } else {
            "DELETE FROM held WHERE unit = ?1"
        };
        self.writer()?
            .execute(sql, [unit])
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    pub fn held(&self) -> Result<Vec<String>, StoreError> {
        self.strings("SELECT unit FROM held ORDER BY unit")
    }

    fn strings(&self, sql: &str) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| self.sql(e))?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(|e| self.sql(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sql(e))
    }

    /// Record a new process of `unit`, replacing the last one.
    pub fn put_process(&self, rec: &ProcessRecord) -> Result<(), StoreError> {
        self.writer()?
            .prepare_cached(
                "INSERT OR REPLACE INTO processes (unit, generation, pid, start_time, marker)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    rec.unit,
                    rec.generation as i64,
                    rec.pid,
                    rec.start_time as i64,
                    rec.marker
                ])
            })
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    /// The process of `unit` has ended (only if it is still this generation).
    pub fn remove_process(&self, unit: &str, generation: u64) -> Result<(), StoreError> {
        self.writer()?
            .prepare_cached("DELETE FROM processes WHERE unit = ?1 AND generation = ?2")
            .and_then(|mut s| s.execute(params![unit, generation as i64]))
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    pub fn processes(&self) -> Result<Vec<ProcessRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT unit, generation, pid, start_time, marker FROM processes ORDER BY unit",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(ProcessRecord {
                    unit: r.get(0)?,
                    generation: r.get::<_, i64>(1)? as u64,
                    pid: r.get(2)?,
                    start_time: r.get::<_, i64>(3)? as u64,
                    marker: r.get(4)?,
                })
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sql(e))
    }

    pub fn port(&self, unit: &str) -> Result<Option<u16>, StoreError> {
        self.conn
            .query_row("SELECT port FROM ports WHERE unit = ?1", [unit], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.sql(e))
    }

    pub fn set_port(&self, unit: &str, port: u16) -> Result<(), StoreError> {
        self.writer()?
            .execute(
                "INSERT OR REPLACE INTO ports (unit, port) VALUES (?1, ?2)",
                params![unit, port],
            )
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    pub fn set_restarts(&self, unit: &str, count: u32) -> Result<(), StoreError> {
        self.writer()?
            .prepare_cached("INSERT OR REPLACE INTO restarts (unit, count) VALUES (?1, ?2)")
            .and_then(|mut s| s.execute(params![unit, count]))
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    pub fn restarts(&self, unit: &str) -> Result<u32, StoreError> {
        self.conn
            .query_row("SELECT count FROM restarts WHERE unit = ?1", [unit], |r| {
                r.get(0)
            })
            .optional()
            .map(Option::unwrap_or_default)
            .map_err(|e| self.sql(e))
    }

    /// Services added at run time: name → definition (the same keys as in `corral.toml`, as
    /// JSON).
    pub fn definitions(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT unit, body FROM definitions ORDER BY unit")
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sql(e))
    }

    pub fn put_definition(&self, unit: &str, body: &str) -> Result<(), StoreError> {
        self.writer()?
            .execute(
                "INSERT OR REPLACE INTO definitions (unit, body) VALUES (?1, ?2)",
                params![unit, body],
            )
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    /// Instances of templates: name → their record (JSON, owned by the runtime).
    pub fn template_instances(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, record FROM template_instances ORDER BY name")
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sql(e))
    }

    pub fn put_template_instance(&self, name: &str, record: &str) -> Result<(), StoreError> {
        self.writer()?
            .execute(
                "INSERT OR REPLACE INTO template_instances (name, record) VALUES (?1, ?2)",
                params![name, record],
            )
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    pub fn remove_template_instance(&self, name: &str) -> Result<(), StoreError> {
        self.writer()?
            .execute("DELETE FROM template_instances WHERE name = ?1", [name])
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    /// Forget everything about a unit that was removed.
    pub fn forget(&self, unit: &str) -> Result<(), StoreError> {
        // A savepoint: atomic on its own, and nests inside the supervisor's step transaction.
        self.writer()?
            .execute_batch("SAVEPOINT forget")
            .map_err(|e| self.sql(e))?;
        for table in ["definitions", "held", "ports", "restarts"] {
            if let Err(e) = self
                .conn
                .execute(&format!("DELETE FROM {table} WHERE unit = ?1"), [unit])
            {
                let _ = self
                    .conn
                    .execute_batch("ROLLBACK TO forget; RELEASE forget");
                return Err(self.sql(e));
            }
        }
        self.conn
            .execute_batch("RELEASE forget")
            .map_err(|e| self.sql(e))
    }

    pub fn add_event(
        &mut self,
        unit: &str,
        kind: &str,
        state: &str,
        message: &str,
    ) -> Result<(), StoreError> {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        self.writer()?
            .prepare_cached(
                "INSERT INTO events (time_ms, unit, kind, state, message) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| s.execute(params![ms, unit, kind, state, message]))
            .map_err(|e| self.sql(e))?;
        self.inserts += 1;
        // Trim now and then rather than on every insert.
        if self.inserts.is_multiple_of(256) {
            self.writer()?
                .execute(
                    "DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - ?1",
                    [EVENT_HISTORY],
                )
                .map_err(|e| self.sql(e))?;
        }
        Ok(())
    }

    /// The descendants of `unit`'s process `generation`, as last seen: (pid, start time).
    pub fn set_tree(
        &self,
        unit: &str,
        generation: u64,
        tree: &[(u32, u64)],
    ) -> Result<(), StoreError> {
        self.forget_tree(unit, generation)?;
        let mut stmt = self
            .writer()?
            .prepare_cached(
                "INSERT OR REPLACE INTO trees (unit, generation, pid, start_time) VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(|e| self.sql(e))?;
        for (pid, start) in tree {
            stmt.execute(params![unit, generation as i64, *pid as i64, *start as i64])
                .map_err(|e| self.sql(e))?;
        }
        Ok(())
    }

    pub fn tree(&self, unit: &str, generation: u64) -> Result<Vec<(u32, u64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT pid, start_time FROM trees WHERE unit = ?1 AND generation = ?2")
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map(params![unit, generation as i64], |r| {
                Ok((r.get::<_, i64>(0)? as u32, r.get::<_, i64>(1)? as u64))
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sql(e))
    }

    /// Every recorded descendant: (pid, start time).
    pub fn all_trees(&self) -> Result<Vec<(u32, u64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT pid, start_time FROM trees")
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, i64>(0)? as u32, r.get::<_, i64>(1)? as u64))
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sql(e))
    }

    pub fn forget_tree(&self, unit: &str, generation: u64) -> Result<(), StoreError> {
        self.writer()?
            .prepare_cached("DELETE FROM trees WHERE unit = ?1 AND generation = ?2")
            .and_then(|mut s| s.execute(params![unit, generation as i64]))
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    /// The PIDs of the corrals that ran this project before (their markers name them), most
    /// recent last; and record `me` as the newest.
    pub fn previous_daemons(&self, me: u32) -> Result<Vec<u32>, StoreError> {
        let old: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'daemons'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.sql(e))?;
        let mut pids: Vec<u32> = old
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        let before = pids.clone();
        pids.retain(|p| *p != me);
        pids.push(me);
        // A few are enough: a marker outlives its daemon only as long as its processes do.
        let keep = pids.len().saturating_sub(8);
        let list: Vec<String> = pids[keep..].iter().map(u32::to_string).collect();
        self.writer()?
            .execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('daemons', ?1)",
                [list.join(" ")],
            )
            .map_err(|e| self.sql(e))?;
        Ok(before.into_iter().filter(|p| *p != me).collect())
    }

    /// Forget the daemons [`Store::previous_daemons`] listed, this one too: they left nothing
    /// running.
    pub fn forget_daemons(&self) -> Result<(), StoreError> {
        self.writer()?
            .execute("DELETE FROM meta WHERE key = 'daemons'", [])
            .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// The cgroups of the daemons that ran this project before (see `corral_runtime::cgroup`)
    /// and were not removed yet, oldest first.
    pub fn previous_cgroups(&self) -> Result<Vec<String>, StoreError> {
        let old: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'cgroups'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.sql(e))?;
        Ok(old
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }

    /// Record the daemons' cgroups that still exist (see [`Store::previous_cgroups`]).
    pub fn set_cgroups(&self, cgroups: &[String]) -> Result<(), StoreError> {
        self.writer()?
            .execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('cgroups', ?1)",
                [cgroups.join("\n")],
            )
            .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// The last `limit` events, oldest first.
    pub fn events(&self, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, time_ms, unit, kind, message, state FROM
                   (SELECT * FROM events ORDER BY id DESC LIMIT ?1) ORDER BY id",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                Ok(EventRecord {
                    id: r.get(0)?,
                    time: UNIX_EPOCH + Duration::from_millis(r.get::<_, i64>(1)?.max(0) as u64),
                    unit: r.get(2)?,
                    kind: r.get(3)?,
                    message: r.get(4)?,
                    state: r.get(5)?,
                })
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sql(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Store::open(dir.path()).unwrap();
            s.set_held("web", true).unwrap();
            s.set_port("api", 41000).unwrap();
            s.put_process(&ProcessRecord {
                unit: "api".into(),
                generation: 3,
                pid: 1234,
                start_time: 99,
                marker: "1/api/3".into(),
            })
            .unwrap();
            s.add_event("api", "state", "running", "running").unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.held().unwrap(), ["web"]);
        assert_eq!(s.port("api").unwrap(), Some(41000));
        assert_eq!(s.processes().unwrap()[0].pid, 1234);
        s.remove_process("api", 2).unwrap();
        assert_eq!(s.processes().unwrap().len(), 1, "another generation: kept");
        s.remove_process("api", 3).unwrap();
        assert!(s.processes().unwrap().is_empty());
        s.put_definition("extra", "command = \"true\"").unwrap();
        s.begin().unwrap();
        s.forget("extra").unwrap();
        s.commit().unwrap();
        assert!(s.definitions().unwrap().is_empty());
        assert_eq!(s.events(10).unwrap()[0].message, "running");
    }

    /// Each of the daemon's owners opens the store as it starts: a database already of this
    /// schema is opened without a write.
    #[test]
    fn opening_a_current_database_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let first = Store::open(dir.path()).unwrap();
        let wal = dir.path().join("state.db-wal");
        let before = std::fs::metadata(&wal).unwrap().len();
        let second = Store::open(dir.path()).unwrap();
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), before);
        drop((first, second));
    }

    /// The last connection to close leaves the log as it is (no checkpoint and its syncs); the
    /// next store reads what it holds.
    #[test]
    fn a_closed_store_leaves_its_log_for_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.set_port("api", 41000).unwrap();
        drop(s);
        let wal = dir.path().join("state.db-wal");
        assert!(std::fs::metadata(&wal).unwrap().len() > 0);
        assert_eq!(
            Store::open(dir.path()).unwrap().port("api").unwrap(),
            Some(41000)
        );
    }

    #[test]
    fn a_long_log_is_shortened_and_a_short_one_left() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let wal = dir.path().join("state.db-wal");
        s.set_port("api", 41000).unwrap();
        assert!(!s.shorten_log().unwrap(), "a log of a few pages stays");
        let short = std::fs::metadata(&wal).unwrap().len();
        assert!(short > 0 && short < LOG_KEPT);
        // Each commit of a new definition adds pages to the log.
        let body = "x".repeat(8000);
        for i in 0..40 {
            s.put_definition(&format!("unit-{i}"), &body).unwrap();
        }
        assert!(std::fs::metadata(&wal).unwrap().len() >= LOG_KEPT);
        assert!(s.shorten_log().unwrap());
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0);
        drop(s);
        let again = Store::open(dir.path()).unwrap();
        assert_eq!(again.port("api").unwrap(), Some(41000));
        assert_eq!(again.definitions().unwrap().len(), 40);
    }

    /// Owners write through their own connections: a step that read before another owner
    /// committed still writes (a deferred transaction failed here with "database is locked").
    #[test]
    fn a_step_that_read_can_write_after_another_connection_did() {
        let dir = tempfile::tempdir().unwrap();
        let a = Store::open(dir.path()).unwrap();
        let b = Store::open(dir.path()).unwrap();
        a.begin().unwrap();
        assert!(a.held().unwrap().is_empty());
        b.put_template_instance("ide-1", "{}").unwrap();
        a.set_held("web", true).unwrap();
        a.put_definition("extra", "{}").unwrap();
        a.commit().unwrap();
        assert_eq!(b.held().unwrap(), ["web"]);
        assert_eq!(a.template_instances().unwrap().len(), 1);
    }

    #[test]
    fn daemons_are_listed_until_one_ends_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert!(s.previous_daemons(10).unwrap().is_empty());
        assert_eq!(s.previous_daemons(11).unwrap(), [10]);
        for pid in 12..30 {
            s.previous_daemons(pid).unwrap();
        }
        // A few are kept, most recent last.
        assert_eq!(
            s.previous_daemons(30).unwrap(),
            (22..30).collect::<Vec<_>>()
        );
        s.forget_daemons().unwrap();
        assert!(s.previous_daemons(31).unwrap().is_empty());
        assert_eq!(s.previous_daemons(32).unwrap(), [31]);
    }

    #[test]
    fn event_history_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        for i in 0..(EVENT_HISTORY + 600) {
            s.add_event("u", "state", "", &i.to_string()).unwrap();
        }
        let n: i64 = s
            .conn
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .unwrap();
        assert!(n <= EVENT_HISTORY + 256, "{n}");
    }

    #[test]
    fn corrupt_and_newer_databases_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("state.db"), vec![b'x'; 4096]).unwrap();
        let err = Store::open(dir.path()).err().unwrap();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("not a corral state database"));

        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join("state.db")).unwrap();
        conn.pragma_update(None, "user_version", 7).unwrap();
        drop(conn);
        let err = Store::open(dir.path()).err().unwrap();
        assert!(err.to_string().contains("newer corral"), "{err}");
    }
}
