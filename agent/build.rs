//! Builds the eBPF crate (`agent-ebpf`) with aya-build and leaves the object in `OUT_DIR`, where
//! `probe::load` embeds it. The eBPF toolchain is selectable:
//!
//! * `WSGUARD_EBPF_TOOLCHAIN=<rustup toolchain>`; default `deb-web` when rustup knows it
//!   (Debian's `rustc-web` linked with `rustup toolchain link deb-web /usr`), else `nightly`
//!   (needs the `rust-src` component). Either way `bpf-linker` must be on PATH.
//! * `WSGUARD_SKIP_EBPF=1`, or a missing toolchain: a placeholder object is embedded so
//!   `cargo check`, clippy and the unprivileged tests still work; `wsguard run` then explains.
use std::{env, fs, path::PathBuf, process::Command};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=WSGUARD_EBPF_TOOLCHAIN");
    println!("cargo:rerun-if-env-changed=WSGUARD_SKIP_EBPF");
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let object = out.join("wsguard");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest.join("../agent-ebpf").canonicalize()?;
    // The probe also compiles agent-common's parser; aya-build only watches the eBPF crate.
    println!("cargo:rerun-if-changed={}", manifest.join("../agent-common/src").display());
    println!("cargo:rerun-if-changed={}", manifest.join("../agent-common/Cargo.toml").display());

    let toolchain = env::var("WSGUARD_EBPF_TOOLCHAIN").unwrap_or_else(|_| default_toolchain());
    if let Some(why) = skip_reason(&toolchain) {
        println!("cargo:warning=wsguard: building WITHOUT the eBPF probe: {why}");
        println!("cargo:rustc-cfg=wsguard_placeholder_probe");
        fs::write(&object, b"")?;
        fs::write(out.join("wsguard-sock"), b"")?;
        return Ok(());
    }
    // The Debian toolchain is a stable rustc: `-Z build-std=core` and the probe's
    // `core_intrinsics` need RUSTC_BOOTSTRAP. It only reaches the child cargo.
    // SAFETY: build scripts are single-threaded at this point.
    unsafe {
        env::set_var("RUSTC_BOOTSTRAP", "1");
        // aya-build turns every line of the nested cargo's stderr into a warning.
        env::set_var("CARGO_TERM_QUIET", "true");
    }
    // aya-build runs `cargo build --package wsguard-ebpf` in the current directory; the eBPF
    // crate is its own workspace (with its own lock file), so run it from there.
    env::set_current_dir(&ebpf_dir)?;
    let package =
        aya_build::Package { name: "wsguard-ebpf", root_dir: ebpf_dir.to_str().expect("utf-8 path"), ..Default::default() };
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(&toolchain))
}

fn default_toolchain() -> String {
    let list = Command::new("rustup").args(["toolchain", "list"]).output();
    match list {
        Ok(o) if String::from_utf8_lossy(&o.stdout).lines().any(|l| l.starts_with("deb-web")) => "deb-web".into(),
        _ => "nightly".into(),
    }
}

fn skip_reason(toolchain: &str) -> Option<String> {
    if matches!(env::var("WSGUARD_SKIP_EBPF").as_deref(), Ok("1") | Ok("true")) {
        return Some("WSGUARD_SKIP_EBPF is set".into());
    }
    if Command::new("bpf-linker").arg("--version").output().is_err() {
        return Some("bpf-linker not found on PATH (run `cargo xtask setup`)".into());
    }
    let ok = Command::new("rustup")
        .args(["run", toolchain, "rustc", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        return Some(format!(
            "rust toolchain `{toolchain}` not available (set WSGUARD_EBPF_TOOLCHAIN, or run `cargo xtask setup`)"
        ));
    }
    None
}
