//! Guardrails that need memory: cooldown per (action, target), runs per hour per action, one
//! run at a time per process, and the circuit breaker's count of runs that did not help.
//! Pure and clock-free (time is an argument). The kill switch and tripped breakers live in the
//! audit log (persisted); the runner checks them before these.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    time::{Duration, SystemTime},
};

const HOUR: Duration = Duration::from_secs(3600);

/// Why a run may not start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// Another run on the same process has not finished.
    InFlight,
    Cooldown {
        remaining: Duration,
    },
    HourlyCap {
        max: u32,
    },
}

impl Block {
    /// Stable reason text for the audit log (the same block is recorded once, not every tick).
    pub fn reason(&self) -> String {
        match self {
            Block::InFlight => "another run on this process is in progress".into(),
            Block::Cooldown { .. } => "cooldown".into(),
            Block::HourlyCap { max } => format!("hourly cap ({max} runs per hour)"),
        }
    }
}

#[derive(Debug, Default)]
pub struct Guard {
    /// Start times within the last hour, per action.
    runs: HashMap<String, VecDeque<SystemTime>>,
    /// Last start per (action, target).
    last: HashMap<(String, String), SystemTime>,
    /// Processes with a run in progress.
    busy: HashSet<String>,
    /// Consecutive judged runs that did not improve the metric, per action.
    misses: HashMap<String, u32>,
}

fn age(now: SystemTime, t: SystemTime) -> Duration {
    now.duration_since(t).unwrap_or_default()
}

impl Guard {
    pub fn check(
        &mut self,
        action: &str,
        target: &str,
        lock: Option<&str>,
        cooldown: Duration,
        max_per_hour: u32,
        now: SystemTime,
    ) -> Result<(), Block> {
        if lock.is_some_and(|l| self.busy.contains(l)) {
            return Err(Block::InFlight);
        }
        if let Some(t) = self.last.get(&(action.to_string(), target.to_string())) {
            let since = age(now, *t);
            if since < cooldown {
                return Err(Block::Cooldown { remaining: cooldown - since });
            }
        }
        let runs = self.runs.entry(action.to_string()).or_default();
        while runs.front().is_some_and(|t| age(now, *t) >= HOUR) {
            runs.pop_front();
        }
        if runs.len() >= max_per_hour as usize {
            return Err(Block::HourlyCap { max: max_per_hour });
        }
        Ok(())
    }

    /// A run started (real or dry): cooldown and hourly count start now; `lock` is held until
    /// [`Guard::finish`].
    pub fn start(&mut self, action: &str, target: &str, lock: Option<&str>, now: SystemTime) {
        self.last.insert((action.to_string(), target.to_string()), now);
        self.runs.entry(action.to_string()).or_default().push_back(now);
        if let Some(l) = lock {
            self.busy.insert(l.to_string());
        }
    }

    pub fn finish(&mut self, lock: &str) {
        self.busy.remove(lock);
    }

    pub fn runs_last_hour(&self, action: &str, now: SystemTime) -> usize {
        self.runs.get(action).map_or(0, |r| r.iter().filter(|t| age(now, **t) < HOUR).count())
    }

    pub fn in_flight(&self) -> usize {
        self.busy.len()
    }

    /// Record a judged run; true when this makes `k` consecutive misses (trip the breaker).
    pub fn outcome(&mut self, action: &str, improved: bool, k: u32) -> bool {
        let m = self.misses.entry(action.to_string()).or_default();
        if improved {
            *m = 0;
            return false;
        }
        *m += 1;
        k > 0 && *m >= k
    }

    pub fn misses(&self, action: &str) -> u32 {
        self.misses.get(action).copied().unwrap_or(0)
    }

    /// The breaker of `action` was reset by an operator: start counting again.
    pub fn reset(&mut self, action: &str) {
        self.misses.remove(action);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Duration = Duration::from_secs(1_700_000_000);

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(s)
    }

    #[test]
    fn cooldown_is_per_action_and_target() {
        let mut g = Guard::default();
        let cd = Duration::from_secs(60);
        assert!(g.check("a", "p1", None, cd, 10, at(0)).is_ok());
        g.start("a", "p1", None, at(0));
        assert_eq!(g.check("a", "p1", None, cd, 10, at(59)), Err(Block::Cooldown { remaining: Duration::from_secs(1) }));
        assert!(g.check("a", "p2", None, cd, 10, at(1)).is_ok(), "another target");
        assert!(g.check("b", "p1", None, cd, 10, at(1)).is_ok(), "another action");
        assert!(g.check("a", "p1", None, cd, 10, at(60)).is_ok());
    }

    #[test]
    fn hourly_cap_slides() {
        let mut g = Guard::default();
        for (i, t) in [0, 100, 200].into_iter().enumerate() {
            assert!(g.check("a", &format!("p{i}"), None, Duration::ZERO, 3, at(t)).is_ok());
            g.start("a", &format!("p{i}"), None, at(t));
        }
        assert_eq!(g.check("a", "p9", None, Duration::ZERO, 3, at(300)), Err(Block::HourlyCap { max: 3 }));
        assert_eq!(g.runs_last_hour("a", at(300)), 3);
        assert!(g.check("a", "p9", None, Duration::ZERO, 3, at(3600)).is_ok(), "the first run left the hour");
    }

    #[test]
    fn one_run_at_a_time_per_process() {
        let mut g = Guard::default();
        g.start("a", "pid:1/c1", Some("pid:1"), at(0));
        assert_eq!(g.check("b", "pid:1/c2", Some("pid:1"), Duration::ZERO, 10, at(1)), Err(Block::InFlight));
        assert!(g.check("b", "pid:2", Some("pid:2"), Duration::ZERO, 10, at(1)).is_ok());
        g.finish("pid:1");
        assert!(g.check("b", "pid:1/c2", Some("pid:1"), Duration::ZERO, 10, at(2)).is_ok());
    }

    #[test]
    fn breaker_counts_consecutive_misses() {
        let mut g = Guard::default();
        assert!(!g.outcome("a", false, 3));
        assert!(!g.outcome("a", false, 3));
        assert!(!g.outcome("a", true, 3), "an improvement resets the count");
        assert!(!g.outcome("a", false, 3));
        assert!(!g.outcome("a", false, 3));
        assert!(g.outcome("a", false, 3));
        g.reset("a");
        assert_eq!(g.misses("a"), 0);
        assert!(!g.outcome("b", false, 0), "k = 0 never trips");
    }
}
