//! Developer tasks for wsguard: `cargo xtask <setup|test|demo|bench|fuzz|soak>`.
//!
//! Each subcommand lives in its own module; this file only parses the command line.

mod bench;
mod demo;
mod fuzz;
mod proc;
mod setup;
mod soak;
mod sys;
mod test;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "xtask",
    about = "wsguard developer tasks (run as `cargo xtask ...`)"
)]
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
    /// Build the release agent and run it against a real WebSocket server under load.
    Demo(demo::DemoArgs),
    /// Measure what the agent costs a real server (root; not part of `test`).
    Bench(bench::BenchArgs),
    /// Build the fuzz targets (stable compiler) and run each for a bounded time.
    Fuzz(fuzz::FuzzArgs),
    /// Long soak test (30 min default, root, not in CI): churn + traffic; RSS flat, counts exact.
    Soak(soak::SoakArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup(args) => setup::run(&args),
        Command::Test(args) => test::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
        Command::Soak(args) => soak::run(&args),
    };
    if let Err(err) = result {
        eprintln!("xtask: error: {err:#}");
        std::process::exit(1);
    }
}
