//! The command line as scripts see it (unprivileged: the binary is spawned): exit codes
//! (0 ok, 1 check failed, 2 error), `--json` that parses on every read command, completion
//! scripts, `config show` and `config check`. Commands that read the agent's API run against a
//! small fake agent serving fixed JSON, so unhealthy and unreachable cases are exact.

use std::{
    io::{Read, Write},
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::{json, Value};
use wsguard_integration::{agent_bin, scratch_dir};

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn wsguard(args: &[&str]) -> Option<Out> {
    let bin = agent_bin();
    if !bin.exists() {
        wsguard_integration::skip(&format!("{} missing: build it first (`cargo build --release`)", bin.display()));
        return None;
    }
    let o = Command::new(bin).args(args).env_remove("WSGUARD_API").env_remove("RUST_LOG").output().expect("spawn");
    Some(Out {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    })
}

fn json_of(o: &Out) -> Value {
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\nstderr: {}", o.stdout, o.stderr))
}

fn snapshot(ts: &str, active: u64) -> Value {
    json!({
        "timestamp": ts,
        "agent": {"version": "0.1.0", "interval_seconds": 5.0},
        "probe": {"attached": true},
        "totals": {"connections_active": active, "connections_opened": active},
        "processes": [{"pid": 4242, "comm": "node", "listening_ports": [8080],
                       "websocket": {"connections_active": active, "connections_opened": active,
                                     "frames_received": {"text": 17}}}]
    })
}

/// A fake agent on a loopback port answering GETs from `routes` (path → status, body), for
/// as many requests as come until the test ends. Returns its base URL.
fn fake_agent(routes: Vec<(&'static str, u16, Value)>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("/").split('?').next().unwrap_or("/").to_string();
            let (code, body) = routes
                .iter()
                .find(|(p, _, _)| *p == path)
                .map(|(_, c, b)| (*c, b.to_string()))
                .unwrap_or((404, json!({"error": "no such endpoint"}).to_string()));
            let _ = write!(
                s,
                "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

fn health(status: &str) -> Value {
    json!({"status": status, "timestamp": "2026-01-01T00:00:05Z",
           "checks": [{"name": "probe", "status": status, "message": "m", "metrics": {}}]})
}

fn unused_port_url() -> String {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("http://127.0.0.1:{port}")
}

#[test]
fn read_commands_print_json_and_exit_by_health() {
    let snap = snapshot("2026-01-01T00:00:05Z", 3);
    let healthy = fake_agent(vec![
        ("/api/v1/snapshot", 200, snap.clone()),
        ("/health/detailed", 200, health("HEALTHY")),
        ("/api/v1/history", 200, json!([snapshot("2026-01-01T00:00:00Z", 1), snap.clone()])),
    ]);
    let Some(o) = wsguard(&["snapshot", "--json", "--api", &healthy]) else { return };
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert_eq!(json_of(&o)["processes"][0]["websocket"]["frames_received"]["text"], 17);
    let o = wsguard(&["snapshot", "--api", &healthy]).unwrap();
    assert!(o.stdout.lines().any(|l| l.split_whitespace().next() == Some("4242")), "{}", o.stdout);

    let o = wsguard(&["status", "--json", "--api", &healthy]).unwrap();
    assert_eq!(o.code, Some(0));
    assert_eq!(json_of(&o)["health"]["status"], "HEALTHY");

    let o = wsguard(&["report", "--json", "--hours", "1", "--api", &healthy]).unwrap();
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    json_of(&o);
    let o = wsguard(&["report", "--json", "--format", "text", "--api", &healthy]).unwrap();
    assert_eq!(o.code, Some(2), "--json conflicts with --format: {}", o.stderr);

    // Unhealthy: a check failed, exit 1 (the JSON is still printed).
    let sick = fake_agent(vec![("/api/v1/snapshot", 200, snap), ("/health/detailed", 503, health("UNHEALTHY"))]);
    let o = wsguard(&["status", "--json", "--api", &sick]).unwrap();
    assert_eq!(o.code, Some(1));
    assert_eq!(json_of(&o)["health"]["status"], "UNHEALTHY");
    let o = wsguard(&["status", "--api", &sick]).unwrap();
    assert_eq!(o.code, Some(1));
    assert!(o.stdout.contains("status UNHEALTHY"), "{}", o.stdout);
}

#[test]
fn errors_exit_2_with_a_message() {
    let down = unused_port_url();
    for cmd in [&["status"][..], &["snapshot", "--json"], &["report"], &["top", "--once"]] {
        let mut args = cmd.to_vec();
        args.extend(["--api", &down]);
        let Some(o) = wsguard(&args) else { return };
        assert_eq!(o.code, Some(2), "{args:?}: {}", o.stderr);
        assert!(o.stderr.contains("error:"), "{args:?}: {}", o.stderr);
    }
    // The live dashboard needs a terminal; piped, it says to use --once.
    let o = wsguard(&["top", "--api", &down]).unwrap();
    assert_eq!(o.code, Some(2));
    assert!(o.stderr.contains("--once"), "{}", o.stderr);
    let o = wsguard(&["no-such-command"]).unwrap();
    assert_eq!(o.code, Some(2));
    let o = wsguard(&["report", "--state-dir", "/nonexistent/wsguard"]).unwrap();
    assert_eq!(o.code, Some(2));
    assert!(o.stderr.contains("cannot open the history store"), "{}", o.stderr);
    // --help documents the exit codes.
    let o = wsguard(&["--help"]).unwrap();
    assert!(o.stdout.contains("Exit status: 0 ok; 1 a check failed"), "{}", o.stdout);
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn config_check_exit_codes_json_and_readiness_warnings() {
    let dir = scratch_dir("cli-check");
    let channel = "[[notify.channels]]\nname = \"ops\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\n";
    let good = write(&dir, "good.toml", &format!("[limits]\nper_client_connections = 7\n{channel}"));
    let Some(o) = wsguard(&["config", "check", "--config", good.to_str().unwrap()]) else { return };
    assert_eq!((o.code, o.stdout.trim()), (Some(0), format!("config OK: {}", good.display()).as_str()));

    // Invalid: exit 1; the error names the key and its line.
    let bad = write(&dir, "bad.toml", "[agent]\nlog_level = \"info\"\n\n[probe]\nring_buffer_bytes = 5000\n");
    let o = wsguard(&["config", "check", "--config", bad.to_str().unwrap()]).unwrap();
    assert_eq!(o.code, Some(1));
    assert!(o.stderr.contains("probe.ring_buffer_bytes") && o.stderr.contains("(line 5)"), "{}", o.stderr);
    let o = wsguard(&["config", "check", "--json", "--config", bad.to_str().unwrap()]).unwrap();
    assert_eq!(o.code, Some(1));
    let r = json_of(&o);
    assert_eq!(r["valid"], false);
    assert!(r["error"].as_str().unwrap().contains("probe.ring_buffer_bytes"));
    let typo = write(&dir, "typo.toml", "[agent]\nintervall = \"5s\"\n");
    let o = wsguard(&["config", "check", "--config", typo.to_str().unwrap()]).unwrap();
    assert_eq!(o.code, Some(1));
    assert!(o.stderr.contains("line 2") && o.stderr.contains("intervall"), "{}", o.stderr);

    // Unreadable: not a verdict on the config, exit 2.
    let o = wsguard(&["config", "check", "--config", dir.join("missing.toml").to_str().unwrap()]).unwrap();
    assert_eq!(o.code, Some(2), "{}", o.stderr);

    // Production readiness: warned, still valid; --strict fails on warnings.
    let open = write(&dir, "open.toml", "[api]\nlisten = \"0.0.0.0:9595\"\n[probe.client_key]\nheader = \"X-User\"\n");
    let o = wsguard(&["config", "check", "--config", open.to_str().unwrap()]).unwrap();
    assert_eq!(o.code, Some(0));
    for key in ["api.listen", "probe.client_key.hash", "notify.channels"] {
        assert!(o.stdout.contains(&format!("warning: {key}:")), "{key}: {}", o.stdout);
    }
    assert!(o.stdout.contains("config OK with 3 warnings"), "{}", o.stdout);
    let o = wsguard(&["config", "check", "--strict", "--json", "--config", open.to_str().unwrap()]).unwrap();
    assert_eq!(o.code, Some(1));
    let keys: Vec<String> =
        json_of(&o)["warnings"].as_array().unwrap().iter().map(|w| w["key"].as_str().unwrap().to_string()).collect();
    assert_eq!(keys, ["api.listen", "probe.client_key.hash", "notify.channels"]);
    // --strict passes a config without warnings.
    let o = wsguard(&["config", "check", "--strict", "--config", good.to_str().unwrap()]).unwrap();
    assert_eq!(o.code, Some(0), "{}", o.stdout);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_show_effective_is_a_complete_valid_config() {
    let dir = scratch_dir("cli-show");
    let cfg = write(&dir, "w.toml", "[limits]\nper_client_connections = 7\n");
    let Some(o) = wsguard(&["config", "show", "--config", cfg.to_str().unwrap()]) else { return };
    assert_eq!(o.code, Some(0));
    assert_eq!(o.stdout.trim(), "[limits]\nper_client_connections = 7");

    let o = wsguard(&["config", "show", "--effective", "--config", cfg.to_str().unwrap()]).unwrap();
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    for section in ["[agent]", "[api]", "[probe]", "[probe.client_key]", "[limits]", "[history]", "[metrics]", "[predict]"] {
        assert!(o.stdout.contains(section), "{section} missing:\n{}", o.stdout);
    }
    assert!(o.stdout.contains("per_client_connections = 7") && o.stdout.contains("interval = \"5s\""), "{}", o.stdout);
    // It is itself a valid config file.
    let effective = write(&dir, "effective.toml", &o.stdout);
    let o = wsguard(&["config", "check", "--config", effective.to_str().unwrap()]).unwrap();
    assert_eq!(o.code, Some(0), "{}", o.stderr);

    let o = wsguard(&["config", "show", "--effective", "--json", "--config", cfg.to_str().unwrap()]).unwrap();
    let v = json_of(&o);
    assert_eq!(v["limits"]["per_client_connections"], 7);
    assert_eq!(v["api"]["listen"], "127.0.0.1:9595");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let Some(o) = wsguard(&["completions", shell]) else { return };
        assert_eq!(o.code, Some(0), "{shell}: {}", o.stderr);
        for word in ["top", "snapshot", "completions", "--effective"] {
            assert!(o.stdout.contains(word), "{shell} completion lacks {word}");
        }
    }
    // The bash script is valid bash and registers the completion function.
    let dir = scratch_dir("cli-completions");
    let script = write(&dir, "wsguard.bash", &wsguard(&["completions", "bash"]).unwrap().stdout);
    let o = Command::new("bash").arg("-c").arg(format!("source {} && complete -p wsguard", script.display())).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("wsguard"));
    let o = wsguard(&["completions", "tcsh"]).unwrap();
    assert_eq!(o.code, Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn replay_and_doctor_json_parse() {
    let dir = scratch_dir("cli-replay");
    let lines = [snapshot("2026-01-01T00:00:00Z", 1), snapshot("2026-01-01T00:00:05Z", 2)]
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    let file = write(&dir, "snaps.jsonl", &lines);
    let Some(o) = wsguard(&["replay", "--json", file.to_str().unwrap()]) else { return };
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert_eq!(json_of(&o)["snapshots"], 2);
    // doctor: 0 or 1 depending on this host, JSON either way.
    let o = wsguard(&["doctor", "--json"]).unwrap();
    assert!(matches!(o.code, Some(0) | Some(1)), "{}", o.stderr);
    assert_eq!(json_of(&o)["ok"], o.code == Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `top --once` against an agent that has no alerting endpoint and no predictions yet.
#[test]
fn top_once_against_a_partial_agent() {
    let agent = fake_agent(vec![
        ("/api/v1/snapshot", 200, snapshot("2026-01-01T00:00:05Z", 3)),
        ("/health/detailed", 200, health("HEALTHY")),
        ("/api/v1/predictions", 503, json!({"error": "no predictions yet"})),
    ]);
    let Some(o) = wsguard(&["top", "--once", "--api", &agent, "--width", "100", "--height", "30"]) else { return };
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(o.stdout.contains("alerts: not available from this agent"), "{}", o.stdout);
    assert!(o.stdout.contains("HEALTHY") && o.stdout.contains("active               3"), "{}", o.stdout);
    let o = wsguard(&["top", "--once", "--view", "predictions", "--api", &agent]).unwrap();
    assert!(o.stdout.contains("predictions: 503 no predictions yet"), "{}", o.stdout);
    assert_eq!(o.stdout.lines().count(), 40);
}

/// Issue 18 (CLI basics): a closed pipe ends a read command quietly, `--api` takes HOST:PORT,
/// `-c FILE` points every client command at that config's `[api] listen`, and a missing config
/// file says why once.
#[test]
fn pipes_addresses_and_configs_as_operators_use_them() {
    let snap = snapshot("2026-01-01T00:00:05Z", 3);
    let agent = fake_agent(vec![
        ("/api/v1/snapshot", 200, snap.clone()),
        ("/health/detailed", 200, health("HEALTHY")),
        ("/api/v1/history", 200, json!([snapshot("2026-01-01T00:00:00Z", 1), snap])),
        ("/api/v1/alerts", 200, json!([])),
    ]);
    let bin = agent_bin();
    if !bin.exists() {
        wsguard_integration::skip(&format!("{} missing: build it first (`cargo build --release`)", bin.display()));
        return;
    }
    // `wsguard report | head -0`: the reader is gone before the command writes.
    for cmd in [&["report", "--hours", "1"][..], &["snapshot", "--json"], &["status"]] {
        let mut child = Command::new(&bin)
            .args(cmd)
            .args(["--api", &agent])
            .env_remove("WSGUARD_API")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked") && o.status.code() != Some(101), "{cmd:?}: {:?} {err}", o.status);
        assert!(err.is_empty(), "{cmd:?}: quiet on a closed pipe: {err}");
    }
    // The scheme is optional.
    let bare = agent.trim_start_matches("http://");
    let o = wsguard(&["status", "--json", "--api", bare]).unwrap();
    assert_eq!(o.code, Some(0), "--api {bare}: {}", o.stderr);
    // -c FILE: that config's [api] listen, for every client command.
    let dir = scratch_dir("cli-config-api");
    let cfg = write(&dir, "w.toml", &format!("[api]\nlisten = \"{bare}\"\n"));
    let cfg = cfg.to_str().unwrap();
    for cmd in [&["snapshot", "--json"][..], &["status", "--json"], &["report", "--json"], &["alerts", "list", "--json"]] {
        let mut args = cmd.to_vec();
        args.extend(["-c", cfg]);
        let o = wsguard(&args).unwrap();
        assert_eq!(o.code, Some(0), "{args:?}: {}", o.stderr);
        json_of(&o);
    }
    // A missing config: its cause once, exit 2.
    let o = wsguard(&["status", "-c", "/nonexistent/wsguard.toml"]).unwrap();
    assert_eq!(o.code, Some(2));
    assert_eq!(o.stderr.matches("No such file").count(), 1, "{}", o.stderr);
    let o = wsguard(&["detach", "-c", "/nonexistent/wsguard.toml"]).unwrap();
    assert_eq!((o.code, o.stderr.matches("No such file").count()), (Some(2), 1), "{}", o.stderr);
}
