//! SIGTERM: what a stopping agent flushes (`run.rs`, `Notifier::flush`, `docs/notifications.md`).
//!
//! - Notices waiting for a webhook receiver that was down (backoff running, breaker open for a
//!   minute) go out during the stop when the receiver is back just before the SIGTERM, and so
//!   does an alert a route still holds in its `group_wait`; the agent exits 0 within the flush
//!   budget; after a restart nothing is pending and nothing arrives twice; an acknowledgement
//!   and the last snapshots before the stop are on disk.
//! - With a receiver that accepts connections but never answers, the agent still exits within
//!   the budget, the notices stay in the outbox (same `pending` after a restart) and arrive
//!   once each, in order, when a working receiver takes the port.

use std::{net::TcpListener, time::Duration};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use wsguard_integration::{
    require_root,
    webhook::{free_port, wait, Receiver},
    wsguard, Agent,
};

/// `NOTIFY_FLUSH` in run.rs.
const FLUSH: Duration = Duration::from_secs(5);
/// Process exit after the flush (stores, runtime, and in the socket mode detaching more links:
/// cgroup sock_ops, four tracepoints, the OpenSSL uprobes) on a busy 2-core machine. The bound
/// tells the flush budget from the request timeout (30 s), not a speed target: a fresh-clone run
/// beside a VM matrix measured 7.02 s against a 7 s bound.
const MARGIN: Duration = Duration::from_secs(3);

/// One webhook channel. Alerts labelled `test=shutdown` go out at once; `test=held` wait an
/// hour in their group (only a stop closes that window). Retries are quick; `breaker` is
/// `breaker_threshold = N\nbreaker_open = "…"`.
fn config(port: u16, timeout: &str, breaker: &str) -> String {
    format!(
        "[notify]\ngroup_wait = \"0s\"\ngroup_interval = \"0s\"\n\
         [notify.delivery]\nretry_initial = \"100ms\"\nretry_max = \"1s\"\n{breaker}\ntimeout = \"{timeout}\"\n\
         [[notify.channels]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{port}/hook\"\n\
         [[notify.routes]]\nmatchers = [\"test=shutdown\"]\nchannels = [\"hook\"]\n\
         [[notify.routes]]\nmatchers = [\"test=held\"]\nchannels = [\"hook\"]\ngroup_wait = \"1h\"\n"
    )
}

fn token(agent: &Agent) -> String {
    agent.dir.join("state/api-token").display().to_string()
}

/// A manual alert named `name` with label `test=<test>`; its fingerprint.
fn fire(agent: &Agent, name: &str, test: &str) -> Result<String> {
    let (_, err, code) = wsguard(&[
        "alerts",
        "fire",
        "-m",
        name,
        "-l",
        &format!("alertname={name}"),
        "-l",
        &format!("test={test}"),
        "--api",
        &agent.api,
        "--token-file",
        &token(agent),
    ])?;
    if code != 0 {
        bail!("alerts fire: {err}");
    }
    alert(agent, name)?.map(|a| a["fingerprint"].as_str().unwrap_or_default().to_string()).context("fired alert not listed")
}

fn alert(agent: &Agent, name: &str) -> Result<Option<Value>> {
    let list = agent.get("/api/v1/alerts")?;
    Ok(list.as_array().and_then(|l| l.iter().find(|a| a["labels"]["alertname"] == name).cloned()))
}

fn firing(names: &[&str]) -> Vec<(String, String)> {
    names.iter().map(|n| (n.to_string(), "firing".to_string())).collect()
}

/// Timestamps of the snapshots in `wsguard history export` output (JSON lines).
fn timestamps(jsonl: &str) -> Vec<String> {
    jsonl
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|s| s["timestamp"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn sigterm_delivers_to_a_receiver_back_from_an_outage_and_keeps_the_state() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let tmp = std::env::temp_dir().join(format!("wsguard-it-shutdown-a-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let mut rx = Receiver::new(free_port()?, tmp.join("webhook.jsonl"));
    // Two failures open the breaker for a minute, longer than this test: only the stop's own
    // attempt can deliver before the restart.
    let mut agent = Agent::start_with("shutdown-a", &config(rx.port, "10s", "breaker_threshold = 2\nbreaker_open = \"60s\""))?;

    // Receiver down: three notices wait behind an open breaker; a fourth alert is held by its
    // route's hour-long group_wait.
    let m1 = fire(&agent, "M1", "shutdown")?;
    fire(&agent, "M2", "shutdown")?;
    fire(&agent, "M3", "shutdown")?;
    wait(Duration::from_secs(10), "3 pending behind an open breaker", || {
        agent.channel_stats("hook").is_ok_and(|h| h["pending"] == 3 && h["breaker"] == "open")
    })?;
    fire(&agent, "H1", "held")?;
    let tf = token(&agent);
    let (_, err, code) =
        wsguard(&["alerts", "ack", &m1, "-m", "on it", "--by", "tester", "--api", &agent.api, "--token-file", &tf])?;
    assert_eq!(code, 0, "{err}");
    let before = agent.channel_stats("hook")?;
    eprintln!("before SIGTERM: {before}");
    assert_eq!((before["pending"].as_u64(), before["sent"].as_u64()), (Some(3), Some(0)), "{before:#}");
    let last_snapshot = agent.fresh_snapshot()?["timestamp"].as_str().unwrap_or_default().to_string();

    // The receiver is back; SIGTERM at once (the breaker would wait another minute).
    rx.up()?;
    let (status, took) = agent.stop_timed(libc::SIGTERM)?;
    eprintln!("exit {status} {took:?} after SIGTERM");
    assert!(status.success(), "exit status {status}: {}", agent.log_text());
    assert!(took <= FLUSH + MARGIN, "stopping took {took:?}");
    // The agent is gone: whatever the receiver has, it got during the stop.
    assert_eq!(rx.seen(), firing(&["M1", "M2", "M3", "H1"]), "delivered during the stop, in order");
    assert_eq!(rx.ids().len(), 4);

    // On disk with the agent down: the history store has the last snapshot seen before the stop.
    let state = agent.dir.join("state");
    let (out, err, code) = wsguard(&["history", "export", "--since", "10m", "--state-dir", state.to_str().unwrap()])?;
    assert_eq!(code, 0, "{err}");
    let stored = timestamps(&out);
    let n = stored.len();
    assert!(stored.contains(&last_snapshot), "{last_snapshot} not among {n} stored snapshots (last {:?})", stored.last());

    // Restart: nothing pending, nothing re-sent, the ack and the history are back.
    agent.spawn(false)?;
    let after = agent.channel_stats("hook")?;
    assert_eq!((after["pending"].as_u64(), after["dropped"].as_u64()), (Some(0), Some(0)), "{after:#}");
    let m1 = alert(&agent, "M1")?.context("M1 after restart")?;
    assert_eq!((m1["status"].as_str(), m1["acknowledged"].as_bool()), (Some("firing"), Some(true)), "{m1:#}");
    assert_eq!(m1["ack"]["by"], "tester (token)");
    let history = agent.get("/api/v1/history?since=10m")?;
    let served: Vec<&str> =
        history.as_array().map(|l| l.iter().filter_map(|s| s["timestamp"].as_str()).collect()).unwrap_or_default();
    assert!(served.contains(&last_snapshot.as_str()), "restarted agent does not serve {last_snapshot}");
    // A few intervals: the restarted agent knows what was notified and sends nothing again.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(rx.records().len(), 4, "nothing delivered twice: {:?}", rx.seen());
    assert_eq!(agent.channel_stats("hook")?["sent"], 0);
    agent.stop(libc::SIGTERM);
    drop(rx);
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

#[test]
fn sigterm_with_a_hung_receiver_exits_in_time_and_keeps_the_notices() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let tmp = std::env::temp_dir().join(format!("wsguard-it-shutdown-b-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    // Hung: the kernel completes connections into the backlog, nobody reads or answers. The
    // request timeout is 30 s, so only the flush budget can end the stop in time.
    let hung = TcpListener::bind("127.0.0.1:0")?;
    let port = hung.local_addr()?.port();
    let mut rx = Receiver::new(port, tmp.join("webhook.jsonl"));
    let mut agent = Agent::start_with("shutdown-b", &config(port, "30s", "breaker_threshold = 5\nbreaker_open = \"1s\""))?;
    for name in ["M1", "M2", "M3"] {
        fire(&agent, name, "shutdown")?;
    }
    let before = agent.channel_stats("hook")?;
    assert_eq!((before["pending"].as_u64(), before["sent"].as_u64()), (Some(3), Some(0)), "{before:#}");
    // Let the first attempt be in flight (connected, waiting for an answer).
    std::thread::sleep(Duration::from_millis(500));

    let (status, took) = agent.stop_timed(libc::SIGTERM)?;
    eprintln!("exit {status} {took:?} after SIGTERM with the receiver hung");
    assert!(status.success(), "exit status {status}: {}", agent.log_text());
    // Not the request timeout (30 s, twice that for the whole attempt): the flush budget.
    assert!(took <= FLUSH + MARGIN, "stopping took {took:?}");

    // Restart with the receiver still hung: the same three are pending.
    agent.spawn(false)?;
    let after = agent.channel_stats("hook")?;
    assert_eq!((after["pending"].as_u64(), after["dropped"].as_u64()), (Some(3), Some(0)), "{after:#}");
    // A working receiver takes the port (closing the hung one resets the waiting request).
    drop(hung);
    rx.up()?;
    wait(Duration::from_secs(15), "three notices at the receiver", || rx.records().len() >= 3)?;
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(rx.seen(), firing(&["M1", "M2", "M3"]), "each once, in order");
    assert_eq!(rx.ids().len(), 3);
    let st = agent.channel_stats("hook")?;
    assert_eq!((st["sent"].as_u64(), st["pending"].as_u64(), st["dropped"].as_u64()), (Some(3), Some(0), Some(0)), "{st:#}");
    agent.stop(libc::SIGTERM);
    drop(rx);
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}
