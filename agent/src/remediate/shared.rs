//! What the API and the run loop share: the audit log (kill switch, approvals, breakers and
//! history all live there) and a status view the run loop refreshes every interval.

use std::{
    path::Path,
    sync::{Mutex, RwLock},
    time::SystemTime,
};

use anyhow::Result;
use serde::Serialize;
use serde_json::Value;

use super::audit::{Audit, Entry, Event, New};

pub struct Shared {
    audit: Mutex<Audit>,
    view: RwLock<Value>,
}

/// `GET /api/v1/remediation`.
#[derive(Debug, Serialize)]
pub struct Status {
    pub paused: bool,
    /// The run loop's view: global switches, actions (enabled, tripped, runs in the last
    /// hour), runs in progress.
    #[serde(flatten)]
    pub view: Value,
    pub pending_approvals: Vec<Entry>,
    /// Audit rows, newest first.
    pub history: Vec<Entry>,
}

impl Shared {
    pub fn open(state_dir: &Path) -> Result<Shared> {
        Ok(Shared { audit: Mutex::new(Audit::open(state_dir)?), view: RwLock::new(Value::Object(Default::default())) })
    }

    pub fn with<T>(&self, f: impl FnOnce(&Audit) -> Result<T>) -> Result<T> {
        f(&self.audit.lock().expect("audit lock"))
    }

    /// Append a row; a failed write is logged, never fatal (the action already happened).
    pub fn record(&self, event: Event, e: &New, now: SystemTime) -> Option<i64> {
        match self.with(|a| a.append(event, e, now)) {
            Ok(id) => Some(id),
            Err(err) => {
                tracing::error!("remediation audit log: {err:#}");
                None
            }
        }
    }

    /// The kill switch; an unreadable log counts as paused (fail safe).
    pub fn paused(&self) -> bool {
        self.with(|a| a.paused()).unwrap_or(true)
    }

    pub fn set_view(&self, v: Value) {
        *self.view.write().expect("view lock") = v;
    }

    pub fn status(&self, limit: usize) -> Result<Status> {
        let view = self.view.read().expect("view lock").clone();
        self.with(|a| {
            Ok(Status { paused: a.paused()?, view, pending_approvals: a.pending_approvals()?, history: a.list(limit, None)? })
        })
    }
}
