//! The outbox: every notice is stored before `submit` returns and removed only once its receiver
//! accepted it. One SQLite file, `<state_dir>/notify.db` (WAL, `synchronous = FULL`: a committed
//! notice survives a crash and a power cut).
//!
//! Schema (`user_version` 1):
//! ```sql
//! CREATE TABLE outbox (
//!     seq        INTEGER PRIMARY KEY, -- global order; per channel, notices go out by seq
//!     id         TEXT NOT NULL UNIQUE,-- the notification id receivers see
//!     channel    TEXT NOT NULL,
//!     created_ms INTEGER NOT NULL,    -- unix ms, for max_age
//!     notice     TEXT NOT NULL        -- the Notice as JSON
//! );
//! CREATE TABLE state (key TEXT PRIMARY KEY, json TEXT NOT NULL); -- 'plan': the planner's state
//! ```
//! When the file cannot be opened or written (read-only or full disk), notices and state are
//! kept in memory, the problem is logged once and shown in the stats, and the file is retried
//! every 30 s; what accumulated is then written in order.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OptionalExtension};

use super::notice::Notice;

const SCHEMA_VERSION: i64 = 1;
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS outbox (
    seq        INTEGER PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    channel    TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    notice     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_channel ON outbox (channel, seq);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, json TEXT NOT NULL);
";
const RETRY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Row {
    pub seq: u64,
    pub notice: Notice,
}

/// Undelivered notices of one channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pending {
    pub count: u64,
    pub oldest_created_ms: u64,
}

pub struct Outbox {
    path: PathBuf,
    db: Option<Connection>,
    /// Notices not (yet) in the file, by seq.
    mem: BTreeMap<u64, Notice>,
    /// Plan state not yet in the file.
    mem_state: Option<String>,
    /// Delivered notices whose DELETE failed (id → channel): skipped, deleted later.
    undeleted: BTreeMap<String, String>,
    next_seq: u64,
    error: Option<String>,
    retry_at: Instant,
    retry: Duration,
}

fn open_db(path: &Path) -> Result<Connection> {
    crate::util::sqlite::open(path, "notification outbox", SCHEMA, SCHEMA_VERSION)
}

fn micros_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_micros() as u64
}

impl Outbox {
    /// Open (or create) the file; on failure the outbox works in memory. Returns the stored
    /// plan state, if any.
    pub fn open(path: &Path) -> (Self, Option<String>) {
        let mut ob = Outbox {
            path: path.to_path_buf(),
            db: None,
            mem: BTreeMap::new(),
            mem_state: None,
            undeleted: BTreeMap::new(),
            next_seq: micros_now(),
            error: None,
            retry_at: Instant::now() + RETRY,
            retry: RETRY,
        };
        let mut state = None;
        match open_db(path).and_then(|c| {
            let max: Option<i64> = c.query_row("SELECT max(seq) FROM outbox", [], |r| r.get(0))?;
            let st: Option<String> = c.query_row("SELECT json FROM state WHERE key = 'plan'", [], |r| r.get(0)).optional()?;
            Ok((c, max, st))
        }) {
            Ok((c, max, st)) => {
                // Seqs continue past the file's; starting at the clock keeps rows made in memory
                // (file unavailable) after the file's old rows when it comes back.
                ob.next_seq = ob.next_seq.max(max.unwrap_or(0) as u64 + 1);
                ob.db = Some(c);
                state = st;
            }
            Err(e) => ob.degrade(format!("cannot open {}: {e:#}", path.display())),
        }
        (ob, state)
    }

    fn degrade(&mut self, msg: String) {
        if self.error.is_none() {
            tracing::error!(error = %msg, "notification outbox: keeping notices in memory until the file works again");
        }
        self.error = Some(msg);
        self.retry_at = Instant::now() + self.retry;
    }

    /// How often a degraded outbox retries the file (tests).
    #[cfg(test)]
    pub fn retry_every(&mut self, d: Duration) {
        self.retry = d;
        self.retry_at = Instant::now() + d;
    }

    /// "sqlite" or "memory", and the last storage error while degraded.
    pub fn storage(&self) -> (&'static str, Option<&str>) {
        let mode = if self.db.is_some() && self.mem.is_empty() && self.mem_state.is_none() { "sqlite" } else { "memory" };
        (mode, self.error.as_deref())
    }

    /// Store notices (in this order) and the plan state in one transaction.
    pub fn append(&mut self, notices: Vec<Notice>, state: String) {
        for n in notices {
            self.mem.insert(self.next_seq, n);
            self.next_seq += 1;
        }
        self.mem_state = Some(state);
        let degraded = self.error.is_some();
        if !degraded || Instant::now() >= self.retry_at {
            self.write_through();
        }
    }

    /// Move what is in memory to the file (reopening it if needed).
    fn write_through(&mut self) {
        if self.db.is_none() {
            match open_db(&self.path) {
                Ok(c) => self.db = Some(c),
                Err(e) => return self.degrade(format!("cannot open {}: {e:#}", self.path.display())),
            }
        }
        let db = self.db.as_mut().expect("opened");
        let res = (|| -> Result<()> {
            let tx = db.transaction()?;
            let max: Option<i64> = tx.query_row("SELECT max(seq) FROM outbox", [], |r| r.get(0))?;
            // Only if the clock went back past the file's rows: renumber after them.
            let shift = match (max, self.mem.keys().next()) {
                (Some(m), Some(&first)) if first <= m as u64 => m as u64 + 1 - first,
                _ => 0,
            };
            for (seq, n) in &self.mem {
                tx.execute(
                    "INSERT INTO outbox (seq, id, channel, created_ms, notice) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![(seq + shift) as i64, n.id, n.channel, n.created_ms as i64, serde_json::to_string(n)?],
                )?;
            }
            if let Some(s) = &self.mem_state {
                tx.execute("INSERT OR REPLACE INTO state (key, json) VALUES ('plan', ?1)", params![s])?;
            }
            for id in self.undeleted.keys() {
                tx.execute("DELETE FROM outbox WHERE id = ?1", params![id])?;
            }
            tx.commit()?;
            self.next_seq += shift;
            Ok(())
        })();
        match res {
            Ok(()) => {
                self.mem.clear();
                self.mem_state = None;
                self.undeleted.clear();
                if self.error.take().is_some() {
                    tracing::info!(path = %self.path.display(), "notification outbox: file writable again, memory backlog stored");
                }
            }
            Err(e) => self.degrade(format!("cannot write {}: {e:#}", self.path.display())),
        }
    }

    /// Oldest undelivered notice of a channel.
    pub fn head(&mut self, channel: &str) -> Option<Row> {
        let mem = self.mem.iter().find(|(_, n)| n.channel == channel).map(|(s, n)| Row { seq: *s, notice: n.clone() });
        let from_db = self.db_head(channel);
        match (from_db, mem) {
            (Some(d), Some(m)) => Some(if d.seq < m.seq { d } else { m }),
            (d, m) => d.or(m),
        }
    }

    fn db_head(&mut self, channel: &str) -> Option<Row> {
        let db = self.db.as_ref()?;
        let mut after = -1i64;
        loop {
            let r: rusqlite::Result<Option<(i64, String, String)>> = db
                .query_row(
                    "SELECT seq, id, notice FROM outbox WHERE channel = ?1 AND seq > ?2 ORDER BY seq LIMIT 1",
                    params![channel, after],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional();
            let (seq, id, json) = match r {
                Ok(Some(x)) => x,
                Ok(None) => return None,
                Err(e) => {
                    self.degrade(format!("cannot read {}: {e}", self.path.display()));
                    return None;
                }
            };
            after = seq;
            if self.undeleted.contains_key(&id) {
                continue;
            }
            match serde_json::from_str::<Notice>(&json) {
                Ok(notice) => return Some(Row { seq: seq as u64, notice }),
                Err(e) => {
                    tracing::error!(channel, id, error = %e, "notification outbox: undecodable notice removed");
                    let _ = db.execute("DELETE FROM outbox WHERE id = ?1", params![id]);
                }
            }
        }
    }

    /// Forget a delivered (or dropped) notice.
    pub fn remove(&mut self, n: &Notice) {
        if let Some(seq) = self.mem.iter().find(|(_, m)| m.id == n.id).map(|(s, _)| *s) {
            self.mem.remove(&seq);
            return;
        }
        let Some(db) = self.db.as_ref() else { return };
        if let Err(e) = db.execute("DELETE FROM outbox WHERE id = ?1", params![n.id]) {
            self.undeleted.insert(n.id.clone(), n.channel.clone());
            self.degrade(format!("cannot delete from {}: {e}", self.path.display()));
        }
    }

    /// Undelivered notices per channel.
    pub fn pending(&mut self) -> BTreeMap<String, Pending> {
        let mut out: BTreeMap<String, Pending> = BTreeMap::new();
        let mut add = |ch: &str, count: u64, oldest: u64| {
            let p = out.entry(ch.to_string()).or_default();
            p.oldest_created_ms = if p.count == 0 { oldest } else { p.oldest_created_ms.min(oldest) };
            p.count += count;
        };
        if let Some(db) = self.db.as_ref() {
            let rows = db
                .prepare_cached("SELECT channel, count(*), min(created_ms) FROM outbox GROUP BY channel")
                .and_then(|mut st| {
                    st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .context("count pending");
            match rows {
                Ok(rows) => rows.iter().for_each(|(c, n, o)| add(c, *n as u64, *o as u64)),
                Err(e) => tracing::debug!(error = %e, "notification outbox"),
            }
        }
        for n in self.mem.values() {
            add(&n.channel, 1, n.created_ms);
        }
        for ch in self.undeleted.values() {
            if let Some(p) = out.get_mut(ch) {
                p.count = p.count.saturating_sub(1);
            }
        }
        out.retain(|_, p| p.count > 0);
        out
    }
}
