//! Boot a kernel of the matrix in QEMU over a read-only 9p view of the host's root.
//!
//! The initramfs holds only a static busybox, the virtio/9p modules of that kernel and
//! `init.sh`; the agent, the test binaries, node, python and the test servers are the host's
//! own files, seen through 9p. The run's output directory is shared read-write at the same
//! path, and the console goes to `console.log` in it. A hard timeout ends QEMU.

use super::kernel::{self, Kernel};
use crate::sys;
use crate::util::{self, cmd};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const INIT: &str = include_str!("init.sh");
const BUSYBOX: &str = "/bin/busybox";

/// How QEMU runs the guest's CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn label(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    /// KVM when /dev/kvm can run a stock kernel; `WSGUARD_VM_ACCEL=kvm|tcg` overrides. A host
    /// whose KVM is `kvm-pvm` (Pagetable Virtual Machine, as on some cloud sandboxes) runs only
    /// guests built for PVM: a Debian kernel hangs right after decompression, so use TCG there.
    pub fn detect() -> (Accel, String) {
        match std::env::var("WSGUARD_VM_ACCEL").as_deref() {
            Ok("kvm") => return (Accel::Kvm, "WSGUARD_VM_ACCEL=kvm".into()),
            Ok("tcg") => return (Accel::Tcg, "WSGUARD_VM_ACCEL=tcg".into()),
            _ => {}
        }
        if !Path::new("/dev/kvm").exists() {
            return (Accel::Tcg, "no /dev/kvm: software emulation (TCG)".into());
        }
        if Path::new("/sys/module/kvm_pvm").exists() {
            return (Accel::Tcg, "/dev/kvm is kvm-pvm, which boots only PVM-built guests: software emulation (TCG)".into());
        }
        (Accel::Kvm, "/dev/kvm".into())
    }
}

/// Build (once per kernel) the initramfs: busybox, the modules in load order, `/init`.
pub fn initramfs(k: &Kernel) -> Result<PathBuf> {
    let out = k.root.join("wsguard-initramfs.cpio");
    let stage = k.root.join("wsguard-initramfs");
    let _ = std::fs::remove_dir_all(&stage);
    for d in ["bin", "etc", "modules", "proc", "sys", "dev", "newroot"] {
        std::fs::create_dir_all(stage.join(d))?;
    }
    if !Path::new(BUSYBOX).is_file() {
        bail!("{BUSYBOX} missing (Debian's busybox-static)");
    }
    std::fs::copy(BUSYBOX, stage.join("bin/busybox"))?;
    write_exec(&stage.join("init"), INIT)?;
    let mut order = String::new();
    for rel in kernel::module_load_order(k, kernel::GUEST_MODULES)? {
        let src = k.modules_dir().join(&rel);
        let name = rel.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let plain = name.split(".ko").next().unwrap_or(&name).to_string() + ".ko";
        let dst = stage.join("modules").join(&plain);
        if name.ends_with(".ko") {
            std::fs::copy(&src, &dst)?;
        } else {
            let tool = match name.rsplit('.').next() {
                Some("xz") => "xz",
                Some("zst") => "zstd",
                Some("gz") => "gzip",
                _ => bail!("unknown module compression: {name}"),
            };
            let bytes =
                std::process::Command::new(tool).arg("-dc").arg(&src).output().with_context(|| format!("cannot run {tool}"))?;
            if !bytes.status.success() {
                bail!("{tool} -dc {} failed", src.display());
            }
            std::fs::write(&dst, bytes.stdout)?;
        }
        order.push_str(&plain);
        order.push('\n');
    }
    std::fs::write(stage.join("etc/modules.order"), &order)?;
    let pack = format!("find . | {BUSYBOX} cpio -o -H newc > '{}'", out.display());
    util::run(cmd("sh", ["-c", &pack]).current_dir(&stage))?;
    Ok(out)
}

fn write_exec(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

pub struct Boot<'a> {
    pub kernel: &'a Kernel,
    pub initramfs: &'a Path,
    /// Shared read-write at the same path; holds `guest.sh`, gets `console.log` and results.
    pub out: &'a Path,
    pub accel: Accel,
    pub memory_mib: u32,
    pub timeout: Duration,
}

/// Boot, wait for the guest to power off (or the timeout), return how long it ran.
pub fn boot(b: &Boot) -> Result<Duration> {
    let out = b.out.to_str().context("output path is not UTF-8")?;
    if out.contains(char::is_whitespace) {
        bail!("the output path {out} must not contain spaces (it goes on the kernel command line)");
    }
    let mut c = cmd("qemu-system-x86_64", Vec::<String>::new());
    match b.accel {
        Accel::Kvm => c.args(["-accel", "kvm", "-cpu", "host"]),
        Accel::Tcg => c.args(["-accel", "tcg,thread=multi", "-cpu", "max"]),
    };
    c.args(["-smp", "2", "-m"])
        .arg(b.memory_mib.to_string())
        .args(["-display", "none", "-monitor", "none", "-no-reboot", "-nic", "none"])
        .arg("-serial")
        .arg(format!("file:{out}/console.log"))
        .arg("-kernel")
        .arg(b.kernel.vmlinuz())
        .arg("-initrd")
        .arg(b.initramfs)
        .arg("-append")
        .arg(format!("console=ttyS0 panic=-1 loglevel=4 wsguard.out={out}"))
        .args(["-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap"])
        .arg("-virtfs")
        .arg(format!("local,path={out},mount_tag=out,security_model=none"))
        .stdin(Stdio::null());
    println!("    $ {}", util::display(&c));
    let mut child = c.spawn().context("cannot start qemu-system-x86_64")?;
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait()? {
            if !st.success() {
                bail!("qemu exited with {st}; see {out}/console.log");
            }
            return Ok(t0.elapsed());
        }
        if sys::interrupted() {
            let _ = child.kill();
            let _ = child.wait();
            bail!("interrupted: the guest was stopped");
        }
        if t0.elapsed() > b.timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the guest did not power off within {}s (hard timeout); see {out}/console.log", b.timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
