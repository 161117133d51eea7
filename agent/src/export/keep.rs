//! What `/metrics` remembers between snapshots so that its counters only go up per label set:
//! the label set each process was last exported under, and the final totals of processes that
//! are gone.
//!
//! # Why
//! Processes that share a label set (`comm`, `listen_port`, `unit`) are summed into one series.
//! When one of them goes away (it exits, and 5 minutes later leaves the snapshot), its numbers
//! would leave the sum and the counter would go down, which `rate()` reads as a reset and turns
//! into a spike. So a gone process's last totals are added to its label set's *retired* totals,
//! and every counter of the set is `live processes + retired`.
//!
//! # Bounds
//! Retired totals of a label set are kept while a process of the set is live, and for
//! [`RETIRED_FOR`] after the last one went away; then the set's series end (Prometheus marks them
//! stale). At most [`MAX_RETIRED_SETS`] label sets without a live process are kept; beyond that
//! the ones whose last process went away longest ago are forgotten first. A label set that comes
//! back after being forgotten starts from its live processes again: one counter reset, which
//! `rate()` handles. An agent restart starts from what the probe still holds (the same).
//!
//! # Identity that does not move
//! An exited process no longer has `/proc` (no unit, no resources): it keeps the label set it was
//! last exported under. A process the agent never identified (it exited before `/proc/PID` was
//! read) gets `comm` [`UNIDENTIFIED`], never an empty label set.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::metrics::{Identity, MetricsConfig};
use crate::model::{
    snapshot::{ProcessSnapshot, Quantiles, Snapshot, WebSocketStats},
    sse::SseStats,
};

/// How long the retired totals of a label set without a live process are kept, in seconds.
pub const RETIRED_FOR: f64 = 3600.0;
/// Most label sets without a live process whose retired totals are kept.
pub const MAX_RETIRED_SETS: usize = 1000;
/// `comm` of a process that exited before the agent could read `/proc/PID/comm`.
pub const UNIDENTIFIED: &str = "unidentified";

/// Exported histogram upper bounds are `2^k` nanoseconds for these `k` (16.384 µs … 17.18 s),
/// plus `+Inf`. Every `2^k` is an edge of the probe's log-linear buckets, so each exported
/// bucket is a sum of whole probe buckets: exact, nothing split by guessing.
pub const LE_LOG2_NS: std::ops::RangeInclusive<u32> = 14..=34;
/// Exported buckets: one per bound of [`LE_LOG2_NS`] and `+Inf`.
pub const LE_BUCKETS: usize = (34 - 14 + 1) + 1;

/// A latency histogram as exported: per-bucket (not cumulative) counts, sum and count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Hist {
    pub buckets: [u64; LE_BUCKETS],
    pub sum_ns: u128,
    pub count: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Hist { buckets: [0; LE_BUCKETS], sum_ns: 0, count: 0 }
    }
}

impl Hist {
    /// Folds the probe's buckets of `q` into the exported ones.
    pub fn of(q: &Quantiles) -> Self {
        let mut h = Hist { sum_ns: u128::from(q.sum_ns), ..Default::default() };
        for &[i, n] in &q.buckets {
            let hi = wsguard_common::hist::bounds(i as usize).1;
            let slot = LE_LOG2_NS.clone().position(|k| hi <= (1u64 << k) as f64).unwrap_or(LE_BUCKETS - 1);
            h.buckets[slot] += n;
            h.count += n;
        }
        h
    }

    pub fn add(&mut self, o: &Hist) {
        for (a, b) in self.buckets.iter_mut().zip(o.buckets) {
            *a += b;
        }
        self.sum_ns += o.sum_ns;
        self.count += o.count;
    }

    /// Upper bounds in seconds, `+Inf` last.
    pub fn bounds() -> impl Iterator<Item = f64> {
        LE_LOG2_NS.map(|k| (1u64 << k) as f64 / 1e9).chain(std::iter::once(f64::INFINITY))
    }
}

/// Everything a process adds to its label set's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Counters {
    /// Counter fields only (`connections_active` and the averages are not read from here).
    pub ws: WebSocketStats,
    /// SSE counter fields only (`streams_active` is a gauge, not read from here).
    pub sse: SseStats,
    pub unfollowed: u64,
    pub tcp_accepted: u64,
    pub not_websocket: u64,
    /// User + system CPU seconds (from the last `/proc` read of the process).
    pub cpu_seconds: Option<f64>,
    /// Handshake, ping RTT, response latency.
    pub latency: [Hist; 3],
}

impl Counters {
    pub fn of(p: &ProcessSnapshot) -> Self {
        let l = &p.latency;
        Counters {
            ws: WebSocketStats { connections_active: 0, ..p.websocket.clone() },
            sse: SseStats { streams_active: 0, ..p.sse.clone() },
            unfollowed: p.unfollowed_connections,
            tcp_accepted: p.tcp_accepted,
            not_websocket: p.not_websocket,
            cpu_seconds: p.resources.as_ref().and_then(|r| r.cpu_seconds_total),
            latency: [Hist::of(&l.handshake), Hist::of(&l.ping_rtt), Hist::of(&l.response)],
        }
    }

    pub fn add(&mut self, o: &Counters) {
        self.ws.add(&o.ws);
        self.sse.add(&o.sse);
        self.unfollowed += o.unfollowed;
        self.tcp_accepted += o.tcp_accepted;
        self.not_websocket += o.not_websocket;
        if let Some(c) = o.cpu_seconds {
            self.cpu_seconds = Some(self.cpu_seconds.unwrap_or(0.0) + c);
        }
        for (a, b) in self.latency.iter_mut().zip(&o.latency) {
            a.add(b);
        }
    }
}

#[derive(Debug, Clone)]
struct Seen {
    id: Identity,
    counters: Counters,
}

#[derive(Debug, Clone)]
struct Retired {
    counters: Counters,
    /// Unix seconds of the last fold.
    at: f64,
}

/// The state described in the module docs; `observe` each snapshot once, in order.
#[derive(Debug, Default)]
pub struct Kept {
    seen: HashMap<u32, Seen>,
    retired: BTreeMap<Identity, Retired>,
}

impl Kept {
    /// Takes in a new snapshot taken at `now` (Unix seconds).
    pub fn observe(&mut self, s: &Snapshot, cfg: &MetricsConfig, now: f64) {
        let mut next = HashMap::with_capacity(s.processes.len());
        for p in &s.processes {
            let (id, counters) = (self.identity(p, cfg), self.counters(p));
            if let Some(old) = self.seen.remove(&p.pid) {
                if old.id != id {
                    // Moved to another label set (e.g. started listening on another port): the
                    // old set keeps what it had, the new one continues from the process's totals.
                    self.retire(old, now);
                }
            }
            next.insert(p.pid, Seen { id, counters });
        }
        for (_, old) in std::mem::replace(&mut self.seen, next) {
            self.retire(old, now);
        }
        let live: HashSet<&Identity> = self.seen.values().map(|s| &s.id).collect();
        self.retired.retain(|id, r| live.contains(id) || now - r.at <= RETIRED_FOR);
        let mut idle: Vec<(f64, Identity)> =
            self.retired.iter().filter(|(id, _)| !live.contains(id)).map(|(id, r)| (r.at, id.clone())).collect();
        if idle.len() > MAX_RETIRED_SETS {
            idle.sort_by(|a, b| a.0.total_cmp(&b.0));
            for (_, id) in &idle[..idle.len() - MAX_RETIRED_SETS] {
                self.retired.remove(id);
            }
        }
    }

    fn retire(&mut self, old: Seen, now: f64) {
        let r = self.retired.entry(old.id).or_insert_with(|| Retired { counters: Counters::default(), at: now });
        r.counters.add(&old.counters);
        r.at = now;
    }

    /// The label set `p` is exported under: the one it had while `/proc` was readable, once it
    /// is not (exited, or resources unreadable this time).
    pub(crate) fn identity(&self, p: &ProcessSnapshot, cfg: &MetricsConfig) -> Identity {
        match self.seen.get(&p.pid) {
            Some(s) if p.resources.is_none() && (s.id.comm == p.comm || p.comm.is_empty()) => s.id.clone(),
            _ => Identity::of(p, cfg),
        }
    }

    /// `p`'s counters; CPU seconds from its last `/proc` read once it has none.
    pub(crate) fn counters(&self, p: &ProcessSnapshot) -> Counters {
        let mut c = Counters::of(p);
        if c.cpu_seconds.is_none() {
            c.cpu_seconds = self.seen.get(&p.pid).and_then(|s| s.counters.cpu_seconds);
        }
        c
    }

    /// Retired totals by label set.
    pub(crate) fn retired(&self) -> impl Iterator<Item = (&Identity, &Counters)> {
        self.retired.iter().map(|(id, r)| (id, &r.counters))
    }
}
