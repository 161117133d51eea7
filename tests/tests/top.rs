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
    // PID COMM PORTS ACTIVE OPENED FAILED ABNORM FRAMES_RX FRAMES_TX ...
    assert_eq!(cells[2], port, "{text}");
    assert_eq!(cells[3], N.to_string(), "active connections: {text}");
    assert_eq!(cells[4], N.to_string(), "opened: {text}");
    assert_eq!(cells[7], total.to_string(), "frames received: {text}");
    assert_eq!(cells[8], total.to_string(), "frames sent: {text}");

    // Connections view of that pid: one row per client, by its source address.
    let pid = server.pid.to_string();
    let (text, code) = top(&agent.api, &["--view", "connections", "--pid", &pid]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains(&format!("Connections of {pid} (node): {N}")), "{text}");
    for c in &clients {
        let peer = c.stream.local_addr()?.to_string();
        let cells = row(&text, &peer);
        // FD PEER CLIENT AGE IDLE FRAMES_RX FRAMES_TX ...
        assert_eq!(cells[2], "127.0.0.1", "client key: {text}");
        assert_eq!(cells[5], PER_CLIENT.to_string(), "frames received on {peer}: {text}");
        assert_eq!(cells[6], PER_CLIENT.to_string(), "frames sent on {peer}: {text}");
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
        eprintln!("SKIP: {} missing: build it first (`cargo build --release`)", agent_bin().display());
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
    let out = Command::new(agent_bin())
        .args(["top", "--once", "--api", &api, "--width", "30", "--height", "6"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 6);
}
