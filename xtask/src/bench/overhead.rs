//! Scenario 1 (+ 4, peers): the `ws` echo server at a fixed rate with the agent off, on, a
//! bpftrace counting script, or an nginx WebSocket proxy in front; and saturated throughput
//! off vs on. Variants alternate run by run (off, on, bpftrace, nginx, off, on, ...).

use super::bpf::{self, Counts};
use super::procs::{self, Proc};
use super::stats::{median, ratio};
use super::{load, sockmap, Ctx};
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Syscall exits the bpftrace peer counts: the same set the probe follows.
const BPFTRACE_EXITS: [&str; 11] =
    ["accept", "accept4", "read", "readv", "recvfrom", "recvmsg", "write", "writev", "sendto", "sendmsg", "close"];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Variant {
    Off,
    On,
    /// The `--compare` binary.
    Base,
    /// This build with `[probe] mode = "syscall"` (the fallback probe), next to `on` (the
    /// config's default mode).
    Syscall,
    Bpftrace,
    Nginx,
    /// The sockmap floor, empty verdict programs (`--only sockmap`).
    Sockmap,
    /// The sockmap floor reading 16 bytes and the socket's storage (`--only sockmap`).
    SockmapRead,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Off => "off",
            Variant::On => "on",
            Variant::Base => "base",
            Variant::Syscall => "syscall",
            Variant::Bpftrace => "bpftrace",
            Variant::Nginx => "nginx",
            Variant::Sockmap => "sockmap",
            Variant::SockmapRead => "sockmap_read",
        }
    }

    fn sockmap_kind(self) -> Option<sockmap::Kind> {
        match self {
            Variant::Sockmap => Some(sockmap::Kind::Empty),
            Variant::SockmapRead => Some(sockmap::Kind::Read),
            _ => None,
        }
    }
}

#[derive(Default, Clone)]
struct Sample {
    server_ticks: u64,
    server_sched_ns: u64,
    extra_ticks: u64,
    bpf: Vec<Counts>,
    /// The server's read + write syscalls (/proc/<pid>/io syscr + syscw), taken with `bpf`.
    server_io: u64,
}

/// The fixed-rate comparison. Returns `{runs, medians, ratios}`.
pub fn fixed_rate(ctx: &mut Ctx) -> Result<Value> {
    let mut variants = vec![Variant::Off, Variant::On];
    let compare = ctx.base_bin.is_some();
    if ctx.syscall_cfg.is_some() && !compare {
        variants.push(Variant::Syscall);
    }
    if compare {
        // An A/B of two builds: the peers are left out.
        variants.push(Variant::Base);
    } else if util_has("bpftrace") {
        variants.push(Variant::Bpftrace);
    } else {
        println!("    bpftrace not found: skipping that peer");
    }
    let nginx = if compare {
        None
    } else if util_has("nginx") {
        match start_nginx(ctx) {
            Ok(n) => {
                variants.push(Variant::Nginx);
                Some(n)
            }
            Err(e) => {
                println!("    nginx did not start ({e:#}): skipping that peer");
                None
            }
        }
    } else {
        None
    };
    let out = fixed_rate_of(ctx, &variants, nginx.as_ref().map(|n| (n.1, n.0.pid())));
    if let Some((mut p, _)) = nginx {
        p.stop(Duration::from_secs(3));
    }
    out
}

/// The fixed-rate comparison of `variants`, alternating run by run.
pub fn fixed_rate_of(ctx: &mut Ctx, variants: &[Variant], nginx: Option<(u16, u32)>) -> Result<Value> {
    let s = ctx.settings.clone();
    let mut runs = Vec::new();
    for run in 0..s.runs {
        for &v in variants {
            if ctx.interrupted() {
                break;
            }
            // One failed round (a peer that timed out on a loaded machine) is recorded and
            // skipped: it must not throw away every other variant's rounds.
            let r = match one_run(ctx, v, run, nginx).with_context(|| format!("fixed-rate run {run} ({})", v.name())) {
                Ok(r) => r,
                Err(e) => {
                    println!("    !!! {e:#}: round skipped");
                    runs.push(json!({"variant": v.name(), "run": run, "error": format!("{e:#}")}));
                    continue;
                }
            };
            println!(
                "    run {run} {:<8} {:>7.0} msg/s  server {:>6.2} µs/msg  total {:>6.2} µs/msg  p50 {:>6.2} ms  p99 {:>7.2} ms  lost {}",
                v.name(),
                r["achieved_rate"].as_f64().unwrap_or(0.0),
                r["server_cpu_us_per_msg"].as_f64().unwrap_or(f64::NAN),
                r["total_cpu_us_per_msg"].as_f64().unwrap_or(f64::NAN),
                r["p50_ms"].as_f64().unwrap_or(f64::NAN),
                r["p99_ms"].as_f64().unwrap_or(f64::NAN),
                r["lost"]
            );
            runs.push(r);
        }
    }
    let keys = [
        "server_cpu_us_per_msg",
        "total_cpu_us_per_msg",
        "server_sched_us_per_msg",
        "p50_ms",
        "p99_ms",
        "p999_ms",
        "achieved_rate",
        "probe_enter_ns_per_run",
        "probe_exit_ns_per_run",
        "probe_ns_per_msg",
    ];
    let mut medians = serde_json::Map::new();
    for &v in variants {
        let mut m = serde_json::Map::new();
        for k in keys {
            m.insert(k.into(), json!(med_of(&runs, v.name(), k)));
        }
        medians.insert(v.name().into(), Value::Object(m));
    }
    let mut ratios = serde_json::Map::new();
    for &v in variants.iter().filter(|v| **v != Variant::Off) {
        let mut m = serde_json::Map::new();
        for k in ["server_cpu_us_per_msg", "total_cpu_us_per_msg", "p50_ms", "p99_ms"] {
            m.insert(k.into(), json!(ratio(med_of(&runs, v.name(), k), med_of(&runs, "off", k))));
        }
        ratios.insert(v.name().into(), Value::Object(m));
    }
    Ok(json!({
        "target_rate": s.rate,
        "connections": s.conns,
        "payload_bytes": super::ws::PAYLOAD,
        "warmup_s": s.warm.as_secs_f64(),
        "window_s": s.measure.as_secs_f64(),
        "variants": variants.iter().map(|v| v.name()).collect::<Vec<_>>(),
        "runs": runs,
        "medians": medians,
        "ratios_vs_off": ratios,
    }))
}

pub fn med_of(runs: &[Value], variant: &str, key: &str) -> Option<f64> {
    let xs: Vec<f64> = runs.iter().filter(|r| r["variant"] == variant).filter_map(|r| r[key].as_f64()).collect();
    median(&xs)
}

fn util_has(p: &str) -> bool {
    crate::util::which(p).is_some()
}

fn one_run(ctx: &mut Ctx, v: Variant, run: usize, nginx: Option<(u16, u32)>) -> Result<Value> {
    let s = ctx.settings.clone();
    let loadavg = procs::loadavg();
    let mut target: SocketAddr = ([127, 0, 0, 1], ctx.server_port).into();
    let mut extra: Option<Proc> = None;
    let mut extra_pids = Vec::new();
    let mut prog_ids = Vec::new();
    // CPU the agent spent starting (verifying and attaching its programs), before the window.
    let mut start_cpu: Option<f64> = None;
    let mut floor = None;
    match v {
        Variant::Off => {}
        Variant::Sockmap | Variant::SockmapRead => {
            let f = attach_sockmap(ctx, v)?;
            prog_ids = vec![f.msg_prog, f.skb_prog];
            floor = Some(f);
        }
        Variant::On | Variant::Base | Variant::Syscall => {
            let a = match (v, &ctx.syscall_cfg) {
                (Variant::Syscall, Some(cfg)) => ctx.start_agent_with(&ctx.bin, cfg)?,
                _ => ctx.start_agent_bin(ctx.agent_bin(v.name()))?,
            };
            extra_pids.push(a.pid());
            start_cpu = procs::cpu_ticks(a.pid()).map(|t| t as f64 / ctx.clk_tck);
            if let Some((e, x)) = bpf::wsguard_progs(&ctx.pin_path) {
                prog_ids = vec![e, x];
            }
            extra = Some(a);
        }
        Variant::Bpftrace => {
            let b = start_bpftrace(ctx.server_pid, &ctx.work.join("bpftrace.out"))?;
            extra_pids.push(b.pid());
            extra = Some(b);
        }
        Variant::Nginx => {
            let (port, pid) = nginx.context("nginx not running")?;
            target.set_port(port);
            extra_pids = procs::with_children(pid);
        }
    }
    let mut marks = vec![s.warm, s.warm + s.measure];
    if !prog_ids.is_empty() {
        marks.push(s.warm + s.measure + s.stats_window);
    }
    let server_pid = ctx.server_pid;
    let ids = prog_ids.clone();
    let pids = extra_pids.clone();
    let sampler = move |j: usize| {
        let mut smp = Sample {
            server_ticks: procs::cpu_ticks(server_pid).unwrap_or(0),
            server_sched_ns: procs::sched_ns(server_pid).unwrap_or(0),
            extra_ticks: procs::sum_ticks(&pids),
            bpf: Vec::new(),
            server_io: 0,
        };
        if !ids.is_empty() && j >= 1 {
            if j == 1 {
                bpf::set_stats(true);
            }
            smp.bpf = bpf::counts(&ids);
            smp.server_io = procs::io_syscalls(server_pid).unwrap_or(0);
            if j == 2 {
                bpf::set_stats(false);
            }
        }
        smp
    };
    let result = ctx.rt.block_on(load::open_loop(target, s.conns, s.rate, &marks, sampler));
    // Tear the variant down whatever happened.
    match (v, extra) {
        (Variant::On | Variant::Base | Variant::Syscall, Some(a)) => procs::stop_agent(a, &ctx.bin, &ctx.cfg),
        (_, Some(mut p)) => p.stop(Duration::from_secs(5)),
        _ => {}
    }
    let skb_storage_refused = floor.as_ref().and_then(|f| f.skb_storage_refused.clone());
    drop(floor);
    let (ol, samples) = result?;
    let (a, b) = (&samples[0], &samples[1]);
    let tck = ctx.clk_tck;
    let msgs = ol.window_msgs.max(1) as f64;
    let server_cpu = (b.server_ticks - a.server_ticks) as f64 / tck;
    let extra_cpu = (b.extra_ticks.saturating_sub(a.extra_ticks)) as f64 / tck;
    let q = |p: f64| ol.hist.value_at_quantile(p) as f64 / 1000.0;
    let mut probe = json!(null);
    let (mut enter_ns, mut exit_ns, mut per_msg) = (None, None, None);
    if samples.len() == 3 && samples[1].bpf.len() == 2 && samples[2].bpf.len() == 2 {
        let (x, y) = (&samples[1].bpf, &samples[2].bpf);
        enter_ns = bpf::ns_per_run(x[0], y[0]);
        exit_ns = bpf::ns_per_run(x[1], y[1]);
        // In-kernel probe time per echoed message (open loop: the rate is fixed), all programs'
        // runs on the host included: steadier than ns per run, which moves with how many
        // messages the server reads per syscall.
        let total = (y[0].ns - x[0].ns) + (y[1].ns - x[1].ns);
        per_msg = Some(total as f64 / (s.rate * s.stats_window.as_secs_f64()));
        probe = json!({
            "programs": if v.sockmap_kind().is_some() {
                ["wsgb_sk_msg", "wsgb_sk_skb"]
            } else if v == Variant::Syscall || ctx.on_mode != "socket" {
                bpf::SYSCALL_HOT
            } else {
                bpf::SOCKET_HOT
            },
            "skb_sk_storage_refused": skb_storage_refused,
            "window_s": s.stats_window.as_secs_f64(),
            "enter_runs": y[0].cnt - x[0].cnt, "enter_ns": y[0].ns - x[0].ns,
            "exit_runs": y[1].cnt - x[1].cnt, "exit_ns": y[1].ns - x[1].ns,
            "server_data_syscalls": samples[2].server_io.saturating_sub(samples[1].server_io),
        });
    }
    Ok(json!({
        "variant": v.name(),
        "run": run,
        "loadavg": loadavg,
        "window_s": ol.window_s,
        "window_msgs": ol.window_msgs,
        "achieved_rate": ol.window_msgs as f64 / ol.window_s,
        "expected": ol.expected,
        "received": ol.received,
        "lost": ol.expected - ol.received.min(ol.expected),
        "server_cpu_s": server_cpu,
        "server_cpu_us_per_msg": server_cpu * 1e6 / msgs,
        "server_sched_us_per_msg": (b.server_sched_ns.saturating_sub(a.server_sched_ns)) as f64 / 1e3 / msgs,
        "extra_cpu_s": extra_cpu,
        "agent_start_cpu_s": start_cpu,
        "extra_cpu_us_per_msg": extra_cpu * 1e6 / msgs,
        "total_cpu_us_per_msg": (server_cpu + extra_cpu) * 1e6 / msgs,
        "p50_ms": q(0.5), "p90_ms": q(0.9), "p99_ms": q(0.99), "p999_ms": q(0.999),
        "max_ms": ol.hist.max() as f64 / 1000.0,
        "probe_enter_ns_per_run": enter_ns,
        "probe_exit_ns_per_run": exit_ns,
        "probe_ns_per_msg": per_msg,
        "probe_stats": probe,
    }))
}

/// `--only sockmap`: the floor of a sockmap-based probe ([`sockmap`]) next to `off`, at the
/// fixed rate (server CPU per message, latency, lost messages, the verdict programs' ns per run)
/// and saturated, alternating run by run. Not in the full bench: it answers one design question.
pub fn sockmap_floor(ctx: &mut Ctx) -> Result<Value> {
    let cg = ctx.sockmap_cgroup.clone().context("the echo server was not started in the bench's cgroup")?;
    if !sockmap::in_cgroup(ctx.server_pid, &cg) {
        anyhow::bail!("the echo server (pid {}) is not in {}: no socket would enter the map", ctx.server_pid, cg.display());
    }
    let variants = [Variant::Off, Variant::Sockmap, Variant::SockmapRead];
    let fixed = fixed_rate_of(ctx, &variants, None)?;
    let sat = saturated_of(ctx, &variants)?;
    Ok(json!({"cgroup": cg, "fixed_rate": fixed, "saturated": sat}))
}

/// Saturated throughput, off vs on alternating.
pub fn saturated(ctx: &mut Ctx) -> Result<Value> {
    let mut variants = vec![Variant::Off, Variant::On];
    if ctx.base_bin.is_some() {
        variants.push(Variant::Base);
    } else if ctx.syscall_cfg.is_some() {
        variants.push(Variant::Syscall);
    }
    saturated_of(ctx, &variants)
}

/// Saturated throughput of `variants`, alternating run by run.
pub fn saturated_of(ctx: &mut Ctx, variants: &[Variant]) -> Result<Value> {
    let s = ctx.settings.clone();
    let target: SocketAddr = ([127, 0, 0, 1], ctx.server_port).into();
    let mut runs = Vec::new();
    for run in 0..s.runs {
        for &v in variants {
            if ctx.interrupted() {
                break;
            }
            let floor = match v.sockmap_kind() {
                Some(_) => Some(attach_sockmap(ctx, v)?),
                None => None,
            };
            let agent = match v {
                Variant::Off | Variant::Sockmap | Variant::SockmapRead => None,
                Variant::Syscall => Some(ctx.start_agent_with(&ctx.bin, ctx.syscall_cfg.as_ref().context("no syscall config")?)?),
                _ => Some(ctx.start_agent_bin(ctx.agent_bin(v.name()))?),
            };
            let r = ctx.rt.block_on(load::saturate(target, s.sat_conns, s.sat_depth, s.warm, s.sat_measure));
            if let Some(a) = agent {
                procs::stop_agent(a, &ctx.bin, &ctx.cfg);
            }
            drop(floor);
            let rate = r?;
            println!("    run {run} {:<12} {rate:>8.0} msg/s", v.name());
            runs.push(json!({"variant": v.name(), "run": run, "msgs_per_s": rate, "loadavg": procs::loadavg()}));
        }
    }
    let off = med_of(&runs, "off", "msgs_per_s");
    let on = med_of(&runs, "on", "msgs_per_s");
    let base = med_of(&runs, "base", "msgs_per_s");
    let syscall = med_of(&runs, "syscall", "msgs_per_s");
    let mut all = serde_json::Map::new();
    for &v in variants {
        all.insert(v.name().into(), json!({"median": med_of(&runs, v.name(), "msgs_per_s"), "ratio_vs_off": ratio(med_of(&runs, v.name(), "msgs_per_s"), off)}));
    }
    Ok(json!({
        "variants": all,
        "connections": s.sat_conns,
        "in_flight_per_connection": s.sat_depth,
        "window_s": s.sat_measure.as_secs_f64(),
        "runs": runs,
        "medians": {"off": off, "on": on, "base": base, "syscall": syscall},
        "ratio_on_off": ratio(on, off),
        "ratio_syscall_off": ratio(syscall, off),
        "ratio_base_off": ratio(base, off),
    }))
}

fn start_bpftrace(server_pid: u32, out: &std::path::Path) -> Result<Proc> {
    let probes: Vec<String> = BPFTRACE_EXITS.iter().map(|s| format!("tracepoint:syscalls:sys_exit_{s}")).collect();
    let script = format!("{} /pid == {server_pid}/ {{ @[probe] = count(); }}", probes.join(","));
    let mut p = Proc::spawn(
        "bpftrace",
        Command::new("bpftrace")
            .args(["-e", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(out)?),
    )?;
    p.wait_line("Attaching", Duration::from_secs(30))?;
    // "Attaching N probes..." is printed just before the attach; give it a moment.
    std::thread::sleep(Duration::from_millis(500));
    Ok(p)
}

/// nginx as a WebSocket proxy in front of the echo server; returns it and its port.
fn start_nginx(ctx: &Ctx) -> Result<(Proc, u16)> {
    let prefix = ctx.work.join("nginx");
    std::fs::create_dir_all(prefix.join("tmp"))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let p = prefix.display();
    let conf = format!(
        "user root;\nworker_processes 1;\ndaemon off;\npid {p}/nginx.pid;\nerror_log {p}/error.log warn;\n\
         worker_rlimit_nofile 200000;\nevents {{ worker_connections 20000; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {p}/tmp/body;\n  proxy_temp_path {p}/tmp/proxy;\n\
           fastcgi_temp_path {p}/tmp/fcgi;\n  uwsgi_temp_path {p}/tmp/uwsgi;\n  scgi_temp_path {p}/tmp/scgi;\n\
           server {{\n    listen 127.0.0.1:{port};\n    location / {{\n\
               proxy_pass http://127.0.0.1:{};\n      proxy_http_version 1.1;\n\
               proxy_set_header Upgrade $http_upgrade;\n      proxy_set_header Connection \"upgrade\";\n\
               proxy_read_timeout 3600s;\n    }}\n  }}\n}}\n",
        ctx.server_port
    );
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let mut proc = Proc::spawn(
        "nginx",
        Command::new("nginx")
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(prefix.join("stderr.log"))?),
    )?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    for _ in 0..50 {
        if proc.exited() {
            anyhow::bail!("nginx exited; see {}", prefix.join("stderr.log").display());
        }
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok((proc, port));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!("nginx did not listen on {addr}")
}

/// The sockmap floor of variant `v` on the echo server's cgroup and port.
fn attach_sockmap(ctx: &Ctx, v: Variant) -> Result<sockmap::Sockmap> {
    let kind = v.sockmap_kind().context("not a sockmap variant")?;
    let cg = ctx.sockmap_cgroup.as_ref().context("the echo server was not started in the bench's cgroup")?;
    sockmap::attach(kind, cg, ctx.server_port)
}
