//! The on-disk history: one SQLite file (`<state_dir>/history.sqlite`, WAL mode).
//!
//! Why SQLite through `rusqlite` with the `bundled` feature: SQLite is compiled into the binary,
//! so hosts need no system library (the release binary stays self-contained); the whole history
//! is one file under `state_dir`; each write is a transaction and WAL keeps the file consistent
//! through crashes and power loss while another process (`wsguard report`) reads it.
//!
//! Schema (`user_version` 2):
//! ```sql
//! CREATE TABLE snapshots (
//!     id         INTEGER PRIMARY KEY,  -- insertion order
//!     ts         INTEGER NOT NULL,     -- snapshot time, unix seconds (UTC)
//!     active     INTEGER NOT NULL,     -- WebSocket connections active (sum over processes)
//!     json       TEXT    NOT NULL,     -- the Snapshot exactly as /api/v1/snapshot serves it
//!     sse_active INTEGER NOT NULL DEFAULT 0  -- SSE streams open (version 2)
//! );
//! CREATE INDEX snapshots_ts ON snapshots (ts);
//! ```
//! Storing the JSON keeps the schema stable while the snapshot grows (a row written before a
//! field existed loads with that field at its default: SSE numbers of version-1 rows read as
//! zero); `ts`, `active` and `sse_active` are the columns queries and downsampling need.
//! Version 1 files get `sse_active` by migration (`ALTER TABLE … ADD COLUMN`, 0 for old rows)
//! when the agent opens them; downsampling keeps the row with the most connections *and*
//! streams open, so an SSE server's peaks survive as a WebSocket server's do.

use std::{
    io::Write,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::{Context, Result};
use rusqlite::{params, Connection};
use serde::Serialize;

use super::HistoryConfig;
use crate::model::snapshot::Snapshot;

const SCHEMA_VERSION: i64 = 2;

/// Version 1 → 2: the open SSE streams beside the WebSocket connections.
const MIGRATIONS: &[(i64, &str)] = &[(2, "ALTER TABLE snapshots ADD COLUMN sse_active INTEGER NOT NULL DEFAULT 0;")];

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS snapshots (
    id     INTEGER PRIMARY KEY,
    ts     INTEGER NOT NULL,
    active INTEGER NOT NULL,
    json   TEXT    NOT NULL,
    sse_active INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS snapshots_ts ON snapshots (ts);
";

/// Rows removed by one prune.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PruneStats {
    /// Older than `retention`.
    pub expired: u64,
    /// Older than `full_resolution` and not the peak of their `downsample_interval` bucket.
    pub downsampled: u64,
}

/// Active WebSocket connections in a snapshot (sum over its processes; `totals` if none).
pub fn active_connections(s: &Snapshot) -> u64 {
    if s.processes.is_empty() {
        s.totals.connections_active
    } else {
        s.processes.iter().map(|p| p.websocket.connections_active).sum()
    }
}

/// Open SSE streams in a snapshot (sum over its processes; `sse_totals` if none).
pub fn active_streams(s: &Snapshot) -> u64 {
    if s.processes.is_empty() {
        s.sse_totals.streams_active
    } else {
        s.processes.iter().map(|p| p.sse.streams_active).sum()
    }
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// Rows whose JSON could not be decoded (skipped on read).
    decode_errors: AtomicU64,
}

impl Store {
    /// Open or create the store (the directory must exist).
    pub fn open(path: &Path) -> Result<Self> {
        let conn = crate::util::sqlite::open_migrating(path, "history store", SCHEMA, SCHEMA_VERSION, MIGRATIONS)?;
        Ok(Self { conn, path: path.into(), decode_errors: AtomicU64::new(0) })
    }

    /// Open an existing store read-only (for `wsguard report`/`replay` beside a running agent).
    pub fn open_read_only(path: &Path) -> Result<Self> {
        let conn = crate::util::sqlite::open_read_only(path, "history store")?;
        Ok(Self { conn, path: path.into(), decode_errors: AtomicU64::new(0) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn ctx(&self, what: &str) -> String {
        format!("history store {}: {what}", self.path.display())
    }

    /// Copy the WAL into the main file and empty it (on stop and after a prune: one compact
    /// file).
    pub fn checkpoint(&self) -> Result<()> {
        self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).with_context(|| self.ctx("checkpoint"))
    }

    /// Insert one snapshot taken at `ts` (unix seconds), in a transaction.
    pub fn insert(&self, ts: i64, snap: &Snapshot) -> Result<()> {
        let json = serde_json::to_string(snap).context("encode snapshot")?;
        let tx = self.conn.unchecked_transaction().with_context(|| self.ctx("begin"))?;
        tx.execute(
            "INSERT INTO snapshots (ts, active, json, sse_active) VALUES (?1, ?2, ?3, ?4)",
            params![ts, active_connections(snap) as i64, json, active_streams(snap) as i64],
        )
        .with_context(|| self.ctx("insert"))?;
        tx.commit().with_context(|| self.ctx("commit"))
    }

    /// Retention and downsampling as of `now` (unix seconds), in one transaction. Downsampling
    /// is idempotent: buckets are aligned to multiples of the interval, so re-running it as the
    /// full-resolution edge moves still leaves the bucket's peak.
    pub fn prune(&self, now: i64, cfg: &HistoryConfig) -> Result<PruneStats> {
        let expire_before = now.saturating_sub(cfg.retention.as_secs() as i64);
        let full_after = now.saturating_sub(cfg.full_resolution.as_secs() as i64);
        let interval = cfg.downsample_interval.as_secs() as i64;
        let tx = self.conn.unchecked_transaction().with_context(|| self.ctx("begin"))?;
        let expired = tx
            .execute("DELETE FROM snapshots WHERE ts < ?1", params![expire_before])
            .with_context(|| self.ctx("retention"))? as u64;
        let downsampled = if interval > 0 {
            tx.execute(
                "DELETE FROM snapshots WHERE ts < ?1 AND id NOT IN (
                    SELECT id FROM (
                        SELECT id, ROW_NUMBER() OVER (
                            PARTITION BY ts / ?2 ORDER BY active + sse_active DESC, id DESC) AS rn
                        FROM snapshots WHERE ts < ?1)
                    WHERE rn = 1)",
                params![full_after, interval],
            )
            .with_context(|| self.ctx("downsample"))? as u64
        } else {
            0
        };
        tx.commit().with_context(|| self.ctx("commit"))?;
        Ok(PruneStats { expired, downsampled })
    }

    fn decode(&self, json: &str) -> Option<Snapshot> {
        match serde_json::from_str(json) {
            Ok(s) => Some(s),
            Err(_) => {
                self.decode_errors.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Rows that could not be decoded so far (skipped).
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors.load(Ordering::Relaxed)
    }

    /// The `n` most recent snapshots, oldest first.
    pub fn recent(&self, n: usize) -> Result<Vec<Snapshot>> {
        let mut stmt = self
            .conn
            .prepare("SELECT json FROM snapshots ORDER BY ts DESC, id DESC LIMIT ?1")
            .with_context(|| self.ctx("load recent"))?;
        let rows = stmt.query_map(params![n as i64], |r| r.get::<_, String>(0)).with_context(|| self.ctx("load recent"))?;
        let mut out = Vec::new();
        for json in rows {
            out.extend(self.decode(&json.with_context(|| self.ctx("load recent"))?));
        }
        out.reverse();
        Ok(out)
    }

    /// Snapshots with `from <= ts < to` (unix seconds; `to` None: no end), oldest first.
    pub fn range(&self, from: i64, to: Option<i64>) -> Result<Vec<Snapshot>> {
        let mut out = Vec::new();
        self.each_json(from, to, |json| {
            out.extend(self.decode(json));
            Ok(())
        })?;
        Ok(out)
    }

    /// Write `from <= ts < to` as JSON lines (the stored JSON, one snapshot per line).
    pub fn export_jsonl(&self, from: i64, to: Option<i64>, w: &mut dyn Write) -> Result<u64> {
        let mut n = 0;
        self.each_json(from, to, |json| {
            w.write_all(json.as_bytes())?;
            w.write_all(b"\n")?;
            n += 1;
            Ok(())
        })?;
        Ok(n)
    }

    fn each_json(&self, from: i64, to: Option<i64>, mut f: impl FnMut(&str) -> Result<()>) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT json FROM snapshots WHERE ts >= ?1 AND (?2 IS NULL OR ts < ?2)
                 ORDER BY ts, id",
            )
            .with_context(|| self.ctx("query"))?;
        let mut rows = stmt.query(params![from, to]).with_context(|| self.ctx("query"))?;
        while let Some(row) = rows.next().with_context(|| self.ctx("query"))? {
            let json = row.get_ref(0)?.as_str()?;
            f(json)?;
        }
        Ok(())
    }

    /// Rows stored.
    pub fn count(&self) -> Result<u64> {
        let n: i64 =
            self.conn.query_row("SELECT COUNT(*) FROM snapshots", [], |r| r.get(0)).with_context(|| self.ctx("count"))?;
        Ok(n as u64)
    }
}
