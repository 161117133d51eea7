//! Notifications end to end: a real `ws` server, 25 connections from one client with a quota of
//! 20 fire `ClientConnectionQuota` within two intervals at a webhook receiver (a separate
//! python process) AND a real Alertmanager; closing 6 resolves it at both. Then, with the
//! receiver down, the alert fires and resolves again and a manual alert is raised; the agent is
//! killed with SIGKILL, restarted, the receiver comes back: every notice arrives, in order.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Result;
use serde_json::Value;
use wsguard_integration::{
    http_get_json, require_root,
    webhook::{free_port, wait, wait_port, Proc, Receiver},
    wsguard, Agent, RawClient, Server,
};

const INTERVAL: Duration = Duration::from_secs(1);
const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

fn start_alertmanager(dir: &Path) -> Result<(Proc, u16)> {
    std::fs::write(dir.join("am.yml"), "route:\n  receiver: \"null\"\nreceivers:\n  - name: \"null\"\n")?;
    std::fs::create_dir_all(dir.join("am-data"))?;
    let port = free_port()?;
    let child = Command::new(ALERTMANAGER)
        .arg(format!("--config.file={}", dir.join("am.yml").display()))
        .arg(format!("--storage.path={}", dir.join("am-data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let p = Proc(child);
    wait_port(port)?;
    Ok((p, port))
}

fn am_quota(am: u16, pid: u32) -> Option<Value> {
    let alerts = http_get_json(&format!("http://127.0.0.1:{am}/api/v2/alerts")).ok()?;
    alerts
        .as_array()?
        .iter()
        .find(|a| {
            a["labels"]["alertname"] == "ClientConnectionQuota" && a["labels"]["pid"].as_str() == Some(pid.to_string().as_str())
        })
        .cloned()
}

#[test]
fn quota_alert_reaches_webhook_and_alertmanager_and_survives_kill_9() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    if !Path::new(ALERTMANAGER).exists() {
        wsguard_integration::skip(&format!("{ALERTMANAGER} not installed (Debian package prometheus-alertmanager)"));
        return Ok(());
    }
    let tmp = std::env::temp_dir().join(format!("wsguard-it-notify-recv-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let (_am, am_port) = start_alertmanager(&tmp)?;
    let mut rx = Receiver::new(free_port()?, tmp.join("webhook.jsonl"));
    rx.up()?;
    let server = Server::node(&[])?;
    let notify = format!(
        "[limits]\nper_client_connections = 20\n\
         [notify]\ngroup_wait = \"0s\"\ngroup_interval = \"0s\"\n\
         [notify.delivery]\nretry_initial = \"100ms\"\nretry_max = \"1s\"\nbreaker_open = \"1s\"\n\
         [[notify.channels]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{}/hook\"\n\
         [[notify.channels]]\nname = \"am\"\ntype = \"alertmanager\"\nurl = \"http://127.0.0.1:{am_port}\"\nresend_interval = \"5s\"\n",
        rx.port
    );
    let mut agent = Agent::start_with("notify", &notify)?;
    let cfg = std::fs::read_to_string(&agent.config)?.replace("interval = \"500ms\"", "interval = \"1s\"");
    std::fs::write(&agent.config, cfg)?;
    agent.stop(libc::SIGTERM);
    agent.spawn(true)?;

    // 25 connections from one client: firing at both receivers within two intervals.
    let mut clients = (0..25).map(|_| RawClient::connect(server.port)).collect::<Result<Vec<_>>>()?;
    let connected = Instant::now();
    let quota = ("ClientConnectionQuota".to_string(), "firing".to_string());
    wait(4 * INTERVAL, "firing at the webhook", || rx.seen().contains(&quota))?;
    let hook_took = connected.elapsed();
    wait(4 * INTERVAL, "firing in Alertmanager", || am_quota(am_port, server.pid).is_some())?;
    let am_took = connected.elapsed();
    eprintln!("firing: webhook after {hook_took:?}, Alertmanager after {am_took:?}");
    let limit = 2 * INTERVAL + Duration::from_millis(500);
    assert!(hook_took <= limit && am_took <= limit, "webhook after {hook_took:?}, Alertmanager after {am_took:?}");
    let rec = &rx.records()[0];
    assert_eq!(rec["body"]["version"], "4");
    assert_eq!(rec["id"], rec["body"]["notificationId"]);
    let a = &rec["body"]["alerts"][0];
    assert_eq!((a["labels"]["client"].as_str(), a["labels"]["comm"].as_str()), (Some("127.0.0.1"), Some("node")));
    let shown = am_quota(am_port, server.pid).unwrap();
    assert_eq!(shown["fingerprint"], a["fingerprint"], "Alertmanager computes the same fingerprint");
    assert_eq!(shown["status"]["state"], "active");

    // Close 6: resolved at both.
    for c in clients.drain(..6) {
        c.fin()?;
    }
    let resolved = ("ClientConnectionQuota".to_string(), "resolved".to_string());
    wait(4 * INTERVAL + Duration::from_secs(1), "resolved at the webhook", || rx.seen().contains(&resolved))?;
    wait(4 * INTERVAL + Duration::from_secs(1), "gone from Alertmanager", || am_quota(am_port, server.pid).is_none())?;
    assert_eq!(rx.seen(), [quota.clone(), resolved.clone()]);

    // Receiver down; fire again, resolve again, raise a manual alert: three notices wait.
    rx.down();
    clients.extend((0..6).map(|_| RawClient::connect(server.port)).collect::<Result<Vec<_>>>()?);
    wait(4 * INTERVAL, "second firing in Alertmanager", || am_quota(am_port, server.pid).is_some())?;
    for c in clients.drain(..6) {
        c.fin()?;
    }
    wait(4 * INTERVAL + Duration::from_secs(1), "second resolve in Alertmanager", || am_quota(am_port, server.pid).is_none())?;
    let token = agent.dir.join("state/api-token");
    let (_, err, code) =
        wsguard(&["alerts", "fire", "-m", "manual while down", "--api", &agent.api, "--token-file", token.to_str().unwrap()])?;
    assert_eq!(code, 0, "{err}");
    wait(Duration::from_secs(5), "three notices pending for the webhook", || {
        agent.channel_stats("hook").is_ok_and(|s| s["pending"] == 3 && s["failed"].as_u64().unwrap_or(0) > 0)
    })?;

    eprintln!("before kill -9: {}", agent.channel_stats("hook")?);
    // kill -9 mid-retry, restart, then the receiver returns: everything, in order, once.
    agent.stop(libc::SIGKILL);
    agent.spawn(false)?;
    assert_eq!(agent.channel_stats("hook")?["pending"], 3, "the outbox survived kill -9");
    rx.up()?;
    let want = [quota.clone(), resolved.clone(), quota, resolved, ("ManualAlert".into(), "firing".into())];
    wait(Duration::from_secs(15), "all five notices at the webhook", || rx.seen().len() >= want.len())?;
    std::thread::sleep(INTERVAL);
    assert_eq!(rx.seen(), want, "every notice once, in order");
    assert_eq!(rx.ids().len(), 5, "distinct notification ids");
    let st = agent.channel_stats("hook")?;
    assert_eq!((st["pending"].as_u64(), st["dropped"].as_u64()), (Some(0), Some(0)), "{st:#}");
    agent.stop(libc::SIGTERM);
    drop(rx);
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}
