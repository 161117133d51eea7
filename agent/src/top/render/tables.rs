//! Processes view and the connections of one process.

use ratatui::{
    layout::{Constraint, Layout, Rect},
    text::Line,
    widgets::{Block, Paragraph},
    Frame,
};

use super::{col, summary::frames, table, Col};
use crate::{
    model::{
        snapshot::{ProcessSnapshot, Quantiles},
        sse::Transport,
    },
    top::{app::App, fmt},
};

const PROCESS_COLS: [Col; 18] = [
    col("PID", 7, true, 0),
    col("COMM", 15, false, 0),
    col("PORTS", 11, false, 3),
    col("ACTIVE", 7, true, 0),
    col("SSE", 5, true, 1),
    col("OPENED", 8, true, 1),
    col("FAILED", 6, true, 4),
    col("ABNORM", 6, true, 2),
    col("FRAMES RX", 11, true, 1),
    col("FRAMES TX", 11, true, 1),
    col("FRAMES/s", 8, true, 0),
    col("MSG/s", 7, true, 2),
    col("FD%", 4, true, 2),
    col("RSS", 8, true, 3),
    col("CLIENTS", 7, true, 3),
    col("IDLE", 5, true, 4),
    col("STALL", 5, true, 2),
    col("SENDQ", 8, true, 4),
];

pub fn processes(f: &mut Frame, app: &App, area: Rect) {
    let ps = app.processes();
    let rows = ps
        .iter()
        .map(|p| {
            let w = &p.websocket;
            let r = p.rates.clone().unwrap_or_default();
            let res = p.resources.as_ref();
            let mut ports: Vec<String> = p.listening_ports.iter().map(u16::to_string).collect();
            ports.dedup();
            vec![
                p.pid.to_string(),
                format!("{}{}", fmt::cut(&p.comm, 14), if p.exited { "*" } else { "" }),
                fmt::cut(&ports.join(","), 11),
                w.connections_active.to_string(),
                if served_sse(p) { p.sse.streams_active.to_string() } else { "-".into() },
                w.connections_opened.to_string(),
                w.handshakes_failed.to_string(),
                w.abnormal_closes.to_string(),
                frames(&w.frames_received).to_string(),
                frames(&w.frames_sent).to_string(),
                fmt::rate(r.frames_received_per_second + r.frames_sent_per_second),
                fmt::rate(r.messages_received_per_second + r.messages_sent_per_second),
                fmt::pct(res.and_then(|r| r.fd_usage_ratio)),
                res.map_or("-".into(), |r| fmt::bytes(r.rss_bytes as f64)),
                p.clients.distinct.to_string(),
                p.connections_idle.to_string(),
                p.connections_stalled.to_string(),
                fmt::bytes(p.send_queue_bytes as f64),
            ]
        })
        .collect();
    let title = format!(" Processes ({}; * exited) ", ps.len());
    let sel = (!ps.is_empty()).then_some(app.process_row);
    let detail_height = if ps.get(app.process_row).is_some_and(|p| served_sse(p)) { 8 } else { 7 };
    let (list, detail) = if area.height >= 18 {
        let [l, d] = Layout::vertical([Constraint::Min(5), Constraint::Length(detail_height)]).areas(area);
        (l, Some(d))
    } else {
        (area, None)
    };
    table(f, list, title, &PROCESS_COLS, rows, sel);
    if let (Some(d), Some(p)) = (detail, ps.get(app.process_row)) {
        f.render_widget(Paragraph::new(process_detail(p)).block(Block::bordered().title(" Selected ")), d);
    }
}

/// The process has served a Server-Sent Events stream (its SSE numbers mean something).
fn served_sse(p: &ProcessSnapshot) -> bool {
    p.sse.streams_opened > 0 || p.sse.streams_active > 0
}

/// Identity, latency quantiles, clients and resources of one process.
fn process_detail(p: &ProcessSnapshot) -> Vec<Line<'static>> {
    let q = |q: &Quantiles| format!("p50 {} p95 {} p99 {}", fmt::ms(q.p50_ms), fmt::ms(q.p95_ms), fmt::ms(q.p99_ms));
    let mut lines = vec![Line::raw(format!("{}[{}] {}", p.comm, p.pid, p.cmdline))];
    if let Some(r) = &p.resources {
        let mut id = Vec::new();
        if let Some(u) = &r.systemd_unit {
            id.push(format!("unit {u}"));
        }
        if let Some(c) = &r.container_id {
            id.push(format!("container {}", fmt::cut(c, 12)));
        }
        if let Some(u) = &r.pod_uid {
            id.push(format!("pod uid {u}"));
        }
        lines.push(Line::raw(format!(
            "fds {}/{}  rss {}  threads {}  cpu {}  up {}  {}",
            r.open_fds.map_or("-".into(), |v| v.to_string()),
            r.fd_limit_soft.map_or("unlimited".into(), |v| v.to_string()),
            fmt::bytes(r.rss_bytes as f64),
            r.threads,
            r.cpu_percent.map_or("-".into(), |c| format!("{c:.1}%")),
            r.uptime_seconds.map_or("-".into(), |s| fmt::secs(s as f64)),
            id.join("  ")
        )));
    }
    lines.push(Line::raw(format!("handshake {}   ping rtt {}", q(&p.latency.handshake), q(&p.latency.ping_rtt))));
    lines.push(Line::raw(format!("response  {}", q(&p.latency.response))));
    let top: Vec<String> = p.clients.top.iter().take(5).map(|c| format!("{} ({})", c.key, c.connections)).collect();
    lines.push(Line::raw(format!(
        "clients by {}: {} distinct, {} at/over quota {}; top {}",
        p.clients.key_source,
        p.clients.distinct,
        p.clients.at_or_over_quota,
        p.clients.quota,
        if top.is_empty() { "-".into() } else { top.join(", ") }
    )));
    if served_sse(p) {
        let (s, o) = (&p.sse, &p.sse_streams);
        lines.push(Line::raw(format!(
            "sse: {} open ({} idle, quietest {}), {} opened, {} events, {} comments, {} sent, {} resumed, {} busiest client",
            s.streams_active,
            o.idle,
            fmt::secs(o.max_seconds_since_last_event),
            s.streams_opened,
            s.events_sent,
            s.comments_sent,
            fmt::bytes(s.payload_bytes_sent as f64),
            s.resumed_streams,
            o.clients.top.first().map_or(0, |c| c.connections),
        )));
    }
    lines
}

const CONN_COLS: [Col; 15] = [
    col("FD", 5, true, 0),
    col("T", 3, false, 0),
    col("PEER", 22, false, 0),
    col("CLIENT", 16, false, 1),
    col("AGE", 7, true, 0),
    col("IDLE", 7, true, 0),
    col("FRAMES RX", 10, true, 0),
    col("FRAMES TX", 10, true, 0),
    col("MSG RX", 8, true, 3),
    col("MSG TX", 8, true, 3),
    col("RTT", 8, true, 1),
    col("HANDSHAKE", 9, true, 4),
    col("SENDQ", 8, true, 2),
    col("RECVQ", 8, true, 2),
    col("STATE", 19, false, 1),
];

pub fn connections(f: &mut Frame, app: &App, area: Rect) {
    let Some(d) = &app.data else { return };
    let Some(pid) = app.opened_pid else {
        f.render_widget(Paragraph::new(" No process opened: select one in Processes (2) and press Enter."), area);
        return;
    };
    let proc = d.snapshot.processes.iter().find(|p| p.pid == pid);
    let name = proc.map_or("gone".to_string(), |p| p.comm.clone());
    let list = match d.connections.as_ref() {
        Some((p, feed)) if *p == pid => feed,
        _ => {
            f.render_widget(Paragraph::new(format!(" Loading the connections of {pid} ({name}) …")), area);
            return;
        }
    };
    let Some(list) = list.ok() else {
        let why = match list {
            crate::top::fetch::Feed::Unavailable(w) => w.clone(),
            _ => String::new(),
        };
        f.render_widget(Paragraph::new(format!(" pid {pid} ({name}): {why}")), area);
        return;
    };
    let [info, rest] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    if let Some(p) = proc {
        let c = &p.clients;
        f.render_widget(
            Paragraph::new(Line::raw(format!(
                " clients by {}: {} distinct, quota {}, {} at or over  ages <5m {} 5-30m {} 30m-2h {} >2h {}",
                c.key_source,
                c.distinct,
                c.quota,
                c.at_or_over_quota,
                p.connection_ages.under_5m,
                p.connection_ages.from_5m_to_30m,
                p.connection_ages.from_30m_to_2h,
                p.connection_ages.over_2h
            ))),
            info,
        );
    }
    let rows = list
        .iter()
        .map(|c| {
            let mut state = Vec::new();
            if c.stalled {
                state.push("stalled");
            }
            if c.idle {
                state.push("idle");
            }
            if c.out_of_sync {
                state.push("out-of-sync");
            }
            // An SSE stream has no frames and receives no messages: its events go in MSG TX,
            // and its state says how long since the last event.
            let sse = c.sse.as_ref().filter(|_| c.transport == Transport::Sse);
            let quiet;
            if let Some(s) = sse {
                quiet = format!("quiet {}", fmt::secs(s.seconds_since_last_event));
                state.insert(0, &quiet);
                if s.resumed {
                    state.push("resumed");
                }
            }
            let dash = || "-".to_string();
            vec![
                c.fd.to_string(),
                if sse.is_some() { "sse".into() } else { "ws".into() },
                c.peer.clone().unwrap_or_else(|| "-".into()),
                fmt::cut(&c.client_key, 16),
                fmt::secs(c.age_seconds),
                fmt::secs(c.idle_seconds),
                sse.map_or_else(|| frames(&c.frames_received).to_string(), |_| dash()),
                sse.map_or_else(|| frames(&c.frames_sent).to_string(), |_| dash()),
                sse.map_or_else(|| c.messages_received.to_string(), |_| dash()),
                sse.map_or_else(|| c.messages_sent.to_string(), |s| s.events_sent.to_string()),
                fmt::ms(c.ping_rtt_last_ms),
                fmt::ms(Some(c.handshake_latency_ms)),
                fmt::bytes(c.send_queue_bytes as f64),
                fmt::bytes(c.recv_queue_bytes as f64),
                if state.is_empty() { "ok".into() } else { state.join(",") },
            ]
        })
        .collect();
    let title = format!(" Connections of {pid} ({name}): {} ", list.len());
    table(f, rest, title, &CONN_COLS, rows, (!list.is_empty()).then_some(app.conn_row));
}
