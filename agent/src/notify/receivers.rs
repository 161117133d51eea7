//! Delivery against real receivers on loopback: an HTTP receiver (axum, in-process, random
//! port) for webhook and Slack, a real Alertmanager (`/usr/bin/prometheus-alertmanager`) and a
//! real SMTP server (`python3 -m aiosmtpd`). Each test starts and stops its own receivers; the
//! external ones are skipped with a printed reason when not installed (a failure under `CI=true`).

mod http;
mod outage;
mod real;
mod tests;

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use crate::{
    alert::{state::Tracked, Alert, Severity, Status, Transition, TransitionKind},
    util::time::rfc3339,
};

use super::{
    config::{ChannelConfig, ChannelKind, NotifyConfig},
    Notifier,
};

/// A free loopback port (bound and released; good enough on a test host).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Poll `f` every 20 ms until it holds; panic with `what` after `secs`.
pub async fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < end, "timed out after {secs}s waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A firing alert that started now (real clock: Alertmanager checks times).
pub fn alert_now(name: &str, extra: &[(&str, &str)], sev: Severity) -> Alert {
    let mut l: crate::alert::Labels = extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    l.insert("alertname".into(), name.into());
    let now = SystemTime::now();
    let mut t = Tracked::new(l, now, None);
    t.start_pending(now);
    t.start_firing(now, &["operations".into()]);
    t.alert.severity = sev;
    t.alert.annotations = [("summary".to_string(), format!("{name} fired"))].into();
    t.alert
}

pub fn event(a: &Alert, kind: TransitionKind) -> (Transition, Alert) {
    let t = Transition {
        kind,
        fingerprint: a.fingerprint.clone(),
        alertname: a.labels["alertname"].clone(),
        severity: a.severity,
        from_severity: None,
        tier: a.tier,
        silenced: a.silenced,
        acknowledged: a.acknowledged,
        inhibited: a.inhibited,
        at: rfc3339(SystemTime::now()),
    };
    (t, a.clone())
}

pub fn resolved_now(a: &Alert) -> (Transition, Alert) {
    let mut r = a.clone();
    r.status = Status::Resolved;
    r.ends_at = Some(rfc3339(SystemTime::now()));
    event(&r, TransitionKind::Resolved)
}

pub fn http_channel(name: &str, kind: ChannelKind, url: String) -> ChannelConfig {
    let mut c = ChannelConfig::new(name, kind);
    c.url = Some(url);
    c
}

/// No group waits, fast retries, a breaker that opens after 3 failures for 300 ms; every
/// alert its own group so each submit gives one notice per alert.
pub fn fast_config(channels: Vec<ChannelConfig>) -> NotifyConfig {
    let mut c = NotifyConfig {
        channels,
        group_wait: Duration::ZERO,
        group_interval: Duration::ZERO,
        group_by: vec!["...".into()],
        ..Default::default()
    };
    c.delivery.retry_initial = Duration::from_millis(50);
    c.delivery.retry_max = Duration::from_millis(400);
    c.delivery.breaker_threshold = 3;
    c.delivery.breaker_open = Duration::from_millis(300);
    c.delivery.timeout = Duration::from_secs(3);
    c
}

/// The notifier's delivery loop as a task that is aborted on drop.
pub struct Running(pub tokio::task::JoinHandle<()>);

impl Running {
    pub fn start(n: &Arc<Notifier>) -> Self {
        Running(tokio::spawn(n.clone().run()))
    }

    /// Abort and wait until the loop (and its Arc) is gone.
    pub async fn stop(mut self) {
        self.0.abort();
        let _ = (&mut self.0).await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.abort();
    }
}
