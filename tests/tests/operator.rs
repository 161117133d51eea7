//! What an operator relies on when the agent runs on a production host (issue 18): secrets on
//! a watched server's command line never served or stored, state files private whatever the
//! umask, logs without colour codes in files and as JSON on request.

use std::{os::unix::fs::PermissionsExt, path::Path};

use anyhow::Result;
use wsguard_integration::{http_get, require_root, Agent, RawClient, Server};

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).map(|m| m.permissions().mode() & 0o777).unwrap_or(0)
}

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn secrets_state_files_and_logs() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    // A permissive umask, as outside systemd: the agent must not depend on it.
    // SAFETY: no preconditions; the agent child inherits it.
    unsafe { libc::umask(0o022) };
    let secrets = ["sk_live_9f8e7d6c", "hunter2pw", "s3cr3tPW", "tok_abcdef"];
    let server = Server::node(&[
        "--",
        &format!("--api-key={}", secrets[0]),
        "--password",
        secrets[1],
        &format!("postgres://app:{}@db:5432/x", secrets[2]),
        &format!("TOKEN={}", secrets[3]),
        "--workers",
        "4",
    ])?;
    let mut agent = Agent::start("operator")?;
    // A process is listed once the probe has seen it accept.
    let _client = RawClient::connect(server.port)?;
    agent.wait_ws(server.pid, "one open connection", |w| w["connections_opened"] == 1)?;
    let p = agent.process(server.pid)?.expect("the server is listed");
    let shown = p["cmdline"].as_str().unwrap_or_default().to_string();
    assert!(shown.contains("--api-key=<redacted>") && shown.contains("--password <redacted>"), "{shown}");
    assert!(shown.contains("postgres://<redacted>@db:5432/x") && shown.contains("--workers 4"), "{shown}");
    // Two more intervals, so history, alerts and logs have seen the process.
    agent.fresh_snapshot()?;
    agent.fresh_snapshot()?;
    let mut all = agent.log_text();
    for path in ["/api/v1/snapshot", "/api/v1/history?since=1h"] {
        all.push_str(&agent.get(path)?.to_string());
    }
    all.push_str(&http_get(&format!("{}/metrics", agent.api))?.1);
    let state = agent.dir.join("state");
    for f in files(&state) {
        all.push_str(&String::from_utf8_lossy(&std::fs::read(&f).unwrap_or_default()));
    }
    for s in secrets {
        assert!(!all.contains(s), "{s} leaked into the API, metrics, log or state_dir");
    }

    // Every file under state_dir 0600 (the socket keeps its own mode), the directory 0700.
    assert_eq!(mode(&state), 0o700, "state_dir");
    let listed: Vec<String> = files(&state).iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for want in ["history.sqlite", "alerts.sqlite", "preexisting.json", "api-token"] {
        assert!(listed.iter().any(|f| f == want), "{want} missing in {listed:?}");
    }
    for f in files(&state) {
        let m = std::fs::symlink_metadata(&f)?;
        if m.file_type().is_dir() {
            assert_eq!(mode(&f), 0o700, "{}", f.display());
        } else if !std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) {
            assert_eq!(mode(&f), 0o600, "{}", f.display());
        }
    }

    // Logs to a file: plain text, no colour codes.
    let text = agent.log_text();
    assert!(text.contains(" INFO ") && !text.contains('\u{1b}'), "ANSI codes or no INFO line in a file log:\n{text}");
    // WSGUARD_LOG_FORMAT=json: every new line is one JSON object with level and message.
    agent.stop(libc::SIGTERM);
    let before = agent.log_text().len();
    agent.env.push(("WSGUARD_LOG_FORMAT".into(), "json".into()));
    agent.spawn(false)?;
    agent.fresh_snapshot()?;
    let new = agent.log_text()[before..].to_string();
    let lines: Vec<&str> = new.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log lines after the restart");
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["message"].is_string() && v["timestamp"].is_string(), "{l}");
    }
    Ok(())
}
