//! The API token that mutating calls (ack, silence, fire, remediation approval) must present
//! as `Authorization: Bearer <token>`.
//!
//! It lives in a file only root can read (`[api] token_file`, default `<state_dir>/api-token`),
//! created with a random value on first start, so `sudo wsguard alerts ack …` on the host works
//! without setup while other local users, who can reach the loopback API, cannot mutate.

use std::{
    fmt,
    io::Write,
    os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};

pub const DEFAULT_FILE: &str = "api-token";

#[derive(Clone)]
pub struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Constant-time comparison with what a client sent.
    pub fn matches(&self, presented: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), presented.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The token file in effect for a config.
pub fn path(token_file: Option<&Path>, state_dir: &Path) -> PathBuf {
    token_file
        .map(Path::to_path_buf)
        .unwrap_or_else(|| state_dir.join(DEFAULT_FILE))
}

/// Read the token; create the file (0600, 32 random bytes as hex) when it does not exist.
pub fn load_or_create(path: &Path) -> anyhow::Result<Token> {
    if !path.exists() {
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
            .context("reading /dev/urandom")?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot create the API token file {}", path.display()))?;
        writeln!(f, "{hex}").with_context(|| format!("writing {}", path.display()))?;
        tracing::info!("created API token file {} (0600)", path.display());
    }
    load(path)
}

/// Read an existing token file; refuse one that others can read or write.
pub fn load(path: &Path) -> anyhow::Result<Token> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read the API token file {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "the API token file {} is accessible to group or others (mode {:o}); run `chmod 600 {}`",
            path.display(),
            meta.permissions().mode() & 0o777,
            path.display()
        );
    }
    // SAFETY: no preconditions.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid && meta.uid() != 0 {
        bail!(
            "the API token file {} is owned by uid {}, not by root or us",
            path.display(),
            meta.uid()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the API token file {}", path.display()))?;
    let t = text.trim();
    if t.len() < 16 || t.chars().any(char::is_whitespace) {
        bail!(
            "the API token in {} must be at least 16 characters without spaces",
            path.display()
        );
    }
    Ok(Token(t.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tok");
        let a = load_or_create(&p).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(a.as_str().len(), 64);
        let b = load_or_create(&p).unwrap();
        assert!(a.matches(b.as_str()));
        assert!(!a.matches("nope"));
        assert!(!format!("{a:?}").contains(a.as_str()));
    }

    #[test]
    fn refuses_readable_or_short() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tok");
        std::fs::write(&p, "0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load(&p).is_ok());
        std::fs::write(&p, "short\n").unwrap();
        assert!(load(&p).unwrap_err().to_string().contains("at least 16"));
    }
}
