//! Drawing: a pure function of the [`App`] state onto a ratatui frame, so every screen is
//! tested with `TestBackend` and `wsguard top --once` prints exactly what the terminal shows.
//!
//! Sizes: below [`MIN_WIDTH`]×[`MIN_HEIGHT`] a compact text view replaces the views (tables
//! would be unreadable); every widget clips to its area, so no size panics, down to 0×0.

mod alerts;
mod summary;
mod tables;

use ratatui::{
    buffer::Buffer,
    layout::{Alignment, Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Cell, Clear, Paragraph, Row, Table, TableState, Wrap},
    Frame,
};

use super::{
    app::{App, View},
    fmt,
};
use crate::export::health::Status;

pub const MIN_WIDTH: u16 = 80;
pub const MIN_HEIGHT: u16 = 24;

pub fn render(f: &mut Frame, app: &App) {
    let area = f.area();
    if area.width == 0 || area.height == 0 {
        return;
    }
    if app.data.is_none() {
        return waiting(f, app, area);
    }
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        return compact(f, app, area);
    }
    let banner = u16::from(app.down.is_some());
    let [head, ban, body, foot] =
        Layout::vertical([Constraint::Length(1), Constraint::Length(banner), Constraint::Min(0), Constraint::Length(1)])
            .areas(area);
    f.render_widget(Paragraph::new(header(app)), head);
    if let Some(d) = &app.down {
        let text = format!(
            " agent unreachable at {}, retrying every {} (attempt {}): {} — showing the last data",
            app.api,
            humantime::format_duration(app.interval),
            d.attempts,
            d.error
        );
        f.render_widget(Paragraph::new(text).style(Style::new().fg(Color::White).bg(Color::Red)), ban);
    }
    match app.view {
        View::Summary => summary::render(f, app, body),
        View::Processes => tables::processes(f, app, body),
        View::Connections => tables::connections(f, app, body),
        View::Alerts => alerts::alerts(f, app, body),
        View::Predictions => alerts::predictions(f, app, body),
    }
    f.render_widget(Paragraph::new(footer(app)).style(Style::new().add_modifier(Modifier::REVERSED)), foot);
    if app.help {
        help(f, area);
    }
}

pub fn status_style(s: Status) -> Style {
    match s {
        Status::Healthy => Style::new().fg(Color::Green),
        Status::Degraded => Style::new().fg(Color::Yellow),
        Status::Unhealthy => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
    }
}

fn status_word(app: &App) -> Span<'static> {
    match app.data.as_ref().and_then(|d| d.health.as_ref()) {
        Some(h) => Span::styled(format!("{:?}", h.status).to_uppercase(), status_style(h.status)),
        None => Span::raw("health ?"),
    }
}

/// Status and time first: on a narrow terminal the view names are what gets cut.
fn header(app: &App) -> Line<'static> {
    let mut spans = vec![Span::styled(" wsguard ", Style::new().add_modifier(Modifier::BOLD)), status_word(app)];
    if let Some(d) = &app.data {
        spans.push(Span::raw(format!(" {} ", fmt::clock(&d.snapshot.timestamp))));
    }
    spans.push(Span::raw("│"));
    for (i, v) in View::ALL.iter().enumerate() {
        let label = format!(" {} {} ", i + 1, v.title());
        spans.push(if *v == app.view { Span::styled(label, Style::new().reversed()) } else { Span::raw(label) });
    }
    Line::from(spans)
}

fn footer(app: &App) -> String {
    if let Some(m) = &app.message {
        return format!(" {m}");
    }
    let keys = match app.view {
        View::Summary | View::Processes => "↑↓ select  Enter connections",
        View::Connections => "↑↓ select  Esc back",
        View::Alerts if app.can_ack => "↑↓ select  Enter acknowledge",
        View::Alerts => "↑↓ select  (ack needs an API token)",
        View::Predictions => "↑↓ select",
    };
    format!(" {keys}  1-5/Tab views  r refresh  ? help  q quit   {} every {}", app.api, humantime::format_duration(app.interval))
}

/// Before the first answer: connecting, or the agent-down screen.
fn waiting(f: &mut Frame, app: &App, area: Rect) {
    let mut lines = vec![Line::from(Span::styled("wsguard top", Style::new().bold())), Line::raw("")];
    match &app.down {
        None => lines.push(Line::raw(format!("connecting to the agent at {} …", app.api))),
        Some(d) => {
            lines.push(Line::styled(format!("agent unreachable at {}, retrying", app.api), Style::new().fg(Color::Red).bold()));
            lines.push(Line::raw(format!("attempt {}, every {}", d.attempts, humantime::format_duration(app.interval))));
            lines.push(Line::raw(""));
            lines.push(Line::raw(d.error.clone()));
            lines.push(Line::raw(""));
            lines.push(Line::raw("Is the agent running? `systemctl status wsguard` or `wsguard run`;"));
            lines.push(Line::raw("another address: --api URL or WSGUARD_API."));
        }
    }
    lines.push(Line::raw(""));
    lines.push(Line::raw("q quits"));
    let block = if area.width >= 40 && area.height >= 8 { Block::bordered() } else { Block::new() };
    f.render_widget(Paragraph::new(lines).block(block).wrap(Wrap { trim: false }), area);
}

/// One column per line, for terminals smaller than the views need.
fn compact(f: &mut Frame, app: &App, area: Rect) {
    let Some(d) = &app.data else { return };
    let s = &d.snapshot;
    let t = &s.totals;
    let now = app.history.back().copied().unwrap_or_default();
    let mut lines = vec![Line::from(vec![
        Span::styled("wsguard ", Style::new().bold()),
        status_word(app),
        Span::raw(format!(" {}", fmt::clock(&s.timestamp))),
    ])];
    if app.down.is_some() {
        lines.push(Line::styled(format!("agent unreachable at {}, retrying", app.api), Style::new().fg(Color::Red)));
    }
    lines.push(Line::raw(format!(
        "conns {} active, {} opened/s, {} frames/s",
        t.connections_active,
        fmt::rate(now.opened_per_second),
        fmt::rate(now.frames_per_second)
    )));
    lines.push(Line::raw(alerts::alert_count_line(app)));
    lines.push(Line::styled(format!("{:>7} {:<12} {:>6} {:>8}", "PID", "COMM", "ACTIVE", "FRAMES/s"), Style::new().bold()));
    for p in app.processes() {
        let fr = p.rates.as_ref().map_or(0.0, |r| r.frames_received_per_second + r.frames_sent_per_second);
        lines.push(Line::raw(format!(
            "{:>7} {:<12} {:>6} {:>8}",
            p.pid,
            fmt::cut(&p.comm, 12),
            p.websocket.connections_active,
            fmt::rate(fr)
        )));
    }
    let room = area.height as usize;
    if lines.len() >= room {
        lines.truncate(room.saturating_sub(1));
    }
    lines.push(Line::styled(
        format!("{}x{}: {}x{} for all views; q quits", area.width, area.height, MIN_WIDTH, MIN_HEIGHT),
        Style::new().dim(),
    ));
    f.render_widget(Paragraph::new(lines), area);
}

fn help(f: &mut Frame, area: Rect) {
    let text = vec![
        Line::raw("1 s  summary: health, totals, rates, firing alerts"),
        Line::raw("2 p  processes (Enter: its connections)"),
        Line::raw("3 c  connections of the selected process (Esc: back)"),
        Line::raw("4 a  alerts (Enter: acknowledge; needs the API token)"),
        Line::raw("5 f  predictions: time to limit, crisis probability"),
        Line::raw("Tab  next view   ↑↓ j k PgUp PgDn  move   r  refresh now"),
        Line::raw("q Esc Ctrl-C  quit"),
        Line::raw(""),
        Line::raw("any key closes this help"),
    ];
    let r = area.centered(Constraint::Length(62.min(area.width)), Constraint::Length(11.min(area.height)));
    f.render_widget(Clear, r);
    f.render_widget(Paragraph::new(text).block(Block::bordered().title(" keys ")), r);
}

/// A table column: title, width, whether numbers (right-aligned), priority (lower = kept
/// first when the terminal is too narrow for all).
pub struct Col {
    pub title: &'static str,
    pub width: u16,
    pub right: bool,
    pub prio: u8,
}

pub const fn col(title: &'static str, width: u16, right: bool, prio: u8) -> Col {
    Col { title, width, right, prio }
}

/// Indices of the columns that fit in `width` (one space between columns), in display order.
pub fn fit(cols: &[Col], width: u16) -> Vec<usize> {
    let mut order: Vec<usize> = (0..cols.len()).collect();
    order.sort_by_key(|&i| (cols[i].prio, i));
    let mut used = 0u16;
    let mut keep = Vec::new();
    for i in order {
        let w = cols[i].width + u16::from(!keep.is_empty());
        if used + w <= width {
            used += w;
            keep.push(i);
        }
    }
    keep.sort_unstable();
    keep
}

/// A bordered table of `rows` (full rows; cells of dropped columns are left out) with the
/// `selected` row highlighted and scrolled into view.
pub fn table(f: &mut Frame, area: Rect, title: String, cols: &[Col], rows: Vec<Vec<String>>, selected: Option<usize>) {
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    let keep = fit(cols, inner.width.saturating_sub(2));
    let cell = |c: &Col, s: String| {
        let line = Line::raw(s);
        Cell::from(if c.right { line.alignment(Alignment::Right) } else { line })
    };
    let head = Row::new(keep.iter().map(|&i| cell(&cols[i], cols[i].title.to_string()))).style(Style::new().bold());
    let body: Vec<Row> = rows
        .into_iter()
        .map(|mut r| Row::new(keep.iter().map(|&i| cell(&cols[i], std::mem::take(r.get_mut(i).unwrap_or(&mut String::new()))))))
        .collect();
    let widths: Vec<Constraint> = keep.iter().map(|&i| Constraint::Length(cols[i].width)).collect();
    let t = Table::new(body, widths)
        .header(head)
        .block(block)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("›");
    let mut state = TableState::default().with_selected(selected);
    f.render_stateful_widget(t, area, &mut state);
}

/// The frame as plain text, one line per row, trailing spaces trimmed (`--once` and tests).
pub fn to_text(buf: &Buffer) -> String {
    let area = buf.area;
    let mut out = String::new();
    for y in area.top()..area.bottom() {
        let mut line = String::new();
        for x in area.left()..area.right() {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
