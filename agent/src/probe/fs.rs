//! The pseudo-filesystems the probe needs: bpffs for pinning, tracefs for tracepoint names.
//! Fresh machines often have neither mounted; mount them or say exactly what failed.

use std::{ffi::CString, path::Path};

use anyhow::{bail, Context};

pub const TRACEFS: &str = "/sys/kernel/tracing";
pub const BPFFS: &str = "/sys/fs/bpf";

const TRACEFS_MAGIC: i64 = 0x7472_6163;
const DEBUGFS_MAGIC: i64 = 0x6462_6720;
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Filesystem magic of the mount at `path`, if it exists.
pub fn fs_magic(path: &str) -> Option<i64> {
    let c = CString::new(path).ok()?;
    // SAFETY: statfs into a zeroed struct with a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    (rc == 0).then_some(st.f_type as i64)
}

pub fn tracefs_mounted() -> bool {
    matches!(fs_magic(TRACEFS), Some(TRACEFS_MAGIC))
        || matches!(fs_magic("/sys/kernel/debug/tracing"), Some(TRACEFS_MAGIC) | Some(DEBUGFS_MAGIC))
}

pub fn bpffs_mounted_at(path: &str) -> bool {
    fs_magic(path) == Some(BPF_FS_MAGIC)
}

fn mount(fstype: &str, target: &str) -> anyhow::Result<()> {
    let src = CString::new(fstype)?;
    let tgt = CString::new(target)?;
    // SAFETY: valid C strings; no data argument.
    let rc = unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), src.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        bail!("mount -t {fstype} {fstype} {target} failed: {err}");
    }
    Ok(())
}

/// Mount tracefs at /sys/kernel/tracing if no tracefs is mounted. Raw tracepoints attach by name
/// without it, so failure is reported but not fatal.
pub fn ensure_tracefs() -> anyhow::Result<bool> {
    if tracefs_mounted() {
        return Ok(false);
    }
    if !Path::new(TRACEFS).is_dir() {
        bail!("{TRACEFS} does not exist; is this kernel built with CONFIG_TRACING?");
    }
    mount("tracefs", TRACEFS).context("tracefs is not mounted and could not be mounted")?;
    Ok(true)
}

/// Make sure the pin directory sits on a bpffs, mounting one at /sys/fs/bpf if needed.
pub fn ensure_bpffs(pin_path: &Path) -> anyhow::Result<()> {
    let parent = pin_path.parent().unwrap_or(Path::new("/"));
    let parent_str = parent.to_str().context("pin path is not UTF-8")?;
    if bpffs_mounted_at(parent_str) {
        return Ok(());
    }
    if parent == Path::new(BPFFS) {
        mount("bpf", BPFFS).context("bpffs is not mounted at /sys/fs/bpf and could not be mounted")?;
        return Ok(());
    }
    bail!("probe.pin_path {} must be directly inside a bpffs mount (e.g. /sys/fs/bpf/wsguard)", pin_path.display())
}
