//! Live forecast: a real `ws` server whose fd limit is lowered with prlimit, and a client that
//! leaks connections (opens 5 per second, never closes them). `PredictedFdExhaustion` must fire
//! before the first upgrade fails (EMFILE in the server), and the lead time is printed.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use serde_json::Value;
use wsguard_integration::{require_root, Agent, RawClient, Server};

const LIMIT: u64 = 300;
const PER_SECOND: u32 = 5;

fn fd_alert(preds: &Value, pid: u32) -> Option<Value> {
    let pid = pid.to_string();
    preds["alerts"]
        .as_array()?
        .iter()
        .find(|a| {
            a["name"] == "PredictedFdExhaustion" && a["labels"]["pid"].as_str() == Some(pid.as_str()) && a["state"] == "firing"
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
            if let Ok(p) = agent.get("/api/v1/predictions") {
                if let Some(a) = fd_alert(&p, server.pid) {
                    let r = fd_resource(&p, server.pid).unwrap_or_default();
                    eprintln!(
                        "t={:.1}s PredictedFdExhaustion firing ({} held): {} | eta {} [{}, {}]",
                        start.elapsed().as_secs_f64(),
                        held.len(),
                        a["summary"],
                        r["eta_seconds"],
                        r["eta_low_seconds"],
                        r["eta_high_seconds"]
                    );
                    fired = Some((start.elapsed().as_secs_f64(), r));
                }
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
    assert!(metrics.contains("wsguard_prediction_alert_firing{alertname=\"PredictedFdExhaustion\""), "{metrics}");
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
