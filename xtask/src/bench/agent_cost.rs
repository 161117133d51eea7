//! Scenario 3: the agent's own CPU and RSS at N idle WebSocket connections and at a high frame
//! rate, and snapshot build time vs connections.

use super::procs::{self, Proc};
use super::stats::{loglog_slope, median};
use super::{load, Ctx};
use anyhow::Result;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub fn run(ctx: &mut Ctx) -> Result<Value> {
    let mut out = run_one(ctx, "on")?;
    if ctx.base_bin.is_some() && !ctx.interrupted() {
        println!("    --compare: the same with the base binary");
        out["base"] = run_one(ctx, "base")?;
    }
    Ok(out)
}

fn run_one(ctx: &mut Ctx, variant: &str) -> Result<Value> {
    let s = ctx.settings.clone();
    let target: SocketAddr = ([127, 0, 0, 1], ctx.server_port).into();
    let agent = ctx.start_agent_bin(ctx.agent_bin(variant))?;
    let apid = agent.pid();
    let mut idle = Vec::new();
    let mut held = Vec::new();
    let mut holders: Vec<Proc> = Vec::new();
    let mut extra_servers: Vec<(Proc, u16)> = Vec::new();
    let per_proc = super::per_process_conns(ctx.nofile);
    let result = (|| -> Result<Value> {
        for &n in &s.idle_levels {
            if ctx.interrupted() {
                break;
            }
            // Start over at each level: one chunk per server process and per client process,
            // each within the open-file limit.
            held.clear();
            for mut h in holders.drain(..) {
                h.stop(Duration::from_secs(3));
            }
            std::thread::sleep(Duration::from_secs(1));
            let t0 = Instant::now();
            let chunks: Vec<usize> = (0..n.div_ceil(per_proc)).map(|i| per_proc.min(n - i * per_proc)).collect();
            let mut opened = 0usize;
            let mut failed = None;
            for (i, &c) in chunks.iter().enumerate() {
                let port = if i == 0 {
                    ctx.server_port
                } else {
                    while extra_servers.len() < i {
                        extra_servers.push(procs::start_server(&ctx.servers_dir, 0, ctx.nofile, &ctx.work.join("server.log"))?);
                    }
                    extra_servers[i - 1].1
                };
                let addr: SocketAddr = ([127, 0, 0, 1], port).into();
                let r = if i == 0 {
                    ctx.rt.block_on(load::open(addr, c)).map(|v| {
                        held.extend(v.into_iter().map(|(s, _)| s));
                        c
                    })
                } else {
                    spawn_holder(port, c).map(|h| {
                        holders.push(h);
                        c
                    })
                };
                match r {
                    Ok(c) => opened += c,
                    Err(e) => {
                        failed = Some(format!("{e:#}"));
                        break;
                    }
                }
            }
            if let Some(e) = failed {
                println!("    could not open {n} connections: {e}");
                idle.push(json!({"connections": n, "error": e, "opened": opened}));
                break;
            }
            println!(
                "    {n} idle connections open over {} server process(es) ({:.1} s)",
                chunks.len(),
                t0.elapsed().as_secs_f64()
            );
            // Let at least one snapshot see them all.
            std::thread::sleep(s.agent_settle);
            let (c0, t0) = (procs::cpu_ticks(apid).unwrap_or(0), Instant::now());
            std::thread::sleep(s.agent_window);
            let cpu = (procs::cpu_ticks(apid).unwrap_or(0) - c0) as f64 / ctx.clk_tck;
            let pct = cpu / t0.elapsed().as_secs_f64() * 100.0;
            let rss = procs::rss_kib(apid).unwrap_or(0) as f64 / 1024.0;
            let snap = procs::http_get_json(ctx.api, "/api/v1/snapshot").ok();
            let snap_ms = snap.as_ref().and_then(|v| v["agent"]["snapshot_ms"].as_f64());
            let snap_cpu_ms = snap.as_ref().and_then(|v| v["agent"]["snapshot_cpu_ms"].as_f64());
            let entries = snap.as_ref().and_then(|v| v["probe"]["health"]["conn_map_entries"].as_u64());
            let server_rss: u64 = std::iter::once(ctx.server_pid)
                .chain(extra_servers.iter().map(|(p, _)| p.pid()))
                .filter_map(procs::rss_kib)
                .sum();
            println!(
                "    {n:>6} conns: agent {pct:.2}% of a core, RSS {rss:.1} MiB, snapshot {:.2} ms ({:.2} ms CPU), conn map entries {:?}",
                snap_ms.unwrap_or(f64::NAN),
                snap_cpu_ms.unwrap_or(f64::NAN),
                entries
            );
            idle.push(json!({
                "connections": n,
                "server_processes": chunks.len(),
                "agent_cpu_pct_of_core": pct,
                "agent_rss_mib": rss,
                "server_rss_mib": server_rss as f64 / 1024.0,
                "snapshot_ms": snap_ms,
                "snapshot_cpu_ms": snap_cpu_ms,
                "conn_map_entries": entries,
                "window_s": s.agent_window.as_secs_f64(),
                "loadavg": procs::loadavg(),
            }));
        }
        held.clear();
        for mut h in holders.drain(..) {
            h.stop(Duration::from_secs(3));
        }
        for (mut p, _) in extra_servers.drain(..) {
            p.stop(Duration::from_secs(3));
        }
        std::thread::sleep(Duration::from_secs(1));

        // High frame rate: frames counted both ways (each echoed message is 2 frames).
        let rate = s.fps_target / 2.0;
        let marks = [s.warm, s.warm + s.fps_measure];
        let sampler = move |_j: usize| (procs::cpu_ticks(apid).unwrap_or(0), Instant::now());
        let fps = match ctx.rt.block_on(load::open_loop(target, s.fps_conns, rate, &marks, sampler)) {
            Ok((ol, smp)) => {
                let cpu = (smp[1].0 - smp[0].0) as f64 / ctx.clk_tck;
                let secs = (smp[1].1 - smp[0].1).as_secs_f64();
                let reached = 2.0 * ol.window_msgs as f64 / ol.window_s;
                let pct = cpu / secs * 100.0;
                println!("    frames: target {:.0}/s, reached {reached:.0}/s, agent {pct:.2}% of a core", s.fps_target);
                json!({
                    "target_frames_per_s": s.fps_target,
                    "reached_frames_per_s": reached,
                    "connections": s.fps_conns,
                    "agent_cpu_pct_of_core": pct,
                    "agent_rss_mib": procs::rss_kib(apid).unwrap_or(0) as f64 / 1024.0,
                    "p50_ms": ol.hist.value_at_quantile(0.5) as f64 / 1000.0,
                    "p99_ms": ol.hist.value_at_quantile(0.99) as f64 / 1000.0,
                    "lost": ol.expected - ol.received.min(ol.expected),
                    "window_s": ol.window_s,
                })
            }
            Err(e) => json!({"error": format!("{e:#}")}),
        };
        // CPU time when the agent reports it (wall time also counts waiting for a CPU, which on
        // a busy machine has nothing to do with the number of connections).
        let key = if idle.iter().all(|r| r["snapshot_cpu_ms"].is_f64()) { "snapshot_cpu_ms" } else { "snapshot_ms" };
        let pts: Vec<(f64, f64)> = idle.iter().filter_map(|r| Some((r["connections"].as_f64()?, r[key].as_f64()?))).collect();
        let per_conn: Vec<f64> = pts.iter().map(|(n, ms)| ms / n * 1e3).collect();
        Ok(json!({
            "interval_s": 5.0,
            "idle": idle,
            "frames": fps,
            "snapshot_ms_loglog_slope": loglog_slope(&pts),
            "snapshot_slope_of": key,
            "snapshot_us_per_connection_median": median(&per_conn),
        }))
    })();
    procs::stop_agent(agent, &ctx.bin, &ctx.cfg);
    result
}

/// A child xtask holding `n` connections (`cargo xtask bench --hold PORT:N`).
fn spawn_holder(port: u16, n: usize) -> Result<Proc> {
    let exe = std::env::current_exe()?;
    let mut p = Proc::spawn(
        "connection holder",
        std::process::Command::new(exe)
            .args(["bench", "--hold", &format!("{port}:{n}")])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped()),
    )?;
    p.wait_line("HELD", Duration::from_secs(120))?;
    Ok(p)
}
