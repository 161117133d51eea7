//! The snapshot next to what the process and host can take: resources checked against /proc,
//! clients counted per remote address and per header key, per-connection detail, and history
//! that survives a restart with a report that finds the right peak.

use std::{collections::HashSet, process::Command, time::Duration};

use anyhow::Result;
use serde_json::Value;
use wsguard_integration::{enc, repo_root, require_root, Agent, RawClient, Server, Split};

fn proc_fd_count(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as u64).unwrap_or(0)
}

fn soft_nofile(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[test]
fn resources_and_connections_match_proc() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let server = Server::node(&[])?;
    let agent = Agent::start("resources")?;
    let clients = (0..3).map(|_| RawClient::connect(server.port)).collect::<Result<Vec<_>>>()?;
    agent.wait_ws(server.pid, "3 active", |w| w["connections_active"] == 3)?;
    // The server is idle now: its fd count is stable between two reads of /proc.
    let p = loop {
        let before = proc_fd_count(server.pid);
        let p = agent.process(server.pid)?.expect("listed");
        if before == proc_fd_count(server.pid) {
            assert_eq!(p["resources"]["open_fds"], before, "{:#}", p["resources"]);
            break p;
        }
    };
    let r = &p["resources"];
    assert_eq!(r["fd_limit_soft"], soft_nofile(server.pid));
    let tasks = std::fs::read_dir(format!("/proc/{}/task", server.pid))?.count() as u64;
    assert_eq!(r["threads"], tasks);
    assert!(r["exe"].as_str().unwrap().ends_with("node"), "{r:#}");
    assert!(r["rss_bytes"].as_u64().unwrap() > 1 << 20);
    assert!(p["listening_ports"].as_array().unwrap().contains(&Value::from(server.port)));
    let ratio = r["fd_usage_ratio"].as_f64().unwrap();
    assert!((ratio - r["open_fds"].as_f64().unwrap() / r["fd_limit_soft"].as_f64().unwrap()).abs() < 1e-9);

    // Per-connection detail: one entry per client, with our source ports as peers.
    let conns = agent.get(&format!("/api/v1/processes/{}/connections", server.pid))?;
    let peers: HashSet<String> = conns.as_array().unwrap().iter().map(|c| c["peer"].as_str().unwrap().to_string()).collect();
    let ours: HashSet<String> = clients.iter().map(|c| c.stream.local_addr().unwrap().to_string()).collect();
    assert_eq!(peers, ours);
    assert!(conns
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["client_key"] == "127.0.0.1" && c["age_seconds"].as_f64().unwrap() >= 0.0));

    let snap = agent.fresh_snapshot()?;
    let host_total = std::fs::read_to_string("/proc/meminfo")?;
    let kb: u64 = host_total.lines().next().unwrap().split_whitespace().nth(1).unwrap().parse()?;
    assert_eq!(snap["host"]["memory_total_bytes"], kb * 1024);
    let health = agent.get("/health/detailed")?;
    assert_eq!(health["status"], "HEALTHY", "{health:#}");
    Ok(())
}

#[test]
fn clients_by_remote_address() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let server = Server::python(&[])?;
    let agent = Agent::start_with("clients-ip", "[limits]\nper_client_connections = 2\n")?;
    let mut keep = Vec::new();
    for (addr, n) in [("127.0.0.2", 3), ("127.0.0.3", 2), ("127.0.0.1", 1)] {
        for _ in 0..n {
            keep.push(RawClient::connect_from(addr, server.port, "")?);
        }
    }
    agent.wait_ws(server.pid, "6 active", |w| w["connections_active"] == 6)?;
    let c = &agent.process(server.pid)?.unwrap()["clients"];
    assert_eq!(c["key_source"], "remote_ip");
    assert_eq!(c["distinct"], 3, "{c:#}");
    assert_eq!(c["quota"], 2);
    assert_eq!(c["at_or_over_quota"], 2, "{c:#}");
    let top: Vec<(String, u64)> = c["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["key"].as_str().unwrap().into(), t["connections"].as_u64().unwrap()))
        .collect();
    assert_eq!(top, [("127.0.0.2".into(), 3), ("127.0.0.3".into(), 2), ("127.0.0.1".into(), 1)]);
    Ok(())
}

#[test]
fn clients_by_header_key_raw_and_hashed() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    for hash in [false, true] {
        let server = Server::node(&[])?;
        let cfg = format!("[probe.client_key]\nheader = \"X-User-Id\"\nhash = {hash}\n");
        let agent = Agent::start_with(if hash { "clients-hash" } else { "clients-hdr" }, &cfg)?;
        let mut keep = Vec::new();
        for (hdr, n) in [("X-User-Id: alice\r\n", 4), ("x-user-id:bob\r\n", 1), ("", 1)] {
            for _ in 0..n {
                let mut c = RawClient::connect_from("127.0.0.1", server.port, hdr)?;
                c.send(&[enc::text("hi", true)], Split::PerFrame)?;
                c.read_frames(1, Duration::from_secs(5))?;
                keep.push(c);
            }
        }
        agent.wait_ws(server.pid, "6 active", |w| w["connections_active"] == 6)?;
        let p = agent.process(server.pid)?.unwrap();
        let c = &p["clients"];
        assert_eq!(c["key_source"], "header:X-User-Id");
        assert_eq!(c["distinct"], 3, "{c:#}");
        let counts: Vec<u64> = c["top"].as_array().unwrap().iter().map(|t| t["connections"].as_u64().unwrap()).collect();
        assert_eq!(counts, [4, 1, 1], "{c:#}");
        let keys: Vec<&str> = c["top"].as_array().unwrap().iter().map(|t| t["key"].as_str().unwrap()).collect();
        if hash {
            assert!(keys[0].starts_with("h:") && keys.contains(&"127.0.0.1"), "{keys:?}");
            let conns = agent.get(&format!("/api/v1/processes/{}/connections", server.pid))?;
            let all = format!("{p}{conns}");
            assert!(!all.contains("alice") && !all.contains("bob"), "raw keys must not appear when hashed");
        } else {
            assert_eq!(keys[0], "alice");
            assert!(keys.contains(&"bob") && keys.contains(&"127.0.0.1"), "{keys:?}");
        }
    }
    Ok(())
}

#[test]
fn history_survives_restart_and_report_finds_the_peak() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let server = Server::node(&[])?;
    let mut agent = Agent::start("history")?;
    let mut clients = (0..5).map(|_| RawClient::connect(server.port)).collect::<Result<Vec<_>>>()?;
    agent.wait_ws(server.pid, "peak of 5", |w| w["connections_active"] == 5)?;
    agent.fresh_snapshot()?;
    for mut c in clients.drain(..3) {
        c.send(&[enc::close(1000)], Split::PerFrame)?;
        c.read_to_end(Duration::from_secs(5))?;
    }
    agent.wait_ws(server.pid, "down to 2", |w| w["connections_active"] == 2)?;
    agent.stop(libc::SIGTERM);
    agent.spawn(false)?;
    agent.fresh_snapshot()?;

    let bin = repo_root().join("target/release/wsguard");
    let run = |args: &[&str]| -> Result<Value> {
        let out = Command::new(&bin).args(args).output()?;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    let check = |r: &Value| {
        let p = r["processes"].as_array().unwrap().iter().find(|p| p["pid"] == server.pid).expect("process in report");
        assert_eq!(p["peak_active"]["value"], 5, "{p:#}");
        assert!(r["snapshots"].as_u64().unwrap() >= 4, "{r:#}");
    };
    // From the restarted agent's API: history from before the restart is still there.
    check(&run(&["report", "--hours", "1", "--format", "json", "--api", &agent.api])?);
    agent.stop(libc::SIGTERM);
    // Offline, straight from the store.
    let state = agent.dir.join("state");
    check(&run(&["report", "--hours", "1", "--format", "json", "--state-dir", state.to_str().unwrap()])?);
    let text = Command::new(&bin).args(["report", "--hours", "1", "--state-dir", state.to_str().unwrap()]).output()?;
    assert!(String::from_utf8_lossy(&text.stdout).contains("node"));
    Ok(())
}

/// With `kernel.bpf_stats_enabled=1` the probe's own run count and time are exported.
#[test]
fn probe_run_time_from_bpf_stats() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";
    let before = std::fs::read_to_string(SYSCTL)?;
    std::fs::write(SYSCTL, "1")?;
    let server = Server::node(&[])?;
    let agent = Agent::start("bpfstats")?;
    let mut c = RawClient::connect(server.port)?;
    c.send(&[enc::text("x", true)], Split::PerFrame)?;
    c.read_frames(1, Duration::from_secs(5))?;
    let snap = agent.fresh_snapshot()?;
    std::fs::write(SYSCTL, before.trim())?;
    let p = &snap["probe"];
    assert_eq!(p["bpf_stats_enabled"], true);
    // The mode's data programs ran for that message (the others, e.g. the socket mode's
    // sock_end or the TLS uprobes, may not have run yet and are only listed).
    let data: &[&str] =
        if p["mode"] == "socket" { &["wsg_sock_recv", "wsg_sock_send"] } else { &["wsg_sys_enter", "wsg_sys_exit"] };
    let progs: Vec<&serde_json::Value> =
        p["programs"].as_array().unwrap().iter().filter(|x| data.iter().any(|d| x["program"] == *d)).collect();
    assert_eq!(progs.len(), 2, "{p:#}");
    for prog in progs {
        assert!(prog["run_count"].as_u64().unwrap() > 0, "{prog:#}");
        assert!(prog["avg_ns_per_run"].as_f64().unwrap() > 0.0, "{prog:#}");
    }
    Ok(())
}

/// `[probe] processes` and `ports` choose what is reported: next to each other, a node and a
/// python server; an agent filtered by comm lists only node, one filtered by port only python,
/// each with exact connection counts and its resources (the /proc work skipped for the others
/// is not skipped for them).
#[test]
fn process_and_port_filters_choose_what_is_reported() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let node = Server::node(&[])?;
    let python = Server::python(&[])?;
    let by_comm = Agent::start_with("filter-comm", "processes = [\"node\"]")?;
    let by_port = Agent::start_with("filter-port", &format!("ports = [{}]", python.port))?;
    let _clients = [node.port, node.port, python.port].into_iter().map(RawClient::connect).collect::<Result<Vec<_>>>()?;
    by_comm.wait_ws(node.pid, "node: 2 active", |w| w["connections_active"] == 2 && w["connections_opened"] == 2)?;
    by_port.wait_ws(python.pid, "python: 1 active", |w| w["connections_active"] == 1 && w["connections_opened"] == 1)?;
    for (agent, shown, hidden) in [(&by_comm, node.pid, python.pid), (&by_port, python.pid, node.pid)] {
        let s = agent.fresh_snapshot()?;
        let pids: Vec<&Value> = s["processes"].as_array().into_iter().flatten().map(|p| &p["pid"]).collect();
        assert!(!pids.contains(&&Value::from(hidden)), "pid {hidden} filtered out, yet listed: {pids:?}");
        // Its resources are there: the fd count equals /proc's (once two reads agree: idle).
        let mut tries = 0;
        loop {
            let before = proc_fd_count(shown);
            let p = agent.process(shown)?.expect("listed");
            if before == proc_fd_count(shown) || tries == 5 {
                assert_eq!(p["resources"]["open_fds"], before, "{:#}", p["resources"]);
                break;
            }
            tries += 1;
        }
    }
    Ok(())
}
