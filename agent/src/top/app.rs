//! The dashboard's state and how keys and refreshes change it. No I/O and no drawing here: the
//! event loop (`mod.rs`) performs the [`Action`]s this returns, and `render` draws the state.

use std::{collections::VecDeque, time::Duration};

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::fetch::Data;
use crate::{alert::Alert, model::snapshot::ProcessSnapshot};

/// Points kept per sparkline (one per snapshot).
pub const HISTORY: usize = 120;
/// Above this many processes, sparklines start empty instead of reading history at start.
pub const PREFILL_MAX_PROCESSES: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum View {
    Summary,
    Processes,
    Connections,
    Alerts,
    Predictions,
}

impl View {
    pub const ALL: [View; 5] = [View::Summary, View::Processes, View::Connections, View::Alerts, View::Predictions];

    pub fn title(self) -> &'static str {
        match self {
            View::Summary => "Summary",
            View::Processes => "Processes",
            View::Connections => "Connections",
            View::Alerts => "Alerts",
            View::Predictions => "Predictions",
        }
    }
}

/// Host-wide numbers of one snapshot, for the sparklines.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    pub connections_active: u64,
    pub opened_per_second: f64,
    pub frames_per_second: f64,
    pub messages_per_second: f64,
    pub bytes_per_second: f64,
}

impl Sample {
    pub fn of(s: &crate::model::snapshot::Snapshot) -> Sample {
        let mut out = Sample { connections_active: s.totals.connections_active, ..Default::default() };
        for r in s.processes.iter().filter_map(|p| p.rates.as_ref()) {
            out.opened_per_second += r.connections_opened_per_second;
            out.frames_per_second += r.frames_received_per_second + r.frames_sent_per_second;
            out.messages_per_second += r.messages_received_per_second + r.messages_sent_per_second;
            out.bytes_per_second += r.payload_bytes_received_per_second + r.payload_bytes_sent_per_second;
        }
        out
    }
}

/// The agent cannot be reached (or answers with an error) since `attempts` refreshes.
#[derive(Debug, Clone)]
pub struct Down {
    pub error: String,
    pub attempts: u32,
}

pub struct App {
    pub api: String,
    pub interval: Duration,
    pub view: View,
    /// Latest good data (kept while the agent is down, shown as stale).
    pub data: Option<Data>,
    pub down: Option<Down>,
    pub history: VecDeque<Sample>,
    last_timestamp: String,
    /// Selected row in the processes, alerts and connections views.
    pub process_row: usize,
    pub alert_row: usize,
    pub conn_row: usize,
    /// The process whose connections are shown.
    pub opened_pid: Option<u32>,
    /// One-line feedback (ack results, hints).
    pub message: Option<String>,
    pub help: bool,
    pub can_ack: bool,
}

/// What the event loop should do after a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    None,
    Quit,
    /// Fetch now (e.g. a process's connections were opened).
    Refresh,
    Ack(String),
}

impl App {
    pub fn new(api: &str, interval: Duration, view: View, can_ack: bool) -> Self {
        App {
            api: api.to_string(),
            interval,
            view,
            data: None,
            down: None,
            history: VecDeque::with_capacity(HISTORY),
            last_timestamp: String::new(),
            process_row: 0,
            alert_row: 0,
            conn_row: 0,
            opened_pid: None,
            message: None,
            help: false,
            can_ack,
        }
    }

    /// Apply one refresh.
    pub fn update(&mut self, r: Result<Data, String>) {
        match r {
            Ok(d) => {
                self.down = None;
                if d.snapshot.timestamp != self.last_timestamp {
                    self.last_timestamp = d.snapshot.timestamp.clone();
                    if self.history.len() == HISTORY {
                        self.history.pop_front();
                    }
                    self.history.push_back(Sample::of(&d.snapshot));
                }
                self.data = Some(d);
                self.clamp();
            }
            Err(error) => {
                let attempts = self.down.as_ref().map_or(0, |d| d.attempts) + 1;
                self.down = Some(Down { error, attempts });
            }
        }
    }

    /// How far back to read history for the sparklines, or None when not worth it: after
    /// the first refresh only, and not on hosts where 60 full snapshots would be a large read.
    pub fn prefill_secs(&self) -> Option<u64> {
        let d = self.data.as_ref()?;
        if self.history.len() > 1 || d.snapshot.processes.len() > PREFILL_MAX_PROCESSES {
            return None;
        }
        let interval = d.snapshot.agent.interval_seconds.max(0.1);
        Some(((interval * 60.0).min(300.0)).ceil() as u64)
    }

    /// Put earlier snapshots (oldest first) in front of the sparkline history.
    pub fn prefill(&mut self, earlier: &[crate::model::snapshot::Snapshot]) {
        // RFC 3339 UTC timestamps of one format order as strings.
        let mut past: VecDeque<Sample> = earlier.iter().filter(|s| s.timestamp < self.last_timestamp).map(Sample::of).collect();
        past.extend(self.history.drain(..));
        while past.len() > HISTORY {
            past.pop_front();
        }
        self.history = past;
    }

    /// Processes in display order: most active connections first, then pid.
    pub fn processes(&self) -> Vec<&ProcessSnapshot> {
        let Some(d) = &self.data else { return Vec::new() };
        let mut ps: Vec<&ProcessSnapshot> = d.snapshot.processes.iter().collect();
        ps.sort_by_key(|p| (p.exited, std::cmp::Reverse(p.websocket.connections_active + p.sse.streams_active), p.pid));
        ps
    }

    /// Alerts in display order: firing before pending before resolved, most severe first.
    pub fn alerts(&self) -> Vec<&Alert> {
        let Some(list) = self.data.as_ref().and_then(|d| d.alerts.ok()) else { return Vec::new() };
        let mut v: Vec<&Alert> = list.iter().collect();
        v.sort_by_key(|a| (status_rank(a), std::cmp::Reverse(a.severity), a.starts_at.clone()));
        v
    }

    fn connections_len(&self) -> usize {
        self.data.as_ref().and_then(|d| d.connections.as_ref()).and_then(|(_, f)| f.ok()).map_or(0, |c| c.len())
    }

    fn rows(&self) -> usize {
        match self.view {
            View::Processes | View::Summary | View::Predictions => self.processes().len(),
            View::Alerts => self.alerts().len(),
            View::Connections => self.connections_len(),
        }
    }

    fn row_mut(&mut self) -> &mut usize {
        match self.view {
            View::Alerts => &mut self.alert_row,
            View::Connections => &mut self.conn_row,
            _ => &mut self.process_row,
        }
    }

    fn clamp(&mut self) {
        for (view, len) in [
            (View::Processes, self.processes().len()),
            (View::Alerts, self.alerts().len()),
            (View::Connections, self.connections_len()),
        ] {
            let saved = self.view;
            self.view = view;
            let r = self.row_mut();
            *r = (*r).min(len.saturating_sub(1));
            self.view = saved;
        }
    }

    fn move_by(&mut self, delta: isize) {
        let len = self.rows();
        let r = self.row_mut();
        *r = (*r as isize + delta).clamp(0, len.saturating_sub(1) as isize) as usize;
    }

    fn switch(&mut self, v: View) -> Action {
        self.view = v;
        if v == View::Connections && self.opened_pid.is_none() {
            return self.open_selected();
        }
        Action::None
    }

    fn open_selected(&mut self) -> Action {
        match self.processes().get(self.process_row).map(|p| p.pid) {
            Some(pid) => {
                if self.opened_pid != Some(pid) {
                    self.conn_row = 0;
                }
                self.opened_pid = Some(pid);
                self.view = View::Connections;
                Action::Refresh
            }
            None => {
                self.message = Some("no process to open".into());
                Action::None
            }
        }
    }

    pub fn key(&mut self, k: KeyEvent) -> Action {
        self.message = None;
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        if self.help {
            self.help = false;
            return Action::None;
        }
        match k.code {
            KeyCode::Char('q') => Action::Quit,
            KeyCode::Esc if self.view == View::Connections => self.switch(View::Processes),
            KeyCode::Esc => Action::Quit,
            KeyCode::Char('?') | KeyCode::Char('h') => {
                self.help = true;
                Action::None
            }
            KeyCode::Char('r') => Action::Refresh,
            KeyCode::Char(c @ '1'..='5') => self.switch(View::ALL[(c as u8 - b'1') as usize]),
            KeyCode::Char('s') => self.switch(View::Summary),
            KeyCode::Char('p') => self.switch(View::Processes),
            KeyCode::Char('c') => self.switch(View::Connections),
            KeyCode::Char('a') => self.switch(View::Alerts),
            KeyCode::Char('f') => self.switch(View::Predictions),
            KeyCode::Tab | KeyCode::BackTab => {
                let i = View::ALL.iter().position(|v| *v == self.view).unwrap_or(0);
                let n = View::ALL.len();
                let next = if k.code == KeyCode::Tab { (i + 1) % n } else { (i + n - 1) % n };
                self.switch(View::ALL[next])
            }
            KeyCode::Up | KeyCode::Char('k') => {
                self.move_by(-1);
                Action::None
            }
            KeyCode::Down | KeyCode::Char('j') => {
                self.move_by(1);
                Action::None
            }
            KeyCode::PageUp => {
                self.move_by(-10);
                Action::None
            }
            KeyCode::PageDown => {
                self.move_by(10);
                Action::None
            }
            KeyCode::Home => {
                *self.row_mut() = 0;
                Action::None
            }
            KeyCode::Enter if matches!(self.view, View::Processes | View::Summary) => self.open_selected(),
            KeyCode::Enter | KeyCode::Char('A') if self.view == View::Alerts => self.ack_selected(),
            _ => Action::None,
        }
    }

    fn ack_selected(&mut self) -> Action {
        let Some(a) = self.alerts().get(self.alert_row).map(|a| (*a).clone()) else {
            self.message = Some("no alert selected".into());
            return Action::None;
        };
        if a.acknowledged {
            self.message = Some(format!("{} is already acknowledged", a.fingerprint));
            return Action::None;
        }
        if !self.can_ack {
            self.message = Some("cannot acknowledge: no API token (run as root on the agent's host, or --token-file)".into());
            return Action::None;
        }
        self.message = Some(format!("acknowledging {} …", a.fingerprint));
        Action::Ack(a.fingerprint)
    }

    /// Result of an acknowledgement.
    pub fn acked(&mut self, fingerprint: &str, r: Result<(), String>) {
        self.message = Some(match r {
            Ok(()) => format!("acknowledged {fingerprint}"),
            Err(e) => e,
        });
    }
}

fn status_rank(a: &Alert) -> u8 {
    use crate::alert::Status;
    match a.status {
        Status::Firing => 0,
        Status::Pending => 1,
        Status::Resolved => 2,
    }
}
