//! Stop means stop (docs/deployment.md, "Stopping"): a clean stop (SIGTERM, SIGINT) detaches
//! the probe, so its programs no longer exist in the kernel; keeping it across a restart is
//! explicit (SIGUSR2, `run --keep-probe`, `[probe] keep_on_stop`) and the log says which
//! happened. `wsguard detach` refuses to pull the probe from under a running agent, says
//! "nothing attached" the second time, and never targets the default installation's probe
//! without -c/--pin/--yes.
//!
//! Whether a program still exists is asked of the kernel by id (`BPF_PROG_GET_FD_BY_ID`), with
//! the ids the agent held open, so the check covers every program of any probe mode.

use std::path::Path;

use anyhow::{Context, Result};
use wsguard_integration::{enc, prog_ids, require_root, wsguard, Agent, RawClient, Server, Split};

/// The programs of agent `pid` that a kept probe keeps: all but its OpenSSL uprobes
/// (`wsg_ssl_*`), which belong to the running agent and are never pinned.
fn pinned_prog_ids(pid: u32) -> Result<Vec<u32>> {
    let is_tls = |id: u32| {
        std::process::Command::new("bpftool")
            .args(["prog", "show", "id", &id.to_string()])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("name wsg_ssl_"))
            .unwrap_or(false)
    };
    Ok(prog_ids(pid)?.into_iter().filter(|&id| !is_tls(id)).collect())
}

/// Whether the kernel still has program `id` (loaded: attached by a pinned link, here).
fn prog_exists(id: u32) -> bool {
    const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
    let mut attr = [0u32; 4];
    attr[0] = id;
    // SAFETY: bpf(2) with a zeroed attr union of the size it reads for this command.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_GET_FD_BY_ID, attr.as_mut_ptr(), std::mem::size_of_val(&attr)) };
    if fd >= 0 {
        // SAFETY: a descriptor we just got.
        unsafe { libc::close(fd as i32) };
        return true;
    }
    false
}

/// The programs of `ids` still in the kernel after waiting up to 5 s: the kernel frees a
/// detached link and its program after an RCU grace period, not at the unlink itself.
fn still_loaded(ids: &[u32]) -> Vec<u32> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let left: Vec<u32> = ids.iter().copied().filter(|&id| prog_exists(id)).collect();
        if left.is_empty() || std::time::Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn detach(args: &[&str]) -> Result<(String, String, i32)> {
    let mut all = vec!["detach"];
    all.extend_from_slice(args);
    wsguard(&all)
}

#[test]
fn a_clean_stop_detaches_and_keeping_is_explicit() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let server = Server::node(&[])?;
    let mut agent = Agent::start("stop")?;
    let pin = agent.pin.clone();

    for signal in [libc::SIGTERM, libc::SIGINT] {
        let ids = prog_ids(agent.pid().context("agent pid")?)?;
        assert!(!ids.is_empty() && ids.iter().all(|&id| prog_exists(id)), "programs loaded: {ids:?}");
        agent.stop(signal);
        assert!(!Path::new(&pin).exists(), "signal {signal}: {pin} still pinned");
        let left = still_loaded(&ids);
        assert!(left.is_empty(), "signal {signal}: programs {left:?} of {ids:?} still in the kernel");
        assert!(agent.log_text().contains(&format!("probe detached from {pin}")), "{}", agent.log_text());
        agent.spawn(false)?;
        assert_eq!(agent.fresh_snapshot()?["probe"]["resumed"], false, "nothing was left to resume");
    }

    // Kept for one restart by SIGUSR2 (the package's upgrade path): counts go on.
    let mut c = RawClient::connect(server.port)?;
    c.send(&[enc::text("x", true)], Split::PerFrame)?;
    c.read_frames(1, std::time::Duration::from_secs(5))?;
    agent.wait_ws(server.pid, "message counted", |w| w["messages_received"] == 1)?;
    // The pinned probe is what is kept; the TLS uprobes (socket mode) belong to the running agent
    // and go with it by design (configuration.md, `[probe.tls]`).
    let ids = pinned_prog_ids(agent.pid().context("agent pid")?)?;
    agent.stop(libc::SIGUSR2);
    assert!(Path::new(&pin).exists() && ids.iter().all(|&id| prog_exists(id)), "SIGUSR2: the probe was not kept");
    assert!(agent.log_text().contains(&format!("stays attached and counting at {pin} (SIGUSR2)")), "{}", agent.log_text());
    c.send(&[enc::text("y", true)], Split::PerFrame)?;
    c.read_frames(1, std::time::Duration::from_secs(5))?;
    agent.spawn(false)?;
    assert_eq!(agent.fresh_snapshot()?["probe"]["resumed"], true);
    agent.wait_ws(server.pid, "the message sent while down counted", |w| w["messages_received"] == 2)?;

    // `run --keep-probe`: a SIGTERM keeps it too.
    agent.stop(libc::SIGKILL);
    agent.args = vec!["--keep-probe".into()];
    agent.spawn(false)?;
    agent.stop(libc::SIGTERM);
    assert!(Path::new(&pin).exists(), "--keep-probe: the probe was not kept");
    assert!(agent.log_text().contains(&format!("stays attached and counting at {pin} (--keep-probe)")), "{}", agent.log_text());
    agent.args.clear();
    agent.spawn(false)?;
    assert_eq!(agent.fresh_snapshot()?["probe"]["resumed"], true);
    agent.stop(libc::SIGTERM);
    assert!(!Path::new(&pin).exists(), "the plain stop after a kept one detaches");
    drop(agent);

    // `[probe] keep_on_stop = true` keeps it on every clean stop.
    let mut agent = Agent::start_with("stop-keep", "keep_on_stop = true\n")?;
    let ids = pinned_prog_ids(agent.pid().context("agent pid")?)?;
    agent.stop(libc::SIGTERM);
    let pin = agent.pin.clone();
    assert!(Path::new(&pin).exists() && ids.iter().all(|&id| prog_exists(id)), "keep_on_stop kept nothing");
    assert!(agent.log_text().contains("([probe] keep_on_stop = true)"), "{}", agent.log_text());
    let (out, err, code) = detach(&["--pin", &pin])?;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with(&format!("detached the probe at {pin}: ")) && out.contains("link(s) detached"), "{out}");
    assert_eq!(still_loaded(&ids), Vec::<u32>::new(), "wsguard detach left programs in the kernel");
    Ok(())
}

#[test]
fn detach_is_refused_under_a_running_agent_and_idempotent() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let mut agent = Agent::start("detach")?;
    let pin = agent.pin.clone();
    let pid = agent.pid().context("agent pid")?;
    let config = agent.config.display().to_string();
    for args in [vec!["--pin", pin.as_str()], vec!["-c", config.as_str()]] {
        let (out, err, code) = detach(&args)?;
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains(&format!("in use by pid {pid} (wsguard)")) && err.contains("systemctl stop wsguard"), "{err}");
        assert!(Path::new(&pin).exists(), "refused, yet {pin} is gone");
    }
    assert_eq!(agent.fresh_snapshot()?["probe"]["attached"], true, "the running agent keeps its probe");

    // Without -c/--pin (no terminal to ask on): refused, whatever the default probe's state.
    let (out, err, code) = detach(&[])?;
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("-c FILE or --pin DIR, or pass --yes"), "{err}");

    // Stopped (detached by the stop itself): detach has nothing to do, and says so, twice.
    agent.stop(libc::SIGKILL);
    assert!(Path::new(&pin).exists(), "SIGKILL cannot clean up");
    let (out, _, code) = detach(&["--pin", &pin])?;
    assert!(code == 0 && out.starts_with(&format!("detached the probe at {pin}")), "{out}");
    for _ in 0..2 {
        let (out, err, code) = detach(&["--pin", &pin])?;
        assert_eq!((code, out.trim()), (0, format!("nothing attached at {pin}").as_str()), "{err}");
    }
    Ok(())
}
