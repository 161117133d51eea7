//! Commands that talk to a running agent over its HTTP API.

use anyhow::{bail, Context};

use crate::snapshot::Snapshot;

pub const DEFAULT_API: &str = "http://127.0.0.1:9595";

pub async fn get_snapshot(api: &str) -> anyhow::Result<Snapshot> {
    let url = format!("{}/api/v1/snapshot", api.trim_end_matches('/'));
    let resp = reqwest::get(&url)
        .await
        .with_context(|| format!("cannot reach the agent at {api} (is `wsguard run` running?)"))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        bail!("agent answered {status}: {body}");
    }
    resp.json().await.context("the agent's snapshot is not valid JSON")
}

/// `wsguard snapshot`: JSON, or a short table per process.
pub async fn snapshot(api: &str, json: bool) -> anyhow::Result<()> {
    let s = get_snapshot(api).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!("{}  probe {}  events {}", s.timestamp, if s.probe.resumed { "resumed" } else { "attached" }, s.probe.events_received);
    println!(
        "{:>7} {:<16} {:>6} {:>6} {:>6} {:>6} {:>6} {:>10} {:>10}",
        "PID", "COMM", "OPEN", "ACTIVE", "CLOSED", "FAILED", "ABNORM", "FRAMES_RX", "FRAMES_TX"
    );
    for p in &s.processes {
        let w = &p.websocket;
        let rx = &w.frames_received;
        let tx = &w.frames_sent;
        println!(
            "{:>7} {:<16} {:>6} {:>6} {:>6} {:>6} {:>6} {:>10} {:>10}{}",
            p.pid,
            p.comm,
            w.connections_opened,
            w.connections_active,
            w.connections_closed,
            w.handshakes_failed,
            w.abnormal_closes,
            rx.text + rx.binary + rx.continuation + rx.ping + rx.pong + rx.close,
            tx.text + tx.binary + tx.continuation + tx.ping + tx.pong + tx.close,
            if p.exited { "  (exited)" } else { "" }
        );
    }
    Ok(())
}
