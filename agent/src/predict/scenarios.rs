//! Scenario library: generated snapshot series with known truth, for the forecast tests and
//! replay. Deterministic (xorshift noise from a fixed seed).

use std::time::{Duration, UNIX_EPOCH};

use crate::{
    model::clients::ClientsSnapshot,
    model::resources::ProcessResources,
    model::snapshot::{ProcessSnapshot, Snapshot},
};

/// 2024-01-01T00:00:00Z.
pub const T0: f64 = 1_704_067_200.0;
pub const LIMIT: u64 = 1024;

pub struct Noise(u64);

impl Noise {
    pub fn new(seed: u64) -> Self {
        Noise(seed | 1)
    }
    /// Uniform in [-a, a].
    pub fn pm(&mut self, a: f64) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 % 1_000_001) as f64 / 1_000_000.0 * 2.0 - 1.0) * a
    }
}

/// One sample of the watched process.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub t: f64,
    pub pid: u32,
    /// Process start, seconds after T0 (changes on restart).
    pub started: f64,
    pub fds: u64,
    pub limit: u64,
    pub opened: u64,
    pub active: u64,
    pub distinct: u64,
}

pub fn snapshot(s: &Sample) -> Snapshot {
    let ts = |t: f64| humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_secs_f64(t)).to_string();
    let mut p = ProcessSnapshot { pid: s.pid, comm: "node".into(), listening_ports: vec![8080], ..Default::default() };
    p.websocket.connections_opened = s.opened;
    p.websocket.connections_active = s.active;
    p.websocket.connections_closed = s.opened - s.active;
    p.clients = ClientsSnapshot { key_source: "remote_ip".into(), distinct: s.distinct, quota: 0, ..Default::default() };
    p.resources = Some(ProcessResources {
        pid: s.pid,
        start_time: Some(humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs_f64(T0 + s.started)).to_string()),
        open_fds: Some(s.fds),
        fd_limit_soft: Some(s.limit),
        fd_limit_hard: Some(s.limit),
        fd_usage_ratio: Some(s.fds as f64 / s.limit as f64),
        rss_bytes: 100 << 20,
        threads: 8,
        memory_limit_bytes: Some(4 << 30),
        ..Default::default()
    });
    let mut snap = Snapshot { timestamp: ts(T0 + s.t), processes: vec![p], ..Default::default() };
    snap.agent.interval_seconds = 5.0;
    snap
}

/// A scenario: the snapshots and the truth.
pub struct Scenario {
    pub name: &'static str,
    pub snapshots: Vec<Snapshot>,
    /// Seconds after T0 when the fd limit is exhausted (None: never).
    pub exhaustion_at: Option<f64>,
    /// Seconds after T0 when usage first reaches 90% (the backstop), if ever.
    pub backstop_at: Option<f64>,
}

fn build(name: &'static str, samples: Vec<Sample>) -> Scenario {
    let ex = samples.iter().find(|s| s.fds as f64 >= s.limit as f64 * 0.99).map(|s| s.t);
    let bs = samples.iter().find(|s| s.fds as f64 >= s.limit as f64 * 0.9).map(|s| s.t);
    Scenario { name, snapshots: samples.iter().map(snapshot).collect(), exhaustion_at: ex, backstop_at: bs }
}

/// fds from a base of 100 grow by `k` per minute (connections never closed) toward the limit
/// (1024), plus background churn; once at the limit they stay there (accept fails).
pub fn leak(k: f64, minutes: f64) -> Scenario {
    let mut n = Noise::new(1);
    let mut out = Vec::new();
    let mut t = 0.0;
    let mut churn = 0u64;
    let mut opened = 0u64;
    while t <= minutes * 60.0 {
        let leaked = (k * t / 60.0) as u64;
        let fds = ((100.0 + leaked as f64 + n.pm(3.0)).round() as u64).min(LIMIT);
        churn += 1;
        let active = fds.saturating_sub(20);
        opened = opened.max(churn + active);
        out.push(Sample { t, pid: 4242, started: -3600.0, fds, limit: LIMIT, opened, active, distinct: 50 });
        t += 5.0;
    }
    build("leak", out)
}

/// A day at 30 s: fds follow a diurnal curve from 200 at night to 880 (86%) at noon.
pub fn diurnal_ramp() -> Scenario {
    let mut n = Noise::new(2);
    let mut out = Vec::new();
    let mut opened = 0u64;
    let mut t = 0.0;
    let day = 86_400.0;
    while t <= day {
        let x = 200.0 + 680.0 * (0.5 - 0.5 * (2.0 * std::f64::consts::PI * t / day).cos());
        let fds = (x + n.pm(10.0)).round() as u64;
        let active = fds - 20;
        opened = opened.max(active) + 30 + (active / 100);
        out.push(Sample { t, pid: 4242, started: -3600.0, fds, limit: LIMIT, opened, active, distinct: active / 2 });
        t += 30.0;
    }
    build("diurnal_ramp", out)
}

/// Flat at 300 fds for 30 min, then 700 clients arrive at once (within one 5 s interval: a
/// thundering herd reconnecting after a network blip) to 96%, and stay 20 min.
pub fn surge() -> Scenario {
    let mut n = Noise::new(3);
    let mut out = Vec::new();
    let mut t = 0.0;
    let mut opened = 0u64;
    while t <= 50.0 * 60.0 {
        let base = 300.0 + n.pm(5.0);
        let extra: f64 = if t < 1800.0 { 0.0 } else { 700.0 };
        let fds = ((base + extra).round() as u64).min(LIMIT);
        let active = fds - 20;
        opened = opened.max(active) + 2;
        out.push(Sample { t, pid: 4242, started: -3600.0, fds, limit: LIMIT, opened, active, distinct: active });
        t += 5.0;
    }
    build("surge", out)
}

/// A day at 30 s: flat at 560 fds (55%, above the floor) with noise and short bursts.
pub fn flat_day() -> Scenario {
    let mut n = Noise::new(4);
    let mut out = Vec::new();
    let mut t = 0.0;
    let mut opened = 0u64;
    while t <= 86_400.0 {
        // A burst of +60 for 2 minutes every 3 hours.
        let burst = if (t % 10_800.0) < 120.0 { 60.0 } else { 0.0 };
        let fds = (560.0 + burst + n.pm(25.0)).round() as u64;
        let active = fds - 20;
        opened = opened.max(active) + 40;
        out.push(Sample { t, pid: 4242, started: -3600.0, fds, limit: LIMIT, opened, active, distinct: active / 3 });
        t += 30.0;
    }
    build("flat_day", out)
}

/// A leak of 10/min that reaches 600 fds (59%, ETA still beyond the horizon), then the process
/// restarts (same pid reused, new start time, counters from zero) and runs flat for 2 h.
pub fn restart_mid_leak() -> Scenario {
    let mut n = Noise::new(5);
    let mut out = Vec::new();
    let mut t = 0.0;
    let restart = 50.0 * 60.0;
    let mut opened = 0u64;
    while t <= restart + 7200.0 {
        let s = if t < restart {
            let fds = (100.0 + 10.0 * t / 60.0 + n.pm(3.0)).round() as u64;
            opened = opened.max(fds + 100);
            Sample { t, pid: 4242, started: -3600.0, fds, limit: LIMIT, opened, active: fds - 20, distinct: 50 }
        } else {
            let fds = (100.0 + n.pm(3.0)).round() as u64;
            let since = ((t - restart) / 5.0) as u64;
            Sample { t, pid: 4242, started: restart, fds, limit: LIMIT, opened: 100 + since, active: fds - 20, distinct: 50 }
        };
        out.push(s);
        t += 5.0;
    }
    build("restart_mid_leak", out)
}

/// A leak of `per_second` connections (fds) from 100, sampled every `dt` seconds, until 60 s
/// after the limit is reached. `at_process_start`: the agent watched the process's
/// predecessor (flat at 100) for 30 min and the leak starts with the new process (new pid,
/// models from zero); otherwise the agent starts with the leak (its first snapshot).
pub fn fast_leak(name: &'static str, per_second: f64, dt: f64, at_process_start: bool) -> Scenario {
    let mut n = Noise::new(6);
    let mut out = Vec::new();
    let begin = if at_process_start { 1800.0 } else { 0.0 };
    let mut t = 0.0;
    let mut full_since = None;
    let mut opened = 0u64;
    while full_since.is_none_or(|f| t <= f + 60.0) {
        let s = if t < begin {
            let fds = (100.0 + n.pm(2.0)).round() as u64;
            opened += 1;
            Sample { t, pid: 4242, started: -3600.0, fds, limit: LIMIT, opened: opened + 200, active: fds - 20, distinct: 50 }
        } else {
            let leaked = (per_second * (t - begin)) as u64;
            let fds = (100 + leaked).min(LIMIT);
            if fds >= LIMIT {
                full_since.get_or_insert(t);
            }
            let started = if at_process_start { begin } else { -3600.0 };
            let pid = if at_process_start { 5151 } else { 4242 };
            Sample { t, pid, started, fds, limit: LIMIT, opened: leaked + 80, active: fds - 20, distinct: 3 }
        };
        out.push(s);
        t += dt;
    }
    build(name, out)
}

/// Steady at 480 fds (47%) for 30 min at 5 s; then a network blip drops 300 connections and the
/// clients reconnect at 6/s while the server still holds their dead sockets (fds climb to 70%
/// in a minute); the server's ping timeout reaps the dead ones over the next 2 minutes and fds
/// settle back at 480. Nothing is exhausted.
pub fn reconnect_storm() -> Scenario {
    let mut n = Noise::new(7);
    let mut out = Vec::new();
    let mut t = 0.0;
    let mut opened = 2000u64;
    let blip = 1800.0;
    while t <= blip + 1800.0 {
        let x = t - blip;
        let extra = if x < 0.0 {
            0.0
        } else if x < 40.0 {
            6.0 * x
        } else {
            (240.0_f64 - 2.0 * (x - 40.0)).max(0.0)
        };
        if (0.0..40.0).contains(&x) {
            opened += 30;
        }
        opened += 1;
        let fds = (480.0 + extra + n.pm(4.0)).round() as u64;
        out.push(Sample { t, pid: 4242, started: -3600.0, fds, limit: LIMIT, opened, active: fds - 20, distinct: 300 });
        t += 5.0;
    }
    build("reconnect_storm", out)
}

/// A slow leak of 10/min from 100; at 40 min (500 fds, below the floor) a deploy restarts the
/// process (new pid and start time, counters from zero) and the leak goes on in the new one,
/// which reaches the limit 91 min later.
pub fn deploy_during_slow_leak() -> Scenario {
    let mut n = Noise::new(8);
    let mut out = Vec::new();
    let deploy = 40.0 * 60.0;
    let mut t = 0.0;
    let mut full_since = None;
    while full_since.is_none_or(|f| t <= f + 300.0) {
        let (pid, started, since) = if t < deploy { (4242, -3600.0, t + 0.0) } else { (4343, deploy, t - deploy) };
        let mut fds = ((100.0 + 10.0 * since / 60.0 + n.pm(3.0)).round() as u64).min(LIMIT);
        if fds as f64 >= LIMIT as f64 * 0.99 || (full_since.is_some() && pid == 4343) {
            full_since.get_or_insert(t);
            fds = LIMIT; // accept fails from here on
        }
        let opened = (10.0 * since / 60.0) as u64 + (since / 5.0) as u64 + 100;
        out.push(Sample { t, pid, started, fds, limit: LIMIT, opened, active: fds - 20, distinct: 50 });
        t += 5.0;
    }
    build("deploy_during_slow_leak", out)
}

/// A slow leak over hours: 2 fds a minute from 100 at 30 s (the limit after about 7.6 h).
pub fn slow_leak_hours() -> Scenario {
    let mut n = Noise::new(9);
    let mut out = Vec::new();
    let mut t = 0.0;
    let mut full_since = None;
    while full_since.is_none_or(|f| t <= f + 600.0) {
        let mut fds = ((100.0 + 2.0 * t / 60.0 + n.pm(4.0)).round() as u64).min(LIMIT);
        if fds as f64 >= LIMIT as f64 * 0.99 || full_since.is_some() {
            full_since.get_or_insert(t);
            fds = LIMIT; // accept fails from here on
        }
        let opened = (2.0 * t / 60.0) as u64 + (t / 10.0) as u64 + 100;
        out.push(Sample { t, pid: 4242, started: -3600.0, fds, limit: LIMIT, opened, active: fds - 20, distinct: 50 });
        t += 30.0;
    }
    build("slow_leak_hours", out)
}

/// Tiny absolute numbers (issue 18, finding 7): a test server at 3 fds of 1024 (0.3%) and one
/// client (a load generator on loopback) that opens and closes 10 connections every 5 s, 5 of 9
/// closes abnormal, for 15 min. Nothing is near a limit: no crisis, and one client reconnecting
/// is not a storm.
pub fn tiny_reconnect_loop() -> Scenario {
    let mut n = Noise::new(10);
    let mut out = Vec::new();
    let mut t = 0.0;
    let mut opened = 0u64;
    while t <= 15.0 * 60.0 {
        opened += 10;
        let fds = (3.0 + n.pm(0.6)).round() as u64;
        out.push(Sample { t, pid: 4242, started: -3600.0, fds, limit: LIMIT, opened, active: 1, distinct: 1 });
        t += 5.0;
    }
    let mut s = build("tiny_reconnect_loop", out);
    for snap in &mut s.snapshots {
        let w = &mut snap.processes[0].websocket;
        w.abnormal_closes = w.connections_closed * 5 / 9;
    }
    s
}
