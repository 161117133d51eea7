//! Live forecast: a real `ws` server whose fd limit is lowered with prlimit, and a client that
//! leaks connections (never closes them). `PredictedFdExhaustion`, an ordinary alert of the one
//! alert engine, must fire (in `/api/v1/alerts`) before the first upgrade fails (EMFILE in the
//! server), and the lead time is printed. Two cases: test-sized windows (5/s, limit 300), and
//! the case with the shipped `[predict]` defaults (2.5/s, limit 400, 1 s snapshots) where
//! the alert must also reach a real webhook receiver at least 30 s before the first refusal.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use serde_json::Value;
use wsguard_integration::{
    require_root,
    webhook::{free_port, Receiver},
    Agent, RawClient, Server,
};

const LIMIT: u64 = 300;
const PER_SECOND: u32 = 5;

/// The firing `PredictedFdExhaustion` of `pid` in `/api/v1/alerts`.
fn fd_alert(agent: &Agent, pid: u32) -> Option<Value> {
    let pid = pid.to_string();
    agent
        .get("/api/v1/alerts")
        .ok()?
        .as_array()?
        .iter()
        .find(|a| {
            a["labels"]["alertname"] == "PredictedFdExhaustion"
                && a["labels"]["pid"].as_str() == Some(pid.as_str())
                && a["status"] == "firing"
        })
        .cloned()
}

fn fd_resource(preds: &Value, pid: u32) -> Option<Value> {
    let p = preds["processes"].as_array()?.iter().find(|p| p["pid"] == pid)?;
    p["resources"].as_array()?.iter().find(|r| r["resource"] == "fds").cloned()
}

#[test]
fn fd_exhaustion_is_forecast_before_emfile() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let server = Server::node(&[])?;
    let st = Command::new("prlimit").arg(format!("--pid={}", server.pid)).arg(format!("--nofile={LIMIT}:{LIMIT}")).status()?;
    if !st.success() {
        bail!("prlimit failed: {st}");
    }
    // Test time: 500 ms snapshots (the harness), windows of seconds, a 60 s horizon.
    let agent = Agent::start_with(
        "predict",
        "[predict]\nhorizon = \"60s\"\nshort_window = \"10s\"\nlong_window = \"30s\"\npersistence = 3\n",
    )?;
    // Processes are listed once they hold a WebSocket connection; the fd limit is re-read every
    // cycle, so the lowered limit must show.
    let mut held = vec![RawClient::connect(server.port)?];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let p = agent.get("/api/v1/predictions").ok();
        if let Some(r) = p.as_ref().and_then(|p| fd_resource(p, server.pid)) {
            if r["limit"] == LIMIT as f64 {
                eprintln!("baseline: {} of {LIMIT} fds", r["current"]);
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("no fd forecast for the server: {p:#?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    let start = Instant::now();
    let step = Duration::from_secs(1) / PER_SECOND;
    let mut next = start;
    let mut fired: Option<(f64, Value)> = None;
    let mut failed: Option<(f64, String)> = None;
    while start.elapsed() < Duration::from_secs(75) {
        let attempt = start.elapsed().as_secs_f64();
        match RawClient::connect(server.port) {
            Ok(c) => held.push(c),
            Err(e) => {
                failed = Some((attempt, format!("{e:#}")));
                break;
            }
        }
        if fired.is_none() {
            if let Some(a) = fd_alert(&agent, server.pid) {
                let f = a["forecast"].clone();
                eprintln!(
                    "t={:.1}s PredictedFdExhaustion firing ({} held): {} | eta {} [{}, {}]",
                    start.elapsed().as_secs_f64(),
                    held.len(),
                    a["annotations"]["summary"],
                    f["eta_seconds"],
                    f["eta_low_seconds"],
                    f["eta_high_seconds"]
                );
                fired = Some((start.elapsed().as_secs_f64(), f));
            }
        }
        next += step;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let Some((failed_at, why)) = failed else {
        bail!("no upgrade failed within 75 s ({} connections held)", held.len());
    };
    eprintln!("t={failed_at:.1}s first failed upgrade after {} connections: {why}", held.len());
    let Some((fired_at, r)) = fired else {
        bail!("PredictedFdExhaustion did not fire before the first failed upgrade");
    };
    assert!(fired_at < failed_at);
    let lead = failed_at - fired_at;
    let eta = r["eta_seconds"].as_f64().unwrap_or(f64::NAN);
    eprintln!(
        "LEAD TIME {lead:.1}s: forecast at t={fired_at:.1}s with ETA {eta:.1}s, first EMFILE at t={failed_at:.1}s (ETA error {:.0}%)",
        (eta - lead).abs() / lead * 100.0
    );
    // Let the agent see the exhaustion, then show the scores it keeps.
    std::thread::sleep(Duration::from_secs(2));
    let p = agent.get("/api/v1/predictions")?;
    for s in p["scores"]["rules"].as_array().into_iter().flatten() {
        eprintln!("score {s}");
    }
    let metrics = wsguard_integration_metrics(&agent)?;
    // Alert state lives in the alert engine (/api/v1/alerts, Alertmanager): no copy in /metrics.
    assert!(!metrics.contains("wsguard_prediction_alert_firing"), "{metrics}");
    assert!(metrics.contains("wsguard_prediction_eta_seconds{") || metrics.contains("wsguard_prediction_usage_ratio{"));
    drop(held);
    Ok(())
}

/// GET /metrics as text.
fn wsguard_integration_metrics(agent: &Agent) -> Result<String> {
    use std::io::{Read, Write};
    let host = agent.api.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    Ok(buf.split_once("\r\n\r\n").map(|x| x.1.to_string()).unwrap_or_default())
}

const LIVE_LIMIT: u64 = 400;
/// Connections per second of the leaking client (the case).
const LIVE_RATE: f64 = 2.5;

#[test]
fn fast_leak_with_shipped_defaults_reaches_a_webhook_30s_before_the_first_refusal() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let dir = std::env::temp_dir().join(format!("wsguard-it-predict-live-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut rx = Receiver::new(free_port()?, dir.join("webhook.jsonl"));
    rx.up()?;
    let server = Server::node(&[])?;
    let st = Command::new("prlimit")
        .arg(format!("--pid={}", server.pid))
        .arg(format!("--nofile={LIVE_LIMIT}:{LIVE_LIMIT}"))
        .status()?;
    if !st.success() {
        bail!("prlimit failed: {st}");
    }
    // Shipped defaults ([predict], [notify] pacing) except a 1 s interval; one webhook channel.
    let hook = format!("[[notify.channels]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{}\"\n", rx.url("/hook"));
    let mut agent = Agent::start_with("predict-live", &hook)?;
    let cfg = std::fs::read_to_string(&agent.config)?.replace("interval = \"500ms\"", "interval = \"1s\"");
    std::fs::write(&agent.config, cfg)?;
    agent.stop(libc::SIGTERM);
    agent.spawn(true)?;

    let mut held = vec![RawClient::connect(server.port)?];
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let p = agent.get("/api/v1/predictions").ok();
        if let Some(r) = p.as_ref().and_then(|p| fd_resource(p, server.pid)) {
            if r["limit"] == LIVE_LIMIT as f64 {
                eprintln!("baseline: {} of {LIVE_LIMIT} fds", r["current"]);
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("no fd forecast for the server: {p:#?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    let start = Instant::now();
    let step = Duration::from_secs_f64(1.0 / LIVE_RATE);
    let mut next = start;
    let mut listed: Option<(f64, Value)> = None;
    let mut notified: Option<f64> = None;
    let mut refused: Option<(f64, String)> = None;
    let fd_firing = |rx: &Receiver| rx.seen().contains(&("PredictedFdExhaustion".to_string(), "firing".to_string()));
    while start.elapsed() < Duration::from_secs(240) {
        let attempt = start.elapsed().as_secs_f64();
        match RawClient::connect(server.port) {
            Ok(c) => held.push(c),
            Err(e) => {
                refused = Some((attempt, format!("{e:#}")));
                break;
            }
        }
        let now = start.elapsed().as_secs_f64();
        if listed.is_none() {
            if let Some(a) = fd_alert(&agent, server.pid) {
                eprintln!("t={now:.1}s listed firing ({} held): {}", held.len(), a["annotations"]["summary"]);
                listed = Some((now, a));
            }
        }
        if notified.is_none() && fd_firing(&rx) {
            eprintln!("t={now:.1}s the webhook receiver has PredictedFdExhaustion firing");
            notified = Some(now);
        }
        next += step;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let Some((refused_at, why)) = refused else {
        bail!("no connection was refused within 240 s ({} held)", held.len());
    };
    eprintln!("t={refused_at:.1}s first refused connection after {} held: {why}", held.len());
    let Some((listed_at, alert)) = listed else {
        bail!("PredictedFdExhaustion never fired in /api/v1/alerts before the first refusal");
    };
    let Some(notified_at) = notified else {
        bail!("PredictedFdExhaustion never reached the webhook before the first refusal: {:#?}", rx.seen());
    };
    let eta = alert["forecast"]["eta_seconds"].as_f64().unwrap_or(f64::NAN);
    eprintln!(
        "LEAD TIME {:.1}s at the webhook ({:.1}s in /api/v1/alerts, ETA then {eta:.0}s, trigger {})",
        refused_at - notified_at,
        refused_at - listed_at,
        alert["forecast"]["trigger"]
    );
    assert_eq!(alert["forecast"]["trigger"], "forecast", "{alert:#}");
    assert!(alert["annotations"]["summary"].as_str().unwrap_or("").contains("ETA to exhaustion"), "{alert:#}");
    assert!(refused_at - notified_at >= 30.0, "webhook lead {:.1}s < 30 s", refused_at - notified_at);
    // The webhook notice carries the ETA in its summary too.
    let notice = rx
        .records()
        .iter()
        .flat_map(|r| r["body"]["alerts"].as_array().cloned().unwrap_or_default())
        .find(|a| a["labels"]["alertname"] == "PredictedFdExhaustion")
        .unwrap();
    assert!(notice["annotations"]["summary"].as_str().unwrap_or("").contains("ETA"), "{notice:#}");
    // `wsguard alerts list` shows it with the ETA.
    let (out, err, code) = wsguard_integration::wsguard(&["alerts", "list", "--api", &agent.api])?;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("PredictedFdExhaustion") && out.contains("ETA to exhaustion"), "{out}");
    drop(held);
    Ok(())
}
