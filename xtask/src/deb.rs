//! `cargo xtask deb`: a Debian package of the agent, built with `dpkg-deb` from the same layout
//! `cargo xtask install` writes (`/usr/bin/wsguard`, the unit in `/usr/lib/systemd/system`, the
//! config as a conffile, so dpkg keeps an operator's edits on upgrade). dpkg-deb is on every
//! Debian system; cargo-deb would be one more tool to install for the same result.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::{
    install::{install, Layout},
    util::{self, step},
};

#[derive(Args, Debug, Clone)]
pub struct DebArgs {
    /// Package this binary instead of building `target/release/wsguard`.
    #[arg(long)]
    pub bin: Option<PathBuf>,
    /// Directory for the .deb (default `target/debian`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Package version (default the workspace's, e.g. 0.1.0): a later one to try dpkg's upgrade
    /// path (package-check builds the next patch version this way).
    #[arg(long)]
    pub version: Option<String>,
}

pub fn run(args: &DebArgs) -> Result<()> {
    let bin = util::release_agent(args.bin.as_deref())?;
    let out = args.out.clone().unwrap_or_else(|| util::target_dir().join("debian"));
    let deb = match &args.version {
        Some(v) => build_version(&bin, &out, v)?,
        None => build(&bin, &out)?,
    };
    println!("\n{}\n  install: apt install {}   (then: systemctl enable --now wsguard)", deb.display(), deb.display());
    Ok(())
}

/// Maintainer scripts. Removal stops the agent, which detaches the probe, and then detaches
/// whatever is still pinned (a probe kept by an earlier `--keep-probe` stop). An upgrade keeps
/// counting: the old agent gets SIGUSR2 (stop, leave the probe pinned), and the new one, started
/// by postinst, resumes it. Without systemd (a chroot, a container build) only the detach runs.
const POSTINST: &str = r#"#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
    if [ "$1" = configure ] && [ -e /run/wsguard.upgrade ]; then
        rm -f /run/wsguard.upgrade
        systemctl start wsguard || true
    fi
fi
"#;
const PRERM: &str = r#"#!/bin/sh
set -e
systemd=; [ -d /run/systemd/system ] && systemd=1
if [ "$1" = upgrade ] && [ -n "$systemd" ] && systemctl is-active --quiet wsguard; then
    # Stop, keeping the probe pinned: the new version resumes its counts.
    systemctl kill --kill-who=main --signal=SIGUSR2 wsguard || true
    i=0; while systemctl is-active --quiet wsguard && [ $i -lt 30 ]; do sleep 1; i=$((i+1)); done
    systemctl stop wsguard || true
    touch /run/wsguard.upgrade
fi
if [ "$1" = remove ] || [ "$1" = deconfigure ]; then
    if [ -n "$systemd" ]; then systemctl stop wsguard || true; fi
    /usr/bin/wsguard detach -c /etc/wsguard/wsguard.toml || /usr/bin/wsguard detach --pin /sys/fs/bpf/wsguard || true
fi
"#;
/// Purge also removes the agent's state (history, alert state, API token, client-key secret,
/// pre-existing connections) and whatever is left in /etc/wsguard; `dpkg -r` keeps both.
const POSTRM: &str = r#"#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
if [ "$1" = purge ]; then
    rm -rf /var/lib/wsguard /etc/wsguard /run/wsguard.upgrade
fi
"#;

/// Stage and build the package (the workspace's version) into `out`; returns the .deb path.
pub fn build(bin: &Path, out: &Path) -> Result<PathBuf> {
    build_version(bin, out, env!("CARGO_PKG_VERSION"))
}

/// The next patch version of the workspace's: `0.1.0` → `0.1.1`.
pub fn next_patch_version() -> String {
    let v = env!("CARGO_PKG_VERSION");
    let (head, patch) = v.rsplit_once('.').expect("a x.y.z version");
    format!("{head}.{}", patch.parse::<u64>().expect("a numeric patch version") + 1)
}

/// Like [`build`], labelled `version` (the binary inside is the same).
pub fn build_version(bin: &Path, out: &Path, version: &str) -> Result<PathBuf> {
    // Debian's version syntax, without an epoch: starts with a digit; letters, digits, . + ~ -.
    if !version.starts_with(|c: char| c.is_ascii_digit())
        || !version.chars().all(|c| c.is_ascii_alphanumeric() || ".+~-".contains(c))
    {
        bail!("--version {version:?}: not a Debian version (a digit first, then letters, digits, . + ~ -)");
    }
    let arch = util::output(util::cmd("dpkg", ["--print-architecture"])).context("dpkg --print-architecture")?;
    let name = format!("wsguard_{version}_{arch}");
    let stage = out.join(&name);
    if stage.exists() {
        fs::remove_dir_all(&stage)?;
    }
    let layout = Layout { prefix: "/usr".into(), unit_dir: "/usr/lib/systemd/system".into() };
    install(bin, &stage, &layout, &util::workspace_root().join("config"))?;

    step("Package metadata");
    let debian = stage.join("DEBIAN");
    fs::create_dir_all(&debian)?;
    let size_kib = dir_size(&stage)? / 1024;
    let control = format!(
        "Package: wsguard\nVersion: {version}\nArchitecture: {arch}\nMaintainer: wsguard developers <wsguard@example.invalid>\n\
         Installed-Size: {size_kib}\nDepends: libc6\nSection: net\nPriority: optional\n\
         Description: eBPF agent that watches unmodified WebSocket servers\n \
         Counts WebSocket connections, frames, messages and latencies per process from the\n \
         kernel, with health checks, forecasts, alerts, a Prometheus endpoint and a terminal\n \
         dashboard (wsguard top). Needs Linux >= 5.17.\n"
    );
    fs::write(debian.join("control"), control)?;
    fs::write(debian.join("conffiles"), "/etc/wsguard/wsguard.toml\n")?;
    for (file, text) in [("postinst", POSTINST), ("prerm", PRERM), ("postrm", POSTRM)] {
        fs::write(debian.join(file), text)?;
        fs::set_permissions(debian.join(file), fs::Permissions::from_mode(0o755))?;
    }
    let deb = out.join(format!("{name}.deb"));
    util::run(util::cmd("dpkg-deb", ["--root-owner-group", "--build"]).arg(&stage).arg(&deb))?;
    fs::remove_dir_all(&stage)?;
    if !deb.is_file() {
        bail!("dpkg-deb did not write {}", deb.display());
    }
    Ok(deb)
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for e in fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        total += if m.is_dir() { dir_size(&e.path())? } else { m.len() };
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dpkg_deb(args: &[&str], deb: &Path) -> String {
        util::output(util::cmd("dpkg-deb", args).arg(deb)).unwrap_or_else(|| panic!("dpkg-deb {args:?} failed"))
    }

    /// The package holds the agent's files with the right owners, modes and paths.
    #[test]
    fn package_contents_and_metadata() {
        let bin = util::target_dir().join("release/wsguard");
        if !bin.exists() || util::which("dpkg-deb").is_none() {
            eprintln!("SKIP: needs {} (cargo build --release) and dpkg-deb", bin.display());
            return;
        }
        let out = std::env::temp_dir().join(format!("wsguard-deb-{}", std::process::id()));
        let deb = build(&bin, &out).unwrap();
        let fields = dpkg_deb(&["--field"], &deb);
        assert_eq!(fields.lines().next(), Some("Package: wsguard"));
        assert!(fields.contains(&format!("\nVersion: {}\n", env!("CARGO_PKG_VERSION"))), "{fields}");
        assert!(fields.contains("\nDepends: libc6\n"), "{fields}");
        let files = dpkg_deb(&["--contents"], &deb);
        let entry = |path: &str| files.lines().find(|l| l.ends_with(path)).unwrap_or_else(|| panic!("{path} missing:\n{files}"));
        assert!(entry("./usr/bin/wsguard").starts_with("-rwxr-xr-x root/root"));
        assert!(entry("./etc/wsguard/wsguard.toml").starts_with("-rw------- root/root"));
        assert!(entry("./usr/lib/systemd/system/wsguard.service").starts_with("-rw-r--r-- root/root"));
        entry("./usr/share/bash-completion/completions/wsguard");
        entry("./usr/share/wsguard/wsguard-remediation.conf");
        // The unit points at the packaged binary; the config is a conffile.
        let x = out.join("x");
        util::run(util::cmd("dpkg-deb", ["--raw-extract"]).arg(&deb).arg(&x)).unwrap();
        let unit = fs::read_to_string(x.join("usr/lib/systemd/system/wsguard.service")).unwrap();
        assert!(unit.contains("ExecStart=/usr/bin/wsguard run --config /etc/wsguard/wsguard.toml"), "{unit}");
        assert!(!unit.contains("/usr/local/bin"));
        assert_eq!(fs::read_to_string(x.join("DEBIAN/conffiles")).unwrap(), "/etc/wsguard/wsguard.toml\n");
        // Removal detaches; an upgrade keeps the probe (SIGUSR2) and restarts the agent.
        let prerm = fs::read_to_string(x.join("DEBIAN/prerm")).unwrap();
        assert!(prerm.contains("wsguard detach -c /etc/wsguard/wsguard.toml") && prerm.contains("--signal=SIGUSR2"), "{prerm}");
        assert!(fs::read_to_string(x.join("DEBIAN/postinst")).unwrap().contains("systemctl start wsguard"));
        // Purge removes the state; a plain removal keeps it.
        let postrm = fs::read_to_string(x.join("DEBIAN/postrm")).unwrap();
        assert!(postrm.contains("if [ \"$1\" = purge ]; then\n    rm -rf /var/lib/wsguard"), "{postrm}");
        assert!(!out.join(deb.file_stem().unwrap()).exists(), "staging directory removed");
        // A later version for the upgrade path; a bad version string is refused.
        let next = build_version(&bin, &out, &next_patch_version()).unwrap();
        assert!(dpkg_deb(&["--field"], &next).contains(&format!("\nVersion: {}\n", next_patch_version())));
        assert!(build_version(&bin, &out, "v1").is_err());
        let _ = fs::remove_dir_all(&out);
    }

    #[test]
    fn next_patch() {
        let v = env!("CARGO_PKG_VERSION");
        let next = next_patch_version();
        assert_ne!(next, v);
        assert_eq!(next.rsplit_once('.').unwrap().0, v.rsplit_once('.').unwrap().0);
    }
}
