//! Small helpers shared by the subcommands: locating the workspace, running commands loudly.

use anyhow::{bail, Context, Result};
use std::borrow::BorrowMut;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The workspace root (the parent of `xtask/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives inside the workspace").to_path_buf()
}

/// Cargo's target directory, honouring `CARGO_TARGET_DIR`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// The cargo that runs us (so that `cargo +toolchain xtask` stays on that toolchain).
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root());
    cmd
}

/// The agent binary to package or install: `given`, or a fresh `cargo build --release -p wsguard`.
pub fn release_agent(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(b) = given {
        return Ok(b.to_path_buf());
    }
    step("Building the release binary");
    run(cargo().args(["build", "--release", "-p", "wsguard"]))?;
    Ok(target_dir().join("release/wsguard"))
}

/// Print a step header.
pub fn step(msg: &str) {
    println!("\n==> {msg}");
}

/// Print a note that a step was skipped because it is already satisfied.
pub fn skip(msg: &str) {
    println!("    ok: {msg} (already satisfied, skipping)");
}

/// Render a command the way a shell user would type it.
pub fn display(cmd: &Command) -> String {
    let mut s = String::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            s.push_str(&format!("{}={} ", k.to_string_lossy(), v.to_string_lossy()));
        }
    }
    s.push_str(&cmd.get_program().to_string_lossy());
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)) {
            s.push_str(&format!(" '{}'", a.replace('\'', "'\\''")));
        } else {
            s.push(' ');
            s.push_str(&a);
        }
    }
    s
}

/// Run a command with inherited stdio, echoing it first; fail if it exits non-zero.
pub fn run(mut cmd: impl BorrowMut<Command>) -> Result<()> {
    let cmd = cmd.borrow_mut();
    println!("    $ {}", display(cmd));
    let status = cmd.status().with_context(|| format!("cannot start `{}`", cmd.get_program().to_string_lossy()))?;
    if !status.success() {
        bail!("`{}` failed ({status})", display(cmd));
    }
    Ok(())
}

/// Run a command silently; true if it started and exited 0.
pub fn succeeds(mut cmd: impl BorrowMut<Command>) -> bool {
    cmd.borrow_mut()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Run a command and capture its stdout (trimmed); None if it cannot start or fails.
pub fn output(mut cmd: impl BorrowMut<Command>) -> Option<String> {
    let out = cmd.borrow_mut().stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Shorthand for `Command::new(program).args(args)`.
pub fn cmd<I, S>(program: &str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new(program);
    c.args(args);
    c
}

/// Find an executable on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| p.is_file())
}
