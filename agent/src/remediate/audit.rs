//! The audit log: `<state_dir>/remediation.db`, one SQLite table that only grows. Triggers
//! refuse UPDATE and DELETE, so a row, once written, is what happened. The kill switch, tripped
//! breakers and approvals are rows too, so they survive a restart and a second process
//! (`wsguard remediation … --state-dir`) can set them while the agent runs.
//!
//! ```sql
//! CREATE TABLE audit (
//!     id          INTEGER PRIMARY KEY,   -- order of events
//!     ts          INTEGER NOT NULL,      -- unix milliseconds
//!     event       TEXT NOT NULL,         -- see `Event`
//!     action      TEXT NOT NULL,         -- action name ('' for the kill switch)
//!     action_type TEXT NOT NULL,
//!     alertname   TEXT NOT NULL,         -- why: the alert that fired it
//!     fingerprint TEXT NOT NULL,
//!     target      TEXT NOT NULL,         -- pid:<pid>:<start ticks>[/<client>] or host
//!     pid         INTEGER,
//!     dry_run     INTEGER NOT NULL,
//!     result      TEXT NOT NULL,         -- ok, partial, failed, timeout, improved, ...
//!     detail      TEXT NOT NULL,         -- what was (or would be) done; captured output
//!     before      TEXT,                  -- JSON numbers when the run started
//!     after       TEXT,                  -- JSON numbers after it (result / outcome rows)
//!     ref         INTEGER,               -- the row this one completes, judges or approves
//!     by          TEXT NOT NULL          -- who (approve, pause, resume)
//! );
//! ```

use std::{
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use serde_json::Value;

const SCHEMA_VERSION: i64 = 1;
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit (
    id          INTEGER PRIMARY KEY,
    ts          INTEGER NOT NULL,
    event       TEXT NOT NULL,
    action      TEXT NOT NULL DEFAULT '',
    action_type TEXT NOT NULL DEFAULT '',
    alertname   TEXT NOT NULL DEFAULT '',
    fingerprint TEXT NOT NULL DEFAULT '',
    target      TEXT NOT NULL DEFAULT '',
    pid         INTEGER,
    dry_run     INTEGER NOT NULL DEFAULT 0,
    result      TEXT NOT NULL DEFAULT '',
    detail      TEXT NOT NULL DEFAULT '',
    before      TEXT,
    after       TEXT,
    ref         INTEGER,
    by          TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS audit_event ON audit (event, action);
CREATE INDEX IF NOT EXISTS audit_ref ON audit (ref);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the remediation audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the remediation audit log is append-only'); END;
";

/// What a row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A run started (`before` numbers, `detail` = the plan).
    Run,
    /// What a run would have done; nothing was done.
    DryRun,
    /// The selector found nothing to do (counts as a run for cooldown and the hourly cap).
    Noop,
    /// How a run ended (`ref` = its run row; `after` numbers; output).
    Result,
    /// Whether the alert's metric improved `settle` after the run (`ref` = the run row).
    Outcome,
    /// A guardrail stopped a run (`result` = the reason); recorded once per reason and target.
    Skipped,
    AwaitingApproval,
    Approved,
    ApprovalExpired,
    BreakerTripped,
    BreakerReset,
    Paused,
    Resumed,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Run => "run",
            Event::DryRun => "dry_run",
            Event::Noop => "noop",
            Event::Result => "result",
            Event::Outcome => "outcome",
            Event::Skipped => "skipped",
            Event::AwaitingApproval => "awaiting_approval",
            Event::Approved => "approved",
            Event::ApprovalExpired => "approval_expired",
            Event::BreakerTripped => "breaker_tripped",
            Event::BreakerReset => "breaker_reset",
            Event::Paused => "paused",
            Event::Resumed => "resumed",
        }
    }
    fn parse(s: &str) -> Option<Event> {
        serde_json::from_value(Value::String(s.into())).ok()
    }
}

/// One audit row (`GET /api/v1/remediation`, `wsguard remediation history --json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub id: i64,
    /// RFC 3339 with milliseconds.
    pub at: String,
    pub event: String,
    pub action: String,
    pub action_type: String,
    pub alertname: String,
    pub fingerprint: String,
    pub target: String,
    pub pid: Option<u32>,
    pub dry_run: bool,
    pub result: String,
    pub detail: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    #[serde(rename = "ref")]
    pub ref_id: Option<i64>,
    pub by: String,
}

/// A row to append (`id` and `at` are assigned).
#[derive(Debug, Clone, Default)]
pub struct New {
    pub action: String,
    pub action_type: String,
    pub alertname: String,
    pub fingerprint: String,
    pub target: String,
    pub pid: Option<u32>,
    pub dry_run: bool,
    pub result: String,
    pub detail: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub ref_id: Option<i64>,
    pub by: String,
}

pub struct Audit {
    conn: Connection,
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64
}

fn entry(r: &Row) -> rusqlite::Result<Entry> {
    let ts: i64 = r.get("ts")?;
    let json = |s: Option<String>| s.and_then(|s| serde_json::from_str(&s).ok());
    Ok(Entry {
        id: r.get("id")?,
        at: crate::util::time::rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ts.max(0) as u64)),
        event: r.get("event")?,
        action: r.get("action")?,
        action_type: r.get("action_type")?,
        alertname: r.get("alertname")?,
        fingerprint: r.get("fingerprint")?,
        target: r.get("target")?,
        pid: r.get("pid")?,
        dry_run: r.get("dry_run")?,
        result: r.get("result")?,
        detail: r.get("detail")?,
        before: json(r.get("before")?),
        after: json(r.get("after")?),
        ref_id: r.get("ref")?,
        by: r.get("by")?,
    })
}

impl Audit {
    /// Open or create `<state_dir>/remediation.db`.
    pub fn open(state_dir: &Path) -> Result<Audit> {
        let path = state_dir.join("remediation.db");
        // Commands, their output and targets are in here: root only (the opener makes it 0600).
        let conn = crate::util::sqlite::open(&path, "remediation audit log", SCHEMA, SCHEMA_VERSION)?;
        Ok(Audit { conn })
    }

    pub fn append(&self, event: Event, e: &New, now: SystemTime) -> Result<i64> {
        let j = |v: &Option<Value>| v.as_ref().map(|v| v.to_string());
        self.conn
            .execute(
                "INSERT INTO audit (ts, event, action, action_type, alertname, fingerprint, target, pid, dry_run,
                                    result, detail, before, after, ref, by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                params![
                    ms(now),
                    event.as_str(),
                    e.action,
                    e.action_type,
                    e.alertname,
                    e.fingerprint,
                    e.target,
                    e.pid,
                    e.dry_run,
                    e.result,
                    e.detail,
                    j(&e.before),
                    j(&e.after),
                    e.ref_id,
                    e.by
                ],
            )
            .context("append to the remediation audit log")?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Newest first; at most `limit` rows, only rows with id > `after_id` when given.
    pub fn list(&self, limit: usize, after_id: Option<i64>) -> Result<Vec<Entry>> {
        let mut st = self.conn.prepare("SELECT * FROM audit WHERE id > ?1 ORDER BY id DESC LIMIT ?2")?;
        let rows = st.query_map(params![after_id.unwrap_or(0), limit as i64], entry)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn get(&self, id: i64) -> Result<Option<Entry>> {
        Ok(self.conn.query_row("SELECT * FROM audit WHERE id = ?1", [id], entry).optional()?)
    }

    fn latest(&self, events: [Event; 2], action: &str) -> Result<Option<Event>> {
        let e: Option<String> = self
            .conn
            .query_row(
                "SELECT event FROM audit WHERE event IN (?1, ?2) AND action = ?3 ORDER BY id DESC LIMIT 1",
                params![events[0].as_str(), events[1].as_str(), action],
                |r| r.get(0),
            )
            .optional()?;
        Ok(e.as_deref().and_then(Event::parse))
    }

    /// The kill switch: the latest of `paused` / `resumed`.
    pub fn paused(&self) -> Result<bool> {
        Ok(self.latest([Event::Paused, Event::Resumed], "")? == Some(Event::Paused))
    }

    /// The action's breaker: the latest of `breaker_tripped` / `breaker_reset`.
    pub fn tripped(&self, action: &str) -> Result<bool> {
        Ok(self.latest([Event::BreakerTripped, Event::BreakerReset], action)? == Some(Event::BreakerTripped))
    }

    /// Set the kill switch (no row when it is already in that state).
    pub fn set_paused(&self, paused: bool, by: &str, now: SystemTime) -> Result<bool> {
        if self.paused()? == paused {
            return Ok(false);
        }
        let ev = if paused { Event::Paused } else { Event::Resumed };
        self.append(ev, &New { by: by.into(), ..Default::default() }, now)?;
        Ok(true)
    }

    /// Re-enable an action whose breaker tripped.
    pub fn reset_breaker(&self, action: &str, by: &str, now: SystemTime) -> Result<bool> {
        if !self.tripped(action)? {
            return Ok(false);
        }
        self.append(Event::BreakerReset, &New { action: action.into(), by: by.into(), ..Default::default() }, now)?;
        Ok(true)
    }

    /// Rows that settled an approval request (approved or expired), by request id.
    fn settled(&self, id: i64) -> Result<Option<Event>> {
        let e: Option<String> = self
            .conn
            .query_row(
                "SELECT event FROM audit WHERE ref = ?1 AND event IN ('approved', 'approval_expired') ORDER BY id LIMIT 1",
                [id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(e.as_deref().and_then(Event::parse))
    }

    /// Approve the request `id`; refused unless it is an open approval request.
    pub fn approve(&self, id: i64, by: &str, now: SystemTime) -> Result<Entry> {
        let Some(req) = self.get(id)? else { bail!("no remediation request {id}") };
        if req.event != Event::AwaitingApproval.as_str() {
            bail!("row {id} is a {} row, not an approval request", req.event);
        }
        match self.settled(id)? {
            Some(Event::Approved) => bail!("request {id} is already approved"),
            Some(_) => bail!("request {id} expired"),
            None => {}
        }
        let new = New {
            action: req.action.clone(),
            action_type: req.action_type.clone(),
            alertname: req.alertname.clone(),
            fingerprint: req.fingerprint.clone(),
            target: req.target.clone(),
            pid: req.pid,
            ref_id: Some(id),
            by: by.into(),
            ..Default::default()
        };
        let aid = self.append(Event::Approved, &new, now)?;
        Ok(self.get(aid)?.expect("just written"))
    }

    /// Whether request `id` was approved.
    pub fn approved(&self, id: i64) -> Result<bool> {
        Ok(self.settled(id)? == Some(Event::Approved))
    }

    /// Open approval requests (oldest first).
    pub fn pending_approvals(&self) -> Result<Vec<Entry>> {
        let mut st = self.conn.prepare(
            "SELECT * FROM audit a WHERE event = 'awaiting_approval' AND NOT EXISTS
               (SELECT 1 FROM audit b WHERE b.ref = a.id AND b.event IN ('approved', 'approval_expired'))
             ORDER BY id",
        )?;
        let rows = st.query_map([], entry)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Runs (real, dry and no-op) that started at or after `since`, oldest first: rebuilds
    /// cooldowns and hourly counts after a restart.
    pub fn runs_since(&self, since: SystemTime) -> Result<Vec<Entry>> {
        let mut st =
            self.conn.prepare("SELECT * FROM audit WHERE event IN ('run', 'dry_run', 'noop') AND ts >= ?1 ORDER BY id")?;
        let rows = st.query_map([ms(since)], entry)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    #[test]
    fn append_only_and_state_rows() {
        let dir = tempfile::tempdir().unwrap();
        let a = Audit::open(dir.path()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("remediation.db")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let id = a
            .append(
                Event::Run,
                &New { action: "x".into(), before: Some(serde_json::json!({"connections": 5})), ..Default::default() },
                at(0),
            )
            .unwrap();
        assert!(a.conn.execute("UPDATE audit SET result = 'forged'", []).is_err());
        assert!(a.conn.execute("DELETE FROM audit", []).is_err());
        let e = a.get(id).unwrap().unwrap();
        assert_eq!((e.event.as_str(), e.before.unwrap()["connections"].as_u64()), ("run", Some(5)));

        assert!(!a.paused().unwrap());
        assert!(a.set_paused(true, "ops", at(1)).unwrap());
        assert!(!a.set_paused(true, "ops", at(2)).unwrap(), "already paused: no row");
        drop(a);
        let a = Audit::open(dir.path()).unwrap();
        assert!(a.paused().unwrap(), "persisted");
        a.set_paused(false, "ops", at(3)).unwrap();
        assert!(!a.paused().unwrap());

        a.append(Event::BreakerTripped, &New { action: "x".into(), ..Default::default() }, at(4)).unwrap();
        assert!(a.tripped("x").unwrap() && !a.tripped("y").unwrap());
        assert!(a.reset_breaker("x", "ops", at(5)).unwrap());
        assert!(!a.tripped("x").unwrap());
        assert_eq!(a.list(100, None).unwrap().len(), 5, "run, paused, resumed, tripped, reset");
        assert_eq!(a.list(2, None).unwrap()[0].event, "breaker_reset", "newest first");
        assert_eq!(a.runs_since(at(0)).unwrap().len(), 1);
        assert!(a.runs_since(at(1)).unwrap().is_empty());
    }

    #[test]
    fn approvals() {
        let dir = tempfile::tempdir().unwrap();
        let a = Audit::open(dir.path()).unwrap();
        let run = a.append(Event::Run, &New::default(), at(0)).unwrap();
        assert!(a.approve(run, "ops", at(1)).unwrap_err().to_string().contains("not an approval request"));
        let req = a.append(Event::AwaitingApproval, &New { action: "x".into(), ..Default::default() }, at(2)).unwrap();
        assert_eq!(a.pending_approvals().unwrap().len(), 1);
        assert!(!a.approved(req).unwrap());
        let ok = a.approve(req, "ops", at(3)).unwrap();
        assert_eq!((ok.event.as_str(), ok.ref_id, ok.by.as_str(), ok.action.as_str()), ("approved", Some(req), "ops", "x"));
        assert!(a.approved(req).unwrap());
        assert!(a.pending_approvals().unwrap().is_empty());
        assert!(a.approve(req, "ops", at(4)).unwrap_err().to_string().contains("already approved"));
        assert!(a.approve(999, "ops", at(4)).is_err());
    }
}
