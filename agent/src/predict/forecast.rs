//! Forecasts as alert-rule inputs, in the node-mixin pattern:
//!
//! ```text
//! trigger = forecast  when (prediction AND current level >= floor) held for `persistence`
//!                     consecutive evaluations
//!         = backstop  when the current level >= backstop (at once, whatever the forecast says)
//! ```
//!
//! This module only computes the condition (and counts its persistence, which is also when a
//! forecast is scored). The alert engine (`alert/`) owns every alert state: the default rules
//! `PredictedFdExhaustion` (`prediction.fd_exhaustion`) and `PredictedCrisis`
//! (`prediction.crisis`) read [`Forecast::value`] like any other metric.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

pub const FD_RULE: &str = "PredictedFdExhaustion";
pub const CRISIS_RULE: &str = "PredictedCrisis";

/// Why a forecast condition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Prediction AND floor, persisted.
    Forecast,
    /// The static backstop.
    Backstop,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Forecast => "forecast",
            Trigger::Backstop => "backstop",
        }
    }
}

/// One forecast rule input: what `prediction.fd_exhaustion` / `prediction.crisis` rules see, and
/// what an alert raised from it carries (`Alert::forecast`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// The default rule this input is for (`PredictedFdExhaustion`, `PredictedCrisis`).
    pub rule: String,
    /// The resource forecast (`fds`; for a crisis, the resource closest to its limit).
    pub resource: Option<String>,
    /// None: the condition does not hold (yet).
    pub trigger: Option<Trigger>,
    /// Consecutive evaluations the predictive condition (prediction AND floor) held.
    pub consecutive: u32,
    pub current: f64,
    pub limit: f64,
    pub usage_ratio: f64,
    /// Seconds to exhaustion with its ~95% interval (None: not heading there).
    pub eta_seconds: Option<f64>,
    pub eta_low_seconds: Option<f64>,
    pub eta_high_seconds: Option<f64>,
    /// Probability of reaching the limit within the horizon, and the confidence in it.
    pub probability: f64,
    pub confidence: f64,
    /// Crisis class (`leak`, `surge`, `saturation`, `none`) and the recommendation.
    pub class: Option<String>,
    pub recommendation: Option<String>,
}

impl Forecast {
    /// The rule metric: 2 backstop, 1 forecast, 0 neither (rules fire at `>= 1`).
    pub fn value(&self) -> f64 {
        match self.trigger {
            Some(Trigger::Backstop) => 2.0,
            Some(Trigger::Forecast) => 1.0,
            None => 0.0,
        }
    }
}

/// Seconds as people read them: `95 s`, `12 min`, `3.5 h`.
pub fn human(secs: f64) -> String {
    if secs < 120.0 {
        format!("{secs:.0} s")
    } else if secs < 5400.0 {
        format!("{:.0} min", secs / 60.0)
    } else {
        format!("{:.1} h", secs / 3600.0)
    }
}

impl Forecast {
    /// A field for annotation templates (`{{ .forecast.NAME }}`); None: unknown name.
    pub fn field(&self, name: &str) -> Option<String> {
        let n = |v: f64| {
            let s = format!("{v:.3}");
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        };
        let secs = |v: Option<f64>| v.map(human).unwrap_or_else(|| "-".into());
        Some(match name {
            "eta" => match self.eta_seconds {
                Some(e) if e <= 0.0 => "now".into(),
                Some(e) => human(e),
                None => "unknown".into(),
            },
            "eta_seconds" => self.eta_seconds.map(|e| format!("{e:.0}")).unwrap_or_default(),
            "eta_low" => secs(self.eta_low_seconds),
            "eta_high" => secs(self.eta_high_seconds),
            "trigger" => self.trigger.map(Trigger::as_str).unwrap_or("none").into(),
            "resource" => self.resource.clone().unwrap_or_default(),
            "current" => n(self.current),
            "limit" => n(self.limit),
            "usage" => format!("{:.0}%", self.usage_ratio * 100.0),
            "probability" => format!("{:.2}", self.probability),
            "confidence" => format!("{:.2}", self.confidence),
            "class" => self.class.clone().unwrap_or_default(),
            "recommendation" => self.recommendation.clone().unwrap_or_default(),
            _ => return None,
        })
    }
}

/// What one evaluation of a forecast condition needs.
#[derive(Debug, Clone)]
pub struct Condition {
    /// The forecast says the limit is reached within the horizon.
    pub predicted: bool,
    /// The current level is at or above the floor / the backstop.
    pub floor: bool,
    pub backstop: bool,
    /// The resource is already exhausted (a prediction now is no forecast, not scored).
    pub exhausted: bool,
}

/// Persistence counters per (rule, scoring key); forgotten when the condition breaks.
#[derive(Debug, Default)]
pub struct Persistence {
    persistence: u32,
    held: BTreeMap<(&'static str, String), u32>,
    seen: HashSet<(&'static str, String)>,
}

/// A predictive condition that just held for `persistence` evaluations: a forecast to score.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPrediction {
    pub rule: &'static str,
    pub key: String,
    pub at: f64,
    pub eta_seconds: Option<f64>,
}

impl Persistence {
    pub fn new(persistence: u32) -> Self {
        Persistence { persistence: persistence.max(1), ..Default::default() }
    }

    /// Step the condition of `rule` for `key`; fills the trigger and the count of `f` and
    /// records a new prediction when the predictive condition reaches `persistence`.
    pub fn step(
        &mut self,
        now: f64,
        rule: &'static str,
        key: &str,
        c: &Condition,
        f: &mut Forecast,
        new: &mut Vec<NewPrediction>,
    ) {
        let id = (rule, key.to_string());
        self.seen.insert(id.clone());
        let predictive = c.predicted && c.floor;
        let n = self.held.entry(id).or_default();
        *n = if predictive { *n + 1 } else { 0 };
        if predictive && *n == self.persistence && !c.exhausted {
            new.push(NewPrediction { rule, key: key.to_string(), at: now, eta_seconds: f.eta_seconds });
        }
        f.consecutive = *n;
        f.trigger = if c.backstop {
            Some(Trigger::Backstop)
        } else if *n >= self.persistence {
            Some(Trigger::Forecast)
        } else {
            None
        };
    }

    /// End of an evaluation: forget keys not stepped (gone processes).
    pub fn sweep(&mut self) {
        let seen = std::mem::take(&mut self.seen);
        self.held.retain(|k, _| seen.contains(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(predicted: bool, floor: bool, backstop: bool) -> Condition {
        Condition { predicted, floor, backstop, exhausted: false }
    }

    #[test]
    fn prediction_and_floor_and_persistence_or_backstop() {
        let mut p = Persistence::new(3);
        let mut new = Vec::new();
        let mut f = Forecast { eta_seconds: Some(100.0), ..Default::default() };
        // Prediction without floor: nothing.
        p.step(0.0, FD_RULE, "k", &c(true, false, false), &mut f, &mut new);
        assert_eq!((f.trigger, f.value()), (None, 0.0));
        for t in 1..=2 {
            p.step(t as f64, FD_RULE, "k", &c(true, true, false), &mut f, &mut new);
            assert_eq!((f.trigger, f.consecutive), (None, t));
        }
        p.step(3.0, FD_RULE, "k", &c(true, true, false), &mut f, &mut new);
        assert_eq!((f.trigger, f.value()), (Some(Trigger::Forecast), 1.0));
        assert_eq!(new, vec![NewPrediction { rule: FD_RULE, key: "k".into(), at: 3.0, eta_seconds: Some(100.0) }]);
        // Interrupted: starts over.
        p.step(4.0, FD_RULE, "k", &c(false, true, false), &mut f, &mut new);
        assert_eq!((f.trigger, f.consecutive), (None, 0));
        // Backstop at once, not a forecast to score.
        p.step(5.0, FD_RULE, "k", &c(false, true, true), &mut f, &mut new);
        assert_eq!((f.trigger, f.value()), (Some(Trigger::Backstop), 2.0));
        assert_eq!(new.len(), 1);
        p.sweep();
        p.sweep();
        assert!(p.held.is_empty());
    }
}
