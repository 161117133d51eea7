use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::{report::*, store::Store, *};
use crate::model::{
    snapshot::{Frames, ProcessSnapshot, Snapshot, WebSocketStats},
    sse::SseStats,
};

/// 2025-01-01T00:00:00Z
const T0: u64 = 1_735_689_600;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[derive(Clone, Copy, Default)]
struct P {
    pid: u32,
    active: u64,
    opened: u64,
    closed: u64,
    failed: u64,
    abnormal: u64,
    frames_rx: u64,
    bytes_rx: u64,
}

fn proc_(comm: &str, p: P) -> ProcessSnapshot {
    ProcessSnapshot {
        pid: p.pid,
        comm: comm.into(),
        websocket: WebSocketStats {
            connections_active: p.active,
            connections_opened: p.opened,
            connections_closed: p.closed,
            handshakes_failed: p.failed,
            abnormal_closes: p.abnormal,
            frames_received: Frames { text: p.frames_rx, ..Default::default() },
            payload_bytes_received: p.bytes_rx,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn snap(secs: u64, procs: Vec<ProcessSnapshot>) -> Snapshot {
    let mut s =
        Snapshot { timestamp: humantime::format_rfc3339_millis(at(secs)).to_string(), processes: procs, ..Default::default() };
    for p in &s.processes {
        s.totals.add(&p.websocket);
    }
    s
}

fn simple(secs: u64, active: u64) -> Arc<Snapshot> {
    Arc::new(snap(secs, vec![proc_("node", P { pid: 1, active, opened: active, ..Default::default() })]))
}

fn cfg(mem: usize) -> HistoryConfig {
    HistoryConfig { memory_snapshots: mem, ..Default::default() }
}

fn times(v: &[Arc<Snapshot>]) -> Vec<u64> {
    v.iter().map(|s| unix_secs(snapshot_time(s).unwrap()) as u64 - T0).collect()
}

#[test]
fn history_config_defaults_and_toml() {
    let d = HistoryConfig::default();
    assert_eq!(d.memory_snapshots, 10080);
    assert_eq!(d.retention, Duration::from_secs(7 * 86400));
    assert_eq!(d.full_resolution, Duration::from_secs(6 * 3600));
    assert_eq!(d.downsample_interval, Duration::from_secs(300));
    let c: HistoryConfig = toml::from_str("retention = \"2d\"\ndownsample_interval = \"1m\"").unwrap();
    assert_eq!(c.retention, Duration::from_secs(2 * 86400));
    assert_eq!(c.downsample_interval, Duration::from_secs(60));
    assert_eq!(c.memory_snapshots, 10080);
    assert!(toml::from_str::<HistoryConfig>("bogus = 1").is_err());
    assert!(d.validate().is_ok());
    let bad = HistoryConfig { downsample_interval: Duration::ZERO, ..d.clone() };
    assert_eq!(bad.validate().unwrap_err().0, "history.downsample_interval");
    let bad = HistoryConfig { full_resolution: Duration::from_secs(8 * 86400), ..d };
    assert_eq!(bad.validate().unwrap_err().0, "history.full_resolution");
}

#[test]
fn history_memory_ring_is_bounded_and_since_filters() {
    let h = History::memory_only(cfg(3));
    for i in 0..5 {
        h.append(simple(T0 + i * 5, i)).unwrap();
    }
    assert_eq!(times(&h.memory()), vec![10, 15, 20]);
    assert_eq!(times(&h.since(at(T0 + 12))), vec![15, 20]);
    assert_eq!(times(&h.since(at(T0))), vec![10, 15, 20]); // nothing older without a store
    assert_eq!(h.latest().unwrap().totals.connections_active, 4);
    assert_eq!(h.errors_total(), 0);
}

#[test]
fn history_reopen_restores_ring_and_falls_back_to_store() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (h, err) = History::open(cfg(100), dir.path());
        assert!(err.is_none(), "{err:?}");
        for i in 0..6 {
            h.append(simple(T0 + i * 5, i)).unwrap();
        }
        assert!(h.health().store_open);
    }
    assert!(dir.path().join(STORE_FILE).exists());
    // Restart with a smaller ring: the most recent snapshots come back, in order.
    let (h, err) = History::open(cfg(3), dir.path());
    assert!(err.is_none(), "{err:?}");
    let mem = h.memory();
    assert_eq!(times(&mem), vec![15, 20, 25]);
    assert_eq!(mem[2].totals.connections_active, 5);
    assert_eq!(mem[2].processes[0].comm, "node");
    // Older than the ring: read from the store, no duplicates.
    assert_eq!(times(&h.since(at(T0 + 5))), vec![5, 10, 15, 20, 25]);
    assert_eq!(times(&h.since(at(T0 + 20))), vec![20, 25]);
    // Appending continues after the restored ones.
    h.append(simple(T0 + 30, 6)).unwrap();
    assert_eq!(times(&h.memory()), vec![20, 25, 30]);
    assert_eq!(times(&h.since(at(0))), vec![0, 5, 10, 15, 20, 25, 30]);
    // Export: one JSON snapshot per line, everything in the store.
    let mut out = Vec::new();
    assert_eq!(h.export_jsonl(at(T0 + 10), &mut out).unwrap(), 5);
    let lines: Vec<Snapshot> = std::str::from_utf8(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0].timestamp, "2025-01-01T00:00:10.000Z");
    assert_eq!(h.errors_total(), 0);
    // A second reader (wsguard report beside the agent) sees the same rows.
    let ro = Store::open_read_only(&dir.path().join(STORE_FILE)).unwrap();
    assert_eq!(ro.count().unwrap(), 7);
}

#[test]
fn history_memory_ring_off_reads_store() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = History::open(cfg(0), dir.path());
    for i in 0..4 {
        h.append(simple(T0 + i * 5, i)).unwrap();
    }
    assert!(h.memory().is_empty());
    assert_eq!(times(&h.since(at(T0 + 5))), vec![5, 10, 15]);
}

#[test]
fn history_retention_and_downsampling_keep_the_peak() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join(STORE_FILE)).unwrap();
    let cfg = HistoryConfig {
        memory_snapshots: 10,
        retention: Duration::from_secs(3600),
        full_resolution: Duration::from_secs(600),
        downsample_interval: Duration::from_secs(300),
    };
    // Two hours at 5 s; T0 is a multiple of 300, so buckets are [T0 + k*300, T0 + (k+1)*300).
    let now = T0 + 7200;
    let peak_at = T0 + 5000; // in the downsampled range (older than now - 600)
    for t in (T0..now).step_by(5) {
        let active = if t == peak_at { 999 } else { (t % 7) + 1 };
        store.insert(t as i64, &simple(t, active)).unwrap();
    }
    assert_eq!(store.count().unwrap(), 1440);
    let stats = store.prune(now as i64, &cfg).unwrap();
    assert_eq!(stats.expired, 720); // the first hour
    let rows = store.range(0, None).unwrap();
    let ts: Vec<u64> = rows.iter().map(|s| unix_secs(snapshot_time(s).unwrap()) as u64).collect();
    assert!(ts.iter().all(|&t| t >= now - 3600));
    // Full resolution for the last 10 minutes: all 120 kept.
    assert_eq!(ts.iter().filter(|&&t| t >= now - 600).count(), 120);
    // Before that: one per 5-minute bucket (3600 - 600) / 300 = 10 buckets.
    let old: Vec<&Snapshot> = rows.iter().filter(|s| unix_secs(snapshot_time(s).unwrap()) < (now - 600) as i64).collect();
    assert_eq!(old.len(), 10);
    assert_eq!(stats.downsampled, 600 - 10);
    // Each kept one is the bucket maximum; the peak survived.
    assert!(old.iter().any(|s| s.totals.connections_active == 999));
    for s in &old {
        assert!(s.totals.connections_active == 999 || s.totals.connections_active == 7);
    }
    // Pruning again later is idempotent for the old buckets and still keeps the peak.
    let stats = store.prune(now as i64 + 300, &cfg).unwrap();
    assert_eq!(stats.expired, 1);
    let rows = store.range(0, None).unwrap();
    assert!(rows.iter().any(|s| s.totals.connections_active == 999));
    assert_eq!(rows.len(), 9 + 1 + 60);
}

#[test]
fn history_prunes_at_most_once_a_minute() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = HistoryConfig {
        memory_snapshots: 10,
        retention: Duration::from_secs(3600),
        full_resolution: Duration::from_secs(3600),
        downsample_interval: Duration::from_secs(300),
    };
    let (h, _) = History::open(cfg, dir.path());
    let count = || Store::open_read_only(&dir.path().join(STORE_FILE)).unwrap().count().unwrap();
    h.append(simple(T0, 1)).unwrap(); // prunes (first append)
    h.append(simple(T0 + 3590, 1)).unwrap(); // prunes, nothing expired yet
    h.append(simple(T0 + 3620, 1)).unwrap(); // T0 expired, but last prune was 30 s ago
    assert_eq!(count(), 3);
    h.append(simple(T0 + 3660, 1)).unwrap(); // 70 s since last prune: T0 goes
    assert_eq!(count(), 3);
    assert_eq!(times(&h.since(at(0))), vec![0, 3590, 3620, 3660]); // memory keeps it
}

#[test]
fn history_unwritable_state_dir_keeps_memory_ring() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where the directory should be: fails for root too.
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let mut dirs = vec![not_a_dir];
    // A read-only directory (root ignores the mode, so only unprivileged).
    if unsafe { libc::geteuid() } != 0 {
        use std::os::unix::fs::PermissionsExt;
        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        dirs.push(ro);
    }
    for state_dir in dirs {
        let (h, err) = History::open(cfg(5), &state_dir);
        let err = err.expect("store cannot open");
        assert!(format!("{err:#}").contains("history.sqlite"), "{err:#}");
        assert_eq!(h.errors_total(), 1);
        for i in 0..7 {
            // The store error is returned to the caller; the ring still takes the snapshot.
            assert!(h.append(simple(T0 + i * 5, i)).is_err());
        }
        assert_eq!(times(&h.memory()), vec![10, 15, 20, 25, 30]);
        assert_eq!(times(&h.since(at(T0 + 20))), vec![20, 25, 30]);
        let health = h.health();
        assert!(!health.store_open);
        assert_eq!(health.errors_total, 8);
        assert!(health.last_error.unwrap().contains("unavailable"));
        let mut out = Vec::new();
        assert_eq!(h.export_jsonl(at(0), &mut out).unwrap(), 5);
    }
}

/// A period of 6 snapshots 10 s apart. `node` 10 runs throughout and its counters are reset
/// between the 3rd and 4th snapshot; `python` 20 appears at the 3rd.
fn period() -> Vec<Snapshot> {
    let n = |active, opened, closed, failed, abnormal, frames_rx, bytes_rx| P {
        pid: 10,
        active,
        opened,
        closed,
        failed,
        abnormal,
        frames_rx,
        bytes_rx,
    };
    let py = |active, opened, abnormal, failed| P { pid: 20, active, opened, abnormal, failed, ..Default::default() };
    vec![
        snap(T0, vec![proc_("node", n(50, 100, 50, 1, 0, 1000, 10_000))]),
        snap(T0 + 10, vec![proc_("node", n(60, 120, 60, 1, 1, 1500, 15_000))]),
        snap(T0 + 20, vec![proc_("node", n(80, 150, 70, 2, 2, 1600, 16_000)), proc_("python3", py(5, 7, 0, 0))]),
        // Reset: counts restart from zero (agent restarted with --fresh).
        snap(T0 + 30, vec![proc_("node", n(5, 5, 0, 0, 0, 100, 1_000)), proc_("python3", py(6, 9, 1, 0))]),
        snap(T0 + 40, vec![proc_("node", n(12, 15, 3, 0, 0, 400, 4_000)), proc_("python3", py(6, 10, 4, 2))]),
        snap(T0 + 50, vec![proc_("node", n(12, 15, 3, 0, 0, 400, 4_000)), proc_("python3", py(4, 10, 6, 3))]),
    ]
}

#[test]
fn history_report_peaks_totals_and_resets() {
    let r = summarize(&period());
    assert_eq!(r.snapshots, 6);
    assert_eq!(r.first, "2025-01-01T00:00:00.000Z");
    assert_eq!(r.last, "2025-01-01T00:00:50.000Z");
    assert_eq!(r.duration_seconds, 50.0);
    assert_eq!(r.peak_active, Peak { value: 85, at: "2025-01-01T00:00:20.000Z".into() });

    let node = r.processes.iter().find(|p| p.pid == 10).unwrap();
    assert_eq!(node.comm, "node");
    assert_eq!(node.peak_active, Peak { value: 80, at: "2025-01-01T00:00:20.000Z".into() });
    assert_eq!(node.counter_resets, 1);
    // 100→150 is +50, then reset to 5 (+5), then +10.
    assert_eq!(node.period.connections_opened, 65);
    assert_eq!(node.period.connections_closed, 10 + 10 + 3);
    assert_eq!(node.period.handshakes_failed, 1);
    assert_eq!(node.period.abnormal_closes, 2);
    assert_eq!(node.period.frames_received, 600 + 100 + 300);
    assert_eq!(node.period.payload_bytes_received, 6_000 + 1_000 + 3_000);

    let py = r.processes.iter().find(|p| p.pid == 20).unwrap();
    assert_eq!(py.snapshots, 4);
    assert_eq!(py.counter_resets, 0);
    assert_eq!(py.period.connections_opened, 10); // appeared in the period: counted from zero
    assert_eq!(py.period.abnormal_closes, 6);
    assert_eq!(py.period.handshakes_failed, 3);
    assert_eq!(py.peak_active.value, 6);
    assert_eq!(py.peak_active.at, "2025-01-01T00:00:30.000Z");

    assert_eq!(r.totals.connections_opened, 75);
    assert_eq!(r.totals.abnormal_closes, 8);
    assert_eq!(r.totals.handshakes_failed, 4);
    assert_eq!(r.totals.payload_bytes_received, 10_000);
    // Peak rates: opened per step 20, 30+7, 5+2, 10+1, 0 over 10 s.
    assert_eq!(r.peak_rates.connections_opened_per_second.value, 3.7);
    assert_eq!(r.peak_rates.connections_opened_per_second.at, "2025-01-01T00:00:20.000Z");
    assert_eq!(r.peak_rates.payload_bytes_received_per_second.value, 500.0);
    assert_eq!(r.peak_rates.payload_bytes_received_per_second.at, "2025-01-01T00:00:10.000Z");

    assert_eq!(r.worst.iter().map(|p| p.pid).collect::<Vec<_>>(), vec![20, 10]);
    assert!(r.alerts.is_empty());
}

#[test]
fn history_report_formats() {
    let p = period();
    let json: serde_json::Value = serde_json::from_str(&report(&p, Format::Json)).unwrap();
    assert_eq!(json["peak_active"]["value"], 85);
    assert_eq!(json["totals"]["connections_opened"], 75);
    assert_eq!(json["alerts"], serde_json::json!([]));
    let back: Report = serde_json::from_value(json).unwrap();
    assert_eq!(back, summarize(&p));

    let text = report(&p, Format::Text);
    assert!(text.contains("peak active connections: 85 at 2025-01-01T00:00:20.000Z"), "{text}");
    assert!(text.contains("(1 counter reset)"), "{text}");
    assert!(text.contains("python3 (20): 6 abnormal closes, 3 failed handshakes"), "{text}");

    let md = report(&p, Format::Markdown);
    assert!(md.starts_with("# wsguard report"));
    assert!(md.contains("| connections opened | 75 |"), "{md}");
    assert!(md.contains("| 10 | node | 80 | 2025-01-01T00:00:20.000Z | 65 |"), "{md}");

    assert!(report(&[], Format::Text).contains("no snapshots"));
    assert_eq!(summarize(&[]).snapshots, 0);
    assert_eq!("md".parse::<Format>().unwrap(), Format::Markdown);
    assert!("xml".parse::<Format>().is_err());
}

#[test]
fn history_parse_since() {
    let now = at(T0 + 3600);
    assert_eq!(parse_since_at("15m", now).unwrap(), at(T0 + 2700));
    assert_eq!(parse_since_at("1h 30m", now).unwrap(), at(T0 - 1800));
    assert_eq!(parse_since_at("2025-01-01T00:00:00Z", now).unwrap(), at(T0));
    assert_eq!(parse_since_at("2025-01-01T00:00:00.500Z", now).unwrap(), at(T0) + Duration::from_millis(500));
    assert_eq!(parse_since_at("2025-01-01T02:00:00+02:00", now).unwrap(), at(T0));
    assert_eq!(parse_since_at("2024-12-31T19:00:00-05:00", now).unwrap(), at(T0));
    assert_eq!(parse_since_at(&T0.to_string(), now).unwrap(), at(T0));
    assert!(parse_since_at("yesterday", now).is_err());
    assert!(parse_since_at("", now).is_err());
    assert!(parse_since_at(&u64::MAX.to_string(), now).is_err(), "out of range, not a panic");
    assert!(parse_since("5m").unwrap() < SystemTime::now());
}

/// A process serving SSE streams: `(active, opened, events, resumed)` at each step.
fn sse_proc(pid: u32, active: u64, opened: u64, events: u64, resumed: u64) -> ProcessSnapshot {
    ProcessSnapshot {
        pid,
        comm: "uvicorn".into(),
        sse: SseStats {
            streams_active: active,
            streams_opened: opened,
            streams_closed: opened - active,
            events_sent: events,
            payload_bytes_sent: events * 10,
            resumed_streams: resumed,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The report carries SSE as a second transport: period increases, peaks of open streams and
/// peak rates, a per-process SSE table; a reset of SSE counters alone is a reset too. A
/// WebSocket-only period shows no SSE section.
#[test]
fn history_report_counts_sse_streams() {
    let p = vec![
        snap(T0, vec![sse_proc(30, 4, 10, 100, 1)]),
        snap(T0 + 10, vec![sse_proc(30, 9, 20, 600, 4)]),
        snap(T0 + 20, vec![sse_proc(30, 2, 22, 700, 4)]),
        // The SSE counters went down: counted from zero again.
        snap(T0 + 30, vec![sse_proc(30, 1, 1, 30, 0)]),
    ];
    let r = summarize(&p);
    assert_eq!(r.peak_sse_streams, Peak { value: 9, at: "2025-01-01T00:00:10.000Z".into() });
    let u = &r.processes[0];
    assert_eq!(u.counter_resets, 1);
    assert_eq!(u.peak_sse_streams.value, 9);
    assert_eq!(u.period.sse.streams_opened, 10 + 2 + 1);
    assert_eq!(u.period.sse.events_sent, 500 + 100 + 30);
    assert_eq!(u.period.sse.payload_bytes_sent, 6300);
    assert_eq!(u.period.sse.resumed_streams, 3);
    assert_eq!(r.totals.sse.events_sent, 630);
    assert_eq!(r.peak_rates.sse_events_per_second, Peak { value: 50.0, at: "2025-01-01T00:00:10.000Z".into() });
    assert_eq!(r.peak_rates.sse_streams_opened_per_second.value, 1.0);
    assert_eq!(r.peak_rates.sse_resumed_streams_per_second.value, 0.3);

    let text = report(&p, Format::Text);
    assert!(text.contains("peak open SSE streams: 9 at 2025-01-01T00:00:10.000Z"), "{text}");
    assert!(text.contains("SSE events sent          630"), "{text}");
    assert!(text.contains("SSE events/s             50.0"), "{text}");
    assert!(text.contains("\nSSE streams:\n"), "{text}");
    let md = report(&p, Format::Markdown);
    assert!(md.contains("| SSE events sent | 630 |"), "{md}");
    assert!(md.contains("| 30 | uvicorn | 9 | 2025-01-01T00:00:10.000Z | 13 | 14 | 630 | 3 | 6300 |"), "{md}");
    let back: Report = serde_json::from_str(&report(&p, Format::Json)).unwrap();
    assert_eq!(back, r);

    let ws_only = report(&period(), Format::Text);
    assert!(!ws_only.contains("SSE"), "{ws_only}");
}

/// A version-1 store (before SSE) opens: it is migrated in place, its rows still load (SSE
/// numbers zero), and from then on downsampling keeps the row with the most streams open too.
#[test]
fn history_store_migrates_version_1_and_keeps_sse_peaks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(STORE_FILE);
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE snapshots (id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, active INTEGER NOT NULL, json TEXT NOT NULL);
             CREATE INDEX snapshots_ts ON snapshots (ts);
             PRAGMA user_version = 1;",
        )
        .unwrap();
        let old = format!(
            r#"{{"timestamp":"{}","processes":[{{"pid":1,"comm":"node","websocket":{{"connections_active":3}}}}]}}"#,
            humantime::format_rfc3339_millis(at(T0))
        );
        c.execute("INSERT INTO snapshots (ts, active, json) VALUES (?1, 3, ?2)", rusqlite::params![T0 as i64, old]).unwrap();
    }
    let store = Store::open(&path).unwrap();
    let rows = store.range(0, None).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].processes[0].websocket.connections_active, 3);
    assert_eq!(rows[0].processes[0].sse, SseStats::default());
    // One 300 s bucket: a WebSocket row with 5 connections, and an SSE row with 40 streams.
    let mut s = snap(T0 + 10, vec![proc_("node", P { pid: 1, active: 5, ..Default::default() })]);
    store.insert((T0 + 10) as i64, &s).unwrap();
    s = snap(T0 + 20, vec![sse_proc(2, 40, 40, 0, 0)]);
    s.sse_totals.streams_active = 40;
    store.insert((T0 + 20) as i64, &s).unwrap();
    s = snap(T0 + 30, vec![proc_("node", P { pid: 1, active: 6, ..Default::default() })]);
    store.insert((T0 + 30) as i64, &s).unwrap();
    let cfg = HistoryConfig {
        memory_snapshots: 0,
        retention: Duration::from_secs(86400),
        full_resolution: Duration::from_secs(60),
        downsample_interval: Duration::from_secs(300),
    };
    store.prune((T0 + 3600) as i64, &cfg).unwrap();
    let kept = store.range(0, None).unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].processes[0].sse.streams_active, 40);
    drop(store);
    // Opening again (now version 2) runs no migration twice.
    assert_eq!(Store::open(&path).unwrap().count().unwrap(), 1);
}
