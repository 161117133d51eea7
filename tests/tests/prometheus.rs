//! A real Prometheus scrapes a real agent watching a real `ws` server: the numbers it stores are
//! exactly the frames the clients sent, and `promtool check metrics` accepts the live exposition.
//!
//! Needs `prometheus` and `promtool` (Debian package `prometheus`; `cargo xtask setup` installs
//! it). A missing binary is a failure, not a skip: CI installs them.

use std::{
    io::Write,
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use wsguard_integration::{enc, http_get, http_get_json, oracle, require_root, Agent, RawClient, Server, Split};

const CONNECTIONS: usize = 3;
const TEXT_PER_CONNECTION: usize = 7;
/// How long Prometheus may take to start, scrape and show the expected value.
const QUERY_DEADLINE: Duration = Duration::from_secs(60);

/// Panics with the way to install `bin` when it is not on PATH.
fn require_binary(bin: &str) {
    match Command::new(bin).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("`{bin}` is not installed; `cargo xtask setup` installs it (Debian package `prometheus`)")
        }
        Err(e) => panic!("cannot run `{bin}`: {e}"),
    }
}

/// A free TCP port on loopback (released before Prometheus binds it).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Percent-encodes everything but RFC 3986 unreserved characters (so `{`, `}`, `"`, `=`, space
/// and `,` among others).
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A running Prometheus, killed (and its data removed) on drop.
struct Prometheus {
    child: Child,
    url: String,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (host:port) every second.
    fn start(target: &str) -> Result<Prometheus> {
        let dir = std::env::temp_dir().join(format!("wsguard-it-prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: wsguard\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )?;
        let port = free_port()?;
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting prometheus")?;
        Ok(Prometheus { child, url: format!("http://127.0.0.1:{port}"), dir })
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// The result vector of an instant query.
    fn query(&mut self, promql: &str) -> Result<Vec<Value>> {
        if let Some(st) = self.child.try_wait()? {
            bail!("prometheus exited ({st}):\n{}", self.log_text());
        }
        let v = http_get_json(&format!("{}/api/v1/query?query={}", self.url, urlencode(promql)))?;
        if v["status"] != "success" {
            bail!("{promql}: {v}");
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// The value of a query returning one series (None while it returns none).
    fn value(&mut self, promql: &str) -> Result<Option<f64>> {
        let r = self.query(promql)?;
        match r.as_slice() {
            [] => Ok(None),
            [one] => {
                let v = one["value"][1].as_str().context("sample value")?;
                Ok(Some(v.parse().with_context(|| format!("{promql}: {v}"))?))
            }
            many => bail!("{promql}: expected one series, got {}: {many:?}", many.len()),
        }
    }

    /// Polls until `promql` returns exactly `expected` (a counter that went past it fails at once).
    fn wait_for(&mut self, promql: &str, expected: f64) -> Result<f64> {
        let deadline = Instant::now() + QUERY_DEADLINE;
        let mut last = Err(anyhow::anyhow!("never queried"));
        while Instant::now() < deadline {
            last = self.value(promql);
            match &last {
                Ok(Some(v)) if *v == expected => return Ok(*v),
                Ok(Some(v)) if promql.contains("_total") && *v > expected => {
                    bail!("{promql} = {v}, more than the {expected} sent")
                }
                _ => std::thread::sleep(Duration::from_millis(250)),
            }
        }
        let targets = http_get_json(&format!("{}/api/v1/targets", self.url)).map(|t| t.to_string());
        bail!("{promql}: wanted {expected}, last answer {last:?}\ntargets: {targets:?}\nprometheus log:\n{}", self.log_text())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `promtool check metrics` on `text`: (success, everything it printed).
fn promtool_check(text: &str) -> Result<(bool, String)> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting promtool")?;
    child.stdin.take().context("stdin")?.write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), said))
}

#[test]
fn prometheus_scrapes_exact_numbers() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    require_binary("prometheus");
    require_binary("promtool");

    let server = Server::node(&[])?;
    let agent = Agent::start("prometheus")?;
    let mut clients = Vec::new();
    let (mut sent, mut echoed) = (oracle::Counts::default(), oracle::Counts::default());
    for c in 0..CONNECTIONS {
        let mut client = RawClient::connect(server.port)?;
        let frames: Vec<Vec<u8>> = (0..TEXT_PER_CONNECTION).map(|i| enc::text(&format!("conn {c} message {i}"), true)).collect();
        client.send(&frames, Split::PerFrame)?;
        client.read_frames(TEXT_PER_CONNECTION, Duration::from_secs(10))?;
        sent.add(&oracle::decode(&frames.concat()));
        echoed.add(&oracle::decode(&client.received));
        clients.push(client);
    }
    let text_sent = sent.frames.iter().filter(|f| f.0 == "text").count();
    let text_echoed = echoed.frames.iter().filter(|f| f.0 == "text").count();
    assert_eq!(text_sent, CONNECTIONS * TEXT_PER_CONNECTION);
    assert_eq!(text_echoed, text_sent, "the echo server answers every message");
    // The agent's own view first, so a failure below is about the exposition or the scrape.
    agent.wait_ws(server.pid, "all frames counted", |w| {
        w["frames_received"]["text"] == text_sent && w["connections_active"] == CONNECTIONS
    })?;

    let target = agent.api.strip_prefix("http://").context("agent API URL")?;
    let mut prom = Prometheus::start(target)?;
    // The agent sees every process on the host (other tests may run next to this one), so the
    // per-server queries select this server by its listen_port label.
    let server_sel = format!(r#"listen_port="{}""#, server.port);
    let received = prom.wait_for(
        &format!(r#"sum(wsguard_websocket_frames_total{{direction="received",opcode="text",{server_sel}}})"#),
        text_sent as f64,
    )?;
    let echoed_n = prom.wait_for(
        &format!(r#"sum(wsguard_websocket_frames_total{{direction="sent",opcode="text",{server_sel}}})"#),
        text_echoed as f64,
    )?;
    let active = prom.wait_for(&format!("sum(wsguard_websocket_connections_active{{{server_sel}}})"), CONNECTIONS as f64)?;
    let attached = prom.wait_for("wsguard_probe_attached", 1.0)?;
    // The newer families as Prometheus stored them: the histogram's _count and a quantile from
    // its buckets, ages, and a process resource.
    let handshakes =
        prom.wait_for(&format!("sum(wsguard_websocket_handshake_latency_seconds_count{{{server_sel}}})"), CONNECTIONS as f64)?;
    let p99 = prom
        .value(&format!(
            r#"histogram_quantile(0.99, sum by (le) (wsguard_websocket_handshake_latency_seconds_bucket{{{server_sel}}}))"#
        ))?
        .context("no p99 handshake latency")?;
    assert!(p99 > 0.0 && p99 < 10.0, "p99 handshake latency {p99} s");
    let young = prom.wait_for(
        &format!(r#"sum(wsguard_websocket_connection_age_connections{{age="under_5m",{server_sel}}})"#),
        CONNECTIONS as f64,
    )?;
    let fds = prom.value(&format!("sum(wsguard_process_open_fds{{{server_sel}}})"))?.context("no open fds")?;
    assert!(fds >= CONNECTIONS as f64, "open fds {fds}");
    let everything = prom.value(r#"sum(wsguard_websocket_frames_total{direction="received",opcode="text"})"#)?;
    println!(
        "prometheus: received text {received}, sent text {echoed_n}, active {active}, probe_attached {attached}, \
         handshakes {handshakes}, handshake p99 {p99} s, connections under 5m {young}, open fds {fds}; \
         received text of all processes the agent sees {everything:?}"
    );

    // The live exposition passes promtool's lint without a word.
    let (content_type, text) = http_get(&format!("{}/metrics", agent.api))?;
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let (ok, said) = promtool_check(&text)?;
    assert!(ok && said.trim().is_empty(), "promtool check metrics: {said}\n{text}");

    drop(clients);
    drop(prom);
    Ok(())
}
