//! Remediation end to end (root): real agent, real `ws` servers, real alerts, real actions.
//! Connections are closed by the kernel (SOCK_DESTROY) and the clients must see exactly those
//! end; guardrails must stop actions; the audit log must say what happened.
//!
//! The agent sees every process on the host, including other test servers: every action is
//! narrowed to this test's server with a `pid` matcher, so no test acts on anything else.

use std::{
    io::Read,
    net::TcpStream,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use wsguard_integration::{enc, require_root, Agent, RawClient, Server, Split};

/// Audit rows, oldest first.
fn history(agent: &Agent) -> Result<Vec<Value>> {
    let v = agent.get("/api/v1/remediation?limit=10000")?;
    let mut rows = v["history"].as_array().context("history")?.clone();
    rows.reverse();
    Ok(rows)
}

fn events(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|r| match r["event"].as_str().unwrap_or("") {
            "skipped" => format!("skipped:{}", r["result"].as_str().unwrap_or("")),
            e => e.to_string(),
        })
        .collect()
}

fn count(rows: &[Value], event: &str) -> usize {
    rows.iter().filter(|r| r["event"] == event).count()
}

/// Poll the audit log until `pred` holds (at least a minute: other tests on a shared host can
/// make snapshots slow).
fn wait_rows(agent: &Agent, what: &str, secs: u64, pred: impl Fn(&[Value]) -> bool) -> Result<Vec<Value>> {
    let deadline = Instant::now() + Duration::from_secs(secs.max(60));
    loop {
        let rows = history(agent)?;
        if pred(&rows) {
            return Ok(rows);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}; audit: {:#?}\nagent log:\n{}", events(&rows), agent.log_text());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The `wsguard` CLI against this agent (token from its state dir).
fn cli(agent: &Agent, args: &[&str]) -> Result<String> {
    let out = Command::new(wsguard_integration::agent_bin())
        .args(args)
        .env("WSGUARD_API", &agent.api)
        .env("WSGUARD_TOKEN_FILE", agent.dir.join("state/api-token"))
        .output()?;
    if !out.status.success() {
        bail!("wsguard {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An alert of `name` on `pid` in the given status, from /api/v1/alerts.
fn alert(agent: &Agent, name: &str, pid: u32) -> Result<Option<Value>> {
    let list = agent.get("/api/v1/alerts")?;
    Ok(list
        .as_array()
        .context("alerts")?
        .iter()
        .find(|a| a["labels"]["alertname"] == name && a["labels"]["pid"] == pid.to_string().as_str())
        .cloned())
}

fn wait_alert(agent: &Agent, name: &str, pid: u32, status: &str) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(a) = alert(agent, name, pid)? {
            if a["status"] == status {
                return Ok(a);
            }
        }
        if Instant::now() > deadline {
            bail!("{name} on {pid} not {status}: {:#}", agent.get("/api/v1/alerts")?);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Poll the latest snapshot until process `pid` satisfies `pred` (other tests on a shared host
/// can make snapshots slow, so this waits longer than the harness's `wait_ws`).
fn wait_process(agent: &Agent, pid: u32, what: &str, pred: impl Fn(&Value) -> bool) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = agent.get("/api/v1/snapshot")?;
        if let Some(p) = s["processes"].as_array().and_then(|ps| ps.iter().find(|p| p["pid"] == pid)) {
            if pred(p) {
                return Ok(p.clone());
            }
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}: {s:#}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Has the server ended this connection (EOF or reset)? A live one times out.
fn ended(c: &mut RawClient) -> bool {
    c.stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut b = [0u8; 64];
    match c.stream.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
    }
}

/// Alert rules for the tests: no defaults, only what the test names, firing at once.
fn rules(body: &str) -> String {
    format!("[alert]\ndefault_rules = false\n{body}\n")
}

const QUOTA_RULE: &str = "[[alert.rules]]\nname = \"ClientConnectionQuota\"\nscope = \"client\"\nmetric = \"process.clients.top_connections\"\nop = \">\"\ncritical = 3\n";

fn quota_setup(name: &str, dry_run: bool) -> Result<(Agent, Server, Vec<RawClient>, Vec<RawClient>)> {
    let server = Server::node(&[])?;
    let pid = server.pid;
    let agent = Agent::start_with(
        name,
        &format!(
            "[limits]\nper_client_connections = 3\n{}[remediation]\nsettle = \"1s\"\n[[remediation.actions]]\nname = \"quota\"\ntype = \"close_connections\"\non = [\"ClientConnectionQuota\"]\nselect = {{ by = \"over_quota\", order = \"newest\", max_fraction = 0.5 }}\ndry_run = {dry_run}\ncooldown = \"1h\"\nmatch = ['pid=\"{pid}\"']\n",
            rules(QUOTA_RULE)
        ),
    )?;
    // Kill switch on while the clients connect, so the agent sees the final picture first.
    cli(&agent, &["remediation", "pause"])?;
    let mut a = Vec::new();
    for _ in 0..5 {
        a.push(RawClient::connect_from("127.0.0.2", server.port, "")?);
        std::thread::sleep(Duration::from_millis(20));
    }
    let b = vec![RawClient::connect_from("127.0.0.3", server.port, "")?, RawClient::connect_from("127.0.0.3", server.port, "")?];
    wait_process(&agent, server.pid, "7 connections", |p| p["websocket"]["connections_active"] == 7)?;
    wait_alert(&agent, "ClientConnectionQuota", server.pid, "firing")?;
    Ok((agent, server, a, b))
}

#[test]
fn over_quota_client_loses_exactly_its_extra_connections() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let (agent, server, mut a, mut b) = quota_setup("remed-quota", false)?;
    // Paused: the alert fires, nothing is done, the refusal is recorded.
    let rows = wait_rows(&agent, "a paused skip", 10, |r| events(r).contains(&"skipped:paused (kill switch)".into()))?;
    assert_eq!(count(&rows, "run"), 0);
    assert!(a.iter_mut().all(|c| !ended(c)), "nothing closed while paused");

    // Unauthenticated mutation is refused.
    let host = agent.api.trim_start_matches("http://").to_string();
    let mut s = TcpStream::connect(&host)?;
    std::io::Write::write_all(
        &mut s,
        format!("POST /api/v1/remediation/resume HTTP/1.0\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n").as_bytes(),
    )?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    assert!(answer.lines().next().is_some_and(|l| l.contains(" 401 ")), "{answer}");

    cli(&agent, &["remediation", "resume"])?;
    let rows = wait_rows(&agent, "the run's outcome", 20, |r| count(r, "outcome") >= 1)?;
    // Exactly the two newest connections of client 127.0.0.2 ended; its first three and
    // client 127.0.0.3's two are untouched.
    let ends: Vec<bool> = a.iter_mut().map(ended).collect();
    assert_eq!(ends, vec![false, false, false, true, true], "client A");
    assert!(b.iter_mut().all(|c| !ended(c)), "client B untouched");

    let run = rows.iter().find(|r| r["event"] == "run").context("run row")?;
    assert_eq!(run["before"]["client_connections"], 5, "{run:#}");
    assert_eq!(run["before"]["client"], "127.0.0.2");
    assert_eq!(run["before"]["alert_value"], 5.0);
    let result = rows.iter().find(|r| r["event"] == "result").context("result row")?;
    assert_eq!((result["result"].as_str(), result["after"]["closed"].as_u64()), (Some("ok"), Some(2)), "{result:#}");
    let outcome = rows.iter().find(|r| r["event"] == "outcome").context("outcome row")?;
    assert_eq!(outcome["result"], "improved", "{outcome:#}");
    assert_eq!(outcome["after"]["client_connections"], 3, "{outcome:#}");
    wait_alert(&agent, "ClientConnectionQuota", server.pid, "resolved")?;
    wait_process(&agent, server.pid, "5 connections left", |p| p["websocket"]["connections_active"] == 5)?;

    // The CLI shows the same log.
    let text = cli(&agent, &["remediation", "history"])?;
    assert!(text.contains("run") && text.contains("action=quota") && text.contains("closed 2 of 2"), "{text}");
    let json: Value = serde_json::from_str(&cli(&agent, &["remediation", "history", "--json"])?)?;
    assert_eq!(json.as_array().map(Vec::len), Some(rows.len()));
    Ok(())
}

#[test]
fn dry_run_changes_nothing_and_records_everything() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let (agent, server, mut a, mut b) = quota_setup("remed-dry", true)?;
    cli(&agent, &["remediation", "resume"])?;
    let rows = wait_rows(&agent, "a dry run", 10, |r| count(r, "dry_run") == 1)?;
    std::thread::sleep(Duration::from_secs(2));
    let d = rows.iter().find(|r| r["event"] == "dry_run").unwrap();
    assert_eq!(d["dry_run"], true);
    assert!(d["detail"].as_str().unwrap().starts_with("close 2 connections of pid"), "{d:#}");
    assert_eq!(d["before"]["client_connections"], 5);
    assert!(a.iter_mut().chain(b.iter_mut()).all(|c| !ended(c)), "nothing closed");
    wait_process(&agent, server.pid, "still 7", |p| p["websocket"]["connections_active"] == 7)?;
    let rows = history(&agent)?;
    assert_eq!(count(&rows, "run") + count(&rows, "result"), 0);
    wait_alert(&agent, "ClientConnectionQuota", server.pid, "firing")?;
    Ok(())
}

#[test]
fn leaking_server_loses_idle_connections_never_busy_ones() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let server = Server::node(&[])?;
    let st = Command::new("prlimit").arg(format!("--pid={}", server.pid)).arg("--nofile=64:4096").status()?;
    assert!(st.success());
    let pid = server.pid;
    let agent = Agent::start_with(
        "remed-idle",
        &format!(
            "{}[remediation]\nsettle = \"1s\"\n[[remediation.actions]]\nname = \"idle\"\ntype = \"close_connections\"\non = [\"FdUsageHigh\"]\nselect = {{ by = \"idle\", idle_for = \"3s\", max_fraction = 1.0 }}\ndry_run = false\ncooldown = \"1s\"\nmatch = ['pid=\"{pid}\"']\n",
            rules("[[alert.rules]]\nname = \"FdUsageHigh\"\nmetric = \"process.resources.fd_usage_ratio\"\nop = \">\"\nwarning = 0.7\n")
        ),
    )?;
    let mut busy: Vec<RawClient> = (0..4).map(|_| RawClient::connect(server.port)).collect::<Result<_>>()?;
    let mut idle: Vec<RawClient> = (0..30).map(|_| RawClient::connect(server.port)).collect::<Result<_>>()?;
    let p = wait_process(&agent, server.pid, "34 connections", |p| p["websocket"]["connections_active"] == 34)?;
    let fds_before = p["resources"]["open_fds"].as_u64().context("open_fds")?;
    // Server-side fds of the busy clients (by their port as the server's peer).
    let conns = agent.get(&format!("/api/v1/processes/{}/connections", server.pid))?;
    let busy_ports: Vec<String> = busy.iter().map(|c| c.stream.local_addr().unwrap().port().to_string()).collect();
    let busy_fds: Vec<u64> = conns
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| busy_ports.iter().any(|p| c["peer"].as_str().unwrap_or("").ends_with(&format!(":{p}"))))
        .map(|c| c["fd"].as_u64().unwrap())
        .collect();
    assert_eq!(busy_fds.len(), 4);
    // Busy clients talk every 200 ms until the idle ones are closed (in one run, or a few if
    // some had not been idle long enough yet at the first).
    let closed_total = |rows: &[Value]| -> u64 {
        rows.iter().filter(|r| r["event"] == "result").map(|r| r["after"]["closed"].as_u64().unwrap_or(0)).sum()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut echoed = 0;
    let rows = loop {
        for c in busy.iter_mut() {
            c.send(&[enc::text("hello", true)], Split::PerFrame)?;
            c.received.clear();
            c.read_frames(1, Duration::from_secs(5))?;
            echoed += 1;
        }
        let rows = history(&agent)?;
        if closed_total(&rows) >= 30 {
            break rows;
        }
        if Instant::now() > deadline {
            bail!("idle connections not closed: {:#?}", events(&rows));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for r in rows.iter().filter(|r| r["event"] == "result") {
        let closed: Vec<u64> = serde_json::from_value(r["after"]["closed_fds"].clone()).unwrap_or_default();
        assert!(closed.iter().all(|fd| !busy_fds.contains(fd)), "a busy connection was closed: {r:#}");
        assert_eq!(r["result"], "ok", "{r:#}");
    }
    assert_eq!(closed_total(&rows), 30);
    assert!(idle.iter_mut().all(ended), "every idle client sees its connection end");
    for c in busy.iter_mut() {
        c.send(&[enc::text("still here", true)], Split::PerFrame)?;
        c.received.clear();
        c.read_frames(1, Duration::from_secs(5))?;
    }
    eprintln!("busy clients echoed {echoed} messages while the idle ones were closed");
    // The snapshot that shows 4 connections may predate the last fds' close: wait for both.
    let p = wait_process(&agent, server.pid, "4 connections and 30 fewer fds", |p| {
        p["websocket"]["connections_active"] == 4 && p["resources"]["open_fds"].as_u64() == Some(fds_before - 30)
    })?;
    let fds_after = p["resources"]["open_fds"].as_u64().unwrap();
    assert_eq!(fds_before - fds_after, 30, "fd usage fell by the closed connections ({fds_before} → {fds_after})");
    wait_alert(&agent, "FdUsageHigh", server.pid, "resolved")?;
    Ok(())
}

#[test]
fn leaking_server_gets_its_soft_fd_limit_raised() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let server = Server::node(&[])?;
    assert!(Command::new("prlimit").arg(format!("--pid={}", server.pid)).arg("--nofile=64:4096").status()?.success());
    let pid = server.pid;
    let agent = Agent::start_with(
        "remed-nofile",
        &format!(
            "{}[remediation]\nsettle = \"1s\"\n[[remediation.actions]]\nname = \"nofile\"\ntype = \"raise_fd_limit\"\non = [\"FdUsageHigh\"]\nfactor = 2.0\ndry_run = false\nmatch = ['pid=\"{pid}\"']\n",
            rules("[[alert.rules]]\nname = \"FdUsageHigh\"\nmetric = \"process.resources.fd_usage_ratio\"\nop = \">\"\nwarning = 0.7\n")
        ),
    )?;
    let _held: Vec<RawClient> = (0..30).map(|_| RawClient::connect(server.port)).collect::<Result<_>>()?;
    let rows = wait_rows(&agent, "the outcome", 30, |r| count(r, "outcome") >= 1)?;
    let run = rows.iter().find(|r| r["event"] == "run").unwrap();
    let result = rows.iter().find(|r| r["event"] == "result").unwrap();
    assert_eq!(run["before"]["fd_limit_soft"], 64);
    assert!(run["before"]["fd_usage_ratio"].as_f64().unwrap() > 0.7);
    assert_eq!((result["result"].as_str(), result["after"]["fd_limit_soft"].as_u64()), (Some("ok"), Some(128)), "{result:#}");
    let out = String::from_utf8(
        Command::new("prlimit")
            .arg(format!("--pid={}", server.pid))
            .args(["--nofile", "--raw", "--noheadings", "--output=SOFT,HARD"])
            .output()?
            .stdout,
    )?;
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), vec!["128", "4096"]);
    let outcome = rows.iter().find(|r| r["event"] == "outcome").unwrap();
    assert_eq!(outcome["result"], "improved", "{outcome:#}");
    assert!(outcome["after"]["fd_usage_ratio"].as_f64().unwrap() < run["before"]["fd_usage_ratio"].as_f64().unwrap() * 0.6);
    wait_alert(&agent, "FdUsageHigh", server.pid, "resolved")?;
    Ok(())
}

/// Prints the user id and the JSON it got on stdin.
const HOOK: &str = "[\"/bin/sh\", \"-c\", \"id -u; cat\"]";

/// An exec action on a rule that fires while the server has a connection.
fn exec_agent(name: &str, command: &str, action_extra: &str) -> Result<(Agent, Server, RawClient)> {
    let server = Server::node(&[])?;
    let pid = server.pid;
    let agent = Agent::start_with(
        name,
        &format!(
            "{}[remediation]\nsettle = \"1s\"\n[[remediation.actions]]\nname = \"hook\"\ntype = \"exec\"\non = [\"Connected\"]\ncommand = {command}\ndry_run = false\nmatch = ['pid=\"{pid}\"']\n{action_extra}\n",
            rules("[[alert.rules]]\nname = \"Connected\"\nmetric = \"process.websocket.connections_active\"\nop = \">\"\nwarning = 0\n")
        ),
    )?;
    let c = RawClient::connect(server.port)?;
    wait_alert(&agent, "Connected", server.pid, "firing")?;
    Ok((agent, server, c))
}

#[test]
fn cooldown_stops_a_second_run() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let (agent, _server, _c) = exec_agent("remed-cooldown", HOOK, "cooldown = \"1h\"\nbreaker_after = 0")?;
    let rows = wait_rows(&agent, "a cooldown skip", 15, |r| events(r).contains(&"skipped:cooldown".into()))?;
    std::thread::sleep(Duration::from_secs(2));
    let rows2 = history(&agent)?;
    assert_eq!(count(&rows2, "run"), 1, "{:?}", events(&rows2));
    let result = rows.iter().chain(rows2.iter()).find(|r| r["event"] == "result").unwrap();
    // Ran as nobody, with the alert as JSON on stdin.
    let detail = result["detail"].as_str().unwrap();
    assert!(detail.contains("stdout: 65534\n{\"action\":\"hook\""), "{detail}");
    assert!(detail.contains("\"alertname\":\"Connected\""), "{detail}");
    Ok(())
}

#[test]
fn hourly_cap_stops_the_third_run() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let (agent, _server, _c) = exec_agent("remed-cap", HOOK, "cooldown = \"0s\"\nmax_runs_per_hour = 2\nbreaker_after = 0")?;
    wait_rows(&agent, "the cap", 15, |r| events(r).iter().any(|e| e.starts_with("skipped:hourly cap")))?;
    std::thread::sleep(Duration::from_secs(2));
    let rows = history(&agent)?;
    assert_eq!((count(&rows, "run"), count(&rows, "result")), (2, 2), "{:?}", events(&rows));
    Ok(())
}

#[test]
fn circuit_breaker_disables_an_action_that_does_not_help() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    // The hook cannot change the connection count: every run is a miss.
    let (agent, _server, _c) = exec_agent("remed-breaker", HOOK, "cooldown = \"1500ms\"\nbreaker_after = 2")?;
    let rows = wait_rows(&agent, "the breaker", 20, |r| count(r, "breaker_tripped") == 1)?;
    std::thread::sleep(Duration::from_secs(3));
    let after = history(&agent)?;
    assert_eq!(count(&after, "run"), 2, "{:?}", events(&after));
    assert_eq!(
        after.iter().filter(|r| r["event"] == "outcome").map(|r| r["result"].as_str().unwrap()).collect::<Vec<_>>(),
        vec!["not_improved"; 2]
    );
    let st = agent.get("/api/v1/remediation")?;
    assert_eq!(st["actions"][0]["tripped"], true, "{st:#}");
    let _ = rows;
    // An operator re-enables it.
    cli(&agent, &["remediation", "resume", "--action", "hook"])?;
    wait_rows(&agent, "a run after the reset", 10, |r| count(r, "run") == 3)?;
    Ok(())
}

#[test]
fn hanging_command_is_killed_at_its_timeout_and_the_agent_keeps_running() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let (agent, server, _c) = exec_agent("remed-hang", "[\"/bin/sleep\", \"987.25\"]", "cooldown = \"1h\"\ntimeout = \"1s\"")?;
    let rows = wait_rows(&agent, "the timeout", 15, |r| count(r, "result") == 1)?;
    let r = rows.iter().find(|r| r["event"] == "result").unwrap();
    assert_eq!(r["result"], "timeout", "{r:#}");
    // The agent kept building snapshots meanwhile and after, and the command is gone.
    let t0 = agent.get("/api/v1/snapshot")?["timestamp"].clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    while agent.get("/api/v1/snapshot")?["timestamp"] == t0 {
        assert!(Instant::now() < deadline, "no snapshot after the timeout");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = server.pid;
    let left = std::fs::read_dir("/proc")?
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|c| String::from_utf8_lossy(c).contains("987.25"))
        .count();
    assert_eq!(left, 0, "the hanging command was killed");
    Ok(())
}

#[test]
fn signal_goes_to_the_named_process() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let mut server = Server::node(&[])?;
    let bystander = Server::node(&[])?;
    let agent = Agent::start_with(
        "remed-signal",
        &format!(
            "{}[remediation]\n[[remediation.actions]]\nname = \"term\"\ntype = \"signal\"\non = [\"Connected\"]\nsignal = \"SIGTERM\"\nmatch = ['pid=\"{}\"']\ndry_run = false\n",
            rules("[[alert.rules]]\nname = \"Connected\"\nmetric = \"process.websocket.connections_active\"\nop = \">\"\nwarning = 0\n"),
            server.pid
        ),
    )?;
    let _c = RawClient::connect(server.port)?;
    let _d = RawClient::connect(bystander.port)?;
    let rows = wait_rows(&agent, "the signal", 15, |r| count(r, "result") == 1)?;
    let r = rows.iter().find(|r| r["event"] == "result").unwrap();
    assert_eq!(r["result"], "ok", "{r:#}");
    // It exited (a zombie until we reap it): the signal reached it.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", server.pid)).unwrap_or_default();
        if stat.rsplit(')').next().and_then(|r| r.split_whitespace().next()) == Some("Z") {
            break;
        }
        if Instant::now() > deadline {
            bail!("server {} did not exit: {stat}", server.pid);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    server.stop();
    assert!(std::fs::metadata(format!("/proc/{}", bystander.pid)).is_ok(), "the other server is untouched");
    Ok(())
}

/// A systemd-style cgroup for the server (cgroup v1 `name=systemd` or v2), removed on drop.
struct FakeUnit {
    dir: std::path::PathBuf,
    root: std::path::PathBuf,
    pid: u32,
}

impl FakeUnit {
    fn new(pid: u32) -> Option<FakeUnit> {
        for root in ["/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
            let root = std::path::PathBuf::from(root);
            let dir = root.join("wsguard-it.slice/wsguard-it-echo.service");
            if std::fs::create_dir_all(&dir).is_ok() && std::fs::write(dir.join("cgroup.procs"), pid.to_string()).is_ok() {
                return Some(FakeUnit { dir, root, pid });
            }
            let _ = std::fs::remove_dir(&dir);
            let _ = std::fs::remove_dir(root.join("wsguard-it.slice"));
        }
        None
    }
}

impl Drop for FakeUnit {
    fn drop(&mut self) {
        let _ = std::fs::write(self.root.join("cgroup.procs"), self.pid.to_string());
        let _ = std::fs::remove_dir(&self.dir);
        let _ = std::fs::remove_dir(self.root.join("wsguard-it.slice"));
    }
}

#[test]
fn restart_unit_finds_the_service_and_reports_a_failed_restart() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let server = Server::node(&[])?;
    let Some(unit) = FakeUnit::new(server.pid) else {
        wsguard_integration::skip("cannot create a cgroup to stand in for a systemd service");
        return Ok(());
    };
    let pid = server.pid;
    let agent = Agent::start_with(
        "remed-unit",
        &format!(
            "{}[remediation]\n[[remediation.actions]]\nname = \"restart\"\ntype = \"restart_unit\"\non = [\"Connected\"]\ntimeout = \"20s\"\ndry_run = false\nmatch = ['pid=\"{pid}\"']\n",
            rules("[[alert.rules]]\nname = \"Connected\"\nmetric = \"process.websocket.connections_active\"\nop = \">\"\nwarning = 0\n")
        ),
    )?;
    let _c = RawClient::connect(server.port)?;
    let rows = wait_rows(&agent, "the restart", 30, |r| count(r, "result") == 1)?;
    let run = rows.iter().find(|r| r["event"] == "run").unwrap();
    assert!(run["detail"].as_str().unwrap().starts_with("systemctl restart wsguard-it-echo.service"), "{run:#}");
    let r = rows.iter().find(|r| r["event"] == "result").unwrap();
    let detail = r["detail"].as_str().unwrap();
    let pid1 = std::fs::read_to_string("/proc/1/comm")?;
    if pid1.trim() != "systemd" {
        // No systemd here: the failure is reported, with systemctl's own words.
        assert_eq!(r["result"], "failed", "{r:#}");
        assert!(detail.starts_with("systemctl restart wsguard-it-echo.service: ") && detail.contains("stderr:"), "{detail}");
    }
    eprintln!("restart_unit: {} — {detail}", r["result"]);
    assert!(std::fs::metadata(format!("/proc/{}", server.pid)).is_ok(), "the server still runs");
    drop(unit);
    Ok(())
}

#[test]
fn approval_waits_for_the_operator() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let (agent, _server, _c) = exec_agent("remed-approve", HOOK, "approval = true\ncooldown = \"1h\"")?;
    let rows = wait_rows(&agent, "an approval request", 15, |r| count(r, "awaiting_approval") == 1)?;
    std::thread::sleep(Duration::from_secs(2));
    let st = agent.get("/api/v1/remediation")?;
    assert_eq!(st["pending_approvals"].as_array().map(Vec::len), Some(1), "{st:#}");
    assert_eq!(count(&history(&agent)?, "run"), 0, "nothing runs before approval");
    let id = rows.iter().find(|r| r["event"] == "awaiting_approval").unwrap()["id"].as_i64().unwrap();
    let out = cli(&agent, &["remediation", "approve", &id.to_string(), "--by", "alice"])?;
    assert!(out.contains(&format!("approved request {id}")), "{out}");
    let rows = wait_rows(&agent, "the approved run", 15, |r| count(r, "result") == 1)?;
    let approved = rows.iter().find(|r| r["event"] == "approved").unwrap();
    assert_eq!((approved["by"].as_str(), approved["ref"].as_i64()), (Some("alice"), Some(id)));
    assert_eq!(rows.iter().find(|r| r["event"] == "result").unwrap()["result"], "ok");
    // A second approval of the same request is refused.
    assert!(cli(&agent, &["remediation", "approve", &id.to_string()]).is_err());
    Ok(())
}
