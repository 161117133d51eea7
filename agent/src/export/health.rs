//! Health checks over a snapshot: each yields HEALTHY, DEGRADED or UNHEALTHY with a message and
//! the numbers behind it; the overall status is the worst one. Thresholds are the
//! warning/critical levels an operator would start from.

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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub message: String,
    pub metrics: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub status: Status,
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

fn check(name: &str, status: Status, message: String, metrics: Value) -> Check {
    Check { name: name.into(), status, message, metrics }
}

pub fn evaluate(s: &Snapshot, history: &HistoryHealth) -> Report {
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

    checks.push(check(
        "out_of_sync",
        if t.out_of_sync > 0 { Status::Degraded } else { Status::Healthy },
        format!("{} connections whose framing could not be followed", t.out_of_sync),
        json!({"out_of_sync": t.out_of_sync}),
    ));

    let active = t.connections_active;
    let stalled: u64 = s.processes.iter().map(|p| p.connections_stalled).sum();
    let ratio = if active == 0 { 1.0 } else { (active - stalled.min(active)) as f64 / active as f64 };
    checks.push(check(
        "connection_health",
        grade(ratio, 0.8, 0.6, false),
        format!("{:.0}% of {active} active connections healthy ({stalled} stalled)", ratio * 100.0),
        json!({"ratio": ratio, "active": active, "stalled": stalled}),
    ));

    let attempts = t.connections_opened + t.handshakes_failed;
    let success = if attempts == 0 { 1.0 } else { t.connections_opened as f64 / attempts as f64 };
    checks.push(check(
        "handshake_success",
        grade(success, 0.95, 0.90, false),
        format!("{:.1}% of {attempts} upgrade requests succeeded", success * 100.0),
        json!({"rate": success, "opened": t.connections_opened, "failed": t.handshakes_failed}),
    ));

    let abnormal = if t.connections_closed == 0 { 0.0 } else { t.abnormal_closes as f64 / t.connections_closed as f64 };
    checks.push(check(
        "abnormal_closes",
        grade(abnormal, 0.10, 0.25, true),
        format!("{:.1}% of {} closes were abnormal", abnormal * 100.0, t.connections_closed),
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

    let status = checks.iter().map(|c| c.status).max().unwrap_or(Status::Healthy);
    Report { status, timestamp: s.timestamp.clone(), checks }
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
        assert_eq!(evaluate(&s, &hh).status, Status::Healthy);
        s.totals.connections_opened = 80;
        s.totals.handshakes_failed = 20;
        let r = evaluate(&s, &hh);
        assert_eq!(r.status, Status::Unhealthy);
        let c = r.checks.iter().find(|c| c.name == "handshake_success").unwrap();
        assert_eq!(c.status, Status::Unhealthy);
        s.probe.attached = false;
        assert_eq!(evaluate(&s, &hh).checks[0].status, Status::Unhealthy);
    }
}
