//! A webhook receiver down for an hour, on tokio's paused clock (`start_paused`): the hour of
//! pacing runs in a few seconds of real time.
//!
//! Simulated: every delivery timer (retry backoff, circuit breaker, rate limit, cooldown, the
//! worker's sleeps) and the planner's clock (each `submit` gets the simulated wall time, so
//! group windows and notice timestamps follow the simulated hour). So the number of attempts
//! is the one a real hour costs with the default `[notify.delivery]`.
//! Not simulated: the wall clock (`SystemTime::now()`) that delivery compares with a notice's
//! creation time for `max_age`, and the times in the stats. It barely moves here, so no notice
//! ages; with the default `max_age` of 24 h a real hour drops nothing either (the drop itself
//! is tested in `max_age_drops_and_counts_an_undeliverable_notice`, in real time).
//! Requests are real, on loopback: refused connections while the receiver is down, then an
//! HTTP receiver in this runtime.

use std::time::{Duration, SystemTime};

use tokio::time::{sleep, Instant};

use super::{http::Receiver, *};
use crate::{alert::Severity, alert::TransitionKind as K, notify::BreakerState};

/// `name` firing since `t` (a new episode each time: same fingerprint, new `starts_at`).
fn alert_at(name: &str, t: SystemTime) -> Alert {
    let l: crate::alert::Labels = [("alertname".to_string(), name.to_string())].into();
    let mut tr = Tracked::new(l, t, None);
    tr.start_pending(t);
    tr.start_firing(t, &["operations".into()]);
    tr.alert.severity = Severity::Warning;
    tr.alert
}

fn transition(a: &Alert, kind: TransitionKind, t: SystemTime) -> (Transition, Alert) {
    let (mut tr, a) = event(a, kind);
    tr.at = rfc3339(t);
    (tr, a)
}

fn resolved_at(a: &Alert, t: SystemTime) -> (Transition, Alert) {
    let mut r = a.clone();
    r.status = Status::Resolved;
    r.ends_at = Some(rfc3339(t));
    transition(&r, K::Resolved, t)
}

/// Wait on the simulated clock (1 s steps) until `f` holds; the simulated time it took.
async fn sim_wait(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?} (simulated)");
        sleep(Duration::from_secs(1)).await;
    }
    t0.elapsed()
}

#[tokio::test(start_paused = true)]
async fn receiver_down_for_an_hour_costs_one_probe_per_breaker_period_and_loses_nothing() {
    const NAMES: [&str; 3] = ["FlapA", "FlapB", "FlapC"];
    const EVAL: Duration = Duration::from_secs(5);
    let dir = tempfile::tempdir().unwrap();
    let mut rx = Receiver::new(free_port());
    // Defaults everywhere ([notify] group_wait 5 s, group_interval 30 s, group_by alertname;
    // [notify.delivery] retry 0.5 s doubling to 30 s, breaker after 5 failures for 30 s,
    // max_age 24 h) except the receiver's URL.
    let cfg = NotifyConfig { channels: vec![http_channel("hook", ChannelKind::Webhook, rx.url("/"))], ..Default::default() };
    let d = cfg.delivery.clone();
    let n = Notifier::open(cfg, dir.path()).unwrap();
    let _run = Running::start(&n);
    let (t0, wall0) = (Instant::now(), SystemTime::now());
    let wall = || wall0 + t0.elapsed();

    // An hour: three alerts fire at the top of every minute and resolve 30 s later; the agent
    // evaluates every 5 s. Each minute gives each alert a firing notice (after group_wait) and
    // a resolved one (after group_interval): 360 notices, all kept in the outbox.
    let mut want = Vec::new();
    for _minute in 0..60 {
        let start = wall();
        let alerts: Vec<Alert> = NAMES.iter().map(|name| alert_at(name, start)).collect();
        for step in 0..12 {
            let now = wall();
            let (events, firing): (Vec<_>, Vec<Alert>) = match step {
                0 => (alerts.iter().map(|a| transition(a, K::Firing, now)).collect(), alerts.clone()),
                1..=5 => (Vec::new(), alerts.clone()),
                6 => (alerts.iter().map(|a| resolved_at(a, now)).collect(), Vec::new()),
                _ => (Vec::new(), Vec::new()),
            };
            n.submit(&events, &firing, now).unwrap();
            sleep(EVAL).await;
        }
        let starts = alerts[0].starts_at.clone();
        want.extend(NAMES.iter().map(|name| (name.to_string(), "firing".to_string(), starts.clone())));
        want.extend(NAMES.iter().map(|name| (name.to_string(), "resolved".to_string(), starts.clone())));
    }
    assert_eq!(t0.elapsed(), Duration::from_secs(3600));
    let st = n.stats().channels[0].clone();
    eprintln!("after a simulated hour down: {st:?}");
    assert_eq!((st.sent, st.dropped, st.pending), (0, 0, 360), "{st:?}");
    assert_eq!(st.breaker, BreakerState::Open);
    // The breaker opens after `breaker_threshold` failures; then one probe per `breaker_open`
    // (the capped backoff, 15-30 s, is never longer). 5 + 3600 / 30 = 125; a probe that takes
    // simulated time only makes it fewer. Without the breaker, 0.5 s doubling to 30 s would be
    // ~130 too, but without backoff and breaker it would be one try per evaluation or wake-up.
    let bound = d.breaker_threshold as u64 + 3600 / d.breaker_open.as_secs() + 1;
    assert!(st.failed <= bound, "{} attempts in an hour, more than {bound}", st.failed);
    assert!(st.failed >= 60, "{} attempts: the breaker must still probe (at least one a minute)", st.failed);

    // The receiver comes back: the next probe closes the breaker and the backlog goes out,
    // once each, in order.
    rx.up().await;
    let took = sim_wait(Duration::from_secs(600), "360 notices delivered", || n.stats().channels[0].sent == 360).await;
    eprintln!("receiver back: all delivered {took:?} (simulated) later");
    assert!(took <= d.breaker_open + Duration::from_secs(60), "{took:?}");
    let reqs = rx.reqs();
    let got: Vec<(String, String, String)> = reqs
        .iter()
        .map(|r| {
            let a = &r.body["alerts"][0];
            let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
            (s(&a["labels"]["alertname"]), s(&a["status"]), s(&a["startsAt"]))
        })
        .collect();
    assert_eq!(got.len(), 360, "each notice once");
    assert_eq!(got, want, "in order");
    let ids: std::collections::HashSet<_> = reqs.iter().map(|r| r.id_header.clone().unwrap()).collect();
    assert_eq!(ids.len(), 360);
    let st = n.stats().channels[0].clone();
    assert_eq!(
        (st.sent, st.pending, st.dropped, st.breaker, st.consecutive_failures),
        (360, 0, 0, BreakerState::Closed, 0),
        "{st:?}"
    );
}
