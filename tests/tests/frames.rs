//! Exact frame accounting against unmodified servers, with clients that cut their writes
//! adversarially. The truth comes from tungstenite decoding the bytes each side really sent.

use std::time::Duration;

use anyhow::Result;
use wsguard_integration::{
    enc,
    exact::{assert_exact, drive_splits, script, SPLITS},
    oracle, require_root, Agent, RawClient, Server, Split,
};

fn adversarial(name: &str, server: Server) -> Result<()> {
    let agent = Agent::start(name)?;
    let (rx, tx) = drive_splits(|| RawClient::connect(server.port))?;
    let n = SPLITS.len() as u64;
    let ws = agent.wait_ws(server.pid, "all closed", |w| w["connections_closed"] == n)?;
    assert_exact(&ws, &rx, &tx);
    assert_eq!(ws["abnormal_closes"], 0);
    // The script has pings: the server answered each with a pong.
    assert_eq!(ws["frames_sent"]["pong"], n, "{ws:#}");
    // Echo servers answer every message: response latency was measured.
    assert!(ws["response_latency_avg_ms"].as_f64().unwrap() > 0.0, "{ws:#}");
    assert_eq!(ws["ping_rtt_avg_ms"], serde_json::Value::Null, "the servers sent no pings");
    Ok(())
}

#[test]
fn adversarial_splits_node_ws() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    adversarial("frames-node", Server::node(&[])?)
}

#[test]
fn adversarial_splits_python_websockets() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    adversarial("frames-py", Server::python(&[])?)
}

/// gorilla/websocket (Go): net/http's own buffered reads and writes.
#[test]
fn adversarial_splits_go_gorilla() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    adversarial("frames-go", Server::gorilla()?)
}

/// readv/writev and recvmsg/sendmsg, with frame headers cut across many small iovecs. This server
/// also blocks in accept(2) before the agent starts: its first connection must still be counted.
#[test]
fn adversarial_splits_vectored_io() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    adversarial("frames-readv", Server::sansio("vectored")?)?;
    adversarial("frames-msg", Server::sansio("msg")?)
}

/// Thousands of tiny frames in one write: the server reads them in few large syscalls and
/// answers with large (often vectored) writes.
#[test]
fn thousands_of_tiny_frames() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let servers = [("tiny-node", Server::node(&[])?), ("tiny-py", Server::python(&[])?), ("tiny-msg", Server::sansio("msg")?)];
    for (name, server) in servers {
        let agent = Agent::start(name)?;
        let tiny: Vec<Vec<u8>> = (0..10_000).map(|_| enc::text("", true)).collect();
        let mut c = RawClient::connect(server.port)?;
        c.send(&tiny, Split::All)?;
        // Close only after the echoes: websockets handles a queued close before echoing.
        c.read_frames(10_000, Duration::from_secs(20))?;
        c.send(&[enc::close(1000)], Split::PerFrame)?;
        c.read_to_end(Duration::from_secs(20))?;
        let mut sent = tiny.concat();
        sent.extend(enc::close(1000));
        let rx = oracle::decode(&sent);
        let tx = oracle::decode(&c.received);
        assert_eq!(tx.frames.len(), 10_001, "{name}: server echoed everything");
        // The server closes its fd once our FIN arrives.
        drop(c);
        let ws = agent.wait_ws(server.pid, "closed", |w| w["connections_closed"] == 1)?;
        assert_exact(&ws, &rx, &tx);
        let health = &agent.fresh_snapshot()?["probe"]["health"];
        assert_eq!(health["walk_budget_exceeded"], 0, "{health:#}");
    }
    Ok(())
}

/// Garbage after a handshake puts only that connection out of sync; the others stay exact.
#[test]
fn garbage_marks_only_its_connection_out_of_sync() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let server = Server::node(&[])?;
    let agent = Agent::start("garbage")?;
    let mut bad = RawClient::connect(server.port)?;
    let mut good = RawClient::connect(server.port)?;
    bad.send(&[enc::reserved(), vec![0xff; 64]], Split::All)?;
    let frames = script(1000);
    good.send(&frames, Split::Random(99))?;
    good.read_to_end(Duration::from_secs(10))?;
    bad.read_to_end(Duration::from_secs(10))?;
    let good_received = std::mem::take(&mut good.received);
    drop((bad, good));
    let ws = agent.wait_ws(server.pid, "both closed", |w| w["connections_closed"] == 2)?;
    assert_eq!(ws["out_of_sync"], 1, "{ws:#}");
    let (rx, tx) = (oracle::decode(&frames.concat()), oracle::decode(&good_received));
    assert_eq!(ws["frames_received"], rx.by_opcode(), "{ws:#}");
    assert_eq!(ws["frames_sent"], tx.by_opcode(), "{ws:#}");
    assert_eq!(ws["payload_bytes_received"], rx.payload_bytes());
    assert_eq!(ws["abnormal_closes"], 0, "an out-of-sync connection is not judged: {ws:#}");
    Ok(())
}

/// Server-initiated pings: each is answered by a pong from the client, both directions counted.
#[test]
fn server_pings_are_counted() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let server = Server::node(&["--ping-ms", "100"])?;
    let agent = Agent::start("pings")?;
    let mut c = RawClient::connect(server.port)?;
    c.read_frames(3, Duration::from_secs(5))?;
    let pings = oracle::decode(&c.received).frames.len();
    let pongs: Vec<Vec<u8>> = (0..pings).map(|_| enc::pong("")).collect();
    c.send(&pongs, Split::PerFrame)?;
    std::thread::sleep(Duration::from_millis(50));
    c.send(&[enc::close(1000)], Split::PerFrame)?;
    c.read_to_end(Duration::from_secs(5))?;
    let tx = oracle::decode(&c.received);
    drop(c);
    let ws = agent.wait_ws(server.pid, "closed", |w| w["connections_closed"] == 1)?;
    assert_eq!(ws["frames_sent"], tx.by_opcode(), "{ws:#}");
    assert_eq!(ws["frames_received"]["pong"], pings as u64, "{ws:#}");
    assert!(ws["ping_rtt_avg_ms"].as_f64().unwrap() > 0.0, "{ws:#}");
    Ok(())
}
