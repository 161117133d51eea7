//! The API on a Unix socket (`[api] socket`, default `<state_dir>/api.sock`): the same router
//! as on TCP, but the kernel tells who connected (SO_PEERCRED, read once per connection), so
//! root and the uids of `[api] socket_uids` change state without the bearer token. Who may
//! connect at all is the socket file's mode: 0600 (root only) or, with `socket_group`, 0660.
//!
//! Binding is careful because the agent runs as root: the directory must not be writable by
//! group or others (someone could swap the socket for their own), an existing socket is only
//! removed when nothing answers on it (stale, from an agent that was killed), anything else at
//! the path is refused, and the file is never more open than its final mode, not even for the
//! moment between bind and chmod (bound under umask 0177).

use std::{
    os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};
use axum::{extract::connect_info::Connected, serve::IncomingStream};
use tokio::net::UnixListener;
use tracing::{info, warn};

pub const DEFAULT_FILE: &str = "api.sock";
/// Longest socket path (`sun_path` is 108 bytes with its NUL).
pub const PATH_MAX: usize = 107;

/// Who is at the other end of a socket connection, from SO_PEERCRED at accept (the
/// credentials of the process that connected, which it cannot change afterwards).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// None when the kernel did not say (the caller is then never trusted).
    pub uid: Option<u32>,
    pub pid: Option<i32>,
}

impl Connected<IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        match stream.io().peer_cred() {
            Ok(c) => Peer { uid: Some(c.uid()), pid: c.pid() },
            Err(e) => {
                warn!("API socket: cannot read the peer's credentials: {e}");
                Peer { uid: None, pid: None }
            }
        }
    }
}

/// The bound socket file; dropping it removes the file if it is still ours.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dev_ino: (u64, u64),
}

impl SocketFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.dev_ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Bind the socket at `path` (mode 0600, or 0660 owned by `group`, a name or gid).
pub fn bind(path: &Path, group: Option<&str>) -> anyhow::Result<(UnixListener, SocketFile)> {
    let gid = group.map(lookup_group).transpose()?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .with_context(|| format!("cannot create {}, the directory of [api] socket", dir.display()))?;
    }
    check_dir(dir)?;
    remove_stale(path)?;
    // SAFETY: umask has no preconditions. It is process-wide: this runs at start, before the
    // agent creates files from other threads.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let listener = bound.with_context(|| format!("cannot listen on {} ([api] socket)", path.display()))?;
    let meta = std::fs::symlink_metadata(path)?;
    let file = SocketFile { path: path.to_path_buf(), dev_ino: (meta.dev(), meta.ino()) };
    let mode = match gid {
        Some(g) => {
            std::os::unix::fs::chown(path, None, Some(g))
                .with_context(|| format!("cannot give {} to group {g} ([api] socket_group; needs CAP_CHOWN)", path.display()))?;
            0o660
        }
        None => 0o600,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))?;
    Ok((listener, file))
}

/// Whether `e` says the file system would not take the socket (read-only, full, over quota):
/// the agent then runs without it, as it runs with an unwritable state directory, where an
/// unsafe directory, a foreign file or another live agent on the path stops the start.
pub fn storage_failure(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            .is_some_and(|n| [libc::EROFS, libc::ENOSPC, libc::EDQUOT].contains(&n))
    })
}

/// The directory must belong to root (or us) and be writable by nobody else.
fn check_dir(dir: &Path) -> anyhow::Result<()> {
    let m = std::fs::metadata(dir).with_context(|| format!("cannot stat {}", dir.display()))?;
    // SAFETY: no preconditions.
    let euid = unsafe { libc::geteuid() };
    if m.uid() != 0 && m.uid() != euid {
        bail!("the directory of [api] socket {} is owned by uid {}, not by root or us", dir.display(), m.uid());
    }
    if m.permissions().mode() & 0o022 != 0 {
        bail!(
            "the directory of [api] socket {} is writable by group or others (mode {:o}): they could replace the \
             socket; choose another directory or run `chmod go-w {}`",
            dir.display(),
            m.permissions().mode() & 0o7777,
            dir.display()
        );
    }
    Ok(())
}

/// A socket nobody answers on is left by an agent that died: remove it. A live one (another
/// agent), or anything that is not a socket, is refused.
fn remove_stale(path: &Path) -> anyhow::Result<()> {
    let m = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot stat {}", path.display())),
    };
    if !m.file_type().is_socket() {
        bail!("{} ([api] socket) exists and is not a socket; refusing to replace it", path.display());
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => {
            bail!("another process (another wsguard?) serves {} ([api] socket); stop it or set another path", path.display())
        }
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path).with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
            info!("removed the stale API socket {}", path.display());
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("{} ([api] socket) exists and cannot be probed", path.display())),
    }
}

/// gid of a group name (or a number).
pub fn lookup_group(name: &str) -> anyhow::Result<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    let c = std::ffi::CString::new(name).map_err(|_| anyhow::anyhow!("bad group name {name:?}"))?;
    // SAFETY: group is plain old data; getgrnam_r fills it.
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16384];
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: valid pointers and buffer length; `out` points into `gr` on success.
    let r = unsafe { libc::getgrnam_r(c.as_ptr(), &mut gr, buf.as_mut_ptr(), buf.len(), &mut out) };
    if r != 0 || out.is_null() {
        bail!("[api] socket_group: no such group {name:?}");
    }
    Ok(gr.gr_gid)
}

#[cfg(test)]
mod tests {

    #[test]
    fn only_a_full_or_read_only_file_system_is_a_storage_failure() {
        let io = |n| anyhow::Error::from(std::io::Error::from_raw_os_error(n)).context("cannot listen on x ([api] socket)");
        assert!(storage_failure(&io(libc::EROFS)));
        assert!(storage_failure(&io(libc::ENOSPC)));
        assert!(!storage_failure(&io(libc::EACCES)));
        assert!(!storage_failure(&anyhow::anyhow!("another process (another wsguard?) serves x")));
    }
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[tokio::test]
    async fn binds_private_replaces_stale_and_refuses_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/api.sock");
        let (l, file) = bind(&p, None).unwrap();
        assert_eq!(mode(&p), 0o600);
        // A live socket is another agent's.
        let e = bind(&p, None).unwrap_err().to_string();
        assert!(e.contains("another process"), "{e}");
        // Closed without removing the file (a killed agent): stale, replaced.
        drop(l);
        std::mem::forget(file);
        assert!(p.exists());
        let (_l, file) = bind(&p, Some(&unsafe { libc::getegid() }.to_string())).unwrap();
        assert_eq!(mode(&p), 0o660);
        drop(file);
        assert!(!p.exists(), "removed on drop");
        // Not a socket: never replaced.
        std::fs::write(&p, "x").unwrap();
        let e = bind(&p, None).unwrap_err().to_string();
        assert!(e.contains("not a socket"), "{e}");
        std::fs::remove_file(&p).unwrap();
        // A directory others can write.
        std::fs::set_permissions(p.parent().unwrap(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let e = bind(&p, None).unwrap_err().to_string();
        assert!(e.contains("writable by group or others") && e.contains("chmod go-w"), "{e}");
    }

    #[test]
    fn groups_by_name_or_number() {
        assert_eq!(lookup_group("0").unwrap(), 0);
        assert_eq!(lookup_group("root").unwrap(), 0);
        assert!(lookup_group("no-such-group-wsguard").unwrap_err().to_string().contains("no such group"));
    }
}
