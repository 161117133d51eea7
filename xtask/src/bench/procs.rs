//! Child processes (echo server, agent, nginx, bpftrace) and what /proc says about them.

pub use crate::proc::Proc;
use crate::util;
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Clock ticks per second for /proc/<pid>/stat.
pub fn clk_tck() -> f64 {
    util::output(util::cmd("getconf", ["CLK_TCK"])).and_then(|s| s.parse().ok()).unwrap_or(100.0)
}

/// utime + stime of a process (all its threads, live and exited), in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// On-CPU time of the live threads of a process in ns (schedstat), a finer-grained check.
pub fn sched_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
            total += s.split_whitespace().next()?.parse::<u64>().ok()?;
        }
    }
    Some(total)
}

/// Read plus write syscalls of a process so far (`syscr` + `syscw` of /proc/<pid>/io: read,
/// readv, write, writev and the like; root can read any process's).
pub fn io_syscalls(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let field = |name: &str| -> Option<u64> { s.lines().find_map(|l| l.strip_prefix(name))?.trim().parse().ok() };
    Some(field("syscr:")? + field("syscw:")?)
}

/// A process and its direct children (nginx master + workers).
pub fn with_children(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out
}

pub fn sum_ticks(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|p| cpu_ticks(*p)).sum()
}

/// VmRSS in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Pin every thread of this process to `cpu` (new threads inherit it).
pub fn pin_self(cpu: u32) {
    let pid = std::process::id().to_string();
    if !util::succeeds(util::cmd("taskset", ["-a", "-cp", &cpu.to_string(), &pid])) {
        println!("    warning: taskset failed; the load generator is not pinned");
    }
}

/// The hard open-file limit of this process (raising it needs CAP_SYS_RESOURCE, which
/// containers often lack; then one process holds at most this many sockets).
pub fn hard_nofile() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            let l = s.lines().find(|l| l.starts_with("Max open files"))?.to_string();
            l.split_whitespace().nth(4)?.parse().ok()
        })
        .unwrap_or(1024)
}

/// Raise this process's soft open-file limit to `n` (or to the hard limit if that fails).
pub fn raise_nofile(n: u64) -> u64 {
    let pid = std::process::id().to_string();
    for n in [n, hard_nofile()] {
        let lim = format!("--nofile={n}:{n}");
        if util::succeeds(util::cmd("prlimit", ["--pid", &pid, &lim])) {
            return n;
        }
    }
    println!("    warning: prlimit failed; many connections may fail with EMFILE");
    1024
}

/// `node ws_echo.js 0` pinned to `cpu` with a high fd limit; returns it and its port.
pub fn start_server(servers: &Path, cpu: u32, nofile: u64, log: &Path) -> Result<(Proc, u16)> {
    start_server_in(servers, cpu, nofile, log, None)
}

/// [`start_server`], born in the cgroup whose `cgroup.procs` is given (a shell writes its own
/// pid there, then execs the server): its sockets then belong to that cgroup.
pub fn start_server_in(servers: &Path, cpu: u32, nofile: u64, log: &Path, cgroup_procs: Option<&Path>) -> Result<(Proc, u16)> {
    let lim = format!("--nofile={nofile}:{nofile}");
    let mut cmd = match cgroup_procs {
        Some(procs) => {
            let mut c = Command::new("sh");
            c.args(["-c", "echo $$ > \"$0\" && exec \"$@\""]).arg(procs).arg("taskset");
            c
        }
        None => Command::new("taskset"),
    };
    cmd.args(["-c", &cpu.to_string(), "prlimit", &lim, "node"])
        .arg("--max-old-space-size=4096")
        .arg(servers.join("ws_echo.js"))
        .arg("0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::options().create(true).append(true).open(log)?);
    let mut p = Proc::spawn("echo server", &mut cmd)?;
    let port = p.wait_line("READY ", Duration::from_secs(15))?;
    let port = port.parse().context("bad READY line")?;
    Ok((p, port))
}

/// `wsguard run --config CFG --fresh`, waiting until its API answers. The API's socket is bound
/// before the probe loads, so a TCP connect succeeds early; `/health` is answered only once the
/// agent has finished starting (probe programs verified and attached, TLS uprobes on OpenSSL
/// included), so no measurement window overlaps the agent's start-up.
pub fn start_agent(bin: &Path, cfg: &Path, api: SocketAddr, log: &Path) -> Result<Proc> {
    let mut p = Proc::spawn(
        "agent",
        Command::new(bin)
            .args(["run", "--fresh", "--config"])
            .arg(cfg)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(log)?)
            .stderr(std::fs::File::options().append(true).open(log)?),
    )?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if p.exited() {
            bail!("the agent exited during start-up; see {}", log.display());
        }
        if http_get_json(api, "/health").is_ok_and(|h| h["status"] == "ok") {
            return Ok(p);
        }
        if Instant::now() > deadline {
            bail!("the agent API did not come up on {api}; see {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stop the agent and detach its probe (`wsguard detach` removes the pins, so the links go).
pub fn stop_agent(mut agent: Proc, bin: &Path, cfg: &Path) {
    agent.stop(Duration::from_secs(10));
    detach(bin, cfg);
}

pub fn detach(bin: &Path, cfg: &Path) {
    let _ = Command::new(bin)
        .args(["detach", "--config"])
        .arg(cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// GET a JSON document over HTTP/1.0 (no chunking).
pub fn http_get_json(addr: SocketAddr, path: &str) -> Result<serde_json::Value> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut body = Vec::new();
    s.read_to_end(&mut body)?;
    let at = body.windows(4).position(|w| w == b"\r\n\r\n").context("no HTTP header end")?;
    Ok(serde_json::from_slice(&body[at + 4..])?)
}
