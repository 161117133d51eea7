//! Replay: run recorded snapshots (JSON lines, the history export format) through the
//! forecasts and the forecast alert rules of the one alert engine (`PredictedFdExhaustion`,
//! `PredictedCrisis` and any rule on `prediction.*`); what would have fired and when, and the
//! scores, as data and as text. The commands over it (`wsguard replay`, `wsguard history
//! export`) are in `cli/replay.rs`.

use std::{
    io::{BufRead, Write},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::{rule::Metric, AlertConfig, Engine, Labels, TransitionKind};
use crate::{
    model::snapshot::Snapshot,
    predict::{snapshot_seconds, PredictConfig, Predictions, Predictor, Scores, Trigger},
    util::time::{from_unix_secs, rfc3339_millis},
};

/// An alert change seen in a replay.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    /// Unix seconds (the snapshot's time).
    pub at: f64,
    pub name: String,
    pub labels: Labels,
    /// `firing` or `resolved`.
    pub to: String,
    pub trigger: Option<Trigger>,
    pub summary: String,
}

/// The engine with the forecast rules of `alert` (the defaults unless configured otherwise).
pub fn forecast_engine(alert: &AlertConfig) -> Engine {
    let rules = alert
        .effective_rules(0)
        .into_iter()
        .filter(|r| matches!(r.metric, Metric::PredictionFdExhaustion | Metric::PredictionCrisis | Metric::CrisisProbability))
        .collect();
    Engine::with_rules(rules, alert.clone())
}

/// Run `pred` through `engine` at the snapshot's time; firing and resolved changes.
pub fn evaluate(engine: &mut Engine, snap: &Snapshot, pred: &Predictions, at: f64) -> Vec<Transition> {
    let now = std::time::UNIX_EPOCH + Duration::from_secs_f64(at.max(0.0));
    let mut out = Vec::new();
    for t in engine.evaluate(snap, Some(pred), now) {
        let to = match t.kind {
            TransitionKind::Firing => "firing",
            TransitionKind::Resolved => "resolved",
            _ => continue,
        };
        let Some(a) = engine.alert(&t.fingerprint) else { continue };
        out.push(Transition {
            at,
            name: t.alertname.clone(),
            labels: a.labels.clone(),
            to: to.into(),
            trigger: a.forecast.as_ref().and_then(|f| f.trigger),
            summary: a.annotations.get("summary").cloned().unwrap_or_default(),
        });
    }
    out
}

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
    alert: &AlertConfig,
    speed: Option<f64>,
    mut live: Option<&mut dyn Write>,
) -> Result<ReplayResult> {
    let mut p = Predictor::new(cfg);
    let mut engine = forecast_engine(alert);
    let mut last_t = 0.0;
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
        last_t = t.unwrap_or(last_t + snap.agent.interval_seconds.max(0.001));
        let transitions = evaluate(&mut engine, &snap, &pred, last_t);
        if let Some(w) = live.as_deref_mut() {
            for tr in &transitions {
                writeln!(w, "{}", transition_line(tr))?;
            }
        }
        r.snapshots += 1;
        r.first.get_or_insert_with(|| snap.timestamp.clone());
        r.last = Some(snap.timestamp.clone());
        r.transitions.extend(transitions);
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
    let trig = t.trigger.map(|t| format!(" [{}]", t.as_str())).unwrap_or_default();
    format!(
        "{}  {:<8} {}{{{}}}{trig}  {}",
        rfc3339_millis(from_unix_secs(t.at)),
        t.to.to_uppercase(),
        t.name,
        labels.join(","),
        t.summary
    )
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
