//! The API token that mutating calls (ack, silence, fire, remediation approval) must present
//! as `Authorization: Bearer <token>`.
//!
//! It lives in a file only root can read (`[api] token_file`, default `<state_dir>/api-token`),
//! created with a random value on first start, so `sudo wsguard alerts ack …` on the host works
//! without setup while other local users, who can reach the loopback API, cannot mutate.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use anyhow::bail;

use crate::util::private_file;

pub const DEFAULT_FILE: &str = crate::util::state_dir::API_TOKEN;
const WHAT: &str = "API token";

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

    #[cfg(test)]
    pub fn from_secret(s: &str) -> Token {
        Token(s.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The token file in effect for a config.
pub fn path(token_file: Option<&Path>, state_dir: &Path) -> PathBuf {
    token_file.map(Path::to_path_buf).unwrap_or_else(|| state_dir.join(DEFAULT_FILE))
}

/// Read the token; create the file (0600, 32 random bytes as hex) when it does not exist.
pub fn load_or_create(path: &Path) -> anyhow::Result<Token> {
    if !path.exists() {
        private_file::create(path, WHAT, &private_file::hex(&private_file::random_bytes::<32>()?))?;
    }
    load(path)
}

/// Read an existing token file; refuse one that others can read or write.
pub fn load(path: &Path) -> anyhow::Result<Token> {
    let t = private_file::read(path, WHAT)?;
    if t.len() < 16 || t.chars().any(char::is_whitespace) {
        bail!("the API token in {} must be at least 16 characters without spaces", path.display());
    }
    Ok(Token(t))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn created_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tok");
        let a = load_or_create(&p).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
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
