//! When a channel may try its next notice: retry backoff, circuit breaker, rate limit and
//! cooldown. Pure (time is an argument) so each rule is unit-tested on its own.
//!
//! Instants are tokio's (`tokio::time::Instant`, which is `std`'s outside a paused test clock),
//! so a test can run hours of delivery on tokio's simulated clock.

use std::{collections::VecDeque, time::Duration};

use serde::Serialize;
use tokio::time::Instant;

/// Exponential backoff with "equal jitter": half the delay fixed, half random, so retries of
/// many agents against one receiver spread out but never come sooner than half the step.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// Delay after the `failures`-th consecutive failure (≥ 1); `rnd` in [0, 1).
    pub fn delay(&self, failures: u32, rnd: f64) -> Duration {
        let exp = failures.saturating_sub(1).min(30);
        let step = self.initial.saturating_mul(1u32 << exp).min(self.max);
        step / 2 + step.mul_f64(rnd.clamp(0.0, 1.0) / 2.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    /// Failing: no attempts until `open_for` has passed.
    Open,
    /// One probe allowed; its result closes or re-opens the breaker.
    HalfOpen,
}

/// Opens after `threshold` consecutive failures, so a dead receiver costs one probe per
/// `open_for` instead of a retry storm; the notices wait in the outbox meanwhile.
#[derive(Debug, Clone)]
pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    pub failures: u32,
    state: BreakerState,
    opened_at: Option<Instant>,
}

impl Breaker {
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Breaker { threshold: threshold.max(1), open_for, failures: 0, state: BreakerState::Closed, opened_at: None }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// `Ok` to try now (an open breaker past `open_for` turns half-open), else when to ask again.
    pub fn allow(&mut self, now: Instant) -> Result<(), Instant> {
        if self.state == BreakerState::Open {
            let until = self.opened_at.unwrap_or(now) + self.open_for;
            if now < until {
                return Err(until);
            }
            self.state = BreakerState::HalfOpen;
        }
        Ok(())
    }

    /// On stop: an open breaker lets one probe through now (see `Notifier::flush`).
    pub fn probe_now(&mut self) {
        if self.state == BreakerState::Open {
            self.state = BreakerState::HalfOpen;
        }
    }

    pub fn success(&mut self) {
        self.failures = 0;
        self.state = BreakerState::Closed;
        self.opened_at = None;
    }

    pub fn failure(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        if self.state == BreakerState::HalfOpen || self.failures >= self.threshold {
            self.state = BreakerState::Open;
            self.opened_at = Some(now);
        }
    }
}

/// At most `per_minute` attempts in any 60 s window and at least `cooldown` between two.
#[derive(Debug, Clone)]
pub struct RateLimit {
    per_minute: u32,
    cooldown: Duration,
    recent: VecDeque<Instant>,
}

const MINUTE: Duration = Duration::from_secs(60);

impl RateLimit {
    pub fn new(per_minute: u32, cooldown: Duration) -> Self {
        RateLimit { per_minute, cooldown, recent: VecDeque::new() }
    }

    /// None: may send now; else the earliest instant it may.
    pub fn ready_at(&mut self, now: Instant) -> Option<Instant> {
        while self.recent.front().is_some_and(|t| now.duration_since(*t) >= MINUTE) {
            self.recent.pop_front();
        }
        let mut at = None::<Instant>;
        if let Some(last) = self.recent.back() {
            let c = *last + self.cooldown;
            if now < c {
                at = Some(c);
            }
        }
        if self.per_minute > 0 && self.recent.len() >= self.per_minute as usize {
            let w = self.recent[self.recent.len() - self.per_minute as usize] + MINUTE;
            at = Some(at.map_or(w, |a| a.max(w)));
        }
        at
    }

    pub fn record(&mut self, now: Instant) {
        self.recent.push_back(now);
        let keep = (self.per_minute as usize).max(1);
        while self.recent.len() > keep {
            self.recent.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let b = Backoff { initial: Duration::from_millis(500), max: Duration::from_secs(30) };
        assert_eq!(b.delay(1, 0.0), Duration::from_millis(250));
        assert_eq!(b.delay(1, 0.999_999), Duration::from_millis(500) - Duration::from_nanos(250));
        assert_eq!(b.delay(2, 0.0), Duration::from_millis(500));
        assert_eq!(b.delay(3, 0.5), Duration::from_millis(1000 + 500));
        // 500ms · 2^7 = 64s > 30s cap: between 15s and 30s.
        assert_eq!(b.delay(8, 0.0), Duration::from_secs(15));
        assert!(b.delay(8, 0.99) < Duration::from_secs(30));
        assert_eq!(b.delay(1000, 0.0), Duration::from_secs(15));
        let spread: std::collections::HashSet<Duration> = (0..20).map(|_| b.delay(4, fastrand::f64())).collect();
        assert!(spread.len() > 10, "jitter spreads retries");
    }

    #[test]
    fn breaker_opens_after_threshold_and_probes_half_open() {
        let t0 = Instant::now();
        let mut br = Breaker::new(3, Duration::from_secs(10));
        for i in 0..2 {
            assert!(br.allow(t0).is_ok());
            br.failure(t0);
            assert_eq!(br.state(), BreakerState::Closed, "failure {i}");
        }
        br.failure(t0);
        assert_eq!(br.state(), BreakerState::Open);
        assert_eq!(br.allow(t0 + Duration::from_secs(9)), Err(t0 + Duration::from_secs(10)));
        assert!(br.allow(t0 + Duration::from_secs(10)).is_ok());
        assert_eq!(br.state(), BreakerState::HalfOpen);
        // A failed probe re-opens at once (no threshold count).
        br.failure(t0 + Duration::from_secs(10));
        assert_eq!(br.state(), BreakerState::Open);
        assert!(br.allow(t0 + Duration::from_secs(15)).is_err());
        assert!(br.allow(t0 + Duration::from_secs(20)).is_ok());
        br.success();
        assert_eq!((br.state(), br.failures), (BreakerState::Closed, 0));
        br.failure(t0 + Duration::from_secs(21));
        assert_eq!(br.state(), BreakerState::Closed);
    }

    #[test]
    fn probe_now_lets_one_attempt_through_an_open_breaker() {
        let t0 = Instant::now();
        let mut br = Breaker::new(1, Duration::from_secs(30));
        br.failure(t0);
        assert!(br.allow(t0 + Duration::from_secs(1)).is_err());
        br.probe_now();
        assert_eq!(br.state(), BreakerState::HalfOpen);
        assert!(br.allow(t0 + Duration::from_secs(1)).is_ok());
        // It failed: open again for a whole period from now.
        br.failure(t0 + Duration::from_secs(1));
        assert_eq!(br.allow(t0 + Duration::from_secs(2)), Err(t0 + Duration::from_secs(31)));
        let mut closed = Breaker::new(3, Duration::from_secs(30));
        closed.probe_now();
        assert_eq!(closed.state(), BreakerState::Closed);
    }

    #[test]
    fn rate_limit_holds_excess_until_the_window_frees() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(3, Duration::ZERO);
        for i in 0..3 {
            let t = t0 + Duration::from_secs(i);
            assert_eq!(r.ready_at(t), None);
            r.record(t);
        }
        assert_eq!(r.ready_at(t0 + Duration::from_secs(3)), Some(t0 + MINUTE));
        assert_eq!(r.ready_at(t0 + MINUTE), None);
        r.record(t0 + MINUTE);
        // The window slides: the second send (t0+1s) frees the next slot.
        assert_eq!(r.ready_at(t0 + MINUTE), Some(t0 + MINUTE + Duration::from_secs(1)));
    }

    #[test]
    fn cooldown_spaces_notices_and_combines_with_rate() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(0, Duration::from_secs(5));
        assert_eq!(r.ready_at(t0), None);
        r.record(t0);
        assert_eq!(r.ready_at(t0 + Duration::from_secs(1)), Some(t0 + Duration::from_secs(5)));
        assert_eq!(r.ready_at(t0 + Duration::from_secs(5)), None);
        let mut both = RateLimit::new(1, Duration::from_secs(5));
        both.record(t0);
        assert_eq!(both.ready_at(t0 + Duration::from_secs(1)), Some(t0 + MINUTE));
    }
}
