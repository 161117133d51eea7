//! Alerts view (with acknowledgement), the firing-alerts box of the summary, and the
//! predictions view.

use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::{Color, Style, Stylize},
    text::{Line, Span},
    widgets::{Block, Paragraph, Wrap},
    Frame,
};

use super::{col, table, Col};
use crate::{
    alert::{Alert, Severity, Status},
    top::{app::App, fetch::Feed, fmt},
};

fn severity_style(s: Severity) -> Style {
    match s {
        Severity::Critical => Style::new().fg(Color::Red).bold(),
        Severity::Warning => Style::new().fg(Color::Yellow),
        Severity::Info => Style::new(),
    }
}

fn status_str(s: Status) -> &'static str {
    match s {
        Status::Pending => "pending",
        Status::Firing => "firing",
        Status::Resolved => "resolved",
    }
}

/// What the alert is about: `comm[pid]`, or `host`.
fn target(a: &Alert) -> String {
    match (a.labels.get("comm"), a.labels.get("pid")) {
        (Some(c), Some(p)) => format!("{c}[{p}]"),
        (None, Some(p)) => format!("pid {p}"),
        _ => a.labels.get("scope").cloned().unwrap_or_else(|| "host".into()),
    }
}

fn name(a: &Alert) -> &str {
    a.labels.get("alertname").map_or("?", String::as_str)
}

/// `alerts: 2 firing (1 critical), 1 pending` or why there are none.
pub fn alert_count_line(app: &App) -> String {
    let Some(d) = &app.data else { return String::new() };
    match &d.alerts {
        Feed::Unavailable(why) => why.clone(),
        Feed::Ok(list) => {
            let firing: Vec<&Alert> = list.iter().filter(|a| a.status == Status::Firing).collect();
            let crit = firing.iter().filter(|a| a.severity == Severity::Critical).count();
            let pending = list.iter().filter(|a| a.status == Status::Pending).count();
            let unacked = firing.iter().filter(|a| !a.acknowledged).count();
            format!("alerts: {} firing ({crit} critical, {unacked} unacknowledged), {pending} pending", firing.len())
        }
    }
}

/// Summary's box: firing alerts, most severe first.
pub fn firing_box(f: &mut Frame, app: &App, area: Rect) {
    let mut lines = Vec::new();
    if let Some(Feed::Ok(_)) = app.data.as_ref().map(|d| &d.alerts) {
        for a in app.alerts().into_iter().filter(|a| a.status == Status::Firing) {
            lines.push(Line::from(vec![
                Span::styled(format!("{:<9}", a.severity.as_str()), severity_style(a.severity)),
                Span::raw(format!(
                    "{:<28} {:<20} since {}  {}{}",
                    fmt::cut(name(a), 28),
                    fmt::cut(&target(a), 20),
                    fmt::clock(&a.starts_at),
                    a.annotations.get("summary").map_or("", String::as_str),
                    if a.acknowledged { "  [acked]" } else { "" }
                )),
            ]));
        }
        if lines.is_empty() {
            lines.push(Line::raw("no alert firing"));
        }
    }
    let title = format!(" {} ", alert_count_line(app));
    f.render_widget(Paragraph::new(lines).block(Block::bordered().title(title)), area);
}

const ALERT_COLS: [Col; 8] = [
    col("SEVERITY", 8, false, 0),
    col("STATUS", 8, false, 0),
    col("ALERT", 26, false, 0),
    col("TARGET", 20, false, 0),
    col("SINCE", 8, false, 1),
    col("VALUE", 12, true, 2),
    col("ACK", 10, false, 1),
    col("FINGERPRINT", 16, false, 3),
];

pub fn alerts(f: &mut Frame, app: &App, area: Rect) {
    let Some(d) = &app.data else { return };
    if let Feed::Unavailable(why) = &d.alerts {
        let text = format!(" {why}.\n\n Alerts need an agent with alerting ([alert] in its config); the Prometheus rules in config/prometheus/ work meanwhile.");
        f.render_widget(Paragraph::new(text).wrap(Wrap { trim: false }), area);
        return;
    }
    let list = app.alerts();
    let [top, detail] = Layout::vertical([Constraint::Min(5), Constraint::Length(7)]).areas(area);
    let rows = list
        .iter()
        .map(|a| {
            vec![
                a.severity.as_str().to_string(),
                status_str(a.status).to_string(),
                fmt::cut(name(a), 26),
                fmt::cut(&target(a), 20),
                fmt::clock(&a.starts_at).to_string(),
                match &a.forecast {
                    // Forecast alerts: the ETA, not the rule's trigger value.
                    Some(f) => format!("ETA {}", f.field("eta").unwrap_or_default()),
                    None => {
                        a.value.map_or("-".into(), |v| format!("{v:.4}").trim_end_matches('0').trim_end_matches('.').to_string())
                    }
                },
                match (&a.ack, a.silenced) {
                    (Some(ack), _) => fmt::cut(&ack.by, 10),
                    (None, true) => "silenced".into(),
                    (None, false) => "-".into(),
                },
                a.fingerprint.clone(),
            ]
        })
        .collect();
    let title = format!(" {} ", alert_count_line(app));
    table(f, top, title, &ALERT_COLS, rows, (!list.is_empty()).then_some(app.alert_row));
    let lines: Vec<Line> = match list.get(app.alert_row) {
        Some(a) => {
            let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let mut l = vec![Line::raw(labels.join(" "))];
            for k in ["summary", "message", "action", "runbook_url"] {
                if let Some(v) = a.annotations.get(k) {
                    l.push(Line::raw(format!("{k}: {v}")));
                }
            }
            l
        }
        None => vec![Line::raw("no alerts")],
    };
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }).block(Block::bordered().title(" Selected ")), detail);
}

const PRED_COLS: [Col; 9] = [
    col("PID", 7, true, 0),
    col("COMM", 15, false, 0),
    col("CRISIS", 7, true, 0),
    col("CONF", 5, true, 1),
    col("CLASS", 10, false, 0),
    col("RESOURCE", 18, false, 0),
    col("USAGE", 6, true, 1),
    col("ETA", 8, true, 0),
    col("ETA RANGE", 17, true, 2),
];

pub fn predictions(f: &mut Frame, app: &App, area: Rect) {
    let Some(d) = &app.data else { return };
    let p = match &d.predictions {
        Feed::Ok(p) => p,
        Feed::Unavailable(why) => {
            f.render_widget(Paragraph::new(format!(" {why}")).wrap(Wrap { trim: false }), area);
            return;
        }
    };
    let [host, top, bottom] = Layout::vertical([Constraint::Length(3), Constraint::Min(5), Constraint::Length(6)]).areas(area);
    let hc = &p.host.crisis;
    f.render_widget(
        Paragraph::new(format!(
            "crisis {:.0}% (confidence {:.0}%) {}  horizon {}  {}",
            hc.probability * 100.0,
            hc.confidence * 100.0,
            hc.class.as_str(),
            fmt::secs(p.horizon_seconds),
            hc.recommendation
        ))
        .block(Block::bordered().title(" Host forecast ")),
        host,
    );
    let rows = p
        .processes
        .iter()
        .map(|pp| {
            let worst = pp.crisis.resource.as_deref().and_then(|r| pp.resources.iter().find(|x| x.resource == r));
            vec![
                pp.pid.to_string(),
                fmt::cut(&pp.comm, 15),
                format!("{:.0}%", pp.crisis.probability * 100.0),
                format!("{:.0}%", pp.crisis.confidence * 100.0),
                pp.crisis.class.as_str().to_string(),
                worst.map_or("-".into(), |w| fmt::cut(&w.resource, 18)),
                worst.map_or("-".into(), |w| fmt::pct(Some(w.usage_ratio))),
                worst.and_then(|w| w.eta_seconds).map_or("-".into(), fmt::secs),
                worst
                    .and_then(|w| Some(format!("{}..{}", fmt::secs(w.eta_low_seconds?), fmt::secs(w.eta_high_seconds?))))
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let title = format!(" Process forecasts ({}) ", p.processes.len());
    let sel = (!p.processes.is_empty()).then_some(app.process_row.min(p.processes.len() - 1));
    table(f, top, title, &PRED_COLS, rows, sel);
    // Forecast rule inputs whose condition holds (the alerts themselves are in the alerts view).
    let holding = p.processes.iter().flat_map(|pp| pp.forecasts.iter().map(move |f| (format!("pid {}", pp.pid), f)));
    let host = p.host.forecasts.iter().map(|f| ("host".to_string(), f));
    let mut lines: Vec<Line> = holding
        .chain(host)
        .filter(|(_, f)| f.trigger.is_some())
        .map(|(who, f)| {
            Line::raw(format!(
                "{} {who} [{}]: {} at {}, ETA {}",
                f.rule,
                f.field("trigger").unwrap_or_default(),
                f.resource.as_deref().unwrap_or("-"),
                f.field("usage").unwrap_or_default(),
                f.field("eta").unwrap_or_default()
            ))
        })
        .collect();
    if lines.is_empty() {
        lines.push(Line::raw("no forecast alert condition holds"));
    }
    if let Some(sel) = p.processes.get(app.process_row.min(p.processes.len().saturating_sub(1))) {
        lines.push(Line::raw(format!("{}[{}]: {}", sel.comm, sel.pid, sel.crisis.recommendation)).dim());
    }
    f.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: true }).block(Block::bordered().title(" Prediction alerts ")),
        bottom,
    );
}
