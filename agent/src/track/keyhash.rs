//! The hash shown for a client key (`[probe.client_key]`) when its value is not shown raw
//! (`hash = true`, or a value longer than the kernel keeps): `h:` and 16 hex digits.
//!
//! The probe keeps an FNV-1a hash of the whole value (cheap in the kernel, unchanged here).
//! FNV is unkeyed, so showing it would let anyone who reads a snapshot, a metric label or the
//! history recover low-entropy values (user ids) by hashing candidates. So userspace shows
//! SipHash-2-4 of the kernel's hash under a per-host random 128-bit secret instead: a keyed PRF,
//! the same on every restart of this host (alerts, quotas and history keep one key per client)
//! and different on every other host. The secret lives in `<state_dir>/client-key.secret`,
//! created 0600 on first start like the API token and refused when group or others can read it.
//!
//! SipHash comes from `siphasher`: the maintained standalone implementation (std's keyed
//! SipHasher is deprecated and its algorithm unspecified), no dependencies, tested against the
//! reference vectors; SipHash-2-4 is the variant designed and analysed as a PRF.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use anyhow::bail;
use siphasher::sip::SipHasher24;

use crate::util::private_file;

pub const DEFAULT_FILE: &str = crate::util::state_dir::CLIENT_KEY_SECRET;
const WHAT: &str = "client-key secret";

/// Keyed hash of client keys. `Debug` never shows the key.
#[derive(Clone)]
pub struct KeyHasher(SipHasher24);

impl fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHasher(<redacted>)")
    }
}

impl KeyHasher {
    pub fn new(key: [u8; 16]) -> Self {
        KeyHasher(SipHasher24::new_with_key(&key))
    }

    /// A key nobody knows, for an agent that captures no client key (nothing is ever hashed).
    pub fn ephemeral() -> anyhow::Result<Self> {
        Ok(Self::new(private_file::random_bytes()?))
    }

    /// What is shown for a value whose kernel (FNV-1a) hash is `fnv`.
    pub fn shown(&self, fnv: u64) -> String {
        format!("h:{:016x}", self.0.hash(&fnv.to_le_bytes()))
    }
}

/// The secret file in effect for a state directory.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(DEFAULT_FILE)
}

/// Read the secret; create the file (0600, 16 random bytes as hex) when it does not exist.
pub fn load_or_create(path: &Path) -> anyhow::Result<KeyHasher> {
    if !path.exists() {
        private_file::create(path, WHAT, &private_file::hex(&private_file::random_bytes::<16>()?))?;
    }
    load(path)
}

/// Read an existing secret file: exactly 32 hex digits, readable by its owner only.
pub fn load(path: &Path) -> anyhow::Result<KeyHasher> {
    let t = private_file::read(path, WHAT)?;
    let mut key = [0u8; 16];
    if t.len() != 32 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("the {WHAT} in {} must be 32 hex digits (128 bits)", path.display());
    }
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&t[2 * i..2 * i + 2], 16)?;
    }
    Ok(KeyHasher::new(key))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// FNV-1a 64 as the probe computes it (agent-common/src/clientkey.rs).
    fn fnv(v: &[u8]) -> u64 {
        v.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ *b as u64).wrapping_mul(0x100_0000_01b3))
    }

    #[test]
    fn keyed_stable_and_per_host() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        let a = load_or_create(&p).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let h = fnv(b"alice");
        // Same file, same answer (a restart); never the plain FNV.
        assert_eq!(a.shown(h), load_or_create(&p).unwrap().shown(h));
        assert_ne!(a.shown(h), format!("h:{h:016x}"));
        assert_ne!(a.shown(h), a.shown(fnv(b"bob")));
        // Another host (another file) shows another hash.
        let other = load_or_create(&dir.path().join("t")).unwrap();
        assert_ne!(a.shown(h), other.shown(h));
        assert!(!format!("{a:?}").contains(&std::fs::read_to_string(&p).unwrap().trim()[..8]));
    }

    /// SipHash-2-4 reference vector (the authors' vectors.h): key 00..0f, message 00..07.
    #[test]
    fn siphash_reference_vector() {
        let k = KeyHasher::new(std::array::from_fn(|i| i as u8));
        assert_eq!(k.shown(u64::from_le_bytes(std::array::from_fn(|i| i as u8))), "h:93f5f5799a932462");
    }

    #[test]
    fn refuses_readable_or_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "000102030405060708090a0b0c0d0e0f\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("client-key secret") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load(&p).is_ok());
        for bad in ["0001", "zz0102030405060708090a0b0c0d0e0f", "000102030405060708090a0b0c0d0e0fff"] {
            std::fs::write(&p, bad).unwrap();
            assert!(load(&p).unwrap_err().to_string().contains("32 hex digits"), "{bad}");
        }
    }
}
