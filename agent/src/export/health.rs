//! Health checks over a snapshot: each yields HEALTHY, DEGRADED or UNHEALTHY with a message and
//! the numbers behind it. Thresholds are the warning/critical levels an operator would start
//! from. Checks are about the agent (`probe`, `out_of_sync`, `history_store`) or about the
//! watched workload (the rest): `status` is the worst agent check, the one readiness (the 503
//! of `/health/detailed`) follows, so a misbehaving application never makes its watcher look
//! broken; `workload` is the worst workload check. Rates over counts (handshake success,
//! abnormal closes, stalled connections) judge only from `[health] min_samples` events on, so
//! 5 abnormal closes of the first 9 do not make a fresh agent UNHEALTHY.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{history::HistoryHealth, model::snapshot::Snapshot};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Healthy,
    Degraded,
    Unhealthy,
}

/// `[health]`: when the workload checks judge.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Events (upgrade requests, closes, active connections) a rate check needs before it
    /// grades; below, it is HEALTHY and says how many it has seen.
    pub min_samples: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig { min_samples: 20 }
    }
}

/// What a check is about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The agent itself: the probe, its view of the framing, its store.
    Agent,
    /// The watched servers and their host.
    #[default]
    Workload,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    #[serde(default)]
    pub scope: Scope,
    pub status: Status,
    pub message: String,
    pub metrics: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The agent's own status (worst agent check): what readiness follows.
    pub status: Status,
    /// The worst workload check.
    #[serde(default = "healthy")]
    pub workload: Status,
    pub timestamp: String,
    pub checks: Vec<Check>,
}

/// Status of `v` against warning/critical levels (`higher_is_worse` picks the direction).
fn grade(v: f64, warn: f64, crit: f64, higher_is_worse: bool) -> Status {
    let (w, c) = if higher_is_worse { (v >= warn, v >= crit) } else { (v <= warn, v <= crit) };
    if c {
        Status::Unhealthy
    } else if w {
        Status::Degraded
    } else {
        Status::Healthy
    }
}

fn healthy() -> Status {
    Status::Healthy
}

fn check(name: &str, status: Status, message: String, metrics: Value) -> Check {
    let scope = if ["probe", "out_of_sync", "history_store"].contains(&name) { Scope::Agent } else { Scope::Workload };
    Check { name: name.into(), scope, status, message, metrics }
}

/// `grade`, once `n` reaches `min` samples; before, HEALTHY.
fn grade_from(n: u64, min: u64, v: f64, warn: f64, crit: f64, higher_is_worse: bool) -> Status {
    if n < min {
        Status::Healthy
    } else {
        grade(v, warn, crit, higher_is_worse)
    }
}

/// ", too few to judge (N needed)" when `n` is below `min`.
fn too_few(n: u64, min: u64) -> String {
    if n < min {
        format!(", too few to judge ({min} needed)")
    } else {
        String::new()
    }
}

pub fn evaluate(s: &Snapshot, history: &HistoryHealth, cfg: &HealthConfig) -> Report {
    let min = cfg.min_samples;
    let t = &s.totals;
    let h = &s.probe.health;
    let mut checks = Vec::new();

    let lost = h.ring_drops + h.conn_map_full + h.proc_map_full + h.walk_budget_exceeded + h.read_faults;
    checks.push(check(
        "probe",
        if !s.probe.attached {
            Status::Unhealthy
        } else if lost > 0 {
            Status::Degraded
        } else {
            Status::Healthy
        },
        if !s.probe.attached {
            "probe not attached".into()
        } else if lost > 0 {
            format!("probe attached; {lost} events or connections could not be followed (see metrics)")
        } else {
            "probe attached, nothing lost".into()
        },
        json!({"attached": s.probe.attached, "events_received": s.probe.events_received, "health": h}),
    ));

    // SSE streams whose framing was lost are as unseen as WebSocket connections.
    let sse_lost = s.sse_totals.out_of_sync;
    checks.push(check(
        "out_of_sync",
        if t.out_of_sync + sse_lost > 0 { Status::Degraded } else { Status::Healthy },
        if sse_lost > 0 {
            format!("{} connections and {sse_lost} SSE streams whose framing could not be followed", t.out_of_sync)
        } else {
            format!("{} connections whose framing could not be followed", t.out_of_sync)
        },
        json!({"out_of_sync": t.out_of_sync, "sse_out_of_sync": sse_lost}),
    ));

    let active = t.connections_active;
    let stalled: u64 = s.processes.iter().map(|p| p.connections_stalled).sum();
    let ratio = if active == 0 { 1.0 } else { (active - stalled.min(active)) as f64 / active as f64 };
    checks.push(check(
        "connection_health",
        grade_from(active, min, ratio, 0.8, 0.6, false),
        format!("{:.0}% of {active} active connections healthy ({stalled} stalled){}", ratio * 100.0, too_few(active, min)),
        json!({"ratio": ratio, "active": active, "stalled": stalled}),
    ));

    let attempts = t.connections_opened + t.handshakes_failed;
    let success = if attempts == 0 { 1.0 } else { t.connections_opened as f64 / attempts as f64 };
    checks.push(check(
        "handshake_success",
        grade_from(attempts, min, success, 0.95, 0.90, false),
        format!("{:.1}% of {attempts} upgrade requests succeeded{}", success * 100.0, too_few(attempts, min)),
        json!({"rate": success, "opened": t.connections_opened, "failed": t.handshakes_failed}),
    ));

    let abnormal = if t.connections_closed == 0 { 0.0 } else { t.abnormal_closes as f64 / t.connections_closed as f64 };
    checks.push(check(
        "abnormal_closes",
        grade_from(t.connections_closed, min, abnormal, 0.10, 0.25, true),
        format!(
            "{:.1}% of {} closes were abnormal{}",
            abnormal * 100.0,
            t.connections_closed,
            too_few(t.connections_closed, min)
        ),
        json!({"rate": abnormal, "abnormal": t.abnormal_closes, "closed": t.connections_closed}),
    ));

    let worst_fd = s
        .processes
        .iter()
        .filter_map(|p| p.resources.as_ref().and_then(|r| r.fd_usage_ratio).map(|x| (x, p.pid)))
        .fold(None, |m: Option<(f64, u32)>, x| if m.is_none_or(|m| x.0 > m.0) { Some(x) } else { m });
    let (fd, fd_pid) = worst_fd.unwrap_or((0.0, 0));
    checks.push(check(
        "fd_usage",
        grade(fd, 0.70, 0.90, true),
        format!("highest fd usage {:.0}% of RLIMIT_NOFILE (pid {fd_pid})", fd * 100.0),
        json!({"ratio": fd, "pid": fd_pid}),
    ));

    let mem = s.host.memory_used_ratio.unwrap_or(0.0);
    checks.push(check(
        "memory",
        grade(mem, 0.80, 0.90, true),
        format!("host memory {:.0}% used", mem * 100.0),
        json!({"ratio": mem}),
    ));

    let p95 = s.processes.iter().filter_map(|p| p.latency.response.p95_ms.or(p.latency.handshake.p95_ms)).fold(0.0f64, f64::max);
    checks.push(check(
        "latency",
        grade(p95, 2000.0, 10000.0, true),
        format!("worst p95 response/handshake latency {p95:.1} ms"),
        json!({"p95_ms": p95}),
    ));

    checks.push(check(
        "history_store",
        if history.store_open && history.last_error.is_none() { Status::Healthy } else { Status::Degraded },
        match &history.last_error {
            Some(e) => format!("history store problem (monitoring continues in memory): {e}"),
            None if history.store_open => "history store writable".into(),
            None => "history kept in memory only".into(),
        },
        json!(history),
    ));

    let worst = |scope| checks.iter().filter(|c| c.scope == scope).map(|c| c.status).max().unwrap_or(Status::Healthy);
    let (status, workload) = (worst(Scope::Agent), worst(Scope::Workload));
    Report { status, workload, timestamp: s.timestamp.clone(), checks }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grades_and_overall_worst() {
        assert_eq!(grade(0.5, 0.8, 0.6, false), Status::Unhealthy);
        assert_eq!(grade(0.7, 0.8, 0.6, false), Status::Degraded);
        assert_eq!(grade(0.95, 0.7, 0.9, true), Status::Unhealthy);
        let mut s = Snapshot::default();
        s.probe.attached = true;
        let hh = HistoryHealth { store_open: true, ..Default::default() };
        let cfg = HealthConfig::default();
        assert_eq!(evaluate(&s, &hh, &cfg).status, Status::Healthy);
        s.totals.connections_opened = 80;
        s.totals.handshakes_failed = 20;
        let r = evaluate(&s, &hh, &cfg);
        // The workload is unhealthy; the agent is not.
        assert_eq!((r.status, r.workload), (Status::Healthy, Status::Unhealthy));
        let c = r.checks.iter().find(|c| c.name == "handshake_success").unwrap();
        assert_eq!((c.status, c.scope), (Status::Unhealthy, Scope::Workload));
        s.probe.attached = false;
        let r = evaluate(&s, &hh, &cfg);
        assert_eq!((r.checks[0].status, r.checks[0].scope, r.status), (Status::Unhealthy, Scope::Agent, Status::Unhealthy));
    }

    /// An SSE stream out of sync degrades the agent's `out_of_sync` check like a WebSocket one.
    #[test]
    fn sse_streams_out_of_sync_degrade() {
        let mut s = Snapshot::default();
        s.probe.attached = true;
        let hh = HistoryHealth { store_open: true, ..Default::default() };
        s.sse_totals.out_of_sync = 2;
        let r = evaluate(&s, &hh, &HealthConfig::default());
        let c = r.checks.iter().find(|c| c.name == "out_of_sync").unwrap();
        assert_eq!((c.status, c.scope), (Status::Degraded, Scope::Agent));
        assert_eq!(c.message, "0 connections and 2 SSE streams whose framing could not be followed");
    }

    /// 15 s after start, 5 of 9 closes abnormal: too few to call the workload unhealthy.
    #[test]
    fn rates_wait_for_min_samples() {
        let mut s = Snapshot::default();
        s.probe.attached = true;
        let hh = HistoryHealth { store_open: true, ..Default::default() };
        s.totals.connections_closed = 9;
        s.totals.abnormal_closes = 5;
        s.totals.connections_opened = 9;
        s.totals.handshakes_failed = 3;
        let r = evaluate(&s, &hh, &HealthConfig::default());
        assert_eq!((r.status, r.workload), (Status::Healthy, Status::Healthy), "{:#?}", r.checks);
        let c = r.checks.iter().find(|c| c.name == "abnormal_closes").unwrap();
        assert!(c.message.contains("too few to judge (20 needed)"), "{}", c.message);
        let r = evaluate(&s, &hh, &HealthConfig { min_samples: 5 });
        assert_eq!(r.workload, Status::Unhealthy);
    }
}
