//! `cargo xtask fuzz`: build the cargo-fuzz targets in `fuzz/` and run each for a bounded time.
//!
//! Built the way `cargo fuzz build --sanitizer none` builds them (libFuzzer's SanitizerCoverage
//! instrumentation, `--cfg fuzzing`, debug assertions and overflow checks), but with the stable
//! compiler and no `cargo-fuzz` install, so CI on a fresh machine needs nothing but a C++
//! compiler for libFuzzer itself. No AddressSanitizer: that needs nightly (`-Zsanitizer`), and
//! the code under test is safe Rust. With nightly and cargo-fuzz, `fuzz/README.md` applies.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::util::{self, cmd, output, step};

/// Every target in `fuzz/Cargo.toml`.
pub const TARGETS: [&str; 4] = ["frame_split", "http_scan", "config_parse", "api_inputs"];

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Seconds to fuzz each target.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Targets to run (default: all).
    pub targets: Vec<String>,
}

const RUSTFLAGS: &[&str] = &[
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "--cfg",
    "fuzzing",
    "-Cdebug-assertions",
    "-Coverflow-checks",
];

pub fn run(args: &FuzzArgs) -> Result<()> {
    let targets: Vec<&str> =
        if args.targets.is_empty() { TARGETS.to_vec() } else { args.targets.iter().map(String::as_str).collect() };
    if let Some(t) = targets.iter().find(|t| !TARGETS.contains(t)) {
        bail!("unknown fuzz target {t}; known: {}", TARGETS.join(", "));
    }
    let dir = util::workspace_root().join("fuzz");
    let host = host_triple()?;
    step(&format!("fuzz: build {} (stable, coverage-instrumented, release)", targets.join(", ")));
    let mut build = util::cargo();
    build.current_dir(&dir).env("RUSTFLAGS", RUSTFLAGS.join(" ")).args(["build", "--release", "--target", &host]);
    for t in &targets {
        build.args(["--bin", t]);
    }
    util::run(&mut build)?;

    let mut failed = Vec::new();
    for t in &targets {
        step(&format!("fuzz: {t} for {}s", args.seconds));
        // libFuzzer adds new inputs to the first corpus directory: a scratch one, so the
        // repository keeps only its seeds (read from the second).
        let scratch = std::env::temp_dir().join(format!("wsguard-fuzz-{t}-{}", std::process::id()));
        std::fs::create_dir_all(&scratch)?;
        let artifacts: PathBuf = dir.join("artifacts").join(t);
        std::fs::create_dir_all(&artifacts)?;
        let mut c = std::process::Command::new(dir.join("target").join(&host).join("release").join(t));
        // `api_inputs` keeps its token and alert state under $TMPDIR: inside the scratch dir.
        let tmp = scratch.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        c.env("TMPDIR", &tmp)
            .arg(format!("-max_total_time={}", args.seconds))
            .arg("-max_len=4096")
            .arg("-timeout=10")
            .arg("-rss_limit_mb=2048")
            .arg("-print_final_stats=1")
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg(scratch.join("corpus"))
            .arg(dir.join("corpus").join(t));
        std::fs::create_dir_all(scratch.join("corpus"))?;
        let r = util::run(&mut c);
        let _ = std::fs::remove_dir_all(&scratch);
        if let Err(e) = r {
            println!("    FAILED: {e:#}\n    the input that failed is in {}", artifacts.display());
            failed.push(*t);
        }
    }
    if !failed.is_empty() {
        bail!("fuzz targets failed: {}", failed.join(", "));
    }
    Ok(())
}

fn host_triple() -> Result<String> {
    let v = output(&mut cmd("rustc", ["-vV"])).context("running rustc -vV")?;
    v.lines().find_map(|l| l.strip_prefix("host: ")).map(str::to_owned).context("no host in rustc -vV")
}
