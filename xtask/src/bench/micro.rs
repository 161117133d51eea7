//! Scenario 2b: the probe's cost per tracked syscall, isolated. bpf_stats gives one total per
//! program over every process on the host, which on a shared machine includes other people's
//! servers (watched by the probe too) and load; here one child process (`bench --micro`) plays
//! server and client of N WebSocket connections over loopback, single-threaded on one CPU, and
//! measures its own CPU time per echo round with the agent off and on. Each round is 4 syscalls:
//! the client's write and read (on fds the probe never tracked) and the server's read and write
//! (tracked: handshake done, frame walk, counters, response latency). Connections are used
//! round-robin, so each one's state is cold by the time it is used again, as in a real server
//! with many connections. Variants take turns; medians of the rounds.
//!
//! The same child in stats mode (`CONNS:ROUNDS:stats`, used by the probe-cost scenario) turns
//! `kernel.bpf_stats_enabled` on and splits the probe's in-kernel time by kind of run, in one
//! process with nothing else of ours running: untracked socket I/O (plain TCP pairs, no
//! WebSocket), tracked socket I/O (the WebSocket rounds, whose client half is untracked and is
//! taken out at the untracked figure), and the non-socket syscalls of this watched process
//! (reads of /dev/zero, writes to /dev/null), for which every `wsg_*` program's run count should
//! not move.

use super::bpf;
use super::floor::{self, Floor};
use super::procs::{self, Proc};
use super::stats::median;
use super::Ctx;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `bench --micro CONNS:ROUNDS[:stats]`: set up, warm up, measure; prints `MICRO <json>` (CPU
/// and wall ns per round over WebSocket pairs and over plain TCP pairs), and `STATS <json>` in
/// stats mode.
pub fn child(spec: &str) -> Result<()> {
    let mut parts = spec.split(':');
    let (conns, rounds) = (parts.next().context("--micro CONNS:ROUNDS")?, parts.next().context("--micro CONNS:ROUNDS")?);
    let stats = parts.next() == Some("stats");
    let (conns, rounds): (usize, u64) = (conns.parse()?, rounds.parse()?);
    procs::raise_nofile(4 * conns as u64 + 100);
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
    // Plain TCP pairs: the same bytes, but the server's first read is not HTTP, so the probe
    // stops following them at once (socket mode: state deleted; syscall mode: forgotten). Every
    // syscall on them is untracked socket I/O.
    let mut plain = Vec::with_capacity(conns);
    for _ in 0..conns {
        let c = TcpStream::connect(addr)?;
        let (s, _) = l.accept()?;
        c.set_nodelay(true)?;
        s.set_nodelay(true)?;
        plain.push((c, s));
    }
    let mask = [0x12, 0x34, 0x56, 0x78];
    let client_frame = super::ws::encode_text(0, mask);
    let mut server_frame = [0u8; 2 + super::ws::PAYLOAD];
    server_frame[0] = 0x81;
    server_frame[1] = super::ws::PAYLOAD as u8;
    let frames = (&client_frame[..], &server_frame[..]);
    let mut buf = [0u8; 4096];
    for i in 0..2 * conns {
        round(&mut pairs[i % conns], frames.0, frames.1, &mut buf)?;
        round(&mut plain[i % conns], frames.0, frames.1, &mut buf)?;
    }
    // (CPU ns, wall ns) per round over `set`.
    let mut timed = |set: &mut [(TcpStream, TcpStream)]| -> Result<(f64, f64)> {
        let (t0, w0) = (crate::sys::thread_cpu_ns(), Instant::now());
        for i in 0..rounds as usize {
            round(&mut set[i % conns], frames.0, frames.1, &mut buf)?;
        }
        let wall = w0.elapsed().as_nanos() as f64;
        Ok(((crate::sys::thread_cpu_ns() - t0) as f64 / rounds as f64, wall / rounds as f64))
    };
    let (ws_cpu, ws_wall) = timed(&mut pairs)?;
    let (plain_cpu, plain_wall) = timed(&mut plain)?;
    println!("MICRO {}", json!({"ws_cpu": ws_cpu, "ws_wall": ws_wall, "plain_cpu": plain_cpu, "plain_wall": plain_wall}));
    if stats {
        let v = stats_phases(&mut plain, &mut pairs, rounds, frames)?;
        println!("STATS {v}");
    }
    Ok(())
}

/// One echo round on a pair: client write, server read, server write, client read.
fn round(pair: &mut (TcpStream, TcpStream), cf: &[u8], sf: &[u8], buf: &mut [u8]) -> Result<()> {
    let (c, s) = pair;
    c.write_all(cf)?;
    let n = s.read(buf)?;
    if n != cf.len() {
        bail!("server read {n} bytes");
    }
    s.write_all(sf)?;
    let n = c.read(buf)?;
    if n != sf.len() {
        bail!("client read {n} bytes");
    }
    Ok(())
}

/// The stats-mode phases (see the module doc). Counts are taken with bpftool between phases.
fn stats_phases(
    plain: &mut [(TcpStream, TcpStream)],
    ws: &mut [(TcpStream, TcpStream)],
    rounds: u64,
    frames: (&[u8], &[u8]),
) -> Result<Value> {
    let conns = ws.len();
    let mut buf = [0u8; 4096];
    let was = bpf::stats_enabled();
    bpf::set_stats(true);
    let hot: &[&str] = if bpf::has_own_prog(bpf::SOCKET_HOT[0]) { &bpf::SOCKET_HOT } else { &bpf::SYSCALL_HOT[1..] };
    let result = (|| -> Result<Value> {
        let u0 = bpf::counts_named(hot);
        for i in 0..rounds as usize {
            round(&mut plain[i % conns], frames.0, frames.1, &mut buf)?;
        }
        let u1 = bpf::counts_named(hot);
        for i in 0..rounds as usize {
            round(&mut ws[i % conns], frames.0, frames.1, &mut buf)?;
        }
        let t1 = bpf::counts_named(hot);
        let a0 = bpf::all_wsguard_counts();
        let mut zero = std::fs::File::open("/dev/zero")?;
        let mut null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
        let mut b = [0u8; 1];
        for _ in 0..rounds {
            zero.read_exact(&mut b)?;
            null.write_all(&b)?;
        }
        let a1 = bpf::all_wsguard_counts();
        let u_runs = u1.cnt - u0.cnt;
        let untracked = (u_runs > 0).then(|| (u1.ns - u0.ns) as f64 / u_runs as f64);
        // The WebSocket phase: 2 tracked runs per round (the server's read and write); the rest
        // (the client's, and anything else on the host meanwhile) charged at the untracked cost.
        let (t_runs, t_ns) = (t1.cnt - u1.cnt, t1.ns - u1.ns);
        let n = 2 * rounds;
        let tracked = untracked.filter(|_| t_runs >= n).map(|u| (t_ns as f64 - (t_runs - n) as f64 * u) / n as f64);
        Ok(json!({
            "programs": hot,
            "untracked_runs": u_runs, "untracked_ns_per_run": untracked,
            "ws_phase_runs": t_runs, "ws_phase_ns": t_ns, "tracked_runs": n,
            "tracked_ns_per_run": tracked,
            "ws_phase_ns_per_run": (t_runs > 0).then(|| t_ns as f64 / t_runs as f64),
            "file_syscalls": 2 * rounds,
            "wsg_runs_during_file_syscalls": a1.cnt - a0.cnt,
        }))
    })();
    bpf::set_stats(was);
    result
}

fn spawn(conns: usize, rounds: u64, stats: bool) -> Result<Proc> {
    let exe = std::env::current_exe()?;
    let spec = format!("{conns}:{rounds}{}", if stats { ":stats" } else { "" });
    Proc::spawn(
        "micro",
        Command::new("taskset")
            .args(["-c", "0"])
            .arg(exe)
            .args(["bench", "--micro", &spec])
            .stdin(Stdio::null())
            .stdout(Stdio::piped()),
    )
}

/// One timed child (bpf_stats as the caller left it): its `MICRO` JSON.
fn one(conns: usize, rounds: u64) -> Result<Value> {
    let mut p = spawn(conns, rounds, false)?;
    let v = p.wait_line("MICRO ", Duration::from_secs(300));
    p.stop(Duration::from_secs(5));
    Ok(serde_json::from_str(v?.trim())?)
}

/// ns per run of programs `ids` (bpf_stats on) while a shorter child runs: every run of a floor
/// program is an untracked one.
fn floor_stats(ids: &[u64], conns: usize, rounds: u64) -> Result<Option<f64>> {
    let was = bpf::stats_enabled();
    bpf::set_stats(true);
    let c0 = bpf::counts(ids);
    let r = one(conns, rounds);
    let c1 = bpf::counts(ids);
    bpf::set_stats(was);
    r?;
    let (ns, cnt) = c0.iter().zip(&c1).fold((0, 0), |(ns, cnt), (a, b)| (ns + b.ns - a.ns, cnt + b.cnt - a.cnt));
    Ok((cnt > 0).then(|| ns as f64 / cnt as f64))
}
/// The stats-mode child under whatever probe is attached now: its `STATS` JSON.
pub fn stats(conns: usize, rounds: u64) -> Result<Value> {
    let mut p = spawn(conns, rounds, true)?;
    let v = p.wait_line("STATS ", Duration::from_secs(300));
    p.stop(Duration::from_secs(5));
    Ok(serde_json::from_str(v?.trim())?)
}

/// off / on / syscall (/ base) and the two tp_btf floors in turns, bpf_stats off; per variant
/// the ns per round of WebSocket and of plain pairs (CPU and wall), and from them the ns each
/// untracked and each tracked socket syscall adds. After each timed run, with the same probe,
/// a shorter run with bpf_stats on gives the ns/run figures to set beside them.
pub fn run(ctx: &mut Ctx) -> Result<Value> {
    let s = ctx.settings.clone();
    let (conns, rounds) = (s.micro_conns, s.micro_rounds);
    let mut variants = vec!["off", "on"];
    if ctx.base_bin.is_some() {
        variants.push("base");
    } else {
        if ctx.syscall_cfg.is_some() {
            variants.push("syscall");
        }
        if ctx.on_mode == "socket" {
            variants.extend([Floor::Empty.name(), Floor::SkGet.name()]);
        }
    }
    let stats_was = bpf::stats_enabled();
    bpf::set_stats(false);
    let mut runs = Vec::new();
    let result = (|| -> Result<()> {
        for run in 0..s.runs {
            for &v in &variants {
                if ctx.interrupted() {
                    return Ok(());
                }
                let r = one_variant(ctx, v, conns, rounds).with_context(|| format!("micro run {run} ({v})"))?;
                println!(
                    "    run {run} {v:<22} ws {:>7.0} ns/round  plain {:>7.0} ns/round (wall {:>7.0} / {:>7.0})  bpf_stats: {}",
                    r["ws_cpu"].as_f64().unwrap_or(f64::NAN),
                    r["plain_cpu"].as_f64().unwrap_or(f64::NAN),
                    r["ws_wall"].as_f64().unwrap_or(f64::NAN),
                    r["plain_wall"].as_f64().unwrap_or(f64::NAN),
                    r["bpf_stats"]
                );
                let mut r = r;
                r["variant"] = json!(v);
                r["run"] = json!(run);
                r["loadavg"] = json!(procs::loadavg());
                runs.push(r);
            }
        }
        Ok(())
    })();
    bpf::set_stats(stats_was);
    result?;
    let med = |v: &str, k: &str| {
        let xs: Vec<f64> = runs.iter().filter(|r| r["variant"] == v).filter_map(|r| r[k].as_f64()).collect();
        median(&xs)
    };
    let stat = |v: &str, k: &str| {
        let xs: Vec<f64> = runs.iter().filter(|r| r["variant"] == v).filter_map(|r| r["bpf_stats"][k].as_f64()).collect();
        median(&xs)
    };
    // Per syscall, from the medians: a plain round is 4 untracked syscalls; a WebSocket round is
    // 2 untracked (the client's) and 2 tracked (the server's read and write).
    let per_syscall = |v: &str, clock: &str| {
        let d = |k: &str| Some(med(v, &format!("{k}_{clock}"))? - med("off", &format!("{k}_{clock}"))?);
        let untracked = d("plain").map(|x| x / 4.0);
        let tracked = d("ws").zip(untracked).map(|(w, u)| (w - 2.0 * u) / 2.0);
        json!({"untracked": untracked, "tracked": tracked})
    };
    let mut table = serde_json::Map::new();
    for &v in &variants {
        table.insert(
            v.into(),
            json!({
                "ns_per_round": {"ws_cpu": med(v, "ws_cpu"), "ws_wall": med(v, "ws_wall"),
                                 "plain_cpu": med(v, "plain_cpu"), "plain_wall": med(v, "plain_wall")},
                "added_ns_per_syscall_wall": if v == "off" { Value::Null } else { per_syscall(v, "wall") },
                "added_ns_per_syscall_cpu": if v == "off" { Value::Null } else { per_syscall(v, "cpu") },
                "bpf_stats_ns_per_run": {"untracked": stat(v, "untracked_ns_per_run"), "tracked": stat(v, "tracked_ns_per_run"),
                                         "floor": stat(v, "floor_ns_per_run")},
            }),
        );
    }
    let ws_cpu = |v: &str| med(v, "ws_cpu");
    let added = |v: &str| Some((ws_cpu(v)? - ws_cpu("off")?) / 2.0);
    Ok(json!({
        "workload": format!("one process, {conns} WebSocket connections and {conns} plain TCP connections to itself over loopback, each set used round-robin; a round = client write, server read, server write, client read (on a WebSocket pair the server's two are tracked, on a plain pair all four are untracked); {rounds} rounds per set per run, pinned to CPU 0, bpf_stats off; then, with the same probe, {} rounds with bpf_stats on for the ns/run figures", rounds / 4),
        "connections": conns,
        "rounds": rounds,
        "on_mode": ctx.on_mode,
        "runs": runs,
        "variants": table,
        "medians": {"off": ws_cpu("off"), "on": ws_cpu("on"), "syscall": ws_cpu("syscall"), "base": ws_cpu("base")},
        "added_ns_per_tracked_syscall": {"on": added("on"), "syscall": added("syscall"), "base": added("base")},
    }))
}

/// One timed run of variant `v` and, with the same probe, its bpf_stats figures.
fn one_variant(ctx: &mut Ctx, v: &str, conns: usize, rounds: u64) -> Result<Value> {
    if v == Floor::Empty.name() || v == Floor::SkGet.name() {
        let f = if v == Floor::Empty.name() { Floor::Empty } else { Floor::SkGet };
        let progs = floor::attach(f)?;
        let mut r = one(conns, rounds)?;
        r["bpf_stats"] = json!({"floor_ns_per_run": floor_stats(&progs.prog_ids, conns / 4, rounds / 4)?});
        return Ok(r);
    }
    let agent = match (v, &ctx.syscall_cfg) {
        ("off", _) => None,
        ("syscall", Some(cfg)) => Some(ctx.start_agent_with(&ctx.bin, cfg)?),
        _ => Some(ctx.start_agent_bin(ctx.agent_bin(v))?),
    };
    let r = one(conns, rounds).and_then(|mut r| {
        r["bpf_stats"] = match agent {
            Some(_) => stats(conns / 4, rounds / 4)?,
            None => Value::Null,
        };
        Ok(r)
    });
    if let Some(a) = agent {
        procs::stop_agent(a, &ctx.bin, &ctx.cfg);
    }
    r
}
