//! Rendering tests through ratatui's `TestBackend` (via [`dump`]): each view shows the numbers
//! of the state it is given; small terminals and an unreachable agent never panic and say so.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::{
    app::{Action, App, View},
    dump,
    fetch::{Data, Feed},
};
use crate::{
    model::snapshot::{Frames, ProcessSnapshot, Rates, Snapshot, WebSocketStats},
    track::conns::ConnectionSnapshot,
};

const API: &str = "http://127.0.0.1:9595";

fn process(pid: u32, comm: &str, active: u64, text_rx: u64) -> ProcessSnapshot {
    ProcessSnapshot {
        pid,
        comm: comm.into(),
        listening_ports: vec![8080],
        websocket: WebSocketStats {
            connections_opened: active + 2,
            connections_active: active,
            connections_closed: 2,
            frames_received: Frames { text: text_rx, ping: 1, ..Default::default() },
            frames_sent: Frames { text: text_rx, ..Default::default() },
            ..Default::default()
        },
        rates: Some(Rates { frames_received_per_second: 12.5, frames_sent_per_second: 12.5, ..Default::default() }),
        ..Default::default()
    }
}

fn snapshot(ts: &str) -> Snapshot {
    let mut s = Snapshot { timestamp: ts.into(), ..Default::default() };
    s.probe.attached = true;
    s.processes = vec![process(4242, "node", 7, 1234), process(999, "python3", 3, 10)];
    for p in &s.processes {
        s.totals.add(&p.websocket);
    }
    s
}

fn alert_json(name: &str, severity: &str, status: &str, fp: &str, acked: bool) -> serde_json::Value {
    serde_json::json!({
        "labels": {"alertname": name, "pid": "4242", "comm": "node"},
        "annotations": {"summary": format!("{name} on node")},
        "severity": severity, "status": status,
        "starts_at": "2026-01-01T10:00:00Z", "ends_at": null, "fingerprint": fp,
        "value": 0.93, "occurrences": 1, "first_seen": "2026-01-01T09:59:00Z",
        "last_seen": "2026-01-01T10:05:00Z", "acknowledged": acked, "ack": null,
        "silenced": false, "silenced_by": [], "inhibited": false, "tier": 0,
        "tier_name": null, "flapping": false, "manual": false
    })
}

fn data(ts: &str) -> Data {
    let alerts = serde_json::from_value(serde_json::json!([
        alert_json("FdExhaustion", "warning", "firing", "00000000000000aa", false),
        alert_json("ClientOverQuota", "critical", "firing", "00000000000000bb", false),
        alert_json("Stalled", "info", "resolved", "00000000000000cc", false),
    ]))
    .unwrap();
    Data {
        snapshot: snapshot(ts),
        health: None,
        alerts: Feed::Ok(alerts),
        predictions: Feed::Unavailable("predictions: 503 no predictions yet".into()),
        connections: None,
    }
}

fn app_with_data() -> App {
    let mut app = App::new(API, std::time::Duration::from_secs(2), View::Summary, true);
    app.update(Ok(data("2026-01-01T10:05:00Z")));
    app
}

fn key(app: &mut App, c: KeyCode) -> Action {
    app.key(KeyEvent::new(c, KeyModifiers::NONE))
}

#[test]
fn summary_shows_totals_and_firing_alerts() {
    let app = app_with_data();
    let text = dump(&app, 120, 40);
    assert!(text.starts_with(" wsguard health ? 10:05:00 │ 1 Summary "), "{text}");
    assert!(text.contains("active              10"), "{text}");
    // 1234 + 1 ping + 10 + 1 ping received over both processes.
    assert!(text.contains("frames rx         1246"), "{text}");
    assert!(text.contains("frames/s 50"), "{text}");
    assert!(text.contains("alerts: 2 firing (1 critical, 2 unacknowledged), 0 pending"), "{text}");
    // Critical first.
    let crit = text.find("ClientOverQuota").unwrap();
    let warn = text.find("FdExhaustion").unwrap();
    assert!(crit < warn, "{text}");
    assert!(!text.contains("Stalled"), "resolved alerts are not in the firing box: {text}");
}

#[test]
fn processes_view_lists_exact_counts_busiest_first() {
    let mut app = app_with_data();
    key(&mut app, KeyCode::Char('2'));
    let text = dump(&app, 120, 30);
    let node = text.lines().find(|l| l.contains("4242")).expect("node row");
    let cells: Vec<&str> = node.split_whitespace().collect();
    assert!(cells.contains(&"node") && cells.contains(&"7") && cells.contains(&"1235"), "{node}");
    assert!(text.find("4242").unwrap() < text.find("999 ").unwrap(), "busiest first: {text}");
    // The selected process's detail pane.
    assert!(text.contains("node[4242]") && text.contains("clients by"), "{text}");
}

#[test]
fn narrow_terminal_drops_low_priority_columns_not_pid_or_counts() {
    let mut app = app_with_data();
    app.view = View::Processes;
    let text = dump(&app, 80, 24);
    assert!(text.contains("PID") && text.contains("ACTIVE") && text.contains("FRAMES/s"), "{text}");
    assert!(!text.contains("SENDQ"), "{text}");
    assert!(text.lines().all(|l| l.chars().count() <= 80));
}

#[test]
fn enter_opens_connections_of_the_selected_process() {
    let mut app = app_with_data();
    key(&mut app, KeyCode::Char('p'));
    key(&mut app, KeyCode::Down);
    assert_eq!(key(&mut app, KeyCode::Enter), Action::Refresh);
    assert_eq!(app.opened_pid, Some(999));
    assert_eq!(app.view, View::Connections);
    assert!(dump(&app, 100, 30).contains("Loading the connections of 999"));
    let mut d = data("2026-01-01T10:05:02Z");
    let conn = ConnectionSnapshot {
        fd: 17,
        peer: Some("127.0.0.1:50000".into()),
        client_key: "127.0.0.1".into(),
        age_seconds: 75.0,
        frames_received: Frames { text: 5, ..Default::default() },
        stalled: true,
        ..Default::default()
    };
    d.connections = Some((999, Feed::Ok(vec![conn])));
    app.update(Ok(d));
    let text = dump(&app, 120, 30);
    let row = text.lines().find(|l| l.contains("127.0.0.1:50000")).expect("connection row");
    assert!(row.contains("1m15s") && row.contains("stalled") && row.split_whitespace().any(|c| c == "5"), "{row}");
    assert_eq!(key(&mut app, KeyCode::Esc), Action::None);
    assert_eq!(app.view, View::Processes);
}

#[test]
fn alerts_ack_from_the_keyboard() {
    let mut app = app_with_data();
    key(&mut app, KeyCode::Char('a'));
    let text = dump(&app, 120, 30);
    assert!(text.contains("00000000000000bb") && text.contains("Enter acknowledge"), "{text}");
    // The critical firing alert is first and selected.
    assert_eq!(key(&mut app, KeyCode::Enter), Action::Ack("00000000000000bb".into()));
    app.acked("00000000000000bb", Err("ack refused (401 Unauthorized): bad token".into()));
    assert!(dump(&app, 120, 30).contains("ack refused (401 Unauthorized)"));
    // Without a token the key explains instead of sending.
    let mut app = App::new(API, std::time::Duration::from_secs(2), View::Alerts, false);
    app.update(Ok(data("t")));
    assert_eq!(key(&mut app, KeyCode::Enter), Action::None);
    assert!(dump(&app, 120, 30).contains("no API token"));
}

#[test]
fn missing_feeds_say_not_available() {
    let mut app = App::new(API, std::time::Duration::from_secs(2), View::Summary, false);
    let mut d = data("t");
    d.alerts = Feed::Unavailable("alerts: not available from this agent".into());
    app.update(Ok(d));
    assert!(dump(&app, 120, 40).contains("alerts: not available"));
    app.view = View::Predictions;
    assert!(dump(&app, 120, 40).contains("predictions: 503 no predictions yet"));
}

#[test]
fn agent_down_screen_then_stale_banner() {
    let mut app = App::new(API, std::time::Duration::from_secs(2), View::Summary, false);
    app.update(Err("connection refused".into()));
    app.update(Err("connection refused".into()));
    let text = dump(&app, 100, 30);
    assert!(text.contains("agent unreachable at http://127.0.0.1:9595, retrying"), "{text}");
    assert!(text.contains("attempt 2") && text.contains("connection refused"), "{text}");
    // With data already shown, the data stays with a banner.
    let mut app = app_with_data();
    app.update(Err("timed out".into()));
    let text = dump(&app, 120, 40);
    assert!(text.contains("agent unreachable at http://127.0.0.1:9595") && text.contains("showing the last data"), "{text}");
    assert!(text.contains("4242") || text.contains("active"), "{text}");
}

#[test]
fn every_view_at_every_small_size_renders_without_panic() {
    let mut app = app_with_data();
    app.help = true;
    for v in View::ALL {
        app.view = v;
        app.opened_pid = Some(4242);
        for (w, h) in [(0, 0), (1, 1), (5, 3), (20, 5), (40, 10), (79, 23), (80, 24), (200, 60)] {
            let text = dump(&app, w, h);
            assert_eq!(text.lines().count(), h as usize);
        }
    }
    let mut down = App::new(API, std::time::Duration::from_secs(2), View::Summary, false);
    down.update(Err("refused".into()));
    for (w, h) in [(1, 1), (10, 2), (39, 7)] {
        dump(&down, w, h);
    }
}

#[test]
fn small_terminal_gets_the_compact_view() {
    let app = app_with_data();
    let text = dump(&app, 60, 15);
    assert!(text.contains("conns 10 active"), "{text}");
    assert!(text.contains("4242") && text.contains("999"), "{text}");
    assert!(text.contains("60x15: 80x24 for all views"), "{text}");
    // Too few rows for all processes: the size hint stays on the last line.
    let text = dump(&app, 60, 5);
    assert!(text.lines().last().unwrap().contains("80x24"), "{text}");
}

#[test]
fn sparkline_history_grows_once_per_snapshot() {
    let mut app = app_with_data();
    app.update(Ok(data("2026-01-01T10:05:00Z")));
    assert_eq!(app.history.len(), 1, "same snapshot twice is one point");
    app.update(Ok(data("2026-01-01T10:05:02Z")));
    assert_eq!(app.history.len(), 2);
    assert_eq!(app.history.back().unwrap().frames_per_second, 50.0);
    for i in 0..200 {
        app.update(Ok(data(&format!("x{i}"))));
    }
    assert_eq!(app.history.len(), super::app::HISTORY);
}

#[test]
fn keys_switch_views_and_quit() {
    let mut app = app_with_data();
    for (k, v) in [('5', View::Predictions), ('1', View::Summary), ('a', View::Alerts), ('f', View::Predictions)] {
        key(&mut app, KeyCode::Char(k));
        assert_eq!(app.view, v);
    }
    key(&mut app, KeyCode::Tab);
    assert_eq!(app.view, View::Summary);
    key(&mut app, KeyCode::Char('?'));
    assert!(app.help);
    assert_eq!(key(&mut app, KeyCode::Char('q')), Action::None, "a key closes the help first");
    assert_eq!(key(&mut app, KeyCode::Char('q')), Action::Quit);
    assert_eq!(app.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)), Action::Quit);
}

#[test]
fn sparklines_are_prefilled_from_history_once() {
    let mut app = App::new(API, std::time::Duration::from_secs(2), View::Summary, false);
    assert_eq!(app.prefill_secs(), None, "no data yet");
    let mut d = data("2026-01-01T10:05:04.000Z");
    d.snapshot.agent.interval_seconds = 2.0;
    app.update(Ok(d));
    assert_eq!(app.prefill_secs(), Some(120));
    let mut earlier: Vec<Snapshot> =
        ["2026-01-01T10:05:00.000Z", "2026-01-01T10:05:02.000Z", "2026-01-01T10:05:04.000Z"].map(snapshot).into();
    earlier[0].processes[0].websocket.connections_active = 100;
    earlier[0].totals.connections_active = 100;
    app.prefill(&earlier);
    // Two earlier points in front; the current snapshot is not counted twice.
    let active: Vec<u64> = app.history.iter().map(|s| s.connections_active).collect();
    assert_eq!(active, [100, 10, 10]);
    assert_eq!(app.prefill_secs(), None, "once");
    // A big host starts empty rather than reading 60 full snapshots.
    let mut big = App::new(API, std::time::Duration::from_secs(2), View::Summary, false);
    let mut d = data("t");
    d.snapshot.processes = (0..300).map(|i| process(i, "w", 1, 1)).collect();
    big.update(Ok(d));
    assert_eq!(big.prefill_secs(), None);
}

#[test]
fn health_lists_problems_with_messages_and_healthy_checks_on_one_line() {
    let mut app = App::new(API, std::time::Duration::from_secs(2), View::Summary, false);
    let mut d = data("t");
    let check = |name: &str, status: crate::export::health::Status, message: &str| crate::export::health::Check {
        name: name.into(),
        scope: Default::default(),
        status,
        message: message.into(),
        metrics: serde_json::Value::Null,
    };
    use crate::export::health::Status::*;
    d.health = Some(crate::export::health::Report {
        workload: Healthy,
        status: Degraded,
        timestamp: "t".into(),
        checks: vec![
            check("probe", Healthy, "probe attached"),
            check("fd_usage", Degraded, "node[4242] at 85% of RLIMIT_NOFILE"),
            check("memory", Healthy, "12% used"),
        ],
    });
    app.update(Ok(d));
    let text = dump(&app, 120, 40);
    assert!(text.contains("DEGRADED  fd_usage: node[4242] at 85% of RLIMIT_NOFILE"), "{text}");
    assert!(text.contains("ok        probe, memory"), "{text}");
    assert!(text.starts_with(" wsguard DEGRADED "), "{text}");
}

#[test]
fn alerts_view_shows_forecast_alerts_with_their_eta() {
    let mut fd = alert_json("PredictedFdExhaustion", "critical", "firing", "00000000000000dd", false);
    fd["value"] = 1.0.into();
    fd["annotations"]["summary"] =
        "node (pid 4242) holds 300 of 400 fds (75%); ETA to exhaustion 40 s (38 s to 42 s) [forecast]".into();
    fd["forecast"] = serde_json::json!({
        "rule": "PredictedFdExhaustion", "resource": "fds", "trigger": "forecast", "consecutive": 3,
        "current": 300.0, "limit": 400.0, "usage_ratio": 0.75, "eta_seconds": 40.0,
        "eta_low_seconds": 38.0, "eta_high_seconds": 42.0, "probability": 1.0, "confidence": 0.9,
        "class": null, "recommendation": null
    });
    let mut d = data("2026-01-01T10:05:00Z");
    d.alerts = Feed::Ok(serde_json::from_value(serde_json::json!([fd])).unwrap());
    let mut app = App::new(API, std::time::Duration::from_secs(2), View::Alerts, true);
    app.update(Ok(d));
    let text = dump(&app, 140, 30);
    assert!(text.contains("PredictedFdExhaustion") && text.contains("ETA 40 s"), "{text}");
    assert!(text.contains("ETA to exhaustion 40 s"), "{text}");
}

/// `process` 4242 also serves SSE streams: the summary, the processes table, the detail pane
/// and the connections table show them as the second transport.
fn sse_app() -> App {
    use crate::model::sse::{SseConnStats, SseStats, SseStreams, Transport};
    let mut d = data("2026-01-01T10:05:00Z");
    let p = &mut d.snapshot.processes[0];
    p.sse = SseStats {
        streams_opened: 31,
        streams_active: 12,
        streams_closed: 19,
        events_sent: 4567,
        comments_sent: 89,
        resumed_streams: 6,
        ..Default::default()
    };
    p.sse_streams = SseStreams { idle: 2, max_seconds_since_last_event: 75.0, ..Default::default() };
    d.snapshot.sse_totals = p.sse.clone();
    let stream = ConnectionSnapshot {
        transport: Transport::Sse,
        fd: 31,
        peer: Some("127.0.0.1:50031".into()),
        client_key: "127.0.0.1".into(),
        age_seconds: 600.0,
        sse: Some(SseConnStats { events_sent: 321, seconds_since_last_event: 75.0, resumed: true, ..Default::default() }),
        ..Default::default()
    };
    d.connections = Some((4242, Feed::Ok(vec![stream])));
    let mut app = App::new(API, std::time::Duration::from_secs(2), View::Summary, true);
    app.update(Ok(d));
    app
}

#[test]
fn sse_streams_show_beside_websocket() {
    let mut app = sse_app();
    let text = dump(&app, 120, 40);
    assert!(text.contains("sse open            12   opened 31  events 4567  resumed 6"), "{text}");
    app.view = View::Processes;
    let text = dump(&app, 140, 30);
    let header = text.lines().find(|l| l.contains("PID")).expect("header");
    let node = text.lines().find(|l| l.contains("4242")).expect("node row");
    // Every cell is filled, so whitespace-separated cells line up with the header's.
    let at = header.split_whitespace().position(|c| c == "SSE").expect("SSE column");
    let cell = |line: &str| line.split_whitespace().nth(at).unwrap_or_default().to_string();
    assert_eq!(cell(node), "12", "{header}\n{node}");
    let py = text.lines().find(|l| l.contains(" 999 ")).expect("python row");
    assert_eq!(cell(py), "-", "no streams served: {py}");
    assert!(text.contains("sse: 12 open (2 idle, quietest 1m15s), 31 opened, 4567 events, 89 comments"), "{text}");
    app.opened_pid = Some(4242);
    app.view = View::Connections;
    let text = dump(&app, 200, 30);
    let row = text.lines().find(|l| l.contains("127.0.0.1:50031")).expect("stream row");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert!(cells.contains(&"sse") && cells.contains(&"321"), "{row}");
    assert!(row.contains("quiet 1m15s") && row.contains("resumed"), "{row}");
}
