//! SIGHUP reloads the agent's config: live settings change in the next snapshot, an invalid
//! file is refused (the error names key and line) and the running config stays, and settings
//! that need a restart are logged as such and left alone.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::Value;
use wsguard_integration::{require_root, Agent, RawClient, Server};

fn rewrite(agent: &Agent, from: &str, to: &str) -> Result<()> {
    let text = std::fs::read_to_string(&agent.config)?;
    assert!(text.contains(from), "{from:?} not in {text}");
    std::fs::write(&agent.config, text.replace(from, to))?;
    Ok(())
}

/// Wait until the agent's log contains `needle`.
fn wait_log(agent: &Agent, needle: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = agent.log_text();
        if let Some(line) = log.lines().find(|l| l.contains(needle)) {
            return Ok(line.to_string());
        }
        if Instant::now() > deadline {
            bail!("no {needle:?} in the agent log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn quota(agent: &Agent, pid: u32) -> Result<Value> {
    Ok(agent.process(pid)?.expect("server listed")["clients"]["quota"].clone())
}

#[test]
fn sighup_applies_limits_refuses_invalid_files_and_names_restart_keys() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let server = Server::node(&[])?;
    let mut agent = Agent::start_with("reload", "[limits]\nper_client_connections = 20\n")?;
    let _client = RawClient::connect(server.port)?;
    agent.wait_ws(server.pid, "1 active", |w| w["connections_active"] == 1)?;
    assert_eq!(quota(&agent, server.pid)?, 20);
    assert_eq!(agent.fresh_snapshot()?["agent"]["interval_seconds"], 0.5);

    // Live: the client quota and the interval.
    rewrite(&agent, "per_client_connections = 20", "per_client_connections = 5")?;
    rewrite(&agent, "interval = \"500ms\"", "interval = \"1s\"")?;
    agent.signal(libc::SIGHUP);
    let line = wait_log(&agent, "config reloaded; applied")?;
    assert!(line.contains("limits.per_client_connections: 20 → 5"), "{line}");
    assert!(line.contains("agent.interval: \"500ms\" → \"1s\""), "{line}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while quota(&agent, server.pid)? != 5 {
        assert!(Instant::now() < deadline, "quota not reloaded:\n{}", agent.log_text());
    }
    assert_eq!(agent.fresh_snapshot()?["agent"]["interval_seconds"], 1.0);

    // Invalid: refused with key and line, the agent keeps running with the previous config.
    rewrite(&agent, "per_client_connections = 5", "per_client_connections = 0")?;
    agent.signal(libc::SIGHUP);
    let line = wait_log(&agent, "reload failed")?;
    assert!(line.contains("keeping the running config") && line.contains("limits.per_client_connections"), "{line}");
    let n = std::fs::read_to_string(&agent.config)?.lines().position(|l| l.contains("per_client_connections")).unwrap() + 1;
    assert!(line.contains(&format!("(line {n})")), "{line}");
    assert!(agent.alive());
    assert_eq!(quota(&agent, server.pid)?, 5);

    // Restart-only: logged, not applied (the API keeps serving on its address).
    rewrite(&agent, "per_client_connections = 0", "per_client_connections = 5")?;
    rewrite(&agent, "[probe]\n", "[probe]\nmax_connections = 1024\n")?;
    agent.signal(libc::SIGHUP);
    let line = wait_log(&agent, "need a restart")?;
    assert!(line.contains("probe.max_connections: 65536 → 1024"), "{line}");
    assert!(agent.alive());
    assert_eq!(quota(&agent, server.pid)?, 5);
    Ok(())
}
