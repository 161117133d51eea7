//! Small secrets the agent keeps in files only root can read: the API token (`token.rs`) and the
//! client-key hashing secret (`keyhash.rs`). Both are created on first start with random
//! content, and both are refused when group or others could read them, since a copy of either
//! defeats its purpose.

use std::{
    io::Write,
    os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    path::Path,
};

use anyhow::{bail, Context};

/// `N` bytes from the kernel's CSPRNG.
pub fn random_bytes<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Create `path` 0600 with `contents` and a newline; fails if it exists (`create_new`, so a
/// file or symlink someone planted is never followed or overwritten). `what` names the file
/// in errors and logs, e.g. "API token".
pub fn create(path: &Path, what: &str, contents: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create the {what} file {}", path.display()))?;
    writeln!(f, "{contents}").with_context(|| format!("writing {}", path.display()))?;
    tracing::info!("created {what} file {} (0600)", path.display());
    Ok(())
}

/// The trimmed content of `path`, refused when group or others can access it or when it is
/// owned by someone other than root or us.
pub fn read(path: &Path, what: &str) -> anyhow::Result<String> {
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read the {what} file {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "the {what} file {} is accessible to group or others (mode {:o}); run `chmod 600 {}`",
            path.display(),
            meta.permissions().mode() & 0o777,
            path.display()
        );
    }
    // SAFETY: no preconditions.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid && meta.uid() != 0 {
        bail!("the {what} file {} is owned by uid {}, not by root or us", path.display(), meta.uid());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the {what} file {}", path.display()))?;
    Ok(text.trim().to_string())
}
