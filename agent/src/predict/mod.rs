//! Forecasts: time to limit per process and host resource, crisis probability and class,
//! the forecast rule inputs of the alert engine and the scoring of every forecast
//! (`docs/predictions.md`).
//!
//! [`Predictor::observe`] is pure and deterministic: time comes from the snapshot's timestamp,
//! so `wsguard replay` runs recorded history through it at any speed and gets the same answers
//! the live agent would have given.

pub mod crisis;
pub mod eta;
pub mod forecast;
pub mod score;
pub mod trend;

#[cfg(test)]
pub mod scenarios;

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

pub use crisis::Crisis;
#[cfg(test)]
pub use crisis::CrisisClass;
pub use forecast::{Forecast, Trigger, CRISIS_RULE, FD_RULE};
pub use score::Scores;

use crate::model::snapshot::{ProcessSnapshot, Snapshot};
use forecast::{Condition, Persistence};
use score::{Exhaustion, Scorer};
use trend::{Model, Urgency};

/// `[predict]` in the agent config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PredictConfig {
    pub enabled: bool,
    /// How far ahead a crisis is forecast; predictions with an ETA within it alert.
    #[serde(with = "humantime_serde")]
    pub horizon: Duration,
    /// The two trend windows that must agree.
    #[serde(with = "humantime_serde")]
    pub short_window: Duration,
    #[serde(with = "humantime_serde")]
    pub long_window: Duration,
    /// A forecast only alerts when the current usage is at least this share of the limit.
    pub floor_ratio: f64,
    /// ...and it held for this many consecutive evaluations (snapshots).
    pub persistence: u32,
    /// Usage at or above this share of the limit fires at once, whatever the forecast.
    pub backstop_ratio: f64,
    /// `PredictedCrisis` needs at least this probability over the horizon...
    pub crisis_probability: f64,
    /// ...and at least this confidence.
    pub min_confidence: f64,
    /// A trend is trusted only when its short-window fit explains at least this share of the
    /// variance (r²; 0 turns this off).
    pub min_fit_r2: f64,
    /// Evidence scaled to urgency: a strong fit spanning at least this share of its own ETA is
    /// trusted before it covers half the short window (0 turns this off)...
    pub urgent_evidence_ratio: f64,
    /// ...if it spans at least this long.
    #[serde(with = "humantime_serde")]
    pub urgent_min_span: Duration,
    /// A resource counts as exhausted at this share of its limit; ETAs are to this level.
    pub exhaustion_ratio: f64,
    /// Scoring: an exhaustion up to `horizon × (1 + score_tolerance)` after a prediction
    /// still makes it a true positive.
    pub score_tolerance: f64,
    /// Maximum WebSocket connections per process (the application's own limit), if any.
    pub max_connections_per_process: Option<u64>,
}

impl Default for PredictConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            horizon: Duration::from_secs(30 * 60),
            short_window: Duration::from_secs(10 * 60),
            long_window: Duration::from_secs(60 * 60),
            floor_ratio: 0.5,
            persistence: 3,
            min_fit_r2: 0.6,
            urgent_evidence_ratio: 1.0,
            urgent_min_span: Duration::from_secs(30),
            backstop_ratio: 0.9,
            crisis_probability: 0.5,
            min_confidence: 0.3,
            exhaustion_ratio: 0.99,
            score_tolerance: 0.2,
            max_connections_per_process: None,
        }
    }
}

impl PredictConfig {
    /// Check values; the error names the key (under `predict.`).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let unit = |k: &'static str, v: f64| {
            if v > 0.0 && v <= 1.0 {
                Ok(())
            } else {
                Err((k, format!("must be in (0, 1], got {v}")))
            }
        };
        unit("predict.floor_ratio", self.floor_ratio)?;
        unit("predict.backstop_ratio", self.backstop_ratio)?;
        unit("predict.crisis_probability", self.crisis_probability)?;
        unit("predict.exhaustion_ratio", self.exhaustion_ratio)?;
        if !(0.0..=1.0).contains(&self.min_confidence) {
            return Err(("predict.min_confidence", "must be in [0, 1]".into()));
        }
        if self.score_tolerance < 0.0 {
            return Err(("predict.score_tolerance", "must not be negative".into()));
        }
        if self.short_window.is_zero() || self.horizon.is_zero() {
            return Err(("predict.short_window", "windows and horizon must be positive".into()));
        }
        if self.long_window < self.short_window {
            return Err(("predict.long_window", "must not be shorter than predict.short_window".into()));
        }
        if !(0.0..=1.0).contains(&self.min_fit_r2) {
            return Err(("predict.min_fit_r2", "must be in [0, 1]".into()));
        }
        if !(self.urgent_evidence_ratio >= 0.0 && self.urgent_evidence_ratio.is_finite()) {
            return Err(("predict.urgent_evidence_ratio", "must be a number >= 0 (0 turns it off)".into()));
        }
        if self.persistence == 0 {
            return Err(("predict.persistence", "must be at least 1".into()));
        }
        if self.max_connections_per_process == Some(0) {
            return Err(("predict.max_connections_per_process", "must be at least 1".into()));
        }
        Ok(())
    }
}

/// Forecast of one resource.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourcePrediction {
    /// `fds`, `connections`, `client_connections`, `memory`, `conntrack`, `ephemeral_ports`.
    pub resource: String,
    pub current: f64,
    pub limit: f64,
    pub usage_ratio: f64,
    /// Combined trend, units per second.
    pub slope_per_second: f64,
    /// Time until `exhaustion_ratio × limit`, with a ~95% interval (None: not growing, or the
    /// models do not agree).
    pub eta_seconds: Option<f64>,
    pub eta_low_seconds: Option<f64>,
    pub eta_high_seconds: Option<f64>,
    /// Probability (0..1) of reaching the limit within the horizon.
    pub probability: f64,
    pub confidence: f64,
    /// Short window, long window and Holt all see significant growth, over enough evidence.
    pub trend_agrees: bool,
    /// The evidence was scaled to urgency (a strong fit spanning a fair share of its ETA).
    pub urgent: bool,
    pub short_slope: f64,
    pub long_slope: f64,
    pub short_slope_significant: bool,
    /// The long-window fit explains the series well (r² ≥ 0.8): steady growth.
    pub steady: bool,
    /// Rise within the short window as a share of the limit.
    pub recent_rise_ratio: f64,
    /// E.g. the client key for `client_connections`.
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessPrediction {
    pub pid: u32,
    pub comm: String,
    pub listen_port: String,
    pub start_time: Option<String>,
    /// Times this pid's models were reset (restart, reused pid, counter reset).
    pub model_resets: u64,
    pub samples: usize,
    pub resources: Vec<ResourcePrediction>,
    pub crisis: Crisis,
    /// Inputs of the forecast alert rules (`PredictedFdExhaustion`, `PredictedCrisis`).
    pub forecasts: Vec<Forecast>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostPrediction {
    pub resources: Vec<ResourcePrediction>,
    pub crisis: Crisis,
    /// Input of the host's `PredictedCrisis` rule.
    pub forecasts: Vec<Forecast>,
}

/// What `/api/v1/predictions` serves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Predictions {
    pub timestamp: String,
    pub horizon_seconds: f64,
    pub processes: Vec<ProcessPrediction>,
    pub host: HostPrediction,
    pub scores: Scores,
}

/// One reading of a resource against its limit.
struct Reading {
    resource: &'static str,
    value: f64,
    limit: f64,
    detail: Option<String>,
}

fn process_readings(p: &ProcessSnapshot, s: &Snapshot, cfg: &PredictConfig) -> Vec<Reading> {
    let mut out = Vec::new();
    let r = |resource, value: f64, limit: f64, detail| Reading { resource, value, limit, detail };
    if let Some(res) = &p.resources {
        if let (Some(n), Some(l)) = (res.open_fds, res.fd_limit_soft) {
            if l > 0 {
                out.push(r("fds", n as f64, l as f64, None));
            }
        }
        let mem_limit = res.memory_limit_bytes.or(s.host.memory_total_bytes);
        if let Some(l) = mem_limit.filter(|&l| l > 0) {
            out.push(r("memory", res.rss_bytes as f64, l as f64, None));
        }
    }
    if let Some(max) = cfg.max_connections_per_process {
        out.push(r("connections", p.websocket.connections_active as f64, max as f64, None));
    }
    if p.clients.quota > 0 {
        let (key, n) = p.clients.top.first().map(|c| (Some(c.key.clone()), c.connections)).unwrap_or((None, 0));
        out.push(r("client_connections", n as f64, p.clients.quota as f64, key));
    }
    out
}

fn host_readings(s: &Snapshot) -> Vec<Reading> {
    let h = &s.host;
    let mut out = Vec::new();
    if let (Some(c), Some(m)) = (h.conntrack_count, h.conntrack_max) {
        if m > 0 {
            out.push(Reading { resource: "conntrack", value: c as f64, limit: m as f64, detail: None });
        }
    }
    if let (Some(n), Some((lo, hi))) = (h.ephemeral_ports_in_use, h.ephemeral_ports_range) {
        if hi >= lo {
            let size = (hi - lo) as f64 + 1.0;
            out.push(Reading { resource: "ephemeral_ports", value: n as f64, limit: size, detail: None });
        }
    }
    if let (Some(t), Some(a)) = (h.memory_total_bytes, h.memory_available_bytes) {
        if t > 0 {
            out.push(Reading { resource: "memory", value: t.saturating_sub(a) as f64, limit: t as f64, detail: None });
        }
    }
    out
}

/// Models of one scope (a process incarnation or the host).
#[derive(Debug, Default)]
struct Scope {
    models: BTreeMap<&'static str, Model>,
    /// Resources currently at or over the exhaustion level (to detect the crossing).
    exhausted: BTreeMap<&'static str, bool>,
}

impl Scope {
    fn predict(
        &mut self,
        now: f64,
        readings: &[Reading],
        cfg: &PredictConfig,
        newly_exhausted: &mut Vec<&'static str>,
    ) -> Vec<ResourcePrediction> {
        let short = cfg.short_window.as_secs_f64();
        let long = cfg.long_window.as_secs_f64();
        let horizon = cfg.horizon.as_secs_f64();
        let urgency =
            Urgency { min_r2: cfg.min_fit_r2, eta_ratio: cfg.urgent_evidence_ratio, min_span: cfg.urgent_min_span.as_secs_f64() };
        let mut out = Vec::new();
        for rd in readings {
            let m = self.models.entry(rd.resource).or_insert_with(|| Model::new(short));
            m.push(now, rd.value, long);
            let target = rd.limit * cfg.exhaustion_ratio;
            let tr = m.trend(now, short, target, &urgency);
            let usage = rd.value / rd.limit;
            let exhausted = rd.value >= target;
            let was = self.exhausted.insert(rd.resource, exhausted).unwrap_or(false);
            if exhausted && !was {
                newly_exhausted.push(rd.resource);
            }
            let level = tr.level;
            let eta = if exhausted {
                eta::estimate(target, target, 0.0, 0.0)
            } else if tr.agree {
                eta::estimate(level, target, tr.slope, tr.slope_se)
            } else {
                None
            };
            let probability = if exhausted {
                1.0
            } else if tr.slope > 0.0 {
                eta::p_within(target - level, tr.slope, tr.slope_se, horizon) * if tr.agree { 1.0 } else { 0.25 }
            } else {
                0.0
            };
            let recent_min = m.min_since(now, short).unwrap_or(rd.value);
            out.push(ResourcePrediction {
                resource: rd.resource.to_string(),
                current: rd.value,
                limit: rd.limit,
                usage_ratio: usage,
                slope_per_second: tr.slope,
                eta_seconds: eta.map(|e| e.seconds),
                eta_low_seconds: eta.map(|e| e.low),
                eta_high_seconds: eta.and_then(|e| e.high),
                probability,
                confidence: if exhausted { 1.0 } else { tr.confidence },
                trend_agrees: tr.agree,
                urgent: tr.urgent,
                short_slope: tr.short.map(|f| f.slope).unwrap_or(0.0),
                long_slope: tr.long.map(|f| f.slope).unwrap_or(0.0),
                short_slope_significant: tr.short.is_some_and(|f| f.slope > 2.0 * f.slope_se),
                steady: tr.long.is_some_and(|f| f.r2 >= 0.8 && f.span >= 0.5 * short),
                recent_rise_ratio: ((rd.value - recent_min) / rd.limit).max(0.0),
                detail: rd.detail.clone(),
            });
        }
        out
    }
}

#[derive(Debug, Default)]
struct ProcState {
    start_time: Option<String>,
    opened: u64,
    resets: u64,
    samples: usize,
    scope: Scope,
    behaviour: crisis::Behaviour,
}

/// The forecaster. One per agent; feed it every snapshot in order.
pub struct Predictor {
    cfg: PredictConfig,
    procs: HashMap<u32, ProcState>,
    host: Scope,
    persistence: Persistence,
    scorer: Scorer,
    last_t: Option<f64>,
}

/// Unix seconds of a snapshot's timestamp.
pub fn snapshot_seconds(s: &Snapshot) -> Option<f64> {
    crate::history::snapshot_time(s).and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs_f64())
}

fn listen_port(p: &ProcessSnapshot) -> String {
    let mut ports = p.listening_ports.clone();
    ports.sort_unstable();
    ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
}

impl Predictor {
    pub fn new(cfg: PredictConfig) -> Self {
        let span = cfg.horizon.as_secs_f64() * (1.0 + cfg.score_tolerance);
        Predictor {
            persistence: Persistence::new(cfg.persistence),
            scorer: Scorer::new(span, &[FD_RULE, CRISIS_RULE]),
            cfg,
            procs: HashMap::new(),
            host: Scope::default(),
            last_t: None,
        }
    }

    /// Fold in the next snapshot and forecast. Deterministic in the sequence of snapshots.
    pub fn observe(&mut self, snap: &Snapshot) -> Predictions {
        let cfg = self.cfg.clone();
        let now =
            snapshot_seconds(snap).or_else(|| self.last_t.map(|t| t + snap.agent.interval_seconds.max(0.001))).unwrap_or(0.0);
        self.last_t = Some(now);
        let horizon = cfg.horizon.as_secs_f64();
        let short = cfg.short_window.as_secs_f64();
        let long = cfg.long_window.as_secs_f64();
        let mut new_predictions = Vec::new();
        let mut exhaustions = Vec::new();
        let mut processes = Vec::new();
        let mut seen = std::collections::HashSet::new();

        for p in snap.processes.iter().filter(|p| !p.exited) {
            seen.insert(p.pid);
            let start = p.resources.as_ref().and_then(|r| r.start_time.clone());
            let st = self.procs.entry(p.pid).or_default();
            let restarted = st.samples > 0
                && ((start.is_some() && st.start_time.is_some() && start != st.start_time)
                    || p.websocket.connections_opened < st.opened);
            if restarted {
                let resets = st.resets + 1;
                *st = ProcState { resets, ..Default::default() };
            }
            st.start_time = start.clone().or(st.start_time.take());
            st.opened = p.websocket.connections_opened;
            st.samples += 1;
            st.behaviour.update(now, p, short / 10.0, long);
            let readings = process_readings(p, snap, &cfg);
            let mut newly = Vec::new();
            let resources = st.scope.predict(now, &readings, &cfg, &mut newly);
            let signals = st.behaviour.signals(p, snap);
            // A client over its quota is a policy matter (remedies close its extra connections),
            // not the service hitting a wall: it is forecast but does not make a crisis.
            let service: Vec<ResourcePrediction> =
                resources.iter().filter(|r| r.resource != "client_connections").cloned().collect();
            let crisis = crisis::assess(&service, signals, cfg.floor_ratio, horizon);
            let (model_resets, samples) = (st.resets, st.samples);

            let key = format!("{}@{}", p.pid, start.as_deref().unwrap_or("-"));
            let port = listen_port(p);
            newly.retain(|r| *r != "client_connections");
            if !newly.is_empty() {
                let mut keys: Vec<(&'static str, String)> = vec![(CRISIS_RULE, key.clone())];
                if newly.contains(&"fds") {
                    keys.push((FD_RULE, key.clone()));
                }
                exhaustions.push(Exhaustion { at: now, keys });
            }
            let mut forecasts = Vec::new();
            if let Some(fd) = resources.iter().find(|r| r.resource == "fds") {
                let cond = Condition {
                    predicted: fd.eta_seconds.is_some_and(|e| e <= horizon),
                    floor: fd.usage_ratio >= cfg.floor_ratio,
                    backstop: fd.usage_ratio >= cfg.backstop_ratio,
                    exhausted: fd.current >= fd.limit * cfg.exhaustion_ratio,
                };
                let mut f = resource_forecast(FD_RULE, fd);
                self.persistence.step(now, FD_RULE, &key, &cond, &mut f, &mut new_predictions);
                forecasts.push(f);
            }
            forecasts.push(self.crisis_forecast(now, &key, &service, &crisis, &mut new_predictions));
            processes.push(ProcessPrediction {
                pid: p.pid,
                comm: p.comm.clone(),
                listen_port: port,
                start_time: start,
                model_resets,
                samples,
                resources,
                crisis,
                forecasts,
            });
        }
        self.procs.retain(|pid, _| seen.contains(pid));

        let mut newly = Vec::new();
        let host_resources = self.host.predict(now, &host_readings(snap), &cfg, &mut newly);
        let host_signals = crisis::Signals { system_load: crisis::system_load(snap), ..Default::default() };
        let host_crisis = crisis::assess(&host_resources, host_signals, cfg.floor_ratio, horizon);
        if !newly.is_empty() {
            exhaustions.push(Exhaustion { at: now, keys: vec![(CRISIS_RULE, "host".into())] });
        }
        let host_forecast = self.crisis_forecast(now, "host", &host_resources, &host_crisis, &mut new_predictions);
        self.persistence.sweep();
        self.scorer.observe(now, new_predictions, exhaustions);

        Predictions {
            timestamp: snap.timestamp.clone(),
            horizon_seconds: horizon,
            processes,
            host: HostPrediction { resources: host_resources, crisis: host_crisis, forecasts: vec![host_forecast] },
            scores: self.scorer.scores(),
        }
    }

    /// The `PredictedCrisis` input of one process (or the host, key `host`).
    fn crisis_forecast(
        &mut self,
        now: f64,
        key: &str,
        resources: &[ResourcePrediction],
        c: &Crisis,
        new: &mut Vec<score::NewPrediction>,
    ) -> Forecast {
        let cfg = &self.cfg;
        let max_usage = resources.iter().map(|r| r.usage_ratio).fold(0.0, f64::max);
        let worst = resources.iter().find(|r| Some(&r.resource) == c.resource.as_ref());
        let cond = Condition {
            predicted: c.probability >= cfg.crisis_probability && c.confidence >= cfg.min_confidence,
            floor: max_usage >= cfg.floor_ratio,
            backstop: max_usage >= cfg.backstop_ratio,
            exhausted: resources.iter().any(|r| r.current >= r.limit * cfg.exhaustion_ratio),
        };
        let mut f = match worst {
            Some(w) => resource_forecast(CRISIS_RULE, w),
            None => Forecast { rule: CRISIS_RULE.into(), ..Default::default() },
        };
        f.probability = c.probability;
        f.confidence = c.confidence;
        f.class = Some(c.class.as_str().into());
        f.recommendation = Some(c.recommendation.clone());
        self.persistence.step(now, CRISIS_RULE, key, &cond, &mut f, new);
        f
    }
}

/// A rule input from one resource's forecast (trigger and count filled by [`Persistence`]).
fn resource_forecast(rule: &str, r: &ResourcePrediction) -> Forecast {
    Forecast {
        rule: rule.into(),
        resource: Some(r.resource.clone()),
        trigger: None,
        consecutive: 0,
        current: r.current,
        limit: r.limit,
        usage_ratio: r.usage_ratio,
        eta_seconds: r.eta_seconds,
        eta_low_seconds: r.eta_low_seconds,
        eta_high_seconds: r.eta_high_seconds,
        probability: r.probability,
        confidence: r.confidence,
        class: None,
        recommendation: None,
    }
}
