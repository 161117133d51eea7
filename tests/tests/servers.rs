//! Servers whose sockets do not stay where `accept` put them, that upgrade late, or whose I/O
//! no read/write syscall carries: node `ws` under `cluster` (SCHED_RR: the primary accepts, a
//! worker gets the socket over SCM_RIGHTS), a server that `dup2`s each accepted socket away, an
//! HTTP keep-alive connection whose second request upgrades, and an io_uring echo server.
//! Expectations depend on the probe mode, and each test states them:
//! - `socket` (per-socket state): exact counts, attributed to the process that served them;
//!   io_uring's bytes are counted as unparsed (connections and bytes, exactly);
//! - `syscall` (the raw-tracepoint fallback, keyed by process and fd) cannot follow a socket that
//!   moved: the miss is reported exactly (`closed_unread`, part of `unfollowed_connections`),
//!   never silent. It follows the keep-alive upgrade exactly, like the socket mode.

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

/// In syscall mode: the `n` connections process `pid` accepted and handed on (another fd or
/// process) are reported as closed unread and unfollowed, exactly, and nothing of theirs is
/// counted as WebSocket traffic.
fn miss_reported(agent: &Agent, pid: u32, n: u64) -> Result<()> {
    // The server's last close may land just after the client saw its end: wait for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (s, p) = loop {
        let s = agent.fresh_snapshot()?;
        let p = s["processes"].as_array().and_then(|ps| ps.iter().find(|p| p["pid"] == pid)).cloned();
        let done = p.as_ref().is_some_and(|p| p["closed_unread"].as_u64() >= Some(n));
        if done || std::time::Instant::now() > deadline {
            break (s, p);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let Some(p) = p else { bail!("syscall probe: process {pid} not listed: {:#}", s["processes"]) };
    assert_eq!(p["closed_unread"], n, "syscall probe: {n} connections moved away, reported: {p:#}");
    assert_eq!(p["unfollowed_connections"], n, "{p:#}");
    assert_eq!(p["tcp_accepted"], n, "{p:#}");
    assert_eq!(p["websocket"]["connections_opened"], 0, "{p:#}");
    assert!(s["probe"]["health"]["unfollowed_connections"].as_u64() >= Some(n), "{:#}", s["probe"]["health"]);
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

/// Socket mode: each worker's frames are its own, exactly. Syscall mode: the primary's
/// hand-offs are reported (`closed_unread`), the workers' traffic is not seen.
#[test]
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
        ProbeMode::Syscall => miss_reported(&agent, server.pid, SPLITS.len() as u64)?,
    }
    Ok(())
}

/// Socket mode: exact counts on the moved socket. Syscall mode: the move is reported.
#[test]
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
        ProbeMode::Syscall => miss_reported(&agent, server.pid, SPLITS.len() as u64)?,
    }
    Ok(())
}

/// A plain HTTP request (answered 426 by `ws`, connection kept alive), then an upgrade on the
/// same connection, then the frame script. Both modes: exact counts (the handshake code both
/// share keeps a connection followed between plain requests).
#[test]
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
    let ws = agent.wait_ws(server.pid, "closed", |w| w["connections_closed"] == 1)?;
    assert_exact(&ws, &rx, &tx);
    assert_eq!(ws["connections_opened"], 1, "{ws:#}");
    assert_eq!(ws["abnormal_closes"], 0, "{ws:#}");
    let p = agent.process(server.pid)?.expect("listed");
    assert_eq!(p["not_websocket"], 0, "the first request did not end the following: {p:#}");
    assert_eq!(p["unfollowed_connections"], 0, "{p:#}");
    Ok(())
}

/// io_uring moves every byte of this server's connections (IORING_OP_RECV/SEND): no probe can
/// read them as a buffer, but neither mode may be blind to them. Socket mode: connections and
/// bytes counted exactly as unparsed, nothing guessed. Syscall mode: it sees the accept(2)
/// and the close(2) of connections it never saw read, and reports them (`closed_unread`).
#[test]
fn io_uring_server_is_never_invisible() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let server = Server::uring()?;
    let agent = Agent::start("uring")?;
    let n = SPLITS.len() as u64;
    let (mut rx_bytes, mut tx_bytes) = (0u64, 0u64);
    for (i, split) in SPLITS.iter().enumerate() {
        let frames = script(4000 + i as u16);
        let mut c = RawClient::connect(server.port)?;
        c.send(&frames, *split)?;
        c.read_to_end(Duration::from_secs(10))?;
        // What the server received and sent: request head and frames; response head (with
        // its blank line) and echoes.
        rx_bytes += (upgrade_request(server.port, "13", "").len() + frames.concat().len()) as u64;
        tx_bytes += (c.head.len() + 4 + c.received.len()) as u64;
        assert_eq!(oracle::decode(&c.received).close_codes.values().sum::<u64>(), 1, "echoed close");
    }
    match ProbeMode::effective(&agent)? {
        ProbeMode::Socket => {
            let ws =
                agent.wait_ws(server.pid, "unparsed bytes", |w| w["unparsed_bytes"].as_u64() >= Some(rx_bytes + tx_bytes))?;
            assert_eq!(ws["unparsed_connections"], n, "{ws:#}");
            assert_eq!(ws["unparsed_bytes"], rx_bytes + tx_bytes, "{ws:#}");
            assert_eq!(ws["connections_opened"], 0, "nothing parsed, nothing guessed: {ws:#}");
            let p = agent.process(server.pid)?.expect("listed");
            assert_eq!(p["tcp_accepted"], n, "{p:#}");
            assert_eq!(p["not_websocket"], 0, "unparsed is not 'not WebSocket': {p:#}");
        }
        ProbeMode::Syscall => miss_reported(&agent, server.pid, n)?,
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
