//! `cargo xtask soak`: the long-running soak test (`tests/tests/soak.rs`, ignored by a plain
//! `cargo test` and not part of CI): steady connection churn and traffic against a real server
//! for `--minutes` (30 by default); at the end every count must be exact, the agent's RSS flat
//! and its log free of errors. Needs root, like the other privileged tests.

use anyhow::{bail, Result};

use crate::{
    sys,
    util::{self, step},
};

#[derive(clap::Args)]
pub struct SoakArgs {
    /// How long to run.
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,
    /// Short sessions (connect, up to 20 messages, close or reset) per second.
    #[arg(long, default_value_t = 40)]
    rate: u32,
    /// Skip `cargo build --release -p wsguard`.
    #[arg(long)]
    no_build: bool,
}

pub fn run(args: &SoakArgs) -> Result<()> {
    if !sys::is_root() {
        bail!("the soak test loads the probe and needs root: run `sudo -E cargo xtask soak`");
    }
    if args.minutes <= 0.0 || args.rate == 0 {
        bail!("--minutes and --rate must be positive");
    }
    if !args.no_build {
        step("soak: release build of the agent");
        util::run(util::cargo().args(["build", "--release", "-p", "wsguard"]))?;
    }
    step(&format!("soak: {} minutes at {} sessions/s", args.minutes, args.rate));
    let mut c = util::cargo();
    c.args(["test", "--release", "-p", "wsguard-integration", "--test", "soak"])
        .env("WSGUARD_SOAK_MINUTES", args.minutes.to_string())
        .env("WSGUARD_SOAK_RATE", args.rate.to_string());
    for (k, v) in crate::test::test_env() {
        c.env(k, v);
    }
    c.args(["--", "--ignored", "--nocapture", "--test-threads=1"]);
    util::run(&mut c)
}
