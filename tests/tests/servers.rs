//! Servers whose sockets do not stay where `accept` put them, or that upgrade late: node `ws`
//! under `cluster` (SCHED_RR: the primary accepts, a worker gets the socket over SCM_RIGHTS),
//! a server that `dup2`s each accepted socket away, and an HTTP keep-alive connection whose
//! second request upgrades. Expectations depend on the probe mode:
//! - `socket` (per-socket state): exact counts, attributed to the process that served them;
//! - `syscall` (the raw-tracepoint fallback, keyed by process and fd) cannot follow these: the
//!   miss must then be reported (`probe.health.unfollowed_connections`), never silent.
//!
//! The syscall probe does not report these misses yet (issue #15): the tests are ignored until
//! the socket probe and that report land, so that they fail rather than pass without checking.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use anyhow::{bail, Context, Result};

use wsguard_integration::{
    exact::{assert_exact, script},
    oracle::{self, Counts},
    require_root, upgrade_request, Agent, ProbeMode, RawClient, Server, Split,
};

const SPLITS: [Split; 5] = [Split::PerFrame, Split::All, Split::HeaderSplit, Split::Random(7), Split::Random(1234)];

/// In syscall mode: the `n` connections the probe could not follow are reported.
fn miss_reported(agent: &Agent, n: u64) -> Result<()> {
    let h = agent.fresh_snapshot()?["probe"]["health"].clone();
    let reported = h["unfollowed_connections"].as_u64().unwrap_or(0);
    if reported < n {
        bail!("syscall probe: {n} connections not followed, {reported} reported: {h:#}");
    }
    Ok(())
}

/// Send the script over one connection per split; what each served process received (rx) and
/// sent (tx), keyed by `who` of the handshake response.
fn drive(port: u16, who: impl Fn(&RawClient) -> String) -> Result<Vec<(String, Counts, Counts)>> {
    let mut out: Vec<(String, Counts, Counts)> = Vec::new();
    for (i, split) in SPLITS.iter().enumerate() {
        let frames = script(4000 + i as u16);
        let mut c = RawClient::connect(port)?;
        c.send(&frames, *split)?;
        c.read_to_end(Duration::from_secs(10))?;
        let w = who(&c);
        let pos = match out.iter().position(|(k, _, _)| *k == w) {
            Some(p) => p,
            None => {
                out.push((w, Counts::default(), Counts::default()));
                out.len() - 1
            }
        };
        out[pos].1.add(&oracle::decode(&frames.concat()));
        out[pos].2.add(&oracle::decode(&c.received));
    }
    Ok(out)
}

#[test]
#[ignore = "needs the socket probe (issue #15); the syscall probe neither follows nor reports fds passed over SCM_RIGHTS"]
fn node_cluster_frames_belong_to_the_worker() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let server = Server::node_cluster()?;
    let agent = Agent::start("cluster")?;
    let per_worker = drive(server.port, |c| {
        c.head
            .lines()
            .find_map(|l| l.strip_prefix("X-Worker: ").or_else(|| l.strip_prefix("x-worker: ")))
            .unwrap_or("?")
            .trim()
            .to_owned()
    })?;
    match ProbeMode::effective(&agent)? {
        ProbeMode::Socket => {
            for (worker, rx, tx) in &per_worker {
                let pid: u32 = worker.parse().context("X-Worker header")?;
                assert!(server.info.contains(worker), "{worker} is one of the workers {:?}", server.info);
                let n = rx.close_codes.values().sum::<u64>();
                let ws = agent.wait_ws(pid, "closed", |w| w["connections_closed"] == n)?;
                assert_exact(&ws, rx, tx);
                assert_eq!(ws["connections_opened"], n, "{ws:#}");
                assert_eq!(ws["abnormal_closes"], 0, "{ws:#}");
            }
            // The primary only accepted and passed the sockets on: no frames are its.
            let primary = agent.ws(server.pid)?;
            assert!(primary.is_null() || primary["connections_opened"] == 0, "{primary:#}");
        }
        ProbeMode::Syscall => miss_reported(&agent, SPLITS.len() as u64)?,
    }
    Ok(())
}

#[test]
#[ignore = "needs the socket probe (issue #15); the syscall probe neither follows nor reports a socket moved by dup2"]
fn dup2_moved_socket_is_followed() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let server = Server::dup2()?;
    let agent = Agent::start("dup2")?;
    let all = drive(server.port, |_| String::new())?;
    let (_, rx, tx) = &all[0];
    match ProbeMode::effective(&agent)? {
        ProbeMode::Socket => {
            let n = SPLITS.len() as u64;
            let ws = agent.wait_ws(server.pid, "closed", |w| w["connections_closed"] == n)?;
            assert_exact(&ws, rx, tx);
            assert_eq!(ws["abnormal_closes"], 0, "{ws:#}");
        }
        ProbeMode::Syscall => miss_reported(&agent, SPLITS.len() as u64)?,
    }
    Ok(())
}

/// A plain HTTP request (answered 426 by `ws`, connection kept alive), then an upgrade on the
/// same connection, then the frame script.
#[test]
#[ignore = "needs the socket probe (issue #15); the syscall probe stops at a connection's first non-upgrade request"]
fn keep_alive_connection_upgrades_on_its_second_request() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let server = Server::node(&[])?;
    let agent = Agent::start("keepalive")?;
    let port = server.port;
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n")?;
    let first = read_response(&mut s)?;
    assert!(first.starts_with("HTTP/1.1 426"), "{first}");
    assert!(!first.to_ascii_lowercase().contains("connection: close"), "kept alive: {first}");
    s.write_all(upgrade_request(port, "13", "").as_bytes())?;
    let second = read_response(&mut s)?;
    assert!(second.starts_with("HTTP/1.1 101"), "{second}");
    let mut c = RawClient { stream: s, received: Vec::new(), head: second };
    let frames = script(1000);
    c.send(&frames, Split::Random(42))?;
    c.read_to_end(Duration::from_secs(10))?;
    let (rx, tx) = (oracle::decode(&frames.concat()), oracle::decode(&c.received));
    drop(c);
    match ProbeMode::effective(&agent)? {
        ProbeMode::Socket => {
            let ws = agent.wait_ws(server.pid, "closed", |w| w["connections_closed"] == 1)?;
            assert_exact(&ws, &rx, &tx);
            assert_eq!(ws["connections_opened"], 1, "{ws:#}");
        }
        ProbeMode::Syscall => miss_reported(&agent, 1)?,
    }
    Ok(())
}

/// One HTTP response head (and a body of Content-Length bytes, read and dropped).
fn read_response(s: &mut TcpStream) -> Result<String> {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut b)? == 0 {
            bail!("closed during a response: {}", String::from_utf8_lossy(&buf));
        }
        buf.push(b[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
        .map(|(_, v)| v.trim().parse().unwrap_or(0))
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok(head)
}
