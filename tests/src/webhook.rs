//! A webhook receiver in its own process (python's `http.server`), for the notification tests:
//! it records every POST as one JSON line {path, id, body} in a file before it answers 200, so
//! what it got is known even after the agent has exited. Down = the process is killed.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use serde_json::Value;

const RECEIVER: &str = r#"
import http.server, json, sys
port, out = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        rec = {"path": self.path, "id": self.headers.get("X-Wsguard-Notification-Id"), "body": body}
        with open(out, "a") as f:
            f.write(json.dumps(rec) + "\n")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub fn wait_port(port: u16) -> Result<()> {
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if t0.elapsed() > Duration::from_secs(20) {
            bail!("nothing listens on {port} after 20s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Poll `f` every 50 ms for up to `within`; the elapsed time when it held.
pub fn wait(within: Duration, what: &str, mut f: impl FnMut() -> bool) -> Result<Duration> {
    let t0 = Instant::now();
    while !f() {
        if t0.elapsed() > within {
            bail!("{what}: not within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(t0.elapsed())
}

/// A child process killed and reaped on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Receiver {
    pub port: u16,
    pub file: PathBuf,
    proc: Option<Proc>,
}

impl Receiver {
    /// A receiver for `port` recording into `file`, not started.
    pub fn new(port: u16, file: PathBuf) -> Self {
        Receiver { port, file, proc: None }
    }

    pub fn up(&mut self) -> Result<()> {
        let child = Command::new("python3")
            .args(["-c", RECEIVER, &self.port.to_string()])
            .arg(&self.file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.proc = Some(Proc(child));
        wait_port(self.port)
    }

    pub fn down(&mut self) {
        self.proc = None;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.file).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// (alertname, status) of every alert in every notice received, in arrival order.
    pub fn seen(&self) -> Vec<(String, String)> {
        self.records()
            .iter()
            .flat_map(|r| r["body"]["alerts"].as_array().cloned().unwrap_or_default())
            .map(|a| (a["labels"]["alertname"].as_str().unwrap_or("").into(), a["status"].as_str().unwrap_or("").into()))
            .collect()
    }

    /// Distinct notification ids received.
    pub fn ids(&self) -> std::collections::HashSet<String> {
        self.records().iter().map(|r| r["id"].as_str().unwrap_or("").to_string()).collect()
    }
}
