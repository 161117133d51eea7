//! The agent's first start on a clean machine (no pins, tracefs not mounted) while clients keep
//! connecting: every connection is either followed from its first byte and counted exactly, or
//! counted in `unfollowed_connections`, never missing without a trace. (The demo once lost the
//! first burst of ~50 connections this way: they opened while the probe was still loading.)

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::Result;
use wsguard_integration::{enc, require_root, Agent, RawClient, Server, Split};

/// Unmount tracefs wherever it is mounted (the agent mounts it again at start). Busy mounts
/// (another tool holds a file in them) stay; the test then starts from a mounted tracefs.
fn unmount_tracefs() {
    for path in ["/sys/kernel/debug/tracing", "/sys/kernel/tracing"] {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        if mounts.lines().any(|l| l.split(' ').nth(1) == Some(path) && l.split(' ').nth(2) == Some("tracefs")) {
            let c = std::ffi::CString::new(path).unwrap();
            // SAFETY: a NUL-terminated path.
            if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
                eprintln!("note: cannot unmount {path}: {}", std::io::Error::last_os_error());
            }
        }
    }
}

#[test]
fn connections_during_the_first_attach_are_followed_or_reported() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    unmount_tracefs();
    let server = Server::node(&[])?;
    let port = server.port;
    // Clients keep connecting (and stay connected) from before the agent starts until after its
    // API answers: some connections predate the probe, some arrive while it loads and attaches,
    // the rest after.
    let stop = Arc::new(AtomicBool::new(false));
    let opener = {
        let stop = stop.clone();
        std::thread::spawn(move || -> Result<Vec<RawClient>> {
            let mut clients = Vec::new();
            while !stop.load(Ordering::SeqCst) && clients.len() < 2000 {
                clients.push(RawClient::connect(port)?);
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(clients)
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let agent = Agent::start("startup")?;
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let mut clients = opener.join().expect("opener thread")?;
    let n = clients.len() as u64;

    // One message each way and a clean close on every connection.
    for c in clients.iter_mut() {
        c.send(&[enc::text("x", true)], Split::PerFrame)?;
        c.read_frames(1, Duration::from_secs(5))?;
        c.send(&[enc::close(1000)], Split::PerFrame)?;
    }
    for mut c in clients {
        c.read_to_end(Duration::from_secs(5))?;
    }

    // Every connection has closed: each was followed (and its close seen) or reported.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let p = loop {
        let p = agent.process(server.pid)?.unwrap_or_default();
        let ws = &p["websocket"];
        let followed = ws["connections_opened"].as_u64().unwrap_or(0);
        let unfollowed = p["unfollowed_connections"].as_u64().unwrap_or(0);
        if followed + unfollowed == n && ws["connections_closed"] == followed && ws["connections_active"] == 0 {
            break p;
        }
        assert!(std::time::Instant::now() < deadline, "{n} connections, not all followed or reported: {p:#}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let ws = &p["websocket"];
    let followed = ws["connections_opened"].as_u64().unwrap();
    let unfollowed = p["unfollowed_connections"].as_u64().unwrap();
    eprintln!("{n} connections: {followed} followed, {unfollowed} not followed");
    assert!(unfollowed > 0, "connections opened before the agent started are reported: {p:#}");
    assert!(followed > 0, "connections opened after the attach are followed: {p:#}");
    // The followed ones are counted exactly: one message and a clean close each way.
    assert_eq!(ws["messages_received"], followed, "{p:#}");
    assert_eq!(ws["messages_sent"], followed, "{p:#}");
    assert_eq!(ws["frames_received"]["close"], followed, "{p:#}");
    assert_eq!(ws["frames_sent"]["close"], followed, "{p:#}");
    assert_eq!(ws["abnormal_closes"], 0, "{p:#}");
    assert_eq!(ws["out_of_sync"], 0, "{p:#}");
    let health = &agent.fresh_snapshot()?["probe"]["health"];
    assert_eq!(health["unfollowed_connections"], unfollowed, "{health:#}");
    let (_, metrics) = wsguard_integration::http_get(&format!("{}/metrics", agent.api))?;
    let line = metrics.lines().find(|l| l.starts_with("wsguard_websocket_unfollowed_connections_total")).unwrap_or_default();
    assert!(line.ends_with(&format!(" {unfollowed}")), "metric: {line:?}");
    Ok(())
}
