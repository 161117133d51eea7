//! The agent's security promises (docs/security.md), each checked against the real binary:
//! capabilities dropped on every thread after attach, a config others can write refused, the
//! probe free of helpers that write user memory or alter anything, and secrets (request data
//! such as client keys, configured credentials, the API token) never leaking into logs, the API
//! or the state directory; client keys only as a hash keyed by a per-host secret when configured.
//! Access to the API itself: `api_access.rs`.

use std::{
    io::{Read, Write},
    net::TcpStream,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use wsguard_integration::{agent_bin, enc, http::request, require_root, scratch_dir, Agent, RawClient, Server, Split};

/// `CapXxx:` and `NoNewPrivs:` of one thread.
fn caps_of(status: &str) -> (u64, u64, u64, u64, u64, bool) {
    let hex = |k: &str| {
        let line = status.lines().find(|l| l.starts_with(k)).unwrap_or_else(|| panic!("{k} missing"));
        u64::from_str_radix(line[k.len()..].trim(), 16).unwrap()
    };
    let nnp = status.lines().any(|l| l.starts_with("NoNewPrivs:") && l.ends_with('1'));
    (hex("CapInh:"), hex("CapPrm:"), hex("CapEff:"), hex("CapBnd:"), hex("CapAmb:"), nnp)
}

const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_KILL: u32 = 5;
const CAP_SETPCAP: u32 = 8;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[test]
fn capabilities_dropped_on_every_thread_after_attach() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let mine = caps_of(&std::fs::read_to_string("/proc/self/status")?);
    if mine.1 & (1 << CAP_SETPCAP) == 0 {
        wsguard_integration::skip("the test runs without CAP_SETPCAP, so the agent cannot clear its bounding set");
        return Ok(());
    }
    let server = Server::node(&[])?;
    let agent = Agent::start("caps")?;
    let pid = agent.pid().context("agent pid")?;
    // The agent keeps exactly these (of what it was started with, which is what we have): no
    // remediation action acts, so none of their capabilities (NET_ADMIN, KILL, ...) stays.
    let keep = [CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE].iter().fold(0u64, |m, c| m | (1 << c)) & mine.1;
    let mut threads = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = t?.path().join("status");
        let (inh, prm, eff, bnd, amb, nnp) = caps_of(&std::fs::read_to_string(&path)?);
        assert_eq!((prm, eff), (keep, keep), "{}: permitted/effective {prm:#x}/{eff:#x}, want {keep:#x}", path.display());
        assert_eq!((inh, bnd, amb), (0, 0, 0), "{}: inheritable/bounding/ambient must be empty", path.display());
        assert!(nnp, "{}: no_new_privs not set", path.display());
        for c in [CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAP_SETPCAP] {
            assert_eq!(eff & (1 << c), 0, "capability {c} kept");
        }
        threads += 1;
    }
    assert!(threads >= 2, "the tokio runtime has worker threads; saw {threads}");
    assert!(agent.log_text().contains("capabilities dropped on every thread"), "{}", agent.log_text());

    // Without CAP_BPF the agent still reads the maps through its open fds: counts are exact,
    // and the programs' pinned stats are still readable.
    let mut c = RawClient::connect(server.port)?;
    c.send(&[enc::text("a", true), enc::binary(300, true), enc::ping("p")], Split::PerFrame)?;
    c.read_frames(3, Duration::from_secs(5))?;
    let ws = agent.wait_ws(server.pid, "3 frames", |w| w["messages_received"] == 2 && w["frames_received"]["ping"] == 1)?;
    assert_eq!(ws["payload_bytes_received"], 302, "{ws:#}");
    let snap = agent.fresh_snapshot()?;
    // The mode's own programs are listed with their stats (socket mode: also the iterator and,
    // with OpenSSL found, the TLS uprobes).
    let listed: Vec<&str> =
        snap["probe"]["programs"].as_array().into_iter().flatten().filter_map(|p| p["program"].as_str()).collect();
    let want: &[&str] = if snap["probe"]["mode"] == "socket" {
        &["wsg_sock_ops", "wsg_sock_recv", "wsg_sock_send", "wsg_sock_end"]
    } else {
        &["wsg_sys_enter", "wsg_sys_exit"]
    };
    for w in want {
        assert!(listed.contains(w), "{w} not listed: {:#}", snap["probe"]);
    }
    drop(agent);

    // An action that really signals keeps CAP_KILL (and only it on top); a dry-run one does not.
    for (dry, want) in [("true", 0u64), ("false", 1 << CAP_KILL)] {
        let action = format!(
            "[remediation]\n[[remediation.actions]]\nname = \"hup\"\ntype = \"signal\"\non = [\"X\"]\nsignal = \"SIGHUP\"\ndry_run = {dry}\n"
        );
        let agent = Agent::start_with(&format!("caps-rem-{dry}"), &action)?;
        let pid = agent.pid().context("agent pid")?;
        let (_, prm, eff, ..) = caps_of(&std::fs::read_to_string(format!("/proc/{pid}/status"))?);
        assert_eq!((prm, eff), (keep | want, keep | want), "dry_run = {dry}: {prm:#x}/{eff:#x}");
    }
    Ok(())
}

/// Under a bounding set like the systemd unit's (CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE,
/// CAP_DAC_READ_SEARCH; no CAP_SETPCAP, no CAP_SYS_ADMIN) the agent attaches, keeps only the
/// two /proc capabilities, cannot empty the bounding set but sets no_new_privs, and counts.
#[test]
fn capabilities_dropped_under_the_units_bounding_set() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let mounts = std::fs::read_to_string("/proc/mounts")?;
    if !mounts.lines().any(|l| l.split_whitespace().nth(2) == Some("bpf")) {
        wsguard_integration::skip("no bpffs mounted; without CAP_SYS_ADMIN the agent cannot mount it");
        return Ok(());
    }
    let server = Server::node(&[])?;
    let mut agent = Agent::start("caps-unit")?;
    agent.stop(libc::SIGTERM);
    agent.wrapper = ["setpriv", "--bounding-set=-all,+bpf,+perfmon,+sys_ptrace,+dac_read_search"].map(String::from).to_vec();
    agent.spawn(true)?;
    let pid = agent.pid().context("agent pid")?;
    let keep = (1u64 << CAP_SYS_PTRACE) | (1 << CAP_DAC_READ_SEARCH);
    let bounding = keep | (1 << CAP_BPF) | (1 << CAP_PERFMON);
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = t?.path().join("status");
        let (inh, prm, eff, bnd, amb, nnp) = caps_of(&std::fs::read_to_string(&path)?);
        assert_eq!((prm, eff, inh, amb), (keep, keep, 0, 0), "{}", path.display());
        assert_eq!(bnd, bounding, "{}: the bounding set stays as the unit set it", path.display());
        assert!(nnp, "{}: no_new_privs", path.display());
    }
    assert!(agent.log_text().contains("bounding set left as is"), "{}", agent.log_text());
    let mut c = RawClient::connect(server.port)?;
    c.send(&[enc::text("x", true), enc::close(1000)], Split::PerFrame)?;
    c.read_to_end(Duration::from_secs(5))?;
    drop(c); // our FIN lets the server close its socket
    let ws = agent.wait_ws(server.pid, "closed", |w| w["connections_closed"] == 1)?;
    assert_eq!((ws["messages_received"].as_u64(), ws["close_codes_received"]["1000"].as_u64()), (Some(1), Some(1)), "{ws:#}");
    Ok(())
}

/// `wsguard config check --config <path>`: (exit code, stderr).
fn config_check(path: &Path) -> (i32, String) {
    let out = Command::new(agent_bin()).args(["config", "check", "--config"]).arg(path).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn config_writable_by_others_is_refused() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let dir = scratch_dir("sec-config");
    let file = dir.join("wsguard.toml");
    std::fs::write(&file, "[agent]\ninterval = \"1s\"\n")?;
    chmod(&file, 0o644);
    assert_eq!(config_check(&file).0, 0, "root's 0644 file in root's 0755 dir: {}", config_check(&file).1);

    for mode in [0o666, 0o620, 0o602] {
        chmod(&file, mode);
        let (code, err) = config_check(&file);
        assert_ne!(code, 0, "mode {mode:o} accepted");
        assert!(err.contains(file.to_str().unwrap()) && err.contains("writable by group or others"), "{err}");
        assert!(err.contains("chmod 600"), "the fix is named: {err}");
    }
    chmod(&file, 0o600);
    std::os::unix::fs::chown(&file, Some(65534), None)?;
    let (code, err) = config_check(&file);
    assert_ne!(code, 0);
    assert!(err.contains("owned by uid 65534") && err.contains("chown root"), "{err}");
    std::os::unix::fs::chown(&file, Some(0), None)?;

    // The directory decides who can replace the file; a sticky one (like /tmp) is fine.
    chmod(&dir, 0o777);
    let (code, err) = config_check(&file);
    assert_ne!(code, 0);
    assert!(err.contains(&format!("its directory {}", dir.display())) && err.contains("chmod go-w"), "{err}");
    chmod(&dir, 0o1777);
    assert_eq!(config_check(&file).0, 0, "{}", config_check(&file).1);

    // A symlink in a safe place to a file in an unsafe directory is judged by the file's place.
    let unsafe_dir = dir.join("open");
    std::fs::create_dir(&unsafe_dir)?;
    chmod(&unsafe_dir, 0o777);
    let real = unsafe_dir.join("real.toml");
    std::fs::write(&real, "")?;
    chmod(&real, 0o600);
    chmod(&dir, 0o755);
    let link = dir.join("link.toml");
    std::os::unix::fs::symlink(&real, &link)?;
    let (code, err) = config_check(&link);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains(unsafe_dir.to_str().unwrap()), "{err}");

    // `run` refuses before it attaches anything.
    chmod(&file, 0o666);
    let pin = format!("/sys/fs/bpf/wsguard-sec-refused-{}", std::process::id());
    std::fs::write(&file, format!("[probe]\npin_path = \"{pin}\"\n[api]\nlisten = \"127.0.0.1:1\"\n"))?;
    let out = Command::new(agent_bin()).args(["run", "--config"]).arg(&file).output()?;
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing config"));
    assert!(!Path::new(&pin).exists(), "nothing attached");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn probe_programs_never_write_user_memory() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    if Command::new("bpftool").arg("version").output().is_err() {
        wsguard_integration::skip("bpftool not installed (`cargo xtask setup` installs it)");
        return Ok(());
    }
    let agent = Agent::start("helpers")?;
    // Every program the agent pinned, whichever mode runs (syscall: sys_enter/sys_exit; socket:
    // sock_ops, sock_recv/send, sock_end, the iterator).
    let mut progs: Vec<String> = std::fs::read_dir(&agent.pin)?
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("prog_").map(str::to_owned))
        .collect();
    progs.sort();
    let reader = if progs.iter().any(|p| p == "wsg_sock_recv") { "wsg_sock_recv" } else { "wsg_sys_exit" };
    assert!(progs.iter().any(|p| p == reader), "the probe's data program is pinned: {progs:?}");
    for prog in progs.iter().map(String::as_str) {
        let pinned = format!("{}/prog_{prog}", agent.pin);
        let out = Command::new("bpftool").args(["prog", "dump", "xlated", "pinned", &pinned]).output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "bpftool: {}", String::from_utf8_lossy(&out.stderr));
        // The dump names every helper call (including those of bpf_loop callbacks).
        let calls: Vec<&str> = text.lines().filter(|l| l.contains(") call ")).collect();
        assert!(!calls.is_empty(), "{prog}: no helper calls seen:\n{text}");
        for bad in ["probe_write_user", "send_signal", "override_return", "skb_store_bytes", "copy_from_user", "sys_bpf"] {
            assert!(!text.contains(bad), "{prog} calls {bad}");
        }
        if prog == reader {
            assert!(text.contains("bpf_probe_read_user"), "{prog} reads user memory with bpf_probe_read_user");
        }
    }
    // The OpenSSL uprobes (`wsg_ssl_*`, on by default in the socket mode) belong to the running
    // agent and are never pinned: found by the program ids the agent holds open.
    if reader == "wsg_sock_recv" {
        let mut tls = 0;
        for id in wsguard_integration::prog_ids(agent.pid().context("agent pid")?)? {
            let id = id.to_string();
            let show = Command::new("bpftool").args(["prog", "show", "id", &id]).output()?;
            if !String::from_utf8_lossy(&show.stdout).contains("name wsg_ssl_") {
                continue;
            }
            let out = Command::new("bpftool").args(["prog", "dump", "xlated", "id", &id]).output()?;
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "bpftool: {}", String::from_utf8_lossy(&out.stderr));
            for bad in ["probe_write_user", "send_signal", "override_return", "skb_store_bytes", "copy_from_user", "sys_bpf"] {
                assert!(!text.contains(bad), "TLS program {id} calls {bad}");
            }
            tls += 1;
        }
        assert!(tls > 0, "the socket mode's OpenSSL uprobes were not found among the agent's programs");
    }
    Ok(())
}

/// Connect with our own upgrade request (path, query and headers chosen by the test).
fn connect_raw(port: u16, target: &str, headers: &str) -> Result<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
    )?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b)? == 0 {
            bail!("closed during handshake");
        }
        head.push(b[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        bail!("no 101: {}", String::from_utf8_lossy(&head));
    }
    Ok(s)
}

/// Everything the agent exposes or writes: its log, API answers and state directory files.
fn everything(agent: &Agent, pid: u32) -> Result<String> {
    let mut all = agent.log_text();
    for p in ["/api/v1/snapshot", "/api/v1/history?since=1h", &format!("/api/v1/processes/{pid}/connections")] {
        all.push_str(&agent.get(p)?.to_string());
    }
    all.push_str(&wsguard_integration::http_get(&format!("{}/metrics", agent.api))?.1);
    for e in walk(&agent.dir.join("state")) {
        all.push_str(&String::from_utf8_lossy(&std::fs::read(e).unwrap_or_default()));
    }
    Ok(all)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn echo_one(s: &mut TcpStream) -> Result<()> {
    s.write_all(&enc::text("hello", true))?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf)?;
    anyhow::ensure!(n >= 7, "no echo");
    Ok(())
}

/// The `client_key`s of a process's connections in a fresh snapshot.
fn client_keys(agent: &Agent, pid: u32) -> Result<Vec<String>> {
    agent.fresh_snapshot()?;
    let conns = agent.get(&format!("/api/v1/processes/{pid}/connections"))?;
    Ok(conns.as_array().context("connections")?.iter().filter_map(|c| c["client_key"].as_str().map(str::to_owned)).collect())
}

/// FNV-1a 64, what the probe keeps of a key value (agent-common/src/clientkey.rs).
fn fnv1a(v: &[u8]) -> u64 {
    v.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ *b as u64).wrapping_mul(0x100_0000_01b3))
}

/// Client keys: by default only the remote IP identifies a client; the request's query string
/// and headers (where tokens live) reach no log, API answer or state file, even at debug level.
/// Configured to use a query parameter with `hash = true`, only a keyed hash of it appears: not
/// the value's plain FNV-1a (which anyone could compute from guesses), the same after a restart,
/// another one under another secret, and a secret file others can read stops the start.
#[test]
fn request_secrets_never_leak() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let server = Server::node(&[])?;
    for (name, extra) in [("keys-default", ""), ("keys-hashed", "[probe.client_key]\nquery = \"token\"\nhash = true\n")] {
        let mut agent = Agent::start_with(name, extra)?;
        agent.rust_log = "debug".into();
        agent.stop(libc::SIGTERM);
        agent.spawn(true)?;
        let secret = "S3CRETqueryTOKEN0123456789abcdef";
        let header_secret = "S3CRETheaderVALUE";
        let headers = format!("X-Api-Key: {header_secret}\r\nAuthorization: Bearer {header_secret}\r\n");
        let mut a = connect_raw(server.port, &format!("/chat?token={secret}&x=1"), &headers)?;
        let mut b = connect_raw(server.port, &format!("/chat?token={secret}"), "")?;
        echo_one(&mut a)?;
        echo_one(&mut b)?;
        agent.wait_ws(server.pid, "2 messages", |w| w["messages_received"] == 2)?;
        // Two intervals so the history store and logs have seen the connections.
        let keys = client_keys(&agent, server.pid)?;
        assert_eq!(keys.len(), 2, "{keys:?}");
        if extra.is_empty() {
            assert!(keys.iter().all(|k| *k == "127.0.0.1"), "default key is the remote IP: {keys:?}");
        } else {
            assert_eq!(keys[0], keys[1], "the same token hashes to the same key: {keys:?}");
            assert!(keys[0].starts_with("h:") && keys[0].len() == 18, "{keys:?}");
            assert_ne!(keys[0], format!("h:{:016x}", fnv1a(secret.as_bytes())), "the plain FNV-1a of the value is shown");
        }
        let all = everything(&agent, server.pid)?;
        for s in [secret, header_secret, "S3CRET"] {
            assert!(!all.contains(s), "{name}: {s} leaked");
        }
        assert!(all.contains("DEBUG"), "{name}: the log was at debug level");
        if extra.is_empty() {
            assert!(!agent.dir.join("state/client-key.secret").exists(), "no secret without a client key");
            continue;
        }
        let secret_file = agent.dir.join("state/client-key.secret");
        assert_eq!(std::fs::metadata(&secret_file)?.permissions().mode() & 0o777, 0o600);
        // A restart (the probe kept and resumed, the connections still open) shows the same keys.
        agent.stop(libc::SIGUSR2);
        agent.spawn(false)?;
        assert_eq!(client_keys(&agent, server.pid)?, keys, "same secret, same keys after a restart");
        // Another secret (another host): other keys, still one per value.
        agent.stop(libc::SIGUSR2);
        std::fs::write(&secret_file, "00112233445566778899aabbccddeeff\n")?;
        agent.spawn(false)?;
        let other = client_keys(&agent, server.pid)?;
        assert!(other[0] == other[1] && other[0] != keys[0] && other[0].starts_with("h:"), "{other:?} vs {keys:?}");
        // A secret others can read is refused, and nothing is shown instead.
        agent.stop(libc::SIGTERM);
        chmod(&secret_file, 0o644);
        let e = agent.spawn(false).unwrap_err().to_string();
        assert!(e.contains("client-key secret") && e.contains("chmod 600"), "{e}");
    }
    Ok(())
}

/// Secrets in the config (a notification channel's URL and Authorization header) reach no log
/// line (at debug level, while deliveries to a receiver that is down fail and are retried), no
/// API answer, not `config show`, and not the error a broken line next to them produces; neither
/// does the API token.
#[test]
fn configured_secrets_never_leak() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let url_secret = "S3CRETurlPART";
    let auth_secret = "S3CRETauthTOKEN";
    let channel = format!(
        "[notify]\ngroup_wait = \"0s\"\n[[notify.channels]]\nname = \"hook\"\ntype = \"webhook\"\n\
         url = \"http://127.0.0.1:9/{url_secret}/hook?key={url_secret}\"\nauth_header = \"Bearer {auth_secret}\"\n"
    );
    let mut agent = Agent::start_with("cfg-secrets", &channel)?;
    agent.rust_log = "debug".into();
    agent.stop(libc::SIGTERM);
    agent.spawn(true)?;
    let token = agent.token()?;
    let (code, body) = request(
        &agent.api,
        "POST",
        "/api/v1/alerts",
        Some(&token),
        r#"{"severity":"critical","message":"secret test","labels":{"alertname":"SecTest"}}"#,
    )?;
    assert!((200..300).contains(&code), "fire: {code} {body}");
    // Deliveries fail (nothing listens on port 9) and are retried meanwhile.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !agent.log_text().contains("hook") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    let mut all = agent.log_text();
    assert!(all.contains("hook"), "a delivery to the channel was attempted and logged:\n{all}");
    for p in ["/api/v1/alerts", "/api/v1/alerts/stats", "/api/v1/snapshot", "/api/v1/remediation"] {
        all.push_str(&request(&agent.api, "GET", p, None, "")?.1);
    }
    all.push_str(&wsguard_integration::http_get(&format!("{}/metrics", agent.api))?.1);
    let show = Command::new(agent_bin()).args(["config", "show", "--config"]).arg(&agent.config).output()?;
    all.push_str(&String::from_utf8_lossy(&show.stdout));
    all.push_str(&String::from_utf8_lossy(&show.stderr));
    // A syntax error on the secret's own line: the error quotes the line, not the value.
    let broken = agent.dir.join("broken.toml");
    std::fs::write(
        &broken,
        format!("[[notify.channels]]\nname = \"x\"\ntype = \"webhook\"\nauth_header = \"Bearer {auth_secret}\" oops\n"),
    )?;
    let check = Command::new(agent_bin()).args(["config", "check", "--config"]).arg(&broken).output()?;
    assert!(!check.status.success());
    let check_err = String::from_utf8_lossy(&check.stderr).into_owned();
    for (what, text) in [("logs, API, config show", &all), ("config check error", &check_err)] {
        for secret in [url_secret, auth_secret, token.as_str()] {
            assert!(!text.contains(secret), "{secret} leaked into {what}");
        }
    }
    Ok(())
}
