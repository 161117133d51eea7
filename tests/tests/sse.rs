//! Server-Sent Events counted exactly against real, unmodified servers (node `http`, aiohttp, Go
//! `net/http`), which cut their writes adversarially as the test's script says (inside `data:`,
//! between CR and LF, inside chunk headers where the server writes its own chunked framing). The
//! truth is what a raw TCP client recorded, run through the whole-buffer oracle of
//! tests/src/sse.rs. A WebSocket server driven at the same time keeps its exact counts.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use serde_json::Value;
use wsguard_integration::{
    exact::{assert_exact, script},
    oracle::{self, Counts},
    require_root,
    sse::{assert_sse, expected, Cut, End, Recorded, Script, SseClient},
    Agent, RawClient, Server, Split,
};

/// Every kind of line the event-stream format has, with `\n` line ends: ids, multi-line data,
/// comments (keep-alives), an event with an empty `data`, blocks without data (not events),
/// field names that only look like `data`, a long event.
fn lf_body() -> Vec<u8> {
    let mut b = b"id: 1\ndata: hello\n\n: keep-alive\n\nevent: update\nid: 2\ndata: line one\ndata: line two\n\n\
data\n\ndata:\n\nevent: ping\nid: 9\n\nretry: 1000\n\n\n\nDATA: not data\n\ndatax: not data\n\n"
        .to_vec();
    b.extend_from_slice(b"data: ");
    b.extend(std::iter::repeat_n(b'x', 1500));
    b.extend_from_slice(b"\n\n: bye\n");
    b
}

fn with_line_ends(body: &[u8], eol: &[u8]) -> Vec<u8> {
    body.split(|&c| c == b'\n').collect::<Vec<_>>().join(eol)
}

/// The same body with every third line end CRLF, CR or LF.
fn mixed_body() -> Vec<u8> {
    let mut out = Vec::new();
    for (i, line) in lf_body().split(|&c| c == b'\n').enumerate() {
        if i > 0 {
            out.extend_from_slice([&b"\r\n"[..], b"\r", b"\n"][i % 3]);
        }
        out.extend_from_slice(line);
    }
    out
}

/// The scripts every server plays, one after another.
fn scripts() -> Vec<Script> {
    let short = b"data: x\r\n\r\n: k\r\rdata\n\nid: 4\r\n\r\n".to_vec();
    let mut tail = lf_body();
    tail.extend_from_slice(b"data: never dispatched\n");
    vec![
        Script::new(&lf_body(), Cut::Whole, End::Server),
        Script::new(&with_line_ends(&lf_body(), b"\r\n"), Cut::Adversarial, End::ClientFin),
        Script::new(&with_line_ends(&lf_body(), b"\r"), Cut::Random(7), End::Server),
        Script::new(&mixed_body(), Cut::Adversarial, End::ClientReset).resuming("2"),
        Script::new(&short, Cut::Bytes, End::Server),
        Script::new(&tail, Cut::Random(1234), End::Server).resuming("9"),
        Script::new(&lf_body(), Cut::Random(99), End::ClientFin).resuming("1"),
    ]
}

/// The `sse` object of process `pid` in a fresh snapshot (null if not listed).
fn sse(agent: &Agent, pid: u32) -> Result<Value> {
    Ok(agent.process(pid)?.map(|p| p["sse"].clone()).unwrap_or(Value::Null))
}

fn wait_sse(agent: &Agent, pid: u32, what: &str, pred: impl Fn(&Value) -> bool) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = sse(agent, pid)?;
        if pred(&s) {
            return Ok(s);
        }
        if Instant::now() > deadline {
            let snap = agent.fresh_snapshot()?;
            let listed: Vec<String> =
                snap["processes"].as_array().into_iter().flatten().map(|p| format!("{} {}", p["pid"], p["comm"])).collect();
            bail!("timed out waiting for {what}: sse {s:#}; probe health {:#}; listed {listed:?}", snap["probe"]["health"]);
        }
    }
}

/// WebSocket connections to `ws_echo.js` while the SSE streams run: their counts stay exact.
fn websocket_traffic(port: u16) -> std::thread::JoinHandle<Result<(Counts, Counts)>> {
    std::thread::spawn(move || {
        let (mut rx, mut tx) = (Counts::default(), Counts::default());
        for i in 0..3u16 {
            let frames = script(4000 + i);
            let mut c = RawClient::connect(port)?;
            c.send(&frames, Split::Random(u64::from(i) + 5))?;
            c.read_to_end(Duration::from_secs(10))?;
            rx.add(&oracle::decode(&frames.concat()));
            tx.add(&oracle::decode(&c.received));
        }
        Ok((rx, tx))
    })
}

/// `held` streams open at once, each held until the test has seen them all active.
fn concurrent(agent: &Agent, server: &Server, held: usize) -> Result<Vec<Recorded>> {
    let ready = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(AtomicBool::new(false));
    let port = server.port;
    let handles: Vec<_> = (0..held)
        .map(|i| {
            let (ready, release) = (ready.clone(), release.clone());
            std::thread::spawn(move || -> Result<Recorded> {
                let end = if i % 2 == 0 { End::ClientFin } else { End::ClientReset };
                let mut s = Script::new(&lf_body(), Cut::Random(i as u64 + 1), end);
                if i % 5 == 0 {
                    s = s.resuming(&i.to_string());
                }
                let mut c = SseClient::open(port, &s)?;
                c.read_script()?;
                ready.fetch_add(1, Ordering::SeqCst);
                let deadline = Instant::now() + Duration::from_secs(60);
                while !release.load(Ordering::SeqCst) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                c.finish()
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready.load(Ordering::SeqCst) < held && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let checked = (|| -> Result<()> {
        let s = wait_sse(agent, server.pid, "all held streams active", |s| s["streams_active"] == held as u64)?;
        assert_eq!(s["streams_active"], held as u64, "{s:#}");
        let conns = agent.get(&format!("/api/v1/processes/{}/connections", server.pid))?;
        let open_sse = conns.as_array().map(|a| a.iter().filter(|c| c["transport"] == "sse").count()).unwrap_or(0);
        assert_eq!(open_sse, held, "per-connection view: {conns:#}");
        Ok(())
    })();
    release.store(true, Ordering::SeqCst);
    let recs: Result<Vec<Recorded>> = handles.into_iter().map(|h| h.join().expect("client thread")).collect();
    checked?;
    recs
}

fn exact(name: &str, server: Server, extra: &[Script]) -> Result<()> {
    let ws_server = Server::node(&[])?;
    let agent = Agent::start(name)?;
    let ws = websocket_traffic(ws_server.port);
    let mut recs = Vec::new();
    for s in scripts().iter().chain(extra) {
        let r = SseClient::run(server.port, s)?;
        assert_eq!(r.body(), s.body, "{name}: the server sent its script");
        recs.push(r);
    }
    recs.extend(concurrent(&agent, &server, 24)?);
    let n = recs.len() as u64;
    let got = wait_sse(&agent, server.pid, "all streams closed", |s| s["streams_closed"] == n)?;
    assert_sse(name, &got, &expected(&recs));
    let (rx, tx) = ws.join().expect("websocket thread")?;
    let w = agent.wait_ws(ws_server.pid, "websocket closed", |w| w["connections_closed"] == 3)?;
    assert_exact(&w, &rx, &tx);
    assert_eq!(w["connections_opened"], 3, "{w:#}");
    // The SSE server is no WebSocket server, nor the WebSocket server an SSE one.
    assert_eq!(sse(&agent, ws_server.pid)?["streams_opened"].as_u64().unwrap_or(0), 0);
    Ok(())
}

#[test]
fn node_http_streams_are_exact() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    // Without chunked encoding the body runs until the server closes.
    let mut identity = Script::new(&mixed_body(), Cut::Adversarial, End::Server);
    identity.identity = true;
    exact("sse-node", Server::sse_node()?, &[identity])
}

#[test]
fn aiohttp_streams_are_exact() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    exact("sse-aiohttp", Server::sse_aiohttp()?, &[])
}

/// Go's net/http, and the same server writing its own chunked framing (chunk headers split
/// between size, CR and LF).
#[test]
fn go_net_http_streams_are_exact() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let raw = |mut s: Script| {
        s.raw_chunks = true;
        s
    };
    let extra = [
        raw(Script::new(&with_line_ends(&lf_body(), b"\r\n"), Cut::Adversarial, End::Server)),
        raw(Script::new(&mixed_body(), Cut::Random(3), End::ClientFin).resuming("7")),
    ];
    exact("sse-go", Server::sse_go()?, &extra)
}

/// Warm state: the agent is killed mid-stream (its probe stays pinned) and started again; the
/// events written while it was down and after are all counted.
#[test]
fn agent_restart_mid_stream_keeps_exact_counts() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let server = Server::sse_node()?;
    let mut agent = Agent::start("sse-restart")?;
    let scripts: Vec<Script> = (0..4u64)
        .map(|i| {
            // Byte-per-write streams (~2 ms a write, seconds long) are still being written
            // while the agent is down and restarting: the probe counts on without it.
            let (end, cut) = if i % 2 == 0 { (End::Server, Cut::Bytes) } else { (End::ClientFin, Cut::Random(i + 11)) };
            Script::new(&with_line_ends(&lf_body(), b"\r\n"), cut, end)
        })
        .collect();
    let mut clients = scripts.iter().map(|s| SseClient::open(server.port, s)).collect::<Result<Vec<_>>>()?;
    wait_sse(&agent, server.pid, "streams seen", |s| s["streams_opened"] == 4)?;
    agent.stop(libc::SIGKILL);
    std::thread::sleep(Duration::from_millis(300));
    agent.spawn(false)?;
    let snap = agent.fresh_snapshot()?;
    assert_eq!(snap["probe"]["resumed"], true, "{:#}", snap["probe"]);
    let mut recs = Vec::new();
    for c in clients.iter_mut() {
        c.read_script()?;
    }
    for c in clients {
        recs.push(c.finish()?);
    }
    let got = wait_sse(&agent, server.pid, "all closed", |s| s["streams_closed"] == 4)?;
    assert_sse("sse-restart", &got, &expected(&recs));
    Ok(())
}

/// A long stream written one byte per write (every split there is, chunk headers included):
/// node writes each byte as its own chunk.
#[test]
fn byte_by_byte_long_streams_are_exact() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let server = Server::sse_node()?;
    let agent = Agent::start("sse-bytes")?;
    let scripts = [
        Script::new(&with_line_ends(&lf_body(), b"\r\n"), Cut::Bytes, End::Server),
        Script::new(&mixed_body(), Cut::Bytes, End::ClientFin).resuming("5"),
    ];
    let handles: Vec<_> = scripts
        .into_iter()
        .map(|s| {
            let port = server.port;
            std::thread::spawn(move || SseClient::run(port, &s))
        })
        .collect();
    let recs = handles.into_iter().map(|h| h.join().expect("client thread")).collect::<Result<Vec<_>>>()?;
    let got = wait_sse(&agent, server.pid, "both closed", |s| s["streams_closed"] == 2)?;
    assert_sse("sse-bytes", &got, &expected(&recs));
    Ok(())
}
