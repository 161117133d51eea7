//! What the API and the run loop share: the audit log (kill switch, approvals, breakers and
//! history all live there) and a status view the run loop refreshes every interval.

use std::{
    collections::BTreeMap,
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
    /// Runs by (action, result) since the agent started (`wsguard_remediation_runs_total`).
    runs: Mutex<BTreeMap<(String, String), u64>>,
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
        Ok(Shared {
            audit: Mutex::new(Audit::open(state_dir)?),
            view: RwLock::new(Value::Object(Default::default())),
            runs: Mutex::default(),
        })
    }

    pub fn with<T>(&self, f: impl FnOnce(&Audit) -> Result<T>) -> Result<T> {
        f(&self.audit.lock().expect("audit lock"))
    }

    /// Append a row; a failed write is logged, never fatal (the action already happened).
    pub fn record(&self, event: Event, e: &New, now: SystemTime) -> Option<i64> {
        if let Some(result) = run_result(event, &e.result) {
            *self.runs.lock().expect("runs lock").entry((e.action.clone(), result.to_owned())).or_default() += 1;
        }
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

    /// Runs by (action, result) since the agent started; see [`run_result`].
    pub fn runs(&self) -> BTreeMap<(String, String), u64> {
        self.runs.lock().expect("runs lock").clone()
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

/// How an audit row counts in `wsguard_remediation_runs_total`: a finished run is `ok`,
/// `cancelled` or `failed` (every other outcome of an action); a dry run, a run with nothing to
/// do and a guardrail's refusal count as `dry_run`, `noop` and `skipped`. Other rows are not runs.
pub fn run_result(event: Event, result: &str) -> Option<&'static str> {
    Some(match event {
        Event::Result if result == "ok" => "ok",
        Event::Result if result == "cancelled" => "cancelled",
        Event::Result => "failed",
        Event::DryRun => "dry_run",
        Event::Noop => "noop",
        Event::Skipped => "skipped",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_counted_by_action_and_result() {
        let dir = tempfile::tempdir().unwrap();
        let s = Shared::open(dir.path()).unwrap();
        let row = |result: &str| New { action: "close-idle".into(), result: result.into(), ..Default::default() };
        let now = SystemTime::now();
        s.record(Event::Run, &row("started"), now);
        s.record(Event::Result, &row("ok"), now);
        s.record(Event::Result, &row("timeout after 5s"), now);
        s.record(Event::DryRun, &row("dry_run"), now);
        s.record(Event::Paused, &row(""), now);
        let runs = s.runs();
        let get = |r: &str| runs.get(&("close-idle".to_owned(), r.to_owned())).copied();
        assert_eq!((get("ok"), get("failed"), get("dry_run"), get("started")), (Some(1), Some(1), Some(1), None));
        assert_eq!(runs.len(), 3);
    }
}
