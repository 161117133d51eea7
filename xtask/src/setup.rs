//! `cargo xtask setup`: install everything wsguard needs to build and test, idempotently.
//!
//! Debian/Ubuntu only. Every step first checks whether it is already satisfied and skips if so.
//!
//! The eBPF crate is built with a nightly-capable rustc plus the `core` source (`-Z build-std`)
//! and linked with bpf-linker. Two ways to get that are supported (see README, "Toolchain"):
//! - `deb-web` (default here): Debian's `rustc-web` (a recent rustc with `rust-web-src`),
//!   linked into rustup as the custom toolchain `deb-web`, plus bpf-linker built against
//!   Debian's LLVM 22. Needs nothing but Debian's archive and crates.io.
//! - `nightly`: rustup's nightly with the `rust-src` component plus `cargo install bpf-linker`.
//!   Chosen with `WSGUARD_EBPF_TOOLCHAIN=nightly`.

use crate::sys;
use crate::util::{self, cmd, output, skip, step, succeeds, which};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

#[derive(clap::Args)]
pub struct SetupArgs {
    /// Only install the build toolchain, not the test tools (tshark, bpftrace, nginx,
    /// prometheus, node `ws`, python `websockets`, ...).
    #[arg(long)]
    no_test_deps: bool,
}

/// Debian packages that provide rustc >= 1.96 with the core source, and LLVM 22 for bpf-linker.
const TOOLCHAIN_PKGS: &[&str] = &["rustc-web", "cargo-web", "rust-web-src", "llvm-22-dev", "libpolly-22-dev"];
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const BPF_LINKER_VERSION: &str = "0.13.0";
const DEB_WEB: &str = "deb-web";

/// Debian packages used by the tests, benchmarks and the ecosystem tier.
const TEST_PKGS: &[&str] = &[
    "tshark",
    "bpftrace",
    "nginx",
    "prometheus",
    "prometheus-alertmanager",
    "iproute2",
    "bpftool",
    "procps",
    "jq",
    // systemd-analyze verify (tests/tests/deploy.rs); PID 1 need not be systemd.
    "systemd",
    // libFuzzer (C++) for the fuzz run in `cargo xtask test` (xtask/src/fuzz.rs).
    "g++",
    // The gorilla/websocket echo server (tests/servers/gorilla_echo) and the net/http SSE server
    // (tests/servers/sse_go), built offline by the tests with GO111MODULE=off GOPATH=/usr/share/gocode.
    "golang-go",
    "golang-github-gorilla-websocket-dev",
    // The io_uring echo server (tests/servers/uring_echo.c), built by the tests with cc.
    "liburing-dev",
];
/// Nice to have (benchmarks); a failure to install it is only a warning.
const OPTIONAL_PKGS: &[&str] = &["linux-perf"];

pub fn run(args: &SetupArgs) -> Result<()> {
    let root = util::workspace_root();
    step("checking the operating system");
    let os = os_release();
    let debian_like = os.to_ascii_lowercase().contains("debian") || os.to_ascii_lowercase().contains("ubuntu");
    if !debian_like || which("apt-get").is_none() || which("dpkg-query").is_none() {
        print_manual_instructions();
        bail!("`cargo xtask setup` only automates Debian/Ubuntu; install the tools listed above by hand");
    }
    println!("    {}", os.lines().find(|l| l.starts_with("PRETTY_NAME=")).unwrap_or("Debian-like"));

    let toolchain = ebpf_toolchain();
    println!("    eBPF toolchain: {toolchain} (WSGUARD_EBPF_TOOLCHAIN to change)");

    let mut apt = Apt::new();

    // 1. Build toolchain.
    if toolchain == DEB_WEB {
        step("eBPF toolchain packages (Debian rustc-web + LLVM 22)");
        apt.install(TOOLCHAIN_PKGS, true)?;
        step("bpf-linker");
        install_bpf_linker(Some(LLVM_PREFIX))?;
        step("rustup custom toolchain `deb-web` -> /usr");
        link_deb_web()?;
    } else {
        step(&format!("rustup toolchain `{toolchain}` with rust-src"));
        rustup_toolchain_with_src(&toolchain)?;
        step("bpf-linker");
        install_bpf_linker(None)?;
    }

    if args.no_test_deps {
        step("test dependencies: skipped (--no-test-deps)");
        return Ok(());
    }

    // 2. Debian test tools.
    step("test tools (Debian packages)");
    if !apt.installed("tshark") {
        // Keep the install non-interactive and do not make dumpcap setuid.
        apt.preseed("wireshark-common wireshark-common/install-setuid boolean false")?;
    }
    apt.install(TEST_PKGS, false)?;
    step("optional tools (linux-perf)");
    if let Err(err) = apt.install(OPTIONAL_PKGS, false) {
        println!("    warning: optional packages not installed: {err:#}");
    }

    // 3. Node `ws` for tests/servers/ws_echo.js.
    let servers = root.join("tests/servers");
    step("node `ws` in tests/servers (npm ci)");
    if which("node").is_none() || which("npm").is_none() {
        apt.install(&["nodejs", "npm"], false)?;
    }
    node_ws(&servers)?;

    // 4. Python `websockets` (+ aiosmtpd) for tests/servers/*.py.
    step("python packages from tests/servers/requirements.txt");
    python_packages(&servers.join("requirements.txt"), &mut apt)?;

    step("setup complete");
    Ok(())
}

/// Which toolchain aya-build will use for the eBPF crate; mirrors agent/build.rs.
pub fn ebpf_toolchain() -> String {
    if let Ok(t) = std::env::var("WSGUARD_EBPF_TOOLCHAIN") {
        if !t.is_empty() {
            return t;
        }
    }
    // On Debian/Ubuntu setup creates deb-web, so that is the default there even before it exists.
    DEB_WEB.to_string()
}

pub(crate) fn os_release() -> String {
    std::fs::read_to_string("/etc/os-release").or_else(|_| std::fs::read_to_string("/usr/lib/os-release")).unwrap_or_default()
}

fn print_manual_instructions() {
    eprintln!(
        "\
This system is not Debian/Ubuntu (no /etc/os-release saying so, or no apt-get).
Install these by hand instead:
  eBPF build toolchain:
    rustup toolchain install nightly --component rust-src
    cargo install bpf-linker            # needs LLVM matching bpf-linker's feature (see its README)
    export WSGUARD_EBPF_TOOLCHAIN=nightly
  test servers and tools:
    (cd tests/servers && npm ci)        # node >= 18, installs the pinned `ws`
    python3 -m pip install -r tests/servers/requirements.txt   # websockets, aiosmtpd, aiohttp
    tshark, bpftrace, nginx, prometheus, alertmanager, iproute2, procps, jq (distribution packages)
Then run `cargo xtask test` (as root for the privileged tests)."
    );
}

/// apt-get wrapper: installs only what is missing, runs `apt-get update` at most once.
pub(crate) struct Apt {
    updated: bool,
    sudo: bool,
}

impl Apt {
    pub(crate) fn new() -> Self {
        Apt { updated: false, sudo: !sys::is_root() }
    }

    pub(crate) fn installed(&self, pkg: &str) -> bool {
        output(cmd("dpkg-query", ["-W", "-f=${Status}", pkg])).is_some_and(|s| s.ends_with("install ok installed"))
    }

    pub(crate) fn command(&self, program: &str) -> Result<Command> {
        if self.sudo {
            if which("sudo").is_none() {
                bail!("installing packages needs root: run `cargo xtask setup` as root (or install sudo)");
            }
            let mut c = Command::new("sudo");
            c.args(["-E", program]);
            Ok(c)
        } else {
            Ok(Command::new(program))
        }
    }

    /// `apt-get update` again after a source was added.
    pub(crate) fn refresh(&mut self) -> Result<()> {
        self.updated = false;
        self.update()
    }

    /// `apt-get update`, at most once per run.
    pub(crate) fn update(&mut self) -> Result<()> {
        if !self.updated {
            let mut c = self.command("apt-get")?;
            c.args(["update", "-q"]);
            util::run(&mut c)?;
            self.updated = true;
        }
        Ok(())
    }

    fn preseed(&mut self, selection: &str) -> Result<()> {
        use std::io::Write;
        let mut c = self.command("debconf-set-selections")?;
        println!("    $ echo '{selection}' | debconf-set-selections");
        let mut child = c.stdin(std::process::Stdio::piped()).spawn().context("cannot run debconf-set-selections")?;
        child.stdin.take().unwrap().write_all(format!("{selection}\n").as_bytes())?;
        let status = child.wait()?;
        if !status.success() {
            bail!("debconf-set-selections failed ({status})");
        }
        Ok(())
    }

    /// Install the missing packages among `pkgs`. `recommends`: also install Recommends
    /// (kept for the toolchain, which is the measured recipe; test tools go without).
    pub(crate) fn install(&mut self, pkgs: &[&str], recommends: bool) -> Result<()> {
        let missing: Vec<&str> = pkgs.iter().copied().filter(|p| !self.installed(p)).collect();
        if missing.is_empty() {
            skip(&format!("installed: {}", pkgs.join(" ")));
            return Ok(());
        }
        println!("    missing: {}", missing.join(" "));
        self.update()?;
        let mut c = self.command("apt-get")?;
        c.env("DEBIAN_FRONTEND", "noninteractive").args([
            "install",
            "-y",
            "-q",
            "-o",
            "Dpkg::Options::=--force-confdef",
            "-o",
            "Dpkg::Options::=--force-confold",
            "-o",
            "Dpkg::Use-Pty=0",
        ]);
        if !recommends {
            c.arg("--no-install-recommends");
        }
        c.args(&missing);
        util::run(&mut c).with_context(|| {
            format!(
                "apt-get could not install {}; on releases without these packages use \
                 WSGUARD_EBPF_TOOLCHAIN=nightly (rustup nightly + rust-src) instead",
                missing.join(" ")
            )
        })
    }
}

fn install_bpf_linker(llvm_prefix: Option<&str>) -> Result<()> {
    if let Some(v) = output(cmd("bpf-linker", ["--version"])) {
        skip(&v);
        return Ok(());
    }
    let mut c = util::cargo();
    c.args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION]);
    if let Some(prefix) = llvm_prefix {
        c.env("LLVM_PREFIX", prefix).args(["--no-default-features", "--features", "llvm-22"]);
    }
    util::run(&mut c)?;
    if which("bpf-linker").is_none() {
        println!("    note: bpf-linker was installed into ~/.cargo/bin; make sure it is on PATH");
    }
    Ok(())
}

fn rustup_toolchains() -> Vec<String> {
    output(cmd("rustup", ["toolchain", "list"]))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn link_deb_web() -> Result<()> {
    if which("rustup").is_none() {
        bail!("rustup is required (the eBPF build drives the toolchain through `rustup run`)");
    }
    if !Path::new("/usr/lib/rustlib/src/rust/library/core").is_dir() {
        bail!("/usr/lib/rustlib/src/rust/library/core is missing: is rust-web-src installed?");
    }
    if rustup_toolchains().iter().any(|t| t == DEB_WEB) {
        let v = output(cmd("rustup", ["run", DEB_WEB, "rustc", "--version"])).unwrap_or_else(|| "?".into());
        skip(&format!("toolchain deb-web linked ({v})"));
        return Ok(());
    }
    util::run(&mut cmd("rustup", ["toolchain", "link", DEB_WEB, "/usr"]))
}

fn rustup_toolchain_with_src(toolchain: &str) -> Result<()> {
    if which("rustup").is_none() {
        bail!("rustup is required for WSGUARD_EBPF_TOOLCHAIN={toolchain}");
    }
    let has_src = output(cmd("rustup", ["component", "list", "--installed", "--toolchain", toolchain]))
        .is_some_and(|s| s.lines().any(|l| l.starts_with("rust-src")));
    if has_src {
        skip(&format!("{toolchain} with rust-src"));
        return Ok(());
    }
    if !rustup_toolchains().iter().any(|t| t.starts_with(toolchain)) {
        util::run(&mut cmd("rustup", ["toolchain", "install", toolchain, "--profile", "minimal"]))?;
    }
    util::run(&mut cmd("rustup", ["component", "add", "rust-src", "--toolchain", toolchain]))
}

fn node_ws(servers: &Path) -> Result<()> {
    let check = "process.exit(require('./node_modules/ws/package.json').version === \
                 require('./package.json').dependencies.ws ? 0 : 1)";
    if succeeds(cmd("node", ["-e", check]).current_dir(servers)) {
        let v = output(cmd("node", ["-p", "require('./node_modules/ws/package.json').version"]).current_dir(servers))
            .unwrap_or_default();
        skip(&format!("ws {v} in tests/servers/node_modules"));
        return Ok(());
    }
    util::run(cmd("npm", ["ci", "--no-audit", "--no-fund"]).current_dir(servers))
}

/// Pins from a requirements file: lines `name==version`.
fn pins(requirements: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(requirements).with_context(|| format!("cannot read {}", requirements.display()))?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once("=="))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect())
}

fn python_packages(requirements: &Path, apt: &mut Apt) -> Result<()> {
    let python = "python3";
    let exe = output(cmd(python, ["-c", "import sys; print(sys.executable)"])).context("python3 not found")?;
    println!("    python: {exe}");
    let pins = pins(requirements)?;
    let check = "import sys, importlib.metadata as m\n\
                 def v(n):\n    try: return m.version(n)\n    except Exception: return None\n\
                 sys.exit(0 if all(v(a.split('==')[0]) == a.split('==')[1] for a in sys.argv[1:]) else 1)";
    let specs: Vec<String> = pins.iter().map(|(n, v)| format!("{n}=={v}")).collect();
    if succeeds(cmd(python, ["-c", check]).args(&specs)) {
        skip(&format!("installed: {}", specs.join(" ")));
        return Ok(());
    }
    if !succeeds(&mut cmd(python, ["-m", "pip", "--version"])) {
        apt.install(&["python3-pip"], false)?;
    }
    let req = requirements.to_string_lossy().to_string();
    let pip = |extra: &[&str]| {
        let mut c = cmd(python, ["-m", "pip", "install", "-q", "--disable-pip-version-check", "--root-user-action=ignore"]);
        c.args(extra).args(["-r", &req]);
        c
    };
    if util::run(pip(&[])).is_err() {
        // Debian's own python3 refuses pip installs (PEP 668) unless told otherwise; the test
        // servers need these modules importable by the python3 on PATH, so override it.
        println!("    retrying with --break-system-packages (PEP 668 managed interpreter)");
        util::run(pip(&["--break-system-packages"]))?;
    }
    Ok(())
}
