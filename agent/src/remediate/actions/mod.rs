//! The actions. A [`Plan`] is decided in the run loop (cheap, pure where it can be) and is what
//! a dry run records; [`execute`] carries it out in a task and returns what happened.

pub mod close;
pub mod exec;
pub mod http;
pub mod process;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};

use super::{
    config::{signal_number, ActionConfig, ActionType},
    select::Selection,
    target::Target,
};
use crate::alert::Alert;

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunResult {
    /// `ok`, `partial`, `failed` or `timeout`.
    pub result: String,
    pub detail: String,
    /// Numbers after the run.
    pub after: Value,
}

impl RunResult {
    pub fn failed(detail: impl Into<String>) -> Self {
        RunResult { result: "failed".into(), detail: detail.into(), after: json!({}) }
    }
}

/// What a run will do.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Plan {
    CloseConnections { selection: Selection, idle_ms: Option<u64> },
    Exec { argv: Vec<String>, user: String },
    Http { method: String, url: String },
    Signal { signal: String },
    RestartUnit { unit: String },
    RaiseFdLimit { factor: f64, max: Option<u64> },
}

impl Plan {
    /// One line for logs and the audit log.
    pub fn describe(&self, target: Option<&Target>) -> String {
        let who = target.map(|t| format!("pid {} ({})", t.pid, t.comm)).unwrap_or_else(|| "the host".into());
        match self {
            Plan::CloseConnections { selection: s, .. } => format!(
                "close {} connections of {who} (fds {:?}; {} matched the selector, bound {} of {})",
                s.chosen.len(),
                s.chosen.iter().map(|c| c.fd).collect::<Vec<_>>(),
                s.matched,
                s.limit,
                s.total
            ),
            Plan::Exec { argv, user } => format!("run {argv:?} as {user} for {who}"),
            Plan::Http { method, url } => format!("{method} {url} for {who}"),
            Plan::Signal { signal } => format!("send {signal} to {who}"),
            Plan::RestartUnit { unit } => format!("systemctl restart {unit} ({who})"),
            Plan::RaiseFdLimit { factor, max } => {
                format!(
                    "raise the soft RLIMIT_NOFILE of {who} ×{factor} toward its hard limit{}",
                    max.map(|m| format!(" (max {m})")).unwrap_or_default()
                )
            }
        }
    }

    /// The plan of `a` (the selection for close_connections is made by the caller).
    pub fn of(a: &ActionConfig, target: Option<&Target>) -> Result<Plan, String> {
        Ok(match a.kind {
            ActionType::CloseConnections => unreachable!("planned with its selection"),
            ActionType::Exec => Plan::Exec { argv: a.command.clone(), user: a.user.clone().unwrap_or_else(|| "nobody".into()) },
            ActionType::Http => Plan::Http {
                method: a.method.clone().unwrap_or_else(|| "POST".into()).to_ascii_uppercase(),
                url: http::redact(a.url.as_deref().unwrap_or_default()),
            },
            ActionType::Signal => Plan::Signal { signal: a.signal.clone().unwrap_or_default() },
            ActionType::RestartUnit => Plan::RestartUnit { unit: process::unit(target.ok_or("no process")?)? },
            ActionType::RaiseFdLimit => Plan::RaiseFdLimit { factor: a.factor.unwrap_or(2.0), max: a.max },
        })
    }
}

/// What exec and http send: the action, the alert (labels, annotations, value, fingerprint...)
/// and the target.
pub fn payload(a: &ActionConfig, alert: &Alert, target: Option<&Target>, run_id: i64) -> Value {
    json!({
        "action": a.name,
        "type": a.kind.as_str(),
        "run_id": run_id,
        "alert": alert,
        "target": target,
    })
}

/// `WSGUARD_*` environment of an exec command.
pub fn env(a: &ActionConfig, alert: &Alert, target: Option<&Target>, run_id: i64) -> BTreeMap<String, String> {
    let mut e = BTreeMap::new();
    e.insert("WSGUARD_ACTION".into(), a.name.clone());
    e.insert("WSGUARD_RUN_ID".into(), run_id.to_string());
    e.insert("WSGUARD_ALERTNAME".into(), alert.labels.get("alertname").cloned().unwrap_or_default());
    e.insert("WSGUARD_FINGERPRINT".into(), alert.fingerprint.clone());
    e.insert("WSGUARD_SEVERITY".into(), alert.severity.as_str().into());
    e.insert(
        "WSGUARD_STATUS".into(),
        serde_json::to_value(alert.status).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
    );
    if let Some(v) = alert.value {
        e.insert("WSGUARD_VALUE".into(), v.to_string());
    }
    if let Some(s) = alert.annotations.get("summary") {
        e.insert("WSGUARD_SUMMARY".into(), s.clone());
    }
    if let Some(t) = target {
        e.insert("WSGUARD_PID".into(), t.pid.to_string());
        e.insert("WSGUARD_COMM".into(), t.comm.clone());
    }
    for (k, v) in &alert.labels {
        let k: String = k.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
        e.insert(format!("WSGUARD_LABEL_{k}"), v.clone());
    }
    e
}

/// Carry out a plan (not a dry run). Blocking parts go to the blocking pool.
pub async fn execute(a: &ActionConfig, plan: Plan, alert: &Alert, target: Option<Target>, run_id: i64) -> RunResult {
    let check = |t: &Option<Target>| match t {
        Some(t) => t.check().map_err(|e| e.to_string()),
        None => Ok(()),
    };
    if let Err(e) = check(&target) {
        return RunResult::failed(e);
    }
    match plan {
        Plan::CloseConnections { selection, idle_ms } => {
            let Some(t) = target else { return RunResult::failed("no process") };
            tokio::task::spawn_blocking(move || close::close(&t, &selection.chosen, idle_ms))
                .await
                .unwrap_or_else(|e| RunResult::failed(format!("close task: {e}")))
        }
        Plan::Exec { argv, user } => {
            let ids = if user == "root" {
                None
            } else {
                match exec::lookup_user(&user) {
                    Ok(ids) => Some(ids),
                    Err(e) => return RunResult::failed(e),
                }
            };
            let stdin = payload(a, alert, target.as_ref(), run_id).to_string();
            exec::run(&argv, ids, &env(a, alert, target.as_ref(), run_id), stdin, a.timeout()).await
        }
        Plan::Http { .. } => http::run(a, &payload(a, alert, target.as_ref(), run_id)).await,
        Plan::Signal { signal } => {
            let Some(t) = target else { return RunResult::failed("no process") };
            let Some(n) = signal_number(&signal) else { return RunResult::failed(format!("unknown signal {signal}")) };
            process::signal(&t, n, &signal)
        }
        Plan::RestartUnit { .. } => {
            let Some(t) = target else { return RunResult::failed("no process") };
            process::restart_unit(&t, a.timeout()).await
        }
        Plan::RaiseFdLimit { factor, max } => {
            let Some(t) = target else { return RunResult::failed("no process") };
            tokio::task::spawn_blocking(move || process::raise_fd_limit(&t, factor, max))
                .await
                .unwrap_or_else(|e| RunResult::failed(format!("prlimit task: {e}")))
        }
    }
}
