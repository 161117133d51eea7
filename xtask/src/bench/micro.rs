//! Scenario 2b: the probe's cost per tracked syscall, isolated. bpf_stats gives one total per
//! program over every process on the host, which on a shared machine includes other people's
//! servers (watched by the probe too) and load; here one child process (`bench --micro`) plays
//! server and client of N WebSocket connections over loopback, single-threaded on one CPU, and
//! measures its own CPU time per echo round with the agent off and on. Each round is 4 syscalls:
//! the client's write and read (on fds the probe never tracked) and the server's read and write
//! (tracked: handshake done, frame walk, counters, response latency). Connections are used
//! round-robin, so each one's state is cold by the time it is used again, as in a real server
//! with many connections. Variants take turns; medians of the rounds.

use super::procs::{self, Proc};
use super::stats::median;
use super::Ctx;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

/// `bench --micro CONNS:ROUNDS`: set up, warm up, measure; prints `MICRO <ns per round>`.
pub fn child(spec: &str) -> Result<()> {
    let (conns, rounds) = spec.split_once(':').context("--micro CONNS:ROUNDS")?;
    let (conns, rounds): (usize, u64) = (conns.parse()?, rounds.parse()?);
    procs::raise_nofile(2 * conns as u64 + 100);
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let mut pairs = Vec::with_capacity(conns);
    for _ in 0..conns {
        let mut c = TcpStream::connect(addr)?;
        let (mut s, _) = l.accept()?;
        c.set_nodelay(true)?;
        s.set_nodelay(true)?;
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")?;
        let mut buf = [0u8; 512];
        let _ = s.read(&mut buf)?;
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")?;
        let _ = c.read(&mut buf)?;
        pairs.push((c, s));
    }
    let mask = [0x12, 0x34, 0x56, 0x78];
    let client_frame = super::ws::encode_text(0, mask);
    let mut server_frame = [0u8; 2 + super::ws::PAYLOAD];
    server_frame[0] = 0x81;
    server_frame[1] = super::ws::PAYLOAD as u8;
    let mut buf = [0u8; 4096];
    let mut round = |i: usize| -> Result<()> {
        let (c, s) = &mut pairs[i % conns];
        c.write_all(&client_frame)?;
        let n = s.read(&mut buf)?;
        if n != client_frame.len() {
            bail!("server read {n} bytes");
        }
        s.write_all(&server_frame)?;
        let n = c.read(&mut buf)?;
        if n != server_frame.len() {
            bail!("client read {n} bytes");
        }
        Ok(())
    };
    for i in 0..2 * conns {
        round(i)?;
    }
    let t0 = crate::sys::thread_cpu_ns();
    for i in 0..rounds as usize {
        round(i)?;
    }
    let ns = (crate::sys::thread_cpu_ns() - t0) as f64 / rounds as f64;
    println!("MICRO {ns:.1}");
    Ok(())
}

fn one(conns: usize, rounds: u64) -> Result<f64> {
    let exe = std::env::current_exe()?;
    let mut p = Proc::spawn(
        "micro",
        Command::new("taskset")
            .args(["-c", "0"])
            .arg(exe)
            .args(["bench", "--micro", &format!("{conns}:{rounds}")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped()),
    )?;
    let v = p.wait_line("MICRO ", Duration::from_secs(300))?;
    p.stop(Duration::from_secs(5));
    Ok(v.trim().parse()?)
}

/// off / on (/ base) in turns; ns per round and the probe's share.
pub fn run(ctx: &mut Ctx) -> Result<Value> {
    let s = ctx.settings.clone();
    let (conns, rounds) = (s.micro_conns, s.micro_rounds);
    let mut variants = vec!["off", "on"];
    if ctx.base_bin.is_some() {
        variants.push("base");
    }
    let mut runs = Vec::new();
    for run in 0..s.runs {
        for &v in &variants {
            if ctx.interrupted() {
                break;
            }
            let agent = match v {
                "off" => None,
                _ => Some(ctx.start_agent_bin(ctx.agent_bin(v))?),
            };
            let r = one(conns, rounds);
            if let Some(a) = agent {
                procs::stop_agent(a, &ctx.bin, &ctx.cfg);
            }
            let ns = r.with_context(|| format!("micro run {run} ({v})"))?;
            println!("    run {run} {v:<4} {ns:>8.1} ns per round (4 syscalls, 2 tracked)");
            runs.push(json!({"variant": v, "run": run, "ns_per_round": ns, "loadavg": procs::loadavg()}));
        }
    }
    let med = |v: &str| {
        let xs: Vec<f64> = runs.iter().filter(|r| r["variant"] == v).filter_map(|r| r["ns_per_round"].as_f64()).collect();
        median(&xs)
    };
    let off = med("off");
    let added = |v: &str| Some((med(v)? - off?) / 2.0);
    Ok(json!({
        "workload": format!("one process, {conns} WebSocket connections to itself over loopback, used round-robin; a round = client write, server read (tracked), server write (tracked), client read; {rounds} rounds per run, pinned to CPU 0"),
        "connections": conns,
        "rounds": rounds,
        "runs": runs,
        "medians": {"off": off, "on": med("on"), "base": med("base")},
        "added_ns_per_tracked_syscall": {"on": added("on"), "base": added("base")},
    }))
}
