//! Unit tests of the notification pipeline (no network): planner, rendering, config, redaction,
//! outbox. Real receivers are exercised in `receivers`.

mod config;
mod outbox;
mod plan;
mod render;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{
    alert::{state::Tracked, Alert, Labels, Severity, Status, Transition, TransitionKind},
    util::time::rfc3339,
};

use super::{
    config::{ChannelConfig, ChannelKind, NotifyConfig, RouteConfig},
    notice::{Notice, Reason},
    plan::{ChannelInfo, PlanState, Planner},
    route::Router,
};

pub const T0: u64 = 1_800_000_000;

pub fn at(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0 + s)
}

pub fn labels(l: &[(&str, &str)]) -> Labels {
    l.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A firing alert named `name` (plus `extra` labels) that started firing at `at(start)`.
pub fn firing(name: &str, extra: &[(&str, &str)], sev: Severity, start: u64) -> Alert {
    let mut l = labels(extra);
    l.insert("alertname".into(), name.into());
    let mut t = Tracked::new(l, at(start), None);
    t.start_pending(at(start));
    t.start_firing(at(start), &["operations".into(), "engineering".into(), "management".into()]);
    t.alert.severity = sev;
    t.alert.annotations = labels(&[("summary", &format!("{name} is bad"))]);
    t.alert
}

pub fn resolve(a: &Alert, when: u64) -> (Transition, Alert) {
    let mut r = a.clone();
    r.status = Status::Resolved;
    r.ends_at = Some(rfc3339(at(when)));
    (transition(&r, TransitionKind::Resolved, when), r)
}

pub fn transition(a: &Alert, kind: TransitionKind, when: u64) -> Transition {
    Transition {
        kind,
        fingerprint: a.fingerprint.clone(),
        alertname: a.labels["alertname"].clone(),
        severity: a.severity,
        from_severity: None,
        tier: a.tier,
        silenced: a.silenced,
        acknowledged: a.acknowledged,
        inhibited: a.inhibited,
        at: rfc3339(at(when)),
    }
}

pub fn channel(name: &str, kind: ChannelKind) -> ChannelConfig {
    let mut c = ChannelConfig::new(name, kind);
    if matches!(kind, ChannelKind::Webhook | ChannelKind::Slack | ChannelKind::Alertmanager) {
        c.url = Some(format!("http://127.0.0.1:9/{name}"));
    }
    c
}

/// Config with no group waits (tests that need them set them).
pub fn config(channels: Vec<ChannelConfig>, routes: Vec<RouteConfig>) -> NotifyConfig {
    NotifyConfig { channels, routes, group_wait: Duration::ZERO, group_interval: Duration::ZERO, ..Default::default() }
}

pub fn planner(cfg: &NotifyConfig, state: PlanState) -> Planner {
    cfg.validate().expect("valid test config");
    let infos = cfg
        .channels
        .iter()
        .map(|c| ChannelInfo {
            name: c.name.clone(),
            alertmanager: c.kind == ChannelKind::Alertmanager,
            resend: c.resend_interval,
        })
        .collect();
    Planner::new(Router::new(cfg).unwrap(), infos, state)
}

/// (channel, sorted (alertname, reason)) of each notice, for compact assertions.
pub fn summary(ns: &[Notice]) -> Vec<(String, Vec<(String, Reason)>)> {
    ns.iter()
        .map(|n| {
            let mut e: Vec<_> = n.entries.iter().map(|e| (e.alert.labels["alertname"].clone(), e.reason)).collect();
            e.sort();
            (n.channel.clone(), e)
        })
        .collect()
}

pub fn no_backlog(_: &str) -> bool {
    false
}
