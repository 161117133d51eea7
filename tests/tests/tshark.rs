//! tshark's WebSocket dissector, capturing the same loopback traffic, is an independent oracle:
//! the agent must agree with it frame for frame, by direction and opcode.

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use wsguard_integration::{enc, require_root, Agent, RawClient, Server, Split};

const OPCODES: [(u64, &str); 6] = [(0, "continuation"), (1, "text"), (2, "binary"), (8, "close"), (9, "ping"), (10, "pong")];

/// Frames per (server side sent?, opcode name) from a capture.
fn dissect(pcap: &str, port: u16) -> Result<BTreeMap<(bool, &'static str), u64>> {
    let out = Command::new("tshark")
        .args(["-r", pcap, "-o", "tcp.desegment_tcp_streams:TRUE", "-d", &format!("tcp.port=={port},http")])
        .args(["-Y", "websocket", "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,"])
        .args(["-e", "tcp.srcport", "-e", "websocket.opcode"])
        .output()
        .context("running tshark")?;
    if !out.status.success() {
        bail!("tshark failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut counts = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut f = line.split('\t');
        let src: u16 = f.next().unwrap_or("").parse()?;
        for op in f.next().unwrap_or("").split(',').filter(|s| !s.is_empty()) {
            let op: u64 = op.parse()?;
            let name = OPCODES.iter().find(|o| o.0 == op).map(|o| o.1).unwrap_or("reserved");
            *counts.entry((src == port, name)).or_default() += 1;
        }
    }
    Ok(counts)
}

#[test]
fn agent_agrees_with_tshark_dissector() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    if Command::new("tshark").arg("--version").stdout(Stdio::null()).status().is_err() {
        panic!("tshark is not installed; `cargo xtask setup` installs it");
    }
    let server = Server::python(&[])?;
    let agent = Agent::start("tshark")?;
    let pcap = agent.dir.join("cap.pcap");
    let pcap = pcap.to_str().unwrap().to_string();
    let mut cap = Command::new("tshark")
        .args(["-i", "lo", "-f", &format!("tcp port {}", server.port), "-w", &pcap, "-q"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    // Wait until the capture is really running (tshark prints "Capturing on").
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::metadata(&pcap).map(|m| m.len()).unwrap_or(0) == 0 {
        if Instant::now() > deadline {
            bail!("tshark did not start capturing");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));

    for (i, split) in [Split::PerFrame, Split::Random(3), Split::All].into_iter().enumerate() {
        let mut c = RawClient::connect(server.port)?;
        let mut frames =
            vec![enc::text("a", false), enc::ping("p"), enc::cont("b", true), enc::binary(70_000, true), enc::pong("x")];
        frames.extend((0..200).map(|k| enc::text(&format!("{k}"), true)));
        c.send(&frames, split)?;
        c.read_frames(203, Duration::from_secs(10))?;
        c.send(&[enc::close(3000 + i as u16)], Split::PerFrame)?;
        c.read_to_end(Duration::from_secs(5))?;
    }
    let ws = agent.wait_ws(server.pid, "closed", |w| w["connections_closed"] == 3)?;
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(cap.id() as i32, libc::SIGINT) };
    cap.wait()?;

    let d = dissect(&pcap, server.port)?;
    let total: u64 = d.values().sum();
    assert!(total > 600, "the dissector saw the traffic: {d:?}");
    for (sent, key) in [(false, "frames_received"), (true, "frames_sent")] {
        for (_, name) in OPCODES {
            let agent_n = ws[key][name].as_u64().unwrap();
            let tshark_n = d.get(&(sent, name)).copied().unwrap_or(0);
            assert_eq!(agent_n, tshark_n, "{key}.{name}: agent {agent_n}, tshark {tshark_n}; {ws:#}");
        }
    }
    let _: Value = ws;
    Ok(())
}
