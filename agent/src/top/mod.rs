//! `wsguard top`: a live terminal dashboard over the running agent's HTTP API.
//!
//! Split so that only `run` touches the terminal: `fetch` reads the API, `app` holds state and
//! maps keys to actions, `render` draws a state (pure; tested with ratatui's `TestBackend`,
//! which also renders `--once`).

pub mod app;
pub mod fetch;
pub mod fmt;
pub mod render;
#[cfg(test)]
mod tests;

use std::time::Duration;

use anyhow::Context;
use ratatui::{
    backend::TestBackend,
    crossterm::event::{self, Event as TermEvent, KeyEventKind},
    Terminal,
};
use tokio::sync::mpsc;

use app::{Action, App, View};
use fetch::{Api, Data};

pub struct Options {
    pub api: String,
    pub interval: Duration,
    pub view: View,
    /// Print one frame as text instead of running interactively.
    pub once: bool,
    pub width: u16,
    pub height: u16,
    /// Process whose connections the Connections view shows (default: the busiest).
    pub pid: Option<u32>,
    pub token: Option<String>,
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    let api = Api::new(&opts.api, opts.token.clone())?;
    let mut app = App::new(api.base(), opts.interval, opts.view, api.can_ack());
    if opts.once {
        return once(&api, &mut app, &opts).await;
    }
    interactive(api, app, opts.pid).await
}

/// Render one frame to stdout. Exit status 2 when the agent cannot be reached (the frame,
/// the "unreachable" screen, is printed all the same).
async fn once(api: &Api, app: &mut App, opts: &Options) -> anyhow::Result<()> {
    let first = api.fetch(None).await;
    let reachable = first.is_ok();
    app.update(first);
    if let Some(secs) = app.prefill_secs() {
        if let Ok(earlier) = api.recent(secs).await {
            app.prefill(&earlier);
        }
    }
    if reachable && opts.view == View::Connections {
        app.opened_pid = opts.pid.or_else(|| app.processes().first().map(|p| p.pid));
        if app.opened_pid.is_some() {
            app.update(api.fetch(app.opened_pid).await);
        }
    }
    print!("{}", dump(app, opts.width, opts.height));
    if !reachable {
        anyhow::bail!("agent unreachable at {}", api.base());
    }
    Ok(())
}

/// The frame `app` draws at `width`×`height`, as text.
pub fn dump(app: &App, width: u16, height: u16) -> String {
    let mut term = Terminal::new(TestBackend::new(width, height)).expect("test backend");
    term.draw(|f| render::render(f, app)).expect("test backend draws");
    render::to_text(term.backend().buffer())
}

enum Event {
    Key(event::KeyEvent),
    Redraw,
    Fetched(Box<Result<Data, String>>),
    Acked(String, Result<(), String>),
    History(Vec<crate::model::snapshot::Snapshot>),
}

async fn interactive(api: Api, mut app: App, pid: Option<u32>) -> anyhow::Result<()> {
    app.opened_pid = pid;
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        anyhow::bail!("stdout is not a terminal: use `wsguard top --once` for a text frame");
    }
    let mut terminal = ratatui::try_init().context("cannot set up the terminal")?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let input = {
        let (tx, stop) = (tx.clone(), stop.clone());
        std::thread::spawn(move || read_terminal(tx, stop))
    };
    let result = async {
        let mut tick = tokio::time::interval(app.interval);
        let mut prefilled = false;
        loop {
            terminal.draw(|f| render::render(f, &app))?;
            let ev = tokio::select! {
                _ = tick.tick() => { spawn_fetch(&api, app.opened_pid, &tx); continue; }
                ev = rx.recv() => ev,
            };
            match ev {
                Some(Event::Key(k)) => match app.key(k) {
                    Action::Quit => return Ok(()),
                    Action::Refresh => spawn_fetch(&api, app.opened_pid, &tx),
                    Action::Ack(fp) => {
                        let (api, tx) = (api.clone(), tx.clone());
                        let by = std::env::var("USER").unwrap_or_else(|_| "wsguard-top".into());
                        tokio::spawn(async move {
                            let r = api.ack(&fp, &by).await;
                            let _ = tx.send(Event::Acked(fp, r));
                        });
                    }
                    Action::None => {}
                },
                Some(Event::Fetched(r)) => {
                    app.update(*r);
                    if let (Some(secs), false) = (app.prefill_secs(), prefilled) {
                        prefilled = true;
                        let (api, tx) = (api.clone(), tx.clone());
                        tokio::spawn(async move {
                            if let Ok(list) = api.recent(secs).await {
                                let _ = tx.send(Event::History(list));
                            }
                        });
                    }
                }
                Some(Event::History(list)) => app.prefill(&list),
                Some(Event::Acked(fp, r)) => {
                    let ok = r.is_ok();
                    app.acked(&fp, r);
                    if ok {
                        spawn_fetch(&api, app.opened_pid, &tx);
                    }
                }
                Some(Event::Redraw) => {}
                None => return Ok(()),
            }
        }
    }
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    ratatui::try_restore().context("cannot restore the terminal")?;
    let _ = input.join();
    result
}

fn spawn_fetch(api: &Api, pid: Option<u32>, tx: &mpsc::UnboundedSender<Event>) {
    let (api, tx) = (api.clone(), tx.clone());
    tokio::spawn(async move {
        let _ = tx.send(Event::Fetched(Box::new(api.fetch(pid).await)));
    });
}

/// Terminal input on a plain thread (crossterm's reads block); polls so it notices `stop`.
fn read_terminal(tx: mpsc::UnboundedSender<Event>, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        match event::poll(Duration::from_millis(200)) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(_) => return,
        }
        let ev = match event::read() {
            Ok(TermEvent::Key(k)) if k.kind != KeyEventKind::Release => Event::Key(k),
            Ok(TermEvent::Resize(..)) => Event::Redraw,
            Ok(_) => continue,
            Err(_) => return,
        };
        if tx.send(ev).is_err() {
            return;
        }
    }
}
