//! Notifications (`docs/notifications.md`): alert transitions → routed, grouped notices →
//! persistent outbox → channels (`log`, `webhook`, `slack`, `alertmanager`, `email`), delivered
//! at least once, in order per channel, with retries, backoff and a circuit breaker.
//!
//! ```text
//! submit(events, firing, now) ─▶ Planner (routes, groups, repeats, resends)
//!                                 └─▶ Outbox (SQLite, one transaction with the planner state)
//! run(): one worker per channel ─▶ oldest notice ─▶ Channel::send ─▶ 2xx/250: remove
//! ```

pub mod channel;
pub mod config;
mod delivery;
pub mod notice;
mod outbox;
pub mod pace;
pub mod plan;
pub mod route;
pub mod secret;

#[cfg(test)]
mod receivers;
#[cfg(test)]
mod tests;

use std::{
    path::Path,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime},
};

// tokio's, so delivery timing runs on tokio's simulated clock in tests (see pace.rs).
use tokio::time::Instant;

use anyhow::{anyhow, Context, Result};
use serde::Serialize;

use crate::{
    alert::{Alert, Transition},
    util::time::rfc3339,
};

pub use config::{ChannelKind, NotifyConfig};
pub use pace::BreakerState;

use delivery::{attempt, ChannelRt, Step};
use outbox::Outbox;
use plan::{ChannelInfo, PlanState, Planner};

/// `Notifier::stats()`, for the API and `wsguard alerts stats`.
#[derive(Debug, Clone, Serialize)]
pub struct NotifyStats {
    /// `sqlite`, or `memory` while the outbox file cannot be opened or written.
    pub storage: String,
    pub storage_error: Option<String>,
    /// Firing alerts that matched no route (not notified).
    pub unrouted_alerts: u64,
    pub channels: Vec<ChannelStats>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChannelStats {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Receiver, redacted to scheme://host:port.
    pub target: String,
    /// Notices the receiver accepted (since the agent started).
    pub sent: u64,
    /// Failed attempts (each retry counts).
    pub failed: u64,
    /// Of those, rejections by the receiver (HTTP 4xx, SMTP 5xx).
    pub rejected: u64,
    /// Notices given up (older than max_age, or rejected max_rejections times).
    pub dropped: u64,
    /// Waiting in the outbox.
    pub pending: u64,
    pub oldest_pending_age_seconds: Option<u64>,
    pub breaker: BreakerState,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub last_success_at: Option<String>,
}

pub struct Notifier {
    cfg: NotifyConfig,
    channels: Vec<ChannelRt>,
    /// Held through a whole `submit`, so plans reach the outbox in order.
    planner: Mutex<(Planner, Option<String>)>,
    outbox: Mutex<Outbox>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Notifier {
    /// Build the channels (resolving their secrets) and open `<state_dir>/notify.db`. An
    /// unusable state dir is no error: the outbox then lives in memory (see `stats`).
    pub fn open(cfg: NotifyConfig, state_dir: &Path) -> Result<Arc<Notifier>> {
        cfg.validate().map_err(|(k, m)| anyhow!("{k}: {m}"))?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("wsguard/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("HTTP client")?;
        let common = channel::Common {
            http,
            external_url: cfg.external_url.trim_end_matches('/').to_string(),
            timeout: cfg.delivery.timeout,
        };
        let mut channels = Vec::new();
        for c in &cfg.channels {
            let ch = channel::Channel::build(c, &common)?;
            channels.push(ChannelRt::new(ch, &cfg.delivery, c.rate_limit, c.cooldown));
        }
        let router = route::Router::new(&cfg).map_err(|m| anyhow!("notify.routes: {m}"))?;
        if let Err(e) = std::fs::create_dir_all(state_dir) {
            tracing::debug!(dir = %state_dir.display(), error = %e, "cannot create state dir");
        }
        let (mut outbox, state) = Outbox::open(&state_dir.join("notify.db"));
        let state: PlanState = match state.map(|s| serde_json::from_str(&s)) {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                tracing::error!(error = %e, "notification state unreadable; starting without it (resolves of earlier alerts may be missed)");
                PlanState::default()
            }
            None => PlanState::default(),
        };
        for (ch, p) in outbox.pending() {
            if !cfg.channels.iter().any(|c| c.name == ch) {
                tracing::warn!(channel = %ch, pending = p.count, "outbox holds notices for a channel no longer configured; kept until it returns");
            }
        }
        let infos = cfg
            .channels
            .iter()
            .map(|c| ChannelInfo {
                name: c.name.clone(),
                alertmanager: c.kind == ChannelKind::Alertmanager,
                resend: c.resend_interval,
            })
            .collect();
        let planner = Planner::new(router, infos, state);
        Ok(Arc::new(Notifier { cfg, channels, planner: Mutex::new((planner, None)), outbox: Mutex::new(outbox) }))
    }

    /// Called once per evaluation with this evaluation's transitions (each with its full Alert)
    /// and all currently firing alerts (for repeats and Alertmanager resends; a previously
    /// notified alert missing from it is resolved). Persists before returning.
    pub fn submit(&self, events: &[(Transition, Alert)], firing: &[Alert], now: SystemTime) -> Result<()> {
        if self.channels.is_empty() {
            return Ok(());
        }
        let mut guard = lock(&self.planner);
        let (planner, _) = &mut *guard;
        let backlog = lock(&self.outbox).pending();
        let notices = planner.plan(events, firing, now, &|c| backlog.contains_key(c));
        self.store(guard, notices)
    }

    /// Store planned notices with the planner's state (unless neither changed), then wake the
    /// channels that got some. Takes the planner lock so plans reach the outbox in order.
    fn store(&self, mut guard: MutexGuard<'_, (Planner, Option<String>)>, notices: Vec<notice::Notice>) -> Result<()> {
        let (planner, last_state) = &mut *guard;
        let state = serde_json::to_string(&planner.state).context("notification state")?;
        if notices.is_empty() && last_state.as_ref() == Some(&state) {
            return Ok(());
        }
        let woken: Vec<String> = notices.iter().map(|n| n.channel.clone()).collect();
        lock(&self.outbox).append(notices, state.clone());
        *last_state = Some(state);
        drop(guard);
        for rt in self.channels.iter().filter(|rt| woken.contains(&rt.channel.name)) {
            rt.wake.notify_one();
        }
        Ok(())
    }

    /// Delivery loop; spawn once with tokio. Dropping (aborting) it stops every channel worker.
    pub async fn run(self: Arc<Self>) {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..self.channels.len() {
            let me = self.clone();
            set.spawn(async move { me.worker(i).await });
        }
        while set.join_next().await.is_some() {}
    }

    async fn worker(&self, i: usize) {
        let rt = &self.channels[i];
        loop {
            let step = {
                let mut p = rt.pace.lock().await;
                attempt(rt, &mut p, &self.outbox, &self.cfg.delivery).await
            };
            let until = match step {
                Step::Progress => continue,
                // Re-check now and then: the outbox may have come back from memory mode.
                Step::Idle => Instant::now() + Duration::from_secs(30),
                Step::Wait(t) => t,
            };
            tokio::select! {
                _ = rt.wake.notified() => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    /// On SIGTERM/SIGINT, within `timeout`: open group windows are closed (what the planner
    /// holds becomes notices now, see `Planner::close_windows`), then each channel gets one
    /// attempt at once whatever its backoff or breaker say (`Pacing::retry_now`) and keeps
    /// delivering while its pacing allows before the deadline. What remains stays in the outbox
    /// for the next start; an attempt cut off by the deadline counts as not delivered.
    pub async fn flush(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        if !self.channels.is_empty() {
            let mut guard = lock(&self.planner);
            let notices = guard.0.close_windows(SystemTime::now());
            if let Err(e) = self.store(guard, notices) {
                tracing::warn!("notification outbox: {e:#}");
            }
        }
        let each = self.channels.iter().map(|rt| async move {
            let mut first = true;
            loop {
                let step = {
                    let mut p = rt.pace.lock().await;
                    if std::mem::take(&mut first) {
                        p.retry_now();
                    }
                    attempt(rt, &mut p, &self.outbox, &self.cfg.delivery).await
                };
                match step {
                    Step::Progress => {}
                    Step::Idle => break,
                    Step::Wait(t) if t < deadline => tokio::time::sleep_until(t).await,
                    Step::Wait(_) => break,
                }
            }
        });
        let _ = tokio::time::timeout_at(deadline, futures_util::future::join_all(each)).await;
    }

    pub fn stats(&self) -> NotifyStats {
        let (pending, storage, storage_error) = {
            let mut o = lock(&self.outbox);
            let (s, e) = o.storage();
            let (s, e) = (s.to_string(), e.map(String::from));
            (o.pending(), s, e)
        };
        let now = notice::unix_ms(SystemTime::now());
        let channels = self
            .channels
            .iter()
            .map(|rt| {
                let c = lock(&rt.counters).clone();
                let p = pending.get(&rt.channel.name).copied().unwrap_or_default();
                ChannelStats {
                    name: rt.channel.name.clone(),
                    kind: rt.channel.kind.as_str(),
                    target: rt.channel.target.clone(),
                    sent: c.sent,
                    failed: c.failed,
                    rejected: c.rejected,
                    dropped: c.dropped,
                    pending: p.count,
                    oldest_pending_age_seconds: (p.count > 0).then(|| now.saturating_sub(p.oldest_created_ms) / 1000),
                    breaker: c.breaker.unwrap_or(BreakerState::Closed),
                    consecutive_failures: c.consecutive_failures,
                    last_error: c.last_error,
                    last_error_at: c.last_error_at.map(rfc3339),
                    last_success_at: c.last_success_at.map(rfc3339),
                }
            })
            .collect();
        NotifyStats { storage, storage_error, unrouted_alerts: lock(&self.planner).0.unrouted_total, channels }
    }
}

/// The alert service hands every change (evaluations, acks, silences, manual alerts) here.
impl crate::alert::service::Sink for Notifier {
    fn submit(&self, events: &[(Transition, Alert)], firing: &[Alert], now: SystemTime) -> Result<()> {
        Notifier::submit(self, events, firing, now)
    }

    fn stats(&self) -> serde_json::Value {
        serde_json::to_value(Notifier::stats(self)).unwrap_or_default()
    }
}
