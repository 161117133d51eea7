//! `cargo xtask install`: put the release binary, the config, the systemd unit and the bash
//! completion in place, as docs/deployment.md describes by hand.
//!
//! An existing config is never overwritten: the shipped one is written next to it as
//! `wsguard.toml.new` and the existing one is checked with the new binary. The binary is
//! replaced by rename, so a running agent keeps its old inode. `--root DIR` installs under a
//! directory (for packaging and tests) and skips systemctl.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::util::{self, step};

/// Where the shipped unit expects the binary.
const UNIT_BIN: &str = "/usr/local/bin/wsguard";

#[derive(Args, Debug, Clone)]
pub struct InstallArgs {
    /// Install under this directory instead of `/` (no systemctl then).
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Prefix of the binary and completion (`PREFIX/bin/wsguard`); the unit is adjusted to it.
    #[arg(long, default_value = "/usr/local")]
    pub prefix: PathBuf,
    /// Install this binary instead of building `target/release/wsguard`.
    #[arg(long)]
    pub bin: Option<PathBuf>,
    /// After installing into `/`: `systemctl enable --now wsguard` (or restart it if running).
    #[arg(long)]
    pub enable: bool,
}

/// What one install did, for the summary and the tests.
#[derive(Debug, Default, PartialEq)]
pub struct Installed {
    pub binary: PathBuf,
    pub config: PathBuf,
    /// The existing config was kept; the shipped one is here.
    pub config_new: Option<PathBuf>,
    pub unit: PathBuf,
    pub completion: PathBuf,
}

pub fn run(args: &InstallArgs) -> Result<()> {
    let bin = util::release_agent(args.bin.as_deref())?;
    if args.root == Path::new("/") && !crate::sys::is_root() {
        bail!("installing into / needs root (or use --root DIR)");
    }
    let layout = Layout { prefix: args.prefix.clone(), unit_dir: PathBuf::from("/etc/systemd/system") };
    let done = install(&bin, &args.root, &layout, &util::workspace_root().join("config"))?;
    if args.root != Path::new("/") {
        println!("\nInstalled under {} (systemctl not run).", args.root.display());
        return Ok(());
    }
    step("systemd");
    if !Path::new("/run/systemd/system").exists() {
        println!("    systemd is not running here: start the agent with `{} run`", done.binary.display());
        return Ok(());
    }
    util::run(util::cmd("systemctl", ["daemon-reload"]))?;
    if args.enable {
        util::run(util::cmd("systemctl", ["enable", "wsguard"]))?;
        util::run(util::cmd("systemctl", ["restart", "wsguard"]))?;
        util::run(util::cmd("systemctl", ["--no-pager", "status", "wsguard"]))?;
    } else {
        println!("    next: systemctl enable --now wsguard   (then: wsguard status, wsguard top)");
    }
    Ok(())
}

/// Where things go: `/usr/local` + `/etc/systemd/system` for an admin's install, `/usr` +
/// `/usr/lib/systemd/system` for a package.
pub struct Layout {
    pub prefix: PathBuf,
    pub unit_dir: PathBuf,
}

/// Install `bin`, the config and unit from `config_dir` under `root`.
pub fn install(bin: &Path, root: &Path, layout: &Layout, config_dir: &Path) -> Result<Installed> {
    let prefix = layout.prefix.as_path();
    if !bin.is_file() {
        bail!("{} missing: build it first (`cargo build --release -p wsguard`)", bin.display());
    }
    if !prefix.is_absolute() {
        bail!("--prefix must be absolute");
    }
    let under = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    let installed_bin = prefix.join("bin/wsguard");

    step("Binary");
    let binary = under(&installed_bin);
    replace(bin, &binary, 0o755)?;
    println!("    {}", binary.display());

    step("Config");
    let shipped = config_dir.join("wsguard.toml");
    let config = under(Path::new("/etc/wsguard/wsguard.toml"));
    mkdir(config.parent().expect("has a parent"), 0o755)?;
    let config_new = if config.exists() {
        let new = config.with_extension("toml.new");
        write(&new, &fs::read(&shipped)?, 0o600)?;
        println!("    kept {} (the shipped one is {})", config.display(), new.display());
        // Does the existing config still load with the new binary?
        let out = Command::new(&binary).args(["config", "check", "--config"]).arg(&config).output()?;
        print!("    {}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            bail!(
                "the existing config does not pass `wsguard config check` with the new binary:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Some(new)
    } else {
        write(&config, &fs::read(&shipped)?, 0o600)?;
        println!("    {} (0600)", config.display());
        None
    };

    step("systemd unit");
    let unit_text = fs::read_to_string(config_dir.join("wsguard.service"))?;
    let unit_text = unit_text.replace(UNIT_BIN, &installed_bin.to_string_lossy());
    let unit = under(&layout.unit_dir.join("wsguard.service"));
    mkdir(unit.parent().expect("has a parent"), 0o755)?;
    write(&unit, unit_text.as_bytes(), 0o644)?;
    println!("    {}", unit.display());
    // Opt-in drop-in for acting remediation (not active until copied into wsguard.service.d).
    let dropin = under(&prefix.join("share/wsguard/wsguard-remediation.conf"));
    mkdir(dropin.parent().expect("has a parent"), 0o755)?;
    write(&dropin, &fs::read(config_dir.join("wsguard-remediation.conf"))?, 0o644)?;
    println!("    {} (opt-in remediation capabilities: docs/deployment.md)", dropin.display());

    step("bash completion");
    let out = Command::new(&binary).args(["completions", "bash"]).output().context("run the installed binary")?;
    if !out.status.success() {
        bail!("`wsguard completions bash` failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let completion = under(&prefix.join("share/bash-completion/completions/wsguard"));
    mkdir(completion.parent().expect("has a parent"), 0o755)?;
    write(&completion, &out.stdout, 0o644)?;
    println!("    {}", completion.display());
    Ok(Installed { binary, config, config_new, unit, completion })
}

fn mkdir(dir: &Path, mode: u32) -> Result<()> {
    if !dir.exists() {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Write `data` to `path` with `mode`, owned by root when we are root.
fn write(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension("xtask-tmp");
    fs::write(&tmp, data).with_context(|| format!("write {}", tmp.display()))?;
    finish(&tmp, path, mode)
}

/// Copy `from` over `to` by rename (a running binary keeps its inode: no "text file busy").
fn replace(from: &Path, to: &Path, mode: u32) -> Result<()> {
    mkdir(to.parent().expect("has a parent"), 0o755)?;
    let tmp = to.with_extension("xtask-tmp");
    fs::copy(from, &tmp).with_context(|| format!("copy {} to {}", from.display(), tmp.display()))?;
    finish(&tmp, to, mode)
}

fn finish(tmp: &Path, path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(tmp, fs::Permissions::from_mode(mode))?;
    if crate::sys::is_root() {
        std::os::unix::fs::chown(tmp, Some(0), Some(0))?;
    }
    fs::rename(tmp, path).with_context(|| format!("rename {} to {}", tmp.display(), path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opt() -> Layout {
        Layout { prefix: "/opt/wsguard".into(), unit_dir: "/etc/systemd/system".into() }
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// Into a temporary root with the real release binary (skipped when it is not built).
    #[test]
    fn installs_into_a_root_and_keeps_an_existing_config() {
        let bin = util::target_dir().join("release/wsguard");
        if !bin.exists() {
            eprintln!("SKIP: {} missing: build it first (`cargo build --release`)", bin.display());
            return;
        }
        let root = std::env::temp_dir().join(format!("wsguard-install-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let config_dir = util::workspace_root().join("config");
        let done = install(&bin, &root, &opt(), &config_dir).unwrap();

        assert_eq!(done.binary, root.join("opt/wsguard/bin/wsguard"));
        assert_eq!(fs::read(&done.binary).unwrap(), fs::read(&bin).unwrap());
        assert_eq!(mode(&done.binary), 0o755);
        assert_eq!(done.config, root.join("etc/wsguard/wsguard.toml"));
        assert_eq!(fs::read(&done.config).unwrap(), fs::read(config_dir.join("wsguard.toml")).unwrap());
        assert_eq!(mode(&done.config), 0o600);
        assert_eq!(done.config_new, None);
        let unit = fs::read_to_string(&done.unit).unwrap();
        assert_eq!(done.unit, root.join("etc/systemd/system/wsguard.service"));
        assert_eq!(mode(&done.unit), 0o644);
        assert!(unit.contains("ExecStart=/opt/wsguard/bin/wsguard run --config /etc/wsguard/wsguard.toml"), "{unit}");
        assert!(!unit.contains(UNIT_BIN), "every path follows the prefix");
        let completion = fs::read_to_string(&done.completion).unwrap();
        assert!(completion.contains("_wsguard") && completion.contains("completions"));
        if crate::sys::is_root() {
            use std::os::unix::fs::MetadataExt;
            assert_eq!(fs::metadata(&done.config).unwrap().uid(), 0);
        }

        // Again, with an operator's edit in the config: kept, the shipped one alongside.
        let edited = "[limits]\nper_client_connections = 3\n";
        fs::write(&done.config, edited).unwrap();
        let again = install(&bin, &root, &opt(), &config_dir).unwrap();
        assert_eq!(fs::read_to_string(&again.config).unwrap(), edited);
        let new = again.config_new.expect("shipped config written next to it");
        assert_eq!(new, root.join("etc/wsguard/wsguard.toml.new"));
        assert_eq!(fs::read(&new).unwrap(), fs::read(config_dir.join("wsguard.toml")).unwrap());

        // An existing config the new binary rejects stops the install with the reason.
        fs::write(&done.config, "[limits]\nper_client_connections = 0\n").unwrap();
        let e = install(&bin, &root, &opt(), &config_dir).unwrap_err().to_string();
        assert!(e.contains("limits.per_client_connections"), "{e}");
        assert!(fs::read_dir(root.join("etc/wsguard")).unwrap().all(|e| !e.unwrap().path().to_string_lossy().ends_with("tmp")));
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn refuses_a_missing_binary_and_a_relative_prefix() {
        let root = std::env::temp_dir().join(format!("wsguard-install-bad-{}", std::process::id()));
        let cfg = util::workspace_root().join("config");
        let layout = |p: &str| Layout { prefix: p.into(), unit_dir: "/etc/systemd/system".into() };
        assert!(install(Path::new("/nonexistent/wsguard"), &root, &layout("/usr/local"), &cfg).is_err());
        let exe = std::env::current_exe().unwrap();
        assert!(install(&exe, &root, &layout("usr/local"), &cfg).is_err());
        assert!(!root.exists());
    }
}
