//! The `tls` scenario: what reading wss:// plaintext costs a TLS-terminating server. Node `ws` on
//! an `https` server (the OpenSSL inside the node binary) pinned to CPU 0, driven by
//! `ws_load.py --tls` on CPU 1 at a fixed rate; agent off / on (socket mode, uprobes on
//! `SSL_read`/`SSL_write`), alternating, server CPU per echoed message; and the TLS programs' own
//! ns per run from `kernel.bpf_stats_enabled`.

use super::{bpf, procs, stats, Ctx};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The uprobe programs of the TLS plaintext path (not pinned: found by name; the kernel keeps 15
/// bytes of a name, so `wsg_ssl_write_ex` shows as `wsg_ssl_write_e`).
const TLS_PREFIX: &str = "wsg_ssl_";

pub fn run(ctx: &mut Ctx) -> Result<Value> {
    if ctx.on_mode != "socket" {
        bail!("this agent has no socket mode: TLS plaintext needs it");
    }
    let (rate, conns, secs) = if ctx.settings.quick { (1000.0, 50, 6.0) } else { (2000.0, 100, 10.0) };
    let dir = ctx.work.join("tls");
    std::fs::create_dir_all(&dir)?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("openssl req (the openssl CLI makes the test certificate)")?;
    if !ok.success() {
        bail!("openssl req failed");
    }
    let mut server = procs::Proc::spawn(
        "TLS echo server",
        Command::new("taskset")
            .args(["-c", "0", "node"])
            .arg(ctx.servers_dir.join("ws_echo.js"))
            .args(["0", "--tls"])
            .arg(&cert)
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::options().create(true).append(true).open(dir.join("server.log"))?),
    )?;
    let port: u16 = server.wait_line("READY ", Duration::from_secs(15))?.parse().context("bad READY line")?;
    println!(
        "    node ws over https: pid {} on 127.0.0.1:{port}; load {rate} msg/s over {conns} connections, {secs} s",
        server.pid()
    );
    let stats_was = bpf::stats_enabled();
    bpf::set_stats(true);
    let mut runs = Vec::new();
    for run in 0..ctx.settings.runs {
        for variant in ["off", "on"] {
            if ctx.interrupted() {
                break;
            }
            let r = one_run(ctx, variant, server.pid(), port, rate, conns, secs)
                .with_context(|| format!("tls run {run} ({variant})"))
                .unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
            println!(
                "    run {run} {variant:<3} server {:>6.2} µs/msg  echoed {}  TLS programs {:>7.0} ns/run",
                r["server_cpu_us_per_msg"].as_f64().unwrap_or(f64::NAN),
                r["echoed"].as_u64().unwrap_or(0),
                r["tls_prog_ns_per_run"].as_f64().unwrap_or(f64::NAN)
            );
            runs.push(json!({"variant": variant, "run": run, "result": r}));
        }
    }
    bpf::set_stats(stats_was);
    server.stop(Duration::from_secs(5));
    let med = |variant: &str, key: &str| {
        let xs: Vec<f64> = runs.iter().filter(|r| r["variant"] == variant).filter_map(|r| r["result"][key].as_f64()).collect();
        stats::median(&xs)
    };
    let (off, on) = (med("off", "server_cpu_us_per_msg"), med("on", "server_cpu_us_per_msg"));
    let ratio = stats::ratio(on, off);
    println!(
        "    median server CPU per message: off {:.2} µs, on {:.2} µs (×{:.3}); TLS programs {:.0} ns/run, {:.1} runs/msg",
        off.unwrap_or(f64::NAN),
        on.unwrap_or(f64::NAN),
        ratio.unwrap_or(f64::NAN),
        med("on", "tls_prog_ns_per_run").unwrap_or(f64::NAN),
        med("on", "tls_prog_runs_per_msg").unwrap_or(f64::NAN),
    );
    Ok(json!({
        "server": "node ws over https (OpenSSL in the node binary)",
        "rate": rate, "connections": conns, "seconds": secs,
        "median_server_cpu_us_per_msg": {"off": off, "on": on},
        "ratio_on_off": ratio,
        "median_tls_prog_ns_per_run": med("on", "tls_prog_ns_per_run"),
        "median_tls_prog_runs_per_msg": med("on", "tls_prog_runs_per_msg"),
        "runs": runs,
    }))
}

fn tls_counts() -> bpf::Counts {
    bpf::progs()
        .values()
        .filter(|p| p.1.starts_with(TLS_PREFIX))
        .fold(bpf::Counts::default(), |a, p| bpf::Counts { ns: a.ns + p.2.ns, cnt: a.cnt + p.2.cnt })
}

fn one_run(ctx: &Ctx, variant: &str, pid: u32, port: u16, rate: f64, conns: usize, secs: f64) -> Result<Value> {
    let agent = if variant == "on" { Some(ctx.start_agent_bin(&ctx.bin)?) } else { None };
    let (cpu0, progs0) = (procs::sched_ns(pid).context("server gone")?, tls_counts());
    let out = Command::new("taskset")
        .args(["-c", "1", "python3"])
        .arg(ctx.servers_dir.join("ws_load.py"))
        .args(["--port", &port.to_string(), "--connections", &conns.to_string(), "--rate", &rate.to_string()])
        .args(["--duration", &secs.to_string(), "--lifetime", "0", "--abort-fraction", "0", "--tls"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .context("python3 ws_load.py")?;
    let (cpu1, progs1) = (procs::sched_ns(pid).context("server gone")?, tls_counts());
    if let Some(a) = agent {
        procs::stop_agent(a, &ctx.bin, &ctx.cfg);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let summary: Value = text
        .lines()
        .find_map(|l| l.strip_prefix("SUMMARY "))
        .context("ws_load.py printed no SUMMARY")
        .and_then(|s| Ok(serde_json::from_str(s)?))?;
    let echoed = summary["recv_msgs"].as_u64().unwrap_or(0);
    if echoed == 0 {
        bail!("no message echoed: {summary}");
    }
    let runs = progs1.cnt.saturating_sub(progs0.cnt);
    Ok(json!({
        "echoed": echoed,
        "server_cpu_us_per_msg": (cpu1 - cpu0) as f64 / 1000.0 / echoed as f64,
        "tls_prog_runs_per_msg": runs as f64 / echoed as f64,
        "tls_prog_ns_per_run": (runs > 0).then(|| progs1.ns.saturating_sub(progs0.ns) as f64 / runs as f64),
        "load": summary,
    }))
}
