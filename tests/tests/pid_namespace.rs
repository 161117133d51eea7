//! The agent in a PID namespace of its own (what `systemd-nspawn -b` always makes, and a
//! Kubernetes pod without `hostPID`), reproduced with `unshare --pid --fork --mount-proc`.
//! The probe reports host pids, which that namespace's `/proc` does not show: the agent took a
//! live server for exited and reaped its open connections (nspawn: 20 abnormal closes for 6,
//! 339 messages for 986). Now `run` refuses before anything is attached, and `doctor` says why.

use anyhow::Result;
use wsguard_integration::{require_root, skip, Agent};

fn unshare() -> Option<Vec<String>> {
    let ok = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| ["unshare", "--pid", "--fork", "--mount-proc"].map(String::from).to_vec())
}

#[test]
fn run_in_a_child_pid_namespace_refuses_and_attaches_nothing() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let Some(wrapper) = unshare() else {
        skip("`unshare --pid --fork --mount-proc` does not work here");
        return Ok(());
    };
    // A working agent first (its config, pin and port), stopped; then the same under unshare.
    let mut agent = Agent::start("pidns")?;
    agent.stop(libc::SIGTERM);
    agent.wrapper = wrapper.clone();
    let err = match agent.spawn(true) {
        Ok(()) => {
            // unshare ignores SIGTERM while it waits: stop the agent, its child, first.
            let pid = agent.pid().unwrap_or_default();
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse::<i32>().ok()) {
                // SAFETY: signalling the agent this test started.
                unsafe { libc::kill(child, libc::SIGTERM) };
            }
            agent.stop(libc::SIGTERM);
            panic!("the agent started in a child PID namespace:\n{}", agent.log_text());
        }
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("wsguard run must run in the host's PID namespace"), "{err}");
    assert!(err.contains("not the host's (4026531836)") && err.contains("hostPID: true"), "{err}");
    assert!(!std::path::Path::new(&agent.pin).exists(), "{} pinned by a refused start", agent.pin);

    // Its exit status is the one the systemd unit does not retry (RestartPreventExitStatus=78),
    // unlike any other failure (2), so a unit in nspawn does not restart it every 5 s forever.
    let out = std::process::Command::new(&wrapper[0])
        .args(&wrapper[1..])
        .arg(wsguard_integration::agent_bin())
        .args(["run", "--config"])
        .arg(&agent.config)
        .output()?;
    assert_eq!(out.status.code(), Some(78), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!std::path::Path::new(&agent.pin).exists(), "{} pinned by a refused start", agent.pin);

    // doctor in the same place fails that check (exit 1) and names the fix.
    let out = std::process::Command::new(&wrapper[0])
        .args(&wrapper[1..])
        .arg(wsguard_integration::agent_bin())
        .arg("doctor")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("pid namespace")).unwrap_or_else(|| panic!("no pid namespace check:\n{text}"));
    assert!(line.starts_with("FAIL") && line.contains("--pid=host"), "{line}");
    assert_eq!(out.status.code(), Some(1), "{text}");

    // And on the host both are fine.
    let (host, _, _) = wsguard_integration::wsguard(&["doctor"])?;
    assert!(host.lines().any(|l| l.starts_with("OK") && l.contains("pid namespace")), "{host}");
    Ok(())
}
