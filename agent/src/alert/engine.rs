//! The evaluator: rules over a snapshot (and optional forecasts) → alert state changes.

use std::{
    collections::{BTreeMap, HashSet},
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};

use crate::{model::snapshot::Snapshot, predict::Predictions, util::time::rfc3339};

use super::{
    rule::Rule,
    select,
    silence::{Matcher, Silence},
    state::{fingerprint, Ack, Alert, Status, Tracked, Transition, TransitionKind},
    template::{render, Context},
    AlertConfig, Labels, Severity,
};

/// Alert name of manual alerts without an `alertname` label.
pub const MANUAL_ALERTNAME: &str = "ManualAlert";

/// What survives a restart: alerts with their clocks, silences (`alert/store.rs` keeps it).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EngineState {
    pub alerts: Vec<Tracked>,
    pub silences: Vec<Silence>,
    pub silence_seq: u64,
}

pub struct Engine {
    rules: Vec<Rule>,
    cfg: AlertConfig,
    alerts: BTreeMap<u64, Tracked>,
    silences: Vec<Silence>,
    prev: Option<Snapshot>,
    silence_seq: u64,
}

fn since(now: SystemTime, t: SystemTime) -> Duration {
    now.duration_since(t).unwrap_or_default()
}

impl Engine {
    /// Rules from `cfg` (defaults for `cfg.profile` plus configured ones).
    pub fn new(cfg: AlertConfig, per_client_connections: u64) -> Self {
        let rules = cfg.effective_rules(per_client_connections);
        Self::with_rules(rules, cfg)
    }

    pub fn with_rules(rules: Vec<Rule>, cfg: AlertConfig) -> Self {
        Engine { rules, cfg, alerts: BTreeMap::new(), silences: Vec::new(), prev: None, silence_seq: 0 }
    }

    /// The state to persist.
    pub fn export(&self) -> EngineState {
        EngineState {
            alerts: self.alerts.values().cloned().collect(),
            silences: self.silences.clone(),
            silence_seq: self.silence_seq,
        }
    }

    /// Take over persisted state. Rule alerts are re-bound to the current rules by name (the
    /// rule list may have changed); an alert whose rule is gone is dropped unless it is manual.
    pub fn restore(&mut self, state: EngineState) -> Result<(), String> {
        let mut silences = state.silences;
        for s in &mut silences {
            s.restore()?;
        }
        self.silences = silences;
        self.silence_seq = state.silence_seq;
        self.alerts.clear();
        for mut t in state.alerts {
            if !t.alert.manual {
                let name = t.alert.labels.get("alertname");
                t.rule = self.rules.iter().position(|r| Some(&r.name) == name);
                if t.rule.is_none() {
                    continue;
                }
            }
            self.alerts.insert(fingerprint(&t.alert.labels), t);
        }
        Ok(())
    }

    /// Swap the rules and settings (config reload) keeping alert state; alerts of removed
    /// rules are dropped.
    pub fn reconfigure(&mut self, cfg: AlertConfig, per_client_connections: u64) {
        let state = self.export();
        self.rules = cfg.effective_rules(per_client_connections);
        self.cfg = cfg;
        // Restoring our own export cannot fail: silence times are already set.
        let _ = self.restore(state);
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// All known alerts: pending, firing, and resolved ones within `resolved_retention`;
    /// firing first, then pending, then resolved, each by alert name and fingerprint.
    pub fn alerts(&self) -> Vec<Alert> {
        let mut v: Vec<Alert> = self.alerts.values().map(|t| t.alert.clone()).collect();
        let rank = |s: Status| match s {
            Status::Firing => 0,
            Status::Pending => 1,
            Status::Resolved => 2,
        };
        v.sort_by(|a, b| {
            (rank(a.status), a.labels.get("alertname"), &a.fingerprint).cmp(&(
                rank(b.status),
                b.labels.get("alertname"),
                &b.fingerprint,
            ))
        });
        v
    }

    /// By fingerprint (16 hex digits, or a unique prefix of at least 4).
    pub fn alert(&self, fp: &str) -> Option<&Alert> {
        self.find(fp).map(|k| &self.alerts[&k].alert)
    }

    fn find(&self, fp: &str) -> Option<u64> {
        if fp.len() < 4 {
            return None;
        }
        let mut hits = self.alerts.iter().filter(|(_, t)| t.alert.fingerprint.starts_with(fp));
        let first = hits.next().map(|(k, _)| *k);
        if hits.next().is_some() {
            None
        } else {
            first
        }
    }

    pub fn silences(&self) -> &[Silence] {
        &self.silences
    }

    /// One evaluation. `predictions` feeds `prediction.*` rules (absent: those rules see no data).
    pub fn evaluate(&mut self, snap: &Snapshot, predictions: Option<&Predictions>, now: SystemTime) -> Vec<Transition> {
        let mut out = Vec::new();
        self.silences.retain(|s| now < s.end);
        let mut seen = HashSet::new();
        for (ri, rule) in self.rules.iter().enumerate() {
            for inst in select::instances(rule.metric, rule.scope, snap, self.prev.as_ref(), predictions) {
                let mut labels = rule.labels.clone();
                labels.extend(inst.labels);
                labels.insert("alertname".into(), rule.name.clone());
                let fp = fingerprint(&labels);
                if !seen.insert(fp) {
                    continue; // two instances with the same labels: the first wins
                }
                let active = self.alerts.get(&fp).filter(|t| t.active()).and_then(|t| t.level);
                let level = rule.level(inst.value, active);
                if level.is_none() && !self.alerts.contains_key(&fp) {
                    continue;
                }
                let t = self.alerts.entry(fp).or_insert_with(|| Tracked::new(labels, now, Some(ri)));
                if inst.forecast.is_some() {
                    t.alert.forecast = inst.forecast;
                }
                step(t, rule, &self.cfg, &self.silences, level, Some(inst.value), now, &mut out);
            }
        }
        // Rule alerts with no value this time: their process is gone (inhibited), or no data.
        let alive: HashSet<(String, String)> =
            snap.processes.iter().filter(|p| !p.exited).map(|p| (p.pid.to_string(), p.comm.clone())).collect();
        for (fp, t) in self.alerts.iter_mut() {
            if seen.contains(fp) || t.alert.manual || !t.active() {
                continue;
            }
            let Some(rule) = t.rule.and_then(|ri| self.rules.get(ri)) else { continue };
            // First evaluation after a (re)start: rate metrics need a previous snapshot, so
            // "no value" means "not known yet", not "cleared" (no resolve + re-fire on restart).
            if self.prev.is_none() && rule.metric.needs_previous() {
                continue;
            }
            let gone = match (t.alert.labels.get("pid"), t.alert.labels.get("comm")) {
                (Some(pid), Some(comm)) => !alive.contains(&(pid.clone(), comm.clone())),
                _ => false,
            };
            if gone {
                t.alert.inhibited = true;
                let kind = if t.alert.status == Status::Firing { TransitionKind::Resolved } else { TransitionKind::Cancelled };
                t.resolve(now);
                out.push(t.transition(kind, now));
            } else {
                step(t, rule, &self.cfg, &self.silences, None, None, now, &mut out);
            }
        }
        self.escalate(now, &mut out);
        for t in self.alerts.values_mut() {
            refresh_silence(t, &self.silences, now);
        }
        // Cancelled first episodes leave nothing behind; resolved ones stay for the retention.
        let keep = self.cfg.resolved_retention;
        self.alerts
            .retain(|_, t| t.active() || (t.alert.occurrences > 0 && t.resolved_at.is_some_and(|r| since(now, r) <= keep)));
        self.prev = Some(snap.clone());
        out
    }

    fn escalate(&mut self, now: SystemTime, out: &mut Vec<Transition>) {
        let esc = &self.cfg.escalation;
        if esc.tiers.is_empty() || esc.escalate_after.is_zero() {
            return;
        }
        for t in self.alerts.values_mut() {
            let a = &t.alert;
            if a.status != Status::Firing || a.acknowledged || a.silenced {
                continue;
            }
            while t.alert.tier + 1 < esc.tiers.len() && since(now, t.tier_since) >= esc.escalate_after {
                t.alert.tier += 1;
                t.alert.tier_name = Some(esc.tiers[t.alert.tier].clone());
                t.tier_since += esc.escalate_after;
                let from = t.alert.severity;
                if from < Severity::Critical {
                    t.alert.severity = Severity::Critical;
                    t.escalated = true;
                }
                let mut tr = t.transition(TransitionKind::Escalated, now);
                tr.from_severity = Some(from);
                out.push(tr);
            }
        }
    }

    /// Acknowledge an active alert: stops escalation; cleared when the alert resolves.
    pub fn acknowledge(&mut self, fp: &str, by: &str, comment: &str, now: SystemTime) -> Result<Alert, String> {
        let k = self.find(fp).ok_or_else(|| format!("no alert {fp}"))?;
        let t = self.alerts.get_mut(&k).expect("found");
        if !t.active() {
            return Err(format!("alert {fp} is resolved"));
        }
        t.alert.acknowledged = true;
        t.alert.ack = Some(Ack { by: by.into(), comment: comment.into(), at: rfc3339(now) });
        Ok(t.alert.clone())
    }

    /// Add a silence; returns its id.
    pub fn silence(
        &mut self,
        matchers: Vec<Matcher>,
        duration: Duration,
        created_by: &str,
        comment: &str,
        now: SystemTime,
    ) -> Result<String, String> {
        if matchers.is_empty() {
            return Err("a silence needs at least one matcher".into());
        }
        if duration.is_zero() {
            return Err("a silence needs a positive duration".into());
        }
        self.silence_seq += 1;
        let id = format!("s{:x}-{}", now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs(), self.silence_seq);
        let end = now + duration;
        self.silences.push(Silence {
            id: id.clone(),
            matchers,
            starts_at: rfc3339(now),
            ends_at: rfc3339(end),
            created_by: created_by.into(),
            comment: comment.into(),
            start: now,
            end,
        });
        for t in self.alerts.values_mut() {
            refresh_silence(t, &self.silences, now);
        }
        Ok(id)
    }

    pub fn unsilence(&mut self, id: &str, now: SystemTime) -> bool {
        let n = self.silences.len();
        self.silences.retain(|s| s.id != id);
        for t in self.alerts.values_mut() {
            refresh_silence(t, &self.silences, now);
        }
        n != self.silences.len()
    }

    /// Raise a manual alert: firing at once, until [`Engine::resolve`]. Labels may carry an
    /// `alertname` (default `ManualAlert`); the message is the summary.
    pub fn fire(&mut self, severity: Severity, message: &str, mut labels: Labels, now: SystemTime) -> Transition {
        labels.entry("alertname".into()).or_insert_with(|| MANUAL_ALERTNAME.into());
        let fp = fingerprint(&labels);
        let t = self.alerts.entry(fp).or_insert_with(|| Tracked::new(labels, now, None));
        t.alert.manual = true;
        t.alert.severity = severity;
        t.level = Some(severity);
        t.alert.annotations = [("summary".to_string(), message.to_string())].into();
        t.alert.last_seen = rfc3339(now);
        t.last_true = now;
        if t.alert.status != Status::Firing {
            t.start_pending(now);
            t.start_firing(now, &self.cfg.escalation.tiers);
        }
        refresh_silence(t, &self.silences, now);
        t.transition(TransitionKind::Firing, now)
    }

    /// Resolve an alert by hand (manual ones; a rule alert would re-fire if its condition holds).
    pub fn resolve(&mut self, fp: &str, now: SystemTime) -> Result<Transition, String> {
        let k = self.find(fp).ok_or_else(|| format!("no alert {fp}"))?;
        let t = self.alerts.get_mut(&k).expect("found");
        if !t.active() {
            return Err(format!("alert {fp} is already resolved"));
        }
        t.resolve(now);
        Ok(t.transition(TransitionKind::Resolved, now))
    }
}

fn refresh_silence(t: &mut Tracked, silences: &[Silence], now: SystemTime) {
    let ids: Vec<String> =
        silences.iter().filter(|s| s.active(now) && s.matches(&t.alert.labels)).map(|s| s.id.clone()).collect();
    t.alert.silenced = !ids.is_empty();
    t.alert.silenced_by = ids;
}

fn annotate(t: &mut Tracked, rule: &Rule) {
    let sev = t.alert.severity;
    let ctx = Context {
        labels: &t.alert.labels,
        value: t.alert.value,
        threshold: rule.threshold(t.level.unwrap_or(sev)),
        severity: sev.as_str(),
        forecast: t.alert.forecast.as_ref(),
    };
    let a = &rule.annotations;
    let mut out = Labels::new();
    for (k, v) in [("summary", &a.summary), ("message", &a.message), ("action", &a.action), ("runbook_url", &a.runbook_url)] {
        if !v.is_empty() {
            out.insert(k.into(), render(v, &ctx));
        }
    }
    t.alert.annotations = out;
}

/// Advance one rule alert given its level now (None: condition false or no data).
#[allow(clippy::too_many_arguments)]
fn step(
    t: &mut Tracked,
    rule: &Rule,
    cfg: &AlertConfig,
    silences: &[Silence],
    level: Option<Severity>,
    value: Option<f64>,
    now: SystemTime,
    out: &mut Vec<Transition>,
) {
    refresh_silence(t, silences, now);
    if let Some(v) = value {
        t.alert.value = Some(v);
    }
    match (t.active(), level) {
        (false, None) => {}
        (active, Some(l)) => {
            t.last_true = now;
            t.alert.last_seen = rfc3339(now);
            if !active {
                t.start_pending(now);
                t.level = Some(l);
                t.alert.severity = l;
                if !rule.for_.is_zero() {
                    out.push(t.transition(TransitionKind::Pending, now));
                }
            }
            if t.level != Some(l) {
                t.level = Some(l);
                let from = t.alert.severity;
                let shown = if t.escalated { l.max(from) } else { l };
                if shown != from {
                    t.alert.severity = shown;
                    if t.alert.status == Status::Firing {
                        let mut tr = t.transition(TransitionKind::SeverityChanged, now);
                        tr.from_severity = Some(from);
                        out.push(tr);
                    }
                }
            }
            if t.alert.status == Status::Pending && since(now, t.pending_since) >= rule.for_ {
                t.start_firing(now, &cfg.escalation.tiers);
                annotate(t, rule);
                out.push(t.transition(TransitionKind::Firing, now));
            }
            annotate(t, rule);
        }
        (true, None) => {
            if t.alert.status == Status::Pending {
                let first = t.alert.occurrences == 0;
                t.resolve(now);
                if first {
                    t.resolved_at = None; // dropped at the end of the evaluation
                }
                out.push(t.transition(TransitionKind::Cancelled, now));
                return;
            }
            let clear_for = since(now, t.last_true);
            if clear_for < rule.keep_firing_for {
                return;
            }
            if t.flapping(now, cfg.flap.window, cfg.flap.threshold) && clear_for < cfg.flap.hold {
                t.alert.flapping = true;
                return;
            }
            t.resolve(now);
            out.push(t.transition(TransitionKind::Resolved, now));
        }
    }
}
