//! Alerts end to end against a real `ws` server: a client over its connection quota fires
//! `ClientConnectionQuota` within two intervals, seen through `wsguard alerts list --json`;
//! changes need the API token; ack and the alert survive `kill -9` without a second firing;
//! closing connections resolves it; manual alerts and silences from the CLI.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::Value;
use wsguard_integration::{require_root, wsguard, Agent, RawClient, Server};

const INTERVAL: Duration = Duration::from_secs(1);

fn list(agent: &Agent) -> Result<Vec<Value>> {
    let (out, err, code) = wsguard(&["alerts", "list", "--json", "--api", &agent.api])?;
    if code != 0 {
        bail!("alerts list failed ({code}): {err}");
    }
    Ok(serde_json::from_str::<Value>(&out)?.as_array().cloned().unwrap_or_default())
}

fn quota_alert(agent: &Agent, pid: u32) -> Result<Option<Value>> {
    Ok(list(agent)?.into_iter().find(|a| {
        a["labels"]["alertname"] == "ClientConnectionQuota" && a["labels"]["pid"].as_str() == Some(pid.to_string().as_str())
    }))
}

/// Poll until `pred` holds for the quota alert; returns it and how long it took.
fn wait_quota(agent: &Agent, pid: u32, within: Duration, pred: impl Fn(&Value) -> bool) -> Result<(Value, Duration)> {
    let t0 = Instant::now();
    loop {
        if let Some(a) = quota_alert(agent, pid)? {
            if pred(&a) {
                return Ok((a, t0.elapsed()));
            }
        }
        if t0.elapsed() > within {
            bail!("quota alert not as expected within {within:?}: {:#?}", quota_alert(agent, pid)?);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn post(url: &str, token: Option<&str>, body: &str) -> Result<(u16, String)> {
    let mut args =
        vec!["-s", "-o", "/dev/stderr", "-w", "%{http_code}", "-X", "POST", "-H", "Content-Type: application/json", "-d", body];
    let auth;
    if let Some(t) = token {
        auth = format!("Authorization: Bearer {t}");
        args.extend(["-H", &auth]);
    }
    args.push(url);
    let out = std::process::Command::new("curl").args(&args).output()?;
    Ok((String::from_utf8_lossy(&out.stdout).parse()?, String::from_utf8_lossy(&out.stderr).into()))
}

#[test]
fn client_over_quota_fires_acks_survive_restart_and_resolve() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let server = Server::node(&[])?;
    let mut agent = Agent::start_with("alerts", "[limits]\nper_client_connections = 20\n")?;
    // The test config sets a 500ms interval; this test wants 1s to make "two intervals" clear.
    let cfg = std::fs::read_to_string(&agent.config)?.replace("interval = \"500ms\"", "interval = \"1s\"");
    std::fs::write(&agent.config, cfg)?;
    agent.stop(libc::SIGTERM);
    agent.spawn(true)?;

    let mut clients = (0..25).map(|_| RawClient::connect(server.port)).collect::<Result<Vec<_>>>()?;
    let connected = Instant::now();
    let (a, _) = wait_quota(&agent, server.pid, 4 * INTERVAL, |a| a["status"] == "firing")?;
    let took = connected.elapsed();
    assert!(took <= 2 * INTERVAL + Duration::from_millis(300), "fired after {took:?}, more than two intervals");
    assert_eq!(a["severity"], "critical");
    assert_eq!(a["labels"]["client"], "127.0.0.1");
    assert_eq!(a["labels"]["comm"], "node");
    assert_eq!(a["labels"]["listen_port"], server.port.to_string());
    assert_eq!(a["value"], 25.0);
    assert!(a["starts_at"].as_str().is_some_and(|s| s.ends_with('Z')), "{a:#}");
    let fp = a["fingerprint"].as_str().unwrap().to_string();

    // Changes need the token: none, or a wrong one, is refused and changes nothing.
    let ack_url = format!("{}/api/v1/alerts/{fp}/ack", agent.api);
    let (code, body) = post(&ack_url, None, r#"{"by":"mallory"}"#)?;
    assert_eq!(code, 401, "{body}");
    let (code, _) = post(&ack_url, Some("0123456789abcdef0123456789abcdef"), r#"{"by":"mallory"}"#)?;
    assert_eq!(code, 401);
    assert_eq!(quota_alert(&agent, server.pid)?.unwrap()["acknowledged"], false);

    let token_file = agent.dir.join("state/api-token");
    let tf = token_file.to_str().unwrap();
    let (_, err, code) =
        wsguard(&["alerts", "ack", &fp[..8], "--by", "oncall", "-m", "looking", "--api", &agent.api, "--token-file", tf])?;
    assert_eq!(code, 0, "{err}");
    let a = quota_alert(&agent, server.pid)?.unwrap();
    assert_eq!((a["acknowledged"].clone(), a["ack"]["by"].clone()), (Value::from(true), Value::from("oncall (token)")));

    // kill -9 and restart on the pinned probe: same alert, still acknowledged, not re-fired.
    agent.stop(libc::SIGKILL);
    agent.spawn(false)?;
    std::thread::sleep(3 * INTERVAL);
    let a = quota_alert(&agent, server.pid)?.expect("alert restored");
    assert_eq!(
        (a["status"].as_str(), a["acknowledged"].as_bool(), a["occurrences"].as_u64()),
        (Some("firing"), Some(true), Some(1))
    );
    let history: Value = serde_json::from_str(&wsguard(&["alerts", "history", "--json", "--api", &agent.api])?.0)?;
    let firings = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["transition"]["fingerprint"] == fp.as_str() && e["transition"]["kind"] == "firing")
        .count();
    assert_eq!(firings, 1, "one firing in the alert history across the restart: {history:#}");

    // Close 6: 19 < 20 resolves it within two intervals.
    for c in clients.drain(..6) {
        c.fin()?;
    }
    let (a, took) = wait_quota(&agent, server.pid, 4 * INTERVAL, |a| a["status"] == "resolved")?;
    assert!(took <= 2 * INTERVAL + Duration::from_millis(300), "resolved after {took:?}");
    assert_eq!(a["acknowledged"], false, "an ack ends with its episode");
    assert!(a["ends_at"].is_string());
    Ok(())
}

#[test]
fn manual_alerts_and_silences_from_the_cli() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let agent = Agent::start("alerts-manual")?;
    let token_file = agent.dir.join("state/api-token");
    let tf = token_file.to_str().unwrap();
    let api = agent.api.as_str();
    // Without a token file the CLI says what it needs and changes nothing.
    let (_, err, code) = wsguard(&["alerts", "fire", "-m", "x", "--api", api, "--token-file", "/nonexistent/token"])?;
    assert_eq!(code, 2);
    assert!(err.contains("token"), "{err}");
    // (Other processes on the host may have alerts of their own; only manual ones matter here.)
    assert!(!list(&agent)?.iter().any(|a| a["manual"] == true));

    let (out, err, code) = wsguard(&[
        "alerts",
        "fire",
        "--severity",
        "critical",
        "-m",
        "disk on fire",
        "-l",
        "team=storage",
        "--api",
        api,
        "--token-file",
        tf,
    ])?;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("fired "), "{out}");
    let all = list(&agent)?;
    let m = all.iter().find(|a| a["labels"]["alertname"] == "ManualAlert").expect("manual alert listed");
    assert_eq!(
        (m["status"].as_str(), m["severity"].as_str(), m["manual"].as_bool()),
        (Some("firing"), Some("critical"), Some(true))
    );
    assert_eq!(m["annotations"]["summary"], "disk on fire");
    let fp = m["fingerprint"].as_str().unwrap().to_string();

    let (out, err, code) = wsguard(&[
        "alerts",
        "silence",
        "team=storage",
        "--duration",
        "1h",
        "-m",
        "maintenance",
        "--api",
        api,
        "--token-file",
        tf,
    ])?;
    assert_eq!(code, 0, "{err}");
    let id = out.split_whitespace().nth(1).unwrap().to_string();
    let (out, _, _) = wsguard(&["alerts", "show", &fp, "--json", "--api", api])?;
    let shown: Value = serde_json::from_str(&out)?;
    assert_eq!(shown["silenced"], true);
    assert_eq!(shown["silenced_by"][0], id.as_str());
    // Bad matcher: a clear error, exit 2.
    let (_, err, code) = wsguard(&["alerts", "silence", "team=~(", "--api", api, "--token-file", tf])?;
    assert_eq!(code, 2);
    assert!(err.contains("regex"), "{err}");
    let (_, err, code) = wsguard(&["alerts", "unsilence", &id, "--api", api, "--token-file", tf])?;
    assert_eq!(code, 0, "{err}");
    let (out, _, _) = wsguard(&["alerts", "stats", "--json", "--api", api])?;
    let stats: Value = serde_json::from_str(&out)?;
    assert!(stats["firing"].as_u64() >= Some(1), "{stats:#}");
    assert_eq!(stats["silences"].as_u64(), Some(0));
    assert!(stats["store_error"].is_null(), "{stats:#}");

    let (_, err, code) = wsguard(&["alerts", "resolve", &fp, "--api", api, "--token-file", tf])?;
    assert_eq!(code, 0, "{err}");
    let m = list(&agent)?.into_iter().find(|a| a["fingerprint"] == fp.as_str()).unwrap();
    assert_eq!(m["status"], "resolved");
    // The token file was created private.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&token_file)?.permissions().mode() & 0o777, 0o600);
    assert!(!agent.log_text().contains(std::fs::read_to_string(&token_file)?.trim()), "token in the log");
    Ok(())
}
