//! Captures a client key from the upgrade request, alongside the handshake scan: the value of a
//! configured header (e.g. `X-User-Id`) or of a query parameter (e.g. `?user=`). At most
//! [`KEY_MAX`] bytes are kept, plus an FNV-1a hash of the whole value, so long values still give
//! distinct keys; with `hash_only` no raw byte is kept at all (privacy).

/// Raw bytes kept of a key value.
pub const KEY_MAX: usize = 32;
const KMASK: usize = KEY_MAX - 1;
/// Pattern buffer size (header name with colon, or `param=`).
pub const PAT_MAX: usize = 32;
const PMASK: usize = PAT_MAX - 1;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// What to capture; handed to the kernel in a config map. Patterns are lowercase. 8-byte
/// aligned and sized so the probe copies it word by word.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyConfig {
    /// Header name with its colon, lowercase, e.g. `x-user-id:`.
    pub header: [u8; PAT_MAX],
    pub header_len: u8,
    /// Query parameter with `=`, e.g. `user=` (matched case-sensitively).
    pub query: [u8; PAT_MAX],
    pub query_len: u8,
    /// Keep only the hash, never raw bytes.
    pub hash_only: u8,
    pub _pad: [u8; 5],
}

impl KeyConfig {
    /// Build from a header name and/or query parameter name; None if one is too long.
    pub fn new(header: Option<&str>, query: Option<&str>, hash_only: bool) -> Option<Self> {
        let mut c = KeyConfig { hash_only: hash_only as u8, ..Default::default() };
        if let Some(h) = header {
            let n = h.len() + 1;
            if n > PAT_MAX || h.is_empty() {
                return None;
            }
            for (i, b) in h.bytes().enumerate() {
                c.header[i] = b.to_ascii_lowercase();
            }
            c.header[n - 1] = b':';
            c.header_len = n as u8;
        }
        if let Some(q) = query {
            let n = q.len() + 1;
            if n > PAT_MAX || q.is_empty() {
                return None;
            }
            c.query[..q.len()].copy_from_slice(q.as_bytes());
            c.query[n - 1] = b'=';
            c.query_len = n as u8;
        }
        Some(c)
    }

    pub fn enabled(&self) -> bool {
        self.header_len > 0 || self.query_len > 0
    }
}

const S_NAME: u8 = 0; // matching the header name at line start
const S_SKIP_WS: u8 = 1; // after the colon, before the value
const S_VALUE: u8 = 2; // capturing
const S_DEAD: u8 = 3; // not this line / parameter
const S_DONE: u8 = 4; // captured

/// Capture state, kept with the connection while its request head is read. No implicit
/// padding (the size is a multiple of 8), so the probe copies it word by word.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyScan {
    pub hash: u64,
    pub key: [u8; KEY_MAX],
    /// Bytes kept in `key`, and the value's full length.
    pub key_len: u8,
    pub total_len: u16,
    /// 0 until the first newline (the request line), then 1.
    pub line: u8,
    pub state: u8,
    pub m: u8,
    /// In the request line: 0 before `?`, 1 in the query, 2 after it.
    pub query: u8,
    pub _pad: [u8; 8],
}

impl KeyScan {
    /// A key was captured.
    pub fn found(&self) -> bool {
        self.state == S_DONE
    }

    #[inline(always)]
    fn take(&mut self, cfg: &KeyConfig, b: u8) {
        self.hash = (self.hash ^ b as u64).wrapping_mul(FNV_PRIME);
        if cfg.hash_only == 0 && (self.key_len as usize) < KEY_MAX {
            self.key[self.key_len as usize & KMASK] = b;
            self.key_len += 1;
        }
        self.total_len = self.total_len.saturating_add(1);
    }

    #[inline(always)]
    fn start_value(&mut self) {
        self.state = S_SKIP_WS;
        self.hash = FNV_OFFSET;
        self.key_len = 0;
        self.total_len = 0;
    }

    /// Feed one byte of the request head.
    #[inline(always)]
    pub fn byte(&mut self, cfg: &KeyConfig, b: u8) {
        if self.state == S_DONE {
            return;
        }
        if self.line == 0 {
            self.request_line(cfg, b);
            return;
        }
        if b == b'\n' {
            if self.state == S_VALUE || self.state == S_SKIP_WS {
                self.state = S_DONE;
            } else {
                self.state = S_NAME;
                self.m = 0;
            }
            return;
        }
        if b == b'\r' || cfg.header_len == 0 {
            return;
        }
        match self.state {
            S_NAME => {
                if b.to_ascii_lowercase() == cfg.header[self.m as usize & PMASK] {
                    self.m += 1;
                    if self.m >= cfg.header_len {
                        self.start_value();
                    }
                } else {
                    self.state = S_DEAD;
                }
            }
            S_SKIP_WS if b != b' ' && b != b'\t' => {
                self.state = S_VALUE;
                self.take(cfg, b);
            }
            S_VALUE => self.take(cfg, b),
            _ => {}
        }
    }

    #[inline(always)]
    fn request_line(&mut self, cfg: &KeyConfig, b: u8) {
        if b == b'\n' {
            self.line = 1;
            self.state = if self.state == S_VALUE { S_DONE } else { S_NAME };
            self.m = 0;
            return;
        }
        if cfg.query_len == 0 || self.query == 2 {
            return;
        }
        if self.query == 0 {
            if b == b'?' {
                self.query = 1;
                self.state = S_NAME;
                self.m = 0;
            }
            return;
        }
        // In the query string.
        if b == b' ' || b == b'#' || b == b'\r' {
            self.query = 2;
            if self.state == S_VALUE || self.state == S_SKIP_WS {
                self.state = S_DONE;
            }
            return;
        }
        if b == b'&' {
            if self.state == S_VALUE || self.state == S_SKIP_WS {
                self.state = S_DONE;
            } else {
                self.state = S_NAME;
                self.m = 0;
            }
            return;
        }
        match self.state {
            S_NAME => {
                if b == cfg.query[self.m as usize & PMASK] {
                    self.m += 1;
                    if self.m >= cfg.query_len {
                        self.start_value();
                        self.state = S_VALUE;
                    }
                } else {
                    self.state = S_DEAD;
                }
            }
            S_VALUE => self.take(cfg, b),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(cfg: &KeyConfig, req: &[u8]) -> KeyScan {
        let mut s = KeyScan::default();
        for b in req {
            s.byte(cfg, *b);
        }
        s
    }

    fn key(s: &KeyScan) -> &[u8] {
        &s.key[..s.key_len as usize]
    }

    const REQ: &[u8] = b"GET /ws?room=1&user=alice&x=2 HTTP/1.1\r\nHost: h\r\nX-User-Id:  bob-42 \r\nUpgrade: websocket\r\n\r\n";

    #[test]
    fn header_value_is_captured_case_insensitively() {
        let cfg = KeyConfig::new(Some("X-USER-ID"), None, false).unwrap();
        let s = scan(&cfg, REQ);
        assert!(s.found());
        assert_eq!(key(&s), b"bob-42 ");
    }

    #[test]
    fn query_parameter_is_captured() {
        let cfg = KeyConfig::new(None, Some("user"), false).unwrap();
        let s = scan(&cfg, REQ);
        assert!(s.found());
        assert_eq!(key(&s), b"alice");
        let s = scan(&cfg, b"GET /ws?user=zed HTTP/1.1\r\n\r\n");
        assert_eq!(key(&s), b"zed");
        let s = scan(&cfg, b"GET /ws?xuser=zed&user=amy HTTP/1.1\r\n\r\n");
        assert_eq!(key(&s), b"amy");
        assert!(!scan(&cfg, b"GET /ws?users=zed HTTP/1.1\r\n\r\n").found());
    }

    #[test]
    fn missing_header_finds_nothing_and_near_names_do_not_match() {
        let cfg = KeyConfig::new(Some("x-user"), None, false).unwrap();
        assert!(!scan(&cfg, REQ).found(), "x-user-id is not x-user");
    }

    #[test]
    fn long_values_are_hashed_whole_and_hash_only_keeps_no_bytes() {
        let cfg = KeyConfig::new(Some("k"), None, false).unwrap();
        let a = scan(&cfg, b"GET / HTTP/1.1\r\nk: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1\r\n\r\n");
        let b = scan(&cfg, b"GET / HTTP/1.1\r\nk: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa2\r\n\r\n");
        assert_eq!((a.key_len as usize, a.total_len), (KEY_MAX, 42));
        assert_eq!(a.key, b.key);
        assert_ne!(a.hash, b.hash);
        let cfg = KeyConfig::new(Some("k"), None, true).unwrap();
        let h = scan(&cfg, b"GET / HTTP/1.1\r\nk: secret\r\n\r\n");
        assert!(h.found());
        assert_eq!(h.key_len, 0);
        assert_eq!(h.key, [0; KEY_MAX]);
    }

    #[test]
    fn same_answer_at_every_split() {
        let cfg = KeyConfig::new(Some("x-user-id"), Some("user"), false).unwrap();
        let whole = scan(&cfg, REQ);
        for cut in 0..REQ.len() {
            let mut s = KeyScan::default();
            for b in &REQ[..cut] {
                s.byte(&cfg, *b);
            }
            for b in &REQ[cut..] {
                s.byte(&cfg, *b);
            }
            assert_eq!(s, whole);
        }
        // The query parameter comes first in the request, so it wins.
        assert_eq!(key(&whole), b"alice");
    }
}
