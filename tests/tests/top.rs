//! `wsguard top` against a real agent watching a real `ws` server: the frame it renders
//! (`--once`, the same render code as the live terminal, through ratatui's TestBackend) shows
//! that server's pid, its exact connection count and frame counts, and its connections.

use std::{process::Command, time::Duration};

use anyhow::Result;
use wsguard_integration::{agent_bin, enc, require_root, Agent, RawClient, Server, Split};

/// `wsguard top --once` output and exit code.
fn top(api: &str, args: &[&str]) -> (String, Option<i32>) {
    let out = Command::new(agent_bin())
        .args(["top", "--once", "--api", api, "--width", "160", "--height", "50"])
        .args(args)
        .env_remove("WSGUARD_API")
        .output()
        .expect("run wsguard top");
    (String::from_utf8_lossy(&out.stdout).into_owned(), out.status.code())
}

fn row<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    let line = text.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no line with {needle}:\n{text}"));
    line.split(|c: char| c.is_whitespace() || c == '│' || c == '›').filter(|s| !s.is_empty()).collect()
}

#[test]
fn top_shows_the_live_numbers_of_a_real_server() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    const N: usize = 5;
    const PER_CLIENT: usize = 3;
    let server = Server::node(&[])?;
    let agent = Agent::start("top")?;
    let mut clients = Vec::new();
    for i in 0..N {
        let mut c = RawClient::connect(server.port)?;
        let frames: Vec<Vec<u8>> = (0..PER_CLIENT).map(|k| enc::text(&format!("hello {i}/{k}"), true)).collect();
        c.send(&frames, Split::PerFrame)?;
        c.read_frames(PER_CLIENT, Duration::from_secs(5))?;
        clients.push(c);
    }
    let total = (N * PER_CLIENT) as u64;
    let ws = agent.wait_ws(server.pid, "all frames echoed", |w| {
        w["connections_active"] == N as u64 && w["frames_received"]["text"] == total && w["frames_sent"]["text"] == total
    })?;
    assert_eq!(ws["frames_received"]["ping"], 0);

    // Processes view: the server's row with its exact numbers.
    let (text, code) = top(&agent.api, &["--view", "processes"]);
    assert_eq!(code, Some(0), "{text}");
    let cells = row(&text, &format!(" {} ", server.pid));
    assert_eq!(&cells[..2], [server.pid.to_string().as_str(), "node"], "{text}");
    let port = server.port.to_string();
    // PID COMM PORTS ACTIVE SSE OPENED FAILED ABNORM FRAMES_RX FRAMES_TX ...
    assert_eq!(cells[2], port, "{text}");
    assert_eq!(cells[3], N.to_string(), "active connections: {text}");
    assert_eq!(cells[4], "-", "no SSE streams: {text}");
    assert_eq!(cells[5], N.to_string(), "opened: {text}");
    assert_eq!(cells[8], total.to_string(), "frames received: {text}");
    assert_eq!(cells[9], total.to_string(), "frames sent: {text}");

    // Connections view of that pid: one row per client, by its source address.
    let pid = server.pid.to_string();
    let (text, code) = top(&agent.api, &["--view", "connections", "--pid", &pid]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains(&format!("Connections of {pid} (node): {N}")), "{text}");
    for c in &clients {
        let peer = c.stream.local_addr()?.to_string();
        let cells = row(&text, &peer);
        // FD T(ransport) PEER CLIENT AGE IDLE FRAMES_RX FRAMES_TX ...
        assert_eq!(cells[2], peer, "peer: {text}");
        assert_eq!(cells[3], "127.0.0.1", "client key: {text}");
        assert_eq!(cells[6], PER_CLIENT.to_string(), "frames received on {peer}: {text}");
        assert_eq!(cells[7], PER_CLIENT.to_string(), "frames sent on {peer}: {text}");
    }

    // Summary: the host totals include the server's connections; health is read.
    let (text, code) = top(&agent.api, &[]);
    assert_eq!(code, Some(0), "{text}");
    let cells = row(&text, "active  ");
    let at = cells.iter().position(|c| *c == "active").expect("active");
    let active: u64 = cells[at + 1].parse()?;
    assert!(active >= N as u64, "{text}");
    assert!(text.contains("HEALTHY") || text.contains("DEGRADED"), "{text}");
    assert!(text.contains(&format!("connections active {active}")), "{text}");
    Ok(())
}

/// Unprivileged: no agent at that address gives the "unreachable" screen and exit status 2.
#[test]
fn top_says_when_the_agent_is_unreachable() {
    if !agent_bin().exists() {
        wsguard_integration::skip(&format!("{} missing: build it first (`cargo build --release`)", agent_bin().display()));
        return;
    }
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let api = format!("http://127.0.0.1:{port}");
    let (text, code) = top(&api, &[]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains(&format!("agent unreachable at {api}, retrying")), "{text}");
    assert!(text.contains("Connection refused") || text.contains("connect"), "{text}");
    // A small terminal too.
    let out =
        Command::new(agent_bin()).args(["top", "--once", "--api", &api, "--width", "30", "--height", "6"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 6);
}

/// A private tmux server running `wsguard top` in a 120x40 pane; killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(cmd: &str) -> Tmux {
        let t = Tmux { socket: format!("wsguard-top-test-{}", std::process::id()) };
        let ok = Command::new("tmux")
            .args(["-L", &t.socket, "new-session", "-d", "-x", "120", "-y", "40", cmd])
            .status()
            .expect("tmux (Debian package tmux)")
            .success();
        assert!(ok, "tmux new-session failed");
        t
    }

    fn keys(&self, keys: &str) {
        assert!(Command::new("tmux").args(["-L", &self.socket, "send-keys", keys]).status().unwrap().success());
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux").args(["-L", &self.socket, "capture-pane", "-p"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Poll the screen until `pred` holds (10 s).
    fn wait(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(std::time::Instant::now() < deadline, "{what} not on screen:\n{s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).status();
    }
}

/// The interactive dashboard in a real terminal (tmux): a real quota alert is listed, Enter
/// acknowledges it through the API with the agent's token, q quits.
#[test]
fn top_acknowledges_an_alert_from_the_keyboard() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let server = Server::node(&[])?;
    let agent = Agent::start_with("top-ack", "[limits]\nper_client_connections = 2\n")?;
    let _clients = (0..3).map(|_| RawClient::connect(server.port)).collect::<Result<Vec<_>>>()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !agent.get("/api/v1/alerts")?.as_array().unwrap().iter().any(|a| {
        a["labels"]["alertname"] == "ClientConnectionQuota"
            && a["status"] == "firing"
            && a["labels"]["pid"].as_str() == Some(server.pid.to_string().as_str())
    }) {
        assert!(std::time::Instant::now() < deadline, "quota alert did not fire");
        std::thread::sleep(Duration::from_millis(100));
    }

    // --once lists it.
    let (text, code) = top(&agent.api, &["--view", "alerts"]);
    assert_eq!(code, Some(0), "{text}");
    let cells = row(&text, "ClientConnectionQuota");
    assert_eq!(&cells[..2], ["critical", "firing"], "{text}");

    let token = agent.dir.join("state/api-token");
    let cmd = format!(
        "{} top --api {} --view alerts --interval 500ms --token-file {}",
        agent_bin().display(),
        agent.api,
        token.display()
    );
    let tmux = Tmux::start(&cmd);
    let screen = tmux.wait("the alert list", |s| s.contains("ClientConnectionQuota") && s.contains("Enter acknowledge"));
    // The selected (first) row's fingerprint.
    let line = screen.lines().find(|l| l.contains('›')).expect("a selected row");
    let fp = line.split_whitespace().find(|w| w.len() == 16 && w.chars().all(|c| c.is_ascii_hexdigit())).expect("fingerprint");
    tmux.keys("Enter");
    tmux.wait("the ack confirmation", |s| s.contains(&format!("acknowledged {fp}")));
    let a = agent.get(&format!("/api/v1/alerts/{fp}"))?;
    assert_eq!(a["acknowledged"], true, "{a:#}");
    assert_eq!(a["ack"]["comment"], "acknowledged from wsguard top");
    tmux.keys("q");
    tmux.wait("top to quit", |s| !s.contains("wsguard"));
    Ok(())
}
