//! Scenario 2: ns per program run for processes the probe does not track (the tax every process
//! on the host pays), next to the floors: an empty raw tracepoint program and an empty bpftrace
//! classic tracepoint program. A syscall-heavy `dd` runs while no WebSocket traffic does; with
//! each probe mode attached, the run count of every `wsg_*` program is taken around it (the
//! socket mode's should not move: `dd` does no socket I/O), and the stats-mode micro child
//! (micro.rs) splits socket I/O into untracked and tracked runs.

use super::bpf::{self, EmptyRawTp};
use super::procs::{self, Proc};
use super::stats::median;
use super::Ctx;
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const VARIANTS: [&str; 5] = ["none", "wsguard", "wsguard_syscall", "empty_raw_tp", "bpftrace_empty_classic_tp"];
/// With `--compare`: the two builds next to the floor.
const COMPARE: [&str; 3] = ["wsguard", "wsguard_base", "empty_raw_tp"];

pub fn run(ctx: &mut Ctx) -> Result<Value> {
    let s = ctx.settings.clone();
    let was = bpf::stats_enabled();
    bpf::set_stats(true);
    let mut runs = Vec::new();
    let variants: Vec<&str> = if ctx.base_bin.is_some() {
        COMPARE.to_vec()
    } else {
        VARIANTS.iter().copied().filter(|v| *v != "wsguard_syscall" || ctx.syscall_cfg.is_some()).collect()
    };
    let result = (|| -> Result<()> {
        for run in 0..s.dd_runs {
            for &v in &variants {
                if ctx.interrupted() {
                    return Ok(());
                }
                let r = one(ctx, v, s.dd_count).with_context(|| format!("probe cost {v}"))?;
                println!(
                    "    run {run} {v:<26} dd {:.2} s  enter {:>6.1} ns/run  exit {:>6.1} ns/run  wsg runs {}",
                    r["dd_s"].as_f64().unwrap_or(0.0),
                    r["enter_ns_per_run"].as_f64().unwrap_or(f64::NAN),
                    r["exit_ns_per_run"].as_f64().unwrap_or(f64::NAN),
                    r["wsg_runs_during_dd"]
                );
                if !r["socket_io"].is_null() {
                    let m = &r["socket_io"];
                    println!(
                        "        socket I/O ({}): untracked {:>6.1} ns/run  tracked {:>7.1} ns/run  wsg runs during {} file syscalls: {}",
                        m["programs"],
                        m["untracked_ns_per_run"].as_f64().unwrap_or(f64::NAN),
                        m["tracked_ns_per_run"].as_f64().unwrap_or(f64::NAN),
                        m["file_syscalls"],
                        m["wsg_runs_during_file_syscalls"]
                    );
                }
                let mut r = r;
                r["run"] = json!(run);
                runs.push(r);
            }
        }
        Ok(())
    })();
    bpf::set_stats(was);
    result?;
    let mut medians = serde_json::Map::new();
    for &v in &variants {
        let m = |k: &str| {
            let xs: Vec<f64> = runs.iter().filter(|r| r["variant"] == v).filter_map(|r| r[k].as_f64()).collect();
            median(&xs)
        };
        let sio = |k: &str| {
            let xs: Vec<f64> = runs.iter().filter(|r| r["variant"] == v).filter_map(|r| r["socket_io"][k].as_f64()).collect();
            median(&xs)
        };
        let programs = runs.iter().find(|r| r["variant"] == v).map(|r| r["socket_io"]["programs"].clone());
        medians.insert(
            v.into(),
            json!({"dd_s": m("dd_s"), "enter_ns_per_run": m("enter_ns_per_run"),
            "exit_ns_per_run": m("exit_ns_per_run"),
            "wsg_runs_during_dd": m("wsg_runs_during_dd"), "dd_syscalls": 2 * s.dd_count,
            "socket_io": {
                "programs": programs,
                "untracked_ns_per_run": sio("untracked_ns_per_run"),
                "tracked_ns_per_run": sio("tracked_ns_per_run"),
                "ws_phase_ns_per_run": sio("ws_phase_ns_per_run"),
                "file_syscalls": sio("file_syscalls"),
                "wsg_runs_during_file_syscalls": sio("wsg_runs_during_file_syscalls"),
            }}),
        );
    }
    // Wall-time tax per syscall vs the no-probe runs (2 syscalls per dd byte).
    let none = medians.get("none").and_then(|m| m["dd_s"].as_f64());
    for &v in &variants {
        if let (Some(base), Some(t)) = (none, medians[v]["dd_s"].as_f64()) {
            medians[v]["added_ns_per_syscall_wall"] = json!((t - base) * 1e9 / (2.0 * s.dd_count as f64));
        }
    }
    Ok(json!({
        "workload": format!("dd if=/dev/zero of=/dev/null bs=1 count={} (2 syscalls per byte), pinned to CPU 0, no WebSocket traffic", s.dd_count),
        "on_mode": ctx.on_mode,
        "socket_io_workload": format!("with each wsguard variant, after dd: one process pinned to CPU 0, {} loopback TCP pairs to itself; {} echo rounds over plain (non-WebSocket) pairs = untracked socket I/O, then {} rounds over WebSocket pairs (the server's read and write tracked, the client's untracked and taken out at the untracked figure), then {} reads of /dev/zero and writes to /dev/null by this watched process", s.micro_conns / 4, s.micro_rounds / 4, s.micro_rounds / 4, s.micro_rounds / 4),
        "bpf_stats_enabled": "during all runs of this scenario (adds its own clock reads to each run)",
        "runs": runs,
        "medians": medians,
    }))
}

fn one(ctx: &mut Ctx, v: &str, count: u64) -> Result<Value> {
    let mut agent: Option<Proc> = None;
    let mut floor = Vec::new();
    let mut tracer: Option<Proc> = None;
    let mut ids: Vec<u64> = Vec::new();
    match v {
        "wsguard" | "wsguard_base" | "wsguard_syscall" => {
            let a = match (v, &ctx.syscall_cfg) {
                ("wsguard_syscall", Some(cfg)) => ctx.start_agent_with(&ctx.bin, cfg)?,
                _ => ctx.start_agent_bin(ctx.agent_bin(if v == "wsguard" { "on" } else { "base" }))?,
            };
            // The socket mode's data programs run on socket I/O only, which dd does not do: its
            // cost here is the `wsg_runs_during_dd` count, not ns per run of other processes'
            // background socket I/O.
            if let Some((e, x)) = bpf::wsguard_progs(&ctx.pin_path).filter(|_| !bpf::has_own_prog(bpf::SOCKET_HOT[0])) {
                ids = vec![e, x];
            }
            agent = Some(a);
        }
        "empty_raw_tp" => {
            for tp in ["sys_enter", "sys_exit"] {
                let p = EmptyRawTp::attach(tp)?;
                ids.push(p.prog_id);
                floor.push(p);
            }
        }
        "bpftrace_empty_classic_tp" if crate::util::which("bpftrace").is_some() => {
            let before = bpf::progs();
            let mut p = Proc::spawn(
                "bpftrace",
                Command::new("bpftrace")
                    .args(["-e", "tracepoint:raw_syscalls:sys_enter { } tracepoint:raw_syscalls:sys_exit { }"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null()),
            )?;
            p.wait_line("Attaching", Duration::from_secs(30))?;
            std::thread::sleep(Duration::from_millis(500));
            let after = bpf::progs();
            let mut new: Vec<(u64, String)> =
                after.iter().filter(|(id, _)| !before.contains_key(id)).map(|(id, p)| (*id, p.1.clone())).collect();
            new.sort_by_key(|(_, name)| !name.contains("enter"));
            ids = new.into_iter().map(|(id, _)| id).collect();
            tracer = Some(p);
        }
        _ => {}
    }
    let c0 = bpf::counts(&ids);
    let a0 = bpf::all_wsguard_counts();
    let t0 = Instant::now();
    let ok = Command::new("taskset")
        .args(["-c", "0", "dd", "if=/dev/zero", "of=/dev/null", "bs=1"])
        .arg(format!("count={count}"))
        .arg("status=none")
        .stdin(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let dd_s = t0.elapsed().as_secs_f64();
    let c1 = bpf::counts(&ids);
    let a1 = bpf::all_wsguard_counts();
    let wsg_runs = agent.is_some().then(|| a1.cnt.saturating_sub(a0.cnt));
    let socket_io = match agent {
        Some(_) => {
            let s = &ctx.settings;
            super::micro::stats(s.micro_conns / 4, s.micro_rounds / 4)
                .map_err(|e| println!("    socket I/O stats failed: {e:#}"))
                .ok()
        }
        None => None,
    };
    drop(floor);
    if let Some(mut t) = tracer {
        t.stop(Duration::from_secs(5));
    }
    if let Some(a) = agent {
        procs::stop_agent(a, &ctx.bin, &ctx.cfg);
    }
    anyhow::ensure!(ok, "dd failed");
    let per = |i: usize| c0.get(i).zip(c1.get(i)).and_then(|(a, b)| bpf::ns_per_run(*a, *b));
    Ok(json!({
        "variant": v,
        "dd_s": dd_s,
        "prog_ids": ids,
        "enter_ns_per_run": per(0),
        "exit_ns_per_run": per(1),
        "enter_runs": c0.first().zip(c1.first()).map(|(a, b)| b.cnt - a.cnt),
        "wsg_runs_during_dd": wsg_runs,
        "socket_io": socket_io,
        "loadavg": procs::loadavg(),
    }))
}
