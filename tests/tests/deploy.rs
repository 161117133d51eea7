//! The deployment files in `config/` (docs/deployment.md): the systemd unit passes
//! `systemd-analyze verify`, the shipped config passes `wsguard config check`, the Kubernetes
//! manifests parse and carry what the agent needs, the Prometheus rules pass `promtool check
//! rules`, and every `wsguard_*` metric the rules and the Grafana dashboard query is exported by a
//! running agent watching a real server.
//!
//! Needs `systemd-analyze` (Debian package `systemd`) and `promtool` (`prometheus`); `cargo
//! xtask setup` installs both. A missing tool is a failure, not a skip. Only the last test loads
//! the probe and needs root.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use wsguard_integration::{
    agent_bin, enc, http_get, repo_root, require_root, scratch_dir,
    sse::{Cut, End, Script, SseClient},
    Agent, RawClient, Server, Split,
};

fn config_path(rel: &str) -> PathBuf {
    repo_root().join("config").join(rel)
}

fn read(rel: &str) -> String {
    let p = config_path(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Runs `cmd`, panicking with the way to install it when it is missing: (success, all output).
fn run(cmd: &mut Command, package: &str) -> (bool, String) {
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("{cmd:?}: not installed; `cargo xtask setup` installs it (Debian package `{package}`)")
        }
        Err(e) => panic!("{cmd:?}: {e}"),
    };
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), said)
}

#[test]
fn systemd_unit_verifies() {
    let bin = agent_bin();
    assert!(bin.exists(), "{} missing: build it first (`cargo build --release`)", bin.display());
    let unit = read("wsguard.service");
    assert!(unit.contains("ExecStart=/usr/local/bin/wsguard run --config /etc/wsguard/wsguard.toml"));
    assert!(unit.contains("StateDirectory=wsguard"));
    // Exactly the capabilities docs/deployment.md explains.
    for key in ["CapabilityBoundingSet=", "AmbientCapabilities="] {
        let caps: BTreeSet<&str> = unit.lines().filter_map(|l| l.strip_prefix(key)).flat_map(str::split_whitespace).collect();
        // Remediation's capabilities only in the opt-in drop-in (wsguard-remediation.conf).
        assert_eq!(caps, BTreeSet::from(["CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"]), "{key}");
        let dropin = read("wsguard-remediation.conf");
        let extra: BTreeSet<&str> = dropin.lines().filter_map(|l| l.strip_prefix(key)).flat_map(str::split_whitespace).collect();
        assert_eq!(
            extra,
            BTreeSet::from(["CAP_NET_ADMIN", "CAP_KILL", "CAP_SYS_RESOURCE", "CAP_SETUID", "CAP_SETGID"]),
            "drop-in {key}"
        );
    }
    let filters: Vec<&str> = unit.lines().filter_map(|l| l.strip_prefix("SystemCallFilter=")).collect();
    assert!(filters.iter().all(|f| !f.contains("setuid")), "set*id calls only in the drop-in: {filters:?}");
    // Stopping detaches; the unit says how to keep the probe for a restart.
    assert!(unit.contains("systemctl kill -s USR2 --kill-who=main wsguard"), "upgrade path documented in the unit");
    // A refused start (no capabilities, not the host's PID namespace) exits 78 and is not
    // retried (pid_namespace.rs checks the status).
    assert!(unit.lines().any(|l| l == "RestartPreventExitStatus=78"), "refused starts are not retried");
    // Reload: validate, then SIGHUP (tests/tests/reload.rs checks what the agent does with it).
    let reload: Vec<&str> = unit.lines().filter_map(|l| l.strip_prefix("ExecReload=")).collect();
    assert_eq!(reload, ["/usr/local/bin/wsguard config check --config /etc/wsguard/wsguard.toml", "/bin/kill -HUP $MAINPID"]);
    // `verify` checks that the binaries exist: point the unit at the built one.
    let dir = scratch_dir("deploy-systemd");
    let path = dir.join("wsguard.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/wsguard", bin.to_str().unwrap())).unwrap();
    let (ok, said) = run(Command::new("systemd-analyze").arg("verify").arg(&path), "systemd");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(ok && said.trim().is_empty(), "systemd-analyze verify wsguard.service:\n{said}");
}

/// `wsguard config check` passes, with exactly these production-readiness warnings (keys).
fn config_check(path: &Path, warnings: &[&str]) {
    let (ok, said) = run(Command::new(agent_bin()).args(["config", "check", "--json", "--config"]).arg(path), "wsguard");
    let report: Value = serde_json::from_str(&said).unwrap_or_else(|e| panic!("{e}: {said}"));
    assert!(ok && report["valid"] == true, "wsguard config check {}:\n{said}", path.display());
    let keys: Vec<&str> = report["warnings"].as_array().unwrap().iter().map(|w| w["key"].as_str().unwrap()).collect();
    assert_eq!(keys, warnings, "{said}");
}

/// Every `key = value` line of a TOML text, commented or not: `section.key`.
fn toml_keys(text: &str) -> BTreeSet<String> {
    let mut section = String::new();
    let mut keys = BTreeSet::new();
    for line in text.lines() {
        let l = line.trim().trim_start_matches('#').trim();
        if l.starts_with('[') && l.ends_with(']') && !l.contains(' ') {
            section = l.trim_matches(|c| c == '[' || c == ']').to_owned();
        } else if let Some((k, _)) = l.split_once(" = ") {
            if !k.contains(' ') && !section.is_empty() {
                keys.insert(format!("{section}.{k}"));
            }
        }
    }
    keys
}

#[test]
fn shipped_config_passes_check_and_lists_every_documented_key() {
    // Valid; the one readiness warning is that no notification channel is set up yet.
    config_check(&config_path("wsguard.toml"), &["notify.channels"]);
    // Every key of the reference example in docs/configuration.md is in the shipped file.
    let doc = std::fs::read_to_string(repo_root().join("docs/configuration.md")).unwrap();
    let example = doc.split("```toml").nth(1).and_then(|s| s.split("```").next()).expect("example in the docs");
    let shipped = toml_keys(&read("wsguard.toml"));
    let missing: Vec<_> = toml_keys(example).difference(&shipped).cloned().collect();
    assert!(missing.is_empty(), "config/wsguard.toml lacks documented keys {missing:?}");
}

/// Every YAML document of the files in `config/kubernetes/<dir>`, as JSON values.
fn kubernetes_documents(dir: &str) -> Vec<(String, Value)> {
    let mut docs = Vec::new();
    let dir = config_path("kubernetes").join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for f in files.into_iter().filter(|f| f.extension().is_some_and(|e| e == "yaml" || e == "yml")) {
        let text = std::fs::read_to_string(&f).unwrap();
        for de in serde_yaml::Deserializer::from_str(&text) {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(de).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            if v.is_null() {
                continue;
            }
            let j = serde_json::to_value(&v).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            docs.push((f.file_name().unwrap().to_string_lossy().into_owned(), j));
        }
    }
    docs
}

fn of_kind<'a>(docs: &'a [(String, Value)], kind: &str) -> &'a Value {
    let found: Vec<_> = docs.iter().filter(|(_, d)| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    &found[0].1
}

/// The files a Kustomization lists as resources.
fn listed(kust: &Value) -> BTreeSet<&str> {
    kust["resources"].as_array().unwrap().iter().filter_map(Value::as_str).collect()
}

/// config/wsguard.toml with its `key = ...` line (the first one) replaced by `line`.
fn with_line(toml: &str, key: &str, line: &str) -> String {
    let old = toml.lines().find(|l| l.starts_with(&format!("{key} = "))).unwrap_or_else(|| panic!("{key} missing"));
    toml.replacen(old, line, 1)
}

#[test]
fn kubernetes_manifests_carry_what_the_agent_needs() {
    let docs = kubernetes_documents("base");
    for (file, d) in &docs {
        assert!(d["apiVersion"].is_string(), "{file}: apiVersion");
        assert!(d["kind"].is_string(), "{file}: kind");
        if d["kind"] != "Kustomization" {
            assert!(d["metadata"]["name"].is_string(), "{file}: metadata.name");
        }
    }
    // base/kustomization.yaml lists every other file; the top one is the base.
    let kust = of_kind(&docs, "Kustomization");
    for (file, d) in &docs {
        if d["kind"] != "Kustomization" {
            assert!(listed(kust).contains(file.as_str()), "{file} is not in kustomization.yaml");
        }
    }
    assert_eq!(listed(of_kind(&kubernetes_documents(""), "Kustomization")), BTreeSet::from(["base"]));

    let ds = of_kind(&docs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true, "hostPID: the agent reads the host's /proc");
    assert_eq!(pod["hostNetwork"], true, "hostNetwork: the agent reads the host's /proc/net");
    let labels = &ds["spec"]["template"]["metadata"]["labels"];
    for (k, v) in ds["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "selector matches the pod labels");
    }
    // Its own PriorityClass: system-node-critical is for kube-system.
    let pc = of_kind(&docs, "PriorityClass");
    assert_eq!(pod["priorityClassName"], pc["metadata"]["name"]);
    assert!(!pc["metadata"]["name"].as_str().unwrap().starts_with("system-"));
    assert!(pc["value"].as_u64().unwrap() < 1_000_000_000, "user classes stay below 1e9");
    assert_ne!(pc["globalDefault"], true);
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    // Exactly the probe's and /proc's capabilities; remediation's only in its overlay.
    let caps: BTreeSet<&str> = sc["capabilities"]["add"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(caps, BTreeSet::from(["BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH"]));
    assert_eq!(sc["capabilities"]["drop"][0], "ALL");
    let remediation = kubernetes_documents("overlays/remediation");
    let overlay = of_kind(&remediation, "Kustomization");
    assert_eq!(listed(overlay), BTreeSet::from(["../../base"]));
    let patch: serde_yaml::Value = serde_yaml::from_str(overlay["patches"][0]["patch"].as_str().unwrap()).unwrap();
    let added: BTreeSet<String> =
        patch.as_sequence().unwrap().iter().map(|op| op["value"].as_str().unwrap().to_owned()).collect();
    assert_eq!(added, ["KILL", "NET_ADMIN", "SETGID", "SETUID", "SYS_RESOURCE"].map(String::from).into());
    // Confined: a seccomp profile that allows what the probe needs, AppArmor's default.
    assert_eq!(sc["seccompProfile"]["type"], "Localhost");
    let profile_file = sc["seccompProfile"]["localhostProfile"].as_str().unwrap();
    let profile: Value = serde_json::from_str(&read(&format!("kubernetes/seccomp/{profile_file}"))).unwrap();
    let denied: BTreeSet<&str> = profile["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] != "SCMP_ACT_ALLOW")
        .flat_map(|r| r["names"].as_array().unwrap().iter().filter_map(Value::as_str))
        .collect();
    for need in ["bpf", "perf_event_open", "capset", "openat", "statfs"] {
        assert!(!denied.contains(need), "the seccomp profile denies {need}");
    }
    for gone in ["init_module", "kexec_load", "mount", "ptrace", "unshare", "setns", "userfaultfd"] {
        assert!(denied.contains(gone), "the seccomp profile allows {gone}");
    }
    assert_eq!(sc["appArmorProfile"]["type"], "RuntimeDefault");
    // Volumes: host paths by name, mounted where the agent looks.
    let volumes = pod["volumes"].as_array().unwrap();
    let host_path = |name: &str| volumes.iter().find(|v| v["name"] == name).map(|v| v["hostPath"]["path"].clone());
    let mounts = c["volumeMounts"].as_array().unwrap();
    let mount = |path: &str| mounts.iter().find(|m| m["mountPath"] == path).unwrap_or_else(|| panic!("no mount at {path}"));
    for (path, host) in [
        ("/host/sys/fs/bpf", "/sys/fs/bpf"),
        ("/sys/kernel/tracing", "/sys/kernel/tracing"),
        ("/var/lib/wsguard", "/var/lib/wsguard-k8s"),
        ("/var/log/pods", "/var/log/pods"),
        ("/var/log/containers", "/var/log/containers"),
    ] {
        assert_eq!(host_path(mount(path)["name"].as_str().unwrap()), Some(Value::from(host)), "{path} is the host's {host}");
    }
    // AppArmor's default profile denies writes under /sys: every writable mount is elsewhere.
    for m in mounts {
        let path = m["mountPath"].as_str().unwrap();
        assert!(!path.starts_with("/sys/") || m["readOnly"] == true, "{path} is writable under /sys");
    }
    for path in ["/var/log/pods", "/var/log/containers"] {
        assert_eq!(mount(path)["readOnly"], true, "{path} read-only");
    }
    let bpffs = mount("/host/sys/fs/bpf");
    assert_ne!(bpffs["readOnly"], true, "the probe pins itself on the host's bpffs");
    assert_ne!(bpffs["mountPropagation"], "Bidirectional", "Bidirectional needs privileged");
    let cfg = mount("/etc/wsguard");
    let cfg_vol = volumes.iter().find(|v| v["name"] == cfg["name"]).unwrap();
    let cm = of_kind(&docs, "ConfigMap");
    assert_eq!(cfg_vol["configMap"]["name"], cm["metadata"]["name"]);
    // The args read the file the ConfigMap provides.
    let args: Vec<&str> = c["args"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(args, ["run", "--config", "/etc/wsguard/wsguard.toml"]);
    // Probes: the kubelet reaches the API on the node's loopback.
    let port = c["ports"].as_array().unwrap().iter().find(|p| p["containerPort"] == 9595).expect("port 9595");
    let port_name = port["name"].as_str().unwrap();
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/health");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ready");
    for probe in ["livenessProbe", "readinessProbe"] {
        let p = &c[probe]["httpGet"]["port"];
        assert!(p == port_name || p == 9595, "{probe} port {p}");
        assert_eq!(c[probe]["httpGet"]["host"], "127.0.0.1", "{probe} host");
    }
    assert_eq!(pod["serviceAccountName"], of_kind(&docs, "ServiceAccount")["metadata"]["name"]);

    // The ConfigMap is config/wsguard.toml but for pin_path: on the host's bpffs as mounted,
    // under another name than a systemd install's /sys/fs/bpf/wsguard. It listens on loopback.
    let toml = cm["data"]["wsguard.toml"].as_str().expect("wsguard.toml in the ConfigMap");
    let pin_line = toml.lines().find(|l| l.starts_with("pin_path = ")).unwrap();
    let pin = pin_line.split('"').nth(1).unwrap();
    let host_pin = pin.strip_prefix("/host").expect("pin_path under the /host/sys/fs/bpf mount");
    assert!(
        host_pin.starts_with("/sys/fs/bpf/") && host_pin != "/sys/fs/bpf/wsguard",
        "{host_pin} collides with a systemd install"
    );
    let shipped = read("wsguard.toml");
    assert_eq!(toml, with_line(&shipped, "pin_path", pin_line), "the ConfigMap drifted from config/wsguard.toml");
    assert!(toml.contains("\nlisten = \"127.0.0.1:9595\""), "loopback by default");
    let dir = scratch_dir("deploy-configmap");
    let path = dir.join("wsguard.toml");
    std::fs::write(&path, toml).unwrap();
    config_check(&path, &["notify.channels"]);

    // overlays/scrape: Service + ServiceMonitor, and the same config listening beyond loopback.
    let scrape = kubernetes_documents("overlays/scrape");
    let skust = of_kind(&scrape, "Kustomization");
    for (file, d) in &scrape {
        if d["kind"] != "Kustomization" && d["kind"] != "ConfigMap" {
            assert!(listed(skust).contains(file.as_str()), "{file} is not in overlays/scrape/kustomization.yaml");
        }
    }
    let open = of_kind(&scrape, "ConfigMap");
    assert_eq!(open["metadata"]["name"], cm["metadata"]["name"]);
    let open_toml = open["data"]["wsguard.toml"].as_str().unwrap();
    assert_eq!(open_toml, with_line(toml, "listen", "listen = \"0.0.0.0:9595\""), "overlays/scrape's ConfigMap drifted");
    std::fs::write(&path, open_toml).unwrap();
    // It is warned about, as the overlay's own comment does.
    config_check(&path, &["api.listen", "notify.channels"]);
    let _ = std::fs::remove_dir_all(&dir);
    let svc = of_kind(&scrape, "Service");
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "Service selects the agent pods");
    }
    let svc_port = svc["spec"]["ports"].as_array().unwrap().iter().find(|p| p["port"] == 9595).expect("service port 9595");
    let svc_port_name = svc_port["name"].as_str().unwrap();
    assert!(svc_port["targetPort"] == port_name || svc_port["targetPort"] == 9595);
    let sm = of_kind(&scrape, "ServiceMonitor");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&svc["metadata"]["labels"][k], v, "ServiceMonitor selects the Service");
    }
    let eps = sm["spec"]["endpoints"].as_array().unwrap();
    assert!(eps.iter().any(|e| e["port"] == svc_port_name && e["path"] == "/metrics"), "ServiceMonitor scrapes {svc_port_name}");
    // Everything namespaced lives in one namespace.
    let ns = of_kind(&docs, "Namespace")["metadata"]["name"].clone();
    for (file, d) in docs.iter().chain(&scrape) {
        if !["Namespace", "Kustomization", "PriorityClass"].contains(&d["kind"].as_str().unwrap()) {
            assert_eq!(d["metadata"]["namespace"], ns, "{file}: namespace");
        }
    }
}

#[test]
fn prometheus_rules_pass_promtool() {
    let path = config_path("prometheus/wsguard-rules.yml");
    let (ok, said) = run(Command::new("promtool").args(["check", "rules"]).arg(&path), "prometheus");
    assert!(ok && said.contains("SUCCESS"), "promtool check rules:\n{said}");
}

#[test]
fn grafana_dashboard_is_well_formed() {
    let d: Value = serde_json::from_str(&read("grafana/wsguard-dashboard.json")).expect("dashboard JSON");
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36);
    let vars = d["templating"]["list"].as_array().unwrap();
    assert!(vars.iter().any(|v| v["type"] == "datasource" && v["query"] == "prometheus" && v["name"] == "datasource"));
    let panels = d["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    let mut exprs = 0;
    for p in panels {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate panel id {}", p["id"]);
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}: datasource variable", p["title"]);
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}: no query", p["title"]);
        for t in targets {
            assert!(t["expr"].as_str().is_some_and(|e| e.contains("wsguard_")), "{}: {t}", p["title"]);
            exprs += 1;
        }
    }
    assert!(exprs >= 20, "{exprs} queries");
}

/// Every metric name `wsguard_…` in `text` (recording rules, with a `:`, excluded).
fn metric_names(text: &str) -> BTreeSet<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("wsguard_") {
        let before = rest[..i].chars().next_back();
        let tail = &rest[i..];
        let end = tail.find(|c: char| !ident(c)).unwrap_or(tail.len());
        let name = &tail[..end];
        if !before.is_some_and(ident) && !name.contains(':') {
            names.insert(name.to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// Whether the exposition has `name`: a sample line of that name, or its `# TYPE` (a family
/// named without its `_bucket`/`_sum`/`_count` sample suffix).
fn exported(exposition: &str, name: &str) -> bool {
    exposition.lines().any(|l| {
        l.strip_prefix(name).is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
            || l.strip_prefix("# TYPE ").and_then(|r| r.strip_prefix(name)).is_some_and(|r| r.starts_with(' '))
    })
}

#[test]
fn every_queried_metric_is_exported_by_a_running_agent() -> Result<()> {
    let mut wanted = metric_names(&read("prometheus/wsguard-rules.yml"));
    let from_rules = wanted.len();
    let dashboard: Value = serde_json::from_str(&read("grafana/wsguard-dashboard.json"))?;
    let mut exprs = String::new();
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push_str(t["expr"].as_str().unwrap_or(""));
            exprs.push('\n');
        }
    }
    for v in dashboard["templating"]["list"].as_array().unwrap() {
        exprs.push_str(v["definition"].as_str().unwrap_or(""));
        exprs.push('\n');
    }
    wanted.extend(metric_names(&exprs));
    assert!(from_rules >= 10 && wanted.len() >= 30, "rules {from_rules}, all {}: {wanted:?}", wanted.len());
    if !require_root() {
        return Ok(());
    }

    let server = Server::node(&[])?;
    let agent = Agent::start("deploy")?;
    // A little of everything: text frames and a ping each way, a clean close, an abrupt one.
    let mut clean = RawClient::connect(server.port)?;
    clean.send(&[enc::text("hello", true), enc::ping("p")], Split::PerFrame)?;
    clean.read_frames(2, Duration::from_secs(10))?;
    clean.send(&[enc::close(1000)], Split::PerFrame)?;
    clean.read_frames(3, Duration::from_secs(10))?;
    let mut open = RawClient::connect(server.port)?;
    open.send(&[enc::text("still here", true)], Split::PerFrame)?;
    open.read_frames(1, Duration::from_secs(10))?;
    let abrupt = RawClient::connect(server.port)?;
    abrupt.reset()?;
    agent.wait_ws(server.pid, "traffic counted", |w| {
        w["frames_received"]["close"] == 1 && w["abnormal_closes"].as_u64().is_some_and(|n| n >= 1)
    })?;
    // And one Server-Sent Events stream. The per-process `wsguard_sse_*` families exist only for
    // servers that served a stream (docs/metrics.md), so they are required once the agent has
    // counted it; a probe that does not count SSE streams leaves them out, and says so below.
    let sse_server = Server::sse_node()?;
    SseClient::run(sse_server.port, &Script::new(b"id: 1\ndata: hello\n\n: keep-alive\n\n", Cut::Whole, End::Server))?;
    let sse_counted = (0..20).any(|_| {
        let n = agent.process(sse_server.pid).ok().flatten().and_then(|p| p["sse"]["streams_opened"].as_u64()).unwrap_or(0);
        n > 0 || {
            std::thread::sleep(Duration::from_millis(500));
            false
        }
    });
    let per_process_sse = |n: &String| n.starts_with("wsguard_sse_");
    if !sse_counted {
        let skipped: Vec<&String> = wanted.iter().filter(|n| per_process_sse(n)).collect();
        println!("the agent counted no SSE stream (probe without SSE): not required: {skipped:?}");
        wanted.retain(|n| !per_process_sse(n));
    }

    // Poll until every name shows up (predictions need a few snapshots).
    let deadline = Instant::now() + Duration::from_secs(30);
    let (missing, text) = loop {
        let (_, text) = http_get(&format!("{}/metrics", agent.api)).context("GET /metrics")?;
        let missing: Vec<&String> = wanted.iter().filter(|n| !exported(&text, n)).collect();
        if missing.is_empty() || Instant::now() > deadline {
            break (missing.into_iter().cloned().collect::<Vec<_>>(), text);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    if !missing.is_empty() {
        bail!("queried by config/prometheus or config/grafana but not exported: {missing:?}\n\n{text}");
    }
    println!("all {} metric names queried by the rules and the dashboard are exported: {wanted:?}", wanted.len());
    drop((clean, open));
    Ok(())
}

#[test]
fn metric_name_extraction() {
    let names = metric_names(
        r#"sum by (instance) (rate(wsguard_websocket_frames_total{job=~".*wsguard.*"}[5m])) / wsguard:x_y:sum + my_wsguard_z + wsguard_a_sum"#,
    );
    assert_eq!(names, BTreeSet::from(["wsguard_websocket_frames_total".to_owned(), "wsguard_a_sum".to_owned()]));
    let text = "# TYPE wsguard_rtt_seconds summary\nwsguard_rtt_seconds_sum 0\nwsguard_up 1\nwsguard_l{a=\"b\"} 2\n";
    for (name, yes) in
        [("wsguard_rtt_seconds", true), ("wsguard_up", true), ("wsguard_l", true), ("wsguard_u", false), ("wsguard_rtt", false)]
    {
        assert_eq!(exported(text, name), yes, "{name}");
    }
}
