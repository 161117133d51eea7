//! The [`Remediator`]: called by the run loop after each alert evaluation. It decides (cheaply,
//! in the loop) which action may run on which target, records that, and runs the action in a
//! tokio task; completions come back over a channel and are judged `settle` later.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    sync::Arc,
    time::SystemTime,
};

use serde_json::json;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{
    actions::{self, Plan, RunResult},
    audit::{Event, New},
    config::{ActionConfig, ActionType, RemediationConfig, SelectBy},
    guard::Guard,
    judge::{numbers, Direction, Judge},
    select,
    shared::Shared,
    target::Target,
};
use crate::{
    alert::{silence::Matcher, Alert, Rule, Transition, TransitionKind},
    model::snapshot::Snapshot,
    track::conns::ConnectionSnapshot,
};

/// A finished run, sent back by its task.
struct Done {
    run_id: i64,
    lock: Option<String>,
    attempted: bool,
    judge: Judge,
}

/// An approval request waiting for `wsguard remediation approve`.
struct Request {
    id: i64,
    fingerprint: String,
    created: SystemTime,
}

pub struct Remediator {
    cfg: RemediationConfig,
    matchers: Vec<Vec<Matcher>>,
    shared: Arc<Shared>,
    guard: Guard,
    tx: mpsc::UnboundedSender<Done>,
    rx: mpsc::UnboundedReceiver<Done>,
    judging: Vec<Judge>,
    /// (action, target) → last skip reason recorded (a block is recorded once, not every tick).
    skips: HashMap<(String, String), String>,
    requests: HashMap<(String, String), Request>,
    tripped: HashSet<String>,
    directions: HashMap<String, Direction>,
}

impl Remediator {
    /// Open the audit log under `state_dir` and rebuild the last hour's cooldowns and counts.
    pub fn open(cfg: RemediationConfig, state_dir: &Path) -> anyhow::Result<Remediator> {
        let shared = Arc::new(Shared::open(state_dir)?);
        let now = SystemTime::now();
        let mut guard = Guard::default();
        let hour_ago = now - std::time::Duration::from_secs(3600);
        for r in shared.with(|a| a.runs_since(hour_ago))? {
            if let Ok(t) = humantime::parse_rfc3339(&r.at) {
                guard.start(&r.action, &r.target, None, t);
            }
        }
        // Requests of a previous agent run cannot be carried out any more (their alerts and
        // targets were in memory): close them.
        for r in shared.with(|a| a.pending_approvals())? {
            let e = New {
                action: r.action.clone(),
                target: r.target.clone(),
                ref_id: Some(r.id),
                result: "agent restarted".into(),
                ..Default::default()
            };
            shared.record(Event::ApprovalExpired, &e, now);
        }
        let matchers = cfg.actions.iter().map(ActionConfig::matchers).collect();
        let (tx, rx) = mpsc::unbounded_channel();
        let mut r = Remediator {
            cfg,
            matchers,
            shared,
            guard,
            tx,
            rx,
            judging: Vec::new(),
            skips: HashMap::new(),
            requests: HashMap::new(),
            tripped: HashSet::new(),
            directions: HashMap::new(),
        };
        r.set_rules(&crate::alert::rule::defaults(crate::alert::Profile::Production, 1));
        Ok(r)
    }

    /// Which way each alert's metric improves (from the rules' comparison); the default rules
    /// are known from the start, configured rules can be added.
    pub fn set_rules(&mut self, rules: &[Rule]) {
        for r in rules {
            self.directions.insert(r.name.clone(), Direction::of(r.op));
        }
    }

    /// For the API routes.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// One round after an alert evaluation. Never blocks: actions run in tokio tasks.
    pub fn handle(
        &mut self,
        events: &[(Transition, Alert)],
        firing: &[Alert],
        snap: &Snapshot,
        conns: &HashMap<u32, Vec<ConnectionSnapshot>>,
        now: SystemTime,
    ) {
        self.drain();
        if self.cfg.enabled {
            self.round(events, firing, snap, conns, now);
        }
        self.publish(now);
    }

    fn round(
        &mut self,
        events: &[(Transition, Alert)],
        firing: &[Alert],
        snap: &Snapshot,
        conns: &HashMap<u32, Vec<ConnectionSnapshot>>,
        now: SystemTime,
    ) {
        for (t, _) in events {
            if matches!(t.kind, TransitionKind::Resolved | TransitionKind::Cancelled) {
                self.judging.iter_mut().filter(|j| j.fingerprint == t.fingerprint).for_each(|j| j.resolved = true);
            }
        }
        self.judge(firing, snap, now);
        self.settle_requests(firing, now);
        let paused = self.shared.paused();
        for i in 0..self.cfg.actions.len() {
            let a = self.cfg.actions[i].clone();
            if !a.enabled || !self.breaker_closed(&a.name) {
                continue;
            }
            for alert in firing {
                let name = alert.labels.get("alertname").map(String::as_str).unwrap_or("");
                if a.on.iter().any(|o| o == name) && self.matchers[i].iter().all(|m| m.matches(&alert.labels)) {
                    self.consider(&a, alert, paused, snap, conns, now);
                }
            }
        }
    }

    fn breaker_closed(&mut self, action: &str) -> bool {
        let tripped = self.shared.with(|a| a.tripped(action)).unwrap_or(true);
        if !tripped && self.tripped.remove(action) {
            self.guard.reset(action); // reset by an operator
        }
        if tripped {
            self.tripped.insert(action.to_string());
        }
        !tripped
    }

    fn skip(&mut self, a: &ActionConfig, alert: &Alert, target: &str, pid: Option<u32>, reason: String, now: SystemTime) {
        let key = (a.name.clone(), target.to_string());
        if self.skips.get(&key) == Some(&reason) {
            return;
        }
        info!(action = %a.name, target, "remediation skipped: {reason}");
        let e = New { result: reason.clone(), pid, ..base(a, alert, target) };
        self.shared.record(Event::Skipped, &e, now);
        self.skips.insert(key, reason);
    }

    fn consider(
        &mut self,
        a: &ActionConfig,
        alert: &Alert,
        paused: bool,
        snap: &Snapshot,
        conns: &HashMap<u32, Vec<ConnectionSnapshot>>,
        now: SystemTime,
    ) {
        let client = alert.labels.get("client").cloned();
        // The process comes from the alert's labels only, checked against snapshot and /proc.
        let target = if a.kind.needs_process() || alert.labels.contains_key("pid") {
            match Target::from_alert(alert, snap) {
                Ok(t) => Some(t),
                Err(e) => {
                    let pid = alert.labels.get("pid").and_then(|p| p.parse().ok());
                    let key = alert.labels.get("pid").map(|p| format!("pid:{p}")).unwrap_or("host".into());
                    return self.skip(a, alert, &key, pid, e.to_string(), now);
                }
            }
        } else {
            None
        };
        let lock = target.as_ref().map(Target::key).unwrap_or_else(|| "host".into());
        let tkey = match &client {
            Some(c) => format!("{lock}/{c}"),
            None => lock.clone(),
        };
        let pid = target.as_ref().map(|t| t.pid);
        if paused {
            return self.skip(a, alert, &tkey, pid, "paused (kill switch)".into(), now);
        }
        let dry = a.dry_run(&self.cfg);
        if let Err(b) = self.guard.check(&a.name, &tkey, Some(&lock), a.cooldown(&self.cfg), a.max_runs_per_hour(&self.cfg), now)
        {
            return self.skip(a, alert, &tkey, pid, b.reason(), now);
        }
        let plan = match a.kind {
            ActionType::CloseConnections => {
                let sel = a.select.as_ref().expect("validated");
                let list = pid.and_then(|p| conns.get(&p)).map(Vec::as_slice).unwrap_or_default();
                let quota = snap.processes.iter().find(|p| Some(p.pid) == pid).map(|p| p.clients.quota).unwrap_or(u64::MAX);
                let selection = select::select(sel, list, client.as_deref(), quota);
                let idle_ms = (sel.by == SelectBy::Idle).then_some(sel.idle_for.as_millis() as u64);
                Plan::CloseConnections { selection, idle_ms }
            }
            _ => match Plan::of(a, target.as_ref()) {
                Ok(p) => p,
                Err(e) => return self.skip(a, alert, &tkey, pid, format!("cannot plan: {e}"), now),
            },
        };
        let before = numbers(snap, pid, Some(alert), client.as_deref());
        let what = plan.describe(target.as_ref());
        let rec = New { pid, dry_run: dry, detail: what.clone(), before: Some(before.clone()), ..base(a, alert, &tkey) };
        if matches!(&plan, Plan::CloseConnections { selection, .. } if selection.chosen.is_empty()) {
            self.guard.start(&a.name, &tkey, None, now);
            self.skips.remove(&(a.name.clone(), tkey.clone()));
            self.shared.record(Event::Noop, &New { result: "nothing selected".into(), ..rec }, now);
            return;
        }
        if a.approval && !dry {
            let key = (a.name.clone(), tkey.clone());
            match self.requests.get(&key) {
                Some(r) if self.shared.with(|x| x.approved(r.id)).unwrap_or(false) => {
                    self.requests.remove(&key);
                }
                Some(_) => return,
                None => {
                    if let Some(id) =
                        self.shared.record(Event::AwaitingApproval, &New { result: "awaiting approval".into(), ..rec }, now)
                    {
                        info!(action = %a.name, id, "remediation awaits approval (`wsguard remediation approve {id}`): {what}");
                        self.requests.insert(key, Request { id, fingerprint: alert.fingerprint.clone(), created: now });
                    }
                    return;
                }
            }
        }
        self.skips.remove(&(a.name.clone(), tkey.clone()));
        if dry {
            self.guard.start(&a.name, &tkey, None, now);
            info!(action = %a.name, "remediation dry run: would {what}");
            self.shared.record(Event::DryRun, &New { result: "dry_run".into(), ..rec }, now);
            return;
        }
        self.guard.start(&a.name, &tkey, Some(&lock), now);
        let Some(run_id) = self.shared.record(Event::Run, &New { result: "started".into(), ..rec.clone() }, now) else {
            self.guard.finish(&lock);
            return;
        };
        info!(action = %a.name, run_id, "remediation: {what}");
        let judge = Judge {
            run_id,
            action: a.name.clone(),
            alertname: rec.alertname.clone(),
            fingerprint: alert.fingerprint.clone(),
            target: tkey.clone(),
            pid,
            client,
            before: alert.value,
            direction: self.directions.get(&rec.alertname).copied().unwrap_or(Direction::Down),
            due: now,
            resolved: false,
        };
        let (shared, tx, a, alert) = (self.shared.clone(), self.tx.clone(), a.clone(), alert.clone());
        let settle = a.settle(&self.cfg);
        tokio::spawn(async move {
            let (res, attempted) = if shared.paused() {
                (RunResult { result: "cancelled".into(), detail: "paused before it ran".into(), after: json!({}) }, false)
            } else {
                (actions::execute(&a, plan, &alert, target, run_id).await, true)
            };
            let done_at = SystemTime::now();
            if res.result == "ok" {
                info!(action = %a.name, run_id, "remediation done: {}", res.detail);
            } else {
                warn!(action = %a.name, run_id, "remediation {}: {}", res.result, res.detail);
            }
            let row = New { ref_id: Some(run_id), result: res.result, detail: res.detail, after: Some(res.after), ..rec };
            shared.record(Event::Result, &row, done_at);
            let _ = tx.send(Done { run_id, lock: Some(lock), attempted, judge: Judge { due: done_at + settle, ..judge } });
        });
    }

    fn drain(&mut self) {
        while let Ok(d) = self.rx.try_recv() {
            if let Some(l) = &d.lock {
                self.guard.finish(l);
            }
            if d.attempted {
                debug_assert_eq!(d.run_id, d.judge.run_id);
                self.judging.push(d.judge);
            }
        }
    }

    fn judge(&mut self, firing: &[Alert], snap: &Snapshot, now: SystemTime) {
        let (due, later): (Vec<Judge>, Vec<Judge>) = std::mem::take(&mut self.judging).into_iter().partition(|j| j.due <= now);
        self.judging = later;
        for j in due {
            let current = firing.iter().find(|a| a.fingerprint == j.fingerprint);
            let improved = j.improved(current.and_then(|a| a.value), current.is_some());
            let after = numbers(snap, j.pid, current, j.client.as_deref());
            let e = New {
                action: j.action.clone(),
                alertname: j.alertname.clone(),
                fingerprint: j.fingerprint.clone(),
                target: j.target.clone(),
                pid: j.pid,
                ref_id: Some(j.run_id),
                result: if improved { "improved" } else { "not_improved" }.into(),
                detail: j.explain(current.and_then(|a| a.value), current.is_some()),
                before: Some(json!({ "alert_value": j.before })),
                after: Some(after),
                ..Default::default()
            };
            self.shared.record(Event::Outcome, &e, now);
            let Some(a) = self.cfg.action(&j.action) else { continue };
            let k = a.breaker_after(&self.cfg);
            if self.guard.outcome(&j.action, improved, k) {
                warn!(action = %j.action, "remediation circuit breaker tripped: {k} runs in a row did not improve {}", j.alertname);
                let e = New {
                    action: j.action.clone(),
                    action_type: a.kind.as_str().into(),
                    alertname: j.alertname.clone(),
                    result: format!("{k} consecutive runs did not improve {}", j.alertname),
                    detail: "disabled until `wsguard remediation resume --action NAME`".into(),
                    ..Default::default()
                };
                self.shared.record(Event::BreakerTripped, &e, now);
            }
        }
    }

    /// Drop approval requests whose alert stopped firing or that waited past `approval_ttl`.
    fn settle_requests(&mut self, firing: &[Alert], now: SystemTime) {
        let ttl = self.cfg.approval_ttl;
        let mut gone = Vec::new();
        for (k, r) in &self.requests {
            let why = if !firing.iter().any(|a| a.fingerprint == r.fingerprint) {
                "alert no longer firing"
            } else if now.duration_since(r.created).unwrap_or_default() > ttl {
                "not approved in time"
            } else {
                continue;
            };
            if self.shared.with(|a| a.approved(r.id)).unwrap_or(false) && why == "not approved in time" {
                continue; // approved: runs at the next consideration
            }
            gone.push((k.clone(), r.id, why));
        }
        for (k, id, why) in gone {
            self.requests.remove(&k);
            let e = New { action: k.0, target: k.1, ref_id: Some(id), result: why.into(), ..Default::default() };
            self.shared.record(Event::ApprovalExpired, &e, now);
        }
    }

    fn publish(&self, now: SystemTime) {
        let actions: Vec<_> = self
            .cfg
            .actions
            .iter()
            .map(|a| {
                json!({
                    "name": a.name,
                    "type": a.kind.as_str(),
                    "on": a.on,
                    "enabled": a.enabled,
                    "dry_run": a.dry_run(&self.cfg),
                    "approval": a.approval,
                    "tripped": self.tripped.contains(&a.name),
                    "consecutive_not_improved": self.guard.misses(&a.name),
                    "runs_last_hour": self.guard.runs_last_hour(&a.name, now),
                    "max_runs_per_hour": a.max_runs_per_hour(&self.cfg),
                    "cooldown_seconds": a.cooldown(&self.cfg).as_secs_f64(),
                })
            })
            .collect();
        self.shared.set_view(json!({
            "enabled": self.cfg.enabled,
            "dry_run": self.cfg.dry_run,
            "in_flight": self.guard.in_flight(),
            "awaiting_judgement": self.judging.len(),
            "actions": actions,
        }));
    }
}

fn base(a: &ActionConfig, alert: &Alert, target: &str) -> New {
    New {
        action: a.name.clone(),
        action_type: a.kind.as_str().into(),
        alertname: alert.labels.get("alertname").cloned().unwrap_or_default(),
        fingerprint: alert.fingerprint.clone(),
        target: target.into(),
        ..Default::default()
    }
}

#[cfg(test)]
impl Remediator {
    pub fn cfg_for_tests(&self) -> RemediationConfig {
        self.cfg.clone()
    }
    /// Replace an exec action's command; `arg0` becomes `$0` of a `sh -c` script.
    pub fn set_command_for_tests(&mut self, action: &str, argv: &[&str], arg0: &Path) {
        let a = self.cfg.actions.iter_mut().find(|a| a.name == action).expect("action");
        a.command = argv.iter().map(|s| s.to_string()).chain([arg0.display().to_string()]).collect();
    }
}
