//! `cargo xtask vm-test`: the privileged integration tests on the kernels our users run.
//!
//! For each kernel (Debian 12's 6.1, bookworm-backports' 6.12, or the host's own) and each probe
//! mode, boot the kernel in QEMU over a read-only view of the host (see `boot`), run
//! `wsguard doctor`, start the agent once in that mode to read each program's verified
//! instruction count, then run the chosen integration test binaries (built on the host) with
//! the env `cargo xtask test` gives them. Results go to `target/vm/runs/<kernel>-<mode>/` and
//! into the table in docs/kernel-support.md (see `report`).

mod boot;
mod kernel;
mod report;

use crate::setup::Apt;
use crate::sys;
use crate::util::{self, step};
use anyhow::{bail, Context, Result};
use report::{Outcome, Row};
use std::path::{Path, PathBuf};
use std::time::Duration;

const GUEST_BODY: &str = include_str!("guest.sh");
const PACKAGES: &[&str] = &["qemu-system-x86", "busybox-static", "kmod", "xz-utils", "bpftool"];
/// In this order: `auto` comes last, so that it can reuse the tests of the probe it picks.
const MODES: &[&str] = &["syscall", "socket", "auto"];

#[derive(clap::Args)]
pub struct VmTestArgs {
    /// 6.1 (Debian 12), 6.12 (bookworm-backports), host (this machine's kernel, no VM) or all.
    #[arg(long, default_value = "all", value_parser = ["6.1", "6.12", "host", "all"])]
    kernel: String,
    /// Probe mode(s) the agent is started in (`[probe] mode`); `fallback` is `syscall`.
    #[arg(long, default_value = "all", value_parser = ["auto", "socket", "syscall", "fallback", "all"])]
    mode: String,
    /// Integration test files to run (comma-separated names from tests/tests/, or paths of test
    /// binaries already built, which are then not rebuilt).
    #[arg(long, default_value = "lifecycle,frames,restart,servers", value_delimiter = ',')]
    tests: Vec<String>,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 3072)]
    memory_mib: u32,
    /// Hard limit for one boot (all steps of one kernel and mode), seconds.
    #[arg(long, default_value_t = 1800)]
    timeout_secs: u64,
    /// Do not rewrite the table in docs/kernel-support.md.
    #[arg(long)]
    no_doc: bool,
    /// Use this agent binary instead of building the release agent.
    #[arg(long)]
    agent: Option<PathBuf>,
    /// Extra arguments for the test binaries (after `--`), e.g. a test name filter.
    #[arg(last = true)]
    args: Vec<String>,
}

pub fn run(args: &VmTestArgs) -> Result<()> {
    if !sys::is_root() {
        bail!("vm-test needs root (apt, and the host-kernel leg loads the probe): run it with sudo -E");
    }
    sys::catch_interrupts();
    let cache = util::target_dir().join("vm");
    let mut apt = Apt::new();
    step("VM tools (Debian packages)");
    apt.install(PACKAGES, false)?;

    let kernels: Vec<&str> = match args.kernel.as_str() {
        "all" => vec!["6.1", "6.12", "host"],
        k => vec![k],
    };
    let modes: Vec<&str> = match args.mode.as_str() {
        "all" => MODES.to_vec(),
        "fallback" => vec!["syscall"],
        m => vec![m],
    };

    step("release agent and integration test binaries (built on the host)");
    let agent = util::release_agent(args.agent.as_deref())?;
    let tests = test_binaries(&args.tests)?;
    // `frames-0123abcd` (a built binary) -> `frames`
    let names: Vec<String> = args
        .tests
        .iter()
        .map(|t| {
            let file = Path::new(t).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
            file.rsplit_once('-').map(|(n, _)| n.to_string()).filter(|_| t.contains('/')).unwrap_or(file)
        })
        .collect();
    test_servers(&names)?;
    let has_modes = agent_has_modes(&agent);
    if !has_modes {
        println!(
            "    this agent has no `[probe] mode` (only the syscall probe): `syscall` and `auto` \
             run that probe, `socket` is reported as not built yet"
        );
    }
    let (accel, why) = boot::Accel::detect();
    println!("    accelerator: {} ({why})", accel.label());

    let plan = Plan { has_modes, agent: &agent, tests: &tests, test_args: &args.args, accel };
    let doc = util::workspace_root().join("docs/kernel-support.md");
    let json = util::workspace_root().join(report::JSON_DOC);
    let mut rows = Vec::new();
    for k in &kernels {
        let target = match *k {
            "6.1" => Some(kernel::fetch(kernel::Series::V6_1, &cache, &mut apt)?),
            "6.12" => Some(kernel::fetch(kernel::Series::V6_12, &cache, &mut apt)?),
            _ => None,
        };
        let initramfs = match &target {
            Some(t) => Some(boot::initramfs(t)?),
            None => None,
        };
        // Probes (chosen modes) whose tests all passed on this kernel in this invocation: an
        // `auto` run that picks one of them loads it and records its choice and verifier counts,
        // but does not run the same tests against the same probe again.
        let mut passed_probes: Vec<String> = Vec::new();
        for mode in &modes {
            if sys::interrupted() {
                bail!("interrupted");
            }
            let mut row = Row::new(k, mode, &names);
            if let Some(t) = &target {
                row.package = format!("{} {}", t.package, t.package_version);
            } else {
                row.package = "host (no VM)".into();
            }
            if *mode == "socket" && !has_modes {
                row.outcome = Outcome::NotBuilt;
                rows.push(row);
                continue;
            }
            let out = cache.join("runs").join(format!("{k}-{mode}"));
            let _ = std::fs::remove_dir_all(&out);
            std::fs::create_dir_all(&out)?;
            let on_host = target.is_none();
            let reuse = if *mode == "auto" { passed_probes.join(" ") } else { String::new() };
            write_guest_script(&plan, &out, mode, on_host, &reuse)?;
            step(&format!("kernel {k}, mode {mode}"));
            let ran = match (&target, &initramfs) {
                (Some(t), Some(i)) => boot::boot(&boot::Boot {
                    kernel: t,
                    initramfs: i,
                    out: &out,
                    accel,
                    memory_mib: args.memory_mib,
                    timeout: Duration::from_secs(args.timeout_secs),
                }),
                _ => run_on_host(&out, Duration::from_secs(args.timeout_secs)),
            };
            row.accel = if on_host { "none".into() } else { accel.label().into() };
            match ran {
                Ok(took) => {
                    row.seconds = took.as_secs();
                    report::read_results(&mut row, &out, mode)?;
                }
                Err(err) => row.outcome = Outcome::Error(format!("{err:#}")),
            }
            if !row.outcome.is_failure() && row.failed == 0 && row.shared_with.is_empty() && !row.chosen.is_empty() {
                passed_probes.push(row.chosen.clone());
            }
            println!("    {}", row.summary());
            // Each row lands in the doc as soon as it is known: a long matrix cut short keeps
            // what it measured.
            if !args.no_doc {
                report::update(&cache, &doc, &json, std::slice::from_ref(&row))?;
            }
            rows.push(row);
        }
    }

    step("results");
    for r in &rows {
        println!("    {}", r.summary());
    }
    if !args.no_doc {
        report::update(&cache, &doc, &json, &rows)?;
        println!("    table updated: {} and {}", doc.display(), json.display());
    }
    let failed: Vec<String> =
        rows.iter().filter(|r| r.outcome.is_failure()).map(|r| format!("{} {}", r.kernel, r.mode)).collect();
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("failed: {}", failed.join(", "))
    }
}

/// `cargo test --release -p wsguard-integration --no-run`, and the executable of each name.
fn test_binaries(names: &[String]) -> Result<Vec<PathBuf>> {
    if !names.is_empty() && names.iter().all(|n| Path::new(n).is_file()) {
        return Ok(names.iter().map(PathBuf::from).collect());
    }
    let mut c = util::cargo();
    c.args(["test", "--release", "-p", "wsguard-integration", "--no-run", "--message-format=json"]);
    for n in names {
        c.args(["--test", n]);
    }
    println!("    $ {}", util::display(&c));
    let out = c.stderr(std::process::Stdio::inherit()).output().context("cannot run cargo")?;
    if !out.status.success() {
        bail!("building the integration tests failed");
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if v["reason"] != "compiler-artifact" {
            continue;
        }
        let name = v["target"]["name"].as_str().unwrap_or_default();
        if let (true, Some(exe)) = (names.iter().any(|n| n == name), v["executable"].as_str()) {
            found.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    names
        .iter()
        .map(|n| {
            found
                .iter()
                .find(|(f, _)| f == n)
                .map(|(_, p)| p.clone())
                .with_context(|| format!("no integration test binary `{n}`"))
        })
        .collect()
}

/// The guest sees the checkout read-only, so the compiled test servers the harness would build
/// on first use (tests/src/lib.rs: `Server::gorilla` for `frames`, `Server::uring` for
/// `servers`; same commands, same output paths) are built here, on the host. In the guest they
/// run against the host's libraries (the io_uring server links the host's liburing, seen over
/// 9p); the kernel under test is what executes their io_uring calls.
fn test_servers(names: &[String]) -> Result<()> {
    let root = util::workspace_root();
    let out = root.join("target/test-servers");
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let stale = |bin: &Path, src: &Path| mtime(bin).is_none() || mtime(bin) < mtime(src);
    if names.iter().any(|t| t == "frames") {
        let src = root.join("tests/servers/gorilla_echo");
        if stale(&out.join("gorilla_echo"), &src.join("main.go")) {
            std::fs::create_dir_all(&out)?;
            let mut c = util::cmd("go", ["build", "-o"]);
            c.arg(out.join("gorilla_echo"))
                .arg(".")
                .current_dir(&src)
                .env("GO111MODULE", "off")
                .env("GOPATH", "/usr/share/gocode")
                .env("GOCACHE", out.join("gocache"));
            util::run(&mut c).context("go build of the gorilla test server (cargo xtask setup installs Go)")?;
        }
    }
    if names.iter().any(|t| t == "servers") {
        let src = root.join("tests/servers/uring_echo.c");
        if stale(&out.join("uring_echo"), &src) {
            std::fs::create_dir_all(&out)?;
            let mut c = util::cmd("cc", ["-O2", "-Wall", "-o"]);
            c.arg(out.join("uring_echo")).arg(&src).arg("-luring");
            util::run(&mut c).context("cc of the io_uring test server (needs gcc and liburing-dev: cargo xtask setup)")?;
        }
    }
    Ok(())
}

/// Does this agent know `[probe] mode`? (`config check` rejects unknown keys.)
fn agent_has_modes(agent: &Path) -> bool {
    let cfg = std::env::temp_dir().join(format!("wsguard-vm-modecheck-{}.toml", std::process::id()));
    let known = std::fs::write(&cfg, "[probe]\nmode = \"syscall\"\n").is_ok()
        && util::succeeds(util::cmd(
            agent.to_str().unwrap_or_default(),
            ["config".as_ref(), "check".as_ref(), "-c".as_ref(), cfg.as_os_str()],
        ));
    let _ = std::fs::remove_file(&cfg);
    known
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// What every run of one `vm-test` invocation shares.
struct Plan<'a> {
    has_modes: bool,
    agent: &'a Path,
    tests: &'a [PathBuf],
    test_args: &'a [String],
    accel: boot::Accel,
}

fn write_guest_script(plan: &Plan, out: &Path, mode: &str, on_host: bool, reuse: &str) -> Result<()> {
    let Plan { has_modes, agent, tests, test_args, accel } = *plan;
    let mut vars: Vec<(String, String)> = crate::test::test_env().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    vars.retain(|(k, _)| k != "WSGUARD_BIN");
    let tests: Vec<String> = tests.iter().map(|t| t.to_string_lossy().into_owned()).collect();
    let port = 19400 + (std::process::id() % 150) as u16;
    vars.extend([
        ("WSGUARD_BIN".to_string(), agent.to_string_lossy().into_owned()),
        ("WSGUARD_TEST_PROBE_MODE".into(), mode.into()),
        ("VM_OUT".into(), out.to_string_lossy().into_owned()),
        ("VM_MODE".into(), mode.into()),
        ("VM_MODE_KEY".into(), if has_modes { mode.into() } else { String::new() }),
        ("VM_TESTS".into(), tests.join(" ")),
        ("VM_TEST_ARGS".into(), test_args.join(" ")),
        ("VM_REUSE_PROBES".into(), reuse.into()),
        ("VM_API_PORT".into(), port.to_string()),
        ("VM_LOAD_WAIT".into(), if on_host { "60" } else { "240" }.into()),
        ("VM_ON_HOST".into(), if on_host { "1" } else { "" }.into()),
        // Emulated guests are several times slower: the harness stretches its waits.
        ("WSGUARD_TEST_TIME_SCALE".into(), if on_host || accel == boot::Accel::Kvm { "1" } else { "6" }.into()),
    ]);
    // The host's PATH, led by the interpreters test_env() chose (the harness runs `python3`).
    let mut path: Vec<String> = ["WSGUARD_TEST_PYTHON", "WSGUARD_TEST_NODE"]
        .iter()
        .filter_map(|k| vars.iter().find(|(n, _)| n == k))
        .filter_map(|(_, v)| Path::new(v).parent().map(|p| p.to_string_lossy().into_owned()))
        .collect();
    path.push(std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into()));
    vars.push(("VM_PATH".into(), path.join(":")));
    if let Ok(ci) = std::env::var("CI") {
        vars.push(("CI".into(), ci));
    }
    let mut script = String::from("#!/bin/sh\n");
    for (k, v) in &vars {
        script.push_str(&format!("export {k}={}\n", shell_quote(v)));
    }
    script.push_str(GUEST_BODY);
    std::fs::write(out.join("guest.sh"), script)?;
    Ok(())
}

/// `--kernel host`: the same script, on this machine, under the same hard timeout.
fn run_on_host(out: &Path, timeout: Duration) -> Result<Duration> {
    let t0 = std::time::Instant::now();
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new("sh")
        .arg(out.join("guest.sh"))
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(out.join("console.log"))?)
        .stderr(std::process::Stdio::inherit())
        .spawn()?;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > timeout || sys::interrupted() {
            sys::terminate(-(child.id() as i32));
            let _ = child.wait();
            bail!("the host run did not finish within {}s", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
