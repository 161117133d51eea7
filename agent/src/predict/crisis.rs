//! Crisis probability, confidence and class (leak, surge, saturation) for one process or the
//! host, combined from resource growth, client behaviour and system load, with a recommendation
//! in plain words.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::ResourcePrediction;
use crate::model::snapshot::{ProcessSnapshot, Snapshot};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrisisClass {
    /// Nothing heading for a limit.
    #[default]
    None,
    /// Steady growth that does not come back: connections (fds) opened and never closed.
    Leak,
    /// A sudden jump: traffic spike, reconnect storm, thundering herd after a deploy.
    Surge,
    /// Near a limit without much growth, or already failing (handshake failures, overflows).
    Saturation,
}

impl CrisisClass {
    pub fn as_str(self) -> &'static str {
        match self {
            CrisisClass::None => "none",
            CrisisClass::Leak => "leak",
            CrisisClass::Surge => "surge",
            CrisisClass::Saturation => "saturation",
        }
    }
}

/// Behaviour signals, each 0..1 except the raw rates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Signals {
    pub connections_opened_per_minute: f64,
    pub connections_closed_per_minute: f64,
    pub handshake_failures_per_minute: f64,
    /// Share of closes in the last minutes that were abnormal (no close frame).
    pub abnormal_close_ratio: f64,
    pub distinct_clients: u64,
    /// Highest distinct client count over the long window.
    pub peak_distinct_clients: u64,
    pub clients_over_quota: u64,
    /// New connections per minute per distinct client: the same keys reconnecting fast.
    pub reconnects_per_client_per_minute: f64,
    /// 0..1: how much this looks like a reconnect storm.
    pub reconnect_storm: f64,
    /// 0..1: CPU, load average, memory pressure, accept-queue overflows of the host.
    pub system_load: f64,
    /// 0..1: handshake failures, abnormal closes, deep socket queues.
    pub stress: f64,
}

/// Distinct clients below which fast reconnects are not a storm.
pub const MIN_STORM_CLIENTS: u64 = 5;

/// Counters of the previous snapshot and smoothed rates for one process.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    prev: Option<(f64, u64, u64, u64, u64)>,
    opened_rate: f64,
    closed_rate: f64,
    failed_rate: f64,
    abnormal_rate: f64,
    distinct: VecDeque<(f64, u64)>,
}

impl Behaviour {
    /// Update from a process snapshot at `t`; `tau` smooths the rates (seconds).
    pub fn update(&mut self, t: f64, p: &ProcessSnapshot, tau: f64, long_window: f64) {
        let w = &p.websocket;
        let cur = (t, w.connections_opened, w.connections_closed, w.handshakes_failed, w.abnormal_closes);
        if let Some((pt, po, pc, pf, pa)) = self.prev {
            let dt = t - pt;
            if dt > 0.0 {
                let a = 1.0 - (-dt / tau.max(1e-3)).exp();
                let r = |now: u64, before: u64| now.saturating_sub(before) as f64 / dt;
                self.opened_rate += a * (r(cur.1, po) - self.opened_rate);
                self.closed_rate += a * (r(cur.2, pc) - self.closed_rate);
                self.failed_rate += a * (r(cur.3, pf) - self.failed_rate);
                self.abnormal_rate += a * (r(cur.4, pa) - self.abnormal_rate);
            }
        }
        self.prev = Some(cur);
        self.distinct.push_back((t, p.clients.distinct));
        while self.distinct.front().is_some_and(|&(ft, _)| t - ft > long_window) {
            self.distinct.pop_front();
        }
    }

    pub fn signals(&self, p: &ProcessSnapshot, host: &Snapshot) -> Signals {
        let per_min = |r: f64| r * 60.0;
        let distinct = p.clients.distinct;
        let opened = per_min(self.opened_rate);
        let reconnects = if distinct > 0 { opened / distinct as f64 } else { 0.0 };
        // A storm: many opens per minute, mostly by keys that already hold connections, while
        // the open count stays put (closes keep pace with opens).
        let churn = if self.opened_rate > 0.0 { (self.closed_rate / self.opened_rate).min(1.0) } else { 0.0 };
        // It takes a crowd: one client (a load generator, a buggy script) reconnecting in a loop
        // is that client's problem, not a storm.
        let storm = if opened >= 30.0 && distinct >= MIN_STORM_CLIENTS {
            ((reconnects - 1.0) / 5.0).clamp(0.0, 1.0) * churn
        } else {
            0.0
        };
        let abnormal = if self.closed_rate > 0.0 { (self.abnormal_rate / self.closed_rate).min(1.0) } else { 0.0 };
        let failed = per_min(self.failed_rate);
        let queues = (p.send_queue_bytes + p.recv_queue_bytes) as f64;
        let stress =
            (failed / 10.0).min(1.0).max(abnormal * (opened / 30.0).min(1.0)).max((queues / (64.0 * 1048576.0)).min(1.0));
        Signals {
            connections_opened_per_minute: opened,
            connections_closed_per_minute: per_min(self.closed_rate),
            handshake_failures_per_minute: failed,
            abnormal_close_ratio: abnormal,
            distinct_clients: distinct,
            peak_distinct_clients: self.distinct.iter().map(|d| d.1).max().unwrap_or(distinct),
            clients_over_quota: p.clients.at_or_over_quota,
            reconnects_per_client_per_minute: reconnects,
            reconnect_storm: storm,
            system_load: system_load(host),
            stress,
        }
    }
}

/// 0..1 from host CPU, load per CPU, memory used and accept-queue overflows.
pub fn system_load(s: &Snapshot) -> f64 {
    let h = &s.host;
    let cpu = h.cpu_percent.map(|c| ((c - 80.0) / 20.0).clamp(0.0, 1.0)).unwrap_or(0.0);
    let load = match (h.load_1, h.cpus) {
        (Some(l), Some(n)) if n > 0 => ((l / n as f64 - 1.0) / 2.0).clamp(0.0, 1.0),
        _ => 0.0,
    };
    let mem = h.memory_used_ratio.map(|m| ((m - 0.85) / 0.15).clamp(0.0, 1.0)).unwrap_or(0.0);
    let overflow = if h.listen_overflows_delta.unwrap_or(0) > 0 { 1.0 } else { 0.0 };
    cpu.max(load).max(mem).max(overflow)
}

/// A crisis assessment for one process or the host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Crisis {
    /// Probability (0..1) that a limit is hit within the horizon.
    pub probability: f64,
    /// How much to trust it (0..1): data coverage, fit quality, model agreement.
    pub confidence: f64,
    pub class: CrisisClass,
    /// The resource closest to its limit in time (or usage).
    pub resource: Option<String>,
    pub recommendation: String,
    pub signals: Signals,
}

/// Combine the resource predictions and behaviour signals.
pub fn assess(resources: &[ResourcePrediction], signals: Signals, floor: f64, horizon: f64) -> Crisis {
    let worst = resources.iter().max_by(|a, b| {
        (a.probability, a.usage_ratio).partial_cmp(&(b.probability, b.usage_ratio)).unwrap_or(std::cmp::Ordering::Equal)
    });
    let Some(worst) = worst else {
        return Crisis { recommendation: "Nothing to forecast yet.".into(), signals, ..Default::default() };
    };
    let growth = worst.probability;
    // Behaviour only matters near a limit: a storm or failing handshakes at 0.3% of the fd
    // limit are no crisis of the limit (the workload health checks report them). They weigh in
    // fully from the floor (`[predict] floor_ratio`) and in proportion below it.
    let weight = if floor > 0.0 { (worst.usage_ratio / floor).clamp(0.0, 1.0) } else { 1.0 };
    let (storm, stress) = (signals.reconnect_storm * weight, signals.stress * weight);
    let p = 1.0 - (1.0 - growth) * (1.0 - 0.25 * storm) * (1.0 - 0.15 * signals.system_load) * (1.0 - 0.2 * stress);
    let class = classify(worst, storm, stress, floor, p);
    let recommendation = recommend(class, worst, &signals, storm, stress, horizon);
    Crisis {
        probability: p.clamp(0.0, 1.0),
        confidence: worst.confidence,
        class,
        resource: Some(worst.resource.clone()),
        recommendation,
        signals,
    }
}

/// `storm` and `stress`: the signals weighted by how near the limit the resource is.
fn classify(r: &ResourcePrediction, storm: f64, stress: f64, floor: f64, p: f64) -> CrisisClass {
    let near = r.usage_ratio >= floor;
    if p < 0.2 && !near && stress < 0.5 {
        return CrisisClass::None;
    }
    // A recent jump: the short window grows much faster than the long one, or the usage rose
    // by a large share of the limit within the short window, or clients reconnect in a storm.
    let jump = r.recent_rise_ratio >= 0.3;
    let accelerating = r.short_slope > 0.0 && r.short_slope > 3.0 * r.long_slope.max(0.0) && r.short_slope_significant;
    if storm >= 0.5 || jump || (accelerating && !r.steady) {
        return CrisisClass::Surge;
    }
    if r.trend_agrees && r.steady {
        return CrisisClass::Leak;
    }
    if near || stress >= 0.5 {
        return CrisisClass::Saturation;
    }
    if r.trend_agrees {
        return CrisisClass::Leak;
    }
    CrisisClass::None
}

use super::forecast::human;

fn recommend(class: CrisisClass, r: &ResourcePrediction, s: &Signals, storm: f64, stress: f64, horizon: f64) -> String {
    let what = match r.resource.as_str() {
        "fds" => "open file descriptors",
        "connections" => "WebSocket connections",
        "client_connections" => "connections of the busiest client",
        "memory" => "memory",
        "conntrack" => "conntrack entries",
        "ephemeral_ports" => "ephemeral ports",
        other => other,
    };
    let eta = match r.eta_seconds {
        Some(e) if e <= 0.0 => "now".to_string(),
        Some(e) => format!("in about {}", human(e)),
        None => "not within the forecast".to_string(),
    };
    let pct = r.usage_ratio * 100.0;
    match class {
        CrisisClass::None => format!("No crisis expected within {}: {what} at {pct:.0}% of the limit.", human(horizon)),
        CrisisClass::Leak => format!(
            "{what} grow steadily by {:.1}/min and reach the limit ({:.0}) {eta}; \
             {:.0} connections opened/min vs {:.0} closed/min looks like connections that are never closed. \
             Find the code path that does not close them (idle connections are the usual suspects), \
             close idle or over-quota connections as a stopgap, or raise the limit (LimitNOFILE) to buy time.",
            r.slope_per_second * 60.0,
            r.limit,
            s.connections_opened_per_minute,
            s.connections_closed_per_minute
        ),
        CrisisClass::Surge => format!(
            "{what} jumped to {pct:.0}% of the limit ({:.0} new connections/min, {:.1} per client){}. \
             Rate-limit new connections or upgrades, make clients back off with jitter when they reconnect, \
             and scale out if the load is real.",
            s.connections_opened_per_minute,
            s.reconnects_per_client_per_minute,
            if storm >= 0.5 { ": a reconnect storm" } else { "" }
        ),
        CrisisClass::Saturation => format!(
            "{what} at {pct:.0}% of the limit ({:.0}) with little growth; failures {eta}. \
             Raise the limit or shed load (close idle connections, lower per-client quotas){}.",
            r.limit,
            if stress >= 0.5 { "; handshakes are already failing or queues are deep" } else { "" }
        ),
    }
}
