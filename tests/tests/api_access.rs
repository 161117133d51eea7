//! Access to the agent's API (docs/security.md): it listens on loopback by default; over TCP
//! nothing changes state without the bearer token; on its Unix socket the peer's uid
//! (SO_PEERCRED) decides, root and the uids the config lists, and a 0600 socket keeps everyone
//! else out entirely.

use std::{
    os::unix::fs::PermissionsExt,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use wsguard_integration::{
    agent_bin,
    http::{request, status_of, unix_request},
    repo_root, require_root, scratch_dir, Agent,
};

/// Listening sockets (`addr:port` in /proc/net/tcp{,6} hex form) of process `pid`.
fn listening(pid: u32) -> Vec<String> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table).unwrap_or_default().lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                out.push(f[1].to_owned());
            }
        }
    }
    out
}

#[test]
fn api_listens_on_loopback_by_default() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let shipped = std::fs::read_to_string(repo_root().join("config/wsguard.toml"))?;
    assert!(shipped.lines().any(|l| l.trim() == "listen = \"127.0.0.1:9595\""), "shipped config listens on loopback");
    // A config without [api]: the built-in default applies.
    let dir = scratch_dir("api-loopback");
    let pin = format!("/sys/fs/bpf/wsguard-sec-loopback-{}", std::process::id());
    let file = dir.join("wsguard.toml");
    std::fs::write(&file, format!("[agent]\nstate_dir = \"{}\"\n[probe]\npin_path = \"{pin}\"\n", dir.join("state").display()))?;
    let log = dir.join("agent.log");
    let mut child = Command::new(agent_bin())
        .args(["run", "--fresh", "--config"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let result = loop {
        if let Some(st) = child.try_wait()? {
            // Another agent on this machine may hold the default port: the error names the address.
            let text = std::fs::read_to_string(&log)?;
            if text.contains("cannot listen on 127.0.0.1:9595") {
                eprintln!("note: 127.0.0.1:9595 is taken here; the refusal names the loopback default");
                break Ok(());
            }
            break Err(anyhow::anyhow!("agent exited ({st}): {text}"));
        }
        let socks = listening(child.id());
        if !socks.is_empty() {
            // 0100007F:257B = 127.0.0.1:9595 (little-endian address, big-endian port).
            break if socks.iter().all(|s| s == "0100007F:257B") { Ok(()) } else { Err(anyhow::anyhow!("listens on {socks:?}")) };
        }
        if Instant::now() > deadline {
            break Err(anyhow::anyhow!("agent did not listen within 30s"));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait()?;
    let _ = std::fs::remove_dir_all(&pin);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The API has no unauthenticated way to change anything: every non-read method on every route
/// is refused without a token, each mutating route with 401 exactly (so the gate is there, not
/// a missing route), also with a wrong token; the right token is accepted.
#[test]
fn unauthenticated_mutation_is_refused() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let agent = Agent::start("unauth")?;
    let mutating = [
        ("POST", "/api/v1/alerts"),
        ("POST", "/api/v1/alerts/0123456789abcdef/ack"),
        ("POST", "/api/v1/alerts/0123456789abcdef/resolve"),
        ("POST", "/api/v1/silences"),
        ("DELETE", "/api/v1/silences/1"),
        ("POST", "/api/v1/remediation/pause"),
        ("POST", "/api/v1/remediation/resume"),
        ("POST", "/api/v1/remediation/1/approve"),
    ];
    for (method, path) in mutating {
        assert_eq!(status_of(&agent.api, method, path)?, 401, "{method} {path} without a token");
        let (code, _) = request(&agent.api, method, path, Some("not-the-token-0123456789"), "{}")?;
        assert_eq!(code, 401, "{method} {path} with a wrong token");
    }
    let token = agent.token()?;
    let mode = std::fs::metadata(agent.dir.join("state/api-token"))?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the token file is root's alone");
    let (code, body) = request(
        &agent.api,
        "POST",
        "/api/v1/silences",
        Some(&token),
        r#"{"matchers":["alertname=SecTest"],"duration":"1h","created_by":"test"}"#,
    )?;
    assert_eq!(code, 201, "the right token is accepted: {body}");
    let paths = [
        "/health",
        "/ready",
        "/health/detailed",
        "/metrics",
        "/api/v1/snapshot",
        "/api/v1/processes",
        "/api/v1/processes/1/connections",
        "/api/v1/history",
        "/api/v1/predictions",
        "/api/v1/alerts",
        "/api/v1/alerts/0123456789abcdef/ack",
        "/api/v1/silences",
        "/api/v1/silences/1",
        "/api/v1/remediation",
        "/api/v2/alerts",
    ];
    for path in paths {
        for method in ["POST", "PUT", "PATCH", "DELETE"] {
            let code = status_of(&agent.api, method, path)?;
            assert!(matches!(code, 401 | 403 | 404 | 405), "{method} {path} without a token answered {code}");
        }
    }
    Ok(())
}

/// `wsguard ARGS…` as uid/gid 65534 with no supplementary groups (nobody).
fn as_nobody(args: &[&str]) -> Result<std::process::Output> {
    Ok(Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(agent_bin())
        .args(args)
        .env_remove("WSGUARD_TOKEN_FILE")
        .output()?)
}

fn cli_as_root(args: &[&str]) -> Result<std::process::Output> {
    Ok(Command::new(agent_bin()).args(args).env_remove("WSGUARD_TOKEN_FILE").output()?)
}

fn said(o: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The API on its Unix socket (default `<state_dir>/api.sock`, 0600): root changes state there
/// without a token (the agent reads the peer's uid with SO_PEERCRED), another user cannot even
/// connect; TCP still wants the token. A socket left by a killed agent is replaced; a clean
/// stop removes it.
#[test]
fn api_socket_trusts_root_and_nobody_else() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let mut agent = Agent::start("sock")?;
    let sock = agent.dir.join("state/api.sock");
    let meta = std::fs::symlink_metadata(&sock)?;
    assert!(std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()), "{} is a socket", sock.display());
    assert_eq!((meta.permissions().mode() & 0o777, std::os::unix::fs::MetadataExt::uid(&meta)), (0o600, 0));
    let api = format!("unix:{}", sock.display());

    // Root, no token anywhere: the CLI sends none over the socket, and the agent accepts.
    let out = cli_as_root(&[
        "alerts",
        "fire",
        "--api",
        &api,
        "--severity",
        "warning",
        "-m",
        "socket test",
        "-l",
        "alertname=SockTest",
    ])?;
    assert!(out.status.success(), "{}", said(&out));
    let fp = String::from_utf8_lossy(&out.stdout).split_whitespace().nth(1).context("fired FP")?.to_owned();
    let (code, body) = unix_request(&sock, "POST", &format!("/api/v1/alerts/{fp}/resolve"), None, "")?;
    assert_eq!(code, 200, "raw request as root without Authorization: {body}");
    let out = cli_as_root(&["alerts", "list", "--api", &api, "--json"])?;
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&fp), "{}", said(&out));
    // TCP without a token: 401, exactly as before.
    assert_eq!(status_of(&agent.api, "POST", "/api/v1/alerts")?, 401);

    // nobody cannot connect to a 0600 root socket at all, to read or to change.
    for args in [vec!["alerts", "list"], vec!["alerts", "fire", "-m", "x"]] {
        let out = as_nobody(&[args.as_slice(), &["--api", &api]].concat())?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}", said(&out));
        assert!(err.contains("cannot reach the agent") && err.contains("Permission denied"), "{}", said(&out));
    }

    // Killed, the agent leaves its socket behind; the next start replaces it.
    agent.stop(libc::SIGKILL);
    assert!(sock.exists(), "a killed agent cannot remove its socket");
    agent.spawn(false)?;
    assert!(agent.log_text().contains("removed the stale API socket"), "{}", agent.log_text());
    assert_eq!(unix_request(&sock, "GET", "/health", None, "")?.0, 200);
    agent.stop(libc::SIGTERM);
    assert!(!sock.exists(), "a clean stop removes the socket");
    Ok(())
}

/// With `socket_group` the socket is 0660 and the group's members connect: they read, but
/// changes are refused (403) unless their uid is in `socket_uids`.
#[test]
fn api_socket_group_reads_and_listed_uids_change() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let mut agent = Agent::start("sock-group")?;
    let sock = agent.dir.join("state/api.sock");
    let api = format!("unix:{}", sock.display());
    let base = std::fs::read_to_string(&agent.config)?;
    let fire = ["alerts", "fire", "--api", &api, "-m", "from nobody", "-l", "alertname=NobodyTest"];
    for uids in ["[]", "[65534]"] {
        agent.stop(libc::SIGTERM);
        std::fs::write(
            &agent.config,
            base.replace("[api]\n", &format!("[api]\nsocket_group = \"65534\"\nsocket_uids = {uids}\n")),
        )?;
        agent.spawn(false)?;
        let meta = std::fs::metadata(&sock)?;
        assert_eq!((meta.permissions().mode() & 0o777, std::os::unix::fs::MetadataExt::gid(&meta)), (0o660, 65534));
        let out = as_nobody(&["alerts", "list", "--api", &api])?;
        assert!(out.status.success(), "a group member reads: {}", said(&out));
        let out = as_nobody(&fire)?;
        if uids == "[]" {
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{}", said(&out));
            assert!(err.contains("403") && err.contains("uid 65534 may not change state"), "{}", said(&out));
            let (code, body) = unix_request(&sock, "GET", "/api/v1/alerts", None, "")?;
            assert!(code == 200 && !body.contains("NobodyTest"), "nothing fired: {body}");
        } else {
            assert!(out.status.success(), "a listed uid changes state: {}", said(&out));
            let (_, body) = unix_request(&sock, "GET", "/api/v1/alerts", None, "")?;
            assert!(body.contains("NobodyTest"), "{body}");
        }
    }
    // Still 401 over TCP without the token.
    assert_eq!(status_of(&agent.api, "POST", "/api/v1/alerts")?, 401);
    Ok(())
}

/// Issue 18, finding 3: TLS and basic auth on a real agent, reached with curl. A certificate made
/// with the openssl CLI, a bcrypt user; plain HTTP gets no answer, a wrong password 401, the
/// right one the snapshot; the log names the scheme and never a password, hash or key.
#[test]
fn api_tls_and_basic_auth_with_curl() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let dir = scratch_dir("api-tls");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .context("openssl")?;
    assert!(made.success(), "openssl req failed");
    let hash = bcrypt::hash("pw-7e1c-horse", 4)?;
    let port = wsguard_integration::webhook::free_port()?;
    let pin = format!("/sys/fs/bpf/wsguard-sec-tls-{}", std::process::id());
    let file = dir.join("wsguard.toml");
    std::fs::write(
        &file,
        format!(
            "[agent]\ninterval = \"500ms\"\nstate_dir = \"{}\"\n[api]\nlisten = \"127.0.0.1:{port}\"\ntls_cert_file = \"{}\"\n\
             tls_key_file = \"{}\"\n[api.basic_auth_users]\nprometheus = \"{hash}\"\n{}",
            dir.join("state").display(),
            cert.display(),
            key.display(),
            wsguard_integration::probe_section(&pin)
        ),
    )?;
    let log = dir.join("agent.log");
    let mut child = Command::new(agent_bin())
        .args(["run", "--fresh", "--config"])
        .arg(&file)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let curl = |args: &[&str]| -> Result<String> {
        let out =
            Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5"]).args(args).output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let https = |path: &str| format!("https://localhost:{port}{path}");
    let cacert = cert.to_str().unwrap();
    let result = (|| -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while curl(&["--cacert", cacert, "-u", "prometheus:pw-7e1c-horse", &https("/api/v1/snapshot")])? != "200" {
            if let Some(st) = child.try_wait()? {
                anyhow::bail!("agent exited ({st}): {}", std::fs::read_to_string(&log)?);
            }
            anyhow::ensure!(Instant::now() < deadline, "no snapshot over TLS within 30 s: {}", std::fs::read_to_string(&log)?);
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(curl(&["--cacert", cacert, "-u", "prometheus:wrong-pass-91", &https("/metrics")])?, "401");
        assert_eq!(curl(&["--cacert", cacert, &https("/metrics")])?, "401");
        assert_eq!(curl(&["--cacert", cacert, &https("/health")])?, "200", "/health is open for kubelet probes");
        // No TLS: no HTTP answer at all (curl reports 000).
        assert_eq!(curl(&[&format!("http://127.0.0.1:{port}/health")])?, "000");
        // A client that does not trust the certificate: refused.
        assert_eq!(curl(&[&https("/health")])?, "000");
        Ok(())
    })();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait()?;
    let text = std::fs::read_to_string(&log)?;
    let _ = std::fs::remove_dir_all(&pin);
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    assert!(text.contains(&format!("API listening on https://127.0.0.1:{port} (basic auth)")), "{text}");
    for secret in ["pw-7e1c-horse", "wrong-pass-91", hash.as_str(), "PRIVATE KEY"] {
        assert!(!text.contains(secret), "{secret:?} in the agent's log:\n{text}");
    }
    Ok(())
}
