//! Delivery: per channel, the oldest undelivered notice is tried until its receiver accepts it
//! (strict order: notice N+1 never goes before N), paced by backoff, circuit breaker, rate limit
//! and cooldown; a notice older than `max_age`, or rejected `max_rejections` times in a row, is
//! dropped, counted and logged.

use std::{
    sync::Mutex,
    time::{Duration, SystemTime},
};

// tokio's, for the simulated clock of the tests (see pace.rs).
use tokio::time::Instant;

use super::{
    channel::Channel,
    config::DeliveryConfig,
    outbox::{Outbox, Row},
    pace::{Backoff, Breaker, BreakerState, RateLimit},
};

/// Counters and last outcome of a channel (since the agent started).
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub sent: u64,
    pub failed: u64,
    pub rejected: u64,
    pub dropped: u64,
    pub consecutive_failures: u32,
    pub breaker: Option<BreakerState>,
    pub last_error: Option<String>,
    pub last_error_at: Option<SystemTime>,
    pub last_success_at: Option<SystemTime>,
}

pub struct Pacing {
    breaker: Breaker,
    rate: RateLimit,
    backoff: Backoff,
    failures: u32,
    rejections: u32,
    next_try: Option<Instant>,
}

impl Pacing {
    /// On stop: the next attempt may go now, whatever backoff and breaker say. The process is
    /// going away, so this one probe cannot add up to a retry storm, and a receiver that came
    /// back during a backoff (or while the breaker was open) gets its backlog before the stop
    /// rather than at the next start. Rate limit and cooldown still hold: they are the
    /// receiver's terms.
    pub fn retry_now(&mut self) {
        self.next_try = None;
        self.breaker.probe_now();
    }
}

/// A channel and its delivery state.
pub struct ChannelRt {
    pub channel: Channel,
    /// Held for the whole of one attempt, so the worker and `flush` never send the same notice
    /// at once.
    pub pace: tokio::sync::Mutex<Pacing>,
    pub wake: tokio::sync::Notify,
    pub counters: Mutex<Counters>,
}

impl ChannelRt {
    pub fn new(channel: Channel, d: &DeliveryConfig, rate_limit: u32, cooldown: Duration) -> Self {
        ChannelRt {
            channel,
            pace: tokio::sync::Mutex::new(Pacing {
                breaker: Breaker::new(d.breaker_threshold, d.breaker_open),
                rate: RateLimit::new(rate_limit, cooldown),
                backoff: Backoff { initial: d.retry_initial, max: d.retry_max },
                failures: 0,
                rejections: 0,
                next_try: None,
            }),
            wake: tokio::sync::Notify::new(),
            counters: Mutex::new(Counters { breaker: Some(BreakerState::Closed), ..Default::default() }),
        }
    }

    fn count(&self, f: impl FnOnce(&mut Counters)) {
        f(&mut self.counters.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// Outcome of one step of a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing to deliver.
    Idle,
    /// Not before this instant (backoff, breaker, rate limit or cooldown).
    Wait(Instant),
    /// A notice was delivered or dropped; try the next.
    Progress,
}

fn lock(o: &Mutex<Outbox>) -> std::sync::MutexGuard<'_, Outbox> {
    o.lock().unwrap_or_else(|e| e.into_inner())
}

/// Try the channel's oldest notice once (if pacing allows).
pub async fn attempt(rt: &ChannelRt, p: &mut Pacing, outbox: &Mutex<Outbox>, d: &DeliveryConfig) -> Step {
    let name = rt.channel.name.as_str();
    let Some(row) = lock(outbox).head(name) else { return Step::Idle };
    let now_sys = SystemTime::now();
    let age = now_sys.duration_since(row.notice.created()).unwrap_or_default();
    if age > d.max_age {
        drop_notice(rt, outbox, &row, &format!("undelivered after {}", humantime::format_duration(d.max_age)));
        return Step::Progress;
    }
    let now = Instant::now();
    if let Some(t) = p.next_try.filter(|t| *t > now) {
        return Step::Wait(t);
    }
    if let Err(until) = p.breaker.allow(now) {
        return Step::Wait(until);
    }
    if let Some(t) = p.rate.ready_at(now) {
        return Step::Wait(t);
    }
    p.rate.record(now);
    let res = match tokio::time::timeout(d.timeout * 2, rt.channel.send(&row.notice, now_sys)).await {
        Ok(r) => r,
        Err(_) => Err(super::channel::SendError::transient(format!("no answer within {:?}", d.timeout * 2))),
    };
    let now = Instant::now();
    match res {
        Ok(()) => {
            lock(outbox).remove(&row.notice);
            if p.failures > 0 {
                tracing::info!(channel = name, after_failures = p.failures, "notification channel delivering again");
            }
            p.breaker.success();
            (p.failures, p.rejections, p.next_try) = (0, 0, None);
            rt.count(|c| {
                c.sent += 1;
                c.consecutive_failures = 0;
                c.breaker = Some(BreakerState::Closed);
                c.last_success_at = Some(SystemTime::now());
            });
            Step::Progress
        }
        Err(e) => {
            rt.count(|c| {
                c.failed += 1;
                c.rejected += e.permanent as u64;
                c.last_error = Some(e.message.clone());
                c.last_error_at = Some(SystemTime::now());
            });
            if e.permanent {
                // The receiver answered: it is up, so this is no reason to open the breaker.
                p.breaker.success();
                p.rejections += 1;
                if p.rejections >= d.max_rejections {
                    drop_notice(rt, outbox, &row, &format!("rejected {} times: {}", p.rejections, e.message));
                    (p.failures, p.rejections, p.next_try) = (0, 0, None);
                    rt.count(|c| c.consecutive_failures = 0);
                    return Step::Progress;
                }
            } else {
                p.rejections = 0;
                p.breaker.failure(now);
            }
            p.failures += 1;
            let delay = p.backoff.delay(p.failures, fastrand::f64());
            let next = now + delay;
            p.next_try = Some(next);
            let state = p.breaker.state();
            if p.failures == 1 || (state == BreakerState::Open && p.breaker.failures == d.breaker_threshold) {
                tracing::warn!(channel = name, target = %rt.channel.target, notice = %row.notice.id, error = %e.message,
                    failures = p.failures, breaker = ?state, retry_in = ?delay, "notification delivery failed; kept in the outbox");
            } else {
                tracing::debug!(channel = name, error = %e.message, failures = p.failures, "notification delivery failed");
            }
            rt.count(|c| {
                c.consecutive_failures = p.failures;
                c.breaker = Some(state);
            });
            Step::Wait(next.max(match p.breaker.allow(now) {
                Ok(()) => now,
                Err(t) => t,
            }))
        }
    }
}

fn drop_notice(rt: &ChannelRt, outbox: &Mutex<Outbox>, row: &Row, why: &str) {
    lock(outbox).remove(&row.notice);
    rt.count(|c| c.dropped += 1);
    let n = &row.notice;
    let names: Vec<&str> = n.entries.iter().filter_map(|e| e.alert.labels.get("alertname").map(String::as_str)).collect();
    tracing::error!(channel = %rt.channel.name, notice = %n.id, status = n.status(), alerts = ?names,
        why = %rt.channel.redact(why), "notification dropped");
}
