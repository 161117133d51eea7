//! Summary view: health checks, WebSocket (and SSE) totals, host-wide rates as sparklines, firing
//! alerts.

use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::{Color, Style, Stylize},
    text::{Line, Span},
    widgets::{Block, Paragraph, Sparkline},
    Frame,
};

use super::{alerts, status_style};
use crate::{
    export::health::Status,
    top::{
        app::{App, Sample},
        fmt,
    },
};

pub fn render(f: &mut Frame, app: &App, area: Rect) {
    let Some(d) = &app.data else { return };
    let sse = &d.snapshot.sse_totals;
    let has_sse = sse.streams_opened > 0 || sse.streams_active > 0;
    let top_height = if has_sse { 10 } else { 9 };
    let [top, sparks, bottom] =
        Layout::vertical([Constraint::Length(top_height), Constraint::Length(8), Constraint::Min(3)]).areas(area);
    let [health, totals] = Layout::horizontal([Constraint::Percentage(50), Constraint::Min(48)]).areas(top);

    // Checks that are not healthy get a line with their message; healthy ones share a line.
    let mut lines = Vec::new();
    match &d.health {
        Some(h) => {
            for c in h.checks.iter().filter(|c| c.status != Status::Healthy) {
                lines.push(Line::from(vec![
                    Span::styled(format!("{:<10}", format!("{:?}", c.status).to_uppercase()), status_style(c.status)),
                    Span::raw(format!("{}: {}", c.name, c.message)),
                ]));
            }
            let ok: Vec<&str> = h.checks.iter().filter(|c| c.status == Status::Healthy).map(|c| c.name.as_str()).collect();
            if !ok.is_empty() {
                lines.push(Line::from(vec![Span::styled("ok        ", status_style(Status::Healthy)), Span::raw(ok.join(", "))]));
            }
        }
        None => lines.push(Line::raw("health: not available")),
    }
    f.render_widget(
        Paragraph::new(lines).wrap(ratatui::widgets::Wrap { trim: true }).block(Block::bordered().title(" Health ")),
        health,
    );

    let s = &d.snapshot;
    let t = &s.totals;
    let procs = s.processes.iter().filter(|p| !p.exited).count();
    let h = &s.probe.health;
    let lost = h.ring_drops + h.conn_map_full + h.proc_map_full + h.walk_budget_exceeded + h.read_faults;
    let mut lines = vec![
        Line::raw(format!("active      {:>10}   processes {procs}", t.connections_active)),
        Line::raw(format!("opened      {:>10}   closed    {}", t.connections_opened, t.connections_closed)),
        Line::raw(format!("abnormal    {:>10}   failed handshakes {}", t.abnormal_closes, t.handshakes_failed)),
        Line::raw(format!("frames rx   {:>10}   tx {}", frames(&t.frames_received), frames(&t.frames_sent))),
        Line::raw(format!("messages rx {:>10}   tx {}", t.messages_received, t.messages_sent)),
        Line::raw(format!("out of sync {:>10}   probe lost {lost}", t.out_of_sync)),
        Line::raw(format!(
            "probe {}  agent {}  snapshot {:.1}ms",
            if s.probe.attached { "attached" } else { "NOT ATTACHED" },
            s.agent.version,
            s.agent.snapshot_ms
        )),
    ];
    let mut title = " WebSocket totals ";
    if has_sse {
        // The second transport: streams open and what they carried.
        lines.insert(
            6,
            Line::raw(format!(
                "sse open    {:>10}   opened {}  events {}  resumed {}",
                sse.streams_active, sse.streams_opened, sse.events_sent, sse.resumed_streams
            )),
        );
        title = " WebSocket and SSE totals ";
    }
    f.render_widget(Paragraph::new(lines).block(Block::bordered().title(title)), totals);

    let [row1, row2] = Layout::vertical([Constraint::Length(4), Constraint::Length(4)]).areas(sparks);
    let [a, b] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(row1);
    let [c, e] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(row2);
    let now = app.history.back().copied().unwrap_or_default();
    spark(f, a, format!(" connections active {} ", now.connections_active), app, |s| s.connections_active as f64);
    spark(f, b, format!(" opened/s {} ", fmt::rate(now.opened_per_second)), app, |s| s.opened_per_second);
    spark(f, c, format!(" frames/s {} ", fmt::rate(now.frames_per_second)), app, |s| s.frames_per_second);
    spark(
        f,
        e,
        format!(" messages/s {}  payload {}/s ", fmt::rate(now.messages_per_second), fmt::bytes(now.bytes_per_second)),
        app,
        |s| s.messages_per_second,
    );

    alerts::firing_box(f, app, bottom);
}

pub fn frames(f: &crate::model::snapshot::Frames) -> u64 {
    f.text + f.binary + f.continuation + f.ping + f.pong + f.close
}

/// The latest points that fit, right-aligned (newest at the right edge).
fn spark(f: &mut Frame, area: Rect, title: String, app: &App, value: impl Fn(&Sample) -> f64) {
    let width = area.width.saturating_sub(2) as usize;
    let skip = app.history.len().saturating_sub(width);
    // Sparkline bars are integers: keep two decimals of the rate.
    let data: Vec<u64> = app.history.iter().skip(skip).map(|s| (value(s).max(0.0) * 100.0).round() as u64).collect();
    let max = data.iter().copied().max().unwrap_or(0).max(1);
    f.render_widget(
        Sparkline::default().block(Block::bordered().title(title)).data(&data).max(max).style(Style::new().fg(Color::Cyan)),
        area,
    );
    if data.is_empty() {
        f.render_widget(Paragraph::new("no data yet").dim(), area.inner(ratatui::layout::Margin::new(1, 1)));
    }
}
