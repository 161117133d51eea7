//! Did a run help? `settle` after it, the alert that fired it has resolved (improved), or its
//! value moved the way that clears the rule (improved), or it did not (a miss for the circuit
//! breaker). And the numbers recorded before and after a run.

use std::time::SystemTime;

use serde_json::{json, Value};

use crate::{
    alert::{rule::Op, Alert},
    model::snapshot::Snapshot,
};

/// Which way the metric of an alert gets better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `>` / `>=` rules: lower is better.
    Down,
    /// `<` / `<=` rules: higher is better.
    Up,
}

impl Direction {
    pub fn of(op: Op) -> Direction {
        match op {
            Op::Gt | Op::Ge => Direction::Down,
            Op::Lt | Op::Le => Direction::Up,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Judge {
    pub run_id: i64,
    pub action: String,
    pub alertname: String,
    pub fingerprint: String,
    pub target: String,
    pub pid: Option<u32>,
    pub client: Option<String>,
    /// The alert's value when the run started.
    pub before: Option<f64>,
    pub direction: Direction,
    pub due: SystemTime,
    /// The alert resolved (or was cancelled) since the run.
    pub resolved: bool,
}

impl Judge {
    /// `now`: the alert's value now; `firing`: whether it still fires.
    pub fn improved(&self, now: Option<f64>, firing: bool) -> bool {
        if self.resolved || !firing {
            return true;
        }
        match (self.before, now) {
            (Some(b), Some(n)) => match self.direction {
                Direction::Down => n < b,
                Direction::Up => n > b,
            },
            _ => false,
        }
    }

    pub fn explain(&self, now: Option<f64>, firing: bool) -> String {
        let v = |x: Option<f64>| x.map(|v| format!("{v}")).unwrap_or_else(|| "none".into());
        if self.resolved || !firing {
            return format!("{} resolved (value before: {})", self.alertname, v(self.before));
        }
        format!("{} still firing: value {} → {}", self.alertname, v(self.before), v(now))
    }
}

/// Numbers about a process (and client) for the audit log.
pub fn numbers(snap: &Snapshot, pid: Option<u32>, alert: Option<&Alert>, client: Option<&str>) -> Value {
    let mut out = json!({ "alert_value": alert.and_then(|a| a.value) });
    let Some(p) = pid.and_then(|pid| snap.processes.iter().find(|p| p.pid == pid)) else { return out };
    let r = p.resources.as_ref();
    out["connections"] = json!(p.websocket.connections_active);
    out["connections_idle"] = json!(p.connections_idle);
    out["connections_stalled"] = json!(p.connections_stalled);
    if p.sse.streams_opened > 0 || p.sse.streams_active > 0 {
        out["sse_streams"] = json!(p.sse.streams_active);
        out["sse_streams_idle"] = json!(p.sse_streams.idle);
    }
    out["open_fds"] = json!(r.and_then(|r| r.open_fds));
    out["fd_limit_soft"] = json!(r.and_then(|r| r.fd_limit_soft));
    out["fd_usage_ratio"] = json!(r.and_then(|r| r.fd_usage_ratio));
    if let Some(c) = client {
        let n = p.clients.top.iter().find(|t| t.key == c).map(|t| t.connections).unwrap_or(0);
        out["client"] = json!(c);
        out["client_connections"] = json!(n);
        if let Some(t) = p.sse_streams.clients.top.iter().find(|t| t.key == c) {
            out["client_sse_streams"] = json!(t.connections);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(before: Option<f64>, direction: Direction) -> Judge {
        Judge {
            run_id: 1,
            action: "a".into(),
            alertname: "X".into(),
            fingerprint: "f".into(),
            target: "t".into(),
            pid: None,
            client: None,
            before,
            direction,
            due: SystemTime::UNIX_EPOCH,
            resolved: false,
        }
    }

    #[test]
    fn improvement_follows_the_rule_direction() {
        let j = judge(Some(0.95), Direction::Down);
        assert!(j.improved(Some(0.80), true));
        assert!(!j.improved(Some(0.95), true), "unchanged is a miss");
        assert!(!j.improved(Some(0.97), true));
        assert!(j.improved(None, false), "no longer firing");
        assert!(!j.improved(None, true), "no value");
        let up = judge(Some(0.5), Direction::Up);
        assert!(up.improved(Some(0.7), true) && !up.improved(Some(0.4), true));
        let resolved = Judge { resolved: true, ..judge(Some(1.0), Direction::Down) };
        assert!(resolved.improved(Some(2.0), true), "resolved since the run, even if it fires again");
        assert!(j.explain(Some(0.9), true).contains("0.95 → 0.9"));
    }
}
