//! Alert state that survives restarts: `<state_dir>/alerts.sqlite` (WAL), next to the history
//! store and for the same reasons (rusqlite `bundled`: one self-contained file, transactions,
//! crash-safe).
//!
//! ```sql
//! CREATE TABLE state  (id INTEGER PRIMARY KEY CHECK (id = 1), json TEXT NOT NULL); -- EngineState
//! CREATE TABLE events (seq INTEGER PRIMARY KEY, at TEXT NOT NULL, json TEXT NOT NULL); -- Transition + Alert
//! ```
//! The engine state is rewritten as one row after every change (a few KB: alerts and
//! silences); `events` is the append-only alert history, pruned to `MAX_EVENTS` rows.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::{engine::EngineState, Alert, Transition};

pub const STORE_FILE: &str = "alerts.sqlite";
const MAX_EVENTS: i64 = 100_000;
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS state (id INTEGER PRIMARY KEY CHECK (id = 1), json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, at TEXT NOT NULL, json TEXT NOT NULL);
";

/// One line of the alert history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub transition: Transition,
    pub alert: Alert,
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Open or create the store in `dir` (which must exist).
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(STORE_FILE);
        let conn = crate::util::sqlite::open(&path, "alert store", SCHEMA, SCHEMA_VERSION)?;
        Ok(Store { conn, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The persisted engine state, if any.
    pub fn load(&self) -> Result<Option<EngineState>> {
        let json: Option<String> = self.conn.query_row("SELECT json FROM state WHERE id = 1", [], |r| r.get(0)).optional()?;
        json.map(|j| serde_json::from_str(&j).with_context(|| format!("{}: state row is not valid", self.path.display())))
            .transpose()
    }

    /// Replace the state and append `events`, in one transaction.
    pub fn save(&mut self, state: &EngineState, events: &[Event]) -> Result<()> {
        let json = serde_json::to_string(state)?;
        let tx = self.conn.transaction()?;
        tx.execute("INSERT OR REPLACE INTO state (id, json) VALUES (1, ?1)", params![json])?;
        for e in events {
            tx.execute("INSERT INTO events (at, json) VALUES (?1, ?2)", params![e.transition.at, serde_json::to_string(e)?])?;
        }
        if !events.is_empty() {
            tx.execute("DELETE FROM events WHERE seq <= (SELECT MAX(seq) FROM events) - ?1", params![MAX_EVENTS])?;
        }
        tx.commit().with_context(|| format!("writing {}", self.path.display()))
    }

    /// Copy the WAL into the main file and empty it (on stop: one complete file).
    pub fn checkpoint(&self) -> Result<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .with_context(|| format!("checkpoint {}", self.path.display()))
    }

    /// The newest `limit` events, oldest first.
    pub fn events(&self, limit: usize) -> Result<Vec<Event>> {
        let mut st = self.conn.prepare("SELECT json FROM events ORDER BY seq DESC LIMIT ?1")?;
        let rows = st.query_map(params![limit as i64], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for j in rows {
            // A row this version cannot read is skipped, not fatal: the history is informative.
            if let Ok(e) = serde_json::from_str(&j?) {
                out.push(e);
            }
        }
        out.reverse();
        Ok(out)
    }
}
