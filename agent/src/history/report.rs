//! Period report over a series of snapshots (`wsguard report`), as text, JSON or Markdown.
//!
//! Snapshot counters are cumulative per process, so the period's totals are sums of the
//! increases between consecutive snapshots of each process (pid + comm). A process first seen
//! after the first snapshot counts from zero (it started, or was first seen, in the period). A
//! counter that goes down means the process's counters were reset (agent restarted with
//! `--fresh`, probe reloaded, pid reused): the new values are counted from zero and the reset is
//! reported.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    time::{Duration, SystemTime},
};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::snapshot_time;
use crate::model::{
    snapshot::{Frames, ProcessSnapshot, Snapshot},
    sse::SseStats,
};

/// How many processes the "worst" list holds.
const WORST: usize = 5;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Text,
    Json,
    Markdown,
}

impl std::str::FromStr for Format {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            "markdown" | "md" => Ok(Format::Markdown),
            _ => bail!("unknown report format {s:?} (text, json, markdown)"),
        }
    }
}

/// Increases over the period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodCounters {
    pub connections_opened: u64,
    pub connections_closed: u64,
    pub handshakes_failed: u64,
    pub abnormal_closes: u64,
    pub out_of_sync: u64,
    /// All opcodes.
    pub frames_received: u64,
    pub frames_sent: u64,
    pub messages_received: u64,
    pub messages_sent: u64,
    pub payload_bytes_received: u64,
    pub payload_bytes_sent: u64,
    /// Server-Sent Events (the second transport): streams opened and ended, events, comments
    /// and bytes written, streams resumed with `Last-Event-ID`.
    #[serde(default)]
    pub sse: SsePeriod,
}

/// SSE increases over the period (all from the serving process's side).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SsePeriod {
    pub streams_opened: u64,
    pub streams_closed: u64,
    pub events_sent: u64,
    pub comments_sent: u64,
    pub payload_bytes_sent: u64,
    pub resumed_streams: u64,
}

impl SsePeriod {
    fn of(s: &SseStats) -> Self {
        SsePeriod {
            streams_opened: s.streams_opened,
            streams_closed: s.streams_closed,
            events_sent: s.events_sent,
            comments_sent: s.comments_sent,
            payload_bytes_sent: s.payload_bytes_sent,
            resumed_streams: s.resumed_streams,
        }
    }

    fn fields(&self) -> [u64; 6] {
        [
            self.streams_opened,
            self.streams_closed,
            self.events_sent,
            self.comments_sent,
            self.payload_bytes_sent,
            self.resumed_streams,
        ]
    }

    fn from_fields(f: [u64; 6]) -> Self {
        let [streams_opened, streams_closed, events_sent, comments_sent, payload_bytes_sent, resumed_streams] = f;
        SsePeriod { streams_opened, streams_closed, events_sent, comments_sent, payload_bytes_sent, resumed_streams }
    }
}

impl PeriodCounters {
    fn of(p: &ProcessSnapshot) -> Self {
        let w = &p.websocket;
        PeriodCounters {
            sse: SsePeriod::of(&p.sse),
            connections_opened: w.connections_opened,
            connections_closed: w.connections_closed,
            handshakes_failed: w.handshakes_failed,
            abnormal_closes: w.abnormal_closes,
            out_of_sync: w.out_of_sync,
            frames_received: frames(&w.frames_received),
            frames_sent: frames(&w.frames_sent),
            messages_received: w.messages_received,
            messages_sent: w.messages_sent,
            payload_bytes_received: w.payload_bytes_received,
            payload_bytes_sent: w.payload_bytes_sent,
        }
    }

    fn fields(&self) -> [u64; 11] {
        [
            self.connections_opened,
            self.connections_closed,
            self.handshakes_failed,
            self.abnormal_closes,
            self.out_of_sync,
            self.frames_received,
            self.frames_sent,
            self.messages_received,
            self.messages_sent,
            self.payload_bytes_received,
            self.payload_bytes_sent,
        ]
    }

    /// `cur - prev`, or `cur` when any counter went down (a reset). Returns (delta, reset).
    fn increase(prev: &Self, cur: &Self) -> (Self, bool) {
        let went_down = |p: &[u64], c: &[u64]| p.iter().zip(c).any(|(p, c)| c < p);
        let reset = went_down(&prev.fields(), &cur.fields()) || went_down(&prev.sse.fields(), &cur.sse.fields());
        if reset {
            return (cur.clone(), true);
        }
        let d = |c: u64, p: u64| c - p;
        (
            PeriodCounters {
                connections_opened: d(cur.connections_opened, prev.connections_opened),
                connections_closed: d(cur.connections_closed, prev.connections_closed),
                handshakes_failed: d(cur.handshakes_failed, prev.handshakes_failed),
                abnormal_closes: d(cur.abnormal_closes, prev.abnormal_closes),
                out_of_sync: d(cur.out_of_sync, prev.out_of_sync),
                frames_received: d(cur.frames_received, prev.frames_received),
                frames_sent: d(cur.frames_sent, prev.frames_sent),
                messages_received: d(cur.messages_received, prev.messages_received),
                messages_sent: d(cur.messages_sent, prev.messages_sent),
                payload_bytes_received: d(cur.payload_bytes_received, prev.payload_bytes_received),
                payload_bytes_sent: d(cur.payload_bytes_sent, prev.payload_bytes_sent),
                sse: SsePeriod::from_fields(std::array::from_fn(|i| cur.sse.fields()[i] - prev.sse.fields()[i])),
            },
            false,
        )
    }

    fn add(&mut self, o: &Self) {
        self.connections_opened += o.connections_opened;
        self.connections_closed += o.connections_closed;
        self.handshakes_failed += o.handshakes_failed;
        self.abnormal_closes += o.abnormal_closes;
        self.out_of_sync += o.out_of_sync;
        self.frames_received += o.frames_received;
        self.frames_sent += o.frames_sent;
        self.messages_received += o.messages_received;
        self.messages_sent += o.messages_sent;
        self.payload_bytes_received += o.payload_bytes_received;
        self.payload_bytes_sent += o.payload_bytes_sent;
        self.sse = SsePeriod::from_fields(std::array::from_fn(|i| self.sse.fields()[i] + o.sse.fields()[i]));
    }
}

fn frames(f: &Frames) -> u64 {
    f.text + f.binary + f.continuation + f.ping + f.pong + f.close
}

/// A maximum and the snapshot where it was reached.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Peak<T> {
    pub value: T,
    /// Snapshot timestamp (RFC 3339); empty if never reached (empty period).
    pub at: String,
}

impl<T: PartialOrd + Copy> Peak<T> {
    fn offer(&mut self, v: T, at: &str) {
        if v > self.value || self.at.is_empty() {
            self.value = v;
            self.at = at.to_string();
        }
    }
}

/// Highest per-second rates between consecutive snapshots (host-wide).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeakRates {
    pub connections_opened_per_second: Peak<f64>,
    pub handshakes_failed_per_second: Peak<f64>,
    pub abnormal_closes_per_second: Peak<f64>,
    pub frames_received_per_second: Peak<f64>,
    pub frames_sent_per_second: Peak<f64>,
    pub payload_bytes_received_per_second: Peak<f64>,
    pub payload_bytes_sent_per_second: Peak<f64>,
    #[serde(default)]
    pub sse_streams_opened_per_second: Peak<f64>,
    #[serde(default)]
    pub sse_events_per_second: Peak<f64>,
    #[serde(default)]
    pub sse_resumed_streams_per_second: Peak<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessReport {
    pub pid: u32,
    pub comm: String,
    /// Snapshots the process appears in.
    pub snapshots: usize,
    pub peak_active: Peak<u64>,
    /// Peak of its open SSE streams.
    #[serde(default)]
    pub peak_sse_streams: Peak<u64>,
    pub period: PeriodCounters,
    /// Times its counters went down (counted from zero again).
    pub counter_resets: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// First and last snapshot timestamps (RFC 3339; empty for an empty period).
    pub first: String,
    pub last: String,
    pub duration_seconds: f64,
    pub snapshots: usize,
    /// Host-wide peak of active WebSocket connections.
    pub peak_active: Peak<u64>,
    /// Host-wide peak of open SSE streams.
    #[serde(default)]
    pub peak_sse_streams: Peak<u64>,
    pub totals: PeriodCounters,
    pub peak_rates: PeakRates,
    /// Ordered by pid, then comm.
    pub processes: Vec<ProcessReport>,
    /// Up to 5 processes with abnormal closes or failed handshakes, most (sum of both) first.
    pub worst: Vec<ProcessReport>,
    /// Alerts raised in the period. Placeholder: always empty until alerting lands (alert/).
    pub alerts: Vec<serde_json::Value>,
}

struct Track {
    last: PeriodCounters,
    report: ProcessReport,
}

/// Summarise `snapshots` (oldest first).
pub fn summarize(snapshots: &[Snapshot]) -> Report {
    let mut r = Report { snapshots: snapshots.len(), ..Default::default() };
    let (Some(first), Some(last)) = (snapshots.first(), snapshots.last()) else { return r };
    r.first = first.timestamp.clone();
    r.last = last.timestamp.clone();
    if let (Some(a), Some(b)) = (snapshot_time(first), snapshot_time(last)) {
        r.duration_seconds = b.duration_since(a).unwrap_or_default().as_secs_f64();
    }
    let mut procs: BTreeMap<(u32, String), Track> = BTreeMap::new();
    let mut prev_time: Option<SystemTime> = None;
    for (i, snap) in snapshots.iter().enumerate() {
        let mut step = PeriodCounters::default();
        let (mut active, mut streams) = (0, 0);
        for p in &snap.processes {
            let cur = PeriodCounters::of(p);
            active += p.websocket.connections_active;
            streams += p.sse.streams_active;
            let key = (p.pid, p.comm.clone());
            let t = procs.entry(key).or_insert_with(|| Track {
                // Present at the start: the period begins at its first values. Appearing later:
                // everything it has counted happened in the period.
                last: if i == 0 { cur.clone() } else { PeriodCounters::default() },
                report: ProcessReport { pid: p.pid, comm: p.comm.clone(), ..Default::default() },
            });
            let (d, reset) = PeriodCounters::increase(&t.last, &cur);
            t.last = cur;
            t.report.snapshots += 1;
            t.report.counter_resets += reset as u32;
            t.report.period.add(&d);
            t.report.peak_active.offer(p.websocket.connections_active, &snap.timestamp);
            t.report.peak_sse_streams.offer(p.sse.streams_active, &snap.timestamp);
            step.add(&d);
        }
        r.peak_active.offer(active, &snap.timestamp);
        r.peak_sse_streams.offer(streams, &snap.timestamp);
        r.totals.add(&step);
        let now = snapshot_time(snap);
        if let (Some(a), Some(b)) = (prev_time, now) {
            let dt = b.duration_since(a).unwrap_or(Duration::ZERO).as_secs_f64();
            if dt > 0.0 {
                let at = &snap.timestamp;
                let pr = &mut r.peak_rates;
                let rate = |v: u64| v as f64 / dt;
                pr.connections_opened_per_second.offer(rate(step.connections_opened), at);
                pr.handshakes_failed_per_second.offer(rate(step.handshakes_failed), at);
                pr.abnormal_closes_per_second.offer(rate(step.abnormal_closes), at);
                pr.frames_received_per_second.offer(rate(step.frames_received), at);
                pr.frames_sent_per_second.offer(rate(step.frames_sent), at);
                pr.payload_bytes_received_per_second.offer(rate(step.payload_bytes_received), at);
                pr.payload_bytes_sent_per_second.offer(rate(step.payload_bytes_sent), at);
                pr.sse_streams_opened_per_second.offer(rate(step.sse.streams_opened), at);
                pr.sse_events_per_second.offer(rate(step.sse.events_sent), at);
                pr.sse_resumed_streams_per_second.offer(rate(step.sse.resumed_streams), at);
            }
        }
        if now.is_some() {
            prev_time = now;
        }
    }
    r.processes = procs.into_values().map(|t| t.report).collect();
    let badness = |p: &ProcessReport| p.period.abnormal_closes + p.period.handshakes_failed;
    let mut worst: Vec<_> = r.processes.iter().filter(|p| badness(p) > 0).cloned().collect();
    worst.sort_by(|a, b| badness(b).cmp(&badness(a)).then(a.pid.cmp(&b.pid)));
    worst.truncate(WORST);
    r.worst = worst;
    r
}

/// Report on `snapshots` (oldest first) in `format`.
pub fn report(snapshots: &[Snapshot], format: Format) -> String {
    let r = summarize(snapshots);
    match format {
        Format::Json => serde_json::to_string_pretty(&r).expect("report serializes") + "\n",
        Format::Text => text(&r),
        Format::Markdown => markdown(&r),
    }
}

fn rate_rows(r: &Report) -> [(&'static str, &Peak<f64>); 7] {
    let p = &r.peak_rates;
    [
        ("connections opened/s", &p.connections_opened_per_second),
        ("handshakes failed/s", &p.handshakes_failed_per_second),
        ("abnormal closes/s", &p.abnormal_closes_per_second),
        ("frames received/s", &p.frames_received_per_second),
        ("frames sent/s", &p.frames_sent_per_second),
        ("bytes received/s", &p.payload_bytes_received_per_second),
        ("bytes sent/s", &p.payload_bytes_sent_per_second),
    ]
}

fn total_rows(c: &PeriodCounters) -> [(&'static str, u64); 11] {
    [
        ("connections opened", c.connections_opened),
        ("connections closed", c.connections_closed),
        ("handshakes failed", c.handshakes_failed),
        ("abnormal closes", c.abnormal_closes),
        ("out of sync", c.out_of_sync),
        ("frames received", c.frames_received),
        ("frames sent", c.frames_sent),
        ("messages received", c.messages_received),
        ("messages sent", c.messages_sent),
        ("payload bytes received", c.payload_bytes_received),
        ("payload bytes sent", c.payload_bytes_sent),
    ]
}

/// The report has SSE numbers to show: a stream was open or opened in the period.
fn has_sse(r: &Report) -> bool {
    r.peak_sse_streams.value > 0 || r.totals.sse.streams_opened > 0
}

fn sse_total_rows(c: &SsePeriod) -> [(&'static str, u64); 6] {
    [
        ("SSE streams opened", c.streams_opened),
        ("SSE streams closed", c.streams_closed),
        ("SSE events sent", c.events_sent),
        ("SSE comments sent", c.comments_sent),
        ("SSE payload bytes sent", c.payload_bytes_sent),
        ("SSE streams resumed", c.resumed_streams),
    ]
}

fn sse_rate_rows(r: &Report) -> [(&'static str, &Peak<f64>); 3] {
    let p = &r.peak_rates;
    [
        ("SSE streams opened/s", &p.sse_streams_opened_per_second),
        ("SSE events/s", &p.sse_events_per_second),
        ("SSE streams resumed/s", &p.sse_resumed_streams_per_second),
    ]
}

/// Processes that served SSE streams in the period (or held some open).
fn sse_processes(r: &Report) -> impl Iterator<Item = &ProcessReport> {
    r.processes.iter().filter(|p| p.peak_sse_streams.value > 0 || p.period.sse.streams_opened > 0)
}

fn text(r: &Report) -> String {
    let mut o = String::new();
    if r.snapshots == 0 {
        return "wsguard report: no snapshots in the period\n".into();
    }
    let _ = writeln!(o, "wsguard report {} .. {}", r.first, r.last);
    let _ = writeln!(o, "  {} snapshots over {:.0} s", r.snapshots, r.duration_seconds);
    let _ = writeln!(o, "  peak active connections: {} at {}", r.peak_active.value, r.peak_active.at);
    if has_sse(r) {
        let _ = writeln!(o, "  peak open SSE streams: {} at {}", r.peak_sse_streams.value, r.peak_sse_streams.at);
    }
    let _ = writeln!(o, "\nTotals in the period:");
    for (k, v) in total_rows(&r.totals) {
        let _ = writeln!(o, "  {k:<24} {v}");
    }
    if has_sse(r) {
        for (k, v) in sse_total_rows(&r.totals.sse) {
            let _ = writeln!(o, "  {k:<24} {v}");
        }
    }
    let _ = writeln!(o, "\nPeak rates:");
    for (k, p) in rate_rows(r) {
        let _ = writeln!(o, "  {k:<24} {:.1} at {}", p.value, p.at);
    }
    if has_sse(r) {
        for (k, p) in sse_rate_rows(r) {
            let _ = writeln!(o, "  {k:<24} {:.1} at {}", p.value, p.at);
        }
    }
    let _ = writeln!(o, "\nProcesses:");
    let _ = writeln!(
        o,
        "  {:>8} {:<16} {:>11} {:>8} {:>8} {:>8} {:>8} {:>12} {:>12}  peak at",
        "pid", "comm", "peak active", "opened", "closed", "failed", "abnormal", "bytes in", "bytes out"
    );
    for p in &r.processes {
        let c = &p.period;
        let _ = writeln!(
            o,
            "  {:>8} {:<16} {:>11} {:>8} {:>8} {:>8} {:>8} {:>12} {:>12}  {}{}",
            p.pid,
            p.comm,
            p.peak_active.value,
            c.connections_opened,
            c.connections_closed,
            c.handshakes_failed,
            c.abnormal_closes,
            c.payload_bytes_received,
            c.payload_bytes_sent,
            p.peak_active.at,
            resets_note(p),
        );
    }
    if has_sse(r) {
        let _ = writeln!(o, "\nSSE streams:");
        let _ = writeln!(
            o,
            "  {:>8} {:<16} {:>11} {:>8} {:>8} {:>10} {:>8} {:>12}  peak at",
            "pid", "comm", "peak open", "opened", "closed", "events", "resumed", "bytes out"
        );
        for p in sse_processes(r) {
            let c = &p.period.sse;
            let _ = writeln!(
                o,
                "  {:>8} {:<16} {:>11} {:>8} {:>8} {:>10} {:>8} {:>12}  {}",
                p.pid,
                p.comm,
                p.peak_sse_streams.value,
                c.streams_opened,
                c.streams_closed,
                c.events_sent,
                c.resumed_streams,
                c.payload_bytes_sent,
                p.peak_sse_streams.at,
            );
        }
    }
    if !r.worst.is_empty() {
        let _ = writeln!(o, "\nWorst processes (abnormal closes + failed handshakes):");
        for p in &r.worst {
            let _ = writeln!(
                o,
                "  {} ({}): {} abnormal closes, {} failed handshakes",
                p.comm, p.pid, p.period.abnormal_closes, p.period.handshakes_failed
            );
        }
    }
    let _ = writeln!(o, "\nAlerts: not in this report (built from snapshots); see `wsguard alerts history`");
    o
}

fn resets_note(p: &ProcessReport) -> String {
    match p.counter_resets {
        0 => String::new(),
        n => format!(" ({n} counter reset{})", if n == 1 { "" } else { "s" }),
    }
}

fn markdown(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# wsguard report\n");
    if r.snapshots == 0 {
        let _ = writeln!(o, "No snapshots in the period.");
        return o;
    }
    let _ = writeln!(o, "- Period: {} .. {} ({:.0} s)", r.first, r.last, r.duration_seconds);
    let _ = writeln!(o, "- Snapshots: {}", r.snapshots);
    let _ = writeln!(o, "- Peak active connections: {} at {}", r.peak_active.value, r.peak_active.at);
    if has_sse(r) {
        let _ = writeln!(o, "- Peak open SSE streams: {} at {}", r.peak_sse_streams.value, r.peak_sse_streams.at);
    }
    let _ = writeln!(o, "\n## Totals\n\n| counter | value |\n|---|---:|");
    for (k, v) in total_rows(&r.totals) {
        let _ = writeln!(o, "| {k} | {v} |");
    }
    if has_sse(r) {
        for (k, v) in sse_total_rows(&r.totals.sse) {
            let _ = writeln!(o, "| {k} | {v} |");
        }
    }
    let _ = writeln!(o, "\n## Peak rates\n\n| rate | peak | at |\n|---|---:|---|");
    for (k, p) in rate_rows(r) {
        let _ = writeln!(o, "| {k} | {:.1} | {} |", p.value, p.at);
    }
    if has_sse(r) {
        for (k, p) in sse_rate_rows(r) {
            let _ = writeln!(o, "| {k} | {:.1} | {} |", p.value, p.at);
        }
    }
    let _ = writeln!(
        o,
        "\n## Processes\n\n| pid | comm | peak active | peak at | opened | closed | failed | abnormal | bytes in | bytes out | resets |\n|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for p in &r.processes {
        let c = &p.period;
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            p.pid,
            md_escape(&p.comm),
            p.peak_active.value,
            p.peak_active.at,
            c.connections_opened,
            c.connections_closed,
            c.handshakes_failed,
            c.abnormal_closes,
            c.payload_bytes_received,
            c.payload_bytes_sent,
            p.counter_resets
        );
    }
    if has_sse(r) {
        let _ = writeln!(
            o,
            "\n## SSE streams\n\n| pid | comm | peak open | peak at | opened | closed | events | resumed | bytes out |\n|---:|---|---:|---|---:|---:|---:|---:|---:|"
        );
        for p in sse_processes(r) {
            let c = &p.period.sse;
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                p.pid,
                md_escape(&p.comm),
                p.peak_sse_streams.value,
                p.peak_sse_streams.at,
                c.streams_opened,
                c.streams_closed,
                c.events_sent,
                c.resumed_streams,
                c.payload_bytes_sent
            );
        }
    }
    if !r.worst.is_empty() {
        let _ = writeln!(o, "\n## Worst processes\n");
        for p in &r.worst {
            let _ = writeln!(
                o,
                "- `{}` ({}): {} abnormal closes, {} failed handshakes",
                p.comm, p.pid, p.period.abnormal_closes, p.period.handshakes_failed
            );
        }
    }
    let _ = writeln!(o, "\n## Alerts\n\nNot in this report (built from snapshots); see `wsguard alerts history`.");
    o
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

/// Parse a `since` argument: RFC 3339 (`2025-01-02T03:04:05Z`, fractional seconds and
/// `+hh:mm` offsets accepted), a relative duration back from now (`15m`, `2h 30m`, `1d`), or
/// unix seconds.
pub fn parse_since(s: &str) -> Result<SystemTime> {
    parse_since_at(s, SystemTime::now())
}

/// [`parse_since`] relative to `now`.
pub fn parse_since_at(s: &str, now: SystemTime) -> Result<SystemTime> {
    let s = s.trim();
    if s.is_empty() {
        bail!("empty time");
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = s.parse().context("unix seconds")?;
        // Checked: `since=18446744073709551615` must be an error, not a panic (found by the
        // `api_inputs` fuzz target).
        return SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs)).context("unix seconds out of range");
    }
    if let Ok(d) = humantime::parse_duration(s) {
        return now.checked_sub(d).context("duration reaches before the epoch");
    }
    parse_rfc3339(s)
        .with_context(|| format!("invalid time {s:?}: expected RFC 3339 (2025-01-02T03:04:05Z) or a duration (15m, 2h)"))
}

fn parse_rfc3339(s: &str) -> Result<SystemTime> {
    let b = s.as_bytes();
    // A `+hh:mm` / `-hh:mm` offset after the time part (humantime only knows `Z`).
    if b.len() > 6 && s.contains(['T', 't', ' ']) && matches!(b[b.len() - 6], b'+' | b'-') && b[b.len() - 3] == b':' {
        let (base, off) = s.split_at(s.len() - 6);
        let hh: u64 = off[1..3].parse().context("offset hours")?;
        let mm: u64 = off[4..6].parse().context("offset minutes")?;
        let off = Duration::from_secs(hh * 3600 + mm * 60);
        let local = humantime::parse_rfc3339_weak(base)?;
        // local = utc + offset
        return if off_sign_negative(b[b.len() - 6]) {
            local.checked_add(off).context("time out of range")
        } else {
            local.checked_sub(off).context("time out of range")
        };
    }
    Ok(humantime::parse_rfc3339_weak(s)?)
}

fn off_sign_negative(c: u8) -> bool {
    c == b'-'
}
