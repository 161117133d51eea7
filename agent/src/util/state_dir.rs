//! The state directory holds what the agent saw (history, alerts, audit log, the API token):
//! nobody but root may read it, whatever the umask the agent was started with (outside
//! systemd, under a container runtime, on a Kubernetes hostPath). At start the umask becomes
//! 0077, so every file the agent (and SQLite: `-wal`, `-shm`) creates is 0600 and every
//! directory 0700; the directory itself is made 0700 and files left readable by an older
//! version or a copy are tightened.

use std::{
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::Path,
};

use anyhow::Context;

/// The API token's default file name in the state directory.
pub const API_TOKEN: &str = "api-token";
/// The client-key secret's file name in the state directory.
pub const CLIENT_KEY_SECRET: &str = "client-key.secret";
/// Secrets are not tightened here: a secret that group or others could read may have been read,
/// so `private_file::read` refuses it (with the chmod to run) instead of it being fixed silently.
const SECRETS: &[&str] = &[API_TOKEN, CLIENT_KEY_SECRET];

/// Set the process umask to 0077, create `dir` (0700) if needed and take group and other
/// access away from it and everything in it. `traverse`: others keep `x` on `dir` alone (the
/// API socket inside it is shared with `[api] socket_group`); they can reach a path inside,
/// never list or read one. Returns what was tightened or could not be (a read-only state
/// directory is not an error here: the stores say what they cannot write), for the log.
pub fn prepare(dir: &Path, traverse: bool) -> anyhow::Result<Vec<String>> {
    // SAFETY: umask has no preconditions; it is process-wide and set once, at start.
    unsafe { libc::umask(0o077) };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create state_dir {}", dir.display()))?;
    let mut fixed = Vec::new();
    let want = if traverse { 0o711 } else { 0o700 };
    tighten(dir, want, &mut fixed);
    walk(dir, &mut fixed);
    Ok(fixed)
}

fn tighten(p: &Path, want: u32, fixed: &mut Vec<String>) {
    let Ok(meta) = std::fs::symlink_metadata(p) else { return };
    let mode = meta.permissions().mode() & 0o7777;
    let new = (mode & !0o077) | (want & 0o077);
    if new != mode {
        match std::fs::set_permissions(p, std::fs::Permissions::from_mode(new)) {
            Ok(()) => fixed.push(format!("{} {mode:o}→{new:o}", p.display())),
            Err(e) => fixed.push(format!("{} stays {mode:o}: cannot chmod: {e}", p.display())),
        }
    }
}

fn walk(dir: &Path, fixed: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(t) = e.file_type() else { continue };
        if t.is_symlink() || t.is_socket_like() || (t.is_file() && SECRETS.iter().any(|s| e.file_name() == *s)) {
            continue;
        }
        tighten(&e.path(), 0, fixed);
        if t.is_dir() {
            walk(&e.path(), fixed);
        }
    }
}

trait SocketLike {
    fn is_socket_like(&self) -> bool;
}

impl SocketLike for std::fs::FileType {
    /// The API socket keeps the mode `api::socket::bind` gives it.
    fn is_socket_like(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_socket(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn files_are_private_whatever_the_umask() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let old = dir.join("history.sqlite");
        std::fs::write(&old, "x").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::create_dir(dir.join("sub")).unwrap();
        std::fs::set_permissions(dir.join("sub"), std::fs::Permissions::from_mode(0o775)).unwrap();
        let secret = dir.join(CLIENT_KEY_SECRET);
        std::fs::write(&secret, "s").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        // SAFETY: no preconditions (other tests create files with explicit modes).
        let before = unsafe { libc::umask(0o022) };
        let fixed = prepare(&dir, false).unwrap();
        std::fs::write(dir.join("new-file"), "y").unwrap();
        std::fs::create_dir(dir.join("new-dir")).unwrap();
        // SAFETY: as above.
        unsafe { libc::umask(before) };
        assert_eq!(fixed.len(), 3, "{fixed:?}");
        assert_eq!((mode(&dir), mode(&old), mode(&dir.join("sub"))), (0o700, 0o600, 0o700));
        assert_eq!((mode(&dir.join("new-file")), mode(&dir.join("new-dir"))), (0o600, 0o700));
        // An exposed secret is left as it is, for `private_file::read` to refuse.
        assert_eq!(mode(&secret), 0o644);
        prepare(&dir, true).unwrap();
        assert_eq!(mode(&dir), 0o711);
    }
}
