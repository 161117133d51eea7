//! A notice: one message to one channel about one group of alerts. It is what the outbox stores
//! (as JSON); each channel renders it at delivery.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::alert::{Alert, Labels, Status};

/// Why an alert is in a notice. Order is precedence when two reasons meet in one group window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Alertmanager channel: periodic refresh of a firing alert.
    Resend,
    /// Still firing after `repeat_interval`.
    Repeat,
    Firing,
    /// Severity went up while firing.
    SeverityRaised,
    /// Moved to a higher escalation tier.
    Escalated,
    Resolved,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Resend => "resend",
            Reason::Repeat => "repeat",
            Reason::Firing => "firing",
            Reason::SeverityRaised => "severity_raised",
            Reason::Escalated => "escalated",
            Reason::Resolved => "resolved",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub reason: Reason,
    /// The alert as it was when the entry was made (resolved ones carry `ends_at`).
    pub alert: Alert,
}

impl Entry {
    /// Combine two entries for one alert within a group window: a resolve and a new episode
    /// replace what came before; otherwise the stronger reason stays, with the newer alert.
    pub fn merge(self, newer: Entry) -> Entry {
        if newer.reason == Reason::Resolved || self.reason == Reason::Resolved {
            return newer;
        }
        Entry { reason: self.reason.max(newer.reason), alert: newer.alert }
    }

    pub fn firing(&self) -> bool {
        self.reason != Reason::Resolved && self.alert.status == Status::Firing
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    /// Unique (UUID v4); sent to receivers so they can drop a duplicate delivery.
    pub id: String,
    pub channel: String,
    pub group_key: String,
    pub group_labels: Labels,
    /// Unix milliseconds.
    pub created_ms: u64,
    /// By fingerprint.
    pub entries: Vec<Entry>,
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

pub fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

impl Notice {
    /// `firing` if any alert in it is firing (Alertmanager's group status).
    pub fn status(&self) -> &'static str {
        if self.entries.iter().any(Entry::firing) {
            "firing"
        } else {
            "resolved"
        }
    }

    pub fn count_firing(&self) -> usize {
        self.entries.iter().filter(|e| e.firing()).count()
    }

    pub fn created(&self) -> SystemTime {
        from_unix_ms(self.created_ms)
    }

    /// Labels (or annotations) with the same value in every alert.
    pub fn common(&self, pick: impl Fn(&Alert) -> &Labels) -> Labels {
        let mut it = self.entries.iter().map(|e| pick(&e.alert));
        let Some(first) = it.next() else { return Labels::new() };
        let mut out = first.clone();
        for l in it {
            out.retain(|k, v| l.get(k) == Some(v));
        }
        out
    }

    /// `[FIRING:2] ClientConnectionQuota` (Alertmanager's title form), plus the reason when it is
    /// not a plain firing or resolve.
    pub fn title(&self) -> String {
        let name = self.common(|a| &a.labels).get("alertname").cloned().unwrap_or_else(|| {
            let mut names: Vec<&str> =
                self.entries.iter().filter_map(|e| e.alert.labels.get("alertname").map(String::as_str)).collect();
            names.dedup();
            names.join(", ")
        });
        let n = self.count_firing();
        let head = if n > 0 { format!("[FIRING:{n}]") } else { format!("[RESOLVED:{}]", self.entries.len()) };
        let reasons: Vec<&str> = {
            let mut r: Vec<Reason> = self.entries.iter().map(|e| e.reason).collect();
            r.sort();
            r.dedup();
            r.into_iter().filter(|r| !matches!(r, Reason::Firing | Reason::Resolved)).map(Reason::as_str).collect()
        };
        if reasons.is_empty() {
            format!("{head} {name}")
        } else {
            format!("{head} {name} ({})", reasons.join(", "))
        }
    }
}
