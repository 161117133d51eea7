//! Real receivers as child processes, killed (and reaped) on drop.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::free_port;

pub const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

pub struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Until a TCP connect to `port` succeeds (or `secs` pass).
fn wait_port(port: u16, secs: u64) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

pub struct Alertmanager {
    _proc: Proc,
    pub port: u16,
}

impl Alertmanager {
    /// Start one with a null receiver, no clustering, storage in `dir`; None (with the reason
    /// printed) when the binary is not installed.
    pub fn start(dir: &Path) -> Option<Self> {
        if !Path::new(ALERTMANAGER).exists() {
            crate::util::test_skip(&format!("{ALERTMANAGER} not installed (Debian package prometheus-alertmanager)"));
            return None;
        }
        let cfg = dir.join("alertmanager.yml");
        std::fs::write(&cfg, "route:\n  receiver: \"null\"\nreceivers:\n  - name: \"null\"\n").unwrap();
        let port = free_port();
        let data = dir.join("am-data");
        std::fs::create_dir_all(&data).unwrap();
        let child = Command::new(ALERTMANAGER)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start alertmanager");
        let am = Alertmanager { _proc: Proc(child), port };
        assert!(wait_port(port, 20), "alertmanager did not listen on {port}");
        Some(am)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `GET /api/v2/alerts` (active, silenced, inhibited; Alertmanager leaves resolved ones out).
    pub async fn alerts(&self) -> Vec<Value> {
        let r = reqwest::get(format!("{}/api/v2/alerts", self.url())).await;
        match r {
            Ok(r) => r.json::<Vec<Value>>().await.unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    pub async fn ready(&self) -> bool {
        matches!(reqwest::get(format!("{}/-/ready", self.url())).await, Ok(r) if r.status().is_success())
    }
}

pub struct Smtp {
    _proc: Proc,
    pub port: u16,
    pub maildir: PathBuf,
}

impl Smtp {
    /// aiosmtpd with its Mailbox handler writing a Maildir under `dir`; None (reason printed)
    /// when python3 or aiosmtpd is missing.
    pub fn start(dir: &Path) -> Option<Self> {
        let have = Command::new("python3").args(["-c", "import aiosmtpd"]).status().is_ok_and(|s| s.success());
        if !have {
            crate::util::test_skip("python3 with aiosmtpd not installed (pip install -r tests/servers/requirements.txt)");
            return None;
        }
        let port = free_port();
        let maildir = dir.join("maildir");
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start aiosmtpd");
        let s = Smtp { _proc: Proc(child), port, maildir };
        assert!(wait_port(port, 20), "aiosmtpd did not listen on {port}");
        Some(s)
    }

    /// Messages delivered so far (raw RFC 5322 text).
    pub fn messages(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.maildir.join("new")) else { return Vec::new() };
        let mut files: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        files.sort();
        files.iter().filter_map(|p| std::fs::read_to_string(p).ok()).collect()
    }
}
