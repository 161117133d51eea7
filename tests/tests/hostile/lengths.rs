//! Declared lengths are never counted (issue #9): a client declares a legal 2^63-1 byte frame,
//! sends 1000 bytes of it and goes away (FIN or RST). Payload bytes count as the server reads
//! them, so the connection's and the process's totals equal the bytes really sent; when lengths
//! counted as declared, each such frame added 2^63 and two of them wrapped the u64 counter.

use std::{net::Shutdown, time::Instant};

use anyhow::bail;

use super::*;

/// The bytes of the frame that are really sent.
const SENT: usize = 1000;

/// Header of a masked binary frame (FIN) declaring 2^63-1 payload bytes.
fn huge_header() -> Vec<u8> {
    vec![0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x11, 0x22, 0x33, 0x44]
}

/// How the hostile client leaves.
#[derive(Clone, Copy, Debug)]
enum End {
    /// Half-close, read what the server answers, then close.
    Fin,
    /// SO_LINGER 0: a reset.
    Rst,
}

/// One clean echo, then the huge header alone (one write), then `SENT` payload bytes: in ten
/// paced writes when `paced` (a server that accepts the frame reads them in payload-only
/// syscalls, the probe's path without a walk), else in the header's write.
fn start_hostile(port: u16, paced: bool, e: &mut Expect) -> Result<RawClient> {
    let payload = noise(SENT, 0xA076_1D64_78BD_642F);
    let c = if paced {
        let mut c = after_one_echo(port, &huge_header(), e)?;
        for part in payload.chunks(SENT / 10) {
            std::thread::sleep(Duration::from_millis(20));
            c.stream.write_all(part)?;
        }
        c
    } else {
        after_one_echo(port, &[huge_header(), payload].concat(), e)?
    };
    // The frame counts (at its header) and so does its message; its payload is what was sent.
    e.rx.frames.push(("binary", true, SENT as u64));
    Ok(c)
}

/// Wait until the agent shows `c`'s connection with the pre-echo's 3 bytes and the `SENT` bytes
/// of the unfinished frame received: the connection counts them as they pass, mid-frame.
fn wait_conn_bytes(agent: &Agent, pid: u32, c: &RawClient) -> Result<Value> {
    let peer = c.stream.local_addr()?.to_string();
    let want = 3 + SENT as u64;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let conns = agent.get(&format!("/api/v1/processes/{pid}/connections")).unwrap_or_default();
        let conn = conns.as_array().into_iter().flatten().find(|c| c["peer"] == peer.as_str()).cloned();
        if let Some(conn) = conn {
            if conn["payload_bytes_received"] == want {
                assert_eq!(conn["frames_received"]["binary"], 1, "{conn:#}");
                assert_eq!(conn["messages_received"], 2, "{conn:#}");
                return Ok(conn);
            }
            assert!(conn["payload_bytes_received"].as_u64().unwrap_or(u64::MAX) < want, "{conn:#}");
            if Instant::now() > deadline {
                bail!("connection {peer} never reached {want} payload bytes: {conn:#}");
            }
        } else if Instant::now() > deadline {
            bail!("connection {peer} not listed: {conns:#}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn declared_huge_sent_little(name: &str, server: Server, paced: bool) -> Result<()> {
    let agent = agent_for(name, &server)?;
    let mut e = Expect::default();
    let mut control = Control::open(server.port, 2, &mut e)?;
    let mut clients = Vec::new();
    for end in [End::Fin, End::Rst] {
        clients.push((start_hostile(server.port, paced, &mut e)?, end));
    }
    if paced {
        // Both frames in flight: each connection counts exactly what came, and the process has
        // not jumped by a declared length (it is credited with payload-only syscalls at the
        // connection's next walk or its close, so it may lag, never lead).
        for (c, _) in &clients {
            wait_conn_bytes(&agent, server.pid, c)?;
        }
        let ws = agent.ws(server.pid)?;
        let rx = ws["payload_bytes_received"].as_u64().context("payload_bytes_received")?;
        assert!(rx <= e.rx.payload_bytes(), "process counted {rx} > {} bytes received: {ws:#}", e.rx.payload_bytes());
        eprintln!("mid-frame: process {rx} of {} payload bytes received (the rest owed)", e.rx.payload_bytes());
    }
    for (mut c, end) in clients {
        match end {
            End::Fin => {
                c.stream.shutdown(Shutdown::Write)?;
                c.read_to_end(Duration::from_secs(10))?;
                e.tx.add(&oracle::decode(&c.received));
            }
            End::Rst => {
                // What the server answered before the reset (a refusal) was sent and counted.
                if !paced {
                    c.read_frames(1, Duration::from_secs(10))?;
                }
                e.tx.add(&oracle::decode(&c.received));
                c.reset()?;
            }
        }
        e.closed += 1;
        e.abnormal += 1; // no close frame from the client
    }
    control.round(&mut e, "after")?;
    control.close(&mut e)?;
    let ws = assert_exact(&agent, server.pid, &e)?;
    eprintln!("{name}: payload bytes received {} (2 frames declaring 2^63-1)", ws["payload_bytes_received"]);
    Ok(())
}

/// `websockets` with no size limit accepts the header and keeps reading the frame.
#[test]
fn declared_huge_sent_little_python_websockets() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let server = Server::python(&["--max-size", &((1u64 << 63) - 1).to_string()])?;
    declared_huge_sent_little("hostile-declared-py", server, true)
}

/// Node `ws` refuses lengths over 2^53-1 (1009) at the header; it has read the 1000 bytes that
/// came in the header's write.
#[test]
fn declared_huge_sent_little_node_ws() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    declared_huge_sent_little("hostile-declared-node", Server::node(&[])?, false)
}

/// The server dies (SIGKILL) with the frame in flight, so it never closes the connection: the
/// agent ends it when it reaps the process and credits the payload bytes the process was still
/// owed (those of payload-only syscalls since the connection's last walk).
#[test]
fn declared_huge_then_server_killed_python_websockets() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let mut server = Server::python(&["--max-size", &((1u64 << 63) - 1).to_string()])?;
    let agent = agent_for("hostile-declared-exit", &server)?;
    let mut e = Expect::default();
    let c = start_hostile(server.port, true, &mut e)?;
    wait_conn_bytes(&agent, server.pid, &c)?;
    let pid = server.pid;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    server.stop();
    e.closed += 1;
    e.abnormal += 1;
    let ws = assert_exact(&agent, pid, &e)?;
    let p = agent.process(pid)?.context("exited process listed")?;
    assert_eq!(p["exited"], true, "{p:#}");
    eprintln!("exited: payload bytes received {}", ws["payload_bytes_received"]);
    drop(c);
    Ok(())
}
