//! Commands that talk to a running agent over its HTTP API.

use std::path::Path;

use anyhow::{bail, Context};

use crate::{
    api::endpoint::{endpoint, DEFAULT_API},
    history::{Format, Store},
    model::snapshot::Snapshot,
};

/// The API a client command talks to: `--api` (or `WSGUARD_API`) when given; else the
/// `[api] listen` address of `-c FILE`, which `listen` loads when called (a wildcard address is
/// reached on loopback); else the default address. The caller loads the config: this module
/// never reads it.
pub fn api_url(
    api: Option<&str>,
    listen: impl FnOnce() -> anyhow::Result<Option<std::net::SocketAddr>>,
) -> anyhow::Result<String> {
    if let Some(a) = api {
        return Ok(a.to_string());
    }
    let Some(mut addr) = listen()? else { return Ok(DEFAULT_API.to_string()) };
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() { std::net::Ipv4Addr::LOCALHOST.into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    Ok(format!("http://{addr}"))
}

/// The token a change sends. Over TCP it is required: `token_file`, else the file the config
/// names (`configured`, called only then). Over the socket only an explicit `token_file` is
/// sent: the agent knows who we are.
pub fn change_token(
    api: &str,
    token_file: Option<&std::path::Path>,
    configured: impl FnOnce() -> anyhow::Result<std::path::PathBuf>,
) -> anyhow::Result<Option<String>> {
    let path = match (token_file, api.starts_with("unix:")) {
        (Some(p), _) => p.to_path_buf(),
        (None, true) => return Ok(None),
        (None, false) => configured()?,
    };
    let t = crate::api::token::load(&path)
        .context("changes need the agent's API token (`--token-file`, or run as root; or `--api unix:…` as root)")?;
    Ok(Some(t.as_str().to_string()))
}

/// The API token for `wsguard top`'s acknowledgements, found as `wsguard alerts` finds it: `--token-file`
/// (must be readable), else the config's token file (`configured`, None when the config cannot
/// be loaded) if this user can read it (root on the agent's host), else none: the dashboard is
/// then read-only and says so on Enter.
pub fn optional_token(
    file: Option<&Path>,
    configured: impl FnOnce() -> Option<std::path::PathBuf>,
) -> anyhow::Result<Option<String>> {
    if let Some(f) = file {
        let t = crate::api::token::load(f).with_context(|| format!("cannot read --token-file {}", f.display()))?;
        return Ok(Some(t.as_str().to_string()));
    }
    let Some(path) = configured() else { return Ok(None) };
    Ok(crate::api::token::load(&path).ok().map(|t| t.as_str().to_string()))
}

pub async fn get_snapshot(api: &str) -> anyhow::Result<Snapshot> {
    get_json(api, "/api/v1/snapshot").await
}

/// GET `path` of the agent at `api`.
pub async fn get(api: &str, path: &str) -> anyhow::Result<reqwest::Response> {
    let (client, base) = endpoint(api, reqwest::Client::builder())?;
    client
        .get(format!("{base}{path}"))
        .send()
        .await
        .with_context(|| format!("cannot reach the agent at {api} (is `wsguard run` running?)"))
}

async fn get_json<T: serde::de::DeserializeOwned>(api: &str, path: &str) -> anyhow::Result<T> {
    let resp = get(api, path).await.with_context(|| format!("cannot reach the agent at {api} (is `wsguard run` running?)"))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        bail!("agent answered {status}: {body}");
    }
    resp.json().await.with_context(|| format!("the agent's answer to {path} is not what this wsguard expects"))
}

/// `wsguard report`: from the API, or straight from the store in `state_dir`.
pub async fn report(api: &str, state_dir: Option<&std::path::Path>, hours: f64, format: Format) -> anyhow::Result<()> {
    if hours.is_nan() || hours <= 0.0 {
        bail!("--hours must be positive");
    }
    let secs = (hours * 3600.0) as u64;
    progress(&format!(
        "reading {hours} h of history from {}…",
        state_dir.map_or(api.to_string(), |d| d.join(crate::history::STORE_FILE).display().to_string())
    ));
    let snaps: Vec<Snapshot> = match state_dir {
        Some(dir) => {
            let path = dir.join(crate::history::STORE_FILE);
            let store =
                Store::open_read_only(&path).with_context(|| format!("cannot open the history store {}", path.display()))?;
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
            store.range(now - secs as i64, None)?
        }
        None => get_json(api, &format!("/api/v1/history?since={secs}s")).await?,
    };
    if snaps.is_empty() {
        bail!("no snapshots in the last {hours} h");
    }
    progress(&format!("summarising {} snapshots…", snaps.len()));
    print!("{}", crate::history::report(&snaps, format));
    if format != Format::Json {
        // How the forecasts (default [predict]) would have scored over this period.
        let mut p = crate::predict::Predictor::new(Default::default());
        let scores = snaps.iter().map(|s| p.observe(s).scores).last().unwrap_or_default();
        print!("\nForecast scores over the period:\n{}", crate::alert::replay::scores_text(&scores));
    }
    Ok(())
}

/// A progress line on stderr, only when a person watches it (stdout stays the data).
pub fn progress(msg: &str) {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        eprintln!("{msg}");
    }
}

/// `wsguard status`: health, totals and the busiest processes on one screen. False (exit 1)
/// when the agent or the watched workload is UNHEALTHY.
pub async fn status(api: &str, json: bool) -> anyhow::Result<bool> {
    let health: serde_json::Value = get_json_any(api, "/health/detailed").await?;
    let s = get_snapshot(api).await?;
    let overall = health["status"].as_str().unwrap_or("UNKNOWN").to_string();
    let workload = health["workload"].as_str().unwrap_or("UNKNOWN").to_string();
    let ok = overall != "UNHEALTHY" && workload != "UNHEALTHY";
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"health": health, "totals": s.totals, "sse_totals": s.sse_totals}))?
        );
        return Ok(ok);
    }
    let t = &s.totals;
    println!("wsguard {}  {}  status {overall}  workload {workload}", s.agent.version, s.timestamp);
    println!(
        "websocket: {} active, {} opened, {} closed ({} abnormal), {} failed handshakes, {} out of sync",
        t.connections_active, t.connections_opened, t.connections_closed, t.abnormal_closes, t.handshakes_failed, t.out_of_sync
    );
    let e = &s.sse_totals;
    if e.streams_opened > 0 || e.streams_active > 0 {
        println!(
            "sse: {} streams open, {} opened, {} closed, {} events, {} resumed (Last-Event-ID), {} out of sync",
            e.streams_active, e.streams_opened, e.streams_closed, e.events_sent, e.resumed_streams, e.out_of_sync
        );
    }
    if let Some(checks) = health["checks"].as_array() {
        for c in checks {
            println!(
                "  {:<10} {:<9} {:<18} {}",
                c["status"].as_str().unwrap_or(""),
                c["scope"].as_str().unwrap_or(""),
                c["name"].as_str().unwrap_or(""),
                c["message"].as_str().unwrap_or("")
            );
        }
    }
    let mut ps: Vec<_> = s.processes.iter().collect();
    ps.sort_by_key(|p| std::cmp::Reverse(p.websocket.connections_active));
    println!("{:>7} {:<16} {:>7} {:>9} {:>9} {:>7}", "PID", "COMM", "ACTIVE", "FD%", "CLIENTS", "STALLED");
    for p in ps.iter().take(10) {
        let fd = p.resources.as_ref().and_then(|r| r.fd_usage_ratio).map(|r| format!("{:.1}", r * 100.0)).unwrap_or("-".into());
        println!(
            "{:>7} {:<16} {:>7} {:>9} {:>9} {:>7}",
            p.pid, p.comm, p.websocket.connections_active, fd, p.clients.distinct, p.connections_stalled
        );
    }
    Ok(ok)
}

/// Like `get_json`, but also accepts a 503 answer that carries a JSON body (an unhealthy report).
async fn get_json_any(api: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    let resp = get(api, path).await?;
    resp.json().await.with_context(|| format!("the agent's answer to {path} is not JSON"))
}

/// `wsguard snapshot`: JSON, or a short table per process.
pub async fn snapshot(api: &str, json: bool) -> anyhow::Result<()> {
    let s = get_snapshot(api).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!(
        "{}  probe {}  events {}",
        s.timestamp,
        if s.probe.resumed { "resumed" } else { "attached" },
        s.probe.events_received
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_from_flag_config_or_default() {
        use crate::cli::listen_of;
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("w.toml");
        std::fs::write(&cfg, "[api]\nlisten = \"0.0.0.0:9797\"\n").unwrap();
        assert_eq!(api_url(None, || listen_of(Some(&cfg))).unwrap(), "http://127.0.0.1:9797");
        assert_eq!(api_url(Some("unix:/x"), || panic!("--api needs no config")).unwrap(), "unix:/x");
        assert_eq!(api_url(None, || listen_of(None)).unwrap(), DEFAULT_API);
        std::fs::write(&cfg, "[api]\nlisten = \"[::]:9798\"\n").unwrap();
        assert_eq!(api_url(None, || listen_of(Some(&cfg))).unwrap(), "http://[::1]:9798");
        assert!(api_url(None, || listen_of(Some(&dir.path().join("missing.toml")))).is_err());
    }

    #[test]
    fn change_tokens() {
        use crate::cli::token_file_of;
        let missing = || token_file_of(Some(std::path::Path::new("/nonexistent.toml")));
        // Over the socket nothing is read unless a token file is named.
        assert_eq!(change_token("unix:/x.sock", None, missing).unwrap(), None);
        assert!(change_token("unix:/x.sock", Some(std::path::Path::new("/nonexistent")), || panic!("not asked")).is_err());
        assert!(change_token("http://127.0.0.1:9", None, missing).is_err());
    }
}
