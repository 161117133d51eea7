//! `cargo xtask demo`: the release agent watching a real node `ws` echo server under load.
//!
//! Starts, in this order: the echo server (tests/servers/ws_echo.js), the agent
//! (`wsguard run --config config/demo.toml`), the load generator (tests/servers/ws_load.py);
//! then prints `wsguard snapshot` every few seconds and stops everything at the end or on Ctrl-C.
//! At the end it checks the agent's totals for the server against what the load generator says
//! it did (connections, aborts, messages, frames), so the demo doubles as an end-to-end smoke
//! test: a mismatch fails it.

use crate::proc::Proc;
use crate::sys;
use crate::util::{self, step};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const API: &str = "http://127.0.0.1:9595";
const API_ADDR: &str = "127.0.0.1:9595";
/// `state_dir` and `probe.pin_path` of config/demo.toml: cleared before each demo so that it
/// starts from zero (the agent otherwise resumes counting from its pins, by design).
const DEMO_STATE: [&str; 2] = ["/tmp/wsguard-demo", "/sys/fs/bpf/wsguard-demo"];

#[derive(clap::Args)]
pub struct DemoArgs {
    /// How long the demo runs.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Seconds between two printed snapshots.
    #[arg(long, default_value_t = 5)]
    every: u64,
    /// Concurrent WebSocket connections opened by the load generator.
    #[arg(long, default_value_t = 50)]
    connections: u32,
    /// Messages per second sent by the load generator (all connections together).
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Skip `cargo build --release` (use the binary already in target/release).
    #[arg(long)]
    no_build: bool,
    /// Keep the previous demo's state and pinned maps (/tmp/wsguard-demo,
    /// /sys/fs/bpf/wsguard-demo) instead of starting from zero.
    #[arg(long)]
    keep_state: bool,
}

pub fn run(args: &DemoArgs) -> Result<()> {
    let root = util::workspace_root();
    let servers = root.join("tests/servers");
    let bin = util::target_dir().join("release/wsguard");
    let config = root.join("config/demo.toml");

    if !sys::is_root() {
        bail!("the demo loads eBPF programs and needs root: run `sudo -E cargo xtask demo`");
    }
    if !servers.join("node_modules/ws").is_dir() {
        bail!("tests/servers/node_modules/ws is missing: run `cargo xtask setup` first");
    }

    if !args.no_build {
        // Only the agent (`-p wsguard`): what `cargo xtask test` built too, so nothing rebuilds.
        util::release_agent(None)?;
    }
    if !bin.is_file() {
        bail!("{} not found (build failed?)", bin.display());
    }

    if !args.keep_state {
        step("clearing the previous demo's state");
        for dir in DEMO_STATE {
            if Path::new(dir).exists() {
                println!("    removing {dir}");
                std::fs::remove_dir_all(dir).with_context(|| format!("cannot remove {dir}"))?;
            }
        }
    }

    sys::catch_interrupts();
    let log_dir = std::env::temp_dir().join("wsguard-demo-logs");
    std::fs::create_dir_all(&log_dir)?;

    step("starting the WebSocket echo server (node ws)");
    let (mut server, port) = start_echo_server(&servers)?;
    println!("    echo server pid {} listening on 127.0.0.1:{port}", server.child.id());

    step("starting the agent");
    let agent_log = log_dir.join("agent.log");
    let mut agent = Proc::spawn(
        "agent",
        Command::new(&bin)
            .args(["run", "--config"])
            .arg(&config)
            .current_dir(&root)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&agent_log)?)
            .stderr(std::fs::File::create(log_dir.join("agent.stderr"))?),
    )?;
    println!("    agent pid {}, logs in {}", agent.child.id(), log_dir.display());
    if let Err(err) = wait_for_api(&mut agent, Duration::from_secs(30)) {
        show_agent_logs(&log_dir);
        server.stop(Duration::from_secs(3));
        agent.stop(Duration::from_secs(5));
        return Err(err);
    }
    println!("    agent API is up at {API}");

    step("starting the load generator (python)");
    // Leave a few seconds at the end so the last snapshots show the connections closing.
    let load_secs = args.seconds.saturating_sub(args.seconds.min(20) / 4).max(1);
    let mut load = Proc::spawn(
        "load generator",
        Command::new("python3")
            .arg(servers.join("ws_load.py"))
            .args(["--port", &port.to_string()])
            .args(["--connections", &args.connections.to_string()])
            .args(["--rate", &args.rate.to_string()])
            .args(["--duration", &load_secs.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped()),
    )?;
    let summary = forward_summary(&mut load);

    step(&format!("demo running for {} s (snapshot every {} s; Ctrl-C stops early)", args.seconds, args.every));
    let start = Instant::now();
    let end = start + Duration::from_secs(args.seconds);
    let mut next = start + Duration::from_secs(args.every.max(1));
    let mut agent_died = None;
    while Instant::now() < end && !sys::interrupted() {
        if let Some(status) = agent.exit_status() {
            agent_died = Some(status);
            break;
        }
        if Instant::now() >= next {
            print_snapshot(&bin, start.elapsed());
            next += Duration::from_secs(args.every.max(1));
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    if sys::interrupted() {
        step("interrupted: stopping");
    }
    let result = match agent_died {
        Some(status) => {
            println!("\n!!! the agent exited early ({status})");
            show_agent_logs(&log_dir);
            Err(anyhow::anyhow!("the agent exited early ({status})"))
        }
        None if sys::interrupted() => Ok(()),
        None => {
            step("final snapshot");
            print_snapshot(&bin, start.elapsed());
            step("checking the agent's counts against the load generator's");
            check_counts(&bin, API, server.child.id(), &summary)
        }
    };

    step("stopping the load generator, the agent and the echo server");
    load.stop(Duration::from_secs(5));
    agent.stop(Duration::from_secs(10));
    server.stop(Duration::from_secs(3));
    println!("    agent logs kept in {}", log_dir.display());
    // The agent's clean stop detaches its probe: nothing of the demo stays in the kernel.
    let pin = Path::new(DEMO_STATE[1]);
    let left = if pin.exists() {
        let _ = std::fs::remove_dir_all(pin);
        Err(anyhow::anyhow!("the stopped agent left its probe pinned at {} (removed now)", pin.display()))
    } else {
        println!("    nothing left attached at {}", pin.display());
        Ok(())
    };
    result.and(left)
}

/// Start `node ws_echo.js 0` and wait for its `READY <port>` line.
pub(crate) fn start_echo_server(servers: &Path) -> Result<(Proc, u16)> {
    let mut proc = Proc::spawn(
        "echo server",
        Command::new("node").arg(servers.join("ws_echo.js")).arg("0").stdin(Stdio::null()).stdout(Stdio::piped()),
    )?;
    let stdout = proc.child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(port) = line.strip_prefix("READY ") {
                let _ = tx.send(port.trim().parse::<u16>().ok());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Some(port)) => Ok((proc, port)),
        _ => {
            proc.stop(Duration::from_secs(2));
            bail!("the echo server did not print READY <port> within 10 s")
        }
    }
}

/// Wait until the agent answers a snapshot request. Not just a TCP connect: the agent binds its
/// API port before it loads the probe (a port conflict fails first), so the port accepts
/// connections seconds before anything is counted. Starting the load then made the first burst
/// of connections open before the probe attached (the first run on a new machine, where
/// mounting tracefs and a cold verifier make the attach slowest). The API serves its first
/// answer only after the probe is attached.
fn wait_for_api(agent: &mut Proc, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = agent.exit_status() {
            bail!("the agent exited during start-up ({status})");
        }
        if snapshot_answered() {
            return Ok(());
        }
        if Instant::now() >= deadline || sys::interrupted() {
            bail!("the agent API did not come up on {API_ADDR} within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `GET /api/v1/snapshot` answers `200`.
fn snapshot_answered() -> bool {
    let addr: SocketAddr = API_ADDR.parse().unwrap();
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(300)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /api/v1/snapshot HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

fn print_snapshot(bin: &Path, elapsed: Duration) {
    println!("\n--- t={:>3}s  wsguard snapshot --api {API}", elapsed.as_secs());
    match Command::new(bin).args(["snapshot", "--api", API]).stdin(Stdio::null()).output() {
        Ok(out) => {
            print!("{}", String::from_utf8_lossy(&out.stdout));
            if !out.status.success() {
                println!("    (snapshot failed: {}) {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
            }
        }
        Err(err) => println!("    (cannot run {}: {err})", bin.display()),
    }
}

/// Pass the load generator's output through and keep its `SUMMARY {json}` line.
pub(crate) fn forward_summary(load: &mut Proc) -> mpsc::Receiver<Value> {
    let (tx, rx) = mpsc::channel();
    if let Some(out) = load.child.stdout.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                println!("{line}");
                if let Some(json) = line.strip_prefix("SUMMARY ") {
                    if let Ok(v) = serde_json::from_str(json) {
                        let _ = tx.send(v);
                    }
                }
            }
        });
    }
    rx
}

/// What the agent must show for the echo server, from the load generator's summary: every
/// connection it opened, each abort an abnormal close, each clean close a close frame each way,
/// and every message the client sent. (The echoes are not compared: one the server wrote just
/// before the client's reset is rightly counted by the agent and never read by the client.)
fn expected(s: &Value) -> Vec<(&'static str, u64)> {
    let n = |k: &str| s[k].as_u64().unwrap_or(0);
    vec![
        ("connections_opened", n("opened")),
        ("connections_closed", n("opened")),
        ("abnormal_closes", n("aborted")),
        ("messages_received", n("sent_msgs")),
        ("frames_received.close", n("closed_clean")),
        ("frames_sent.close", n("closed_clean")),
        // Every connection was followed from its first byte (none opened before the attach).
        ("unfollowed_connections", 0),
    ]
}

/// The agent's value of `key` (`a.b` for nested) in the server's process entry: its
/// `websocket` object first, then the entry itself.
fn agent_value(process: &Value, key: &str) -> Option<u64> {
    let at = |v: &Value| key.split('.').try_fold(v, |v, k| v.get(k))?.as_u64();
    at(&process["websocket"]).or_else(|| at(process))
}

/// Poll the agent's snapshot (a few intervals) until its totals for `pid` equal the load
/// generator's; fail with the differences otherwise.
pub(crate) fn check_counts(bin: &Path, api: &str, pid: u32, summary: &mpsc::Receiver<Value>) -> Result<()> {
    let summary = summary.recv_timeout(Duration::from_secs(20)).context("the load generator printed no SUMMARY line")?;
    let want = expected(&summary);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new(bin).args(["snapshot", "--json", "--api", api]).stdin(Stdio::null()).output()?;
        let snap: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let ws = snap["processes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["pid"].as_u64() == Some(pid as u64))
            .cloned()
            .unwrap_or(Value::Null);
        let wrong: Vec<String> = want
            .iter()
            .filter(|(k, v)| agent_value(&ws, k) != Some(*v))
            .map(|(k, v)| format!("{k}: agent {:?}, load generator {v}", agent_value(&ws, k)))
            .collect();
        if wrong.is_empty() {
            let shown: Vec<String> = want.iter().map(|(k, v)| format!("{k} {v}")).collect();
            println!("    exact: {}", shown.join(", "));
            return Ok(());
        }
        if Instant::now() >= deadline {
            for w in &wrong {
                println!("    MISMATCH {w}");
            }
            bail!("the agent's counts differ from the load generator's ({} fields)", wrong.len());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn show_agent_logs(dir: &Path) {
    for name in ["agent.stderr", "agent.log"] {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(dir.join(name)) {
            let _ = f.read_to_string(&mut text);
        }
        // The tail is where the reason is.
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(60)..];
        println!("--- {} (last {} lines)", dir.join(name).display(), tail.len());
        for l in tail {
            println!("    {l}");
        }
    }
}
