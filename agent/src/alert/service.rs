//! The engine as the running agent uses it: shared by the run loop (evaluations) and the API
//! (ack, silence, manual alerts), persisted after every change, and fanned out to sinks
//! (notification delivery) in one place so no path forgets to notify.

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, SystemTime},
};

use serde::Serialize;
use tracing::{info, warn};

use super::{
    engine::Engine,
    silence::{Matcher, Silence},
    store::{Event, Store},
    Alert, AlertConfig, Labels, Severity, Status, Transition,
};
use crate::{model::snapshot::Snapshot, predict::Predictions};

/// Receives every evaluation's changes, and the alerts firing now (for repeats and resends).
pub trait Sink: Send + Sync {
    fn submit(&self, events: &[(Transition, Alert)], firing: &[Alert], now: SystemTime) -> anyhow::Result<()>;
    /// Shown under `notifications` in `wsguard alerts stats`.
    fn stats(&self) -> serde_json::Value;
}

/// How often a failed store is retried.
const STORE_RETRY: Duration = Duration::from_secs(30);

struct Inner {
    engine: Engine,
    store: Option<Store>,
    store_error: Option<String>,
    store_retry_at: SystemTime,
    state_dir: PathBuf,
}

pub struct AlertService {
    inner: Mutex<Inner>,
    sinks: Mutex<Vec<std::sync::Arc<dyn Sink>>>,
    /// State changes by kind since start (`wsguard_alert_transitions_total`).
    transitions: Mutex<std::collections::BTreeMap<String, u64>>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AlertStats {
    pub firing: u64,
    pub pending: u64,
    pub resolved: u64,
    pub firing_critical: u64,
    pub firing_warning: u64,
    pub acknowledged: u64,
    pub silenced: u64,
    pub silences: u64,
    pub rules: u64,
    /// Where alert state is persisted, and why not when it is not.
    pub store: String,
    pub store_error: Option<String>,
    pub notifications: Vec<serde_json::Value>,
}

impl AlertService {
    /// Engine from config, state restored from `state_dir` when there is any. A store that
    /// cannot be opened is reported (and retried), never fatal: alerts then live in memory.
    pub fn open(cfg: AlertConfig, per_client_connections: u64, state_dir: &Path) -> Self {
        let mut engine = Engine::new(cfg, per_client_connections);
        let (store, store_error) = match Store::open(state_dir) {
            Ok(s) => {
                match s.load() {
                    Ok(Some(state)) => {
                        let n = state.alerts.len();
                        match engine.restore(state) {
                            Ok(()) => info!("restored {n} alerts from {}", s.path().display()),
                            Err(e) => {
                                warn!("alert state in {} not restored: {e}", s.path().display())
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(e) => warn!("alert state not restored: {e:#}"),
                }
                (Some(s), None)
            }
            Err(e) => {
                warn!("alert store unavailable, keeping alerts in memory: {e:#}");
                (None, Some(format!("{e:#}")))
            }
        };
        AlertService {
            inner: Mutex::new(Inner {
                engine,
                store,
                store_error,
                store_retry_at: SystemTime::now() + STORE_RETRY,
                state_dir: state_dir.to_path_buf(),
            }),
            sinks: Mutex::new(Vec::new()),
            transitions: Mutex::default(),
        }
    }

    pub fn add_sink(&self, sink: std::sync::Arc<dyn Sink>) {
        self.sinks.lock().expect("sinks lock").push(sink);
    }

    /// One evaluation; returns this evaluation's changes with their alerts.
    pub fn evaluate(&self, snap: &Snapshot, preds: Option<&Predictions>, now: SystemTime) -> Vec<(Transition, Alert)> {
        let mut inner = self.inner.lock().expect("alerts lock");
        let transitions = inner.engine.evaluate(snap, preds, now);
        let events = with_alerts(&inner.engine, transitions);
        self.commit(inner, &events, now);
        events
    }

    /// SIGHUP reload (`reload.rs`).
    pub fn reconfigure(&self, cfg: AlertConfig, per_client_connections: u64) {
        self.inner.lock().expect("alerts lock").engine.reconfigure(cfg, per_client_connections);
    }

    pub fn alerts(&self) -> Vec<Alert> {
        self.inner.lock().expect("alerts lock").engine.alerts()
    }

    pub fn alert(&self, fp: &str) -> Option<Alert> {
        self.inner.lock().expect("alerts lock").engine.alert(fp).cloned()
    }

    pub fn silences(&self) -> Vec<Silence> {
        self.inner.lock().expect("alerts lock").engine.silences().to_vec()
    }

    pub fn acknowledge(&self, fp: &str, by: &str, comment: &str) -> Result<Alert, String> {
        let now = SystemTime::now();
        let mut inner = self.inner.lock().expect("alerts lock");
        let a = inner.engine.acknowledge(fp, by, comment, now)?;
        info!(fingerprint = %a.fingerprint, by, "alert acknowledged");
        self.commit(inner, &[], now);
        Ok(a)
    }

    pub fn silence(&self, matchers: Vec<Matcher>, duration: Duration, by: &str, comment: &str) -> Result<Silence, String> {
        let now = SystemTime::now();
        let mut inner = self.inner.lock().expect("alerts lock");
        let id = inner.engine.silence(matchers, duration, by, comment, now)?;
        let s = inner.engine.silences().iter().find(|s| s.id == id).cloned().expect("just added");
        info!(id, by, "silence added");
        self.commit(inner, &[], now);
        Ok(s)
    }

    pub fn unsilence(&self, id: &str) -> bool {
        let now = SystemTime::now();
        let mut inner = self.inner.lock().expect("alerts lock");
        let removed = inner.engine.unsilence(id, now);
        if removed {
            info!(id, "silence removed");
            self.commit(inner, &[], now);
        }
        removed
    }

    /// Manual alert: firing at once and notified like any other.
    pub fn fire(&self, severity: Severity, message: &str, labels: Labels) -> Alert {
        let now = SystemTime::now();
        let mut inner = self.inner.lock().expect("alerts lock");
        let t = inner.engine.fire(severity, message, labels, now);
        let events = with_alerts(&inner.engine, vec![t]);
        let alert = events[0].1.clone();
        warn!(fingerprint = %alert.fingerprint, severity = severity.as_str(), "manual alert fired: {message}");
        self.commit(inner, &events, now);
        alert
    }

    pub fn resolve(&self, fp: &str) -> Result<Alert, String> {
        let now = SystemTime::now();
        let mut inner = self.inner.lock().expect("alerts lock");
        let t = inner.engine.resolve(fp, now)?;
        let events = with_alerts(&inner.engine, vec![t]);
        let alert = events[0].1.clone();
        self.commit(inner, &events, now);
        Ok(alert)
    }

    /// On stop (SIGTERM/SIGINT). Every change was saved as it happened; this saves the state
    /// once more, retrying at once a store that was failing (its state is otherwise only in
    /// memory and lost with the process), and checkpoints the WAL into the main file.
    pub fn sync(&self) {
        let mut inner = self.inner.lock().expect("alerts lock");
        inner.store_retry_at = SystemTime::UNIX_EPOCH;
        persist(&mut inner, &[], SystemTime::now());
        if let Some(Err(e)) = inner.store.as_ref().map(Store::checkpoint) {
            warn!("alert store: {e:#}");
        }
    }

    /// The newest `limit` alert changes, oldest first (empty without a store).
    pub fn history(&self, limit: usize) -> Vec<Event> {
        let inner = self.inner.lock().expect("alerts lock");
        inner.store.as_ref().and_then(|s| s.events(limit).ok()).unwrap_or_default()
    }

    /// Alert state changes by kind (`firing`, `resolved`, …) since the agent started.
    pub fn transitions(&self) -> std::collections::BTreeMap<String, u64> {
        self.transitions.lock().expect("transitions lock").clone()
    }

    pub fn stats(&self) -> AlertStats {
        let inner = self.inner.lock().expect("alerts lock");
        let alerts = inner.engine.alerts();
        let count = |f: &dyn Fn(&Alert) -> bool| alerts.iter().filter(|a| f(a)).count() as u64;
        let firing = |a: &Alert| a.status == Status::Firing;
        AlertStats {
            firing: count(&firing),
            pending: count(&|a| a.status == Status::Pending),
            resolved: count(&|a| a.status == Status::Resolved),
            firing_critical: count(&|a| firing(a) && a.severity == Severity::Critical),
            firing_warning: count(&|a| firing(a) && a.severity == Severity::Warning),
            acknowledged: count(&|a| a.acknowledged),
            silenced: count(&|a| a.silenced),
            silences: inner.engine.silences().len() as u64,
            rules: inner.engine.rules().len() as u64,
            store: inner.state_dir.join(super::store::STORE_FILE).display().to_string(),
            store_error: inner.store_error.clone(),
            notifications: self.sinks.lock().expect("sinks lock").iter().map(|s| s.stats()).collect(),
        }
    }

    /// Persist (when something changed) and hand the changes to the sinks.
    /// Evaluations without transitions still move clocks (last_seen, flap windows); saving them
    /// each interval is cheap (one row) and keeps a restart exact.
    fn commit(&self, mut inner: std::sync::MutexGuard<'_, Inner>, events: &[(Transition, Alert)], now: SystemTime) {
        {
            let mut counts = self.transitions.lock().expect("transitions lock");
            for (t, _) in events {
                *counts.entry(t.kind.as_str().to_owned()).or_default() += 1;
            }
        }
        let firing: Vec<Alert> = inner.engine.alerts().into_iter().filter(|a| a.status == Status::Firing).collect();
        persist(&mut inner, events, now);
        drop(inner);
        for sink in self.sinks.lock().expect("sinks lock").iter() {
            if let Err(e) = sink.submit(events, &firing, now) {
                warn!("notification outbox: {e:#}");
            }
        }
    }
}

fn with_alerts(engine: &Engine, transitions: Vec<Transition>) -> Vec<(Transition, Alert)> {
    // A cancelled first episode is already forgotten: nothing to notify or record.
    transitions.into_iter().filter_map(|t| engine.alert(&t.fingerprint).cloned().map(|a| (t, a))).collect()
}

fn persist(inner: &mut Inner, events: &[(Transition, Alert)], now: SystemTime) {
    if inner.store.is_none() && now >= inner.store_retry_at {
        inner.store_retry_at = now + STORE_RETRY;
        match Store::open(&inner.state_dir) {
            Ok(s) => {
                info!("alert store available again at {}", s.path().display());
                inner.store = Some(s);
                inner.store_error = None;
            }
            Err(e) => inner.store_error = Some(format!("{e:#}")),
        }
    }
    let state = inner.engine.export();
    let Some(store) = inner.store.as_mut() else {
        return;
    };
    let rows: Vec<Event> = events.iter().map(|(t, a)| Event { transition: t.clone(), alert: a.clone() }).collect();
    match store.save(&state, &rows) {
        Ok(()) => inner.store_error = None,
        Err(e) => {
            if inner.store_error.is_none() {
                warn!("alert state not saved (kept in memory, retried each change): {e:#}");
            }
            inner.store_error = Some(format!("{e:#}"));
        }
    }
}
