//! `cargo xtask test`: unprivileged tests, then (as root) the privileged integration tests.

use crate::sys;
use crate::util::{self, cmd, output, step};
use anyhow::{bail, Result};

const INTEGRATION_PKG: &str = "wsguard-integration";

/// The whole privileged suite runs first with the agent's default mode, `auto` (the socket mode
/// where the kernel has its hooks, as on CI's kernel; docs/kernel-support.md). These files then
/// run a second time with the probe forced into the fallback, the syscall mode
/// (`WSGUARD_TEST_PROBE_MODE=syscall`): the ones whose numbers come from the probe (frames,
/// lifecycle, hostile input, real servers, restart with a pinned probe, connections during the
/// first attach). The rest (alerts, API, deployment, remediation, ...) does not depend on the
/// probe's mode, and running everything twice would take .ci/run past its time budget.
const SECOND_MODE: &str = "syscall";
const SECOND_MODE_SUITE: [&str; 6] = ["frames", "lifecycle", "hostile", "servers", "restart", "startup"];

#[derive(clap::Args)]
pub struct TestArgs {
    /// Run only the unprivileged tests, even as root.
    #[arg(long)]
    unprivileged_only: bool,
    /// Seconds each fuzz target runs after the unprivileged tests (0: no fuzzing).
    #[arg(long, default_value_t = 15)]
    fuzz_seconds: u64,
    /// Extra arguments passed to the test binaries (after `--`), e.g. a test name filter or
    /// `--nocapture`.
    #[arg(last = true)]
    args: Vec<String>,
}

pub fn run(args: &TestArgs) -> Result<()> {
    let mut failures = Vec::new();
    let mut skipped = false;

    // Formatting, clippy -D warnings and the one-way module imports (xtask/src/lint.rs).
    if let Err(err) = crate::lint::run(&crate::lint::LintArgs {}) {
        println!("    FAILED: {err:#}");
        failures.push("lint");
    }

    // Tier 1: no root needed. Every workspace package except the privileged integration tests
    // (which have their own, release-mode, single-threaded run below).
    step("unprivileged tests: cargo test --workspace (all but wsguard-integration)");
    let mut c = util::cargo();
    c.args(["test", "--no-fail-fast", "--workspace", "--exclude", INTEGRATION_PKG]);
    if !args.args.is_empty() {
        c.arg("--").args(&args.args);
    }
    if let Err(err) = util::run(&mut c) {
        println!("    FAILED: {err:#}");
        failures.push("unprivileged tests");
    }

    // A short, bounded fuzz run of every target (stable compiler; see xtask/src/fuzz.rs).
    if args.fuzz_seconds > 0 {
        let fuzz = crate::fuzz::FuzzArgs { seconds: args.fuzz_seconds, targets: Vec::new() };
        if let Err(err) = crate::fuzz::run(&fuzz) {
            println!("    FAILED: {err:#}");
            failures.push("fuzzing");
        }
    }

    // Tier 2: load the real probe against real servers; needs root.
    if args.unprivileged_only {
        step("privileged integration tests: skipped (--unprivileged-only)");
        skipped = true;
    } else if !sys::is_root() {
        step("privileged integration tests: SKIPPED (not root)");
        skipped = true;
        if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0") {
            // Under CI a run that could not test must not be reported as passed.
            failures.push("privileged integration tests (not root under CI=true)");
        }
        println!(
            "    They load eBPF programs, mount tracefs/bpffs and attach tracepoints, which needs \
             root (or CAP_BPF+CAP_PERFMON+CAP_SYS_ADMIN).\n    Run `sudo -E cargo xtask test` \
             (after `cargo xtask setup`) to include them."
        );
    } else {
        step("privileged integration tests: release build of the agent");
        // The integration tests drive the real `wsguard` binary; build it first so they never
        // run against a stale one.
        let built = util::run(util::cargo().args(["build", "--release", "-p", "wsguard"]));
        match built {
            Err(err) => {
                println!("    FAILED: {err:#}");
                failures.push("release build of wsguard");
            }
            Ok(()) => {
                step("privileged integration tests, probe mode auto (socket where the kernel has its hooks): cargo test -p wsguard-integration --release -- --test-threads=1");
                let mut c = util::cargo();
                c.args(["test", "--no-fail-fast", "-p", INTEGRATION_PKG, "--release"]);
                for (k, v) in test_env() {
                    c.env(k, v);
                }
                c.args(["--", "--test-threads=1"]).args(&args.args);
                if let Err(err) = util::run(&mut c) {
                    println!("    FAILED: {err:#}");
                    failures.push("privileged integration tests");
                }
                if has_probe_mode_key() {
                    step(&format!(
                        "privileged integration tests, probe forced to the {SECOND_MODE} mode: {}",
                        SECOND_MODE_SUITE.join(", ")
                    ));
                    let mut c = util::cargo();
                    c.args(["test", "--no-fail-fast", "-p", INTEGRATION_PKG, "--release"]);
                    for t in SECOND_MODE_SUITE {
                        c.args(["--test", t]);
                    }
                    for (k, v) in test_env() {
                        c.env(k, v);
                    }
                    c.env("WSGUARD_TEST_PROBE_MODE", SECOND_MODE);
                    c.args(["--", "--test-threads=1"]).args(&args.args);
                    if let Err(err) = util::run(&mut c) {
                        println!("    FAILED: {err:#}");
                        failures.push("privileged integration tests (second probe mode)");
                    }
                } else {
                    step("privileged integration tests, second probe mode: not run (this agent has no [probe] mode key)");
                }
            }
        }
    }

    if failures.is_empty() && skipped {
        step("unprivileged tests passed; privileged integration tests were NOT run");
        Ok(())
    } else if failures.is_empty() {
        step("all tests passed (unprivileged and privileged)");
        Ok(())
    } else {
        bail!("failed: {}", failures.join(", "))
    }
}

/// The release agent accepts `[probe] mode` (`wsguard config check` of a config that sets it).
fn has_probe_mode_key() -> bool {
    let dir = std::env::temp_dir().join(format!("wsguard-modecheck-{}", std::process::id()));
    let cfg = dir.join("mode.toml");
    let ok = std::fs::create_dir_all(&dir).is_ok()
        && std::fs::write(&cfg, "[probe]\nmode = \"syscall\"\n").is_ok()
        && std::process::Command::new(util::target_dir().join("release/wsguard"))
            .args(["config", "check", "--config"])
            .arg(&cfg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    let _ = std::fs::remove_dir_all(&dir);
    ok
}

/// Environment handed to the integration tests so they find the same tools setup installed.
/// Existing values win, so a developer can point the tests elsewhere.
pub(crate) fn test_env() -> Vec<(&'static str, String)> {
    let root = util::workspace_root();
    let mut env = vec![
        ("WSGUARD_BIN", util::target_dir().join("release/wsguard").to_string_lossy().into_owned()),
        ("WSGUARD_TEST_SERVERS", root.join("tests/servers").to_string_lossy().into_owned()),
    ];
    // The interpreter that has `websockets` installed (pyenv shims resolve to the real one).
    if let Some(py) = output(&mut cmd("python3", ["-c", "import sys; print(sys.executable)"])) {
        env.push(("WSGUARD_TEST_PYTHON", py));
    }
    if let Some(node) = util::which("node") {
        env.push(("WSGUARD_TEST_NODE", node.to_string_lossy().into_owned()));
    }
    env.retain(|(k, _)| std::env::var_os(k).is_none());
    env
}
