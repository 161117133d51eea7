//! The kernels of the matrix, fetched through apt without installing them: `apt-get download`
//! of Debian's `linux-image-*-amd64` package, `dpkg-deb -x` into a cache under `target/vm/`,
//! `depmod` over the extracted tree. The host keeps its own boot kernel and module tree.
//!
//! Debian 12's 6.1 comes from the machine's usual sources; 6.12 from bookworm-backports, whose
//! source is added (a file in /etc/apt/sources.list.d, default pin 100, so nothing installed
//! changes) only when apt does not know it yet.

use crate::setup::{os_release, Apt};
use crate::util::{self, cmd, output, step};
use anyhow::{bail, Context, Result};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// The metapackage whose versions name the kernel series apt offers.
const META: &str = "linux-image-amd64";
const BACKPORTS_FILE: &str = "/etc/apt/sources.list.d/wsguard-bookworm-backports.sources";
const BACKPORTS_SOURCE: &str = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n";

/// Modules the guest needs before the host's root is mounted (virtio PCI, 9p over virtio), and
/// overlayfs (the guest's /tmp over the host's), and the socket-diagnostics families the agent
/// reads (no modprobe runs inside the guest).
pub const GUEST_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay", "inet_diag", "tcp_diag"];

/// A Debian kernel series of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Series {
    /// Debian 12 (bookworm).
    V6_1,
    /// Debian 12 backports (and Debian 13).
    V6_12,
}

impl Series {
    pub fn label(self) -> &'static str {
        match self {
            Series::V6_1 => "6.1",
            Series::V6_12 => "6.12",
        }
    }
    fn needs_backports(self) -> bool {
        self == Series::V6_12
    }
}

/// A kernel unpacked in the cache, ready to boot.
pub struct Kernel {
    /// `linux-image-6.1.0-57-amd64`
    pub package: String,
    /// `6.1.192-3`
    pub package_version: String,
    /// `6.1.0-57-amd64` (the module directory, `uname -r`)
    pub release: String,
    /// The unpacked package.
    pub root: PathBuf,
}

impl Kernel {
    pub fn vmlinuz(&self) -> PathBuf {
        self.root.join(format!("boot/vmlinuz-{}", self.release))
    }
    pub fn modules_dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.release)
    }
}

/// Find, download and unpack the newest package of `series` (cached by package version).
pub fn fetch(series: Series, cache: &Path, apt: &mut Apt) -> Result<Kernel> {
    step(&format!("kernel {}: Debian package", series.label()));
    let mut meta = meta_versions(series);
    if meta.is_none() {
        apt.update()?;
        meta = meta_versions(series);
    }
    if meta.is_none() && series.needs_backports() {
        add_backports(apt)?;
        meta = meta_versions(series);
    }
    let meta =
        meta.with_context(|| format!("apt offers no {META} of the {} series (`apt-cache madison {META}`)", series.label()))?;
    let package = output(cmd("apt-cache", ["depends", &format!("{META}={meta}")]))
        .and_then(|deps| {
            deps.lines()
                .filter_map(|l| l.trim().strip_prefix("Depends: "))
                .find(|d| d.starts_with("linux-image-"))
                .map(str::to_string)
        })
        .with_context(|| format!("cannot tell which kernel {META}={meta} depends on"))?;
    println!("    {META} {meta} -> {package}");

    let debs = cache.join("debs");
    std::fs::create_dir_all(&debs)?;
    let deb = match find_deb(&debs, &package)? {
        Some(d) => {
            util::skip(&format!("downloaded {}", d.display()));
            d
        }
        None => {
            // `_apt` cannot write into a root-owned target/, so apt warns and downloads as root.
            util::run(cmd("apt-get", ["download", "-q", &package]).current_dir(&debs))?;
            find_deb(&debs, &package)?.context("apt-get download left no .deb")?
        }
    };
    let field = |f: &str| output(cmd("dpkg-deb", ["-f".as_ref(), deb.as_os_str(), f.as_ref()]));
    let package_version = field("Version").context("dpkg-deb -f Version")?;
    let release = package.strip_prefix("linux-image-").context("unexpected package name")?.to_string();
    let root = cache.join("kernels").join(format!("{package}_{package_version}"));
    let kernel = Kernel { package, package_version, release, root };
    let ready = kernel.root.join(".ready");
    if ready.exists() {
        util::skip(&format!("unpacked in {}", kernel.root.display()));
    } else {
        let _ = std::fs::remove_dir_all(&kernel.root);
        std::fs::create_dir_all(&kernel.root)?;
        util::run(cmd("dpkg-deb", ["-x".as_ref(), deb.as_os_str(), kernel.root.as_os_str()]))?;
        util::run(cmd("depmod", ["-b".as_ref(), kernel.root.as_os_str(), kernel.release.as_ref()]))?;
        std::fs::write(&ready, "")?;
    }
    if !kernel.vmlinuz().is_file() {
        bail!("{} has no {}", kernel.package, kernel.vmlinuz().display());
    }
    Ok(kernel)
}

/// The newest version of the metapackage in `series` that apt offers.
fn meta_versions(series: Series) -> Option<String> {
    let madison = output(cmd("apt-cache", ["madison", META]))?;
    let prefix = format!("{}.", series.label());
    madison
        .lines()
        .filter_map(|l| l.split('|').nth(1).map(str::trim))
        .filter(|v| v.starts_with(&prefix))
        .max_by(|a, b| version_cmp(a, b))
        .map(str::to_string)
}

/// `dpkg --compare-versions`, the only ordering that is right for Debian versions.
fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    if a == b {
        Equal
    } else if util::succeeds(cmd("dpkg", ["--compare-versions", a, "gt", b])) {
        Greater
    } else {
        Less
    }
}

fn add_backports(apt: &mut Apt) -> Result<()> {
    let codename = os_release()
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|c| c.trim_matches('"').to_string())
        .unwrap_or_default();
    if codename != "bookworm" {
        bail!(
            "Linux 6.12 comes from Debian 12's bookworm-backports, and this is not Debian 12 \
             ({codename}); pass --kernel 6.1 or --kernel host"
        );
    }
    println!("    adding the bookworm-backports source: {BACKPORTS_FILE} (default pin 100: nothing installed changes)");
    std::fs::write(BACKPORTS_FILE, BACKPORTS_SOURCE).with_context(|| format!("cannot write {BACKPORTS_FILE} (needs root)"))?;
    apt.refresh()
}

fn find_deb(dir: &Path, package: &str) -> Result<Option<PathBuf>> {
    let prefix = format!("{package}_");
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        let name = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

/// The module files (relative to the module directory) that `wanted` needs, dependencies
/// first; built-in modules are left out.
pub fn module_load_order(kernel: &Kernel, wanted: &[&str]) -> Result<Vec<PathBuf>> {
    let dir = kernel.modules_dir();
    let dep_text = std::fs::read_to_string(dir.join("modules.dep"))
        .with_context(|| format!("{}/modules.dep (did depmod run?)", dir.display()))?;
    let builtin = std::fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
    let deps: HashMap<String, (String, Vec<String>)> = dep_text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, ds)| (stem(m), (m.to_string(), ds.split_whitespace().map(str::to_string).collect())))
        .collect();
    let builtin: BTreeSet<String> = builtin.lines().map(stem).collect();
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for w in wanted {
        let w = w.replace('-', "_");
        if builtin.contains(&w) {
            continue;
        }
        visit(&w, &deps, &mut seen, &mut order).with_context(|| format!("module {w} of {}", kernel.release))?;
    }
    Ok(order.into_iter().map(PathBuf::from).collect())
}

fn visit(
    name: &str,
    deps: &HashMap<String, (String, Vec<String>)>,
    seen: &mut BTreeSet<String>,
    order: &mut Vec<String>,
) -> Result<()> {
    if !seen.insert(name.to_string()) {
        return Ok(());
    }
    let (path, ds) = deps.get(name).with_context(|| format!("{name} is neither a module nor built in"))?;
    for d in ds {
        visit(&stem(d), deps, seen, order)?;
    }
    order.push(path.clone());
    Ok(())
}

/// `kernel/net/9p/9pnet.ko.xz` -> `9pnet`
fn stem(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split(".ko").next().unwrap_or(file).replace('-', "_")
}
