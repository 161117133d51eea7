//! Replay: run recorded snapshots (JSON lines, the history export format) through the
//! forecasts and alert rules; what would have fired and when, and the scores, as data and as
//! text. The commands over it (`wsguard replay`, `wsguard history export`) are in `cli/replay.rs`.

use std::{
    io::{BufRead, Write},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::{rfc3339, snapshot_seconds, PredictConfig, Predictions, Predictor, Scores, Transition};
use crate::model::snapshot::Snapshot;

#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayResult {
    pub snapshots: u64,
    /// Lines that were not a snapshot (reported, not fatal).
    pub skipped_lines: u64,
    pub first: Option<String>,
    pub last: Option<String>,
    /// Every firing and resolution, in order.
    pub transitions: Vec<Transition>,
    pub scores: Scores,
    /// The forecasts after the last snapshot.
    pub final_predictions: Option<Predictions>,
}

/// Replay `input`. `speed`: None or 0 = as fast as possible; N = N× real time (sleeps between
/// snapshots). Transitions are printed to `live` as they happen, if given.
pub fn replay(
    input: impl BufRead,
    cfg: PredictConfig,
    speed: Option<f64>,
    mut live: Option<&mut dyn Write>,
) -> Result<ReplayResult> {
    let mut p = Predictor::new(cfg);
    let mut r = ReplayResult::default();
    let mut prev_t: Option<f64> = None;
    for (i, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("read line {}", i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let snap: Snapshot = match serde_json::from_str(&line) {
            Ok(s) => s,
            Err(e) => {
                r.skipped_lines += 1;
                if let Some(w) = live.as_deref_mut() {
                    writeln!(w, "line {}: not a snapshot ({e}); skipped", i + 1)?;
                }
                continue;
            }
        };
        let t = snapshot_seconds(&snap);
        if let (Some(s), Some(t), Some(pt)) = (speed.filter(|s| *s > 0.0), t, prev_t) {
            let dt = (t - pt) / s;
            if dt > 0.0 && dt.is_finite() {
                std::thread::sleep(Duration::from_secs_f64(dt.min(60.0)));
            }
        }
        prev_t = t.or(prev_t);
        let pred = p.observe(&snap);
        if let Some(w) = live.as_deref_mut() {
            for tr in &pred.transitions {
                writeln!(w, "{}", transition_line(tr))?;
            }
        }
        r.snapshots += 1;
        r.first.get_or_insert_with(|| snap.timestamp.clone());
        r.last = Some(snap.timestamp.clone());
        r.transitions.extend(pred.transitions.iter().cloned());
        r.final_predictions = Some(pred);
    }
    if r.snapshots == 0 {
        bail!("no snapshots in the input (expected JSON lines of snapshots, as `wsguard history export` writes)");
    }
    r.scores = r.final_predictions.as_ref().map(|p| p.scores.clone()).unwrap_or_default();
    Ok(r)
}

pub fn transition_line(t: &Transition) -> String {
    let labels: Vec<String> = t.labels.iter().filter(|(k, _)| *k != "alertname").map(|(k, v)| format!("{k}={v}")).collect();
    let trig = match t.trigger {
        Some(super::alerting::Trigger::Backstop) => " [backstop]",
        Some(super::alerting::Trigger::Prediction) => " [forecast]",
        None => "",
    };
    format!("{}  {:<8} {}{{{}}}{trig}  {}", rfc3339(t.at), t.to.to_uppercase(), t.name, labels.join(","), t.summary)
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".into())
}

/// The scores as a table.
pub fn scores_text(s: &Scores) -> String {
    let mut out = String::from(
        "rule                   forecasts  TP  FP  pending  exhaustions  caught  precision  recall  lead(mean/min)   ETA error(mean/max)\n",
    );
    for r in &s.rules {
        out.push_str(&format!(
            "{:<22} {:>9} {:>3} {:>3} {:>8} {:>12} {:>7} {:>10} {:>7}  {:>15}  {:>18}\n",
            r.rule,
            r.predictions,
            r.true_positives,
            r.false_positives,
            r.pending,
            r.exhaustions,
            r.caught,
            opt(r.precision, |v| format!("{:.0}%", v * 100.0)),
            opt(r.recall, |v| format!("{:.0}%", v * 100.0)),
            format!(
                "{}/{}",
                opt(r.lead_time_seconds, |v| format!("{:.0}s", v)),
                opt(r.lead_time_min_seconds, |v| format!("{:.0}s", v))
            ),
            format!(
                "{}/{}",
                opt(r.eta_error_ratio, |v| format!("{:.1}%", v * 100.0)),
                opt(r.eta_error_max_ratio, |v| format!("{:.1}%", v * 100.0))
            ),
        ));
    }
    out
}
