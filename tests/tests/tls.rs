//! wss://: servers that terminate TLS themselves, counted as exactly as plain ones (socket mode:
//! plaintext from uprobes on OpenSSL, see agent-ebpf/src/tls.rs). The truth is what the test's
//! rustls client wrote and read in plaintext, decoded by tungstenite; the client cuts its writes
//! adversarially, one TLS record per cut.

use std::time::Duration;

use anyhow::Result;
use wsguard_integration::{
    exact::{assert_exact, drive_splits, script, SPLITS},
    oracle::{self, Counts},
    require_root, scratch_dir,
    tls::{nginx, Certs, TlsClient},
    Agent, ProbeMode, Server, Split,
};

/// The agent in the socket mode (TLS plaintext needs it), whatever the suite's mode.
fn agent(name: &str) -> Result<Agent> {
    Agent::start_in_mode(name, "socket", "")
}

/// Without the OpenSSL hooks a TLS connection is still recognised: never a failed handshake,
/// never `not_websocket`, never out of sync; its end is counted in `tls_unseen`.
#[test]
fn tls_without_hooks_is_counted_unseen_not_failed() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let dir = scratch_dir("tls-off");
    let certs = Certs::generate(&dir)?;
    let (cert, key) = (certs.cert.to_string_lossy().into_owned(), certs.key.to_string_lossy().into_owned());
    let server = Server::python(&["--tls", &cert, &key])?;
    let agent = Agent::start_in_mode("tls-off", "socket", "[probe.tls]\nenabled = false\n")?;
    let mut c = TlsClient::connect(server.port, &certs)?;
    c.send(&script(1000), Split::PerFrame)?;
    c.read_to_end(Duration::from_secs(10))?;
    drop(c);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let health = agent.fresh_snapshot()?["probe"]["health"].clone();
        if health["tls_unseen"] == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "tls_unseen never reached 1: {health:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Nothing WebSocket was seen, so the process is not listed (the miss is in `tls_unseen`);
    // had it been, nothing may have been judged.
    // (The server's own numbers, not the host totals: in the socket mode those count every
    // WebSocket server on the host, and other tests may be running one.)
    if let Some(p) = agent.process(server.pid)? {
        let ws = &p["websocket"];
        assert_eq!(ws["handshakes_failed"], 0, "{p:#}");
        assert_eq!(ws["connections_opened"], 0, "{p:#}");
        assert_eq!(ws["out_of_sync"], 0, "{p:#}");
        assert_eq!(p["not_websocket"], 0, "{p:#}");
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// Exact counts of `adversarial`'s connections through `port`, for process `pid`.
fn adversarial(agent: &Agent, server: &Server, certs: &Certs) -> Result<()> {
    adversarial_via(agent, server.port, &[server.pid], certs)
}

fn adversarial_via(agent: &Agent, port: u16, pids: &[u32], certs: &Certs) -> Result<()> {
    let (rx, tx) = drive_splits(|| TlsClient::connect(port, certs))?;
    let n = SPLITS.len() as u64;
    for &pid in pids {
        let ws = agent.wait_ws(pid, "all closed", |w| w["connections_closed"] == n)?;
        assert_exact(&ws, &rx, &tx);
        assert_eq!(ws["connections_opened"], n, "{ws:#}");
        assert_eq!(ws["abnormal_closes"], 0, "{ws:#}");
        assert_eq!(ws["handshakes_failed"], 0, "{ws:#}");
        assert_eq!(ws["frames_sent"]["pong"], n, "{ws:#}");
        let p = agent.process(pid)?.unwrap_or_default();
        assert_eq!(p["not_websocket"], 0, "{p:#}");
    }
    let health = &agent.fresh_snapshot()?["probe"]["health"];
    assert_eq!(health["tls_unlinked"], 0, "{health:#}");
    assert_eq!(health["tls_map_full"], 0, "{health:#}");
    Ok(())
}

/// Python `websockets` (asyncio) with an `SSLContext`: the system's libssl, through memory BIOs.
#[test]
fn python_websockets_over_tls_is_exact() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let dir = scratch_dir("tls-py");
    let certs = Certs::generate(&dir)?;
    let (cert, key) = (certs.cert.to_string_lossy().into_owned(), certs.key.to_string_lossy().into_owned());
    let server = Server::python(&["--tls", &cert, &key])?;
    let agent = agent("tls-py")?;
    assert_eq!(ProbeMode::effective(&agent)?, ProbeMode::Socket);
    adversarial(&agent, &server, &certs)?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// Node `ws` on an `https` server: the OpenSSL inside the node binary, through memory BIOs.
#[test]
fn node_ws_over_https_is_exact() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let dir = scratch_dir("tls-node");
    let certs = Certs::generate(&dir)?;
    let (cert, key) = (certs.cert.to_string_lossy().into_owned(), certs.key.to_string_lossy().into_owned());
    let server = Server::node(&["--tls", &cert, &key])?;
    let agent = agent("tls-node")?;
    adversarial(&agent, &server, &certs)?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// nginx terminating TLS (system libssl, OpenSSL doing its own socket I/O) in front of a plain
/// python server: nginx's client side and the backend are both counted exactly.
#[test]
fn nginx_terminating_tls_and_its_backend_are_exact() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let dir = scratch_dir("tls-nginx");
    let certs = Certs::generate(&dir)?;
    let backend = Server::python(&[])?;
    let proxy = nginx(&dir, &certs, backend.port)?;
    let agent = agent("tls-nginx")?;
    adversarial_via(&agent, proxy.port, &[proxy.pid, backend.pid], &certs)?;
    drop(proxy);
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// Many wss:// connections at once on one event loop: each `SSL` must be paired with its own
/// socket while handshakes and messages of the others interleave on the same thread.
#[test]
fn concurrent_tls_connections_are_paired_exactly() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let dir = scratch_dir("tls-many");
    let certs = std::sync::Arc::new(Certs::generate(&dir)?);
    let (cert, key) = (certs.cert.to_string_lossy().into_owned(), certs.key.to_string_lossy().into_owned());
    for (name, server) in
        [("tls-many-node", Server::node(&["--tls", &cert, &key])?), ("tls-many-py", Server::python(&["--tls", &cert, &key])?)]
    {
        let agent = agent(name)?;
        let n = 24u64;
        let port = server.port;
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let certs = certs.clone();
                std::thread::spawn(move || -> Result<(Vec<u8>, Vec<u8>)> {
                    let frames = script(3000 + i as u16);
                    let mut c = TlsClient::connect(port, &certs)?;
                    c.send(&frames, Split::Random(i + 1))?;
                    c.read_to_end(Duration::from_secs(20))?;
                    Ok((frames.concat(), c.received))
                })
            })
            .collect();
        let (mut rx, mut tx) = (Counts::default(), Counts::default());
        for h in handles {
            let (sent, got) = h.join().expect("client thread")?;
            rx.add(&oracle::decode(&sent));
            tx.add(&oracle::decode(&got));
        }
        let ws = agent.wait_ws(server.pid, "all closed", |w| w["connections_closed"] == n)?;
        assert_exact(&ws, &rx, &tx);
        assert_eq!(ws["connections_opened"], n, "{name}: {ws:#}");
        assert_eq!(ws["abnormal_closes"], 0, "{name}: {ws:#}");
        let health = &agent.fresh_snapshot()?["probe"]["health"];
        assert_eq!(health["tls_unlinked"], 0, "{name}: {health:#}");
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
