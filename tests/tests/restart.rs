//! The probe and its maps are pinned: killing the agent mid-traffic and starting it again loses
//! no count, and connections opened while it was down are followed as usual.

use std::time::Duration;

use anyhow::Result;
use wsguard_integration::{
    enc,
    oracle::{self, Counts},
    require_root, Agent, RawClient, Server, Split,
};

#[test]
fn agent_restart_mid_traffic_keeps_exact_totals() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let server = Server::node(&[])?;
    let mut agent = Agent::start("restart")?;
    let (mut rx, mut tx) = (Counts::default(), Counts::default());
    let send = |c: &mut RawClient, frames: Vec<Vec<u8>>, n: usize, rx: &mut Counts| -> Result<()> {
        c.send(&frames, Split::Random(n as u64))?;
        rx.add(&oracle::decode(&frames.concat()));
        c.read_frames(n, Duration::from_secs(5))
    };
    let mut a = RawClient::connect(server.port)?;
    send(&mut a, (0..20).map(|i| enc::text(&format!("before {i}"), true)).collect(), 20, &mut rx)?;
    agent.wait_ws(server.pid, "first traffic", |w| w["messages_received"] == 20)?;

    agent.stop(libc::SIGKILL);
    // While the agent is down: more frames on the old connection, a whole new connection.
    send(&mut a, (0..30).map(|_| enc::binary(1000, true)).collect(), 50, &mut rx)?;
    let mut b = RawClient::connect(server.port)?;
    send(&mut b, vec![enc::text("during", true)], 1, &mut rx)?;

    agent.spawn(false)?;
    let snap = agent.fresh_snapshot()?;
    assert_eq!(snap["probe"]["resumed"], true, "{:#}", snap["probe"]);
    send(&mut b, vec![enc::ping("after"), enc::text("after", true)], 3, &mut rx)?;
    for mut c in [a, b] {
        c.send(&[enc::close(1001)], Split::PerFrame)?;
        rx.add(&oracle::decode(&enc::close(1001)));
        c.read_to_end(Duration::from_secs(5))?;
        tx.add(&oracle::decode(&c.received));
    }
    let ws = agent.wait_ws(server.pid, "closed", |w| w["connections_closed"] == 2)?;
    assert_eq!(ws["connections_opened"], 2);
    assert_eq!(ws["frames_received"], rx.by_opcode(), "{ws:#}");
    assert_eq!(ws["frames_sent"], tx.by_opcode(), "{ws:#}");
    assert_eq!(ws["payload_bytes_received"], rx.payload_bytes());
    assert_eq!(ws["payload_bytes_sent"], tx.payload_bytes());
    assert_eq!(ws["messages_received"], rx.messages());
    assert_eq!(ws["close_codes_received"]["1001"], 2);
    Ok(())
}

/// `--fresh` throws the pinned probe away: counting restarts from zero.
#[test]
fn fresh_starts_from_zero() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let server = Server::node(&[])?;
    let mut agent = Agent::start("fresh")?;
    let mut c = RawClient::connect(server.port)?;
    c.send(&[enc::text("x", true)], Split::PerFrame)?;
    c.read_frames(1, Duration::from_secs(5))?;
    agent.wait_ws(server.pid, "traffic", |w| w["messages_received"] == 1)?;
    agent.stop(libc::SIGTERM);
    agent.spawn(true)?;
    let snap = agent.fresh_snapshot()?;
    assert_eq!(snap["probe"]["resumed"], false);
    let listed =
        snap["processes"].as_array().unwrap().iter().any(|p| p["pid"] == server.pid && p["websocket"]["connections_opened"] != 0);
    assert!(!listed, "a fresh probe has no counts yet: {snap:#}");
    Ok(())
}
