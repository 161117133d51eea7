//! `cargo xtask package-check`: the packages really installed and run on this machine, as an
//! operator would (docs/deployment.md, "Tried here"). Needs root, `debootstrap`,
//! `systemd-nspawn` (Debian package `systemd-container`) and `podman` (+ `runc` on a cgroup v1
//! or hybrid host), and takes minutes, so CI does not run it (its budget is spent on the tests).
//!
//! 1. A clean Debian 12 root from `debootstrap` (kept in `--work` and reused); the `.deb` from
//!    `cargo xtask deb` installs there with `dpkg -i`.
//! 2. `systemd-nspawn -b` boots that root with the unit's capabilities and the host's bpffs:
//!    the unit starts under the root's own systemd, and the agent refuses to run, saying why:
//!    nspawn always gives the container its own PID namespace, where the probe's host pids are
//!    not the ones /proc shows (util/pidns.rs); nothing is pinned; `dpkg -r` works there.
//! 3. The package's upgrade and removal against a running agent, in a chroot of that root in the
//!    host's PID namespace (`package_upgrade.rs`).
//! 4. `podman build` of config/Containerfile from that root imported as the base image, with the
//!    host's release binary; the container runs with the DaemonSet's privileges (capabilities,
//!    seccomp profile, read-only root, host PID and network, bpffs at /host/sys/fs/bpf) and its
//!    ConfigMap, and counts a host WebSocket server under load exactly; its stop detaches.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::Value;

use crate::{
    demo,
    proc::Proc,
    sys,
    util::{self, step},
};

#[derive(Args, Debug, Clone)]
pub struct PackageCheckArgs {
    /// Where the Debian root (reused across runs) and the scratch copies live.
    #[arg(long, default_value = "/var/tmp/wsguard-package-check")]
    work: PathBuf,
    /// Debian mirror for debootstrap.
    #[arg(long, default_value = "http://deb.debian.org/debian")]
    mirror: String,
    /// Skip the systemd-nspawn boot.
    #[arg(long)]
    no_nspawn: bool,
    /// Skip the podman image.
    #[arg(long)]
    no_podman: bool,
    /// Skip the upgrade and removal leg (chroot).
    #[arg(long)]
    no_upgrade: bool,
    /// Package this release binary instead of building one (it must be target/release/wsguard
    /// for the image: the Containerfile's `prebuilt` stage copies that path).
    #[arg(long)]
    bin: Option<PathBuf>,
}

/// Ports of the two agents (loopback; the host network is shared in both cases).
const NSPAWN_PORT: u16 = 19581;
const PODMAN_PORT: u16 = 19582;

pub fn run(args: &PackageCheckArgs) -> Result<()> {
    if !sys::is_root() {
        bail!("package-check boots containers and loads eBPF programs: run it as root");
    }
    for tool in ["debootstrap", "dpkg-deb", "chroot"] {
        util::which(tool).with_context(|| format!("{tool} is missing (apt-get install debootstrap)"))?;
    }
    // Absolute: the podman step compares it with the path the Containerfile copies.
    let bin = util::release_agent(args.bin.as_deref())?.canonicalize().context("the release binary")?;
    fs::create_dir_all(&args.work)?;
    let deb = crate::deb::build(&bin, &util::target_dir().join("debian"))?;
    let base = args.work.join("debian12");
    if !base.join("usr/bin/systemctl").exists() {
        step("debootstrap: a clean Debian 12 root (minbase + systemd)");
        let _ = fs::remove_dir_all(&base);
        util::run(
            util::cmd("debootstrap", ["--variant=minbase", "--include=systemd,systemd-sysv,dbus", "bookworm"])
                .arg(&base)
                .arg(&args.mirror),
        )?;
    }
    let root = args.work.join("root");
    step("dpkg -i wsguard into a copy of the clean root");
    crate::package_upgrade::remove_root(&root)?;
    util::run(util::cmd("cp", ["-a"]).arg(&base).arg(&root))?;
    fs::copy(&deb, root.join("tmp/wsguard.deb"))?;
    util::run(util::cmd("chroot", [root.to_str().unwrap(), "dpkg", "-i", "/tmp/wsguard.deb"]))?;
    let version = util::output(util::cmd("chroot", [root.to_str().unwrap(), "wsguard", "--version"]))
        .context("wsguard --version in the root")?;
    println!("    installed: {}", version.trim());
    util::run(util::cmd(
        "chroot",
        [root.to_str().unwrap(), "wsguard", "config", "check", "--config", "/etc/wsguard/wsguard.toml"],
    ))?;
    util::run(util::cmd("chroot", [root.to_str().unwrap(), "systemctl", "enable", "wsguard"]))?;

    let mut failures = Vec::new();
    if args.no_nspawn {
        util::skip("systemd-nspawn (--no-nspawn)");
    } else if let Err(e) = nspawn(&root) {
        println!("    FAILED: {e:#}");
        failures.push(format!("nspawn: {e:#}"));
    }
    if args.no_upgrade {
        util::skip("upgrade and removal (--no-upgrade)");
    } else if let Err(e) = crate::package_upgrade::check(&base, &bin, &deb, &args.work) {
        println!("    FAILED: {e:#}");
        failures.push(format!("upgrade: {e:#}"));
    }
    if args.no_podman {
        util::skip("podman (--no-podman)");
    } else if let Err(e) = podman(&base, &bin, &args.work) {
        println!("    FAILED: {e:#}");
        failures.push(format!("podman: {e:#}"));
    }
    if !failures.is_empty() {
        bail!("package-check failed:\n  {}", failures.join("\n  "));
    }
    // The installed copy goes; the clean root and the podman base image stay for the next run.
    crate::package_upgrade::remove_root(&root)?;
    let _ = fs::remove_file(root.with_extension("nspawn.log"));
    println!("\npackage-check: all passed");
    Ok(())
}

/// The shipped config with a test port and pin (so nothing of a real install is touched).
pub(crate) fn test_config(shipped: &str, port: u16, pin_line: (&str, &str)) -> Result<String> {
    let listen = "listen = \"127.0.0.1:9595\"";
    if !shipped.contains(listen) || !shipped.contains(pin_line.0) {
        bail!("the shipped config no longer has `{listen}` / `{}`", pin_line.0);
    }
    Ok(shipped.replacen(listen, &format!("listen = \"127.0.0.1:{port}\""), 1).replacen(pin_line.0, pin_line.1, 1).replacen(
        "interval = \"5s\"",
        "interval = \"1s\"",
        1,
    ))
}

pub(crate) fn snapshot(port: u16) -> Option<Value> {
    let out = Command::new(util::target_dir().join("release/wsguard"))
        .args(["snapshot", "--json", "--api", &format!("http://127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

pub(crate) fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ok() {
            println!("    ok: {what}");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!("timed out ({timeout:?}) waiting for: {what}")
}

/// Run `args` inside the booted container (its PID 1's namespaces).
fn inside(leader: u32, args: &[&str]) -> Result<String> {
    let out = Command::new("nsenter").args(["-t", &leader.to_string(), "-a", "--"]).args(args).stdin(Stdio::null()).output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("{args:?} in the container: {text}");
    }
    Ok(text)
}

/// The container's PID 1: the child of the systemd-nspawn process.
fn leader(nspawn: u32) -> Option<u32> {
    let children = fs::read_to_string(format!("/proc/{nspawn}/task/{nspawn}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

fn nspawn(root: &Path) -> Result<()> {
    step("systemd-nspawn -b: the unit under a real systemd");
    util::which("systemd-nspawn").context("systemd-nspawn is missing (apt-get install systemd-container)")?;
    let pin = format!("/sys/fs/bpf/wsguard-pkgcheck-{}", std::process::id());
    let cfg = root.join("etc/wsguard/wsguard.toml");
    let shipped = fs::read_to_string(&cfg)?;
    let test = test_config(&shipped, NSPAWN_PORT, ("pin_path = \"/sys/fs/bpf/wsguard\"", &format!("pin_path = \"{pin}\"")))?;
    fs::write(&cfg, test)?;
    let log = root.with_extension("nspawn.log");
    // The unit's capabilities (plus what systemd itself needs to boot), the host's bpffs and
    // tracefs; the host network (the API is reached on loopback). No machined here: no registration.
    let mut boot = Proc::spawn(
        "systemd-nspawn",
        Command::new("systemd-nspawn")
            .args(["-q", "-b", "--register=no", "--keep-unit", "-D"])
            .arg(root)
            // nspawn's own seccomp filter refuses bpf(2) (EPERM on the first map) unless allowed.
            .args(["--capability=CAP_BPF,CAP_PERFMON", "--system-call-filter=bpf"])
            .args(["--bind=/sys/fs/bpf", "--bind-ro=/sys/kernel/tracing"])
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log)?)
            .stderr(Stdio::null()),
    )?;
    let result = (|| -> Result<()> {
        // The unit starts (its ExecStartPre passes) and the agent refuses: the container has its
        // own PID namespace. systemd restarts it (Restart=on-failure); each start says the same.
        let refusal = "wsguard run must run in the host's PID namespace";
        let mut leader_pid = None;
        wait_for("the unit's agent refused to run in the container's PID namespace", Duration::from_secs(90), || {
            leader_pid = leader_pid.or_else(|| leader(boot.pid()));
            leader_pid
                .and_then(|l| inside(l, &["journalctl", "-u", "wsguard", "--no-pager", "-o", "cat"]).ok())
                .is_some_and(|j| j.contains(refusal))
        })?;
        let leader = leader_pid.context("no container PID 1")?;
        let journal = inside(leader, &["journalctl", "-u", "wsguard", "--no-pager", "-o", "cat"])?;
        let line = journal.lines().find(|l| l.contains(refusal)).unwrap_or_default();
        println!("    journal: {line}");
        if !line.contains("not the host's (4026531836)") || !line.contains("hostPID: true") {
            bail!("the refusal does not say which namespace and what to do: {line}");
        }
        if journal.contains("probe attached") || Path::new(&pin).exists() {
            bail!("the agent attached in the container's PID namespace:\n{journal}");
        }
        println!(
            "    ok: nothing attached or pinned ({pin} absent); API port {NSPAWN_PORT} serves nothing: {}",
            snapshot(NSPAWN_PORT).is_none()
        );
        let doctor = inside(leader, &["wsguard", "doctor"]).unwrap_or_else(|e| format!("{e:#}"));
        let check = doctor.lines().find(|l| l.contains("pid namespace")).unwrap_or_default();
        if !check.starts_with("FAIL") {
            bail!("wsguard doctor in the container does not fail its pid namespace check:\n{doctor}");
        }
        println!("    ok: wsguard doctor there: {}", check.split_whitespace().take(8).collect::<Vec<_>>().join(" "));
        inside(leader, &["dpkg", "-r", "wsguard"])?;
        println!("    ok: dpkg -r in the container");
        Ok(())
    })();
    // SIGTERM makes systemd-nspawn power the container off.
    boot.stop(Duration::from_secs(30));
    if Path::new(&pin).exists() {
        let _ = fs::remove_dir_all(&pin);
    }
    if result.is_err() {
        println!("    boot log: {}", log.display());
    }
    result
}

/// Start the echo server on the host, load it for `seconds` while `during` runs, and check the
/// agent on `port` (then) counted all of it exactly.
pub(crate) fn count_host_server(port: u16, seconds: u32, during: impl FnOnce() -> Result<()>) -> Result<()> {
    let repo = util::workspace_root();
    let servers = repo.join("tests/servers");
    let (mut server, ws_port) = demo::start_echo_server(&servers)?;
    let mut load = Proc::spawn(
        "load generator",
        Command::new("python3")
            .arg(servers.join("ws_load.py"))
            .args(["--port", &ws_port.to_string(), "--connections", "20", "--rate", "200", "--duration", &seconds.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped()),
    )?;
    let summary = demo::forward_summary(&mut load);
    let r = during().and_then(|()| {
        demo::check_counts(&repo.join("target/release/wsguard"), &format!("http://127.0.0.1:{port}"), server.pid(), &summary)
    });
    load.stop(Duration::from_secs(5));
    server.stop(Duration::from_secs(3));
    r
}

fn podman(base: &Path, bin: &Path, work: &Path) -> Result<()> {
    step("podman: the Containerfile built on a local Debian 12 base, run as the DaemonSet runs it");
    util::which("podman").context("podman is missing (apt-get install podman)")?;
    let repo = util::workspace_root();
    // On a cgroup v1/hybrid host crun refuses to run; runc works.
    let hybrid = !Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let podman = || {
        let mut c = Command::new("podman");
        if hybrid {
            c.args(["--runtime", "runc"]);
        }
        c
    };
    let base_image = "localhost/wsguard-debian12:bookworm";
    if !util::succeeds(podman().args(["image", "exists", base_image])) {
        util::run(util::cmd("sh", ["-c", &format!("tar -C '{}' -c . | podman import - {base_image}", base.display())]))?;
    }
    // The build context must hold the release binary the `prebuilt` stage copies.
    if Some(bin.to_path_buf()) != repo.join("target/release/wsguard").canonicalize().ok() {
        bail!("the release binary must be target/release/wsguard (is {})", bin.display());
    }
    let image = "localhost/wsguard:package-check";
    util::run(
        podman()
            .args(["build", "-q", "-f", "config/Containerfile", "-t", image])
            .args(["--build-arg", "BINARY_FROM=prebuilt", "--build-arg", &format!("RUNTIME_IMAGE={base_image}"), "."])
            .current_dir(&repo),
    )?;
    let limits = ulimits()?;
    let out = podman().args(["run", "--rm"]).args(&limits).args([image, "--version"]).output()?;
    println!("    image runs: {}", String::from_utf8_lossy(&out.stdout).trim());

    // The ConfigMap's config, with a test port and pin.
    let toml = configmap_toml(&fs::read_to_string(repo.join("config/kubernetes/base/configmap.yaml"))?)?;
    let pin_name = format!("wsguard-pkgcheck-k8s-{}", std::process::id());
    let host_pin = format!("/sys/fs/bpf/{pin_name}");
    let k8s_pin = toml.lines().find(|l| l.starts_with("pin_path = ")).context("pin_path in the ConfigMap")?;
    let test = test_config(&toml, PODMAN_PORT, (k8s_pin, &format!("pin_path = \"/host/sys/fs/bpf/{pin_name}\"")))?;
    let dir = work.join("podman");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("state"))?;
    fs::write(dir.join("wsguard.toml"), test)?;
    let seccomp = repo.join("config/kubernetes/seccomp/wsguard.json");

    let name = format!("wsguard-pkgcheck-{}", std::process::id());
    // daemonset.yaml's pod and container security, as podman flags.
    let mut agent = Proc::spawn(
        "podman run",
        podman()
            .args(["run", "--rm", "--name", &name, "--pid=host", "--network=host", "--cap-drop=ALL"])
            .args(["--cap-add=BPF,PERFMON,SYS_PTRACE,DAC_READ_SEARCH", "--security-opt=no-new-privileges"])
            .arg(format!("--security-opt=seccomp={}", seccomp.display()))
            .args(["--read-only", "--tmpfs=/tmp", "--user=0:0"])
            .args(&limits)
            .args(["-v", "/sys/fs/bpf:/host/sys/fs/bpf", "-v", "/sys/kernel/tracing:/sys/kernel/tracing:ro"])
            .arg("-v")
            .arg(format!("{}:/var/lib/wsguard", dir.join("state").display()))
            .arg("-v")
            .arg(format!("{}:/etc/wsguard:ro", dir.display()))
            .args([image, "run", "--config", "/etc/wsguard/wsguard.toml"])
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("agent.log"))?)
            .stderr(fs::File::create(dir.join("agent.stderr"))?),
    )?;
    let result = (|| -> Result<()> {
        wait_for("the container's agent serves a snapshot with the probe attached", Duration::from_secs(60), || {
            snapshot(PODMAN_PORT).is_some_and(|s| s["probe"]["attached"] == true)
        })?;
        count_host_server(PODMAN_PORT, 5, || Ok(()))?;
        util::run(podman().args(["stop", "-t", "20", &name]))?;
        if Path::new(&host_pin).exists() {
            bail!("the container's stop left {host_pin} pinned");
        }
        println!("    ok: the container's stop detached the probe ({host_pin} gone)");
        Ok(())
    })();
    agent.stop(Duration::from_secs(20));
    if Path::new(&host_pin).exists() {
        let _ = fs::remove_dir_all(&host_pin);
    }
    if result.is_err() {
        println!("    agent logs: {}", dir.display());
    }
    result
}

/// The `wsguard.toml: |` block of the ConfigMap (a literal block indented by four spaces).
/// `--ulimit` flags the container runtime can grant here. runc sets the container's limits
/// from podman's defaults (nofile and nproc far above a shell's) and raising a hard limit needs
/// CAP_SYS_RESOURCE, which a host (or a sandbox like this machine) may not give root: then every
/// container fails with "error setting rlimit type 7/6: operation not permitted". So: open
/// files as the DaemonSet wants (65536) but no more than this process's hard limit, and a
/// process cap (4096) far above the agent's threads.
fn ulimits() -> Result<Vec<String>> {
    let limits = fs::read_to_string("/proc/self/limits").context("reading /proc/self/limits")?;
    let hard = |name: &str| -> Option<u64> {
        let line = limits.lines().find(|l| l.starts_with(name))?;
        let fields: Vec<&str> = line[name.len()..].split_whitespace().collect();
        match *fields.get(1)? {
            "unlimited" => Some(u64::MAX),
            v => v.parse().ok(),
        }
    };
    let nofile = hard("Max open files").unwrap_or(4096).min(65536);
    let nproc = hard("Max processes").unwrap_or(4096).min(4096);
    Ok(vec![format!("--ulimit=nofile={nofile}:{nofile}"), format!("--ulimit=nproc={nproc}:{nproc}")])
}

fn configmap_toml(yaml: &str) -> Result<String> {
    let (_, block) = yaml.split_once("  wsguard.toml: |\n").context("no `wsguard.toml: |` in the ConfigMap")?;
    let mut out = String::new();
    for line in block.lines() {
        match line.strip_prefix("    ") {
            Some(l) => out.push_str(l),
            None if line.trim().is_empty() => {}
            None => break,
        }
        out.push('\n');
    }
    Ok(out)
}
