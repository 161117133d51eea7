//! `cargo xtask bench`: what wsguard costs the servers it watches, measured side by side.
//!
//! One command builds the release agent, starts a real node `ws` echo server pinned to CPU 0,
//! drives it from a load generator of our own pinned to CPU 1, and alternates agent off / on
//! (and peers) run by run. Results: JSON with every raw run, and `docs/performance.md`.
//! Not part of `cargo xtask test`: benchmarks are never timed assertions.

mod agent_cost;
mod bpf;
mod child;
mod compare;
mod floor;
mod load;
mod markdown;
mod micro;
mod overhead;
mod probe_cost;
mod procs;
mod report;
mod sockmap;
mod sse;
mod stats;
mod tls;
mod ws;

use crate::sys;
use crate::util::{self, step};
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Small and short (about 3 minutes): 5k msg/s over 200 connections, 3 runs.
    #[arg(long)]
    quick: bool,
    /// Repetitions of each alternating comparison (default 5, or 3 with --quick).
    #[arg(long)]
    runs: Option<usize>,
    /// Where the JSON goes (the markdown always goes to docs/performance.md).
    #[arg(long, default_value = "docs/benchmarks/latest.json")]
    out: PathBuf,
    /// Skip `cargo build --release`.
    #[arg(long)]
    no_build: bool,
    /// Only regenerate docs/performance.md (targets and tables) from an earlier JSON result.
    #[arg(long, value_name = "JSON")]
    report: Option<PathBuf>,
    /// A/B runs, partial runs and internal modes (boxed: keeps the subcommand enum small).
    #[command(flatten)]
    more: Box<MoreArgs>,
}

#[derive(clap::Args)]
struct MoreArgs {
    /// Benchmark this agent binary as `on` instead of target/release/wsguard (implies
    /// --no-build).
    #[arg(long, value_name = "WSGUARD_BINARY")]
    agent: Option<PathBuf>,
    /// Internal: hold N idle WebSocket connections to 127.0.0.1:PORT until killed (`PORT:N`);
    /// lets the bench exceed one process's open-file limit.
    #[arg(long, hide = true)]
    hold: Option<String>,
    /// Internal (profiling by hand): open-loop load on 127.0.0.1:PORT, `PORT:CONNS:RATE:SECS`;
    /// prints messages echoed and latency.
    #[arg(long, hide = true)]
    drive: Option<String>,
    /// Internal: the probe microbenchmark child (`CONNS:ROUNDS`).
    #[arg(long, hide = true)]
    micro: Option<String>,
    /// A/B against another wsguard binary (e.g. a build of main): adds a `base` variant, taking
    /// turns with `on`, to every scenario. The JSON goes to --out (default
    /// target/bench-compare.json); docs/performance.md is left alone.
    #[arg(long, value_name = "WSGUARD_BINARY")]
    compare: Option<PathBuf>,
    /// Run only these scenarios (comma-separated: fixed_rate, saturated, probe_cost,
    /// probe_micro, agent_cost, tls, sse, and `sockmap`, the floor of a sockmap-based probe,
    /// which only runs when named); docs/performance.md is then left alone.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Override the fixed-rate load: messages per second.
    #[arg(long)]
    rate: Option<f64>,
    /// Override the fixed-rate load: connections.
    #[arg(long)]
    conns: Option<usize>,
    /// Override the idle-connection levels of the agent-cost scenario (comma-separated).
    #[arg(long, value_delimiter = ',')]
    idle: Vec<usize>,
}

#[derive(Clone)]
pub struct Settings {
    pub quick: bool,
    pub runs: usize,
    pub rate: f64,
    pub conns: usize,
    pub warm: Duration,
    pub measure: Duration,
    pub stats_window: Duration,
    pub sat_conns: usize,
    pub sat_depth: usize,
    pub sat_measure: Duration,
    pub idle_levels: Vec<usize>,
    pub agent_settle: Duration,
    pub agent_window: Duration,
    pub fps_target: f64,
    pub fps_conns: usize,
    pub fps_measure: Duration,
    pub dd_count: u64,
    pub dd_runs: usize,
    pub micro_conns: usize,
    pub micro_rounds: u64,
}

impl Settings {
    fn new(quick: bool, runs: Option<usize>) -> Settings {
        let s = Duration::from_secs;
        if quick {
            Settings {
                quick,
                runs: runs.unwrap_or(3),
                rate: 5000.0,
                conns: 200,
                warm: s(1),
                measure: s(4),
                stats_window: s(2),
                sat_conns: 100,
                sat_depth: 4,
                sat_measure: s(3),
                idle_levels: vec![1000, 10_000],
                agent_settle: s(6),
                agent_window: s(5),
                fps_target: 100_000.0,
                fps_conns: 200,
                fps_measure: s(4),
                dd_count: 500_000,
                dd_runs: 2,
                micro_conns: 4000,
                micro_rounds: 200_000,
            }
        } else {
            Settings {
                quick,
                runs: runs.unwrap_or(5),
                rate: 20_000.0,
                conns: 1000,
                warm: s(2),
                measure: s(10),
                stats_window: s(3),
                sat_conns: 200,
                sat_depth: 4,
                sat_measure: s(5),
                idle_levels: vec![1000, 10_000, 50_000],
                agent_settle: s(6),
                agent_window: s(10),
                fps_target: 100_000.0,
                fps_conns: 1000,
                fps_measure: s(8),
                dd_count: 2_000_000,
                dd_runs: 3,
                micro_conns: 8000,
                micro_rounds: 400_000,
            }
        }
    }
}

/// Everything the scenarios share.
pub struct Ctx {
    pub settings: Settings,
    pub rt: tokio::runtime::Runtime,
    pub bin: PathBuf,
    pub cfg: PathBuf,
    pub work: PathBuf,
    pub pin_path: PathBuf,
    pub api: SocketAddr,
    pub server_pid: u32,
    pub server_port: u16,
    pub clk_tck: f64,
    pub servers_dir: PathBuf,
    pub nofile: u64,
    /// `--compare`: the other agent binary (variant `base`).
    pub base_bin: Option<PathBuf>,
    /// The config of variant `syscall` (`[probe] mode = "syscall"`: the raw-tracepoint fallback
    /// forced), when the agent has that key.
    pub syscall_cfg: Option<PathBuf>,
    /// What variant `on` runs: `socket` (`[probe] mode = "socket"`) or `default` (an agent
    /// without the key).
    pub on_mode: &'static str,
    /// The bench's own cgroup v2 directory the echo server was born in (`--only sockmap`).
    pub sockmap_cgroup: Option<PathBuf>,
}

impl Ctx {
    /// The agent variant `name`: `on` (this build) or `base` (`--compare`).
    pub fn agent_bin(&self, name: &str) -> &std::path::Path {
        match (name, &self.base_bin) {
            ("base", Some(b)) => b,
            _ => &self.bin,
        }
    }

    pub fn start_agent_bin(&self, bin: &std::path::Path) -> Result<procs::Proc> {
        self.start_agent_with(bin, &self.cfg)
    }

    /// Like `start_agent_bin`, with config `cfg` (same pin path and API).
    pub fn start_agent_with(&self, bin: &std::path::Path, cfg: &std::path::Path) -> Result<procs::Proc> {
        procs::detach(bin, cfg);
        let a = procs::start_agent(bin, cfg, self.api, &self.work.join("agent.log"))?;
        // `start_agent` returned once the agent answered, so its links are pinned by now.
        bpf::wsguard_progs(&self.pin_path);
        Ok(a)
    }

    pub fn interrupted(&self) -> bool {
        sys::interrupted()
    }
}

const PIN_PATH: &str = "/sys/fs/bpf/wsguard-bench";
const API: &str = "127.0.0.1:9697";

/// Most sockets one process (server or client) is given; the rest of the fd limit is headroom.
pub fn per_process_conns(nofile: u64) -> usize {
    nofile.saturating_sub(500).max(100) as usize
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if let Some(spec) = &args.more.hold {
        return child::hold(spec);
    }
    if let Some(spec) = &args.more.drive {
        return child::drive(spec);
    }
    if let Some(spec) = &args.more.micro {
        return micro::child(spec);
    }
    if let Some(path) = &args.report {
        let root = util::workspace_root();
        let path = if path.is_absolute() { path.clone() } else { root.join(path) };
        let mut out: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        out["targets"] = report::targets(&out);
        std::fs::write(&path, serde_json::to_string_pretty(&out)? + "\n")?;
        let rel = path.strip_prefix(&root).unwrap_or(&path).display().to_string();
        std::fs::write(root.join("docs/performance.md"), markdown::markdown(&out, &rel))?;
        println!("{}", report::targets_table(&out));
        return Ok(());
    }
    let started = Instant::now();
    let root = util::workspace_root();
    if !sys::is_root() {
        bail!("the bench loads eBPF programs and needs root: run `sudo -E cargo xtask bench`");
    }
    let servers = root.join("tests/servers");
    if !servers.join("node_modules/ws").is_dir() {
        bail!("tests/servers/node_modules/ws is missing: run `cargo xtask setup` first");
    }
    if !args.no_build && args.more.agent.is_none() {
        // Only the agent (`-p wsguard`): what `cargo xtask test` built too, so nothing rebuilds.
        util::release_agent(None)?;
    }
    let bin = match &args.more.agent {
        Some(b) => b.canonicalize().with_context(|| format!("--agent {}", b.display()))?,
        None => util::target_dir().join("release/wsguard"),
    };
    if !bin.is_file() {
        bail!("{} not found (build failed?)", bin.display());
    }
    let mut settings = Settings::new(args.quick, args.runs);
    if let Some(r) = args.more.rate {
        settings.rate = r;
    }
    if let Some(c) = args.more.conns {
        settings.conns = c;
    }
    if !args.more.idle.is_empty() {
        settings.idle_levels = args.more.idle.clone();
    }
    let base_bin = match &args.more.compare {
        Some(b) if !b.is_file() => bail!("--compare {}: no such file", b.display()),
        Some(b) => Some(b.canonicalize()?),
        None => None,
    };
    let partial = base_bin.is_some() || !args.more.only.is_empty();
    let wanted = |name: &str| args.more.only.is_empty() || args.more.only.iter().any(|o| o == name);
    // Asked for by name only: it measures a design that was not built, not the agent.
    let sockmap_wanted = args.more.only.iter().any(|o| o == "sockmap");
    // One bench at a time: two would share the pin path, the API port and the work dir (the
    // second one's start-up detach and `remove_dir_all` would pull the first one's probe and
    // config away mid-run). Held until this function returns.
    let lock_path = std::env::temp_dir().join("wsguard-bench.lock");
    let lock = std::fs::File::create(&lock_path).with_context(|| format!("{}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        bail!("another `cargo xtask bench` is running on this machine (it holds {}): wait for it to finish", lock_path.display());
    }
    let work = std::env::temp_dir().join("wsguard-bench");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let cfg = work.join("bench.toml");
    std::fs::write(
        &cfg,
        format!(
            "# written by `cargo xtask bench`\n[agent]\nstate_dir = \"{}\"\n\n[api]\nlisten = \"{API}\"\n\n\
             [probe]\npin_path = \"{PIN_PATH}\"\n",
            work.join("state").display()
        ),
    )?;
    // The probe-mode dimension: `on` runs the socket mode and `syscall` the raw-tracepoint
    // fallback, when this agent knows `[probe] mode` (`wsguard config check` accepts it).
    let accepts = |extra: &str, path: &std::path::Path| -> Result<bool> {
        std::fs::write(path, std::fs::read_to_string(&cfg)? + extra)?;
        Ok(std::process::Command::new(&bin)
            .args(["config", "check", "--config"])
            .arg(path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|st| st.success()))
    };
    let socket_cfg = work.join("bench-socket.toml");
    let on_mode = if accepts("mode = \"socket\"\n", &socket_cfg)? {
        std::fs::rename(&socket_cfg, &cfg)?;
        "socket"
    } else {
        "default"
    };
    let syscall_cfg = work.join("bench-syscall.toml");
    let syscall_cfg = (on_mode == "socket" && accepts("", &syscall_cfg)?).then(|| {
        let text = std::fs::read_to_string(&cfg).unwrap_or_default().replace("mode = \"socket\"", "mode = \"syscall\"");
        let _ = std::fs::write(&syscall_cfg, text);
        syscall_cfg
    });
    if syscall_cfg.is_none() {
        println!("    this agent has no [probe] mode key: no `syscall` row (variant `on` is its only probe)");
    }
    sys::catch_interrupts();
    // The load generator gets CPU 1, the server CPU 0.
    let nofile = procs::raise_nofile(200_000);
    procs::pin_self(1);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;

    // A leftover probe (a demo's, a test's) would make "agent off" not off: refuse, naming it.
    // Our own pin from an earlier bench is detached first.
    procs::detach(&bin, &cfg);
    let others = bpf::other_wsguard_probes(std::path::Path::new(PIN_PATH));
    if !others.is_empty() {
        bail!("another wsguard probe is attached, so \"off\" runs would not be off; detach it first:\n  {}", others.join("\n  "));
    }
    let machine = machine_info();
    let foreign = bpf::foreign_syscall_hooks(std::path::Path::new(PIN_PATH));
    if !foreign.is_empty() {
        println!("    note: other programs are attached to the syscall hooks (they tax off and on runs alike):");
        for f in &foreign {
            println!("      {f}");
        }
    }
    // Declared before the server, so it is removed after the server stopped.
    let cgroup = if sockmap_wanted { Some(sockmap::Cgroup::create()?) } else { None };
    step("starting the echo server (node ws, CPU 0)");
    let procs_file = cgroup.as_ref().map(|c| c.procs_file());
    let (mut server, port) = procs::start_server_in(&servers, 0, nofile, &work.join("server.log"), procs_file.as_deref())?;
    println!("    pid {} on 127.0.0.1:{port}", server.pid());
    let mut ctx = Ctx {
        settings: settings.clone(),
        rt,
        bin,
        cfg,
        work: work.clone(),
        pin_path: PIN_PATH.into(),
        api: API.parse().unwrap(),
        server_pid: server.pid(),
        server_port: port,
        clk_tck: procs::clk_tck(),
        servers_dir: servers.clone(),
        nofile,
        base_bin,
        syscall_cfg,
        on_mode,
        sockmap_cgroup: cgroup.as_ref().map(|c| c.dir.clone()),
    };
    procs::detach(&ctx.bin, &ctx.cfg);
    let stats_was = bpf::stats_enabled();

    let mut out = json!({
        "kind": if settings.quick { "quick" } else { "full" },
        "on_mode": ctx.on_mode,
        "machine": machine,
        "foreign_syscall_hooks": foreign,
        "loadavg_start": procs::loadavg(),
    });
    let mut scenario = |name: &str, title: &str, f: &dyn Fn(&mut Ctx) -> Result<serde_json::Value>, ctx: &mut Ctx| {
        if !wanted(name) {
            return;
        }
        step(title);
        let t = Instant::now();
        let r = f(ctx).unwrap_or_else(|e| {
            println!("    !!! {name} failed: {e:#}");
            json!({"error": format!("{e:#}")})
        });
        println!("    ({name}: {:.0} s)", t.elapsed().as_secs_f64());
        out[name] = r;
    };
    scenario(
        "fixed_rate",
        &format!(
            "fixed rate {} msg/s over {} connections: off / on / bpftrace / nginx, {} rounds",
            settings.rate, settings.conns, settings.runs
        ),
        &overhead::fixed_rate,
        &mut ctx,
    );
    scenario("saturated", "saturated throughput: off / on", &overhead::saturated, &mut ctx);
    scenario("probe_cost", "probe cost for untracked processes (dd) vs empty programs", &probe_cost::run, &mut ctx);
    scenario(
        "probe_micro",
        "probe cost per tracked syscall, isolated (one process, many connections, off / on)",
        &micro::run,
        &mut ctx,
    );
    scenario("agent_cost", "agent CPU and memory vs connections and frame rate", &agent_cost::run, &mut ctx);
    scenario(
        "tls",
        "wss:// (node ws over https): server CPU per message, off / on, and the TLS programs' cost",
        &tls::run,
        &mut ctx,
    );
    scenario(
        "sse",
        "Server-Sent Events (node http, one 10k events/s stream): server CPU per event, off / on, and the probe's cost",
        &sse::run,
        &mut ctx,
    );

    if sockmap_wanted {
        scenario(
            "sockmap",
            "sockmap floor (SOCKHASH + sk_msg/sk_skb verdicts on the server's sockets only): off / sockmap / sockmap_read",
            &overhead::sockmap_floor,
            &mut ctx,
        );
    }

    bpf::set_stats(stats_was);
    procs::detach(&ctx.bin, &ctx.cfg);
    server.stop(Duration::from_secs(5));
    out["loadavg_end"] = json!(procs::loadavg());
    out["duration_s"] = json!(started.elapsed().as_secs_f64());
    out["settings"] = json!({
        "open_files_limit_per_process": nofile,
        "runs": settings.runs, "rate": settings.rate, "connections": settings.conns,
        "warmup_s": settings.warm.as_secs_f64(), "window_s": settings.measure.as_secs_f64(),
        "server_cpu": 0, "load_generator_cpu": 1, "agent_cpu": "unpinned",
        "agent_config": std::fs::read_to_string(&ctx.cfg).unwrap_or_default(),
    });
    out["targets"] = report::targets(&out);

    let out_path = match (partial, args.out.to_str()) {
        (true, Some("docs/benchmarks/latest.json")) => util::target_dir().join("bench-compare.json"),
        _ => args.out.clone(),
    };
    let json_path = if out_path.is_absolute() { out_path } else { root.join(&out_path) };
    if let Some(dir) = json_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&json_path, serde_json::to_string_pretty(&out)? + "\n")?;
    if partial {
        step(&format!("done in {:.0} s: {}", started.elapsed().as_secs_f64(), json_path.display()));
        println!("{}", compare::compare_table(&out));
        return Ok(());
    }
    let rel = json_path.strip_prefix(&root).unwrap_or(&json_path).display().to_string();
    let md = markdown::markdown(&out, &rel);
    std::fs::write(root.join("docs/performance.md"), &md)?;
    step(&format!("done in {:.0} s: {} and docs/performance.md", started.elapsed().as_secs_f64(), json_path.display()));
    println!("{}", report::targets_table(&out));
    Ok(())
}

fn machine_info() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model =
        cpuinfo.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|s| s.trim().to_string());
    // Not available_parallelism(): xtask pins itself to one CPU before this runs.
    let cores = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string()))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb / 1024);
    json!({
        "cpu_model": model,
        "cores": cores,
        "memory_mib": mem,
        "kernel": util::output(util::cmd("uname", ["-r"])),
        "date": util::output(util::cmd("date", ["-u", "+%Y-%m-%dT%H:%M:%SZ"])),
        "node": util::output(util::cmd("node", ["--version"])),
        "nginx": util::output(util::cmd("sh", ["-c", "nginx -v 2>&1"])),
        "bpftrace": util::output(util::cmd("bpftrace", ["--version"])),
        "git_commit": util::output(util::cmd("git", ["-C", &util::workspace_root().to_string_lossy(), "rev-parse", "--short", "HEAD"])),
    })
}
