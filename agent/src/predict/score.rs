//! Every forecast is scored once its horizon has passed.
//!
//! - A *prediction* is made when a rule's predictive condition (forecast AND floor) has held for
//!   `persistence` evaluations (backstop firings are not forecasts and are not scored).
//! - An *exhaustion* is the moment a resource first reaches `exhaustion_ratio` of its limit.
//! - A prediction is a true positive if an exhaustion of its key happens before
//!   `at + horizon × (1 + tolerance)`, else a false positive once that time has passed.
//! - An exhaustion is caught if a prediction of its key was made before it (within that span).
//!
//! precision = TP / (TP + FP); recall = caught / exhaustions; lead time = exhaustion − prediction;
//! ETA error = |predicted ETA − realised lead time| / realised lead time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use super::forecast::NewPrediction;

/// Score of one rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleScore {
    pub rule: String,
    /// Predictions made (scored + pending).
    pub predictions: u64,
    pub true_positives: u64,
    pub false_positives: u64,
    /// Predictions whose horizon has not passed yet.
    pub pending: u64,
    pub exhaustions: u64,
    /// Exhaustions preceded by a prediction.
    pub caught: u64,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    /// Mean and minimum realised lead time of true positives, seconds.
    pub lead_time_seconds: Option<f64>,
    pub lead_time_min_seconds: Option<f64>,
    /// Mean and maximum relative ETA error of true positives.
    pub eta_error_ratio: Option<f64>,
    pub eta_error_max_ratio: Option<f64>,
}

/// Scores of all rules plus the latest scored outcomes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub rules: Vec<RuleScore>,
    /// The last (at most 50) scored predictions, oldest first.
    pub outcomes: Vec<Outcome>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub rule: String,
    pub key: String,
    /// Unix seconds the prediction was made.
    pub predicted_at: f64,
    pub eta_seconds: Option<f64>,
    pub true_positive: bool,
    pub lead_time_seconds: Option<f64>,
    pub eta_error_ratio: Option<f64>,
}

#[derive(Debug, Clone)]
struct Open {
    p: NewPrediction,
    deadline: f64,
}

#[derive(Debug, Default, Clone)]
struct Tally {
    predictions: u64,
    tp: u64,
    fp: u64,
    exhaustions: u64,
    caught: u64,
    leads: Vec<f64>,
    errors: Vec<f64>,
}

#[derive(Debug, Default)]
pub struct Scorer {
    span: f64,
    open: Vec<Open>,
    tallies: BTreeMap<&'static str, Tally>,
    outcomes: Vec<Outcome>,
}

/// An exhaustion event: the keys it matches per rule (e.g. `fds` events match both the fd rule's
/// key and the crisis rule's key of the same process).
#[derive(Debug, Clone)]
pub struct Exhaustion {
    pub at: f64,
    pub keys: Vec<(&'static str, String)>,
}

impl Scorer {
    /// `span`: how long after a prediction an exhaustion still counts (horizon × (1 + tolerance)).
    pub fn new(span: f64, rules: &[&'static str]) -> Self {
        let mut s = Scorer { span, ..Default::default() };
        for r in rules {
            s.tallies.insert(r, Tally::default());
        }
        s
    }

    pub fn observe(&mut self, now: f64, new: Vec<NewPrediction>, exhaustions: Vec<Exhaustion>) {
        for p in new {
            self.tallies.entry(p.rule).or_default().predictions += 1;
            self.open.push(Open { deadline: p.at + self.span, p });
        }
        for e in exhaustions {
            for (rule, key) in &e.keys {
                let t = self.tallies.entry(rule).or_default();
                t.exhaustions += 1;
                let mut caught = false;
                let mut i = 0;
                while i < self.open.len() {
                    let o = &self.open[i];
                    if o.p.rule == *rule && &o.p.key == key && o.p.at <= e.at && e.at <= o.deadline {
                        let o = self.open.remove(i);
                        let lead = e.at - o.p.at;
                        let err = o.p.eta_seconds.filter(|_| lead > 0.0).map(|eta| (eta - lead).abs() / lead);
                        t.tp += 1;
                        t.leads.push(lead);
                        if let Some(err) = err {
                            t.errors.push(err);
                        }
                        caught = true;
                        Self::record(&mut self.outcomes, o.p, true, Some(lead), err);
                    } else {
                        i += 1;
                    }
                }
                if caught {
                    t.caught += 1;
                }
            }
        }
        let (expired, open): (Vec<Open>, Vec<Open>) = self.open.drain(..).partition(|o| now > o.deadline);
        self.open = open;
        for o in expired {
            self.tallies.entry(o.p.rule).or_default().fp += 1;
            Self::record(&mut self.outcomes, o.p, false, None, None);
        }
    }

    fn record(outcomes: &mut Vec<Outcome>, p: NewPrediction, tp: bool, lead: Option<f64>, err: Option<f64>) {
        outcomes.push(Outcome {
            rule: p.rule.to_string(),
            key: p.key,
            predicted_at: p.at,
            eta_seconds: p.eta_seconds,
            true_positive: tp,
            lead_time_seconds: lead,
            eta_error_ratio: err,
        });
        if outcomes.len() > 50 {
            outcomes.remove(0);
        }
    }

    pub fn scores(&self) -> Scores {
        let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        let rules = self
            .tallies
            .iter()
            .map(|(rule, t)| RuleScore {
                rule: rule.to_string(),
                predictions: t.predictions,
                true_positives: t.tp,
                false_positives: t.fp,
                pending: self.open.iter().filter(|o| o.p.rule == *rule).count() as u64,
                exhaustions: t.exhaustions,
                caught: t.caught,
                precision: (t.tp + t.fp > 0).then(|| t.tp as f64 / (t.tp + t.fp) as f64),
                recall: (t.exhaustions > 0).then(|| t.caught as f64 / t.exhaustions as f64),
                lead_time_seconds: mean(&t.leads),
                lead_time_min_seconds: t.leads.iter().copied().reduce(f64::min),
                eta_error_ratio: mean(&t.errors),
                eta_error_max_ratio: t.errors.iter().copied().reduce(f64::max),
            })
            .collect();
        Scores { rules, outcomes: self.outcomes.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pred(at: f64, eta: f64) -> NewPrediction {
        NewPrediction { rule: "R", key: "k".into(), at, eta_seconds: Some(eta) }
    }

    #[test]
    fn precision_recall_lead_and_error() {
        let mut s = Scorer::new(100.0, &["R"]);
        s.observe(0.0, vec![pred(0.0, 50.0)], vec![]);
        s.observe(40.0, vec![], vec![Exhaustion { at: 40.0, keys: vec![("R", "k".into())] }]);
        s.observe(200.0, vec![pred(200.0, 10.0)], vec![]);
        s.observe(301.0, vec![], vec![]);
        // An exhaustion nobody predicted.
        s.observe(400.0, vec![], vec![Exhaustion { at: 400.0, keys: vec![("R", "k".into())] }]);
        let r = &s.scores().rules[0];
        assert_eq!((r.predictions, r.true_positives, r.false_positives, r.exhaustions, r.caught), (2, 1, 1, 2, 1));
        assert_eq!(r.precision, Some(0.5));
        assert_eq!(r.recall, Some(0.5));
        assert_eq!(r.lead_time_seconds, Some(40.0));
        assert_eq!(r.eta_error_ratio, Some(0.25));
    }
}
