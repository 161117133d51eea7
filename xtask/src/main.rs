//! Developer tasks for wsguard: `cargo xtask <setup|test|lint|demo|bench|install|deb|fuzz|soak|vm-test>`.
//!
//! Each subcommand lives in its own module; this file only parses the command line.

mod bench;
mod deb;
mod demo;
mod fuzz;
mod install;
mod lint;
mod package_check;
mod package_upgrade;
mod proc;
mod setup;
mod soak;
mod sys;
mod test;
mod util;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "wsguard developer tasks (run as `cargo xtask ...`)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the eBPF toolchain and the test tools (Debian/Ubuntu, idempotent).
    Setup(setup::SetupArgs),
    /// Run the unprivileged tests, then (as root) the privileged integration tests.
    Test(test::TestArgs),
    /// Formatting, clippy (warnings are errors) and the one-way module imports (first step of `test`).
    Lint(lint::LintArgs),
    /// Build the release agent and run it against a real WebSocket server under load.
    Demo(demo::DemoArgs),
    /// Measure what the agent costs a real server (root; not part of `test`).
    Bench(bench::BenchArgs),
    /// Install the release binary, config (kept if present), systemd unit and bash completion.
    Install(install::InstallArgs),
    /// Build a Debian package (target/debian/wsguard_VERSION_ARCH.deb) with dpkg-deb.
    Deb(deb::DebArgs),
    /// Install the .deb into a debootstrap root and boot it with systemd-nspawn, build and run
    /// the container image with podman (root; slow; not run by CI).
    PackageCheck(package_check::PackageCheckArgs),
    /// Build the fuzz targets (stable compiler) and run each for a bounded time.
    Fuzz(fuzz::FuzzArgs),
    /// Long soak test (30 min default, root, not in CI): churn + traffic; RSS flat, counts exact.
    Soak(soak::SoakArgs),
    /// The privileged tests on Debian's 6.1 and 6.12 kernels in QEMU and on the host kernel,
    /// per probe mode (root); rewrites the table in docs/kernel-support.md.
    VmTest(vm::VmTestArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup(args) => setup::run(&args),
        Command::Test(args) => test::run(&args),
        Command::Lint(args) => lint::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Install(args) => install::run(&args),
        Command::Deb(args) => deb::run(&args),
        Command::PackageCheck(args) => package_check::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
        Command::Soak(args) => soak::run(&args),
        Command::VmTest(args) => vm::run(&args),
    };
    if let Err(err) = result {
        eprintln!("xtask: error: {err:#}");
        std::process::exit(1);
    }
}
