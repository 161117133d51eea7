//! Alert identity and lifecycle state.
//!
//! Identity is the label set alone (severity, value and annotations are not part of it), hashed
//! exactly as Alertmanager's `model.LabelSet.Fingerprint` (`labelSetToFingerprint`): FNV-1a
//! 64-bit (offset basis 14695981039346656037, prime 1099511628211); for each label in order of
//! sorted names: hash the name's bytes, the separator byte 0xff, the value's bytes, 0xff. An
//! empty set hashes to the offset basis. Shown as 16 lower-case hex digits, as Alertmanager does.

use std::{
    collections::VecDeque,
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};

use super::{Labels, Severity};
use crate::util::time::rfc3339;

const OFFSET64: u64 = 14695981039346656037;
const PRIME64: u64 = 1099511628211;
const SEPARATOR: u8 = 0xff;

fn hash_add(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(PRIME64);
    }
    h
}

/// Alertmanager-compatible fingerprint of a label set (BTreeMap iterates in sorted order).
pub fn fingerprint(labels: &Labels) -> u64 {
    labels.iter().fold(OFFSET64, |h, (k, v)| {
        let h = hash_add(hash_add(h, k.as_bytes()), &[SEPARATOR]);
        hash_add(hash_add(h, v.as_bytes()), &[SEPARATOR])
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Firing,
    Resolved,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub by: String,
    pub comment: String,
    /// RFC 3339.
    pub at: String,
}

/// One alert as `wsguard alerts list --json` will print it (a contract: add fields, do not
/// rename them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Identity; includes `alertname`.
    pub labels: Labels,
    /// Rendered `summary`, `message`, `action`, `runbook_url` (empty ones left out).
    pub annotations: Labels,
    pub severity: Severity,
    pub status: Status,
    /// RFC 3339: when the current episode began (pending: when the condition started to hold;
    /// firing and resolved: when it started firing).
    pub starts_at: String,
    /// RFC 3339, set once resolved.
    pub ends_at: Option<String>,
    /// 16 hex digits, see [`fingerprint`].
    pub fingerprint: String,
    /// Last value of the rule's metric (None for manual alerts).
    pub value: Option<f64>,
    /// Times the alert started firing.
    pub occurrences: u64,
    /// RFC 3339: first time the condition held / last evaluation it held.
    pub first_seen: String,
    pub last_seen: String,
    pub acknowledged: bool,
    pub ack: Option<Ack>,
    pub silenced: bool,
    /// Ids of the silences that match.
    pub silenced_by: Vec<String>,
    /// Resolved because its process is gone (no notification needed beyond the resolve).
    pub inhibited: bool,
    /// Index into the escalation tiers and its name.
    pub tier: usize,
    pub tier_name: Option<String>,
    pub flapping: bool,
    /// Raised by hand (`fire`); resolves only by hand.
    pub manual: bool,
    /// Forecast rules (`PredictedFdExhaustion`, `PredictedCrisis`): the latest forecast (ETA,
    /// its interval, probability, confidence, trigger).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<crate::predict::Forecast>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionKind {
    /// The condition holds; waiting for `for`.
    Pending,
    /// A pending alert whose condition stopped holding before `for` (nothing to notify).
    Cancelled,
    Firing,
    Resolved,
    /// Moved up a routing tier.
    Escalated,
    SeverityChanged,
}

impl TransitionKind {
    /// The serde name (`severity_changed`, …).
    pub fn as_str(&self) -> &'static str {
        match self {
            TransitionKind::Pending => "pending",
            TransitionKind::Cancelled => "cancelled",
            TransitionKind::Firing => "firing",
            TransitionKind::Resolved => "resolved",
            TransitionKind::Escalated => "escalated",
            TransitionKind::SeverityChanged => "severity_changed",
        }
    }
}

/// What changed in one evaluation; drives notification channels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub kind: TransitionKind,
    pub fingerprint: String,
    pub alertname: String,
    pub severity: Severity,
    /// Previous severity for `severity_changed`.
    pub from_severity: Option<Severity>,
    pub tier: usize,
    pub silenced: bool,
    pub acknowledged: bool,
    /// Resolved by inhibition (its process is gone).
    pub inhibited: bool,
    /// RFC 3339.
    pub at: String,
}

/// An alert with the clock readings the state machine needs (persisted across restarts).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tracked {
    pub alert: Alert,
    pub rule: Option<usize>,
    /// Severity from the thresholds (the shown severity may be higher after escalation).
    pub level: Option<Severity>,
    pub pending_since: SystemTime,
    pub firing_since: Option<SystemTime>,
    pub last_true: SystemTime,
    pub resolved_at: Option<SystemTime>,
    pub tier_since: SystemTime,
    /// Escalation raised the severity; thresholds no longer lower it.
    pub escalated: bool,
    /// When it started firing, within the flap window.
    pub fire_starts: VecDeque<SystemTime>,
}

impl Tracked {
    pub fn new(labels: Labels, now: SystemTime, rule: Option<usize>) -> Self {
        let fp = format!("{:016x}", fingerprint(&labels));
        let t = rfc3339(now);
        Tracked {
            alert: Alert {
                labels,
                annotations: Labels::new(),
                severity: Severity::Warning,
                // Inactive until the first episode starts.
                status: Status::Resolved,
                starts_at: t.clone(),
                ends_at: None,
                fingerprint: fp,
                value: None,
                occurrences: 0,
                first_seen: t.clone(),
                last_seen: t,
                acknowledged: false,
                ack: None,
                silenced: false,
                silenced_by: Vec::new(),
                inhibited: false,
                tier: 0,
                tier_name: None,
                flapping: false,
                manual: false,
                forecast: None,
            },
            rule,
            level: None,
            pending_since: now,
            firing_since: None,
            last_true: now,
            resolved_at: None,
            tier_since: now,
            escalated: false,
            fire_starts: VecDeque::new(),
        }
    }

    pub fn transition(&self, kind: TransitionKind, now: SystemTime) -> Transition {
        let a = &self.alert;
        Transition {
            kind,
            fingerprint: a.fingerprint.clone(),
            alertname: a.labels.get("alertname").cloned().unwrap_or_default(),
            severity: a.severity,
            from_severity: None,
            tier: a.tier,
            silenced: a.silenced,
            acknowledged: a.acknowledged,
            inhibited: a.inhibited,
            at: rfc3339(now),
        }
    }

    pub fn active(&self) -> bool {
        matches!(self.alert.status, Status::Pending | Status::Firing)
    }

    /// (Re)start an episode: pending.
    pub fn start_pending(&mut self, now: SystemTime) {
        let a = &mut self.alert;
        a.status = Status::Pending;
        a.starts_at = rfc3339(now);
        a.ends_at = None;
        a.inhibited = false;
        self.pending_since = now;
        self.firing_since = None;
        self.resolved_at = None;
        self.escalated = false;
        a.tier = 0;
        self.tier_since = now;
    }

    pub fn start_firing(&mut self, now: SystemTime, tiers: &[String]) {
        let a = &mut self.alert;
        a.status = Status::Firing;
        a.starts_at = rfc3339(now);
        a.occurrences += 1;
        a.tier = 0;
        a.tier_name = tiers.first().cloned();
        self.firing_since = Some(now);
        self.tier_since = now;
        self.fire_starts.push_back(now);
    }

    pub fn resolve(&mut self, now: SystemTime) {
        let a = &mut self.alert;
        a.status = Status::Resolved;
        a.ends_at = Some(rfc3339(now));
        a.flapping = false;
        // An acknowledgement covers one episode.
        a.acknowledged = false;
        a.ack = None;
        self.resolved_at = Some(now);
        self.level = None;
    }

    /// Forget fire starts older than the window; flapping = more than `threshold` remain.
    pub fn flapping(&mut self, now: SystemTime, window: Duration, threshold: usize) -> bool {
        while self.fire_starts.front().is_some_and(|t| now.duration_since(*t).unwrap_or_default() > window) {
            self.fire_starts.pop_front();
        }
        self.fire_starts.len() > threshold
    }
}
