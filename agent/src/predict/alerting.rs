//! Forecast-fed alert rules in the node-mixin pattern:
//!
//! ```text
//! (prediction AND current level >= floor) held for `persistence` consecutive evaluations
//! OR current level >= backstop            (fires at once, whatever the forecast says)
//! ```
//!
//! Rules: `PredictedFdExhaustion` (per process: open fds vs RLIMIT_NOFILE) and `PredictedCrisis`
//! (per process and for the host: crisis probability over the horizon, any resource). Identity
//! is the label set, as in Alertmanager. The alerting issue consumes these as rule outputs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const FD_RULE: &str = "PredictedFdExhaustion";
pub const CRISIS_RULE: &str = "PredictedCrisis";

pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Pending,
    Firing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Prediction AND floor, persisted.
    Prediction,
    /// The static backstop.
    Backstop,
}

/// One active alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub name: String,
    pub labels: Labels,
    pub state: AlertState,
    /// When the condition started to hold (RFC 3339).
    pub since: String,
    /// When it started firing (RFC 3339).
    pub firing_since: Option<String>,
    pub trigger: Option<Trigger>,
    /// Consecutive evaluations the predictive condition held.
    pub consecutive: u32,
    pub summary: String,
}

/// One evaluation input.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub name: &'static str,
    pub labels: Labels,
    /// The forecast says the limit is reached within the horizon.
    pub predicted: bool,
    /// The current level is at or above the floor.
    pub floor: bool,
    /// The current level is at or above the backstop.
    pub backstop: bool,
    pub summary: String,
    /// Scoring key (which exhaustion events this rule's predictions are checked against) and
    /// the ETA (seconds) at evaluation.
    pub score_key: String,
    pub eta_seconds: Option<f64>,
    /// The resource is already exhausted (a prediction now is no forecast).
    pub exhausted: bool,
}

/// A state change, for replay output and logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub at: f64,
    pub name: String,
    pub labels: Labels,
    /// `firing` or `resolved`.
    pub to: String,
    pub trigger: Option<Trigger>,
    pub summary: String,
}

/// A predictive condition that just held for `persistence` evaluations: a forecast to score.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPrediction {
    pub rule: &'static str,
    pub key: String,
    pub at: f64,
    pub eta_seconds: Option<f64>,
}

#[derive(Debug, Clone)]
struct Active {
    name: String,
    labels: Labels,
    since: f64,
    firing_since: Option<f64>,
    trigger: Option<Trigger>,
    consecutive: u32,
    summary: String,
}

#[derive(Debug, Default)]
pub struct Alerting {
    persistence: u32,
    active: BTreeMap<String, Active>,
}

fn identity(name: &str, labels: &Labels) -> String {
    let mut s = name.to_string();
    for (k, v) in labels {
        s.push_str(&format!("\u{1f}{k}={v}"));
    }
    s
}

impl Alerting {
    pub fn new(persistence: u32) -> Self {
        Alerting { persistence: persistence.max(1), active: BTreeMap::new() }
    }

    /// Evaluate all candidates at `now`; alerts whose candidate is absent or false resolve.
    pub fn evaluate(
        &mut self,
        now: f64,
        candidates: Vec<Candidate>,
        transitions: &mut Vec<Transition>,
        predictions: &mut Vec<NewPrediction>,
    ) {
        let mut seen = std::collections::HashSet::new();
        for c in candidates {
            let id = identity(c.name, &c.labels);
            let predictive = c.predicted && c.floor;
            if !predictive && !c.backstop {
                continue;
            }
            seen.insert(id.clone());
            let a = self.active.entry(id).or_insert_with(|| Active {
                name: c.name.to_string(),
                labels: c.labels.clone(),
                since: now,
                firing_since: None,
                trigger: None,
                consecutive: 0,
                summary: String::new(),
            });
            a.summary = c.summary.clone();
            a.consecutive = if predictive { a.consecutive + 1 } else { 0 };
            if predictive && a.consecutive == self.persistence && !c.exhausted {
                predictions.push(NewPrediction { rule: c.name, key: c.score_key.clone(), at: now, eta_seconds: c.eta_seconds });
            }
            let trigger = if c.backstop {
                Some(Trigger::Backstop)
            } else if a.consecutive >= self.persistence {
                Some(Trigger::Prediction)
            } else {
                None
            };
            if let Some(tr) = trigger {
                if a.firing_since.is_none() {
                    a.firing_since = Some(now);
                    a.trigger = Some(tr);
                    transitions.push(Transition {
                        at: now,
                        name: a.name.clone(),
                        labels: a.labels.clone(),
                        to: "firing".into(),
                        trigger: Some(tr),
                        summary: a.summary.clone(),
                    });
                }
            }
        }
        let gone: Vec<String> = self.active.keys().filter(|k| !seen.contains(*k)).cloned().collect();
        for id in gone {
            if let Some(a) = self.active.remove(&id) {
                if a.firing_since.is_some() {
                    transitions.push(Transition {
                        at: now,
                        name: a.name,
                        labels: a.labels,
                        to: "resolved".into(),
                        trigger: a.trigger,
                        summary: a.summary,
                    });
                }
            }
        }
    }

    pub fn alerts(&self, fmt: impl Fn(f64) -> String) -> Vec<Alert> {
        self.active
            .values()
            .map(|a| Alert {
                name: a.name.clone(),
                labels: a.labels.clone(),
                state: if a.firing_since.is_some() { AlertState::Firing } else { AlertState::Pending },
                since: fmt(a.since),
                firing_since: a.firing_since.map(&fmt),
                trigger: a.trigger,
                consecutive: a.consecutive,
                summary: a.summary.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(predicted: bool, floor: bool, backstop: bool) -> Candidate {
        Candidate {
            name: FD_RULE,
            labels: Labels::from([("pid".to_string(), "1".to_string())]),
            predicted,
            floor,
            backstop,
            summary: String::new(),
            score_key: "1".into(),
            eta_seconds: Some(100.0),
            exhausted: false,
        }
    }

    #[test]
    fn prediction_and_floor_and_persistence_or_backstop() {
        let mut a = Alerting::new(3);
        let (mut tr, mut pr) = (Vec::new(), Vec::new());
        // Prediction without floor: nothing.
        a.evaluate(0.0, vec![cand(true, false, false)], &mut tr, &mut pr);
        assert!(a.alerts(|t| t.to_string()).is_empty());
        for t in 1..=2 {
            a.evaluate(t as f64, vec![cand(true, true, false)], &mut tr, &mut pr);
            assert_eq!(a.alerts(|t| t.to_string())[0].state, AlertState::Pending);
        }
        a.evaluate(3.0, vec![cand(true, true, false)], &mut tr, &mut pr);
        let al = a.alerts(|t| t.to_string());
        assert_eq!((al[0].state, al[0].trigger, al[0].since.as_str()), (AlertState::Firing, Some(Trigger::Prediction), "1"));
        assert_eq!(pr.len(), 1);
        // Interrupted: resolves.
        a.evaluate(4.0, vec![cand(false, true, false)], &mut tr, &mut pr);
        assert!(a.alerts(|t| t.to_string()).is_empty());
        assert_eq!(tr.iter().map(|t| t.to.as_str()).collect::<Vec<_>>(), ["firing", "resolved"]);
        // Backstop fires at once.
        a.evaluate(5.0, vec![cand(false, true, true)], &mut tr, &mut pr);
        assert_eq!(a.alerts(|t| t.to_string())[0].trigger, Some(Trigger::Backstop));
        assert_eq!(pr.len(), 1);
    }
}
