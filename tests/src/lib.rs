//! Harness for the privileged integration tests: a real agent (the release binary), real
//! unmodified WebSocket servers (`ws` on node, `websockets` on python) and a raw TCP client that
//! splits its writes adversarially. Frames are encoded and decoded with `tungstenite`, a library
//! independent of wsguard's parser.

use std::{
    io::{Read, Write},
    net::{Shutdown, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU16, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tungstenite::protocol::frame::{
    coding::{CloseCode, Control, Data, OpCode},
    CloseFrame, Frame,
};

pub mod http;
pub mod sse;
pub mod tls;

/// The frame script every exact-count test sends, and the check of the agent's numbers.
pub mod exact {
    use std::time::Duration;

    use anyhow::Result;
    use serde_json::Value;

    use super::enc;
    use crate::{oracle::Counts, Split};

    /// Frames a client sends: data of all sizes (7-, 16- and 64-bit lengths), a fragmented message
    /// with a ping in between, an unsolicited pong, many small frames, then a close with `code`.
    pub fn script(code: u16) -> Vec<Vec<u8>> {
        let mut f = vec![
            enc::text("hello", true),
            enc::binary(200_000, true),
            enc::binary(300, true),
            enc::text("frag-a", false),
            enc::ping("p1"),
            enc::cont("frag-b", false),
            enc::cont("frag-c", true),
            enc::pong("unsolicited"),
            enc::binary(125, true),
            enc::binary(126, true),
            enc::binary(65_536, true),
        ];
        for i in 0..50 {
            f.push(enc::text(&format!("m{i}"), true));
        }
        f.push(enc::close(code));
        f
    }

    /// The cuts every adversarial test sends the script with, one connection each.
    pub const SPLITS: [Split; 6] =
        [Split::PerFrame, Split::All, Split::HeaderSplit, Split::Random(7), Split::Random(1234), Split::Bytes];

    /// A WebSocket client the adversarial drive can use: plain TCP ([`crate::RawClient`]) or TLS
    /// ([`crate::tls::TlsClient`]).
    pub trait SplitClient {
        fn send(&mut self, frames: &[Vec<u8>], split: Split) -> Result<()>;
        fn read_to_end(&mut self, timeout: Duration) -> Result<()>;
        fn received(&self) -> &[u8];
    }

    /// One connection per split in [`SPLITS`], each made by `connect`, sending the script (close
    /// code 4000 + its index) and reading the server's answer to the end. Returns the truth the
    /// agent must match: what the clients sent (the process received) and what they received.
    pub fn drive_splits<C: SplitClient>(mut connect: impl FnMut() -> Result<C>) -> Result<(Counts, Counts)> {
        let (mut rx, mut tx) = (Counts::default(), Counts::default());
        for (i, split) in SPLITS.iter().enumerate() {
            let frames = script(4000 + i as u16);
            let mut c = connect()?;
            // The 200 KB frame byte by byte is slow and proves nothing more: trim it there.
            let frames: Vec<Vec<u8>> = match split {
                Split::Bytes => frames.into_iter().filter(|f| f.len() < 70_000).collect(),
                _ => frames,
            };
            c.send(&frames, *split)?;
            c.read_to_end(Duration::from_secs(10))?;
            rx.add(&crate::oracle::decode(&frames.concat()));
            tx.add(&crate::oracle::decode(c.received()));
        }
        Ok((rx, tx))
    }

    /// Check the agent's numbers for `pid` against what clients sent (rx) and received (tx).
    pub fn assert_exact(ws: &Value, rx: &Counts, tx: &Counts) {
        assert_eq!(ws["frames_received"], rx.by_opcode(), "frames_received: {ws:#}");
        assert_eq!(ws["frames_sent"], tx.by_opcode(), "frames_sent: {ws:#}");
        assert_eq!(ws["messages_received"], rx.messages(), "messages_received");
        assert_eq!(ws["messages_sent"], tx.messages(), "messages_sent");
        assert_eq!(ws["payload_bytes_received"], rx.payload_bytes(), "payload_bytes_received");
        assert_eq!(ws["payload_bytes_sent"], tx.payload_bytes(), "payload_bytes_sent");
        assert_eq!(ws["close_codes_received"], serde_json::to_value(&rx.close_codes).unwrap());
        assert_eq!(ws["close_codes_sent"], serde_json::to_value(&tx.close_codes).unwrap());
        assert_eq!(ws["out_of_sync"], 0);
    }
}

pub mod oracle;
pub mod webhook;

/// The probe mode the tests run the agent in: env `WSGUARD_TEST_PROBE_MODE` (`auto`, `socket`
/// or `syscall`), written as `[probe] mode` into every config the harness generates; None (the
/// config default) when unset. Tests whose expectations differ by mode branch on
/// [`ProbeMode::effective`].
pub fn probe_mode() -> Option<String> {
    std::env::var("WSGUARD_TEST_PROBE_MODE").ok().filter(|m| !m.is_empty())
}

/// What a test may expect of the running probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeMode {
    /// Per-socket state (`tp_btf` sock_recv/send_length): follows a socket whoever holds it.
    Socket,
    /// The raw `sys_enter`/`sys_exit` fallback keyed by (process, fd).
    Syscall,
}

impl ProbeMode {
    /// The mode the agent reports running (`probe.mode` of its snapshot; an agent without that
    /// field has only the syscall probe).
    pub fn effective(agent: &Agent) -> Result<ProbeMode> {
        let s = agent.get("/api/v1/snapshot")?;
        Ok(match s["probe"]["mode"].as_str() {
            Some("socket") => ProbeMode::Socket,
            None | Some("syscall") => ProbeMode::Syscall,
            Some(other) => bail!("unknown probe.mode {other:?} in the snapshot"),
        })
    }
}

/// `[probe]` lines for the harness's configs: the pin path, and the mode when one is asked for.
pub fn probe_section(pin: &str) -> String {
    probe_section_in(pin, probe_mode())
}

fn probe_section_in(pin: &str, mode: Option<String>) -> String {
    match mode {
        Some(m) => format!("[probe]\npin_path = \"{pin}\"\nmode = \"{m}\"\n"),
        None => format!("[probe]\npin_path = \"{pin}\"\n"),
    }
}

/// A test that cannot run here: outside CI it prints why and the caller returns (a skip);
/// under `CI=true` it panics, so a run that could not test is reported failed, never passed.
pub fn skip(reason: &str) {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    if ci {
        panic!("cannot run under CI=true: {reason}");
    }
    eprintln!("SKIP: {reason}");
}

/// Skip (with a printed reason, failing under `CI=true`: see [`skip`]) unless we are root: the
/// probe needs it.
pub fn require_root() -> bool {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip("privileged test needs root (load eBPF); run `cargo xtask test` as root");
        return false;
    }
    true
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `wsguard` binary under test (`WSGUARD_BIN`, default the release build).
/// A fresh, empty directory `<tmp>/wsguard-<name>-<pid>` of mode 0755: others may enter it but
/// not write it (the agent refuses a config in a directory others can write).
pub fn scratch_dir(name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let d = std::env::temp_dir().join(format!("wsguard-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// A harness time budget stretched by `WSGUARD_TEST_TIME_SCALE` (default 1): `cargo xtask
/// vm-test` sets it when the guest runs under software emulation, where every step is several
/// times slower. Only waits stretch; counts stay exact.
pub fn scaled(d: Duration) -> Duration {
    let scale = std::env::var("WSGUARD_TEST_TIME_SCALE").ok().and_then(|s| s.parse::<u32>().ok()).unwrap_or(1);
    d * scale.max(1)
}

pub fn agent_bin() -> PathBuf {
    std::env::var_os("WSGUARD_BIN").map(PathBuf::from).unwrap_or_else(|| repo_root().join("target/release/wsguard"))
}

static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// A running agent with its own API port, pin path and state dir.
pub struct Agent {
    child: Option<Child>,
    pub api: String,
    pub config: PathBuf,
    pub dir: PathBuf,
    pub pin: String,
    /// `RUST_LOG` for the next `spawn` (default `info`).
    pub rust_log: String,
    /// A command the agent is started under (e.g. `setpriv ...`), empty for none.
    pub wrapper: Vec<String>,
    /// Extra environment for the next `spawn` (e.g. `WSGUARD_LOG_FORMAT`).
    pub env: Vec<(String, String)>,
    /// Extra `wsguard run` arguments (after `--config FILE`).
    pub args: Vec<String>,
    log: PathBuf,
}

impl Agent {
    /// Start a fresh agent (its own pinned probe) named `name`.
    pub fn start(name: &str) -> Result<Agent> {
        Self::start_with(name, "")
    }

    /// Like `start`, with extra TOML appended to the config (whole tables, e.g. `[limits]`).
    pub fn start_with(name: &str, extra: &str) -> Result<Agent> {
        Self::start_config(name, None, extra)
    }

    /// Like `start_with`, in probe mode `mode` whatever `WSGUARD_TEST_PROBE_MODE` says: for a
    /// test of one mode's own mechanism (the syscall mode's connection map capacity).
    pub fn start_in_mode(name: &str, mode: &str, extra: &str) -> Result<Agent> {
        Self::start_config(name, Some(mode), extra)
    }

    fn start_config(name: &str, mode: Option<&str>, extra: &str) -> Result<Agent> {
        let base = 19600 + (std::process::id() % 200) as u16 * 10;
        let port = base + NEXT_PORT.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("wsguard-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let pin = format!("/sys/fs/bpf/wsguard-it-{name}-{}", std::process::id());
        let config = dir.join("wsguard.toml");
        std::fs::write(
            &config,
            format!(
                "[agent]\ninterval = \"500ms\"\nstate_dir = \"{}\"\n[api]\nlisten = \"127.0.0.1:{port}\"\n{}{extra}\n",
                dir.join("state").display(),
                probe_section_in(&pin, mode.map(str::to_owned).or_else(probe_mode))
            ),
        )?;
        let mut a = Agent {
            child: None,
            api: format!("http://127.0.0.1:{port}"),
            config,
            dir: dir.clone(),
            pin,
            rust_log: "info".into(),
            wrapper: Vec::new(),
            env: Vec::new(),
            args: Vec::new(),
            log: dir.join("agent.log"),
        };
        a.spawn(true)?;
        Ok(a)
    }

    /// (Re)start the agent process; `fresh` discards the pinned probe.
    pub fn spawn(&mut self, fresh: bool) -> Result<()> {
        let bin = agent_bin();
        if !bin.exists() {
            bail!("{} missing: build it first (`cargo build --release`)", bin.display());
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut cmd = match self.wrapper.split_first() {
            Some((w, args)) => {
                let mut c = Command::new(w);
                c.args(args).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.args(["run", "--config"]).arg(&self.config).args(&self.args);
        if fresh {
            cmd.arg("--fresh");
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let child = cmd.env("RUST_LOG", &self.rust_log).stdout(log.try_clone()?).stderr(log).spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + scaled(Duration::from_secs(30));
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Some(st) = c.try_wait()? {
                    bail!("agent exited early ({st}): {}", self.log_text());
                }
            }
            if self.get("/api/v1/snapshot").is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("agent did not serve a snapshot within {:?}: {}", scaled(Duration::from_secs(30)), self.log_text())
    }

    /// Stop the agent process with `signal` (SIGTERM/SIGINT detach the probe unless it is kept;
    /// SIGUSR2 keeps it; SIGKILL leaves it pinned).
    pub fn stop(&mut self, signal: i32) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as i32, signal) };
            let _ = c.wait();
        }
    }

    /// Like `stop`: the agent's exit status and how long it took to exit after the signal.
    pub fn stop_timed(&mut self, signal: i32) -> Result<(std::process::ExitStatus, Duration)> {
        let mut c = self.child.take().context("agent not running")?;
        let t0 = Instant::now();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(c.id() as i32, signal) };
        let st = c.wait()?;
        Ok((st, t0.elapsed()))
    }

    /// Send `signal` to the running agent (e.g. SIGHUP to reload its config).
    pub fn signal(&self, signal: i32) {
        if let Some(c) = &self.child {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as i32, signal) };
        }
    }

    /// The agent process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The agent's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> Result<Value> {
        http_get_json(&format!("{}{}", self.api, path))
    }

    /// The latest snapshot after at least one more interval has passed.
    pub fn fresh_snapshot(&self) -> Result<Value> {
        let before = self.get("/api/v1/snapshot")?["timestamp"].clone();
        let deadline = Instant::now() + scaled(Duration::from_secs(10));
        loop {
            let s = self.get("/api/v1/snapshot")?;
            if s["timestamp"] != before {
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!("snapshot did not advance");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The `websocket` object of process `pid` in a fresh snapshot (null if not listed).
    pub fn ws(&self, pid: u32) -> Result<Value> {
        Ok(self.process(pid)?.map(|p| p["websocket"].clone()).unwrap_or(Value::Null))
    }

    /// Delivery stats of notification channel `name` (`wsguard alerts stats --json`).
    pub fn channel_stats(&self, name: &str) -> Result<Value> {
        let (out, err, code) = wsguard(&["alerts", "stats", "--json", "--api", &self.api])?;
        if code != 0 {
            bail!("alerts stats: {err}");
        }
        let v: Value = serde_json::from_str(&out)?;
        let ch = v["notifications"][0]["channels"].as_array().cloned().unwrap_or_default();
        Ok(ch.into_iter().find(|c| c["name"] == name).unwrap_or(Value::Null))
    }

    /// The API token the agent created in its state directory.
    pub fn token(&self) -> Result<String> {
        Ok(std::fs::read_to_string(self.dir.join("state/api-token"))?.trim().to_owned())
    }

    pub fn process(&self, pid: u32) -> Result<Option<Value>> {
        let s = self.fresh_snapshot()?;
        Ok(s["processes"].as_array().and_then(|ps| ps.iter().find(|p| p["pid"] == pid).cloned()))
    }

    /// Poll until `pred` holds for the process's `websocket` object, or fail with the last one.
    pub fn wait_ws(&self, pid: u32, what: &str, pred: impl Fn(&Value) -> bool) -> Result<Value> {
        let deadline = Instant::now() + scaled(Duration::from_secs(15));
        loop {
            let ws = self.ws(pid)?;
            if pred(&ws) {
                return Ok(ws);
            }
            if Instant::now() > deadline {
                let p = self.process(pid)?.unwrap_or_default();
                bail!("timed out waiting for {what}; process: {p:#}");
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop(libc::SIGTERM);
        let _ = std::fs::remove_dir_all(&self.pin);
        // Keep the config and agent log of a failed test for its report.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Minimal HTTP/1.0 GET (keeps the harness free of an HTTP client stack): the Content-Type and
/// body of a 200 answer; any other status is an error.
pub fn http_get(url: &str) -> Result<(String, String)> {
    let rest = url.strip_prefix("http://").context("http only")?;
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let mut s = TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let (head, body) = buf.split_once("\r\n\r\n").context("no HTTP body")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("{url}: {}", head.lines().next().unwrap_or(""));
    }
    let content_type = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-type")))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    Ok((content_type, body.to_owned()))
}

/// `http_get`, parsed as JSON.
pub fn http_get_json(url: &str) -> Result<Value> {
    Ok(serde_json::from_str(&http_get(url)?.1)?)
}

/// A real WebSocket server process.
pub struct Server {
    child: Child,
    pub port: u16,
    pub pid: u32,
    /// Words after the port on the server's `READY <port> ...` line (e.g. worker pids).
    pub info: Vec<String>,
}

impl Server {
    /// `ws` (npm) echo server.
    pub fn node(extra: &[&str]) -> Result<Server> {
        let mut cmd = Command::new("node");
        cmd.arg(repo_root().join("tests/servers/ws_echo.js")).arg("0").args(extra);
        Self::spawn(cmd)
    }

    /// `websockets` (PyPI) echo server.
    pub fn python(extra: &[&str]) -> Result<Server> {
        let mut cmd = Command::new("python3");
        cmd.arg(repo_root().join("tests/servers/websockets_echo.py")).arg("0").args(extra);
        Self::spawn(cmd)
    }

    /// The `websockets` Sans-I/O protocol behind our own readv/writev (`vectored`) or
    /// recvmsg/sendmsg (`msg`) loop, writing many small iovecs.
    pub fn sansio(io: &str) -> Result<Server> {
        let mut cmd = Command::new("python3");
        cmd.arg(repo_root().join("tests/servers/sansio_echo.py")).args(["0", "--io", io]);
        Self::spawn(cmd)
    }

    /// `ws` under node's `cluster` (2 workers, SCHED_RR): `info` holds the worker pids.
    pub fn node_cluster() -> Result<Server> {
        let mut cmd = Command::new("node");
        cmd.arg(repo_root().join("tests/servers/ws_cluster.js"));
        Self::spawn(cmd)
    }

    /// The Sans-I/O `websockets` server that moves each accepted socket to another fd (`dup2`)
    /// and closes the accepted one before reading.
    pub fn dup2() -> Result<Server> {
        let mut cmd = Command::new("python3");
        cmd.arg(repo_root().join("tests/servers/sansio_echo.py")).args(["0", "--io", "msg", "--dup2"]);
        Self::spawn(cmd)
    }

    /// gorilla/websocket (Go) echo server, built from tests/servers/gorilla_echo with Debian's
    /// packages, offline (`GO111MODULE=off`, `GOPATH=/usr/share/gocode`), into target/.
    pub fn gorilla() -> Result<Server> {
        Self::spawn(Command::new(go_build("gorilla_echo")?))
    }

    /// The C echo server whose socket I/O goes through io_uring (tests/servers/uring_echo.c),
    /// built with `cc ... -luring` (Debian's liburing-dev: `cargo xtask setup`) into target/.
    pub fn uring() -> Result<Server> {
        let src = repo_root().join("tests/servers/uring_echo.c");
        let out = repo_root().join("target/test-servers");
        let bin = out.join("uring_echo");
        let fresh = match (std::fs::metadata(&bin), std::fs::metadata(&src)) {
            (Ok(b), Ok(s)) => b.modified().ok() >= s.modified().ok(),
            _ => false,
        };
        if !fresh {
            std::fs::create_dir_all(&out)?;
            let st = Command::new("cc")
                .args(["-O2", "-Wall", "-o"])
                .arg(&bin)
                .arg(&src)
                .arg("-luring")
                .status()
                .context("cc (install gcc and liburing-dev: cargo xtask setup)")?;
            if !st.success() {
                bail!("building tests/servers/uring_echo.c failed ({st}); liburing-dev missing? (cargo xtask setup)");
            }
        }
        Self::spawn(Command::new(bin))
    }

    /// Run `cmd`, which prints `READY <port> ...` on stdout when it serves.
    pub fn spawn(mut cmd: Command) -> Result<Server> {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn()?;
        let mut out = child.stdout.take().context("stdout")?;
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while out.read(&mut b)? == 1 && b[0] != b'\n' {
            line.push(b[0]);
        }
        let line = String::from_utf8_lossy(&line).to_string();
        let mut words = line.strip_prefix("READY ").context(format!("server said {line:?}"))?.split_whitespace();
        let port = words.next().context("no port after READY")?.parse()?;
        let info = words.map(String::from).collect();
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let pid = child.id();
        Ok(Server { child, port, pid, info })
    }

    pub fn stop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Build the Go program in tests/servers/`name` (one `main.go`) with Debian's packages, offline
/// (`GO111MODULE=off`, `GOPATH=/usr/share/gocode`), into target/test-servers/`name` unless that
/// binary is newer than its source; its path.
pub(crate) fn go_build(name: &str) -> Result<PathBuf> {
    let src = repo_root().join("tests/servers").join(name);
    let out = repo_root().join("target/test-servers");
    let bin = out.join(name);
    let stale = |b: &std::path::Path| -> bool {
        let (Ok(b), Ok(s)) = (std::fs::metadata(b), std::fs::metadata(src.join("main.go"))) else { return true };
        b.modified().ok() < s.modified().ok()
    };
    if stale(&bin) {
        std::fs::create_dir_all(&out)?;
        let st = Command::new("go")
            .args(["build", "-o"])
            .arg(&bin)
            .arg(".")
            .current_dir(&src)
            .env("GO111MODULE", "off")
            .env("GOPATH", "/usr/share/gocode")
            .env("GOCACHE", out.join("gocache"))
            .status()
            .context("go build (install golang-go and golang-github-gorilla-websocket-dev: cargo xtask setup)")?;
        if !st.success() {
            bail!("go build of tests/servers/{name} failed ({st})");
        }
    }
    Ok(bin)
}

/// How a client cuts its bytes into `write` calls.
#[derive(Clone, Copy, Debug)]
pub enum Split {
    /// One write per frame.
    PerFrame,
    /// Every byte its own write.
    Bytes,
    /// Each frame's first byte alone, then the rest (header split across syscalls).
    HeaderSplit,
    /// Everything in one write.
    All,
    /// Pseudo-random cut points from this seed.
    Random(u64),
}

/// A client speaking raw bytes over TCP, with tungstenite's encoder for frames.
pub struct RawClient {
    pub stream: TcpStream,
    /// Bytes received after the handshake response.
    pub received: Vec<u8>,
    /// The server's handshake response head (status line and headers).
    pub head: String,
}

pub fn upgrade_request(port: u16, version: &str, extra: &str) -> String {
    format!(
        "GET /chat HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: {version}\r\n{extra}\r\n"
    )
}

impl exact::SplitClient for RawClient {
    fn send(&mut self, frames: &[Vec<u8>], split: Split) -> Result<()> {
        RawClient::send(self, frames, split)
    }
    fn read_to_end(&mut self, timeout: Duration) -> Result<()> {
        RawClient::read_to_end(self, timeout)
    }
    fn received(&self) -> &[u8] {
        &self.received
    }
}

impl RawClient {
    /// Connect and complete the upgrade; fails unless the server answers 101.
    pub fn connect(port: u16) -> Result<RawClient> {
        Self::connect_from("127.0.0.1", port, "")
    }

    pub fn connect_from(local: &str, port: u16, extra_headers: &str) -> Result<RawClient> {
        let sock = socket2_bind_connect(local, port)?;
        let mut c = RawClient { stream: sock, received: Vec::new(), head: String::new() };
        c.stream.write_all(upgrade_request(port, "13", extra_headers).as_bytes())?;
        let status = c.read_head()?;
        c.head = status.clone();
        if !status.starts_with("HTTP/1.1 101") {
            bail!("expected 101, got {status}");
        }
        Ok(c)
    }

    /// Read the response head; keep any bytes after it in `received`.
    fn read_head(&mut self) -> Result<String> {
        self.stream.set_read_timeout(Some(scaled(Duration::from_secs(5))))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                bail!("connection closed during handshake");
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                self.received.extend_from_slice(&buf[i + 4..]);
                return Ok(String::from_utf8_lossy(&buf[..i]).to_string());
            }
        }
    }

    /// Write `frames` (already encoded) cut according to `split`.
    pub fn send(&mut self, frames: &[Vec<u8>], split: Split) -> Result<()> {
        self.stream.set_nodelay(true)?;
        write_split(&mut self.stream, frames, split)
    }

    /// Read until the server closes the connection (or `timeout`).
    pub fn read_to_end(&mut self, timeout: Duration) -> Result<()> {
        self.stream.set_read_timeout(Some(scaled(timeout)))?;
        let mut chunk = [0u8; 65536];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(()),
                Ok(n) => self.received.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Read until at least `n` complete frames were received.
    pub fn read_frames(&mut self, n: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + scaled(timeout);
        self.stream.set_read_timeout(Some(Duration::from_millis(100)))?;
        let mut chunk = [0u8; 65536];
        while oracle::decode(&self.received).frames.len() < n {
            if Instant::now() > deadline {
                bail!("got {} of {n} frames", oracle::decode(&self.received).frames.len());
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => bail!("server closed early"),
                Ok(k) => self.received.extend_from_slice(&chunk[..k]),
                Err(_) => {}
            }
        }
        Ok(())
    }

    /// Abort with RST (SO_LINGER 0).
    pub fn reset(self) -> Result<()> {
        reset_on_close(&self.stream);
        drop(self.stream);
        Ok(())
    }

    /// Close our side with FIN, without a close frame.
    pub fn fin(self) -> Result<()> {
        self.stream.shutdown(Shutdown::Both)?;
        Ok(())
    }
}

/// Write `frames` (already encoded) to `w`, one `write_all` per cut that `split` makes (over TLS,
/// one record per cut).
pub fn write_split(w: &mut impl Write, frames: &[Vec<u8>], split: Split) -> Result<()> {
    match split {
        Split::PerFrame => {
            for f in frames {
                w.write_all(f)?;
            }
        }
        Split::All => w.write_all(&frames.concat())?,
        Split::Bytes => {
            for b in frames.concat() {
                w.write_all(&[b])?;
            }
        }
        Split::HeaderSplit => {
            for f in frames {
                w.write_all(&f[..1])?;
                w.flush()?;
                std::thread::sleep(Duration::from_micros(300));
                w.write_all(&f[1..])?;
            }
        }
        Split::Random(seed) => {
            let all = frames.concat();
            let mut x = seed | 1;
            let mut pos = 0;
            while pos < all.len() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let n = 1 + (x % 40) as usize;
                let end = (pos + n).min(all.len());
                w.write_all(&all[pos..end])?;
                pos = end;
                if x % 3 == 0 {
                    w.flush()?;
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
    }
    w.flush()?;
    Ok(())
}

fn socket2_bind_connect(local: &str, port: u16) -> Result<TcpStream> {
    if local == "127.0.0.1" {
        return Ok(TcpStream::connect(("127.0.0.1", port))?);
    }
    // Bind a distinct loopback source address (127.0.0.x) so clients have distinct IPs.
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls with valid arguments; the fd is owned by the TcpStream.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        if fd < 0 {
            bail!("socket: {}", std::io::Error::last_os_error());
        }
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as u16;
        sa.sin_addr.s_addr = u32::from_ne_bytes(local.parse::<std::net::Ipv4Addr>()?.octets());
        if libc::bind(fd, &sa as *const _ as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_in>() as u32) != 0 {
            bail!("bind {local}: {}", std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let mut to: libc::sockaddr_in = std::mem::zeroed();
        to.sin_family = libc::AF_INET as u16;
        to.sin_port = port.to_be();
        to.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        if libc::connect(fd, &to as *const _ as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_in>() as u32) != 0 {
            bail!("connect: {}", std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// Encoders (tungstenite), always masked as a client must.
pub mod enc {
    use super::*;

    static SEED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0x9e37_79b9);

    fn fmt(mut f: Frame) -> Vec<u8> {
        let m = SEED.fetch_add(0x6d2b_79f5, Ordering::Relaxed).wrapping_mul(2_654_435_761);
        f.header_mut().mask = Some(m.to_le_bytes());
        let mut v = Vec::new();
        f.format(&mut v).expect("encode");
        v
    }
    pub fn text(s: &str, fin: bool) -> Vec<u8> {
        fmt(Frame::message(s.as_bytes().to_vec(), OpCode::Data(Data::Text), fin))
    }
    pub fn binary(len: usize, fin: bool) -> Vec<u8> {
        fmt(Frame::message((0..len).map(|i| i as u8).collect::<Vec<u8>>(), OpCode::Data(Data::Binary), fin))
    }
    pub fn cont(s: &str, fin: bool) -> Vec<u8> {
        fmt(Frame::message(s.as_bytes().to_vec(), OpCode::Data(Data::Continue), fin))
    }
    pub fn ping(s: &str) -> Vec<u8> {
        fmt(Frame::ping(s.as_bytes().to_vec()))
    }
    pub fn pong(s: &str) -> Vec<u8> {
        fmt(Frame::pong(s.as_bytes().to_vec()))
    }
    pub fn close(code: u16) -> Vec<u8> {
        fmt(Frame::close(Some(CloseFrame { code: CloseCode::from(code), reason: "bye".into() })))
    }
    /// A frame with a reserved opcode: invalid framing.
    pub fn reserved() -> Vec<u8> {
        let mut f = Frame::message(vec![1, 2, 3], OpCode::Data(Data::Text), true);
        f.header_mut().opcode = OpCode::Control(Control::Reserved(0xB));
        fmt(f)
    }
}

/// Make closing `stream` abort the connection with a reset (SO_LINGER 0) instead of a FIN.
pub fn reset_on_close(stream: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: valid socket fd and option struct.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as u32,
        )
    };
}

/// The BPF programs process `pid` holds open (from `/proc/PID/fdinfo`), sorted: an agent's own
/// programs, including those it never pins (its OpenSSL uprobes).
pub fn prog_ids(pid: u32) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let text = std::fs::read_to_string(fd?.path()).unwrap_or_default();
        if let Some(id) = text.lines().find_map(|l| l.strip_prefix("prog_id:")).and_then(|v| v.trim().parse().ok()) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// Run the `wsguard` binary (the one the agent runs) with `args`; stdout, stderr and the exit code.
pub fn wsguard(args: &[&str]) -> Result<(String, String, i32)> {
    let out = Command::new(agent_bin()).args(args).output()?;
    Ok((
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
        out.status.code().unwrap_or(-1),
    ))
}
