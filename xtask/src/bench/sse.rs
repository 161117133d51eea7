//! The `sse` scenario: what counting Server-Sent Events costs the server that streams them.
//! Scanning an event stream for blank lines is per byte, unlike WebSocket framing, so issue #20
//! asks what a 10k events/s stream costs. node's own `http` (tests/servers/sse_node.js, chunked)
//! pinned to CPU 0 writes one stream of fixed-size events at a fixed rate; this process (on
//! CPU 1) reads it raw. Agent off / on alternate run by run; server CPU per event (schedstat),
//! the server's read/write syscalls per event, and the probe's ns per program run and per event
//! from `kernel.bpf_stats_enabled`. In `on` runs the agent's own count of the stream's events is
//! recorded next to the number written.

use super::{bpf, procs, stats, Ctx};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One event as a market-data feed would send it: an id, one JSON `data` line, a blank line.
const EVENT: &[u8] = b"id: 1042\ndata: {\"sym\":\"WSG\",\"bid\":101.25,\"ask\":101.27,\"seq\":1042}\n\n";

pub fn run(ctx: &mut Ctx) -> Result<Value> {
    let rate = 10_000.0;
    let secs = if ctx.settings.quick { 4.0 } else { 10.0 };
    let dir = ctx.work.join("sse");
    std::fs::create_dir_all(&dir)?;
    let mut server = procs::Proc::spawn(
        "SSE server",
        Command::new("taskset")
            .args(["-c", "0", "node"])
            .arg(ctx.servers_dir.join("sse_node.js"))
            .arg("0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::options().create(true).append(true).open(dir.join("server.log"))?),
    )?;
    let port: u16 = server.wait_line("READY ", Duration::from_secs(15))?.parse().context("bad READY line")?;
    println!(
        "    node http SSE: pid {} on 127.0.0.1:{port}; one stream, {rate} events/s of {} bytes, {secs} s",
        server.pid(),
        EVENT.len()
    );
    let stats_was = bpf::stats_enabled();
    bpf::set_stats(true);
    let mut runs = Vec::new();
    for run in 0..ctx.settings.runs {
        for variant in ["off", "on"] {
            if ctx.interrupted() {
                break;
            }
            let r = one_run(ctx, variant, server.pid(), port, rate, secs)
                .with_context(|| format!("sse run {run} ({variant})"))
                .unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
            println!(
                "    run {run} {variant:<3} {:>7.0} events/s  server {:>6.3} µs/event  {:.2} syscalls/event  probe {:>6.0} ns/run {:>6.0} ns/event  agent counted {}",
                r["achieved_rate"].as_f64().unwrap_or(f64::NAN),
                r["server_cpu_us_per_event"].as_f64().unwrap_or(f64::NAN),
                r["server_syscalls_per_event"].as_f64().unwrap_or(f64::NAN),
                r["probe_ns_per_run"].as_f64().unwrap_or(f64::NAN),
                r["probe_ns_per_event"].as_f64().unwrap_or(f64::NAN),
                r["agent_events_sent"]
            );
            runs.push(json!({"variant": variant, "run": run, "result": r, "loadavg": procs::loadavg()}));
        }
    }
    bpf::set_stats(stats_was);
    server.stop(Duration::from_secs(5));
    let med = |variant: &str, key: &str| {
        let xs: Vec<f64> = runs.iter().filter(|r| r["variant"] == variant).filter_map(|r| r["result"][key].as_f64()).collect();
        stats::median(&xs)
    };
    let (off, on) = (med("off", "server_cpu_us_per_event"), med("on", "server_cpu_us_per_event"));
    let ratio = stats::ratio(on, off);
    println!(
        "    median server CPU per event: off {:.3} µs, on {:.3} µs (×{:.3}); probe {:.0} ns/run, {:.0} ns/event",
        off.unwrap_or(f64::NAN),
        on.unwrap_or(f64::NAN),
        ratio.unwrap_or(f64::NAN),
        med("on", "probe_ns_per_run").unwrap_or(f64::NAN),
        med("on", "probe_ns_per_event").unwrap_or(f64::NAN),
    );
    Ok(json!({
        "server": "node http (tests/servers/sse_node.js), chunked",
        "rate": rate, "seconds": secs, "event_bytes": EVENT.len(),
        "median_server_cpu_us_per_event": {"off": off, "on": on},
        "ratio_on_off": ratio,
        "median_server_syscalls_per_event": {"off": med("off", "server_syscalls_per_event"), "on": med("on", "server_syscalls_per_event")},
        "median_achieved_rate": {"off": med("off", "achieved_rate"), "on": med("on", "achieved_rate")},
        "median_probe_ns_per_run": med("on", "probe_ns_per_run"),
        "median_probe_runs_per_event": med("on", "probe_runs_per_event"),
        "median_probe_ns_per_event": med("on", "probe_ns_per_event"),
        "runs": runs,
    }))
}

/// Read one stream to its chunked terminator; the bytes read.
fn read_stream(port: u16, target: &str, limit: Duration) -> Result<u64> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    write!(s, "GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n")?;
    let deadline = Instant::now() + limit;
    let (mut total, mut tail) = (0u64, Vec::new());
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match s.read(&mut buf) {
            Ok(0) => bail!("the server closed before the end of the stream"),
            Ok(n) => {
                total += n as u64;
                tail.extend_from_slice(&buf[..n]);
                let keep = tail.len().saturating_sub(8);
                tail.drain(..keep);
                if tail.ends_with(b"\r\n0\r\n\r\n") {
                    return Ok(total);
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => return Err(e.into()),
        }
        if Instant::now() > deadline {
            bail!("the stream did not end within {limit:?}");
        }
    }
}

/// The agent's `sse.events_sent` for `pid` once a snapshot shows its stream closed (None when
/// no snapshot does within the wait: an agent without SSE counting).
fn agent_events(ctx: &Ctx, pid: u32) -> Option<u64> {
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        if let Ok(s) = procs::http_get_json(ctx.api, "/api/v1/snapshot") {
            let p = s["processes"].as_array().and_then(|ps| ps.iter().find(|p| p["pid"] == pid).cloned());
            if let Some(sse) = p.map(|p| p["sse"].clone()) {
                if sse["streams_closed"].as_u64() >= Some(1) {
                    return sse["events_sent"].as_u64();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    None
}

fn one_run(ctx: &Ctx, variant: &str, pid: u32, port: u16, rate: f64, secs: f64) -> Result<Value> {
    let n = (rate * secs) as u64;
    let hex: String = EVENT.iter().map(|b| format!("{b:02x}")).collect();
    let target = format!("/events?b={hex}&end=server&n={n}&rate={rate}");
    let agent = if variant == "on" { Some(ctx.start_agent_bin(&ctx.bin)?) } else { None };
    let (cpu0, io0, progs0) = (procs::sched_ns(pid).context("server gone")?, procs::io_syscalls(pid), bpf::all_wsguard_counts());
    let t0 = Instant::now();
    let read = read_stream(port, &target, Duration::from_secs_f64(secs * 3.0 + 10.0));
    let wall = t0.elapsed().as_secs_f64();
    let (cpu1, io1, progs1) = (procs::sched_ns(pid).context("server gone")?, procs::io_syscalls(pid), bpf::all_wsguard_counts());
    let counted = if agent.is_some() && read.is_ok() { agent_events(ctx, pid) } else { None };
    if let Some(a) = agent {
        procs::stop_agent(a, &ctx.bin, &ctx.cfg);
    }
    let bytes = read?;
    let runs = progs1.cnt.saturating_sub(progs0.cnt);
    let ns = progs1.ns.saturating_sub(progs0.ns);
    Ok(json!({
        "events": n,
        "bytes_read": bytes,
        "seconds": wall,
        "achieved_rate": n as f64 / wall,
        "server_cpu_us_per_event": (cpu1 - cpu0) as f64 / 1000.0 / n as f64,
        "server_syscalls_per_event": io0.zip(io1).map(|(a, b)| (b - a) as f64 / n as f64),
        "probe_runs_per_event": (runs > 0).then(|| runs as f64 / n as f64),
        "probe_ns_per_run": (runs > 0).then(|| ns as f64 / runs as f64),
        "probe_ns_per_event": (runs > 0).then(|| ns as f64 / n as f64),
        "agent_events_sent": counted,
    }))
}
